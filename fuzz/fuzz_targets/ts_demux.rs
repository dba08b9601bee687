//! MPEG-TS demuxer on arbitrary bytes, fed in arbitrary splits: it must not
//! panic, and every video frame it emits must be well-formed AVCC.
#![no_main]

use banyan_ingest::ts::{DemuxEvent, Demuxer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1) * 7;
    let mut d = Demuxer::new();
    for chunk in rest.chunks(step) {
        d.push(chunk);
        while let Some(ev) = d.poll() {
            check(&ev);
        }
    }
    d.flush();
    while let Some(ev) = d.poll() {
        check(&ev);
    }
});

fn check(ev: &DemuxEvent) {
    if let DemuxEvent::Frame(f) = ev {
        if f.track == banyan_relay::Track::Video {
            let mut p = &f.payload[..];
            while !p.is_empty() {
                assert!(p.len() >= 4);
                let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
                assert!(p.len() >= 4 + n);
                p = &p[4 + n..];
            }
        }
    }
}
