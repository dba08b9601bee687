//! PROXY protocol header parser on arbitrary bytes: no panic, a complete
//! header never claims more bytes than it was given, and feeding the same
//! bytes one more byte at a time agrees with the whole.
#![no_main]

use banyan_ingest::proxy_protocol::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Parsed::Complete(h)) => {
            assert!(h.len <= data.len());
            assert!(h.len >= 15);
            assert_eq!(parse(&data[..h.len]), Ok(Parsed::Complete(h)));
        }
        Ok(Parsed::Incomplete(n)) => assert!(n >= 1),
        Err(_) => {}
    }
});
