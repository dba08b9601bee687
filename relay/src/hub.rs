//! The per-stream hub: one publisher, any number of subscribers.
//!
//! Each stream keeps one bounded buffer of recent frames (at most the current
//! and the previous group of pictures, and at most `max_buffer_bytes`).
//! A [`Subscriber`] is a cursor (a sequence number) into that buffer, so
//! memory does not grow with viewers and payloads are shared, never copied.
//!
//! Rules, all codec-blind:
//! * A new subscriber starts at the latest keyframe, with the codec
//!   configuration that was current for it (fast start). With
//!   [`SubscribeOptions::catch_up`] the backlog between that keyframe and the
//!   live edge is delivered with its timestamps compressed into a few
//!   milliseconds (audio of the backlog is skipped), so the player decodes
//!   from the keyframe yet sits at the live edge.
//! * A subscriber whose position was evicted, or that lags the live edge by
//!   more than `max_lag` while a newer keyframe exists, skips to the latest
//!   keyframe. Skipped frames are counted in `banyan_frames_dropped_total`.
//! * The publisher never waits for anyone: `push` takes a short lock,
//!   appends, evicts and wakes waiting subscribers.
//! * When the publisher leaves, the stream waits `reconnect_window` for a
//!   publisher to come back (subscribers stay attached; timestamps of the new
//!   publisher are rebased to continue monotonically), then ends.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::frame::{AudioConfig, Frame, MediaInfo, Track, VideoConfig, CLOCK_HZ};
use crate::RelayError;

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Upper bound of buffered payload bytes per stream.
    pub max_buffer_bytes: usize,
    /// A subscriber further behind the live edge than this (in ticks) skips
    /// to the latest keyframe when one exists beyond its position.
    pub max_lag: i64,
    /// How long a stream waits for its publisher to come back.
    pub reconnect_window: Duration,
    /// Duration the join backlog is compressed into, in ticks.
    pub catch_up_span: i64,
    /// A hub fed from another hub's streams (an egress packetizer's output,
    /// one entry per source frame): it neither counts live streams nor
    /// samples the relay latency, which the source hub already does.
    /// Dropped entries are still counted.
    pub derived: bool,
    /// Longest an audio or captions frame of a stream with video waits for
    /// the next video frame before subscribers are woken for it. Each
    /// wake-up is a socket write per viewer: riding with video, audio
    /// costs no writes of its own. Video is never held.
    pub audio_hold: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_buffer_bytes: 32 << 20,
            max_lag: CLOCK_HZ * 3 / 2,
            reconnect_window: Duration::from_secs(10),
            catch_up_span: CLOCK_HZ / 50,
            derived: false,
            audio_hold: Duration::from_millis(40),
        }
    }
}

/// The externally visible state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Never published, or ended.
    Idle,
    /// A publisher is connected.
    Live,
    /// The publisher left; the stream waits for it to come back.
    Reconnecting,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The publisher left and did not come back within the window.
    Finished,
    /// The operator disconnected the stream's sessions (key rotation,
    /// deletion).
    Kicked,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Item {
    /// Codec configuration for the frames that follow. Always sent before
    /// the first frame, and again whenever it changes.
    Info(Arc<MediaInfo>),
    Frame(Frame),
    End(StreamEnd),
}

/// Options of a subscription.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions {
    /// Compress the join backlog so the player starts at the live edge.
    pub catch_up: bool,
}

struct Entry {
    frame: Frame,
    info: Arc<MediaInfo>,
    /// When the publisher pushed it: the start of the relay-added latency.
    pushed: Instant,
}

struct Inner {
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    base: u64,
    /// Sequence numbers of keyframes still in `entries`, ascending.
    keyframes: VecDeque<u64>,
    bytes: usize,
    info: Arc<MediaInfo>,
    publisher: Option<u64>,
    reconnect_until: Option<Instant>,
    /// Current session; a fresh publish (not a reconnect) starts a new one.
    session: u64,
    /// Every session up to and including this one has ended.
    ended_upto: u64,
    /// Bumped by a kick; subscribers and publishers of older epochs end.
    kick_epoch: u64,
    /// Offset added to the current publisher's timestamps (reconnects).
    ts_offset: i64,
    /// The publisher that needs a rebase on its first frame.
    rebase_pending: bool,
    last_dts: Option<i64>,
    subscribers: usize,
    /// When subscribers were last woken by a push.
    last_wake: Option<Instant>,
}

