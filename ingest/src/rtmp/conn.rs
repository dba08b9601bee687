//! The tokio driver of one RTMP(S) connection: reads, feeds the session,
//! writes its output, and glues publish and play to the hub.

use std::time::Duration;

use banyan_captions::StreamCaptions;
use banyan_egress::rtmp::{play, PlayEnd, PlayOptions, PLAY_CHUNK_SIZE};
use banyan_relay::access::Direction;
use banyan_relay::views::Protocol;
use banyan_relay::{Publisher, SubscribeOptions};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::player::{PlayerInput, PlayerSignal};
use super::session::{RtmpSession, SessionError, SessionEvent};
use crate::events::IngestEvent;
use crate::flv::{FlvDemux, TagEvent};
use crate::Context;

/// Time allowed from accept to a completed RTMP handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A publisher, or a client that has not started publishing or playing,
/// silent this long is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress this long closes the connection.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a player whose stream ended gets to close its side first.
const LINGER: Duration = Duration::from_secs(2);
/// Handshake and commands come in small messages: a viewer never needs
/// more, and never gets the publisher's buffer.
const COMMAND_READ_BUF: usize = 4 << 10;
/// A publisher's media arrives in large reads.
const PUBLISH_READ_BUF: usize = 64 << 10;
/// A player sends little after play (acknowledgements, ping responses).
const PLAY_READ_BUF: usize = 512;

/// Why a connection was closed early, for logs and metrics.
fn refuse(reason: &'static str) {
    metrics::counter!("banyan_rtmp_connections_refused_total", "reason" => reason).increment(1);
}

enum Next {
    Publish(Publisher, String),
    Play { uid: String, stream_id: u32 },
    Close,
}

/// Where a connection comes from, for admission.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// The peer's address (failed attempts are counted per address).
    pub ip: std::net::IpAddr,
    /// The account owning the custom domain named in SNI, if any: only its
    /// keys are accepted on this connection.
    pub domain_account: Option<String>,
}

/// The time limits of a connection (see [`super::Limits`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Setup {
    /// When the RTMP handshake must be complete (set at accept).
    pub handshake_deadline: tokio::time::Instant,
    /// Most time from the handshake to publish or play, and between two
    /// media messages of a publisher.
    pub idle_timeout: Duration,
}

struct Conn<S> {
    io: S,
    session: RtmpSession,
    ctx: Context,
    protocol: Protocol,
    origin: Origin,
    setup: Setup,
    buf: Vec<u8>,
    events: Vec<SessionEvent>,
}

