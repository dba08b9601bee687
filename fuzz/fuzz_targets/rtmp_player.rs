//! Arbitrary bytes from a player after `play`: the chunk guard and the
//! reader that answers pings and acknowledgement windows and sees
//! `deleteStream`. The first byte splits the input into reads.

#![no_main]

use banyan_ingest::rtmp::guard::ChunkGuard;
use banyan_ingest::rtmp::player::{PlayerInput, PlayerSignal};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut player = PlayerInput::new(ChunkGuard::new(), 1 << 20);
    let mut out = BytesMut::new();
    for (reads, read) in rest.chunks(step).enumerate() {
        match player.input(read, &mut out) {
            Ok(PlayerSignal::Continue) => {}
            Ok(PlayerSignal::Stop) | Err(_) => return,
        }
        // Answers are bounded by what came in: a ping response (18 bytes)
        // per ping request (7 bytes at least), one acknowledgement (16
        // bytes) per read at most.
        let bound = 3 * rest.len() + 16 * (reads + 1);
        assert!(out.len() <= bound, "{} answer bytes", out.len());
    }
});
