//! `butter-chaos`: breaks the docker compose testbed on purpose and proves the data survived.
//!
//! # Layout
//!
//! - [`scenario`]: the TOML scenario format (steps, waits, survival parameters).
//! - [`target`]: which containers a step hits; seeded random choices.
//! - [`backend`]: where faults go: the compose project ([`butter_testbed::engine::Engine`]) or
//!   the netns lab ([`netns::Lab`]), both presenting their nodes as the same records.
//! - [`netns`]: the netns lab's nodes and faults, through `netns/lab.sh`.
//! - [`experiment`]: experiment files (`experiments/*.toml`): a topology, a workload, a fault
//!   schedule and checks, validated against the topology with file:line errors.
//!
//! The Docker Engine API, the node API client and the plotter are `butter-testbed`'s
//! (`kit/support`), shared with `butter-kit` and the test tiers.
//! - [`cli`]: the command line (`butter-chaos …`, `butter-kit chaos …`).
//! - [`loss`]: packet loss with nftables inside a container's network namespace (`nsenter`).
//! - [`faults`]: the fault actions and `heal`, each written to the fault log.
//! - [`log`]: the JSON-lines fault log with timestamps.
//! - [`exporter`]: faults as Prometheus series (`/metrics` while a scenario runs) for the
//!   dashboards' "Chaos faults" annotation.
//! - [`reads`]: reads at a steady rate while the faults go on (availability, latency).
//! - [`survival`]: store seeded items, observe replica health, retrieve and verify every item.
//! - [`report`]: the summary table, `report.json` and the `health.svg` plot.
//! - [`run`]: the scenario runner tying it together.
//!
//! # Concepts
//!
//! - **Faults** go in through the Engine API (kill = SIGKILL, a crash; pause = cgroup freezer;
//!   restart = SIGTERM then start), at the IP layer (nftables drops UDP, i.e. QUIC), or in the
//!   topology (a *partition* disconnects a LAN's gateway from the WAN network: a WAN cut).
//! - **Seeds**: one seed drives the item bytes and, in a separate stream, every random target,
//!   so a failing run replays with `--seed`. The seed is printed and logged.
//! - **At r**: an item counts as at r when its group reports r members `live && holding` whose
//!   containers are really running (see [`survival`]); time back to r is measured from the last
//!   fault to the first once-a-second observation with every item at r.
//! - **Lost**: after the final heal, an item is lost if no node other than the one that stored it
//!   returns bytes whose sha-256 is the id (asked of 3 nodes, 20 s each).
//!
//! # Example
//!
//! ```no_run
//! use butter_chaos::run::{Options, run};
//! use butter_chaos::scenario::Scenario;
//!
//! # fn main() -> anyhow::Result<()> {
//! let scenario = Scenario::load(std::path::Path::new("compose/chaos/default.toml"))?;
//! let (report, dir) = run(Options {
//!     scenario,
//!     seed: Some(7),
//!     items: None,
//!     out: "chaos-out".into(),
//!     up: false,
//!     root: ".".into(),
//!     metrics: None,
//! })?;
//! println!("{}reports in {}", report.table(), dir.display());
//! std::process::exit(report.exit_code());
//! # }
//! ```

pub mod backend;
pub mod cli;
pub mod experiment;
pub mod exporter;
pub mod faults;
pub mod log;
pub mod loss;
pub mod netns;
pub mod reads;
pub mod report;
pub mod run;
pub mod scenario;
pub mod survival;
pub mod target;
