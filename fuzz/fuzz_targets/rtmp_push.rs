//! Arbitrary bytes from the RTMP server an output pushes to: the client
//! handshake, the contained protocol library (connect and publish answers,
//! chunk sizes, acknowledgements), then media. A panic inside the library
//! is contained (the session fails); only one that escapes is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // Contained panics are expected; keep the output quiet.
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| banyan_egress::push::rtmp::fuzz_server_bytes(data)
);
