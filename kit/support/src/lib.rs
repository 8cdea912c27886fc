//! `butter-testbed`: what Butter's user tools (`butter-kit`, `butter-chaos`, in `kit/`) and the
//! test tiers (`tests/`) share, each piece written once.
//!
//! # Layout
//!
//! - [`http`]: the one blocking HTTP/1.1 client to nodes (and to a host Prometheus).
//! - [`api`]: the node's HTTP API records (`/status`, `/peers`, `/items/{id}/group`) declared
//!   once, and typed calls.
//! - [`metrics`]: the one Prometheus text-format reader (a node's `/metrics`).
//! - [`plot`]: the one plotter (SVG line charts with fault markers).
//! - [`engine`]: the one Docker Engine API wrapper (bollard): the project's containers, their
//!   addresses and health, kill/pause/restart/disconnect, memory and image size.
//! - [`network`]: what `compose/docker-compose.yml` builds (project, LANs, ports), in one place.
//! - [`compose`]: runs `docker-compose` (1.29) or `docker compose` (v2) on that file.
//! - [`fanout`]: the one bounded fan-out (a blocking call per node, a few at a time).
//! - [`readiness`]: the one wait until every node answers `/ready` (bounded fan-out, one
//!   request per node per round, `ready N/M`, the table of laggards on a timeout).
//! - [`testbed`]: the running network as a whole: bring it up, wait until every node is ready,
//!   observe every node, print the status table.
//! - [`prometheus`]: Debian's `prometheus` run on the host against the containers (the
//!   monitoring images cannot be pulled here), its query API, and `promtool check config`.
//! - [`dashboards`]: the Grafana dashboards of `dashboards/`: panels, queries, template variables.
//! - [`topology`]: topology files (`topologies/*.toml`) and their renderers for compose, netns
//!   and Kubernetes.
//!
//! # Concepts
//!
//! Containers are found through the Engine API by their compose labels
//! (`com.docker.compose.project`, `…service`) and the kit's own (`butter.role`, `butter.lan`),
//! never by parsing `docker ps`, so compose v1 and v2 naming (`butter_lan-a_1` vs
//! `butter-lan-a-1`) do not matter. The host reaches every bridge network, so it talks to each
//! node's HTTP port on the node's LAN address directly; nothing is published on host ports.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use butter_testbed::testbed::{Testbed, UpOptions};
//!
//! # fn main() -> anyhow::Result<()> {
//! let bed = Testbed::open(std::path::Path::new("."))?;
//! bed.up(&UpOptions::default())?;
//! let views = bed.wait_ready(Duration::from_secs(90))?;
//! println!("{}", butter_testbed::testbed::table(&views));
//! bed.down()?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod compose;
pub mod dashboards;
pub mod engine;
pub mod fanout;
pub mod host;
pub mod http;
pub mod metrics;
pub mod network;
pub mod plot;
pub mod prometheus;
pub mod readiness;
pub mod testbed;
pub mod topology;
