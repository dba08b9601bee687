//! Framing on the wire: node links, PROXY protocol headers, SRT stream ids.

use banyan_ingest::proxy_protocol::{parse, Parsed};
use banyan_ingest::srt::StreamId;
use banyan_relay::link::framing::{encode_to_bytes, Decoder};

/// The node link's decoder on arbitrary bytes, fed in arbitrary pieces:
/// never panics, and every message it accepts encodes back to a message that
/// decodes the same.
pub fn link_framing(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(rest.len());
    let mut dec = Decoder::new(1 << 16);
    for piece in [&rest[..cut], &rest[cut..]] {
        dec.push(piece);
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => {
                    let wire = encode_to_bytes(&msg);
                    let mut again = Decoder::new(1 << 16);
                    again.push(&wire);
                    assert_eq!(again.next_message(), Ok(Some(msg)));
                    assert_eq!(again.buffered(), 0);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// PROXY protocol header parser on arbitrary bytes: no panic, a complete
/// header never claims more bytes than it was given, and feeding the same
/// bytes one more byte at a time agrees with the whole.
pub fn proxy_protocol(data: &[u8]) {
    match parse(data) {
        Ok(Parsed::Complete(h)) => {
            assert!(h.len <= data.len());
            assert!(h.len >= 15);
            assert_eq!(parse(&data[..h.len]), Ok(Parsed::Complete(h)));
        }
        Ok(Parsed::Incomplete(n)) => assert!(n >= 1),
        Err(_) => {}
    }
}

/// SRT stream id parser on arbitrary strings: no panic, and what it accepts
/// names a well-formed live input.
pub fn srt_streamid(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(id) = StreamId::parse(&s) {
        let uid = id.uid();
        assert!(!uid.is_empty() && uid.len() <= 128);
        assert!(uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
