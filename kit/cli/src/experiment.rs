//! `butter-kit run EXPERIMENT` and `butter-kit compare REPORT…`: one experiment file
//! (`experiments/*.toml`) run on the compose or the netns backend with the same report, and
//! the reports of several runs side by side.
//!
//! `run` checks the file (and that the backend can build its topology) before it touches
//! anything, brings the topology up unless a network of that backend is up already (then it
//! runs on that one and leaves it up), runs the chaos runner on the backend, prints the summary
//! table and leaves `report.json`, `summary.txt`, `faults.jsonl` and `health.svg` in
//! `OUT/<backend>/<experiment>/`, then takes down what it brought up (unless `--keep`).
//! Ctrl-C heals what the run broke, then takes the network down as above.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use butter_chaos::backend::Backend as FaultBackend;
use butter_chaos::experiment::Experiment;
use butter_chaos::report::{EXIT_LOST, Report};
use butter_chaos::run::{self, Interrupted, Options, RunOn};
use butter_testbed::engine::Engine;
use butter_testbed::network;
use butter_testbed::testbed::Testbed;
use butter_testbed::topology::render;

use crate::{Backend, netns};

/// Exit status: every check passed.
pub const EXIT_PASS: i32 = 0;
/// Exit status: nothing lost beyond `max_lost`, but a back-at-r figure missed its bound.
pub const EXIT_SLOW: i32 = 3;
/// Exit status: the run could not complete (the testbed or the driver failed).
pub const EXIT_BROKEN: i32 = 4;
/// Exit status: interrupted (Ctrl-C), after healing.
pub const EXIT_INTERRUPTED: i32 = 130;

/// What `butter-kit run` was asked.
#[derive(Debug)]
pub struct RunArgs {
    /// The experiment file.
    pub experiment: PathBuf,
    /// Seed of items and random targets (overrides the file's).
    pub seed: Option<u64>,
    /// Overrides the workload's items.
    pub items: Option<usize>,
    /// Reports go under `out/<backend>/<experiment>/`.
    pub out: PathBuf,
    /// Leave the network up afterwards.
    pub keep: bool,
    /// Seconds to wait for every node's readiness after `up`.
    pub timeout: Option<u64>,
}

