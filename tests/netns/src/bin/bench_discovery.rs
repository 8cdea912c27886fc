//! `bench-discovery`: discovery and failure-detection figures in the netns lab (GOALS T6–T8).
//!
//! Scenarios, each repeated and summarised as p50/p99 (nearest rank; a timed-out run ranks last):
//! - `lan`: N nodes (default 30) on one bridge, started at one instant: time until every node
//!   knows all N−1 others (T6: ≤ 2 s in 20 of 20 runs). In the first run it also counts the
//!   UDP datagrams entering the bridge in the first 10 s and over the 20 s after: multicast
//!   (T6: start-up ≤ 2·N, steady state ≤ 0.5/s) and unicast per node (no probe storm).
//! - `large`: the same at 50, 100 and 150 nodes (20, 20 and 5 runs), past the table's site share
//!   of 64: time until every node holds `min(N − 1, 64)` same-site hosts, is listed by at least 8
//!   others and the who-knows-whom graph is strongly connected (≤ 2 s; 150: ≤ 5 s), with the
//!   traffic and CPU per node of the first run.
//! - `cross`: 3 subnets × 10 nodes, host 1 of each subnet bootstrapping from the next subnet:
//!   time until every node knows a host in each other subnet (T7: ≤ 10 s).
//! - `fail`: N nodes on one bridge, converged; SIGKILL a random node (seeded): time until it left
//!   every live table (T8: ≤ 8 s p99). The killed node is then started again (same id) and the
//!   time until every node knows it again is reported as `rejoin` (T6's late joiner: ≤ 1 s).
//!
//! Each run also records the machine's 1-minute load average: on a shared 2-core machine a
//! compile next door moves these figures more than any change to the node.
//!
//! Times count from the instant the lab released the start barrier (or sent the kill), polling
//! every node's `/peers` in parallel every 50 ms, so they carry up to ~50 ms of polling error.
//!
//! Usage: `sudo target/release/bench-discovery [--runs N] [--only lan,cross,fail] [--nodes N]
//! [--seed S] [--timeout SECS]`. Needs root and a built butter-node (`BUTTER_NODE_BIN`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use butter_netns_tests::lab::{self, Bootstrap, Config, Environment, Lab};
use butter_netns_tests::observe::Poll;
use butter_netns_tests::stats::{self, Series};

const POLL_EVERY: Duration = Duration::from_millis(50);

struct Options {
    runs: usize,
    only: Vec<String>,
    nodes: u32,
    seed: u64,
    timeout: Duration,
}

fn parse_args() -> Result<Options> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut o = Options {
        runs: 20,
        only: vec!["lan".into(), "large".into(), "cross".into(), "fail".into()],
        nodes: 30,
        seed,
        timeout: Duration::from_secs(30),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => o.runs = value()?.parse()?,
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "--nodes" => o.nodes = value()?.parse()?,
            "--seed" => o.seed = value()?.parse()?,
            "--timeout" => o.timeout = Duration::from_secs(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "bench-discovery [--runs N (20)] [--only lan,large,cross,fail] [--nodes N (30)] [--seed S] [--timeout SECS (30)]\n\
                     lan: --nodes on one bridge; large: 50, 100 and 150 on one bridge (5 runs at 150);\n\
                     cross: 3 x 10 with bootstrap; fail: kill one of --nodes and time its removal"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    Ok(o)
}

/// splitmix64: a seeded choice of victims without pulling in a RNG crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// Polls `hosts` until `laggards` is empty; `None` on timeout.
fn time_until(
    lab: &Lab,
    hosts: &[usize],
    since: Instant,
    timeout: Duration,
    laggards: impl Fn(&Poll) -> Vec<usize>,
) -> Option<Duration> {
    time_until_explained(lab, hosts, since, timeout, laggards, None).0
}

/// What to keep once a run is over its target: who still misses whom.
type Explain<'a> = (Duration, &'a dyn Fn(&Poll) -> Vec<String>);

