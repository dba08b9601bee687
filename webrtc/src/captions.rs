//! Captions for WebRTC viewers: the hub's captions frames of a stream
//! decoded once per stream, whatever the number of viewers (the channel the
//! HLS WebVTT rendition takes: the lowest present CCn, else the lowest
//! SERVICEn), into the text on screen. Each viewer's `captions` data
//! channel gets it as `{"text": "..."}` each time it changes (an empty
//! text clears it); the watch page shows it as a text track of the video.
//!
//! [`LiveCaptions`] is the sans-IO decoder; [`CaptionTexts`] runs one per
//! stream with viewers, on a `watch` channel that holds the latest text (a
//! viewer that joins gets what is on screen), and ends with the stream or
//! its last viewer.

use std::collections::HashMap;
use std::sync::Arc;

use banyan_captions::{CaptionDecoder, ChannelSet, Registry};
use banyan_relay::{Hub, Item, SubscribeOptions, Track};
use parking_lot::Mutex;
use tokio::sync::watch;

/// The caption texts of the node's streams with WebRTC viewers.
#[derive(Default)]
pub struct CaptionTexts {
    map: Mutex<HashMap<String, watch::Sender<String>>>,
}

impl CaptionTexts {
    /// The stream's caption message (empty until the first one); starts its
    /// decoder when none runs.
    pub fn subscribe(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        registry: &Arc<Registry>,
        uid: &str,
    ) -> watch::Receiver<String> {
        let mut map = self.map.lock();
        if let Some(tx) = map.get(uid) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(String::new());
        map.insert(uid.to_string(), tx.clone());
        let this = self.clone();
        let (hub, registry, uid) = (hub.clone(), registry.clone(), uid.to_string());
        tokio::spawn(async move {
            decode(&hub, &registry, &uid, &tx).await;
            let mut map = this.map.lock();
            if map.get(&uid).is_some_and(|t| t.same_channel(&tx)) {
                map.remove(&uid);
            }
        });
        rx
    }
}

/// One stream's decoder task, until the stream ends or no viewer is left.
async fn decode(hub: &Arc<Hub>, registry: &Registry, uid: &str, tx: &watch::Sender<String>) {
    let mut sub = hub.subscribe(uid, SubscribeOptions { catch_up: true });
    let mut live = LiveCaptions::default();
    loop {
        match sub.recv().await {
            Item::Frame(f) if f.track == Track::Captions => {
                if let Some(msg) = live.push(|| registry.present(uid), f.pts, &f.payload) {
                    tx.send_replace(msg);
                }
            }
            Item::End(_) => return,
            _ => {}
        }
        if tx.receiver_count() == 0 {
            return;
        }
    }
}

/// One stream's caption state (sans-IO).
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
