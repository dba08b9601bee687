use std::collections::VecDeque;

use banyan_relay::{AudioConfig, Frame, VideoConfig, CLOCK_HZ};
use bytes::{Bytes, BytesMut};

use super::h264;

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// Upper bound of one video PES (a very large keyframe).
const MAX_VIDEO_PES: usize = 8 << 20;
/// Upper bound of one audio PES.
const MAX_AUDIO_PES: usize = 256 << 10;
/// Upper bound of unparsed input kept between pushes.
const MAX_PENDING: usize = 64 * PACKET;
/// Frames waiting to be polled before the oldest are dropped.
const MAX_EVENTS: usize = 4096;
/// Video frames held back while the PMT announces audio not yet seen.
const MAX_HOLD: u32 = 30;
/// A timestamp jump larger than this is a discontinuity.
const MAX_JUMP: i64 = 10 * CLOCK_HZ;

/// What the demuxer produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemuxEvent {
    /// The codec configuration changed; applies to the frames that follow.
    Config {
        video: Option<VideoConfig>,
        audio: Option<AudioConfig>,
    },
    Frame(Frame),
}

/// Damage seen so far, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Bytes skipped to find packet sync again (counted once per resync).
    pub sync: u64,
    /// Packets with the transport error indicator set.
    pub transport: u64,
    /// Continuity counter gaps.
    pub continuity: u64,
    /// PES units that were malformed, too large or cut short.
    pub pes: u64,
    /// ADTS frames that could not be parsed.
    pub adts: u64,
    /// Broken PAT or PMT sections.
    pub psi: u64,
    /// Timestamp discontinuities (rebased, not dropped).
    pub discontinuity: u64,
    /// Video access units dropped while waiting for a keyframe after damage.
    pub skipped: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.sync
            + self.transport
            + self.continuity
            + self.pes
            + self.adts
            + self.psi
            + self.discontinuity
            + self.skipped
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Video,
    Audio,
}

#[derive(Default)]
struct Pes {
    data: BytesMut,
    /// Declared PES length (0: unbounded), counted from after the length field.
    declared: usize,
    active: bool,
}

struct Es {
    pid: u16,
    kind: Kind,
    cc: Option<u8>,
    pes: Pes,
}

/// Unwraps 33-bit timestamps into one monotonic i64 timeline shared by all
/// tracks, rebasing across discontinuities.
#[derive(Default)]
struct Timeline {
    last_raw: Option<i64>,
    /// Unwrapped value of `last_raw`.
    last_unwrapped: i64,
    offset: i64,
    last_out: Option<i64>,
}

impl Timeline {
    const WRAP: i64 = 1 << 33;

    fn unwrap(&mut self, raw: i64) -> i64 {
        let u = match self.last_raw {
            None => raw,
            Some(last) => {
                let mut d = (raw - last).rem_euclid(Self::WRAP);
                if d >= Self::WRAP / 2 {
                    d -= Self::WRAP;
                }
                self.last_unwrapped + d
            }
        };
        self.last_raw = Some(raw);
        self.last_unwrapped = u;
        u
    }

    /// Map a raw 33-bit timestamp; true in the second value when a
    /// discontinuity was rebased.
    fn map(&mut self, raw: i64) -> (i64, bool) {
        let u = self.unwrap(raw);
        let mut out = u + self.offset;
        let mut jumped = false;
        if let Some(last) = self.last_out {
            if (out - last).abs() > MAX_JUMP {
                self.offset = last + CLOCK_HZ / 30 - u;
                out = u + self.offset;
                jumped = true;
            }
        }
        self.last_out = Some(self.last_out.map_or(out, |l| l.max(out)));
        (out, jumped)
    }

    /// Map a timestamp known to be close to one just mapped (DTS vs PTS).
    fn map_near(&mut self, raw: i64, anchor_raw: i64, anchor_out: i64) -> i64 {
        let mut d = (raw - anchor_raw).rem_euclid(Self::WRAP);
        if d >= Self::WRAP / 2 {
            d -= Self::WRAP;
        }
        anchor_out + d
    }
}

/// The sans-IO MPEG-TS demuxer. See the module docs.
pub struct Demuxer {
    pending: BytesMut,
    pmt_pid: Option<u16>,
    streams: Vec<Es>,
    timeline: Timeline,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    config_dirty: bool,
    need_keyframe: bool,
    events: VecDeque<DemuxEvent>,
    errors: ErrorCounts,
    in_sync: bool,
    /// Video frames queued before the first audio configuration.
    held_video: u32,
    released: bool,
}

