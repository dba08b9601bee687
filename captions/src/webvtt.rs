//! WebVTT segments for the HLS subtitle rendition.

use std::fmt::Write;

use crate::Cue;

/// One WebVTT segment covering `[seg_start, seg_end)` (90 kHz, the video's
/// pts clock), for the video segment with the same bounds.
///
/// The header maps `LOCAL:00:00:00.000` to `MPEGTS:<mpegts_base>`, where
/// `mpegts_base` is the 90 kHz timestamp that the media segments carry for
/// pts `seg_start` (`seg_start` itself when egress writes the node's pts
/// unchanged; add egress's offset, modulo 2^33 for MPEG-TS, otherwise). Cue
/// times are written relative to `seg_start`.
///
/// Every cue overlapping the window is written, clipped to it, so a cue
/// longer than a segment appears in each segment it covers and players
/// never show one twice at the same time. Pass the decoder's finished cues
/// and [`crate::Cea608Decoder::showing`]`(seg_end)`.
pub fn webvtt_segment(cues: &[Cue], seg_start: i64, seg_end: i64, mpegts_base: i64) -> String {
    let mut out = String::with_capacity(96 + cues.len() * 64);
    let _ = write!(
        out,
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{},LOCAL:00:00:00.000\n",
        mpegts_base.max(0)
    );
    for cue in cues {
        let start = cue.start.max(seg_start);
        let end = cue.end.min(seg_end);
        if end <= start || cue.text.trim().is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "\n{} --> {}\n{}\n",
            webvtt_timestamp(start.saturating_sub(seg_start)),
            webvtt_timestamp(end.saturating_sub(seg_start)),
            escape(&cue.text)
        );
    }
    out
}

/// `hh:mm:ss.ttt` for a 90 kHz duration (negative values clamp to zero).
pub fn webvtt_timestamp(ticks: i64) -> String {
    let ms = ticks.max(0) / 90;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Cue text: `&`, `<`, `>` escaped; no blank lines (they would end the cue).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push('\n');
        }
        for c in line.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                c if c.is_control() => {}
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(start: i64, end: i64, text: &str) -> Cue {
        Cue {
            start,
            end,
            text: text.into(),
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(webvtt_timestamp(0), "00:00:00.000");
        assert_eq!(webvtt_timestamp(90_000 * 3723 + 45_000), "01:02:03.500");
        assert_eq!(webvtt_timestamp(-5), "00:00:00.000");
    }

    #[test]
    fn segment_clips_and_escapes() {
        let cues = [
            cue(0, 90_000, "before"),
            cue(150_000, 225_000, "Tom & Jerry <3\n\nsecond -->"),
            cue(500_000, 900_000, "spans the end"),
            cue(900_000, 950_000, "after"),
        ];
        let s = webvtt_segment(&cues, 180_000, 720_000, 1_260_000);
        assert_eq!(
            s,
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:1260000,LOCAL:00:00:00.000\n\
             \n00:00:00.000 --> 00:00:00.500\nTom &amp; Jerry &lt;3\nsecond --&gt;\n\
             \n00:00:03.555 --> 00:00:06.000\nspans the end\n"
        );
        // an empty segment is still a valid WebVTT file
        assert_eq!(
            webvtt_segment(&[], 0, 90_000, 0),
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"
        );
    }
}
