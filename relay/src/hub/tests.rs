use super::*;
use bytes::Bytes;

fn hub(window: Duration) -> Arc<Hub> {
    Hub::new(HubConfig {
        reconnect_window: window,
        ..HubConfig::default()
    })
}

fn vid(i: i64, key: bool) -> Frame {
    Frame::video(i * 3000, i * 3000, key, Bytes::from(vec![i as u8; 10]))
}

fn video_info() -> Option<VideoConfig> {
    Some(VideoConfig {
        avcc: Bytes::from_static(b"avcc"),
        width: 320,
        height: 240,
        codec: "avc1.42c01e".into(),
    })
}

async fn next_frame(s: &mut Subscriber) -> Frame {
    loop {
        match s.recv().await {
            Item::Frame(f) => return f,
            Item::Info(_) => continue,
            Item::End(e) => panic!("unexpected end {e:?}"),
        }
    }
}

#[tokio::test]
async fn late_joiner_starts_at_latest_keyframe_with_info() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    for i in 0..75 {
        p.push(vid(i, i % 30 == 0));
    }
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    match s.recv().await {
        Item::Info(info) => assert!(info.video.is_some()),
        other => panic!("expected info first, got {other:?}"),
    }
    let f = next_frame(&mut s).await;
    assert!(f.keyframe);
    assert_eq!(f.dts, 60 * 3000);
    for i in 61..75 {
        assert_eq!(next_frame(&mut s).await.dts, i * 3000);
    }
}

#[tokio::test]
async fn catch_up_compresses_the_backlog_and_keeps_order() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    for i in 0..50 {
        p.push(vid(i, i % 30 == 0));
        p.push(Frame::audio(i * 3000, Bytes::from_static(b"a")));
    }
    let mut s = hub.subscribe("s", SubscribeOptions { catch_up: true });
    let mut last = i64::MIN;
    let mut n = 0;
    let first = next_frame(&mut s).await;
    assert!(first.keyframe);
    assert!(first.dts >= 49 * 3000 - hub.config().catch_up_span);
    last = last.max(first.dts);
    while n < 19 {
        let f = next_frame(&mut s).await;
        assert_eq!(f.track, Track::Video, "backlog audio is skipped");
        assert!(f.dts >= last);
        last = f.dts;
        n += 1;
    }
    assert_eq!(last, 49 * 3000, "the backlog ends at the live edge");
    p.push(vid(50, false));
    assert_eq!(next_frame(&mut s).await.dts, 50 * 3000);
}

#[tokio::test]
async fn slow_subscriber_skips_to_keyframe_and_publisher_never_waits() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut slow = hub.subscribe("s", SubscribeOptions::default());
    assert!(next_frame(&mut slow).await.keyframe);
    // The publisher runs 10 GOPs ahead without the subscriber reading.
    for i in 1..300 {
        p.push(vid(i, i % 30 == 0));
    }
    let f = next_frame(&mut slow).await;
    assert!(f.keyframe, "resumes on a keyframe");
    assert_eq!(f.dts, 270 * 3000);
    let inner = hub.stream("s");
    let len = inner.inner.lock().entries.len();
    assert!(len <= 60, "buffer bounded to two GOPs, has {len}");
}

#[tokio::test]
async fn second_publisher_refused_and_end_reaches_subscribers() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    assert!(matches!(
        hub.publish("s"),
        Err(RelayError::AlreadyPublishing(_))
    ));
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    next_frame(&mut s).await;
    assert_eq!(hub.state("s"), StreamState::Live);
    drop(p);
    assert!(matches!(s.recv().await, Item::End(StreamEnd::Finished)));
    assert_eq!(hub.state("s"), StreamState::Idle);
    assert!(hub.publish("s").is_ok());
}

#[tokio::test]
async fn reconnect_within_window_continues_with_monotonic_time() {
    let hub = hub(Duration::from_secs(5));
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    for i in 0..10 {
        p.push(vid(i, i == 0));
    }
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    for _ in 0..10 {
        next_frame(&mut s).await;
    }
    drop(p);
    assert_eq!(hub.state("s"), StreamState::Reconnecting);
    let mut p2 = hub.publish("s").unwrap();
    p2.set_info(video_info(), None);
    p2.push(vid(0, true)); // the new publisher's clock restarts at zero
    let f = next_frame(&mut s).await;
    assert!(f.keyframe);
    assert!(f.dts > 9 * 3000, "rebased to continue, got {}", f.dts);
}

#[tokio::test(start_paused = true)]
async fn reconnect_window_expiry_ends_subscribers() {
    let hub = hub(Duration::from_secs(2));
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    next_frame(&mut s).await;
    drop(p);
    assert!(matches!(s.recv().await, Item::End(StreamEnd::Finished)));
    assert_eq!(hub.state("s"), StreamState::Idle);
}

#[tokio::test]
async fn kick_ends_everyone_at_once() {
    let hub = hub(Duration::from_secs(10));
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    next_frame(&mut s).await;
    hub.kick("s");
    assert!(p.is_kicked());
    p.kicked().await;
    assert!(matches!(s.recv().await, Item::End(StreamEnd::Kicked)));
}

#[tokio::test]
async fn info_change_is_delivered_before_the_frames_it_describes() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    next_frame(&mut s).await;
    let mut bigger = video_info().unwrap();
    bigger.width = 1280;
    p.set_info(Some(bigger), None);
    p.push(vid(1, true));
    match s.recv().await {
        Item::Info(i) => assert_eq!(i.video.as_ref().unwrap().width, 1280),
        other => panic!("expected new info, got {other:?}"),
    }
    assert_eq!(next_frame(&mut s).await.dts, 3000);
}