impl Inner {
    fn head(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        seq.checked_sub(self.base)
            .and_then(|i| self.entries.get(i as usize))
    }

    /// Expire a reconnect window that has passed.
    fn settle(&mut self, now: Instant) {
        if let Some(until) = self.reconnect_until {
            if now >= until {
                self.end_session();
            }
        }
    }

    fn end_session(&mut self) {
        self.reconnect_until = None;
        self.ended_upto = self.session;
        self.last_dts = None;
        self.ts_offset = 0;
    }

    fn state(&self) -> StreamState {
        if self.publisher.is_some() {
            StreamState::Live
        } else if self.reconnect_until.is_some() {
            StreamState::Reconnecting
        } else {
            StreamState::Idle
        }
    }

    fn evict(&mut self, max_bytes: usize) {
        // Keep at most the previous and the current group of pictures.
        while self.keyframes.len() > 2 {
            self.keyframes.pop_front();
        }
        let keep_from = self.keyframes.front().copied().unwrap_or(self.base);
        while self.base < keep_from || (self.bytes > max_bytes && !self.entries.is_empty()) {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= e.frame.payload.len();
            self.base += 1;
            while self.keyframes.front().is_some_and(|&k| k < self.base) {
                self.keyframes.pop_front();
            }
        }
    }
}

struct Stream {
    uid: String,
    inner: Mutex<Inner>,
    /// Carries the head sequence number; wakes subscribers.
    head_tx: watch::Sender<u64>,
    /// Carries the kick epoch; wakes publishers that must leave.
    kick_tx: watch::Sender<u64>,
}

/// The registry of streams of one node.
pub struct Hub {
    cfg: HubConfig,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    next_publisher: Mutex<u64>,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            cfg,
            streams: Mutex::new(HashMap::new()),
            next_publisher: Mutex::new(1),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    fn stream(&self, uid: &str) -> Arc<Stream> {
        let mut map = self.streams.lock();
        map.entry(uid.to_string())
            .or_insert_with(|| {
                Arc::new(Stream {
                    uid: uid.to_string(),
                    inner: Mutex::new(Inner {
                        entries: VecDeque::new(),
                        base: 0,
                        keyframes: VecDeque::new(),
                        bytes: 0,
                        info: Arc::new(MediaInfo::default()),
                        publisher: None,
                        reconnect_until: None,
                        session: 0,
                        ended_upto: 0,
                        kick_epoch: 0,
                        ts_offset: 0,
                        rebase_pending: false,
                        last_dts: None,
                        subscribers: 0,
                        last_wake: None,
                    }),
                    head_tx: watch::channel(0).0,
                    kick_tx: watch::channel(0).0,
                })
            })
            .clone()
    }

    /// Become the publisher of `uid`. Refused while another publisher is live
    /// (the first publisher keeps the stream; the newcomer must retry).
    pub fn publish(self: &Arc<Self>, uid: &str) -> Result<Publisher, RelayError> {
        let stream = self.stream(uid);
        let id = {
            let mut n = self.next_publisher.lock();
            *n += 1;
            *n
        };
        let kick_epoch;
        {
            let mut inner = stream.inner.lock();
            inner.settle(Instant::now());
            if inner.publisher.is_some() {
                return Err(RelayError::AlreadyPublishing(uid.to_string()));
            }
            inner.publisher = Some(id);
            if inner.reconnect_until.take().is_some() {
                // A reconnect within the window: same session, rebased clock.
                inner.rebase_pending = true;
            } else {
                inner.session += 1;
                inner.entries.clear();
                inner.keyframes.clear();
                inner.base = inner.head();
                inner.bytes = 0;
                inner.ts_offset = 0;
                inner.rebase_pending = false;
                inner.last_dts = None;
            }
            kick_epoch = inner.kick_epoch;
        }
        stream.head_tx.send_modify(|_| {});
        if !self.cfg.derived {
            metrics::gauge!("banyan_live_streams").increment(1.0);
        }
        Ok(Publisher {
            hub: self.clone(),
            stream,
            id,
            kick_epoch,
            kick_rx: None,
        })
    }

