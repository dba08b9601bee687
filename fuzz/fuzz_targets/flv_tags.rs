//! Arbitrary FLV tag payloads (the bodies of RTMP audio and video
//! messages) into the demuxer, and the codec configuration parsers.

#![no_main]

use banyan_ingest::flv::{parse_asc, parse_avcc, FlvDemux};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_avcc(Bytes::copy_from_slice(data));
    let _ = parse_asc(Bytes::copy_from_slice(data));
    // A sequence of tags: kind (1 byte), timestamp (4), length (2), payload.
    let mut demux = FlvDemux::new();
    let mut rest = data;
    while rest.len() >= 7 {
        let kind = rest[0];
        let ts = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = (u16::from_be_bytes([rest[5], rest[6]]) as usize).min(rest.len() - 7);
        let payload = Bytes::copy_from_slice(&rest[7..7 + len]);
        rest = &rest[7 + len..];
        let _ = if kind & 1 == 0 {
            demux.video(ts, payload)
        } else {
            demux.audio(ts, payload)
        };
    }
});
