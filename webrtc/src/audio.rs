//! AAC to Opus, once per stream whatever the number of WebRTC viewers:
//! browsers take Opus only. One task per stream with viewers subscribes to
//! the hub, decodes AAC (symphonia), converts to 48 kHz (rubato), encodes
//! 20 ms Opus packets (libopus) and broadcasts them on a bounded channel; a
//! viewer that falls behind loses packets (counted), never slows the others.
//! The task ends with the stream, or when its last viewer has gone.
//!
//! Each packet carries the presentation time of its first sample in the
//! hub's clock, the same clock as the video's, so both RTP timelines (and
//! their sender reports) stay in sync.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use banyan_relay::{AudioConfig, Hub, Item, SubscribeOptions, Track, CLOCK_HZ};
use bytes::Bytes;
use parking_lot::Mutex;
use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
use symphonia::core::formats::Packet;
use symphonia::default::codecs::AacDecoder;
use tokio::sync::broadcast;

/// Opus's only input rate that every browser decodes at.
pub const OPUS_RATE: u32 = 48_000;
/// 20 ms at 48 kHz.
const OPUS_FRAME: usize = 960;
/// Packets buffered per viewer (one second).
const CHANNEL: usize = 50;
/// Input frames per resampler call.
const RESAMPLE_CHUNK: usize = 1024;
/// A gap or jump in the AAC timeline larger than this restarts the Opus one.
const MAX_DRIFT: i64 = CLOCK_HZ / 10;
const BITRATE: i32 = 96_000;
/// Largest Opus packet written.
const MAX_PACKET: usize = 1500;

/// One Opus packet of 20 ms.
#[derive(Debug, Clone)]
pub struct OpusPacket {
    /// Presentation time of its first sample, in the hub's clock (90 kHz).
    pub pts: i64,
    pub data: Bytes,
}

/// The transcoders of the node, by stream.
#[derive(Default)]
pub struct Transcoders {
    map: Mutex<HashMap<String, broadcast::Sender<Arc<OpusPacket>>>>,
}

impl Transcoders {
    /// The stream's Opus packets from now on; starts its transcoder when
    /// none runs.
    pub fn subscribe(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        uid: &str,
    ) -> broadcast::Receiver<Arc<OpusPacket>> {
        let mut map = self.map.lock();
        if let Some(tx) = map.get(uid) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(CHANNEL);
        map.insert(uid.to_string(), tx.clone());
        metrics::gauge!("banyan_webrtc_transcoders").increment(1.0);
        let this = self.clone();
        let hub = hub.clone();
        let uid = uid.to_string();
        tokio::spawn(async move {
            run(&hub, &uid, &tx).await;
            let mut map = this.map.lock();
            if map.get(&uid).is_some_and(|t| t.same_channel(&tx)) {
                map.remove(&uid);
            }
            metrics::gauge!("banyan_webrtc_transcoders").decrement(1.0);
        });
        rx
    }
}

async fn run(hub: &Arc<Hub>, uid: &str, tx: &broadcast::Sender<Arc<OpusPacket>>) {
    let mut sub = hub.subscribe(uid, SubscribeOptions { catch_up: true });
    let mut chain: Option<Chain> = None;
    let mut config: Option<AudioConfig> = None;
    loop {
        match sub.recv().await {
            Item::Info(info) => {
                if info.audio != config {
                    config = info.audio.clone();
                    chain = config.as_ref().and_then(|c| match Chain::new(c) {
                        Ok(ch) => Some(ch),
                        Err(e) => {
                            tracing::warn!(stream = %uid, error = %e, "no Opus for this AAC");
                            None
                        }
                    });
                }
            }
            Item::Frame(f) if f.track == Track::Audio => {
                let Some(ch) = chain.as_mut() else {
                    continue;
                };
                for p in ch.push(f.pts, &f.payload) {
                    if tx.send(Arc::new(p)).is_err() {
                        return; // no viewer left
                    }
                }
            }
            Item::Frame(_) => {}
            Item::End(_) => return,
        }
        if tx.receiver_count() == 0 {
            return;
        }
    }
}

/// Why a stream's audio cannot become Opus.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("AAC decoder: {0}")]
    Decoder(String),
    #[error("resampler: {0}")]
    Resampler(String),
    #[error("Opus encoder: {0}")]
    Encoder(String),
}

