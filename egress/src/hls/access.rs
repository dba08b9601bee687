//! Who may play what over HLS: the first path segment of every playback
//! URL names the stream, either by its uid or by a token standing in for it.
//! Egress does not know what a token is: the binary answers through
//! [`PlaybackAccess`].

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Longest first path segment accepted (a uid or a signed token).
pub const MAX_SEGMENT: usize = 2048;

/// Whether `s` can be the first segment of a playback URL: 1 to
/// [`MAX_SEGMENT`] bytes of ASCII letters, digits, `-`, `_` and `.` (a uid,
/// or a JWT: base64url parts joined by dots). Anything else is never looked
/// up, and is safe to write into the watch page.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SEGMENT
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One playback request, as the access check sees it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The first path segment (already checked by [`valid_segment`]).
    pub segment: &'a str,
    /// The request's `Origin` header, when it has one (a browser request).
    pub origin: Option<&'a str>,
    /// The client's address.
    pub client: Option<IpAddr>,
}

/// What the answer's `Access-Control-Allow-Origin` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowOrigin {
    /// `*`: the stream is open to every page.
    Any,
    /// Exactly this origin (with `Vary: Origin`), or no header at all when
    /// `None` (a request without an Origin).
    Only(Option<String>),
}

/// A granted request: the stream's real uid and its CORS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub uid: String,
    pub cors: AllowOrigin,
}

/// Decides every playback request. `Err` carries the status of the refusal
/// (for example 401 for a missing or bad token, 403 for an origin that is
/// not allowed); it must not tell an unknown stream from a guarded one.
pub trait PlaybackAccess: Send + Sync + 'static {
    fn check(&self, req: &AccessRequest<'_>) -> Result<Grant, StatusCode>;
}

/// Every uid plays, from every page (no token is understood).
pub struct OpenAccess;

impl PlaybackAccess for OpenAccess {
    fn check(&self, req: &AccessRequest<'_>) -> Result<Grant, StatusCode> {
        Ok(Grant {
            uid: req.segment.to_string(),
            cors: AllowOrigin::Any,
        })
    }
}

/// The CORS headers of every HLS answer: `*`, unless the handler decided
/// otherwise (an [`AllowOrigin`] in the response extensions).
pub(crate) async fn cors(mut res: Response) -> Response {
    let allow = res.extensions_mut().remove::<AllowOrigin>();
    let h = res.headers_mut();
    match allow {
        None | Some(AllowOrigin::Any) => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        Some(AllowOrigin::Only(origin)) => {
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            if let Some(v) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
            }
        }
    }
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges"),
    );
    res
}

/// The answer to a refused playback request: it never names a uid, nor
/// allows any page to read it.
pub(crate) fn refuse(status: StatusCode) -> Response {
    let text = match status {
        StatusCode::FORBIDDEN => "forbidden\n",
        StatusCode::UNAUTHORIZED => "a valid playback token is required\n",
        _ => "not found\n",
    };
    let mut res = (status, text).into_response();
    res.extensions_mut().insert(AllowOrigin::Only(None));
    res
}

/// Resolve the first path segment of a playback request to a stream and
/// its CORS answer, or the status of the refusal.
pub(crate) fn authorize(
    access: &dyn PlaybackAccess,
    segment: &str,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
) -> Result<(String, AllowOrigin), StatusCode> {
    if !valid_segment(segment) {
        return Err(StatusCode::NOT_FOUND);
    }
    let req = AccessRequest {
        segment,
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        client: client.map(|a| a.ip()),
    };
    match access.check(&req) {
        Ok(g) => Ok((g.uid, g.cors)),
        Err(status) => {
            let reason = if status == StatusCode::FORBIDDEN {
                "forbidden"
            } else {
                "unauthorized"
            };
            metrics::counter!("banyan_hls_requests_refused_total", "reason" => reason).increment(1);
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments() {
        assert!(valid_segment("0123456789abcdef0123456789abcdef"));
        assert!(valid_segment("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_"));
        for bad in ["", "a/b", "a b", "<script>", "a\"b", "%2e"] {
            assert!(!valid_segment(bad), "{bad}");
        }
        assert!(valid_segment(&"a".repeat(MAX_SEGMENT)));
        assert!(!valid_segment(&"a".repeat(MAX_SEGMENT + 1)));
    }
}
