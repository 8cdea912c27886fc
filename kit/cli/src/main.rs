//! `butter-kit`: Butter's testbed as one tool. The Makefile's `up`, `status`, `down`, `chaos`,
//! `bench-kit` and `monitor` targets call it.
//!
//! ```text
//! butter-kit up [--scale N] [--wait SECS]    bring the network up, wait until every node is ready, table
//! butter-kit status                          the table, now
//! butter-kit down                            remove everything `up` made
//! butter-kit chaos run SCENARIO | kill … | heal | status    the chaos driver (compose)
//! butter-kit bench [--scale N] [--runs R]    image size, start-to-serving time, network memory
//! butter-kit monitor [--port P]              Debian's prometheus on the host, scraping the nodes
//! butter-kit render [--topology F] [--out D] what the backend would run for a topology
//! butter-kit run EXPERIMENT [--seed S]       an experiment (experiments/*.toml) on the backend
//! butter-kit compare REPORT…                 reports' back-at-r figures side by side
//! ```
//!
//! `--backend compose` (the default) drives the docker compose testbed; `--backend netns` the
//! netns lab (`netns/lab.sh`, root); `--backend k8s` renders only. `up --topology F` and
//! `render --topology F` take a topology file (`topologies/*.toml`).

mod bench;
mod experiment;
mod netns;
mod render;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use butter_testbed::prometheus::{HostPrometheus, Target};
use butter_testbed::testbed::{self, Testbed, UpOptions};
use butter_testbed::topology::{self, Topology};
use butter_testbed::{network, readiness};
use clap::{Parser, Subcommand, ValueEnum};

/// Drives Butter's testbed: the docker compose network (3 LANs, a WAN, dual-homed gateways) or
/// the netns lab.
#[derive(Parser, Debug)]
#[command(name = "butter-kit", version, about)]
struct Cli {
    /// Repository root (holds compose/, netns/ and dashboards/).
    #[arg(long, default_value = ".", global = true)]
    root: PathBuf,
    /// Where the network runs: docker compose, network namespaces on this host (root), or
    /// Kubernetes (render only).
    #[arg(long, value_enum, default_value_t = Backend::Compose, global = true)]
    backend: Backend,
    #[command(subcommand)]
    command: Cmd,
}

/// Where the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// The docker compose testbed (`compose/docker-compose.yml`).
    Compose,
    /// The netns lab (`netns/lab.sh`; root).
    Netns,
    /// Kubernetes: `render` writes a kustomize overlay for `kubectl apply -k`.
    K8s,
}

