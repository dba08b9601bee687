//! What a player's connection keeps once it plays: the sans-IO reader of
//! the little a player still sends.
//!
//! After `play` is accepted the protocol library's session is dropped (it
//! is most of a viewer's memory) and this takes over the chunk stream where
//! the command phase left it, through the same [`ChunkGuard`]. A player
//! sends acknowledgements, buffer lengths, perhaps a ping response or a
//! `deleteStream`; this answers what needs an answer (a ping request, the
//! peer's acknowledgement window) and reports the end of play. Everything
//! else is read, bounded by the guard, and ignored.

use banyan_egress::rtmp::{write_user_control, ChunkWriter};
use bytes::BytesMut;

use super::guard::{ChunkGuard, GuardError, Message};

const MSG_ACK: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK_SIZE: u8 = 5;
const MSG_AMF3_COMMAND: u8 = 17;
const MSG_AMF0_COMMAND: u8 = 20;
const UC_PING_REQUEST: u16 = 6;
const UC_PING_RESPONSE: u16 = 7;
const CSID_CONTROL: u32 = 2;

/// What the player's bytes asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerSignal {
    /// Keep playing.
    Continue,
    /// The player asked to stop (`deleteStream` or `closeStream`).
    Stop,
}

/// The reader of a playing connection's incoming chunk stream.
#[derive(Debug)]
pub struct PlayerInput {
    guard: ChunkGuard,
    writer: ChunkWriter,
    /// Bytes received from the peer (the acknowledgement sequence number).
    received: u64,
    /// `received` when we last acknowledged.
    acked: u64,
    /// The peer's acknowledgement window (0: none announced).
    window: u32,
}

impl PlayerInput {
    /// Continue the chunk stream read so far by `guard`. Our answers are
    /// framed for `chunk_size`, the size this side uses while playing.
    pub fn new(mut guard: ChunkGuard, chunk_size: u32) -> PlayerInput {
        guard.shrink();
        PlayerInput {
            guard,
            writer: ChunkWriter::new(chunk_size as usize),
            received: 0,
            acked: 0,
            window: 0,
        }
    }

    /// Feed bytes read from the player; answers are appended to `out`.
    pub fn input(&mut self, data: &[u8], out: &mut BytesMut) -> Result<PlayerSignal, GuardError> {
        let mut signal = PlayerSignal::Continue;
        let writer = self.writer;
        let window = &mut self.window;
        self.guard
            .read(data, &mut |m: Message<'_>| match m.type_id {
                MSG_WINDOW_ACK_SIZE if m.body.len() >= 4 => {
                    *window = u32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                }
                MSG_USER_CONTROL if m.body.len() >= 6 => {
                    let event = u16::from_be_bytes([m.body[0], m.body[1]]);
                    if event == UC_PING_REQUEST {
                        let time = u32::from_be_bytes([m.body[2], m.body[3], m.body[4], m.body[5]]);
                        write_user_control(&writer, out, UC_PING_RESPONSE, time);
                    }
                }
                MSG_AMF0_COMMAND | MSG_AMF3_COMMAND => {
                    let body = match (m.type_id, m.body.first()) {
                        (MSG_AMF3_COMMAND, Some(0)) => &m.body[1..],
                        _ => m.body,
                    };
                    if matches!(command_name(body), Some(b"deleteStream" | b"closeStream")) {
                        signal = PlayerSignal::Stop;
                    }
                }
                _ => {}
            })?;
        self.received += data.len() as u64;
        if self.window > 0 && self.received - self.acked >= u64::from(self.window) {
            self.acked = self.received;
            // The sequence number wraps like the peer's byte count does.
            let seq = (self.received as u32).to_be_bytes();
            self.writer
                .write(out, CSID_CONTROL, 0, MSG_ACK, 0, &[&seq[..]]);
        }
        Ok(signal)
    }
}

/// The name of an AMF0 command: its first value, a string.
fn command_name(body: &[u8]) -> Option<&[u8]> {
    let (&marker, rest) = body.split_first()?;
    if marker != 0x02 || rest.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    rest.get(2..2 + len)
}

#[cfg(test)]
mod tests {
    use banyan_egress::rtmp::{write_command, Amf};

    use super::*;

    /// A chunk stream as a client writes it (chunk size 128).
    fn client() -> ChunkWriter {
        ChunkWriter::new(128)
    }

    fn player() -> PlayerInput {
        PlayerInput::new(ChunkGuard::new(), 1 << 20)
    }

    #[test]
    fn delete_stream_stops_play_and_other_commands_do_not() {
        let mut p = player();
        let mut wire = BytesMut::new();
        write_command(
            &client(),
            &mut wire,
            1,
            "receiveAudio",
            0.0,
            &[Amf::Bool(true)],
        );
        let mut out = BytesMut::new();
        assert_eq!(p.input(&wire, &mut out).unwrap(), PlayerSignal::Continue);
        let mut wire = BytesMut::new();
        write_command(
            &client(),
            &mut wire,
            1,
            "deleteStream",
            0.0,
            &[Amf::Number(1.0)],
        );
        // Byte by byte: the message completes on its last byte.
        let mut signals = Vec::new();
        for b in wire.iter() {
            signals.push(p.input(&[*b], &mut out).unwrap());
        }
        assert_eq!(signals.last(), Some(&PlayerSignal::Stop));
        assert!(signals[..signals.len() - 1]
            .iter()
            .all(|s| *s == PlayerSignal::Continue));
        assert!(out.is_empty(), "nothing to answer: {out:?}");
    }

    #[test]
    fn a_ping_request_gets_its_response() {
        let mut p = player();
        let mut wire = BytesMut::new();
        write_user_control(&client(), &mut wire, UC_PING_REQUEST, 0xDEAD_BEEF);
        let mut out = BytesMut::new();
        p.input(&wire, &mut out).unwrap();
        let mut expected = BytesMut::new();
        write_user_control(
            &ChunkWriter::new(1 << 20),
            &mut expected,
            UC_PING_RESPONSE,
            0xDEAD_BEEF,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn the_peer_window_is_acknowledged() {
        let mut p = player();
        let mut wire = BytesMut::new();
        client().write(
            &mut wire,
            2,
            0,
            MSG_WINDOW_ACK_SIZE,
            0,
            &[&100u32.to_be_bytes()[..]],
        );
        let mut out = BytesMut::new();
        p.input(&wire, &mut out).unwrap();
        assert!(out.is_empty());
        // Buffer lengths (user control 3) until the window is passed.
        let mut n = wire.len();
        while n < 100 {
            let mut wire = BytesMut::new();
            client().write(
                &mut wire,
                2,
                0,
                4,
                0,
                &[&[0, 3, 0, 0, 0, 1, 0, 0, 0, 100][..]],
            );
            n += wire.len();
            p.input(&wire, &mut out).unwrap();
        }
        // One acknowledgement carrying the bytes received.
        assert_eq!(out.len(), 12 + 4);
        assert_eq!(out[7], MSG_ACK);
        assert_eq!(
            u32::from_be_bytes([out[12], out[13], out[14], out[15]]),
            n as u32
        );
    }

    #[test]
    fn hostile_chunks_are_refused() {
        let mut p = player();
        let mut out = BytesMut::new();
        // A type 1 header on a chunk stream never opened.
        assert!(p.input(&[0x45, 0, 0, 0, 0, 0, 4, 20], &mut out).is_err());
    }
}
