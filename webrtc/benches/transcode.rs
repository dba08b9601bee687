//! The audio transcoders' cost per stream: CPU time per second of audio,
//! i.e. the share of one core that one stream's transcoder takes.
//!
//!   cargo bench -p banyan-webrtc --bench transcode [-- SECONDS]
//!
//! Input: a 440 Hz tone with a slow sweep (stereo, 48 kHz) encoded to 20 ms
//! Opus packets, as a browser sends over WHIP. Measured, each on its own:
//! Opus -> AAC (a WHIP publisher, once per stream) and AAC -> Opus (WHEP
//! viewers of an RTMP/SRT stream, once per stream), fed as fast as they go.

use std::time::Instant;

use banyan_webrtc::audio::Chain;
use banyan_webrtc::to_aac::{aac_config, OpusToAac};

fn main() {
    let secs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60);
    let packets = secs * 50;
    let mut enc =
        opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio).unwrap();
    enc.set_bitrate(opus::Bitrate::Bits(96_000)).unwrap();
    let opus: Vec<Vec<u8>> = (0..packets)
        .map(|p| {
            let pcm: Vec<i16> = (0..960)
                .flat_map(|i| {
                    let t = (p * 960 + i) as f64 / 48_000.0;
                    let f = 440.0 + 200.0 * (t * 0.5).sin();
                    let v = ((t * f * std::f64::consts::TAU).sin() * 9000.0) as i16;
                    [v, v / 2]
                })
                .collect();
            enc.encode_vec(&pcm, 1500).unwrap()
        })
        .collect();

    let mut to_aac = OpusToAac::new().unwrap();
    let started = Instant::now();
    let mut aac = Vec::new();
    for (i, p) in opus.iter().enumerate() {
        aac.extend(to_aac.push(i as i64 * 1800, p));
    }
    let opus_to_aac = started.elapsed().as_secs_f64();

    let mut chain = Chain::new(&aac_config()).unwrap();
    let started = Instant::now();
    let mut back = 0usize;
    for f in &aac {
        back += chain.push(f.pts, &f.payload).len();
    }
    let aac_to_opus = started.elapsed().as_secs_f64();

    let share = |t: f64| t / secs as f64 * 100.0;
    println!(
        "audio: {secs} s, {} Opus packets in, {} AAC frames, {back} Opus packets back",
        opus.len(),
        aac.len()
    );
    println!(
        "Opus -> AAC (WHIP, per stream): {:.3} s CPU, {:.2} % of one core",
        opus_to_aac,
        share(opus_to_aac)
    );
    println!(
        "AAC -> Opus (WHEP, per stream): {:.3} s CPU, {:.2} % of one core",
        aac_to_opus,
        share(aac_to_opus)
    );
}