/// Loads the experiment (a bad file is a [`butter_testbed::topology::Error`]: exit 2) and
/// checks that `backend` can build its topology.
fn load(root: &Path, backend: Backend, path: &Path) -> Result<Experiment> {
    let here = std::env::current_dir()
        .ok()
        .and_then(|d| d.canonicalize().ok());
    let path = if path.is_absolute() || here.as_deref() == Some(root) {
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let e = Experiment::load(&path)?;
    match backend {
        Backend::Compose => {
            render::compose::render(&e.topology)?;
        }
        Backend::Netns => {
            render::netns::render(&e.topology, render::netns::netem_available())?;
        }
        Backend::K8s => {
            bail!("experiments run on --backend compose or netns; the k8s backend only renders")
        }
    }
    Ok(e)
}

/// Whether a network of this backend runs already (then `run` leaves it up).
fn running(root: &Path, backend: Backend) -> Result<bool> {
    Ok(match backend {
        Backend::Compose => !Engine::connect(&network::project())
            .context("Docker engine unavailable")?
            .containers()?
            .is_empty(),
        _ => lab_run_dir(root).join("lab.env").is_file(),
    })
}

fn lab_run_dir(root: &Path) -> PathBuf {
    std::env::var_os("BUTTER_LAB_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("netns").join("run"))
}

fn up(root: &Path, backend: Backend, e: &Experiment, timeout: Option<u64>) -> Result<()> {
    let t = &e.topology;
    let timeout = timeout.map_or_else(
        || butter_testbed::readiness::default_wait(t.total_nodes()),
        Duration::from_secs,
    );
    match backend {
        Backend::Compose => {
            let bed = Testbed::up_topology(root, t, false)?;
            let views = bed.wait_ready(timeout)?;
            println!(
                "{} nodes ready (compose project {})",
                views.len(),
                bed.project()
            );
            Ok(())
        }
        _ => netns::up_topology(root, t, Some(timeout.as_secs())),
    }
}

fn down(root: &Path, backend: Backend) -> Result<()> {
    match backend {
        Backend::Compose => Testbed::open(root)?.down(),
        _ => netns::down(root),
    }
}

/// `butter-kit run`: the exit status (see the `EXIT_*` constants; 2 for a bad file comes back
/// as an error).
pub fn run(root: &Path, backend: Backend, args: RunArgs) -> Result<i32> {
    let e = load(root, backend, &args.experiment)?;
    println!(
        "butter-kit run: experiment {} on {} (topology {}: {} sites, {} nodes; {} items; {} \
         faults)",
        e.name,
        backend.name(),
        e.topology.name,
        e.topology.sites.len(),
        e.topology.total_nodes(),
        args.items.unwrap_or(e.workload.items),
        e.faults.len()
    );
    let stop = run::interrupt_flag()?;
    let was_up = running(root, backend)?;
    let brought_up = if was_up {
        // Bringing it up again could replace it (compose refuses another topology in the
        // project, the lab rebuilds on other flags): run on it as it is, and leave it up.
        println!(
            "a {} network is up already: the run uses it as it is (it must be the experiment's \
             topology, {}) and leaves it up",
            backend.name(),
            e.topology_path.display()
        );
        Ok(())
    } else {
        up(root, backend, &e, args.timeout)
    };
    let outcome = brought_up.and_then(|()| {
        let faults: Arc<dyn FaultBackend> = match backend {
            Backend::Compose => {
                Arc::new(Engine::connect(&network::project()).context("Docker engine unavailable")?)
            }
            _ => Arc::new(butter_chaos::netns::Lab::new(root, &e.topology)?),
        };
        run::run_on(
            Options {
                scenario: e.scenario(),
                seed: args.seed,
                items: args.items,
                out: args.out.join(backend.name()),
                up: false,
                root: root.to_path_buf(),
                metrics: None,
            },
            faults,
            RunOn {
                max_lost: e.checks.max_lost,
                back_at_r_secs: e.checks.back_at_r_secs,
                interrupt: Some(stop.clone()),
                reads_per_sec: e.workload.reads_per_sec,
            },
        )
    });
    if !args.keep && !was_up {
        println!(
            "taking down the {} network the run brought up",
            backend.name()
        );
        if let Err(err) = down(root, backend) {
            eprintln!("butter-kit run: down failed: {err:#}");
        }
    }
    match outcome {
        Ok((report, dir)) => {
            print!("\n{}", report.table());
            println!("reports in {}", dir.display());
            Ok(match report.exit_code() {
                0 => EXIT_PASS,
                EXIT_LOST => EXIT_LOST,
                _ => EXIT_SLOW,
            })
        }
        Err(err) if err.is::<Interrupted>() => {
            eprintln!("butter-kit run: {err:#}; healed what the run broke, then stopped");
            Ok(EXIT_INTERRUPTED)
        }
        Err(err) => {
            eprintln!("butter-kit run: {err:#}");
            Ok(EXIT_BROKEN)
        }
    }
}

fn read_report(path: &Path) -> Result<Report> {
    let file = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not a report", file.display()))
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "not in time".into(), |s| format!("{s:.1} s"))
}

/// The figures of several reports side by side: one column per report (its backend), one row
/// per back-at-r figure, then items lost and the verdict.
pub fn compare_table(reports: &[Report]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let col = 14;
    // "back at r after " and a fault list cut to 28 characters.
    let first = 46;
    let _ = write!(s, "{:<first$}", "");
    for r in reports {
        let _ = write!(s, "{:>col$}", r.backend);
    }
    let _ = writeln!(s);
    let rows = reports
        .iter()
        .map(|r| r.recoveries.len())
        .max()
        .unwrap_or(0);
    for i in 0..rows {
        let mut label = reports
            .iter()
            .find_map(|r| r.recoveries.get(i))
            .map(|x| x.after.clone())
            .unwrap_or_default();
        if label.chars().count() > 28 {
            label = label.chars().take(25).collect::<String>() + "...";
        }
        let _ = write!(s, "{:<first$}", format!("back at r after {label}"));
        for r in reports {
            let v = r
                .recoveries
                .get(i)
                .map_or_else(|| "-".into(), |x| secs(x.back_at_r_secs));
            let _ = write!(s, "{v:>col$}");
        }
        let _ = writeln!(s);
    }
    let mut row = |name: &str, f: &dyn Fn(&Report) -> String| {
        let _ = write!(s, "{name:<first$}");
        for r in reports {
            let _ = write!(s, "{:>col$}", f(r));
        }
        let _ = writeln!(s);
    };
    row("initial replication to r", &|r| {
        secs(r.initial_replication_secs)
    });
    row("every item on more than one site", &|r| {
        secs(r.initial_spread_secs)
    });
    row("items stored", &|r| r.items.stored.to_string());
    row("items lost", &|r| r.items.lost.to_string());
    row("wrong bytes served", &|r| r.items.wrong_content.to_string());
    row("reads ok during the run", &|r| {
        r.reads
            .as_ref()
            .map_or_else(|| "-".into(), |x| format!("{}/{}", x.ok, x.attempted))
    });
    row("read latency p50 / p99", &|r| {
        r.reads.as_ref().map_or_else(
            || "-".into(),
            |x| format!("{:.0}/{:.0} ms", x.p50_ms, x.p99_ms),
        )
    });
    row("seed", &|r| r.seed.to_string());
    row("verdict", &|r| {
        match r.exit_code() {
            0 => "PASS",
            EXIT_LOST => "FAIL lost",
            _ => "FAIL slow",
        }
        .into()
    });
    s
}

/// `butter-kit compare`: prints the table; exit 0 if every report passed, else 1.
pub fn compare(paths: &[PathBuf]) -> Result<i32> {
    if paths.is_empty() {
        bail!("name at least one report (a report.json or the directory holding it)");
    }
    let reports = paths
        .iter()
        .map(|p| read_report(p))
        .collect::<Result<Vec<_>>>()?;
    print!("{}", compare_table(&reports));
    Ok(i32::from(reports.iter().any(|r| r.exit_code() != 0)))
}
