//! A tiny FLV reader: the whole file is one `Bytes`, tags are zero-copy slices of it.

use crate::Error;
use bytes::Bytes;

/// The kind of an FLV tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// Tag type 8.
    Audio,
    /// Tag type 9.
    Video,
    /// Tag type 18 (onMetaData and friends).
    Script,
}

/// One FLV tag: its kind, its timestamp in milliseconds and its body (the RTMP message body).
#[derive(Debug, Clone)]
pub struct Tag {
    /// Audio, video or script data.
    pub kind: TagKind,
    /// Decode timestamp in milliseconds (24 bits plus the extension byte).
    pub timestamp: u32,
    /// The tag body, exactly what an RTMP audio/video message carries.
    pub data: Bytes,
}

impl Tag {
    /// An AVC sequence header or AAC AudioSpecificConfig: codec configuration, not media.
    pub fn is_config(&self) -> bool {
        match self.kind {
            TagKind::Video => is_video_config(&self.data),
            TagKind::Audio => self.data.len() >= 2 && self.data[0] >> 4 == 10 && self.data[1] == 0,
            TagKind::Script => false,
        }
    }
}

/// Parses a whole FLV file. Unknown tag types are skipped; a truncated last tag ends the list.
pub fn parse(file: Bytes) -> Result<Vec<Tag>, Error> {
    if file.len() < 13 || &file[..3] != b"FLV" {
        return Err(Error::Flv {
            offset: 0,
            what: "no FLV signature",
        });
    }
    let header_len = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    if header_len < 9 || header_len > file.len() {
        return Err(Error::Flv {
            offset: 5,
            what: "bad header length",
        });
    }
    // The header, then PreviousTagSize0.
    let mut pos = header_len + 4;
    let mut tags = Vec::new();
    while pos + 11 <= file.len() {
        let h = &file[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = pos + 11;
        let Some(end) = body.checked_add(size).filter(|&e| e <= file.len()) else {
            break;
        };
        let kind = match h[0] & 0x1f {
            8 => Some(TagKind::Audio),
            9 => Some(TagKind::Video),
            18 => Some(TagKind::Script),
            _ => None,
        };
        if let Some(kind) = kind {
            tags.push(Tag {
                kind,
                timestamp,
                data: file.slice(body..end),
            });
        }
        pos = end + 4;
    }
    if tags.is_empty() {
        return Err(Error::Flv {
            offset: pos,
            what: "no tags",
        });
    }
    Ok(tags)
}

/// An FLV video body holding an AVC sequence header (codec id 7, AVCPacketType 0).
pub fn is_video_config(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] & 0x0f == 7 && data[1] == 0
}

/// An FLV video body holding a coded AVC frame (AVCPacketType 1).
pub fn is_video_frame(data: &[u8]) -> bool {
    data.len() > 5 && data[0] & 0x0f == 7 && data[1] == 1
}

/// An FLV video body whose frame type is "key frame".
pub fn is_keyframe(data: &[u8]) -> bool {
    !data.is_empty() && data[0] >> 4 == 1
}

/// Identifies a coded video frame by its content, so that a frame can be matched whatever
/// timestamp a server gives it: FNV-1a over the last 32 bytes of the frame (entropy-coded
/// slice data). The FLV video header (with its composition time) and the frame's length are
/// left out, so a server that rewrites the header or drops a leading NAL unit still matches.
pub fn fingerprint(data: &[u8]) -> u64 {
    let frame = data.get(5..).unwrap_or(&[]);
    let tail = &frame[frame.len().saturating_sub(32)..];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in tail {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(kind: u8, ts: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        v.extend_from_slice(&ts.to_be_bytes()[1..]);
        v.push((ts >> 24) as u8);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(body);
        v.extend_from_slice(&((body.len() + 11) as u32).to_be_bytes());
        v
    }

    #[test]
    fn parses_tags_and_extended_timestamps() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend(tag(9, 0, &[0x17, 0, 0, 0, 0, 1, 2]));
        file.extend(tag(8, 0x0100_0002, &[0xaf, 1, 9]));
        file.extend(tag(9, 33, &[0x27, 1, 0, 0, 0, 5, 6, 7]));
        file.extend(&tag(9, 66, &[0x27, 1, 0, 0, 0, 5, 6, 7])[..8]); // truncated
        let tags = parse(Bytes::from(file)).unwrap();
        assert_eq!(tags.len(), 3);
        assert!(tags[0].is_config());
        assert_eq!(tags[1].kind, TagKind::Audio);
        assert_eq!(tags[1].timestamp, 0x0100_0002);
        assert!(!tags[1].is_config());
        assert!(is_video_frame(&tags[2].data) && !is_keyframe(&tags[2].data));
        assert_eq!(&tags[2].data[..], &[0x27, 1, 0, 0, 0, 5, 6, 7]);
    }

    #[test]
    fn rejects_non_flv() {
        assert!(parse(Bytes::from_static(b"not an flv file")).is_err());
    }

    #[test]
    fn fingerprint_ignores_the_header_but_not_the_content() {
        let a = [0x27, 1, 0, 0, 0, 9, 9, 9, 1];
        let b = [0x27, 1, 0, 0, 0x21, 9, 9, 9, 1]; // other composition time
        let c = [0x27, 1, 0, 0, 0, 9, 9, 9, 2];
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
