//! The node's HTTP API as the kit and the tests read it: the records of `/status`, `/peers`,
//! `/items/{id}/group` declared once, and typed calls over [`crate::http`].
//!
//! These mirror the daemon's own serialisers (`node/daemon/src/http.rs`); fields the kit does not
//! need are optional, so the daemon can grow its records without breaking the kit.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::http::{self, get, request};

/// Why a call to a node's API failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No answer (connect, timeout, not HTTP).
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The node answered with another status than the call expects.
    #[error("{method} {addr}{path}: HTTP {status}: {body}")]
    Status {
        /// The request method.
        method: &'static str,
        /// The node's HTTP address.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// The status it answered.
        status: u16,
        /// The body it answered (the daemon's error message).
        body: String,
    },
    /// The node answered JSON of another shape.
    #[error("{addr}{path}: not the JSON expected")]
    Json {
        /// The node's HTTP address.
        addr: SocketAddr,
        /// The request path.
        path: String,
        /// What did not match.
        #[source]
        source: serde_json::Error,
    },
}

/// What the API calls return.
pub type Result<T> = std::result::Result<T, Error>;

fn status_error(method: &'static str, addr: SocketAddr, path: &str, r: &http::Response) -> Error {
    Error::Status {
        method,
        addr,
        path: path.to_string(),
        status: r.status,
        body: r.error(),
    }
}

/// Timeout for one request to a node: a bridge hop or a veth, so anything slower is a stuck node.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(1);

fn json<T: for<'de> Deserialize<'de>>(addr: SocketAddr, path: &str) -> Result<T> {
    json_within(addr, path, NODE_TIMEOUT)
}

/// `GET {path}` as JSON within `timeout` (200 only).
pub fn json_within<T: for<'de> Deserialize<'de>>(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<T> {
    let r = get(addr, path, timeout)?;
    if r.status != 200 {
        return Err(status_error("GET", addr, path, &r));
    }
    serde_json::from_slice(&r.body).map_err(|source| Error::Json {
        addr,
        path: path.to_string(),
        source,
    })
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
        self.state == "suspect"
    }
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
    /// The answering node is left out of the view it shows (a holder on its way out, waiting
    /// for the members' proofs): its view may be stale.
    #[serde(default)]
    pub orphan: bool,
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
    let r = request(addr, "PUT", "/items", content, Duration::from_secs(10))?;
    if r.status != 201 {
        return Err(status_error("PUT", addr, "/items", &r));
    }
    serde_json::from_slice::<Put>(&r.body)
        .map(|p| p.id)
        .map_err(|source| Error::Json {
            addr,
            path: "/items".into(),
            source,
        })
}

/// `GET /items/{id}`: retrieves an item through the node (search included); the content.
pub fn get_item(addr: SocketAddr, id: &str) -> Result<Vec<u8>> {
    let path = format!("/items/{id}");
    let r = get(addr, &path, Duration::from_secs(15))?;
    if r.status != 200 {
        return Err(status_error("GET", addr, &path, &r));
    }
    Ok(r.body)
}
