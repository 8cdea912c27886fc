//! The parts of butter-node's HTTP API the lab reads (`/status`, `/peers`, `/ready`): the records
//! and the client are `butter-testbed`'s; the lab only sets its own timeout.

use std::net::SocketAddr;
use std::time::Duration;

pub use butter_testbed::api::{Peer, Result, Status};
use butter_testbed::{api, http};

/// Timeout for one API request. The admin path is a veth or two, but 70+ nodes share 2 cores:
/// anything slower than this is a stuck node.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /peers`.
pub fn peers(addr: SocketAddr) -> Result<Vec<Peer>> {
    api::json_within(addr, "/peers", REQUEST_TIMEOUT)
}

/// `GET /status`.
pub fn status(addr: SocketAddr) -> Result<Status> {
    api::json_within(addr, "/status", REQUEST_TIMEOUT)
}

/// `GET /ready`: `Ok(true)` on 200, `Ok(false)` on any other status.
pub fn ready(addr: SocketAddr) -> Result<bool> {
    Ok(http::get(addr, "/ready", REQUEST_TIMEOUT)?.status == 200)
}
