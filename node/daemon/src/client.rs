//! `butter-node put | get | delete | status | drain | health`: a small HTTP client for a running node's API.
//! Owned items are signed here, with the owner key file; the node only verifies.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Why one HTTP exchange failed, kept apart so `health` can say what to do about each.
#[derive(Debug)]
enum Failure {
    /// No TCP connection (refused, unreachable, or no answer within the connect timeout).
    Connect(std::io::Error),
    /// Connected, but sending or reading failed or ran out of time.
    Io(std::io::Error),
    /// Something answered that is not an HTTP reply.
    Malformed(&'static str),
}

/// How long one exchange may take.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connect: Duration,
    /// Longest wait for each read or write.
    io: Duration,
    /// Whole exchange, connect included, if bounded.
    total: Option<Duration>,
}

/// One HTTP/1.0 exchange within `limits`: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    limits: Limits,
) -> Result<(u16, Vec<u8>), Failure> {
    let deadline = limits.total.map(|t| Instant::now() + t);
    // The I/O timeout for the next step: `io`, shortened to what is left of the deadline.
    let left = |cap: Duration| -> std::io::Result<Duration> {
        let Some(d) = deadline else { return Ok(cap) };
        match d.saturating_duration_since(Instant::now()) {
            Duration::ZERO => Err(std::io::ErrorKind::TimedOut.into()),
            rest => Ok(rest.min(cap)),
        }
    };
    let connect = left(limits.connect).map_err(Failure::Connect)?;
    let mut s = TcpStream::connect_timeout(&addr, connect).map_err(Failure::Connect)?;
    let io = |s: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        s.set_write_timeout(Some(left(limits.io)?))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            s.set_read_timeout(Some(left(limits.io)?))?;
            match s.read(&mut chunk) {
                Ok(0) => return Ok(buf),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    let buf = io(&mut s).map_err(Failure::Io)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Failure::Malformed("malformed HTTP reply"))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(Failure::Malformed("malformed status line"))?;
    Ok((status, buf[split + 4..].to_vec()))
}

/// One HTTP/1.0 exchange for the CLI commands: (status, body).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let limits = Limits {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(if path.starts_with("/drain") { 620 } else { 30 }),
        total: None,
    };
    request(addr, method, path, body, limits).map_err(|f| match f {
        Failure::Connect(e) => anyhow::Error::new(e).context(format!(
            "no node API at {addr}; start one with `butter-node run` or pass --http"
        )),
        Failure::Io(e) => e.into(),
        Failure::Malformed(m) => anyhow::anyhow!(m),
    })
}

