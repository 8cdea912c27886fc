//! `butter-chaos run` and `butter-kit run`: the scenario runner with the survival check around
//! it, on any [`Backend`] (compose: [`run`]; any: [`run_on`]).
//!
//! 1. Heal anything a previous run left broken, wait until every node is `/ready`.
//! 2. Store M seeded items through the nodes in turn; wait until every one is at r.
//! 3. A sampler thread observes replica health about once a second from here on.
//! 4. Run the steps; `wait-r` measures the time from the last fault until every item is at r.
//! 5. Heal, wait until ready and until every item is at r (up to `settle_secs`), then retrieve
//!    every item through other nodes and write the report. Groups can still change right after
//!    that (returning nodes), so the check looks for an observation with every item at r for up
//!    to 30 s before it counts an item as under r.
//!
//! Ctrl-C (SIGINT) or SIGTERM during steps 2-5 stops the run at the next check, heals what it
//! broke and returns [`Interrupted`]; a second Ctrl-C exits at once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use crate::backend::Backend;
use crate::faults::Chaos;
use crate::log::{FaultLog, unix_ms};
use crate::report::{Items, Recovery, Report};
use crate::scenario::{Scenario, Step};
use crate::survival::{self, Observation};
use butter_testbed::engine::{Container, Engine, Role};
use butter_testbed::readiness;
use std::sync::atomic::AtomicBool as Flag;

/// Salt of the fault-choice stream (see `survival`'s item stream).
const CHOICE_STREAM: u64 = 0x6661_756c_7473;
/// How long nodes get to answer `/ready` after `up` or a heal.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Sampling period of replica health.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// At the check: how long to look again for an observation with every item at r before an item
/// counts as under r after the heal.
const RECHECK: Duration = Duration::from_secs(30);

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Overrides `survival.items`.
    pub items: Option<usize>,
    /// Reports go to `out/<scenario name>/`.
    pub out: PathBuf,
    /// Bring the network up (compose, via the testbed kit) if no node container exists.
    pub up: bool,
    /// Repository root (for `--up`).
    pub root: PathBuf,
    /// Serve the faults as Prometheus series here while running (see [`crate::exporter`]).
    pub metrics: Option<std::net::SocketAddr>,
}

/// Replica health observed in the background.
struct Sampler {
    samples: Arc<Mutex<Vec<survival::Sample>>>,
    last: Arc<Mutex<Option<Observation>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Sampler {
    fn spawn(
        backend: Arc<dyn Backend>,
        ids: Arc<Vec<String>>,
        r: usize,
        log: Arc<FaultLog>,
    ) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let last = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, last, stop) = (samples.clone(), last.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let t = log.t();
                    if let Ok(cs) = backend.nodes() {
                        let obs = survival::observe(&cs, &ids, r, t);
                        if let Ok(mut s) = samples.lock() {
                            s.push(obs.sample.clone());
                        }
                        if let Ok(mut l) = last.lock() {
                            *l = Some(obs);
                        }
                    }
                    std::thread::sleep(SAMPLE_EVERY.saturating_sub(began.elapsed()));
                }
            })
        };
        Sampler {
            samples,
            last,
            stop,
            handle: Some(handle),
        }
    }

    /// The newest observation that began at or after `since` (s since start).
    fn latest_since(&self, since: f64) -> Option<Observation> {
        self.last
            .lock()
            .ok()?
            .clone()
            .filter(|o| o.sample.t_secs >= since)
    }

    fn finish(mut self) -> Vec<survival::Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message(msg);
    pb
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// The run was stopped by Ctrl-C or SIGTERM (after healing what it broke).
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C or SIGTERM)")]
pub struct Interrupted;

/// A flag raised by the first Ctrl-C (SIGINT) or SIGTERM; a second one ends the process at
/// once (exit 1), for a heal that hangs.
pub fn interrupt_flag() -> Result<Arc<Flag>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(Flag::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The order matters: the conditional exit sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, flag.clone())
            .context("installing the Ctrl-C handler")?;
        signal_hook::flag::register(sig, flag.clone()).context("installing the Ctrl-C handler")?;
    }
    Ok(flag)
}

