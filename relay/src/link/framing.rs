//! The link's wire format, sans-IO.
//!
//! Every message is `type: u8`, `length: u32` (big-endian, length of the
//! body), then the body. Integers are big-endian; a string is `u16` length +
//! UTF-8; a byte string is `u32` length + bytes.
//!
//! | type | message | body | where |
//! |---|---|---|---|
//! | 0x01 | [`Message::Subscribe`] | `sub: u64`, `from: str`, `uid: str` | control stream, client to server |
//! | 0x02 | [`Message::Accepted`] | (empty) | control stream, server to client |
//! | 0x03 | [`Message::NotHere`] | (empty) | control stream |
//! | 0x04 | [`Message::Redirect`] | `node: str`, `addr: str` | control stream |
//! | 0x05 | [`Message::Refused`] | `reason: str` | control stream |
//! | 0x06 | [`Message::End`] | `kicked: u8` | control stream, server to client |
//! | 0x10 | [`Message::Group`] | `sub: u64`, `seq: u64` | first message of a group stream |
//! | 0x11 | [`Message::Info`] | `version: u64`, video?, audio? | group stream |
//! | 0x12 | [`Message::Frame`] | `track: u8`, `flags: u8`, `pts: i64`, `dts: i64`, payload (rest of the body) | group stream |
//!
//! Video config: `present: u8`, then `avcc: bytes`, `width: u32`,
//! `height: u32`, `codec: str`. Audio config: `present: u8`, then
//! `asc: bytes`, `sample_rate: u32`, `channels: u8`, `codec: str`.
//!
//! The [`Decoder`] checks each length against its bounds before buffering
//! the body, never panics on any input, and hands frame payloads out as
//! slices of its buffer (no copy).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::frame::{AudioConfig, Frame, MediaInfo, Track, VideoConfig};

/// Bytes of the type and length prefix.
pub const HEADER_LEN: usize = 5;
/// Upper bound of any message other than a frame or info.
pub const MAX_CONTROL_LEN: usize = 4096;
/// Upper bound of an info message (codec configurations are small).
pub const MAX_INFO_LEN: usize = 64 * 1024;
/// Default upper bound of a frame message.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 << 20;
/// Upper bound of a stream uid or node name.
pub const MAX_NAME_LEN: usize = 256;

const T_SUBSCRIBE: u8 = 0x01;
const T_ACCEPTED: u8 = 0x02;
const T_NOT_HERE: u8 = 0x03;
const T_REDIRECT: u8 = 0x04;
const T_REFUSED: u8 = 0x05;
const T_END: u8 = 0x06;
const T_GROUP: u8 = 0x10;
const T_INFO: u8 = 0x11;
const T_FRAME: u8 = 0x12;

/// Fixed part of a frame body: track, flags, pts, dts.
const FRAME_FIXED: usize = 1 + 1 + 8 + 8;

/// One message of the link protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Ask for stream `uid`; `sub` names the subscription in the group
    /// streams that follow; `from` is the asking node (checked against its
    /// certificate).
    Subscribe { sub: u64, from: String, uid: String },
    /// The subscription is served.
    Accepted,
    /// This node does not have the stream.
    NotHere,
    /// Ask node `node` at `addr` instead.
    Redirect { node: String, addr: String },
    /// The subscription is refused for another reason.
    Refused { reason: String },
    /// The stream ended upstream; `kicked` when the operator disconnected it.
    End { kicked: bool },
    /// Opens a group stream: group `seq` of subscription `sub`.
    Group { sub: u64, seq: u64 },
    /// Codec configuration for the frames that follow.
    Info(MediaInfo),
    /// One frame.
    Frame(Frame),
}

/// Why bytes could not be decoded. Every variant means the peer is broken
/// or hostile: the stream carrying them is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The type byte names no message.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A declared length exceeds its bound.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// The body does not match its type's layout.
    #[error("malformed {what}")]
    Malformed { what: &'static str },
}

