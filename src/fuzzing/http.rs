//! What reaches the HTTP side: API bodies, GraphQL requests, playback
//! tokens, certificates, forwarding headers.

use std::net::SocketAddr;
use std::sync::OnceLock;

use banyan_egress::hls::access::valid_segment;
use banyan_egress::hls::session::SessionKey;
use banyan_ingest::net::TrustedProxies;
use base64::Engine as _;

use crate::analytics::graphql::check_request;
use crate::api::signing::{token_claims, TokenBody};
use crate::api::{check_body, decode_json, BodyKind};
use crate::forwarded::client_from;
use crate::playback::{jwt, recording};

/// The JSON bodies of the HTTP API (live inputs, accounts, ingest domains
/// with their PEM certificates and keys, API tokens, webhook URLs,
/// simulcast outputs with their destination URLs), decoded and checked as
/// the endpoints do: no panic, and every refusal is a 400 with a reason (or
/// a 413 for a live input's `meta` over its size limit), never a
/// server error. The first byte picks the endpoint, the rest is the body.
pub fn api_bodies(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = match pick % 7 {
        0 => BodyKind::LiveInput,
        1 => BodyKind::Account,
        2 => BodyKind::Domain,
        3 => BodyKind::Token,
        4 => BodyKind::Webhook,
        5 => BodyKind::Output,
        _ => BodyKind::OutputUpdate,
    };
    if let Err(e) = check_body(kind, body) {
        let s = e.status().as_u16();
        assert!(
            s == 400 || (s == 413 && kind == BodyKind::LiveInput),
            "{kind:?}: {e:?}"
        );
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The body of `POST /client/v4/graphql`: JSON, GraphQL syntax, validation,
/// the depth, complexity, size and analytics-field limits and the analytics
/// arguments, run as the endpoint runs them (with no store behind): no
/// panic, and the answer is 200 or 400, never a server error.
pub fn graphql_request(data: &[u8]) {
    let status = runtime().block_on(check_request("acct", data));
    assert!(
        status.as_u16() == 200 || status.as_u16() == 400,
        "status {status}"
    );
}

/// What a viewer or a platform sends for signed playback: a token in the
/// first path segment of a playback URL (parsed as a JWT with its access
/// rules), an HLS session id, the token endpoint's body and a live input's
/// `recording` object. No panic; a refused body is a 400 with a reason.
/// The first byte picks the parser, the rest is the input.
pub fn playback_tokens(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            let s = String::from_utf8_lossy(rest);
            if valid_segment(&s) {
                if let Ok(p) = jwt::parse(&s) {
                    let _ = jwt::in_time(&p.claims, 1_700_000_000);
                    let _ = jwt::allowed(&p.claims.rules, "127.0.0.1".parse().ok());
                }
            }
        }
        1 => {
            let s = String::from_utf8_lossy(rest);
            let _ = SessionKey::new(b"fuzz").verify("0123456789abcdef0123456789abcdef", &s);
        }
        2 => {
            let checked = decode_json::<TokenBody>(rest)
                .and_then(|b| token_claims(&b, "uid", "kid", 1_700_000_000));
            if let Err(e) = checked {
                assert_eq!(e.status().as_u16(), 400, "{e:?}");
            }
        }
        _ => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
                if let Ok(r) = recording::merge("{}", &v) {
                    for o in r.allowed_origins.unwrap_or_default() {
                        let _ = recording::origin_allowed(&[o], "https://a.example:8443");
                    }
                }
            }
        }
    }
}

/// What an ACME server sends back as a certificate chain (PEM), read for
/// its validity dates, and what an account uploads (checked as the API
/// does): no panic on any bytes. Raw bytes are tried both as PEM text and
/// as the DER inside a PEM block.
pub fn acme_certs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::tls::cert_validity(&text);
    let wrapped = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(data)
    );
    if let Some((from, to)) = crate::tls::cert_validity(&wrapped) {
        let _ = to.saturating_sub(from);
    }
    let _ = crate::tls::validate_domain_cert("push.example.test", &wrapped, &text);
}

/// Forwarding headers (`Forwarded`, `X-Forwarded-For`) from a trusted proxy
/// on arbitrary text: no panic, and without anything like an address in
/// the headers the client is the peer.
pub fn forwarded(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (fwd, xff) = text.split_once('\n').unwrap_or((&text, ""));
    let trusted = TrustedProxies::parse_list("127.0.0.1,10.0.0.0/8").unwrap();
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let forwarded: Vec<&str> = if fwd.is_empty() { vec![] } else { vec![fwd] };
    let client = client_from(peer, &trusted, &forwarded, &[xff]);
    if !text.bytes().any(|b| b.is_ascii_hexdigit()) {
        // Nothing that could be an address: the peer it is.
        assert_eq!(client, peer);
    }
}

/// A request head read ahead by the listener, on arbitrary bytes: no
/// panic; what is taken for an answer past hyper is one whole `GET` or
/// `HEAD` head over HTTP/1.1 in origin form that names no body, and
/// taking it again gives the same request.
pub fn http_head(data: &[u8]) {
    let Some(get) = crate::direct::parse(data) else {
        return;
    };
    let req = &get.request;
    assert!(req.method() == ::http::Method::GET || req.method() == ::http::Method::HEAD);
    assert_eq!(req.version(), ::http::Version::HTTP_11);
    assert!(req.uri().path().starts_with('/'));
    assert!(data.ends_with(b"\n"), "a head ends with its empty line");
    for name in ["content-length", "transfer-encoding", "upgrade", "expect"] {
        assert!(!req.headers().contains_key(name), "{name} taken");
    }
    let again = crate::direct::parse(data).expect("taken once, taken again");
    assert_eq!(again.request.uri(), req.uri());
    assert_eq!(again.request.headers(), req.headers());
    assert_eq!(again.close, get.close);
}
