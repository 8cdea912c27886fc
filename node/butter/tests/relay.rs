//! Relayed paths on real nodes over loopback QUIC. Private nodes simulate a NAT's inbound filter
//! (a connection from an address they never sent to is dropped), so two private nodes can only
//! meet through a public relay, or through a hole punched with its help.
//!
//! The same behaviours behind real NATs (nftables masquerade, endpoint-independent and symmetric)
//! are in the netns tier (`tests/netns`, `relay` tests).

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use butter::config::{Reachability, RelayConfig, RelayFault};
use butter::{Config, Node, NodeBuilder, PeerId};
use bytes::Bytes;

async fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f()
}

fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

async fn relay_node(relay: RelayConfig) -> Node {
    logs();
    let mut cfg = Config::for_tests();
    cfg.site = "public".into();
    cfg.relay = RelayConfig {
        reachability: Reachability::Public,
        ..relay
    };
    NodeBuilder::new(cfg).build().await.unwrap()
}

/// A private node behind a simulated NAT at `site`, with an `echo` behaviour counting its calls,
/// once it has `relay` as its home relay and the relay knows it.
async fn private_node(site: &str, relay: &Node, punch: bool) -> (Node, Arc<AtomicUsize>) {
    let (node, calls) = private_node_unchecked(site, relay, punch).await;
    let r = relay.id();
    assert!(
        wait(Duration::from_secs(15), || node.home_relay() == Some(r)).await,
        "{site}: no home relay after 15 s"
    );
    // The relay has our new record (it names the relay) before anyone else joins.
    assert!(
        wait(Duration::from_secs(10), || relay
            .peers()
            .iter()
            .any(
                |p| p.id == node.id().to_string() && !p.relays.is_empty()
            ))
        .await,
        "{site}: the relay never learned our relay hint"
    );
    (node, calls)
}

/// The node of [`private_node`], as soon as it runs.
async fn private_node_unchecked(site: &str, relay: &Node, punch: bool) -> (Node, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let mut cfg = Config::for_tests();
    cfg.site = site.into();
    cfg.bootstrap = vec![relay.local_addr().unwrap().to_string()];
    cfg.relay = RelayConfig {
        reachability: Reachability::Private,
        simulate_nat: true,
        punch,
        ..RelayConfig::default()
    };
    let node = NodeBuilder::new(cfg)
        .behaviour(
            "echo",
            butter::behaviour::from_fn(move |_ctx, body: Bytes| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(body)
                }
            }),
        )
        .build()
        .await
        .unwrap();
    (node, calls)
}

/// Waits until `from` knows `to` (learned from the relay's samples), then calls its echo.
async fn call(from: &Node, to: PeerId, body: &'static [u8]) -> Result<Bytes, String> {
    let known = wait(Duration::from_secs(15), || {
        from.peers().iter().any(|p| p.id == to.to_string())
    })
    .await;
    let reply = from.request(to, "echo", Bytes::from_static(body)).await;
    match reply {
        Ok(b) => Ok(b),
        Err(e) => Err(format!(
            "{e} (known: {known}, path: {:?}, peers: {:?})",
            from.path_to(&to),
            from.peers()
        )),
    }
}

