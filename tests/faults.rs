//! Faults against the real binary: kill -9 and restart on the same data
//! dir, SIGTERM with a player connected, and a publisher whose connection
//! drops and comes back within the reconnect window.

mod common;
mod reliab;

use std::time::Duration;

use reliab::*;
use serde_json::{json, Value};

fn start(dir: &std::path::Path, extra: &[&str]) -> Node {
    Node::start(&dir.join("data"), &dir.join("node.log"), extra)
}

/// Minutes viewed per uid, from the GraphQL API.
async fn minutes_viewed(node: &Node) -> Vec<(String, f64)> {
    // Yesterday to tomorrow (UTC): within the 31-day rule, whatever the
    // time zone of the machine.
    let today = time::OffsetDateTime::now_utc().date();
    let day = |d: time::Date| format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
    let from = day(today.previous_day().expect("a day before today"));
    let until = day(today.next_day().expect("a day after today"));
    let q = format!(
        r#"query ($a: String!) {{ viewer {{ accounts(filter: {{accountTag: $a}}) {{
        streamMinutesViewedAdaptiveGroups(limit: 100, filter: {{date_geq: "{from}", date_leq: "{until}"}}) {{
          sum {{ minutesViewed }} dimensions {{ uid }} }} }} }} }}"#
    );
    let v: Value = http()
        .post(format!("{}/client/v4/graphql", node.api()))
        .bearer_auth(node.token())
        .json(&json!({"query": q, "variables": {"a": node.account()}}))
        .send()
        .await
        .expect("graphql")
        .json()
        .await
        .expect("graphql JSON");
    assert_eq!(v["errors"], Value::Null, "graphql: {v}");
    let mut rows: Vec<(String, f64)> = v["data"]["viewer"]["accounts"][0]
        ["streamMinutesViewedAdaptiveGroups"]
        .as_array()
        .unwrap_or_else(|| panic!("graphql: {v}"))
        .iter()
        .map(|g| {
            (
                g["dimensions"]["uid"].as_str().unwrap_or("").to_string(),
                g["sum"]["minutesViewed"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// The live inputs without their (volatile) status, sorted by uid.
async fn inputs(node: &Node) -> Vec<Value> {
    let listed = node.get("live_inputs").await;
    let mut full = Vec::new();
    for item in listed["liveInputs"].as_array().expect("list") {
        let uid = item["uid"].as_str().expect("uid");
        full.push(node.get(&format!("live_inputs/{uid}")).await);
    }
    let mut list: Vec<Value> = full
        .iter()
        .map(|i| {
            let mut i = node_input_without_status(i);
            // Listener ports change across restarts (port 0); the secrets
            // and ids must not.
            for k in [
                "rtmp",
                "rtmps",
                "rtmpPlayback",
                "rtmpsPlayback",
                "srt",
                "srtPlayback",
            ] {
                if let Some(o) = i.get_mut(k).and_then(Value::as_object_mut) {
                    o.remove("url");
                }
            }
            if let Some(o) = i.as_object_mut() {
                for k in ["hls", "watch", "webRTC", "webRTCPlayback", "playback"] {
                    o.remove(k);
                }
            }
            i
        })
        .collect();
    list.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
    list
}

fn node_input_without_status(i: &Value) -> Value {
    let mut i = i.clone();
    if let Some(o) = i.as_object_mut() {
        o.remove("status");
    }
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keep_inputs_domains_credentials_and_analytics() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--analytics-flush", "1"];
    let mut node = start(dir.path(), &flags);

    let a = node.create_input("creator-a").await;
    let b = node.create_input("creator-b").await;
    let b_uid = b["uid"].as_str().expect("uid").to_string();
    // A key rotation: its time must survive.
    let r: Value = http()
        .post(node.stream_api(&format!("live_inputs/{b_uid}/rotate_keys")))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("rotate JSON");
    assert!(r["result"]["keysRotatedAt"].is_string(), "{r}");
    let c = node.create_input("creator-c").await;
    // A change after creation, and a rotation: the newest values must
    // survive.
    let r: Value = http()
        .put(node.stream_api(&format!("live_inputs/{}", c["uid"].as_str().unwrap())))
        .bearer_auth(node.token())
        .json(&json!({"defaultCreator": "creator-c2", "enabled": false}))
        .send()
        .await
        .expect("PUT")
        .json()
        .await
        .expect("PUT JSON");
    assert_eq!(r["success"], json!(true), "{r}");
    let cert = rcgen::generate_simple_self_signed(vec!["push.faults.test".to_string()])
        .expect("certificate");
    let r: Value = http()
        .post(node.stream_api("ingest_domains"))
        .bearer_auth(node.token())
        .json(
            &json!({"domain": "push.faults.test", "certificate": cert.cert.pem(),
                      "privateKey": cert.key_pair.serialize_pem()}),
        )
        .send()
        .await
        .expect("POST domain")
        .json()
        .await
        .expect("domain JSON");
    assert_eq!(r["success"], json!(true), "{r}");

    // Viewing time: one player for 4 s of media, flushed every second.
    let uid = a["uid"].as_str().expect("uid").to_string();
    let mut publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&a));
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("p1.md5");
    let mut p1 = play(&rtmp_play_url(&a), &out, Some(4));
    assert!(p1.wait(20.0).await.is_some_and(|s| s.success()), "player 1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_minutes = minutes_viewed(&node).await;
    let viewed: f64 = before_minutes.iter().map(|r| r.1).sum();
    assert!(
        viewed > 0.04,
        "viewing time was not recorded: {before_minutes:?}"
    );

    // A second player is watching (its minutes being flushed) when the
    // node is killed.
    let out2 = dir.path().join("p2.md5");
    let _p2 = play(&rtmp_play_url(&a), &out2, None);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_inputs = inputs(&node).await;
    let before_domains = node.get("ingest_domains").await;
    let creds_before = std::fs::read_to_string(node.data.join("credentials.json")).expect("creds");
    node.signal("KILL");
    assert!(node.wait_exit(Duration::from_secs(5)).is_some(), "kill -9");
    publisher.stop().await;

    // The database is whole before the node touches it again.
    let db = node.data.join("banyan.db");
    let check = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("sqlite3 runs");
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "ok",
        "integrity_check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mode = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode;")
        .output()
        .expect("sqlite3 runs");
    assert_eq!(String::from_utf8_lossy(&mode.stdout).trim(), "wal");

    let node = start(dir.path(), &flags);
    let creds_after = std::fs::read_to_string(node.data.join("credentials.json")).expect("creds");
    let keys = |s: &str| {
        let v: Value = serde_json::from_str(s).expect("creds JSON");
        (
            v["accountId"].clone(),
            v["apiToken"].clone(),
            v["adminToken"].clone(),
        )
    };
    assert_eq!(
        keys(&creds_before),
        keys(&creds_after),
        "credentials changed"
    );
    assert_eq!(inputs(&node).await, before_inputs, "live inputs changed");
    // The status is kept: the input that was live when the node died has
    // had a publisher (who cannot still be attached); the other never had.
    assert_eq!(node.status(&uid).await, json!("client_disconnect"));
    assert_eq!(node.status(&b_uid).await, Value::Null);
    assert_eq!(
        node.get("ingest_domains").await,
        before_domains,
        "domains changed"
    );
    let after_minutes = minutes_viewed(&node).await;
    let after: f64 = after_minutes.iter().map(|r| r.1).sum();
    assert!(
        after >= viewed,
        "minutes viewed went from {viewed} to {after} across kill -9: {before_minutes:?} then {after_minutes:?}"
    );
    // And the old keys still publish (the listener's port is new).
    let a_now = node.get(&format!("live_inputs/{uid}")).await;
    assert_eq!(a_now["rtmp"]["streamKey"], a["rtmp"]["streamKey"]);
    let mut again = publish(&clip("testsrc2"), &rtmp_publish_url(&a_now));
    node.wait_status(&uid, "connected", 15).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_player_connected_ends_its_stream_and_exits_0() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = start(dir.path(), &[]);
    let input = node.create_input("term").await;
    let uid = input["uid"].as_str().expect("uid").to_string();
    let mut publisher = publish(&clip("testsrc2"), &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("player.md5");
    let mut player = play(&rtmp_play_url(&input), &out, None);
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while packets(&out).len() < 30 {
        assert!(tokio::time::Instant::now() < until, "player got nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let t = std::time::Instant::now();
    node.signal("TERM");
    let st = node.wait_exit(Duration::from_secs(8));
    let took = t.elapsed();
    let st = st.unwrap_or_else(|| panic!("node still running 8 s after SIGTERM"));
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM: {st:?}");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    let pst = player.wait(5.0).await;
    assert!(
        pst.is_some_and(|s| s.success()),
        "the player did not end cleanly after the node stopped: {pst:?}"
    );
    assert_video_whole(&out, 30, 50, "player until shutdown");
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "node log:\n{log}");
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_reconnects_keeps_its_players_with_monotonic_timestamps() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = start(dir.path(), &["--reconnect-window", "10"]);
    let input = node.create_input("reconnect").await;
    let uid = input["uid"].as_str().expect("uid").to_string();
    let (clip_a, clip_b) = (clip("testsrc2"), clip("smptebars"));
    let (hashes_a, hashes_b) = (clip_video_hashes(&clip_a), clip_video_hashes(&clip_b));

    let mut first = publish(&clip_a, &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;
    let out = dir.path().join("player.md5");
    let mut player = play(&rtmp_play_url(&input), &out, None);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The publisher's connection drops (the process dies at once).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status();
    let _ = first.wait(5.0).await;
    node.wait_status(&uid, "reconnecting", 5).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = publish(&clip_b, &rtmp_publish_url(&input));
    node.wait_status(&uid, "connected", 15).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !player.exited(),
        "the player left during the reconnect; node log:\n{}",
        node.log_text()
    );
    player.stop().await;
    second.stop().await;

    let all = packets(&out);
    let video: Vec<&Packet> = all.iter().filter(|p| p.stream == 0).collect();
    let from_a = video.iter().filter(|p| hashes_a.contains(&p.hash)).count();
    let from_b = video.iter().filter(|p| hashes_b.contains(&p.hash)).count();
    assert!(
        from_a >= 60 && from_b >= 45,
        "frames from the first publisher {from_a}, from the second {from_b} (of {})",
        video.len()
    );
    // Every frame of the second publisher comes after every frame of the
    // first, and timestamps never go back across the switch.
    let last_a = video.iter().rposition(|p| hashes_a.contains(&p.hash));
    let first_b = video.iter().position(|p| hashes_b.contains(&p.hash));
    assert!(last_a < first_b, "frames of the two publishers interleave");
    for stream in [0, 1] {
        let s: Vec<&Packet> = all.iter().filter(|p| p.stream == stream).collect();
        for w in s.windows(2) {
            assert!(
                w[1].dts >= w[0].dts && w[1].pts >= w[0].pts,
                "stream {stream}: timestamps went back from dts {} pts {} to dts {} pts {}",
                w[0].dts,
                w[0].pts,
                w[1].dts,
                w[1].pts
            );
        }
    }
}
