//! The captioned samples (samples/captions/) read by decoders we did not
//! write (ffprobe, ffmpeg's CEA-608 decoder via `movie=...[out0+subcc]`) and
//! by our own extractor, 608 decoder and WebVTT writer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banyan_captions::inject::{access_units, cc_data_bytes, inject_annexb, sei_nal, Script};
use banyan_captions::{webvtt_segment, Cea608Decoder, Channel, Cue, Extractor};

const FRAME: i64 = 3000; // 90 kHz ticks per frame at 30 fps

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/captions")
}

/// Kills the child if the test ends early.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command to completion within 60 s; returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, Vec<u8>, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn (is ffmpeg installed?)");
    let mut g = Guard(child);
    let mut out = g.0.stdout.take().unwrap();
    let mut err = g.0.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = String::new();
        std::io::Read::read_to_string(&mut err, &mut v).ok();
        v
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = g.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "command timed out: {cmd:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), o.join().unwrap(), e.join().unwrap())
}

/// A scratch directory removed at the end of the test.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("banyan-captions-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (start s, end s, text) blocks of an expected-*.txt file.
fn expected(name: &str) -> Vec<(f64, f64, String)> {
    let text = std::fs::read_to_string(samples().join(name)).unwrap();
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|b| {
            let (times, body) = b.split_once('\n').unwrap();
            let (s, e) = times.split_once(" --> ").unwrap();
            (
                s.trim().parse().unwrap(),
                e.trim().parse().unwrap(),
                body.trim().to_string(),
            )
        })
        .collect()
}

/// Cues of an SRT file, tags (`<font ...>`, `{\an7}`) removed.
fn parse_srt(srt: &str) -> Vec<(f64, f64, String)> {
    let secs = |t: &str| {
        let t = t.trim().replace(',', ".");
        let p: Vec<f64> = t.split(':').map(|x| x.parse().unwrap()).collect();
        p[0] * 3600.0 + p[1] * 60.0 + p[2]
    };
    srt.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|b| b.contains(" --> "))
        .map(|b| {
            let mut lines = b.lines().skip_while(|l| !l.contains(" --> "));
            let (s, e) = lines.next().unwrap().split_once(" --> ").unwrap();
            let mut text = lines.collect::<Vec<_>>().join("\n");
            while let Some(a) = text.find(['<', '{']) {
                let close = if text[a..].starts_with('<') { '>' } else { '}' };
                let Some(b) = text[a..].find(close) else {
                    break;
                };
                text.replace_range(a..a + b + 1, "");
            }
            (secs(s), secs(e), text.trim().to_string())
        })
        .collect()
}

fn assert_same_captions(got: &[(f64, f64, String)], want: &[(f64, f64, String)], tol: f64) {
    let texts = |v: &[(f64, f64, String)]| v.iter().map(|c| c.2.clone()).collect::<Vec<_>>();
    assert_eq!(texts(got), texts(want));
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.0 - w.0).abs() <= tol && (g.1 - w.1).abs() <= tol,
            "{g:?} vs {w:?}"
        );
    }
}

/// ffmpeg's own 608 decoder on one field of a file.
fn ffmpeg_608(file: &Path, second_field: bool) -> Vec<(f64, f64, String)> {
    let dir = TempDir::new(if second_field { "f2" } else { "f1" });
    let srt = dir.0.join("out.srt");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
    if second_field {
        cmd.args(["-data_field", "second"]);
    }
    cmd.arg("-f")
        .arg("lavfi")
        .arg("-i")
        .arg(format!("movie={}[out0+subcc]", file.display()))
        .args(["-map", "0:s"])
        .arg(&srt);
    let (ok, _, err) = run(&mut cmd);
    assert!(ok, "ffmpeg: {err}");
    parse_srt(&std::fs::read_to_string(&srt).unwrap())
}

#[test]
fn ffprobe_reports_closed_captions() {
    for f in ["captioned.ts", "captioned.flv"] {
        let (ok, _, err) = run(Command::new("ffprobe")
            .arg("-hide_banner")
            .arg(samples().join(f)));
        assert!(ok, "{err}");
        let video = err
            .lines()
            .find(|l| l.contains("Video: h264"))
            .unwrap_or("");
        assert!(video.contains("Closed Captions"), "{f}: {err}");
    }
}

