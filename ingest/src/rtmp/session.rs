//! The sans-IO core of one RTMP connection: handshake, chunk stream and
//! commands, with the protocol library contained.
//!
//! Every byte from the peer first passes the [`ChunkGuard`], and every call
//! into `rml_rtmp` runs under `catch_unwind`: a panic inside the library
//! fails this session (and so closes this one connection) with a reason,
//! it never takes down the node. After a failure every call returns
//! [`SessionError::Failed`].
//!
//! Poll contract: call [`RtmpSession::input`] with each read; after it (and
//! after [`RtmpSession::accept`], [`RtmpSession::refuse`] or
//! [`RtmpSession::status`]) write out [`RtmpSession::take_output`] in order.

use std::panic::{catch_unwind, AssertUnwindSafe};

use banyan_egress::rtmp::{
    write_command, write_data, write_status, write_user_control, Amf, ChunkWriter, UC_STREAM_BEGIN,
};
use bytes::{Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

use super::guard::{ChunkGuard, GuardError};

/// The chunk size this side announces (and frames its own messages with).
pub const CHUNK_SIZE: u32 = 4096;

/// What the connection driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// `connect` on an application name; answer with accept or refuse.
    Connect { request_id: u32, app: String },
    /// `publish` with a stream key (query string removed).
    Publish { request_id: u32, key: String },
    /// `play` with a stream key (query string removed).
    Play {
        request_id: u32,
        key: String,
        stream_id: u32,
    },
    /// A video message (FLV video tag payload) of the publishing stream.
    Video { timestamp: u32, data: Bytes },
    /// An audio message (FLV audio tag payload) of the publishing stream.
    Audio { timestamp: u32, data: Bytes },
    /// The client stopped publishing (FCUnpublish/deleteStream/closeStream).
    PublishFinished,
    /// The client stopped playing.
    PlayFinished,
}

/// Why a session failed. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The input broke a bound or a rule of the chunk guard.
    #[error("refused input: {0}")]
    Guard(#[from] GuardError),
    /// The RTMP handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The chunk stream or a message could not be parsed.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The protocol library panicked on this input.
    #[error("protocol library panicked: {0}")]
    Panic(String),
    /// An earlier call failed; the session is unusable.
    #[error("session already failed")]
    Failed,
}

enum Stage {
    Handshake(Box<Handshake>),
    Active(Box<ServerSession>),
    Failed,
}

/// One RTMP connection's protocol state.
pub struct RtmpSession {
    stage: Stage,
    guard: ChunkGuard,
    writer: ChunkWriter,
    out: BytesMut,
}

impl Default for RtmpSession {
    fn default() -> Self {
        RtmpSession::new()
    }
}

