//! Media bodies with single `Range: bytes=` requests honoured.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub(crate) const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A media body, honouring a single `Range: bytes=` request.
pub(crate) fn media_body(data: Bytes, ctype: &'static str, headers: &HeaderMap) -> Response {
    let len = data.len() as u64;
    let base = [
        (header::CONTENT_TYPE, ctype),
        (header::CACHE_CONTROL, CACHE_IMMUTABLE),
        (header::ACCEPT_RANGES, "bytes"),
    ];
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return (base, data).into_response();
    };
    match parse_range(range, len) {
        RangeAnswer::Full => (base, data).into_response(),
        RangeAnswer::Part(a, b) => {
            let mut res = (base, data.slice(a as usize..=b as usize)).into_response();
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            res
        }
        RangeAnswer::Unsatisfiable => {
            let mut res = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            res
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// Ignore the header (malformed or several ranges): send everything.
    Full,
    /// Inclusive byte range.
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(v: &str, len: u64) -> RangeAnswer {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = if a.is_empty() {
        // The last `b` bytes.
        match b.parse::<u64>() {
            Ok(0) => return RangeAnswer::Unsatisfiable,
            Ok(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            Err(_) => return RangeAnswer::Full,
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeAnswer::Full;
        };
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(len.saturating_sub(1)),
                _ => return RangeAnswer::Full,
            }
        };
        (start, end)
    };
    if len == 0 || parsed.0 >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Part(parsed.0, parsed.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAnswer::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAnswer::Part(90, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeAnswer::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAnswer::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeAnswer::Full);
        assert_eq!(parse_range("bytes=9-1", 100), RangeAnswer::Full);
        assert_eq!(parse_range("bytes=x-", 100), RangeAnswer::Full);
    }
}