    /// Attach a subscriber to `uid`. If the stream is not live, the
    /// subscriber waits for it.
    pub fn subscribe(self: &Arc<Self>, uid: &str, opts: SubscribeOptions) -> Subscriber {
        let stream = self.stream(uid);
        let kick_epoch = {
            let mut inner = stream.inner.lock();
            inner.subscribers += 1;
            inner.kick_epoch
        };
        let head_rx = stream.head_tx.subscribe();
        Subscriber {
            hub: self.clone(),
            stream,
            head_rx,
            opts,
            kick_epoch,
            session: None,
            pos: 0,
            need_keyframe: true,
            last_info: 0,
            squeeze: None,
            delivered: 0,
            latency: metrics::histogram!("banyan_relay_latency_seconds"),
        }
    }

    /// The state of `uid` now.
    pub fn state(&self, uid: &str) -> StreamState {
        let Some(stream) = self.streams.lock().get(uid).cloned() else {
            return StreamState::Idle;
        };
        let mut inner = stream.inner.lock();
        inner.settle(Instant::now());
        inner.state()
    }

    /// Subscribers attached to `uid` now.
    pub fn subscribers(&self, uid: &str) -> usize {
        self.streams
            .lock()
            .get(uid)
            .map(|s| s.inner.lock().subscribers)
            .unwrap_or(0)
    }

    /// The current codec configuration of `uid`.
    pub fn info(&self, uid: &str) -> Option<Arc<MediaInfo>> {
        self.streams
            .lock()
            .get(uid)
            .map(|s| s.inner.lock().info.clone())
    }

    /// Disconnect the publisher and every subscriber of `uid` now (key
    /// rotation, deletion). The stream ends without a reconnect window.
    pub fn kick(&self, uid: &str) {
        let Some(stream) = self.streams.lock().get(uid).cloned() else {
            return;
        };
        {
            let mut inner = stream.inner.lock();
            inner.kick_epoch += 1;
            inner.end_session();
        }
        stream.kick_tx.send_modify(|e| *e += 1);
        stream.head_tx.send_modify(|_| {});
        tracing::info!(stream = %stream.uid, "stream sessions disconnected");
    }

    /// Drop idle streams nobody uses, so the registry stays bounded.
    fn release(&self, stream: &Arc<Stream>) {
        let mut map = self.streams.lock();
        let inner = stream.inner.lock();
        if inner.publisher.is_none() && inner.subscribers == 0 && inner.reconnect_until.is_none() {
            // Two references: the map's and the caller's.
            if Arc::strong_count(stream) <= 2 {
                map.remove(&stream.uid);
            }
        }
    }
}

/// The publishing side of a stream. Dropping it ends the publication.
pub struct Publisher {
    hub: Arc<Hub>,
    stream: Arc<Stream>,
    id: u64,
    kick_epoch: u64,
    kick_rx: Option<watch::Receiver<u64>>,
}

impl Publisher {
    pub fn uid(&self) -> &str {
        &self.stream.uid
    }

    /// Set the codec configuration for the frames pushed from now on. A
    /// different configuration gets a new version.
    pub fn set_info(&mut self, video: Option<VideoConfig>, audio: Option<AudioConfig>) {
        let mut inner = self.stream.inner.lock();
        if inner.info.video == video && inner.info.audio == audio {
            return;
        }
        let version = inner.info.version + 1;
        inner.info = Arc::new(MediaInfo {
            version,
            video,
            audio,
        });
    }

    /// The codec configuration in force.
    pub fn info(&self) -> Arc<MediaInfo> {
        self.stream.inner.lock().info.clone()
    }

