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
//! Flow control is the socket: the loop takes the next item from the hub only
//! when the previous one was written, so a slow player costs one frame of
//! memory and the hub's cursor skips it ahead to a newer keyframe. A write
//! that makes no progress for [`PlayOptions::stall_timeout`] ends playback.

use std::io;
use std::time::Duration;

use banyan_relay::views::ViewerGuard;
use banyan_relay::{Frame, Item, MediaInfo, StreamEnd, Subscriber, Track};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
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
pub const MSG_USER_CONTROL: u8 = 4;
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;
pub const MSG_AMF0_DATA: u8 = 18;
pub const MSG_AMF0_COMMAND: u8 = 20;

/// Frames messages into RTMP chunks. Every message starts with a type 0
/// chunk, continuations are type 3, so the writer keeps no per-stream state
/// beyond the negotiated chunk size.
#[derive(Debug, Clone, Copy)]
pub struct ChunkWriter {
    chunk_size: usize,
}

impl ChunkWriter {
    /// `chunk_size` must be what this side announced with SetChunkSize.
    pub fn new(chunk_size: usize) -> ChunkWriter {
        ChunkWriter {
            chunk_size: chunk_size.max(1),
        }
    }

    /// Append one message, whose payload is the concatenation of `parts`.
    pub fn write(
        &self,
        out: &mut BytesMut,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        parts: &[&[u8]],
    ) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // RTMP message lengths are 24-bit; larger media cannot be framed.
        let len = len.min(0xFF_FFFF);
        let extended = timestamp >= 0xFF_FFFF;
        let chunks = len.div_ceil(self.chunk_size).max(1);
        out.reserve(len + 16 + chunks * 6);
        basic_header(out, 0, csid);
        let ts_field = if extended { 0xFF_FFFF } else { timestamp };
        out.put_slice(&ts_field.to_be_bytes()[1..]);
        out.put_slice(&(len as u32).to_be_bytes()[1..]);
        out.put_u8(type_id);
        out.put_u32_le(stream_id);
        if extended {
            out.put_u32(timestamp);
        }
        let mut in_chunk = 0;
        let mut left = len;
        for part in parts {
            let mut p = &part[..part.len().min(left)];
            left -= p.len();
            while !p.is_empty() {
                if in_chunk == self.chunk_size {
                    basic_header(out, 3, csid);
                    if extended {
                        out.put_u32(timestamp);
                    }
                    in_chunk = 0;
                }
                let n = p.len().min(self.chunk_size - in_chunk);
                out.put_slice(&p[..n]);
                in_chunk += n;
                p = &p[n..];
            }
        }
    }
}

