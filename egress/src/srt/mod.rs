//! SRT playback: a stream's shared MPEG-TS chunks to one SRT viewer.
//!
//! The SRT listener (in `banyan-ingest`) accepts the connection and hands
//! over the channel its libsrt thread drains; [`play`] attaches to the
//! stream's shared packetizer ([`SrtFanout`]: one TS mux per stream, joining
//! at the latest keyframe with the backlog compressed) and sends each chunk
//! as 7 x 188 = 1316-byte slices of the shared bytes, never a copy. Nothing
//! is held back: the packets of a frame go out as soon as the frame arrives,
//! a short last message included.
//!
//! Each message carries a source time derived from the frame's decode time
//! (see [`SourceClock`]): the viewer's TSBPD buffer then restores the
//! publisher's pacing, so the relay never has to pace or buffer itself.

use std::sync::Arc;

use banyan_relay::views::{Protocol, Views};
use banyan_relay::Item;
use banyan_srt::server::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ts::retime;

mod fanout;

pub use fanout::SrtFanout;

/// SRT payload size for MPEG-TS: seven packets.
pub const MESSAGE_SIZE: usize = 7 * crate::ts::PACKET;

/// Maps media decode time to SRT source time (microseconds of libsrt's clock).
///
/// The mapping is `dts + offset`, with `offset` the smallest `now - dts` seen
/// (the earliest any frame arrived relative to its timestamp), allowed to
/// creep upward by 0.2 % of elapsed time so clock drift between publisher
/// and node cannot accumulate. A source time is never in the future.
#[derive(Debug, Default, Clone)]
pub struct SourceClock {
    offset: Option<i64>,
    last_now: i64,
}

impl SourceClock {
    /// The source time of a frame with decode time `dts` (90 kHz) at `now_us`.
    pub fn map(&mut self, dts: i64, now_us: i64) -> i64 {
        let dts_us = dts.saturating_mul(1000) / 90;
        let cand = now_us.saturating_sub(dts_us);
        let offset = match self.offset {
            None => cand,
            Some(o) => {
                let creep = (now_us - self.last_now).max(0) / 500;
                cand.min(o.saturating_add(creep))
            }
        };
        self.offset = Some(offset);
        self.last_now = now_us;
        dts_us.saturating_add(offset).min(now_us)
    }
}

/// Play `uid` to one SRT viewer until the stream ends, the viewer leaves
/// (the channel closes) or `shutdown` fires.
pub async fn play(
    fanout: Arc<SrtFanout>,
    views: Arc<Views>,
    uid: String,
    out: mpsc::Sender<Message>,
    shutdown: CancellationToken,
) {
    let mut sub = fanout.attach(&uid, &shutdown);
    let mut viewer = views.viewer(&uid, Protocol::Srt);
    let mut clock = SourceClock::default();
    tracing::debug!(stream = %uid, "srt viewer started");
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = out.closed() => break,
            item = sub.recv() => item,
        };
        match item {
            Item::Info(_) => {}
            Item::Frame(f) => {
                viewer.delivered(&f);
                let srctime = clock.map(f.dts, banyan_srt::time_now());
                // The shared bytes, unless this is the joiner's compressed backlog.
                let chunk = if retime::has_times(&f.payload, f.pts, f.dts) {
                    f.payload
                } else {
                    retime::retime(&f.payload, f.pts, f.dts)
                };
                let mut at = 0;
                while at < chunk.len() {
                    let n = (chunk.len() - at).min(MESSAGE_SIZE);
                    let payload = chunk.slice(at..at + n);
                    at += n;
                    if out.send(Message { payload, srctime }).await.is_err() {
                        tracing::debug!(stream = %uid, "srt viewer left");
                        return;
                    }
                }
            }
            Item::End(end) => {
                tracing::debug!(stream = %uid, ?end, "srt viewer: stream ended");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_time_follows_media_and_never_runs_ahead() {
        let mut c = SourceClock::default();
        // Frames every 33.3 ms arriving on time, then a burst of three late ones.
        let t0 = 1_000_000;
        assert_eq!(c.map(0, t0), t0);
        assert_eq!(c.map(3000, t0 + 33_333), t0 + 33_333);
        let late = t0 + 200_000;
        let a = c.map(6000, late);
        let b = c.map(9000, late);
        assert!(a < b && b <= late, "{a} {b}");
        assert!((b - a - 33_333).abs() < 10, "pacing restored: {}", b - a);
    }
}