impl Backend {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Compose => "compose",
            Backend::Netns => "netns",
            Backend::K8s => "k8s",
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the network (idempotent), wait until every node is ready, print the table.
    Up {
        /// Nodes per LAN (gateways not counted) of the default network.
        #[arg(long, default_value_t = network::DEFAULT_SCALE, conflicts_with = "topology")]
        scale: usize,
        /// Bring up this topology file instead (topologies/*.toml; see topologies/README.md).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Also start Prometheus and Grafana (compose profile `monitoring`; needs a registry).
        #[arg(long)]
        monitoring: bool,
        /// Seconds to wait until every node answers /ready (default: 90, or 1 s per container
        /// where that is more). On a timeout, each node not ready is listed with its /ready
        /// answer.
        #[arg(long, visible_alias = "timeout", value_name = "SECS")]
        wait: Option<u64>,
    },
    /// Print the table of every node (no waiting; 64 nodes asked at a time, two requests each).
    Status,
    /// Remove every container, network and volume (compose) or namespace (netns) `up` made.
    Down,
    /// The chaos driver: faults, scenarios with a survival check (compose backend).
    Chaos(butter_chaos::cli::Cli),
    /// Image size, container start-to-serving time and the whole network's memory (compose).
    Bench {
        /// Nodes per LAN while measuring memory.
        #[arg(long, default_value_t = network::DEFAULT_SCALE)]
        scale: usize,
        /// Start-time samples.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Seconds to let the network settle before reading memory.
        #[arg(long, default_value_t = 15)]
        settle: u64,
        /// The static binary, for the process-level start time (skipped if absent).
        #[arg(
            long,
            default_value = "target/static/x86_64-unknown-linux-gnu/release/butter-node"
        )]
        bin: PathBuf,
        /// Leave the network up afterwards even if the bench started it.
        #[arg(long)]
        keep: bool,
    },
    /// Print what the backend would run for a topology: the compose file, the lab.sh command,
    /// or the kustomize overlay (written with --out).
    Render {
        /// The topology file.
        #[arg(long, default_value = "topologies/default.toml")]
        topology: PathBuf,
        /// Write the rendering here (a file for compose, a directory for k8s) instead of
        /// printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run an experiment (experiments/*.toml: topology, workload, faults, checks) on the
    /// compose or netns backend: bring its topology up if it is not, store the items, inject
    /// the faults, check every item, print the summary table and write report.json,
    /// summary.txt, faults.jsonl and health.svg to OUT/BACKEND/EXPERIMENT/; then take down
    /// what it brought up. Ctrl-C heals what the run broke first. Exit 0 pass, 1 items lost
    /// (beyond checks.max_lost) or wrong bytes, 2 a bad experiment file, 3 a back-at-r figure
    /// over checks.back_at_r_secs, 4 the run could not complete, 130 interrupted.
    Run {
        /// The experiment file (see experiments/README.md).
        experiment: PathBuf,
        /// Seed of the items and of every random target (overrides the file's; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Override the workload's number of items.
        #[arg(long)]
        items: Option<usize>,
        /// Where reports go (OUT/BACKEND/EXPERIMENT/).
        #[arg(long, default_value = "experiments-out")]
        out: PathBuf,
        /// Leave the network up afterwards (a network that was up before is always left up).
        #[arg(long)]
        keep: bool,
        /// Seconds to wait for every node's readiness after bringing the topology up (default:
        /// 90, or 1 s per node where that is more).
        #[arg(long, visible_alias = "wait", value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Print the back-at-r figures, items lost and verdicts of several runs side by side (one
    /// column per report, e.g. the parity experiment on netns and on compose). Exit 1 if any
    /// report failed.
    Compare {
        /// report.json files, or the directories `run` wrote them to.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
    /// Run Debian's prometheus on the host against the running nodes until interrupted.
    Monitor {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 9090)]
        port: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("butter-kit: {e:#}");
            // A topology file at fault: a usage error, like a bad flag.
            let bad_file = e.chain().any(|c| c.is::<topology::Error>());
            std::process::exit(if bad_file { 2 } else { 1 });
        }
    }
}

