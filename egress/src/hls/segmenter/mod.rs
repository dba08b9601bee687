//! Sans-IO LL-HLS segmenter of one stream: hub items in, init segments,
//! parts and segments out.
//!
//! Contract: call [`Segmenter::push`] with every [`Item`] of a hub
//! subscription and the wall-clock time of arrival (Unix milliseconds, used
//! only for `EXT-X-PROGRAM-DATE-TIME`). It returns `true` when a part, a
//! segment or the end became available; the driver then wakes blocked
//! requests. Nothing here reads a clock or a socket.
//!
//! Rules:
//! * Media time starts at the first video keyframe (the origin); earlier
//!   frames are dropped. Video decode times are 90 kHz ticks since the origin.
//! * A part closes when the next video frame would make it longer than the
//!   part target (durations are measured between video frames, so a part
//!   never exceeds the target unless one frame alone does), or at a segment
//!   cut. A part that starts with a keyframe is independent.
//! * A segment closes at a keyframe once it holds at least three quarters of
//!   the segment target, so a segment is one GOP or more.
//! * A codec change or a timestamp jump closes the segment; the next one
//!   carries `EXT-X-DISCONTINUITY` (and a new `EXT-X-MAP` on a codec change).
//! * Only `window` complete segments are kept; parts are kept only for the
//!   newest complete segments and the one in progress.
//! * A segment's program date time is its media time on a wall clock
//!   anchored by the frames that arrived soonest after their media time
//!   (a replayed group of pictures arrives late; the live edge does not),
//!   so consecutive segments are dated exactly their durations apart.
//! * [`Segmenter::flush`] (the publisher has gone) closes the open part and
//!   segment at once; what comes after starts at a keyframe, after a
//!   discontinuity.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use banyan_relay::{Frame, Item, MediaInfo, Track, CLOCK_HZ};

use super::fmp4::{self, Sample, TrackRun, AUDIO_TRACK, VIDEO_TRACK};
use super::WebVttWriter;

mod audio_only;
mod query;

/// AAC samples per frame.
const AAC_FRAME: u32 = 1024;
/// A gap between video frames longer than this is a discontinuity.
const MAX_FRAME_GAP: i64 = 2 * CLOCK_HZ;
/// Complete segments whose parts stay listed.
const PART_SEGMENTS: usize = 3;

/// Tunables of a segmenter, in 90 kHz ticks.
#[derive(Debug, Clone, Copy)]
pub struct SegmenterConfig {
    pub part_target: i64,
    pub segment_target: i64,
    /// Complete segments kept (the sliding window).
    pub window: usize,
    /// First media sequence, part and init number. Seeding it from the wall
    /// clock keeps names unique across muxer restarts, so caches never
    /// serve a stale part under a reused name.
    pub start_seq: u64,
}

/// One LL-HLS partial segment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Global part number (the URI names it; it does not restart per segment).
    pub index: u64,
    /// Duration in ticks.
    pub duration: i64,
    pub independent: bool,
    pub data: Bytes,
}

/// A media segment, complete or in progress.
#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    /// Id of the init segment (`EXT-X-MAP`) this segment needs.
    pub init: u64,
    pub discontinuity: bool,
    /// Media time of the first video frame, in ticks.
    pub start: i64,
    /// Duration in ticks (sum of its parts).
    pub duration: i64,
    /// Wall-clock time of the first frame, Unix milliseconds (see
    /// [`Segmenter::push`]: the arrival time the frame would have had at
    /// the live edge, not when a replayed frame happened to arrive).
    pub wall_ms: i64,
    /// Media timeline the segment belongs to: a discontinuity starts a new
    /// one, with its own wall-clock anchor.
    pub epoch: u64,
    /// Parts; emptied for old segments.
    pub parts: Vec<Arc<Part>>,
    /// Number of parts the segment was made of.
    pub part_count: usize,
    /// Whole segment bytes, set when complete.
    pub data: Option<Bytes>,
    /// WebVTT document of the segment, when a caption writer is attached.
    pub vtt: Option<Bytes>,
    pub bytes: usize,
}

struct PendingVideo {
    dts: i64,
    pts: i64,
    keyframe: bool,
    data: Bytes,
}

