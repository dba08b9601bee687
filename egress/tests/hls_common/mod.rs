//! Test media for the HLS tests: ffmpeg makes a short H.264 Annex B + AAC
//! ADTS clip, a tiny splitter turns it into relay frames.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use banyan_relay::{AudioConfig, Frame, VideoConfig};
use bytes::Bytes;

/// Kills and reaps a child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temp directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "banyan-hls-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Clip {
    pub video: VideoConfig,
    pub audio: AudioConfig,
    /// Frames in decode order, video and audio interleaved.
    pub frames: Vec<Frame>,
    pub h264: PathBuf,
    pub aac: PathBuf,
}

pub const FPS: i64 = 25;

/// Make a clip of `secs` seconds: 320x240 at 25 fps, one keyframe a second.
pub fn make_clip(dir: &Path, secs: u32) -> Clip {
    let h264 = dir.join("src.h264");
    let aac = dir.join("src.aac");
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args(["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast"])
        .args([
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-threads", "1", "-f", "h264"])
        .arg(&h264)
        .args(["-t", &secs.to_string()])
        .args(["-map", "1:a", "-c:a", "aac", "-b:a", "64k", "-f", "adts"])
        .arg(&aac)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg made the clip");
    let (video, vframes) = split_h264(&std::fs::read(&h264).unwrap());
    let (audio, aframes) = split_adts(&std::fs::read(&aac).unwrap());
    let mut frames: Vec<Frame> = vframes.into_iter().chain(aframes).collect();
    frames.sort_by_key(|f| (f.dts, f.track != banyan_relay::Track::Video));
    Clip {
        video,
        audio,
        frames,
        h264,
        aac,
    }
}

fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let mut e = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        while e > s && data[e - 1] == 0 {
            e -= 1;
        }
        if e > s {
            out.push(&data[s..e]);
        }
    }
    out
}

/// Annex B to AVCC access units (AUD dropped), plus the configuration.
pub fn split_h264(data: &[u8]) -> (VideoConfig, Vec<Frame>) {
    let mut sps = None;
    let mut pps = None;
    let mut aus: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_key = false;
    let mut cur_has_vcl = false;
    for nal in nal_units(data) {
        let t = nal[0] & 0x1f;
        let vcl = t == 1 || t == 5;
        let first_slice = vcl && nal.len() > 1 && nal[1] & 0x80 != 0;
        if cur_has_vcl && (!vcl || first_slice) {
            aus.push((std::mem::take(&mut cur), cur_key));
            cur_key = false;
            cur_has_vcl = false;
        }
        match t {
            7 => sps = Some(nal.to_vec()),
            8 => pps = Some(nal.to_vec()),
            _ => {}
        }
        if t == 9 {
            continue;
        }
        cur.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        cur.extend_from_slice(nal);
        cur_key |= t == 5;
        cur_has_vcl |= vcl;
    }
    if cur_has_vcl {
        aus.push((cur, cur_key));
    }
    let sps = sps.expect("an SPS");
    let pps = pps.expect("a PPS");
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(&sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(&pps);
    let cfg = VideoConfig {
        avcc: Bytes::from(avcc),
        width: 320,
        height: 240,
        codec: format!("avc1.{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]),
    };
    let step = 90_000 / FPS;
    let frames = aus
        .into_iter()
        .enumerate()
        .map(|(i, (au, key))| Frame::video(i as i64 * step, i as i64 * step, key, Bytes::from(au)))
        .collect();
    (cfg, frames)
}

/// ADTS to raw AAC frames, plus the configuration.
pub fn split_adts(data: &[u8]) -> (AudioConfig, Vec<Frame>) {
    let mut i = 0;
    let mut frames = Vec::new();
    let mut cfg = None;
    while i + 7 <= data.len() {
        let h = &data[i..];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync");
        let protection_absent = h[1] & 1 == 1;
        let len = (((h[3] & 3) as usize) << 11) | ((h[4] as usize) << 3) | ((h[5] as usize) >> 5);
        let hdr = if protection_absent { 7 } else { 9 };
        let profile = ((h[2] >> 6) & 3) + 1;
        let fi = (h[2] >> 2) & 0xf;
        let chan = ((h[2] & 1) << 2) | (h[3] >> 6);
        cfg.get_or_insert_with(|| AudioConfig {
            asc: Bytes::from(vec![
                (profile << 3) | (fi >> 1),
                ((fi & 1) << 7) | (chan << 3),
            ]),
            sample_rate: 48_000,
            channels: chan,
            codec: format!("mp4a.40.{profile}"),
        });
        let n = frames.len() as i64;
        frames.push(Frame::audio(
            n * 1024 * 90_000 / 48_000,
            Bytes::copy_from_slice(&data[i + hdr..i + len]),
        ));
        i += len;
    }
    (cfg.expect("ADTS frames"), frames)
}

/// Decoded-frame hashes (the md5 column of ffmpeg's framemd5) of one stream type.
pub fn framemd5(input: &str, stream: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(extra)
        .args(["-i", input, "-map", stream, "-f", "framemd5", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "ffmpeg framemd5 of {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_string()))
        .collect()
}

/// Position of `needle` as a contiguous run inside `hay`.
pub fn find_run(hay: &[String], needle: &[String]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| hay[i..i + needle.len()] == *needle)
}
