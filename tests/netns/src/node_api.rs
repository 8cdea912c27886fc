//! The parts of butter-node's HTTP API the lab reads: `/health`, `/ready`, `/status`, `/peers`.
//!
//! Fields are optional where the tests do not need them, so the daemon can grow its records
//! without breaking the lab.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::http;

/// Timeout for one API request. The admin path is a veth or two: anything slower is a stuck node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// One entry of `GET /peers`.
#[derive(Debug, Clone, Deserialize)]
pub struct Peer {
    /// Peer id, 64 hex digits.
    pub id: String,
    /// Addresses the node knows for the peer, `ip:port`.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The peer's site label.
    #[serde(default)]
    pub site: Option<String>,
    /// How the peer was discovered: multicast, bootstrap, exchange or inbound.
    #[serde(default)]
    pub source: Option<String>,
    /// Liveness state: alive or suspect.
    #[serde(default)]
    pub state: Option<String>,
}

impl Peer {
    /// IP addresses of the peer (addresses that do not parse are skipped).
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs
            .iter()
            .filter_map(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
    }

    /// Whether the node reports the peer as suspected (not yet evicted).
    pub fn is_suspect(&self) -> bool {
        self.state.as_deref() == Some("suspect")
    }
}

/// `GET /status`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// The node's own peer id.
    pub id: String,
    /// The node's site label.
    #[serde(default)]
    pub site: Option<String>,
}

fn get_ok(http: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let response = http::get(http, path, REQUEST_TIMEOUT)?;
    if response.status != 200 {
        bail!("GET {path} on {http}: status {}", response.status);
    }
    Ok(response.body)
}

/// `GET /peers`.
pub fn peers(http: SocketAddr) -> Result<Vec<Peer>> {
    let body = get_ok(http, "/peers")?;
    serde_json::from_slice(&body).with_context(|| format!("/peers of {http} is not a peer list"))
}

/// `GET /status`.
pub fn status(http: SocketAddr) -> Result<Status> {
    let body = get_ok(http, "/status")?;
    serde_json::from_slice(&body).with_context(|| format!("/status of {http} is not a status"))
}

/// `GET /ready`: `Ok(true)` on 200, `Ok(false)` on 503.
pub fn ready(http: SocketAddr) -> Result<bool> {
    let response = http::get(http, "/ready", REQUEST_TIMEOUT)?;
    Ok(response.status == 200)
}
