//! `hls-load`: many HLS viewers in one process, polling the way players do.
//!
//! Every viewer fetches the multivariant playlist once (a media playlist given instead is used
//! as is), takes its first variant, fetches the
//! media playlist and the init section (`EXT-X-MAP`), then loops:
//! - **LL-HLS** (the media playlist has `EXT-X-PART-INF`): a blocking playlist request for the
//!   next part (`_HLS_msn=M&_HLS_part=P`, computed from the playlist it has), then every part
//!   listed that it has not fetched yet (the first time only the newest one);
//! - **plain HLS** (no parts): reload the playlist, fetch every new segment, wait one target
//!   duration after a change and half of one otherwise.
//!
//! - **`--plain`**: the plain HLS loop even when the playlist has parts (the same pattern
//!   against a server with parts and one without).
//! - **`--ffmpeg`**: the plain loop the way ffmpeg's HLS reader runs it against fMP4
//!   segments: playlists on one kept-alive connection, and before each segment the init
//!   section again on the segment connection, which it then closes, so that each segment
//!   comes over a new connection (what one `ffmpeg -i URL` process does; ffmpeg 5.1).
//!
//! One reqwest client per viewer (its own keep-alive connection), viewers started at
//! `--ramp` per second. The server's CPU and memory (`--server-pid`, repeatable) are sampled
//! from `/proc` with no viewer (`--baseline` s), once all viewers have started, and after
//! `--measure` s. Prints one JSON line: requests, bytes, errors, media fetched per viewer,
//! server CPU (cores, and s per viewer-minute above the baseline), RSS, machine load.

use banyan_bench::procfs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    media: AtomicU64,
    playlists: AtomicU64,
}

struct Args {
    url: String,
    viewers: usize,
    ramp: f64,
    baseline: f64,
    measure: f64,
    pids: Vec<u32>,
    label: String,
    /// Poll like a plain HLS player (whole segments, no blocking reloads)
    /// even when the playlist has parts.
    plain: bool,
    /// Plain, with ffmpeg's init section and new connection per segment.
    ffmpeg: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        viewers: 100,
        ramp: 100.0,
        baseline: 5.0,
        measure: 20.0,
        pids: Vec::new(),
        label: String::new(),
        plain: false,
        ffmpeg: false,
    };
    let mut it = std::env::args().skip(1);
    fn num<T: std::str::FromStr>(f: &str, v: Option<String>) -> Result<T, String> {
        v.and_then(|v| v.parse().ok())
            .ok_or(format!("{f} needs a number"))
    }
    while let Some(f) = it.next() {
        match f.as_str() {
            "--url" => a.url = it.next().unwrap_or_default(),
            "--viewers" => a.viewers = num(&f, it.next())?,
            "--ramp" => a.ramp = num(&f, it.next())?,
            "--baseline" => a.baseline = num(&f, it.next())?,
            "--measure" => a.measure = num(&f, it.next())?,
            "--server-pid" => a.pids.push(num(&f, it.next())?),
            "--label" => a.label = it.next().unwrap_or_default(),
            "--plain" => a.plain = true,
            "--ffmpeg" => {
                a.plain = true;
                a.ffmpeg = true;
            }
            _ => {
                return Err(
                    "usage: hls-load --url MULTIVARIANT_URL [--viewers N] [--ramp PER_S] \
                     [--baseline S] [--measure S] [--server-pid PID]... [--label NAME] [--plain | --ffmpeg]"
                        .into(),
                )
            }
        }
    }
    if a.url.is_empty() || a.ramp <= 0.0 || a.measure <= 0.0 || a.baseline <= 0.0 {
        return Err("--url is needed; --ramp, --baseline, --measure must be > 0".into());
    }
    Ok(a)
}

/// `rel` resolved against the URL `base` (absolute, host-absolute or relative).
fn resolve(base: &str, rel: &str) -> String {
    if rel.starts_with("http://") || rel.starts_with("https://") {
        return rel.to_string();
    }
    let path_start = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if rel.starts_with('/') {
        return format!("{}{rel}", &base[..path_start]);
    }
    let no_query = base.split('?').next().unwrap_or(base);
    let dir = &no_query[..no_query.rfind('/').map_or(no_query.len(), |i| i + 1)];
    format!("{dir}{rel}")
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let i = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[i..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split(',').next(),
    }
}

/// What a viewer needs from a media playlist.
#[derive(Default, Debug, PartialEq)]
struct Media {
    low_latency: bool,
    target: f64,
    map: Option<String>,
    /// Part URIs (LL-HLS) or segment URIs (plain), oldest first.
    items: Vec<String>,
    /// The next part to block for: (msn, part).
    next: (u64, u64),
}

