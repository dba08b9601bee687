//! Arbitrary peer bytes through the per-connection RTMP input path: the
//! handshake, the chunk guard and the contained protocol library, answering
//! requests as the connection driver does and demuxing media into frames.
//!
//! A panic inside the protocol library is contained (the session fails);
//! only a panic that escapes the containment is a finding. Set
//! `BANYAN_FUZZ_PANIC_ABORT=1` to also stop on contained panics, to see what
//! the chunk guard lets through to the library.

#![no_main]

use banyan_ingest::flv::FlvDemux;
use banyan_ingest::rtmp::session::{RtmpSession, SessionEvent};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if std::env::var_os("BANYAN_FUZZ_PANIC_ABORT").is_none() {
            // Contained panics are expected; keep the output quiet.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| run(data)
);

fn run(data: &[u8]) {
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
