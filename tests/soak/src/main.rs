//! `butter-soak`: N `butter-node` processes on loopback for a long run with steady churn (a random
//! node SIGKILLed or SIGTERMed and restarted on the same data directory and ports, seeded) while a
//! client stores items and reads earlier ones through the HTTP API. Samples every node's RSS and
//! its anonymous part (`/proc/<pid>/status`), the live heap, open connections and tracked tasks
//! (`/metrics`), prints progress lines and a summary, writes `soak.json`, `rss.svg`, `heap.svg`
//! and `anon.svg`, and exits non-zero if an acknowledged item is lost (or came back with wrong bytes).
//!
//! Nodes `0..stable` are never churned: their memory trend covers the whole run. The first
//! `seeds` of them are everyone's bootstrap peers. At most `max_down` nodes are down at once.
//!
//! ```text
//! cargo build --release -p butter-node -p butter-soak
//! target/release/butter-soak --nodes 10 --minutes 3
//! ```

mod client;
mod cluster;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use butter_testbed::http;
use butter_testbed::metrics::Page;
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{Shared, Workload};
use crate::cluster::{Cluster, Stop};
use crate::report::Sample;

/// Soak run: butter-node processes on loopback with steady churn and a storing, reading client.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(name = "butter-soak", version, about)]
struct Cli {
    /// How many butter-node processes.
    #[arg(long, env = "SOAK_NODES", default_value_t = 30)]
    nodes: usize,
    /// How long the client stores and reads, in minutes (churn runs meanwhile).
    #[arg(long, env = "SOAK_MINS", default_value_t = 30.0)]
    minutes: f64,
    /// The butter-node binary (default: butter-node beside this program).
    #[arg(long, env = "BUTTER_NODE_BIN")]
    bin: Option<PathBuf>,
    /// Output directory: soak.json, rss.svg, and nodes/ (data directories and logs, wiped first).
    #[arg(long, default_value = "soak-out")]
    out: PathBuf,
    /// Seed of churn and client choices (printed; default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Site labels the nodes are spread over (groups prefer different sites).
    #[arg(long, default_value_t = 3)]
    sites: usize,
    /// How many nodes everyone bootstraps to (the first ones; never churned).
    #[arg(long, default_value_t = 2)]
    seeds: usize,
    /// Nodes never churned (the first ones, seeds included); default a third of the nodes.
    #[arg(long)]
    stable: Option<usize>,
    /// Seconds between churn events (each stops one random churnable node).
    #[arg(long, default_value_t = 20.0)]
    churn_every: f64,
    /// Seconds a churned node stays down before it restarts with the same data directory.
    #[arg(long, default_value_t = 5.0)]
    down_secs: f64,
    /// Share of churn stops that are SIGKILL (the rest are SIGTERM, a graceful hand-off).
    #[arg(long, default_value_t = 0.5)]
    kill_share: f64,
    /// Most nodes down at once (a churn event waits while this many are down).
    #[arg(long, default_value_t = 1)]
    max_down: usize,
    /// Milliseconds between the client's PUTs.
    #[arg(long, default_value_t = 500)]
    put_every_ms: u64,
    /// Milliseconds between the client's GETs of random earlier items.
    #[arg(long, default_value_t = 250)]
    get_every_ms: u64,
    /// Bytes per item.
    #[arg(long, default_value_t = 4096)]
    item_size: usize,
    /// Live items the client keeps: once more are live it deletes the oldest (through a member of
    /// its group), so the data held is steady and memory has no reason to grow. 0: never delete.
    #[arg(long, default_value_t = 600)]
    keep: usize,
    /// Seconds between samples (RSS, connections, tasks) and progress lines.
    #[arg(long, default_value_t = 10.0)]
    sample_every: f64,
    /// Minutes of each process's life left out of its RSS slope (default: min(5, minutes / 3)).
    #[arg(long)]
    warmup_mins: Option<f64>,
    /// Seconds after the client stops (every node up, no churn) before the final check.
    #[arg(long, default_value_t = 20.0)]
    settle_secs: f64,
    /// Live-heap (`butter_heap_bytes`) drift in KiB/min — its trend once the items the node
    /// holds are accounted for — above which a node's memory is reported as growing.
    #[arg(long, default_value_t = 32.0)]
    max_slope: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn node_bin(cli: &Cli) -> Result<PathBuf> {
    let bin = match &cli.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program has no directory")?
            .join("butter-node"),
    };
    if !bin.is_file() {
        bail!(
            "no butter-node at {}; build it (cargo build --release -p butter-node) or pass --bin",
            bin.display()
        );
    }
    Ok(bin)
}

