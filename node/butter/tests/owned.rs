//! Owned items and the signed log on real nodes over loopback QUIC: an update put through a node
//! outside the item's group reaches every holder (no second group), and a log appended through
//! one node reads back, verified, through another.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::time::{Duration, Instant};

use butter::owned::{OwnerKey, Record};
use butter::{Config, Node, NodeBuilder};

async fn network(n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = Config::for_tests();
        cfg.site = format!("site-{}", i % 3);
        cfg.data.heartbeat_secs = 0.5;
        if let Some(first) = nodes.first() {
            cfg.bootstrap = vec![first.local_addr().unwrap().to_string()];
        }
        nodes.push(NodeBuilder::new(cfg).build().await.unwrap());
    }
    assert!(
        wait(Duration::from_secs(20), || nodes.iter().all(|x| x
            .peers()
            .iter()
            .filter(|p| p.state == "alive")
            .count()
            >= n - 1))
        .await
    );
    nodes
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_from_outside_the_group_reaches_every_holder() {
    let nodes = network(6).await;
    let key = OwnerKey::from_seed([11; 32]);
    let v =
        |seq: u64| Record::sign(&key, "page", seq, Some(format!("v{seq}").into_bytes())).unwrap();
    let id = nodes[0].put_owned(&v(1)).unwrap().id();
    assert!(
        wait(Duration::from_secs(30), || nodes
            .iter()
            .filter(|n| n.items().contains(&id))
            .count()
            >= 3)
        .await,
        "the item reaches r holders"
    );
    let (r, _) = nodes[5].get_owned(key.id(), "page").await.unwrap();
    assert_eq!(r.value(), Some(&b"v1"[..]));
    let outsider = nodes
        .iter()
        .find(|n| !n.items().contains(&id))
        .expect("r = 3 of 6: someone is outside the group");
    outsider.put_owned(&v(2)).unwrap();
    let holders_at_2 = |nodes: &[Node]| {
        let holders: Vec<&Node> = nodes.iter().filter(|n| n.items().contains(&id)).collect();
        holders.len() >= 3
            && holders.iter().all(|n| {
                n.owned_version(&id)
                    .is_some_and(|(v, tombstone)| v.seq == 2 && !tombstone)
            })
    };
    assert!(
        wait(Duration::from_secs(30), || holders_at_2(&nodes)).await,
        "every holder takes the update"
    );
    for n in &nodes {
        let (r, _) = n.get_owned(key.id(), "page").await.unwrap();
        assert_eq!(r.seq(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_appended_on_one_node_reads_back_verified_on_another() {
    let nodes = network(4).await;
    let key = OwnerKey::from_seed([12; 32]);
    let mut head = None;
    for text in ["created", "edited", "edited again"] {
        head = Some(
            nodes[1]
                .append_log(&key, "history", head, text.as_bytes().to_vec())
                .unwrap(),
        );
    }
    let head = head.unwrap();
    let mut read = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        if let Ok((h, entries)) = nodes[3].read_log(key.id(), "history", 100).await
            && h == head
        {
            read = Some(entries);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let entries = read.expect("the log reads back at its last head");
    let texts: Vec<&[u8]> = entries.iter().map(|e| e.payload()).collect();
    assert_eq!(texts, [&b"created"[..], b"edited", b"edited again"]);
}
