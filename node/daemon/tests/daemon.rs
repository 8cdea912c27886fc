//! The real `butter-node` binary: config errors, a three-node loopback network, metrics, readiness,
//! clean shutdown on SIGTERM and a stable identity across restarts.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Reaped, free_port, get, request};

struct Daemon {
    child: Reaped,
    http: u16,
    quic: u16,
}

fn spawn(data: &Path, quic: u16, http: u16, bootstrap: &[u16]) -> Daemon {
    let bootstrap: Vec<String> = bootstrap.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let child = Command::new(BIN)
        .args(["run", "--no-multicast", "--log-level", "info"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{quic}"))
        .arg("--http")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--data-dir")
        .arg(data)
        .env("BUTTER_BOOTSTRAP", bootstrap.join(","))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("butter-node starts");
    Daemon {
        child: Reaped(child),
        http,
        quic,
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn status_id(port: u16) -> Option<String> {
    let (_, body) = get(port, "/status")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(v["id"].as_str()?.to_string())
}

#[test]
fn three_nodes_find_each_other_through_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let quic: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let others: Vec<u16> = quic.iter().copied().filter(|&p| p != quic[i]).collect();
            spawn(&dir.path().join(format!("n{i}")), quic[i], http[i], &others)
        })
        .collect();

    let start = Instant::now();
    let all_see_two = wait_until(Duration::from_secs(5), || {
        nodes.iter().all(|n| {
            get(n.http, "/peers")
                .and_then(|(_, b)| serde_json::from_str::<Vec<serde_json::Value>>(&b).ok())
                .is_some_and(|p| p.len() == 2)
        })
    });
    assert!(all_see_two, "every node lists the two others within 5 s");
    eprintln!("converged in {:?}", start.elapsed());

    for n in &nodes {
        let (code, _) = get(n.http, "/ready").unwrap();
        assert_eq!(code, 200);
        let (code, body) = get(n.http, "/health").unwrap();
        assert_eq!((code, body.trim()), (200, "ok"));
        let (_, body) = get(n.http, "/peers").unwrap();
        let peers: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        for p in &peers {
            assert_eq!(p["id"].as_str().unwrap().len(), 64);
            assert!(p["addrs"].as_array().is_some_and(|a| !a.is_empty()));
            assert!(
                ["bootstrap", "inbound", "exchange", "multicast"]
                    .contains(&p["source"].as_str().unwrap())
            );
            assert!(p.get("last_seen_ms").is_some() && p.get("rtt_ms").is_some());
        }
    }

    // Counters move: requests keep flowing (liveness probes) and connections are open.
    let (_, m1) = get(nodes[0].http, "/metrics").unwrap();
    assert!(metric_sum(&m1, "butter_connections_open") >= 2.0, "{m1}");
    let before = metric_sum(&m1, "butter_requests_total");
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, m2) = get(nodes[0].http, "/metrics").unwrap();
        metric_sum(&m2, "butter_requests_total") > before
    }));
    assert!(metric_sum(&m1, "butter_build_info") == 1.0);

    // promtool (from Debian's prometheus package) finds nothing to complain about.
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt install prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(m1.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigterm_stops_within_five_seconds_and_identity_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (q, h) = (free_port(), free_port());
    let mut d = spawn(dir.path(), q, h, &[]);
    assert!(wait_until(Duration::from_secs(5), || status_id(h).is_some()));
    let id = status_id(h).unwrap();
    // Alone and not configured to be: not ready.
    assert_eq!(get(h, "/ready").unwrap().0, 503);

    let sent = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mut exited = None;
    while sent.elapsed() < Duration::from_secs(5) {
        if let Some(status) = d.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = exited.expect("exited within 5 s of SIGTERM");
    assert!(status.success(), "clean exit, got {status}");

    let d2 = spawn(dir.path(), d.quic, h, &[]);
    assert!(wait_until(Duration::from_secs(5), || status_id(d2.http).is_some()));
    assert_eq!(
        status_id(d2.http).unwrap(),
        id,
        "same peer id after restart"
    );

    let out = Command::new(BIN)
        .args(["id", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[node]\nlisten = \"127.0.0.1:0\"\nmax_peers = 3\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_peers") && err.contains("bad.toml"),
        "{err}"
    );

    std::fs::write(&path, "[node.limits]\nmax_frame = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limits.max_frame"));

    let out = Command::new(BIN)
        .args(["run", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}

#[test]
fn default_config_printed_by_the_binary_round_trips() {
    let out = Command::new(BIN).arg("config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    // The printed defaults are a valid config file (checked by starting and stopping a node).
    let (q, h) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .args([
            "--listen",
            &format!("127.0.0.1:{q}"),
            "--http",
            &format!("127.0.0.1:{h}"),
            "--no-multicast",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_until(Duration::from_secs(5), || get(h, "/health").is_some());
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "node started from the printed default config");
}

#[test]
fn items_through_the_http_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let quic: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            spawn(
                &dir.path().join(format!("n{i}")),
                quic[i],
                http[i],
                &[quic[0]],
            )
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || {
        nodes.iter().all(|n| status_peers(n.http) == Some(2))
    }));

    let content = b"an article about butter, stored in the network".repeat(20);
    let (code, body) = request(nodes[0].http, "PUT", "/items", &content).unwrap();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);

    // Retrieved through another node, verified bytes.
    let (code, got) = request(nodes[2].http, "GET", &format!("/items/{id}"), &[]).unwrap();
    assert_eq!(code, 200);
    assert_eq!(got, content);

    // The group reaches r = 3 on a 3-node network.
    assert!(wait_until(Duration::from_secs(15), || {
        request(nodes[0].http, "GET", &format!("/items/{id}/group"), &[])
            .and_then(|(c, b)| (c == 200).then_some(b))
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|g| {
                g["state"] == "goldilocks" && g["members"].as_array().is_some_and(|m| m.len() == 3)
            })
    }));

    // Bad ids and missing items are clear errors, not crashes.
    let (code, _) = request(nodes[1].http, "GET", "/items/not-an-id", &[]).unwrap();
    assert_eq!(code, 400);
    let missing = "0".repeat(64);
    let (code, _) = request(nodes[1].http, "GET", &format!("/items/{missing}"), &[]).unwrap();
    assert_eq!(code, 404);

    // The CLI does the same.
    let file = dir.path().join("note.txt");
    std::fs::write(&file, b"hello from the cli").unwrap();
    let http = |i: usize| format!("127.0.0.1:{}", nodes[i].http);
    let out = cli(&["put", "--http", &http(1), file.to_str().unwrap()]);
    let cli_id = String::from_utf8_lossy(&out).trim().to_string();
    assert_eq!(
        cli(&["get", &cli_id, "--http", &http(2)]),
        b"hello from the cli"
    );
    let out = Command::new(BIN)
        .args(["status", "--http", &format!("127.0.0.1:{}", nodes[0].http)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("goldilocks"));

    // Deleting: a node outside the group is told to ask a member; a member deletes everywhere.
    let (code, body) = request(nodes[1].http, "DELETE", &format!("/items/{missing}"), &[]).unwrap();
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("send the delete to a member"));
    cli(&["delete", &id, "--http", &http(0)]);
    assert!(wait_until(Duration::from_secs(10), || {
        nodes.iter().all(|n| {
            request(n.http, "GET", "/items", &[])
                .is_some_and(|(_, b)| !String::from_utf8_lossy(&b).contains(&id))
        })
    }));
    let (code, _) = request(nodes[2].http, "GET", &format!("/items/{id}"), &[]).unwrap();
    assert_eq!(code, 404);
}

