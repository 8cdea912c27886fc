//! A tiny blocking HTTP/1.0 client for the node API (`PUT /items`, `GET /items/{id}`, …).
//!
//! HTTP/1.0 with `Content-Length` and one connection per request: the server then answers
//! without chunking and closes, so reading to the end is the whole response. The driver talks to
//! every node from plain threads, a bridge hop away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Connect timeout (capped): every node is one bridge hop from the host.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A response: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).context("not the JSON expected")
    }

    /// The `error` field of a JSON error body, or the body as text.
    pub fn error(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

/// One request; `timeout` bounds the connect and each read or write.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    // A bridge hop: a node that does not accept within CONNECT_TIMEOUT is gone.
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(CONNECT_TIMEOUT))
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/octet-stream\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read {method} {addr}{path}"))?;
    parse(&raw).with_context(|| format!("response of {method} {addr}{path}"))
}

/// `GET`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    request(addr, "GET", path, &[], timeout)
}

fn parse(raw: &[u8]) -> Result<Response> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let head = std::str::from_utf8(&raw[..split]).context("headers are not utf-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        bail!("chunked response to an HTTP/1.0 request");
    }
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_body_are_split() {
        let raw = b"HTTP/1.0 200 OK\r\nX-Butter-Holder: abc\r\nx-butter-hops: 2\r\n\r\n\x00\x01";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-butter-holder"), Some("abc"));
        assert_eq!(r.header("x-butter-hops"), Some("2"));
        assert_eq!(r.body, [0, 1]);
        let e = parse(b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"no such item\"}").unwrap();
        assert_eq!(e.error(), "no such item");
    }
}