#[test]
fn ffmpeg_decodes_cc1_from_ts_and_cc3_from_flv() {
    let cc1 = ffmpeg_608(&samples().join("captioned.ts"), false);
    assert_same_captions(&cc1, &expected("expected-cc1.txt"), 0.1);
    let cc3 = ffmpeg_608(&samples().join("captioned.flv"), true);
    assert_same_captions(&cc3, &expected("expected-cc3.txt"), 0.1);
}

/// The sample's video as access units (Annex B NAL lists), via ffmpeg.
fn video_access_units(file: &str) -> Vec<Vec<u8>> {
    let (ok, es, err) = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(samples().join(file))
        .args(["-map", "0:v", "-c:v", "copy", "-f", "h264", "-"]));
    assert!(ok, "{err}");
    access_units(&es)
        .into_iter()
        .map(|nals| {
            // back to one Annex B buffer per access unit
            let mut v = Vec::new();
            for n in nals {
                v.extend_from_slice(&[0, 0, 0, 1]);
                v.extend_from_slice(n);
            }
            v
        })
        .collect()
}

fn to_avcc(annexb: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for nal in access_units(annexb).concat() {
        v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        v.extend_from_slice(nal);
    }
    v
}

fn cue_secs(cues: &[Cue]) -> Vec<(f64, f64, String)> {
    cues.iter()
        .map(|c| {
            (
                c.start as f64 / 90_000.0,
                c.end as f64 / 90_000.0,
                c.text.clone(),
            )
        })
        .collect()
}

/// What reaches the hub: the captions frames of the sample, per frame.
fn caption_frames(file: &str, avcc: bool) -> (Vec<(i64, bytes::Bytes)>, Extractor) {
    let aus = video_access_units(file);
    assert_eq!(aus.len(), 600, "20 s at 30 fps");
    let mut x = Extractor::new();
    let mut frames = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        let pts = i as i64 * FRAME;
        let cc = if avcc {
            let a = to_avcc(au);
            let before = a.clone();
            let cc = x.push_avcc(pts, &a);
            assert_eq!(a, before);
            cc
        } else {
            x.push_annexb(pts, au)
        };
        frames.push((pts, cc.expect("every frame of the sample carries cc_data")));
    }
    (frames, x)
}

#[test]
fn extractor_and_decoder_read_the_samples() {
    for (file, avcc) in [("captioned.ts", false), ("captioned.flv", true)] {
        let (frames, x) = caption_frames(file, avcc);
        assert_eq!(x.stats().errors(), 0, "{:?}", x.stats());
        let chans: Vec<Channel> = x.channels().iter().collect();
        assert_eq!(chans, [Channel::Cc(1), Channel::Cc(3), Channel::Service(1)]);

        for (n, name) in [(1, "expected-cc1.txt"), (3, "expected-cc3.txt")] {
            let mut d = Cea608Decoder::new(n);
            let mut cues = Vec::new();
            for (pts, t) in &frames {
                cues.extend(d.push(*pts, t));
            }
            cues.extend(d.flush(600 * FRAME));
            // frame-exact: pop-on captions show on their End Of Caption frame
            assert_same_captions(&cue_secs(&cues), &expected(name), 0.001);
        }

        // 708 service 1 text, through cea708-types' own packet parser.
        let mut p = cea708_types::CCDataParser::new();
        let mut text = String::new();
        for (_, t) in &frames {
            let mut cc = cc_data_bytes(t, (t.len() / 3) as u8);
            cc.pop(); // this parser takes no trailing marker byte
            p.push(&cc).unwrap();
            while let Some(packet) = p.pop_packet() {
                for s in packet.services().iter().filter(|s| s.number() == 1) {
                    for c in s.codes() {
                        match c {
                            cea708_types::tables::Code::CR => text.push('\n'),
                            cea708_types::tables::Code::DeleteWindows(_) => text.push('#'),
                            c => text.extend(c.char()),
                        }
                    }
                }
            }
        }
        let shown: Vec<&str> = text.split('#').filter(|s| !s.is_empty()).collect();
        let want: Vec<String> = expected("expected-service1.txt")
            .into_iter()
            .map(|c| c.2)
            .collect();
        assert_eq!(shown, want);
    }
}

