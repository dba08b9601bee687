//! RTMP and RTMPS push: publish a hub stream to an RTMP server.
//!
//! rml_rtmp's `ClientSession` (sans-IO) does the handshake, `connect`,
//! `createStream` and `publish`, and reads what the server sends (its chunk
//! size, window acknowledgements, pings); every call into it runs under
//! `catch_unwind`, so a hostile server fails this one session. This file is
//! the thin tokio driver around it: TCP (and TLS for rtmps://), timeouts,
//! and the media loop that turns hub items into FLV tags, the codec
//! configuration (AVC sequence header, AudioSpecificConfig) first.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use banyan_relay::{Frame, Hub, Item, MediaInfo, SubscribeOptions, Track};
use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PushConfig, PushState, PushStatus, SessionEnd, Target};
use crate::flv;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Run one rml_rtmp call contained: a panic becomes an error.
fn guarded<T>(
    f: impl FnOnce() -> Result<T, rml_rtmp::sessions::ClientSessionError>,
) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("RTMP protocol error: {e:?}")),
        Err(_) => Err("RTMP protocol error: the server's bytes broke the session".into()),
    }
}

/// Append the outbound packets of `results` to `out`; return the events.
fn collect(results: Vec<ClientSessionResult>, out: &mut BytesMut) -> Vec<ClientSessionEvent> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.put_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    events
}

async fn connect(target: &Target, cfg: &PushConfig) -> Result<Box<dyn Io>, String> {
    let Target::Rtmp {
        tls, host, port, ..
    } = target
    else {
        return Err("not an RTMP target".into());
    };
    let addr = super::addr::resolve(host, *port, cfg.allow_private).await?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !*tls {
        return Ok(Box::new(tcp));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(cfg.roots.clone())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| format!("TLS: {host} is not a valid server name"))?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {host}:{port}: {e}"))?;
    Ok(Box::new(s))
}

async fn write(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    cfg: &PushConfig,
    label: &'static str,
) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    let n = buf.len();
    match tokio::time::timeout(cfg.write_timeout, io.write_all(buf)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("write: {e}")),
        Err(_) => return Err("write stalled: the destination does not read".into()),
    }
    buf.clear();
    metrics::counter!("banyan_output_bytes_total", "protocol" => label).increment(n as u64);
    Ok(())
}

enum Stage {
    Handshake(Box<Handshake>),
    Session(Box<ClientSession>),
    Failed,
}

/// The sans-IO RTMP publishing client of one push session: handshake,
/// `connect`, `createStream`, `publish`, then media. Bytes from the server
/// go to [`PushCore::input`]; what to send is appended to `out`. Every call
/// into rml_rtmp is contained; after a failure every call fails.
pub struct PushCore {
    stage: Stage,
    app: String,
    stream_key: String,
    tc_url: String,
    publishing: bool,
    clock: Clock,
    have_info: bool,
}

impl PushCore {
    /// A client that will publish `stream_key` in application `app`; the
    /// handshake's first bytes (C0 and C1) are appended to `out`.
    pub fn new(
        app: &str,
        stream_key: &str,
        tc_url: &str,
        out: &mut BytesMut,
    ) -> Result<PushCore, String> {
        let mut hs = Box::new(Handshake::new(PeerType::Client));
        let c0c1 = catch_unwind(AssertUnwindSafe(|| hs.generate_outbound_p0_and_p1()))
            .map_err(|_| "RTMP handshake failed".to_string())?
            .map_err(|e| format!("RTMP handshake: {e:?}"))?;
        out.put_slice(&c0c1);
        Ok(PushCore {
            stage: Stage::Handshake(hs),
            app: app.into(),
            stream_key: stream_key.into(),
            tc_url: tc_url.into(),
            publishing: false,
            clock: Clock::default(),
            have_info: false,
        })
    }

    /// True once the server accepted the publish: media may follow.
    pub fn publishing(&self) -> bool {
        self.publishing
    }

    /// Bytes from the server; answers are appended to `out`. An error
    /// (refusal, protocol error) ends the session.
    pub fn input(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let r = self.input_inner(bytes, out);
        if r.is_err() {
            self.stage = Stage::Failed;
        }
        r
    }

