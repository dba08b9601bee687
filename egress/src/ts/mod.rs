//! Hub frames to MPEG-TS: a sans-IO muxer.
//!
//! * One program: PMT on PID 0x1000, H.264 on 0x100 (stream type 0x1B), AAC
//!   in ADTS on 0x101 (0x0F), whichever the [`MediaInfo`] declares.
//! * PAT and PMT before every keyframe and at least every 100 ms of media.
//! * PCR on the video PID (the audio PID for audio-only streams), a little
//!   behind the decode time so a player never sees a frame as late.
//! * Each keyframe starts with an access unit delimiter and SPS/PPS (from the
//!   avcC unless the frame already carries them); AVCC becomes Annex B.
//! * AAC frames get ADTS headers built from the AudioSpecificConfig.
//! * Continuity counters per PID; the last packet of a PES is stuffed.
//!
//! Timestamps are the hub's 90 kHz clock, written modulo 2^33.

pub mod retime;

use banyan_relay::{Frame, MediaInfo, Track, CLOCK_HZ};
use bytes::{BufMut, Bytes, BytesMut};

pub const PACKET: usize = 188;
pub const PMT_PID: u16 = 0x1000;
pub const VIDEO_PID: u16 = 0x100;
pub const AUDIO_PID: u16 = 0x101;
/// PSI repeat interval in ticks.
const PSI_INTERVAL: i64 = CLOCK_HZ / 10;
/// PCR lead over the decode time, in ticks.
const PCR_LEAD: i64 = CLOCK_HZ / 10;
const WRAP: i64 = 1 << 33;

const AUD: [u8; 6] = [0, 0, 0, 1, 9, 0xf0];

/// Parameter sets and ADTS fields derived from a [`MediaInfo`].
#[derive(Default, Clone)]
struct Tracks {
    video: bool,
    audio: bool,
    /// SPS and PPS, Annex B, ready to prepend to a keyframe.
    param_sets: Bytes,
    /// ADTS fixed header bits: (profile, sampling index, channel config).
    adts: Option<(u8, u8, u8)>,
}

/// The TS muxer. Feed it [`Muxer::set_info`] then frames.
pub struct Muxer {
    tracks: Tracks,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    last_psi: Option<i64>,
    last_pcr: i64,
    psi_dirty: bool,
    pmt_version: u8,
}

impl Default for Muxer {
    fn default() -> Self {
        Muxer::new()
    }
}

impl Muxer {
    pub fn new() -> Muxer {
        Muxer {
            tracks: Tracks::default(),
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
            last_psi: None,
            last_pcr: i64::MIN,
            psi_dirty: true,
            pmt_version: 0,
        }
    }

    /// The codec configuration for the frames that follow.
    pub fn set_info(&mut self, info: &MediaInfo) {
        let mut t = Tracks::default();
        if let Some(v) = &info.video {
            t.video = true;
            t.param_sets = avcc_param_sets(&v.avcc);
        }
        if let Some(a) = &info.audio {
            t.audio = true;
            t.adts = adts_fields(&a.asc, a.sample_rate, a.channels);
        }
        if t.video != self.tracks.video || t.audio != self.tracks.audio {
            self.psi_dirty = true;
            self.pmt_version = (self.pmt_version + 1) & 0x1f;
        }
        self.tracks = t;
    }

