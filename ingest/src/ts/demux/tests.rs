use banyan_egress::ts::Muxer;
use banyan_relay::{AudioConfig, Frame, MediaInfo, Track, VideoConfig};
use bytes::{BufMut, Bytes, BytesMut};

use super::*;

/// A real 320x240 baseline SPS and a PPS.
const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
    0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x20,
];
const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

fn info() -> MediaInfo {
    MediaInfo {
        version: 1,
        video: Some(VideoConfig {
            avcc: h264::build_avcc(SPS, PPS).unwrap(),
            width: 320,
            height: 240,
            codec: "avc1.42c00d".into(),
        }),
        audio: Some(AudioConfig {
            asc: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44100,
            channels: 2,
            codec: "mp4a.40.2".into(),
        }),
    }
}

fn vframe(i: i64, base: i64, size: usize) -> Frame {
    let mut p = BytesMut::new();
    let key = i % 30 == 0;
    p.put_u32(size as u32);
    p.put_u8(if key { 0x65 } else { 0x41 });
    for k in 0..size - 1 {
        // Avoid start-code emulation: never two zero bytes in a row.
        p.put_u8((k % 250) as u8 + 1);
    }
    Frame::video(base + i * 3000 + 3000, base + i * 3000, key, p.freeze())
}

fn aframe(i: i64, base: i64) -> Frame {
    Frame::audio(
        base + i * 2090,
        Bytes::from(vec![(i % 200) as u8 + 1; 50 + (i % 7) as usize]),
    )
}

fn mux(frames: &[Frame]) -> BytesMut {
    let mut m = Muxer::new();
    m.set_info(&info());
    let mut out = BytesMut::new();
    for f in frames {
        m.frame(f, &mut out);
    }
    out
}

fn demux_all(d: &mut Demuxer, data: &[u8], step: usize) -> Vec<Frame> {
    for c in data.chunks(step) {
        d.push(c);
    }
    d.flush();
    let mut out = Vec::new();
    while let Some(ev) = d.poll() {
        if let DemuxEvent::Frame(f) = ev {
            out.push(f);
        }
    }
    out
}

fn sample(n: i64, base: i64) -> Vec<Frame> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(vframe(i, base, 300 + (i as usize * 37) % 3000));
        v.push(aframe(i, base));
    }
    v
}

/// The slices of an AVCC payload (parameter sets stripped).
fn slices(p: &[u8]) -> Vec<Vec<u8>> {
    banyan_egress::ts::avcc_nals(p)
        .into_iter()
        .filter(|n| !matches!(n[0] & 0x1f, 7..=9))
        .map(|n| n.to_vec())
        .collect()
}

#[test]
fn round_trip_through_our_muxer() {
    let src = sample(60, 0);
    for step in [188, 1316, 7, 1000] {
        let mut d = Demuxer::new();
        let got = demux_all(&mut d, &mux(&src), step);
        assert_eq!(d.errors().total(), 0, "step {step}: {:?}", d.errors());
        let (v, a): (Vec<_>, Vec<_>) = got.iter().partition(|f| f.track == Track::Video);
        let sv: Vec<_> = src.iter().filter(|f| f.track == Track::Video).collect();
        let sa: Vec<_> = src.iter().filter(|f| f.track == Track::Audio).collect();
        assert_eq!(v.len(), sv.len(), "step {step}");
        assert_eq!(a.len(), sa.len(), "step {step}");
        for (g, s) in v.iter().zip(&sv) {
            assert_eq!((g.pts, g.dts, g.keyframe), (s.pts, s.dts, s.keyframe));
            assert_eq!(slices(&g.payload), slices(&s.payload));
        }
        for (g, s) in a.iter().zip(&sa) {
            assert_eq!((g.pts, &g.payload), (s.pts, &s.payload));
        }
        let (vc, ac) = d.config();
        assert_eq!(vc.unwrap().width, 320);
        assert_eq!(vc.unwrap().height, 240);
        assert_eq!(ac.unwrap().asc, info().audio.unwrap().asc);
    }
}

#[test]
fn timestamps_unwrap_across_33_bits() {
    let base = (1i64 << 33) - 90_000; // wraps one second in
    let src = sample(90, base);
    let mut d = Demuxer::new();
    let got = demux_all(&mut d, &mux(&src), 1316);
    let v: Vec<_> = got.iter().filter(|f| f.track == Track::Video).collect();
    assert_eq!(v.len(), 90);
    for w in v.windows(2) {
        assert_eq!(w[1].dts - w[0].dts, 3000, "monotonic across the wrap");
    }
    assert_eq!(d.errors().discontinuity, 0);
}

