//! A live input's `recording` object, in Cloudflare's shape:
//! `{mode, timeoutSeconds, requireSignedURLs, allowedOrigins,
//! hideLiveViewerCount}`. `requireSignedURLs` and `allowedOrigins` are
//! enforced on playback; the other fields are stored and returned.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Entries of `allowedOrigins` at most.
pub const MAX_ORIGINS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Recording {
    pub mode: String,
    pub timeout_seconds: i64,
    #[serde(rename = "requireSignedURLs")]
    pub require_signed_urls: bool,
    pub allowed_origins: Option<Vec<String>>,
    pub hide_live_viewer_count: bool,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            mode: "off".into(),
            timeout_seconds: 0,
            require_signed_urls: false,
            allowed_origins: None,
            hide_live_viewer_count: false,
        }
    }
}

/// The stored object (a column of `{}` or of an unreadable value is the
/// default).
pub fn load(stored: &str) -> Recording {
    serde_json::from_str(stored).unwrap_or_default()
}

fn valid_origin(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let host = o.strip_prefix("*.").unwrap_or(o);
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
}

/// Apply a request's `recording` value to the stored one: the fields given
/// replace the stored ones; each is type-checked (the error names it).
pub fn merge(stored: &str, given: &Value) -> Result<Recording, String> {
    let mut r = load(stored);
    let obj: &Map<String, Value> = given
        .as_object()
        .ok_or_else(|| "recording must be an object".to_string())?;
    for (k, v) in obj {
        let bad = |what: &str| format!("recording.{k} must be {what}");
        match k.as_str() {
            "mode" => match v.as_str() {
                Some(m @ ("off" | "automatic")) => r.mode = m.into(),
                _ => return Err(bad("\"off\" or \"automatic\"")),
            },
            "timeoutSeconds" => match v.as_i64() {
                Some(t) if (0..=86_400).contains(&t) => r.timeout_seconds = t,
                _ => return Err(bad("an integer from 0 to 86400")),
            },
            "requireSignedURLs" => {
                r.require_signed_urls = v.as_bool().ok_or_else(|| bad("a boolean"))?
            }
            "hideLiveViewerCount" => {
                r.hide_live_viewer_count = v.as_bool().ok_or_else(|| bad("a boolean"))?
            }
            "allowedOrigins" => {
                r.allowed_origins = match v {
                    Value::Null => None,
                    Value::Array(list) => {
                        if list.len() > MAX_ORIGINS {
                            return Err(bad(&format!("at most {MAX_ORIGINS} hosts")));
                        }
                        let mut out = Vec::with_capacity(list.len());
                        for o in list {
                            match o.as_str() {
                                Some(o) if valid_origin(o) => out.push(o.to_ascii_lowercase()),
                                _ => {
                                    return Err(bad(
                                        "a list of host names (\"*.example.com\", \"*\")",
                                    ))
                                }
                            }
                        }
                        Some(out)
                    }
                    _ => return Err(bad("a list of host names or null")),
                }
            }
            // Unknown fields are ignored, as elsewhere in the API.
            _ => {}
        }
    }
    Ok(r)
}

/// Whether a browser's `Origin` header (`scheme://host[:port]`) is one of
/// `allowed` (host names, `*.` wildcards for subdomains, `*` for all; an
/// entry with a port must match the port too). An empty list allows all.
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    if allowed.is_empty() || allowed.iter().any(|a| a == "*") {
        return true;
    }
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') || authority.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h.to_string()
            } else {
                authority.clone()
            }
        }
        _ => authority.clone(),
    };
    allowed.iter().any(|a| {
        let matches = |name: &str| match a.strip_prefix("*.") {
            Some(base) => name.len() > base.len() + 1 && name.ends_with(&format!(".{base}")),
            None => name == a,
        };
        matches(&host) || matches(&authority)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_merge_and_errors() {
        assert_eq!(load("{}"), Recording::default());
        let r = merge(
            "{}",
            &json!({"requireSignedURLs": true, "allowedOrigins": ["Example.com"]}),
        )
        .unwrap();
        assert!(r.require_signed_urls);
        assert_eq!(r.allowed_origins, Some(vec!["example.com".to_string()]));
        let stored = serde_json::to_string(&r).unwrap();
        assert!(stored.contains("\"requireSignedURLs\":true"), "{stored}");
        let r2 = merge(&stored, &json!({"mode": "automatic"})).unwrap();
        assert!(r2.require_signed_urls, "fields not given are kept");
        assert_eq!(r2.mode, "automatic");
        for (bad, field) in [
            (json!({"requireSignedURLs": "yes"}), "requireSignedURLs"),
            (json!({"mode": "sometimes"}), "mode"),
            (json!({"timeoutSeconds": -1}), "timeoutSeconds"),
            (json!({"allowedOrigins": "a.com"}), "allowedOrigins"),
            (json!({"allowedOrigins": ["a b"]}), "allowedOrigins"),
            (json!({"hideLiveViewerCount": 1}), "hideLiveViewerCount"),
        ] {
            let e = merge("{}", &bad).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        assert!(merge("{}", &json!([1])).is_err());
    }

    #[test]
    fn origins() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(origin_allowed(&[], "https://x.com"));
        assert!(origin_allowed(&list(&["*"]), "https://x.com"));
        let l = list(&["example.com", "*.cdn.net", "localhost:8080"]);
        assert!(origin_allowed(&l, "https://example.com"));
        assert!(origin_allowed(&l, "http://example.com:8443"));
        assert!(origin_allowed(&l, "https://a.cdn.net"));
        assert!(origin_allowed(&l, "http://localhost:8080"));
        assert!(!origin_allowed(&l, "http://localhost:9090"));
        assert!(!origin_allowed(&l, "https://cdn.net"));
        assert!(!origin_allowed(&l, "https://evil.com"));
        assert!(!origin_allowed(&l, "https://example.com.evil.com"));
        assert!(!origin_allowed(&l, "null"));
    }
}
