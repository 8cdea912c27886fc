//! `bench-relay`: NAT traversal figures in the netns lab (issue 5).
//!
//! For each pair of NAT types (`eim-eim`, `eim-sym`, `sym-sym`), repeated `--runs` times on a
//! fresh lab (one public host, two LANs behind their own NAT gateway, one node per LAN):
//! 1. wait until both private nodes have a home relay (the public host);
//! 2. the node of LAN 1 calls `echo` on the node of LAN 2 until it answers (through the relay,
//!    or directly when both sides already dialled each other's public address);
//! 3. poll the path until it is direct (`punched`, or `direct`) or `--settle` seconds pass:
//!    success rate and time from the first answer to a direct path;
//! 4. time `--calls` echo calls on whatever path is left: relayed vs direct request latency
//!    (HTTP to the node plus the QUIC request; the HTTP part is the same on both paths).
//!
//! Coordinated punch attempts are counted from both nodes' `butter_holepunch_total`.
//! Prints one table; the machine's load average rides along because a compile next door moves
//! latencies more than any change to the node. The kernel here has no netem: paths have no added
//! delay, so relayed-vs-direct differences are the relay's own cost (a user-space hop).
//!
//! Usage: `sudo target/release/bench-relay [--runs N (5)] [--calls N (50)] [--settle SECS (15)]
//! [--only eim-eim,eim-sym,sym-sym]`. Needs root and a built butter-node (`BUTTER_NODE_BIN`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use butter_netns_tests::lab::{Config, Environment, Lab};
use butter_netns_tests::relay_api;
use butter_netns_tests::stats;

struct Options {
    runs: usize,
    calls: usize,
    settle: Duration,
    only: Vec<String>,
}

fn parse_args() -> Result<Options> {
    let mut o = Options {
        runs: 5,
        calls: 50,
        settle: Duration::from_secs(15),
        only: vec!["eim-eim".into(), "eim-sym".into(), "sym-sym".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => o.runs = value()?.parse()?,
            "--calls" => o.calls = value()?.parse()?,
            "--settle" => o.settle = Duration::from_secs(value()?.parse()?),
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "-h" | "--help" => {
                println!(
                    "bench-relay: hole-punch success and time by NAT type, relayed vs direct latency\n\
                     \n\
                     usage: bench-relay [--runs N (5)] [--calls N (50)] [--settle SECS (15)]\n\
                     \x20                  [--only eim-eim,eim-sym,sym-sym]\n\
                     needs root and butter-node (BUTTER_NODE_BIN, default target/release)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    Ok(o)
}

#[derive(Default)]
struct Row {
    pair: String,
    runs: usize,
    direct: usize,
    to_direct: Vec<Duration>,
    punch_ok: f64,
    punch_failed: f64,
    relayed_calls: Vec<Duration>,
    direct_calls: Vec<Duration>,
    errors: Vec<String>,
    load: Vec<f64>,
}

fn quantile(samples: &[Duration], q: f64) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    let d = s[rank - 1];
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

fn nat_types(pair: &str) -> Result<[&'static str; 2]> {
    let kind = |s: &str| match s {
        "eim" => Ok("eim"),
        "sym" => Ok("symmetric"),
        other => bail!("unknown NAT type {other} (eim, sym)"),
    };
    let (a, b) = pair
        .split_once('-')
        .with_context(|| format!("pair {pair} is not A-B"))?;
    Ok([kind(a)?, kind(b)?])
}

fn one_run(env: &Environment, o: &Options, pair: &str, row: &mut Row) -> Result<()> {
    let nats = nat_types(pair)?;
    let mut lab = Lab::up(env, &Config::new(2, 1).nat(1, &nats))?;
    lab.identify()?;
    let hosts: Vec<usize> = (0..lab.hosts().len())
        .filter(|i| lab.hosts()[*i].subnet > 0)
        .collect();
    let (a, b) = (hosts[0], hosts[1]);
    let (ha, hb) = (lab.hosts()[a].http, lab.hosts()[b].http);
    relay_api::wait_home_relay(ha, Duration::from_secs(30))?;
    relay_api::wait_home_relay(hb, Duration::from_secs(30))?;
    let id_b = lab.id_of(b).context("b has no id")?.to_string();
    relay_api::echo_until(ha, &id_b, Duration::from_secs(30))?;
    let answered = Instant::now();
    loop {
        let path = relay_api::path_to(ha, &id_b)?;
        if path == "punched" || path == "direct" {
            row.direct += 1;
            row.to_direct.push(answered.elapsed());
            break;
        }
        if answered.elapsed() > o.settle {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..o.calls {
        let (path, took) = relay_api::echo(ha, &id_b, b"latency probe")?;
        if path == "relayed" {
            row.relayed_calls.push(took);
        } else {
            row.direct_calls.push(took);
        }
    }
    for h in [ha, hb] {
        row.punch_ok += relay_api::counter(h, "butter_holepunch_total", &[("outcome", "success")])?;
        row.punch_failed +=
            relay_api::counter(h, "butter_holepunch_total", &[("outcome", "failed")])?;
    }
    if let Some(l) = stats::load_average() {
        row.load.push(l);
    }
    Ok(())
}

fn main() -> Result<()> {
    let o = parse_args()?;
    let Some(env) = Environment::detect_or_skip("bench-relay") else {
        return Ok(());
    };
    eprintln!(
        "bench-relay: {} runs per NAT pair, {} calls each, binary {}",
        o.runs,
        o.calls,
        env.bin.display()
    );
    let mut rows = Vec::new();
    for pair in &o.only {
        let mut row = Row {
            pair: pair.clone(),
            ..Row::default()
        };
        for run in 1..=o.runs {
            row.runs += 1;
            match one_run(&env, &o, pair, &mut row) {
                Ok(()) => eprintln!(
                    "  {pair} run {run}/{}: direct paths so far {}/{}",
                    o.runs, row.direct, row.runs
                ),
                Err(e) => {
                    eprintln!("  {pair} run {run}/{}: failed: {e:#}", o.runs);
                    row.errors.push(format!("{e:#}"));
                }
            }
        }
        rows.push(row);
    }
    println!(
        "\nbench-relay: {} runs per NAT pair, {} echo calls per run\n",
        o.runs, o.calls
    );
    println!(
        "| NAT pair | direct path | time to direct p50 / max | punches ok / failed | relayed call p50 / p99 | direct call p50 / p99 | errors | load |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let load = if r.load.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", r.load.iter().sum::<f64>() / r.load.len() as f64)
        };
        println!(
            "| {} | {}/{} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} |",
            r.pair,
            r.direct,
            r.runs,
            quantile(&r.to_direct, 0.5),
            quantile(&r.to_direct, 1.0),
            r.punch_ok,
            r.punch_failed,
            quantile(&r.relayed_calls, 0.5),
            quantile(&r.relayed_calls, 0.99),
            quantile(&r.direct_calls, 0.5),
            quantile(&r.direct_calls, 0.99),
            r.errors.len(),
            load
        );
    }
    for r in &rows {
        for e in &r.errors {
            println!("{}: {e}", r.pair);
        }
    }
    Ok(())
}
