//! RTMP peers: a publisher's or player's connection, and the server an
//! output pushes to.

use banyan_ingest::flv::FlvDemux;
use banyan_ingest::rtmp::guard::ChunkGuard;
use banyan_ingest::rtmp::player::{PlayerInput, PlayerSignal};
use banyan_ingest::rtmp::session::{RtmpSession, SessionEvent};
use bytes::{Bytes, BytesMut};

/// Arbitrary peer bytes through the per-connection RTMP input path: the
/// handshake, the chunk guard and the contained protocol library, answering
/// requests as the connection driver does and demuxing media into frames.
///
/// A panic inside the protocol library is contained (the session fails);
/// only a panic that escapes the containment is a finding. Set
/// `BANYAN_FUZZ_PANIC_ABORT=1` to also stop on contained panics, to see what
/// the chunk guard lets through to the library.
pub fn rtmp_session(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut session = RtmpSession::new();
    let mut events = Vec::new();
    let mut demux = FlvDemux::new();
    if mode & 1 == 1 {
        // A complete plain handshake (C0, C1, C2), so the input reaches the
        // chunk layer.
        let mut hs = vec![3u8];
        hs.resize(1 + 2 * 1536, 0);
        if session.input(&hs, &mut events).is_err() {
            return;
        }
    }
    // Reads of varying sizes, chosen by the input.
    let mut step = (mode >> 1) as usize + 1;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        let (read, tail) = rest.split_at(n);
        rest = tail;
        step = step * 7 % 4096 + 1;
        if session.input(read, &mut events).is_err() {
            return;
        }
        for e in events.drain(..) {
            match e {
                SessionEvent::Connect { request_id, .. } => {
                    let _ = session.accept(request_id);
                }
                SessionEvent::Publish { request_id, .. } => {
                    let _ = session.accept(request_id);
                }
                SessionEvent::Play { stream_id, .. } => session.accept_play(stream_id),
                SessionEvent::Video { timestamp, data } => {
                    let _ = demux.video(timestamp, data);
                }
                SessionEvent::Audio { timestamp, data } => {
                    let _ = demux.audio(timestamp, data);
                }
                SessionEvent::PublishFinished | SessionEvent::PlayFinished => {}
            }
        }
        let _: Bytes = session.take_output();
    }
}

/// Arbitrary bytes from a player after `play`: the chunk guard and the
/// reader that answers pings and acknowledgement windows and sees
/// `deleteStream`. The first byte splits the input into reads.
pub fn rtmp_player(data: &[u8]) {
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
}

/// Arbitrary bytes from the RTMP server an output pushes to: the client
/// handshake, the contained protocol library (connect and publish answers,
/// chunk sizes, acknowledgements), then media. A panic inside the library
/// is contained (the session fails); only one that escapes is a finding.
pub fn rtmp_push(data: &[u8]) {
    banyan_egress::push::rtmp::fuzz_server_bytes(data);
}