/// Drive one connection to its end.
pub(super) async fn run<S>(
    io: S,
    ctx: Context,
    protocol: Protocol,
    origin: Origin,
    setup: Setup,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut c = Conn {
        io,
        session: RtmpSession::new(),
        ctx,
        protocol,
        origin,
        setup,
        buf: vec![0; COMMAND_READ_BUF],
        events: Vec::new(),
    };
    // The command phase and a publisher's loop are boxed: inline, they
    // would size the task every viewer keeps while it plays.
    let next = tokio::select! {
        _ = shutdown.cancelled() => Next::Close,
        n = Box::pin(c.commands()) => n,
    };
    match next {
        Next::Close => {}
        Next::Publish(publisher, uid) => {
            tracing::info!(stream = %uid, protocol = protocol.as_str(), "publishing");
            c.ctx
                .events
                .report(IngestEvent::Published { uid: uid.clone() });
            let reason = Box::pin(c.publish(publisher, &shutdown)).await;
            tracing::info!(stream = %uid, reason, "publisher left");
            if reason == "protocol" {
                c.ctx.events.report(IngestEvent::Broken {
                    uid,
                    reason: "protocol",
                });
            }
        }
        Next::Play { uid, stream_id } => {
            let end = c.play(&uid, stream_id, &shutdown).await;
            tracing::debug!(stream = %uid, ?end, "player left");
            if matches!(end, PlayEnd::Finished) {
                c.linger(&shutdown).await;
            }
        }
    }
    let _ = timeout(Duration::from_secs(1), c.io.shutdown()).await;
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// After the end of stream, let the player close first: it answers
    /// `NetStream.Play.Stop` with deleteStream, which would meet a closed
    /// socket (a broken pipe in the player's log over TLS) if we closed at
    /// once. Reads and discards until its EOF, at most `LINGER`.
    async fn linger(&mut self, shutdown: &CancellationToken) {
        let deadline = tokio::time::Instant::now() + LINGER;
        loop {
            let read = tokio::time::timeout_at(deadline, self.io.read(&mut self.buf));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = read => match r {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                },
            }
        }
    }

    /// Read once (with a timeout) and feed the session. `Ok(false)` at EOF.
    async fn read_some(&mut self, limit: Duration) -> Result<bool, &'static str> {
        let n = match timeout(limit, self.io.read(&mut self.buf)).await {
            Err(_) => return Err("timeout"),
            Ok(Err(_)) => return Err("read error"),
            Ok(Ok(0)) => return Ok(false),
            Ok(Ok(n)) => n,
        };
        metrics::counter!("banyan_ingest_bytes_total", "protocol" => self.protocol.as_str())
            .increment(n as u64);
        if let Err(e) = self.session.input(&self.buf[..n], &mut self.events) {
            log_session_error(&e);
            return Err(match e {
                SessionError::Handshake(_) => "handshake",
                _ => "protocol",
            });
        }
        Ok(true)
    }

    async fn flush(&mut self) -> bool {
        let out = self.session.take_output();
        if out.is_empty() {
            return true;
        }
        let w = async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        };
        matches!(timeout(STALL_TIMEOUT, w).await, Ok(Ok(())))
    }

    /// Handshake and commands, up to an accepted publish or play.
    async fn commands(&mut self) -> Next {
        // Deadlines, not per-read timeouts: a peer trickling one byte at a
        // time must not hold the connection open.
        let mut commands_deadline = None;
        loop {
            let now = tokio::time::Instant::now();
            let deadline = if self.session.established() {
                *commands_deadline.get_or_insert(now + self.setup.idle_timeout)
            } else {
                self.setup.handshake_deadline
            };
            match self
                .read_some(deadline.saturating_duration_since(now))
                .await
            {
                Ok(true) => {}
                Ok(false) => return Next::Close,
                Err(why) => {
                    // A session that failed on bad chunks is no longer
                    // `established`: the reason decides, not the stage.
                    if why == "protocol" {
                        refuse("protocol");
                    } else if !self.session.established() {
                        refuse("handshake");
                    }
                    return Next::Close;
                }
            }
            let events = std::mem::take(&mut self.events);
            let mut next = None;
            for e in events {
                if next.is_some() {
                    break;
                }
                next = self.command(e);
            }
            if !self.flush().await {
                return Next::Close;
            }
            if let Some(n) = next {
                return n;
            }
        }
    }

    /// Whether the peer may try a key now (not rate-limited); refusals are
    /// counted.
    fn may_try(&self) -> bool {
        if self
            .ctx
            .admission
            .may_try(self.origin.ip, self.protocol.as_str())
        {
            return true;
        }
        refuse("rate_limited");
        tracing::info!(
            protocol = self.protocol.as_str(),
            peer = %self.origin.ip,
            "refused: too many failed attempts from this address"
        );
        false
    }

    /// A key arriving through a custom domain must be of the domain's
    /// account; the node's own names admit every account.
    fn domain_allows(&self, g: &banyan_relay::access::Grant) -> bool {
        self.origin
            .domain_account
            .as_ref()
            .is_none_or(|account| *account == g.account)
    }

    /// Act on one event of the command phase.
    fn command(&mut self, e: SessionEvent) -> Option<Next> {
        match e {
            SessionEvent::Connect { request_id, app } => {
                if app == "live" {
                    if self.session.accept(request_id).is_err() {
                        return Some(Next::Close);
                    }
                } else {
                    refuse("bad_app");
                    tracing::info!(
                        protocol = self.protocol.as_str(),
                        "refused: unknown application"
                    );
                    let _ = self.session.refuse(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    );
                    return Some(Next::Close);
                }
                None
            }
            SessionEvent::Publish { request_id, key } => {
                let sid = self.session.command_stream_id();
                if !self.may_try() {
                    self.session.status(
                        sid,
                        "error",
                        "NetStream.Publish.Denied",
                        "too many failed attempts; try again later",
                    );
                    return Some(Next::Close);
                }
                let grant = self.ctx.keys.lookup_key(&key);
                let (reason, code, text) = match &grant {
                    None => ("bad_key", "NetStream.Publish.BadName", "unknown stream key"),
                    Some(g) if g.direction != Direction::Publish => (
                        "bad_key",
                        "NetStream.Publish.Denied",
                        "this key does not allow publishing",
                    ),
                    Some(g) if !self.domain_allows(g) => (
                        "domain_account",
                        "NetStream.Publish.Denied",
                        "this key does not belong to this domain",
                    ),
                    Some(g) if !g.enabled => (
                        "disabled",
                        "NetStream.Publish.Denied",
                        "the live input is disabled",
                    ),
                    Some(_) => ("", "", ""),
                };
                if !reason.is_empty() {
                    refuse(reason);
                    // Refusals of a known input are reported against it;
                    // an unknown key names no input.
                    if let Some(g) = &grant {
                        let reason = if reason == "bad_key" {
                            "wrong_key"
                        } else {
                            reason
                        };
                        self.ctx.events.report(IngestEvent::Refused {
                            uid: g.uid.clone(),
                            reason,
                        });
                    }
                    if reason != "disabled" {
                        self.ctx.admission.failed(self.origin.ip);
                    }
                    tracing::info!(protocol = self.protocol.as_str(), reason, "publish refused");
                    self.session.status(sid, "error", code, text);
                    return Some(Next::Close);
                }
                // The key was checked above; a grant exists.
                let uid = grant.map(|g| g.uid).unwrap_or_default();
                match self.ctx.hub.publish(&uid) {
                    Ok(p) => {
                        if self.session.accept(request_id).is_err() {
                            return Some(Next::Close);
                        }
                        Some(Next::Publish(p, uid))
                    }
                    Err(_) => {
                        refuse("busy");
                        self.ctx.events.report(IngestEvent::Refused {
                            uid: uid.clone(),
                            reason: "busy",
                        });
                        tracing::info!(stream = %uid, "publish refused: already publishing");
                        self.session.status(
                            sid,
                            "error",
                            "NetStream.Publish.BadName",
                            "the stream already has a publisher",
                        );
                        Some(Next::Close)
                    }
                }
            }
            SessionEvent::Play { key, stream_id, .. } => {
                if !self.may_try() {
                    self.session.status(
                        stream_id,
                        "error",
                        "NetStream.Play.Failed",
                        "too many failed attempts; try again later",
                    );
                    return Some(Next::Close);
                }
                let grant = self
                    .ctx
                    .keys
                    .lookup_key(&key)
                    .filter(|g| g.direction == Direction::Play);
                let grant = match grant {
                    Some(g) if !self.domain_allows(&g) => {
                        refuse("domain_account");
                        tracing::info!(
                            protocol = self.protocol.as_str(),
                            "play refused: the key does not belong to this domain"
                        );
                        None
                    }
                    Some(g) => Some(g),
                    None => {
                        refuse("bad_key");
                        tracing::info!(protocol = self.protocol.as_str(), "play refused: bad key");
                        None
                    }
                };
                let Some(g) = grant else {
                    self.ctx.admission.failed(self.origin.ip);
                    self.session.status(
                        stream_id,
                        "error",
                        "NetStream.Play.StreamNotFound",
                        "unknown playback key",
                    );
                    return Some(Next::Close);
                };
                self.session.accept_play(stream_id);
                Some(Next::Play {
                    uid: g.uid,
                    stream_id,
                })
            }
            _ => None,
        }
    }

    /// Publish until the client stops, the connection fails, or the
    /// operator kicks the stream.
    async fn publish(
        &mut self,
        mut publisher: Publisher,
        shutdown: &CancellationToken,
    ) -> &'static str {
        self.buf = vec![0; PUBLISH_READ_BUF];
        let mut demux = FlvDemux::new();
        let mut cc = StreamCaptions::new(self.ctx.captions.clone(), publisher.uid());
        // Progress is a complete media message, not a byte: a publisher
        // trickling bytes is dropped after the idle timeout.
        let mut last_media = tokio::time::Instant::now();
        loop {
            let limit = (last_media + self.setup.idle_timeout)
                .saturating_duration_since(tokio::time::Instant::now());
            let read = tokio::select! {
                _ = shutdown.cancelled() => return "shutdown",
                _ = publisher.kicked() => return "kicked",
                r = self.read_some(limit) => r,
            };
            match read {
                Ok(true) => {}
                Ok(false) => return "closed",
                Err("timeout") => {
                    refuse("idle");
                    return "no media within the idle timeout";
                }
                Err(why) => return why,
            }
            let events = std::mem::take(&mut self.events);
            if events
                .iter()
                .any(|e| matches!(e, SessionEvent::Video { .. } | SessionEvent::Audio { .. }))
            {
                last_media = tokio::time::Instant::now();
            }
            for e in events {
                match e {
                    SessionEvent::Video { timestamp, data } => handle_tag(
                        &mut publisher,
                        &mut demux,
                        &mut cc,
                        demux_video(timestamp, data),
                    ),
                    SessionEvent::Audio { timestamp, data } => handle_tag(
                        &mut publisher,
                        &mut demux,
                        &mut cc,
                        demux_audio(timestamp, data),
                    ),
                    SessionEvent::PublishFinished => {
                        let _ = self.flush().await;
                        return "unpublished";
                    }
                    _ => {}
                }
            }
            if !self.flush().await {
                return "write stalled";
            }
        }
    }

    /// Play until the stream ends, the player leaves, or a write stalls.
    ///
    /// The protocol library's session ends here: a playing connection
    /// keeps only the chunk guard, inside [`PlayerInput`].
    async fn play(
        self: &mut Conn<S>,
        uid: &str,
        stream_id: u32,
        shutdown: &CancellationToken,
    ) -> PlayEnd {
        let (guard, pending) = self.session.end_for_player();
        self.events = Vec::new();
        // The answers to play, still in the session's chunk size.
        if !pending.is_empty() {
            let w = async {
                self.io.write_all(&pending).await?;
                self.io.flush().await
            };
            if !matches!(timeout(STALL_TIMEOUT, w).await, Ok(Ok(()))) {
                return PlayEnd::Stalled;
            }
        }
        drop(pending);
        let mut player = PlayerInput::new(guard, PLAY_CHUNK_SIZE);
        let mut sub = self
            .ctx
            .hub
            .subscribe(uid, SubscribeOptions { catch_up: true });
        let mut viewer = self.ctx.views.viewer(uid, self.protocol);
        let opts = PlayOptions {
            stream_id,
            chunk_size: PLAY_CHUNK_SIZE,
            stall_timeout: STALL_TIMEOUT,
            protocol: self.protocol.as_str(),
        };
        self.buf = vec![0; PLAY_READ_BUF];
        let read_bytes =
            metrics::counter!("banyan_ingest_bytes_total", "protocol" => self.protocol.as_str());
        let input = |data: &[u8], out: &mut bytes::BytesMut| {
            read_bytes.increment(data.len() as u64);
            match player.input(data, out) {
                Ok(PlayerSignal::Continue) => true,
                Ok(PlayerSignal::Stop) => false,
                Err(e) => {
                    log_session_error(&SessionError::Guard(e));
                    false
                }
            }
        };
        let cancel = shutdown.child_token();
        play(
            &mut self.io,
            &mut sub,
            &mut viewer,
            &opts,
            &mut self.buf,
            input,
            &cancel,
        )
        .await
    }
}

