//! Transport benchmark: Butter nodes on loopback, printed beside the raw-quinn baseline.
//!
//!     make bench            # builds and runs ../shared/bench/qbench first, then this
//!     cargo bench -p butter --bench transport -- [--qbench FILE]
//!
//! Figures: handshake p50/p99 (fresh authenticated connection), request latency on a pooled
//! connection (64 B and 4 KiB replies), request rate with 32 in flight, single-item bulk
//! throughput, RSS of an idle node and per idle connection. With `--qbench FILE` (qbench's output)
//! every figure is also shown as a ratio to raw quinn measured in the same job.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use butter::{Config, Node, NodeBuilder, behaviour};
use bytes::Bytes;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn server() -> Node {
    let mut cfg = Config::for_tests();
    cfg.alone = true;
    // The benchmark is one peer on purpose far above the default per-peer rate limit.
    cfg.limits.peer_rate = 1e9;
    cfg.limits.peer_burst = 1e9;
    cfg.limits.max_body = 1 << 30;
    cfg.limits.max_connections = 4096;
    cfg.limits.request_timeout = Duration::from_secs(60);
    let chunk = Bytes::from(vec![7u8; 1 << 30]);
    NodeBuilder::new(cfg)
        .behaviour(
            "blob",
            behaviour::from_fn(move |_ctx, body: Bytes| {
                let chunk = chunk.clone();
                async move {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(body.get(..8).unwrap_or(&[0; 8]));
                    let n = (u64::from_be_bytes(n) as usize).min(chunk.len());
                    Ok(chunk.slice(..n))
                }
            }),
        )
        .build()
        .await
        .expect("server node")
}

async fn client() -> Node {
    let mut cfg = Config::for_tests();
    cfg.alone = true;
    cfg.limits.max_body = 1 << 30;
    cfg.limits.max_connections = 4096;
    cfg.limits.request_timeout = Duration::from_secs(60);
    NodeBuilder::new(cfg).build().await.expect("client node")
}

async fn blob(node: &Node, peer: butter::PeerId, n: u64) -> usize {
    node.request(peer, "blob", Bytes::copy_from_slice(&n.to_be_bytes()))
        .await
        .expect("request")
        .len()
}

/// Parses qbench's output into named figures.
fn parse_qbench(text: &str) -> BTreeMap<&'static str, f64> {
    let mut m = BTreeMap::new();
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    for line in text.lines() {
        if line.starts_with("handshake_full_1rtt_us") {
            field(line, "p50=").map(|v| m.insert("handshake_p50_us", v));
            field(line, "p99=").map(|v| m.insert("handshake_p99_us", v));
        } else if line.starts_with("rpc_stream_per_request resp=4096B") {
            field(line, "p50=").map(|v| m.insert("rpc4k_p50_us", v));
            field(line, "p99=").map(|v| m.insert("rpc4k_p99_us", v));
        } else if line.starts_with("rpc_stream_per_request resp=64B") {
            field(line, "p50=").map(|v| m.insert("rpc64_p50_us", v));
        } else if line.starts_with("rpc_64B_concurrency32") {
            field(line, "rate=").map(|v| m.insert("rate32", v));
        } else if line.starts_with("bulk_single_stream size=256MiB") {
            field(line, "throughput=").map(|v| m.insert("bulk_mib_s", v));
        } else if line.starts_with("idle_conn_memory") {
            field(line, "=> ").map(|v| m.insert("conn_kib", v));
        } else if line.starts_with("idle_endpoint") {
            field(line, "rss_with_bound_server_endpoint=").map(|v| m.insert("idle_kib", v));
        }
    }
    m
}

