//! Signed playback and honest HLS viewer counts, end to end with real
//! clients: hls.js in Chromium on the watch page under a token, ffmpeg
//! frame-exact on a token a "platform" signed itself with `jose` (npm, not
//! Banyan's code) from the keys endpoint's JWK, refusals tried with reqwest,
//! and a script of forged, cross-input and replayed session ids beside a
//! real viewer that must be counted (the witness).

mod common;
mod signed_support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{http, Client, Hashes, Node, FRAMEMD5_ARGS};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use signed_support::*;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_playback_end_to_end() {
    let node = Node::start(&["--analytics-flush", "1", "--hls-sessions-per-address", "4"]);
    let api = Api {
        node: &node,
        account: node.creds["accountId"].as_str().unwrap().into(),
        token: node.creds["apiToken"].as_str().unwrap().into(),
    };
    let base = node.api();

    // The recording object: Cloudflare's defaults, stored, type-checked.
    let a = api
        .input(json!({"requireSignedURLs": true, "allowedOrigins": ["allowed.example"]}))
        .await;
    assert_eq!(
        a.0["recording"],
        json!({"mode": "off", "timeoutSeconds": 0, "requireSignedURLs": true,
               "allowedOrigins": ["allowed.example"], "hideLiveViewerCount": false})
    );
    let (s, v) = api
        .call(
            Method::POST,
            "/live_inputs",
            Some(json!({"recording": {"requireSignedURLs": "yes"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v.to_string().contains("requireSignedURLs"), "{v}");
    let b = api.input(json!({})).await;
    let c = api.input(json!({})).await;
    assert_eq!(b.0["recording"]["requireSignedURLs"], json!(false));
    let (ua, ub, uc) = (
        a.uid().to_string(),
        b.uid().to_string(),
        c.uid().to_string(),
    );

    // Signing keys: the private key once, then only ids.
    let key = api.ok(Method::POST, "/keys", None).await;
    for f in ["id", "pem", "jwk", "created"] {
        assert!(key[f].is_string(), "{f} in {key}");
    }
    let list = api.ok(Method::GET, "/keys", None).await;
    assert_eq!(
        list,
        json!([{"id": key["id"], "created": key["created"]}]),
        "listed without the private key"
    );

    let mut pubs = Vec::new();
    for input in [&a, &b, &c] {
        let mut p = common::publish_looped(input, -1);
        node.wait_connected(input.uid(), &mut p).await;
        pubs.push(p);
    }
    // A session id of C issued now, replayed after it can no longer start.
    let c_base = format!("{base}/{uc}");
    let stale_c_id = session_id(&http(), &c_base).await;
    let stale_at = Instant::now();

    let token = api.token(&ua, json!({})).await;
    let short = api.token(&ua, json!({"exp": now() + 2})).await;
    let platform = platform_sign(&key, &ua, now() + 600, None);
    let t_base = format!("{base}/{token}");

    // hls.js in Chromium on the watch page under the token; ffmpeg on the
    // platform's token, frame by frame; a second ffmpeg as the witness
    // viewer that stays through the forgery below.
    let d = tempfile::tempdir().unwrap();
    let browser_out = d.path().join("browser.json");
    let mut browser = Client::spawn(
        {
            let mut cmd = Command::new("node");
            cmd.arg(root().join("tests/browser/play.mjs"))
                .arg(format!("{t_base}/watch"))
                // Smooth low-latency play is the HLS tests' subject; here the
                // machine also runs three publishers and two more players, so
                // a stall or two (1.5 s without progress) and the latency they
                // leave behind are tolerated, and playing 8 s is required.
                .args(["--seconds", "8", "--timeout", "40"])
                .args(["--max-latency", "8", "--max-stalls", "2"])
                .stdout(std::fs::File::create(&browser_out).unwrap())
                .stderr(Stdio::null());
            cmd
        },
        "chromium",
    );
    let md5 = d.path().join("hls.md5");
    let mut ff = Client::spawn(
        {
            let mut cmd = common::ffmpeg();
            cmd.arg("-i")
                .arg(format!("{base}/{platform}/manifest/video.m3u8"))
                .args(["-t", "5"])
                .args(FRAMEMD5_ARGS)
                .arg(&md5);
            cmd
        },
        "ffmpeg HLS player",
    );
    let mut witness = Client::spawn(
        {
            let mut cmd = common::ffmpeg();
            cmd.arg("-i")
                .arg(format!("{t_base}/manifest/video.m3u8"))
                .args(["-map", "0:v", "-c", "copy", "-t", "240", "-f", "null", "-"]);
            cmd
        },
        "witness HLS player",
    );

    // ---- refusals, while those play

    // The guarded input's bare uid answers exactly as a uid that does not exist.
    for path in ["manifest/video.m3u8", "manifest/media.m3u8", "watch"] {
        let guarded = probe(&format!("{base}/{ua}/{path}")).await;
        let unknown = probe(&format!("{base}/{RANDOM_UID}/{path}")).await;
        assert_eq!(guarded.0, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(guarded, unknown, "{path}: the uid's existence leaks");
    }
    for path in ["lifecycle", "views"] {
        let guarded = probe(&format!("{base}/{ua}/{path}")).await;
        let unknown = probe(&format!("{base}/{RANDOM_UID}/{path}")).await;
        assert_eq!(guarded.0, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(guarded, unknown, "{path}: the uid's existence leaks");
    }
    let (s, _, body) = get(&format!("{t_base}/lifecycle"), None).await;
    assert_eq!(
        (s, serde_json::from_str::<Value>(&body).unwrap()),
        (
            StatusCode::OK,
            json!({"isInput": true, "videoUID": null, "live": true, "status": "connected"})
        )
    );
    // The public input plays by uid, open to every page.
    let (s, h, _) = get(
        &format!("{base}/{ub}/manifest/video.m3u8"),
        Some("https://any.example"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "*");

    // Tokens: tampered, for a uid that does not exist, signed with another
    // account's key, with access rules that refuse or cannot be evaluated,
    // expired: all 401, whether the uid exists or not.
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 5;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let moved_claims = {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&e.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = json!(ub);
        format!("{}.{}.{}", parts[0], e.encode(claims.to_string()), parts[2])
    };
    let (s, acct2) = http()
        .post(format!("{base}/client/v4/accounts"))
        .bearer_auth(node.creds["adminToken"].as_str().unwrap())
        .json(&json!({"name": "other"}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    let acct2: Value = acct2.json().await.unwrap();
    let api2 = Api {
        node: &node,
        account: acct2["result"]["id"].as_str().unwrap().into(),
        token: acct2["result"]["apiToken"].as_str().unwrap().into(),
    };
    let key2 = api2.ok(Method::POST, "/keys", None).await;
    let (s, _) = api2.call(Method::POST, &format!("/{ua}/token"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "another account's input");
    let other_account = platform_sign(&key2, &ua, now() + 600, None);
    let unknown_uid = platform_sign(&key, RANDOM_UID, now() + 600, None);
    let blocked = platform_sign(
        &key,
        &ua,
        now() + 600,
        Some(json!([{"type": "ip.src", "ip": ["127.0.0.0/8"], "action": "block"}])),
    );
    let allowed = platform_sign(
        &key,
        &ua,
        now() + 600,
        Some(
            json!([{"type": "ip.src", "ip": ["127.0.0.1/32"], "action": "allow"},
                    {"type": "any", "action": "block"}]),
        ),
    );
    let geo = platform_sign(
        &key,
        &ua,
        now() + 600,
        Some(json!([{"type": "ip.geoip.country", "country": ["US"], "action": "allow"}])),
    );
    let (s, v) = api
        .call(
            Method::POST,
            &format!("/{ua}/token"),
            Some(json!({"accessRules": [{"type": "ip.geoip.country", "country": ["US"], "action": "allow"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    tokio::time::sleep(Duration::from_secs(3)).await; // `short` expires
    let unauthorized = probe(&format!("{base}/{RANDOM_UID}/manifest/video.m3u8")).await;
    for (what, t) in [
        ("tampered signature", &tampered),
        ("claims moved to another input", &moved_claims),
        ("another account's key", &other_account),
        ("a uid that does not exist", &unknown_uid),
        ("ip.src block", &blocked),
        ("ip.geoip.country (cannot be evaluated)", &geo),
        ("expired", &short),
    ] {
        for path in ["manifest/video.m3u8", "manifest/seg-1.m4s", "watch"] {
            let got = probe(&format!("{base}/{t}/{path}")).await;
            assert_eq!(got, unauthorized, "{what}: {path}");
        }
    }
    let (s, _, _) = get(&format!("{base}/{allowed}/manifest/video.m3u8"), None).await;
    assert_eq!(s, StatusCode::OK, "ip.src allow rule");

    // allowedOrigins: a browser on another site is refused; the allowed one
    // gets its own origin back, never `*`.
    let (s, h, body) = get(
        &format!("{t_base}/manifest/video.m3u8"),
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(h.get("access-control-allow-origin").is_none());
    assert!(!body.contains(&ua));
    let (s, h, mv) = get(
        &format!("{t_base}/manifest/video.m3u8"),
        Some("https://allowed.example"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://allowed.example");
    // Every playlist URI is relative, so players stay under the token.
    let media = uris(&mv);
    assert!(!media.is_empty(), "{mv}");
    let (_, _, mp) = get(&format!("{t_base}/manifest/{}", media[0]), None).await;
    for u in media.iter().chain(uris(&mp).iter()) {
        assert!(
            !u.starts_with('/') && !u.contains("://"),
            "absolute URI {u} in a playlist"
        );
    }
    assert!(
        !mv.contains(&ua) && !mp.contains(&ua),
        "playlists name the uid"
    );

    // A deleted key stops its tokens at once.
    let key3 = api.ok(Method::POST, "/keys", None).await;
    let by3 = platform_sign(&key3, &ua, now() + 600, None);
    assert_eq!(
        probe(&format!("{base}/{by3}/manifest/video.m3u8")).await.0,
        StatusCode::OK
    );
    api.ok(
        Method::DELETE,
        &format!("/keys/{}", key3["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        probe(&format!("{base}/{by3}/manifest/video.m3u8")).await,
        unauthorized
    );

    // ---- the players
    assert!(
        browser.wait(60.0).await.is_some(),
        "the browser did not finish"
    );
    let res: Value = serde_json::from_str(
        std::fs::read_to_string(&browser_out)
            .unwrap()
            .lines()
            .last()
            .unwrap_or("null"),
    )
    .unwrap();
    assert_eq!(
        res["ok"],
        json!(true),
        "hls.js on the signed watch page: {res}"
    );
    assert!(ff.wait(60.0).await.is_some(), "ffmpeg did not finish");
    let played = Hashes::read(&md5);
    let src = &common::source().hashes;
    // The publisher loops the clip: the reference is the clip three times.
    let thrice = |v: &Vec<String>| v.iter().chain(v).chain(v).cloned().collect::<Vec<_>>();
    common::assert_run(
        &played.video,
        &thrice(&src.video),
        120,
        "HLS video (platform token)",
    );
    common::assert_run(
        &played.audio,
        &thrice(&src.audio),
        150,
        "HLS audio (platform token)",
    );

    // ---- viewer counts nobody can forge
    let views_a = t_base.clone();
    let mut witness_seen = 0;
    for _ in 0..40 {
        witness_seen = live_viewers(&views_a).await;
        if witness_seen >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(witness_seen >= 1, "the witness viewer is counted");
    // Valid ids of B, to be used on C (another input's ids).
    let mut b_ids = Vec::new();
    for _ in 0..10 {
        b_ids.push(session_id(&http(), &format!("{base}/{ub}")).await);
    }
    // The replayed id of C must be older than the start window (60 s).
    let wait = Duration::from_secs(62).saturating_sub(stale_at.elapsed());
    tokio::time::sleep(wait).await;
    let cross_a = session_id(&http(), &t_base).await; // an id of A, used on C
    let attack = tokio::spawn({
        let c_base = c_base.clone();
        let stale = stale_c_id.clone();
        async move {
            let cl = http();
            let mut ok = 0;
            for i in 0..600u64 {
                let id = match i % 6 {
                    0 => format!("{:096x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
                    1 => format!("{:016x}", i * 7919),
                    2 => b_ids[(i as usize / 6) % b_ids.len()].clone(),
                    3 => cross_a.clone(),
                    4 => stale.clone(),
                    _ => {
                        // A valid id of C with its issue time moved.
                        let mut s = stale.clone().into_bytes();
                        s[15] = if s[15] == b'f' { b'e' } else { b'f' };
                        String::from_utf8(s).unwrap()
                    }
                };
                let r = cl
                    .get(format!("{c_base}/manifest/media.m3u8?s={id}"))
                    .send()
                    .await
                    .unwrap();
                if r.status().is_success() {
                    ok += 1;
                }
                let _ = r.bytes().await;
            }
            ok
        }
    });
    let mut max_c = 0;
    let mut max_a = 0;
    while !attack.is_finished() {
        max_c = max_c.max(live_viewers(&c_base).await);
        max_a = max_a.max(live_viewers(&views_a).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let served = attack.await.unwrap();
    assert_eq!(served, 600, "forged ids are still served the playlist");
    max_c = max_c.max(live_viewers(&c_base).await);
    assert_eq!(max_c, 0, "forged, cross-input or replayed ids were counted");
    assert!(max_a >= 1, "the witness stayed counted during the attack");

    // Per-address cap: 10 real sessions from one address, 4 counted.
    let other = http_from("127.0.0.2");
    let b_base = format!("{base}/{ub}");
    for _ in 0..10 {
        let id = session_id(&other, &b_base).await;
        let r = other
            .get(format!("{b_base}/manifest/media.m3u8?s={id}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    assert_eq!(
        live_viewers(&b_base).await,
        4,
        "sessions per address capped"
    );

    // minutesViewed: the witness's input accrues, the attacked one never.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = minutes(&api).await;
    assert!(
        m.get(&ua).copied().unwrap_or(0.0) > 0.0,
        "witness minutes: {m:?}"
    );
    assert_eq!(
        m.get(&uc).copied().unwrap_or(0.0),
        0.0,
        "attacked input: {m:?}"
    );

    witness.stop().await;
    for mut p in pubs {
        p.stop().await;
    }
}
