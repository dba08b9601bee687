//! RTMP and RTMPS end to end with real ffmpeg and ffplay: what the players
//! receive is compared packet by packet with what the publisher sent.

mod rtmp_common;

use std::time::Duration;

use rtmp_common::*;

const T: Duration = Duration::from_secs(20);

/// Publish a live encode over `publish_url`, keeping a local copy of exactly
/// what was sent; two framemd5 players (RTMP and RTMPS) and one ffplay per
/// protocol, all attached before the publisher, receive the whole stream.
async fn live_encode_case(over_tls: bool) {
    let _g = serial().await;
    let srv = Server::start().await;
    let dir = TempDir::new(if over_tls { "live-tls" } else { "live" });
    let (mut p1, md5_1) = md5_player(&dir, "play-rtmp", &srv.url(U1.play));
    let (mut p2, md5_2) = md5_player(&dir, "play-rtmps", &srv.urls(U1.play));
    let mut f1 = ffplay(&dir, "ffplay-rtmp", &srv.url(U1.play));
    let mut f2 = ffplay(&dir, "ffplay-rtmps", &srv.urls(U1.play));
    assert!(
        srv.wait(Duration::from_secs(10), || srv.hub.subscribers(U1.uid) == 4)
            .await,
        "players attached: {}",
        srv.hub.subscribers(U1.uid)
    );

    let sent = dir.join("sent.flv");
    let url = if over_tls {
        srv.urls(U1.publish)
    } else {
        srv.url(U1.publish)
    };
    let tee = format!("[f=flv]{url}|[f=flv]{}", sent.to_str().unwrap());
    let mut args: Vec<&str> = vec!["-v", "error"];
    for input in encode_input_args().chunks(4) {
        args.push("-re");
        args.extend(input);
    }
    args.extend(["-t", "4"]);
    args.extend(encode_output_args());
    // The tee muxer does not ask the encoder for global headers; without
    // them x264 sends SPS/PPS in-band and an empty sequence header.
    args.extend(["-flags:v", "+global_header"]);
    args.extend(["-map", "0:v", "-map", "1:a", "-f", "tee", &tee]);
    let mut publisher = Proc::spawn("publisher", "ffmpeg", &args, dir.join("pub.log"), &[]);
    publisher.expect_success(T).await;

    for p in [&mut p1, &mut p2, &mut f1, &mut f2] {
        p.expect_success(Duration::from_secs(10)).await;
    }
    let sent_hashes = framemd5_of_file(&sent);
    assert!(sent_hashes.len() >= 110, "sent {}", sent_hashes.len());
    for (what, file) in [("rtmp player", &md5_1), ("rtmps player", &md5_2)] {
        let got = read_md5(file);
        assert_eq!(
            got, sent_hashes,
            "{what}: received video differs from what was sent"
        );
    }
    for f in [&f1, &f2] {
        let (frames, errors) = ffplay_report(f);
        assert!(errors.is_empty(), "{}: {errors:?}", f.name);
        assert!(frames >= 100, "{}: decoded {frames} frames", f.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmp_and_players_get_every_packet() {
    live_encode_case(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmps_and_players_get_every_packet() {
    live_encode_case(true).await;
}

/// Start an ffmpeg publisher that is expected to be refused, and check it
/// fails promptly.
async fn expect_refused_publish(dir: &TempDir, name: &str, url: &str) {
    let mut p = push_clip(dir, name, url, &[]);
    match p.wait(Duration::from_secs(10)).await {
        Some(s) => assert!(!s.success(), "{name}: publishing was not refused"),
        None => panic!("{name}: still publishing after 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_and_a_good_stream_is_unaffected() {
    let _g = serial().await;
    let clip = clip();
    let srv = Server::start().await;
    let dir = TempDir::new("refuse");
    let (mut player, md5) = md5_player(&dir, "player", &srv.url(U2.play));
    assert!(
        srv.wait(Duration::from_secs(10), || srv.hub.subscribers(U2.uid) == 1)
            .await
    );
    let mut good = push_clip(&dir, "good", &srv.url(U2.publish), &[]);
    assert!(srv.wait_live(U2.uid, Duration::from_secs(10)).await);

    expect_refused_publish(&dir, "wrong-key", &srv.url("no-such-key")).await;
    expect_refused_publish(&dir, "wrong-key-tls", &srv.urls("no-such-key")).await;
    expect_refused_publish(&dir, "play-key", &srv.url(U1.play)).await;
    expect_refused_publish(&dir, "own-play-key", &srv.url(U2.play)).await;
    expect_refused_publish(&dir, "disabled", &srv.url(U3.publish)).await;
    assert_eq!(srv.hub.state(U1.uid), banyan_relay::StreamState::Idle);
    assert_eq!(srv.hub.state(U3.uid), banyan_relay::StreamState::Idle);

    // A wrong playback key, and a publish key used to play.
    for (name, key) in [("bad-play", "no-such-key"), ("pub-as-play", U2.publish)] {
        let (mut p, _) = md5_player(&dir, name, &srv.url(key));
        match p.wait(Duration::from_secs(10)).await {
            Some(s) => assert!(!s.success(), "{name}: playing was not refused"),
            None => panic!("{name}: still playing after 10 s"),
        }
    }

    good.expect_success(T).await;
    player.expect_success(Duration::from_secs(10)).await;
    check_hashes("player", &read_md5(&md5), clip, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_publisher_is_refused_and_the_first_keeps_the_stream() {
    let _g = serial().await;
    let clip = clip();
    let srv = Server::start().await;
    let dir = TempDir::new("second");
    let (mut player, md5) = md5_player(&dir, "player", &srv.urls(U1.play));
    assert!(
        srv.wait(Duration::from_secs(10), || srv.hub.subscribers(U1.uid) == 1)
            .await
    );
    let mut first = push_clip(&dir, "first", &srv.urls(U1.publish), &[]);
    assert!(srv.wait_live(U1.uid, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_refused_publish(&dir, "second", &srv.url(U1.publish)).await;
    expect_refused_publish(&dir, "second-tls", &srv.urls(U1.publish)).await;
    assert_eq!(srv.hub.state(U1.uid), banyan_relay::StreamState::Live);
    first.expect_success(T).await;
    player.expect_success(Duration::from_secs(10)).await;
    check_hashes("player", &read_md5(&md5), clip, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_joining_mid_stream_starts_on_a_keyframe_and_decodes() {
    let _g = serial().await;
    let clip = clip();
    let srv = Server::start().await;
    let dir = TempDir::new("join");
    let mut publisher = push_clip(&dir, "pub", &srv.url(U1.publish), &[]);
    assert!(srv.wait_live(U1.uid, Duration::from_secs(10)).await);
    // Well inside a GOP (one keyframe per second).
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let (mut player, md5) = md5_player(&dir, "player", &srv.url(U1.play));
    let mut viewer = ffplay(&dir, "ffplay", &srv.urls(U1.play));
    publisher.expect_success(T).await;
    let ended = std::time::Instant::now();
    player.expect_success(Duration::from_secs(10)).await;
    viewer.expect_success(Duration::from_secs(10)).await;
    // End of stream reaches the players promptly (no reconnect window here).
    assert!(ended.elapsed() < Duration::from_secs(5));

    let got = read_md5(&md5);
    let start = check_hashes("late player", &got, clip, false);
    assert!(start > 0, "a late player cannot have the first packet");
    assert_eq!(
        start + got.len(),
        clip.hashes.len(),
        "late player: packets missing after its first keyframe"
    );
    let (frames, errors) = ffplay_report(&viewer);
    assert!(errors.is_empty(), "ffplay: {errors:?}");
    assert!(frames >= 60, "ffplay decoded {frames} frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kicking_the_stream_disconnects_publisher_and_players() {
    let _g = serial().await;
    let srv = Server::start().await;
    let dir = TempDir::new("kick");
    let mut publisher = push_clip(&dir, "pub", &srv.urls(U1.publish), &["-stream_loop", "-1"]);
    assert!(srv.wait_live(U1.uid, Duration::from_secs(10)).await);
    let (mut p1, md5) = md5_player(&dir, "p1", &srv.url(U1.play));
    let (mut p2, _) = md5_player(&dir, "p2", &srv.urls(U1.play));
    assert!(
        srv.wait(Duration::from_secs(10), || srv.views.live(U1.uid) == 2)
            .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(publisher.try_status().is_none(), "publisher still running");
    srv.hub.kick(U1.uid);
    for p in [&mut publisher, &mut p1, &mut p2] {
        assert!(
            p.wait(Duration::from_secs(5)).await.is_some(),
            "{} still connected after the kick",
            p.name
        );
    }
    assert!(
        !read_md5(&md5).is_empty(),
        "p1 received nothing before the kick"
    );
    assert!(
        srv.wait(Duration::from_secs(2), || srv.views.live(U1.uid) == 0)
            .await
    );
    assert_eq!(srv.hub.state(U1.uid), banyan_relay::StreamState::Idle);
}
