//! Per-stream caption state of a node, shared by ingest (which channels a
//! live stream carries), the API (the live input's `captions`) and HLS (the
//! multivariant playlist's caption lines).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use banyan_relay::{Frame, Track};
use parking_lot::Mutex;

use crate::{caption_tracks, playlist_caption_lines, CaptionTrackInfo, ChannelSet, Extractor};

/// Bound on the declarations kept per stream (4 CC channels + 63 services).
const MAX_DECLARED: usize = 67;
/// The owner of present channels noted by a consumer of a relayed stream.
const RELAYED: u64 = 0;

#[derive(Debug, Default)]
struct Live {
    present: ChannelSet,
    /// Which [`StreamCaptions`] wrote `present` (a newer publisher of the
    /// same stream replaces it; the older one's drop must not erase it).
    owner: u64,
}

/// The node's caption state: for every stream being published here, the
/// channels present; for every live input, the channels the platform
/// declared (names and languages).
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<String, Live>>,
    declared: Mutex<HashMap<String, Vec<CaptionTrackInfo>>>,
    next_owner: AtomicU64,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// The channels present in `uid`'s published stream (empty when not
    /// published on this node).
    pub fn present(&self, uid: &str) -> ChannelSet {
        self.live
            .lock()
            .get(uid)
            .map(|l| l.present)
            .unwrap_or_default()
    }

    /// The platform's declarations for `uid` (empty when none).
    pub fn declared(&self, uid: &str) -> Vec<CaptionTrackInfo> {
        self.declared.lock().get(uid).cloned().unwrap_or_default()
    }

    /// Replaces every declaration at once (from the store's live inputs);
    /// inputs not listed have none. At most 67 entries per input are kept.
    pub fn replace_declared(&self, all: impl IntoIterator<Item = (String, Vec<CaptionTrackInfo>)>) {
        let map: HashMap<String, Vec<CaptionTrackInfo>> = all
            .into_iter()
            .filter(|(_, d)| !d.is_empty())
            .map(|(uid, mut d)| {
                d.truncate(MAX_DECLARED);
                (uid, d)
            })
            .collect();
        *self.declared.lock() = map;
    }

    /// Sets one input's declarations (none removes them), leaving every
    /// other input's as they are.
    pub fn set_declared(&self, uid: &str, mut declared: Vec<CaptionTrackInfo>) {
        let mut map = self.declared.lock();
        if declared.is_empty() {
            map.remove(uid);
        } else {
            declared.truncate(MAX_DECLARED);
            map.insert(uid.to_string(), declared);
        }
    }

    /// The live input's `captions` list: the declarations, then the present
    /// channels without one (as `und`). Pass the stored declarations when
    /// the caller has fresher ones than the registry.
    pub fn tracks(&self, uid: &str, declared: &[CaptionTrackInfo]) -> Vec<CaptionTrackInfo> {
        caption_tracks(&self.present(uid), declared)
    }

    /// The caption lines of `uid`'s multivariant playlist and the attributes
    /// of its `EXT-X-STREAM-INF` (see [`playlist_caption_lines`]).
    pub fn playlist_lines(&self, uid: &str, subtitles_uri: Option<&str>) -> (Vec<String>, String) {
        playlist_caption_lines(&self.present(uid), &self.declared(uid), subtitles_uri)
    }

    /// Channels seen in a stream by a consumer (the HLS muxer) on a node
    /// where no [`StreamCaptions`] publishes it, e.g. a stream relayed from
    /// another node. Ignored while a local publisher owns the stream.
    pub fn note_relayed(&self, uid: &str, present: ChannelSet) {
        self.update(uid, RELAYED, present);
    }

    /// The consumer of a relayed stream stopped: forget what it noted.
    pub fn forget_relayed(&self, uid: &str) {
        self.release(uid, RELAYED);
    }

    fn claim(&self, uid: &str) -> u64 {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed) + 1;
        self.live.lock().insert(
            uid.to_string(),
            Live {
                present: ChannelSet::new(),
                owner,
            },
        );
        owner
    }

    fn update(&self, uid: &str, owner: u64, present: ChannelSet) {
        let mut live = self.live.lock();
        match live.get_mut(uid) {
            Some(l) if l.owner == owner => l.present = present,
            Some(_) => {}
            None => {
                live.insert(uid.to_string(), Live { present, owner });
            }
        }
    }

    fn release(&self, uid: &str, owner: u64) {
        let mut live = self.live.lock();
        if live.get(uid).is_some_and(|l| l.owner == owner) {
            live.remove(uid);
        }
    }
}

