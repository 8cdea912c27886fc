//! `butter-sim`: run the churn, retrieval, scale and maintenance rigs, or one custom scenario.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use butter_sim::churn::Churn;
use butter_sim::output;
use butter_sim::rigs::{self, ChurnRig, RetrievalRig};
use butter_sim::world::{Partition, Scenario, World};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

/// Deterministic discrete-event simulator for Butter's data overlay (PCG + RBFS).
///
/// Every run is seeded; the same seed gives the same event-log hash. Failures print their seed.
#[derive(Parser, Debug)]
#[command(name = "butter-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Directory for CSV/JSON series and SVG plots.
    #[arg(long, global = true, default_value = "target/sim")]
    out: PathBuf,
    /// Hide progress bars.
    #[arg(long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The original's churn regime (250 nodes, r = 3, 2 s heartbeat, 30 s of churn at chance c per
    /// node per second, replaced empty), beside the original's figures.
    Churn {
        /// Nodes.
        #[arg(long, default_value_t = 250)]
        nodes: usize,
        /// Items stored before churn.
        #[arg(long, default_value_t = 500)]
        items: usize,
        /// Values of 1/c.
        #[arg(long, value_delimiter = ',', default_value = "50,100,1000,10000")]
        rates: Vec<u32>,
        /// Seeds (counts are summed over them).
        #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
        seeds: Vec<u64>,
        /// Grace window before a single absent member is replaced, in seconds.
        #[arg(long)]
        grace: Option<f64>,
    },
    /// BFS vs the original RBFS vs ours on 100 and 1000 nodes, beside the original's figures.
    Retrieval {
        /// Network sizes.
        #[arg(long, value_delimiter = ',', default_value = "100,1000")]
        sizes: Vec<usize>,
        /// Searches per setting.
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// 10 000 nodes × 10 simulated minutes of churn; prints the wall time (T14).
    Scale {
        /// Nodes.
        #[arg(long, default_value_t = 10_000)]
        nodes: usize,
        /// Simulated minutes.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// 1/c of the per-second churn.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Maintenance messages per node per second with few and many items (T13).
    Maintenance {
        /// Nodes.
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        /// Replicas held per node to compare (items = nodes × this / r).
        #[arg(long, value_delimiter = ',', default_value = "10,10000")]
        per_node: Vec<usize>,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The seeded fault explorer: random topologies, churn, partitions and loss; after every run
    /// it checks the invariants (no item vanishes while a holder is up, every group back at r, dead
    /// nodes leave tables, no panic) and prints each failing seed with the command that replays it.
    /// Exits 1 when an invariant broke.
    Explore {
        /// Seeds to run, inclusive: `A..B` (or one seed).
        #[arg(long, default_value = "1..20", value_parser = parse_range)]
        seeds: (u64, u64),
        /// Runs in parallel (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// One custom scenario; writes its series (CSV, JSON) and an SVG plot.
    Run {
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Nodes.
        #[arg(long, default_value_t = 250)]
        nodes: usize,
        /// Sites (LAN segments).
        #[arg(long, default_value_t = 5)]
        sites: usize,
        /// Items.
        #[arg(long, default_value_t = 500)]
        items: usize,
        /// Churn model.
        #[arg(long, value_enum, default_value_t = ChurnKind::PerSecond)]
        churn: ChurnKind,
        /// 1/c for per-second churn; mean session in seconds for exponential and pareto.
        #[arg(long, default_value_t = 100.0)]
        churn_param: f64,
        /// Site that fails (site-failure model).
        #[arg(long, default_value_t = 0)]
        site: usize,
        /// Churn starts at this second.
        #[arg(long, default_value_t = 20.0)]
        churn_from: f64,
        /// Churn ends at this second.
        #[arg(long, default_value_t = 80.0)]
        churn_until: f64,
        /// Message loss probability.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Partition sites `0..partition_sites` from the rest between --partition-from and
        /// --partition-until (seconds); 0 = none.
        #[arg(long, default_value_t = 0)]
        partition_sites: usize,
        /// Partition start (s).
        #[arg(long, default_value_t = 30.0)]
        partition_from: f64,
        /// Partition end (s).
        #[arg(long, default_value_t = 50.0)]
        partition_until: f64,
        /// Background searches per second.
        #[arg(long, default_value_t = 5.0)]
        probes: f64,
        /// Simulated seconds.
        #[arg(long, default_value_t = 120.0)]
        seconds: f64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ChurnKind {
    None,
    PerSecond,
    Exponential,
    Pareto,
    SiteFailure,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let bad = || format!("expected A..B or one seed, e.g. 1..1000, got {s:?}");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a.trim(), b.trim().trim_start_matches('=')),
        None => (s.trim(), s.trim()),
    };
    let a: u64 = a.parse().map_err(|_| bad())?;
    let b: u64 = b.parse().map_err(|_| bad())?;
    if b < a {
        return Err(format!(
            "the range {s:?} is empty: the end must not be below the start"
        ));
    }
    Ok((a, b))
}

/// Runs the explorer over `seeds` on `jobs` threads; prints the table; returns whether all held.
fn explore(
    seeds: (u64, u64),
    jobs: usize,
    quiet: bool,
    out: &std::path::Path,
) -> anyhow::Result<bool> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (a, b) = seeds;
    let pb = bar(quiet, b - a + 1, "explore (seeds)");
    let next = AtomicU64::new(a);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed > b {
                        break;
                    }
                    let o = butter_sim::explore::run_seed(seed);
                    if !o.broken.is_empty() {
                        pb.println(format!("seed {seed}: {}", o.broken.join("; ")));
                    }
                    pb.inc(1);
                    if let Ok(mut r) = results.lock() {
                        r.push(o);
                    }
                }
            });
        }
    });
    pb.finish_and_clear();
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|o| o.seed);
    print!("{}", output::explore_table(&results));
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("explore.json"),
        serde_json::to_string_pretty(&results)?,
    )
    .context("writing explore.json")?;
    let failed: Vec<_> = results.iter().filter(|o| !o.broken.is_empty()).collect();
    for o in &failed {
        println!("seed {} broke: {}", o.seed, o.broken.join("; "));
        println!("  {}", o.scenario);
        for line in o.trace.iter().take(12) {
            println!("  {line}");
        }
        println!("  replay: {}", butter_sim::explore::replay_command(o.seed));
    }
    Ok(failed.is_empty())
}

