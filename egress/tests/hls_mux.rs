//! The sans-IO segmenter and playlist writer, checked with real ffmpeg on
//! the files they produce.

mod hls_common;

use std::sync::Arc;

use banyan_egress::hls::playlist;
use banyan_egress::hls::segmenter::{Segmenter, SegmenterConfig};
use banyan_relay::{Item, MediaInfo, StreamEnd};
use hls_common::*;

fn config() -> SegmenterConfig {
    SegmenterConfig {
        part_target: 29_970, // 333 ms
        segment_target: 90_000,
        window: 100,
        start_seq: 0,
    }
}

fn info(clip: &Clip) -> Arc<MediaInfo> {
    Arc::new(MediaInfo {
        version: 1,
        video: Some(clip.video.clone()),
        audio: Some(clip.audio.clone()),
    })
}

/// Attribute value of `key` in a tag line.
fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split_once(':')?.1;
    rest.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

#[test]
fn segments_play_back_frame_exact_in_ffmpeg() {
    let dir = TempDir::new("mux");
    let clip = make_clip(dir.path(), 4);
    let mut seg = Segmenter::new(config(), None);
    seg.push(Item::Info(info(&clip)), 1_700_000_000_000);
    for (i, f) in clip.frames.iter().enumerate() {
        seg.push(Item::Frame(f.clone()), 1_700_000_000_000 + i as i64);
    }
    assert!(seg.push(Item::End(StreamEnd::Finished), 1_700_000_010_000));

    // Init + every segment, as a player would fetch them.
    let list = playlist::media(&seg);
    let mut file = Vec::new();
    let mut map_uri = None;
    for line in list.lines() {
        if line.starts_with("#EXT-X-MAP:") {
            map_uri = attr(line, "URI").map(str::to_string);
        }
    }
    let map_uri = map_uri.expect("EXT-X-MAP");
    let init_id: u64 = map_uri
        .trim_start_matches("init-")
        .trim_end_matches(".mp4")
        .parse()
        .unwrap();
    file.extend_from_slice(&seg.init(init_id).expect("init segment"));
    let mut n_segments = 0;
    for line in list.lines().filter(|l| l.starts_with("seg-")) {
        let msn: u64 = line[4..line.len() - 4].parse().unwrap();
        file.extend_from_slice(seg.segment(msn).unwrap().data.as_ref().unwrap());
        n_segments += 1;
    }
    assert_eq!(n_segments, 4, "one segment per 1 s GOP:\n{list}");
    let out = dir.path().join("out.mp4");
    std::fs::write(&out, &file).unwrap();

    let src_v = framemd5(clip.h264.to_str().unwrap(), "0:v", &[]);
    let got_v = framemd5(out.to_str().unwrap(), "0:v", &[]);
    assert_eq!(src_v.len(), 100);
    assert_eq!(got_v, src_v, "decoded video frames match the source");
    let src_a = framemd5(clip.aac.to_str().unwrap(), "0:a", &[]);
    let got_a = framemd5(out.to_str().unwrap(), "0:a", &[]);
    assert!(
        got_a.len() >= src_a.len() - 2,
        "{} vs {}",
        got_a.len(),
        src_a.len()
    );
    assert!(
        find_run(&src_a, &got_a[1..got_a.len() - 1]).is_some(),
        "decoded audio frames match the source"
    );

    // ffprobe sees H.264 320x240 and AAC.
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate",
        ])
        .args(["-of", "compact"])
        .arg(&out)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.contains("codec_name=h264|width=320|height=240"),
        "{probe}"
    );
    assert!(probe.contains("codec_name=aac"), "{probe}");
}

