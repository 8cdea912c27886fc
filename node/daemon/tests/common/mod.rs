//! Helpers shared by the daemon's process-level tests.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; a panic is the failure message

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_butter-node");

/// A node process, killed and reaped when dropped so a failing test leaves nothing running.
/// Derefs to the [`std::process::Child`] (signal it, wait on it, read its pid).
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A port free on both TCP (HTTP) and UDP (QUIC).
pub fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One HTTP/1.0 exchange with 127.0.0.1:`port`: (status, body).
pub fn request(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&buf[..split])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, buf[split + 4..].to_vec()))
}

/// A GET whose body is text.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[]).map(|(c, b)| (c, String::from_utf8_lossy(&b).into_owned()))
}

/// `GET path` as JSON when the status is 200.
pub fn json(port: u16, path: &str) -> Option<serde_json::Value> {
    let (code, body) = request(port, "GET", path, &[])?;
    (code == 200).then(|| serde_json::from_slice(&body).ok())?
}

/// Polls `f` every 250 ms for up to `limit`; how long it took to hold, if it did.
pub fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// Starts node `i` of a loopback network on site `site-{i % 3}`, QUIC on `quic[i]`, data under
/// `dir/n{i}`, bootstrapping from nodes 0 and 1, multicast off. Returns it and its HTTP port.
pub fn spawn_site_node(dir: &std::path::Path, i: usize, quic: &[u16]) -> (Reaped, u16) {
    let http = free_port();
    let child = std::process::Command::new(BIN)
        .args(["run", "--no-multicast", "--log-level", "warn"])
        .args(["--listen", &format!("127.0.0.1:{}", quic[i])])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.join(format!("n{i}")))
        .args(["--site", &format!("site-{}", i % 3)])
        .args([
            "--bootstrap",
            &format!("127.0.0.1:{},127.0.0.1:{}", quic[0], quic[1]),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (Reaped(child), http)
}
