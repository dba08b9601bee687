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
    let Target::Rtmp { tls, host, port, .. } = target else {
        return Err("not an RTMP target".into());
    };
    let tcp = TcpStream::connect((host.as_str(), *port))
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

/// Handshake, connect and publish; returns the session ready for media.
async fn open(
    io: &mut Box<dyn Io>,
    target: &Target,
    cfg: &PushConfig,
) -> Result<ClientSession, String> {
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
    let mut out = BytesMut::new();
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = catch_unwind(AssertUnwindSafe(|| hs.generate_outbound_p0_and_p1()))
        .map_err(|_| "RTMP handshake failed".to_string())?
        .map_err(|e| format!("RTMP handshake: {e:?}"))?;
    out.put_slice(&c0c1);
    write(io, &mut out, cfg, target.protocol()).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let remaining = loop {
        let n = io.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
        let r = catch_unwind(AssertUnwindSafe(|| hs.process_bytes(&buf[..n])))
            .map_err(|_| "RTMP handshake failed".to_string())?
            .map_err(|e| format!("RTMP handshake: {e:?}"))?;
        match r {
            HandshakeProcessResult::InProgress { response_bytes } => {
                out.put_slice(&response_bytes);
                write(io, &mut out, cfg, target.protocol()).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                out.put_slice(&response_bytes);
                write(io, &mut out, cfg, target.protocol()).await?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    let scheme = if *tls { "rtmps" } else { "rtmp" };
    config.tc_url = Some(format!("{scheme}://{host}:{port}/{app}"));
    config.flash_version = "FMLE/3.0 (compatible; banyan)".into();
    let (mut session, results) = guarded(|| ClientSession::new(config))?;
    collect(results, &mut out);
    let r = guarded(|| session.request_connection(app.clone()))?;
    collect(vec![r], &mut out);
    write(io, &mut out, cfg, target.protocol()).await?;
    let mut pending = remaining;
    loop {
        let results = guarded(|| session.handle_input(&pending))?;
        for ev in collect(results, &mut out) {
            match ev {
                ClientSessionEvent::ConnectionRequestAccepted => {
                    let r = guarded(|| {
                        session.request_publishing(stream_key.clone(), PublishRequestType::Live)
                    })?;
                    collect(vec![r], &mut out);
                }
                ClientSessionEvent::ConnectionRequestRejected { description } => {
                    return Err(format!("the server refused connect: {description}"));
                }
                ClientSessionEvent::PublishRequestAccepted => {
                    write(io, &mut out, cfg, target.protocol()).await?;
                    return Ok(session);
                }
                ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                    return Err(format!("the server refused publish: {code}"));
                }
                _ => {}
            }
        }
        write(io, &mut out, cfg, target.protocol()).await?;
        let n = io.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection before publishing".into());
        }
        pending = buf[..n].to_vec();
    }
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

/// What one push session keeps between items.
struct Encoder {
    session: ClientSession,
    clock: Clock,
    have_info: bool,
}

impl Encoder {
    /// Encode one hub item into `out`; true when the stream ended.
    fn item(&mut self, item: Item, out: &mut BytesMut) -> Result<bool, String> {
        let session = &mut self.session;
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
    let opened = tokio::time::timeout(cfg.connect_timeout, async {
        let mut io = connect(target, cfg).await?;
        let s = open(&mut io, target, cfg).await?;
        Ok::<_, String>((io, s))
    })
    .await
    .map_err(|_| format!("no answer within {:?}", cfg.connect_timeout))?;
    let (mut io, session) = opened?;
    status.set(PushState::Connected);
    tracing::info!(stream = %uid, output = ?target, "output connected");
    // Joins at the latest keyframe with its codec configuration.
    let mut sub = hub.subscribe(uid, SubscribeOptions { catch_up: false });
    let mut enc = Encoder {
        session,
        clock: Clock::default(),
        have_info: false,
    };
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            r = io.read(&mut buf) => {
                let n = r.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("the destination closed the connection".into());
                }
                let results = guarded(|| enc.session.handle_input(&buf[..n]))?;
                collect(results, &mut out);
                write(&mut io, &mut out, cfg, target.protocol()).await?;
                continue;
            }
        };
        let mut ended = enc.item(item, &mut out)?;
        // Gather what is ready now into the same write.
        while !ended && out.len() < GATHER_BYTES {
            match sub.try_recv() {
                Some(item) => ended = enc.item(item, &mut out)?,
                None => break,
            }
        }
        write(&mut io, &mut out, cfg, target.protocol()).await?;
        if ended {
            let _ = io.shutdown().await;
            return Ok(SessionEnd::StreamEnded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_starts_near_zero_and_keeps_video_increasing() {
        let mut c = Clock::default();
        let v = |dts| Frame::video(dts, dts, false, Bytes::new());
        assert_eq!(c.stamp(&v(900_000)), 1000);
        // Audio a little older than the first keyframe stays positive.
        assert_eq!(c.stamp(&Frame::audio(900_000 - 90 * 20, Bytes::new())), 980);
        // Video frames closer than a millisecond still increase.
        assert_eq!(c.stamp(&v(900_010)), 1001);
        assert_eq!(c.stamp(&v(900_000 + 90 * 33)), 1033);
        assert_eq!(c.now(), 1033);
    }

    #[test]
    fn tags_carry_the_flv_headers_and_skip_captions() {
        let f = Frame::video(0, 0, true, Bytes::from_static(&[1, 2]));
        assert_eq!(&tag(&f).unwrap()[..], &[0x17, 1, 0, 0, 0, 1, 2]);
        let a = Frame::audio(0, Bytes::from_static(&[9]));
        assert_eq!(&tag(&a).unwrap()[..], &[0xAF, 1, 9]);
        let c = Frame {
            track: Track::Captions,
            ..a
        };
        assert!(tag(&c).is_none());
    }
}