/// Where to reach a node listening on `addr`: an unspecified address (`0.0.0.0`, `::`, as a
/// container's `BUTTER_HTTP` has) means the loopback of the same family, same port.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// `butter-node health`: whether the node at `addr` answers 200 on `/ready` (or `/health` if
/// `live`) within `timeout`. `Ok` holds a line for stdout; `Err` one line saying what failed and
/// what to do.
pub fn health(addr: SocketAddr, live: bool, timeout: f64) -> Result<String, String> {
    if !(timeout.is_finite() && timeout > 0.0) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    let timeout =
        Duration::try_from_secs_f64(timeout).map_err(|_| "--timeout is too large".to_string())?;
    let addr = dialable(addr);
    let (path, what) = if live {
        ("/health", "not live")
    } else {
        ("/ready", "not ready")
    };
    let limits = Limits {
        connect: timeout,
        io: timeout,
        total: Some(timeout),
    };
    let secs = timeout.as_secs_f64();
    match request(addr, "GET", path, &[], limits) {
        Ok((200, body)) => Ok(format!(
            "{}: 200 from {addr}{path}",
            String::from_utf8_lossy(&body).trim()
        )),
        Ok((status, body)) => {
            let body = String::from_utf8_lossy(&body);
            let body = body.trim();
            // The node's own reason, without the "not ready: " it starts with.
            let reason = body.strip_prefix("not ready:").unwrap_or(body).trim();
            let hint = if reason.contains("no live peer") {
                "; check that --bootstrap or multicast reaches a peer, or run a deliberately \
                 single node with --alone"
            } else if status != 503 {
                "; is --http the HTTP address of a butter-node?"
            } else {
                ""
            };
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            };
            Err(format!("{what}: {status} from {addr}{path}{reason}{hint}"))
        }
        Err(Failure::Connect(e)) if e.kind() == std::io::ErrorKind::TimedOut => Err(format!(
            "cannot connect to {addr}: no answer within {secs} s; is the node running? is --http \
             right?"
        )),
        Err(Failure::Connect(e)) => Err(format!(
            "cannot connect to {addr}: {e}; is the node running? is --http right?"
        )),
        Err(Failure::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Err(format!(
                "{what}: {addr}{path} accepted the connection but did not answer within {secs} s; \
                 is the node overloaded or stuck? (--timeout to wait longer)"
            ))
        }
        Err(Failure::Io(e)) => Err(format!(
            "{what}: {addr}{path}: {e}; is --http the node's HTTP address?"
        )),
        Err(Failure::Malformed(m)) => Err(format!(
            "{what}: {addr}{path} gave a {m}; is --http the node's HTTP address?"
        )),
    }
}

/// Stores the bytes of `file` (`-` = stdin) and prints the item id.
pub fn put(addr: SocketAddr, file: &str) -> anyhow::Result<()> {
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut data)?;
    } else {
        data = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    }
    let (status, body) = exchange(addr, "PUT", "/items", &data)?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != 201 {
        bail!(
            "node refused the item ({status}): {}",
            v["error"].as_str().unwrap_or("?")
        );
    }
    println!("{}", v["id"].as_str().unwrap_or_default());
    Ok(())
}

/// Retrieves an item and writes its bytes to stdout (or `out`).
pub fn get(addr: SocketAddr, id: &str, out: Option<&str>) -> anyhow::Result<()> {
    let path = if id.contains('/') {
        format!("/owned/{id}")
    } else {
        format!("/items/{id}")
    };
    let (status, body) = exchange(addr, "GET", &path, &[])?;
    if status != 200 {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!("{}", v["error"].as_str().unwrap_or("retrieval failed"));
    }
    match out {
        Some(path) => {
            std::fs::write(path, &body).with_context(|| format!("cannot write {path}"))?
        }
        None => std::io::stdout().write_all(&body)?,
    }
    Ok(())
}

/// The default seq of an owned record: the current time in milliseconds since 1970, so puts from
/// one clock increase without asking the network for the current seq.
fn default_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// Signs `value` (or a tombstone) as `(key, name)` at `seq` and sends it with `method`.
fn send_owned(
    addr: SocketAddr,
    method: &str,
    key: &std::path::Path,
    name: &str,
    seq: Option<u64>,
    value: Option<Vec<u8>>,
) -> anyhow::Result<serde_json::Value> {
    use butter::owned::{MAX_VALUE, Record};
    let key = butter::owner::load(key)?;
    if let Some(v) = &value
        && v.len() > MAX_VALUE
    {
        bail!(
            "the value is {} bytes; owned values are at most {MAX_VALUE}: store large content as an item (`butter-node put FILE`) and put its id as the value",
            v.len()
        );
    }
    let seq = seq.unwrap_or_else(default_seq);
    let record = Record::sign(&key, name, seq, value)?;
    let path = format!("/owned/{}/{name}", key.id());
    let (status, body) = exchange(addr, method, &path, &record.encode())?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !(200..300).contains(&status) {
        bail!(
            "node refused the record ({status}): {}",
            v["error"].as_str().unwrap_or("?")
        );
    }
    Ok(v)
}

