//! `clock-frames`: video frames that carry the wall clock, for glass-to-glass latency.
//!
//! `clock-frames gen` writes raw 8-bit gray 320x240 frames to stdout in real time (`--fps`,
//! default 25, for `--seconds`). Each frame shows, as 32 large black or white cells (8 columns
//! by 4 rows, 40x60 pixels each), the wall clock in milliseconds at the instant the frame was
//! made (low 24 bits) and an 8-bit check. Pipe it into an encoder
//! (`ffmpeg -f rawvideo -pix_fmt gray -s 320x240 -framerate 25 -i - ...`).
//!
//! `clock-frames read` reads such frames, decoded, from stdin (raw gray 320x240, e.g.
//! `ffmpeg -i URL -map 0:v -fps_mode passthrough -f rawvideo -pix_fmt gray -s 320x240 -`),
//! and for every frame whose cells decode with a good check takes `now - shown clock`: the
//! time from the frame being made at the publisher to the player having it decoded. Frames of
//! the first `--skip` seconds are left out (join). It stops after `--seconds` or at the end of
//! its input and prints one JSON line: count, undecodable frames, p50/p95/min/max in ms.
//!
//! The same layout is read in a browser by bench/hls_g2g.mjs.

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const W: usize = 320;
const H: usize = 240;
const COLS: usize = 8;
const ROWS: usize = 4;
const CELL_W: usize = W / COLS;
const CELL_H: usize = H / ROWS;
const MASK: u64 = 0xff_ffff;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The 32 bits a frame shows: 24 bits of clock, then 8 bits of check.
fn word(ms: u64) -> u32 {
    let v = (ms & MASK) as u32;
    let check = (v ^ (v >> 8) ^ (v >> 16) ^ 0xa5) & 0xff;
    v | check << 24
}

/// The clock a decoded word shows, if its check holds.
fn unword(w: u32) -> Option<u64> {
    let v = w & 0xff_ffff;
    (word(u64::from(v)) == w).then_some(u64::from(v))
}

fn draw(frame: &mut [u8], w: u32) {
    for (i, px) in frame.iter_mut().enumerate() {
        let (x, y) = (i % W, i / W);
        let bit = (y / CELL_H) * COLS + x / CELL_W;
        *px = if w >> bit & 1 == 1 { 220 } else { 30 };
    }
}

fn read_word(frame: &[u8]) -> u32 {
    let mut w = 0u32;
    for bit in 0..COLS * ROWS {
        let (cx, cy) = ((bit % COLS) * CELL_W, (bit / COLS) * CELL_H);
        let mut sum = 0u64;
        let mut n = 0u64;
        for y in cy + CELL_H / 4..cy + CELL_H * 3 / 4 {
            for x in cx + CELL_W / 4..cx + CELL_W * 3 / 4 {
                sum += u64::from(frame[y * W + x]);
                n += 1;
            }
        }
        if sum / n.max(1) >= 128 {
            w |= 1 << bit;
        }
    }
    w
}

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gen() -> std::io::Result<()> {
    let fps = arg("--fps", 25.0).max(1.0);
    let seconds = arg("--seconds", 20.0);
    let frames = (fps * seconds) as u64;
    let mut out = std::io::stdout().lock();
    let mut frame = vec![0u8; W * H];
    let start = Instant::now();
    for k in 0..frames {
        let due = start + Duration::from_secs_f64(k as f64 / fps);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        draw(&mut frame, word(now_ms()));
        out.write_all(&frame)?;
        out.flush()?;
    }
    Ok(())
}

fn read() -> std::io::Result<()> {
    let skip = Duration::from_secs_f64(arg("--skip", 3.0));
    let seconds = Duration::from_secs_f64(arg("--seconds", 15.0));
    let mut input = std::io::stdin().lock();
    let mut frame = vec![0u8; W * H];
    let mut first = None;
    let mut lat = Vec::new();
    let (mut bad, mut early) = (0u64, 0u64);
    loop {
        if input.read_exact(&mut frame).is_err() {
            break;
        }
        let (now, at) = (Instant::now(), now_ms());
        let t0 = *first.get_or_insert(now);
        if now.duration_since(t0) > seconds {
            break;
        }
        if now.duration_since(t0) < skip {
            early += 1;
            continue;
        }
        match unword(read_word(&frame)) {
            Some(shown) => lat.push((at.wrapping_sub(shown) & MASK) as f64),
            None => bad += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| {
        lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"frames\":{},\"skipped\":{},\"undecodable\":{},\"p50_ms\":{},\"p95_ms\":{},\"min_ms\":{},\"max_ms\":{}}}",
        lat.len(),
        early,
        bad,
        q(0.5),
        q(0.95),
        q(0.0),
        q(1.0)
    );
    Ok(())
}

fn main() {
    let r = match std::env::args().nth(1).as_deref() {
        Some("gen") => gen(),
        Some("read") => read(),
        _ => {
            eprintln!(
                "usage: clock-frames gen [--fps 25] [--seconds 20] | clock-frames read [--skip 3] [--seconds 15]"
            );
            std::process::exit(2);
        }
    };
    // A closed pipe at the end of a run is the normal way to stop.
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("clock-frames: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drawn_clock_reads_back() {
        let mut f = vec![0u8; W * H];
        for ms in [0u64, 1, 0x12_3456, 1_764_000_000_123] {
            draw(&mut f, word(ms));
            assert_eq!(unword(read_word(&f)), Some(ms & MASK));
        }
    }

    #[test]
    fn a_flipped_cell_fails_the_check() {
        let w = word(123_456);
        assert_eq!(unword(w ^ 1 << 3), None);
        assert_eq!(unword(w ^ 1 << 27), None);
    }
}