#[test]
fn playlist_follows_ll_hls_rules() {
    let dir = TempDir::new("rules");
    let clip = make_clip(dir.path(), 3);
    let mut seg = Segmenter::new(config(), None);
    seg.push(Item::Info(info(&clip)), 0);
    let mut checked_live = false;
    // The server keeps one media playlist per segmenter generation: any
    // change to the playlist must come with a new generation.
    let mut last = (seg.generation(), playlist::media(&seg));
    for f in &clip.frames {
        seg.push(Item::Frame(f.clone()), 0);
        let now = (seg.generation(), playlist::media(&seg));
        assert!(
            now.1 == last.1 || now.0 != last.0,
            "the playlist changed within generation {}",
            now.0
        );
        last = now;
        if !checked_live && seg.segments().len() == 2 && seg.live_parts() == 1 {
            checked_live = true;
            let list = playlist::media(&seg);
            assert!(
                list.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-"),
                "{list}"
            );
            assert!(!list.contains("#EXT-X-ENDLIST"));
            // A blocking request is satisfied exactly when the part exists.
            let live = seg.live_msn();
            assert!(seg.satisfies(live, Some(0)));
            assert!(!seg.satisfies(live, Some(1)));
            assert!(seg.satisfies(live - 1, None));
            assert!(!seg.satisfies(live, None));
            assert!(!seg.satisfies(live + 1, Some(0)));
        }
    }
    assert!(checked_live);
    seg.push(Item::End(StreamEnd::Finished), 0);
    let list = playlist::media(&seg);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    let part_target: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
        .unwrap()
        .parse()
        .unwrap();
    let target: f64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .unwrap()
        .parse()
        .unwrap();
    let hold_back: f64 = lines
        .iter()
        .find(|l| l.starts_with("#EXT-X-SERVER-CONTROL:"))
        .and_then(|l| attr(l, "PART-HOLD-BACK"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(hold_back >= 2.0 * part_target);
    assert!(list.contains("CAN-BLOCK-RELOAD=YES"));
    assert_eq!(lines.last(), Some(&"#EXT-X-ENDLIST"));
    assert!(!list.contains("PRELOAD-HINT"), "no hint after the end");
    assert!(list.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
    // Every frame arrived at wall time 0: the newest was live then, so the
    // first segment started its media time before.
    let video_dts: Vec<i64> = clip
        .frames
        .iter()
        .filter(|f| f.track == banyan_relay::Track::Video)
        .map(|f| f.dts)
        .collect();
    let newest_ms = (video_dts[video_dts.len() - 1] - video_dts[0]) * 1000 / 90_000;
    let pdt = format!(
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        playlist::rfc3339_ms(-newest_ms)
    );
    assert!(list.contains(&pdt), "{pdt} in\n{list}");

    // Parts: each at most PART-TARGET, the first of each segment
    // independent, and per segment they add up to its EXTINF.
    let mut parts_sum = 0.0;
    let mut first_in_segment = true;
    let mut segments = 0;
    let mut parts_total = 0;
    for l in &lines {
        if l.starts_with("#EXT-X-PART:") {
            let d: f64 = attr(l, "DURATION").unwrap().parse().unwrap();
            assert!(d <= part_target + 1e-9, "part {d} > target {part_target}");
            assert!(d > 0.0);
            if first_in_segment {
                assert!(l.contains("INDEPENDENT=YES"), "{l}");
            }
            first_in_segment = false;
            parts_sum += d;
            parts_total += 1;
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            let d: f64 = v.trim_end_matches(',').parse().unwrap();
            assert!(d <= target, "segment {d} > target {target}");
            assert!(
                (d - parts_sum).abs() < 1e-3,
                "EXTINF {d} vs parts {parts_sum}"
            );
            parts_sum = 0.0;
            first_in_segment = true;
            segments += 1;
        }
    }
    assert_eq!(segments, 3);
    assert!(parts_total >= 9, "{parts_total} parts");
    // Part numbers are consecutive.
    let nums: Vec<u64> = lines
        .iter()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .map(|l| {
            let u = attr(l, "URI").unwrap();
            u[5..u.len() - 4].parse().unwrap()
        })
        .collect();
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
}

#[test]
fn window_slides_and_codec_change_maps_a_new_init() {
    let dir = TempDir::new("window");
    let clip = make_clip(dir.path(), 4);
    let mut cfg = config();
    cfg.window = 2;
    let mut seg = Segmenter::new(cfg, None);
    let mut i1 = (*info(&clip)).clone();
    seg.push(Item::Info(Arc::new(i1.clone())), 0);
    let half = clip.frames.len() / 2;
    for f in &clip.frames[..half] {
        seg.push(Item::Frame(f.clone()), 0);
    }
    // The publisher changes its audio configuration mid-stream.
    i1.version = 2;
    if let Some(a) = i1.audio.as_mut() {
        a.channels = 2;
        a.asc = bytes::Bytes::from_static(&[0x11, 0x90]);
    }
    seg.push(Item::Info(Arc::new(i1)), 0);
    for f in &clip.frames[half..] {
        seg.push(Item::Frame(f.clone()), 0);
    }
    seg.push(Item::End(StreamEnd::Finished), 0);
    let list = playlist::media(&seg);
    assert_eq!(seg.segments().len(), 2, "{list}");
    assert!(list.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{list}");
    assert_eq!(list.matches("#EXT-X-MAP:").count(), 1, "{list}");
    // The segment after the change is a discontinuity with a new map, and
    // the count of discontinuities slid out is kept.
    assert!(seg.segments().iter().all(|s| s.init == 2), "{list}");
    assert!(seg.init(1).is_none(), "old init dropped");
    // Parts of old segments are released.
    let total_parts: usize = seg.segments().iter().map(|s| s.parts.len()).sum();
    assert!(total_parts > 0);
}

/// The muxer of a stream starts on the hub's cached group of pictures:
/// those frames arrive at once, late against their media time. The first
/// segment's `EXT-X-PROGRAM-DATE-TIME` is still when its first frame was
/// live (what the frames at the live edge show), and every segment's time
/// follows the one before by its duration.
#[test]
fn a_replayed_gop_gets_the_wall_clock_of_the_live_edge() {
    let dir = TempDir::new("pdt");
    let clip = make_clip(dir.path(), 4);
    let mut seg = Segmenter::new(config(), None);
    let t0: i64 = 1_700_000_000_000;
    seg.push(Item::Info(info(&clip)), t0);
    // The first second (25 frames at 25 fps, one GOP) arrives in a burst
    // at t0; the rest on time after it.
    let first_dts = clip.frames[0].dts;
    let mut edge_ms = 0;
    for f in &clip.frames {
        let media_ms = (f.dts - first_dts) * 1000 / 90_000;
        let wall = if media_ms < 1000 {
            edge_ms = edge_ms.max(media_ms);
            t0
        } else {
            t0 + media_ms - edge_ms
        };
        seg.push(Item::Frame(f.clone()), wall);
    }
    seg.push(Item::End(StreamEnd::Finished), t0 + 5_000);
    let segs: Vec<_> = seg.segments().iter().collect();
    assert!(segs.len() >= 3, "{} segments", segs.len());
    // The newest frame of the burst was live at t0, so the first frame was
    // live `edge_ms` before.
    let want = t0 - edge_ms;
    assert!(
        (segs[0].wall_ms - want).abs() <= 1,
        "first segment at {} ms, want {want} (burst arrival {t0})",
        segs[0].wall_ms
    );
    for w in segs.windows(2) {
        let gap = w[1].wall_ms - w[0].wall_ms;
        let dur = w[0].duration * 1000 / 90_000;
        assert!(
            (gap - dur).abs() <= 1,
            "segments {} ms apart, {dur} ms long",
            gap
        );
    }
    let list = playlist::media(&seg);
    let first_pdt = list
        .lines()
        .find(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME:"))
        .expect("a program date time");
    assert!(first_pdt.ends_with("Z"), "{first_pdt}");
}

/// The publisher leaves mid-segment: `flush` closes the open part and
/// segment at once with every frame pushed so far, and media after it
/// starts a new segment at a keyframe, after a discontinuity.
#[test]
fn a_flush_closes_the_open_part_and_segment_with_every_frame() {
    let dir = TempDir::new("flush");
    let clip = make_clip(dir.path(), 4);
    let mut seg = Segmenter::new(config(), None);
    let t0: i64 = 1_700_000_000_000;
    seg.push(Item::Info(info(&clip)), t0);
    let video: Vec<_> = clip
        .frames
        .iter()
        .filter(|f| f.track == banyan_relay::Track::Video)
        .collect();
    // 1.5 s of media, then the publisher is gone.
    let cut = video[37].dts;
    for f in clip.frames.iter().filter(|f| f.dts <= cut) {
        seg.push(Item::Frame(f.clone()), t0);
    }
    assert!(seg.current().is_some(), "a segment is open");
    assert!(seg.flush(), "the open part is published");
    assert!(seg.current().is_none(), "no segment is left open");
    let frames: usize = seg.segments().iter().map(|s| s.duration).sum::<i64>() as usize / 3_600;
    assert_eq!(
        frames, 38,
        "every video frame up to the cut is in a segment"
    );
    assert!(!seg.flush(), "nothing more to flush");
    let before = seg.segments().len();
    // Media resumes mid-GOP: nothing until the next keyframe, which opens a
    // new segment after a discontinuity.
    for f in clip.frames.iter().filter(|f| f.dts > cut) {
        seg.push(Item::Frame(f.clone()), t0 + 2_000);
    }
    seg.push(Item::End(StreamEnd::Finished), t0 + 5_000);
    let after: Vec<_> = seg.segments().iter().skip(before).collect();
    assert!(!after.is_empty(), "media after the flush is segmented");
    assert!(after[0].discontinuity, "a discontinuity after the flush");
    let resumed = video
        .iter()
        .position(|f| f.dts > cut && f.keyframe)
        .unwrap();
    assert_eq!(
        after[0].start,
        video[resumed].dts - video[0].dts,
        "the new segment starts at the next keyframe"
    );
}

/// A stream with no video: audio frames make the parts and segments, and
/// ffmpeg decodes what the playlist lists into the source's AAC frames.
#[test]
fn an_audio_only_stream_is_segmented_by_its_audio() {
    let dir = TempDir::new("audio");
    let clip = make_clip(dir.path(), 4);
    let mut seg = Segmenter::new(config(), None);
    let t0: i64 = 1_700_000_000_000;
    seg.push(
        Item::Info(Arc::new(MediaInfo {
            version: 1,
            video: None,
            audio: Some(clip.audio.clone()),
        })),
        t0,
    );
    for f in clip
        .frames
        .iter()
        .filter(|f| f.track == banyan_relay::Track::Audio)
    {
        seg.push(Item::Frame(f.clone()), t0 + f.pts / 90);
    }
    assert!(seg.has_media(), "parts were made");
    assert!(seg.push(Item::End(StreamEnd::Finished), t0 + 5_000));
    let list = playlist::media(&seg);
    let segs: Vec<_> = seg.segments().iter().collect();
    assert!(segs.len() >= 3, "one segment a second:\n{list}");
    for s in &segs[..segs.len() - 1] {
        let secs = s.duration as f64 / 90_000.0;
        assert!((0.9..=1.0).contains(&secs), "segment of {secs} s:\n{list}");
        for p in &s.parts {
            assert!(p.independent && p.duration <= config().part_target);
        }
    }
    let multivariant = playlist::multivariant(&seg, "media.m3u8", &playlist::caption_lines_none());
    assert!(!multivariant.contains("RESOLUTION"), "{multivariant}");
    assert!(multivariant.contains("CODECS=\"mp4a"), "{multivariant}");

    let mut file = seg.init(segs[0].init).expect("init").to_vec();
    for s in &segs {
        file.extend_from_slice(s.data.as_ref().unwrap());
    }
    let out = dir.path().join("audio.mp4");
    std::fs::write(&out, &file).unwrap();
    let src_a = framemd5(clip.aac.to_str().unwrap(), "0:a", &[]);
    let got_a = framemd5(out.to_str().unwrap(), "0:a", &[]);
    assert!(
        got_a.len() + 2 >= src_a.len(),
        "{} of {} audio frames",
        got_a.len(),
        src_a.len()
    );
    assert!(
        find_run(&src_a, &got_a[1..got_a.len() - 1]).is_some(),
        "decoded audio frames match the source"
    );
}
