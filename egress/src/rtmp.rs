//! RTMP playback: hub items to RTMP messages, and the play loop.
//!
//! The RTMP connection (handshake, commands, the peer's chunks) is driven by
//! `banyan_ingest::rtmp`; once a play request is accepted it hands the write
//! half of the socket to [`play`]. Media and the few status messages we add
//! are framed by our own [`ChunkWriter`] on chunk streams of their own
//! ([`CSID_VIDEO`], [`CSID_AUDIO`], [`CSID_STATUS`]), always with full
//! (type 0) headers, so they never disturb the header compression of the
//! protocol library's chunk streams that share the connection.
//!
//! Playback announces a large chunk size ([`PLAY_CHUNK_SIZE`]) before any
//! media, so a frame is one chunk, and writes it from a [`Batch`]: the chunk
//! headers and small payloads are copied into one per-connection buffer,
//! frame payloads are referenced (the hub's `Bytes`, shared by every
//! player) and the whole batch goes out in vectored writes. After each wake
//! the loop gathers every hub item that is already ready (bounded by
//! [`GATHER_ITEMS`] and [`GATHER_BYTES`]) into the same write; it never
//! waits to batch.
//!
//! Flow control is the socket: the loop takes the next item from the hub only
//! when the previous one was written, so a slow player costs one frame of
//! memory and the hub's cursor skips it ahead to a newer keyframe. A write
//! that makes no progress for [`PlayOptions::stall_timeout`] ends playback.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use banyan_relay::views::ViewerGuard;
use banyan_relay::{Frame, Item, MediaInfo, StreamEnd, Subscriber, Track};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::flv;

/// Chunk stream of video messages written by [`ChunkWriter`].
pub const CSID_VIDEO: u32 = 7;
/// Chunk stream of audio messages.
pub const CSID_AUDIO: u32 = 8;
/// Chunk stream of commands and data messages we add (status, results).
pub const CSID_STATUS: u32 = 9;
/// Chunk stream of protocol control and user control messages.
pub const CSID_CONTROL: u32 = 2;

/// RTMP message type ids.
pub const MSG_SET_CHUNK_SIZE: u8 = 1;
pub const MSG_USER_CONTROL: u8 = 4;
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;
pub const MSG_AMF0_DATA: u8 = 18;
pub const MSG_AMF0_COMMAND: u8 = 20;

/// Where framed bytes go. A `BytesMut` copies everything; a [`Batch`]
/// copies headers and small payloads and keeps large payloads by reference.
pub trait ChunkSink {
    /// Append a copy of `b`.
    fn append(&mut self, b: &[u8]);
    /// Append shared bytes (a slice of a frame's payload).
    fn append_shared(&mut self, b: Bytes) {
        self.append(&b);
    }
}

