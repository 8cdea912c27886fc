//! Reachability questions to a node's HTTP API: its home relay, the path to a peer, and an
//! `echo` call through whatever path the node picks (`POST /peers/{id}/call/echo`).

use std::net::SocketAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use serde_json::Value;

use butter_testbed::http;
use butter_testbed::metrics::Page;

const TIMEOUT: Duration = Duration::from_secs(15);

/// `GET path` as JSON (status 200 required).
pub fn json(addr: SocketAddr, path: &str) -> Result<Value> {
    let r = http::get(addr, path, TIMEOUT)?;
    ensure!(r.status == 200, "GET {path} on {addr}: {}", r.status);
    Ok(serde_json::from_slice(&r.body)?)
}

/// The node's home relay (short id), if it has one.
pub fn home_relay(addr: SocketAddr) -> Result<Option<String>> {
    Ok(json(addr, "/status")?["home_relay"]
        .as_str()
        .map(str::to_owned))
}

/// Waits until the node at `addr` has a home relay.
pub fn wait_home_relay(addr: SocketAddr, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(r) = home_relay(addr)? {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!(
                "{addr} has no home relay after {within:?}: {}",
                json(addr, "/status")?
            );
        }
        sleep(Duration::from_millis(100));
    }
}

/// How the node at `addr` reaches peer `id`: `direct`, `relayed`, `punched`, `none`, or
/// `unknown` when the peer is not in its table.
pub fn path_to(addr: SocketAddr, id: &str) -> Result<String> {
    let peers = json(addr, "/peers")?;
    Ok(peers
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == id)
        .and_then(|p| p["path"].as_str())
        .unwrap_or("unknown")
        .to_string())
}

/// One `echo` call from the node at `addr` to peer `id`: the path the answer took and the time
/// the HTTP round trip took, or the error.
pub fn echo(addr: SocketAddr, id: &str, body: &[u8]) -> Result<(String, Duration)> {
    let start = Instant::now();
    let r = http::request(
        addr,
        "POST",
        &format!("/peers/{id}/call/echo"),
        body,
        TIMEOUT,
    )?;
    let took = start.elapsed();
    if r.status != 200 {
        bail!(
            "echo to {} from {addr}: {} {}",
            &id[..10.min(id.len())],
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    }
    ensure!(r.body == body, "echo answered other bytes");
    let path = match r.header("x-butter-path") {
        Some(p) => p.to_string(),
        None => path_to(addr, id)?,
    };
    Ok((path, took))
}

/// Calls `echo` until it answers or `within` passes; returns the path of the answer.
pub fn echo_until(addr: SocketAddr, id: &str, within: Duration) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        match echo(addr, id, b"across two NATs") {
            Ok((path, _)) => return Ok(path),
            Err(e) if Instant::now() > deadline => bail!("no answer within {within:?}: {e:#}"),
            Err(_) => sleep(Duration::from_millis(300)),
        }
    }
}

/// Sums a counter over the label sets that carry every `labels` pair in the node's `/metrics`
/// (0 when there is none).
pub fn counter(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let r = http::get(addr, "/metrics", TIMEOUT)?;
    let page = Page::parse(&r.text());
    let has_all = |l: &std::collections::BTreeMap<String, String>| {
        labels
            .iter()
            .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
    };
    Ok(page.sum_where(name, has_all).unwrap_or(0.0))
}
