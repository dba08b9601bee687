//! FLV tag payloads (the bodies of RTMP video and audio messages) to hub
//! frames and codec configuration.
//!
//! Sans-IO: [`FlvDemux`] takes a tag's timestamp and payload and returns what
//! it found. Frame payloads are slices of the received [`Bytes`], never
//! copies. RTMP's 32-bit millisecond timestamps are unwrapped into one
//! monotonic clock shared by both tracks.

use banyan_relay::{AudioConfig, Frame, VideoConfig};
use bytes::Bytes;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{decode_nal, BitReader};

/// Why a tag was not turned into anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// The tag is shorter than its header.
    #[error("tag too short: {len} bytes")]
    TooShort { len: usize },
    /// A video codec other than H.264 (FLV codec id).
    #[error("unsupported video codec {0}")]
    VideoCodec(u8),
    /// An audio format other than AAC (FLV sound format).
    #[error("unsupported audio format {0}")]
    AudioFormat(u8),
    /// An AVCDecoderConfigurationRecord we cannot use.
    #[error("bad avcC")]
    BadAvcc,
    /// An AudioSpecificConfig we cannot use.
    #[error("bad AudioSpecificConfig")]
    BadAsc,
    /// Media before its sequence header.
    #[error("frame before its sequence header")]
    NoConfig,
}

/// What a tag produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagEvent {
    /// New video configuration (from an AVC sequence header).
    Video(VideoConfig),
    /// New audio configuration (from an AAC sequence header).
    Audio(AudioConfig),
    Frame(Frame),
    /// Nothing to forward (end of sequence, video info/command frames).
    Nothing,
}

/// Unwraps 32-bit millisecond timestamps into an `i64` clock.
#[derive(Debug, Default, Clone)]
pub struct TsUnwrap {
    last: Option<(u32, i64)>,
}

impl TsUnwrap {
    /// The unwrapped value of `ts`. Steps are taken as signed 32-bit
    /// differences from the previous timestamp, so a wrap continues forward
    /// and small steps back (interleaving) stay small.
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let v = match self.last {
            None => ts as i64,
            Some((prev, acc)) => acc + ts.wrapping_sub(prev) as i32 as i64,
        };
        self.last = Some((ts, v));
        v
    }
}

/// FLV tag payloads to frames, for one publishing session.
#[derive(Debug, Default)]
pub struct FlvDemux {
    clock: TsUnwrap,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    last_video_dts: Option<i64>,
    last_audio_dts: Option<i64>,
}

impl FlvDemux {
    pub fn new() -> FlvDemux {
        FlvDemux::default()
    }

    /// The video configuration in force.
    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    /// The audio configuration in force.
    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio.as_ref()
    }

    /// One video tag payload with its RTMP timestamp.
    pub fn video(&mut self, ts: u32, data: Bytes) -> Result<TagEvent, TagError> {
        let ms = self.clock.unwrap(ts);
        if data.len() < 2 {
            return Err(TagError::TooShort { len: data.len() });
        }
        let frame_type = data[0] >> 4;
        let codec = data[0] & 0x0F;
        if codec != 7 {
            return Err(TagError::VideoCodec(codec));
        }
        if data.len() < 5 {
            return Err(TagError::TooShort { len: data.len() });
        }
        match data[1] {
            0 => {
                let cfg = parse_avcc(data.slice(5..))?;
                self.video = Some(cfg.clone());
                Ok(TagEvent::Video(cfg))
            }
            1 => {
                // Video info / command frames carry no picture.
                if frame_type == 5 {
                    return Ok(TagEvent::Nothing);
                }
                if self.video.is_none() {
                    return Err(TagError::NoConfig);
                }
                let cts = i32::from_be_bytes([
                    if data[2] & 0x80 != 0 { 0xFF } else { 0 },
                    data[2],
                    data[3],
                    data[4],
                ]) as i64;
                let dts = monotonic(&mut self.last_video_dts, ms * 90);
                let pts = dts + cts * 90;
                Ok(TagEvent::Frame(Frame::video(
                    pts,
                    dts,
                    frame_type == 1,
                    data.slice(5..),
                )))
            }
            _ => Ok(TagEvent::Nothing),
        }
    }

    /// One audio tag payload with its RTMP timestamp.
    pub fn audio(&mut self, ts: u32, data: Bytes) -> Result<TagEvent, TagError> {
        let ms = self.clock.unwrap(ts);
        if data.is_empty() {
            return Err(TagError::TooShort { len: 0 });
        }
        let format = data[0] >> 4;
        if format != 10 {
            return Err(TagError::AudioFormat(format));
        }
        if data.len() < 2 {
            return Err(TagError::TooShort { len: data.len() });
        }
        match data[1] {
            0 => {
                let cfg = parse_asc(data.slice(2..))?;
                self.audio = Some(cfg.clone());
                Ok(TagEvent::Audio(cfg))
            }
            _ => {
                if self.audio.is_none() {
                    return Err(TagError::NoConfig);
                }
                let pts = monotonic(&mut self.last_audio_dts, ms * 90);
                Ok(TagEvent::Frame(Frame::audio(pts, data.slice(2..))))
            }
        }
    }
}

/// Keep a track's decode times non-decreasing.
fn monotonic(last: &mut Option<i64>, t: i64) -> i64 {
    let t = match *last {
        Some(l) if t < l => l,
        _ => t,
    };
    *last = Some(t);
    t
}

