//! The node's HTTP API as the kit reads it (`/health`, `/ready`, `/status`, `/peers`), and the
//! Prometheus query API, over a tiny blocking HTTP/1.1 GET.
//!
//! The driver polls every node several times a second from one thread; a std `TcpStream` with
//! short timeouts and `Connection: close` keeps that simple. Fields the kit does not need are
//! optional, so the daemon can grow its records without breaking the kit.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Timeout for one request to a node: a bridge hop, so anything slower is a stuck node.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(1);

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET http://{addr}{path}`; `path` must already be percent-encoded.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    request("GET", addr, path, &[], timeout)
}

/// `{method} http://{addr}{path}` with `body` (sent with a Content-Length when not empty).
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Length: {}\r\nContent-Type: application/octet-stream\r\n",
            body.len()
        )
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{length}Connection: close\r\n\r\n"
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("read {addr}{path}"))?;
    parse(&raw).with_context(|| format!("response of {addr}{path}"))
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
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let text = std::str::from_utf8(&rest[..eol])?;
        let size = usize::from_str_radix(text.split(';').next().unwrap_or_default().trim(), 16)
            .with_context(|| format!("bad chunk size {text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters pass through).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn json<T: for<'de> Deserialize<'de>>(addr: SocketAddr, path: &str) -> Result<T> {
    let r = get(addr, path, NODE_TIMEOUT)?;
    if r.status != 200 {
        bail!("{addr}{path}: HTTP {}", r.status);
    }
    serde_json::from_slice(&r.body).with_context(|| format!("{addr}{path}: not the JSON expected"))
}

/// One entry of `GET /peers`.
#[derive(Debug, Clone, Deserialize)]
pub struct Peer {
    /// Peer id (64 hex digits).
    pub id: String,
    /// Addresses the node has for it.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// Its site label.
    #[serde(default)]
    pub site: String,
    /// How it was discovered: multicast, bootstrap, exchange or inbound.
    #[serde(default)]
    pub source: String,
    /// alive or suspect.
    #[serde(default)]
    pub state: String,
    /// The relays it announces (short ids), when it is private.
    #[serde(default)]
    pub relays: Vec<String>,
    /// How this node's connection to it runs: direct, relayed, punched or none.
    #[serde(default)]
    pub path: String,
}

/// `GET /status`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// The node's peer id.
    pub id: String,
    /// Its site label.
    #[serde(default)]
    pub site: String,
    /// Ready (joined).
    #[serde(default)]
    pub ready: bool,
    /// PCG groups this node is a member of, by state (absent on nodes without the data overlay).
    #[serde(default)]
    pub groups: Option<Groups>,
    /// Items this node holds.
    #[serde(default)]
    pub items: Option<u64>,
}

/// `groups` of `GET /status`: how many groups the node is in, by replica state.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Groups {
    /// Fewer than r members.
    #[serde(default)]
    pub cold: u64,
    /// Exactly r members.
    #[serde(default)]
    pub goldilocks: u64,
    /// More than r members.
    #[serde(default)]
    pub hot: u64,
}

impl Groups {
    /// Groups held in any state.
    pub fn total(&self) -> u64 {
        self.cold + self.goldilocks + self.hot
    }
}

/// `GET /items/{id}/group`: an item's Peer Content Group as one of its members sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    /// cold, goldilocks or hot.
    #[serde(default)]
    pub state: String,
    /// The members.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// One member of a [`Group`].
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    /// Peer id.
    pub id: String,
    /// Its site label.
    #[serde(default)]
    pub site: String,
    /// Believed alive.
    #[serde(default)]
    pub live: bool,
    /// Known to hold the item.
    #[serde(default)]
    pub holding: bool,
}

/// `GET /health` answers 200.
pub fn healthy(addr: SocketAddr) -> bool {
    get(addr, "/health", NODE_TIMEOUT).is_ok_and(|r| r.status == 200)
}

/// `GET /ready` answers 200.
pub fn ready(addr: SocketAddr) -> bool {
    ready_reason(addr).is_ok()
}

/// `GET /ready`: `Ok` when 200, else the node's reason (its 503 body) or why it did not answer.
pub fn ready_reason(addr: SocketAddr) -> std::result::Result<(), String> {
    match get(addr, "/ready", NODE_TIMEOUT) {
        Ok(r) if r.status == 200 => Ok(()),
        Ok(r) => Err(format!("{} {}", r.status, r.text().trim())),
        Err(e) => Err(format!("no answer: {e:#}")),
    }
}

/// Runs `f` on every element with at most `width` at once (scoped threads), keeping the order.
pub fn concurrently<T: Sync, R: Send>(
    items: &[T],
    width: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let width = width.max(1);
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(width) {
        let part: Vec<R> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|item| s.spawn(|| f(item))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .collect()
        });
        out.extend(part);
    }
    out
}

/// `GET /status`.
pub fn status(addr: SocketAddr) -> Result<Status> {
    json(addr, "/status")
}

/// `GET /peers`.
pub fn peers(addr: SocketAddr) -> Result<Vec<Peer>> {
    json(addr, "/peers")
}

/// `GET /items/{id}/group`: the item's group, if the node is one of its members (an error
/// otherwise).
pub fn group(addr: SocketAddr, id: &str) -> Result<Group> {
    json(addr, &format!("/items/{id}/group"))
}

/// `PUT /items`: stores `content` in the network through the node; returns the item id.
pub fn put_item(addr: SocketAddr, content: &[u8]) -> Result<String> {
    #[derive(Deserialize)]
    struct Put {
        id: String,
    }
    let r = request("PUT", addr, "/items", content, Duration::from_secs(10))?;
    if r.status != 201 {
        bail!("{addr} PUT /items: HTTP {}: {}", r.status, r.text());
    }
    Ok(serde_json::from_slice::<Put>(&r.body)
        .with_context(|| format!("{addr} PUT /items: {}", r.text()))?
        .id)
}

/// `GET /items/{id}`: retrieves an item through the node (search included); the content.
pub fn get_item(addr: SocketAddr, id: &str) -> Result<Vec<u8>> {
    let r = get(addr, &format!("/items/{id}"), Duration::from_secs(15))?;
    if r.status != 200 {
        bail!("{addr} GET /items/{id}: HTTP {}: {}", r.status, r.text());
    }
    Ok(r.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode(r#"sum by (lan) (up{job="x"})"#),
            "sum%20by%20%28lan%29%20%28up%7Bjob%3D%22x%22%7D%29"
        );
    }
}
