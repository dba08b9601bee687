//! The SRT listener: publishers push MPEG-TS, players pull it.
//!
//! [`serve`] binds a libsrt listener whose driver thread lives in
//! `banyan-srt`. Admission happens in libsrt's listen callback against the
//! in-memory [`KeyTable`](banyan_relay::access::KeyTable) snapshot: the
//! stream id names the live input and the direction ([`StreamId`]), and the
//! passphrase of that input and direction is set on the socket there, so a
//! wrong passphrase, an unknown stream id, a disabled input or a caller in
//! file mode is refused during the handshake, before any media flows.
//!
//! Beyond [`SrtConfig::max_connections`] a caller is refused in the same
//! callback with `OVERLOAD`, before anything else is looked at.
//!
//! Failed attempts count against the caller's address
//! ([`crate::admission`]): a limited address is refused (`OVERLOAD`) before
//! its stream id is looked up. libsrt refuses a wrong passphrase after the
//! callback, out of our sight, so every admitted handshake counts as a
//! failure until the connection is accepted, which takes it back.
//!
//! A publisher's messages go through the [`Demuxer`](crate::ts::Demuxer)
//! into the hub; a player is handed to [`banyan_egress::srt::play`], which
//! sends it the stream's TS as muxed once for all of the listener's players
//! ([`SrtFanout`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use banyan_egress::srt::SrtFanout;
use banyan_relay::access::{Direction, KeyTable};
use banyan_relay::{Hub, StreamState};
use banyan_srt::server::{reject, Channel, Decision, Gate, Incoming, Mode, Server, ServerConfig};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::events::{Events, IngestEvent};
use crate::ts::{DemuxEvent, Demuxer};
use crate::{Context, IngestError};

/// Tunables of the SRT listener.
#[derive(Debug, Clone)]
pub struct SrtConfig {
    /// TSBPD latency of the listener (receive latency of publishers, the
    /// least latency players get). Default 120 ms.
    pub latency: Duration,
    /// Hold publishers' packets until their TSBPD time before relaying
    /// (adds the whole latency to every viewer). Default off.
    pub receive_tsbpd: bool,
    /// Messages queued per connection between libsrt's thread and tokio.
    pub queue: usize,
    /// Connections at once (publishers, players and handshakes admitted
    /// but not yet accepted). More are refused at the handshake with
    /// `SRT_REJX_OVERLOAD` (1402), logged once per 10 s at most and counted
    /// in `banyan_connections_refused_total{reason="limit",listener="srt"}`.
    /// Default 10000.
    pub max_connections: usize,
    /// SRT handshakes in progress per caller address. Default 64.
    pub max_per_address: usize,
}

impl Default for SrtConfig {
    fn default() -> Self {
        SrtConfig {
            latency: Duration::from_millis(120),
            receive_tsbpd: false,
            queue: 4096,
            max_connections: 10_000,
            max_per_address: 64,
        }
    }
}

/// What a stream id asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamId {
    /// Publish to the live input `uid`.
    Publish(String),
    /// Play the live input `uid`.
    Play(String),
}

/// Why a stream id was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// Empty, too long, or a uid with characters outside `[A-Za-z0-9_-]`.
    #[error("malformed stream id")]
    Malformed,
    /// The access-control form lacks `r=`.
    #[error("stream id without a resource")]
    NoResource,
    /// `m=` other than publish, request or play.
    #[error("unsupported mode")]
    BadMode,
    /// `t=` other than stream.
    #[error("unsupported type")]
    BadType,
}

const MAX_STREAM_ID: usize = 512;
const MAX_UID: usize = 128;

fn valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_UID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl StreamId {
    /// Parse `<uid>`, `play<uid>` or `#!::r=<uid>,m=publish|request`.
    pub fn parse(s: &str) -> Result<StreamId, StreamIdError> {
        if s.len() > MAX_STREAM_ID {
            return Err(StreamIdError::Malformed);
        }
        if let Some(kv) = s.strip_prefix("#!::") {
            let mut resource = None;
            let mut mode = "request";
            for pair in kv.split(',') {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(StreamIdError::Malformed);
                };
                match k.trim() {
                    "r" => resource = Some(v.trim()),
                    "m" => mode = v.trim(),
                    "t" if v.trim() != "stream" => return Err(StreamIdError::BadType),
                    _ => {}
                }
            }
            let uid = resource.ok_or(StreamIdError::NoResource)?;
            if !valid_uid(uid) {
                return Err(StreamIdError::Malformed);
            }
            return match mode {
                "publish" => Ok(StreamId::Publish(uid.to_string())),
                "request" | "play" => Ok(StreamId::Play(uid.to_string())),
                _ => Err(StreamIdError::BadMode),
            };
        }
        if let Some(uid) = s.strip_prefix("play") {
            if valid_uid(uid) {
                return Ok(StreamId::Play(uid.to_string()));
            }
        }
        if valid_uid(s) {
            return Ok(StreamId::Publish(s.to_string()));
        }
        Err(StreamIdError::Malformed)
    }

    pub fn uid(&self) -> &str {
        match self {
            StreamId::Publish(u) | StreamId::Play(u) => u,
        }
    }
}

