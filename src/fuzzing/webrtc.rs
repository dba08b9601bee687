//! WebRTC peers: datagrams at the shared UDP port and publishers' media.

use std::cell::RefCell;

use banyan_relay::{AudioConfig, Frame};
use banyan_webrtc::audio::Chain;
use banyan_webrtc::demux::stun_local_ufrag;
use banyan_webrtc::media::{Clock, VideoTrack};
use banyan_webrtc::whip_media::{WhipMedia, WhipOut};
use bytes::Bytes;

fn config(asc: &[u8], rate: u32, channels: u8) -> AudioConfig {
    AudioConfig {
        asc: Bytes::copy_from_slice(asc),
        sample_rate: rate,
        channels,
        codec: "mp4a.40.2".into(),
    }
}

thread_local! {
    // AAC-LC, 44.1 kHz, stereo: building a chain plans FFTs, so one per run.
    static CHAIN: RefCell<Chain> =
        RefCell::new(Chain::new(&config(&[0x12, 0x10], 44_100, 2)).expect("a chain"));
}

/// What the WebRTC subsystem reads of peers' bytes, never panicking: a
/// datagram at the shared UDP port (the STUN USERNAME that routes it), a
/// publisher's H.264 access unit turned into Annex B, and a publisher's AAC
/// configuration and access units through the AAC to Opus chain.
///
/// A panic inside the AAC decoder is contained (that unit is dropped, the
/// decoder replaced); only a panic that escapes is a finding. Set
/// `BANYAN_FUZZ_PANIC_ABORT=1` to also stop on contained panics.
pub fn webrtc_peer_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Some(u) = stun_local_ufrag(rest) {
                assert!(!u.contains(':'));
            }
        }
        1 => {
            let mut t = VideoTrack::default();
            let mut clock = Clock::default();
            let f = Frame::video(0, 0, mode & 4 != 0, Bytes::copy_from_slice(rest));
            if let Some(au) = t.access_unit(&f, &mut clock) {
                assert!(au.annex_b.starts_with(&[0, 0, 0, 1]));
            }
        }
        2 => {
            // A configuration as a publisher sends it.
            let [a, b, r, c, ..] = rest else {
                return;
            };
            let _ = Chain::new(&config(&[*a, *b], u32::from(*r) * 1000, *c));
        }
        _ => CHAIN.with(|c| {
            let mut c = c.borrow_mut();
            for (i, unit) in rest.chunks(400).enumerate() {
                for p in c.push(i as i64 * 2090, unit) {
                    assert!(!p.data.is_empty());
                }
            }
        }),
    }
}

/// What a WHIP publisher's media does to the node, never panicking: each
/// input is a run of units (a tag byte, a 2-byte length, that many bytes):
/// tag bit 0 picks H.264 (an Annex B access unit, SPS and SEI included) or
/// Opus (a packet through the Opus to AAC chain), bit 1 marks a loss
/// before it; times step as a 30 fps video and 20 ms audio would.
pub fn whip_media(data: &[u8]) {
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
}