/// The captions tap of one published stream, at ingest: every video frame
/// passes through [`StreamCaptions::video`] before it is pushed to the hub.
/// It reads the frame (never changes it), returns the captions frame to push
/// right after it, and keeps the registry's present channels up to date.
/// Dropping it (the publisher left) forgets them.
#[derive(Debug)]
pub struct StreamCaptions {
    registry: Arc<Registry>,
    uid: String,
    owner: u64,
    extractor: Extractor,
    present: ChannelSet,
}

impl StreamCaptions {
    pub fn new(registry: Arc<Registry>, uid: &str) -> StreamCaptions {
        let owner = registry.claim(uid);
        StreamCaptions {
            registry,
            uid: uid.to_string(),
            owner,
            extractor: Extractor::new(),
            present: ChannelSet::new(),
        }
    }

    /// Scans one video frame (payload = AVCC access unit). Returns the
    /// [`Track::Captions`] frame (same pts and dts) when it carries captions.
    pub fn video(&mut self, frame: &Frame) -> Option<Frame> {
        if frame.track != Track::Video {
            return None;
        }
        let cc = self.extractor.push_avcc(frame.pts, &frame.payload);
        let present = self.extractor.channels();
        if present != self.present {
            self.present = present;
            let ids: Vec<String> = present.iter().map(|c| c.instream_id()).collect();
            tracing::info!(stream = %self.uid, channels = ?ids, "caption channels changed");
            self.registry.update(&self.uid, self.owner, present);
        }
        cc.map(|payload| Frame {
            track: Track::Captions,
            pts: frame.pts,
            dts: frame.dts,
            keyframe: false,
            payload,
        })
    }

    /// The extractor's counters.
    pub fn stats(&self) -> crate::ExtractorStats {
        self.extractor.stats()
    }
}

impl Drop for StreamCaptions {
    fn drop(&mut self) {
        self.registry.release(&self.uid, self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::{cc_data_bytes, sei_nal};
    use crate::Channel;
    use bytes::Bytes;

    fn info(id: &str, lang: &str, name: &str) -> CaptionTrackInfo {
        CaptionTrackInfo {
            instream_id: id.into(),
            language: lang.into(),
            name: name.into(),
        }
    }

    /// An AVCC access unit: an SEI with `triplets`, then a fake IDR slice.
    fn au(triplets: &[u8]) -> Bytes {
        let sei = sei_nal(&cc_data_bytes(triplets, (triplets.len() / 3) as u8));
        let mut v = Vec::new();
        for nal in [&sei[..], &[0x65, 0x88, 0x80][..]] {
            v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            v.extend_from_slice(nal);
        }
        Bytes::from(v)
    }

    #[test]
    fn tap_publishes_channels_and_frames() {
        let reg = Registry::new();
        // CC1 Resume Caption Loading (0x14 0x20 with odd parity: 0x94 0x20).
        let payload = au(&[0xfc, 0x94, 0x20]);
        let video = Frame::video(9000, 6000, true, payload.clone());
        let mut tap = StreamCaptions::new(reg.clone(), "s1");
        let cc = tap.video(&video).expect("captions frame");
        assert_eq!(cc.track, Track::Captions);
        assert_eq!((cc.pts, cc.dts), (9000, 6000));
        assert_eq!(&cc.payload[..], &[0xfc, 0x94, 0x20]);
        // The video frame is untouched.
        assert_eq!(video.payload, payload);
        assert!(reg.present("s1").contains(Channel::Cc(1)));
        assert!(reg.present("s2").is_empty());
        // A frame without captions: nothing to push.
        let plain = Frame::video(12000, 9000, false, Bytes::from_static(&[0, 0, 0, 1, 0x41]));
        assert!(tap.video(&plain).is_none());

        reg.replace_declared([("s1".to_string(), vec![info("CC3", "es", "Español")])]);
        let tracks = reg.tracks("s1", &reg.declared("s1"));
        assert_eq!(
            tracks,
            [info("CC3", "es", "Español"), info("CC1", "und", "CC1")]
        );
        let (lines, attrs) = reg.playlist_lines("s1", Some("subs.m3u8"));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(attrs, r#"CLOSED-CAPTIONS="cc",SUBTITLES="subs""#);

        // A second publisher of the same stream takes over; the first one's
        // drop does not erase the second one's state.
        let mut second = StreamCaptions::new(reg.clone(), "s1");
        assert!(reg.present("s1").is_empty());
        second.video(&video);
        drop(tap);
        assert!(reg.present("s1").contains(Channel::Cc(1)));
        drop(second);
        assert!(reg.present("s1").is_empty());
        let (lines, attrs) = reg.playlist_lines("s1", None);
        assert!(lines.is_empty());
        assert_eq!(attrs, "CLOSED-CAPTIONS=NONE");
    }
}
