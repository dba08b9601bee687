//! Benchmarks (ignored by default; run by `bench/analytics_query.sh`).
//!
//! * `query_p95`: 31 days, 10,000 creators, about 10 million viewer-minutes
//!   of synthetic rows in SQLite (and PostgreSQL); p95 of typical queries.
//! * `recording_cost`: 1,000 concurrent viewers for 10 s of media (every
//!   frame accounted by a viewer guard), then one drain and one flush into
//!   SQLite; the CPU time over the 10 s it covers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use banyan_relay::views::{Protocol, Views};
use banyan_relay::Frame;
use bytes::Bytes;
use sqlx::Executor;

use super::db::{self, Dim, GroupQuery, SortKey, DAY_MINUTES};
use super::flush::Batcher;

const ACCOUNT: &str = "00000000000000000000000000000001";
const DAYS: i64 = 31;
const CREATORS: i64 = 10_000;
/// First day of the synthetic month (2026-11-01).
const DAY0: i64 = 20_758;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: RUsage = unsafe { std::mem::zeroed() };
    unsafe { getrusage(0, &mut ru) };
    let t = |s: i64, us: i64| s as f64 + us as f64 / 1e6;
    t(ru.utime_sec, ru.utime_usec) + t(ru.stime_sec, ru.stime_usec)
}

#[repr(C)]
struct RUsage {
    utime_sec: i64,
    utime_usec: i64,
    stime_sec: i64,
    stime_usec: i64,
    rest: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut RUsage) -> i32;
}

fn p95(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 95).div_ceil(100) - 1])
}

/// Query p95 on SQLite, and on PostgreSQL when `BANYAN_BENCH_POSTGRES`
/// names an empty database.
#[tokio::test]
#[ignore]
async fn query_p95() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open_sqlite(dir.path()).await.unwrap();
    println!("== SQLite");
    fill(store.pool(), "printf('%032x', c.n)").await;
    time_queries(store.pool()).await;
    if let Ok(url) = std::env::var("BANYAN_BENCH_POSTGRES") {
        let store = crate::store::Store::open(&url).await.unwrap();
        println!("== PostgreSQL");
        fill(store.pool(), "lpad(to_hex(c.n), 32, '0')").await;
        time_queries(store.pool()).await;
    }
}

/// Each creator streams on half of the days (a fixed pseudo-random
/// pattern), 16 minutes an evening, to 1..7 viewers (4 on average), over
/// RTMP or HLS: 10,000 x 31 / 2 x 16 x 4 ≈ 10 million viewer-minutes. The
/// rollups are filled as an older node's database would be upgraded: days
/// from the minutes in SQL, months by the migration that made them.
async fn fill(pool: &sqlx::AnyPool, uid_expr: &str) {
    let t = Instant::now();
    let gen = format!(
        "WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < {last_c}),
              d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < {last_d}),
              m(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM m WHERE n < 15)
         INSERT INTO view_minutes (account_id, minute, uid, creator, protocol, millis)
         SELECT '{ACCOUNT}', ({DAY0} + d.n) * {DAY_MINUTES} + 1080 + (c.n % 240) + m.n,
                {uid_expr}, 'creator-' || c.n,
                CASE WHEN (c.n + d.n) % 3 = 0 THEN 'hls' ELSE 'rtmp' END,
                (1 + ((c.n * 7 + d.n * 13 + m.n) % 7)) * 60000
         FROM c, d, m WHERE (c.n * 31 + d.n * 17) % 2 = 0",
        last_c = CREATORS - 1,
        last_d = DAYS - 1
    );
    pool.execute(gen.as_str()).await.unwrap();
    pool.execute(
        "INSERT INTO view_days (account_id, day, uid, creator, protocol, millis)
         SELECT account_id, minute / 1440, uid, creator, protocol, SUM(millis)
         FROM view_minutes GROUP BY account_id, minute / 1440, uid, creator, protocol",
    )
    .await
    .unwrap();
    let filled = t.elapsed();
    pool.execute("DROP TABLE view_months").await.unwrap();
    let t = Instant::now();
    pool.execute(crate::store::migrate::sql(3)).await.unwrap();
    let upgrade = t.elapsed();
    pool.execute("ANALYZE").await.unwrap();
    let all = GroupQuery {
        account_id: ACCOUNT.into(),
        limit: 1,
        ..GroupQuery::default()
    };
    let total = all.run(pool).await.unwrap()[0].millis as f64 / 60_000.0;
    println!(
        "generated {total:.0} viewer-minutes for {CREATORS} creators over {DAYS} days in {:.1} s; \
         monthly rollup filled from the days in {:.2} s",
        filled.as_secs_f64(),
        upgrade.as_secs_f64()
    );
}