impl Default for Demuxer {
    fn default() -> Self {
        Demuxer::new()
    }
}

fn count(kind: &'static str) {
    metrics::counter!("banyan_ts_errors_total", "kind" => kind).increment(1);
}

impl Demuxer {
    pub fn new() -> Demuxer {
        Demuxer {
            pending: BytesMut::new(),
            pmt_pid: None,
            streams: Vec::new(),
            timeline: Timeline::default(),
            sps: None,
            pps: None,
            video: None,
            audio: None,
            config_dirty: false,
            need_keyframe: true,
            events: VecDeque::new(),
            errors: ErrorCounts::default(),
            in_sync: true,
            held_video: 0,
            released: false,
        }
    }

    /// Damage seen so far.
    pub fn errors(&self) -> ErrorCounts {
        self.errors
    }

    /// The codec configuration in force.
    pub fn config(&self) -> (Option<&VideoConfig>, Option<&AudioConfig>) {
        (self.video.as_ref(), self.audio.as_ref())
    }

    /// The next event, if any.
    ///
    /// At the start of a stream whose PMT announces audio, events are held
    /// (up to about a second of video) until the audio configuration is
    /// known, so the first configuration describes both tracks and a player
    /// joining at the first keyframe sees audio and video from the start.
    pub fn poll(&mut self) -> Option<DemuxEvent> {
        if !self.released {
            let audio_pending = self.streams.iter().any(|s| s.kind == Kind::Audio)
                && self.audio.is_none()
                && self.held_video < MAX_HOLD;
            if audio_pending {
                return None;
            }
            self.released = true;
            if let Some(a) = &self.audio {
                for ev in self.events.iter_mut() {
                    if let DemuxEvent::Config { audio, .. } = ev {
                        if audio.is_none() {
                            *audio = Some(a.clone());
                        }
                    }
                }
            }
        }
        self.events.pop_front()
    }

    /// Feed bytes. Packets may be split anywhere; garbage is skipped.
    pub fn push(&mut self, mut data: &[u8]) {
        // Fast path: packet-aligned input and nothing pending.
        if self.pending.is_empty() {
            while data.len() >= PACKET
                && data[0] == SYNC
                && (data.len() == PACKET || data[PACKET] == SYNC)
            {
                let (p, rest) = data.split_at(PACKET);
                self.packet(p);
                data = rest;
            }
            if data.is_empty() {
                return;
            }
        }
        self.pending.extend_from_slice(data);
        while !self.pending.is_empty() {
            let Some(pos) = self.pending.iter().position(|&b| b == SYNC) else {
                self.lost_sync(self.pending.len());
                self.pending.clear();
                break;
            };
            if pos > 0 {
                self.lost_sync(pos);
                let _ = self.pending.split_to(pos);
            }
            if self.pending.len() < PACKET {
                break;
            }
            // Trust a sync byte when the next packet also starts with one, or
            // when the data ends here.
            if self.pending.len() > PACKET && self.pending[PACKET] != SYNC {
                self.lost_sync(1);
                let _ = self.pending.split_to(1);
                continue;
            }
            let p = self.pending.split_to(PACKET);
            self.in_sync = true;
            self.packet(&p);
        }
        if self.pending.len() > MAX_PENDING {
            let n = self.pending.len() - MAX_PENDING;
            self.lost_sync(n);
            let _ = self.pending.split_to(n);
        }
    }

    /// Finish: emit what is complete in buffered PES units.
    pub fn flush(&mut self) {
        for i in 0..self.streams.len() {
            self.finish_pes(i);
        }
        self.held_video = MAX_HOLD;
    }

    fn lost_sync(&mut self, _skipped: usize) {
        if self.in_sync {
            self.in_sync = false;
            self.errors.sync += 1;
            count("sync");
            // Whatever was being assembled may miss bytes.
            for i in 0..self.streams.len() {
                self.abort_pes(i);
            }
            self.need_keyframe = true;
        }
    }

