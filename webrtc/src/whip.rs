//! The WHIP resource: `POST /<secret>/webRTC/publish` (the input's
//! `webRTC.url`, an SDP offer that sends H.264 and Opus) answers 201 with
//! the answer and a `Location` that `DELETE` ends.
//!
//! The secret is the input's WHIP secret, distinct from its RTMP key and
//! SRT passphrase; a wrong one counts against the client address in the
//! same failed-attempt limiter as RTMP and SRT.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use banyan_egress::hls::access::valid_segment;
use banyan_egress::hls::AllowOrigin;
use banyan_ingest::events::IngestEvent;
use banyan_relay::StreamState;

use crate::demux::Sessions;
use crate::http::{created, negotiate, refusal, refused};
use crate::publish::PublishSession;

/// `POST <webRTC.url>`.
pub(crate) async fn offer(
    State(sessions): State<Arc<Sessions>>,
    Path(secret): Path<String>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ingest) = sessions.ctx.ingest.clone() else {
        return refused(StatusCode::NOT_FOUND, "not_found", "not found\n");
    };
    let ip = client
        .map(|Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if !ingest.admission.may_try(ip, "whip") {
        return refused(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed attempts\n",
        );
    }
    let grant = valid_segment(&secret)
        .then(|| ingest.keys.lookup_whip(&secret))
        .flatten();
    let Some(grant) = grant else {
        ingest.admission.failed(ip);
        return refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown publish secret\n",
        );
    };
    if !grant.enabled {
        ingest.events.report(IngestEvent::Refused {
            uid: grant.uid,
            reason: "disabled",
        });
        return refused(StatusCode::FORBIDDEN, "disabled", "the input is disabled\n");
    }
    if ingest.hub.state(&grant.uid) == StreamState::Live {
        ingest.events.report(IngestEvent::Refused {
            uid: grant.uid,
            reason: "busy",
        });
        return refused(
            StatusCode::CONFLICT,
            "busy",
            "the input already has a publisher\n",
        );
    }
    if let Err(r) = sessions.check(ip) {
        return refusal(r);
    }
    let (mut rtc, answer) = match negotiate(&sessions, &headers, &body) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    // The answer must receive H.264: an m=video line that is not inactive.
    if !receives_video(&answer) {
        return refused(
            StatusCode::BAD_REQUEST,
            "no_video",
            "the offer sends no H.264 video\n",
        );
    }
    let audio = answer.contains("opus/48000");
    let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    let reg = match sessions.register(ip, &ufrag) {
        Ok(r) => r,
        Err(r) => return refusal(r),
    };
    ingest.admission.forgive(ip);
    let location = format!("/{secret}/webRTC/publish/{}", reg.id);
    tracing::info!(stream = %grant.uid, client = %ip, "WHIP publisher");
    tokio::spawn(
        PublishSession {
            sessions: sessions.clone(),
            reg,
            uid: grant.uid,
            rtc,
            ingest,
            audio,
        }
        .run(),
    );
    created(answer, &location, &AllowOrigin::Any)
}

/// Whether an SDP answer has a video section that receives.
fn receives_video(answer: &str) -> bool {
    let mut in_video = false;
    let mut receives = false;
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            if in_video && receives {
                return true;
            }
            in_video = m.starts_with("video") && !m.starts_with("video 0 ");
            receives = false;
        } else if in_video && matches!(line.trim(), "a=recvonly" | "a=sendrecv") {
            receives = true;
        }
    }
    in_video && receives
}

#[cfg(test)]
mod tests {
    use super::receives_video;

    #[test]
    fn video_must_be_received() {
        let ok = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(receives_video(ok));
        let inactive = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n";
        assert!(!receives_video(inactive));
        let rejected = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n";
        assert!(!receives_video(rejected));
        let sends = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\nm=audio 9 X 111\r\na=recvonly\r\n";
        assert!(!receives_video(sends));
    }
}