fn demux_video(
    ts: u32,
    data: Bytes,
) -> impl FnOnce(&mut FlvDemux) -> Result<TagEvent, crate::flv::TagError> {
    move |d| d.video(ts, data)
}

fn demux_audio(
    ts: u32,
    data: Bytes,
) -> impl FnOnce(&mut FlvDemux) -> Result<TagEvent, crate::flv::TagError> {
    move |d| d.audio(ts, data)
}

fn handle_tag(
    publisher: &mut Publisher,
    demux: &mut FlvDemux,
    cc: &mut StreamCaptions,
    f: impl FnOnce(&mut FlvDemux) -> Result<TagEvent, crate::flv::TagError>,
) {
    match f(demux) {
        Ok(TagEvent::Video(_)) | Ok(TagEvent::Audio(_)) => {
            publisher.set_info(demux.video_config().cloned(), demux.audio_config().cloned());
        }
        Ok(TagEvent::Frame(frame)) => {
            // Captions found in a video frame follow it, with its times;
            // the frame itself goes on untouched.
            let captions = cc.video(&frame);
            publisher.push(frame);
            if let Some(c) = captions {
                publisher.push(c);
            }
        }
        Ok(TagEvent::Nothing) => {}
        Err(e) => {
            metrics::counter!("banyan_ingest_tags_dropped_total", "protocol" => "rtmp")
                .increment(1);
            tracing::debug!(stream = %publisher.uid(), error = %e, "tag dropped");
        }
    }
}