async fn time_queries(pool: &sqlx::AnyPool) {
    let day = |d: i64| Some((DAY0 + d) * DAY_MINUTES);
    let creators = |name: &'static str, from: i64, until: i64, limit: u32| {
        (
            name,
            GroupQuery {
                account_id: ACCOUNT.into(),
                dims: vec![Dim::Creator],
                from: day(from),
                until: day(until),
                order: vec![(SortKey::Sum, true)],
                limit,
                ..GroupQuery::default()
            },
        )
    };
    // DAY0 is 2026-11-01: day 30 is 2026-12-01, the data's last day.
    let cases = [
        creators("top 100 creators, November", 0, 30, 100),
        creators("all 10,000 creators, November", 0, 30, 10_000),
        creators("top 100 creators, 2026-11-01 to 12-02", 0, 31, 100),
        creators("all 10,000 creators, 2026-11-01 to 12-02", 0, 31, 10_000),
        creators("top 100 creators, 31 days to 12-02 (rolling)", 1, 32, 100),
        creators(
            "all 10,000 creators, 31 days to 12-02 (rolling)",
            1,
            32,
            10_000,
        ),
        (
            "one creator by date and protocol, 31 days",
            GroupQuery {
                account_id: ACCOUNT.into(),
                dims: vec![Dim::Date, Dim::Protocol],
                from: day(0),
                until: day(31),
                creator: Some("creator-4242".into()),
                order: vec![(SortKey::Dim(Dim::Date), false)],
                limit: 100,
                ..GroupQuery::default()
            },
        ),
        (
            "by date, 31 days",
            GroupQuery {
                account_id: ACCOUNT.into(),
                dims: vec![Dim::Date],
                from: day(0),
                until: day(31),
                order: vec![(SortKey::Dim(Dim::Date), false)],
                limit: 100,
                ..GroupQuery::default()
            },
        ),
        (
            "one creator by minute, one day",
            GroupQuery {
                account_id: ACCOUNT.into(),
                dims: vec![Dim::Datetime],
                from: day(4),
                until: day(5),
                creator: Some("creator-4242".into()),
                limit: 1000,
                ..GroupQuery::default()
            },
        ),
        (
            "top 10 creators in one hour (minute table)",
            GroupQuery {
                account_id: ACCOUNT.into(),
                dims: vec![Dim::Creator],
                from: day(4).map(|m| m + 1140),
                until: day(4).map(|m| m + 1200),
                order: vec![(SortKey::Sum, true)],
                limit: 10,
                ..GroupQuery::default()
            },
        ),
    ];
    for (name, q) in cases {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..40 {
            let t = Instant::now();
            n = q.run(pool).await.unwrap().len();
            times.push(t.elapsed());
        }
        let (median, p95) = p95(times);
        println!(
            "{name:<50} rows {n:>6}  median {:>7.1} ms  p95 {:>7.1} ms",
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3
        );
    }
}

#[tokio::test]
#[ignore]
async fn recording_cost() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open_sqlite(dir.path()).await.unwrap();
    let pool = store.pool();
    // 100 streams with 10 viewers each over four protocols.
    let streams: Vec<String> = (0..100).map(|i| format!("{i:032x}")).collect();
    for (i, uid) in streams.iter().enumerate() {
        sqlx::query(
            "INSERT INTO live_inputs (uid, account_id, created, modified, meta, default_creator, \
             enabled, stream_key, playback_key, srt_passphrase, srt_play_passphrase, captions) \
             VALUES ($1, $2, 0, 0, '{}', $3, 1, $1, $1, $1, $1, '[]')",
        )
        .bind(uid)
        .bind(ACCOUNT)
        .bind(format!("creator-{i}"))
        .execute(pool)
        .await
        .unwrap();
    }
    let views = Views::new();
    let mut guards = Vec::new();
    for (i, uid) in streams.iter().enumerate() {
        for v in 0..10 {
            guards.push(views.viewer(uid, Protocol::ALL[(i + v) % 4]));
        }
    }
    let video: Vec<Frame> = (0..250)
        .map(|i| Frame::video(i * 3600, i * 3600, i % 25 == 0, Bytes::new()))
        .collect();
    let audio: Vec<Frame> = (0..470)
        .map(|i| Frame::audio(i * 1920, Bytes::new()))
        .collect();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    for g in guards.iter_mut() {
        for f in &video {
            g.delivered(f);
        }
        for f in &audio {
            g.delivered(f);
        }
    }
    let cpu1 = cpu_seconds();
    let mut batcher = Batcher::default();
    let now = crate::store::now_micros() / 1000;
    batcher.add(&views.drain(), now - 10_000, now);
    let owners = db::owners(pool, &batcher.uids()).await.unwrap();
    let batch: HashMap<_, _> = batcher.attribute(&owners);
    db::record(pool, &batch).await.unwrap();
    let cpu2 = cpu_seconds();
    let media = 10.0;
    println!(
        "1,000 viewers x {media} s of media (250 video + 470 audio frames each): \
         accounting {:.2} ms CPU, drain+attribute+flush ({} rows) {:.2} ms CPU, wall {:.1} ms; \
         {:.4}% of one core",
        (cpu1 - cpu0) * 1e3,
        batch.len(),
        (cpu2 - cpu1) * 1e3,
        wall0.elapsed().as_secs_f64() * 1e3,
        (cpu2 - cpu0) / media * 100.0
    );
    let q = GroupQuery {
        account_id: ACCOUNT.into(),
        limit: 1,
        ..GroupQuery::default()
    };
    let total = q.run(pool).await.unwrap()[0].millis;
    assert_eq!(
        total,
        1000 * 9_960,
        "each viewer: 249 frame intervals of 40 ms"
    );
}
