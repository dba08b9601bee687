//! Frames and codec configuration to FLV tag payloads (the bodies of RTMP
//! video and audio messages).
//!
//! Sans-IO and allocation-light: the per-frame functions return only the few
//! header bytes that precede the frame's payload, so a writer can emit the
//! header followed by the shared [`Frame::payload`] without joining them.

use banyan_relay::{AudioConfig, Frame, VideoConfig};
use bytes::{BufMut, Bytes, BytesMut};

/// FLV codec id of H.264 (AVC).
pub const CODEC_AVC: u8 = 7;
/// FLV sound format of AAC.
pub const SOUND_AAC: u8 = 10;
/// First byte of every AAC audio tag: AAC, 44 kHz, 16-bit, stereo (the
/// fields are fixed for AAC; the real values are in the AudioSpecificConfig).
pub const AAC_TAG_BYTE: u8 = (SOUND_AAC << 4) | 0x0F;

/// AVCPacketType values.
pub const AVC_SEQUENCE_HEADER: u8 = 0;
pub const AVC_NALU: u8 = 1;
/// AACPacketType values.
pub const AAC_SEQUENCE_HEADER: u8 = 0;
pub const AAC_RAW: u8 = 1;

/// The video tag payload announcing the decoder configuration (avcC).
pub fn video_sequence_header(cfg: &VideoConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + cfg.avcc.len());
    b.put_u8((1 << 4) | CODEC_AVC);
    b.put_u8(AVC_SEQUENCE_HEADER);
    b.put_slice(&[0, 0, 0]);
    b.put_slice(&cfg.avcc);
    b.freeze()
}

/// The audio tag payload announcing the AudioSpecificConfig.
pub fn audio_sequence_header(cfg: &AudioConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + cfg.asc.len());
    b.put_u8(AAC_TAG_BYTE);
    b.put_u8(AAC_SEQUENCE_HEADER);
    b.put_slice(&cfg.asc);
    b.freeze()
}

/// The five bytes that precede a video frame's AVCC payload in its tag:
/// frame type, codec, packet type and the composition time (pts - dts, in
/// milliseconds, signed 24-bit).
pub fn video_tag_header(frame: &Frame) -> [u8; 5] {
    let frame_type: u8 = if frame.keyframe { 1 } else { 2 };
    let cts = ((frame.pts - frame.dts).div_euclid(90)).clamp(-(1 << 23), (1 << 23) - 1) as i32;
    let c = (cts as u32).to_be_bytes();
    [(frame_type << 4) | CODEC_AVC, AVC_NALU, c[1], c[2], c[3]]
}

/// The two bytes that precede a raw AAC frame in its tag.
pub fn audio_tag_header() -> [u8; 2] {
    [AAC_TAG_BYTE, AAC_RAW]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_time_is_signed_milliseconds() {
        let f = Frame::video(9000 + 180, 9000, true, Bytes::new());
        assert_eq!(video_tag_header(&f), [0x17, 1, 0, 0, 2]);
        let f = Frame::video(9000 - 90, 9000, false, Bytes::new());
        assert_eq!(video_tag_header(&f), [0x27, 1, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn sequence_headers_carry_the_config() {
        let v = VideoConfig {
            avcc: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            width: 1,
            height: 1,
            codec: String::new(),
        };
        assert_eq!(
            &video_sequence_header(&v)[..],
            &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]
        );
        let a = AudioConfig {
            asc: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44100,
            channels: 2,
            codec: String::new(),
        };
        assert_eq!(&audio_sequence_header(&a)[..], &[0xAF, 0, 0x12, 0x10]);
    }
}
