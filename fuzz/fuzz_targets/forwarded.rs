//! Forwarding headers (`Forwarded`, `X-Forwarded-For`) from a trusted proxy
//! on arbitrary text: no panic, and without anything like an address in
//! the headers the client is the peer.
#![no_main]

use std::net::SocketAddr;

use banyan::forwarded::client_from;
use banyan_ingest::net::TrustedProxies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