fn mmss(d: Duration) -> String {
    format!("{:>3}:{:02}", d.as_secs() / 60, d.as_secs() % 60)
}

/// The run's state the loop updates.
struct Soak {
    cluster: Cluster,
    shared: Arc<Shared>,
    samples: Vec<Vec<Sample>>,
    /// Restarts pending: (slot, when).
    restarting: Vec<(usize, Instant)>,
    /// Slots started but not yet answering.
    booting: Vec<usize>,
    kills: usize,
    terms: usize,
    crashes: usize,
    t0: Instant,
}

impl Soak {
    fn mark(&self, i: usize, up: bool) {
        self.shared.up[i].store(up, Ordering::Relaxed);
    }

    /// Nodes that answered `/status` since they were started count as up for the client.
    fn promote_booted(&mut self) {
        let http = &self.shared.http;
        let (ready, waiting): (Vec<usize>, Vec<usize>) = self.booting.iter().partition(|&&i| {
            http::get(http[i], "/ready", Duration::from_millis(500)).is_ok_and(|r| r.status == 200)
        });
        for i in ready {
            self.mark(i, true);
        }
        self.booting = waiting;
    }

    fn restart_due(&mut self) -> Result<()> {
        let now = Instant::now();
        let due: Vec<usize> = self
            .restarting
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(i, _)| *i)
            .collect();
        self.restarting.retain(|(_, at)| *at > now);
        for i in due {
            self.cluster.start(i)?;
            self.booting.push(i);
        }
        Ok(())
    }

    fn down(&self) -> usize {
        self.restarting.len() + self.booting.len()
    }

    fn sample(&mut self) {
        let t_min = self.t0.elapsed().as_secs_f64() / 60.0;
        for n in &self.cluster.nodes {
            let up = n.is_up() && !self.booting.contains(&n.index);
            let page = up
                .then(|| http::get(n.http, "/metrics", Duration::from_secs(2)))
                .and_then(Result::ok)
                .filter(|r| r.status == 200)
                .map(|r| Page::parse(&r.text()));
            let m = |name: &str| page.as_ref().and_then(|p| p.sum(name));
            let rss = n.pid().filter(|_| up).and_then(cluster::rss_kib);
            self.samples[n.index].push(Sample {
                t_min,
                incarnation: n.starts,
                rss_kib: rss.map(|r| r.0),
                anon_kib: rss.map(|r| r.1),
                heap_kib: m("butter_heap_bytes").map(|b| (b / 1024.0) as u64),
                connections: m("butter_connections_open"),
                tasks: m("butter_tasks"),
                items: m("butter_items_stored"),
            });
        }
    }

    fn progress(&self) {
        let last: Vec<&Sample> = self.samples.iter().filter_map(|s| s.last()).collect();
        let mut rss: Vec<u64> = last.iter().filter_map(|s| s.rss_kib).collect();
        rss.sort_unstable();
        let mut heap: Vec<u64> = last.iter().filter_map(|s| s.heap_kib).collect();
        heap.sort_unstable();
        let sum = |f: fn(&Sample) -> Option<f64>| last.iter().filter_map(|s| f(s)).sum::<f64>();
        let t = self.shared.counters.tally();
        let up = self
            .shared
            .up
            .iter()
            .filter(|u| u.load(Ordering::Relaxed))
            .count();
        println!(
            "[{}] up {up:>3}/{} stops {:>3} (kill {} term {}) crashes {} | put {} ok {} failed | get {} ok {} failed {} wrong {} cut ({:.1}%) | RSS MiB min/med/max {:.1}/{:.1}/{:.1} (heap med {:.1}) | conns {} tasks {}",
            mmss(self.t0.elapsed()),
            self.cluster.nodes.len(),
            self.kills + self.terms,
            self.kills,
            self.terms,
            self.crashes,
            t.puts_ok,
            t.puts_failed,
            t.gets_ok,
            t.gets_failed,
            t.gets_wrong,
            t.gets_cut,
            t.get_success_pct(),
            rss.first().map_or(0.0, |k| *k as f64 / 1024.0),
            rss.get(rss.len() / 2).map_or(0.0, |k| *k as f64 / 1024.0),
            rss.last().map_or(0.0, |k| *k as f64 / 1024.0),
            heap.get(heap.len() / 2).map_or(0.0, |k| *k as f64 / 1024.0),
            sum(|s| s.connections),
            sum(|s| s.tasks),
        );
    }
}

