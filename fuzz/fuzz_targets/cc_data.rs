//! `cc_data` bytes through the extractor, and triplets through the 608 and
//! 708 decoders, WebVTT writer and playlist lines: never panics.
#![no_main]

use banyan_captions::{
    playlist_caption_lines, webvtt_segment, Cea608Decoder, Cea708Decoder, Extractor,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let mut x = Extractor::new();
    let mut d = Cea608Decoder::new(1 + sel % 4);
    let mut d708 = Cea708Decoder::new(1 + (sel >> 2) % 63);
    let mut cues = Vec::new();
    // Chunks of cc_data (the first byte of each announcing cc_count) ...
    for (i, cc) in data.chunks(64).enumerate() {
        let pts = i as i64 * 3000 * (1 + (sel >> 4) as i64);
        if let Some(t) = x.push_cc_data(pts, cc) {
            cues.extend(d.push(pts, &t));
            cues.extend(d708.push(pts, &t));
        }
        // ... and the raw bytes as triplets, unvalidated.
        cues.extend(d.push(pts + 1, cc));
        cues.extend(d708.push(pts + 1, cc));
    }
    cues.extend(d.flush(i64::MAX / 2));
    cues.extend(d708.flush(i64::MAX / 2));
    for c in &cues {
        assert!(c.end > c.start);
    }
    let vtt = webvtt_segment(&cues, 0, 90_000 * 60, 0);
    assert!(vtt.starts_with("WEBVTT\n"));
    let (lines, attr) = playlist_caption_lines(&x.channels(), &[], Some("subs.m3u8"));
    assert!(lines.iter().all(|l| !l.contains('\n') && !l.contains("URI=\"\"")));
    assert!(attr.starts_with("CLOSED-CAPTIONS="));
});
