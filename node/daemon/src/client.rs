//! `butter-node put | get | status | drain`: a small HTTP client for a running node's API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};

/// One HTTP/1.0 exchange: (status, body).
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("no node API at {addr}; start one with `butter-node run` or pass --http")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(if path.starts_with("/drain") {
        620
    } else {
        30
    })))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP reply")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed status line")?;
    Ok((status, buf[split + 4..].to_vec()))
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
    let (status, body) = exchange(addr, "GET", &format!("/items/{id}"), &[])?;
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