    /// Append a frame. Never waits for subscribers.
    pub fn push(&mut self, mut frame: Frame) {
        let head = {
            let mut inner = self.stream.inner.lock();
            if inner.publisher != Some(self.id) {
                return;
            }
            if inner.rebase_pending {
                inner.rebase_pending = false;
                inner.ts_offset = match inner.last_dts {
                    // Continue one frame interval (about 33 ms) after the last frame.
                    Some(last) => last + CLOCK_HZ / 30 - frame.dts,
                    None => 0,
                };
            }
            frame.dts += inner.ts_offset;
            frame.pts += inner.ts_offset;
            if frame.track != Track::Captions {
                inner.last_dts = Some(inner.last_dts.map_or(frame.dts, |l| l.max(frame.dts)));
            }
            let now = Instant::now();
            let wake = frame.track == Track::Video
                || inner.info.video.is_none()
                || inner
                    .last_wake
                    .is_none_or(|w| now.duration_since(w) >= self.hub.cfg.audio_hold);
            if wake {
                inner.last_wake = Some(now);
            }
            let seq = inner.head();
            if frame.keyframe && frame.track == Track::Video {
                inner.keyframes.push_back(seq);
            }
            inner.bytes += frame.payload.len();
            let info = inner.info.clone();
            inner.entries.push_back(Entry {
                frame,
                info,
                pushed: now,
            });
            inner.evict(self.hub.cfg.max_buffer_bytes);
            wake.then(|| inner.head())
        };
        if let Some(head) = head {
            self.stream.head_tx.send_replace(head);
        }
    }

    /// True once the operator disconnected this publisher.
    pub fn is_kicked(&self) -> bool {
        *self.stream.kick_tx.borrow() != self.kick_epoch
    }

    /// Resolves when the operator disconnects this publisher.
    pub async fn kicked(&mut self) {
        let rx = self
            .kick_rx
            .get_or_insert_with(|| self.stream.kick_tx.subscribe());
        let epoch = self.kick_epoch;
        // An error means the stream is gone, which cannot happen while we hold it.
        let _ = rx.wait_for(|e| *e != epoch).await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        {
            let mut inner = self.stream.inner.lock();
            if inner.publisher == Some(self.id) {
                inner.publisher = None;
                let window = self.hub.cfg.reconnect_window;
                if window.is_zero() || inner.kick_epoch != self.kick_epoch {
                    inner.end_session();
                } else {
                    inner.reconnect_until = Some(Instant::now() + window);
                }
            }
        }
        if !self.hub.cfg.derived {
            metrics::gauge!("banyan_live_streams").decrement(1.0);
        }
        self.stream.head_tx.send_modify(|_| {});
        self.hub.release(&self.stream);
    }
}

struct Squeeze {
    /// Entries before this sequence number are backlog.
    until: u64,
    /// The dts of the last backlog entry: the compression anchor.
    anchor: i64,
    /// Duration of the backlog, in ticks.
    total: i64,
}

/// A cursor into one stream.
pub struct Subscriber {
    hub: Arc<Hub>,
    stream: Arc<Stream>,
    head_rx: watch::Receiver<u64>,
    opts: SubscribeOptions,
    kick_epoch: u64,
    /// The publishing session this subscriber is attached to.
    session: Option<u64>,
    pos: u64,
    need_keyframe: bool,
    last_info: u64,
    squeeze: Option<Squeeze>,
    /// Video frames handed out, to sample the latency histogram.
    delivered: u64,
    latency: metrics::Histogram,
}

impl Subscriber {
    pub fn uid(&self) -> &str {
        &self.stream.uid
    }

    /// The next item if one is ready now, without waiting. Lets a writer
    /// gather every frame already available into one socket write.
    pub fn try_recv(&mut self) -> Option<Item> {
        self.poll().ok()
    }