    /// Append the TS packets of one frame to `out`.
    pub fn frame(&mut self, f: &Frame, out: &mut BytesMut) {
        match f.track {
            Track::Video if self.tracks.video => {
                let psi_due = self
                    .last_psi
                    .is_none_or(|t| (f.dts - t).abs() >= PSI_INTERVAL);
                if f.keyframe || psi_due || self.psi_dirty {
                    self.write_psi(out);
                    self.last_psi = Some(f.dts);
                }
                let es = self.video_es(f);
                let pcr = (f.dts - PCR_LEAD).max(self.last_pcr);
                self.last_pcr = pcr;
                let hdr = pes_header(0xe0, f.pts, f.dts, 0);
                let cc = &mut self.cc_video;
                write_pes(out, VIDEO_PID, cc, &hdr, &es, Some(pcr));
            }
            Track::Audio if self.tracks.audio => {
                let Some((profile, sri, ch)) = self.tracks.adts else {
                    return;
                };
                if !self.tracks.video
                    && (self.psi_dirty
                        || self
                            .last_psi
                            .is_none_or(|t| (f.dts - t).abs() >= PSI_INTERVAL))
                {
                    self.write_psi(out);
                    self.last_psi = Some(f.dts);
                }
                let len = f.payload.len() + 7;
                if len > 0x1fff {
                    return;
                }
                let mut es = BytesMut::with_capacity(len);
                es.put_slice(&adts_header(profile, sri, ch, len));
                es.put_slice(&f.payload);
                let pcr = if self.tracks.video {
                    None
                } else {
                    let p = (f.dts - PCR_LEAD).max(self.last_pcr);
                    self.last_pcr = p;
                    Some(p)
                };
                let hdr = pes_header(0xc0, f.pts, f.pts, es.len());
                write_pes(out, AUDIO_PID, &mut self.cc_audio, &hdr, &es, pcr);
            }
            _ => {}
        }
    }

    fn video_es(&self, f: &Frame) -> BytesMut {
        let mut es = BytesMut::with_capacity(f.payload.len() + self.tracks.param_sets.len() + 32);
        let nals = avcc_nals(&f.payload);
        if nals.first().is_none_or(|n| n[0] & 0x1f != 9) {
            es.put_slice(&AUD);
        }
        if f.keyframe && !nals.iter().any(|n| n[0] & 0x1f == 7) {
            es.put_slice(&self.tracks.param_sets);
        }
        for n in nals {
            es.put_slice(&[0, 0, 0, 1]);
            es.put_slice(n);
        }
        es
    }