fn basic_header(out: &mut BytesMut, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    match csid {
        2..=63 => out.put_u8(fmt | csid as u8),
        64..=319 => {
            out.put_u8(fmt);
            out.put_u8((csid - 64) as u8);
        }
        _ => {
            let c = csid.clamp(320, 65599) - 64;
            out.put_u8(fmt | 1);
            out.put_u16_le(c as u16);
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
pub fn write_command(
    w: &ChunkWriter,
    out: &mut BytesMut,
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
pub fn write_status(
    w: &ChunkWriter,
    out: &mut BytesMut,
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
pub fn write_user_control(w: &ChunkWriter, out: &mut BytesMut, event: u16, stream_id: u32) {
    let mut body = [0u8; 6];
    body[..2].copy_from_slice(&event.to_be_bytes());
    body[2..].copy_from_slice(&stream_id.to_be_bytes());
    w.write(out, CSID_CONTROL, 0, MSG_USER_CONTROL, 0, &[&body]);
}

/// Append an AMF0 data message (values in order) at timestamp 0 on
/// [`CSID_STATUS`].
pub fn write_data(w: &ChunkWriter, out: &mut BytesMut, stream_id: u32, values: &[Amf<'_>]) {
    let mut body = BytesMut::with_capacity(64);
    for v in values {
        amf_encode(&mut body, v);
    }
    w.write(out, CSID_STATUS, 0, MSG_AMF0_DATA, stream_id, &[&body]);
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
    pub fn info(&mut self, out: &mut BytesMut, info: &MediaInfo) {
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
    pub fn frame(&mut self, out: &mut BytesMut, frame: &Frame) {
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
                self.writer.write(
                    out,
                    CSID_VIDEO,
                    ts,
                    MSG_VIDEO,
                    self.stream_id,
                    &[&h, &frame.payload],
                );
            }
            Track::Audio => {
                self.last_ts = ts;
                let h = flv::audio_tag_header();
                self.writer.write(
                    out,
                    CSID_AUDIO,
                    ts,
                    MSG_AUDIO,
                    self.stream_id,
                    &[&h, &frame.payload],
                );
            }
            Track::Captions => {}
        }
    }

    /// End of stream: `NetStream.Play.Stop`, then StreamEOF.
    pub fn end(&mut self, out: &mut BytesMut) {
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

/// Settings of one playback.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// The message stream id the player's `play` came on.
    pub stream_id: u32,
    /// The chunk size this side announced.
    pub chunk_size: usize,
    /// A write that makes no progress this long ends playback.
    pub stall_timeout: Duration,
}

/// Why playback ended.
#[derive(Debug)]
pub enum PlayEnd {
    /// The publisher left; the player was told so.
    Finished,
    /// The operator disconnected the stream.
    Kicked,
    /// The connection's driver asked us to stop (the player left, or the
    /// node shuts down).
    Cancelled,
    /// A write made no progress within the stall timeout.
    Stalled,
    /// The socket failed.
    Io(io::Error),
}

/// Send the stream to one player until it ends.
///
/// `control` carries already-framed bytes from the connection's protocol
/// session (acknowledgements, ping responses); they are written in order,
/// between media messages.
pub async fn play<W: AsyncWrite + Unpin>(
    w: &mut W,
    sub: &mut Subscriber,
    guard: &mut ViewerGuard,
    opts: &PlayOptions,
    control: &mut mpsc::Receiver<Bytes>,
    cancel: &CancellationToken,
) -> PlayEnd {
    let mut enc = PlayEncoder::new(ChunkWriter::new(opts.chunk_size), opts.stream_id);
    let mut out = BytesMut::with_capacity(64 << 10);
    let mut control_open = true;
    loop {
        out.clear();
        let mut end = None;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return PlayEnd::Cancelled,
            c = control.recv(), if control_open => match c {
                Some(b) => out.put_slice(&b),
                None => control_open = false,
            },
            item = sub.recv() => match item {
                Item::Info(info) => enc.info(&mut out, &info),
                Item::Frame(frame) => {
                    enc.frame(&mut out, &frame);
                    guard.delivered(&frame);
                }
                Item::End(StreamEnd::Finished) => {
                    enc.end(&mut out);
                    end = Some(PlayEnd::Finished);
                }
                Item::End(StreamEnd::Kicked) => return PlayEnd::Kicked,
            },
        }
        // Coalesce control bytes that are already waiting.
        while let Ok(b) = control.try_recv() {
            out.put_slice(&b);
        }
        if !out.is_empty() {
            let write = async {
                w.write_all(&out).await?;
                w.flush().await
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return PlayEnd::Cancelled,
                r = tokio::time::timeout(opts.stall_timeout, write) => match r {
                    Err(_) => return PlayEnd::Stalled,
                    Ok(Err(e)) => return PlayEnd::Io(e),
                    Ok(Ok(())) => {}
                },
            }
            metrics::counter!("banyan_egress_bytes_total", "protocol" => "rtmp")
                .increment(out.len() as u64);
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

    #[test]
    fn rtmp_time_wraps() {
        assert_eq!(rtmp_time(90_000), 1000);
        assert_eq!(rtmp_time(-5), 0);
        assert_eq!(rtmp_time((1i64 << 32) * 90 + 90), 1);
    }
}