fn idle_child() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let node = client().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("{}", rss_kib());
        node.shutdown(Duration::from_millis(100)).await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--idle-child") {
        return idle_child();
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: transport [--qbench FILE] [--quick]\n  --qbench FILE  qbench output to compare against\n  --quick        fewer iterations (smoke run)"
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let base = args
        .iter()
        .position(|a| a == "--qbench")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_qbench(&t))
        .unwrap_or_default();

    // Idle node RSS, in a fresh process so nothing else is counted.
    let exe = std::env::current_exe().expect("own path");
    let idle_kib: f64 = std::process::Command::new(exe)
        .arg("--idle-child")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(f64::NAN);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows: Vec<(&str, &str, f64, Option<&'static str>, bool)> = Vec::new();
    rt.block_on(async {
        let s = server().await;
        let c = client().await;
        let addr = s.local_addr().expect("addr");
        let peer = c.connect(addr).await.expect("connect");
        let n = if quick { 50 } else { 300 };

        eprintln!("[1/5] handshakes ({n})");
        let mut hs = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let (_, conn) = c.transport().connect(addr, None).await.expect("dial");
            hs.push(t.elapsed().as_secs_f64() * 1e6);
            conn.close(0u32.into(), b"");
        }
        rows.push((
            "handshake p50",
            "µs",
            pct(&mut hs, 0.5),
            Some("handshake_p50_us"),
            false,
        ));
        rows.push((
            "handshake p99",
            "µs",
            pct(&mut hs, 0.99),
            Some("handshake_p99_us"),
            false,
        ));

        let iters = if quick { 300 } else { 3000 };
        eprintln!("[2/5] request latency ({iters} × 64 B, {iters} × 4 KiB)");
        for _ in 0..200 {
            blob(&c, peer, 64).await;
        }
        let mut lat = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            blob(&c, peer, 64).await;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        rows.push((
            "64 B request p50",
            "µs",
            pct(&mut lat, 0.5),
            Some("rpc64_p50_us"),
            false,
        ));
        let mut lat = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            blob(&c, peer, 4096).await;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        rows.push((
            "4 KiB request p50",
            "µs",
            pct(&mut lat, 0.5),
            Some("rpc4k_p50_us"),
            false,
        ));
        rows.push((
            "4 KiB request p99",
            "µs",
            pct(&mut lat, 0.99),
            Some("rpc4k_p99_us"),
            false,
        ));

        let total = if quick { 2000 } else { 20000 };
        eprintln!("[3/5] request rate, 32 in flight ({total} requests, 64 B and 4 KiB)");
        for (label, size, key) in [
            ("64 B rate, 32 in flight", 64u64, Some("rate32")),
            ("4 KiB rate, 32 in flight", 4096, None),
        ] {
            let t = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..32 {
                let c2 = c.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = w;
                    while i < total {
                        blob(&c2, peer, size).await;
                        i += 32;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("worker");
            }
            rows.push((
                label,
                "req/s",
                total as f64 / t.elapsed().as_secs_f64(),
                key,
                true,
            ));
        }

        let mib = if quick { 64u64 } else { 256 };
        eprintln!("[4/5] bulk: one {mib} MiB item");
        let t = Instant::now();
        let got = blob(&c, peer, mib << 20).await;
        rows.push((
            "bulk, one item",
            "MiB/s",
            got as f64 / t.elapsed().as_secs_f64() / 1048576.0,
            Some("bulk_mib_s"),
            true,
        ));

        let m = if quick { 100 } else { 500 };
        eprintln!("[5/5] memory: {m} idle connections");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kib();
        let mut conns = Vec::new();
        for seq in 0..m {
            let (_, conn) = c.transport().connect(addr, None).await.expect("dial");
            // One request per connection, as the baseline does, so stream state is allocated.
            let ping = butter_proto::wire::Request::Ping { seq: seq as u64 };
            c.transport()
                .request_on(&conn, &ping, Bytes::new())
                .await
                .expect("ping");
            conns.push(conn);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per = (rss_kib().saturating_sub(before)) as f64 / m as f64;
        rows.push((
            "RSS per idle connection (both ends)",
            "KiB",
            per,
            Some("conn_kib"),
            false,
        ));
        for conn in &conns {
            conn.close(0u32.into(), b"");
        }
        c.shutdown(Duration::from_secs(1)).await;
        s.shutdown(Duration::from_secs(1)).await;
    });
    rows.push(("RSS idle node", "KiB", idle_kib, Some("idle_kib"), false));

    println!();
    println!("| figure | butter | raw quinn | ratio |");
    println!("|---|---:|---:|---:|");
    for (label, unit, v, key, higher_better) in rows {
        let q = key.and_then(|k| base.get(k)).copied();
        let (qs, ratio) = match q {
            Some(q) if q > 0.0 => {
                let r = v / q;
                (
                    format!("{q:.0} {unit}"),
                    format!("{r:.2}× {}", if higher_better { "of raw" } else { "raw" }),
                )
            }
            _ => ("–".into(), "–".into()),
        };
        println!("| {label} | {v:.0} {unit} | {qs} | {ratio} |");
    }
}
