//! One viewer: a str0m `Rtc` fed by the hub, driven by one task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use banyan_relay::views::{Protocol, ViewerGuard};
use banyan_relay::{Item, SubscribeOptions, Subscriber, Track};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol as NetProtocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use tokio::sync::{broadcast, watch};

use crate::audio::{OpusPacket, OPUS_RATE};
use crate::demux::{Datagram, Registered, Sessions};
use crate::media::{Clock, VideoTrack};

/// PLI/FIR resubscriptions at most this often.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// A connected peer silent this long (no STUN consent, no RTCP) is gone.
pub(crate) const SILENCE: Duration = Duration::from_secs(15);
/// The longest wait between two drives of the state machine.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(500);

/// Everything a session task owns.
pub(crate) struct Session {
    pub sessions: Arc<Sessions>,
    pub reg: Registered,
    pub uid: String,
    pub rtc: Rtc,
}

/// Removes the session from the table however its task ends.
pub(crate) struct Forget {
    sessions: Arc<Sessions>,
    id: String,
}

impl Forget {
    pub fn new(sessions: Arc<Sessions>, id: String) -> Forget {
        Forget { sessions, id }
    }
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.sessions.remove(&self.id);
    }
}

struct Media {
    mid: Option<Mid>,
    pt: Option<Pt>,
    audio_mid: Option<Mid>,
    audio_pt: Option<Pt>,
    /// The last audio RTP time written (48 kHz).
    audio_last: Option<u64>,
    track: VideoTrack,
    clock: Clock,
    /// The wallclock of media time zero (sender reports map one to the other).
    epoch: Option<Instant>,
    /// The viewer's `captions` data channel, once open.
    captions_channel: Option<ChannelId>,
}

impl Media {
    /// The wallclock of a media time in 90 kHz ticks.
    fn wallclock(&mut self, ticks: u64) -> Instant {
        let at = Duration::from_micros(ticks * 1000 / 90);
        let epoch = *self
            .epoch
            .get_or_insert_with(|| Instant::now().checked_sub(at).unwrap_or_else(Instant::now));
        epoch + at
    }
}

