//! SRT push (caller): a hub stream as MPEG-TS to an SRT listener.
//!
//! libsrt's blocking calls run on one thread per output that owns the
//! socket: it connects (stream id, passphrase, latency), then sends the
//! messages it receives from a small bounded channel. The tokio side muxes
//! TS exactly as SRT playback does (source time from the decode time); when
//! the destination is slow the channel stays full, the hub cursor falls
//! behind and skips to a newer keyframe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::{Hub, Item, SubscribeOptions};
use banyan_srt::{sys, MsgCtrl, Socket};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::{PushConfig, PushState, PushStatus, SessionEnd, Target};
use crate::srt::{SourceClock, MESSAGE_SIZE};
use crate::ts::Muxer;

/// Messages queued towards the sending thread (about 0.1 s of a 5 Mbit/s
/// stream).
const QUEUE: usize = 64;

/// libsrt's own default: a caller learns nothing of a dead listener (UDP),
/// so it waits this long before it gives up.
const SRT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

struct Opts {
    addr: SocketAddr,
    stream_id: Option<String>,
    passphrase: Option<String>,
    latency: Option<Duration>,
    connect_timeout: Duration,
    send_timeout: Duration,
}

fn open(o: &Opts) -> Result<Socket, String> {
    let e = |what: &str, err: banyan_srt::SrtError| format!("SRT {what}: {err}");
    let s = Socket::new().map_err(|x| e("socket", x))?;
    if let Some(id) = &o.stream_id {
        s.set_str(sys::SRTO_STREAMID, id)
            .map_err(|x| e("streamid", x))?;
    }
    if let Some(p) = &o.passphrase {
        s.set_passphrase(p).map_err(|x| e("passphrase", x))?;
    }
    if let Some(l) = o.latency {
        s.set_latency(l).map_err(|x| e("latency", x))?;
    }
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    s.set_i32(sys::SRTO_CONNTIMEO, ms(o.connect_timeout))
        .map_err(|x| e("connect timeout", x))?;
    s.set_i32(sys::SRTO_SNDTIMEO, ms(o.send_timeout))
        .map_err(|x| e("send timeout", x))?;
    s.connect(o.addr).map_err(|x| {
        let reason = s.reject_reason();
        format!(
            "SRT connect {}: {x} ({})",
            o.addr,
            banyan_srt::reject_reason_str(reason)
        )
    })?;
    Ok(s)
}

/// The sending thread: connect, report, then send until the channel
/// closes or a send fails (the reason goes to `done`).
fn sender(
    o: Opts,
    mut rx: mpsc::Receiver<(Bytes, i64)>,
    ready: oneshot::Sender<Result<(), String>>,
    done: oneshot::Sender<String>,
) {
    let sock = match open(&o) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    while let Some((payload, srctime)) = rx.blocking_recv() {
        let mut ctrl = MsgCtrl {
            srctime,
            ..MsgCtrl::default()
        };
        if let Err(e) = sock.send(&payload, &mut ctrl) {
            let _ = done.send(format!("SRT send: {e}"));
            return;
        }
        metrics::counter!("banyan_output_bytes_total", "protocol" => "srt")
            .increment(payload.len() as u64);
    }
}

pub(super) async fn session(
    hub: &Arc<Hub>,
    uid: &str,
    target: &Target,
    cfg: &PushConfig,
    status: &PushStatus,
) -> Result<SessionEnd, String> {
    let Target::Srt {
        host,
        port,
        stream_id,
        passphrase,
        latency_ms,
    } = target
    else {
        return Err("not an SRT target".into());
    };
    let addr = tokio::time::timeout(
        cfg.connect_timeout,
        super::addr::resolve(host, *port, cfg.allow_private),
    )
    .await
    .map_err(|_| format!("resolving {host}: timed out"))??;
    let opts = Opts {
        addr,
        stream_id: stream_id.clone(),
        passphrase: passphrase.clone(),
        latency: latency_ms.map(|l| Duration::from_millis(l.into())),
        connect_timeout: cfg.connect_timeout.min(SRT_CONNECT_TIMEOUT),
        send_timeout: cfg.write_timeout,
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, mut done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("srt-push".into())
        .spawn(move || sender(opts, rx, ready_tx, done_tx))
        .map_err(|e| format!("starting the SRT sender: {e}"))?;
    match ready_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the SRT sender stopped".into()),
    }
    status.set(PushState::Connected);
    tracing::info!(stream = %uid, output = ?target, "output connected");
    let mut sub = hub.subscribe(uid, SubscribeOptions { catch_up: false });
    let mut mux = Muxer::new();
    let mut clock = SourceClock::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let failed = |done: &mut oneshot::Receiver<String>| {
        done.try_recv()
            .unwrap_or_else(|_| "the SRT connection closed".into())
    };
    loop {
        let item = tokio::select! {
            item = sub.recv() => item,
            r = &mut done_rx => {
                return Err(r.unwrap_or_else(|_| "the SRT connection closed".into()));
            }
        };
        match item {
            Item::Info(info) => mux.set_info(&info),
            Item::Frame(f) => {
                mux.frame(&f, &mut buf);
                let srctime = clock.map(f.dts, banyan_srt::time_now());
                while !buf.is_empty() {
                    let n = buf.len().min(MESSAGE_SIZE);
                    let payload = buf.split_to(n).freeze();
                    if tx.send((payload, srctime)).await.is_err() {
                        return Err(failed(&mut done_rx));
                    }
                }
            }
            Item::End(_) => return Ok(SessionEnd::StreamEnded),
        }
    }
}
