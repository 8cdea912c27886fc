//! Draining a live node with real processes on loopback: 6 `butter-node` processes on three
//! sites, 60 items; `butter-node drain` on one node hands every group it is in over (the other
//! nodes hold r copies before it goes), turns `/ready` to 503 and refuses new items; then SIGKILL
//! it: every item is still retrievable, byte for byte, and held by r live members.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::process::Command;
use std::time::Duration;

mod common;

use common::{BIN, Reaped, free_port, json, request, spawn_site_node, wait};

const NODES: usize = 6;
const ITEMS: usize = 60;
const VICTIM: usize = 4;

struct Proc {
    child: Reaped,
    id: String,
    http: u16,
}

fn content(i: usize) -> Vec<u8> {
    let mut v = format!("drain item {i}:").into_bytes();
    v.extend((0..2048u32).map(|k| (k.wrapping_mul(2654435761).wrapping_add(i as u32) >> 11) as u8));
    v
}

/// The items each node's local store holds.
fn held(nodes: &[&Proc]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|n| {
            json(n.http, "/items")
                .and_then(|v| {
                    v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Whether `id`'s group, as a live node sees it, has 3 holding members none of which is `gone`.
fn at_r(live: &[&Proc], gone: &str, id: &str) -> bool {
    live.iter().any(|n| {
        json(n.http, &format!("/items/{id}/group")).is_some_and(|g| {
            g["members"].as_array().is_some_and(|m| {
                m.iter()
                    .filter(|x| x["holding"] == true && x["id"] != gone)
                    .count()
                    >= 3
            })
        })
    })
}

#[test]
fn a_drained_node_hands_its_groups_over_before_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let quic: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let mut nodes: Vec<Proc> = (0..NODES)
        .map(|i| {
            let (child, http) = spawn_site_node(dir.path(), i, &quic);
            Proc {
                child,
                id: String::new(),
                http,
            }
        })
        .collect();
    let joined = wait(Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            json(n.http, "/status").is_some_and(|s| s["peers"].as_u64() >= Some(NODES as u64 - 1))
        })
    });
    assert!(joined.is_some(), "{NODES} nodes did not join");
    for n in &mut nodes {
        n.id = json(n.http, "/status").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    }
    let mut ids = Vec::new();
    for i in 0..ITEMS {
        let (code, body) = request(nodes[i % NODES].http, "PUT", "/items", &content(i)).unwrap();
        assert_eq!(code, 201);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let all: Vec<&Proc> = nodes.iter().collect();
    let placed = wait(Duration::from_secs(60), || {
        ids.iter().all(|id| at_r(&all, "", id))
    });
    assert!(placed.is_some(), "groups never reached r");

    let victim = &nodes[VICTIM];
    let others: Vec<&Proc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != VICTIM)
        .map(|(_, n)| n)
        .collect();
    let victim_items = held(&[victim]).remove(0);
    assert!(!victim_items.is_empty(), "the node to drain holds nothing");
    assert_eq!(request(victim.http, "GET", "/ready", &[]).unwrap().0, 200);

    // The CLI drains; the HTTP endpoint, asked again, reports the same hand-off as JSON.
    let out = Command::new(BIN)
        .args(["drain", "--http", &format!("127.0.0.1:{}", victim.http)])
        .args(["--timeout", "15"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    assert!(out.status.success(), "butter-node drain failed");
    assert!(printed.contains("handed over"), "{printed}");
    let (code, body) = request(victim.http, "POST", "/drain", &[]).unwrap();
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["drained"], true);
    assert_eq!(report["groups"].as_u64(), Some(victim_items.len() as u64));
    assert_eq!(report["handed_over"], report["groups"], "{report}");
    assert_eq!(report["not_handed_over"], 0, "{report}");

    // Drained: not ready, no new items.
    let (code, text) = common::get(victim.http, "/ready").unwrap();
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("drained"), "{text}");
    assert_eq!(json(victim.http, "/status").unwrap()["drained"], true);
    let (code, _) = request(victim.http, "PUT", "/items", b"after the drain").unwrap();
    assert_ne!(code, 201, "a drained node accepted a new item");

    // Before the victim goes, the other nodes already hold r copies of everything it held.
    let copies = held(&others);
    let short: Vec<&String> = victim_items
        .iter()
        .filter(|id| copies.iter().filter(|h| h.contains(id)).count() < 3)
        .collect();
    assert!(
        short.is_empty(),
        "{} of {} items of the drained node have fewer than 3 copies elsewhere",
        short.len(),
        victim_items.len()
    );

    let gone = victim.id.clone();
    nodes[VICTIM].child.kill().unwrap(); // SIGKILL
    nodes[VICTIM].child.wait().unwrap();
    let live: Vec<&Proc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != VICTIM)
        .map(|(_, n)| n)
        .collect();
    let back = wait(Duration::from_secs(30), || {
        ids.iter().all(|id| at_r(&live, &gone, id))
    });
    eprintln!("every group at r with live members {back:?} after SIGKILL of the drained node");
    assert!(
        back.is_some(),
        "{} groups not at r with live members",
        ids.iter().filter(|id| !at_r(&live, &gone, id)).count()
    );
    for (i, id) in ids.iter().enumerate() {
        let asker = live[i % live.len()];
        let (code, body) = request(asker.http, "GET", &format!("/items/{id}"), &[]).unwrap();
        assert_eq!(code, 200, "item {i} not retrievable");
        assert_eq!(body, content(i), "item {i} bytes");
    }
}