/// Runs the CLI; it must succeed. Returns what it printed.
fn cli(args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "butter-node {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn status_peers(port: u16) -> Option<u64> {
    let (_, body) = get(port, "/status")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["peers"].as_u64()
}

#[test]
fn private_network_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = Command::new(BIN)
        .args(["ca", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut nodes = Vec::new();
    let quic: Vec<u16> = (0..2).map(|_| free_port()).collect();
    for (i, q) in quic.iter().enumerate() {
        let data = dir.path().join(format!("n{i}"));
        let out = Command::new(BIN)
            .args(["ca", "sign", "--ca"])
            .arg(&ca)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let http = free_port();
        let bootstrap = if i == 0 {
            String::new()
        } else {
            format!("127.0.0.1:{}", quic[0])
        };
        let child = Command::new(BIN)
            .args([
                "run",
                "--no-multicast",
                "--listen",
                &format!("127.0.0.1:{q}"),
                "--http",
                &format!("127.0.0.1:{http}"),
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--network-ca")
            .arg(data.join("ca.crt"))
            .env("BUTTER_BOOTSTRAP", bootstrap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.push(Daemon {
            child: Reaped(child),
            http,
            quic: *q,
        });
    }
    // An open-network node bootstrapping to the members never joins them.
    let outsider = spawn(
        &dir.path().join("outsider"),
        free_port(),
        free_port(),
        &[quic[0]],
    );
    assert!(wait_until(Duration::from_secs(10), || {
        nodes
            .iter()
            .all(|n| get(n.http, "/peers").is_some_and(|(_, b)| b.matches("\"id\"").count() == 1))
    }));
    std::thread::sleep(Duration::from_secs(2));
    for n in &nodes {
        let (_, body) = get(n.http, "/peers").unwrap();
        assert_eq!(
            body.matches("\"id\"").count(),
            1,
            "members know only each other: {body}"
        );
    }
    let (_, body) = get(outsider.http, "/peers").unwrap();
    assert_eq!(body.trim(), "[]", "the outsider knows nobody");
}