    /// The next item. Waits while the stream has nothing new.
    pub async fn recv(&mut self) -> Item {
        loop {
            self.head_rx.borrow_and_update();
            let deadline = match self.poll() {
                Ok(item) => return item,
                Err(deadline) => deadline,
            };
            let changed = self.head_rx.changed();
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, changed).await;
                }
                None => {
                    // The sender lives as long as the stream we hold.
                    let _ = changed.await;
                }
            }
        }
    }

    /// One step of the cursor: an item, or the deadline to wait until.
    fn poll(&mut self) -> Result<Item, Option<Instant>> {
        let stream = self.stream.clone();
        let mut inner = stream.inner.lock();
        inner.settle(Instant::now());
        if inner.kick_epoch != self.kick_epoch {
            return Ok(Item::End(StreamEnd::Kicked));
        }
        // Attach to the current session once it has media.
        let session = match self.session {
            Some(s) => s,
            None => {
                if inner.ended_upto >= inner.session || inner.entries.is_empty() {
                    return Err(inner.reconnect_until);
                }
                self.session = Some(inner.session);
                self.join(&inner);
                inner.session
            }
        };
        loop {
            if self.pos < inner.base {
                let target = inner.keyframes.back().copied();
                self.skip(&inner, target, "evicted");
            } else if self.pos < inner.head()
                && inner.keyframes.back().is_some_and(|&k| k > self.pos)
            {
                let newest = inner.entries.back().map(|e| e.frame.dts).unwrap_or(0);
                let here = inner.entry(self.pos).map(|e| e.frame.dts).unwrap_or(newest);
                if newest - here > self.hub.cfg.max_lag {
                    let target = inner.keyframes.back().copied();
                    self.skip(&inner, target, "slow_subscriber");
                }
            }
            let Some(entry) = inner.entry(self.pos) else {
                if inner.ended_upto >= session {
                    return Ok(Item::End(StreamEnd::Finished));
                }
                return Err(inner.reconnect_until);
            };
            if self.need_keyframe {
                if !(entry.frame.keyframe && entry.frame.track == Track::Video) {
                    self.pos += 1;
                    continue;
                }
                self.need_keyframe = false;
            }
            if entry.info.version != self.last_info {
                self.last_info = entry.info.version;
                return Ok(Item::Info(entry.info.clone()));
            }
            let mut frame = entry.frame.clone();
            self.pos += 1;
            if let Some(sq) = &self.squeeze {
                if self.pos > sq.until {
                    self.squeeze = None;
                } else if frame.track != Track::Video {
                    // Backlog audio and captions would be played late: skip them.
                    continue;
                } else if sq.total > 0 {
                    let map = |t: i64| {
                        sq.anchor - (sq.anchor - t) * self.hub.cfg.catch_up_span / sq.total
                    };
                    frame.pts = map(frame.pts);
                    frame.dts = map(frame.dts);
                }
            }
            if frame.track == Track::Video && !self.hub.cfg.derived {
                // Sample one video frame in eight: the time it spent in the
                // hub between the publisher's push and this hand-over.
                if self.delivered.is_multiple_of(8) {
                    self.latency.record(entry.pushed.elapsed().as_secs_f64());
                }
                self.delivered += 1;
            }
            return Ok(Item::Frame(frame));
        }
    }

    /// Place a new subscriber at the latest keyframe.
    fn join(&mut self, inner: &Inner) {
        match inner.keyframes.back() {
            Some(&k) => {
                self.pos = k;
                self.need_keyframe = true;
                if self.opts.catch_up && inner.head() > k + 1 {
                    let first = inner.entry(k).map(|e| e.frame.dts).unwrap_or(0);
                    // The last video frame of the backlog anchors the compression.
                    let anchor = inner
                        .entries
                        .iter()
                        .rev()
                        .find(|e| e.frame.track == Track::Video)
                        .map(|e| e.frame.dts)
                        .unwrap_or(first);
                    self.squeeze = Some(Squeeze {
                        until: inner.head(),
                        anchor,
                        total: anchor - first,
                    });
                }
            }
            None => {
                // No keyframe buffered: wait for the next one (audio-only
                // streams start at the live edge).
                self.pos = inner.head();
                self.need_keyframe = inner.info.video.is_some()
                    || inner.entries.iter().any(|e| e.frame.track == Track::Video);
            }
        }
    }

    fn skip(&mut self, inner: &Inner, target: Option<u64>, reason: &'static str) {
        let to = match target {
            Some(k) if k >= self.pos => k,
            _ => {
                self.need_keyframe = true;
                inner.head().max(self.pos)
            }
        };
        let skipped = to.saturating_sub(self.pos);
        if skipped > 0 {
            metrics::counter!("banyan_frames_dropped_total", "reason" => reason).increment(skipped);
            tracing::debug!(stream = %self.stream.uid, skipped, reason, "subscriber skipped ahead");
        }
        self.pos = to;
        self.squeeze = None;
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        {
            let mut inner = self.stream.inner.lock();
            inner.subscribers -= 1;
        }
        self.hub.release(&self.stream);
    }
}

#[cfg(test)]
mod tests;
