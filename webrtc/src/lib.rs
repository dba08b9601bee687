//! WebRTC: WHEP viewers of the hub's live streams, and WHIP publishers.
//!
//! * One UDP socket serves every session ([`demux`]): a datagram goes to the
//!   session whose ICE username it names (STUN), or to the session that
//!   remote address was bound to; anything else is dropped and counted.
//! * Each session is a str0m [`str0m::Rtc`] (sans-IO: ICE-lite, DTLS-SRTP,
//!   RTP/RTCP) driven by one small task ([`session`]) that subscribes to the
//!   hub like any other viewer: it starts on the cached keyframe, a slow
//!   viewer skips ahead as the hub decides, and a PLI or FIR from the browser
//!   resubscribes at the hub's latest keyframe.
//! * H.264 passes through untouched ([`media`]): AVCC NAL units become Annex
//!   B for str0m's RFC 6184 packetizer, SPS/PPS go ahead of each keyframe.
//! * The HTTP side ([`http`]): `POST /<uid or token>/webRTC/play` with an SDP
//!   offer answers 201 with the SDP answer and a `Location` that `DELETE`
//!   ends; authorization is the one HLS playback uses.
//! * WHIP ([`whip`], [`publish`]): `POST /<secret>/webRTC/publish` takes a
//!   publisher's offer; its H.264 goes to the hub as AVCC with the SPS/PPS
//!   as configuration, its Opus becomes AAC once ([`to_aac`]), and captions
//!   in the SEI flow as from any ingest. Keyframes are asked for (PLI)
//!   every two seconds, since browsers send them only when asked.

pub mod audio;
pub mod captions;
pub mod demux;
pub mod http;
pub mod media;
mod publish;
mod session;
pub mod to_aac;
mod whip;
pub mod whip_media;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use banyan_egress::hls::PlaybackAccess;
use banyan_relay::views::Views;
use banyan_relay::Hub;
use tokio_util::sync::CancellationToken;

pub use demux::Sessions;

/// Errors of the WebRTC crate.
#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("binding UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the address {0} cannot be announced as a candidate")]
    Candidate(IpAddr),
}

/// Tunables of WebRTC playback.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The one UDP address of every session.
    pub bind: SocketAddr,
    /// The address candidates announce (`--webrtc-public-ip`); else the
    /// bound one (127.0.0.1 when bound to every interface).
    pub public_ip: Option<IpAddr>,
    /// Sessions at most, in all.
    pub max_sessions: usize,
    /// Sessions at most per client address.
    pub max_per_address: usize,
    /// A session whose peer has not connected by then ends.
    pub connect_timeout: Duration,
    /// Datagrams queued at most per session before new ones are dropped.
    pub queue: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8443)),
            public_ip: None,
            max_sessions: 1000,
            max_per_address: 16,
            connect_timeout: Duration::from_secs(15),
            queue: 256,
        }
    }
}

/// What the WebRTC subsystem needs of the node.
#[derive(Clone)]
pub struct Context {
    pub hub: Arc<Hub>,
    pub views: Arc<Views>,
    /// The playback authorization HLS uses (keys, signed tokens).
    pub access: Arc<dyn PlaybackAccess>,
    pub shutdown: CancellationToken,
    /// Streams not in the local hub that this node can obtain (a cluster
    /// pulls them for a waiting subscriber): an offer for one is answered,
    /// and media flows once the stream arrives. `None`: only local streams.
    pub fetchable: Option<banyan_egress::hls::Fetchable>,
    /// Where WHIP publishers go (keys, hub, captions, publish outcomes);
    /// `None`: no WHIP here (`webRTC.url` answers 404).
    pub ingest: Option<banyan_ingest::Context>,
    /// The captions channels present per stream (a viewer's data channel
    /// decodes the one HLS's WebVTT takes).
    pub captions: Arc<banyan_captions::Registry>,
}

/// The bound socket, before the node's context exists.
pub struct Bound {
    cfg: WebRtcConfig,
    socket: tokio::net::UdpSocket,
    announce: SocketAddr,
}

impl Bound {
    /// The bound UDP address (the real port when the settings said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap_or(self.announce)
    }

    /// Start serving: read the socket, take offers.
    pub fn start(self, ctx: Context) -> WebRtc {
        WebRtc {
            sessions: Sessions::start(self.cfg, self.socket, self.announce, ctx),
        }
    }
}

/// The running subsystem: its socket, its sessions.
pub struct WebRtc {
    sessions: Arc<Sessions>,
}

impl WebRtc {
    /// Bind the UDP socket (port 0 allowed).
    pub async fn bind(cfg: WebRtcConfig) -> Result<Bound, WebRtcError> {
        let (socket, announce) = Sessions::bind(&cfg).await?;
        Ok(Bound {
            cfg,
            socket,
            announce,
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.sessions.local_addr()
    }

    /// The WHEP endpoints.
    pub fn router(&self) -> axum::Router {
        http::router(self.sessions.clone())
    }

    /// Sessions now open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