    fn input_inner(&mut self, bytes: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let pending = match &mut self.stage {
            Stage::Failed => return Err("the session failed".into()),
            Stage::Session(_) => bytes.to_vec(),
            Stage::Handshake(hs) => {
                let r = catch_unwind(AssertUnwindSafe(|| hs.process_bytes(bytes)))
                    .map_err(|_| "RTMP handshake failed".to_string())?
                    .map_err(|e| format!("RTMP handshake: {e:?}"))?;
                match r {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        out.put_slice(&response_bytes);
                        return Ok(());
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        out.put_slice(&response_bytes);
                        let mut config = ClientSessionConfig::new();
                        config.tc_url = Some(self.tc_url.clone());
                        config.flash_version = "FMLE/3.0 (compatible; banyan)".into();
                        let (mut session, results) = guarded(|| ClientSession::new(config))?;
                        collect(results, out);
                        let app = self.app.clone();
                        let r = guarded(|| session.request_connection(app))?;
                        collect(vec![r], out);
                        self.stage = Stage::Session(Box::new(session));
                        remaining_bytes
                    }
                }
            }
        };
        let Stage::Session(session) = &mut self.stage else {
            return Err("the session failed".into());
        };
        let results = guarded(|| session.handle_input(&pending))?;
        for ev in collect(results, out) {
            match ev {
                ClientSessionEvent::ConnectionRequestAccepted if !self.publishing => {
                    let key = self.stream_key.clone();
                    let r = guarded(|| session.request_publishing(key, PublishRequestType::Live))?;
                    collect(vec![r], out);
                }
                ClientSessionEvent::ConnectionRequestRejected { description } => {
                    return Err(format!(
                        "the server refused connect: {}",
                        printable(&description)
                    ));
                }
                ClientSessionEvent::PublishRequestAccepted => self.publishing = true,
                ClientSessionEvent::UnhandleableOnStatusCode { code } if !self.publishing => {
                    return Err(format!("the server refused publish: {}", printable(&code)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Encode one hub item into `out`; true when the stream ended.
    pub fn item(&mut self, item: Item, out: &mut BytesMut) -> Result<bool, String> {
        let r = self.item_inner(item, out);
        if r.is_err() {
            self.stage = Stage::Failed;
        }
        r
    }

    fn item_inner(&mut self, item: Item, out: &mut BytesMut) -> Result<bool, String> {
        let Stage::Session(session) = &mut self.stage else {
            return Err("not publishing".into());
        };
        if !self.publishing {
            return Err("not publishing".into());
        }
        match item {
            Item::Info(info) => {
                let m = metadata(&info);
                let r = guarded(|| session.publish_metadata(&m))?;
                collect(vec![r], out);
                let t = RtmpTimestamp::new(self.clock.now());
                if let Some(v) = &info.video {
                    let sh = flv::video_sequence_header(v);
                    let r = guarded(|| session.publish_video_data(sh, t, false))?;
                    collect(vec![r], out);
                }
                if let Some(a) = &info.audio {
                    let sh = flv::audio_sequence_header(a);
                    let r = guarded(|| session.publish_audio_data(sh, t, false))?;
                    collect(vec![r], out);
                }
                self.have_info = true;
            }
            Item::Frame(f) => {
                if !self.have_info {
                    return Ok(false);
                }
                let Some(body) = tag(&f) else {
                    return Ok(false);
                };
                let t = RtmpTimestamp::new(self.clock.stamp(&f));
                let r = match f.track {
                    Track::Video => guarded(|| session.publish_video_data(body, t, false))?,
                    _ => guarded(|| session.publish_audio_data(body, t, false))?,
                };
                collect(vec![r], out);
            }
            Item::End(_) => {
                if let Ok(r) = guarded(|| session.stop_publishing()) {
                    collect(r, out);
                }
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The fuzz target's entry (fuzz/fuzz_targets/rtmp_push.rs): arbitrary
/// server bytes into a [`PushCore`]. The first byte picks the mode: even,
/// the bytes answer the handshake itself; odd, a real handshake is done
/// first and the bytes reach the session (connect and publish answers,
/// chunk sizes, acknowledgements). The rest is cut into reads by its own
/// bytes. Nothing may panic; media items follow whatever state results.
#[doc(hidden)]
pub fn fuzz_server_bytes(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut out = BytesMut::new();
    let Ok(mut core) = PushCore::new("live", "key", "rtmp://h/live", &mut out) else {
        return;
    };
    if mode & 1 == 1 {
        let mut server = Handshake::new(PeerType::Server);
        let Ok(HandshakeProcessResult::InProgress { response_bytes }) = server.process_bytes(&out)
        else {
            return;
        };
        out.clear();
        if core.input(&response_bytes, &mut out).is_err() {
            return;
        }
        let _ = server.process_bytes(&out);
    }
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize % 64 + 1).min(tail.len());
        let (read, after) = tail.split_at(n);
        out.clear();
        if core.input(read, &mut out).is_err() {
            break;
        }
        rest = after;
    }
    let frame = Frame::video(0, 0, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
    let _ = core.item(Item::Info(Arc::new(MediaInfo::default())), &mut out);
    let _ = core.item(Item::Frame(frame), &mut out);
    let _ = core.item(Item::End(banyan_relay::StreamEnd::Finished), &mut out);
}

/// A server's text as shown in a status: bounded, printable.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// RTMP timestamps of one push session: milliseconds from the first frame
/// (with headroom for audio slightly older than the first keyframe), video
/// kept strictly increasing.
#[derive(Debug, Default)]
pub struct Clock {
    base: Option<i64>,
    last_video: Option<u32>,
}

/// Milliseconds of headroom before the first frame's time.
const HEADROOM_MS: i64 = 1000;

impl Clock {
    pub fn stamp(&mut self, f: &Frame) -> u32 {
        let base = *self.base.get_or_insert(f.dts - HEADROOM_MS * 90);
        let ms = (f.dts - base).max(0).div_euclid(90).rem_euclid(1 << 32) as u32;
        if f.track == Track::Video {
            let ms = match self.last_video {
                Some(last) if ms <= last && last - ms < 1000 => last.wrapping_add(1),
                _ => ms,
            };
            self.last_video = Some(ms);
            return ms;
        }
        ms
    }

    /// The time for configuration messages: that of the last video frame.
    pub fn now(&self) -> u32 {
        self.last_video.unwrap_or(0)
    }
}

fn metadata(info: &MediaInfo) -> StreamMetadata {
    let mut m = StreamMetadata::new();
    if let Some(v) = &info.video {
        m.video_width = Some(v.width);
        m.video_height = Some(v.height);
        m.video_codec_id = Some(flv::CODEC_AVC as u32);
    }
    if let Some(a) = &info.audio {
        m.audio_codec_id = Some(flv::SOUND_AAC as u32);
        m.audio_sample_rate = Some(a.sample_rate);
        m.audio_channels = Some(a.channels as u32);
        m.audio_is_stereo = Some(a.channels > 1);
    }
    m.encoder = Some("banyan".into());
    m
}

/// The FLV tag body of a frame (tag header and payload joined).
fn tag(f: &Frame) -> Option<Bytes> {
    let mut b = BytesMut::with_capacity(5 + f.payload.len());
    match f.track {
        Track::Video => b.put_slice(&flv::video_tag_header(f)),
        Track::Audio => b.put_slice(&flv::audio_tag_header()),
        Track::Captions => return None,
    }
    b.put_slice(&f.payload);
    Some(b.freeze())
}

/// At most this many bytes are gathered into one write.
const GATHER_BYTES: usize = 256 << 10;

/// One push session: connect, publish, then forward hub items until the
/// stream ends or something fails.
pub(super) async fn session(
    hub: &Arc<Hub>,
    uid: &str,
    target: &Target,
    cfg: &PushConfig,
    status: &PushStatus,
) -> Result<SessionEnd, String> {
    let Target::Rtmp {
        tls,
        host,
        port,
        app,
        stream_key,
    } = target
    else {
        return Err("not an RTMP target".into());
    };
    let label = target.protocol();
    let scheme = if *tls { "rtmps" } else { "rtmp" };
    let tc_url = format!("{scheme}://{host}:{port}/{app}");
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 16 * 1024];
    let opened = tokio::time::timeout(cfg.connect_timeout, async {
        let mut io = connect(target, cfg).await?;
        let mut core = PushCore::new(app, stream_key, &tc_url, &mut out)?;
        while !core.publishing() {
            write(&mut io, &mut out, cfg, label).await?;
            let n = io.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection before publishing".into());
            }
            core.input(&buf[..n], &mut out)?;
        }
        Ok::<_, String>((io, core))
    })
    .await
    .map_err(|_| format!("no answer within {:?}", cfg.connect_timeout))?;
    let (mut io, mut core) = opened?;
    status.set(PushState::Connected);
    tracing::info!(stream = %uid, output = ?target, "output connected");
    // Joins at the latest keyframe with its codec configuration.
    let mut sub = hub.subscribe(uid, SubscribeOptions { catch_up: false });
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            r = io.read(&mut buf) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("the destination closed the connection".into());
                }
                core.input(&buf[..n], &mut out)?;
                write(&mut io, &mut out, cfg, label).await?;
                continue;
            }
        };
        let mut ended = core.item(item, &mut out)?;
        // Gather what is ready now into the same write.
        while !ended && out.len() < GATHER_BYTES {
            match sub.try_recv() {
                Some(item) => ended = core.item(item, &mut out)?,
                None => break,
            }
        }
        write(&mut io, &mut out, cfg, label).await?;
        if ended {
            let _ = io.shutdown().await;
            return Ok(SessionEnd::StreamEnded);
        }
    }
}

#[cfg(test)]
mod tests;
