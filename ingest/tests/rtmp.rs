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
    let _g = serial();
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