/// The admission decision for a stream id (runs in libsrt's callback).
fn decide(keys: &KeyTable, hub: &Hub, sid: &str) -> Decision {
    let Ok(id) = StreamId::parse(sid) else {
        return Decision::Reject(reject::BAD_REQUEST);
    };
    let (direction, mode) = match &id {
        StreamId::Publish(_) => (Direction::Publish, Mode::Receive),
        StreamId::Play(_) => (Direction::Play, Mode::Send),
    };
    let Some((pass, grant)) = keys.srt(id.uid(), direction) else {
        return Decision::Reject(reject::NOT_FOUND);
    };
    if direction == Direction::Publish {
        if !grant.enabled {
            return Decision::Reject(reject::FORBIDDEN);
        }
        if hub.state(id.uid()) == StreamState::Live {
            return Decision::Reject(reject::CONFLICT);
        }
    }
    Decision::Accept {
        mode,
        passphrase: (!pass.is_empty()).then_some(pass),
    }
}

/// The listener's [`Gate`]: keys, hub state and the failed-attempt limiter.
struct SrtGate {
    keys: Arc<KeyTable>,
    hub: Arc<Hub>,
    admission: Arc<Admission>,
    events: Events,
}

impl Gate for SrtGate {
    fn decide(&self, stream_id: &str) -> Decision {
        decide(&self.keys, &self.hub, stream_id)
    }

    fn decide_from(&self, stream_id: &str, peer: Option<SocketAddr>) -> Decision {
        let Some(ip) = peer.map(|p| p.ip()) else {
            return self.decide(stream_id);
        };
        if !self.admission.may_try(ip, "srt") {
            return Decision::Reject(reject::OVERLOAD);
        }
        let d = self.decide(stream_id);
        if let Decision::Reject(code @ (reject::FORBIDDEN | reject::CONFLICT)) = d {
            if let Ok(StreamId::Publish(uid)) = StreamId::parse(stream_id) {
                let reason = if code == reject::FORBIDDEN {
                    "disabled"
                } else {
                    "busy"
                };
                self.events.report(IngestEvent::Refused { uid, reason });
            }
        }
        match d {
            // A disabled input or a busy stream is not a guess at a secret.
            Decision::Reject(reject::FORBIDDEN | reject::CONFLICT) => {}
            // Refused now, or (accepted) until the connection arrives.
            _ => self.admission.failed(ip),
        }
        d
    }
}

/// Bind the SRT listener on `addr` (port 0 allowed) and serve it in the
/// background until `shutdown` fires. Returns the bound address as soon as
/// the listener is up.
pub async fn serve(
    addr: SocketAddr,
    cfg: SrtConfig,
    ctx: Context,
    shutdown: CancellationToken,
) -> Result<SocketAddr, IngestError> {
    let gate = SrtGate {
        keys: ctx.keys.clone(),
        hub: ctx.hub.clone(),
        admission: ctx.admission.clone(),
        events: ctx.events.clone(),
    };
    let scfg = ServerConfig {
        latency: cfg.latency,
        receive_tsbpd: cfg.receive_tsbpd,
        receive_queue: cfg.queue,
        send_queue: cfg.queue,
        max_connections: cfg.max_connections,
        max_pending_per_address: cfg.max_per_address,
        ..ServerConfig::default()
    };
    let (server, mut incoming) = Server::start(addr, scfg, Arc::new(gate))?;
    let fanout = SrtFanout::new(ctx.hub.clone());
    let bound = server.local_addr();
    tracing::info!(addr = %bound, "srt listening");
    tokio::spawn(async move {
        // The server (and its thread) lives as long as this task.
        let _server = server;
        loop {
            let inc = tokio::select! {
                _ = shutdown.cancelled() => break,
                inc = incoming.recv() => match inc {
                    Some(inc) => inc,
                    None => break,
                },
            };
            dispatch(inc, &ctx, &fanout, &shutdown);
        }
        tracing::info!(addr = %bound, "srt listener stopped");
    });
    Ok(bound)
}