impl Session {
    pub async fn run(self) {
        let Session {
            sessions,
            reg,
            uid,
            mut rtc,
        } = self;
        let Registered { id, mut rx, cancel } = reg;
        let _forget = Forget::new(sessions.clone(), id.clone());
        let hub = sessions.ctx.hub.clone();
        let connect_by = Instant::now() + sessions.cfg.connect_timeout;
        let mut media = Media {
            mid: None,
            pt: None,
            audio_mid: None,
            audio_pt: None,
            audio_last: None,
            track: VideoTrack::default(),
            clock: Clock::default(),
            epoch: None,
            captions_channel: None,
        };
        let mut audio: Option<broadcast::Receiver<Arc<OpusPacket>>> = None;
        let mut audio_asked = false;
        let mut captions: Option<watch::Receiver<String>> = None;
        let mut sub: Option<Subscriber> = None;
        let mut viewer: Option<ViewerGuard> = None;
        let mut last_resync: Option<Instant> = None;
        let mut heard = Instant::now();
        let why = loop {
            // Drain what the state machine has to say.
            let deadline = loop {
                match rtc.poll_output() {
                    Ok(Output::Transmit(t)) => transmit(&sessions, &t),
                    Ok(Output::Timeout(t)) => break Ok(t),
                    Ok(Output::Event(e)) => match e {
                        Event::Connected => {
                            tracing::debug!(session = %id, stream = %uid, "WebRTC viewer connected");
                            metrics::counter!("banyan_webrtc_connected_total").increment(1);
                            sub = Some(hub.subscribe(&uid, SubscribeOptions { catch_up: true }));
                            viewer = Some(sessions.ctx.views.viewer(&uid, Protocol::WebRtc));
                        }
                        Event::MediaAdded(m) if m.kind == MediaKind::Video => {
                            media.mid = Some(m.mid);
                        }
                        Event::MediaAdded(m) if m.kind == MediaKind::Audio => {
                            media.audio_mid = Some(m.mid);
                        }
                        Event::ChannelOpen(cid, label) if label == "captions" => {
                            media.captions_channel = Some(cid);
                            let mut rx =
                                sessions
                                    .captions
                                    .subscribe(&hub, &sessions.ctx.captions, &uid);
                            // What is on screen now, if anything.
                            let now = rx.borrow_and_update().clone();
                            if !now.is_empty() {
                                write_captions(&mut rtc, &media, &now);
                            }
                            captions = Some(rx);
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            break Err("ICE disconnected");
                        }
                        Event::KeyframeRequest(_) => {
                            let due = last_resync.is_none_or(|t| t.elapsed() >= RESYNC_INTERVAL);
                            if sub.is_some() && due {
                                // The hub's latest keyframe, at the live edge.
                                last_resync = Some(Instant::now());
                                sub =
                                    Some(hub.subscribe(&uid, SubscribeOptions { catch_up: true }));
                                metrics::counter!("banyan_webrtc_keyframe_requests_total")
                                    .increment(1);
                            }
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
            // Opus once connected with an audio m-line (once: a transcoder
            // that ended is not restarted for this session).
            if sub.is_some() && media.audio_mid.is_some() && !audio_asked {
                audio_asked = true;
                audio = Some(sessions.transcoders.subscribe(&hub, &uid));
            }
            if sub.is_none() && Instant::now() >= connect_by {
                break "no connection";
            }
            if heard.elapsed() >= SILENCE {
                break "peer silent";
            }
            let now = Instant::now();
            let mut wake = deadline.min(now + MAX_WAIT);
            if sub.is_none() {
                wake = wake.min(connect_by);
            }
            tokio::select! {
                _ = cancel.cancelled() => break "ended",
                d = rx.recv() => match d {
                    Some(d) => {
                        heard = d.at;
                        if let Err(e) = input(&mut rtc, &sessions, d) {
                            break e;
                        }
                    }
                    None => break "ended",
                },
                item = next_item(&mut sub) => {
                    match item {
                        Item::Info(info) => media.track.set_info(&info),
                        Item::Frame(f) if f.track == Track::Video => {
                            if let Some(v) = viewer.as_mut() {
                                v.delivered(&f);
                            }
                            write_video(&mut rtc, &mut media, &f);
                        }
                        Item::Frame(_) => {}
                        Item::End(_) => break "stream ended",
                    }
                }
                p = next_audio(&mut audio) => match p {
                    Ok(p) => write_audio(&mut rtc, &mut media, &p),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("banyan_webrtc_audio_dropped_total", "reason" => "slow_viewer")
                            .increment(n);
                    }
                    // The transcoder ended (the stream's audio went away).
                    Err(broadcast::error::RecvError::Closed) => audio = None,
                },
                msg = next_caption(&mut captions) => match msg {
                    Some(m) => write_captions(&mut rtc, &media, &m),
                    // The stream's decoder ended (with the stream).
                    None => captions = None,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            if let Err(e) = rtc.handle_input(Input::Timeout(Instant::now())) {
                break rtc_error(e);
            }
        };
        close(&mut rtc, &sessions);
        drop(viewer);
        tracing::debug!(session = %id, stream = %uid, reason = why, "WebRTC viewer left");
    }
}

/// One datagram the state machine has to send (dropped and counted when
/// the socket's buffer is full).
pub(crate) fn transmit(sessions: &Sessions, t: &str0m::net::Transmit) {
    if sessions
        .socket
        .try_send_to(&t.contents, t.destination)
        .is_err()
    {
        metrics::counter!("banyan_webrtc_datagrams_dropped_total", "reason" => "send").increment(1);
    }
}

/// End a session: let the state machine send what disconnecting says.
pub(crate) fn close(rtc: &mut Rtc, sessions: &Sessions) {
    rtc.disconnect();
    while let Ok(Output::Transmit(t)) = rtc.poll_output() {
        transmit(sessions, &t);
    }
}

pub(crate) fn rtc_error(e: str0m::RtcError) -> &'static str {
    tracing::debug!(error = %e, "WebRTC session error");
    "protocol error"
}

/// Feed one datagram to the state machine. A datagram that str0m cannot
/// classify is dropped (counted); an error of the session ends it.
pub(crate) fn input(rtc: &mut Rtc, sessions: &Sessions, d: Datagram) -> Result<(), &'static str> {
    let Ok(contents) = d.data.as_slice().try_into() else {
        metrics::counter!("banyan_webrtc_datagrams_dropped_total", "reason" => "unparsable")
            .increment(1);
        return Ok(());
    };
    let recv = Input::Receive(
        d.at,
        Receive {
            proto: NetProtocol::Udp,
            source: d.source,
            destination: sessions.announce,
            contents,
        },
    );
    if !rtc.accepts(&recv) {
        metrics::counter!("banyan_webrtc_datagrams_dropped_total", "reason" => "not_accepted")
            .increment(1);
        return Ok(());
    }
    rtc.handle_input(recv).map_err(rtc_error)
}

/// The next hub item, or never when not subscribed yet.
async fn next_item(sub: &mut Option<Subscriber>) -> Item {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The next Opus packet, or never without audio.
async fn next_audio(
    rx: &mut Option<broadcast::Receiver<Arc<OpusPacket>>>,
) -> Result<Arc<OpusPacket>, broadcast::error::RecvError> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn write_audio(rtc: &mut Rtc, media: &mut Media, p: &OpusPacket) {
    let Some(mid) = media.audio_mid else {
        return;
    };
    if media.audio_pt.is_none() {
        media.audio_pt = rtc.writer(mid).and_then(|w| {
            w.payload_params()
                .find(|p| p.spec().codec == Codec::Opus)
                .map(|p| p.pt())
        });
    }
    let Some(pt) = media.audio_pt else {
        return;
    };
    let rtp = media.clock.ticks_at(p.pts, OPUS_RATE);
    // Never backwards: a packet from before what was sent is late, dropped.
    if media.audio_last.is_some_and(|l| rtp <= l) {
        return;
    }
    media.audio_last = Some(rtp);
    let ticks = media.clock.ticks(p.pts);
    let wallclock = media.wallclock(ticks);
    let Some(w) = rtc.writer(mid) else {
        return;
    };
    let time = MediaTime::new(rtp, str0m::media::Frequency::FORTY_EIGHT_KHZ);
    if let Err(e) = w.write(pt, wallclock, time, p.data.to_vec()) {
        tracing::debug!(error = %e, "writing an audio packet");
    }
}

/// The next caption message, `None` when the stream's decoder ended, or
/// never without a captions channel.
async fn next_caption(rx: &mut Option<watch::Receiver<String>>) -> Option<String> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(r.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// A caption message to the viewer's data channel.
fn write_captions(rtc: &mut Rtc, media: &Media, msg: &str) {
    let Some(cid) = media.captions_channel else {
        return;
    };
    let sent = rtc
        .channel(cid)
        .is_some_and(|mut ch| ch.write(false, msg.as_bytes()).unwrap_or(false));
    if !sent {
        metrics::counter!("banyan_webrtc_captions_dropped_total").increment(1);
    }
}

/// The H.264 payload type of the answer (packetization mode 1).
fn video_pt(rtc: &mut Rtc, mid: Mid) -> Option<Pt> {
    let w = rtc.writer(mid)?;
    let mut best = None;
    for p in w.payload_params() {
        let spec = p.spec();
        if spec.codec != Codec::H264 {
            continue;
        }
        if spec.format.packetization_mode == Some(1) {
            return Some(p.pt());
        }
        best.get_or_insert(p.pt());
    }
    best
}

fn write_video(rtc: &mut Rtc, media: &mut Media, f: &banyan_relay::Frame) {
    let Some(mid) = media.mid else {
        return;
    };
    if media.pt.is_none() {
        media.pt = video_pt(rtc, mid);
    }
    let Some(pt) = media.pt else {
        return;
    };
    let Some(au) = media.track.access_unit(f, &mut media.clock) else {
        return;
    };
    let wallclock = media.wallclock(au.rtp_time);
    let Some(w) = rtc.writer(mid) else {
        return;
    };
    if let Err(e) = w.write(
        pt,
        wallclock,
        MediaTime::from_90khz(au.rtp_time),
        au.annex_b,
    ) {
        tracing::debug!(error = %e, "writing a video frame");
        metrics::counter!("banyan_webrtc_frames_dropped_total", "reason" => "write").increment(1);
    }
}
