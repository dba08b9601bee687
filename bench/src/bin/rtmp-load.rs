//! `rtmp-load`: RTMP fan-out load and latency measurement, in one process.
//!
//! One publisher sends an FLV file in real time to `--publish`; `--players` players join
//! `--play`, ramped at `--ramp` per second. Publisher and players share one clock, so every
//! coded video frame gives a publish-to-receive time: the instant just before the publisher
//! writes the frame, against the instant the player's read returned it. Frames are matched by
//! content (a fingerprint of the slice data), so a server that rewrites timestamps at join
//! still matches; a player's frames count towards the steady-state latency only from 2 s after
//! its first frame (that is where a join backlog, if any, lives) and only once every player has
//! joined.
//!
//! Phases: publish, `--warmup` s, sample the server (`--server-pid`, repeatable), `--baseline`
//! s of publisher only, sample, ramp the players, wait until all have a first frame, sample,
//! `--measure` s, sample, stop. The result is one JSON line on stdout; progress goes to stderr.

use banyan_bench::flv::{self, Tag, TagKind};
use banyan_bench::hist::Histogram;
use banyan_bench::procfs::{self, Sample};
use banyan_bench::Error;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Frames a player receives within this time of its first frame are its "join" frames.
const JOIN_WINDOW: Duration = Duration::from_secs(2);
/// The playout lag of a joining player is taken over this time after its first frame.
const LAG_WINDOW: Duration = Duration::from_secs(3);
/// How many sent frames are remembered for matching (about two minutes at 30 fps).
const SENT_LOG: usize = 4096;
/// Read buffer per connection.
const READ_BUF: usize = 32 * 1024;
/// Time allowed from TCP connect to the publish (or play) request being sent.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct RtmpUrl {
    addr: String,
    app: String,
    key: String,
    tc_url: String,
}

fn parse_url(url: &str) -> Result<RtmpUrl, Error> {
    let bad = || Error::Usage(format!("not an rtmp://HOST:PORT/APP/KEY url: {url}"));
    let rest = url.strip_prefix("rtmp://").ok_or_else(bad)?;
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    let (app, key) = path.split_once('/').ok_or_else(bad)?;
    if app.is_empty() || key.is_empty() {
        return Err(bad());
    }
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:1935")
    };
    Ok(RtmpUrl {
        tc_url: format!("rtmp://{addr}/{app}"),
        addr,
        app: app.to_string(),
        key: key.to_string(),
    })
}

struct Args {
    publish: RtmpUrl,
    play: RtmpUrl,
    input: String,
    players: usize,
    ramp: f64,
    warmup: f64,
    baseline: f64,
    measure: f64,
    server_pids: Vec<u32>,
    label: String,
}

const USAGE: &str =
    "rtmp-load --input FILE.flv --publish rtmp://H:P/APP/KEY --play rtmp://H:P/APP/KEY \
[--players N=10] [--ramp PER_S=50] [--warmup S=2] [--baseline S=5] [--measure S=20] \
[--server-pid PID]... [--label NAME]";

fn parse_args() -> Result<Args, Error> {
    let mut it = std::env::args().skip(1);
    let (mut publish, mut play, mut input) = (None, None, None);
    let mut a = Args {
        publish: parse_url("rtmp://x/a/b")?,
        play: parse_url("rtmp://x/a/b")?,
        input: String::new(),
        players: 10,
        ramp: 50.0,
        warmup: 2.0,
        baseline: 5.0,
        measure: 20.0,
        server_pids: Vec::new(),
        label: String::new(),
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, Error> {
        v.as_deref()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::Usage(format!("{flag} needs a number")))
    }
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--publish" => publish = it.next(),
            "--play" => play = it.next(),
            "--input" => input = it.next(),
            "--players" => a.players = num(&flag, it.next())?,
            "--ramp" => a.ramp = num(&flag, it.next())?,
            "--warmup" => a.warmup = num(&flag, it.next())?,
            "--baseline" => a.baseline = num(&flag, it.next())?,
            "--measure" => a.measure = num(&flag, it.next())?,
            "--server-pid" => a.server_pids.push(num(&flag, it.next())?),
            "--label" => a.label = it.next().unwrap_or_default(),
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            other => return Err(Error::Usage(format!("unknown argument {other}\n{USAGE}"))),
        }
    }
    let missing = |what: &str| Error::Usage(format!("missing {what}\n{USAGE}"));
    a.publish = parse_url(&publish.ok_or_else(|| missing("--publish"))?)?;
    a.play = parse_url(&play.ok_or_else(|| missing("--play"))?)?;
    a.input = input.ok_or_else(|| missing("--input"))?;
    if a.ramp <= 0.0 || a.measure <= 0.0 || a.baseline <= 0.0 {
        return Err(Error::Usage(
            "--ramp, --baseline and --measure must be > 0".into(),
        ));
    }
    Ok(a)
}