    fn write_psi(&mut self, out: &mut BytesMut) {
        self.psi_dirty = false;
        // PAT: program 1 -> PMT_PID.
        let mut pat = Vec::with_capacity(16);
        pat.extend_from_slice(&[0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00]);
        pat.extend_from_slice(&[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
        psi_packet(out, 0, &mut self.cc_pat, &pat);
        // PMT.
        let pcr_pid = if self.tracks.video {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        let mut es = Vec::new();
        if self.tracks.video {
            es.extend_from_slice(&[
                0x1b,
                0xe0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xf0,
                0,
            ]);
        }
        if self.tracks.audio {
            es.extend_from_slice(&[
                0x0f,
                0xe0 | (AUDIO_PID >> 8) as u8,
                AUDIO_PID as u8,
                0xf0,
                0,
            ]);
        }
        let section_len = 9 + es.len() + 4;
        let mut pmt = Vec::with_capacity(3 + section_len);
        pmt.push(0x02);
        pmt.push(0xb0 | (section_len >> 8) as u8);
        pmt.push(section_len as u8);
        pmt.extend_from_slice(&[0x00, 0x01, 0xc1 | (self.pmt_version << 1), 0x00, 0x00]);
        pmt.push(0xe0 | (pcr_pid >> 8) as u8);
        pmt.push(pcr_pid as u8);
        pmt.extend_from_slice(&[0xf0, 0x00]);
        pmt.extend_from_slice(&es);
        psi_packet(out, PMT_PID, &mut self.cc_pmt, &pmt);
    }
}

/// Write one PSI section (without CRC; it is appended) in one packet.
fn psi_packet(out: &mut BytesMut, pid: u16, cc: &mut u8, section: &[u8]) {
    let crc = crc32_mpeg(section);
    out.put_u8(0x47);
    out.put_u8(0x40 | (pid >> 8) as u8);
    out.put_u8(pid as u8);
    out.put_u8(0x10 | *cc);
    *cc = (*cc + 1) & 0x0f;
    out.put_u8(0); // pointer field
    out.put_slice(section);
    out.put_u32(crc);
    let used = 5 + section.len() + 4;
    out.put_bytes(0xff, PACKET - used);
}

fn ts_bytes(marker: u8, t: i64) -> [u8; 5] {
    let t = t.rem_euclid(WRAP) as u64;
    [
        marker << 4 | ((t >> 29) as u8 & 0x0e) | 1,
        (t >> 22) as u8,
        ((t >> 14) as u8 & 0xfe) | 1,
        (t >> 7) as u8,
        ((t << 1) as u8 & 0xfe) | 1,
    ]
}

/// A PES header; `es_len` 0 leaves the length unbounded (video).
fn pes_header(stream_id: u8, pts: i64, dts: i64, es_len: usize) -> Vec<u8> {
    let both = pts != dts;
    let hlen = if both { 10 } else { 5 };
    let mut h = Vec::with_capacity(9 + hlen);
    h.extend_from_slice(&[0, 0, 1, stream_id]);
    let len = if es_len == 0 { 0 } else { es_len + 3 + hlen };
    let len = if len > 0xffff { 0 } else { len };
    h.extend_from_slice(&(len as u16).to_be_bytes());
    h.push(0x80);
    h.push(if both { 0xc0 } else { 0x80 });
    h.push(hlen as u8);
    if both {
        h.extend_from_slice(&ts_bytes(3, pts));
        h.extend_from_slice(&ts_bytes(1, dts));
    } else {
        h.extend_from_slice(&ts_bytes(2, pts));
    }
    h
}

/// Packetize one PES (header + elementary stream bytes).
fn write_pes(out: &mut BytesMut, pid: u16, cc: &mut u8, hdr: &[u8], es: &[u8], pcr: Option<i64>) {
    let total = hdr.len() + es.len();
    let mut sent = 0usize;
    let mut first = true;
    let byte_at = |i: usize| -> &[u8] {
        if i < hdr.len() {
            &hdr[i..]
        } else {
            &es[i - hdr.len()..]
        }
    };
    while sent < total || first {
        let remaining = total - sent;
        // Adaptation field contents for this packet.
        let mut af: Vec<u8> = Vec::new();
        if first {
            if let Some(p) = pcr {
                let base = p.rem_euclid(WRAP) as u64;
                af.push(0x10);
                af.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    ((base & 1) << 7) as u8 | 0x7e,
                    0,
                ]);
            }
        }
        let af_total = if af.is_empty() { 0 } else { 1 + af.len() };
        let room = PACKET - 4 - af_total;
        let (af_total, af) = if remaining < room {
            // Stuff the last packet.
            let need = PACKET - 4 - remaining;
            let mut a = af;
            if need == 1 {
                (1, Vec::new())
            } else {
                if a.is_empty() {
                    a.push(0x00);
                }
                a.resize(need - 1, 0xff);
                (need, a)
            }
        } else {
            (af_total, af)
        };
        let payload = PACKET - 4 - af_total;
        out.put_u8(0x47);
        out.put_u8(if first { 0x40 } else { 0 } | (pid >> 8) as u8 & 0x1f);
        out.put_u8(pid as u8);
        out.put_u8(if af_total > 0 { 0x30 } else { 0x10 } | *cc);
        *cc = (*cc + 1) & 0x0f;
        if af_total > 0 {
            out.put_u8((af_total - 1) as u8);
            out.put_slice(&af);
        }
        let mut left = payload;
        while left > 0 {
            let chunk = byte_at(sent);
            let n = chunk.len().min(left);
            out.put_slice(&chunk[..n]);
            sent += n;
            left -= n;
        }
        first = false;
    }
}

/// The NAL units of an AVCC payload (4-byte lengths); stops at a bad length.
pub fn avcc_nals(mut p: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while p.len() >= 4 {
        let n = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        let Some(nal) = p.get(4..4 + n) else {
            break;
        };
        if !nal.is_empty() {
            out.push(nal);
        }
        p = &p[4 + n..];
    }
    out
}

/// SPS and PPS of an avcC record as Annex B bytes.
pub fn avcc_param_sets(avcc: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let mut i = 5usize;
    let take = |count: usize, i: &mut usize, out: &mut BytesMut| -> bool {
        for _ in 0..count {
            let Some(l) = avcc.get(*i..*i + 2) else {
                return false;
            };
            let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
            let Some(nal) = avcc.get(*i + 2..*i + 2 + l) else {
                return false;
            };
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(nal);
            *i += 2 + l;
        }
        true
    };
    let Some(&n_sps) = avcc.get(i) else {
        return Bytes::new();
    };
    i += 1;
    if !take(usize::from(n_sps & 0x1f), &mut i, &mut out) {
        return out.freeze();
    }
    let Some(&n_pps) = avcc.get(i) else {
        return out.freeze();
    };
    i += 1;
    take(usize::from(n_pps), &mut i, &mut out);
    out.freeze()
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// ADTS (profile, sampling index, channel config) from an AudioSpecificConfig.
fn adts_fields(asc: &[u8], sample_rate: u32, channels: u8) -> Option<(u8, u8, u8)> {
    let (aot, sri, ch) = match asc {
        [a, b, ..] => {
            let aot = a >> 3;
            let sri = (a & 7) << 1 | b >> 7;
            let ch = (b >> 3) & 0x0f;
            (aot, sri, ch)
        }
        _ => (2, 15, channels),
    };
    let sri = if sri < 13 {
        sri
    } else {
        SAMPLE_RATES.iter().position(|&r| r == sample_rate)? as u8
    };
    // ADTS carries object types 1..4; HE-AAC signals AAC-LC (implicit SBR).
    let profile = if (1..=4).contains(&aot) { aot - 1 } else { 1 };
    let ch = if ch == 0 { channels.min(7) } else { ch };
    Some((profile, sri, ch))
}

fn adts_header(profile: u8, sri: u8, ch: u8, len: usize) -> [u8; 7] {
    [
        0xff,
        0xf1,
        profile << 6 | sri << 2 | (ch >> 2) & 1,
        (ch & 3) << 6 | ((len >> 11) & 3) as u8,
        (len >> 3) as u8,
        ((len & 7) as u8) << 5 | 0x1f,
        0xfc,
    ]
}

/// CRC-32/MPEG-2.
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_relay::{AudioConfig, VideoConfig};

    fn info() -> MediaInfo {
        MediaInfo {
            version: 1,
            video: Some(VideoConfig {
                avcc: Bytes::from_static(&[
                    1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce,
                ]),
                width: 320,
                height: 240,
                codec: "avc1.42001e".into(),
            }),
            audio: Some(AudioConfig {
                asc: Bytes::from_static(&[0x12, 0x10]),
                sample_rate: 44100,
                channels: 2,
                codec: "mp4a.40.2".into(),
            }),
        }
    }

    #[test]
    fn packets_are_aligned_and_counted() {
        let mut m = Muxer::new();
        m.set_info(&info());
        let mut out = BytesMut::new();
        for i in 0..10i64 {
            let mut p = BytesMut::new();
            p.put_u32(500);
            p.put_u8(if i == 0 { 0x65 } else { 0x41 });
            p.put_bytes(0xab, 499);
            m.frame(
                &Frame::video(i * 3000, i * 3000, i == 0, p.freeze()),
                &mut out,
            );
            m.frame(
                &Frame::audio(i * 3000, Bytes::from_static(&[1, 2, 3])),
                &mut out,
            );
        }
        assert_eq!(out.len() % PACKET, 0);
        let mut cc = std::collections::HashMap::new();
        for p in out.chunks(PACKET) {
            assert_eq!(p[0], 0x47);
            let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
            let c = p[3] & 0x0f;
            if let Some(prev) = cc.insert(pid, c) {
                assert_eq!(c, (prev + 1) & 0x0f, "pid {pid:#x}");
            }
        }
        assert!(cc.contains_key(&0) && cc.contains_key(&PMT_PID));
    }

    #[test]
    fn adts_from_asc() {
        assert_eq!(adts_fields(&[0x12, 0x10], 44100, 2), Some((1, 4, 2)));
        let h = adts_header(1, 4, 2, 100);
        assert_eq!(&h[..2], &[0xff, 0xf1]);
        let len = usize::from(h[3] & 3) << 11 | usize::from(h[4]) << 3 | usize::from(h[5] >> 5);
        assert_eq!(len, 100);
    }

    #[test]
    fn param_sets_from_avcc() {
        let ps = avcc_param_sets(&info().video.unwrap().avcc);
        assert_eq!(
            &ps[..],
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0x1e, 0, 0, 0, 1, 0x68, 0xce]
        );
        assert!(avcc_param_sets(&[1, 2]).is_empty());
    }
}
