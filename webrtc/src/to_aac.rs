//! Opus to AAC, once per WHIP publisher: RTMP(S), SRT and HLS viewers take
//! AAC. Each Opus packet is decoded (libopus) to 48 kHz stereo, the samples
//! are cut into 1,024-sample AAC-LC frames (libfdk-aac, raw access units)
//! and each frame is timed in the hub's clock by the samples before it.
//!
//! The timeline follows the packets' own times: a gap or jump larger than
//! [`MAX_DRIFT`] (a lost run, a restarted sender) re-anchors it, so audio
//! stays within that of the video it was captured with.

use banyan_relay::{AudioConfig, Frame, CLOCK_HZ};
use bytes::Bytes;

use crate::audio::OPUS_RATE;

/// Samples per channel of one AAC-LC frame.
const AAC_FRAME: usize = 1024;
/// Stereo throughout (a mono Opus stream decodes to two equal channels).
const CHANNELS: usize = 2;
/// The longest Opus packet decodes to 120 ms.
const MAX_OPUS_SAMPLES: usize = 5760;
/// A jump in the packets' times larger than this re-anchors the timeline.
const MAX_DRIFT: i64 = CLOCK_HZ / 10;
const BITRATE: u32 = 128_000;
/// Samples buffered at most before input is dropped (one second).
const MAX_PENDING: usize = OPUS_RATE as usize * CHANNELS;

/// Why the transcoder could not start.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    #[error("opus decoder: {0}")]
    Opus(#[from] opus::Error),
    #[error("AAC encoder: {0:?}")]
    Aac(fdk_aac::enc::EncoderError),
}

/// The AAC configuration of every transcoded stream: AAC-LC, 48 kHz, stereo.
pub fn aac_config() -> AudioConfig {
    AudioConfig {
        // AudioSpecificConfig: object type 2 (5 bits), rate index 3 (4 bits),
        // channel configuration 2 (4 bits), three zero flags.
        asc: Bytes::from_static(&[0x11, 0x90]),
        sample_rate: OPUS_RATE,
        channels: CHANNELS as u8,
        codec: "mp4a.40.2".into(),
    }
}

/// One stream's Opus-to-AAC transcoder.
pub struct OpusToAac {
    decoder: opus::Decoder,
    encoder: fdk_aac::enc::Encoder,
    /// Decoded samples (interleaved) not yet encoded.
    pending: Vec<i16>,
    /// Samples per channel handed to the encoder so far.
    fed: u64,
    /// AAC frames produced so far.
    produced: u64,
    /// The encoder's delay in samples per channel.
    delay: u64,
    /// The timeline: the sample position `anchor.0` is at `anchor.1` (90 kHz).
    anchor: Option<(u64, i64)>,
    decoded: Vec<i16>,
    out: Vec<u8>,
}

