use bytes::Bytes;

/// Ticks per second of the node's one media clock.
pub const CLOCK_HZ: i64 = 90_000;

/// Which elementary stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// H.264, payload as AVCC access unit (4-byte big-endian NAL lengths).
    Video,
    /// AAC, payload as one raw access unit (no ADTS header).
    Audio,
    /// Closed captions found at ingest: payload is `cc_data` triplets
    /// (3 bytes each: marker/valid/type, data1, data2), timed like the video
    /// frame they came from. Playback protocols that carry captions in-band
    /// ignore this track: the SEI stays inside the video payload.
    Captions,
}

/// One unit of media as it travels through the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub track: Track,
    /// Presentation time, in [`CLOCK_HZ`] ticks.
    pub pts: i64,
    /// Decode time, in [`CLOCK_HZ`] ticks; non-decreasing per track.
    pub dts: i64,
    /// A video frame that starts a group of pictures (an IDR).
    /// Audio and caption frames are never keyframes.
    pub keyframe: bool,
    pub payload: Bytes,
}

impl Frame {
    pub fn video(pts: i64, dts: i64, keyframe: bool, payload: Bytes) -> Frame {
        Frame {
            track: Track::Video,
            pts,
            dts,
            keyframe,
            payload,
        }
    }

    pub fn audio(pts: i64, payload: Bytes) -> Frame {
        Frame {
            track: Track::Audio,
            pts,
            dts: pts,
            keyframe: false,
            payload,
        }
    }

    /// Milliseconds of `dts`, the resolution of RTMP timestamps.
    pub fn dts_ms(&self) -> i64 {
        self.dts.div_euclid(90)
    }
}

/// H.264 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// AVCDecoderConfigurationRecord, as in an FLV sequence header or an `avcC` box.
    pub avcc: Bytes,
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub codec: String,
}

/// AAC configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// AudioSpecificConfig (ISO 14496-3).
    pub asc: Bytes,
    pub sample_rate: u32,
    pub channels: u8,
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub codec: String,
}

/// The codec configuration of a stream at some point in time. The hub stamps
/// a new `version` whenever the publisher sets different info.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaInfo {
    pub version: u64,
    pub video: Option<VideoConfig>,
    pub audio: Option<AudioConfig>,
}

impl MediaInfo {
    /// True when both describe the same codec configuration, whatever their versions.
    pub fn same_config(&self, other: &MediaInfo) -> bool {
        self.video == other.video && self.audio == other.audio
    }
}
