//! Hostile and clumsy clients against the real binary: silent and
//! trickling connections, HTTP slowloris, a publisher whose bytes slow to a
//! trickle, viewers that never read, connection floods beyond the limit
//! (RTMP and HTTP; SRT, refused at its handshake), and handcrafted bogus
//! RTMP chunks, before and after play. Each time a real ffmpeg stream (the witness) runs alongside
//! and must get every frame.
//!
//! Malformed JSON and oversized API bodies are covered by tests/api_auth.rs.

mod common;
mod hostile_support;
mod reliab;

use std::time::{Duration, Instant};

use hostile_support::*;
use reliab::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_rtmp_clients_are_dropped_at_the_handshake_deadline() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &["--handshake-timeout", "2"]);
    let witness = Witness::start(&node, dir.path(), 6).await;
    let rtmp = node.addr("rtmp");

    // Three connections that send nothing, one that sends its C0C1 a byte
    // every 300 ms (each byte would reset a per-read timeout).
    let t0 = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(&rtmp).await.expect("connect"));
    }
    let mut trickle = TcpStream::connect(&rtmp).await.expect("connect");
    let trickler = tokio::spawn(async move {
        for _ in 0..40 {
            if trickle.write_all(&[3]).await.is_err() {
                return (true, trickle);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut b)).await
            {
                return (true, trickle);
            }
        }
        (false, trickle)
    });
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(6)).await,
            "silent connection {i} still open after 6 s"
        );
    }
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "silent connections closed too early ({waited:?}): the timeout is 2 s"
    );
    let (closed, _t) = trickler.await.expect("trickler");
    assert!(closed, "the trickling connection was never dropped");
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "the trickling connection outlived the handshake deadline: {:?}",
        t0.elapsed()
    );
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_rtmp_connections_refused_total",
            &["reason=\"handshake\""]
        ) >= 4.0,
        "handshake refusals not counted:\n{m}"
    );
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_slowloris_is_cut_off_and_other_calls_are_served() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &["--http-header-timeout", "2"]);
    let http = node.addr("http");

    // Two slow clients: a header byte every 500 ms.
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&http).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("request line");
        slow.push(s);
    }
    let loris = tokio::spawn(async move {
        let mut closed_at = vec![None; slow.len()];
        for _ in 0..30 {
            for (i, s) in slow.iter_mut().enumerate() {
                if closed_at[i].is_some() {
                    continue;
                }
                let mut b = [0u8; 512];
                let gone =
                    match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => true,
                        // An answer (408) counts as cut off, as does a write error.
                        Ok(Ok(_)) => true,
                        Err(_) => s.write_all(b"X").await.is_err(),
                    };
                if gone {
                    closed_at[i] = Some(t0.elapsed());
                }
            }
            if closed_at.iter().all(Option::is_some) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        closed_at
    });

    // Meanwhile the API answers at once.
    let client = http_client_fresh();
    for _ in 0..15 {
        let t = Instant::now();
        let r = client
            .get(node.stream_api("live_inputs"))
            .bearer_auth(node.token())
            .send()
            .await
            .expect("API call during slowloris");
        assert!(r.status().is_success(), "API call failed: {}", r.status());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "API call took {:?} during slowloris",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed_at = loris.await.expect("loris");
    for (i, c) in closed_at.iter().enumerate() {
        let c = c.unwrap_or_else(|| panic!("slow client {i} never cut off"));
        assert!(
            c >= Duration::from_millis(1500) && c <= Duration::from_secs(5),
            "slow client {i} cut off after {c:?}, want about 2 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_slowed_to_one_byte_per_second_is_dropped_alone() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(
        dir.path(),
        &["--idle-timeout", "3", "--reconnect-window", "1"],
    );
    let witness = Witness::start(&node, dir.path(), 8).await;

    let slow_input = node.create_input("slow").await;
    let uid = slow_input["uid"].as_str().expect("uid").to_string();
    let throttle = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (proxy, closed) = throttling_proxy(node.addr("rtmp"), throttle.clone()).await;
    let key = slow_input["rtmp"]["streamKey"].as_str().expect("key");
    let mut slow = publish(&clip("testsrc2"), &format!("rtmp://{proxy}/live/{key}"));
    node.wait_status(&uid, "connected", 15).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    throttle.store(true, std::sync::atomic::Ordering::Relaxed);
    let throttled_at = Instant::now();

    let closed_at = closed
        .await
        .expect("proxy")
        .expect("the node never closed the trickling publisher");
    let after = closed_at.duration_since(throttled_at);
    assert!(
        after >= Duration::from_secs(2) && after <= Duration::from_secs(7),
        "the trickling publisher was dropped {after:?} after slowing, want about 3 s"
    );
    assert_ne!(node.status(&uid).await, serde_json::json!("connected"));
    slow.stop().await;
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_rtmp_connections_refused_total",
            &["reason=\"idle\""]
        ) >= 1.0,
        "idle drop not counted:\n{m}"
    );
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_that_never_read_cost_bounded_memory() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &[]);
    let witness = Witness::start(&node, dir.path(), 8).await;
    let input = node.create_input("stuck").await;
    let uid = input["uid"].as_str().expect("uid").to_string();
    let mut publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;
    let rtmp = node.addr("rtmp");

    let before = node.rss_kib();
    // Twenty players that complete play, read a little, then never read
    // again (their receive buffers fill, the node's writes block).
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let mut s = small_buffer_connect(&rtmp).await;
        rtmp_handshake(&mut s).await;
        rtmp_play(&mut s, &rtmp, &play_key(&input)).await;
        stuck.push(s);
    }
    // The first one shows media flows before it stops reading.
    let mut got = 0usize;
    let mut b = vec![0u8; 16 << 10];
    let until = Instant::now() + Duration::from_secs(5);
    while got < 20_000 && Instant::now() < until {
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), stuck[0].read(&mut b)).await
        {
            got += n;
        }
    }
    assert!(got >= 20_000, "the stuck player got no media ({got} bytes)");

    let mut peak = before;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(node.rss_kib());
    }
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("node RSS {before} KiB before, peak {peak} KiB with 20 stuck viewers");
    assert!(
        growth_mib < 64,
        "node RSS grew by {growth_mib} MiB with 20 viewers that never read"
    );
    witness.check().await;
    // The stream itself is still served to a new, reading viewer.
    let out = dir.path().join("late.md5");
    let mut late = play(&rtmp_play_url(&input), &out, Some(2));
    let st = late.wait(20.0).await;
    assert!(st.is_some_and(|s| s.success()), "late player: {st:?}");
    assert_video_whole(&out, 50, 50, "late player");
    publisher.stop().await;
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_beyond_the_limit_is_refused_and_the_node_keeps_working() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    // The witness takes two RTMP connections; the flood holds the rest
    // (silent, until the handshake timeout) and more are refused.
    let node = start(
        dir.path(),
        &["--max-connections", "8", "--handshake-timeout", "6"],
    );
    let witness = Witness::start(&node, dir.path(), 6).await;
    let rtmp = node.addr("rtmp");
    let http = node.addr("http");

    let mut flood = Vec::new();
    for _ in 0..30 {
        flood.push(TcpStream::connect(&rtmp).await.expect("connect"));
    }
    let mut refused = 0;
    for s in flood.iter_mut() {
        if closed_within(s, Duration::from_millis(300)).await {
            refused += 1;
        }
    }
    assert!(
        (22..=24).contains(&refused),
        "{refused} of 30 flood connections refused at once, want 30 - (8 - 2 or 3)"
    );

    // HTTP: idle keep-alive connections up to the limit, then a clear 503.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(&http).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(&http).await.expect("connect");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), extra.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("connection limit reached"),
        "the connection over the HTTP limit got: {answer:?}"
    );
    drop(held);
    drop(flood);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = node.metrics().await;
    let rtmp_refused = counter(
        &m,
        "banyan_connections_refused_total",
        &["reason=\"limit\"", "listener=\"rtmp\""],
    );
    let http_refused = counter(
        &m,
        "banyan_connections_refused_total",
        &["reason=\"limit\"", "listener=\"http\""],
    );
    assert_eq!(rtmp_refused, refused as f64, "RTMP refusals counted:\n{m}");
    assert!(http_refused >= 1.0, "HTTP refusals counted:\n{m}");
    assert!(
        node.log_text().contains("connection limit reached"),
        "the refusal reason is not in the log"
    );
    witness.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_flood_beyond_the_limit_is_refused_at_the_handshake_and_slots_come_back() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    // The witness takes two SRT slots (publisher and player), two held
    // players the rest; every caller beyond is refused at the handshake.
    let node = start(dir.path(), &["--max-connections", "4"]);
    let srt = node.addr("srt");
    let input = node.create_input("srt-witness").await;
    let uid = input["uid"].as_str().expect("uid").to_string();
    let publish_url = format!(
        "srt://{srt}?streamid={}&passphrase={}",
        input["srt"]["streamId"].as_str().expect("srt.streamId"),
        input["srt"]["passphrase"].as_str().expect("srt.passphrase")
    );
    let play_id = input["srtPlayback"]["streamId"]
        .as_str()
        .expect("srtPlayback.streamId")
        .to_string();
    let play_pass = input["srtPlayback"]["passphrase"]
        .as_str()
        .expect("srtPlayback.passphrase")
        .to_string();
    let play_url = format!("srt://{srt}?streamid={play_id}&passphrase={play_pass}");

    // The witness: ffmpeg publishes the clip over SRT, ffmpeg plays 10 s.
    let mut c = ffmpeg();
    c.args(["-re", "-stream_loop", "-1", "-i"])
        .arg(clip("testsrc2"))
        .args(["-c", "copy", "-f", "mpegts", &publish_url]);
    let mut publisher = Client::spawn(c);
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("srt-witness.md5");
    let mut c = ffmpeg();
    c.args(["-i", &play_url, "-t", "10"])
        .args(FRAMEMD5)
        .arg("-y")
        .arg(&out);
    let mut player = Client::spawn(c);
    let until = Instant::now() + Duration::from_secs(10);
    while video_steps(&out).0 < 3 {
        assert!(
            Instant::now() < until,
            "the SRT witness player got no frames; node log:\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Watch the witness while the rest happens: frames keep arriving.
    let watched = out.clone();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watching2 = watching.clone();
    let watcher = tokio::spawn(async move {
        let (mut last_count, mut last_change) = (0, Instant::now());
        let mut longest = Duration::ZERO;
        while watching2.load(std::sync::atomic::Ordering::Relaxed) {
            let n = video_steps(&watched).0;
            if n != last_count {
                longest = longest.max(last_change.elapsed());
                (last_count, last_change) = (n, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        longest.max(last_change.elapsed())
    });

    // Two players fill the limit.
    let (id, pass, a) = (play_id.clone(), play_pass.clone(), srt.clone());
    let held = tokio::task::spawn_blocking(move || {
        (0..2)
            .map(|i| srt_call(&a, &id, &pass).unwrap_or_else(|e| panic!("holder {i} refused: {e}")))
            .collect::<Vec<_>>()
    })
    .await
    .expect("holders");

    // The flood: srt-live-transmit callers (told not to retry) and callers
    // through the binding, which read the reject code.
    let mut slt = Vec::new();
    for i in 0..4 {
        let mut c = Command::new("srt-live-transmit");
        c.args(["-a:no", &play_url, "file://con"])
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join(format!("slt{i}.err"))).expect("stderr file"),
            );
        slt.push(Client::spawn(c));
    }
    let (id, pass, a) = (play_id.clone(), play_pass.clone(), srt.clone());
    let codes = tokio::task::spawn_blocking(move || {
        (0..8)
            .map(|_| srt_call(&a, &id, &pass).err())
            .collect::<Vec<_>>()
    })
    .await
    .expect("flood");
    assert!(
        codes
            .iter()
            .all(|c| *c == Some(banyan_srt::server::reject::OVERLOAD)),
        "callers beyond the limit got {codes:?}, want SRT_REJX_OVERLOAD (1402) each"
    );
    // Each is told REJECT with the reason. (Whether srt-live-transmit then
    // exits at once is its own affair: on a loaded machine it sometimes
    // lingers after the rejection, so it is stopped here.)
    for (i, c) in slt.iter_mut().enumerate() {
        let path = dir.path().join(format!("slt{i}.err"));
        let until = Instant::now() + Duration::from_secs(10);
        let err = loop {
            let err = std::fs::read_to_string(&path).unwrap_or_default();
            if (err.contains("REJECT") && err.contains("rejection reason"))
                || Instant::now() > until
            {
                break err;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        c.stop().await;
        assert!(
            err.contains("REJECT") && err.contains("rejection reason"),
            "srt-live-transmit {i} was not refused:\n{err}"
        );
    }
    let m = node.metrics().await;
    let refused = counter(
        &m,
        "banyan_connections_refused_total",
        &["reason=\"limit\"", "listener=\"srt\""],
    );
    assert_eq!(refused, 12.0, "SRT refusals counted:\n{m}");
    let log = node.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection limit reached"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("srt"),
        "want one SRT limit warning for the whole flood, got {warnings:#?}"
    );

    // The flood goes away: slots come back, however many times they are
    // taken and given back.
    drop(held);
    let (id, pass, a) = (play_id.clone(), play_pass.clone(), srt.clone());
    tokio::task::spawn_blocking(move || {
        for i in 0..10 {
            let s = (0..100)
                .find_map(|_| match srt_call(&a, &id, &pass) {
                    Ok(s) => Some(s),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        None
                    }
                })
                .unwrap_or_else(|| panic!("no slot for caller {i} after the flood"));
            drop(s);
        }
    })
    .await
    .expect("callers after the flood");
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let stalled = watcher.await.expect("watcher");
    // A real player still gets the stream.
    let late = dir.path().join("late.md5");
    let mut c = ffmpeg();
    c.args(["-i", &play_url, "-frames:v", "30"])
        .args(FRAMEMD5)
        .arg("-y")
        .arg(&late);
    let mut late_player = Client::spawn(c);
    let st = late_player.wait(15.0).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "a player after the flood failed: {st:?}; node log:\n{}",
        node.log_text()
    );
    assert!(
        video_steps(&late).0 >= 30,
        "the late player got too few frames"
    );

    let st = player.wait(20.0).await;
    assert!(
        st.is_some_and(|s| s.success()),
        "the SRT witness player did not finish cleanly: {st:?}"
    );
    let (frames, step) = video_steps(&out);
    assert!(
        frames >= 10 * 30 * 9 / 10 && step <= 0.1,
        "SRT witness: {frames} video frames, longest step {step:.3} s"
    );
    assert!(
        stalled <= Duration::from_millis(500),
        "the SRT witness stalled {stalled:?} while the flood came and went"
    );
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_chunks_and_bogus_lengths_drop_only_that_connection() {
    let _one = SERIAL.lock().await;
    let dir = tempdir();
    let node = start(dir.path(), &[]);
    let witness = Witness::start(&node, dir.path(), 6).await;
    let rtmp = node.addr("rtmp");

    let mut bogus: Vec<(&str, Vec<u8>)> = vec![
        // A chunk size beyond any bound.
        (
            "chunk size 2^31-1",
            chunk(2, 1, 0, &0x7fff_ffffu32.to_be_bytes()),
        ),
        // A video message announcing 16 MiB.
        ("16 MiB video message", {
            let mut c = chunk(4, 9, 1, &[0x17, 0, 0, 0, 0]);
            c[4..7].copy_from_slice(&[0xff, 0xff, 0xff]);
            c
        }),
        // A continuation chunk on a stream that never had a header.
        ("headerless continuation", vec![0xc5, 1, 2, 3, 4, 5, 6, 7]),
        // A command message of 1 MiB.
        ("1 MiB command", {
            let mut c = chunk(3, 20, 0, &[2, 0, 7]);
            c[4..7].copy_from_slice(&[0x10, 0, 0]);
            c
        }),
    ];
    // And a command nested deeper than the AMF bound.
    let mut deep = Vec::new();
    amf_str(&mut deep, "connect");
    amf_num(&mut deep, 1.0);
    for _ in 0..64 {
        deep.extend_from_slice(&[3, 0, 1, b'a']);
    }
    bogus.push(("AMF nested 64 deep", chunk(3, 20, 0, &deep)));

    for (what, bytes) in &bogus {
        let mut s = TcpStream::connect(&rtmp).await.expect("connect");
        rtmp_handshake(&mut s).await;
        let _ = s.write_all(bytes).await;
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "{what}: the connection was not closed"
        );
    }
    // After play the protocol library's session is gone and the chunk
    // guard alone reads the player: a ping request is answered, a bogus
    // chunk closes the connection.
    let input = node.create_input("player").await;
    let mut s = TcpStream::connect(&rtmp).await.expect("connect");
    rtmp_handshake(&mut s).await;
    rtmp_play(&mut s, &rtmp, &play_key(&input)).await;
    let started = read_until(&mut s, b"NetStream.Play.Start").await;
    assert!(started, "play was not accepted");
    s.write_all(&chunk(2, 4, 0, &[0, 6, 0xBA, 0xDC, 0x0F, 0xFE]))
        .await
        .expect("ping request");
    let answered = read_until(&mut s, &[0, 7, 0xBA, 0xDC, 0x0F, 0xFE]).await;
    assert!(answered, "no ping response while playing");
    let _ = s.write_all(&[0xc5, 1, 2, 3, 4, 5, 6, 7]).await;
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "a headerless continuation while playing: the connection was not closed"
    );
    let m = node.metrics().await;
    assert!(
        counter(
            &m,
            "banyan_rtmp_connections_refused_total",
            &["reason=\"protocol\""]
        ) >= bogus.len() as f64,
        "protocol refusals not counted:\n{m}"
    );
    witness.check().await;
}