/// What the publisher sent: when, in which order, with which timestamp.
#[derive(Clone, Copy)]
struct Sent {
    seq: u64,
    at: Instant,
    ts: u32,
}

/// The last `SENT_LOG` frames sent, by fingerprint.
#[derive(Default)]
struct SentLog {
    by_fp: HashMap<u64, Sent>,
    order: VecDeque<u64>,
}

impl SentLog {
    fn insert(&mut self, fp: u64, sent: Sent) {
        if self.order.len() == SENT_LOG {
            if let Some(old) = self.order.pop_front() {
                // A fingerprint sent again since then belongs to the newer frame: keep it.
                if self
                    .by_fp
                    .get(&old)
                    .is_some_and(|s| s.seq + SENT_LOG as u64 <= sent.seq)
                {
                    self.by_fp.remove(&old);
                }
            }
        }
        self.order.push_back(fp);
        self.by_fp.insert(fp, sent);
    }
}

/// State shared by the publisher, the players and the orchestrator.
struct Shared {
    epoch: Instant,
    sent: Mutex<SentLog>,
    /// Coded video frames sent so far (the next frame's seq).
    frames_sent: AtomicU64,
    /// Microseconds since `epoch` from which frames count as steady state (MAX: not yet).
    measure_from_us: AtomicU64,
    /// Frames with a larger seq do not count for loss (MAX: no cutoff yet).
    cutoff_seq: AtomicU64,
    /// Steady-state publish-to-receive latency over all players, in µs.
    steady: Histogram,
    /// Players that received a first frame.
    joined: AtomicUsize,
    /// Players that ended with an error.
    failed: AtomicUsize,
}

impl Shared {
    fn lookup(&self, fp: u64) -> Option<Sent> {
        // A poisoned lock means a task panicked: that is a bug, give up loudly.
        self.sent
            .lock()
            .expect("sent log lock")
            .by_fp
            .get(&fp)
            .copied()
    }
}

/// One player's findings.
#[derive(Default)]
struct PlayerReport {
    error: Option<String>,
    /// Connect start to first coded video frame.
    ttff_us: Option<u64>,
    first_keyframe: bool,
    /// Publish-to-receive latency of the first frame.
    first_latency_us: Option<u64>,
    /// How far behind live a player that starts at its first frame and plays at the pace of
    /// the timestamps it receives (stalling when a frame is late) is at the end of
    /// `LAG_WINDOW`: play instant minus publish instant of its last frame in the window. A
    /// server that compresses a join backlog's timestamps lets such a player catch up.
    lag_us: u64,
    /// Playout model: play instant and received timestamp of the previous frame.
    playout: Option<(Instant, u32)>,
    early_sum_us: u64,
    early_n: u64,
    steady_sum_us: u64,
    steady_n: u64,
    first_seq: Option<u64>,
    /// Matched frames with seq <= the cutoff.
    received: u64,
    unmatched: u64,
    /// Received timestamp minus published timestamp, at the first match.
    ts_offset: Option<i64>,
    /// Matches whose timestamp offset differed from the first one.
    ts_offset_changes: u64,
    /// Smallest and largest timestamp offset seen.
    ts_offset_range: Option<(i64, i64)>,
}

