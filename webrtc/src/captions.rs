//! Captions for a WebRTC viewer (sans-IO): the hub's captions frames of the
//! stream decoded (the channel the HLS WebVTT rendition takes: the lowest
//! present CCn, else the lowest SERVICEn) into the text on screen, sent over the
//! viewer's `captions` data channel as `{"text": "..."}` each time it
//! changes (an empty text clears it). The watch page shows it as a text
//! track of the video.

use banyan_captions::{CaptionDecoder, ChannelSet};

/// One viewer's caption state.
#[derive(Default)]
pub struct LiveCaptions {
    decoder: Option<CaptionDecoder>,
    /// The text last sent (none yet: the screen is blank).
    sent: String,
}

impl LiveCaptions {
    /// One captions frame (`cc_data` triplets) at `pts`; `present` names
    /// the stream's channels (asked until one is known). Returns the message
    /// to send when the text on screen changed.
    pub fn push(
        &mut self,
        present: impl FnOnce() -> ChannelSet,
        pts: i64,
        triplets: &[u8],
    ) -> Option<String> {
        if self.decoder.is_none() {
            let channel = present().subtitle_source()?;
            self.decoder = Some(CaptionDecoder::new(channel));
        }
        let d = self.decoder.as_mut()?;
        d.push(pts, triplets);
        let text = d.showing(pts).map(|c| c.text).unwrap_or_default();
        if self.sent == text {
            return None;
        }
        let msg = serde_json::json!({ "text": text }).to_string();
        self.sent = text;
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banyan_captions::inject;
    use banyan_captions::Channel;

    #[test]
    fn pop_on_text_is_sent_once_per_change() {
        let present: ChannelSet = [Channel::Cc(1)].into_iter().collect();
        let mut live = LiveCaptions::default();
        let mut sent = Vec::new();
        let script = inject::Script::parse("CC1 1.0 2.5 popon HELLO WEBRTC").unwrap();
        let frames = script.render(90, 30).unwrap();
        for (i, triplets) in frames.iter().enumerate() {
            if let Some(m) = live.push(|| present, i as i64 * 3000, triplets) {
                sent.push(m);
            }
        }
        // Shown, then cleared at its end.
        assert_eq!(
            sent,
            vec![
                r#"{"text":"HELLO WEBRTC"}"#.to_string(),
                r#"{"text":""}"#.to_string()
            ]
        );
    }

    #[test]
    fn a_708_service_when_no_608_channel() {
        let present: ChannelSet = [Channel::Service(1)].into_iter().collect();
        let mut live = LiveCaptions::default();
        let script = inject::Script::parse("SERVICE1 1.0 2.5 - FROM SERVICE ONE").unwrap();
        let sent: Vec<String> = script
            .render(90, 30)
            .unwrap()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| live.push(|| present, i as i64 * 3000, t))
            .collect();
        assert_eq!(
            sent,
            vec![
                r#"{"text":"FROM SERVICE ONE"}"#.to_string(),
                r#"{"text":""}"#.to_string()
            ]
        );
    }

    #[test]
    fn nothing_without_a_caption_channel() {
        let mut live = LiveCaptions::default();
        assert!(live.push(ChannelSet::new, 0, &[0xfc, 0x94, 0x20]).is_none());
        assert!(live.push(ChannelSet::new, 0, &[0xff; 5]).is_none());
    }
}
