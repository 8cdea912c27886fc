//! The chaos driver's command line, shared by `butter-chaos` and `butter-kit chaos` (see the
//! crate docs and `--help`).
//!
//! ```text
//! butter-chaos run compose/chaos/default.toml [--seed N] [--items M] [--up]
//! butter-chaos kill random-node [--count 2]      butter-chaos kill lan-a-1
//! butter-chaos pause gw-b | unpause gw-b | restart random
//! butter-chaos kill-lan lan-c | partition lan-b | loss lan-a-2 30
//! butter-chaos heal | status
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use butter_testbed::engine::Engine;

use crate::faults::Chaos;
use crate::log::FaultLog;
use crate::run::{self, Options};
use crate::scenario::Scenario;
use clap::{Args, Subcommand};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The chaos command line: its global options and one command.
#[derive(Args, Debug)]
pub struct Cli {
    /// Where logs, reports and partition state go (one-shot faults append to faults.jsonl).
    #[arg(long, default_value = "chaos-out", global = true)]
    out: PathBuf,
    /// Seed of random choices (printed; default: random).
    #[arg(long, global = true)]
    seed: Option<u64>,
    #[command(subcommand)]
    command: Cmd,
}

/// One chaos command.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// SIGKILL containers: a name (lan-a-1, gw-b), random, random-node or random-gateway.
    Kill {
        /// Container or random choice.
        target: String,
        /// How many (random targets).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Freeze containers (cgroup freezer): alive to the kernel, silent to peers.
    Pause {
        /// Container or random choice.
        target: String,
        /// How many (random targets).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Thaw a paused container (random: one of the paused).
    Unpause {
        /// Container or random.
        target: String,
    },
    /// Stop (SIGTERM, 5 s grace) and start containers.
    Restart {
        /// Container or random choice.
        target: String,
        /// How many (random targets).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// SIGKILL every container of a LAN, gateway included (lan-a, lan-b, lan-c or random).
    KillLan {
        /// The LAN.
        lan: String,
    },
    /// Cut a LAN from the WAN: disconnect its gateway from the WAN network (a WAN cut; `heal`
    /// reconnects it).
    Partition {
        /// The LAN.
        lan: String,
    },
    /// Drop PCT % of a node's UDP (QUIC, beacons) both ways: nftables in its network namespace
    /// (needs root, nsenter and nft on the host).
    Loss {
        /// Container or random choice.
        target: String,
        /// Loss in percent (1-100).
        #[arg(value_parser = clap::value_parser!(u8).range(1..=100))]
        pct: u8,
    },
    /// Undo everything: unpause, start stopped containers, reconnect gateways, remove loss.
    Heal,
    /// List the testbed's containers and their state.
    Status,
    /// Run a scenario (TOML) with the survival check; exit 1 on any lost item, 2 if r was missed.
    Run {
        /// The scenario file (e.g. compose/chaos/default.toml).
        scenario: PathBuf,
        /// Override the scenario's number of items.
        #[arg(long)]
        items: Option<usize>,
        /// Bring the compose network up first if it is not (needs the image: `make image`).
        #[arg(long)]
        up: bool,
        /// Repository root (for --up).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Serve the faults as Prometheus series here while running, for the dashboards'
        /// "Chaos faults" annotation (`off` to disable).
        #[arg(long, default_value = "0.0.0.0:9465")]
        metrics: String,
    },
}

/// Runs `cli`; the process exit code (0 fine, 1 items lost, 2 r missed, 3 the driver failed).
pub fn main(cli: Cli, program: &str) -> i32 {
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: {e:#}");
            3
        }
    }
}

fn execute(cli: Cli) -> Result<i32> {
    if let Cmd::Run {
        scenario,
        items,
        up,
        root,
        metrics,
    } = &cli.command
    {
        let metrics = match metrics.as_str() {
            "off" | "" => None,
            a => Some(a.parse().with_context(|| {
                format!("--metrics {a:?}: expected an address like 0.0.0.0:9465, or off")
            })?),
        };
        let sc = Scenario::load(scenario)?;
        let (report, dir) = run::run(Options {
            scenario: sc,
            seed: cli.seed,
            items: *items,
            out: cli.out.clone(),
            up: *up,
            root: root.clone(),
            metrics,
        })?;
        println!();
        print!("{}", report.table());
        println!(
            "reports: {0}/summary.txt {0}/report.json {0}/health.svg {0}/faults.jsonl",
            dir.display()
        );
        return Ok(report.exit_code());
    }

    let project = butter_testbed::network::project();
    let engine = Engine::connect(&project).context("Docker engine unavailable")?;
    if let Cmd::Status = cli.command {
        println!(
            "{:<10} {:<8} {:<7} {:<8} {:<16} NETWORKS",
            "CONTAINER", "ROLE", "LAN", "STATE", "HTTP"
        );
        for c in engine.containers()? {
            println!(
                "{:<10} {:<8} {:<7} {:<8} {:<16} {}",
                c.label(),
                format!("{:?}", c.role).to_lowercase(),
                c.lan,
                format!("{:?}", c.state).to_lowercase(),
                c.http()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.ips.keys().cloned().collect::<Vec<_>>().join(",")
            );
        }
        return Ok(0);
    }
    std::fs::create_dir_all(&cli.out)?;
    let log = FaultLog::append(&cli.out.join("faults.jsonl"), Instant::now())?;
    let seed = cli.seed.unwrap_or_else(crate::target::fresh_seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let chaos = Chaos::new(&engine, &log, cli.out.clone());
    let random = matches!(&cli.command, Cmd::Kill { target, .. } | Cmd::Pause { target, .. } | Cmd::Unpause { target } | Cmd::Restart { target, .. } | Cmd::Loss { target, .. } if target.starts_with("random"))
        || matches!(&cli.command, Cmd::KillLan { lan } | Cmd::Partition { lan } if lan == "random");
    if random {
        println!("seed {seed} (replay with --seed {seed})");
        log.write("seed", serde_json::json!({ "seed": seed }));
    }
    let (what, hit) = match &cli.command {
        Cmd::Kill { target, count } => ("killed", chaos.kill(target, *count, &mut rng)?),
        Cmd::Pause { target, count } => ("paused", chaos.pause(target, *count, &mut rng)?),
        Cmd::Unpause { target } => ("unpaused", chaos.unpause(target, &mut rng)?),
        Cmd::Restart { target, count } => ("restarted", chaos.restart(target, *count, &mut rng)?),
        Cmd::KillLan { lan } => ("killed", chaos.kill_lan(lan, &mut rng)?),
        Cmd::Partition { lan } => ("cut from the WAN", chaos.partition(lan, &mut rng)?),
        Cmd::Loss { target, pct } => ("lossy", chaos.loss(target, *pct, 1, &mut rng)?),
        Cmd::Heal => {
            let h = chaos.heal()?;
            println!(
                "unpaused [{}] started [{}] reconnected [{}] loss cleared on {} containers",
                h.unpaused.join(", "),
                h.started.join(", "),
                h.reconnected.join(", "),
                h.loss_cleared.len()
            );
            for e in &h.errors {
                eprintln!("heal: {e}");
            }
            return Ok(if h.errors.is_empty() { 0 } else { 3 });
        }
        Cmd::Status | Cmd::Run { .. } => unreachable!("handled above"),
    };
    println!("{what}: {}", hit.join(", "));
    Ok(0)
}