fn dispatch(inc: Incoming, ctx: &Context, fanout: &Arc<SrtFanout>, shutdown: &CancellationToken) {
    // The handshake succeeded (right passphrase): take back its failure.
    ctx.admission.forgive(inc.peer.ip());
    let Ok(id) = StreamId::parse(&inc.stream_id) else {
        return;
    };
    match (id, inc.channel) {
        (StreamId::Publish(uid), Channel::Receiver(rx)) => {
            tracing::info!(stream = %uid, peer = %inc.peer, "srt publisher connected");
            tokio::spawn(publish(ctx.clone(), uid, rx, shutdown.clone()));
        }
        (StreamId::Play(uid), Channel::Sender(tx)) => {
            tracing::info!(stream = %uid, peer = %inc.peer, "srt player connected");
            tokio::spawn(banyan_egress::srt::play(
                fanout.clone(),
                ctx.views.clone(),
                uid,
                tx,
                shutdown.clone(),
            ));
        }
        _ => {}
    }
}

async fn publish(
    ctx: Context,
    uid: String,
    mut rx: mpsc::Receiver<Bytes>,
    shutdown: CancellationToken,
) {
    let mut publisher = match ctx.hub.publish(&uid) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(stream = %uid, error = %e, "srt publish refused");
            ctx.events.report(IngestEvent::Refused {
                uid,
                reason: "busy",
            });
            return;
        }
    };
    ctx.events
        .report(IngestEvent::Published { uid: uid.clone() });
    let mut damage_reported = false;
    let mut demux = Demuxer::new();
    let mut cc = banyan_captions::StreamCaptions::new(ctx.captions.clone(), &uid);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut logged = (0u64, Instant::now() - Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if publisher.is_kicked() {
                    break;
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                demux.push(&msg);
                // Take whatever else is already queued before handing frames on.
                while let Ok(more) = rx.try_recv() {
                    demux.push(&more);
                }
                while let Some(ev) = demux.poll() {
                    match ev {
                        DemuxEvent::Config { video, audio } => publisher.set_info(video, audio),
                        DemuxEvent::Frame(f) => {
                            // Captions found in a video frame follow it.
                            let captions = cc.video(&f);
                            publisher.push(f);
                            if let Some(c) = captions {
                                publisher.push(c);
                            }
                        }
                    }
                }
                let errors = demux.errors();
                if errors.total() > 0 && !damage_reported {
                    damage_reported = true;
                    ctx.events.report(IngestEvent::Broken {
                        uid: uid.clone(),
                        reason: "damaged_ts",
                    });
                }
                if errors.total() != logged.0 && logged.1.elapsed() >= Duration::from_secs(5) {
                    tracing::warn!(stream = %uid, ?errors, "damaged MPEG-TS input dropped");
                    logged = (errors.total(), Instant::now());
                }
                if publisher.is_kicked() {
                    break;
                }
            }
        }
    }
    tracing::info!(stream = %uid, "srt publisher left");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_forms() {
        assert_eq!(
            StreamId::parse("abc123"),
            Ok(StreamId::Publish("abc123".into()))
        );
        assert_eq!(
            StreamId::parse("playabc123"),
            Ok(StreamId::Play("abc123".into()))
        );
        assert_eq!(
            StreamId::parse("#!::r=abc,m=publish"),
            Ok(StreamId::Publish("abc".into()))
        );
        assert_eq!(
            StreamId::parse("#!::m=request,r=abc"),
            Ok(StreamId::Play("abc".into()))
        );
        assert_eq!(
            StreamId::parse("#!::r=abc"),
            Ok(StreamId::Play("abc".into()))
        );
        assert_eq!(
            StreamId::parse("#!::r=abc,m=publish,t=stream,u=me"),
            Ok(StreamId::Publish("abc".into()))
        );
    }

    #[test]
    fn stream_id_refusals() {
        assert_eq!(StreamId::parse(""), Err(StreamIdError::Malformed));
        assert_eq!(
            StreamId::parse("play"),
            Ok(StreamId::Publish("play".into()))
        );
        assert_eq!(StreamId::parse("a/b"), Err(StreamIdError::Malformed));
        assert_eq!(
            StreamId::parse("#!::m=publish"),
            Err(StreamIdError::NoResource)
        );
        assert_eq!(
            StreamId::parse("#!::r=abc,m=bidirectional"),
            Err(StreamIdError::BadMode)
        );
        assert_eq!(
            StreamId::parse("#!::r=abc,t=file"),
            Err(StreamIdError::BadType)
        );
        assert_eq!(
            StreamId::parse("#!::r=abc,junk"),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(
            StreamId::parse(&"a".repeat(600)),
            Err(StreamIdError::Malformed)
        );
        assert_eq!(StreamId::parse("#!::r="), Err(StreamIdError::Malformed));
    }
}
