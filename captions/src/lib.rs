//! Closed captions for Banyan: CEA-608 and CEA-708 carried in H.264 SEI
//! (ATSC A/53 `GA94` `cc_data` in `user_data_registered_itu_t_t35`).
//!
//! Everything here is sans-IO: plain functions and state machines that take
//! bytes and 90 kHz timestamps and return values. Nothing reads a clock or a
//! socket, nothing spawns a task, nothing panics on peer bytes.
//!
//! # The pieces
//!
//! * [`Extractor`] — one per published stream, at ingest. It reads an H.264
//!   access unit ([`Extractor::push_avcc`] for RTMP/FLV and for SRT after the
//!   TS demux has built AVCC, [`Extractor::push_annexb`] for raw Annex B),
//!   never modifies it, returns the valid `cc_data` triplets it found (the
//!   payload of a [`banyan_relay::Track::Captions`] frame) and keeps the set of
//!   channels present ([`Extractor::channels`], a [`ChannelSet`]; a channel
//!   silent for [`CHANNEL_TIMEOUT`] disappears). Bad caption data (lying SEI
//!   sizes, wrong `cc_count`, bad 608 parity, 708 packets with wrong lengths)
//!   is dropped and counted in `banyan_caption_errors_total{kind}` and in
//!   [`Extractor::stats`]; the video itself is never touched.
//! * [`playlist_caption_lines`] — the one function that writes the caption
//!   lines of the HLS multivariant playlist: `EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS`
//!   per present channel (RFC 8216 4.3.4.1: no `URI`, `INSTREAM-ID` `CC1`..`CC4`
//!   or `SERVICE1`..`SERVICE63`), an optional `TYPE=SUBTITLES` WebVTT rendition,
//!   and the attributes for `EXT-X-STREAM-INF` (`CLOSED-CAPTIONS="cc"` or
//!   `CLOSED-CAPTIONS=NONE`, 4.3.4.2). [`caption_tracks`] merges the platform's
//!   declarations with the detected channels for the live-input API.
//! * [`Cea608Decoder`] — 608 decoding for one channel with our own screen
//!   model (pop-on, roll-up and paint-on memories; `cea608-types` decodes the
//!   byte pairs), producing timed [`Cue`]s.
//! * [`Cea708Decoder`] — 708 decoding for one service with our own window
//!   model (`cea708-types` parses packets and codes), producing [`Cue`]s;
//!   [`CaptionDecoder`] is either decoder, by channel.
//! * [`webvtt_segment`] — a WebVTT segment for one video segment, with
//!   `X-TIMESTAMP-MAP` so players align it to the video.
//! * [`Registry`] — the node's caption state: channels present per
//!   published stream and the platform's declarations per live input;
//!   [`StreamCaptions`] is the per-stream ingest tap that keeps it current
//!   (RTMP and SRT publishers pass every video frame through it).
//! * [`inject`] — the other direction, for sample media and tests: builds
//!   `cc_data` and SEI NAL units and inserts them into Annex B H.264.
//!
//! # How the node uses it
//!
//! Ingest, for each video frame (payload = AVCC access unit):
//! ```
//! # use banyan_captions::Extractor;
//! # use banyan_relay::{Frame, Track};
//! # let mut extractor = Extractor::new();
//! # let video = Frame::video(0, 0, true, bytes::Bytes::from_static(&[0, 0, 0, 1, 0x09]));
//! if let Some(cc) = extractor.push_avcc(video.pts, &video.payload) {
//!     let captions = Frame { track: Track::Captions, pts: video.pts, dts: video.dts, keyframe: false, payload: cc };
//!     // publish `captions` right after `video`; publish extractor.channels() when it changes
//! #   let _ = captions;
//! }
//! ```
//! HLS: `playlist_caption_lines(&channels, &declared, Some("subs.m3u8"))` for
//! the multivariant playlist; one [`Cea608Decoder`] for the subtitle channel
//! ([`ChannelSet::subtitle_channel`]) fed with every captions frame; at each
//! segment end, [`webvtt_segment`] over the finished cues plus
//! [`Cea608Decoder::showing`].

mod channels;
mod decoder;
mod decoder708;
mod extract;
pub mod inject;
mod playlist;
mod registry;
mod webvtt;

pub use channels::{Channel, ChannelSet};
pub use decoder::{Cea608Decoder, Cue};
pub use decoder708::Cea708Decoder;

/// The decoder of one caption channel: CEA-608 for `CCn`, CEA-708 for
/// `SERVICEn` (WebVTT renditions and WebRTC captions take whichever
/// [`ChannelSet::subtitle_source`] names).
#[derive(Debug)]
pub enum CaptionDecoder {
    Cc(Box<Cea608Decoder>),
    Service(Box<Cea708Decoder>),
}

impl CaptionDecoder {
    pub fn new(channel: Channel) -> CaptionDecoder {
        match channel {
            Channel::Cc(n) => CaptionDecoder::Cc(Box::new(Cea608Decoder::new(n))),
            Channel::Service(n) => CaptionDecoder::Service(Box::new(Cea708Decoder::new(n))),
        }
    }

    /// Feeds one captions frame's triplets at `pts`; returns the cues that ended.
    pub fn push(&mut self, pts: i64, triplets: &[u8]) -> Vec<Cue> {
        match self {
            CaptionDecoder::Cc(d) => d.push(pts, triplets),
            CaptionDecoder::Service(d) => d.push(pts, triplets),
        }
    }

    /// The cue on screen, ended at `now`.
    pub fn showing(&self, now: i64) -> Option<Cue> {
        match self {
            CaptionDecoder::Cc(d) => d.showing(now),
            CaptionDecoder::Service(d) => d.showing(now),
        }
    }
}
pub use extract::{Extractor, ExtractorStats, CHANNEL_TIMEOUT};
pub use playlist::{caption_tracks, playlist_caption_lines, CaptionTrackInfo};
pub use registry::{Registry, StreamCaptions};
pub use webvtt::{webvtt_segment, webvtt_timestamp};

/// Problems found in caption data. The extractor never returns these to its
/// caller: it drops the offending caption unit and counts it under
/// [`CaptionError::kind`] (metric `banyan_caption_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CaptionError {
    /// A 4-byte AVCC NAL length points past the end of the access unit.
    #[error("NAL length {len} exceeds the {left} bytes left in the access unit")]
    NalLength { len: usize, left: usize },
    /// An SEI NAL unit is malformed: a payload size runs past the NAL, or the
    /// emulation-prevention bytes are invalid.
    #[error("malformed SEI")]
    Sei,
    /// An SEI NAL unit larger than the extractor is willing to decode.
    #[error("SEI NAL of {0} bytes is too large")]
    TooLarge(usize),
    /// `cc_count` announces more triplets than the SEI payload holds.
    #[error("cc_count {cc_count} needs {expected} bytes, {actual} present")]
    CcCount {
        cc_count: u8,
        expected: usize,
        actual: usize,
    },
    /// A CEA-608 byte pair fails the odd-parity check.
    #[error("CEA-608 byte pair with bad parity")]
    Parity,
    /// A CEA-708 DTVCC packet whose length disagrees with its header or its
    /// service blocks.
    #[error("CEA-708 packet with a wrong length")]
    Dtvcc,
}

impl CaptionError {
    /// The `kind` label of `banyan_caption_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CaptionError::NalLength { .. } => "nal_length",
            CaptionError::Sei => "sei",
            CaptionError::TooLarge(_) => "too_large",
            CaptionError::CcCount { .. } => "cc_count",
            CaptionError::Parity => "parity",
            CaptionError::Dtvcc => "dtvcc",
        }
    }
}