    fn packet(&mut self, p: &[u8]) {
        let tei = p[1] & 0x80 != 0;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        if tei {
            self.errors.transport += 1;
            count("transport");
            if let Some(i) = self.stream_index(pid) {
                self.abort_pes(i);
            }
            return;
        }
        if pid == 0x1fff {
            return;
        }
        let mut off = 4;
        let mut stuffed = false;
        let mut discontinuity = false;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if 5 + len > PACKET {
                self.errors.pes += 1;
                count("adaptation");
                return;
            }
            stuffed = adaptation_has_stuffing(&p[5..5 + len]);
            discontinuity = len > 0 && p[5] & 0x80 != 0;
            off = 5 + len;
        }
        let has_payload = afc & 1 != 0;
        let payload = if has_payload { &p[off..] } else { &[][..] };
        if pid == 0 {
            if pusi {
                self.pat(payload);
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            if pusi {
                self.pmt(payload);
            }
            return;
        }
        let Some(i) = self.stream_index(pid) else {
            return;
        };
        if !has_payload {
            return;
        }
        // Continuity.
        let es = &mut self.streams[i];
        if let Some(prev) = es.cc {
            if cc == prev && !discontinuity && !pusi {
                // A duplicate packet: ignore it.
                return;
            }
            if cc != (prev + 1) & 0x0f && !discontinuity {
                es.cc = Some(cc);
                self.errors.continuity += 1;
                count("continuity");
                self.abort_pes(i);
                if self.streams[i].kind == Kind::Video {
                    self.need_keyframe = true;
                }
                if !pusi {
                    return;
                }
            }
        }
        self.streams[i].cc = Some(cc);
        if pusi {
            self.finish_pes(i);
            let es = &mut self.streams[i];
            es.pes.data.clear();
            es.pes.active = true;
            es.pes.declared = 0;
            if payload.len() >= 6 && payload[..3] == [0, 0, 1] {
                es.pes.declared = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
            }
        } else if !self.streams[i].pes.active {
            return;
        }
        let max = match self.streams[i].kind {
            Kind::Video => MAX_VIDEO_PES,
            Kind::Audio => MAX_AUDIO_PES,
        };
        let es = &mut self.streams[i];
        if es.pes.data.len() + payload.len() > max {
            self.errors.pes += 1;
            count("pes_too_large");
            self.abort_pes(i);
            return;
        }
        es.pes.data.extend_from_slice(payload);
        let declared_done = es.pes.declared > 0 && es.pes.data.len() >= es.pes.declared + 6;
        // A muxer stuffs only the last packet of a PES: finish it now rather
        // than when the next one starts.
        if declared_done || stuffed {
            self.finish_pes(i);
        }
    }

    fn stream_index(&self, pid: u16) -> Option<usize> {
        self.streams.iter().position(|s| s.pid == pid)
    }

