//! `butter-node health`, the container health check: exit codes and what it says, against a live
//! node, a node that is not ready, one alone by configuration, a drained one, a port where nothing
//! listens and a listener that never answers.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Reaped, free_port, get, request, wait};

struct Daemon {
    _child: Reaped,
    http: u16,
}

/// Starts a node on loopback with multicast off; waits until its HTTP API answers.
fn spawn(data: &Path, quic: u16, extra: &[&str]) -> Daemon {
    let http = free_port();
    let child = Command::new(BIN)
        .args(["run", "--no-multicast", "--log-level", "warn"])
        .args(["--listen", &format!("127.0.0.1:{quic}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env_remove("BUTTER_BOOTSTRAP")
        .env_remove("BUTTER_ALONE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("butter-node starts");
    let d = Daemon {
        _child: Reaped(child),
        http,
    };
    assert!(
        wait(Duration::from_secs(10), || get(http, "/health").is_some()).is_some(),
        "the node's HTTP API answers within 10 s"
    );
    d
}

/// Runs `butter-node health <args>` with no `BUTTER_HTTP` from the environment.
fn health(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("health")
        .args(args)
        .env_remove("BUTTER_HTTP")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the check failed (exit 1) with one line on stderr holding every part of `wants`.
fn assert_fails_saying(out: &Output, wants: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for want in wants {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
}

#[test]
fn live_passes_and_ready_fails_on_a_node_whose_bootstrap_peer_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = free_port(); // nothing listens there
    let node = spawn(
        dir.path(),
        free_port(),
        &["--bootstrap", &format!("127.0.0.1:{missing}")],
    );
    let http = format!("127.0.0.1:{}", node.http);

    let out = health(&["--live", "--http", &http]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("ok: 200 from {http}/health")
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let out = health(&["--http", &http]);
    assert!(out.stdout.is_empty());
    assert_fails_saying(
        &out,
        &[
            &format!("not ready: 503 from {http}/ready (no live peer yet)"),
            "--bootstrap",
            "--alone",
        ],
    );
}

#[test]
fn ready_passes_once_a_peer_is_live_and_reads_the_unspecified_butter_http_as_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (qa, qb) = (free_port(), free_port());
    let a = spawn(
        &dir.path().join("a"),
        qa,
        &["--bootstrap", &format!("127.0.0.1:{qb}")],
    );
    assert_eq!(
        health(&["--http", &format!("127.0.0.1:{}", a.http)])
            .status
            .code(),
        Some(1),
        "no peer yet: not ready"
    );
    let _b = spawn(
        &dir.path().join("b"),
        qb,
        &["--bootstrap", &format!("127.0.0.1:{qa}")],
    );
    // As in a container: BUTTER_HTTP is the listen address 0.0.0.0:port, checked on 127.0.0.1.
    let check = || {
        Command::new(BIN)
            .arg("health")
            .env("BUTTER_HTTP", format!("0.0.0.0:{}", a.http))
            .output()
            .unwrap()
    };
    let start = Instant::now();
    assert!(
        wait(Duration::from_secs(10), || check().status.success()).is_some(),
        "ready within 10 s of its peer starting: {}",
        text(&check().stderr)
    );
    eprintln!("ready after {:?}", start.elapsed());
    let out = check();
    assert_eq!(
        text(&out.stdout).trim(),
        format!("ready: 200 from 127.0.0.1:{}/ready", a.http)
    );
}

#[test]
fn a_node_alone_by_configuration_is_ready_until_drained() {
    let dir = tempfile::tempdir().unwrap();
    let node = spawn(dir.path(), free_port(), &["--alone"]);
    let http = format!("127.0.0.1:{}", node.http);
    let out = health(&["--http", &http]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("ready: 200 from {http}/ready")
    );

    let (code, _) = request(node.http, "POST", "/drain?timeout_secs=0", &[]).unwrap();
    assert_eq!(code, 200, "nothing to hand over");
    assert_fails_saying(
        &health(&["--http", &http]),
        &[
            &format!("not ready: 503 from {http}/ready (drained"),
            "stop this node",
        ],
    );
    assert!(
        health(&["--live", "--http", &http]).status.success(),
        "still live"
    );
}

#[test]
fn nothing_listening_fails_fast_and_says_what_to_check() {
    let port = free_port();
    for args in [
        vec!["--http".to_string(), format!("127.0.0.1:{port}")],
        vec!["--live".into(), "--http".into(), format!("0.0.0.0:{port}")],
    ] {
        let start = Instant::now();
        let out = health(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(start.elapsed() < Duration::from_secs(3), "bounded");
        assert_fails_saying(
            &out,
            &[
                &format!("cannot connect to 127.0.0.1:{port}"),
                "is the node running?",
                "is --http right?",
            ],
        );
    }
}

#[test]
fn a_listener_that_never_answers_times_out_within_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    let out = health(&["--http", &addr.to_string(), "--timeout", "0.5"]);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_fails_saying(&out, &["did not answer within 0.5 s", "--timeout"]);
    drop(listener);

    let out = health(&["--timeout", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--timeout must be a positive number"));
}
