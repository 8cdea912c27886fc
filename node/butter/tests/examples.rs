//! The examples run as users run them: real processes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // Test binaries live in target/<profile>/deps; examples in target/<profile>/examples.
    // `cargo test` and `cargo nextest run` build the examples; `cargo test --test examples` does
    // not, so build them only when missing.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        static BUILT: std::sync::Once = std::sync::Once::new();
        BUILT.call_once(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "butter", "--examples"])
                .status()
                .unwrap();
            assert!(status.success(), "building the examples failed");
        });
    }
    assert!(
        path.exists(),
        "example {name} not built at {}",
        path.display()
    );
    path
}

#[test]
fn ohce_demo_prints_the_reversed_text() {
    let out = Command::new(example("ohce"))
        .arg("butter rocks")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "skcor rettub");
}

#[test]
fn ohce_serve_and_call_across_processes() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(example("ohce"))
        .args(["--serve", &addr])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("listening"));
    let out = Command::new(example("ohce"))
        .args(["--call", &addr, "abc"])
        .output()
        .unwrap();
    server.kill().ok();
    server.wait().ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cba");
}

#[test]
fn chat_line_reaches_the_other_node() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut bob = Command::new(example("chat"))
        .args(["--name", "bob", "--listen", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = bob.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap()
            .contains("chat node")
    );
    let mut alice = Command::new(example("chat"))
        .args(["--name", "alice", "--peer", &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    alice
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hi bob\n")
        .unwrap();
    drop(alice.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line == "<alice> hi bob" {
                got = true;
                break;
            }
        }
    }
    let _ = alice.wait();
    bob.kill().ok();
    bob.wait().ok();
    assert!(got, "bob never printed alice's line");
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
