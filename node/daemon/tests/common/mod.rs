//! Helpers shared by the daemon's process-level tests.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a subset; a panic is the failure message

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_butter-node");

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
