//! Media parsers: FLV tags, MPEG-TS, H.264 SEI captions and `cc_data`.

use banyan_captions::{
    playlist_caption_lines, webvtt_segment, Cea608Decoder, Cea708Decoder, Extractor,
};
use banyan_ingest::flv::{parse_asc, parse_avcc, FlvDemux};
use banyan_ingest::ts::{DemuxEvent, Demuxer};
use bytes::Bytes;

/// Arbitrary FLV tag payloads (the bodies of RTMP audio and video
/// messages) into the demuxer, and the codec configuration parsers.
pub fn flv_tags(data: &[u8]) {
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
}

/// MPEG-TS demuxer on arbitrary bytes, fed in arbitrary splits: it must not
/// panic, and every video frame it emits must be well-formed AVCC.
pub fn ts_demux(data: &[u8]) {
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
}

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

/// H.264 access units (AVCC and Annex B) through the caption extractor: never
/// panics, never returns more than it may, and reads the input only.
pub fn sei(data: &[u8]) {
    let mut x = Extractor::new();
    let before = data.to_vec();
    // Split the input into a few access units so state carries across them.
    for (i, au) in data.chunks(512).enumerate() {
        let pts = i as i64 * 3000;
        for out in [x.push_avcc(pts, au), x.push_annexb(pts, au)]
            .into_iter()
            .flatten()
        {
            assert!(!out.is_empty() && out.len() % 3 == 0);
            assert!(out.chunks(3).all(|t| t[0] & 0x04 != 0));
        }
    }
    let _ = x.channels().iter().count();
    assert_eq!(data, &before[..]);
}

/// `cc_data` bytes through the extractor, and triplets through the 608 and
/// 708 decoders, WebVTT writer and playlist lines: never panics.
pub fn cc_data(data: &[u8]) {
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
    assert!(lines
        .iter()
        .all(|l| !l.contains('\n') && !l.contains("URI=\"\"")));
    assert!(attr.starts_with("CLOSED-CAPTIONS="));
}