impl OpusToAac {
    pub fn new() -> Result<OpusToAac, TranscodeError> {
        let decoder = opus::Decoder::new(OPUS_RATE, opus::Channels::Stereo)?;
        let encoder = fdk_aac::enc::Encoder::new(fdk_aac::enc::EncoderParams {
            bit_rate: fdk_aac::enc::BitRate::Cbr(BITRATE),
            sample_rate: OPUS_RATE,
            transport: fdk_aac::enc::Transport::Raw,
            channels: fdk_aac::enc::ChannelMode::Stereo,
            audio_object_type: fdk_aac::enc::AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(TranscodeError::Aac)?;
        let info = encoder.info().map_err(TranscodeError::Aac)?;
        Ok(OpusToAac {
            decoder,
            delay: u64::from(info.nDelay),
            out: vec![0; (info.maxOutBufBytes as usize).max(2048)],
            encoder,
            pending: Vec::with_capacity(MAX_PENDING),
            fed: 0,
            produced: 0,
            anchor: None,
            decoded: vec![0; MAX_OPUS_SAMPLES * CHANNELS],
        })
    }

    /// The 90 kHz time of a sample position on the current timeline.
    fn time_of(&self, pos: i64) -> Option<i64> {
        let (at, pts) = self.anchor?;
        let d = pos - at as i64;
        Some(pts + d * CLOCK_HZ / i64::from(OPUS_RATE))
    }

    /// One Opus packet whose first sample is at `pts` (90 kHz); returns the
    /// AAC frames it completes. A packet that does not decode is dropped
    /// (counted) and the timeline goes on.
    pub fn push(&mut self, pts: i64, packet: &[u8]) -> Vec<Frame> {
        let n = match self.decoder.decode(packet, &mut self.decoded, false) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable Opus packet dropped");
                metrics::counter!("banyan_whip_audio_dropped_total", "reason" => "decode")
                    .increment(1);
                return Vec::new();
            }
        };
        // Where this packet's first sample falls on the encoder's input.
        let pos = self.fed + (self.pending.len() / CHANNELS) as u64;
        match self.time_of(pos as i64) {
            Some(expected) if (pts - expected).abs() <= MAX_DRIFT => {}
            _ => self.anchor = Some((pos, pts)),
        }
        if self.pending.len() + n * CHANNELS > MAX_PENDING {
            metrics::counter!("banyan_whip_audio_dropped_total", "reason" => "backlog")
                .increment(1);
            return Vec::new();
        }
        self.pending
            .extend_from_slice(&self.decoded[..n * CHANNELS]);
        let mut frames = Vec::new();
        let chunk = AAC_FRAME * CHANNELS;
        let mut start = 0;
        while self.pending.len() - start >= chunk {
            let input = &self.pending[start..start + chunk];
            start += chunk;
            self.fed += AAC_FRAME as u64;
            let info = match self.encoder.encode(input, &mut self.out) {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(error = ?e, "AAC encoding failed; frame dropped");
                    metrics::counter!("banyan_whip_audio_dropped_total", "reason" => "encode")
                        .increment(1);
                    continue;
                }
            };
            if info.output_size == 0 {
                continue;
            }
            // The k-th frame out holds the samples from k * 1024 - delay
            // (the first ones are the encoder's priming).
            let first = (self.produced * AAC_FRAME as u64) as i64 - self.delay as i64;
            self.produced += 1;
            let Some(t) = self.time_of(first) else {
                continue;
            };
            frames.push(Frame::audio(
                t,
                Bytes::copy_from_slice(&self.out[..info.output_size]),
            ));
        }
        self.pending.drain(..start);
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms Opus packets of a 440 Hz tone.
    fn tone(packets: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(OPUS_RATE, opus::Channels::Stereo, opus::Application::Audio)
                .unwrap();
        let mut out = Vec::new();
        for p in 0..packets {
            let pcm: Vec<i16> = (0..960)
                .flat_map(|i| {
                    let t = (p * 960 + i) as f64 / 48_000.0;
                    let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
                    [v, v]
                })
                .collect();
            out.push(enc.encode_vec(&pcm, 1500).unwrap());
        }
        out
    }

    #[test]
    fn opus_becomes_timed_aac_frames() {
        let mut t = OpusToAac::new().unwrap();
        let mut frames = Vec::new();
        let start = 900_000;
        for (i, p) in tone(100).iter().enumerate() {
            frames.extend(t.push(start + i as i64 * 1800, p));
        }
        // Two seconds of audio: about 93 frames of 1,024 samples, less the
        // encoder's delay.
        assert!((85..=94).contains(&frames.len()), "{}", frames.len());
        for w in frames.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1920, "1,024 samples at 48 kHz");
        }
        let priming = t.delay as i64 * CLOCK_HZ / 48_000;
        assert_eq!(frames[0].pts, start - priming, "sample 0 keeps its time");
        assert!(frames.iter().all(|f| !f.payload.is_empty()));
    }

    #[test]
    fn a_jump_re_anchors_and_garbage_is_dropped() {
        let mut t = OpusToAac::new().unwrap();
        let packets = tone(60);
        let mut last = None;
        for (i, p) in packets.iter().enumerate() {
            // Half way, the sender's clock jumps ten seconds ahead.
            let pts = i as i64 * 1800 + if i >= 30 { 900_000 } else { 0 };
            for f in t.push(pts, p) {
                last = Some(f.pts);
            }
        }
        assert!(last.unwrap() > 900_000, "{last:?}");
        assert!(t.push(0, &[0xff; 3]).is_empty());
    }
}