fn panic_reason(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Strip a query string from a stream key (`key?param=x`).
fn clean_key(key: &str) -> String {
    key.split('?').next().unwrap_or_default().to_string()
}

impl RtmpSession {
    pub fn new() -> RtmpSession {
        RtmpSession {
            stage: Stage::Handshake(Box::new(Handshake::new(PeerType::Server))),
            guard: ChunkGuard::new(),
            writer: ChunkWriter::new(CHUNK_SIZE as usize),
            out: BytesMut::new(),
        }
    }

    /// True once the handshake completed.
    pub fn established(&self) -> bool {
        matches!(self.stage, Stage::Active(_))
    }

    /// Bytes to send to the peer, in order.
    pub fn take_output(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Run `f` on the library session, containing panics and errors.
    fn with_server<T>(
        &mut self,
        f: impl FnOnce(&mut ServerSession) -> Result<T, String>,
    ) -> Result<T, SessionError> {
        let Stage::Active(server) = &mut self.stage else {
            return Err(SessionError::Failed);
        };
        let r = catch_unwind(AssertUnwindSafe(|| f(server)));
        let err = match r {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => SessionError::Protocol(e),
            Err(p) => SessionError::Panic(panic_reason(p)),
        };
        self.stage = Stage::Failed;
        Err(err)
    }

    /// Feed bytes read from the peer; events are appended to `events`.
    pub fn input(
        &mut self,
        data: &[u8],
        events: &mut Vec<SessionEvent>,
    ) -> Result<(), SessionError> {
        if matches!(self.stage, Stage::Failed) {
            return Err(SessionError::Failed);
        }
        if let Stage::Handshake(hs) = &mut self.stage {
            let r = catch_unwind(AssertUnwindSafe(|| hs.process_bytes(data)));
            let rest = match r {
                Ok(Ok(HandshakeProcessResult::InProgress { response_bytes })) => {
                    self.out.extend_from_slice(&response_bytes);
                    return Ok(());
                }
                Ok(Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                })) => {
                    self.out.extend_from_slice(&response_bytes);
                    remaining_bytes
                }
                Ok(Err(e)) => {
                    self.stage = Stage::Failed;
                    return Err(SessionError::Handshake(e.to_string()));
                }
                Err(p) => {
                    self.stage = Stage::Failed;
                    return Err(SessionError::Panic(panic_reason(p)));
                }
            };
            let mut config = ServerSessionConfig::new();
            config.chunk_size = CHUNK_SIZE;
            let r = catch_unwind(AssertUnwindSafe(|| ServerSession::new(config)));
            let results = match r {
                Ok(Ok((server, results))) => {
                    self.stage = Stage::Active(Box::new(server));
                    results
                }
                Ok(Err(e)) => {
                    self.stage = Stage::Failed;
                    return Err(SessionError::Protocol(e.to_string()));
                }
                Err(p) => {
                    self.stage = Stage::Failed;
                    return Err(SessionError::Panic(panic_reason(p)));
                }
            };
            self.handle_results(results, events);
            if rest.is_empty() {
                return Ok(());
            }
            return self.chunks(&rest, events);
        }
        self.chunks(data, events)
    }

    fn chunks(&mut self, data: &[u8], events: &mut Vec<SessionEvent>) -> Result<(), SessionError> {
        if let Err(e) = self.guard.check(data) {
            self.stage = Stage::Failed;
            return Err(e.into());
        }
        let results = self.with_server(|s| s.handle_input(data).map_err(|e| e.to_string()))?;
        self.handle_results(results, events);
        Ok(())
    }

    fn handle_results(
        &mut self,
        results: Vec<ServerSessionResult>,
        events: &mut Vec<SessionEvent>,
    ) {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(e) => self.event(e, events),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    fn event(&mut self, e: ServerSessionEvent, events: &mut Vec<SessionEvent>) {
        match e {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => events.push(SessionEvent::Connect {
                request_id,
                app: app_name.split('?').next().unwrap_or_default().to_string(),
            }),
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => events.push(SessionEvent::Publish {
                request_id,
                key: clean_key(&stream_key),
            }),
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                stream_key,
                stream_id,
                ..
            } => events.push(SessionEvent::Play {
                request_id,
                key: clean_key(&stream_key),
                stream_id,
            }),
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => events.push(SessionEvent::Video {
                timestamp: timestamp.value,
                data,
            }),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => events.push(SessionEvent::Audio {
                timestamp: timestamp.value,
                data,
            }),
            ServerSessionEvent::PublishStreamFinished { .. } => {
                events.push(SessionEvent::PublishFinished)
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                events.push(SessionEvent::PlayFinished)
            }
            ServerSessionEvent::UnhandleableAmf0Command {
                command_name,
                transaction_id,
                ..
            } => self.unhandled_command(&command_name, transaction_id, events),
            _ => {}
        }
    }

    /// Answer the commands encoders send around publish and play the way
    /// RTMP servers do: a `_result` where the client waits for one.
    fn unhandled_command(&mut self, name: &str, txn: f64, events: &mut Vec<SessionEvent>) {
        match name {
            // A transaction id of 0 asks for no answer.
            "releaseStream" | "FCPublish" | "_checkbw" | "getStreamLength" | "FCSubscribe"
                if txn != 0.0 =>
            {
                let args: &[Amf<'_>] = if name == "getStreamLength" {
                    &[Amf::Number(0.0)]
                } else {
                    &[]
                };
                write_command(&self.writer, &mut self.out, 0, "_result", txn, args);
            }
            "FCUnpublish" => {
                if txn != 0.0 {
                    write_command(&self.writer, &mut self.out, 0, "_result", txn, &[]);
                }
                events.push(SessionEvent::PublishFinished);
            }
            _ => {}
        }
    }

    /// Accept a connect, publish or play request.
    pub fn accept(&mut self, request_id: u32) -> Result<(), SessionError> {
        let results =
            self.with_server(|s| s.accept_request(request_id).map_err(|e| e.to_string()))?;
        let mut ignored = Vec::new();
        self.handle_results(results, &mut ignored);
        Ok(())
    }

    /// Accept a play request on message stream `stream_id`.
    ///
    /// Answered here rather than by the library: its answer carries data
    /// messages (`|RtmpSampleAccess`, `NetStream.Data.Start`) stamped with
    /// the session's clock, which ffmpeg-based players turn into extra
    /// subtitle and data streams and then probe for seconds. Ours are what
    /// players expect: Reset, StreamBegin, Start, and `|RtmpSampleAccess` at
    /// time 0. The library is not told; the request stays pending there,
    /// which only means it raises no `PlayStreamFinished` (the driver sees
    /// the socket close instead).
    pub fn accept_play(&mut self, stream_id: u32) {
        if !self.established() {
            return;
        }
        let w = self.writer;
        let out = &mut self.out;
        write_status(
            &w,
            out,
            stream_id,
            "status",
            "NetStream.Play.Reset",
            "Playing and resetting",
        );
        write_user_control(&w, out, UC_STREAM_BEGIN, stream_id);
        write_status(
            &w,
            out,
            stream_id,
            "status",
            "NetStream.Play.Start",
            "Started playing",
        );
        write_data(
            &w,
            out,
            stream_id,
            &[
                Amf::Str("|RtmpSampleAccess"),
                Amf::Bool(true),
                Amf::Bool(true),
            ],
        );
    }

    /// Refuse a connect request (answered with `_error`).
    pub fn refuse(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
    ) -> Result<(), SessionError> {
        let results = self.with_server(|s| {
            s.reject_request(request_id, code, description)
                .map_err(|e| e.to_string())
        })?;
        let mut ignored = Vec::new();
        self.handle_results(results, &mut ignored);
        Ok(())
    }

    /// Send an `onStatus` (e.g. level "error", code
    /// `NetStream.Publish.BadName`) on a message stream.
    pub fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        write_status(
            &self.writer,
            &mut self.out,
            stream_id,
            level,
            code,
            description,
        );
    }

    /// End the session, keeping only what reading the rest of the peer's
    /// chunk stream needs (see [`super::player::PlayerInput`]), and the
    /// output not yet taken.
    /// The session is failed from then on.
    pub fn end_for_player(&mut self) -> (ChunkGuard, BytesMut) {
        self.stage = Stage::Failed;
        (
            std::mem::take(&mut self.guard),
            std::mem::take(&mut self.out),
        )
    }

    /// The message stream of the last command the peer sent (where a
    /// publish refusal belongs).
    pub fn command_stream_id(&self) -> u32 {
        self.guard.last_command_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established() -> RtmpSession {
        let mut s = RtmpSession::new();
        let mut events = Vec::new();
        let mut hs = vec![3u8];
        hs.resize(1 + 2 * 1536, 0);
        s.input(&hs, &mut events).unwrap();
        assert!(s.established());
        assert!(
            !s.take_output().is_empty(),
            "S0, S1, S2 and the session's greeting"
        );
        s
    }

    #[test]
    fn hostile_chunks_fail_the_session_and_it_stays_failed() {
        // A type 1 header on a chunk stream that never had a type 0.
        let mut s = established();
        let mut events = Vec::new();
        let r = s.input(&[0x43, 0, 0, 0, 0, 0, 1, 20, 5], &mut events);
        assert!(matches!(r, Err(SessionError::Guard(_))), "{r:?}");
        assert_eq!(s.input(&[0], &mut events), Err(SessionError::Failed));
        assert_eq!(s.accept(1), Err(SessionError::Failed));

        // A message longer than any we accept.
        let mut s = established();
        let r = s.input(
            &[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0],
            &mut events,
        );
        assert!(matches!(r, Err(SessionError::Guard(_))), "{r:?}");
    }

    #[test]
    fn bad_handshake_version_fails() {
        let mut s = RtmpSession::new();
        let mut events = Vec::new();
        assert!(s.input(&[9; 1537], &mut events).is_err());
        assert!(!s.established());
    }
}