#[test]
fn webvtt_segments_follow_the_video() {
    let (frames, _) = caption_frames("captioned.ts", false);
    let mut d = Cea608Decoder::new(1);
    let seg = 2 * 90_000; // 2 s segments
    let mut done: Vec<Cue> = Vec::new();
    let mut vtt = Vec::new();
    let mut seg_start = 0;
    for (pts, t) in &frames {
        if *pts >= seg_start + seg {
            let seg_end = seg_start + seg;
            done.extend(d.push(*pts, t));
            let mut cues = done.clone();
            cues.extend(d.showing(seg_end));
            vtt.push((
                seg_start,
                webvtt_segment(&cues, seg_start, seg_end, seg_start + 126_000),
            ));
            seg_start = seg_end;
        } else {
            done.extend(d.push(*pts, t));
        }
    }
    // Read the segments back: absolute times via X-TIMESTAMP-MAP.
    let mut got: Vec<(f64, f64, String)> = Vec::new();
    for (seg_start, text) in &vtt {
        assert!(text.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:"));
        let mpegts: i64 = text
            .split("MPEGTS:")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(mpegts, seg_start + 126_000);
        let base = (mpegts - 126_000) as f64 / 90_000.0;
        for (s, e, t) in parse_srt(text) {
            // join pieces of a cue split at segment boundaries
            match got.last_mut() {
                Some(last) if last.2 == t && (last.1 - (base + s)).abs() < 0.001 => {
                    last.1 = base + e
                }
                _ => got.push((base + s, base + e, t)),
            }
        }
    }
    // within half a second of the video (the reorder window delays nothing in time)
    assert_same_captions(&got, &expected("expected-cc1.txt"), 0.5);
}

/// Roll-up and paint-on captions written by our injector are read by
/// ffmpeg's decoder too (a short clip made here).
#[test]
fn ffmpeg_reads_injected_roll_up_and_paint_on() {
    let dir = TempDir::new("styles");
    let plain = dir.0.join("plain.h264");
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc=size=160x120:rate=30:duration=6"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-g",
            "30",
            "-bf",
            "0",
            "-threads",
            "1",
            "-x264-params",
            "aud=1",
        ])
        .args(["-f", "h264"])
        .arg(&plain));
    assert!(ok, "{err}");
    let es = std::fs::read(&plain).unwrap();
    let aus = access_units(&es);
    let script = Script::parse(
        "CC1 0.5 2.5 rollup2 rolling up one\nCC1 1.5 2.5 rollup2 rolling up two\n\
         CC1 3.0 5.0 painton painted on",
    )
    .unwrap();
    let frames = script.render(aus.len(), 30).unwrap();
    let sei: Vec<_> = frames
        .iter()
        .map(|t| Some(sei_nal(&cc_data_bytes(t, (t.len() / 3) as u8))))
        .collect();
    let ts = dir.0.join("styles.ts");
    let injected = dir.0.join("captioned.h264");
    std::fs::write(&injected, inject_annexb(&aus, &sei)).unwrap();
    let (ok, _, err) = run(Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-framerate", "30", "-f", "h264", "-i"])
        .arg(&injected)
        .args(["-c:v", "copy", "-f", "mpegts"])
        .arg(&ts));
    assert!(ok, "{err}");
    // ffprobe tells the two apart
    for (file, has) in [(&plain, false), (&ts, true)] {
        let (ok, _, err) = run(Command::new("ffprobe").arg("-hide_banner").arg(file));
        assert!(ok, "{err}");
        assert_eq!(err.contains("Closed Captions"), has, "{err}");
    }
    let cues = ffmpeg_608(&ts, false);
    let all: String = cues
        .iter()
        .map(|c| c.2.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for want in ["rolling up one", "rolling up two", "painted on"] {
        assert!(all.contains(want), "{want} not in {cues:?}");
    }
    // ours agrees on the final screens
    let mut d = Cea608Decoder::new(1);
    let mut ours = Vec::new();
    for (i, t) in frames.iter().enumerate() {
        ours.extend(d.push(i as i64 * FRAME, t));
    }
    ours.extend(d.flush(frames.len() as i64 * FRAME));
    let texts: Vec<&str> = ours.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "rolling up one",
            "rolling up one\nrolling up two",
            "painted on"
        ]
    );
}
