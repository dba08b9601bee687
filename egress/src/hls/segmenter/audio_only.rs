//! Streams without video (a radio show, a podcast live): audio frames
//! drive the parts and segments. Every AAC frame can start a part, so a
//! part closes when the next frame would pass the part target and a
//! segment when it reaches the segment target; time starts at the first
//! audio frame. A jump in the audio clock closes the segment, and the next
//! carries a discontinuity.

use banyan_relay::{Frame, CLOCK_HZ};

use super::fmp4::{self, AUDIO_TRACK};
use super::{aac_run, Segmenter, AAC_FRAME, MAX_FRAME_GAP};

impl Segmenter {
    /// True when the stream's media has audio and no video.
    pub(super) fn audio_only(&self) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.video.is_none() && i.audio.is_some())
    }

    /// One frame of an audio-only stream. True when a part became
    /// available.
    pub(super) fn audio_only_frame(&mut self, f: Frame, wall_ms: i64) -> bool {
        if self.init_broken {
            return false;
        }
        let rate = i64::from(self.audio_rate());
        let origin = *self.origin.get_or_insert(f.pts);
        let ticks = f.pts - origin;
        if ticks < 0 {
            return false;
        }
        let frame_ticks = i64::from(AAC_FRAME) * CLOCK_HZ / rate;
        let mut changed = false;
        // Where this frame goes on the running clock, in samples.
        let t = (ticks * rate / CLOCK_HZ) as u64;
        let expected = self
            .audio_first
            .map(|a| a + u64::from(AAC_FRAME) * self.audio.len() as u64)
            .or(self.audio_next);
        if let Some(next) = expected {
            let jump = (t as i64 - next as i64).abs() * CLOCK_HZ / rate;
            if jump > MAX_FRAME_GAP {
                changed |= self.close_audio_part();
                self.close_segment();
                self.pending_discontinuity = true;
                self.audio_next = None;
                self.new_epoch();
            }
        }
        if !self.audio.is_empty() {
            let part = self.audio.len() as i64 * frame_ticks;
            let seg = self.current.as_ref().map_or(0, |s| s.duration) + part;
            if seg + frame_ticks > self.cfg.segment_target {
                changed |= self.close_audio_part();
                self.close_segment();
            } else if part + frame_ticks > self.cfg.part_target {
                changed |= self.close_audio_part();
            }
        }
        if self.audio_first.is_none() {
            // Follow the running clock while the stamps stay within two
            // frames of it.
            let start = match self.audio_next {
                Some(n) if n.abs_diff(t) <= u64::from(2 * AAC_FRAME) => n,
                _ => t,
            };
            self.audio_first = Some(start);
        }
        let start_ticks = self
            .audio_first
            .map_or(ticks, |a| a as i64 * CLOCK_HZ / rate);
        self.observe_wall(ticks, wall_ms);
        self.open_segment(start_ticks, wall_ms);
        self.audio.push(f.payload);
        changed
    }

    /// Close the pending audio-only part.
    pub(super) fn close_audio_part(&mut self) -> bool {
        if self.current.is_none() {
            self.audio.clear();
            self.audio_first = None;
            return false;
        }
        let audio = std::mem::take(&mut self.audio);
        let Some(base) = self.audio_first.take() else {
            return false;
        };
        if audio.is_empty() {
            return false;
        }
        let rate = i64::from(self.info.as_deref().map_or(48_000, fmp4::audio_timescale));
        let end = base + u64::from(AAC_FRAME) * audio.len() as u64;
        self.audio_next = Some(end);
        let run = aac_run(base, audio);
        let start = base as i64 * CLOCK_HZ / rate;
        let duration = end as i64 * CLOCK_HZ / rate - start;
        self.add_part(&[(AUDIO_TRACK, &run)], start, duration, true)
    }
}
