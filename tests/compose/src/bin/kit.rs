//! `butter-kit`: drives the docker compose testbed (the Makefile's `up`, `status`, `down`,
//! `bench-kit` and `monitor` targets call it).
//!
//! ```text
//! butter-kit up [--scale N] [--monitoring]   compose up, wait until every node is ready, table
//! butter-kit status                          the table, now
//! butter-kit down                            remove containers, networks and volumes
//! butter-kit bench [--scale N] [--runs R]    image size, start-to-serving time, network memory
//! butter-kit monitor [--port P]              Debian's prometheus on the host, scraping the nodes
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use butter_compose_tests::api;
use butter_compose_tests::engine::{Engine, Memory, Role};
use butter_compose_tests::prometheus::{HostPrometheus, Target};
use butter_compose_tests::testbed::{self, Testbed, UpOptions};
use butter_compose_tests::topology;
use clap::{Parser, Subcommand};

/// Drives Butter's docker compose testbed: 3 LANs, a WAN, dual-homed gateways.
#[derive(Parser, Debug)]
#[command(name = "butter-kit", version, about)]
struct Cli {
    /// Repository root (holds compose/ and dashboards/).
    #[arg(long, default_value = ".", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the network (idempotent), wait until every node is ready, print the table.
    Up {
        /// Nodes per LAN (gateways not counted).
        #[arg(long, default_value_t = topology::DEFAULT_SCALE)]
        scale: usize,
        /// Also start Prometheus and Grafana (profile `monitoring`; needs a registry).
        #[arg(long)]
        monitoring: bool,
        /// Seconds to wait for every node's /ready (default: 90, or 1 s per container if more).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Print the table of every node (no waiting).
    Status,
    /// Remove every container, network and volume of the project.
    Down,
    /// Image size, container start-to-serving time and the whole network's memory.
    Bench {
        /// Nodes per LAN while measuring memory.
        #[arg(long, default_value_t = topology::DEFAULT_SCALE)]
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
    /// Run Debian's prometheus on the host against the running nodes until interrupted.
    Monitor {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 9090)]
        port: u16,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cli
        .root
        .canonicalize()
        .with_context(|| format!("--root {}", cli.root.display()))?;
    match cli.command {
        Cmd::Up {
            scale,
            monitoring,
            timeout,
        } => up(&root, scale, monitoring, timeout),
        Cmd::Status => status(&root),
        Cmd::Down => {
            let bed = Testbed::open(&root)?;
            bed.down()?;
            println!(
                "removed the {} project's containers, networks and volumes",
                bed.project()
            );
            Ok(())
        }
        Cmd::Bench {
            scale,
            runs,
            settle,
            bin,
            keep,
        } => bench(&root, scale, runs, settle, &root.join(bin), keep),
        Cmd::Monitor { port } => monitor(&root, port),
    }
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

fn up(root: &std::path::Path, scale: usize, monitoring: bool, timeout: Option<u64>) -> Result<()> {
    let bed = Testbed::open(root)?;
    let start = Instant::now();
    bed.up(&UpOptions { scale, monitoring })?;
    let containers = topology::LANS.len() * (scale + 1);
    let timeout = timeout.unwrap_or_else(|| 90.max(containers as u64));
    let views = bed.wait_ready(Duration::from_secs(timeout))?;
    println!(
        "\n{} nodes ready in {:.1} s ({} LANs × {scale} + {} gateways)\n",
        views.len(),
        start.elapsed().as_secs_f64(),
        topology::LANS.len(),
        topology::LANS.len()
    );
    print!("{}", testbed::table(&views));
    urls(&bed)
}

fn status(root: &std::path::Path) -> Result<()> {
    let bed = Testbed::open(root)?;
    let all = bed.nodes()?;
    if all.is_empty() {
        println!("no {} network running (`make up` starts it)", bed.project());
        return Ok(());
    }
    let stopped: Vec<String> = all
        .iter()
        .filter(|c| !c.running)
        .map(|c| c.label())
        .collect();
    print!("{}", testbed::table(&bed.observe()?));
    if !stopped.is_empty() {
        println!("stopped: {}", stopped.join(", "));
    }
    urls(&bed)
}

fn monitor(root: &std::path::Path, port: u16) -> Result<()> {
    let bed = Testbed::open(root)?;
    let targets: Vec<Target> = bed
        .nodes()?
        .iter()
        .filter(|c| c.running)
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Time from the start request to `/health` answering, in a fresh container on the default
/// bridge (Docker's own start work included).
fn container_start(engine: &Engine, image: &str) -> Result<f64> {
    let id = engine.create_scratch(
        image,
        &[
            "BUTTER_ALONE=true",
            "BUTTER_NO_MULTICAST=true",
            "BUTTER_DATA_DIR=/data",
        ],
        None,
    )?;
    let r = (|| {
        let t0 = Instant::now();
        engine.start(&id)?;
        let ip = engine.ip(&id)?.context("bench container has no address")?;
        let addr = SocketAddr::from((ip, topology::HTTP_PORT));
        while !api::healthy(addr) {
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("bench container never served /health");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    })();
    engine.remove(&id)?;
    r
}

/// Time from spawning the static binary on the host to `/health` answering.
fn process_start(bin: &std::path::Path, run: usize) -> Result<f64> {
    let port = 17_100 + u16::try_from(run % 500).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("butter-kit-start-{}-{run}", std::process::id()));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .arg("run")
        .args(["--listen", "127.0.0.1:0", "--alone", "--no-multicast"])
        .arg("--http")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut r = Ok(0.0);
    while !api::healthy(addr) {
        if t0.elapsed() > Duration::from_secs(10) {
            r = Err(anyhow::anyhow!("{} never served /health", bin.display()));
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if r.is_ok() {
        r = Ok(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn bench(
    root: &std::path::Path,
    scale: usize,
    runs: usize,
    settle: u64,
    bin: &std::path::Path,
    keep: bool,
) -> Result<()> {
    let bed = Testbed::open(root)?;
    let engine = bed.engine();
    let image = topology::image();
    let size = engine
        .image_size(&image)?
        .with_context(|| format!("image {image} missing: `make image`"))?;

    let mut in_container = Vec::new();
    for _ in 0..runs {
        in_container.push(container_start(engine, &image)?);
    }
    in_container.sort_by(f64::total_cmp);
    let mut in_process = Vec::new();
    if bin.is_file() {
        for i in 0..runs {
            in_process.push(process_start(bin, i)?);
        }
        in_process.sort_by(f64::total_cmp);
    }

    let running = bed.nodes()?.iter().filter(|c| c.running).count();
    let started = running == 0;
    if started || running != topology::LANS.len() * (scale + 1) {
        bed.up(&UpOptions {
            scale,
            monitoring: false,
        })?;
    }
    let views = bed.wait_ready(Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_secs(settle));
    let mut rows: Vec<(String, String, Role, Memory, usize)> = Vec::new();
    for v in &views {
        let mut m = engine.memory(&v.container.id)?;
        // The process's own RSS (text pages of the binary included) where the host can read it;
        // the cgroup's `rss` counts anonymous memory only.
        if let Some(rss) = engine
            .pid(&v.container.id)?
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        {
            m.rss = rss * 1024;
        }
        let addr = v.container.http().context("no address")?;
        // A loaded machine can miss one 1 s timeout; the table should not show a false 0.
        let peers = (0..3)
            .find_map(|_| api::peers(addr).ok())
            .map_or(0, |p| p.len());
        rows.push((
            v.container.label(),
            v.container.lan.clone(),
            v.container.role,
            m,
            peers,
        ));
    }

    println!(
        "\n## butter-kit bench ({} nodes: {} LANs × {scale} + gateways)\n",
        rows.len(),
        topology::LANS.len()
    );
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| image {image} size | {:.2} MB ({size} bytes) | ≤ 15 MB (T5) |",
        size as f64 / 1e6
    );
    println!(
        "| container start → /health, {runs} runs | p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms | ≤ 200 ms (T5) |",
        percentile(&in_container, 0.5),
        percentile(&in_container, 0.99),
        in_container.first().copied().unwrap_or(f64::NAN)
    );
    if !in_process.is_empty() {
        println!(
            "| static binary spawn → /health, {runs} runs | p50 {:.1} ms, p99 {:.1} ms | (the node's own share) |",
            percentile(&in_process, 0.5),
            percentile(&in_process, 0.99)
        );
    }
    let total: u64 = rows.iter().map(|r| r.3.working_set).sum();
    let rss_total: u64 = rows.iter().map(|r| r.3.rss).sum();
    let mut rss: Vec<f64> = rows.iter().map(|r| mib(r.3.rss)).collect();
    rss.sort_by(f64::total_cmp);
    println!(
        "| network memory ({} containers, Engine stats; RSS from /proc) | {:.1} MiB working set, {:.1} MiB RSS | 30 nodes ≤ 1 GiB (T4) |",
        rows.len(),
        mib(total),
        mib(rss_total)
    );
    println!(
        "| node RSS | p50 {:.1} MiB, max {:.1} MiB | idle node ≤ 12 MiB (T4) |",
        percentile(&rss, 0.5),
        rss.last().copied().unwrap_or(f64::NAN)
    );
    println!("\n| node | lan | role | peers | RSS MiB | working set MiB | usage MiB |");
    println!("|---|---|---|---|---|---|---|");
    for (name, lan, role, m, peers) in &rows {
        println!(
            "| {name} | {lan} | {} | {peers} | {:.1} | {:.1} | {:.1} |",
            role.as_str(),
            mib(m.rss),
            mib(m.working_set),
            mib(m.usage)
        );
    }
    if started && !keep {
        bed.down()?;
        println!("\n(the bench started the network and removed it again)");
    }
    Ok(())
}