fn run(cli: Cli) -> Result<bool> {
    if cli.nodes < 4 {
        bail!("--nodes must be at least 4 (groups of 3 plus churn)");
    }
    if !(cli.minutes > 0.0 && cli.churn_every > 0.0 && cli.sample_every > 0.0) {
        bail!("--minutes, --churn-every and --sample-every must be positive");
    }
    let bin = node_bin(&cli)?;
    // Ctrl-C or SIGTERM: stop every node (dropping the cluster kills them) instead of leaving them.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("installing a signal handler")?;
    }
    let check_interrupt = || -> Result<()> {
        if interrupted.load(Ordering::Relaxed) {
            bail!("interrupted: the nodes are stopped, no figures written");
        }
        Ok(())
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id())
    });
    let seeds = cli.seeds.clamp(1, cli.nodes);
    let stable = cli
        .stable
        .unwrap_or(cli.nodes / 3)
        .clamp(seeds, cli.nodes - 1);
    let warmup = cli.warmup_mins.unwrap_or((cli.minutes / 3.0).min(5.0));
    let workload = Workload {
        seed,
        item_size: cli.item_size.max(32),
        put_every: Duration::from_millis(cli.put_every_ms),
        get_every: Duration::from_millis(cli.get_every_ms),
        keep: cli.keep,
    };
    let nodes_dir = cli.out.join("nodes");
    let _ = std::fs::remove_dir_all(&nodes_dir);
    std::fs::create_dir_all(&nodes_dir)
        .with_context(|| format!("creating {}", nodes_dir.display()))?;
    println!(
        "soak: {} nodes ({stable} stable, {seeds} seeds, {} sites), {} min, churn every {} s (down {} s, {:.0}% SIGKILL, at most {} down), PUT every {} ms, GET every {} ms, {} B items, working set {} items, seed {seed}",
        cli.nodes,
        cli.sites,
        cli.minutes,
        cli.churn_every,
        cli.down_secs,
        cli.kill_share * 100.0,
        cli.max_down,
        cli.put_every_ms,
        cli.get_every_ms,
        workload.item_size,
        cli.keep
    );
    println!(
        "soak: binary {}, output in {}",
        bin.display(),
        cli.out.display()
    );

    let mut cluster = Cluster::new(&bin, &nodes_dir, cli.nodes, cli.sites, seeds)?;
    for i in 0..cli.nodes {
        cluster.start(i)?;
    }
    let shared = Arc::new(Shared {
        http: cluster.nodes.iter().map(|n| n.http).collect(),
        up: (0..cli.nodes).map(|_| AtomicBool::new(false)).collect(),
        acked: Mutex::new(Vec::new()),
        deleted: Mutex::new(Default::default()),
        counters: Default::default(),
        stop: AtomicBool::new(false),
    });
    let mut soak = Soak {
        cluster,
        shared: shared.clone(),
        samples: vec![Vec::new(); cli.nodes],
        restarting: Vec::new(),
        booting: (0..cli.nodes).collect(),
        kills: 0,
        terms: 0,
        crashes: 0,
        t0: Instant::now(),
    };
    let boot = Instant::now();
    let boot_limit = Duration::from_secs(60 + 2 * cli.nodes as u64);
    while !soak.booting.is_empty() {
        check_interrupt()?;
        if boot.elapsed() > boot_limit {
            bail!(
                "nodes {:?} not ready after {boot_limit:?}; see their logs in {}",
                soak.booting,
                nodes_dir.display()
            );
        }
        if let Some(i) = soak.cluster.reap().first() {
            bail!(
                "node {i} exited at start; see {}",
                nodes_dir.join(format!("n{i}.log")).display()
            );
        }
        soak.promote_booted();
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "soak: {} nodes ready after {:.1} s",
        cli.nodes,
        boot.elapsed().as_secs_f64()
    );
    // Let the membership settle before load and churn start.
    std::thread::sleep(Duration::from_secs(5));

    let mut rng = SmallRng::seed_from_u64(seed);
    soak.t0 = Instant::now();
    let threads = client::start(shared.clone(), workload);
    let run_for = Duration::from_secs_f64(cli.minutes * 60.0);
    let churn_every = Duration::from_secs_f64(cli.churn_every);
    let sample_every = Duration::from_secs_f64(cli.sample_every);
    let mut next_churn = soak.t0 + churn_every;
    let mut next_sample = soak.t0;
    while soak.t0.elapsed() < run_for {
        if let Err(e) = check_interrupt() {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        for i in soak.cluster.reap() {
            // A node that exits by itself is a crash: count it, restart it like churn.
            eprintln!("soak: node {i} exited by itself (crash); restarting it");
            soak.crashes += 1;
            soak.mark(i, false);
            soak.booting.retain(|b| *b != i);
            soak.restarting.push((i, Instant::now()));
        }
        soak.restart_due()?;
        soak.promote_booted();
        let now = Instant::now();
        if now >= next_churn && soak.down() < cli.max_down {
            next_churn = now + churn_every;
            let candidates: Vec<usize> = (stable..cli.nodes)
                .filter(|&i| shared.up[i].load(Ordering::Relaxed))
                .collect();
            if !candidates.is_empty() {
                let victim = candidates[rng.random_range(0..candidates.len())];
                let how = if rng.random_bool(cli.kill_share.clamp(0.0, 1.0)) {
                    soak.kills += 1;
                    Stop::Kill
                } else {
                    soak.terms += 1;
                    Stop::Term
                };
                soak.mark(victim, false);
                soak.cluster.stop(victim, how)?;
                soak.restarting.push((
                    victim,
                    Instant::now() + Duration::from_secs_f64(cli.down_secs),
                ));
            }
        }
        if now >= next_sample {
            next_sample += sample_every;
            soak.sample();
            soak.progress();
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // Bring every node back and let the groups settle before counting.
    for (i, _) in std::mem::take(&mut soak.restarting) {
        soak.cluster.start(i)?;
        soak.booting.push(i);
    }
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs_f64(cli.settle_secs) || !soak.booting.is_empty() {
        check_interrupt()?;
        soak.promote_booted();
        if settle.elapsed() > Duration::from_secs_f64(cli.settle_secs) + Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    soak.sample();
    soak.progress();
    println!("soak: client stopped; checking every acknowledged item through live nodes");
    let lost = client::final_check(&shared, workload, 4);
    let tally = shared.counters.tally();
    soak.cluster.stop_all();

    let summaries: Vec<report::NodeSummary> = soak
        .samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            report::summarise(
                i,
                i < stable,
                soak.cluster.nodes[i].starts.saturating_sub(1),
                s,
                warmup,
            )
        })
        .collect();
    let acked = shared.acked().len();
    let first = |f: fn(&Sample) -> Option<f64>| -> f64 {
        soak.samples
            .iter()
            .filter_map(|s| s.first().and_then(f))
            .sum()
    };
    let last = |f: fn(&Sample) -> Option<f64>| -> f64 {
        soak.samples
            .iter()
            .filter_map(|s| s.last().and_then(f))
            .sum()
    };
    // The leak measure: live heap allocations (`butter_heap_bytes`); anonymous memory beside it
    // also holds what the allocator keeps for reuse.
    // One figure over the stable nodes: (median, worst) — and the values, for the range.
    let over_stable = |f: fn(&report::NodeSummary) -> Option<f64>| -> (f64, f64, Vec<f64>) {
        let mut v: Vec<f64> = summaries
            .iter()
            .filter(|s| s.stable)
            .filter_map(f)
            .collect();
        v.sort_by(f64::total_cmp);
        let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
        let worst = v.last().copied().unwrap_or(f64::NAN);
        (median, worst, v)
    };
    let (median_heap, worst_heap, _) = over_stable(|s| s.heap_slope_kib_per_min);
    let (median_drift, worst_drift, _) = over_stable(|s| s.heap_drift_kib_per_min);
    let (_, _, per_item) = over_stable(|s| s.heap_per_item_kib);
    let (_, worst_anon, _) = over_stable(|s| s.anon_slope_kib_per_min);
    let (_, worst_stable, stable_slopes) = over_stable(|s| s.rss_slope_kib_per_min);
    // A leak grows the live heap; the binary's pages (the rest of RSS) only grow until every code
    // path has run once, and the allocator's free lists until they cover the peak.
    // A trend needs time: processes watched for less than a third of the run (churned ones
    // restarted late) are listed in the table but not judged.
    let judged_span = (cli.minutes / 3.0).min(10.0);
    let growing: Vec<usize> = summaries
        .iter()
        .filter(|s| {
            s.heap_drift_kib_per_min.is_some_and(|k| k > cli.max_slope)
                && s.slope_span_min >= judged_span
        })
        .map(|s| s.node)
        .collect();

    println!();
    print!("{}", report::node_table(&summaries));
    println!();
    println!(
        "items acknowledged            {} ({acked} live at the end, every one checked)",
        tally.puts_ok
    );
    println!("items lost                    {}", lost.len());
    println!(
        "GET success                   {:.2}% ({} ok, {} failed, {} wrong bytes; {} cut by churn, not counted)",
        tally.get_success_pct(),
        tally.gets_ok,
        tally.gets_failed,
        tally.gets_wrong,
        tally.gets_cut
    );
    println!("PUT refused or failed         {}", tally.puts_failed);
    println!(
        "deleted (working set {})     {} ok, {} no member would delete (kept and checked)",
        cli.keep, tally.deletes_ok, tally.deletes_failed
    );
    println!(
        "churn                         {} stops ({} SIGKILL, {} SIGTERM), {} crashes",
        soak.kills + soak.terms,
        soak.kills,
        soak.terms,
        soak.crashes
    );
    println!(
        "RSS slope after warm-up       stable nodes: worst {worst_stable:.1} KiB/min over {} nodes",
        stable_slopes.len(),
    );
    println!(
        "anon slope after warm-up      stable nodes: worst {worst_anon:.1} KiB/min (heap plus allocator free lists and stacks)"
    );
    println!(
        "live heap slope after warm-up stable nodes: median {median_heap:.1}, worst {worst_heap:.1} KiB/min"
    );
    println!(
        "live heap drift               stable nodes (trend with the items held accounted for): median {median_drift:.1}, worst {worst_drift:.1} KiB/min, at {:.1}-{:.1} KiB per item held; nodes above {} KiB/min: {growing:?}",
        per_item.iter().copied().fold(f64::NAN, f64::min),
        per_item.iter().copied().fold(f64::NAN, f64::max),
        cli.max_slope
    );
    println!(
        "memory                        {}",
        if growing.is_empty() {
            format!(
                "no growth trend (every live-heap drift after warm-up, over at least {judged_span:.1} min, at most {} KiB/min)",
                cli.max_slope
            )
        } else {
            format!("GROWING on nodes {growing:?}")
        }
    );
    println!(
        "connections (sum)             start {:.0} end {:.0}",
        first(|s| s.connections),
        last(|s| s.connections)
    );
    println!(
        "tasks (sum)                   start {:.0} end {:.0}",
        first(|s| s.tasks),
        last(|s| s.tasks)
    );

    let json = serde_json::json!({
        "config": cli,
        "seed": seed,
        "stable_nodes": stable,
        "warmup_min": warmup,
        "items_acknowledged": tally.puts_ok,
        "items_live_checked": acked,
        "items_lost": lost.iter().map(|a| &a.id).collect::<Vec<_>>(),
        "client": tally,
        "get_success_pct": tally.get_success_pct(),
        "churn": { "sigkill": soak.kills, "sigterm": soak.terms, "crashes": soak.crashes },
        "rss_growing_nodes": growing,
        "nodes": summaries,
        "samples": soak.samples,
    });
    report::write_json(&cli.out.join("soak.json"), &json)?;
    report::plot_rss(
        &cli.out.join("rss.svg"),
        &format!(
            "butter soak: RSS of {} nodes over {} min (seed {seed})",
            cli.nodes, cli.minutes
        ),
        &soak.samples,
        report::Series::Rss,
    )?;
    report::plot_rss(
        &cli.out.join("heap.svg"),
        &format!(
            "butter soak: live heap of {} nodes over {} min (seed {seed})",
            cli.nodes, cli.minutes
        ),
        &soak.samples,
        report::Series::Heap,
    )?;
    report::plot_rss(
        &cli.out.join("anon.svg"),
        &format!(
            "butter soak: anonymous memory of {} nodes over {} min (seed {seed})",
            cli.nodes, cli.minutes
        ),
        &soak.samples,
        report::Series::Anon,
    )?;
    println!(
        "wrote {}, {}, {} and {}",
        cli.out.join("soak.json").display(),
        cli.out.join("rss.svg").display(),
        cli.out.join("heap.svg").display(),
        cli.out.join("anon.svg").display()
    );
    let ok = lost.is_empty() && tally.gets_wrong == 0;
    if !ok {
        println!(
            "FAIL: {} acknowledged items lost, {} GETs returned wrong bytes; first lost: {:?} (replay with --seed {seed})",
            lost.len(),
            tally.gets_wrong,
            lost.iter().take(5).map(|a| &a.id).collect::<Vec<_>>()
        );
    } else {
        println!("PASS: no acknowledged item lost");
    }
    Ok(ok)
}
