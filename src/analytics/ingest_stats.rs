//! Ingest bitrate and frame rate per live stream, exported as
//! `banyan_ingest_bitrate_bps` and `banyan_ingest_fps` when
//! `--metrics-per-stream` is not `off` (see `exposition` for the labels).
//!
//! A watcher task looks for live inputs (the node's key table, never the
//! store) every few seconds and attaches one
//! counting subscriber (a hub cursor: no copy of the media) to each live
//! stream. Rates are measured over media time (video decode timestamps), so
//! the join backlog a new cursor receives in a burst does not inflate them.
//! Cardinality is bounded by the number of live inputs; a stream's series
//! goes away when it ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::{Item, StreamState, SubscribeOptions, Track, CLOCK_HZ};
use parking_lot::Mutex;

use crate::exposition::Exposition;
use crate::inputs::Inputs;

/// What the meters use: the live inputs, their streams, the per-stream
/// series they feed.
pub struct Context {
    pub inputs: Arc<Inputs>,
    pub hub: Arc<banyan_relay::Hub>,
    pub exposition: Arc<Exposition>,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// How often the gauges are updated.
const WINDOW: Duration = Duration::from_secs(2);

/// Rates over media time, fed frame by frame (pure; no clock).
#[derive(Debug, Default)]
pub struct RateMeter {
    bytes: u64,
    video_frames: u64,
    first_dts: Option<i64>,
    last_dts: Option<i64>,
}

impl RateMeter {
    pub fn frame(&mut self, track: Track, dts: i64, len: usize) {
        self.bytes += len as u64;
        if track == Track::Video {
            if self.first_dts.is_none() {
                self.first_dts = Some(dts);
            }
            self.last_dts = Some(dts);
            self.video_frames += 1;
        }
    }

    /// `(bits per second, video frames per second)` since the last take, if
    /// at least two video frames came.
    pub fn take(&mut self) -> Option<(f64, f64)> {
        let out = match (self.first_dts, self.last_dts) {
            (Some(a), Some(b)) if b > a && self.video_frames > 1 => {
                let secs = (b - a) as f64 / CLOCK_HZ as f64;
                // Frame intervals, not frames, span first..last.
                let fps = (self.video_frames - 1) as f64 / secs;
                Some((self.bytes as f64 * 8.0 / (secs + 1.0 / fps), fps))
            }
            _ => None,
        };
        let last = self.last_dts;
        *self = RateMeter::default();
        // The next window starts where this one ended.
        self.first_dts = last;
        if last.is_some() {
            self.video_frames = 1;
        }
        out
    }
}

async fn measure(node: Arc<Context>, uid: String, watching: Arc<Mutex<HashSet<String>>>) {
    let mut sub = node.hub.subscribe(&uid, SubscribeOptions::default());
    let mut meter = RateMeter::default();
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Some((bps, fps)) = meter.take() {
                    node.exposition.set(&uid, bps, fps);
                }
            }
            item = sub.recv() => match item {
                Item::Frame(f) => meter.frame(f.track, f.dts, f.payload.len()),
                Item::Info(_) => {}
                Item::End(_) => break,
            }
        }
    }
    node.exposition.remove(&uid);
    watching.lock().remove(&uid);
}

/// Watch for live streams until shutdown.
pub async fn run(node: Arc<Context>) {
    if !node.exposition.per_stream() {
        return;
    }
    let watching: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The inputs of the last key-table rebuild: no store call here, so
        // the meters keep attaching while the database is unreachable.
        for uid in node.inputs.input_uids() {
            if node.hub.state(&uid) != StreamState::Live || watching.lock().contains(&uid) {
                continue;
            }
            watching.lock().insert(uid.clone());
            tokio::spawn(measure(node.clone(), uid, watching.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_media_time() {
        let mut m = RateMeter::default();
        assert_eq!(m.take(), None);
        // 30 fps, 1000 bytes a frame, one second of media delivered at once.
        for i in 0..30 {
            m.frame(Track::Video, i * 3000, 1000);
        }
        let (bps, fps) = m.take().unwrap();
        assert!((fps - 30.0).abs() < 1e-9, "{fps}");
        assert!((bps - 240_000.0).abs() < 1.0, "{bps}");
        for i in 30..60 {
            m.frame(Track::Video, i * 3000, 1000);
        }
        let (_, fps) = m.take().unwrap();
        assert!((fps - 30.0).abs() < 1e-9, "{fps}");
    }
}