/// Fails with [`Interrupted`] once `flag` is raised.
fn check(flag: &Flag) -> Result<()> {
    if flag.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Waits until every Butter node runs and answers `/ready`.
pub fn wait_ready(backend: &dyn Backend, timeout: Duration) -> Result<Vec<Container>> {
    wait_ready_or(backend, timeout, &Flag::new(false))
}

fn wait_ready_or(backend: &dyn Backend, timeout: Duration, stop: &Flag) -> Result<Vec<Container>> {
    readiness::wait(
        || backend.nodes(),
        timeout,
        || check(stop),
        "see the nodes' logs; `butter-kit status` shows them all",
    )
}

/// Waits until the sampler sees every item at r in an observation that began after `since`.
fn wait_at_r(
    sampler: &Sampler,
    since: f64,
    timeout: Duration,
    total: usize,
    what: &str,
    stop: &Flag,
) -> (Option<f64>, Option<Observation>) {
    let pb = spinner(format!("{what}: waiting for every item to be at r"));
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(obs) = sampler.latest_since(since) {
            let s = &obs.sample;
            pb.set_message(format!(
                "{what}: at r {}/{total}, under r {}, held by no running node {}, nodes up {}",
                s.at_r, s.under_r, s.lost, s.nodes_up
            ));
            if s.at_r == total {
                pb.finish_and_clear();
                return (Some(s.t_secs - since), Some(obs));
            }
            last = Some(obs);
        }
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            pb.finish_and_clear();
            return (None, last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the sampler sees every item at r with its holders on more than one site (where
/// running nodes span several): groups are founded from whatever hosts a node knows right after
/// start, often only its own site, and spread to other sites over the next spread intervals.
/// Faults that start before then measure the start-up, not the recovery.
fn wait_spread(
    sampler: &Sampler,
    since: f64,
    timeout: Duration,
    total: usize,
    stop: &Flag,
) -> Option<f64> {
    let pb = spinner("spreading over sites".to_string());
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(obs) = sampler.latest_since(since) {
            let s = &obs.sample;
            pb.set_message(format!(
                "spreading over sites: at r {}/{total}, on one site only {}",
                s.at_r, s.one_site
            ));
            if s.at_r == total && s.one_site == 0 {
                pb.finish_and_clear();
                return Some(s.t_secs - since);
            }
        }
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            pb.finish_and_clear();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What an experiment adds to a scenario run: its checks and the Ctrl-C flag.
#[derive(Debug, Clone, Default)]
pub struct RunOn {
    /// Items that may be lost for the run to pass (an experiment's `checks.max_lost`; 0).
    pub max_lost: usize,
    /// Every back-at-r figure (each `wait-r` without its own target, and the final heal) must
    /// be within this many seconds.
    pub back_at_r_secs: Option<f64>,
    /// Raised by Ctrl-C ([`interrupt_flag`]); `None` installs the handler.
    pub interrupt: Option<Arc<Flag>>,
    /// Reads per second while the faults go on ([`crate::reads`]); 0: none.
    pub reads_per_sec: f64,
}

/// Runs a scenario on the compose project (`--up`: brings the default network up first) and
/// returns its report (already written to disk).
pub fn run(opts: Options) -> Result<(Report, PathBuf)> {
    let project = butter_testbed::network::project();
    let engine = Engine::connect(&project).context("Docker engine unavailable")?;
    if opts.up && engine.containers()?.is_empty() {
        println!("no {project} containers: bringing the compose network up");
        let bed = butter_testbed::testbed::Testbed::open(&opts.root)?;
        bed.up(&butter_testbed::testbed::UpOptions::default())?;
    }
    run_on(opts, Arc::new(engine), RunOn::default())
}

/// Runs a scenario on `backend` and returns its report (already written to disk). On an error
/// or Ctrl-C after the first fault it heals before returning.
pub fn run_on(opts: Options, backend: Arc<dyn Backend>, extra: RunOn) -> Result<(Report, PathBuf)> {
    let stop = match extra.interrupt.clone() {
        Some(f) => f,
        None => interrupt_flag()?,
    };
    let sc = &opts.scenario;
    let mut survival_cfg = sc.survival.clone();
    if let Some(n) = opts.items {
        survival_cfg.items = n;
    }
    let r = survival_cfg.r;
    let seed = opts
        .seed
        .or(sc.seed)
        .unwrap_or_else(crate::target::fresh_seed);
    let name = if sc.name.is_empty() {
        "scenario".to_string()
    } else {
        sc.name.clone()
    };
    let dir = opts.out.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let start = Instant::now();
    let started_unix_ms = unix_ms();
    let log = Arc::new(FaultLog::create(Some(&dir.join("faults.jsonl")), start)?);
    if let Some(addr) = opts.metrics {
        // Annotations are a nicety: a busy port must not stop the run.
        match crate::exporter::Exporter::start(addr) {
            Ok(e) => {
                println!(
                    "butter-chaos: faults as Prometheus series on http://{}/metrics",
                    e.addr()
                );
                log.export_to(Arc::new(e));
            }
            Err(e) => eprintln!("butter-chaos: {e:#}; running without it"),
        }
    }
    println!(
        "butter-chaos: scenario {name}, seed {seed} (replay with --seed {seed}), reports in {}",
        dir.display()
    );
    log.write(
        "start",
        json!({ "scenario": name, "seed": seed, "items": survival_cfg.items, "item_bytes": survival_cfg.item_bytes, "r": r }),
    );

    log.write("backend", json!({ "backend": backend.name() }));
    // The state dir for partitions is shared with one-shot commands: `out/`.
    let chaos = Chaos::new(&*backend, &log, opts.out.clone());
    let healed = chaos.heal()?;
    if !healed.is_noop() {
        println!("healed what an earlier run left: {healed:?}");
    }
    let result = faults_and_check(
        &opts,
        &backend,
        &chaos,
        &log,
        &stop,
        &extra,
        (name, seed, started_unix_ms, &dir),
    );
    if let Err(e) = &result {
        // Whatever stopped the run (Ctrl-C, a fault that failed), leave the network whole.
        let why = if e.is::<Interrupted>() {
            "interrupted"
        } else {
            "failed"
        };
        eprintln!("butter-chaos: {e:#}; healing what the run broke");
        log.write("stopped", json!({ "why": why, "error": format!("{e:#}") }));
        match chaos.heal() {
            Ok(h) => eprintln!("healed: {h:?}"),
            Err(he) => eprintln!("heal failed: {he:#}"),
        }
    }
    result.map(|r| (r, dir))
}

/// Steps 1-5 of the module docs, after the first heal.
fn faults_and_check(
    opts: &Options,
    backend: &Arc<dyn Backend>,
    chaos: &Chaos<'_>,
    log: &Arc<FaultLog>,
    stop: &Flag,
    extra: &RunOn,
    (name, seed, started_unix_ms, dir): (String, u64, u64, &std::path::Path),
) -> Result<Report> {
    let sc = &opts.scenario;
    let mut survival_cfg = sc.survival.clone();
    if let Some(n) = opts.items {
        survival_cfg.items = n;
    }
    let r = survival_cfg.r;
    let nodes = wait_ready_or(&**backend, READY_TIMEOUT, stop)?;
    println!(
        "{} nodes ready ({} gateways)",
        nodes.len(),
        nodes.iter().filter(|c| c.role == Role::Gateway).count()
    );

    // Store.
    let contents = survival::contents(seed, survival_cfg.items, survival_cfg.item_bytes);
    let pb = bar(contents.len(), "store");
    let items = survival::store(&nodes, contents, |n| {
        pb.set_position(n as u64);
        !stop.load(Ordering::Relaxed)
    })?;
    pb.finish_and_clear();
    let stored_t = log.t();
    log.write("stored", json!({ "items": items.len() }));
    println!(
        "stored {} items of {} B through {} nodes",
        items.len(),
        survival_cfg.item_bytes,
        nodes.len()
    );
    let ids = Arc::new(survival::ids(&items));
    let sampler = Sampler::spawn(backend.clone(), ids.clone(), r, log.clone());
    let total = items.len();
    let (initial, _) = wait_at_r(
        &sampler,
        stored_t,
        survival_cfg.settle(),
        total,
        "initial replication",
        stop,
    );
    check(stop)?;
    log.write("replicated", json!({ "secs": initial }));
    match initial {
        Some(s) => println!("every item at r = {r} {s:.1} s after the last store"),
        None => println!(
            "WARNING: not every item reached r = {r} within {:.0} s before the faults",
            survival_cfg.settle_secs
        ),
    }

    let spread = if initial.is_some() {
        let spread = wait_spread(&sampler, stored_t, survival_cfg.settle(), total, stop);
        check(stop)?;
        log.write("spread", json!({ "secs": spread }));
        match spread {
            Some(s) => {
                println!("every item held on more than one site {s:.1} s after the last store")
            }
            None => println!(
                "WARNING: some items still held on one site only {:.0} s after the last store",
                survival_cfg.settle_secs
            ),
        }
        spread
    } else {
        None
    };

    let reader = (extra.reads_per_sec > 0.0).then(|| {
        crate::reads::Reader::spawn(
            backend.clone(),
            ids.clone(),
            extra.reads_per_sec,
            seed,
            log.clone(),
        )
    });

    // Steps.
    let mut rng = StdRng::seed_from_u64(seed ^ CHOICE_STREAM);
    let mut recoveries = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut last_fault_t = log.t();
    for (i, step) in sc.steps.iter().enumerate() {
        check(stop)?;
        let t = log.t();
        let hit = match step {
            Step::Kill { target, count } => chaos.kill(target, *count, &mut rng)?,
            Step::Pause { target, count } => chaos.pause(target, *count, &mut rng)?,
            Step::Unpause { target } => chaos.unpause(target, &mut rng)?,
            Step::Restart { target, count } => chaos.restart(target, *count, &mut rng)?,
            Step::KillLan { lan } => chaos.kill_lan(lan, &mut rng)?,
            Step::Partition { lan } => chaos.partition(lan, &mut rng)?,
            Step::Loss { target, pct, count } => chaos.loss(target, *pct, *count, &mut rng)?,
            Step::Heal => {
                let h = chaos.heal()?;
                pending.push("heal".into());
                last_fault_t = t;
                println!("[{t:6.1}s] step {}: heal {h:?}", i + 1);
                continue;
            }
            Step::Sleep { secs } => {
                let pb = spinner(format!("step {}: sleep {secs} s", i + 1));
                let until = Instant::now() + Duration::from_secs_f64(*secs);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
                }
                pb.finish_and_clear();
                continue;
            }
            Step::WaitR {
                timeout_secs,
                target_secs,
            } => {
                let (took, obs) = wait_at_r(
                    &sampler,
                    last_fault_t,
                    Duration::from_secs_f64(*timeout_secs),
                    total,
                    &format!("step {}", i + 1),
                    stop,
                );
                check(stop)?;
                let after = if pending.is_empty() {
                    "(no fault)".to_string()
                } else {
                    pending.join("; ")
                };
                let rec = Recovery {
                    after,
                    fault_t_secs: last_fault_t,
                    back_at_r_secs: took,
                    timeout_secs: *timeout_secs,
                    target_secs: target_secs.or(extra.back_at_r_secs),
                    at_r_when_done: obs.as_ref().map_or(0, |o| o.sample.at_r),
                    unavailable_when_done: obs.as_ref().map_or(0, |o| o.sample.lost),
                };
                log.write("recovered", serde_json::to_value(&rec)?);
                println!(
                    "[{:6.1}s] step {}: back at r after {}: {}",
                    log.t(),
                    i + 1,
                    rec.after,
                    took.map_or_else(
                        || format!("NOT within {timeout_secs} s (at r {}/{total}, held by no running node {})", rec.at_r_when_done, rec.unavailable_when_done),
                        |s| format!("{s:.1} s")
                    )
                );
                recoveries.push(rec);
                pending.clear();
                continue;
            }
        };
        println!(
            "[{t:6.1}s] step {}: {} {}",
            i + 1,
            step.name(),
            hit.join(", ")
        );
        pending.push(format!("{} {}", step.name(), hit.join(", ")));
        last_fault_t = t;
    }

    // Heal, settle, check.
    let heal_t = log.t();
    let h = chaos.heal()?;
    println!("[{heal_t:6.1}s] final heal: {h:?}");
    wait_ready_or(&**backend, READY_TIMEOUT, stop)?;
    let (settled, _) = wait_at_r(
        &sampler,
        heal_t,
        survival_cfg.settle(),
        total,
        "after heal",
        stop,
    );
    check(stop)?;
    let final_obs = sampler.latest_since(heal_t);
    let rec = Recovery {
        after: if pending.is_empty() {
            "final heal".into()
        } else {
            format!("final heal (after {})", pending.join("; "))
        },
        fault_t_secs: heal_t,
        back_at_r_secs: settled,
        timeout_secs: survival_cfg.settle_secs,
        target_secs: extra.back_at_r_secs,
        at_r_when_done: final_obs.as_ref().map_or(0, |o| o.sample.at_r),
        unavailable_when_done: final_obs.as_ref().map_or(0, |o| o.sample.lost),
    };
    log.write("recovered", serde_json::to_value(&rec)?);
    recoveries.push(rec);

    let reads = reader.map(crate::reads::Reader::finish);
    if let Some(r) = &reads {
        log.write("reads", serde_json::to_value(r)?);
    }
    let containers = backend.nodes()?;
    let now: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    let then: BTreeSet<&str> = nodes.iter().map(|c| c.id.as_str()).collect();
    if now != then {
        bail!(
            "the {} network was recreated during the run (nodes replaced, their data with \
             them, e.g. by `make up` with a new image): the results are void; run again",
            backend.name()
        );
    }
    // Returning nodes can keep groups changing for a while after the first observation with
    // every item at r (a member trimmed, another joining): an item counts as under r after the
    // heal only if no observation within RECHECK shows every item at r.
    let mut obs = survival::observe(&containers, &ids, r, log.t());
    let recheck_until = Instant::now() + RECHECK;
    while obs.sample.at_r < total && Instant::now() < recheck_until {
        check(stop)?;
        std::thread::sleep(SAMPLE_EVERY);
        obs = survival::observe(&containers, &ids, r, log.t());
    }
    let pb = bar(total, "retrieve");
    pb.set_position(0);
    let checks = survival::retrieve_all(&containers, &items, &obs);
    pb.finish_and_clear();
    let samples = sampler.finish();

    let lan_of: std::collections::BTreeMap<String, String> = containers
        .iter()
        .map(|c| (c.label(), c.lan.clone()))
        .collect();
    let mut it = Items {
        stored: total,
        ..Items::default()
    };
    let mut lost_by_lan = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for c in &checks {
        it.wrong_content += c.wrong_content;
        if c.retrieved_via.is_some() {
            it.retrievable += 1;
            if c.attempts == 1 {
                it.retrievable_first_try += 1;
            }
            if c.replicas >= r {
                it.at_r += 1;
            } else {
                it.under_r += 1;
            }
        } else {
            it.lost += 1;
            if c.listed > 0 {
                it.lost_but_listed += 1;
            }
            let lan = lan_of.get(&c.stored_via).cloned().unwrap_or_default();
            *lost_by_lan.entry(lan).or_insert(0usize) += 1;
        }
        if c.retrieved_via.is_none() || c.wrong_content > 0 || c.replicas < r {
            problems.push(c.clone());
        }
    }
    log.write("checked", serde_json::to_value(&it)?);
    let events = std::fs::read_to_string(dir.join("faults.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let report = Report {
        scenario: name,
        seed,
        r,
        started_unix_ms,
        duration_secs: log.t(),
        initial_replication_secs: initial,
        initial_spread_secs: spread,
        items: it,
        lost_by_lan,
        recoveries,
        events,
        samples,
        problems,
        backend: backend.name().to_string(),
        max_lost: extra.max_lost,
        reads,
    };
    report.write(dir)?;
    Ok(report)
}
