//! Caption lines of the HLS multivariant playlist, and the live input's
//! `captions` list.

use crate::{Channel, ChannelSet};

/// A caption channel as the platform declares it (live input `captions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptionTrackInfo {
    /// `CC1`..`CC4` or `SERVICE1`..`SERVICE63`.
    pub instream_id: String,
    /// RFC 5646 language tag; `und` when unknown.
    pub language: String,
    /// Human-readable name, e.g. `English`.
    pub name: String,
}

/// The `GROUP-ID` of the closed-caption renditions.
pub const CC_GROUP: &str = "cc";
/// The `GROUP-ID` of the WebVTT subtitle rendition.
pub const SUBTITLES_GROUP: &str = "subs";

/// The caption lines of a multivariant playlist, and the attributes to put
/// on every `EXT-X-STREAM-INF` line.
///
/// * One `#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",...,INSTREAM-ID="CCn"`
///   (or `"SERVICEn"`) per channel in `present`, in [`ChannelSet::iter`]
///   order, never with a `URI` (RFC 8216 4.3.4.1). `NAME` and `LANGUAGE` come
///   from `declared` (matched by instream id, case-insensitively); an
///   undeclared channel is named after its instream id with language `und`.
///   Names are made unique within the group. The first is `DEFAULT=YES`.
/// * With `subtitles_uri` and a channel present, one
///   `#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",...,URI="..."` for the WebVTT
///   rendition decoded from [`ChannelSet::subtitle_source`] (the lowest 608
///   channel, else the lowest 708 service).
/// * The attribute string: `CLOSED-CAPTIONS="cc"` (plus `,SUBTITLES="subs"`)
///   or `CLOSED-CAPTIONS=NONE` when no channel is present (4.3.4.2).
pub fn playlist_caption_lines(
    present: &ChannelSet,
    declared: &[CaptionTrackInfo],
    subtitles_uri: Option<&str>,
) -> (Vec<String>, String) {
    let mut lines = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, ch) in present.iter().enumerate() {
        let (name, language) = describe(ch, declared);
        let name = unique(name, &names);
        lines.push(format!(
            "#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"{CC_GROUP}\",NAME=\"{name}\",LANGUAGE=\"{language}\",DEFAULT={},AUTOSELECT=YES,INSTREAM-ID=\"{ch}\"",
            if i == 0 { "YES" } else { "NO" },
        ));
        names.push(name);
    }
    if lines.is_empty() {
        return (lines, "CLOSED-CAPTIONS=NONE".to_string());
    }
    let mut attrs = format!("CLOSED-CAPTIONS=\"{CC_GROUP}\"");
    if let (Some(uri), Some(ch)) = (subtitles_uri, present.subtitle_source()) {
        let (name, language) = describe(ch, declared);
        lines.push(format!(
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLES_GROUP}\",NAME=\"{name}\",LANGUAGE=\"{language}\",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI=\"{}\"",
            quoted(uri),
        ));
        attrs.push_str(&format!(",SUBTITLES=\"{SUBTITLES_GROUP}\""));
    }
    (lines, attrs)
}

/// The live input's `captions` list: every declared entry (normalised: known
/// instream ids only, one entry per id), then every present channel without
/// a declaration, as `und` named after its instream id.
pub fn caption_tracks(
    present: &ChannelSet,
    declared: &[CaptionTrackInfo],
) -> Vec<CaptionTrackInfo> {
    let mut out: Vec<CaptionTrackInfo> = Vec::new();
    let mut seen = ChannelSet::new();
    for d in declared {
        let Some(ch) = Channel::parse(&d.instream_id) else {
            continue;
        };
        if seen.contains(ch) {
            continue;
        }
        seen.insert(ch);
        let (name, language) = describe(ch, declared);
        out.push(CaptionTrackInfo {
            instream_id: ch.instream_id(),
            language,
            name,
        });
    }
    for ch in present.iter().filter(|c| !seen.contains(*c)) {
        out.push(CaptionTrackInfo {
            instream_id: ch.instream_id(),
            language: "und".into(),
            name: ch.instream_id(),
        });
    }
    out
}

/// (name, language) of a channel, sanitised for a quoted-string.
fn describe(ch: Channel, declared: &[CaptionTrackInfo]) -> (String, String) {
    let d = declared
        .iter()
        .find(|d| Channel::parse(&d.instream_id) == Some(ch));
    let language = d
        .map(|d| d.language.trim())
        .filter(|l| valid_language(l))
        .unwrap_or("und")
        .to_string();
    let name = d
        .map(|d| quoted(d.name.trim()))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ch.instream_id());
    (name, language)
}

/// An RFC 5646-shaped tag: 1-8 alphanumerics per subtag, separated by `-`.
fn valid_language(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag
            .split('-')
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A quoted-string body: no `"`, CR or LF (RFC 8216 4.2), no controls.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .take(128)
        .collect()
}