fn bar(quiet: bool, len: u64, msg: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>28} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(msg.to_owned());
    b
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = cli.out.clone();
    match cli.command {
        Command::Churn {
            nodes,
            items,
            rates,
            seeds,
            grace,
        } => {
            let mut rig = ChurnRig {
                nodes,
                items,
                rates,
                seeds,
                ..ChurnRig::default()
            };
            if let Some(g) = grace {
                rig.template.core.pcg.grace = Duration::from_secs_f64(g);
            }
            let pb = bar(
                cli.quiet,
                (rig.rates.len() * rig.seeds.len()) as u64,
                "churn rig",
            );
            let mut first = true;
            let rows = rig.run(|rate, seed, report| {
                pb.inc(1);
                if first || seed == rig.seeds[0] {
                    let stem = format!("churn-c{rate}-seed{seed}");
                    let title = format!("churn c=1/{rate}, {nodes} nodes, seed {seed}");
                    if let Err(e) = output::write_series(&out, &stem, &title, &report.series) {
                        pb.println(format!("warning: {e}"));
                    }
                    first = false;
                }
            });
            pb.finish_and_clear();
            print!("{}", output::churn_table(&rows));
            std::fs::write(out.join("churn.json"), serde_json::to_string_pretty(&rows)?)
                .context("writing churn.json")?;
        }
        Command::Retrieval {
            sizes,
            queries,
            seed,
        } => {
            let rig = RetrievalRig {
                sizes,
                queries,
                seed,
                ..RetrievalRig::default()
            };
            let pb = bar(
                cli.quiet,
                (rig.sizes.len() * rigs::strategies().len()) as u64,
                "retrieval rig",
            );
            let rows = rig.run(|_| pb.inc(1));
            pb.finish_and_clear();
            print!("{}", output::retrieval_table(&rows));
            std::fs::create_dir_all(&out)?;
            std::fs::write(
                out.join("retrieval.json"),
                serde_json::to_string_pretty(&rows)?,
            )
            .context("writing retrieval.json")?;
        }
        Command::Scale {
            nodes,
            minutes,
            rate,
            seed,
        } => {
            let duration = Duration::from_secs_f64(minutes * 60.0);
            let mut world = World::new(rigs::scale_scenario(nodes, duration, rate, seed));
            let pb = bar(cli.quiet, 1000, "scale run (simulated time)");
            let p = pb.clone();
            world.on_progress(move |f| p.set_position((f * 1000.0) as u64));
            let (row, report) = rigs::timed(world, nodes);
            pb.finish_and_clear();
            print!("{}", output::scale_table(&row));
            let kinds: Vec<String> = report
                .messages
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("messages by kind: {}", kinds.join(", "));
            output::write_series(
                &out,
                "scale",
                &format!("{nodes} nodes, c=1/{rate}, seed {seed}"),
                &report.series,
            )?;
        }
        Command::Maintenance {
            nodes,
            per_node,
            seed,
        } => {
            let rows = rigs::maintenance(nodes, &per_node, seed);
            print!("{}", output::maintenance_table(&rows));
        }
        Command::Explore { seeds, jobs } => {
            let jobs = jobs.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            if !explore(seeds, jobs, cli.quiet, &out)? {
                std::process::exit(1);
            }
        }
        Command::Run {
            seed,
            nodes,
            sites,
            items,
            churn,
            churn_param,
            site,
            churn_from,
            churn_until,
            loss,
            partition_sites,
            partition_from,
            partition_until,
            probes,
            seconds,
        } => {
            let secs = Duration::from_secs_f64;
            let churn = match churn {
                ChurnKind::None => Churn::None,
                ChurnKind::PerSecond => Churn::PerSecond {
                    chance: 1.0 / churn_param,
                },
                ChurnKind::Exponential => Churn::Exponential {
                    mean: secs(churn_param),
                },
                ChurnKind::Pareto => Churn::Pareto {
                    mean: secs(churn_param),
                    shape: 1.5,
                },
                ChurnKind::SiteFailure => Churn::SiteFailure {
                    site,
                    at: secs(churn_from),
                },
            };
            let mut sc = Scenario {
                seed,
                nodes,
                sites,
                items,
                churn,
                churn_window: (secs(churn_from), secs(churn_until)),
                probe_rate: probes,
                probe_window: (secs(10.0), secs(seconds)),
                duration: secs(seconds),
                ..Scenario::default()
            };
            sc.net.loss = loss;
            if partition_sites > 0 {
                sc.partitions.push(Partition {
                    side: (0..partition_sites).collect(),
                    from: secs(partition_from),
                    until: secs(partition_until),
                });
            }
            let label = churn.label();
            let mut world = World::new(sc);
            let pb = bar(cli.quiet, 1000, "run (simulated time)");
            let p = pb.clone();
            world.on_progress(move |f| p.set_position((f * 1000.0) as u64));
            let report = world.run();
            pb.finish_and_clear();
            let found = report.queries.iter().filter(|q| q.found).count();
            println!(
                "seed {seed} | {label} | deaths {} | lost {} of {} | searches found {}/{} | log hash {}",
                report.deaths,
                report.lost_at_end,
                report.items,
                found,
                report.queries.len(),
                report.log_hash
            );
            output::write_series(
                &out,
                &format!("run-seed{seed}"),
                &format!("{nodes} nodes, {label}, seed {seed}"),
                &report.series,
            )?;
            println!("series and plot in {}", out.display());
        }
    }
    Ok(())
}
