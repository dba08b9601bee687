//! RTMP fan-out under load with real players: fifty at once, and one that
//! stops reading (SIGSTOP) next to others that must not notice.

mod rtmp_common;

use std::time::{Duration, Instant};

use rtmp_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_players_receive_the_whole_stream() {
    let _g = serial().await;
    let clip = clip();
    let srv = Server::start().await;
    let dir = TempDir::new("fifty");
    let mut players = Vec::new();
    for i in 0..50 {
        // Every fifth over RTMPS.
        let url = if i % 5 == 4 {
            srv.urls(U1.play)
        } else {
            srv.url(U1.play)
        };
        players.push(md5_player(&dir, &format!("p{i}"), &url));
    }
    assert!(
        srv.wait(Duration::from_secs(40), || srv.hub.subscribers(U1.uid)
            == 50)
            .await,
        "players attached: {}",
        srv.hub.subscribers(U1.uid)
    );
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut publisher = push_clip(&dir, "pub", &srv.url(U1.publish), &[]);
    let mut rss_max = rss_before;
    while publisher.try_status().is_none() && started.elapsed() < Duration::from_secs(20) {
        rss_max = rss_max.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.expect_success(Duration::from_secs(1)).await;
    let publish_time = started.elapsed();
    for (p, md5) in players.iter_mut() {
        p.expect_success(Duration::from_secs(15)).await;
        check_hashes(&p.name, &read_md5(md5), clip, true);
    }
    eprintln!(
        "50 players: publish took {:.2} s for a {CLIP_SECONDS} s clip; server RSS {} KiB -> max {} KiB",
        publish_time.as_secs_f64(),
        rss_before,
        rss_max
    );
    assert!(
        publish_time < Duration::from_secs(CLIP_SECONDS as u64 + 3),
        "the publisher was slowed down: {publish_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_player_costs_bounded_memory_and_does_not_slow_the_others() {
    let _g = serial().await;
    let clip = big_clip();
    let srv = Server::start().await;
    let dir = TempDir::new("sigstop");
    let (mut stopped, stopped_md5) = md5_player(&dir, "stopped", &srv.url(U1.play));
    let (mut a, a_md5) = md5_player(&dir, "a", &srv.url(U1.play));
    let (mut b, b_md5) = md5_player(&dir, "b", &srv.urls(U1.play));
    assert!(
        srv.wait(Duration::from_secs(15), || srv.hub.subscribers(U1.uid) == 3)
            .await
    );
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut publisher = push(clip, &dir, "pub", &srv.url(U1.publish), &[]);
    assert!(srv.wait_live(U1.uid, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stopped.signal("-STOP");
    let mut rss_max = rss_before;
    while publisher.try_status().is_none() && started.elapsed() < Duration::from_secs(20) {
        rss_max = rss_max.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.expect_success(Duration::from_secs(1)).await;
    let publish_time = started.elapsed();
    a.expect_success(Duration::from_secs(10)).await;
    b.expect_success(Duration::from_secs(10)).await;
    check_hashes("player a", &read_md5(&a_md5), clip, true);
    check_hashes("player b", &read_md5(&b_md5), clip, true);

    // The stopped player resumes: it gets what the kernel held, then the
    // hub moves it to a keyframe; it was never buffered for in the node.
    stopped.signal("-CONT");
    stopped.expect_success(Duration::from_secs(15)).await;
    let skipped = check_skips("stopped player", &read_md5(&stopped_md5), clip);
    let growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "stopped player: publish took {:.2} s for a {CLIP_SECONDS} s clip of {} KiB; \
         the stopped player skipped {skipped} packets; server RSS growth {growth} KiB",
        publish_time.as_secs_f64(),
        std::fs::metadata(&clip.path).unwrap().len() / 1024,
    );
    assert!(
        skipped > 0,
        "the stopped player was buffered for, not skipped"
    );
    assert!(
        publish_time < Duration::from_secs(CLIP_SECONDS as u64 + 3),
        "the publisher was slowed down: {publish_time:?}"
    );
    assert!(growth < 24 * 1024, "server memory grew by {growth} KiB");
}
