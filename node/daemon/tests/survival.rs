//! Issue acceptance with real processes on loopback: 10 `butter-node` processes on three sites,
//! 200 items stored through different nodes; SIGKILL two nodes at once → every item still
//! retrievable and every group back at r; then SIGKILL every node of one site → no item lost.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Reaped, free_port, json, request, spawn_site_node, wait};

struct Proc {
    child: Reaped,
    id: String,
    http: u16,
    site: usize,
    alive: bool,
}

fn content(i: usize) -> Vec<u8> {
    let mut v = format!("item {i}:").into_bytes();
    v.extend((0..4096u32).map(|k| (k.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8));
    v
}

/// Whether `id`'s group, as seen by a live holder, has r = 3 members that are really alive (not
/// killed by the test) and holding.
fn at_r(nodes: &[Proc], id: &str) -> bool {
    let dead: Vec<&str> = nodes
        .iter()
        .filter(|n| !n.alive)
        .map(|n| n.id.as_str())
        .collect();
    nodes.iter().filter(|n| n.alive).any(|n| {
        json(n.http, &format!("/items/{id}/group")).is_some_and(|g| {
            g["members"].as_array().is_some_and(|m| {
                m.iter()
                    .filter(|x| x["holding"] == true && !dead.iter().any(|d| x["id"] == *d))
                    .count()
                    >= 3
            })
        })
    })
}

#[test]
fn items_survive_sigkill_of_two_nodes_and_of_a_whole_site() {
    let dir = tempfile::tempdir().unwrap();
    let quic: Vec<u16> = (0..10).map(|_| free_port()).collect();
    let mut nodes: Vec<Proc> = (0..10)
        .map(|i| {
            let (child, http) = spawn_site_node(dir.path(), i, &quic);
            Proc {
                child,
                id: String::new(),
                http,
                site: i % 3,
                alive: true,
            }
        })
        .collect();
    let joined = wait(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| json(n.http, "/status").is_some_and(|s| s["peers"].as_u64() >= Some(8)))
    });
    assert!(joined.is_some(), "10 nodes did not join");
    for n in &mut nodes {
        n.id = json(n.http, "/status").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
    }

    let mut ids = Vec::new();
    for i in 0..200 {
        let (code, body) = request(nodes[i % 10].http, "PUT", "/items", &content(i)).unwrap();
        assert_eq!(code, 201);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let placed = wait(Duration::from_secs(60), || {
        ids.iter().all(|id| at_r(&nodes, id))
    });
    eprintln!("200 groups at r after {placed:?}");
    assert!(placed.is_some(), "groups never reached r");
    std::thread::sleep(Duration::from_secs(3));

    // SIGKILL two nodes at once (not the bootstrap nodes).
    let (detected, back) = kill_and_recover(&mut nodes, &ids, &[4, 7]);
    eprintln!(
        "killed 2 nodes: gone from every table after {detected:?}, every group back at r after {back:?} (target 15 s)"
    );
    assert!(back.is_some(), "groups not back at r after killing 2 nodes");
    check_all(&nodes, &ids);

    // SIGKILL every node of site 2.
    let site2: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].site == 2 && nodes[i].alive)
        .collect();
    let (detected, back) = kill_and_recover(&mut nodes, &ids, &site2);
    eprintln!(
        "killed site-2 ({} nodes): gone after {detected:?}, every group back at r after {back:?}",
        site2.len()
    );
    check_all(&nodes, &ids);
    assert!(back.is_some(), "groups not back at r after losing a site");
}

/// SIGKILLs `victims`, then measures (from the kill) when every live node has dropped them from
/// its table and when every group is back at r.
fn kill_and_recover(
    nodes: &mut [Proc],
    ids: &[String],
    victims: &[usize],
) -> (Option<Duration>, Option<Duration>) {
    let start = Instant::now();
    let dead: Vec<String> = victims.iter().map(|&k| nodes[k].id.clone()).collect();
    for &k in victims {
        nodes[k].child.kill().unwrap();
        nodes[k].child.wait().unwrap();
        nodes[k].alive = false;
    }
    let nodes = &*nodes;
    let gone = wait(Duration::from_secs(30), || {
        nodes.iter().filter(|n| n.alive).all(|n| {
            json(n.http, "/peers").is_some_and(|p| {
                p.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|x| !dead.iter().any(|d| x["id"] == d.as_str()))
                })
            })
        })
    });
    let back = wait(Duration::from_secs(90), || {
        ids.iter().all(|id| at_r(nodes, id))
    });
    (gone.map(|_| start.elapsed()), back.map(|_| start.elapsed()))
}

/// Every item is retrievable through a live node and matches its id.
fn check_all(nodes: &[Proc], ids: &[String]) {
    let live: Vec<&Proc> = nodes.iter().filter(|n| n.alive).collect();
    let mut lost = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let asker = live[i % live.len()];
        match request(asker.http, "GET", &format!("/items/{id}"), &[]) {
            Some((200, body)) => assert_eq!(body, content(i), "item {i} bytes"),
            other => lost.push((i, other.map(|(c, _)| c))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} items not retrievable: {lost:?}",
        lost.len(),
        ids.len()
    );
}

#[test]
fn kill_9_during_a_write_storm_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (quic, http) = (free_port(), free_port());
    let start = |dir: &std::path::Path| {
        Command::new(BIN)
            .args(["run", "--no-multicast", "--alone", "--log-level", "warn"])
            .args([
                "--listen",
                &format!("127.0.0.1:{quic}"),
                "--http",
                &format!("127.0.0.1:{http}"),
            ])
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut child = start(dir.path());
    assert!(wait(Duration::from_secs(10), || json(http, "/status").is_some()).is_some());

    // Writers store items until the node dies under them; only 201 answers count as acknowledged.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let body = content(w * 100_000 + i);
                    match request(http, "PUT", "/items", &body) {
                        Some((201, reply)) => {
                            let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .push((v["id"].as_str().unwrap().to_string(), body));
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap(); // SIGKILL, mid-storm
    child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the storm stored only {} items",
        acked.len()
    );

    let mut child = start(dir.path());
    assert!(wait(Duration::from_secs(10), || json(http, "/status").is_some()).is_some());
    let held = json(http, "/items").unwrap();
    let held: Vec<&str> = held
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let missing: Vec<&String> = acked
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !held.contains(&id.as_str()))
        .collect();
    for (id, body) in acked.iter().take(50) {
        let (code, got) = request(http, "GET", &format!("/items/{id}"), &[]).unwrap();
        assert_eq!(code, 200);
        assert_eq!(&got, body, "item {id} changed across the crash");
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "{} items acknowledged before SIGKILL, {} held after restart",
        acked.len(),
        held.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged items lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
