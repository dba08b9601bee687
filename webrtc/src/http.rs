//! The WHEP resource: `POST /<uid or token>/webRTC/play` (an SDP offer in,
//! 201 with the answer and a `Location` out), `DELETE` on that location
//! ends the session, `OPTIONS` answers browsers' preflights; and what WHIP
//! ([`crate::whip`]) shares with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Extension, Router};
use banyan_egress::hls::access::valid_segment;
use banyan_egress::hls::{AccessRequest, AllowOrigin};
use banyan_relay::StreamState;
use str0m::change::SdpOffer;
use str0m::{Candidate, Rtc};

use crate::demux::{Refusal, Sessions};
use crate::session::Session;

/// Video packets each session keeps for sending and resending (str0m's
/// default is 1,000): it must hold the largest frame's packets (512 x
/// ~1,200 bytes: a 600 KB keyframe), and holds about 2 s of a 2.5 Mbit/s
/// stream for NACKs, a few round trips. Most of a viewer's memory.
const VIDEO_SEND_BUFFER: usize = 512;

/// Longest SDP offer accepted.
pub const MAX_OFFER: usize = 32 * 1024;

/// The WHEP routes.
pub fn router(sessions: Arc<Sessions>) -> Router {
    Router::new()
        .route("/{segment}/webRTC/play", post(offer).options(preflight))
        .route(
            "/{segment}/webRTC/play/{session}",
            delete(end).options(preflight),
        )
        .route(
            "/{segment}/webRTC/publish",
            post(crate::whip::offer).options(preflight),
        )
        .route(
            "/{segment}/webRTC/publish/{session}",
            delete(end).options(preflight),
        )
        .with_state(sessions)
}

pub(crate) fn refused(status: StatusCode, reason: &'static str, text: &'static str) -> Response {
    metrics::counter!("banyan_webrtc_offers_refused_total", "reason" => reason).increment(1);
    let mut res = (status, text).into_response();
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

fn cors(h: &mut HeaderMap, allow: &AllowOrigin) {
    match allow {
        AllowOrigin::Any => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        AllowOrigin::Only(origin) => {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            if let Some(v) = origin
                .as_deref()
                .and_then(|o| HeaderValue::from_str(o).ok())
            {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
        }
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
}

pub(crate) async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    res
}

async fn offer(
    State(sessions): State<Arc<Sessions>>,
    Path(segment): Path<String>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let client = client.map(|Extension(ConnectInfo(a))| a);
    if !valid_segment(&segment) {
        return refused(StatusCode::NOT_FOUND, "not_found", "not found\n");
    }
    let req = AccessRequest {
        segment: &segment,
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        client: client.map(|a| a.ip()),
    };
    let grant = match sessions.ctx.access.check(&req) {
        Ok(g) => g,
        Err(StatusCode::FORBIDDEN) => {
            return refused(StatusCode::FORBIDDEN, "forbidden", "forbidden\n")
        }
        Err(status) => {
            return refused(
                status,
                "unauthorized",
                "a valid playback token is required\n",
            )
        }
    };
    let here = sessions.ctx.hub.state(&grant.uid) != StreamState::Idle;
    if !here
        && !sessions
            .ctx
            .fetchable
            .as_ref()
            .is_some_and(|f| f(&grant.uid))
    {
        return refused(
            StatusCode::NOT_FOUND,
            "not_live",
            "the stream is not live\n",
        );
    }
    let ip = client
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    if let Err(r) = sessions.check(ip) {
        return refusal(r);
    }
    let (mut rtc, answer) = match negotiate(&sessions, &headers, &body) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    if !answer.lines().any(|l| l.starts_with("m=video")) {
        return refused(
            StatusCode::BAD_REQUEST,
            "no_video",
            "the offer has no H.264 video to receive\n",
        );
    }
    let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    let reg = match sessions.register(ip, &ufrag) {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    let location = format!("/{segment}/webRTC/play/{}", reg.id);
    tracing::info!(stream = %grant.uid, client = ?client, "WHEP viewer");
    tokio::spawn(
        Session {
            sessions: sessions.clone(),
            reg,
            uid: grant.uid,
            rtc,
        }
        .run(),
    );
    created(answer, &location, &grant.cors)
}

/// Check a WHEP or WHIP offer, make the session's state machine and
/// answer the offer: the machine and the SDP answer.
pub(crate) fn negotiate(
    sessions: &Sessions,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Rtc, String), Box<Response>> {
    let offer = sdp_offer(headers, body)?;
    let mut rtc = new_rtc(sessions)?;
    match rtc.sdp_api().accept_offer(offer) {
        Ok(a) => Ok((rtc, a.to_sdp_string())),
        Err(e) => {
            tracing::debug!(error = %e, "WebRTC offer refused");
            Err(Box::new(refused(
                StatusCode::BAD_REQUEST,
                "bad_offer",
                "the offer cannot be answered\n",
            )))
        }
    }
}

/// The offer of a WHEP or WHIP request: `application/sdp`, at most
/// [`MAX_OFFER`] bytes, and SDP.
fn sdp_offer(headers: &HeaderMap, body: &[u8]) -> Result<SdpOffer, Box<Response>> {
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
        });
    if !sdp_type {
        return Err(Box::new(refused(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "the offer must be application/sdp\n",
        )));
    }
    if body.len() > MAX_OFFER {
        return Err(Box::new(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the offer is too large\n",
        )));
    }
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| SdpOffer::from_sdp_string(s).ok())
        .ok_or_else(|| {
            Box::new(refused(
                StatusCode::BAD_REQUEST,
                "bad_sdp",
                "the offer is not SDP\n",
            ))
        })
}

/// A session's state machine: ICE-lite, H.264 and Opus only, the node's
/// one candidate.
fn new_rtc(sessions: &Sessions) -> Result<Rtc, Box<Response>> {
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .set_ice_lite(true)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .set_send_buffer_video(VIDEO_SEND_BUFFER)
        .build(Instant::now());
    let Ok(candidate) = Candidate::host(sessions.announce, "udp") else {
        return Err(Box::new(refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "candidate",
            "no candidate\n",
        )));
    };
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

/// 201 with the SDP answer and the session's `Location`.
pub(crate) fn created(answer: String, location: &str, allow: &AllowOrigin) -> Response {
    let mut res = (StatusCode::CREATED, answer).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    cors(h, allow);
    res
}

pub(crate) fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Full => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "full",
            "too many WebRTC sessions\n",
        ),
        Refusal::PerAddress => refused(
            StatusCode::TOO_MANY_REQUESTS,
            "per_address",
            "too many WebRTC sessions from this address\n",
        ),
    }
}

pub(crate) async fn end(
    State(sessions): State<Arc<Sessions>>,
    Path((_segment, session)): Path<(String, String)>,
) -> Response {
    let mut res = if sessions.end(&session) {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such session\n").into_response()
    };
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}
