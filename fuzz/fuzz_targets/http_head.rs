//! Runs [`banyan::fuzzing::http_head`] (its body, and what it checks) under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| banyan::fuzzing::http_head(data));
