//! What a WHIP publisher sends, turned into the hub's frames (sans-IO: the
//! session hands it reassembled frames and their times, it returns what
//! to publish).
//!
//! * Video: an Annex B access unit becomes AVCC; the SPS/PPS before a
//!   keyframe become the stream's configuration ([`WhipOut::Info`], when it
//!   changes). Nothing is published before the first keyframe, nor after a
//!   loss until the next one.
//! * Audio: Opus becomes AAC once ([`crate::to_aac`]), and waits for the
//!   video's configuration (the hub's info carries both).

use banyan_ingest::ts::h264;
use banyan_relay::{AudioConfig, Frame, VideoConfig};
use bytes::Bytes;

use crate::to_aac::{aac_config, OpusToAac};

/// What goes to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhipOut {
    /// A new configuration (before the frames that use it).
    Info {
        video: VideoConfig,
        audio: Option<AudioConfig>,
    },
    Frame(Frame),
}

/// One publisher's media.
pub struct WhipMedia {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    config: Option<VideoConfig>,
    /// Frames go out from a keyframe on, until a loss.
    started: bool,
    audio: Option<AudioConfig>,
    aac: Option<OpusToAac>,
}

impl WhipMedia {
    /// `audio`: the offer sends Opus.
    pub fn new(audio: bool) -> WhipMedia {
        let aac = if audio {
            match OpusToAac::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "no Opus to AAC transcoder; audio dropped");
                    None
                }
            }
        } else {
            None
        };
        WhipMedia {
            sps: None,
            pps: None,
            config: None,
            started: false,
            audio: aac.as_ref().map(|_| aac_config()),
            aac,
        }
    }

    /// One H.264 access unit (Annex B) at `pts` (90 kHz); `contiguous`:
    /// no packet was lost since the previous one.
    pub fn video(&mut self, pts: i64, data: &[u8], contiguous: bool, out: &mut Vec<WhipOut>) {
        let au = h264::annex_b_to_avcc(data);
        if au.avcc.is_empty() {
            return;
        }
        if !contiguous && !au.keyframe {
            // A lost packet broke this frame; the next keyframe repairs it.
            metrics::counter!("banyan_whip_frames_dropped_total", "reason" => "loss").increment(1);
            self.started = false;
            return;
        }
        if let Some(s) = au.sps {
            self.sps = Some(s);
        }
        if let Some(p) = au.pps {
            self.pps = Some(p);
        }
        if au.keyframe {
            if let Some(config) = self.config_now() {
                if self.config.as_ref() != Some(&config) {
                    out.push(WhipOut::Info {
                        video: config.clone(),
                        audio: self.audio.clone(),
                    });
                    self.config = Some(config);
                }
            }
            self.started = self.config.is_some();
        }
        if !self.started {
            metrics::counter!("banyan_whip_frames_dropped_total", "reason" => "before_keyframe")
                .increment(1);
            return;
        }
        // Browsers send no B-frames: decode order is presentation order.
        out.push(WhipOut::Frame(Frame::video(pts, pts, au.keyframe, au.avcc)));
    }

    /// The configuration the parameter sets seen so far describe.
    fn config_now(&self) -> Option<VideoConfig> {
        let (sps, pps) = (self.sps.as_ref()?, self.pps.as_ref()?);
        let avcc = h264::build_avcc(sps, pps)?;
        let (width, height) = h264::sps_dimensions(sps)?;
        Some(VideoConfig {
            avcc,
            width,
            height,
            codec: h264::codec_string(sps),
        })
    }

    /// One Opus packet at `pts` (90 kHz).
    pub fn audio(&mut self, pts: i64, data: &[u8], out: &mut Vec<WhipOut>) {
        if self.config.is_none() {
            return;
        }
        if let Some(aac) = self.aac.as_mut() {
            out.extend(aac.push(pts, data).into_iter().map(WhipOut::Frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 640x360 constrained-baseline SPS and a PPS (as a browser sends them).
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x17, 0xfc, 0xb0, 0x0f, 0x08, 0x84, 0x6a,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    }

    #[test]
    fn starts_at_a_keyframe_and_announces_its_configuration() {
        let mut m = WhipMedia::new(false);
        let mut out = Vec::new();
        m.video(0, &annex_b(&[&[0x41, 1, 2]]), true, &mut out);
        assert!(out.is_empty(), "nothing before a keyframe");
        m.video(3000, &annex_b(&[SPS, PPS, &[0x65, 9, 9]]), true, &mut out);
        let WhipOut::Info { video, audio } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((video.width, video.height), (640, 360));
        assert_eq!(video.codec, "avc1.42c01f");
        assert!(audio.is_none());
        let WhipOut::Frame(f) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(f.keyframe);
        assert_eq!((f.pts, f.dts), (3000, 3000));
        out.clear();
        // The same parameter sets again: no new configuration.
        m.video(6000, &annex_b(&[SPS, PPS, &[0x65, 9, 9]]), true, &mut out);
        m.video(9000, &annex_b(&[&[0x41, 1, 2]]), true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| matches!(o, WhipOut::Frame(_))));
        out.clear();
        // A loss stops the frames until the next keyframe.
        m.video(12000, &annex_b(&[&[0x41, 1, 2]]), false, &mut out);
        m.video(15000, &annex_b(&[&[0x41, 1, 2]]), true, &mut out);
        assert!(out.is_empty(), "{out:?}");
        m.video(18000, &annex_b(&[&[0x65, 1, 2]]), false, &mut out);
        assert_eq!(out.len(), 1, "a keyframe resumes");
    }

    #[test]
    fn garbage_publishes_nothing() {
        let mut m = WhipMedia::new(true);
        let mut out = Vec::new();
        m.video(0, &[0xff; 40], true, &mut out);
        m.video(0, &annex_b(&[&[0x67], &[0x68], &[0x65]]), true, &mut out);
        m.audio(0, &[0xff; 10], &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
