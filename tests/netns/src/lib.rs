//! Acceptance tests and benchmarks of butter-node's discovery and liveness in the netns lab.
//!
//! # Layout
//! - [`lab`]: drives `netns/lab.sh` (up, hosts, kill, restart, loss, down) under a file lock.
//! - [`node_api`]: the node's HTTP API (`/peers`, `/status`, `/ready`) as typed calls, through
//!   `butter-testbed` (the one client and the records shared with the other tiers).
//! - [`observe`]: questions over one poll of every table (who lags, who knows a foreign host).
//! - [`stats`]: percentiles and the benchmark summary table.
//! - [`relay_api`]: home relay, path to a peer and `echo` calls (the relay scenarios).
//! - `tests/discovery.rs`: the issue-3 acceptance scenarios.
//! - `tests/relay.rs`: the issue-5 acceptance scenarios behind NATs.
//! - `src/bin/bench_discovery.rs`: T6–T8 figures (`bench-discovery`).
//! - `src/bin/bench_relay.rs`: hole-punch success and time by NAT type, relayed vs direct latency
//!   (`bench-relay`).
//!
//! # Concepts
//! The lab is machine-wide state (namespaces named `bt-*`), so one lab exists at a time: a
//! [`lab::Lab`] holds a file lock from `up` until it is dropped, which takes the lab down. Everything
//! here needs root and a built `butter-node`; without them, tests print `SKIPPED …` and pass,
//! unless `BUTTER_NETNS_REQUIRE=1`.
//!
//! The root namespace reaches every node's HTTP API through the lab's admin link to the router;
//! that link carries no node traffic and is exempt from injected loss.
//!
//! # Example
//! ```no_run
//! use butter_netns_tests::lab::{Config, Environment, Lab};
//! # fn main() -> anyhow::Result<()> {
//! let Some(env) = Environment::detect_or_skip("example") else { return Ok(()) };
//! let lab = Lab::up(&env, &Config::new(1, 3))?;
//! let tables = lab.poll(&[0, 1, 2]);
//! println!("{tables:?}");
//! # Ok(())
//! # }
//! ```

pub mod lab;
pub mod node_api;
pub mod observe;
pub mod relay_api;
pub mod stats;
