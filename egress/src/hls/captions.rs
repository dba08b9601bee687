//! Captions for HLS from the node's caption registry: the multivariant
//! playlist's caption lines and the WebVTT rendition decoded from the
//! stream's lowest CEA-608 channel.

use std::sync::Arc;

use banyan_captions::{
    webvtt_segment, Cea608Decoder, Cea708Decoder, Channel, ChannelSet, Cue, Extractor, Registry,
};

use super::playlist::CaptionLines;
use super::{CaptionSource, WebVttWriter};

/// Finished cues kept per channel between two segments.
const MAX_CUES: usize = 256;
/// Triplets per `cc_data()` structure (5-bit `cc_count`).
const MAX_CC_COUNT: usize = 31;

/// A [`CaptionSource`] over the node's [`Registry`]: the channels present
/// (from ingest) and the platform's declarations (names, languages); every
/// muxer gets a [`Cea608Vtt`] writer.
pub struct RegistryCaptions {
    registry: Arc<Registry>,
}

impl RegistryCaptions {
    pub fn new(registry: Arc<Registry>) -> RegistryCaptions {
        RegistryCaptions { registry }
    }
}

impl CaptionSource for RegistryCaptions {
    fn caption_lines(&self, uid: &str, subtitles_uri: Option<&str>) -> CaptionLines {
        let (media, variant_attrs) = self.registry.playlist_lines(uid, subtitles_uri);
        CaptionLines {
            media,
            variant_attrs,
        }
    }

    fn webvtt(&self, uid: &str) -> Option<Box<dyn WebVttWriter>> {
        Some(Box::new(Cea608Vtt::new(Some((
            self.registry.clone(),
            uid.to_string(),
        )))))
    }
}

/// A [`WebVttWriter`] decoding CEA-608: one decoder per channel CC1..CC4,
/// segments written from the lowest channel present; a stream with 708
/// services and no 608 channel gets its lowest service decoded instead
/// ([`ChannelSet::subtitle_source`]). Channel presence is tracked from
/// the captions frames themselves, so it also works for a stream relayed
/// from another node (then it is noted in the registry for the playlist).
///
/// Segment `[start, end)` is written with `X-TIMESTAMP-MAP=MPEGTS:<start>`
/// and cue times relative to `start`: the media time of the segment's first
/// video frame, which is also the fMP4 `baseMediaDecodeTime` of its first
/// part.
pub struct Cea608Vtt {
    decoders: [Cea608Decoder; 4],
    cues: [Vec<Cue>; 4],
    /// The 708 service decoded when no 608 channel is present, its cues.
    service: Option<(u8, Cea708Decoder, Vec<Cue>)>,
    tracker: Extractor,
    present: ChannelSet,
    registry: Option<(Arc<Registry>, String)>,
    scratch: Vec<u8>,
}

impl Cea608Vtt {
    /// A writer; with a registry, the channels it sees are noted for `uid`
    /// when no local publisher owns the stream.
    pub fn new(registry: Option<(Arc<Registry>, String)>) -> Cea608Vtt {
        Cea608Vtt {
            decoders: [1, 2, 3, 4].map(Cea608Decoder::new),
            cues: Default::default(),
            service: None,
            tracker: Extractor::new(),
            present: ChannelSet::new(),
            registry,
            scratch: Vec::with_capacity(2 + 3 * MAX_CC_COUNT),
        }
    }

    /// The channels seen in the captions frames (within the presence timeout).
    pub fn channels(&self) -> ChannelSet {
        self.present
    }

    fn track(&mut self, pts: i64, cc_data: &[u8]) {
        for chunk in cc_data.chunks(3 * MAX_CC_COUNT) {
            let n = chunk.len() / 3;
            self.scratch.clear();
            // process_cc_data_flag, cc_count; em_data
            self.scratch.push(0x40 | n as u8);
            self.scratch.push(0xff);
            self.scratch.extend_from_slice(&chunk[..n * 3]);
            let _ = self.tracker.push_cc_data(pts, &self.scratch);
        }
        let present = self.tracker.channels();
        if present != self.present {
            self.present = present;
            if let Some((reg, uid)) = &self.registry {
                reg.note_relayed(uid, present);
            }
        }
    }
}