fn session_err(e: impl std::fmt::Display) -> Error {
    Error::Session(e.to_string())
}

/// TCP connect, RTMP handshake, a client session and its connect request. Returns the
/// session's first outbound bytes in `out` and any bytes read past the handshake.
async fn open(
    url: &RtmpUrl,
    out: &mut Vec<u8>,
) -> Result<(TcpStream, ClientSession, Vec<ClientSessionResult>), Error> {
    let mut stream = TcpStream::connect(&url.addr).await?;
    stream.set_nodelay(true)?;
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| Error::Handshake(e.to_string()))?;
    stream.write_all(&c0c1).await?;
    let mut buf = vec![0u8; 4096];
    let remaining = loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| Error::Handshake(e.to_string()))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(url.tc_url.clone());
    let (mut session, first) = ClientSession::new(config).map_err(session_err)?;
    let mut results = first;
    results.push(
        session
            .request_connection(url.app.clone())
            .map_err(session_err)?,
    );
    if !remaining.is_empty() {
        results.extend(session.handle_input(&remaining).map_err(session_err)?);
    }
    // Outbound packets go out in order; events are handed back to the caller.
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            other => events.push(other),
        }
    }
    Ok((stream, session, events))
}

/// An onStatus code that means the server said no.
fn is_refusal(code: &str) -> bool {
    [
        "Failed",
        "BadName",
        "Rejected",
        "NotFound",
        "Unauthorized",
        "Denied",
    ]
    .iter()
    .any(|w| code.contains(w))
}

/// Publishes `tags` in real time, looping the file, until `stop`.
async fn publisher(
    url: RtmpUrl,
    tags: Arc<Vec<Tag>>,
    shared: Arc<Shared>,
    publishing: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut out = Vec::new();
    let (stream, mut session, mut pending) =
        tokio::time::timeout(SETUP_TIMEOUT, open(&url, &mut out))
            .await
            .map_err(|_| Error::Timeout("publisher connect"))??;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&out).await?;
    out.clear();
    let mut buf = vec![0u8; READ_BUF];
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    // Setup: connect -> publish request -> publish accepted.
    'setup: loop {
        for r in pending.drain(..) {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = session
                            .request_publishing(url.key.clone(), PublishRequestType::Live)
                            .map_err(session_err)?;
                        if let ClientSessionResult::OutboundResponse(p) = r {
                            out.extend_from_slice(&p.bytes);
                        }
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(Error::Refused(format!("connect: {description}")));
                    }
                    ClientSessionEvent::PublishRequestAccepted => {
                        wr.write_all(&out).await?;
                        out.clear();
                        break 'setup;
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal(&code) => {
                        return Err(Error::Refused(format!("publish: {code}")));
                    }
                    _ => {}
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        let n = tokio::time::timeout_at(setup_deadline, rd.read(&mut buf))
            .await
            .map_err(|_| Error::Timeout("publish request"))??;
        if n == 0 {
            return Err(Error::Closed);
        }
        pending = session.handle_input(&buf[..n]).map_err(session_err)?;
    }
    let _ = publishing.send(true);

    let first_ts = tags.first().map_or(0, |t| t.timestamp);
    let last_ts = tags.last().map_or(0, |t| t.timestamp);
    let loop_len = last_ts.saturating_sub(first_ts) + 33;
    let start = tokio::time::Instant::now();
    let mut pass: u32 = 0;
    let mut i = 0usize;
    loop {
        if i == tags.len() {
            i = 0;
            pass += 1;
        }
        let tag = &tags[i];
        // Codec configuration goes out once, at the start.
        if (pass > 0 && tag.is_config()) || tag.kind == TagKind::Script {
            i += 1;
            continue;
        }
        let media_ms = tag.timestamp.saturating_sub(first_ts) + pass * loop_len;
        let due = start + Duration::from_millis(u64::from(media_ms));
        while tokio::time::Instant::now() < due {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                _ = stop.changed() => {
                    let _ = session.stop_publishing();
                    return Ok(());
                }
                n = rd.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Err(Error::Closed);
                    }
                    for r in session.handle_input(&buf[..n]).map_err(session_err)? {
                        if let ClientSessionResult::OutboundResponse(p) = r {
                            out.extend_from_slice(&p.bytes);
                        }
                    }
                    if !out.is_empty() {
                        wr.write_all(&out).await?;
                        out.clear();
                    }
                }
            }
        }
        let ts = RtmpTimestamp::new(media_ms);
        let data: Bytes = tag.data.clone();
        let packet = match tag.kind {
            TagKind::Video => {
                let coded = flv::is_video_frame(&data);
                let p = session
                    .publish_video_data(data.clone(), ts, false)
                    .map_err(session_err)?;
                if coded {
                    let seq = shared.frames_sent.fetch_add(1, Ordering::Relaxed);
                    let sent = Sent {
                        seq,
                        at: Instant::now(),
                        ts: media_ms,
                    };
                    shared
                        .sent
                        .lock()
                        .expect("sent log lock")
                        .insert(flv::fingerprint(&data), sent);
                }
                p
            }
            _ => session
                .publish_audio_data(data, ts, false)
                .map_err(session_err)?,
        };
        if let ClientSessionResult::OutboundResponse(p) = packet {
            wr.write_all(&p.bytes).await?;
        }
        i += 1;
    }
}

