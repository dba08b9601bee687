//! The tokio/axum driver of the HLS egress.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use banyan_relay::views::{Protocol, ViewerGuard, Views};
use banyan_relay::{Hub, Item, StreamState, SubscribeOptions, CLOCK_HZ};

use super::access::{authorize, cors, refuse};
use super::playlist::{self, MEDIA_PLAYLIST, SUBTITLES_PLAYLIST};
use super::range::{media_body, CACHE_IMMUTABLE};
use super::segmenter::{Segmenter, SegmenterConfig};
use super::session::{may_start, SessionCounts, SessionKey, Verdict};
use super::{web, HlsConfig};

/// A muxer whose stream has been quiet this long while its publisher is
/// away closes its open part and segment ([`Segmenter::flush`]).
const FLUSH_AFTER: Duration = Duration::from_millis(200);
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const CACHE_PLAYLIST: &str = "public, max-age=1";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One watched stream: its segmenter, fed by a muxer task.
struct StreamMux {
    seg: Mutex<Segmenter>,
    /// Bumped whenever the segmenter has something new.
    tx: watch::Sender<u64>,
    last_request: Mutex<Instant>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    has_vtt: bool,
    /// The last media playlist made, with the segmenter's generation it
    /// was made from: every viewer's reload between two changes gets it.
    playlist: Mutex<Option<(u64, Bytes)>>,
}

impl StreamMux {
    /// The media playlist of `seg` (this stream's segmenter, locked).
    fn media_playlist(&self, seg: &Segmenter) -> Bytes {
        let mut cached = self.playlist.lock();
        match &*cached {
            Some((g, body)) if *g == seg.generation() => body.clone(),
            _ => {
                let body = Bytes::from(playlist::media(seg));
                *cached = Some((seg.generation(), body.clone()));
                body
            }
        }
    }

    fn touch(&self) {
        *self.last_request.lock() = Instant::now();
    }

    /// Wait until `pred` holds or `deadline` passes; the final answer of `pred`.
    async fn wait_until(&self, deadline: Instant, pred: impl Fn(&Segmenter) -> bool) -> bool {
        let mut rx = self.tx.subscribe();
        loop {
            rx.borrow_and_update();
            if pred(&self.seg.lock()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return pred(&self.seg.lock()),
            }
        }
    }
}

impl Drop for StreamMux {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().take() {
            t.abort();
        }
    }
}

/// A viewer session of one stream.
struct Session {
    last_seen: Instant,
    /// The stream's live edge (media ticks) at the last fetch.
    edge: i64,
    /// The client address it counts against.
    ip: Option<IpAddr>,
    _guard: ViewerGuard,
}

fn uncounted(reason: &'static str) {
    metrics::counter!("banyan_hls_sessions_uncounted_total", "reason" => reason).increment(1);
}

/// The HLS egress of a node: per-stream muxers and viewer sessions.
///
/// Viewer counting: the multivariant playlist hands each fetch a fresh
/// session id in the media playlist URL (`media.m3u8?s=<id>`), signed by
/// the node for this stream (see [`super::session`]); parts and segments
/// carry no id, so they stay cacheable. An id that is forged, another
/// stream's, or first used more than a minute after its issue is served
/// but not counted, and so is a new session beyond
/// [`HlsConfig::sessions_per_address`] of one client address. A session is a live viewer
/// (a [`Protocol::Hls`] viewer in [`Views`]) from its first media playlist
/// fetch until [`HlsConfig::session_timeout`] passes without one. Each
/// fetch accrues, as delivered media time, how far the stream's live edge
/// (the end of its newest part) advanced since that session's previous
/// fetch (nothing for the first fetch; an advance is counted at most up to
/// the wall time elapsed since then plus one second, so a session that
/// returns after a pause is not credited for the pause). Media playlist
/// fetches without `s` are served but not counted.
pub struct HlsService {
    hub: Arc<Hub>,
    views: Arc<Views>,
    cfg: HlsConfig,
    streams: Mutex<HashMap<String, Arc<StreamMux>>>,
    sessions: Mutex<HashMap<String, HashMap<u64, Session>>>,
    session_count: Mutex<SessionCounts>,
    session_key: SessionKey,
    sweeper: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for HlsService {
    fn drop(&mut self) {
        if let Some(t) = self.sweeper.lock().take() {
            t.abort();
        }
    }
}

impl HlsService {
    /// Create the service. Call inside a tokio runtime (a sweeper task
    /// stops idle muxers and expires sessions).
    pub fn new(hub: Arc<Hub>, views: Arc<Views>, cfg: HlsConfig) -> Arc<Self> {
        let session_key = match &cfg.session_secret {
            Some(s) => SessionKey::new(s),
            None => SessionKey::random(),
        };
        let svc = Arc::new(HlsService {
            session_key,
            hub,
            views,
            cfg,
            streams: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            session_count: Mutex::new(SessionCounts::default()),
            sweeper: Mutex::new(None),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&svc);
            let h = rt.spawn(sweep(weak));
            *svc.sweeper.lock() = Some(h.abort_handle());
        }
        svc
    }

