//! Transport behaviour between real nodes on loopback: requests, pooling, identity checks and
//! hostile input (garbage datagrams, wrong ALPN, wrong peer id, oversized/unknown/malformed frames).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use butter::behaviour::{self, BehaviourError};
use butter::identity::Identity;
use butter::transport::{DialError, RequestError};
use butter::{Config, Node, NodeBuilder};
use butter_proto::wire::{self, ErrorCode, Request, Response};
use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;

async fn node() -> Node {
    node_with(Config::for_tests()).await
}

async fn node_with(config: Config) -> Node {
    NodeBuilder::new(config)
        .behaviour(
            "ohce",
            behaviour::from_fn(|_ctx, body: Bytes| async move {
                let mut v = body.to_vec();
                v.reverse();
                Ok(Bytes::from(v))
            }),
        )
        .behaviour(
            "fail",
            behaviour::from_fn(|_ctx, _body| async move { Err(BehaviourError::new("on purpose")) }),
        )
        .behaviour(
            "boom",
            behaviour::from_fn(|_ctx, _body| async move { panic!("handler panics") }),
        )
        .build()
        .await
        .expect("node starts")
}

fn metric(node: &Node, line_prefix: &str) -> f64 {
    node.metrics()
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn assert_serves(server: &Node) {
    let client = node().await;
    let id = client
        .connect(server.local_addr().unwrap())
        .await
        .expect("connect after attack");
    let reply = client
        .request(id, "ohce", "still here")
        .await
        .expect("valid request after attack");
    assert_eq!(&reply[..], b"ereh llits");
    client.shutdown(Duration::from_secs(1)).await;
}

/// A raw QUIC client speaking butter's TLS (valid identity), for sending hand-made frames.
async fn raw_connection(
    server: SocketAddr,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let identity = Identity::generate().unwrap();
    let mut tls = butter::tls::client_config(&identity, None).unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(cfg);
    ep.connect(server, butter::tls::ANY_PEER).unwrap().await
}

async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Response {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The node may stop reading early (oversized input): the reply still comes.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let reply = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .expect("reply in time")
        .expect("reply readable");
    wire::decode_frame(&reply, 1 << 20).expect("reply is a frame")
}

fn error_code(resp: Response) -> ErrorCode {
    match resp {
        Response::Error { code, .. } => code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test]
async fn request_round_trip_reuses_one_connection() {
    let a = node().await;
    let b = node().await;
    let id = a.connect(b.local_addr().unwrap()).await.unwrap();
    assert_eq!(id, b.id());
    for i in 0..20 {
        let body = format!("hello {i}");
        let reply = a.request(id, "ohce", body.clone()).await.unwrap();
        assert_eq!(reply.to_vec(), body.bytes().rev().collect::<Vec<_>>());
    }
    assert_eq!(
        metric(&a, "butter_connections_open"),
        1.0,
        "one pooled connection"
    );
    assert!(
        metric(
            &a,
            "butter_requests_total{direction=\"outbound\",kind=\"ohce\",outcome=\"ok\"}"
        ) >= 20.0
    );
    assert!(
        metric(
            &b,
            "butter_requests_total{direction=\"inbound\",kind=\"ohce\",outcome=\"ok\"}"
        ) >= 20.0
    );
    // Both sides know each other after the hello exchange.
    assert!(a.peers().iter().any(|p| p.id == b.id().to_string()));
    assert!(b.peers().iter().any(|p| p.id == a.id().to_string()));
}

#[tokio::test]
async fn handler_errors_and_unknown_names_are_replies_not_crashes() {
    let a = node().await;
    let b = node().await;
    let id = a.connect(b.local_addr().unwrap()).await.unwrap();
    let err = a.request(id, "nope", "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Remote {
                code: ErrorCode::UnknownName,
                ..
            }
        ),
        "{err}"
    );
    let err = a.request(id, "fail", "x").await.unwrap_err();
    assert!(
        matches!(
            err,
            RequestError::Remote {
                code: ErrorCode::HandlerFailed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("on purpose"));
    let err = a.request(id, "boom", "x").await.unwrap_err();
    assert!(
        !matches!(err, RequestError::Timeout(_)),
        "a panicking handler must not hang the caller: {err}"
    );
    assert_serves(&b).await;
}

#[tokio::test]
async fn dialling_with_the_wrong_peer_id_fails_clearly() {
    let a = node().await;
    let b = node().await;
    let impostor_id = Identity::generate().unwrap().peer_id();
    let conn = {
        // Reach the transport through a fresh connection attempt that claims another id.
        let t = a.clone();
        t.connect_expecting(b.local_addr().unwrap(), impostor_id)
            .await
    };
    match conn {
        Err(RequestError::Dial(DialError::WrongPeer { expected, .. })) => {
            assert_eq!(expected, impostor_id)
        }
        other => panic!("expected WrongPeer, got {other:?}"),
    }
    assert!(metric(&a, "butter_rejected_total{reason=\"peer_id_mismatch\"}") >= 1.0);
    assert_serves(&b).await;
}

#[tokio::test]
async fn garbage_datagrams_do_not_hurt_and_are_counted() {
    let b = node().await;
    // Real QUIC traffic is never counted as garbage.
    assert_serves(&b).await;
    assert_eq!(
        b.metrics().rejected("not_quic"),
        0,
        "QUIC counted as garbage"
    );
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u32 = 12345;
    for i in 0..300 {
        let len = 1 + (i * 37) % 1400;
        let buf: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        sock.send_to(&buf, b.local_addr().unwrap()).await.unwrap();
    }
    assert_serves(&b).await;
    // About three quarters of random datagrams cannot be QUIC (too short, the fixed bit clear,
    // or a long header with an unknown version): those are counted; the rest, shaped like a
    // short-header packet, are dropped by quinn uncounted.
    let counted = b.metrics().rejected("not_quic");
    eprintln!("{counted} of 300 random datagrams counted as not QUIC");
    assert!(
        (180..=270).contains(&counted),
        "{counted} of 300 random datagrams counted as not QUIC"
    );
}

#[tokio::test]
async fn wrong_alpn_is_refused_and_counted() {
    let b = node().await;
    let res = raw_connection(b.local_addr().unwrap(), b"h3").await;
    assert!(res.is_err(), "a client without butter/1 must not connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = b.metrics().encode();
    assert!(
        metric(
            &b,
            "butter_handshakes_total{direction=\"inbound\",outcome=\"alpn\"}"
        ) >= 1.0,
        "{}",
        text.lines()
            .filter(|l| l.starts_with("butter_handshakes"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_serves(&b).await;
}

#[tokio::test]
async fn bad_frames_get_error_replies_and_are_counted() {
    let b = node().await;
    let conn = raw_connection(b.local_addr().unwrap(), wire::ALPN)
        .await
        .expect("authenticated connection");

    // Oversized: the length prefix alone announces 4 GiB.
    let code = error_code(raw_exchange(&conn, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await);
    assert_eq!(code, ErrorCode::TooLarge);
    // Unknown message type: version 1, variant 100.
    let code = error_code(raw_exchange(&conn, &[0, 0, 0, 2, wire::PROTOCOL_VERSION, 100]).await);
    assert_eq!(code, ErrorCode::UnknownMessage);
    // Malformed: a Hello (variant 2) cut short.
    let code =
        error_code(raw_exchange(&conn, &[0, 0, 0, 3, wire::PROTOCOL_VERSION, 2, 0xff]).await);
    assert_eq!(code, ErrorCode::Malformed);
    // Unsupported version.
    let code = error_code(raw_exchange(&conn, &[0, 0, 0, 2, 9, 0]).await);
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    // Body above the limit.
    let mut big = wire::encode_frame(
        &Request::Behaviour {
            name: "ohce".into(),
        },
        1024,
    )
    .unwrap();
    big.extend(vec![0u8; b.config().limits.max_body + 10]);
    let code = error_code(raw_exchange(&conn, &big).await);
    assert_eq!(code, ErrorCode::TooLarge);

    for reason in [
        "too_large",
        "unknown_message",
        "malformed",
        "unsupported_version",
    ] {
        assert!(
            metric(&b, &format!("butter_rejected_total{{reason=\"{reason}\"}}")) >= 1.0,
            "{reason} not counted"
        );
    }
    // The same connection still carries valid requests.
    let frame = wire::encode_frame(&Request::Ping { seq: 42 }, 1024).unwrap();
    assert_eq!(raw_exchange(&conn, &frame).await, Response::Ack { seq: 42 });
    assert_serves(&b).await;
}

#[tokio::test]
async fn stalled_request_times_out_and_node_keeps_serving() {
    let mut cfg = Config::for_tests();
    cfg.limits.request_timeout = Duration::from_millis(500);
    let b = node_with(cfg).await;
    let conn = raw_connection(b.local_addr().unwrap(), wire::ALPN)
        .await
        .unwrap();
    // Open a stream, send half a prefix and stall.
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0, 0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(metric(&b, "butter_rejected_total{reason=\"read_timeout\"}") >= 1.0);
    assert_serves(&b).await;
}

#[tokio::test]
async fn restarted_node_keeps_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests();
    cfg.data_dir = Some(dir.path().to_path_buf());
    let first = node_with(cfg.clone()).await;
    let id = first.id();
    first.shutdown(Duration::from_secs(1)).await;
    let second = node_with(cfg).await;
    assert_eq!(second.id(), id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_is_limited_then_banned_while_honest_peers_are_served() {
    let mut cfg = Config::for_tests();
    cfg.limits.peer_rate = 200.0;
    cfg.limits.peer_burst = 50.0;
    cfg.limits.ban_after = 200;
    cfg.limits.ban_for = Duration::from_secs(60);
    let target = node_with(cfg).await;
    let addr = target.local_addr().unwrap();
    let flooder = node().await;
    let honest = node().await;
    let fid = flooder.connect(addr).await.unwrap();
    let hid = honest.connect(addr).await.unwrap();

    let f = flooder.clone();
    let flood = tokio::spawn(async move {
        let mut busy = 0u32;
        let mut other = 0u32;
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    let (mut busy, mut other) = (0u32, 0u32);
                    for _ in 0..300 {
                        match f.request(fid, "ohce", "flood").await {
                            Ok(_) => {}
                            Err(RequestError::Remote {
                                code: ErrorCode::Busy,
                                ..
                            }) => busy += 1,
                            Err(_) => {
                                // Banned: the connection is gone and redials are refused.
                                other += 1;
                                break;
                            }
                        }
                    }
                    (busy, other)
                })
            })
            .collect();
        for t in tasks {
            let (b, o) = t.await.unwrap();
            busy += b;
            other += o;
        }
        (busy, other)
    });
    // The honest peer makes modest requests throughout the attack: every one is answered.
    for i in 0..50 {
        let body = format!("honest {i}");
        let reply = honest
            .request(hid, "ohce", body.clone())
            .await
            .expect("honest request served");
        assert_eq!(reply.to_vec(), body.bytes().rev().collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (busy, other) = flood.await.unwrap();
    assert!(busy > 0, "the flooder was never limited");
    assert!(metric(&target, "butter_rejected_total{reason=\"rate_limited\"}") >= 1.0);
    assert!(
        metric(&target, "butter_rejected_total{reason=\"banned\"}") >= 1.0,
        "busy {busy}, other {other}"
    );
    // Banned: its reconnects are refused for the ban's duration.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(flooder.request(fid, "ohce", "again").await.is_err());
    assert_serves(&target).await;
}