/// [`time_until`], also returning `explain.1` of the first poll after `explain.0` when the goal
/// was not reached by then.
fn time_until_explained(
    lab: &Lab,
    hosts: &[usize],
    since: Instant,
    timeout: Duration,
    laggards: impl Fn(&Poll) -> Vec<usize>,
    mut explain: Option<Explain<'_>>,
) -> (Option<Duration>, Option<Vec<String>>) {
    let mut gaps = None;
    loop {
        let poll = Poll::take(lab, hosts);
        if laggards(&poll).is_empty() {
            return (Some(since.elapsed()), gaps);
        }
        if let Some((after, describe)) = explain
            && since.elapsed() > after
        {
            gaps = Some(describe(&poll));
            explain = None;
        }
        if since.elapsed() > timeout {
            return (None, gaps);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

fn record(series: &mut Series, outcome: Option<Duration>, target: Duration, run: usize) {
    let load = stats::load_average();
    series.load.extend(load);
    let load = load.map_or_else(String::new, |l| format!(" (load {l:.1})"));
    match outcome {
        Some(took) => {
            eprintln!(
                "  {} run {run}: {:.0} ms{load}",
                series.name,
                took.as_secs_f64() * 1000.0
            );
            if took <= target {
                series.within_target += 1;
            }
            series.samples.push(took);
        }
        None => {
            eprintln!("  {} run {run}: timeout{load}", series.name);
            series.timeouts += 1;
        }
    }
}

/// UDP datagrams on the bridge in the first run: start-up (first 10 s) and steady state.
struct TrafficReport {
    nodes: u32,
    startup: lab::Traffic,
    steady: lab::Traffic,
    /// CPU seconds of all nodes over the start-up window, and over the steady window.
    cpu_startup: f64,
    cpu_steady: f64,
    /// Length of the start-up window (10 s, or longer when the goal took longer).
    startup_secs: f64,
}

impl TrafficReport {
    const STARTUP: Duration = Duration::from_secs(10);
    const STEADY: Duration = Duration::from_secs(20);

    fn report(&self) -> String {
        let secs = Self::STEADY.as_secs_f64();
        let n = f64::from(self.nodes);
        format!(
            "traffic, {} nodes on one bridge: first {:.0} s: {} multicast (T6: <= 2N = {}), \
             {} unicast datagrams; next {} s: {:.2} multicast/s (T6: <= 0.5/s), \
             {:.1} unicast datagrams/s per node; CPU per node: {:.1} % over the first {:.0} s, \
             {:.2} % after",
            self.nodes,
            self.startup_secs,
            self.startup.multicast,
            2 * self.nodes,
            self.startup.unicast,
            Self::STEADY.as_secs(),
            self.steady.multicast as f64 / secs,
            self.steady.unicast as f64 / secs / n,
            100.0 * self.cpu_startup / self.startup_secs / n,
            self.startup_secs,
            100.0 * self.cpu_steady / secs / n,
        )
    }
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// CPU seconds (user + system) the lab's node processes used so far, from `/proc/PID/stat`.
fn node_cpu_secs(lab: &Lab) -> f64 {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    (0..lab.hosts().len())
        .filter_map(|i| {
            let pid = std::fs::read_to_string(lab.log_path(i).with_file_name("pid")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
            // Fields after the command name (which may hold spaces): utime and stime are 14, 15.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / ticks_per_sec
}

/// N nodes on one bridge started at one instant, `runs` times: time to the LAN goal (`Observation::lan_goal_laggards` empty).
fn bench_lan(
    env: &Environment,
    nodes: u32,
    runs: usize,
    target: Duration,
    timeout: Duration,
) -> Result<(Series, TrafficReport)> {
    let mut series = Series::new(
        format!("lan convergence, {nodes} nodes"),
        format!("≤ {} s, {runs}/{runs} runs", target.as_secs()),
    );
    // Counted from the fresh lab: `up` builds the bridge (counter at 0) before it starts nodes.
    let mut lab = Lab::up(
        env,
        &Config {
            wait_secs: 0,
            ..Config::new(1, nodes)
        },
    )?;
    let hosts: Vec<usize> = (0..lab.hosts().len()).collect();
    let mut traffic = TrafficReport {
        nodes,
        startup: Default::default(),
        steady: Default::default(),
        cpu_startup: 0.0,
        cpu_steady: 0.0,
        startup_secs: TrafficReport::STARTUP.as_secs_f64(),
    };
    for run in 0..runs {
        if run > 0 {
            lab.restart(0)?;
        }
        let describe = |p: &Poll| {
            let mut gaps = p.describe_lan_gaps(&lab);
            if gaps.is_empty() {
                let degrees = p.in_degrees(&lab);
                let least = degrees.iter().min().copied().unwrap_or(0);
                gaps.push(format!(
                    "every node holds its share; fewest listing one node: {least}; \
                     strongly connected: {}",
                    p.strongly_connected(&lab)
                ));
            }
            gaps
        };
        let (took, gaps) = time_until_explained(
            &lab,
            &hosts,
            lab.started(),
            timeout,
            |p| p.lan_goal_laggards(&lab),
            Some((target, &describe)),
        );
        record(&mut series, took, target, run);
        if let Some(gaps) = gaps {
            eprintln!("    at {target:?}, not there yet, e.g.:");
            for gap in gaps.iter().take(5) {
                eprintln!("      {gap}");
            }
        }
        if run == 0 {
            // The start-up window ends 10 s after the start, or when the goal was reached (or
            // given up) if that is later; the steady window is the 20 s after it.
            let startup_end = Instant::now().max(lab.started() + TrafficReport::STARTUP);
            sleep_until(startup_end);
            traffic.startup_secs = startup_end.duration_since(lab.started()).as_secs_f64();
            let at_startup = lab.traffic(1)?;
            let cpu_at_startup = node_cpu_secs(&lab);
            sleep_until(startup_end + TrafficReport::STEADY);
            traffic.startup = at_startup;
            traffic.steady = lab.traffic(1)? - at_startup;
            traffic.cpu_startup = cpu_at_startup;
            traffic.cpu_steady = node_cpu_secs(&lab) - cpu_at_startup;
            eprintln!("  {}", traffic.report());
        }
    }
    Ok((series, traffic))
}

fn bench_cross(env: &Environment, o: &Options) -> Result<Series> {
    let mut series = Series::new("cross-subnet reach, 3 x 10 nodes", "≤ 10 s");
    let config = Config {
        wait_secs: 0,
        ..Config::new(3, 10).bootstrap(Bootstrap::OnePerSubnet)
    };
    let mut lab = Lab::up(env, &config)?;
    let hosts: Vec<usize> = (0..lab.hosts().len()).collect();
    for run in 0..o.runs {
        if run > 0 {
            lab.restart(0)?;
        }
        let took = time_until(&lab, &hosts, lab.started(), o.timeout, |p| {
            p.cross_laggards(&lab)
        });
        record(&mut series, took, Duration::from_secs(10), run);
    }
    Ok(series)
}

fn bench_fail(env: &Environment, o: &Options, rng: &mut Rng) -> Result<Vec<Series>> {
    let mut detect = Series::new(format!("failure detection, {} nodes", o.nodes), "≤ 8 s p99");
    let mut rejoin = Series::new(
        format!("rejoin after kill, {} nodes", o.nodes),
        "≤ 1 s (late joiner)",
    );
    let mut lab = Lab::up(
        env,
        &Config {
            wait_secs: 0,
            ..Config::new(1, o.nodes)
        },
    )?;
    let hosts: Vec<usize> = (0..lab.hosts().len()).collect();
    for run in 0..o.runs {
        if run > 0 {
            lab.restart(0)?;
        }
        if time_until(&lab, &hosts, lab.started(), o.timeout, |p| {
            p.lan_laggards(&lab)
        })
        .is_none()
        {
            // Not a detection failure: the run is left out (the table shows fewer runs).
            eprintln!("  run {run}: the lab never converged; no kill in this run");
            continue;
        }
        lab.identify()?;
        let victim = rng.below(hosts.len());
        let live: Vec<usize> = hosts.iter().copied().filter(|&i| i != victim).collect();
        lab.kill(victim)?;
        let killed = Instant::now();
        eprintln!("  run {run}: killed {}", lab.hosts()[victim].name);
        let took = time_until(&lab, &live, killed, o.timeout, |p| {
            p.holders_of(&lab, victim)
        });
        record(&mut detect, took, Duration::from_secs(8), run);
        let released = lab.start(victim)?;
        let took = time_until(&lab, &live, released, o.timeout, |p| {
            let holders = p.holders_of(&lab, victim);
            live.iter()
                .copied()
                .filter(|i| !holders.contains(i))
                .collect()
        });
        record(&mut rejoin, took, Duration::from_secs(1), run);
    }
    Ok(vec![detect, rejoin])
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let Some(env) = Environment::detect_or_skip("bench-discovery") else {
        return Ok(());
    };
    eprintln!(
        "bench-discovery: {} runs per scenario, seed {}, binary {}",
        o.runs,
        o.seed,
        env.bin.display()
    );
    let mut rng = Rng(o.seed);
    let mut all = Vec::new();
    let mut traffic = Vec::new();
    for scenario in &o.only {
        eprintln!("scenario {scenario}");
        match scenario.as_str() {
            "lan" => {
                let (series, t) =
                    bench_lan(&env, o.nodes, o.runs, Duration::from_secs(2), o.timeout)?;
                all.push(series);
                traffic.push(t);
            }
            "large" => {
                // Past the table's site share: 20 runs at 50 and 100, 5 at 150 (or --runs, if
                // fewer), 2 s to the goal (150: 5 s).
                for (nodes, runs, secs) in [(50, 20, 2), (100, 20, 2), (150, 5, 5)] {
                    eprintln!("  {nodes} nodes");
                    let (series, t) = bench_lan(
                        &env,
                        nodes,
                        o.runs.min(runs),
                        Duration::from_secs(secs),
                        o.timeout,
                    )?;
                    all.push(series);
                    traffic.push(t);
                }
            }
            "cross" => all.push(bench_cross(&env, &o)?),
            "fail" => all.extend(bench_fail(&env, &o, &mut rng)?),
            other => bail!("unknown scenario {other} (lan, large, cross, fail)"),
        }
    }
    println!(
        "\nbench-discovery: seed {}, {} runs per scenario, {}",
        o.seed,
        o.runs,
        env.bin.display()
    );
    print!("{}", stats::table(&all));
    for t in traffic {
        println!("{}", t.report());
    }
    Ok(())
}