    /// The routes of HLS and the watch page (no `/views`, no `/lifecycle`).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/{uid}/manifest/{file}",
                get(manifest_file).options(preflight),
            )
            .route("/{uid}/watch", get(watch_page).options(preflight))
            .route("/watch-assets/{file}", get(web_asset).options(preflight))
            .layer(axum::middleware::map_response(cors))
            .with_state(self.clone())
    }

    /// Live HLS viewer sessions of `uid`.
    pub fn viewers(&self, uid: &str) -> usize {
        self.sessions.lock().get(uid).map_or(0, |m| m.len())
    }

    /// Streams with a running muxer.
    pub fn active_streams(&self) -> usize {
        self.streams.lock().len()
    }

    fn seg_config(&self) -> SegmenterConfig {
        let ticks = |d: Duration| (d.as_micros() as i64 * CLOCK_HZ / 1_000_000).max(1);
        SegmenterConfig {
            part_target: ticks(self.cfg.part_target),
            segment_target: ticks(self.cfg.segment_target),
            window: self.cfg.window_segments.max(2),
            start_seq: (now_ms() / 100).max(0) as u64,
        }
    }

    /// The muxer of `uid`, started when the stream is live.
    fn stream(&self, uid: &str) -> Option<Arc<StreamMux>> {
        let state = self.hub.state(uid);
        let mut map = self.streams.lock();
        if let Some(m) = map.get(uid) {
            let restart = state == StreamState::Live && m.seg.lock().ended();
            if !restart {
                m.touch();
                return Some(m.clone());
            }
        }
        if state == StreamState::Idle && !self.cfg.fetchable.as_ref().is_some_and(|f| f(uid)) {
            return None;
        }
        let vtt = self.cfg.captions.webvtt(uid);
        let mux = Arc::new(StreamMux {
            has_vtt: vtt.is_some(),
            seg: Mutex::new(Segmenter::new(self.seg_config(), vtt)),
            tx: watch::channel(0).0,
            last_request: Mutex::new(Instant::now()),
            task: Mutex::new(None),
            playlist: Mutex::new(None),
        });
        let mut sub = self.hub.subscribe(uid, SubscribeOptions::default());
        let weak = Arc::downgrade(&mux);
        let hub = self.hub.clone();
        let name = uid.to_string();
        let task = tokio::spawn(async move {
            let mut flushed = false;
            // One timer for the task, moved on by every item.
            let quiet = tokio::time::sleep(FLUSH_AFTER);
            tokio::pin!(quiet);
            loop {
                // Quiet for a while and the publisher gone: the open part
                // and segment are closed now, not when the stream ends.
                let item = tokio::select! {
                    item = sub.recv() => item,
                    _ = &mut quiet, if !flushed => {
                        quiet.as_mut().reset(Instant::now() + FLUSH_AFTER);
                        if hub.state(&name) == StreamState::Reconnecting {
                            let Some(mux) = weak.upgrade() else {
                                return;
                            };
                            flushed = true;
                            if mux.seg.lock().flush() {
                                mux.tx.send_modify(|v| *v += 1);
                            }
                        }
                        continue;
                    }
                };
                flushed = false;
                quiet.as_mut().reset(Instant::now() + FLUSH_AFTER);
                let end = matches!(item, Item::End(_));
                let Some(mux) = weak.upgrade() else {
                    return;
                };
                if mux.seg.lock().push(item, now_ms()) {
                    mux.tx.send_modify(|v| *v += 1);
                }
                if end {
                    return;
                }
            }
        });
        *mux.task.lock() = Some(task.abort_handle());
        tracing::debug!(stream = %uid, "hls muxer started");
        metrics::counter!("banyan_hls_muxers_started_total").increment(1);
        map.insert(uid.to_string(), mux.clone());
        Some(mux)
    }

    fn new_session_id(&self, uid: &str) -> String {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_i64(now_ms());
        let now = (now_ms() / 1000).max(0) as u64;
        self.session_key.issue(uid, now, h.finish())
    }

    /// Account one media playlist fetch of session `id` from `ip`.
    fn account(&self, uid: &str, id: &str, edge: i64, ip: Option<IpAddr>) {
        let Verdict::Valid { key: sid, issued } = self.session_key.verify(uid, id) else {
            uncounted("invalid");
            return;
        };
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        let per = sessions.entry(uid.to_string()).or_default();
        if let Some(s) = per.get_mut(&sid) {
            let elapsed = now.duration_since(s.last_seen).as_millis() as i64 + 1000;
            let advance = (edge - s.edge).clamp(0, elapsed * CLOCK_HZ / 1000);
            if advance > 0 {
                self.views.add_delivered(uid, Protocol::Hls, advance as u64);
            }
            s.edge = edge.max(s.edge);
            s.last_seen = now;
            return;
        }
        if !may_start(issued, (now_ms() / 1000).max(0) as u64) {
            uncounted("expired");
            if per.is_empty() {
                sessions.remove(uid);
            }
            return;
        }
        let mut count = self.session_count.lock();
        if count.total >= self.cfg.max_sessions {
            metrics::counter!("banyan_hls_sessions_refused_total").increment(1);
            return;
        }
        if let Some(ip) = ip {
            let n = count.per_address.entry(ip).or_insert(0);
            if *n >= self.cfg.sessions_per_address {
                uncounted("per_address");
                return;
            }
            *n += 1;
        }
        count.total += 1;
        per.insert(
            sid,
            Session {
                last_seen: now,
                edge,
                ip,
                _guard: self.views.viewer(uid, Protocol::Hls),
            },
        );
    }

    fn sweep_once(&self) {
        let now = Instant::now();
        {
            let mut sessions = self.sessions.lock();
            let mut count = self.session_count.lock();
            sessions.retain(|_, per| {
                per.retain(|_, s| {
                    let keep = now.duration_since(s.last_seen) < self.cfg.session_timeout;
                    if !keep {
                        count.remove(s.ip);
                    }
                    keep
                });
                !per.is_empty()
            });
        }
        let idle: Vec<Arc<StreamMux>> = {
            let mut map = self.streams.lock();
            let mut out = Vec::new();
            map.retain(|uid, m| {
                let keep = now.duration_since(*m.last_request.lock()) < self.cfg.idle_stop;
                if !keep {
                    tracing::debug!(stream = %uid, "hls muxer stopped (idle)");
                    out.push(m.clone());
                }
                keep
            });
            out
        };
        drop(idle);
    }
}

