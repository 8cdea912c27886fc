//! The one blocking HTTP/1.1 client the kit and the tests use to talk to nodes (and to a host
//! Prometheus): one connection per request, `Connection: close`, bodies de-chunked.
//!
//! Every caller is a plain thread polling many nodes a hop away (a bridge, a veth, loopback), so
//! a std `TcpStream` with short timeouts is all it takes; no async runtime, no dependency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The longest a connect may take whatever the request's timeout: every node is one hop away,
/// so one that does not accept within this is gone (or frozen).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("connect {addr}: {source}")]
    Connect {
        /// Where to.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// Writing the request or reading the response failed (a timeout included).
    #[error("{method} {addr}{path}: {source}")]
    Io {
        /// The request method.
        method: String,
        /// Where to.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The bytes that came back are not an HTTP response.
    #[error("{method} {addr}{path}: bad response: {why}")]
    Malformed {
        /// The request method.
        method: String,
        /// Where to.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

/// A response: status, headers (names lower-cased) and the body (de-chunked).
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `error` field of a JSON error body (the daemon's shape), or the body as text.
    pub fn error(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| self.text().trim().to_string())
    }
}

/// `{method} http://{addr}{path}` with `body`; `path` must already be percent-encoded (see
/// [`encode`]). `timeout` bounds the connect (at most [`CONNECT_TIMEOUT`]), the write and each
/// read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, Error> {
    let io = |source| Error::Io {
        method: method.to_string(),
        addr,
        path: path.to_string(),
        source,
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(CONNECT_TIMEOUT))
        .map_err(|source| Error::Connect { addr, source })?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/octet-stream\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body).map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    parse(&raw).map_err(|why| Error::Malformed {
        method: method.to_string(),
        addr,
        path: path.to_string(),
        why,
    })
}

/// `GET http://{addr}{path}`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Error> {
    request(addr, "GET", path, &[], timeout)
}

fn parse(raw: &[u8]) -> Result<Response, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(format!("no end of headers in {} bytes", raw.len()));
    };
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not utf-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(text.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("bad chunk size {text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_a_plain_body_are_split() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Butter-Holder: abc\r\nx-butter-hops: 2\r\n\r\n\x00\x01";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-butter-holder"), Some("abc"));
        assert_eq!(r.header("x-butter-hops"), Some("2"));
        assert_eq!(r.body, [0, 1]);
        let e = parse(b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\":\"no such item\"}").unwrap();
        assert_eq!(e.error(), "no such item");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(raw).unwrap().body, b"abcde");
    }

    #[test]
    fn truncated_responses_are_errors() {
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab").is_err());
    }

    #[test]
    fn a_real_server_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"xyz") {
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "request cut short");
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            c.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            req
        });
        let r = request(addr, "PUT", "/items", b"xyz", Duration::from_secs(2)).unwrap();
        assert_eq!((r.status, r.text().as_str()), (201, "ok"));
        let req = server.join().unwrap();
        assert!(req.starts_with("PUT /items HTTP/1.1\r\n"), "{req}");
        assert!(
            req.contains("Content-Length: 3\r\n") && req.ends_with("xyz"),
            "{req}"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode(r#"sum by (lan) (up{job="x"})"#),
            "sum%20by%20%28lan%29%20%28up%7Bjob%3D%22x%22%7D%29"
        );
    }
}
