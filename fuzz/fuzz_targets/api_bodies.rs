//! The JSON bodies of the HTTP API (live inputs, accounts, ingest domains
//! with their PEM certificates and keys, API tokens, webhook URLs,
//! simulcast outputs with their destination URLs), decoded and checked as
//! the endpoints do: no panic, and every refusal is a 400 with a reason (or
//! a 413 for a live input's `meta` over its size limit), never a
//! server error. The first byte picks the endpoint, the rest is the body.
#![no_main]

use banyan::api::{check_body, BodyKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
