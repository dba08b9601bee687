//! A destination that accepts the publish and then stops reading, on real
//! sockets: the push notices within its write deadline and retries, while
//! the publisher never waits and another reader of the same stream gets
//! every frame.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use banyan_relay::{Frame, Hub, HubConfig, Item, SubscribeOptions, VideoConfig};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{run, PushConfig, PushState, PushStatus, Target};

/// Serve one RTMP publisher until it is publishing, then hold the socket
/// without reading. Returns once publishing was accepted.
async fn accept_then_stall(mut s: TcpStream) -> TcpStream {
    let mut hs = Handshake::new(PeerType::Server);
    let mut session: Option<ServerSession> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the push closed before publishing");
        let mut out = Vec::new();
        let mut pending = buf[..n].to_vec();
        if session.is_none() {
            match hs.process_bytes(&pending).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    s.write_all(&response_bytes).await.expect("write");
                    continue;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    let (ss, r) = ServerSession::new(ServerSessionConfig::new()).expect("session");
                    session = Some(ss);
                    for x in r {
                        if let ServerSessionResult::OutboundResponse(p) = x {
                            out.extend(p.bytes);
                        }
                    }
                    pending = remaining_bytes;
                }
            }
        }
        let ss = session.as_mut().expect("session");
        let mut results: VecDeque<_> = ss.handle_input(&pending).expect("input").into();
        let mut publishing = false;
        while let Some(r) = results.pop_front() {
            let id = match r {
                ServerSessionResult::OutboundResponse(p) => {
                    out.extend(p.bytes);
                    continue;
                }
                ServerSessionResult::RaisedEvent(ServerSessionEvent::ConnectionRequested {
                    request_id,
                    ..
                }) => request_id,
                ServerSessionResult::RaisedEvent(ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    ..
                }) => {
                    publishing = true;
                    request_id
                }
                _ => continue,
            };
            for r in ss.accept_request(id).expect("accept").into_iter().rev() {
                results.push_front(r);
            }
        }
        s.write_all(&out).await.expect("write");
        if publishing {
            return s;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_stops_reading_stalls_no_one() {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = sock.listen(4).expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            held.push(accept_then_stall(s).await);
        }
    });

    let hub = Hub::new(HubConfig::default());
    let status = Arc::new(PushStatus::default());
    let cancel = CancellationToken::new();
    let cfg = PushConfig {
        allow_private: true,
        write_timeout: Duration::from_millis(500),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
        ..PushConfig::default()
    };
    let target = Target::parse(&format!("rtmp://127.0.0.1:{port}/live"), "k").expect("target");
    let push = tokio::spawn(run(
        hub.clone(),
        "s".into(),
        target,
        cfg,
        status.clone(),
        cancel.clone(),
    ));
    let mut witness = hub.subscribe("s", SubscribeOptions::default());
    let mut publisher = hub.publish("s").expect("publish");
    publisher.set_info(
        Some(VideoConfig {
            avcc: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            width: 320,
            height: 240,
            codec: "avc1.64001f".into(),
        }),
        None,
    );
    // 64 KiB frames, a keyframe every tenth, 10 ms apart: far more than a
    // reader that stopped can take.
    let payload = Bytes::from(vec![0u8; 64 * 1024]);
    let frames = 400;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < frames {
            match tokio::time::timeout(Duration::from_secs(10), witness.recv()).await {
                Ok(Item::Frame(_)) => got += 1,
                Ok(Item::Info(_)) => {}
                Ok(Item::End(_)) | Err(_) => break,
            }
        }
        got
    });
    let mut saw_stall = false;
    for i in 0..frames {
        let dts = i as i64 * 900;
        publisher.push(Frame::video(dts, dts, i % 10 == 0, payload.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        if status.last_error().is_some_and(|e| e.contains("stalled")) {
            saw_stall = true;
        }
    }
    assert_eq!(
        reader.await.expect("reader"),
        frames,
        "the other reader lost frames"
    );
    assert!(
        saw_stall,
        "the stalled destination was not noticed: {:?} {:?}",
        status.state(),
        status.last_error()
    );
    assert_ne!(
        status.state(),
        PushState::Idle,
        "it keeps retrying while live"
    );
    cancel.cancel();
    push.await.expect("push task");
    assert_eq!(status.state(), PushState::Idle);
    server.abort();
}