    fn abort_pes(&mut self, i: usize) {
        let es = &mut self.streams[i];
        if es.pes.active {
            es.pes.active = false;
            es.pes.data.clear();
            if es.kind == Kind::Video {
                self.need_keyframe = true;
            }
        }
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(sec) = section(payload, 0x00) else {
            self.errors.psi += 1;
            count("psi");
            return;
        };
        // Programs start after the 8-byte header and run until the CRC.
        let body = &sec[8..sec.len() - 4];
        for prog in body.chunks_exact(4) {
            let number = u16::from_be_bytes([prog[0], prog[1]]);
            if number != 0 {
                let pid = u16::from(prog[2] & 0x1f) << 8 | u16::from(prog[3]);
                if self.pmt_pid != Some(pid) {
                    self.pmt_pid = Some(pid);
                }
                return;
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(sec) = section(payload, 0x02) else {
            self.errors.psi += 1;
            count("psi");
            return;
        };
        let body = &sec[..sec.len() - 4];
        if body.len() < 12 {
            return;
        }
        let info_len = usize::from(u16::from_be_bytes([body[10], body[11]]) & 0x0fff);
        let mut i = 12 + info_len;
        let mut video = None;
        let mut audio = None;
        while i + 5 <= body.len() {
            let st = body[i];
            let pid = u16::from(body[i + 1] & 0x1f) << 8 | u16::from(body[i + 2]);
            let es_len = usize::from(u16::from_be_bytes([body[i + 3], body[i + 4]]) & 0x0fff);
            match st {
                0x1b if video.is_none() => video = Some(pid),
                0x0f if audio.is_none() => audio = Some(pid),
                _ => {}
            }
            i += 5 + es_len;
        }
        let mut wanted: Vec<(u16, Kind)> = Vec::new();
        wanted.extend(video.map(|p| (p, Kind::Video)));
        wanted.extend(audio.map(|p| (p, Kind::Audio)));
        let same = wanted.len() == self.streams.len()
            && wanted
                .iter()
                .zip(&self.streams)
                .all(|((p, k), s)| *p == s.pid && *k == s.kind);
        if !same {
            self.streams = wanted
                .into_iter()
                .map(|(pid, kind)| Es {
                    pid,
                    kind,
                    cc: None,
                    pes: Pes::default(),
                })
                .collect();
        }
    }

    fn finish_pes(&mut self, i: usize) {
        let es = &mut self.streams[i];
        if !es.pes.active {
            return;
        }
        es.pes.active = false;
        let kind = es.kind;
        let data = std::mem::take(&mut es.pes.data).freeze();
        let Some((pts, dts, body)) = parse_pes(&data, es.pes.declared) else {
            self.errors.pes += 1;
            count("pes");
            if kind == Kind::Video {
                self.need_keyframe = true;
            }
            return;
        };
        let Some(pts_raw) = pts else {
            self.errors.pes += 1;
            count("pes_no_pts");
            return;
        };
        let (pts, jumped) = self.timeline.map(pts_raw);
        if jumped {
            self.errors.discontinuity += 1;
            count("discontinuity");
        }
        let dts = match dts {
            Some(d) => self.timeline.map_near(d, pts_raw, pts),
            None => pts,
        };
        match kind {
            Kind::Video => self.video_au(pts, dts.min(pts), &body),
            Kind::Audio => self.audio_pes(pts, &body),
        }
    }

    fn emit(&mut self, ev: DemuxEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            count("queue_full");
        }
        self.events.push_back(ev);
    }

    fn flush_config(&mut self) {
        if self.config_dirty {
            self.config_dirty = false;
            self.emit(DemuxEvent::Config {
                video: self.video.clone(),
                audio: self.audio.clone(),
            });
        }
    }

    fn video_au(&mut self, pts: i64, dts: i64, body: &[u8]) {
        let au = h264::annex_b_to_avcc(body);
        if au.avcc.is_empty() {
            return;
        }
        if let Some(s) = au.sps {
            self.sps = Some(s);
        }
        if let Some(p) = au.pps {
            self.pps = Some(p);
        }
        if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            let avcc = h264::build_avcc(sps, pps);
            if let Some(avcc) = avcc {
                if self.video.as_ref().map(|v| &v.avcc) != Some(&avcc) {
                    let (width, height) = h264::sps_dimensions(sps).unwrap_or((0, 0));
                    self.video = Some(VideoConfig {
                        codec: h264::codec_string(sps),
                        avcc,
                        width,
                        height,
                    });
                    self.config_dirty = true;
                }
            }
        }
        if self.need_keyframe {
            if !au.keyframe || self.video.is_none() {
                self.errors.skipped += 1;
                return;
            }
            self.need_keyframe = false;
        }
        self.flush_config();
        self.emit(DemuxEvent::Frame(Frame::video(
            pts,
            dts,
            au.keyframe,
            au.avcc,
        )));
    }

    fn audio_pes(&mut self, pts: i64, body: &Bytes) {
        let mut off = 0;
        let mut n = 0i64;
        while off + 7 <= body.len() {
            let h = &body[off..];
            let Some(adts) = Adts::parse(h) else {
                self.errors.adts += 1;
                count("adts");
                return;
            };
            if off + adts.frame_len > body.len() {
                self.errors.adts += 1;
                count("adts");
                return;
            }
            let cfg = adts.config();
            if self.audio.as_ref() != Some(&cfg) {
                self.audio = Some(cfg);
                self.config_dirty = true;
            }
            self.flush_config();
            let raw = body.slice(off + adts.header_len..off + adts.frame_len);
            let t = pts + n * 1024 * CLOCK_HZ / i64::from(adts.sample_rate.max(1));
            self.emit(DemuxEvent::Frame(Frame::audio(t, raw)));
            off += adts.frame_len;
            n += 1;
        }
    }
}

