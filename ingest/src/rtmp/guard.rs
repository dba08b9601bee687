//! A shadow reader of the peer's RTMP chunk stream, run over every byte
//! before the protocol library sees it.
//!
//! It tracks chunk headers exactly as the library's deserializer does, but
//! without assembling media, and refuses input the library would mishandle
//! or that would cost unbounded memory or stack:
//! * chunks of another message interleaved into a partly received one (the
//!   library keeps one partial message and underflows on a shorter one);
//! * a continuation header other than type 3 on the same chunk stream;
//! * an extended timestamp below 0xFFFFFF on a non-type-0 header (the
//!   library subtracts and underflows);
//! * messages longer than [`MAX_MEDIA_MESSAGE`] (audio/video) or
//!   [`MAX_OTHER_MESSAGE`], and chunk sizes outside 1..=[`MAX_CHUNK_SIZE`];
//! * AMF0 messages nested deeper than [`MAX_AMF_DEPTH`] (the library parses
//!   AMF recursively);
//! * commands whose first three values (name, transaction id, command
//!   object) are missing or malformed (the library indexes them unchecked).
//!
//! The result: what the library buffers per connection is bounded by one
//! chunk plus one message.

use std::collections::HashMap;

/// Longest audio or video message accepted.
pub const MAX_MEDIA_MESSAGE: u32 = 8 << 20;
/// Longest message of any other type.
pub const MAX_OTHER_MESSAGE: u32 = 64 << 10;
/// Largest chunk size a peer may announce.
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// Deepest AMF0 nesting accepted.
pub const MAX_AMF_DEPTH: usize = 16;

/// Why the guard refused the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("chunk on stream {csid} without a previous header")]
    NoPreviousHeader { csid: u32 },
    #[error("chunk of another message inside a partial message")]
    Interleaved,
    #[error("bad extended timestamp")]
    ExtendedTimestamp,
    #[error("message of type {type_id} too long: {len} bytes")]
    TooLong { type_id: u8, len: u32 },
    #[error("bad chunk size {0}")]
    ChunkSize(u32),
    #[error("AMF nested too deep")]
    AmfDepth,
    /// A command without its name, transaction id and command object (the
    /// library indexes them without checking).
    #[error("command message without name, transaction id and object")]
    ShortCommand,
}

/// A complete message other than audio or video, as the guard saw it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub type_id: u8,
    pub stream_id: u32,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Copy, Default)]
struct Header {
    ts_field: u32,
    len: u32,
    type_id: u8,
    stream_id: u32,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for a basic header.
    Basic,
    /// Reading the rest of a chunk header (`fmt`, `csid` known).
    Header { fmt: u8, csid: u32 },
    /// Reading `left` bytes of chunk payload.
    Payload { left: u32 },
}

/// The shadow chunk reader.
#[derive(Debug)]
pub struct ChunkGuard {
    chunk_size: u32,
    prev: HashMap<u32, Header>,
    stage: Stage,
    /// Header bytes collected so far.
    hdr: Vec<u8>,
    cur: Header,
    cur_csid: u32,
    /// Bytes received of the current message.
    partial: u32,
    /// Payload of a small non-media message, kept to check it.
    body: Vec<u8>,
    last_command_stream: u32,
}

impl Default for ChunkGuard {
    fn default() -> Self {
        ChunkGuard {
            chunk_size: 128,
            prev: HashMap::new(),
            stage: Stage::Basic,
            hdr: Vec::new(),
            cur: Header::default(),
            cur_csid: 0,
            partial: 0,
            body: Vec::new(),
            last_command_stream: 0,
        }
    }
}

impl ChunkGuard {
    pub fn new() -> ChunkGuard {
        ChunkGuard::default()
    }

    /// The message stream id of the last complete command message.
    pub fn last_command_stream(&self) -> u32 {
        self.last_command_stream
    }

    /// Check the next bytes of the peer's chunk stream.
    pub fn check(&mut self, input: &[u8]) -> Result<(), GuardError> {
        self.read(input, &mut |_| {})
    }