/// Plays `url` until `stop`, measuring every coded video frame.
async fn player(
    url: RtmpUrl,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> PlayerReport {
    let t0 = Instant::now();
    let mut rep = PlayerReport::default();
    let r = tokio::select! {
        r = play(&url, &shared, t0, &mut rep) => r,
        _ = stop.wait_for(|s| *s) => Ok(()),
    };
    if let Err(e) = r {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        rep.error = Some(e.to_string());
    }
    rep
}

async fn play(
    url: &RtmpUrl,
    shared: &Shared,
    t0: Instant,
    rep: &mut PlayerReport,
) -> Result<(), Error> {
    let mut out = Vec::new();
    let (mut stream, mut session, mut pending) =
        tokio::time::timeout(SETUP_TIMEOUT, open(url, &mut out))
            .await
            .map_err(|_| Error::Timeout("player connect"))??;
    let mut buf = vec![0u8; READ_BUF];
    let mut first_at: Option<Instant> = None;
    let mut now = Instant::now();
    loop {
        for r in pending.drain(..) {
            match r {
                ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                        on_video(shared, t0, now, &mut first_at, rep, timestamp.value, &data);
                    }
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = session
                            .request_playback(url.key.clone())
                            .map_err(session_err)?;
                        if let ClientSessionResult::OutboundResponse(p) = r {
                            out.extend_from_slice(&p.bytes);
                        }
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(Error::Refused(format!("connect: {description}")));
                    }
                    ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal(&code) => {
                        return Err(Error::Refused(format!("play: {code}")));
                    }
                    _ => {}
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Closed);
        }
        now = Instant::now();
        pending = session.handle_input(&buf[..n]).map_err(session_err)?;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn on_video(
    shared: &Shared,
    t0: Instant,
    now: Instant,
    first_at: &mut Option<Instant>,
    rep: &mut PlayerReport,
    ts: u32,
    data: &[u8],
) {
    if !flv::is_video_frame(data) {
        return; // sequence header
    }
    let first = *first_at.get_or_insert_with(|| {
        rep.ttff_us = Some(micros(now.saturating_duration_since(t0)));
        rep.first_keyframe = flv::is_keyframe(data);
        shared.joined.fetch_add(1, Ordering::Relaxed);
        now
    });
    let play_at = match rep.playout {
        None => now,
        Some((prev_at, prev_ts)) => {
            let step = ts.wrapping_sub(prev_ts);
            // A timestamp going backwards (or jumping by more than a minute) plays at once.
            let step = if step > 60_000 { 0 } else { step };
            (prev_at + Duration::from_millis(u64::from(step))).max(now)
        }
    };
    rep.playout = Some((play_at, ts));
    let Some(sent) = shared.lookup(flv::fingerprint(data)) else {
        rep.unmatched += 1;
        return;
    };
    let lat = micros(now.saturating_duration_since(sent.at));
    let offset = i64::from(ts) - i64::from(sent.ts);
    match rep.ts_offset {
        None => rep.ts_offset = Some(offset),
        Some(o) if o != offset => rep.ts_offset_changes += 1,
        Some(_) => {}
    }
    let range = rep.ts_offset_range.get_or_insert((offset, offset));
    *range = (range.0.min(offset), range.1.max(offset));
    if rep.first_latency_us.is_none() {
        rep.first_latency_us = Some(lat);
    }
    let since_first = now.saturating_duration_since(first);
    if since_first < LAG_WINDOW {
        rep.lag_us = micros(play_at.saturating_duration_since(sent.at));
    }
    if since_first < JOIN_WINDOW {
        rep.early_sum_us += lat;
        rep.early_n += 1;
    } else if micros(now.saturating_duration_since(shared.epoch))
        >= shared.measure_from_us.load(Ordering::Relaxed)
    {
        shared.steady.record(lat);
        rep.steady_sum_us += lat;
        rep.steady_n += 1;
    }
    let first_seq = *rep.first_seq.get_or_insert(sent.seq);
    if sent.seq >= first_seq && sent.seq <= shared.cutoff_seq.load(Ordering::Relaxed) {
        rep.received += 1;
    }
}

/// Server and load-tool samples at one instant.
#[derive(Clone, Copy)]
struct Point {
    at: Instant,
    server: Sample,
    client: Sample,
    machine: (u64, u64),
}

fn point(server_pids: &[Option<u32>]) -> Result<Point, Error> {
    Ok(Point {
        at: Instant::now(),
        server: if server_pids.is_empty() {
            Sample::default()
        } else {
            procfs::sample(server_pids)?
        },
        client: procfs::sample(&[None])?,
        machine: procfs::machine_ticks()?,
    })
}

/// Value at quantile `q` of a sorted list (0 when empty).
fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(us: u64) -> f64 {
    (us as f64 / 1000.0 * 100.0).round() / 100.0
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

async fn sleep_s(s: f64) {
    tokio::time::sleep(Duration::from_secs_f64(s)).await;
}

fn progress(shared: &Shared, msg: &str) {
    eprintln!(
        "[rtmp-load {:6.1}s] {msg}",
        shared.epoch.elapsed().as_secs_f64()
    );
}

async fn run(args: Args) -> Result<String, Error> {
    let file = Bytes::from(std::fs::read(&args.input)?);
    let tags = Arc::new(flv::parse(file)?);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent: Mutex::new(SentLog::default()),
        frames_sent: AtomicU64::new(0),
        measure_from_us: AtomicU64::new(u64::MAX),
        cutoff_seq: AtomicU64::new(u64::MAX),
        steady: Histogram::new(),
        joined: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let pids: Vec<Option<u32>> = args.server_pids.iter().map(|&p| Some(p)).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (pub_tx, mut pub_rx) = watch::channel(false);

    let publisher = tokio::spawn(publisher(
        args.publish.clone(),
        tags.clone(),
        shared.clone(),
        pub_tx,
        stop_rx.clone(),
    ));
    let publishing = tokio::time::timeout(SETUP_TIMEOUT, pub_rx.wait_for(|p| *p)).await;
    if !matches!(publishing, Ok(Ok(_))) {
        let _ = stop_tx.send(true);
        return Err(match publisher.await {
            Ok(Err(e)) => e,
            _ => Error::Timeout("publisher did not start"),
        });
    }
    progress(&shared, "publishing");
    sleep_s(args.warmup).await;
    let p0 = point(&pids)?;
    sleep_s(args.baseline).await;
    let p1 = point(&pids)?;
    progress(&shared, &format!("ramping {} players", args.players));

    let mut players = Vec::with_capacity(args.players);
    let ramp_start = tokio::time::Instant::now();
    for i in 0..args.players {
        tokio::time::sleep_until(ramp_start + Duration::from_secs_f64(i as f64 / args.ramp)).await;
        players.push(tokio::spawn(player(
            args.play.clone(),
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
        < args.players
        && tokio::time::Instant::now() < join_deadline
        && !publisher.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p2 = point(&pids)?;
    shared
        .measure_from_us
        .store(micros(p2.at - shared.epoch), Ordering::Relaxed);
    progress(
        &shared,
        &format!(
            "{} joined, {} failed; measuring {} s",
            shared.joined.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed),
            args.measure
        ),
    );
    sleep_s(args.measure).await;
    let cutoff = shared.frames_sent.load(Ordering::Relaxed).saturating_sub(1);
    shared.cutoff_seq.store(cutoff, Ordering::Relaxed);
    let p3 = point(&pids)?;
    // Let the frames up to the cutoff arrive before stopping.
    sleep_s(1.5).await;
    let _ = stop_tx.send(true);
    progress(&shared, "stopping");

    let mut reports = Vec::with_capacity(players.len());
    for p in players {
        match tokio::time::timeout(Duration::from_secs(5), p).await {
            Ok(Ok(r)) => reports.push(r),
            _ => reports.push(PlayerReport {
                error: Some("player task did not finish".into()),
                ..Default::default()
            }),
        }
    }
    let publisher_result = match tokio::time::timeout(Duration::from_secs(5), publisher).await {
        Ok(Ok(r)) => r.err().map(|e| e.to_string()),
        _ => Some("publisher task did not finish".into()),
    };

    // Server cost.
    let base_s = (p1.at - p0.at).as_secs_f64();
    let meas_s = (p3.at - p2.at).as_secs_f64();
    let base_cores = (p1.server.cpu_s - p0.server.cpu_s) / base_s;
    let meas_cores = (p3.server.cpu_s - p2.server.cpu_s) / meas_s;
    let ok: Vec<&PlayerReport> = reports.iter().filter(|r| r.error.is_none()).collect();
    let viewers = ok.len().max(1) as f64;
    let cpu_per_viewer_min = (meas_cores - base_cores) * 60.0 / viewers;
    let rss_per_player = (p3.server.rss_kib as f64 - p1.server.rss_kib as f64) / viewers;
    let client_cores = (p3.client.cpu_s - p2.client.cpu_s) / meas_s;
    let loadavg = procfs::loadavg()?;
    let machine_busy =
        (p3.machine.0 - p2.machine.0) as f64 / (p3.machine.1 - p2.machine.1).max(1) as f64;

    // Joins.
    let mut ttff: Vec<u64> = reports.iter().filter_map(|r| r.ttff_us).collect();
    ttff.sort_unstable();
    let mut first_lat: Vec<u64> = reports.iter().filter_map(|r| r.first_latency_us).collect();
    first_lat.sort_unstable();
    let mut lag: Vec<u64> = reports
        .iter()
        .filter(|r| r.first_latency_us.is_some())
        .map(|r| r.lag_us)
        .collect();
    lag.sort_unstable();
    let key_first = reports
        .iter()
        .filter(|r| r.ttff_us.is_some() && r.first_keyframe)
        .count();
    let (es, en) = reports
        .iter()
        .fold((0, 0), |(s, n), r| (s + r.early_sum_us, n + r.early_n));
    let (ss, sn) = reports
        .iter()
        .fold((0, 0), |(s, n), r| (s + r.steady_sum_us, n + r.steady_n));

    // Loss: frames from each player's first frame up to the cutoff.
    let mut expected = 0u64;
    let mut received = 0u64;
    let mut lossy = 0usize;
    let mut max_lost = 0u64;
    for r in &reports {
        if let Some(first) = r.first_seq.filter(|&f| f <= cutoff) {
            let e = cutoff - first + 1;
            let lost = e.saturating_sub(r.received);
            expected += e;
            received += r.received.min(e);
            if lost > 0 {
                lossy += 1;
                max_lost = max_lost.max(lost);
            }
        }
    }
    let rewritten = reports
        .iter()
        .filter(|r| r.ts_offset.is_some_and(|o| o != 0))
        .count();
    let offset_changes: u64 = reports.iter().map(|r| r.ts_offset_changes).sum();
    let offset_spread = reports
        .iter()
        .filter_map(|r| r.ts_offset_range.map(|(lo, hi)| hi - lo))
        .max()
        .unwrap_or(0);
    let unmatched: u64 = reports.iter().map(|r| r.unmatched).sum();
    let first_error = reports
        .iter()
        .find_map(|r| r.error.clone())
        .or(publisher_result.clone());

    let h = &shared.steady;
    Ok(format!(
        concat!(
            "{{\"label\":{},\"players\":{},\"players_ok\":{},\"players_failed\":{},",
            "\"first_error\":{},\"publisher_error\":{},\"video_frames_sent\":{},",
            "\"baseline_s\":{:.2},\"measure_s\":{:.2},",
            "\"server\":{{\"pids\":{:?},\"base_cpu_cores\":{:.4},\"measure_cpu_cores\":{:.4},",
            "\"cpu_s_per_viewer_min\":{:.5},\"rss_kib_publisher_only\":{},",
            "\"rss_kib_joined\":{},\"rss_kib_end\":{},\"rss_kib_per_player\":{:.2}}},",
            "\"latency_ms\":{{\"frames\":{},\"p50\":{},\"p95\":{},\"p99\":{},\"max\":{},\"mean\":{}}},",
            "\"join\":{{\"ttff_ms_p50\":{},\"ttff_ms_p95\":{},\"ttff_ms_max\":{},",
            "\"first_frame_keyframe_share\":{:.3},\"first_frame_latency_ms_p50\":{},",
            "\"first_frame_latency_ms_p95\":{},\"lag_3s_ms_p50\":{},\"lag_3s_ms_p95\":{},",
            "\"early_latency_ms_mean\":{},\"steady_latency_ms_mean\":{}}},",
            "\"loss\":{{\"expected\":{},\"received\":{},\"lost\":{},\"players_with_loss\":{},",
            "\"max_lost_per_player\":{}}},",
            "\"timestamps\":{{\"rewritten_players\":{},\"offset_changes\":{},\"max_offset_spread_ms\":{},\"unmatched_frames\":{}}},",
            "\"client\":{{\"cpu_cores\":{:.3},\"machine_busy_share\":{:.3},\"loadavg_1m\":{:.2}}}}}"
        ),
        json_str(&args.label),
        reports.len(),
        ok.len(),
        reports.len() - ok.len(),
        first_error.as_deref().map_or("null".into(), json_str),
        publisher_result.as_deref().map_or("null".into(), json_str),
        shared.frames_sent.load(Ordering::Relaxed),
        base_s,
        meas_s,
        args.server_pids,
        base_cores,
        meas_cores,
        cpu_per_viewer_min,
        p1.server.rss_kib,
        p2.server.rss_kib,
        p3.server.rss_kib,
        rss_per_player,
        h.count(),
        ms(h.quantile(0.5)),
        ms(h.quantile(0.95)),
        ms(h.quantile(0.99)),
        ms(h.max()),
        ms(h.mean()),
        ms(pct(&ttff, 0.5)),
        ms(pct(&ttff, 0.95)),
        ms(ttff.last().copied().unwrap_or(0)),
        key_first as f64 / ttff.len().max(1) as f64,
        ms(pct(&first_lat, 0.5)),
        ms(pct(&first_lat, 0.95)),
        ms(pct(&lag, 0.5)),
        ms(pct(&lag, 0.95)),
        ms(es / en.max(1)),
        ms(ss / sn.max(1)),
        expected,
        received,
        expected - received,
        lossy,
        max_lost,
        rewritten,
        offset_changes,
        offset_spread,
        unmatched,
        client_cores,
        machine_busy,
        loadavg,
    ))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Two worker threads: the machine has two cores, and the players must not starve the
    // publisher's pacing more than the server does.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(args)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("rtmp-load: {e}");
            std::process::exit(1);
        }
    }
}
