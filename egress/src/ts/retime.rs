//! Timestamps of one muxed frame, read and rewritten in place.
//!
//! A chunk is what [`Muxer::frame`](super::Muxer::frame) wrote for one frame:
//! maybe PAT and PMT, then one PES whose first packet carries the PCR (if
//! any) and the PES header. Shared chunks are muxed once per stream; a
//! viewer that joins with its backlog compressed (see the hub's catch-up)
//! needs that backlog with other timestamps, so it gets a retimed copy of
//! those few chunks and the shared bytes for everything after.

use bytes::{Bytes, BytesMut};

use super::{PACKET, PMT_PID, WRAP};

/// Where the timestamps of a chunk's PES sit.
struct Layout {
    /// Offset of the PCR base (6 bytes), if the packet carries one.
    pcr: Option<usize>,
    /// Offset of the PTS (5 bytes).
    pts: usize,
    /// Offset of the DTS (5 bytes), if present.
    dts: Option<usize>,
}

fn layout(chunk: &[u8]) -> Option<Layout> {
    for (i, p) in chunk.chunks_exact(PACKET).enumerate() {
        let base = i * PACKET;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        if p[0] != 0x47 || p[1] & 0x40 == 0 || pid == 0 || pid == PMT_PID {
            continue;
        }
        let afc = (p[3] >> 4) & 3;
        let mut off = 4;
        let mut pcr = None;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if len > 0 && p[5] & 0x10 != 0 && len >= 7 {
                pcr = Some(base + 6);
            }
            off = 5 + len;
        }
        let pes = p.get(off..)?;
        if pes.len() < 14 || pes[..3] != [0, 0, 1] {
            return None;
        }
        let flags = pes[7] >> 6;
        let pts = base + off + 9;
        let dts = (flags == 3 && pes.len() >= 19).then_some(base + off + 14);
        if flags & 2 == 0 {
            return None;
        }
        return Some(Layout { pcr, pts, dts });
    }
    None
}

fn read_ts(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1) & 7) << 30
        | i64::from(b[1]) << 22
        | i64::from(b[2] >> 1) << 15
        | i64::from(b[3]) << 7
        | i64::from(b[4] >> 1)
}

fn write_ts(b: &mut [u8], t: i64) {
    let t = t.rem_euclid(WRAP) as u64;
    let marker = b[0] & 0xf0;
    b[0] = marker | ((t >> 29) as u8 & 0x0e) | 1;
    b[1] = (t >> 22) as u8;
    b[2] = ((t >> 14) as u8 & 0xfe) | 1;
    b[3] = (t >> 7) as u8;
    b[4] = ((t << 1) as u8 & 0xfe) | 1;
}

fn read_pcr(b: &[u8]) -> i64 {
    i64::from(b[0]) << 25
        | i64::from(b[1]) << 17
        | i64::from(b[2]) << 9
        | i64::from(b[3]) << 1
        | i64::from(b[4] >> 7)
}

fn write_pcr(b: &mut [u8], t: i64) {
    let t = t.rem_euclid(WRAP) as u64;
    b[0] = (t >> 25) as u8;
    b[1] = (t >> 17) as u8;
    b[2] = (t >> 9) as u8;
    b[3] = (t >> 1) as u8;
    b[4] = ((t & 1) << 7) as u8 | (b[4] & 0x7f);
}

/// The PTS and DTS (modulo 2^33) of a chunk's PES.
pub fn times(chunk: &[u8]) -> Option<(i64, i64)> {
    let l = layout(chunk)?;
    let pts = read_ts(&chunk[l.pts..]);
    let dts = l.dts.map_or(pts, |d| read_ts(&chunk[d..]));
    Some((pts, dts))
}

/// True when the chunk's PES carries `pts` and `dts` already (modulo 2^33),
/// or carries no PES at all.
pub fn has_times(chunk: &[u8], pts: i64, dts: i64) -> bool {
    times(chunk).is_none_or(|t| t == (pts.rem_euclid(WRAP), dts.rem_euclid(WRAP)))
}

/// A copy of `chunk` whose PES says `pts` and `dts`; the PCR moves with the
/// DTS. A chunk without a PES comes back as it is.
pub fn retime(chunk: &Bytes, pts: i64, dts: i64) -> Bytes {
    let Some(l) = layout(chunk) else {
        return chunk.clone();
    };
    let mut out = BytesMut::from(&chunk[..]);
    let old_dts = l
        .dts
        .map_or_else(|| read_ts(&out[l.pts..]), |d| read_ts(&out[d..]));
    write_ts(&mut out[l.pts..], pts);
    if let Some(d) = l.dts {
        write_ts(&mut out[d..], dts);
    }
    if let Some(p) = l.pcr {
        let shift = dts.rem_euclid(WRAP) - old_dts;
        let pcr = read_pcr(&out[p..]);
        write_pcr(&mut out[p..], pcr + shift);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::Muxer;
    use banyan_relay::{Frame, MediaInfo, VideoConfig};
    use bytes::BufMut;

    fn muxer() -> Muxer {
        let mut m = Muxer::new();
        m.set_info(&MediaInfo {
            version: 1,
            video: Some(VideoConfig {
                avcc: Bytes::from_static(&[
                    1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce,
                ]),
                width: 320,
                height: 240,
                codec: "avc1.42001e".into(),
            }),
            audio: None,
        });
        m
    }

    fn frame(pts: i64, dts: i64, key: bool) -> Frame {
        let mut p = BytesMut::new();
        p.put_u32(300);
        p.put_u8(if key { 0x65 } else { 0x41 });
        p.put_bytes(0xab, 299);
        Frame::video(pts, dts, key, p.freeze())
    }

    #[test]
    fn retimed_chunk_equals_a_chunk_muxed_with_those_times() {
        // Same muxer state for both: the PCR, continuity counters and PSI match.
        let (mut a, mut b) = (muxer(), muxer());
        let (mut ca, mut cb) = (BytesMut::new(), BytesMut::new());
        a.frame(&frame(93_000, 90_000, true), &mut ca);
        b.frame(&frame(13_000, 10_000, true), &mut cb);
        let ca = ca.freeze();
        assert_eq!(times(&ca), Some((93_000, 90_000)));
        assert!(has_times(&ca, 93_000, 90_000));
        assert!(!has_times(&ca, 13_000, 10_000));
        let r = retime(&ca, 13_000, 10_000);
        assert_eq!(&r[..], &cb[..]);
    }

    #[test]
    fn times_wrap_and_pts_only() {
        let mut m = muxer();
        let mut c = BytesMut::new();
        let t = WRAP + 5;
        m.frame(&frame(t, t, false), &mut c);
        let c = c.freeze();
        assert_eq!(times(&c), Some((5, 5)));
        assert!(has_times(&c, t, t));
        let r = retime(&c, 7, 7);
        assert_eq!(times(&r), Some((7, 7)));
    }

    #[test]
    fn garbage_has_no_times() {
        assert_eq!(times(&[0u8; 188]), None);
        assert_eq!(times(&[]), None);
        let junk = Bytes::from(vec![0x47u8; 376]);
        assert_eq!(&retime(&junk, 1, 1)[..], &junk[..]);
    }
}