/// The per-stream segmenter.
pub struct Segmenter {
    cfg: SegmenterConfig,
    info: Option<Arc<MediaInfo>>,
    /// Init segments still referenced: `(id, bytes)`.
    inits: VecDeque<(u64, Bytes)>,
    init_id: u64,
    /// The current info could not be turned into an init segment.
    init_broken: bool,
    segments: VecDeque<Segment>,
    current: Option<Segment>,
    next_msn: u64,
    next_part: u64,
    /// Discontinuities that slid out of the window.
    disc_seq: u64,
    pending_discontinuity: bool,
    origin: Option<i64>,
    need_keyframe: bool,
    video: Vec<PendingVideo>,
    audio: Vec<Bytes>,
    audio_first: Option<u64>,
    audio_next: Option<u64>,
    frame_dur: i64,
    /// Media time at the end of the newest part.
    edge: i64,
    max_segment: i64,
    ended: bool,
    vtt: Option<Box<dyn WebVttWriter>>,
    /// Current media timeline (see [`Segment::epoch`]).
    epoch: u64,
    /// Wall clock at media time zero of this epoch, Unix milliseconds: the
    /// least `arrival - media time` of its frames. A frame replayed from
    /// the hub's cache arrives late against its media time; frames at the
    /// live edge arrive on time, so the least difference is the truest.
    anchor: Option<i64>,
    /// Bumped by every call that may change the segmenter: a cache of
    /// anything made from its state is good while this is unchanged.
    generation: u64,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig, vtt: Option<Box<dyn WebVttWriter>>) -> Segmenter {
        Segmenter {
            cfg,
            info: None,
            inits: VecDeque::new(),
            init_id: cfg.start_seq,
            init_broken: false,
            segments: VecDeque::new(),
            current: None,
            next_msn: cfg.start_seq,
            next_part: cfg.start_seq,
            disc_seq: 0,
            pending_discontinuity: false,
            origin: None,
            need_keyframe: true,
            video: Vec::new(),
            audio: Vec::new(),
            audio_first: None,
            audio_next: None,
            frame_dur: CLOCK_HZ / 30,
            edge: 0,
            max_segment: 0,
            ended: false,
            vtt,
            epoch: 0,
            anchor: None,
            generation: 0,
        }
    }

    /// Feed one hub item. True when something new became available.
    pub fn push(&mut self, item: Item, wall_ms: i64) -> bool {
        self.generation += 1;
        if self.ended {
            return false;
        }
        match item {
            Item::Info(info) => {
                self.set_info(info);
                false
            }
            Item::Frame(f) => match f.track {
                Track::Video => self.video_frame(f, wall_ms),
                Track::Audio if self.audio_only() => self.audio_only_frame(f, wall_ms),
                Track::Audio => {
                    self.audio_frame(f);
                    false
                }
                Track::Captions => {
                    if let (Some(o), Some(w)) = (self.origin, self.vtt.as_mut()) {
                        w.push(f.pts - o, &f.payload);
                    }
                    false
                }
            },
            Item::End(_) => {
                let est = self.frame_dur;
                self.close_part(est);
                self.close_segment();
                self.ended = true;
                true
            }
        }
    }

    fn set_info(&mut self, info: Arc<MediaInfo>) {
        if self.info.as_ref().is_some_and(|i| i.same_config(&info)) {
            return;
        }
        let had_media = self.current.is_some() || !self.segments.is_empty();
        let est = self.frame_dur;
        self.close_part(est);
        self.close_segment();
        match fmp4::init_segment(&info) {
            Ok(init) => {
                self.init_id += 1;
                self.inits.push_back((self.init_id, init));
                self.init_broken = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "hls: cannot build an init segment; media dropped");
                metrics::counter!("banyan_hls_errors_total", "kind" => "init").increment(1);
                self.init_broken = true;
            }
        }
        self.info = Some(info);
        self.need_keyframe = true;
        self.pending_discontinuity = had_media;
        self.audio_next = None;
        self.new_epoch();
    }

    fn video_frame(&mut self, f: Frame, wall_ms: i64) -> bool {
        if self.init_broken || self.info.is_none() {
            return false;
        }
        let origin = *self.origin.get_or_insert(f.dts);
        let dts = f.dts - origin;
        let mut changed = false;
        if let Some(last) = self.video.last() {
            let gap = dts - last.dts;
            if gap <= 0 || gap > MAX_FRAME_GAP {
                // A jump (a skip in the hub, a reconnect): start over at a keyframe.
                let est = self.frame_dur;
                changed |= self.close_part(est);
                self.close_segment();
                self.pending_discontinuity = true;
                self.need_keyframe = true;
                self.audio_next = None;
                self.new_epoch();
            } else {
                let seg_len =
                    self.current.as_ref().map_or(0, |s| s.duration) + (dts - self.video[0].dts);
                if f.keyframe && seg_len >= self.cfg.segment_target * 3 / 4 {
                    changed |= self.close_part(gap);
                    self.close_segment();
                } else if dts - self.video[0].dts + gap > self.cfg.part_target {
                    changed |= self.close_part(gap);
                }
                self.frame_dur = gap;
            }
        }
        if self.need_keyframe {
            if !f.keyframe {
                return changed;
            }
            self.need_keyframe = false;
        }
        if dts < 0 {
            return changed;
        }
        self.observe_wall(dts, wall_ms);
        self.open_segment(dts, wall_ms);
        self.video.push(PendingVideo {
            dts,
            pts: f.pts - origin,
            keyframe: f.keyframe,
            data: f.payload,
        });
        changed
    }

    fn audio_frame(&mut self, f: Frame) {
        let Some(origin) = self.origin else {
            return;
        };
        if self.current.is_none() || self.need_keyframe {
            return;
        }
        let rate = i64::from(self.audio_rate());
        let t = (f.pts - origin) * rate / CLOCK_HZ;
        if t < 0 {
            return;
        }
        let t = t as u64;
        if self.audio_first.is_none() {
            // Keep audio contiguous: follow the running clock while the
            // source's stamps stay within two frames of it.
            let start = match self.audio_next {
                Some(n) if n.abs_diff(t) <= u64::from(2 * AAC_FRAME) => n,
                _ => t,
            };
            self.audio_first = Some(start);
        }
        self.audio.push(f.payload);
    }

    fn audio_rate(&self) -> u32 {
        self.info.as_deref().map_or(48_000, fmp4::audio_timescale)
    }

    /// The publisher has gone (the stream waits for it to come back):
    /// close the open part and segment now, so players get the last frames
    /// at once rather than when the stream ends or media resumes. Media
    /// that comes later starts a new segment at a keyframe, after a
    /// discontinuity. True when something new became available.
    pub fn flush(&mut self) -> bool {
        self.generation += 1;
        if self.ended || (self.video.is_empty() && self.current.is_none()) {
            return false;
        }
        let est = self.frame_dur;
        let changed = self.close_part(est);
        self.close_segment();
        self.need_keyframe = true;
        self.pending_discontinuity = true;
        self.audio_next = None;
        self.new_epoch();
        changed
    }

    /// Start a segment at media time `start` unless one is open.
    fn open_segment(&mut self, start: i64, wall_ms: i64) {
        if self.current.is_some() {
            return;
        }
        self.current = Some(Segment {
            msn: self.next_msn,
            init: self.init_id,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            start,
            duration: 0,
            wall_ms: self.wall_of(start).unwrap_or(wall_ms),
            epoch: self.epoch,
            parts: Vec::new(),
            part_count: 0,
            data: None,
            vtt: None,
            bytes: 0,
        });
        self.next_msn += 1;
    }

    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.anchor = None;
    }

    /// Wall clock of media time `dts` in the current epoch.
    fn wall_of(&self, dts: i64) -> Option<i64> {
        self.anchor.map(|a| a + dts * 1000 / CLOCK_HZ)
    }

    /// A frame at media time `dts` arrived at `wall_ms`: a better anchor
    /// moves the wall clock of this epoch's segments with it.
    fn observe_wall(&mut self, dts: i64, wall_ms: i64) {
        let c = wall_ms - dts * 1000 / CLOCK_HZ;
        if self.anchor.is_some_and(|a| a <= c) {
            return;
        }
        self.anchor = Some(c);
        let epoch = self.epoch;
        for seg in self.segments.iter_mut().chain(self.current.as_mut()) {
            if seg.epoch == epoch {
                seg.wall_ms = c + seg.start * 1000 / CLOCK_HZ;
            }
        }
    }

    /// Close the pending part; `last_dur` is the duration of its last video frame.
    fn close_part(&mut self, last_dur: i64) -> bool {
        if self.video.is_empty() && self.audio_only() {
            return self.close_audio_part();
        }
        if self.video.is_empty() {
            self.audio.clear();
            self.audio_first = None;
            return false;
        }
        if self.current.is_none() {
            self.video.clear();
            return false;
        }
        let video = std::mem::take(&mut self.video);
        let start = video[0].dts;
        let mut samples = Vec::with_capacity(video.len());
        for (i, v) in video.iter().enumerate() {
            let dur = video.get(i + 1).map_or(last_dur, |n| n.dts - v.dts).max(1);
            samples.push(Sample {
                duration: u32::try_from(dur).unwrap_or(u32::MAX),
                cts: i32::try_from(v.pts - v.dts).unwrap_or(0),
                keyframe: v.keyframe,
                data: v.data.clone(),
            });
        }
        let duration: i64 = samples.iter().map(|s| i64::from(s.duration)).sum();
        let vrun = TrackRun {
            base_decode_time: start as u64,
            samples,
        };
        let abase = self.audio_first.take().unwrap_or(0);
        let arun = aac_run(abase, std::mem::take(&mut self.audio));
        if !arun.samples.is_empty() {
            self.audio_next = Some(abase + u64::from(AAC_FRAME) * arun.samples.len() as u64);
        }
        self.add_part(
            &[(VIDEO_TRACK, &vrun), (AUDIO_TRACK, &arun)],
            start,
            duration,
            video[0].keyframe,
        )
    }

    /// Mux `runs` into the next part of the open segment, `duration` ticks
    /// from media time `start`. False when no segment is open, or when the
    /// fragment cannot be made (logged and counted; the media is dropped).
    fn add_part(
        &mut self,
        runs: &[(u32, &TrackRun)],
        start: i64,
        duration: i64,
        independent: bool,
    ) -> bool {
        let index = self.next_part;
        let data = match fmp4::fragment((index + 1) as u32, runs) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "hls: part dropped");
                metrics::counter!("banyan_hls_errors_total", "kind" => "part").increment(1);
                return false;
            }
        };
        let Some(seg) = self.current.as_mut() else {
            return false;
        };
        self.next_part += 1;
        seg.duration += duration;
        seg.bytes += data.len();
        seg.part_count += 1;
        seg.parts.push(Arc::new(Part {
            index,
            duration,
            independent,
            data,
        }));
        self.edge = start + duration;
        true
    }

    fn close_segment(&mut self) {
        let Some(mut seg) = self.current.take() else {
            return;
        };
        if seg.parts.is_empty() {
            // Nothing was written: give the number back.
            self.next_msn = seg.msn;
            self.pending_discontinuity |= seg.discontinuity;
            return;
        }
        let mut all = BytesMut::with_capacity(seg.bytes);
        for p in &seg.parts {
            all.extend_from_slice(&p.data);
        }
        seg.data = Some(all.freeze());
        if let Some(w) = self.vtt.as_mut() {
            seg.vtt = Some(Bytes::from(w.segment(seg.start, seg.start + seg.duration)));
        }
        self.max_segment = self.max_segment.max(seg.duration);
        metrics::counter!("banyan_hls_segments_total").increment(1);
        self.segments.push_back(seg);
        while self.segments.len() > self.cfg.window.max(1) {
            if let Some(old) = self.segments.pop_front() {
                if old.discontinuity {
                    self.disc_seq += 1;
                }
            }
        }
        let n = self.segments.len();
        for s in self
            .segments
            .iter_mut()
            .take(n.saturating_sub(PART_SEGMENTS))
        {
            s.parts = Vec::new();
        }
        let oldest = self.segments.front().map_or(self.init_id, |s| s.init);
        while self.inits.len() > 1 && self.inits.front().is_some_and(|(id, _)| *id < oldest) {
            self.inits.pop_front();
        }
    }
}

/// The AAC frames of a part, from sample `base` on (every frame a sync
/// sample of `AAC_FRAME` samples).
fn aac_run(base: u64, frames: Vec<Bytes>) -> TrackRun {
    TrackRun {
        base_decode_time: base,
        samples: frames
            .into_iter()
            .map(|data| Sample {
                duration: AAC_FRAME,
                cts: 0,
                keyframe: true,
                data,
            })
            .collect(),
    }
}
