//! What the playlist writer and the HTTP service read of a segmenter.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use banyan_relay::{MediaInfo, CLOCK_HZ};

use super::{Part, Segment, Segmenter, SegmenterConfig};

impl Segmenter {
    pub fn config(&self) -> &SegmenterConfig {
        &self.cfg
    }

    pub fn info(&self) -> Option<&Arc<MediaInfo>> {
        self.info.as_ref()
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Complete segments in the window, oldest first.
    pub fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// The segment in progress.
    pub fn current(&self) -> Option<&Segment> {
        self.current.as_ref()
    }

    /// Changes whenever the segmenter may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number the next part will get.
    pub fn next_part(&self) -> u64 {
        self.next_part
    }

    /// Media sequence number of the segment in progress (or the next one).
    pub fn live_msn(&self) -> u64 {
        self.current.as_ref().map_or(self.next_msn, |s| s.msn)
    }

    /// Parts of the segment in progress.
    pub fn live_parts(&self) -> usize {
        self.current.as_ref().map_or(0, |s| s.parts.len())
    }

    pub fn discontinuity_sequence(&self) -> u64 {
        self.disc_seq
    }

    /// Media time at the end of the newest part, in ticks.
    pub fn edge(&self) -> i64 {
        self.edge
    }

    /// Longest segment so far, in ticks.
    pub fn max_segment(&self) -> i64 {
        self.max_segment
    }

    /// True once at least one part exists.
    pub fn has_media(&self) -> bool {
        self.next_part > self.cfg.start_seq
    }

    pub fn init(&self, id: u64) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.clone())
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    pub fn part(&self, index: u64) -> Option<Arc<Part>> {
        self.current
            .iter()
            .chain(self.segments.iter().rev())
            .flat_map(|s| s.parts.iter())
            .find(|p| p.index == index)
            .cloned()
    }

    /// True when a blocking request for `msn` (and `part` of it) can be
    /// answered: that part, or the whole segment, exists, or the stream ended.
    pub fn satisfies(&self, msn: u64, part: Option<u64>) -> bool {
        if self.ended {
            return true;
        }
        let live = self.live_msn();
        match part {
            _ if msn < live => true,
            Some(p) if msn == live => (self.live_parts() as u64) > p,
            _ => false,
        }
    }

    /// Peak and average bits per second over the window (or the parts so far).
    pub fn bandwidth(&self) -> (u64, u64) {
        let rate = |bytes: usize, ticks: i64| -> u64 {
            if ticks <= 0 {
                return 0;
            }
            (bytes as u128 * 8 * CLOCK_HZ as u128 / ticks as u128) as u64
        };
        let peak = self
            .segments
            .iter()
            .map(|s| rate(s.bytes, s.duration))
            .max()
            .unwrap_or(0);
        let (b, t) = self
            .segments
            .iter()
            .chain(self.current.iter())
            .fold((0, 0), |(b, t), s| (b + s.bytes, t + s.duration));
        let avg = rate(b, t);
        (peak.max(avg), avg)
    }
}