/// Parse an AVCDecoderConfigurationRecord: the codec string from its
/// profile and level, the picture size from its first SPS. Frames must use
/// 4-byte NAL lengths (what the node's frames carry).
pub fn parse_avcc(avcc: Bytes) -> Result<VideoConfig, TagError> {
    if avcc.len() < 8 || avcc[0] != 1 {
        return Err(TagError::BadAvcc);
    }
    if avcc[4] & 0x03 != 3 {
        return Err(TagError::BadAvcc);
    }
    let n_sps = avcc[5] & 0x1F;
    if n_sps == 0 {
        return Err(TagError::BadAvcc);
    }
    let len = u16::from_be_bytes([avcc[6], avcc[7]]) as usize;
    let sps = avcc.get(8..8 + len).ok_or(TagError::BadAvcc)?;
    if sps.is_empty() {
        return Err(TagError::BadAvcc);
    }
    let rbsp = decode_nal(sps).map_err(|_| TagError::BadAvcc)?;
    let sps =
        SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).map_err(|_| TagError::BadAvcc)?;
    let (width, height) = sps.pixel_dimensions().map_err(|_| TagError::BadAvcc)?;
    let codec = format!("avc1.{:02x}{:02x}{:02x}", avcc[1], avcc[2], avcc[3]);
    Ok(VideoConfig {
        avcc,
        width,
        height,
        codec,
    })
}

const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Parse an AudioSpecificConfig: object type, sample rate, channels.
pub fn parse_asc(asc: Bytes) -> Result<AudioConfig, TagError> {
    let mut bits = Bits { data: &asc, pos: 0 };
    let mut aot = bits.read(5).ok_or(TagError::BadAsc)?;
    if aot == 31 {
        aot = 32 + bits.read(6).ok_or(TagError::BadAsc)?;
    }
    let idx = bits.read(4).ok_or(TagError::BadAsc)?;
    let sample_rate = if idx == 15 {
        bits.read(24).ok_or(TagError::BadAsc)?
    } else {
        *AAC_RATES.get(idx as usize).ok_or(TagError::BadAsc)?
    };
    let channels = bits.read(4).ok_or(TagError::BadAsc)? as u8;
    if aot == 0 || sample_rate == 0 {
        return Err(TagError::BadAsc);
    }
    Ok(AudioConfig {
        codec: format!("mp4a.40.{aot}"),
        asc,
        sample_rate,
        channels,
    })
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | bit as u32;
            self.pos += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // avcC of x264 baseline-ish 320x240 (profile 0x64, level 0x0d).
    const AVCC: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    #[test]
    fn avc_sequence_header_then_frames() {
        let mut d = FlvDemux::new();
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend_from_slice(AVCC);
        match d.video(0, Bytes::from(tag)).unwrap() {
            TagEvent::Video(v) => {
                assert_eq!((v.width, v.height), (320, 240));
                assert_eq!(v.codec, "avc1.64000d");
            }
            e => panic!("{e:?}"),
        }
        let data = Bytes::from_static(&[0x27, 1, 0, 0, 40, 0, 0, 0, 1, 0x41]);
        match d.video(1000, data.clone()).unwrap() {
            TagEvent::Frame(f) => {
                assert_eq!((f.dts, f.pts, f.keyframe), (90_000, 93_600, false));
                assert_eq!(&f.payload[..], &data[5..]);
                // Sliced, not copied.
                assert_eq!(f.payload.as_ptr(), data[5..].as_ptr());
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn x264_ultrafast_avcc() {
        // What ffmpeg's libx264 (ultrafast, 320x240) puts in its FLV sequence header.
        let avcc = Bytes::from_static(&[
            0x01, 0x42, 0xc0, 0x0d, 0xff, 0xe1, 0x00, 0x16, 0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05,
            0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x23, 0xc5,
            0x0a, 0xa8, 0x01, 0x00, 0x04, 0x68, 0xce, 0x0f, 0xc8,
        ]);
        let v = parse_avcc(avcc).unwrap();
        assert_eq!((v.width, v.height), (320, 240));
        assert_eq!(v.codec, "avc1.42c00d");
    }

    #[test]
    fn aac_config() {
        let a = parse_asc(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((a.sample_rate, a.channels), (44100, 2));
        assert_eq!(a.codec, "mp4a.40.2");
        assert!(parse_asc(Bytes::from_static(&[0x12])).is_err());
    }

    #[test]
    fn timestamps_unwrap_across_32_bits() {
        let mut u = TsUnwrap::default();
        assert_eq!(u.unwrap(u32::MAX - 10), u32::MAX as i64 - 10);
        assert_eq!(u.unwrap(5), u32::MAX as i64 + 6);
        assert_eq!(u.unwrap(3), u32::MAX as i64 + 4);
    }

    #[test]
    fn garbage_is_refused_not_panicking() {
        let mut d = FlvDemux::new();
        for t in [
            &[][..],
            &[0x17],
            &[0x17, 0, 0, 0, 0, 1],
            &[0x17, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xe1, 0xff, 0xff],
            &[0x17, 1, 0, 0, 0],
        ] {
            assert!(d.video(0, Bytes::copy_from_slice(t)).is_err(), "{t:?}");
        }
        assert!(d.audio(0, Bytes::from_static(&[0xAF, 1, 1])).is_err());
    }
}
