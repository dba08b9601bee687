//! The node link's decoder on arbitrary bytes, fed in arbitrary pieces:
//! never panics, and every message it accepts encodes back to a message that
//! decodes the same.
#![no_main]

use banyan_relay::link::framing::{encode_to_bytes, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
