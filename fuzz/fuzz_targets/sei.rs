//! H.264 access units (AVCC and Annex B) through the caption extractor: never
//! panics, never returns more than it may, and reads the input only.
#![no_main]

use banyan_captions::Extractor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut x = Extractor::new();
    let before = data.to_vec();
    // Split the input into a few access units so state carries across them.
    for (i, au) in data.chunks(512).enumerate() {
        let pts = i as i64 * 3000;
        for out in [x.push_avcc(pts, au), x.push_annexb(pts, au)].into_iter().flatten() {
            assert!(!out.is_empty() && out.len() % 3 == 0);
            assert!(out.chunks(3).all(|t| t[0] & 0x04 != 0));
        }
    }
    let _ = x.channels().iter().count();
    assert_eq!(data, &before[..]);
});
