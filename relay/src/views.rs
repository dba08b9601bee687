//! Live viewers and delivered media time, per stream and playback protocol.
//!
//! Egress holds a [`ViewerGuard`] per viewer session and reports each frame it
//! delivered; the analytics flusher periodically [`Views::drain`]s the media
//! time accrued since the last drain. Nothing here touches storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::frame::{Frame, Track, CLOCK_HZ};

/// A playback protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Rtmp,
    Rtmps,
    Srt,
    Hls,
    /// WHEP viewers.
    WebRtc,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Protocol::Rtmp,
        Protocol::Rtmps,
        Protocol::Srt,
        Protocol::Hls,
        Protocol::WebRtc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::Srt => "srt",
            Protocol::Hls => "hls",
            Protocol::WebRtc => "webrtc",
        }
    }
}

#[derive(Default)]
struct Counters {
    live: AtomicI64,
    /// Media ticks delivered since the last drain.
    ticks: AtomicU64,
}

/// The registry of viewer counters.
#[derive(Default)]
pub struct Views {
    map: Mutex<HashMap<(String, Protocol), Arc<Counters>>>,
}

impl Views {
    pub fn new() -> Arc<Views> {
        Arc::new(Views::default())
    }

    fn counters(&self, uid: &str, protocol: Protocol) -> Arc<Counters> {
        self.map
            .lock()
            .entry((uid.to_string(), protocol))
            .or_default()
            .clone()
    }

    /// Start a viewer session; it counts as live until the guard drops.
    pub fn viewer(self: &Arc<Self>, uid: &str, protocol: Protocol) -> ViewerGuard {
        let c = self.counters(uid, protocol);
        c.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("banyan_viewers", "protocol" => protocol.as_str()).increment(1.0);
        ViewerGuard {
            counters: c,
            protocol,
            last: None,
        }
    }

    /// Live viewers of a stream over every protocol.
    pub fn live(&self, uid: &str) -> i64 {
        let map = self.map.lock();
        Protocol::ALL
            .iter()
            .filter_map(|p| map.get(&(uid.to_string(), *p)))
            .map(|c| c.live.load(Ordering::Relaxed))
            .sum()
    }

    /// Add media time delivered outside a guard (HLS sessions account per
    /// request).
    pub fn add_delivered(&self, uid: &str, protocol: Protocol, ticks: u64) {
        self.counters(uid, protocol)
            .ticks
            .fetch_add(ticks, Ordering::Relaxed);
    }

    /// Take the media time accrued since the last drain: `(uid, protocol,
    /// seconds)`. Entries with no viewers and nothing accrued are removed.
    pub fn drain(&self) -> Vec<(String, Protocol, f64)> {
        let mut map = self.map.lock();
        let mut out = Vec::new();
        map.retain(|(uid, p), c| {
            let t = c.ticks.swap(0, Ordering::Relaxed);
            if t > 0 {
                out.push((uid.clone(), *p, t as f64 / CLOCK_HZ as f64));
            }
            c.live.load(Ordering::Relaxed) > 0 || Arc::strong_count(c) > 1
        });
        out
    }
}

/// One viewer session.
pub struct ViewerGuard {
    counters: Arc<Counters>,
    protocol: Protocol,
    last: Option<i64>,
}

impl ViewerGuard {
    /// Account a delivered frame. Media time is measured on video frames
    /// (gaps over two seconds, such as a skip, count as nothing) so audio and
    /// video are not counted twice.
    pub fn delivered(&mut self, frame: &Frame) {
        if frame.track != Track::Video {
            return;
        }
        if let Some(last) = self.last {
            let d = frame.dts - last;
            if d > 0 && d <= 2 * CLOCK_HZ {
                self.counters.ticks.fetch_add(d as u64, Ordering::Relaxed);
            }
        }
        self.last = Some(frame.dts);
    }
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.counters.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("banyan_viewers", "protocol" => self.protocol.as_str()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn accrues_video_time_and_counts_live() {
        let views = Views::new();
        let mut g = views.viewer("u", Protocol::Rtmp);
        assert_eq!(views.live("u"), 1);
        for i in 0..=30 {
            g.delivered(&Frame::video(i * 3000, i * 3000, i == 0, Bytes::new()));
            g.delivered(&Frame::audio(i * 3000, Bytes::new()));
        }
        let d = views.drain();
        assert_eq!(d.len(), 1);
        assert!((d[0].2 - 1.0).abs() < 1e-9, "{d:?}");
        drop(g);
        assert_eq!(views.live("u"), 0);
        assert!(views.drain().is_empty());
    }
}