#[tokio::test]
async fn subscriber_waits_for_a_publisher() {
    let hub = hub(Duration::ZERO);
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    let h = hub.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut p = h.publish("s").unwrap();
        p.set_info(video_info(), None);
        p.push(Frame::audio(0, Bytes::new()));
        p.push(vid(1, true));
        p
    });
    let f = next_frame(&mut s).await;
    assert!(
        f.keyframe,
        "audio before the first keyframe is not delivered"
    );
    drop(task.await.unwrap());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the publisher does and however a subscriber lags, the
        /// subscriber sees non-decreasing video dts, starts on a keyframe,
        /// and the buffer stays within two GOPs or its byte bound.
        #[test]
        fn cursor_rules_hold(keys in proptest::collection::vec(any::<bool>(), 1..400),
                             reads in proptest::collection::vec(0usize..20, 1..100)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let hub = Hub::new(HubConfig { reconnect_window: Duration::ZERO, max_buffer_bytes: 2000, ..HubConfig::default() });
                let mut p = hub.publish("s").unwrap();
                p.set_info(video_info(), None);
                let mut s = hub.subscribe("s", SubscribeOptions::default());
                let mut last = i64::MIN;
                let mut started = false;
                let mut r = reads.iter().cycle();
                for (i, &k) in keys.iter().enumerate() {
                    p.push(vid(i as i64, k || i == 0));
                    for _ in 0..*r.next().unwrap() {
                        match s.poll() {
                            Ok(Item::Frame(f)) => {
                                if !started { prop_assert!(f.keyframe); started = true; }
                                prop_assert!(f.dts >= last);
                                last = f.dts;
                            }
                            Ok(Item::Info(_)) => {}
                            Ok(Item::End(e)) => prop_assert!(false, "end {:?}", e),
                            Err(_) => break,
                        }
                    }
                    let st = hub.stream("s");
                    let inner = st.inner.lock();
                    prop_assert!(inner.keyframes.len() <= 2);
                    prop_assert!(inner.bytes <= 2000);
                }
                Ok(())
            })?;
        }
    }
}

/// Whether a subscriber waiting in `recv` is woken within `ms`.
async fn woken_within(s: &mut Subscriber, ms: u64) -> Option<Item> {
    tokio::time::timeout(Duration::from_millis(ms), s.recv())
        .await
        .ok()
}

/// A video stream with one keyframe pushed, and a subscriber that took it.
async fn past_the_first_keyframe() -> (Arc<Hub>, Publisher, Subscriber) {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    p.set_info(video_info(), None);
    p.push(vid(0, true));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    assert!(matches!(s.recv().await, Item::Info(_)));
    assert_eq!(next_frame(&mut s).await.dts, 0);
    (hub, p, s)
}

#[tokio::test(start_paused = true)]
async fn audio_rides_with_the_next_video_frame() {
    let (_hub, mut p, mut s) = past_the_first_keyframe().await;
    // Audio alone wakes nobody while the hold lasts...
    tokio::time::advance(Duration::from_millis(50)).await;
    p.push(vid(1, false));
    assert_eq!(next_frame(&mut s).await.dts, 3000);
    let waiting = tokio::spawn(async move {
        let got = woken_within(&mut s, 30).await;
        (s, got)
    });
    tokio::task::yield_now().await;
    p.push(Frame::audio(3500, Bytes::from_static(b"a")));
    let (mut s, got) = waiting.await.unwrap();
    assert!(got.is_none(), "woken for audio alone: {got:?}");
    // ...but what a wake-up finds includes it, and the next video wakes.
    let waiting = tokio::spawn(async move {
        let a = woken_within(&mut s, 1).await;
        let v = woken_within(&mut s, 1).await;
        (a, v)
    });
    tokio::task::yield_now().await;
    p.push(vid(2, false));
    let (a, v) = waiting.await.unwrap();
    assert!(matches!(a, Some(Item::Frame(f)) if f.track == Track::Audio && f.dts == 3500));
    assert!(matches!(v, Some(Item::Frame(f)) if f.dts == 6000));
}

#[tokio::test(start_paused = true)]
async fn audio_waits_no_longer_than_the_hold() {
    let (_hub, mut p, mut s) = past_the_first_keyframe().await;
    // The video stops; audio goes on every 21 ms.
    let waiting = tokio::spawn(async move { woken_within(&mut s, 100).await });
    tokio::task::yield_now().await;
    let hold = HubConfig::default().audio_hold;
    let mut t = Duration::ZERO;
    while t < hold {
        tokio::time::advance(Duration::from_millis(21)).await;
        t += Duration::from_millis(21);
        p.push(Frame::audio(
            t.as_millis() as i64 * 90,
            Bytes::from_static(b"a"),
        ));
    }
    assert!(matches!(waiting.await.unwrap(), Some(Item::Frame(f)) if f.track == Track::Audio));
}

#[tokio::test]
async fn a_stream_without_video_wakes_for_audio() {
    let hub = hub(Duration::ZERO);
    let mut p = hub.publish("s").unwrap();
    // Audio-only streams start at the live edge.
    p.push(Frame::audio(0, Bytes::from_static(b"a")));
    let mut s = hub.subscribe("s", SubscribeOptions::default());
    assert!(s.try_recv().is_none());
    p.push(Frame::audio(960, Bytes::from_static(b"a")));
    assert!(matches!(s.recv().await, Item::Frame(f) if f.dts == 960));
    let waiting = tokio::spawn(async move { woken_within(&mut s, 1000).await });
    tokio::task::yield_now().await;
    p.push(Frame::audio(1920, Bytes::from_static(b"a")));
    assert!(matches!(waiting.await.unwrap(), Some(Item::Frame(f)) if f.dts == 1920));
}