fn malformed(what: &'static str) -> FramingError {
    FramingError::Malformed { what }
}

/// Incremental decoder: push bytes as they arrive, pop whole messages.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    /// A decoder refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    /// After an error the decoder's state is unspecified; drop it.
    pub fn next_message(&mut self) -> Result<Option<Message>, FramingError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let ty = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        let max = match ty {
            T_FRAME => self.max_frame.saturating_add(FRAME_FIXED),
            T_INFO => MAX_INFO_LEN,
            T_SUBSCRIBE | T_ACCEPTED | T_NOT_HERE | T_REDIRECT | T_REFUSED | T_END | T_GROUP => {
                MAX_CONTROL_LEN
            }
            other => return Err(FramingError::UnknownType(other)),
        };
        if len > max {
            return Err(FramingError::TooLong { len, max });
        }
        if self.buf.len() - HEADER_LEN < len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(HEADER_LEN);
        let body = self.buf.split_to(len).freeze();
        decode_body(ty, body).map(Some)
    }
}

/// Reads from a body, every step checked.
struct Reader {
    b: Bytes,
}

impl Reader {
    fn u8(&mut self, what: &'static str) -> Result<u8, FramingError> {
        if self.b.remaining() < 1 {
            return Err(malformed(what));
        }
        Ok(self.b.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FramingError> {
        if self.b.remaining() < 2 {
            return Err(malformed(what));
        }
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FramingError> {
        if self.b.remaining() < 4 {
            return Err(malformed(what));
        }
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FramingError> {
        if self.b.remaining() < 8 {
            return Err(malformed(what));
        }
        Ok(self.b.get_u64())
    }
    fn bytes(&mut self, what: &'static str) -> Result<Bytes, FramingError> {
        let len = self.u32(what)? as usize;
        if self.b.remaining() < len {
            return Err(malformed(what));
        }
        Ok(self.b.split_to(len))
    }
    fn string(&mut self, what: &'static str) -> Result<String, FramingError> {
        let len = self.u16(what)? as usize;
        if len > MAX_NAME_LEN || self.b.remaining() < len {
            return Err(malformed(what));
        }
        let raw = self.b.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| malformed(what))
    }
    fn done(&self, what: &'static str) -> Result<(), FramingError> {
        if self.b.has_remaining() {
            return Err(malformed(what));
        }
        Ok(())
    }
}

fn decode_body(ty: u8, body: Bytes) -> Result<Message, FramingError> {
    let mut r = Reader { b: body };
    let msg = match ty {
        T_SUBSCRIBE => {
            let sub = r.u64("subscribe")?;
            let from = r.string("subscribe node")?;
            let uid = r.string("subscribe uid")?;
            r.done("subscribe")?;
            Message::Subscribe { sub, from, uid }
        }
        T_ACCEPTED => {
            r.done("accepted")?;
            Message::Accepted
        }
        T_NOT_HERE => {
            r.done("not-here")?;
            Message::NotHere
        }
        T_REDIRECT => {
            let node = r.string("redirect node")?;
            let addr = r.string("redirect address")?;
            r.done("redirect")?;
            Message::Redirect { node, addr }
        }
        T_REFUSED => {
            let reason = r.string("refused")?;
            r.done("refused")?;
            Message::Refused { reason }
        }
        T_END => {
            let kicked = match r.u8("end")? {
                0 => false,
                1 => true,
                _ => return Err(malformed("end")),
            };
            r.done("end")?;
            Message::End { kicked }
        }
        T_GROUP => {
            let sub = r.u64("group")?;
            let seq = r.u64("group")?;
            r.done("group")?;
            Message::Group { sub, seq }
        }
        T_INFO => {
            let version = r.u64("info")?;
            let video = match r.u8("video presence")? {
                0 => None,
                1 => Some(VideoConfig {
                    avcc: r.bytes("avcc")?,
                    width: r.u32("width")?,
                    height: r.u32("height")?,
                    codec: r.string("video codec")?,
                }),
                _ => return Err(malformed("video presence")),
            };
            let audio = match r.u8("audio presence")? {
                0 => None,
                1 => Some(AudioConfig {
                    asc: r.bytes("asc")?,
                    sample_rate: r.u32("sample rate")?,
                    channels: r.u8("channels")?,
                    codec: r.string("audio codec")?,
                }),
                _ => return Err(malformed("audio presence")),
            };
            r.done("info")?;
            Message::Info(MediaInfo {
                version,
                video,
                audio,
            })
        }
        T_FRAME => {
            let track = match r.u8("track")? {
                0 => Track::Video,
                1 => Track::Audio,
                2 => Track::Captions,
                _ => return Err(malformed("track")),
            };
            let flags = r.u8("flags")?;
            if flags & !1 != 0 {
                return Err(malformed("flags"));
            }
            let pts = r.u64("pts")? as i64;
            let dts = r.u64("dts")? as i64;
            Message::Frame(Frame {
                track,
                pts,
                dts,
                keyframe: flags & 1 != 0,
                payload: r.b,
            })
        }
        other => return Err(FramingError::UnknownType(other)),
    };
    Ok(msg)
}

fn put_string(out: &mut BytesMut, s: &str) {
    // Callers bound names to MAX_NAME_LEN; longer ones are cut at a char boundary.
    let mut end = s.len().min(MAX_NAME_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

fn put_header(out: &mut BytesMut, ty: u8, len: usize) {
    out.put_u8(ty);
    out.put_u32(len as u32);
}

fn track_byte(t: Track) -> u8 {
    match t {
        Track::Video => 0,
        Track::Audio => 1,
        Track::Captions => 2,
    }
}

/// The prefix of a frame message: header and fixed fields. The payload
/// follows as its own chunk, so it is never copied on the way out.
pub fn frame_prefix(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + FRAME_FIXED);
    put_header(&mut out, T_FRAME, FRAME_FIXED + frame.payload.len());
    out.put_u8(track_byte(frame.track));
    out.put_u8(u8::from(frame.keyframe));
    out.put_u64(frame.pts as u64);
    out.put_u64(frame.dts as u64);
    out.freeze()
}

/// Append the encoding of `msg` to `out`. Frames are encoded whole here;
/// senders use [`frame_prefix`] to keep the payload separate.
pub fn encode(msg: &Message, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    let ty = match msg {
        Message::Subscribe { sub, from, uid } => {
            body.put_u64(*sub);
            put_string(&mut body, from);
            put_string(&mut body, uid);
            T_SUBSCRIBE
        }
        Message::Accepted => T_ACCEPTED,
        Message::NotHere => T_NOT_HERE,
        Message::Redirect { node, addr } => {
            put_string(&mut body, node);
            put_string(&mut body, addr);
            T_REDIRECT
        }
        Message::Refused { reason } => {
            put_string(&mut body, reason);
            T_REFUSED
        }
        Message::End { kicked } => {
            body.put_u8(u8::from(*kicked));
            T_END
        }
        Message::Group { sub, seq } => {
            body.put_u64(*sub);
            body.put_u64(*seq);
            T_GROUP
        }
        Message::Info(info) => {
            body.put_u64(info.version);
            match &info.video {
                None => body.put_u8(0),
                Some(v) => {
                    body.put_u8(1);
                    body.put_u32(v.avcc.len() as u32);
                    body.put_slice(&v.avcc);
                    body.put_u32(v.width);
                    body.put_u32(v.height);
                    put_string(&mut body, &v.codec);
                }
            }
            match &info.audio {
                None => body.put_u8(0),
                Some(a) => {
                    body.put_u8(1);
                    body.put_u32(a.asc.len() as u32);
                    body.put_slice(&a.asc);
                    body.put_u32(a.sample_rate);
                    body.put_u8(a.channels);
                    put_string(&mut body, &a.codec);
                }
            }
            T_INFO
        }
        Message::Frame(f) => {
            out.put_slice(&frame_prefix(f));
            out.put_slice(&f.payload);
            return;
        }
    };
    put_header(out, ty, body.len());
    out.put_slice(&body);
}

/// The encoding of `msg` as one buffer.
pub fn encode_to_bytes(msg: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode(msg, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> MediaInfo {
        MediaInfo {
            version: 7,
            video: Some(VideoConfig {
                avcc: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff]),
                width: 320,
                height: 240,
                codec: "avc1.64001f".into(),
            }),
            audio: Some(AudioConfig {
                asc: Bytes::from_static(&[0x12, 0x10]),
                sample_rate: 44100,
                channels: 2,
                codec: "mp4a.40.2".into(),
            }),
        }
    }

    fn all() -> Vec<Message> {
        vec![
            Message::Subscribe {
                sub: 3,
                from: "node-b".into(),
                uid: "abc".into(),
            },
            Message::Accepted,
            Message::NotHere,
            Message::Redirect {
                node: "c".into(),
                addr: "127.0.0.1:4433".into(),
            },
            Message::Refused {
                reason: "full".into(),
            },
            Message::End { kicked: true },
            Message::Group { sub: 3, seq: 99 },
            Message::Info(info()),
            Message::Info(MediaInfo::default()),
            Message::Frame(Frame::video(
                -5,
                -9,
                true,
                Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            )),
            Message::Frame(Frame::audio(1 << 40, Bytes::new())),
        ]
    }

    #[test]
    fn every_message_round_trips_byte_by_byte() {
        let mut wire = BytesMut::new();
        for m in all() {
            encode(&m, &mut wire);
        }
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in wire.iter() {
            d.push(&[*b]);
            while let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, all());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frame_prefix_plus_payload_is_the_frame_message() {
        let f = Frame::video(1, 2, false, Bytes::from_static(b"payload"));
        let mut split = BytesMut::from(&frame_prefix(&f)[..]);
        split.extend_from_slice(&f.payload);
        assert_eq!(split.freeze(), encode_to_bytes(&Message::Frame(f)));
    }

    #[test]
    fn bounds_are_checked_before_buffering() {
        let mut d = Decoder::new(1000);
        d.push(&[T_FRAME, 0, 0, 0x10, 0]);
        assert_eq!(
            d.next_message(),
            Err(FramingError::TooLong {
                len: 0x1000,
                max: 1000 + FRAME_FIXED
            })
        );
        let mut d = Decoder::default();
        d.push(&[T_SUBSCRIBE, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_message(),
            Err(FramingError::TooLong { .. })
        ));
        let mut d = Decoder::default();
        d.push(&[0x7f, 0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(FramingError::UnknownType(0x7f)));
        // A body shorter than its fields.
        let mut d = Decoder::default();
        d.push(&[T_GROUP, 0, 0, 0, 3, 1, 2, 3]);
        assert!(matches!(
            d.next_message(),
            Err(FramingError::Malformed { .. })
        ));
        // An inner length running past the body.
        let mut d = Decoder::default();
        d.push(&[T_REFUSED, 0, 0, 0, 3, 0, 9, b'x']);
        assert!(matches!(
            d.next_message(),
            Err(FramingError::Malformed { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new(256);
            d.push(&data);
            for _ in 0..64 {
                match d.next_message() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }

        #[test]
        fn frames_round_trip(
            pts in any::<i64>(), dts in any::<i64>(), key in any::<bool>(),
            track in 0u8..3, payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let track = [Track::Video, Track::Audio, Track::Captions][track as usize];
            let f = Frame { track, pts, dts, keyframe: key, payload: Bytes::from(payload) };
            let mut d = Decoder::default();
            d.push(&encode_to_bytes(&Message::Frame(f.clone())));
            prop_assert_eq!(d.next_message().unwrap(), Some(Message::Frame(f)));
        }
    }
}