/// Stores `file` as the owned item `name` of the key in `key`; prints OWNER/NAME, seq and id.
pub fn put_owned(
    addr: SocketAddr,
    key: &std::path::Path,
    name: &str,
    seq: Option<u64>,
    file: &str,
) -> anyhow::Result<()> {
    let mut data = Vec::new();
    if file == "-" {
        std::io::stdin()
            .take(butter::owned::MAX_VALUE as u64 + 1)
            .read_to_end(&mut data)?;
    } else {
        data = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    }
    let v = send_owned(addr, "PUT", key, name, seq, Some(data))?;
    println!(
        "{} seq {} id {} ({})",
        v["stored"].as_str().unwrap_or("?"),
        v["seq"],
        v["id"].as_str().unwrap_or("?"),
        v["placement"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Deletes the owned item `name` of the key in `key` with a signed tombstone.
pub fn delete_owned(
    addr: SocketAddr,
    key: &std::path::Path,
    name: &str,
    seq: Option<u64>,
) -> anyhow::Result<()> {
    let v = send_owned(addr, "DELETE", key, name, seq, None)?;
    println!(
        "deleted {} (tombstone seq {})",
        v["deleted"].as_str().unwrap_or("?"),
        v["seq"]
    );
    Ok(())
}

/// Deletes an item through a member of its group.
pub fn delete(addr: SocketAddr, id: &str) -> anyhow::Result<()> {
    let (status, body) = exchange(addr, "DELETE", &format!("/items/{id}"), &[])?;
    if status != 200 {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!("{}", v["error"].as_str().unwrap_or("delete failed"));
    }
    println!("deleted {id}");
    Ok(())
}

/// Prints the node's status and known hosts.
pub fn status(addr: SocketAddr) -> anyhow::Result<()> {
    let (_, body) = exchange(addr, "GET", "/status", &[])?;
    let s: serde_json::Value = serde_json::from_slice(&body).context("status is not JSON")?;
    println!(
        "node {} site {} ready {} uptime {}s items {} groups cold/goldilocks/hot {}/{}/{}",
        s["short"].as_str().unwrap_or("?"),
        s["site"].as_str().unwrap_or("?"),
        s["ready"],
        s["uptime_secs"],
        s["items"],
        s["groups"]["cold"],
        s["groups"]["goldilocks"],
        s["groups"]["hot"]
    );
    let (_, body) = exchange(addr, "GET", "/peers", &[])?;
    let peers: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
    println!(
        "{:<12} {:<22} {:<16} {:<10} {:<8} {:>8}",
        "PEER", "ADDRESS", "SITE", "SOURCE", "STATE", "RTT ms"
    );
    for p in peers {
        println!(
            "{:<12} {:<22} {:<16} {:<10} {:<8} {:>8}",
            p["short"].as_str().unwrap_or("?"),
            p["addrs"][0].as_str().unwrap_or("?"),
            p["site"].as_str().unwrap_or("?"),
            p["source"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["rtt_ms"]
                .as_f64()
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// Drains the node and prints how many groups were handed over.
pub fn drain(addr: SocketAddr, timeout: f64) -> anyhow::Result<()> {
    if !(timeout.is_finite() && timeout >= 0.0) {
        bail!("--timeout must be a number of seconds, 0 or more");
    }
    let (status, body) = exchange(addr, "POST", &format!("/drain?timeout_secs={timeout}"), &[])?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("drain answered {status} without JSON"))?;
    println!(
        "drained: {} groups, {} handed over, {} not handed over (no replacement {}, unconfirmed {}, still pending {}, not holding {}); {} items still held locally",
        v["groups"],
        v["handed_over"],
        v["not_handed_over"],
        v["no_replacement"],
        v["unconfirmed"],
        v["pending"],
        v["not_holding"],
        v["items"]
    );
    if status != 200 {
        bail!("{} groups were not handed over", v["not_handed_over"]);
    }
    Ok(())
}
