//! What a WebRTC viewer is sent, computed from the hub's frames without any
//! I/O: H.264 access units in Annex B form (the packetizer's input, RFC 6184
//! packetization is str0m's), SPS/PPS ahead of every keyframe, and RTP times
//! that never run backwards.

use banyan_egress::ts::{avcc_nals, avcc_param_sets};
use banyan_relay::{Frame, MediaInfo, CLOCK_HZ};
use bytes::Bytes;

const START_CODE: [u8; 4] = [0, 0, 0, 1];
/// NAL unit types that are stripped: access unit delimiters (the RTP
/// marker bit delimits access units) and filler data.
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;

/// Turns the hub's video frames into Annex B access units and their RTP
/// times (90 kHz, the hub's own clock).
#[derive(Debug, Default)]
pub struct VideoTrack {
    /// SPS and PPS of the current configuration, as Annex B.
    param_sets: Bytes,
    /// The last RTP time handed out (90 kHz).
    last_rtp: Option<u64>,
}

/// The session's one media timeline: the media time of `pts` is
/// `pts + offset` (90 kHz), set by the first frame of either track, so
/// video and audio RTP times (and their sender reports) agree.
#[derive(Debug, Default, Clone, Copy)]
pub struct Clock {
    offset: Option<i64>,
}

impl Clock {
    /// Media time of `pts` in 90 kHz ticks, starting one second in.
    pub fn ticks(&mut self, pts: i64) -> u64 {
        let offset = *self.offset.get_or_insert(CLOCK_HZ - pts);
        pts.saturating_add(offset).max(0) as u64
    }

    /// The same at another clock rate (Opus: 48 kHz).
    pub fn ticks_at(&mut self, pts: i64, rate: u32) -> u64 {
        let t = self.ticks(pts);
        (u128::from(t) * u128::from(rate) / CLOCK_HZ as u128) as u64
    }
}

/// One access unit ready for the packetizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    pub annex_b: Vec<u8>,
    /// 90 kHz.
    pub rtp_time: u64,
    pub keyframe: bool,
}

impl VideoTrack {
    /// A new codec configuration from the hub.
    pub fn set_info(&mut self, info: &MediaInfo) {
        self.param_sets = info
            .video
            .as_ref()
            .map(|v| avcc_param_sets(&v.avcc))
            .unwrap_or_default();
    }

    /// Whether a configuration with parameter sets is known.
    pub fn has_param_sets(&self) -> bool {
        !self.param_sets.is_empty()
    }

    /// The access unit of one video frame; `None` when the payload holds no
    /// NAL unit worth sending.
    pub fn access_unit(&mut self, frame: &Frame, clock: &mut Clock) -> Option<AccessUnit> {
        let mut out = Vec::with_capacity(frame.payload.len() + self.param_sets.len() + 16);
        if frame.keyframe {
            out.extend_from_slice(&self.param_sets);
        }
        let mut any = false;
        for nal in avcc_nals(&frame.payload) {
            let kind = nal[0] & 0x1f;
            if kind == NAL_AUD || kind == NAL_FILLER {
                continue;
            }
            // Parameter sets inside a keyframe are already sent ahead of it.
            if frame.keyframe && (kind == 7 || kind == 8) && !self.param_sets.is_empty() {
                continue;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
            any = true;
        }
        if !any {
            return None;
        }
        let rtp_time = self.rtp_time(clock.ticks(frame.pts));
        Some(AccessUnit {
            annex_b: out,
            rtp_time,
            keyframe: frame.keyframe,
        })
    }

    /// The RTP time of a media time: never earlier than the previous one
    /// (a resubscription's squeezed backlog may start slightly earlier).
    pub fn rtp_time(&mut self, ticks: u64) -> u64 {
        let t = match self.last_rtp {
            Some(last) => ticks.max(last),
            None => ticks,
        };
        self.last_rtp = Some(t);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_relay::VideoConfig;

    fn avcc_record(sps: &[u8], pps: &[u8]) -> Bytes {
        let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        v.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        v.extend_from_slice(sps);
        v.push(1);
        v.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        v.extend_from_slice(pps);
        v.into()
    }

    fn avcc_payload(nals: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        v.into()
    }

    fn info() -> MediaInfo {
        MediaInfo {
            version: 1,
            video: Some(VideoConfig {
                avcc: avcc_record(&[0x67, 0x42, 0xc0, 0x1f, 0xaa], &[0x68, 0xce]),
                width: 640,
                height: 360,
                codec: "avc1.42c01f".into(),
            }),
            audio: None,
        }
    }

    #[test]
    fn keyframes_carry_parameter_sets_first() {
        let mut t = VideoTrack::default();
        t.set_info(&info());
        let idr = Frame::video(0, 0, true, avcc_payload(&[&[9, 0xf0], &[0x65, 1, 2]]));
        let mut clock = Clock::default();
        let au = t.access_unit(&idr, &mut clock).expect("an access unit");
        assert_eq!(
            au.annex_b,
            [
                &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xaa][..],
                &[0, 0, 0, 1, 0x68, 0xce],
                &[0, 0, 0, 1, 0x65, 1, 2],
            ]
            .concat()
        );
        let p = Frame::video(3000, 3000, false, avcc_payload(&[&[0x41, 7]]));
        let au = t.access_unit(&p, &mut clock).expect("an access unit");
        assert_eq!(au.annex_b, vec![0, 0, 0, 1, 0x41, 7]);
        assert_eq!(au.rtp_time, 90_000 + 3000);
    }

    #[test]
    fn rtp_time_never_runs_backwards() {
        let mut t = VideoTrack::default();
        let mut c = Clock::default();
        assert_eq!(t.rtp_time(c.ticks(500_000)), 90_000);
        assert_eq!(t.rtp_time(c.ticks(503_000)), 93_000);
        // A resubscription's squeezed backlog lands slightly earlier.
        assert_eq!(t.rtp_time(c.ticks(502_000)), 93_000);
        assert_eq!(t.rtp_time(c.ticks(506_000)), 96_000);
        // Audio on the same timeline, at 48 kHz.
        assert_eq!(c.ticks_at(506_000, 48_000), 96_000 * 48 / 90);
    }

    #[test]
    fn garbage_payloads_give_nothing() {
        let mut t = VideoTrack::default();
        let mut c = Clock::default();
        let f = Frame::video(0, 0, false, Bytes::from_static(&[0, 0, 0, 9, 1]));
        assert!(t.access_unit(&f, &mut c).is_none());
        let f = Frame::video(0, 0, true, Bytes::from_static(&[0, 0, 0, 2, 9, 0]));
        assert!(t.access_unit(&f, &mut c).is_none());
    }
}