impl ChunkSink for BytesMut {
    fn append(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// Frames messages into RTMP chunks. Every message starts with a type 0
/// chunk, continuations are type 3, so the writer keeps no per-stream state
/// beyond the negotiated chunk size.
#[derive(Debug, Clone, Copy)]
pub struct ChunkWriter {
    chunk_size: usize,
}

/// A chunk header: at most 3 bytes of basic header, 11 of message header
/// and 4 of extended timestamp.
struct Header {
    b: [u8; 18],
    n: usize,
}

impl Header {
    fn new() -> Header {
        Header { b: [0; 18], n: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.b[self.n..self.n + bytes.len()].copy_from_slice(bytes);
        self.n += bytes.len();
    }

    fn bytes(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

impl ChunkWriter {
    /// `chunk_size` must be what this side announced with SetChunkSize.
    pub fn new(chunk_size: usize) -> ChunkWriter {
        ChunkWriter {
            chunk_size: chunk_size.max(1),
        }
    }

    /// The chunk size this writer frames with.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    fn first_header(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> Header {
        let mut h = Header::new();
        basic_header(&mut h, 0, csid);
        let extended = timestamp >= 0xFF_FFFF;
        let ts_field = if extended { 0xFF_FFFF } else { timestamp };
        h.put(&ts_field.to_be_bytes()[1..]);
        h.put(&(len as u32).to_be_bytes()[1..]);
        h.put(&[type_id]);
        h.put(&stream_id.to_le_bytes());
        if extended {
            h.put(&timestamp.to_be_bytes());
        }
        h
    }

    fn continuation_header(csid: u32, timestamp: u32) -> Header {
        let mut h = Header::new();
        basic_header(&mut h, 3, csid);
        if timestamp >= 0xFF_FFFF {
            h.put(&timestamp.to_be_bytes());
        }
        h
    }

    /// Append one message, whose payload is the concatenation of `parts`.
    pub fn write<O: ChunkSink + ?Sized>(
        &self,
        out: &mut O,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        parts: &[&[u8]],
    ) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // RTMP message lengths are 24-bit; larger media cannot be framed.
        let len = len.min(0xFF_FFFF);
        out.append(Self::first_header(csid, timestamp, type_id, stream_id, len).bytes());
        let mut in_chunk = 0;
        let mut left = len;
        for part in parts {
            let mut p = &part[..part.len().min(left)];
            left -= p.len();
            while !p.is_empty() {
                if in_chunk == self.chunk_size {
                    out.append(Self::continuation_header(csid, timestamp).bytes());
                    in_chunk = 0;
                }
                let n = p.len().min(self.chunk_size - in_chunk);
                out.append(&p[..n]);
                in_chunk += n;
                p = &p[n..];
            }
        }
    }

    /// Append one media message: the few tag header bytes `head` (copied),
    /// then `payload`, which a [`Batch`] keeps by reference (sliced at chunk
    /// boundaries, never copied). Same framing as [`ChunkWriter::write`].
    #[allow(clippy::too_many_arguments)]
    pub fn write_shared<O: ChunkSink + ?Sized>(
        &self,
        out: &mut O,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        head: &[u8],
        payload: &Bytes,
    ) {
        let len = (head.len() + payload.len()).min(0xFF_FFFF);
        let head = &head[..head.len().min(len)];
        let body_len = len - head.len();
        out.append(Self::first_header(csid, timestamp, type_id, stream_id, len).bytes());
        // The tag header is a few bytes: it never fills a chunk by itself
        // unless the chunk size is tiny; frame it like `write` then.
        let mut in_chunk = 0;
        let mut h = head;
        while !h.is_empty() {
            if in_chunk == self.chunk_size {
                out.append(Self::continuation_header(csid, timestamp).bytes());
                in_chunk = 0;
            }
            let n = h.len().min(self.chunk_size - in_chunk);
            out.append(&h[..n]);
            in_chunk += n;
            h = &h[n..];
        }
        let mut at = 0;
        while at < body_len {
            if in_chunk == self.chunk_size {
                out.append(Self::continuation_header(csid, timestamp).bytes());
                in_chunk = 0;
            }
            let n = (body_len - at).min(self.chunk_size - in_chunk);
            out.append_shared(payload.slice(at..at + n));
            in_chunk += n;
            at += n;
        }
    }
}

fn basic_header(out: &mut Header, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.put(&[fmt | csid as u8]),
        64..=319 => out.put(&[fmt, (csid - 64) as u8]),
        _ => {
            let c = (csid.clamp(320, 65599) - 64) as u16;
            out.put(&[fmt | 1]);
            out.put(&c.to_le_bytes());
        }
    }
}

/// An AMF0 value, as far as the messages we write need.
#[derive(Debug, Clone, Copy)]
pub enum Amf<'a> {
    Number(f64),
    Bool(bool),
    Str(&'a str),
    Null,
    Object(&'a [(&'a str, Amf<'a>)]),
    /// An ECMA array (what onMetaData carries).
    Array(&'a [(&'a str, Amf<'a>)]),
}

/// Append the AMF0 encoding of `v`.
pub fn amf_encode(out: &mut BytesMut, v: &Amf<'_>) {
    match v {
        Amf::Number(n) => {
            out.put_u8(0x00);
            out.put_f64(*n);
        }
        Amf::Bool(b) => {
            out.put_u8(0x01);
            out.put_u8(*b as u8);
        }
        Amf::Str(s) => {
            let s = &s.as_bytes()[..s.len().min(0xFFFF)];
            out.put_u8(0x02);
            out.put_u16(s.len() as u16);
            out.put_slice(s);
        }
        Amf::Null => out.put_u8(0x05),
        Amf::Object(props) | Amf::Array(props) => {
            if matches!(v, Amf::Object(_)) {
                out.put_u8(0x03);
            } else {
                out.put_u8(0x08);
                out.put_u32(props.len() as u32);
            }
            for (k, v) in props.iter() {
                let k = &k.as_bytes()[..k.len().min(0xFFFF)];
                out.put_u16(k.len() as u16);
                out.put_slice(k);
                amf_encode(out, v);
            }
            out.put_slice(&[0, 0, 0x09]);
        }
    }
}

/// Append an AMF0 command message (`name`, transaction id, command object,
/// arguments) on [`CSID_STATUS`].
pub fn write_command<O: ChunkSink + ?Sized>(
    w: &ChunkWriter,
    out: &mut O,
    stream_id: u32,
    name: &str,
    transaction_id: f64,
    args: &[Amf<'_>],
) {
    let mut body = BytesMut::with_capacity(128);
    amf_encode(&mut body, &Amf::Str(name));
    amf_encode(&mut body, &Amf::Number(transaction_id));
    amf_encode(&mut body, &Amf::Null);
    for a in args {
        amf_encode(&mut body, a);
    }
    w.write(out, CSID_STATUS, 0, MSG_AMF0_COMMAND, stream_id, &[&body]);
}

/// Append an `onStatus` message with the given level ("status", "error")
/// and code (e.g. `NetStream.Publish.BadName`).
pub fn write_status<O: ChunkSink + ?Sized>(
    w: &ChunkWriter,
    out: &mut O,
    stream_id: u32,
    level: &str,
    code: &str,
    description: &str,
) {
    let info = [
        ("level", Amf::Str(level)),
        ("code", Amf::Str(code)),
        ("description", Amf::Str(description)),
    ];
    write_command(w, out, stream_id, "onStatus", 0.0, &[Amf::Object(&info)]);
}

/// Append a user control message (event type, then the stream id).
pub fn write_user_control<O: ChunkSink + ?Sized>(
    w: &ChunkWriter,
    out: &mut O,
    event: u16,
    stream_id: u32,
) {
    let mut body = [0u8; 6];
    body[..2].copy_from_slice(&event.to_be_bytes());
    body[2..].copy_from_slice(&stream_id.to_be_bytes());
    w.write(out, CSID_CONTROL, 0, MSG_USER_CONTROL, 0, &[&body]);
}

/// Append an AMF0 data message (values in order) at timestamp 0 on
/// [`CSID_STATUS`].
pub fn write_data<O: ChunkSink + ?Sized>(
    w: &ChunkWriter,
    out: &mut O,
    stream_id: u32,
    values: &[Amf<'_>],
) {
    let mut body = BytesMut::with_capacity(64);
    for v in values {
        amf_encode(&mut body, v);
    }
    w.write(out, CSID_STATUS, 0, MSG_AMF0_DATA, stream_id, &[&body]);
}

/// Append a Set Chunk Size message: from now on every message this side
/// sends must be framed with chunks of at most `size` bytes.
pub fn write_set_chunk_size<O: ChunkSink + ?Sized>(w: &ChunkWriter, out: &mut O, size: u32) {
    let body = (size & 0x7FFF_FFFF).to_be_bytes();
    w.write(out, CSID_CONTROL, 0, MSG_SET_CHUNK_SIZE, 0, &[&body]);
}

/// User control event: stream begin.
pub const UC_STREAM_BEGIN: u16 = 0;
/// User control event: end of stream.
pub const UC_STREAM_EOF: u16 = 1;

/// RTMP timestamp (32-bit milliseconds, wrapping) of a hub time in ticks.
pub fn rtmp_time(ticks: i64) -> u32 {
    ticks.max(0).div_euclid(90).rem_euclid(1 << 32) as u32
}

/// Encodes hub items for one player: sans-IO, appends to a buffer.
#[derive(Debug)]
pub struct PlayEncoder {
    writer: ChunkWriter,
    stream_id: u32,
    last_ts: u32,
    /// Time of the last video message sent.
    last_video_ts: Option<u32>,
}

impl PlayEncoder {
    pub fn new(writer: ChunkWriter, stream_id: u32) -> PlayEncoder {
        PlayEncoder {
            writer,
            stream_id,
            last_ts: 0,
            last_video_ts: None,
        }
    }

    /// Metadata and sequence headers for a (new) codec configuration.
    pub fn info<O: ChunkSink + ?Sized>(&mut self, out: &mut O, info: &MediaInfo) {
        let mut props: Vec<(&str, Amf<'_>)> = Vec::with_capacity(8);
        if let Some(v) = &info.video {
            props.push(("width", Amf::Number(v.width as f64)));
            props.push(("height", Amf::Number(v.height as f64)));
            props.push(("videocodecid", Amf::Number(flv::CODEC_AVC as f64)));
        }
        if let Some(a) = &info.audio {
            props.push(("audiocodecid", Amf::Number(flv::SOUND_AAC as f64)));
            props.push(("audiosamplerate", Amf::Number(a.sample_rate as f64)));
            props.push(("stereo", Amf::Bool(a.channels > 1)));
        }
        let mut body = BytesMut::with_capacity(160);
        amf_encode(&mut body, &Amf::Str("onMetaData"));
        amf_encode(&mut body, &Amf::Array(&props));
        // At time 0: ffmpeg's FLV reader takes script data stamped later for
        // a subtitle packet.
        self.writer
            .write(out, CSID_STATUS, 0, MSG_AMF0_DATA, self.stream_id, &[&body]);
        if let Some(v) = &info.video {
            let sh = flv::video_sequence_header(v);
            self.writer.write(
                out,
                CSID_VIDEO,
                self.last_ts,
                MSG_VIDEO,
                self.stream_id,
                &[&sh],
            );
        }
        if let Some(a) = &info.audio {
            let sh = flv::audio_sequence_header(a);
            self.writer.write(
                out,
                CSID_AUDIO,
                self.last_ts,
                MSG_AUDIO,
                self.stream_id,
                &[&sh],
            );
        }
    }

    /// One frame as a video or audio message. Caption frames are not sent:
    /// the captions travel inside the video's SEI.
    pub fn frame<O: ChunkSink + ?Sized>(&mut self, out: &mut O, frame: &Frame) {
        let ts = rtmp_time(frame.dts);
        match frame.track {
            Track::Video => {
                // RTMP time has 1 ms resolution: video frames closer than
                // that (a join backlog of more than 20 frames, compressed by
                // the hub) would share a timestamp, which players and
                // recorders take as non-monotonic. Keep video increasing.
                let ts = match self.last_video_ts {
                    Some(last) if ts <= last && last - ts < 1000 => last.wrapping_add(1),
                    _ => ts,
                };
                self.last_video_ts = Some(ts);
                self.last_ts = ts;
                let h = flv::video_tag_header(frame);
                self.writer.write_shared(
                    out,
                    CSID_VIDEO,
                    ts,
                    MSG_VIDEO,
                    self.stream_id,
                    &h,
                    &frame.payload,
                );
            }
            Track::Audio => {
                self.last_ts = ts;
                let h = flv::audio_tag_header();
                self.writer.write_shared(
                    out,
                    CSID_AUDIO,
                    ts,
                    MSG_AUDIO,
                    self.stream_id,
                    &h,
                    &frame.payload,
                );
            }
            Track::Captions => {}
        }
    }

    /// End of stream: `NetStream.Play.Stop`, then StreamEOF.
    pub fn end<O: ChunkSink + ?Sized>(&mut self, out: &mut O) {
        write_status(
            &self.writer,
            out,
            self.stream_id,
            "status",
            "NetStream.Play.Stop",
            "The stream ended",
        );
        write_status(
            &self.writer,
            out,
            self.stream_id,
            "status",
            "NetStream.Play.UnpublishNotify",
            "The publisher left",
        );
        write_user_control(&self.writer, out, UC_STREAM_EOF, self.stream_id);
    }
}

/// The chunk size [`play`] announces before the first media message: every
/// frame up to 1 MiB is one chunk (larger ones are split, still without
/// copying). Clients take any size up to 2^31 - 1; this one is also within
/// what our own ingest accepts.
pub const PLAY_CHUNK_SIZE: u32 = 1 << 20;
/// At most this many hub items are gathered into one write.
pub const GATHER_ITEMS: usize = 64;
/// Gathering stops once a write holds this many bytes.
pub const GATHER_BYTES: usize = 256 << 10;
/// Payloads shorter than this are copied into the batch buffer (a separate
/// slice of a vectored write costs more than copying a few hundred bytes).
const COPY_BELOW: usize = 512;
/// Slices per vectored write.
const MAX_SLICES: usize = 64;

/// Outgoing bytes of one write: copied bytes in one reusable buffer, frame
/// payloads by reference, in order. Reused across writes: in steady state
/// it allocates nothing.
#[derive(Debug, Default)]
pub struct Batch {
    buf: BytesMut,
    parts: Vec<Bytes>,
    len: usize,
}

impl ChunkSink for Batch {
    fn append(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        self.len += b.len();
    }

    fn append_shared(&mut self, b: Bytes) {
        if b.len() < COPY_BELOW {
            return self.append(&b);
        }
        self.seal();
        self.len += b.len();
        self.parts.push(b);
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Bytes in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Close the copied run so far as one part.
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.parts.push(self.buf.split().freeze());
        }
    }

    /// Drop the content, keeping the buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.parts.clear();
        self.len = 0;
    }

    /// The batch as one contiguous buffer (tests).
    pub fn to_bytes(&self) -> Bytes {
        let mut all = BytesMut::with_capacity(self.len);
        for p in &self.parts {
            all.extend_from_slice(p);
        }
        all.extend_from_slice(&self.buf);
        all.freeze()
    }

    /// Write everything in order with vectored writes, then clear. On an
    /// error the batch is left partly written; the caller gives up on the
    /// connection.
    pub async fn write_to<W: AsyncWrite + Unpin + ?Sized>(&mut self, w: &mut W) -> io::Result<()> {
        self.seal();
        let mut first = 0;
        while first < self.parts.len() {
            let parts = &self.parts[first..];
            let n = std::future::poll_fn(|cx| {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let k = parts.len().min(MAX_SLICES);
                for (s, p) in slices.iter_mut().zip(parts) {
                    *s = IoSlice::new(p);
                }
                Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k])
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut n = n;
            while n > 0 && first < self.parts.len() {
                let p = &mut self.parts[first];
                if p.len() <= n {
                    n -= p.len();
                    first += 1;
                } else {
                    p.advance(n);
                    n = 0;
                }
            }
        }
        w.flush().await?;
        self.clear();
        Ok(())
    }
}

/// Settings of one playback.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The message stream id the player's `play` came on.
    pub stream_id: u32,
    /// The chunk size announced and used for media, normally
    /// [`PLAY_CHUNK_SIZE`]. It applies to every chunk this side sends from
    /// then on, so the messages of the connection's protocol session passed
    /// through `input` must each fit in one chunk of this size (they are
    /// small: acknowledgements, ping responses).
    pub chunk_size: u32,
    /// A write that makes no progress this long ends playback.
    pub stall_timeout: Duration,
    /// The `protocol` label of `banyan_egress_bytes_total`: `rtmp` or `rtmps`.
    pub protocol: &'static str,
}

/// Why playback ended.
#[derive(Debug)]
pub enum PlayEnd {
    /// The publisher left; the player was told so.
    Finished,
    /// The operator disconnected the stream.
    Kicked,
    /// The node shuts down.
    Cancelled,
    /// The player closed the connection, asked to stop, or sent what
    /// cannot be read.
    Left,
    /// A write made no progress within the stall timeout.
    Stalled,
    /// The socket failed.
    Io(io::Error),
}

/// What one hub item means for the loop.
enum Flow {
    Go,
    End(PlayEnd),
}

fn encode(enc: &mut PlayEncoder, out: &mut Batch, guard: &mut ViewerGuard, item: Item) -> Flow {
    match item {
        Item::Info(info) => enc.info(out, &info),
        Item::Frame(frame) => {
            enc.frame(out, &frame);
            guard.delivered(&frame);
        }
        Item::End(StreamEnd::Finished) => {
            enc.end(out);
            return Flow::End(PlayEnd::Finished);
        }
        Item::End(StreamEnd::Kicked) => return Flow::End(PlayEnd::Kicked),
    }
    Flow::Go
}

/// Send the stream to one player until it ends.
///
/// The connection is read in the same loop: each read goes to `input`,
/// the connection's reader of what the player sends, which appends its
/// answers (acknowledgements, ping responses) to the buffer it is given,
/// to be written in order between media messages; it returns `false` when
/// the player asked to stop or sent what cannot be read. `buf` is the read
/// buffer (a player sends little: a few hundred bytes are plenty).
pub async fn play<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    sub: &mut Subscriber,
    guard: &mut ViewerGuard,
    opts: &PlayOptions,
    buf: &mut [u8],
    mut input: impl FnMut(&[u8], &mut BytesMut) -> bool,
    cancel: &CancellationToken,
) -> PlayEnd {
    let writer = ChunkWriter::new(opts.chunk_size as usize);
    let mut enc = PlayEncoder::new(writer, opts.stream_id);
    let mut out = Batch::new();
    let mut answers = BytesMut::new();
    let bytes_out = metrics::counter!("banyan_egress_bytes_total", "protocol" => opts.protocol);
    // Announced before anything else of ours; what the session had still
    // to send was written before, in single chunks.
    write_set_chunk_size(&writer, &mut out, opts.chunk_size);
    loop {
        let mut end = None;
        if out.is_empty() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return PlayEnd::Cancelled,
                r = io.read(buf) => match r {
                    Ok(0) => return PlayEnd::Left,
                    Err(e) => return PlayEnd::Io(e),
                    Ok(n) => {
                        if !input(&buf[..n], &mut answers) {
                            return PlayEnd::Left;
                        }
                        if !answers.is_empty() {
                            out.append(&answers);
                            answers.clear();
                        }
                    }
                },
                item = sub.recv() => match encode(&mut enc, &mut out, guard, item) {
                    Flow::Go => {}
                    Flow::End(PlayEnd::Finished) => end = Some(PlayEnd::Finished),
                    Flow::End(e) => return e,
                },
            }
        }
        // Gather what is ready now into the same write (never wait for it).
        let mut items = 0;
        while end.is_none() && items < GATHER_ITEMS && out.len() < GATHER_BYTES {
            let Some(item) = sub.try_recv() else { break };
            items += 1;
            match encode(&mut enc, &mut out, guard, item) {
                Flow::Go => {}
                Flow::End(PlayEnd::Finished) => end = Some(PlayEnd::Finished),
                Flow::End(e) => return e,
            }
        }
        if !out.is_empty() {
            let n = out.len() as u64;
            let write = out.write_to(io);
            tokio::pin!(write);
            // Most writes complete at once: arm the stall timer only when
            // the socket is full.
            let first = std::future::poll_fn(|cx| match write.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let r = match first {
                Some(r) => r,
                None => tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return PlayEnd::Cancelled,
                    r = tokio::time::timeout(opts.stall_timeout, write) => match r {
                        Err(_) => return PlayEnd::Stalled,
                        Ok(r) => r,
                    },
                },
            };
            if let Err(e) = r {
                return PlayEnd::Io(e);
            }
            bytes_out.increment(n);
        }
        if let Some(e) = end {
            return e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_split_with_type3_chunks() {
        let w = ChunkWriter::new(4);
        let mut out = BytesMut::new();
        w.write(&mut out, 7, 10, 9, 1, &[&[1, 2], &[3, 4, 5, 6, 7]]);
        assert_eq!(
            &out[..],
            &[7, 0, 0, 10, 0, 0, 7, 9, 1, 0, 0, 0, 1, 2, 3, 4, 0xC7, 5, 6, 7]
        );
    }

    #[test]
    fn extended_timestamps_repeat_on_continuations() {
        let w = ChunkWriter::new(2);
        let mut out = BytesMut::new();
        w.write(&mut out, 8, 0x0100_0000, 8, 1, &[&[1, 2, 3]]);
        assert_eq!(
            &out[..],
            &[8, 0xff, 0xff, 0xff, 0, 0, 3, 8, 1, 0, 0, 0, 1, 0, 0, 0, 1, 2, 0xC8, 1, 0, 0, 0, 3]
        );
    }

    #[test]
    fn amf_object_encoding() {
        let mut out = BytesMut::new();
        amf_encode(&mut out, &Amf::Object(&[("a", Amf::Bool(true))]));
        assert_eq!(&out[..], &[3, 0, 1, b'a', 1, 1, 0, 0, 9]);
    }

    #[test]
    fn video_times_stay_increasing_below_one_millisecond() {
        let mut enc = PlayEncoder::new(ChunkWriter::new(4096), 1);
        // 22 frames compressed into 20 ms, then the live edge.
        let mut dts: Vec<i64> = (0..22).map(|i| i * 1800 / 21).collect();
        dts.push(1800 + 3000);
        let mut times = Vec::new();
        for d in dts {
            let mut out = BytesMut::new();
            enc.frame(
                &mut out,
                &Frame::video(d, d, d == 0, Bytes::from_static(&[0; 8])),
            );
            // A type-0 chunk header: basic header, then 3 bytes of time.
            assert_eq!(out[0] >> 6, 0);
            times.push(u32::from_be_bytes([0, out[1], out[2], out[3]]));
        }
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(times[22], 53, "the live edge keeps its own time");
    }

    /// A frame through a [`Batch`] (payload by reference, split at chunk
    /// boundaries) gives the same bytes as the copying writer.
    #[test]
    fn shared_payloads_frame_like_copies() {
        let payload = Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let small = Bytes::from_static(&[9; 20]);
        for chunk_size in [1, 7, 128, 4096, 1 << 20] {
            for ts in [10, 0x0100_0000] {
                let w = ChunkWriter::new(chunk_size);
                let mut copied = BytesMut::new();
                let mut batch = Batch::new();
                for p in [&payload, &small] {
                    w.write(&mut copied, 7, ts, 9, 1, &[&[1, 2, 3, 4, 5], p]);
                    w.write_shared(&mut batch, 7, ts, 9, 1, &[1, 2, 3, 4, 5], p);
                }
                assert_eq!(batch.len(), copied.len());
                assert_eq!(batch.to_bytes(), copied.freeze(), "chunk size {chunk_size}");
            }
        }
    }

    #[tokio::test]
    async fn batch_writes_everything_in_order_through_short_writes() {
        let w = ChunkWriter::new(PLAY_CHUNK_SIZE as usize);
        let mut expected = BytesMut::new();
        let mut batch = Batch::new();
        write_set_chunk_size(&w, &mut expected, PLAY_CHUNK_SIZE);
        write_set_chunk_size(&w, &mut batch, PLAY_CHUNK_SIZE);
        for i in 0..200u32 {
            let p = Bytes::from(vec![i as u8; 100 + (i as usize * 37) % 3000]);
            w.write(&mut expected, 8, i, 8, 1, &[&[0xAF, 1], &p]);
            w.write_shared(&mut batch, 8, i, 8, 1, &[0xAF, 1], &p);
        }
        // A pipe smaller than the batch forces partial vectored writes.
        let (mut tx, mut rx) = tokio::io::duplex(1000);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut got)
                .await
                .unwrap();
            got
        });
        batch.write_to(&mut tx).await.unwrap();
        assert!(batch.is_empty());
        drop(tx);
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[test]
    fn set_chunk_size_message() {
        let w = ChunkWriter::new(4096);
        let mut out = BytesMut::new();
        write_set_chunk_size(&w, &mut out, 1 << 20);
        assert_eq!(
            &out[..],
            &[2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0x10, 0, 0]
        );
    }

    #[test]
    fn rtmp_time_wraps() {
        assert_eq!(rtmp_time(90_000), 1000);
        assert_eq!(rtmp_time(-5), 0);
        assert_eq!(rtmp_time((1i64 << 32) * 90 + 90), 1);
    }
}
