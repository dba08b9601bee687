//! Runs [`banyan::fuzzing::rtmp_push`] (its body, and what it checks) under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // Contained panics are expected; keep the output quiet.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| banyan::fuzzing::rtmp_push(data)
);