fn compose_only(backend: Backend, what: &str) -> Result<()> {
    if backend != Backend::Compose {
        bail!(
            "`butter-kit {what}` runs on the compose backend only for now (the {} backend has \
             no {what} yet); use --backend compose",
            backend.name()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<i32> {
    let root = cli
        .root
        .canonicalize()
        .with_context(|| format!("--root {}", cli.root.display()))?;
    let backend = cli.backend;
    let k8s_renders_only = || {
        anyhow::anyhow!(
            "the k8s backend only renders: `butter-kit --backend k8s render --out DIR`, then \
             `kubectl apply -k DIR`"
        )
    };
    // Topology files are named in messages as given, relative to --root when that is here.
    let here = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    let load = |path: &Path| {
        if path.is_absolute() || here.as_deref() == Some(root.as_path()) {
            Topology::load(path)
        } else {
            Topology::load(&root.join(path))
        }
    };
    match cli.command {
        Cmd::Up {
            scale,
            topology,
            monitoring,
            wait,
        } => match (backend, topology) {
            (Backend::Compose, None) => up(&root, scale, monitoring, wait),
            (Backend::Compose, Some(t)) => up_topology(&root, &load(&t)?, monitoring, wait),
            (Backend::Netns, None) => netns::up(&root, scale, wait),
            (Backend::Netns, Some(t)) => netns::up_topology(&root, &load(&t)?, wait),
            (Backend::K8s, _) => Err(k8s_renders_only()),
        },
        Cmd::Status => match backend {
            Backend::Compose => status(&root),
            Backend::Netns => netns::status(&root),
            Backend::K8s => Err(k8s_renders_only()),
        },
        Cmd::Down => match backend {
            Backend::Compose => down(&root),
            Backend::Netns => netns::down(&root),
            Backend::K8s => Err(k8s_renders_only()),
        },
        Cmd::Render { topology, out } => {
            render::render(&root, backend, &load(&topology)?, out.as_deref())
        }
        Cmd::Chaos(chaos) => {
            compose_only(backend, "chaos")?;
            return Ok(butter_chaos::cli::main(chaos, "butter-kit chaos"));
        }
        Cmd::Bench {
            scale,
            runs,
            settle,
            bin,
            keep,
        } => {
            compose_only(backend, "bench")?;
            bench::bench(&root, scale, runs, settle, &root.join(bin), keep)
        }
        Cmd::Run {
            experiment,
            seed,
            items,
            out,
            keep,
            timeout,
        } => {
            return experiment::run(
                &root,
                backend,
                experiment::RunArgs {
                    experiment,
                    seed,
                    items,
                    out: root.join(out),
                    keep,
                    timeout,
                },
            );
        }
        Cmd::Compare { reports } => return experiment::compare(&reports),
        Cmd::Monitor { port } => {
            compose_only(backend, "monitor")?;
            monitor(&root, port)
        }
    }?;
    Ok(0)
}

fn down(root: &Path) -> Result<()> {
    let bed = Testbed::open(root)?;
    bed.down()?;
    println!(
        "removed the {} project's containers, networks and volumes",
        bed.project()
    );
    Ok(())
}

fn urls(bed: &Testbed) -> Result<()> {
    let urls = bed.monitoring_urls()?;
    if urls.is_empty() {
        println!(
            "Prometheus/Grafana: not started (their images come from a registry: \
             `make up MONITORING=1` where one is reachable, then Grafana on \
             http://localhost:3000 and Prometheus on http://localhost:9090).\n\
             Without a registry: `make monitor` runs Debian's prometheus on the host at \
             http://127.0.0.1:9090 scraping these nodes."
        );
    }
    for u in urls {
        println!("{u}");
    }
    Ok(())
}

/// `--wait SECS`, else [`readiness::default_wait`] for `containers`.
fn ready_wait(wait: Option<u64>, containers: usize) -> Duration {
    wait.map_or_else(|| readiness::default_wait(containers), Duration::from_secs)
}

fn up(root: &Path, scale: usize, monitoring: bool, wait: Option<u64>) -> Result<()> {
    let bed = Testbed::open(root)?;
    let start = Instant::now();
    bed.up(&UpOptions { scale, monitoring })?;
    let containers = network::LANS.len() * (scale + 1);
    let created = start.elapsed();
    let waiting = ready_wait(wait, containers);
    eprintln!(
        "{containers} containers up after {:.1} s; waiting up to {waiting:?} until each answers \
         /ready",
        created.as_secs_f64()
    );
    let views = bed.wait_ready(waiting)?;
    println!(
        "\n{} nodes ready in {:.1} s ({} LANs × {scale} + {} gateways; containers up after \
         {:.1} s, every node ready {:.1} s later)\n",
        views.len(),
        start.elapsed().as_secs_f64(),
        network::LANS.len(),
        network::LANS.len(),
        created.as_secs_f64(),
        (start.elapsed() - created).as_secs_f64()
    );
    print!("{}", testbed::table(&views));
    urls(&bed)
}

fn up_topology(root: &Path, t: &Topology, monitoring: bool, wait: Option<u64>) -> Result<()> {
    let start = Instant::now();
    let bed = Testbed::up_topology(root, t, monitoring)?;
    let views = bed.wait_ready(ready_wait(wait, t.total_nodes()))?;
    println!(
        "\n{} nodes ready in {:.1} s (topology {}: {} sites, {} nodes with gateways; compose \
         file {})\n",
        views.len(),
        start.elapsed().as_secs_f64(),
        t.name,
        t.sites.len(),
        t.total_nodes(),
        bed.compose()?.file().display()
    );
    print!("{}", testbed::table(&views));
    urls(&bed)
}

fn status(root: &Path) -> Result<()> {
    let bed = Testbed::open(root)?;
    let all = bed.nodes()?;
    if all.is_empty() {
        println!("no {} network running (`make up` starts it)", bed.project());
        return Ok(());
    }
    let stopped: Vec<String> = all
        .iter()
        .filter(|c| !c.is_up())
        .map(|c| c.label())
        .collect();
    print!("{}", testbed::table(&bed.observe()?));
    if !stopped.is_empty() {
        println!("stopped: {}", stopped.join(", "));
    }
    urls(&bed)
}

fn monitor(root: &Path, port: u16) -> Result<()> {
    let bed = Testbed::open(root)?;
    let targets: Vec<Target> = bed
        .nodes()?
        .iter()
        .filter(|c| c.is_up())
        .filter_map(Target::of)
        .collect();
    if targets.is_empty() {
        bail!("no running nodes: `make up` first");
    }
    let p = HostPrometheus::start(&targets, Duration::from_secs(5), port)?;
    println!(
        "Prometheus (Debian's, on the host) at http://{} scraping {} nodes; Ctrl-C stops it.\n\
         Nodes added later need a restart of this command.",
        p.addr(),
        targets.len()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
