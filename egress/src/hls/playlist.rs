//! Our playlist writer (RFC 8216 plus the LL-HLS tags of its second
//! edition draft). Pure functions of the segmenter's state.

use std::fmt::Write;

use banyan_relay::CLOCK_HZ;

use super::segmenter::Segmenter;

/// File names inside `/{uid}/manifest/`.
pub fn init_name(id: u64) -> String {
    format!("init-{id}.mp4")
}
pub fn segment_name(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}
pub fn part_name(index: u64) -> String {
    format!("part-{index}.m4s")
}
pub fn vtt_name(msn: u64) -> String {
    format!("sub-{msn}.vtt")
}
pub const MEDIA_PLAYLIST: &str = "media.m3u8";
pub const SUBTITLES_PLAYLIST: &str = "subs.m3u8";

fn secs(ticks: i64) -> f64 {
    ticks as f64 / CLOCK_HZ as f64
}

/// What the multivariant playlist declares about captions.
#[derive(Debug, Clone)]
pub struct CaptionLines {
    /// `#EXT-X-MEDIA` lines (closed captions and subtitles renditions).
    pub media: Vec<String>,
    /// Attributes added to the variant, e.g. `CLOSED-CAPTIONS=NONE` or
    /// `CLOSED-CAPTIONS="cc",SUBTITLES="subs"`.
    pub variant_attrs: String,
}

/// The caption lines used when no caption source is configured.
pub fn caption_lines_none() -> CaptionLines {
    CaptionLines {
        media: Vec::new(),
        variant_attrs: "CLOSED-CAPTIONS=NONE".into(),
    }
}

/// The multivariant playlist: one variant, its media playlist URI (with the
/// viewer's session parameter) and the caption lines.
pub fn multivariant(seg: &Segmenter, media_uri: &str, captions: &CaptionLines) -> String {
    let mut out = String::with_capacity(512);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for line in &captions.media {
        out.push_str(line);
        out.push('\n');
    }
    let (peak, avg) = seg.bandwidth();
    let peak = if peak == 0 { 1_000_000 } else { peak };
    let avg = if avg == 0 { peak } else { avg };
    let mut codecs = Vec::new();
    let mut resolution = None;
    if let Some(info) = seg.info() {
        if let Some(v) = &info.video {
            codecs.push(v.codec.clone());
            if v.width > 0 && v.height > 0 {
                resolution = Some((v.width, v.height));
            }
        }
        if let Some(a) = &info.audio {
            codecs.push(a.codec.clone());
        }
    }
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg}"
    );
    if !codecs.is_empty() {
        let _ = write!(out, ",CODECS=\"{}\"", codecs.join(","));
    }
    if let Some((w, h)) = resolution {
        let _ = write!(out, ",RESOLUTION={w}x{h}");
    }
    if !captions.variant_attrs.is_empty() {
        let _ = write!(out, ",{}", captions.variant_attrs);
    }
    let _ = write!(out, "\n{media_uri}\n");
    out
}

/// Target duration in whole seconds (never below the configured target).
pub fn target_duration(seg: &Segmenter) -> u64 {
    let t = seg.max_segment().max(seg.config().segment_target);
    ((t + CLOCK_HZ - 1) / CLOCK_HZ).max(1) as u64
}

/// The media playlist, LL-HLS tags included; a plain HLS player ignores the
/// part tags and plays the complete segments.
pub fn media(seg: &Segmenter) -> String {
    let cfg = seg.config();
    let mut out = String::with_capacity(4096);
    let part_target = secs(cfg.part_target);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n",
        target_duration(seg),
        part_target * 3.0,
    );
    let first = seg.segments().front().or(seg.current());
    let _ = writeln!(
        out,
        "#EXT-X-MEDIA-SEQUENCE:{}",
        first.map_or(seg.live_msn(), |s| s.msn)
    );
    if seg.discontinuity_sequence() > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            seg.discontinuity_sequence()
        );
    }
    let mut map = None;
    for s in seg.segments().iter().chain(seg.current()) {
        if s.discontinuity && map.is_some() {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map != Some(s.init) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init_name(s.init));
            map = Some(s.init);
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_ms(s.wall_ms));
        for p in &s.parts {
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                secs(p.duration),
                part_name(p.index)
            );
            if p.independent {
                out.push_str(",INDEPENDENT=YES");
            }
            out.push('\n');
        }
        if s.data.is_some() {
            let _ = writeln!(
                out,
                "#EXTINF:{:.5},\n{}",
                secs(s.duration),
                segment_name(s.msn)
            );
        }
    }
    if seg.ended() {
        out.push_str("#EXT-X-ENDLIST\n");
    } else {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_name(seg.next_part())
        );
    }
    out
}

/// The WebVTT subtitles playlist: one WebVTT segment per complete media
/// segment, same numbers and durations.
pub fn subtitles(seg: &Segmenter) -> String {
    let mut out = String::with_capacity(1024);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n",
        target_duration(seg)
    );
    let first = seg.segments().front().map_or(seg.live_msn(), |s| s.msn);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    if seg.discontinuity_sequence() > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            seg.discontinuity_sequence()
        );
    }
    for (i, s) in seg.segments().iter().enumerate() {
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339_ms(s.wall_ms));
        let _ = writeln!(out, "#EXTINF:{:.5},\n{}", secs(s.duration), vtt_name(s.msn));
    }
    if seg.ended() {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
