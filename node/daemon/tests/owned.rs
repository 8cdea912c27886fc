//! Owned items through the real binary: a key made by the CLI, values put, updated in place and
//! deleted by their owner on a three-node loopback network; stale, forged and mismatched records
//! refused with an error that says what to do, and counted.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{BIN, Reaped, free_port, get, request, wait};

fn spawn(dir: &std::path::Path, quic: u16, http: u16, bootstrap: u16) -> Reaped {
    Reaped(
        Command::new(BIN)
            .args(["run", "--no-multicast", "--log-level", "warn"])
            .args(["--listen", &format!("127.0.0.1:{quic}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(dir)
            .env("BUTTER_BOOTSTRAP", format!("127.0.0.1:{bootstrap}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Runs the CLI: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn peers(port: u16) -> Option<u64> {
    let (_, body) = get(port, "/status")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["peers"].as_u64()
}

#[test]
fn owned_items_update_in_place_and_only_their_owner_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let quic: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _nodes: Vec<Reaped> = (0..3)
        .map(|i| spawn(&dir.path().join(format!("n{i}")), quic[i], http[i], quic[0]))
        .collect();
    assert!(
        wait(Duration::from_secs(15), || http
            .iter()
            .all(|p| peers(*p) == Some(2)))
        .is_some()
    );
    let api = |i: usize| format!("127.0.0.1:{}", http[i]);

    // A key, made once and never overwritten.
    let key = dir.path().join("me.key");
    let key = key.to_str().unwrap();
    let (ok, owner, _) = cli(&["key", "new", "--out", key]);
    assert!(ok);
    let owner = owner.trim().to_string();
    assert_eq!(owner.len(), 64);
    let (ok, _, err) = cli(&["key", "new", "--out", key]);
    assert!(!ok && err.contains("never overwritten"), "{err}");
    assert_eq!(cli(&["key", "show", key]).1.trim(), owner);

    // Put through node 0, read through node 2.
    let v1 = dir.path().join("v1");
    std::fs::write(&v1, b"first version").unwrap();
    let v1 = v1.to_str().unwrap();
    let (ok, out, err) = cli(&[
        "put",
        "--http",
        &api(0),
        "--key",
        key,
        "--name",
        "profile",
        "--seq",
        "1",
        v1,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{owner}/profile seq 1")), "{out}");
    // Node 0 held nothing of the item: it searched for its group, found none and placed it.
    assert!(out.contains("sent to the item's group"), "{out}");
    let id = out.split_whitespace().nth(4).unwrap().to_string();
    assert_eq!(id.len(), 64, "{out}");
    let path = format!("/owned/{owner}/profile");
    assert!(
        wait(Duration::from_secs(20), || request(
            http[2],
            "GET",
            &path,
            &[]
        )
        .is_some_and(|(c, b)| c == 200 && b == b"first version"))
        .is_some()
    );

    // A higher seq replaces it everywhere, read through the CLI.
    let v2 = dir.path().join("v2");
    std::fs::write(&v2, b"second version").unwrap();
    let (ok, _, err) = cli(&[
        "put",
        "--http",
        &api(1),
        "--key",
        key,
        "--name",
        "profile",
        "--seq",
        "2",
        v2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        wait(Duration::from_secs(10), || (0..3).all(|i| request(
            http[i],
            "GET",
            &path,
            &[]
        )
        .is_some_and(|(c, b)| c == 200 && b == b"second version")))
        .is_some()
    );
    let (ok, out, _) = cli(&["get", &format!("{owner}/profile"), "--http", &api(2)]);
    assert!(ok);
    assert_eq!(out, "second version");

    // A stale seq is refused with what to do by a member (node 2 once it holds the item; a node
    // outside the group answers 202 and the group counts the stale put); so is a record that
    // does not match its path or whose signature does not verify.
    assert!(
        wait(Duration::from_secs(20), || get(http[2], "/items")
            .is_some_and(|(_, b)| b.contains(&id)))
        .is_some()
    );
    let (ok, _, err) = cli(&[
        "put",
        "--http",
        &api(2),
        "--key",
        key,
        "--name",
        "profile",
        "--seq",
        "2",
        v1,
    ]);
    assert!(!ok);
    assert!(err.contains("stale") && err.contains("higher"), "{err}");
    let (code, _) = request(http[0], "PUT", &path, b"not a record").unwrap();
    assert_eq!(code, 400);
    let (code, body) = request(http[0], "PUT", "/owned/not-hex/profile", b"x").unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, _) = request(http[0], "GET", &format!("/owned/{owner}/a%2Fb"), &[]).unwrap();
    assert_eq!(code, 400);

    // Deleting needs the owner's tombstone: an anonymous DELETE of the item id is refused.
    let (code, body) = request(http[0], "DELETE", &format!("/items/{id}"), &[]).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("only its owner deletes it"), "{body}");
    let (ok, _, err) = cli(&[
        "delete",
        "--http",
        &api(0),
        "--key",
        key,
        "--name",
        "profile",
    ]);
    assert!(ok, "{err}");
    assert!(
        wait(Duration::from_secs(10), || (0..3).all(|i| request(
            http[i],
            "GET",
            &path,
            &[]
        )
        .is_some_and(|(c, _)| c == 410)))
        .is_some()
    );
    let (_, body) = request(http[1], "GET", &path, &[]).unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("higher seq"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Refusals are counted.
    let (_, metrics) = get(http[2], "/metrics").unwrap();
    assert!(
        metrics.contains("butter_owned_refused_total{reason=\"stale\"}"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("owned"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metrics.contains("butter_owned_updates_total"));
}