async fn sweep(svc: Weak<HlsService>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(svc) = svc.upgrade() else {
            return;
        };
        svc.sweep_once();
    }
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Range, Content-Type"),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn text(body: impl Into<Body>, ctype: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, cache),
        ],
        body.into(),
    )
        .into_response()
}

/// Parse `<prefix><number><suffix>`.
fn numbered(file: &str, prefix: &str, suffix: &str) -> Option<u64> {
    file.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

async fn manifest_file(
    State(svc): State<Arc<HlsService>>,
    Path((segment, file)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let client = client.map(|Extension(ConnectInfo(a))| a);
    let (uid, cors) = match authorize(svc.cfg.access.as_ref(), &segment, &headers, client) {
        Ok(g) => g,
        Err(status) => return refuse(status),
    };
    let mut res = serve_file(&svc, &uid, &file, &q, &headers, client).await;
    res.extensions_mut().insert(cors);
    res
}

async fn serve_file(
    svc: &Arc<HlsService>,
    uid: &str,
    file: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
) -> Response {
    let Some(mux) = svc.stream(uid) else {
        return not_found();
    };
    let ip = client.map(|a| a.ip());
    match file {
        "video.m3u8" => multivariant(svc, uid, &mux).await,
        MEDIA_PLAYLIST => media_playlist(svc, uid, &mux, q, ip).await,
        SUBTITLES_PLAYLIST if mux.has_vtt => {
            let body = playlist::subtitles(&mux.seg.lock());
            text(body, PLAYLIST_TYPE, CACHE_PLAYLIST)
        }
        f => {
            if let Some(id) = numbered(f, "init-", ".mp4") {
                let init = mux.seg.lock().init(id);
                return init.map_or_else(not_found, |b| media_body(b, "video/mp4", headers));
            }
            if let Some(msn) = numbered(f, "seg-", ".m4s") {
                let data = mux.seg.lock().segment(msn).and_then(|s| s.data.clone());
                return data
                    .map_or_else(not_found, |b| media_body(b, "video/iso.segment", headers));
            }
            if let Some(index) = numbered(f, "part-", ".m4s") {
                return part(svc, &mux, index, headers).await;
            }
            if let Some(msn) = numbered(f, "sub-", ".vtt") {
                let vtt = mux.seg.lock().segment(msn).and_then(|s| s.vtt.clone());
                return vtt.map_or_else(not_found, |b| {
                    let mut res = media_body(b, "text/vtt", headers);
                    res.headers_mut().insert(
                        header::CACHE_CONTROL,
                        HeaderValue::from_static(CACHE_IMMUTABLE),
                    );
                    res
                });
            }
            not_found()
        }
    }
}

async fn multivariant(svc: &HlsService, uid: &str, mux: &StreamMux) -> Response {
    let deadline = Instant::now() + svc.cfg.start_wait;
    if !mux
        .wait_until(deadline, |s| s.has_media() || s.ended())
        .await
    {
        return not_found();
    }
    let sid = svc.new_session_id(uid);
    let media_uri = format!("{MEDIA_PLAYLIST}?s={sid}");
    let subs = mux.has_vtt.then_some(SUBTITLES_PLAYLIST);
    let captions = svc.cfg.captions.caption_lines(uid, subs);
    let body = playlist::multivariant(&mux.seg.lock(), &media_uri, &captions);
    text(body, PLAYLIST_TYPE, "no-cache")
}

async fn media_playlist(
    svc: &HlsService,
    uid: &str,
    mux: &StreamMux,
    q: &HashMap<String, String>,
    ip: Option<IpAddr>,
) -> Response {
    let msn = q.get("_HLS_msn").and_then(|v| v.parse::<u64>().ok());
    let part = q.get("_HLS_part").and_then(|v| v.parse::<u64>().ok());
    if q.contains_key("_HLS_part") && msn.is_none() {
        return (StatusCode::BAD_REQUEST, "_HLS_part needs _HLS_msn\n").into_response();
    }
    if let Some(msn) = msn {
        let (live, target) = {
            let s = mux.seg.lock();
            (s.live_msn(), playlist::target_duration(&s))
        };
        if msn > live + 2 {
            return (StatusCode::BAD_REQUEST, "_HLS_msn too far in the future\n").into_response();
        }
        let deadline = Instant::now() + Duration::from_secs(3 * target);
        mux.wait_until(deadline, |s| s.satisfies(msn, part)).await;
    } else {
        let deadline = Instant::now() + svc.cfg.start_wait;
        mux.wait_until(deadline, |s| !s.segments().is_empty() || s.ended())
            .await;
    }
    let (body, edge) = {
        let s = mux.seg.lock();
        if !s.has_media() {
            return not_found();
        }
        (mux.media_playlist(&s), s.edge())
    };
    if let Some(sid) = q.get("s") {
        svc.account(uid, sid, edge, ip);
    }
    text(body, PLAYLIST_TYPE, CACHE_PLAYLIST)
}

async fn part(svc: &HlsService, mux: &StreamMux, index: u64, headers: &HeaderMap) -> Response {
    let (found, next) = {
        let s = mux.seg.lock();
        (s.part(index), s.next_part())
    };
    if let Some(p) = found {
        return media_body(p.data.clone(), "video/iso.segment", headers);
    }
    // A preload hint names the next part: hold the request until it exists.
    if index == next || index == next + 1 {
        let wait = svc.cfg.part_target * 3 + Duration::from_secs(2);
        mux.wait_until(Instant::now() + wait, |s| {
            s.part(index).is_some() || s.ended()
        })
        .await;
        if let Some(p) = mux.seg.lock().part(index) {
            return media_body(p.data.clone(), "video/iso.segment", headers);
        }
    }
    not_found()
}

async fn watch_page(
    State(svc): State<Arc<HlsService>>,
    Path(segment): Path<String>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let client = client.map(|Extension(ConnectInfo(a))| a);
    if let Err(status) = authorize(svc.cfg.access.as_ref(), &segment, &headers, client) {
        return refuse(status);
    }
    // The page loads everything under the same segment (uid or token).
    let html = web::page(&segment);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

async fn web_asset(Path(file): Path<String>) -> Response {
    match web::asset(&file) {
        Some((data, ctype)) => (
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            Body::from(data),
        )
            .into_response(),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names() {
        assert_eq!(numbered("part-12.m4s", "part-", ".m4s"), Some(12));
        assert_eq!(numbered("part-.m4s", "part-", ".m4s"), None);
        assert_eq!(numbered("seg-1.mp4", "seg-", ".m4s"), None);
    }
}
