use super::*;
use banyan_relay::{AudioConfig, Track, VideoConfig};
use bytes::{BufMut, Bytes};

use crate::ts::{retime, PACKET};

fn hub() -> Arc<Hub> {
    Hub::new(HubConfig {
        reconnect_window: Duration::ZERO,
        ..HubConfig::default()
    })
}

fn video(i: i64, key: bool) -> Frame {
    let mut p = BytesMut::new();
    p.put_u32(1000);
    p.put_u8(if key { 0x65 } else { 0x41 });
    p.put_bytes(i as u8, 999);
    Frame::video(i * 3000, i * 3000, key, p.freeze())
}

fn publisher(hub: &Arc<Hub>) -> Publisher {
    let mut p = hub.publish("s").unwrap();
    p.set_info(
        Some(VideoConfig {
            avcc: Bytes::from_static(&[
                1, 0x42, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0, 0x1e, 1, 0, 2, 0x68, 0xce,
            ]),
            width: 320,
            height: 240,
            codec: "avc1.42001e".into(),
        }),
        Some(AudioConfig {
            asc: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44100,
            channels: 2,
            codec: "mp4a.40.2".into(),
        }),
    );
    p
}

async fn next_frame(sub: &mut Subscriber) -> Frame {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .expect("an item within 5 s");
        match item {
            Item::Frame(f) => return f,
            Item::Info(_) => {}
            Item::End(e) => panic!("ended: {e:?}"),
        }
    }
}

fn pid(p: &[u8]) -> u16 {
    u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])
}

#[tokio::test]
async fn viewers_share_one_mux_and_the_same_bytes() {
    let hub = hub();
    let fan = SrtFanout::new(hub.clone());
    let stop = CancellationToken::new();
    let mut p = publisher(&hub);
    let mut a = fan.attach("s", &stop);
    let mut b = fan.attach("s", &stop);
    assert_eq!(fan.packetizers(), 1);
    for i in 0..30 {
        p.push(video(i, i % 10 == 0));
        p.push(Frame::audio(i * 3000, Bytes::from_static(&[1, 2, 3, 4])));
    }
    let mut seen = 0;
    loop {
        let (fa, fb) = (next_frame(&mut a).await, next_frame(&mut b).await);
        assert_eq!(fa.payload.len() % PACKET, 0);
        assert_eq!((fa.track, fa.dts, fa.pts), (fb.track, fb.dts, fb.pts));
        // One allocation for both viewers: the same bytes, not equal copies.
        assert_eq!(fa.payload.as_ptr(), fb.payload.as_ptr());
        assert_eq!(fa.payload.len(), fb.payload.len());
        seen += 1;
        if fa.track == Track::Video && fa.dts == 29 * 3000 {
            break;
        }
    }
    assert!(seen >= 10, "{seen}");
}

#[tokio::test]
async fn a_joiner_starts_at_a_keyframe_with_psi_and_its_backlog_retimed() {
    let hub = hub();
    let fan = SrtFanout::new(hub.clone());
    let stop = CancellationToken::new();
    let mut p = publisher(&hub);
    for i in 0..15 {
        p.push(video(i, i % 10 == 0));
    }
    let mut a = fan.attach("s", &stop);
    let first = next_frame(&mut a).await;
    assert!(first.keyframe && first.track == Track::Video);
    assert_eq!(pid(&first.payload), 0, "PAT first");
    assert_eq!(
        pid(&first.payload[PACKET..]),
        crate::ts::PMT_PID,
        "then PMT"
    );
    // The backlog (frames 10..14) is compressed: its times differ from the
    // muxed ones, and the retimed copy carries the compressed ones.
    assert!(!retime::has_times(&first.payload, first.pts, first.dts));
    let r = retime::retime(&first.payload, first.pts, first.dts);
    assert!(retime::has_times(&r, first.pts, first.dts));
    for _ in 11..15 {
        next_frame(&mut a).await;
    }
    // Live frames go out as muxed.
    p.push(video(15, false));
    let live = next_frame(&mut a).await;
    assert_eq!(live.dts, 45_000);
    assert!(retime::has_times(&live.payload, live.pts, live.dts));
}

#[tokio::test]
async fn stream_end_and_kick_reach_the_viewers_and_stop_the_packetizer() {
    let hub = hub();
    let fan = SrtFanout::new(hub.clone());
    let stop = CancellationToken::new();
    let mut p = publisher(&hub);
    p.push(video(0, true));
    let mut a = fan.attach("s", &stop);
    next_frame(&mut a).await;
    drop(p);
    let end = tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .unwrap();
    assert!(matches!(end, Item::End(StreamEnd::Finished)), "{end:?}");
    drop(a);
    for _ in 0..50 {
        if fan.packetizers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fan.packetizers(), 0);

    // A new session gets a new packetizer; a kick ends it.
    let mut p = publisher(&hub);
    p.push(video(0, true));
    let mut b = fan.attach("s", &stop);
    next_frame(&mut b).await;
    hub.kick("s");
    let end = tokio::time::timeout(Duration::from_secs(5), b.recv())
        .await
        .unwrap();
    assert!(matches!(end, Item::End(StreamEnd::Kicked)), "{end:?}");
}

#[tokio::test]
async fn the_packetizer_stops_when_its_last_viewer_leaves() {
    let hub = hub();
    let fan = SrtFanout::new(hub.clone());
    let stop = CancellationToken::new();
    let mut p = publisher(&hub);
    p.push(video(0, true));
    let a = fan.attach("s", &stop);
    assert_eq!(fan.packetizers(), 1);
    assert_eq!(
        hub.subscribers("s"),
        1,
        "one source subscriber: the packetizer"
    );
    drop(a);
    // It looks once a second.
    for _ in 0..100 {
        if fan.packetizers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fan.packetizers(), 0);
    assert_eq!(hub.subscribers("s"), 0);
    // The next viewer starts a new one.
    let mut b = fan.attach("s", &stop);
    assert_eq!(fan.packetizers(), 1);
    p.push(video(1, true));
    assert!(next_frame(&mut b).await.keyframe);
}

#[tokio::test]
async fn a_slow_viewer_skips_to_a_keyframe_while_another_keeps_up() {
    let hub = hub();
    let fan = SrtFanout::new(hub.clone());
    let stop = CancellationToken::new();
    let mut p = publisher(&hub);
    p.push(video(0, true));
    let mut fast = fan.attach("s", &stop);
    let mut slow = fan.attach("s", &stop);
    assert_eq!(next_frame(&mut fast).await.dts, 0);
    assert_eq!(next_frame(&mut slow).await.dts, 0);
    // Three seconds of media while `slow` reads nothing.
    for i in 1..90 {
        p.push(video(i, i % 30 == 0));
        assert_eq!(next_frame(&mut fast).await.dts, i * 3000);
    }
    let f = next_frame(&mut slow).await;
    assert!(
        f.keyframe && f.dts >= 30 * 3000,
        "skipped to a newer keyframe: {}",
        f.dts
    );
}
