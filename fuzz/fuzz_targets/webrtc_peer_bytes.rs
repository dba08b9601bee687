//! What the WebRTC subsystem reads of peers' bytes, never panicking: a
//! datagram at the shared UDP port (the STUN USERNAME that routes it), a
//! publisher's H.264 access unit turned into Annex B, and a publisher's AAC
//! configuration and access units through the AAC to Opus chain.
//!
//! A panic inside the AAC decoder is contained (that unit is dropped, the
//! decoder replaced); only a panic that escapes is a finding. Set
//! `BANYAN_FUZZ_PANIC_ABORT=1` to also stop on contained panics.
#![no_main]

use std::cell::RefCell;

use banyan_relay::{AudioConfig, Frame};
use banyan_webrtc::audio::Chain;
use banyan_webrtc::demux::stun_local_ufrag;
use banyan_webrtc::media::{Clock, VideoTrack};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(
    init: {
        if std::env::var_os("BANYAN_FUZZ_PANIC_ABORT").is_none() {
            // Contained panics are expected; keep the output quiet.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| run(data)
);

fn run(data: &[u8]) {
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