fn unique(name: String, taken: &[String]) -> String {
    if !taken.contains(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name} ({i})"))
        .find(|n| !taken.contains(n))
        .unwrap_or(name) // the range is unbounded: always found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, lang: &str, name: &str) -> CaptionTrackInfo {
        CaptionTrackInfo {
            instream_id: id.into(),
            language: lang.into(),
            name: name.into(),
        }
    }

    fn set(ids: &[&str]) -> ChannelSet {
        ids.iter().filter_map(|i| Channel::parse(i)).collect()
    }

    /// Checks the rules of RFC 8216 4.3.4.1 for CLOSED-CAPTIONS renditions.
    fn check_rfc(line: &str) {
        assert!(line.starts_with("#EXT-X-MEDIA:"));
        if line.contains("TYPE=CLOSED-CAPTIONS") {
            assert!(!line.contains("URI="), "no URI on closed captions: {line}");
            let id = line.split("INSTREAM-ID=\"").nth(1).unwrap();
            let id = &id[..id.find('"').unwrap()];
            assert!(
                Channel::parse(id).is_some_and(|c| c.instream_id() == id),
                "{id}"
            );
        } else {
            assert!(line.contains("TYPE=SUBTITLES") && line.contains("URI=\""));
            assert!(!line.contains("INSTREAM-ID"));
        }
        for attr in ["GROUP-ID=\"", "NAME=\""] {
            assert!(line.contains(attr), "{attr} in {line}");
        }
        // quoted strings balanced
        assert_eq!(line.matches('"').count() % 2, 0);
    }

    #[test]
    fn none_when_no_captions() {
        let (lines, attr) = playlist_caption_lines(&ChannelSet::new(), &[], Some("subs.m3u8"));
        assert!(lines.is_empty());
        assert_eq!(attr, "CLOSED-CAPTIONS=NONE");
    }

    #[test]
    fn declared_and_undeclared_channels() {
        let declared = [
            info("CC1", "en", "English"),
            info("cc3", "es", "Español"),
            info("CC2", "fr", "Français"), // not present: not listed
        ];
        let (lines, attr) =
            playlist_caption_lines(&set(&["CC1", "CC3", "SERVICE1"]), &declared, None);
        assert_eq!(
            lines,
            [
                r#"#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,INSTREAM-ID="CC1""#,
                r#"#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="Español",LANGUAGE="es",DEFAULT=NO,AUTOSELECT=YES,INSTREAM-ID="CC3""#,
                r#"#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="SERVICE1",LANGUAGE="und",DEFAULT=NO,AUTOSELECT=YES,INSTREAM-ID="SERVICE1""#,
            ]
        );
        assert_eq!(attr, r#"CLOSED-CAPTIONS="cc""#);
        lines.iter().for_each(|l| check_rfc(l));
    }

    #[test]
    fn subtitles_rendition() {
        let declared = [info("CC3", "es", "Español")];
        let (lines, attr) =
            playlist_caption_lines(&set(&["CC3", "SERVICE2"]), &declared, Some("subs/cc.m3u8"));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            r#"#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="Español",LANGUAGE="es",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI="subs/cc.m3u8""#
        );
        assert_eq!(attr, r#"CLOSED-CAPTIONS="cc",SUBTITLES="subs""#);
        lines.iter().for_each(|l| check_rfc(l));
        // 708 only: the lowest service becomes the WebVTT rendition.
        let (lines, attr) =
            playlist_caption_lines(&set(&["SERVICE3", "SERVICE1"]), &[], Some("x.m3u8"));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            r#"#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="SERVICE1",LANGUAGE="und",DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI="x.m3u8""#
        );
        assert_eq!(attr, r#"CLOSED-CAPTIONS="cc",SUBTITLES="subs""#);
        lines.iter().for_each(|l| check_rfc(l));
    }

    #[test]
    fn hostile_declarations_are_sanitised() {
        let declared = [
            info("CC1", "en\"\n", "A \"quoted\"\nname"),
            info("CC2", "x-toolongsubtag", "A 'quoted'name"),
        ];
        let (lines, _) = playlist_caption_lines(&set(&["CC1", "CC2"]), &declared, None);
        assert!(
            lines[0].contains(r#"NAME="A 'quoted'name",LANGUAGE="und""#),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(r#"NAME="A 'quoted'name (2)",LANGUAGE="und""#),
            "{}",
            lines[1]
        );
        lines.iter().for_each(|l| check_rfc(l));
        assert!(lines.iter().all(|l| !l.contains('\n')));
    }

    #[test]
    fn api_tracks_merge() {
        let declared = [
            info("CC2", "fr", "Français"),
            info("bogus", "en", "x"),
            info("cc2", "de", "dup"),
        ];
        let tracks = caption_tracks(&set(&["CC1", "CC2"]), &declared);
        assert_eq!(
            tracks,
            [info("CC2", "fr", "Français"), info("CC1", "und", "CC1")]
        );
    }
}
