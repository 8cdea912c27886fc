//! Private network mode: only nodes whose certificate the network CA signed can connect, read or
//! store; identities (peer ids) are unchanged.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::Path;
use std::time::Duration;

use butter::{Config, Node, NodeBuilder, ca};

async fn member(ca_dir: &Path, dir: &Path) -> Node {
    let id = ca::sign(ca_dir, dir).unwrap();
    let mut cfg = Config::for_tests();
    cfg.data_dir = Some(dir.to_path_buf());
    cfg.network_ca = Some(dir.join(ca::CA_CERT));
    let node = NodeBuilder::new(cfg).build().await.unwrap();
    assert_eq!(
        node.id(),
        id,
        "the CA-signed certificate keeps the node's own peer id"
    );
    node
}

#[tokio::test]
async fn only_members_of_the_private_network_can_talk() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    ca::init(&ca_dir, "test").unwrap();
    let a = member(&ca_dir, &tmp.path().join("a")).await;
    let b = member(&ca_dir, &tmp.path().join("b")).await;

    // Members connect and store/read.
    let id = b.connect(a.local_addr().unwrap()).await.unwrap();
    assert_eq!(id, a.id());
    let item = a.put(b"members only".to_vec()).unwrap();
    assert_eq!(b.get(item).await.unwrap().content, b"members only");

    // An open-network node cannot connect to a member, nor a member to it.
    let outsider = NodeBuilder::new(Config::for_tests()).build().await.unwrap();
    assert!(outsider.connect(a.local_addr().unwrap()).await.is_err());
    assert!(a.connect(outsider.local_addr().unwrap()).await.is_err());
    assert!(
        outsider.get(item).await.is_err(),
        "an outsider must not read"
    );
    assert!(!outsider.peers().iter().any(|p| p.id == a.id().to_string()));

    // A node of another private network cannot either.
    let other_ca = tmp.path().join("other-ca");
    ca::init(&other_ca, "other").unwrap();
    let foreign = member(&other_ca, &tmp.path().join("f")).await;
    assert!(foreign.connect(a.local_addr().unwrap()).await.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = a.metrics().encode();
    let refused: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("butter_handshakes_total{direction=\"inbound\"")
                && !l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused >= 2.0, "refused handshakes are counted: {m}");
    // The member still serves its own.
    assert_eq!(b.get(item).await.unwrap().content, b"members only");
}

#[tokio::test]
async fn a_node_without_a_signed_certificate_does_not_start_in_private_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    ca::init(&ca_dir, "test").unwrap();
    let mut cfg = Config::for_tests();
    cfg.data_dir = Some(tmp.path().join("n"));
    cfg.network_ca = Some(ca_dir.join(ca::CA_CERT));
    let err = NodeBuilder::new(cfg).build().await.unwrap_err();
    assert!(err.to_string().contains("ca sign"), "{err}");
}
