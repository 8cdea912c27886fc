//! The examples run as users run them: real processes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A spawned example, killed and reaped when dropped — also when an assertion fails first, so a
/// failing test leaves no process behind.
struct Reap(std::process::Child);

impl std::ops::Deref for Reap {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let mut server = Reap(
        Command::new(example("ohce"))
            .args(["--serve", &addr])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
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
    let mut bob = Reap(
        Command::new(example("chat"))
            .args(["--name", "bob", "--listen", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
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
    let mut alice = Reap(
        Command::new(example("chat"))
            .args(["--name", "alice", "--peer", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
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

/// Spawns an example and returns it with the first line it printed.
fn spawn_example(name: &str, args: &[&str]) -> (Reap, String) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    (Reap(child), first)
}

#[test]
fn persist_stores_through_one_node_and_retrieves_through_another() {
    let (a_addr, b_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (mut a, _) = spawn_example("ohce", &["--serve", &a_addr]);
    let (mut b, _) = spawn_example("ohce", &["--serve", &b_addr]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"persisted by the persist example").unwrap();
    let put = Command::new(example("persist"))
        .args([
            "--peer",
            &a_addr,
            "--peer",
            &b_addr,
            "put",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let id = String::from_utf8_lossy(&put.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    // The storing node has left; the item lives on in its group.
    let got = Command::new(example("persist"))
        .args(["--peer", &b_addr, "get", &id])
        .output()
        .unwrap();
    a.kill().ok();
    b.kill().ok();
    a.wait().ok();
    b.wait().ok();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, b"persisted by the persist example");
}

fn http(addr: &str, method: &str, path: &str, form: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut s, &mut out).unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

/// The DOM of `url` after Chromium has loaded it headless (Debian's `chromium` package).
fn chromium_dom(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (apt install chromium)");
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn wiki_article_added_on_one_node_is_readable_on_another_in_a_browser() {
    let (qa, wa) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (qb, wb) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (mut a, first) = spawn_example("wiki", &["--listen", &qa, "--web", &wa]);
    assert!(first.contains("open http://"), "{first}");
    let (mut b, _) = spawn_example("wiki", &["--listen", &qb, "--web", &wb, "--peer", &qa]);

    let (code, reply) = http(
        &wa,
        "POST",
        "/articles",
        "title=Clarified+butter&text=Butter+without+the+milk+solids.",
    );
    assert_eq!(code, 303, "{reply}");
    let location = reply
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap()
        .trim()
        .to_string();
    let id = location.trim_start_matches("/articles/").to_string();
    assert_eq!(id.len(), 64);

    let index = chromium_dom(&format!("http://{wb}/"));
    let article = chromium_dom(&format!("http://{wb}{location}"));
    a.kill().ok();
    b.kill().ok();
    a.wait().ok();
    b.wait().ok();
    assert!(
        index.contains("Clarified butter") && index.contains(&id),
        "index on B lacks the article: {index}"
    );
    assert!(
        article.contains("Butter without the milk solids."),
        "article page on B: {article}"
    );
    assert!(article.contains("<h1>Clarified butter</h1>"));
}

#[test]
fn wiki_edit_updates_the_article_in_place_and_keeps_its_history() {
    let (qa, wa) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (qb, wb) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let (_a, _) = spawn_example("wiki", &["--listen", &qa, "--web", &wa]);
    let (_b, _) = spawn_example("wiki", &["--listen", &qb, "--web", &wb, "--peer", &qa]);
    let location = |reply: &str| {
        reply
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap()
            .trim()
            .to_string()
    };
    let mut locations = Vec::new();
    for text in ["First+text.", "Second+text.", "Third+text."] {
        let (code, reply) = http(&wa, "POST", "/articles", &format!("title=Ghee&text={text}"));
        assert_eq!(code, 303, "{reply}");
        locations.push(location(&reply));
    }
    assert!(
        locations.iter().all(|l| *l == locations[0]),
        "an edit keeps the article's id: {locations:?}"
    );
    // Read through the other node (plain HTTP: the browser test covers rendering).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut page = String::new();
    while Instant::now() < deadline {
        page = http(&wb, "GET", &locations[0], "").1;
        if page.contains("Third text.") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        page.contains("<article id=text>Third text.</article>"),
        "{page}"
    );
    assert!(page.contains("version 3"), "{page}");
    assert!(
        page.contains(
            "<ol id=history><li>First text.</li><li>Second text.</li><li>Third text.</li></ol>"
        ),
        "{page}"
    );
}