#[test]
fn discontinuity_is_rebased() {
    let mut src = sample(30, 0);
    src.extend(sample(30, 50 * 90_000));
    let mut d = Demuxer::new();
    let got = demux_all(&mut d, &mux(&src), 1316);
    let v: Vec<_> = got.iter().filter(|f| f.track == Track::Video).collect();
    assert_eq!(v.len(), 60);
    for w in v.windows(2) {
        assert!(w[1].dts > w[0].dts && w[1].dts - w[0].dts <= 3000 + 100);
    }
    assert_eq!(d.errors().discontinuity, 1);
}

#[test]
fn garbage_and_continuity_errors_drop_units_and_resync_at_keyframe() {
    let src = sample(90, 0);
    let ts = mux(&src);
    let mut bad = BytesMut::new();
    bad.put_slice(&[0x12; 1000]); // garbage before the stream
    let packets: Vec<&[u8]> = ts.chunks(188).collect();
    for (i, p) in packets.iter().enumerate() {
        if i == packets.len() / 3 {
            continue; // a lost packet: continuity error
        }
        if i == packets.len() / 2 {
            bad.put_slice(&[0x47, 0x00, 0x47, 0x13]); // garbage with fake syncs
        }
        bad.put_slice(p);
    }
    let mut d = Demuxer::new();
    let got = demux_all(&mut d, &bad, 1316);
    let e = d.errors();
    assert!(e.continuity >= 1, "{e:?}");
    assert!(e.sync >= 1, "{e:?}");
    let v: Vec<_> = got.iter().filter(|f| f.track == Track::Video).collect();
    assert!(v.len() >= 30 && v.len() < 90, "{}", v.len());
    // After each gap, video resumes at a keyframe.
    assert!(v[0].keyframe);
    for w in v.windows(2) {
        if w[1].dts - w[0].dts != 3000 {
            assert!(w[1].keyframe, "resync at a keyframe");
        }
    }
}

#[test]
fn no_pmt_means_no_frames_and_no_panic() {
    let ts = mux(&sample(30, 0));
    let mut d = Demuxer::new();
    let stripped: Vec<u8> = ts
        .chunks(188)
        .filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) != 0x1000)
        .flatten()
        .copied()
        .collect();
    assert!(demux_all(&mut d, &stripped, 188).is_empty());
}

#[test]
fn a_pes_that_never_ends_is_bounded() {
    let ts = mux(&sample(1, 0));
    let mut d = Demuxer::new();
    d.push(&ts[..188 * 2]); // PAT, PMT
                            // A video PES start, then endless continuation packets.
    let mut cc = 0u8;
    let mut pkt = [0xabu8; 188];
    pkt[0] = 0x47;
    pkt[1] = 0x41;
    pkt[2] = 0x00;
    pkt[3] = 0x10;
    pkt[4..13].copy_from_slice(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5]);
    pkt[13..18].copy_from_slice(&[0x21, 0, 1, 0, 1]);
    d.push(&pkt);
    for _ in 0..60_000 {
        cc = (cc + 1) & 0x0f;
        let mut p = [0xabu8; 188];
        p[0] = 0x47;
        p[1] = 0x01;
        p[2] = 0x00;
        p[3] = 0x10 | cc;
        d.push(&p);
    }
    assert!(d.errors().pes >= 1);
    // And it recovers on good input.
    let got = demux_all(&mut d, &mux(&sample(30, 0)), 1316);
    assert!(got.iter().any(|f| f.keyframe));
}

#[test]
fn arbitrary_bytes_do_not_panic() {
    let mut d = Demuxer::new();
    let mut x: u32 = 12345;
    let mut buf = vec![0u8; 200_000];
    for (i, b) in buf.iter_mut().enumerate() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = if i % 188 == 0 { 0x47 } else { (x >> 16) as u8 };
    }
    d.push(&buf);
    d.flush();
    while d.poll().is_some() {}
}

#[test]
fn first_configuration_waits_for_announced_audio() {
    // Audio of the first second arrives after a few video frames.
    let mut src: Vec<Frame> = (0..10).map(|i| vframe(i, 0, 400)).collect();
    src.extend((0..5).map(|i| aframe(i, 0)));
    let mut d = Demuxer::new();
    for c in mux(&src).chunks(1316) {
        d.push(c);
    }
    match d.poll() {
        Some(DemuxEvent::Config { video, audio }) => {
            assert!(
                video.is_some() && audio.is_some(),
                "both tracks in the first config"
            );
        }
        other => panic!("expected a config first, got {other:?}"),
    }
}
