//! What a viewer or a platform sends for signed playback: a token in the
//! first path segment of a playback URL (parsed as a JWT with its access
//! rules), an HLS session id, the token endpoint's body and a live input's
//! `recording` object. No panic; a refused body is a 400 with a reason.
//! The first byte picks the parser, the rest is the input.
#![no_main]

use banyan::api::decode_json;
use banyan::api::signing::{token_claims, TokenBody};
use banyan::playback::{jwt, recording};
use banyan_egress::hls::access::valid_segment;
use banyan_egress::hls::session::SessionKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
