//! What a WHIP publisher's media does to the node, never panicking: each
//! input is a run of units (a tag byte, a 2-byte length, that many bytes):
//! tag bit 0 picks H.264 (an Annex B access unit, SPS and SEI included) or
//! Opus (a packet through the Opus to AAC chain), bit 1 marks a loss
//! before it; times step as a 30 fps video and 20 ms audio would.
#![no_main]

use banyan_webrtc::whip_media::{WhipMedia, WhipOut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut m = WhipMedia::new(true);
    let mut out = Vec::new();
    let (mut vt, mut at) = (0i64, 0i64);
    let mut rest = data;
    while rest.len() >= 3 {
        let tag = rest[0];
        let len = (usize::from(rest[1]) << 8 | usize::from(rest[2])).min(rest.len() - 3);
        let unit = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if tag & 1 == 0 {
            vt += 3000;
            m.video(vt, unit, tag & 2 == 0, &mut out);
        } else {
            at += 1800;
            m.audio(at, unit, &mut out);
        }
        for o in out.drain(..) {
            if let WhipOut::Frame(f) = o {
                assert!(!f.payload.is_empty());
            }
        }
    }
});
