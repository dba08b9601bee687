//! The JSON bodies of the HTTP API (live inputs, accounts, ingest domains
//! with their PEM certificates and keys, API tokens, simulcast outputs
//! with their destination URLs), decoded and checked
//! as the endpoints do: no panic, and every refusal is a 400 with a reason, never a
//! server error. The first byte picks the endpoint, the rest is the body.
#![no_main]

use banyan::api::{check_body, BodyKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let kind = match pick % 6 {
        0 => BodyKind::LiveInput,
        1 => BodyKind::Account,
        2 => BodyKind::Domain,
        3 => BodyKind::Token,
        4 => BodyKind::Output,
        _ => BodyKind::OutputUpdate,
    };
    if let Err(e) = check_body(kind, body) {
        assert_eq!(e.status().as_u16(), 400, "{kind:?}: {e:?}");
    }
});
