//! SRT stream id parser on arbitrary strings: no panic, and what it accepts
//! names a well-formed live input.
#![no_main]

use banyan_ingest::srt::StreamId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(id) = StreamId::parse(&s) {
        let uid = id.uid();
        assert!(!uid.is_empty() && uid.len() <= 128);
        assert!(uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
});