    /// Check the next bytes and hand each complete message that is not
    /// audio or video (whose payloads the guard does not keep) to `seen`.
    pub fn read(
        &mut self,
        mut input: &[u8],
        seen: &mut dyn FnMut(Message<'_>),
    ) -> Result<(), GuardError> {
        // A header is checked as soon as it is complete, even when it ends
        // the input: the library acts on it at once (a type 3 header with
        // no extended timestamp is complete after its first byte).
        loop {
            match self.stage {
                Stage::Basic => {
                    let Some(&b) = input.first() else {
                        break;
                    };
                    self.hdr.push(b);
                    input = &input[1..];
                    let b0 = self.hdr[0];
                    let need = match b0 & 0x3F {
                        0 => 2,
                        1 => 3,
                        _ => 1,
                    };
                    if self.hdr.len() < need {
                        continue;
                    }
                    let csid = match need {
                        2 => self.hdr[1] as u32 + 64,
                        3 => self.hdr[2] as u32 * 256 + self.hdr[1] as u32 + 64,
                        _ => (b0 & 0x3F) as u32,
                    };
                    self.hdr.clear();
                    self.stage = Stage::Header { fmt: b0 >> 6, csid };
                }
                Stage::Header { fmt, csid } => {
                    let base = match fmt {
                        0 => 11,
                        1 => 7,
                        2 => 3,
                        _ => 0,
                    };
                    let take = (base.max(self.hdr.len()) - self.hdr.len()).min(input.len());
                    self.hdr.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.hdr.len() < base {
                        // The input is exhausted.
                        break;
                    }
                    let mut h = if fmt == 0 {
                        Header::default()
                    } else {
                        *self
                            .prev
                            .get(&csid)
                            .ok_or(GuardError::NoPreviousHeader { csid })?
                    };
                    if fmt < 3 {
                        h.ts_field = u32::from_be_bytes([0, self.hdr[0], self.hdr[1], self.hdr[2]]);
                    }
                    if fmt < 2 {
                        h.len = u32::from_be_bytes([0, self.hdr[3], self.hdr[4], self.hdr[5]]);
                        h.type_id = self.hdr[6];
                    }
                    if fmt == 0 {
                        h.stream_id = u32::from_le_bytes([
                            self.hdr[7],
                            self.hdr[8],
                            self.hdr[9],
                            self.hdr[10],
                        ]);
                    }
                    let need = base + if h.ts_field >= 0xFF_FFFF { 4 } else { 0 };
                    if self.hdr.len() < need {
                        let take = (need - self.hdr.len()).min(input.len());
                        self.hdr.extend_from_slice(&input[..take]);
                        input = &input[take..];
                        if self.hdr.len() < need {
                            break;
                        }
                    }
                    if need > base && fmt != 0 {
                        let ext = u32::from_be_bytes([
                            self.hdr[base],
                            self.hdr[base + 1],
                            self.hdr[base + 2],
                            self.hdr[base + 3],
                        ]);
                        if ext < 0xFF_FFFF {
                            return Err(GuardError::ExtendedTimestamp);
                        }
                    }
                    self.hdr.clear();
                    if self.partial > 0 && (fmt != 3 || csid != self.cur_csid) {
                        return Err(GuardError::Interleaved);
                    }
                    let max = match h.type_id {
                        8 | 9 => MAX_MEDIA_MESSAGE,
                        _ => MAX_OTHER_MESSAGE,
                    };
                    if h.len > max {
                        return Err(GuardError::TooLong {
                            type_id: h.type_id,
                            len: h.len,
                        });
                    }
                    self.cur = h;
                    self.cur_csid = csid;
                    let left = (h.len - self.partial).min(self.chunk_size);
                    self.stage = Stage::Payload { left };
                    if left == 0 {
                        self.end_chunk(seen)?;
                    }
                }
                Stage::Payload { left } => {
                    if input.is_empty() {
                        break;
                    }
                    let n = (left as usize).min(input.len());
                    if !matches!(self.cur.type_id, 8 | 9) {
                        self.body.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    self.partial += n as u32;
                    let left = left - n as u32;
                    self.stage = Stage::Payload { left };
                    if left == 0 {
                        self.end_chunk(seen)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Give back what the command phase grew: a player's connection keeps
    /// the guard for as long as it plays.
    pub fn shrink(&mut self) {
        self.body = Vec::new();
        self.hdr.shrink_to_fit();
        self.prev.shrink_to_fit();
    }

    fn end_chunk(&mut self, seen: &mut dyn FnMut(Message<'_>)) -> Result<(), GuardError> {
        self.prev.insert(self.cur_csid, self.cur);
        self.stage = Stage::Basic;
        if self.partial < self.cur.len {
            return Ok(());
        }
        self.partial = 0;
        let body = std::mem::take(&mut self.body);
        if matches!(self.cur.type_id, 17 | 20) {
            self.last_command_stream = self.cur.stream_id;
        }
        match self.cur.type_id {
            1 if body.len() >= 4 => {
                let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7FFF_FFFF;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(GuardError::ChunkSize(size));
                }
                self.chunk_size = size;
            }
            15 | 18 => amf_depth_ok(&body)?,
            20 => command_ok(&body)?,
            17 => {
                let b = if body.first() == Some(&0) {
                    &body[1..]
                } else {
                    &body[..]
                };
                command_ok(b)?
            }
            _ => {}
        }
        if !matches!(self.cur.type_id, 8 | 9) {
            seen(Message {
                type_id: self.cur.type_id,
                stream_id: self.cur.stream_id,
                body: &body,
            });
        }
        self.body = body;
        self.body.clear();
        if self.body.capacity() > 4096 {
            self.body = Vec::new();
        }
        Ok(())
    }
}

/// A command starts with three well-formed values (name, transaction id,
/// command object); the rest only has to respect the depth bound.
fn command_ok(mut b: &[u8]) -> Result<(), GuardError> {
    for _ in 0..3 {
        match amf_value(b, 0) {
            Walk::Rest(rest) => b = rest,
            Walk::TooDeep => return Err(GuardError::AmfDepth),
            Walk::Stop => return Err(GuardError::ShortCommand),
        }
    }
    amf_depth_ok(b)
}

fn amf_depth_ok(mut b: &[u8]) -> Result<(), GuardError> {
    while !b.is_empty() {
        match amf_value(b, 0) {
            Walk::Rest(rest) => b = rest,
            Walk::TooDeep => return Err(GuardError::AmfDepth),
            // Malformed or unknown: the library stops there too.
            Walk::Stop => return Ok(()),
        }
    }
    Ok(())
}

enum Walk<'a> {
    Rest(&'a [u8]),
    TooDeep,
    Stop,
}

fn skip(b: &[u8], n: usize) -> Walk<'_> {
    match b.get(n..) {
        Some(r) => Walk::Rest(r),
        None => Walk::Stop,
    }
}

fn amf_value(b: &[u8], depth: usize) -> Walk<'_> {
    let Some((&marker, b)) = b.split_first() else {
        return Walk::Stop;
    };
    match marker {
        0x00 => skip(b, 8),
        0x01 => skip(b, 1),
        0x02 => match b.get(..2) {
            Some(l) => skip(b, 2 + u16::from_be_bytes([l[0], l[1]]) as usize),
            None => Walk::Stop,
        },
        0x05 | 0x06 => Walk::Rest(b),
        0x03 => amf_props(b, depth + 1),
        0x08 => match b.get(4..) {
            Some(r) => amf_props(r, depth + 1),
            None => Walk::Stop,
        },
        0x0A => {
            if depth + 1 > MAX_AMF_DEPTH {
                return Walk::TooDeep;
            }
            let Some(c) = b.get(..4) else {
                return Walk::Stop;
            };
            let count = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let mut r = &b[4..];
            for _ in 0..count {
                if r.is_empty() {
                    return Walk::Stop;
                }
                match amf_value(r, depth + 1) {
                    Walk::Rest(x) => r = x,
                    other => return other,
                }
            }
            Walk::Rest(r)
        }
        _ => Walk::Stop,
    }
}

fn amf_props(mut b: &[u8], depth: usize) -> Walk<'_> {
    if depth > MAX_AMF_DEPTH {
        return Walk::TooDeep;
    }
    loop {
        let Some(l) = b.get(..2) else {
            return Walk::Stop;
        };
        let len = u16::from_be_bytes([l[0], l[1]]) as usize;
        if len == 0 {
            return skip(b, 3);
        }
        let Some(r) = b.get(2 + len..) else {
            return Walk::Stop;
        };
        match amf_value(r, depth) {
            Walk::Rest(x) => b = x,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_and_bad_extended_timestamps_are_refused() {
        let mut g = ChunkGuard::new();
        // type 0, csid 3, len 200 (two chunks), type 20, stream 0, then 128 bytes.
        let mut b = vec![0x03, 0, 0, 0, 0, 0, 200, 20, 0, 0, 0, 0];
        b.extend(std::iter::repeat_n(0x05, 128));
        g.check(&b).unwrap();
        // A type 0 on another csid in the middle.
        assert_eq!(
            g.check(&[0x04, 0, 0, 0, 0, 0, 2, 20, 0, 0, 0, 0, 5, 5]),
            Err(GuardError::Interleaved)
        );

        let mut g = ChunkGuard::new();
        g.check(&[0x03, 0, 0, 0, 0, 0, 1, 18, 0, 0, 0, 0, 5])
            .unwrap();
        assert_eq!(
            g.check(&[0x43, 0xff, 0xff, 0xff, 0, 0, 1, 18, 0, 0, 0, 1]),
            Err(GuardError::ExtendedTimestamp)
        );
    }

    #[test]
    fn a_header_ending_the_input_is_checked_at_once() {
        let mut g = ChunkGuard::new();
        // A zero-length message on csid 10, then the first 128 bytes of a
        // 200-byte message on csid 3.
        let mut b = vec![0x0A, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0];
        b.extend_from_slice(&[0x03, 0, 0, 0, 0, 0, 200, 18, 0, 0, 0, 0]);
        b.extend(std::iter::repeat_n(0x05, 128));
        g.check(&b).unwrap();
        // A lone type 3 header of csid 10 inside the partial message.
        assert_eq!(g.check(&[0xCA]), Err(GuardError::Interleaved));
    }

    #[test]
    fn deep_amf_is_refused() {
        let mut body = vec![0x02, 0, 1, b'x'];
        for _ in 0..100 {
            body.extend_from_slice(&[0x03, 0, 1, b'a']);
        }
        let mut g = ChunkGuard::new();
        let l = (body.len() as u32).to_be_bytes();
        let mut b = vec![0x03, 0, 0, 0, l[1], l[2], l[3], 20, 0, 0, 0, 0];
        let mut rest = &body[..];
        let first = rest.len().min(128);
        b.extend_from_slice(&rest[..first]);
        rest = &rest[first..];
        while !rest.is_empty() {
            let n = rest.len().min(128);
            b.push(0xC3);
            b.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(g.check(&b), Err(GuardError::AmfDepth));
    }

    #[test]
    fn commands_need_name_transaction_and_object() {
        // connect with only a name: the library would index past its values.
        let mut g = ChunkGuard::new();
        let body = [0x02, 0, 1, b'x'];
        let mut b = vec![0x03, 0, 0, 0, 0, 0, body.len() as u8, 20, 0, 0, 0, 0];
        b.extend_from_slice(&body);
        assert_eq!(g.check(&b), Err(GuardError::ShortCommand));
        // An empty AMF3 command (type 17).
        let mut g = ChunkGuard::new();
        assert_eq!(
            g.check(&[0x03, 0, 0, 0, 0, 0, 1, 17, 0, 0, 0, 0, 0]),
            Err(GuardError::ShortCommand)
        );
        // name, transaction id, null: fine.
        let mut g = ChunkGuard::new();
        let body = [0x02, 0, 1, b'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05];
        let mut b = vec![0x03, 0, 0, 0, 0, 0, body.len() as u8, 20, 0, 0, 0, 0];
        b.extend_from_slice(&body);
        g.check(&b).unwrap();
    }

    #[test]
    fn set_chunk_size_applies_and_is_bounded() {
        let mut g = ChunkGuard::new();
        g.check(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0x10, 0])
            .unwrap();
        assert_eq!(g.chunk_size, 4096);
        assert_eq!(
            g.check(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(GuardError::ChunkSize(0))
        );
    }
}