fn log_session_error(e: &SessionError) {
    match e {
        SessionError::Panic(reason) => {
            metrics::counter!("banyan_rtmp_session_panics_total").increment(1);
            tracing::warn!(%reason, "rtmp connection closed: protocol library panicked");
        }
        other => tracing::info!(error = %other, "rtmp connection closed"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use banyan_relay::access::KeyTable;
    use banyan_relay::views::Views;
    use banyan_relay::{Hub, HubConfig};

    use super::*;

    /// Every viewer is one task holding this future: what only publishers
    /// and the command phase need is boxed, so it stays small.
    #[test]
    fn a_connection_task_stays_small() {
        let (io, _peer) = tokio::io::duplex(64);
        let ctx = Context {
            hub: Hub::new(HubConfig::default()),
            keys: Arc::new(KeyTable::new()),
            views: Views::new(),
            captions: banyan_captions::Registry::new(),
            admission: Default::default(),
            events: Default::default(),
        };
        let origin = Origin {
            ip: "127.0.0.1".parse().unwrap(),
            domain_account: None,
        };
        let setup = Setup {
            handshake_deadline: tokio::time::Instant::now(),
            idle_timeout: Duration::from_secs(1),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let task = run(
            io,
            ctx,
            Protocol::Rtmp,
            origin,
            setup,
            CancellationToken::new(),
        );
        let size = std::mem::size_of_val(&task);
        println!("connection task: {size} bytes");
        assert!(size <= 2560, "the connection task grew to {size} bytes");
    }
}