fn parse_media(text: &str, plain: bool) -> Media {
    let mut m = Media {
        target: 1.0,
        ..Media::default()
    };
    let (mut seq, mut complete, mut parts_in_current) = (0u64, 0u64, 0u64);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = v.parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            m.target = v.parse().unwrap_or(1.0);
        } else if line.starts_with("#EXT-X-PART-INF") {
            m.low_latency = !plain;
        } else if line.starts_with("#EXT-X-MAP") {
            m.map = attr(line, "URI").map(str::to_string);
        } else if line.starts_with("#EXT-X-PART:") && !plain {
            if let Some(u) = attr(line, "URI") {
                m.items.push(u.to_string());
            }
            parts_in_current += 1;
        } else if line.starts_with("#EXTINF") {
            complete += 1;
            parts_in_current = 0;
            if let Some(uri) = lines.next() {
                if !m.low_latency {
                    m.items.push(uri.trim().to_string());
                }
            }
        }
    }
    m.next = (seq + complete, parts_in_current);
    m
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    c: &Counters,
) -> Result<bytes::Bytes, reqwest::Error> {
    c.requests.fetch_add(1, Ordering::Relaxed);
    let r = client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let body = match r {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    match &body {
        Ok(b) => {
            c.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        Err(_) => {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    body
}

fn one_connection_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .ok()
}

async fn viewer(url: String, plain: bool, ffmpeg: bool, c: Arc<Counters>, stop: Arc<AtomicBool>) {
    let Some(client) = one_connection_client() else {
        return;
    };
    // ffmpeg's segment connection (its playlist connection is `client`).
    let Some(mut segments) = one_connection_client() else {
        return;
    };
    let media_url = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(body) = get(&client, &url, &c).await {
            let text = String::from_utf8_lossy(&body);
            // A media playlist given directly (no multivariant): poll it.
            if text.contains("#EXTINF") || text.contains("#EXT-X-TARGETDURATION") {
                break url.clone();
            }
            if let Some(u) = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
            {
                break resolve(&url, u);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sep = if media_url.contains('?') { '&' } else { '?' };
    let mut fetched: std::collections::VecDeque<String> = Default::default();
    let mut map_done = None::<String>;
    let mut request = media_url.clone();
    while !stop.load(Ordering::Relaxed) {
        let Ok(body) = get(&client, &request, &c).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            request = media_url.clone();
            continue;
        };
        c.playlists.fetch_add(1, Ordering::Relaxed);
        let m = parse_media(&String::from_utf8_lossy(&body), plain);
        if let (Some(map), false) = (&m.map, ffmpeg) {
            if map_done.as_ref() != Some(map) {
                let _ = get(&client, &resolve(&media_url, map), &c).await;
                map_done = Some(map.clone());
            }
        }
        let new: Vec<&String> = if fetched.is_empty() {
            m.items.last().into_iter().collect()
        } else {
            m.items.iter().filter(|u| !fetched.contains(u)).collect()
        };
        let changed = !new.is_empty();
        for u in new {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let from = if ffmpeg {
                if let Some(map) = &m.map {
                    let _ = get(&segments, &resolve(&media_url, map), &c).await;
                    // ffmpeg closes its input after an init section.
                    let Some(fresh) = one_connection_client() else {
                        return;
                    };
                    segments = fresh;
                }
                &segments
            } else {
                &client
            };
            if get(from, &resolve(&media_url, u), &c).await.is_ok() {
                c.media.fetch_add(1, Ordering::Relaxed);
            }
            fetched.push_back(u.clone());
            if fetched.len() > 256 {
                fetched.pop_front();
            }
        }
        if m.low_latency {
            request = format!(
                "{media_url}{sep}_HLS_msn={}&_HLS_part={}",
                m.next.0, m.next.1
            );
        } else {
            let wait = if changed { m.target } else { m.target / 2.0 };
            tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.1, 10.0))).await;
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("hls-load: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(a: Args) -> Result<String, banyan_bench::Error> {
    let pids: Vec<Option<u32>> = a.pids.iter().map(|p| Some(*p)).collect();
    let c = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let s0 = procfs::sample(&pids)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.baseline)).await;
    let s1 = procfs::sample(&pids)?;
    let base_cores = (s1.cpu_s - s0.cpu_s) / t0.elapsed().as_secs_f64();
    let mut tasks = Vec::new();
    let gap = Duration::from_secs_f64(1.0 / a.ramp);
    for _ in 0..a.viewers {
        tasks.push(tokio::spawn(viewer(
            a.url.clone(),
            a.plain,
            a.ffmpeg,
            c.clone(),
            stop.clone(),
        )));
        tokio::time::sleep(gap).await;
    }
    // Settle: every viewer past its first requests.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s2, m2, me2, t2) = (
        procfs::sample(&pids)?,
        procfs::machine_ticks()?,
        procfs::sample(&[None])?,
        Instant::now(),
    );
    let (r2, b2, e2, md2, p2) = (
        c.requests.load(Ordering::Relaxed),
        c.bytes.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.media.load(Ordering::Relaxed),
        c.playlists.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs_f64(a.measure)).await;
    let (s3, m3, me3) = (
        procfs::sample(&pids)?,
        procfs::machine_ticks()?,
        procfs::sample(&[None])?,
    );
    let secs = t2.elapsed().as_secs_f64();
    let (r, b, e, md, p) = (
        c.requests.load(Ordering::Relaxed) - r2,
        c.bytes.load(Ordering::Relaxed) - b2,
        c.errors.load(Ordering::Relaxed) - e2,
        c.media.load(Ordering::Relaxed) - md2,
        c.playlists.load(Ordering::Relaxed) - p2,
    );
    let load = procfs::loadavg()?;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let cores = (s3.cpu_s - s2.cpu_s) / secs;
    let n = a.viewers.max(1) as f64;
    let per_viewer_min = (cores - base_cores).max(0.0) * 60.0 / n;
    let busy = (m3.0 - m2.0) as f64 / ((m3.1 - m2.1).max(1)) as f64;
    Ok(format!(
        "{{\"label\":\"{}\",\"viewers\":{},\"seconds\":{:.1},\"requests_per_s\":{:.1},\"mbit_per_s\":{:.2},\
\"errors\":{},\"media_per_viewer_s\":{:.2},\"playlists_per_viewer_s\":{:.2},\
\"server\":{{\"baseline_cores\":{:.4},\"cores\":{:.4},\"cpu_s_per_viewer_min\":{:.5},\"rss_kib_baseline\":{},\"rss_kib\":{},\"rss_kib_per_viewer\":{:.1}}},\
\"client\":{{\"cores\":{:.3},\"rss_kib\":{}}},\"machine_busy_share\":{:.3},\"loadavg_1m\":{:.2}}}",
        a.label,
        a.viewers,
        secs,
        r as f64 / secs,
        b as f64 * 8.0 / secs / 1e6,
        e,
        md as f64 / secs / n,
        p as f64 / secs / n,
        base_cores,
        cores,
        per_viewer_min,
        s1.rss_kib,
        s3.rss_kib,
        (s3.rss_kib as f64 - s1.rss_kib as f64) / n,
        (me3.cpu_s - me2.cpu_s) / secs,
        me3.rss_kib,
        busy,
        load
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve() {
        let b = "http://h:1/u/manifest/video.m3u8";
        assert_eq!(
            resolve(b, "media.m3u8?s=1"),
            "http://h:1/u/manifest/media.m3u8?s=1"
        );
        assert_eq!(resolve(b, "/x/y.ts"), "http://h:1/x/y.ts");
        assert_eq!(
            resolve("http://h:1/a/m.m3u8?s=2", "p-1.m4s"),
            "http://h:1/a/p-1.m4s"
        );
    }

    #[test]
    fn next_part_follows_the_playlist() {
        let ll = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.2\n\
#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-0.mp4\"\n\
#EXT-X-PART:DURATION=0.2,URI=\"part-1.m4s\",INDEPENDENT=YES\n#EXTINF:1.0,\nseg-7.m4s\n\
#EXT-X-PART:DURATION=0.2,URI=\"part-6.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"part-7.m4s\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-8.m4s\"\n";
        let m = parse_media(ll, false);
        assert!(m.low_latency);
        assert_eq!(m.next, (8, 2));
        assert_eq!(m.map.as_deref(), Some("init-0.mp4"));
        assert_eq!(m.items, ["part-1.m4s", "part-6.m4s", "part-7.m4s"]);
        let plain = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
#EXTINF:1.0,\nbench-3.ts\n#EXTINF:1.0,\nbench-4.ts\n";
        let m = parse_media(plain, false);
        assert!(!m.low_latency);
        assert_eq!(m.items, ["bench-3.ts", "bench-4.ts"]);
        assert_eq!(m.target, 2.0);
        // --plain: an LL-HLS playlist read as plain HLS, whole segments only.
        let m = parse_media(ll, true);
        assert!(!m.low_latency);
        assert_eq!(m.items, ["seg-7.m4s"]);
    }
}