/// True when an adaptation field (after its length byte) ends in stuffing.
fn adaptation_has_stuffing(af: &[u8]) -> bool {
    let Some((&flags, rest)) = af.split_first() else {
        // A zero-length field is one byte of stuffing.
        return true;
    };
    let mut used = 0usize;
    if flags & 0x10 != 0 {
        used += 6; // PCR
    }
    if flags & 0x08 != 0 {
        used += 6; // OPCR
    }
    if flags & 0x04 != 0 {
        used += 1; // splice countdown
    }
    if flags & 0x02 != 0 {
        // transport private data
        let Some(&l) = rest.get(used) else {
            return false;
        };
        used += 1 + usize::from(l);
    }
    if flags & 0x01 != 0 {
        let Some(&l) = rest.get(used) else {
            return false;
        };
        used += 1 + usize::from(l);
    }
    rest.len() > used
}

/// The section starting in a PSI payload (after the pointer field), checked
/// for its table id, length and CRC. Returns the section including the CRC.
fn section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
    let (&pointer, rest) = payload.split_first()?;
    let sec = rest.get(usize::from(pointer)..)?;
    if sec.len() < 3 || sec[0] != table_id {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([sec[1], sec[2]]) & 0x0fff);
    if len < 9 {
        return None;
    }
    let sec = sec.get(..3 + len)?;
    if crc32_mpeg(sec) != 0 {
        return None;
    }
    Some(sec)
}

/// CRC-32/MPEG-2; over a section including its CRC the result is 0.
pub(crate) fn crc32_mpeg(data: &[u8]) -> u32 {
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

fn read_ts(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1) & 0x07) << 30
        | i64::from(b[1]) << 22
        | (i64::from(b[2]) >> 1) << 15
        | i64::from(b[3]) << 7
        | i64::from(b[4]) >> 1
}

/// PTS, DTS and the elementary stream bytes of a PES packet.
fn parse_pes(data: &Bytes, declared: usize) -> Option<(Option<i64>, Option<i64>, Bytes)> {
    if data.len() < 9 || data[..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = data[3];
    if !(0xc0..=0xef).contains(&stream_id) && stream_id != 0xbd {
        return None;
    }
    let flags = data[7];
    let hlen = usize::from(data[8]);
    let start = 9 + hlen;
    if start > data.len() {
        return None;
    }
    let h = &data[9..start];
    let (pts, dts) = match flags >> 6 {
        2 if h.len() >= 5 => (Some(read_ts(&h[..5])), None),
        3 if h.len() >= 10 => (Some(read_ts(&h[..5])), Some(read_ts(&h[5..10]))),
        0 => (None, None),
        _ => return None,
    };
    let end = if declared > 0 {
        let e = declared + 6;
        if e < start || e > data.len() {
            // Cut short.
            return None;
        }
        e
    } else {
        data.len()
    };
    Some((pts, dts, data.slice(start..end)))
}

/// One ADTS header.
struct Adts {
    header_len: usize,
    frame_len: usize,
    object_type: u8,
    sr_index: u8,
    sample_rate: u32,
    channels: u8,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl Adts {
    fn parse(h: &[u8]) -> Option<Adts> {
        if h.len() < 7 || h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
            return None;
        }
        let protection_absent = h[1] & 1 != 0;
        let object_type = (h[2] >> 6) + 1;
        let sr_index = (h[2] >> 2) & 0x0f;
        let sample_rate = *SAMPLE_RATES.get(usize::from(sr_index))?;
        let channels = (h[2] & 1) << 2 | h[3] >> 6;
        let frame_len =
            usize::from(h[3] & 3) << 11 | usize::from(h[4]) << 3 | usize::from(h[5] >> 5);
        let header_len = if protection_absent { 7 } else { 9 };
        if frame_len <= header_len {
            return None;
        }
        Some(Adts {
            header_len,
            frame_len,
            object_type,
            sr_index,
            sample_rate,
            channels,
        })
    }

    fn config(&self) -> AudioConfig {
        let asc = u16::from(self.object_type) << 11
            | u16::from(self.sr_index) << 7
            | u16::from(self.channels) << 3;
        AudioConfig {
            asc: Bytes::copy_from_slice(&asc.to_be_bytes()),
            sample_rate: self.sample_rate,
            channels: self.channels,
            codec: format!("mp4a.40.{}", self.object_type),
        }
    }
}

#[cfg(test)]
mod tests;
