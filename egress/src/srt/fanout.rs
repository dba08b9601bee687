//! One TS mux per stream, shared by every SRT viewer of it.
//!
//! The first SRT viewer of a stream starts a packetizer: a subscriber of the
//! node's hub that muxes each frame once into a chunk of whole TS packets
//! (PAT and PMT first on keyframes) and publishes the chunks, one per frame
//! with the frame's track, times and keyframe flag, on a second, derived
//! [`Hub`]. Viewers are cursors into that derived hub, so they get the hub's
//! rules for free: bounded memory per stream, a joiner starts at the latest
//! keyframe (with PAT and PMT) and its backlog compressed, a slow viewer
//! skips to a newer keyframe and the skipped chunks are counted in
//! `banyan_frames_dropped_total`. A viewer sends the shared chunk bytes in
//! slices; only its compressed backlog is copied, to rewrite its times
//! ([`crate::ts::retime`]).
//!
//! The packetizer ends with the stream (its viewers get the same end) or
//! within a second of its last viewer leaving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::{
    Frame, Hub, HubConfig, Item, Publisher, StreamEnd, SubscribeOptions, Subscriber,
};
use bytes::BytesMut;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::ts::Muxer;

/// The shared SRT packetizers of one node.
pub struct SrtFanout {
    hub: Arc<Hub>,
    ts: Arc<Hub>,
    /// Streams with a running packetizer, by uid; the value tells one
    /// packetizer from the next of the same stream.
    running: Mutex<HashMap<String, u64>>,
    next: Mutex<u64>,
}

impl SrtFanout {
    /// Packetizers over `hub`'s streams; the derived hub takes `hub`'s
    /// buffer bounds and catch-up settings and ends a stream as soon as its
    /// packetizer does.
    pub fn new(hub: Arc<Hub>) -> Arc<SrtFanout> {
        let src = hub.config();
        let ts = Hub::new(HubConfig {
            // TS adds about 5 % to the payloads.
            max_buffer_bytes: src.max_buffer_bytes + src.max_buffer_bytes / 8,
            max_lag: src.max_lag,
            reconnect_window: Duration::ZERO,
            catch_up_span: src.catch_up_span,
            derived: true,
            audio_hold: src.audio_hold,
        });
        Arc::new(SrtFanout {
            hub,
            ts,
            running: Mutex::new(HashMap::new()),
            next: Mutex::new(0),
        })
    }

    /// The source hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Packetizers running now.
    pub fn packetizers(&self) -> usize {
        self.running.lock().len()
    }

    /// A cursor into `uid`'s shared TS chunks, starting its packetizer if
    /// none runs. The packetizer has muxed everything the hub holds before
    /// this returns, so the viewer joins with the whole backlog present.
    pub fn attach(self: &Arc<Self>, uid: &str, shutdown: &CancellationToken) -> Subscriber {
        let mut running = self.running.lock();
        if !running.contains_key(uid) {
            match self.ts.publish(uid) {
                Ok(out) => {
                    let id = {
                        let mut n = self.next.lock();
                        *n += 1;
                        *n
                    };
                    let src = self
                        .hub
                        .subscribe(uid, SubscribeOptions { catch_up: false });
                    let mut p = Packetizer {
                        src,
                        out: Some(out),
                        mux: Muxer::new(),
                        buf: BytesMut::with_capacity(64 * 1024),
                    };
                    let end = p.drain();
                    running.insert(uid.to_string(), id);
                    tokio::spawn(p.run(self.clone(), id, end, shutdown.clone()));
                }
                Err(e) => tracing::warn!(stream = %uid, error = %e, "srt packetizer not started"),
            }
        }
        self.ts.subscribe(uid, SubscribeOptions { catch_up: true })
    }

    /// Called by a packetizer that may stop: it does (true) when the stream
    /// ended or nobody watches. The publisher is dropped under the lock, so
    /// a viewer attaching meanwhile starts a fresh packetizer.
    fn retire(&self, uid: &str, id: u64, ended: bool, out: &mut Option<Publisher>) -> bool {
        let mut running = self.running.lock();
        if !ended && self.ts.subscribers(uid) > 0 {
            return false;
        }
        if running.get(uid) == Some(&id) {
            running.remove(uid);
        }
        out.take();
        true
    }
}

struct Packetizer {
    src: Subscriber,
    /// Taken (dropped) only under the fanout's lock.
    out: Option<Publisher>,
    mux: Muxer,
    buf: BytesMut,
}

impl Packetizer {
    /// Mux one item; the stream's end if it is one.
    fn handle(&mut self, item: Item) -> Option<StreamEnd> {
        match item {
            Item::Info(info) => self.mux.set_info(&info),
            Item::Frame(f) => {
                self.mux.frame(&f, &mut self.buf);
                if !self.buf.is_empty() {
                    let chunk = self.buf.split().freeze();
                    if self.buf.capacity() < 16 * 1024 {
                        self.buf.reserve(64 * 1024);
                    }
                    if let Some(out) = &mut self.out {
                        out.push(Frame {
                            payload: chunk,
                            ..f
                        });
                    }
                }
            }
            Item::End(end) => return Some(end),
        }
        None
    }

    /// Mux every item ready now.
    fn drain(&mut self) -> Option<StreamEnd> {
        while let Some(item) = self.src.try_recv() {
            if let Some(end) = self.handle(item) {
                return Some(end);
            }
        }
        None
    }

    async fn run(
        mut self,
        fanout: Arc<SrtFanout>,
        id: u64,
        mut end: Option<StreamEnd>,
        shutdown: CancellationToken,
    ) {
        let uid = self.src.uid().to_string();
        tracing::debug!(stream = %uid, "srt packetizer started");
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while end.is_none() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if fanout.retire(&uid, id, false, &mut self.out) {
                        tracing::debug!(stream = %uid, "srt packetizer stopped: no viewers");
                        return;
                    }
                }
                item = self.src.recv() => {
                    end = self.handle(item).or_else(|| self.drain());
                }
            }
        }
        if end == Some(StreamEnd::Kicked) {
            fanout.ts.kick(&uid);
        }
        fanout.retire(&uid, id, true, &mut self.out);
        tracing::debug!(stream = %uid, ?end, "srt packetizer stopped");
    }
}

#[cfg(test)]
mod tests;
