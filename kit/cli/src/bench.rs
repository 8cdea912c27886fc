//! `butter-kit bench`: image size, container start-to-serving time and the memory of the whole
//! compose network (T4, T5).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use butter_testbed::api;
use butter_testbed::engine::{Engine, Memory, Role};
use butter_testbed::network;
use butter_testbed::testbed::{Testbed, UpOptions};

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
        let addr = SocketAddr::from((ip, network::HTTP_PORT));
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

pub fn bench(
    root: &std::path::Path,
    scale: usize,
    runs: usize,
    settle: u64,
    bin: &std::path::Path,
    keep: bool,
) -> Result<()> {
    let bed = Testbed::open(root)?;
    let engine = bed.engine();
    let image = network::image();
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

    let running = bed.nodes()?.iter().filter(|c| c.is_up()).count();
    let started = running == 0;
    if started || running != network::LANS.len() * (scale + 1) {
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
            .pid(&v.container.id)
            .ok()
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
        network::LANS.len()
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
