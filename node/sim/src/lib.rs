//! # butter-sim — a deterministic discrete-event simulator over `butter-proto`
//!
//! The simulator runs the *same* node core as the real node (`butter_proto::node::NodeCore`: the
//! known-host table, LAN beacons, bootstrap and exchange, SWIM, PCG and RBFS with the glue
//! between them), thousands of them, on proto's deterministic network
//! (`butter_proto::node::net::Net`), and measures what the original Butter's report measured,
//! side by side. Nothing about membership is modelled: tables fill from beacons and exchanges,
//! and a death is known when SWIM declares it.
//!
//! ## Layout
//! - [`world`]: the simulated world — the node cores on the network (sites, latency, loss,
//!   partitions), the workload and churn, metrics samples and the event-log hash.
//! - [`churn`]: churn models (the original's per-second chance, exponential and heavy-tailed
//!   sessions, a whole site failing).
//! - [`rigs`]: the churn rig, the retrieval rig, the scale run and the maintenance-cost check.
//! - [`explore`]: the fault explorer's scenarios and invariants.
//! - [`output`]: CSV/JSON series, SVG plots and printed tables.
//!
//! ## Concepts
//! - **Determinism**: one seeded RNG drives the world and seeds every node's RNG; containers iterate
//!   in a fixed order; events at the same instant run in the order they were scheduled. The same
//!   seed therefore gives the same event log, summarised by [`world::Report::log_hash`].
//! - **Membership is the node's own**: a node starts with an empty table, learns its site from
//!   beacons and the other sites from its bootstrap addresses (the first node of its own site and
//!   of the next two) and exchanges, and a replacement node (new identity, same address) does
//!   the same. Failure detection is SWIM's:
//!   the churn rig reports the time from a death to the first table that dropped it.
//! - **Honest counting**: every message the state machines emit is counted, by kind; for searches,
//!   every query forward and every answer hop is attributed to its search.
//!
//! ## Commands
//! Every command has `--help`, takes `--out DIR` (default `target/sim`) for series and plots, and
//! `--quiet` to hide progress bars. Build in release for the full tables.
//! - `butter-sim churn` — the original's churn regime (250 nodes, r = 3, 2 s heartbeat, 30 s of
//!   churn, c = 1/50 … 1/10000, five seeds), beside the original's 74.8 / 88.4 / 98.4 / 100 %,
//!   with *data lost* and *retrieval failed* reported apart. `--grace 0` shows the regime without
//!   the restart grace window (nodes here never come back).
//! - `butter-sim retrieval` — BFS vs the original RBFS vs ours on 100 and 1000 nodes.
//! - `butter-sim scale` — 10 000 nodes × 10 simulated minutes of churn, with the wall time (T14).
//! - `butter-sim maintenance` — heartbeat and summary messages per node per second with 10 and
//!   10 000 replicas per node (T13).
//! - `butter-sim explore --seeds A..B` — the seeded fault explorer ([`explore`]): random
//!   topologies, churn, partitions and loss, invariants checked after every run, failing seeds
//!   printed with the command that replays them.
//! - `butter-sim run` — one custom scenario (churn model, loss, partitions) with CSV, JSON and SVG.
//!
//! Small versions of every rig run as `cargo test -p butter-sim` (seconds in debug).
//!
//! ```
//! use std::time::Duration;
//! use butter_sim::world::{run, Scenario};
//! let report = run(Scenario { nodes: 20, items: 10, duration: Duration::from_secs(10), ..Scenario::default() });
//! assert_eq!(report.lost_at_end, 0);
//! assert_eq!(report.log_hash, run(Scenario { nodes: 20, items: 10, duration: Duration::from_secs(10), ..Scenario::default() }).log_hash);
//! ```

pub mod churn;
pub mod explore;
pub mod output;
pub mod rigs;
pub mod world;
