//! Unit tests of the RTMP push core, against rml_rtmp's server in memory.
use super::*;

#[test]
fn clock_starts_near_zero_and_keeps_video_increasing() {
    let mut c = Clock::default();
    let v = |dts| Frame::video(dts, dts, false, Bytes::new());
    assert_eq!(c.stamp(&v(900_000)), 1000);
    // Audio a little older than the first keyframe stays positive.
    assert_eq!(c.stamp(&Frame::audio(900_000 - 90 * 20, Bytes::new())), 980);
    // Video frames closer than a millisecond still increase.
    assert_eq!(c.stamp(&v(900_010)), 1001);
    assert_eq!(c.stamp(&v(900_000 + 90 * 33)), 1033);
    assert_eq!(c.now(), 1033);
}

use banyan_relay::{AudioConfig, VideoConfig};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};

/// A server in memory (rml_rtmp's own), accepting what it is asked.
struct Server {
    hs: Handshake,
    session: Option<ServerSession>,
    seen: Vec<ServerSessionEvent>,
}

impl Server {
    fn input(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut pending = bytes.to_vec();
        if self.session.is_none() {
            match self.hs.process_bytes(bytes).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    out.extend(response_bytes);
                    return;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    out.extend(response_bytes);
                    let (s, r) = ServerSession::new(ServerSessionConfig::new()).unwrap();
                    self.session = Some(s);
                    self.results(r, out);
                    pending = remaining_bytes;
                }
            }
        }
        let r = self
            .session
            .as_mut()
            .unwrap()
            .handle_input(&pending)
            .unwrap();
        self.results(r, out);
    }

    fn results(&mut self, results: Vec<ServerSessionResult>, out: &mut Vec<u8>) {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => out.extend(p.bytes),
                ServerSessionResult::RaisedEvent(e) => {
                    let id = match &e {
                        ServerSessionEvent::ConnectionRequested { request_id, .. }
                        | ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                            Some(*request_id)
                        }
                        _ => None,
                    };
                    self.seen.push(e);
                    if let Some(id) = id {
                        let r = self.session.as_mut().unwrap().accept_request(id).unwrap();
                        self.results(r, out);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }
}

#[test]
fn publishes_configuration_first_then_frames() {
    let mut server = Server {
        hs: Handshake::new(PeerType::Server),
        session: None,
        seen: Vec::new(),
    };
    let mut to_server = BytesMut::new();
    let mut core = PushCore::new("live", "key1", "rtmp://h:1935/live", &mut to_server).unwrap();
    for _ in 0..20 {
        if core.publishing() {
            break;
        }
        let mut to_client = Vec::new();
        server.input(&to_server.split(), &mut to_client);
        core.input(&to_client, &mut to_server).unwrap();
    }
    assert!(core.publishing(), "the server accepted the publish");
    let info = MediaInfo {
        version: 1,
        video: Some(VideoConfig {
            avcc: Bytes::from_static(&[1, 0x64, 0, 0x1f]),
            width: 320,
            height: 240,
            codec: "avc1.64001f".into(),
        }),
        audio: Some(AudioConfig {
            asc: Bytes::from_static(&[0x12, 0x10]),
            sample_rate: 44100,
            channels: 2,
            codec: "mp4a.40.2".into(),
        }),
    };
    // A frame before the configuration is not sent.
    let early = Frame::video(0, 0, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
    assert!(!core
        .item(Item::Frame(early.clone()), &mut to_server)
        .unwrap());
    assert!(!core
        .item(Item::Info(Arc::new(info)), &mut to_server)
        .unwrap());
    assert!(!core.item(Item::Frame(early), &mut to_server).unwrap());
    let audio = Frame::audio(900, Bytes::from_static(&[0x21, 0x10]));
    assert!(!core.item(Item::Frame(audio), &mut to_server).unwrap());
    assert!(core
        .item(Item::End(banyan_relay::StreamEnd::Finished), &mut to_server)
        .unwrap());
    let mut sink = Vec::new();
    server.input(&to_server.split(), &mut sink);
    let media: Vec<(bool, Vec<u8>)> = server
        .seen
        .iter()
        .filter_map(|e| match e {
            ServerSessionEvent::VideoDataReceived {
                data, stream_key, ..
            } => {
                assert_eq!(stream_key, "key1");
                Some((true, data.to_vec()))
            }
            ServerSessionEvent::AudioDataReceived { data, .. } => Some((false, data.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(
        media,
        vec![
            (true, vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]),
            (false, vec![0xAF, 0, 0x12, 0x10]),
            (true, vec![0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
            (false, vec![0xAF, 1, 0x21, 0x10]),
        ]
    );
    assert!(server
        .seen
        .iter()
        .any(|e| matches!(e, ServerSessionEvent::StreamMetadataChanged { .. })));
}

#[test]
fn garbage_from_the_server_fails_the_session_without_panic() {
    let mut out = BytesMut::new();
    let mut core = PushCore::new("live", "k", "rtmp://h/live", &mut out).unwrap();
    let mut junk = vec![3u8];
    junk.extend(std::iter::repeat_n(0xff, 1536 * 2 + 64));
    let _ = core.input(&junk, &mut out);
    let _ = core.input(&[0xff; 300], &mut out);
    assert!(core
        .item(Item::End(banyan_relay::StreamEnd::Kicked), &mut out)
        .is_err());
}

#[test]
fn the_fuzz_entry_survives_its_seeds() {
    for seed in [
        &b""[..],
        &[0],
        &[1],
        &[1, 5, 2, 0, 0, 0, 0, 0, 0],
        &[0, 63, 3, 1, 2, 3],
        &[
            1, 12, 2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff,
        ],
    ] {
        fuzz_server_bytes(seed);
    }
    let mut big = vec![1u8];
    big.extend((0..4000u32).map(|i| (i * 7 % 251) as u8));
    fuzz_server_bytes(&big);
}

#[test]
fn tags_carry_the_flv_headers_and_skip_captions() {
    let f = Frame::video(0, 0, true, Bytes::from_static(&[1, 2]));
    assert_eq!(&tag(&f).unwrap()[..], &[0x17, 1, 0, 0, 0, 1, 2]);
    let a = Frame::audio(0, Bytes::from_static(&[9]));
    assert_eq!(&tag(&a).unwrap()[..], &[0xAF, 1, 9]);
    let c = Frame {
        track: Track::Captions,
        ..a
    };
    assert!(tag(&c).is_none());
}