/// Decoder, resampler and encoder of one audio configuration (sans-IO).
/// The AAC decoder reads the publisher's bytes: it runs under
/// `catch_unwind`, and a panic inside it costs that unit and a new decoder.
pub struct Chain {
    params: CodecParameters,
    decoder: AacDecoder,
    resampler: Option<FftFixedIn<f32>>,
    encoder: opus::Encoder,
    rate: u32,
    /// Channels encoded (1 or 2).
    channels: usize,
    /// Input samples per channel waiting for the resampler.
    pending_in: Vec<Vec<f32>>,
    /// 48 kHz samples per channel waiting for a whole Opus frame.
    pending_out: Vec<Vec<f32>>,
    /// The timeline: pts of the first input sample, input samples since,
    /// 48 kHz samples encoded since.
    anchor: Option<i64>,
    fed: u64,
    encoded: u64,
}

impl Chain {
    pub fn new(cfg: &AudioConfig) -> Result<Chain, ChainError> {
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_AAC)
            .with_sample_rate(cfg.sample_rate)
            .with_extra_data(cfg.asc.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&params, &DecoderOptions::default())
            .map_err(|e| ChainError::Decoder(e.to_string()))?;
        let channels = usize::from(cfg.channels.clamp(1, 2));
        let rate = cfg.sample_rate;
        let resampler = if rate == OPUS_RATE {
            None
        } else {
            Some(
                FftFixedIn::new(
                    rate as usize,
                    OPUS_RATE as usize,
                    RESAMPLE_CHUNK,
                    2,
                    channels,
                )
                .map_err(|e| ChainError::Resampler(e.to_string()))?,
            )
        };
        let mut encoder = opus::Encoder::new(
            OPUS_RATE,
            if channels == 2 {
                opus::Channels::Stereo
            } else {
                opus::Channels::Mono
            },
            opus::Application::Audio,
        )
        .map_err(|e| ChainError::Encoder(e.to_string()))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(|e| ChainError::Encoder(e.to_string()))?;
        Ok(Chain {
            params,
            decoder,
            resampler,
            encoder,
            rate,
            channels,
            pending_in: vec![Vec::new(); channels],
            pending_out: vec![Vec::new(); channels],
            anchor: None,
            fed: 0,
            encoded: 0,
        })
    }

    fn restart(&mut self, pts: i64) {
        self.anchor = Some(pts);
        self.fed = 0;
        self.encoded = 0;
        for c in self
            .pending_in
            .iter_mut()
            .chain(self.pending_out.iter_mut())
        {
            c.clear();
        }
        if let Some(r) = self.resampler.as_mut() {
            r.reset();
        }
    }

    /// One AAC access unit in, the Opus packets completed by it out. A unit
    /// that does not decode is dropped (counted).
    pub fn push(&mut self, pts: i64, aac: &[u8]) -> Vec<OpusPacket> {
        let expected = self
            .anchor
            .map(|a| a + (self.fed as i64) * CLOCK_HZ / i64::from(self.rate));
        match expected {
            Some(e) if (pts - e).abs() <= MAX_DRIFT => {}
            _ => self.restart(pts),
        }
        let pkt = Packet::new_from_slice(0, 0, 0, aac);
        let decoder = &mut self.decoder;
        let decoded = catch_unwind(AssertUnwindSafe(|| {
            decoder.decode(&pkt).map(|d| {
                let spec = *d.spec();
                let frames = d.frames();
                let mut buf = SampleBuffer::<f32>::new(d.capacity() as u64, spec);
                buf.copy_interleaved_ref(d);
                (frames, spec.channels.count().max(1), buf)
            })
        }));
        let (frames, src_channels, buf) = match decoded {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "undecodable AAC");
                metrics::counter!("banyan_webrtc_audio_dropped_total", "reason" => "decode")
                    .increment(1);
                return Vec::new();
            }
            Err(_) => {
                tracing::warn!("the AAC decoder panicked on a unit; a new decoder takes over");
                metrics::counter!("banyan_webrtc_audio_dropped_total", "reason" => "decoder_panic")
                    .increment(1);
                match AacDecoder::try_new(&self.params, &DecoderOptions::default()) {
                    Ok(d) => self.decoder = d,
                    Err(e) => tracing::debug!(error = %e, "AAC decoder"),
                }
                return Vec::new();
            }
        };
        let samples = buf.samples();
        for i in 0..frames {
            for (c, lane) in self.pending_in.iter_mut().enumerate() {
                let c = c.min(src_channels - 1);
                lane.push(samples.get(i * src_channels + c).copied().unwrap_or(0.0));
            }
        }
        self.fed += frames as u64;
        self.resample();
        self.encode()
    }

    fn resample(&mut self) {
        let Some(r) = self.resampler.as_mut() else {
            for (i, o) in self.pending_in.iter_mut().zip(self.pending_out.iter_mut()) {
                o.append(i);
            }
            return;
        };
        while self.pending_in[0].len() >= r.input_frames_next() {
            let n = r.input_frames_next();
            let chunk: Vec<&[f32]> = self.pending_in.iter().map(|l| &l[..n]).collect();
            match r.process(&chunk, None) {
                Ok(out) => {
                    for (o, lane) in self.pending_out.iter_mut().zip(out) {
                        o.extend_from_slice(&lane);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "resampling"),
            }
            for lane in self.pending_in.iter_mut() {
                lane.drain(..n);
            }
        }
    }

    fn encode(&mut self) -> Vec<OpusPacket> {
        let mut out = Vec::new();
        let delay = self.resampler.as_ref().map_or(0, |r| r.output_delay()) as i64;
        let mut interleaved = vec![0f32; OPUS_FRAME * self.channels];
        let mut packet = vec![0u8; MAX_PACKET];
        while self.pending_out[0].len() >= OPUS_FRAME {
            for i in 0..OPUS_FRAME {
                for c in 0..self.channels {
                    interleaved[i * self.channels + c] = self.pending_out[c][i];
                }
            }
            for lane in self.pending_out.iter_mut() {
                lane.drain(..OPUS_FRAME);
            }
            let at = self.encoded as i64 - delay;
            self.encoded += OPUS_FRAME as u64;
            match self.encoder.encode_float(&interleaved, &mut packet) {
                Ok(n) => out.push(OpusPacket {
                    pts: self.anchor.unwrap_or(0) + at * CLOCK_HZ / i64::from(OPUS_RATE),
                    data: Bytes::copy_from_slice(&packet[..n]),
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "Opus encoding");
                    metrics::counter!("banyan_webrtc_audio_dropped_total", "reason" => "encode")
                        .increment(1);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, channels: u8) -> AudioConfig {
        // AudioSpecificConfig: AAC-LC, the rate's index, the channels.
        let idx = [
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
        ]
        .iter()
        .position(|&r| r == rate)
        .unwrap() as u8;
        let asc = [(2 << 3) | (idx >> 1), ((idx & 1) << 7) | (channels << 3)];
        AudioConfig {
            asc: Bytes::copy_from_slice(&asc),
            sample_rate: rate,
            channels,
            codec: "mp4a.40.2".into(),
        }
    }

    #[test]
    fn garbage_aac_is_dropped_not_fatal() {
        let mut ch = Chain::new(&config(44_100, 2)).expect("a chain");
        for i in 0..50 {
            let junk: Vec<u8> = (0..(i * 7 % 300)).map(|b| (b * 13 + i) as u8).collect();
            let _ = ch.push(i as i64 * 1920, &junk);
        }
    }

    /// A unit that made symphonia's AAC decoder panic (found by the
    /// webrtc_peer_bytes fuzz target): contained, and the chain goes on.
    #[test]
    fn a_decoder_panic_is_contained() {
        let mut ch = Chain::new(&config(44_100, 2)).expect("a chain");
        // The fuzz input is a mode byte, then the unit.
        let unit =
            &include_bytes!("../../fuzz/regressions/webrtc_peer_bytes/aac_decoder_panic")[1..];
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        for i in 0..3 {
            assert!(ch.push(i * 2090, unit).is_empty());
        }
        std::panic::set_hook(hook);
    }

    #[test]
    fn chains_build_for_common_rates() {
        for (rate, ch) in [(48_000, 2), (44_100, 2), (44_100, 1), (32_000, 1)] {
            let c = Chain::new(&config(rate, ch)).expect("a chain");
            assert_eq!(c.channels, usize::from(ch));
        }
    }
}