fn metric(node: &Node, series: &str) -> u64 {
    let text = node.metrics().encode();
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_nodes_meet_through_a_relay_then_punch_a_direct_path() {
    let relay = relay_node(RelayConfig::default()).await;
    let (a, a_calls) = private_node("lan-a", &relay, true).await;
    let (b, _) = private_node("lan-b", &relay, true).await;
    let reply = call(&b, a.id(), b"over the relay").await.unwrap();
    assert_eq!(&reply[..], b"over the relay");
    assert!(
        wait(Duration::from_secs(15), || b.path_to(&a.id())
            == Some("punched"))
        .await,
        "no direct path after 15 s: {:?}",
        b.path_to(&a.id())
    );
    let reply = b
        .request(a.id(), "echo", Bytes::from_static(b"direct"))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"direct");
    assert_eq!(a_calls.load(Ordering::SeqCst), 2);
    assert!(metric(&b, "butter_holepunch_total{outcome=\"success\"}") >= 1);
    assert_eq!(metric(&b, "butter_holepunch_total{outcome=\"failed\"}"), 0);
    let relayed = metric(&relay, "butter_relayed_bytes_total");
    assert!(
        relayed > 1000,
        "the relay carried the handshake: {relayed} B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_punch_the_relayed_path_carries_everything() {
    let relay = relay_node(RelayConfig::default()).await;
    let (a, a_calls) = private_node("lan-a", &relay, false).await;
    let (b, _) = private_node("lan-b", &relay, false).await;
    for i in 0..5 {
        let reply = call(&b, a.id(), b"relayed").await.unwrap();
        assert_eq!(&reply[..], b"relayed", "call {i}");
    }
    assert_eq!(b.path_to(&a.id()), Some("relayed"));
    assert_eq!(a.path_to(&b.id()), Some("relayed"));
    assert_eq!(a_calls.load(Ordering::SeqCst), 5);
    // A large body crosses too (many packets, flow control over the link).
    let big = vec![7u8; 300_000];
    let reply = b.request(a.id(), "echo", big.clone()).await.unwrap();
    assert_eq!(reply.len(), big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_at_its_limit_refuses_clearly_and_keeps_serving_its_own() {
    let relay = relay_node(RelayConfig {
        max_sessions: 1,
        ..RelayConfig::default()
    })
    .await;
    let (a, _) = private_node("lan-a", &relay, false).await;
    let (b, _) = private_node("lan-b", &relay, false).await;
    let (c, _) = private_node("lan-c", &relay, false).await;
    call(&b, a.id(), b"first session").await.unwrap();
    // The relay carries one session (a-b); c's attempt to reach a is refused, quickly and clearly.
    let started = Instant::now();
    let err = call(&c, a.id(), b"second session").await.unwrap_err();
    assert!(
        err.contains("limit of 1 relayed sessions"),
        "unclear refusal: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(
        relay
            .metrics()
            .encode()
            .contains("butter_relay_refused_total{reason=\"too_many_sessions\",side=\"relay\"}"),
        "refusal counted"
    );
    // The existing session and the relay's own traffic are unaffected.
    call(&b, a.id(), b"still flowing").await.unwrap();
    for n in [&a, &b, &c] {
        let reply = relay
            .request(n.id(), "echo", Bytes::from_static(b"own"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"own");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampering_relay_is_detected_and_nothing_reaches_the_peer() {
    let relay = relay_node(RelayConfig {
        fault: Some(RelayFault::Tamper),
        ..RelayConfig::default()
    })
    .await;
    let (a, a_calls) = private_node("lan-a", &relay, false).await;
    let (b, _) = private_node("lan-b", &relay, false).await;
    let err = call(&b, a.id(), b"tampered").await.unwrap_err();
    assert!(
        err.contains("relay") && err.contains("altered"),
        "the error names the relay path: {err}"
    );
    assert_eq!(a_calls.load(Ordering::SeqCst), 0, "no request got through");
    assert_eq!(b.path_to(&a.id()), None, "no connection was established");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaying_relay_is_detected_and_refused() {
    let relay = relay_node(RelayConfig {
        fault: Some(RelayFault::Replay),
        ..RelayConfig::default()
    })
    .await;
    let (a, a_calls) = private_node("lan-a", &relay, false).await;
    // b learns a from the relay; the first relayed datagrams between them (membership probes or a
    // call) come twice, and whoever receives them catches the relay.
    let (b, _) = private_node_unchecked("lan-b", &relay, false).await;
    let replay = "butter_relay_refused_total{reason=\"replay\",side=\"peer\"}";
    let caught = |n: &Node| {
        n.metrics()
            .encode()
            .lines()
            .any(|l| l.starts_with(replay) && !l.ends_with(" 0"))
    };
    let _ = b
        .request(a.id(), "echo", Bytes::from_static(b"replayed"))
        .await;
    // The receiver of the first duplicate catches it and from then on drops everything the relay
    // brings from the other side and sends nothing through it (so the sender may never see a
    // duplicate itself: it just finds the relayed path dead).
    assert!(
        wait(Duration::from_secs(15), || caught(&a) || caught(&b)).await,
        "nobody caught the replay"
    );
    for (name, n) in [("a", &a), ("b", &b)] {
        if caught(n) {
            // A relay caught replaying is dropped as home relay and not chosen again.
            assert!(
                wait(Duration::from_secs(5), || n.home_relay().is_none()).await,
                "{name} caught the relay and still uses it"
            );
        }
    }
    // From now on no call crosses the relay: it fails, or finds another path (the simulated
    // NATs let two nodes dialling each other at once meet directly).
    let calls = a_calls.load(Ordering::SeqCst);
    match b
        .request(a.id(), "echo", Bytes::from_static(b"after"))
        .await
    {
        Ok(_) => assert_ne!(b.path_to(&a.id()), Some("relayed")),
        Err(e) => assert_eq!(
            a_calls.load(Ordering::SeqCst),
            calls,
            "a failed call ran: {e}"
        ),
    }
    // The relay's own direct traffic is unaffected.
    for n in [&a, &b] {
        let reply = relay
            .request(n.id(), "echo", Bytes::from_static(b"own"))
            .await
            .unwrap();
        assert_eq!(&reply[..], b"own");
    }
}
