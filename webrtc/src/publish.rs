//! One WHIP publisher: a str0m `Rtc` that receives H.264 and Opus, driven
//! by one task that publishes to the hub like any other ingest.
//!
//! * str0m reassembles each frame (RFC 6184 for H.264); [`WhipMedia`]
//!   turns them into the hub's frames and configuration, and SEI captions
//!   flow as from RTMP or SRT. Browsers' encoders send a keyframe only when
//!   asked, so the session asks (PLI) at connection and every
//!   [`KEYFRAME_INTERVAL`]: new viewers and HLS segments need them.
//! * Time: each track's RTP clock is anchored on the wallclock of its first
//!   packet, so both land on one 90 kHz timeline (sender reports are not
//!   used: the arrival of the first packets sets the lip sync).

use std::time::{Duration, Instant};

use banyan_ingest::events::IngestEvent;
use banyan_relay::{Publisher, CLOCK_HZ};
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use crate::demux::{Registered, Sessions};
use crate::session::{close, input, rtc_error, transmit, Forget, MAX_WAIT, SILENCE};
use crate::whip_media::{WhipMedia, WhipOut};

/// Keyframes are asked for this often (the longest group of pictures).
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// Everything a publisher task owns.
pub(crate) struct PublishSession {
    pub sessions: std::sync::Arc<Sessions>,
    pub reg: Registered,
    pub uid: String,
    pub rtc: Rtc,
    pub ingest: banyan_ingest::Context,
    /// Whether the offer sends audio (the AAC configuration is known at once).
    pub audio: bool,
}

/// One track's RTP clock on the hub's timeline.
#[derive(Default)]
struct Anchor {
    /// (first RTP time, its 90 kHz time on the timeline)
    first: Option<(u64, i64)>,
}

impl Anchor {
    fn ticks(&mut self, d: &MediaData, epoch: Instant) -> i64 {
        let rate = i64::from(d.time.denom().max(1));
        let rtp = d.time.numer();
        let (r0, t0) = *self.first.get_or_insert_with(|| {
            let since = d.network_time.saturating_duration_since(epoch);
            (rtp, since.as_micros() as i64 * CLOCK_HZ / 1_000_000)
        });
        t0 + (rtp as i64 - r0 as i64) * CLOCK_HZ / rate
    }
}

struct Media {
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    epoch: Instant,
    video_clock: Anchor,
    audio_clock: Anchor,
    core: WhipMedia,
    out: Vec<WhipOut>,
    captions: banyan_captions::StreamCaptions,
}

impl PublishSession {
    pub async fn run(self) {
        let PublishSession {
            sessions,
            reg,
            uid,
            mut rtc,
            ingest,
            audio,
        } = self;
        let Registered { id, mut rx, cancel } = reg;
        let _forget = Forget::new(sessions.clone(), id.clone());
        let connect_by = Instant::now() + sessions.cfg.connect_timeout;
        let mut media = Media {
            video_mid: None,
            audio_mid: None,
            epoch: Instant::now(),
            video_clock: Anchor::default(),
            audio_clock: Anchor::default(),
            core: WhipMedia::new(audio),
            out: Vec::new(),
            captions: banyan_captions::StreamCaptions::new(ingest.captions.clone(), &uid),
        };
        let mut publisher: Option<Publisher> = None;
        let mut next_pli = Instant::now();
        let mut heard = Instant::now();
        let why = loop {
            let deadline = loop {
                match rtc.poll_output() {
                    Ok(Output::Transmit(t)) => transmit(&sessions, &t),
                    Ok(Output::Timeout(t)) => break Ok(t),
                    Ok(Output::Event(e)) => match e {
                        Event::Connected => match ingest.hub.publish(&uid) {
                            Ok(p) => {
                                tracing::info!(session = %id, stream = %uid, "WHIP publisher connected");
                                metrics::counter!("banyan_whip_connected_total").increment(1);
                                ingest
                                    .events
                                    .report(IngestEvent::Published { uid: uid.clone() });
                                publisher = Some(p);
                            }
                            Err(e) => {
                                tracing::info!(stream = %uid, error = %e, "WHIP publish refused");
                                ingest.events.report(IngestEvent::Refused {
                                    uid: uid.clone(),
                                    reason: "busy",
                                });
                                break Err("busy");
                            }
                        },
                        Event::MediaAdded(m) if m.kind == MediaKind::Video => {
                            media.video_mid = Some(m.mid);
                        }
                        Event::MediaAdded(m) if m.kind == MediaKind::Audio => {
                            media.audio_mid = Some(m.mid);
                        }
                        Event::MediaData(d) => {
                            if let Some(p) = publisher.as_mut() {
                                media.take(p, &d);
                            }
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            break Err("ICE disconnected");
                        }
                        _ => {}
                    },
                    Err(e) => break Err(rtc_error(e)),
                }
            };
            let deadline = match deadline {
                Ok(d) => d,
                Err(why) => break why,
            };
            if !rtc.is_alive() {
                break "closed";
            }
            if publisher.as_ref().is_some_and(|p| p.is_kicked()) {
                break "kicked";
            }
            if publisher.is_none() && Instant::now() >= connect_by {
                break "no connection";
            }
            if heard.elapsed() >= SILENCE {
                break "peer silent";
            }
            let now = Instant::now();
            if publisher.is_some() && now >= next_pli {
                if let Some(mut w) = media.video_mid.and_then(|m| rtc.writer(m)) {
                    if w.request_keyframe(None, KeyframeRequestKind::Pli).is_ok() {
                        next_pli = now + KEYFRAME_INTERVAL;
                    }
                }
            }
            let mut wake = deadline.min(now + MAX_WAIT);
            if publisher.is_none() {
                wake = wake.min(connect_by);
            } else {
                wake = wake.min(next_pli.max(now + Duration::from_millis(10)));
            }
            tokio::select! {
                _ = cancel.cancelled() => break "ended",
                d = rx.recv() => match d {
                    Some(d) => {
                        heard = d.at;
                        if let Err(e) = input(&mut rtc, &sessions, d) {
                            break e;
                        }
                        // Take what else has arrived before handing frames on.
                        while let Ok(d) = rx.try_recv() {
                            heard = d.at;
                            if let Err(e) = input(&mut rtc, &sessions, d) {
                                tracing::debug!(error = e, "WHIP datagram refused");
                            }
                        }
                    }
                    None => break "ended",
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                break rtc_error(e);
            }
        };
        close(&mut rtc, &sessions);
        if why == "protocol error" {
            ingest.events.report(IngestEvent::Broken {
                uid: uid.clone(),
                reason: "protocol",
            });
        }
        drop(publisher);
        tracing::info!(session = %id, stream = %uid, reason = why, "WHIP publisher left");
    }
}

impl Media {
    /// One reassembled frame from the peer, to the hub.
    fn take(&mut self, publisher: &mut Publisher, d: &MediaData) {
        if Some(d.mid) == self.video_mid {
            let pts = self.video_clock.ticks(d, self.epoch);
            self.core.video(pts, &d.data, d.contiguous, &mut self.out);
        } else if Some(d.mid) == self.audio_mid {
            let pts = self.audio_clock.ticks(d, self.epoch);
            self.core.audio(pts, &d.data, &mut self.out);
        }
        for o in self.out.drain(..) {
            match o {
                WhipOut::Info { video, audio } => publisher.set_info(Some(video), audio),
                WhipOut::Frame(f) => {
                    // Captions found in a video frame follow it.
                    let captions = self.captions.video(&f);
                    publisher.push(f);
                    if let Some(c) = captions {
                        publisher.push(c);
                    }
                }
            }
        }
    }
}
