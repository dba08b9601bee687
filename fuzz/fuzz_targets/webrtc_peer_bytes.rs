//! Runs [`banyan::fuzzing::webrtc_peer_bytes`] (its body, and what it checks) under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        if std::env::var_os("BANYAN_FUZZ_PANIC_ABORT").is_none() {
            // Contained panics are expected; keep the output quiet.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| banyan::fuzzing::webrtc_peer_bytes(data)
);
