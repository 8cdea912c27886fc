//! The data overlay on real nodes over loopback QUIC: items stored through different nodes stay
//! retrievable and their groups return to `r` after nodes crash; a corrupted replica is detected
//! and replaced; a retrieval never returns bytes that do not match the id; a drained node hands
//! every group over, so crashing it afterwards leaves every group at `r`; a member deletes an item
//! everywhere, a stranger cannot.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::time::{Duration, Instant};

use butter::{Config, Node, NodeBuilder};
use butter_proto::item::ItemId;
use butter_proto::pcg::GroupState;

async fn network(n: usize) -> Vec<Node> {
    network_with(n, |_, _| {}).await
}

/// `n` nodes on three sites, `tweak` applied to each config (by index) before it starts.
async fn network_with(n: usize, tweak: impl Fn(usize, &mut Config)) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let mut cfg = Config::for_tests();
        cfg.site = format!("site-{}", i % 3);
        cfg.data.heartbeat_secs = 0.5;
        tweak(i, &mut cfg);
        if let Some(first) = nodes.first() {
            cfg.bootstrap = vec![first.local_addr().unwrap().to_string()];
        }
        nodes.push(NodeBuilder::new(cfg).build().await.unwrap());
    }
    let ok = wait(Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|x| x.peers().iter().filter(|p| p.state == "alive").count() >= n - 1)
    })
    .await;
    assert!(
        ok,
        "network of {n} did not converge: {:?}",
        nodes.iter().map(|x| x.peers().len()).collect::<Vec<_>>()
    );
    // The bootstrap node was dialled from other sites: it knows it is reachable from outside.
    assert!(
        nodes[0].record().public,
        "a node dialled from another site says it is public"
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

/// Every live holder's view of `id` is at r with live members, from the point of view of the
/// first live node that holds it.
fn at_r(nodes: &[&Node], id: &ItemId) -> bool {
    let holders: Vec<&&Node> = nodes.iter().filter(|n| n.items().contains(id)).collect();
    holders.len() >= 3
        && holders.iter().all(|n| {
            n.group(id)
                .is_some_and(|g| g.state == GroupState::Goldilocks)
        })
}

fn content(i: usize) -> Vec<u8> {
    format!("item number {i} ").repeat(50 + i).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_survive_two_crashes_and_groups_return_to_r() {
    let nodes = network(7).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = nodes[i % nodes.len()].put(content(i)).unwrap();
        assert_eq!(id, ItemId::of(&content(i)));
        ids.push(id);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait(Duration::from_secs(20), || ids
            .iter()
            .all(|id| at_r(&all, id)))
        .await,
        "groups did not reach r = 3"
    );
    // Groups span sites.
    for id in &ids {
        let g = nodes.iter().find_map(|n| n.group(id)).unwrap();
        let sites: std::collections::BTreeSet<_> =
            g.members.iter().filter_map(|m| m.site.clone()).collect();
        assert!(sites.len() >= 2, "group of {id} sits on one site: {g:?}");
    }
    // Retrieval from a node that does not hold the item.
    for (i, id) in ids.iter().enumerate().take(10) {
        let asker = nodes.iter().find(|n| !n.items().contains(id)).unwrap();
        let got = asker.get(*id).await.unwrap();
        assert_eq!(got.content, content(i));
    }

    // Crash two nodes at once.
    nodes[1].crash().await;
    nodes[2].crash().await;
    let live: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1 && *i != 2)
        .map(|(_, n)| n)
        .collect();
    let start = Instant::now();
    let back = wait(Duration::from_secs(30), || {
        ids.iter().all(|id| at_r(&live, id))
    })
    .await;
    eprintln!("groups back at r after {:?}", start.elapsed());
    assert!(
        back,
        "groups not back at r: {:?}",
        ids.iter().filter(|id| !at_r(&live, id)).count()
    );
    for (i, id) in ids.iter().enumerate() {
        let got = live[i % live.len()].get(*id).await.unwrap();
        assert_eq!(got.content, content(i), "item {i} content");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_every_group_over_and_takes_no_new_items() {
    let nodes = network(6).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(nodes[i % nodes.len()].put(content(i)).unwrap());
    }
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait(Duration::from_secs(20), || ids
            .iter()
            .all(|id| at_r(&all, id)))
        .await,
        "groups did not reach r = 3"
    );
    let leaver = &nodes[3];
    let held = leaver.items().len();
    assert!(held > 0, "the node to drain holds nothing");
    assert!(leaver.is_ready());

    let report = leaver.drain(Duration::from_secs(10)).await;
    eprintln!("drained a node holding {held} items: {report:?}");
    assert_eq!(report.groups, held, "{report:?}");
    assert_eq!(report.handed_over, held, "{report:?}");
    assert_eq!(report.not_handed_over, 0, "{report:?}");
    assert!(!leaver.is_ready(), "a drained node reports not ready");
    assert!(
        leaver.put(b"one more".to_vec()).is_err(),
        "a drained node takes no new items"
    );
    assert_eq!(
        leaver.drain(Duration::from_secs(1)).await,
        report,
        "draining twice reports the same hand-off"
    );

    // Gone without a goodbye. Its replacements already hold the data, so the groups are at r as
    // soon as the other members hear so on a heartbeat (0.5 s here): well before the crash could
    // be detected, the grace window (4 s) pass and a repair copy the data.
    leaver.crash().await;
    let start = Instant::now();
    let live: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, n)| n)
        .collect();
    let back = wait(Duration::from_secs(3), || {
        ids.iter().all(|id| at_r(&live, id))
    })
    .await;
    eprintln!(
        "every group at r {:?} after the drained node crashed",
        start.elapsed()
    );
    assert!(
        back,
        "{} groups below r 3 s after the drained node left",
        ids.iter().filter(|id| !at_r(&live, id)).count()
    );
    for (i, id) in ids.iter().enumerate() {
        let got = live[i % live.len()].get(*id).await.unwrap();
        assert_eq!(got.content, content(i), "item {i} content");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_replica_is_detected_and_replaced() {
    let nodes = network(5).await;
    let id = nodes[0].put(content(7)).unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(wait(Duration::from_secs(20), || at_r(&all, &id)).await);
    let victim = nodes
        .iter()
        .skip(1)
        .find(|n| n.items().contains(&id))
        .unwrap();
    assert!(victim.corrupt_local_copy(&id, b"not the content".to_vec()));
    // Either a challenger sees a wrong proof, or the corrupt holder checks a neighbour's proof
    // against its own copy, finds its copy bad and drops it (to be pushed a good one).
    let detected = wait(Duration::from_secs(60), || {
        nodes.iter().any(|n| {
            let m = n.metrics().encode();
            m.contains("butter_pcg_events_total{kind=\"proof_failed\"}")
                || m.contains("butter_pcg_events_total{kind=\"corrupt\"}")
        })
    })
    .await;
    assert!(
        detected,
        "no possession check failed: {}",
        nodes
            .iter()
            .map(|n| n
                .metrics()
                .encode()
                .lines()
                .filter(|l| l.starts_with("butter_pcg"))
                .collect::<Vec<_>>()
                .join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    // Every retrieval returns the true bytes.
    for n in &nodes {
        let got = n.get(id).await.unwrap();
        assert_eq!(got.content, content(7));
    }
    assert!(
        wait(Duration::from_secs(30), || at_r(&all, &id)).await,
        "group not back at r"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_item_fails_in_bounded_time() {
    let nodes = network(4).await;
    let start = Instant::now();
    let err = nodes[0].get(ItemId::of(b"never stored")).await.unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_lying_about_holding_data_is_banned_and_replaced() {
    // Node 4 claims to hold what it is given but answers every possession challenge wrongly.
    let nodes = network_with(5, |i, cfg| cfg.data.lie = i == 4).await;
    let (honest, liar) = (&nodes[..4], &nodes[4]);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(honest[i % 4].put(content(100 + i)).unwrap());
    }
    let held = |n: &Node| ids.iter().filter(|id| n.items().contains(id)).count();
    assert!(
        wait(Duration::from_secs(20), || held(liar) > 0).await,
        "the liar was never given an item"
    );
    // Its co-members catch the wrong proofs and ban it after a few.
    let banned = wait(Duration::from_secs(90), || {
        honest.iter().any(|n| n.transport().is_banned(&liar.id()))
    })
    .await;
    let lies: u64 = honest
        .iter()
        .map(|n| n.metrics().rejected("wrong_proof"))
        .sum();
    assert!(banned, "nobody banned the liar ({lies} wrong proofs seen)");
    assert!(lies >= 3, "banned after {lies} wrong proofs");
    let bans: u64 = honest.iter().map(|n| n.metrics().rejected("banned")).sum();
    assert!(bans >= 1, "the ban is counted");
    // Honest peers are served throughout: every item comes back intact from every honest node.
    for (i, id) in ids.iter().enumerate() {
        for n in honest {
            let got = n.get(*id).await.unwrap();
            assert_eq!(got.content, content(100 + i), "item {i}");
        }
    }
    // Groups with the liar get an honest member in its place once their leader banned it. (A node
    // left out of a group — an orphan — may keep its copy while the group still names the liar:
    // it lets go only once r members proved they hold the item, which a liar cannot.)
    let banning: Vec<&Node> = honest
        .iter()
        .filter(|n| n.transport().is_banned(&liar.id()))
        .collect();
    let repaired = wait(Duration::from_secs(120), || {
        ids.iter().all(|id| {
            banning.iter().all(|b| {
                b.group(id).is_none_or(|g| {
                    g.orphan || !g.view.members.contains(&liar.id()) || !b.items().contains(id)
                })
            })
        })
    })
    .await;
    let kept: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            banning.iter().filter_map(move |b| {
                let g = b.group(id)?;
                (!g.orphan && g.view.members.contains(&liar.id()) && b.items().contains(id))
                    .then(|| format!("{} at {}: {g:?}", id.short(), b.id().short()))
            })
        })
        .collect();
    assert!(
        repaired,
        "groups kept the banned liar:\n{}",
        kept.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_deletes_an_item_everywhere_and_a_stranger_cannot() {
    let nodes = network(6).await;
    let keep = nodes[1].put(content(1)).unwrap();
    let gone = nodes[0].put(content(2)).unwrap();
    let all: Vec<&Node> = nodes.iter().collect();
    assert!(
        wait(Duration::from_secs(20), || at_r(&all, &keep)
            && at_r(&all, &gone))
        .await
    );
    let stranger = nodes
        .iter()
        .find(|n| !n.items().contains(&gone))
        .expect("6 nodes, r = 3");
    assert!(matches!(
        stranger.delete(gone),
        Err(butter::data::DataError::NotMember(_))
    ));
    let member = nodes.iter().find(|n| n.items().contains(&gone)).unwrap();
    member.delete(gone).unwrap();
    assert!(
        wait(Duration::from_secs(10), || nodes
            .iter()
            .all(|n| !n.items().contains(&gone)))
        .await,
        "still held by {} nodes",
        nodes.iter().filter(|n| n.items().contains(&gone)).count()
    );
    // It stays gone (no repair brings it back), and the other item is untouched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(nodes.iter().all(|n| !n.items().contains(&gone)));
    assert!(matches!(
        nodes[5].get(gone).await,
        Err(butter::data::DataError::NotFound(_))
    ));
    assert!(at_r(&all, &keep));
    assert_eq!(nodes[4].get(keep).await.unwrap().content, content(1));
}