impl WebVttWriter for Cea608Vtt {
    fn push(&mut self, pts: i64, cc_data: &[u8]) {
        self.track(pts, cc_data);
        for (d, cues) in self.decoders.iter_mut().zip(self.cues.iter_mut()) {
            let done = d.push(pts, cc_data);
            let room = MAX_CUES.saturating_sub(cues.len());
            cues.extend(done.into_iter().take(room));
        }
        if let Some(Channel::Service(n)) = self.present.subtitle_source() {
            if self.service.as_ref().is_none_or(|(m, _, _)| *m != n) {
                self.service = Some((n, Cea708Decoder::new(n), Vec::new()));
            }
        }
        if let Some((_, d, cues)) = self.service.as_mut() {
            let done = d.push(pts, cc_data);
            let room = MAX_CUES.saturating_sub(cues.len());
            cues.extend(done.into_iter().take(room));
        }
    }

    fn segment(&mut self, start: i64, end: i64) -> String {
        let doc = match self.present.subtitle_source() {
            Some(Channel::Cc(ch)) => {
                let i = usize::from(ch - 1);
                let mut cues = self.cues[i].clone();
                cues.extend(self.decoders[i].showing(end));
                webvtt_segment(&cues, start, end, start)
            }
            Some(Channel::Service(n)) => match &self.service {
                Some((m, d, cues)) if *m == n => {
                    let mut cues = cues.clone();
                    cues.extend(d.showing(end));
                    webvtt_segment(&cues, start, end, start)
                }
                _ => webvtt_segment(&[], start, end, start),
            },
            None => webvtt_segment(&[], start, end, start),
        };
        // Cues over by the end of this segment are written for good.
        for cues in &mut self.cues {
            cues.retain(|c| c.end > end);
        }
        if let Some((_, _, cues)) = self.service.as_mut() {
            cues.retain(|c| c.end > end);
        }
        doc
    }
}

impl Drop for Cea608Vtt {
    fn drop(&mut self) {
        if let Some((reg, uid)) = &self.registry {
            reg.forget_relayed(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_captions::inject::Script;

    #[test]
    fn a_708_service_alone_becomes_webvtt() {
        let frames = Script::parse("SERVICE1 1 2.5 - Hello 708|second row")
            .unwrap()
            .render(120, 30)
            .unwrap();
        let mut w = Cea608Vtt::new(None);
        let mut docs = Vec::new();
        for (i, t) in frames.iter().enumerate() {
            let pts = i as i64 * 3000;
            if i > 0 && i % 30 == 0 {
                docs.push(w.segment(pts - 90_000, pts));
            }
            w.push(pts, t);
        }
        let ids: Vec<String> = w.channels().iter().map(|c| c.instream_id()).collect();
        assert_eq!(ids, ["SERVICE1"]);
        let all = docs.concat();
        assert!(all.contains("Hello 708\nsecond row\n"), "{all}");
        assert!(
            docs[2].contains("--> 00:00:00.5"),
            "ends at 2.5 s: {}",
            docs[2]
        );
    }

    #[test]
    fn pop_on_cues_land_in_their_segments() {
        let frames = Script::parse("CC1 1 2.5 popon Hello\nCC3 0.5 3 popon Hola")
            .unwrap()
            .render(120, 30)
            .unwrap();
        let mut w = Cea608Vtt::new(None);
        let mut docs = Vec::new();
        for (i, t) in frames.iter().enumerate() {
            let pts = i as i64 * 3000;
            if i > 0 && i % 30 == 0 {
                docs.push(w.segment(pts - 90_000, pts));
            }
            w.push(pts, t);
        }
        let ids: Vec<String> = w.channels().iter().map(|c| c.instream_id()).collect();
        assert_eq!(ids, ["CC1", "CC3"]);
        assert_eq!(
            docs[0],
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"
        );
        // CC1 (the lowest channel) is shown from 1.0 s; the decoder holds
        // four frames back, so the cue still shows at the end of 2 s.
        assert_eq!(
            docs[1],
            "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:90000,LOCAL:00:00:00.000\n\n00:00:00.000 --> 00:00:01.000\nHello\n"
        );
        assert!(docs[2].starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:180000,"));
        assert!(
            docs[2].contains("00:00:00.000 --> 00:00:00.500\nHello\n"),
            "{}",
            docs[2]
        );
        assert!(!docs.iter().any(|d| d.contains("Hola")));
    }
}
