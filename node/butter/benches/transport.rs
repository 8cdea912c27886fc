//! Transport benchmark: Butter nodes on loopback, printed beside the raw-quinn baseline.
//!
//!     make bench            # builds and runs ../shared/bench/qbench first, then this
//!     cargo bench -p butter --bench transport -- [--qbench FILE]
//!
//! Figures: handshake p50/p99 (fresh authenticated connection), request latency on a pooled
//! connection (64 B and 4 KiB replies), request rate with 32 in flight, single-item bulk
//! throughput, RSS of an idle node and per idle connection. With `--qbench FILE` (qbench's output)
//! every figure is also shown as a ratio to raw quinn measured in the same job.
//!
//! For instruction counts (callgrind), a part can run a fixed amount of work, on Butter or on bare
//! quinn set up as qbench does (`--raw`), so cost per request = (run − setup-only run) / N:
//!
//!     valgrind --tool=callgrind transport --only rate --requests 2000 [--raw]
//!     valgrind --tool=callgrind transport --only rate --requests 0 [--raw]     # setup only
//!     valgrind --tool=callgrind transport --only bulk --bulk-mib 64 [--raw]
//!     valgrind --tool=callgrind transport --only bulk --bulk-mib 0 --fill-mib 64 [--raw]
//!
//! `benches/callgrind.sh` runs these pairs and prints the differences.

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

/// A node serving `blob`: replies with the first n bytes of a `chunk_len` buffer.
async fn server(chunk_len: usize) -> Node {
    let mut cfg = Config::for_tests();
    cfg.alone = true;
    // The benchmark is one peer on purpose far above the default per-peer rate limit.
    cfg.limits.peer_rate = 1e9;
    cfg.limits.peer_burst = 1e9;
    cfg.limits.max_body = 1 << 30;
    cfg.limits.max_connections = 4096;
    cfg.limits.request_timeout = Duration::from_secs(60);
    let chunk = Bytes::from(vec![7u8; chunk_len]);
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
            "usage: transport [--qbench FILE | --pairs N --qbench-bin PATH] [--quick] [--only PART]\n  --qbench FILE      qbench output to compare against\n  --pairs N          N interleaved pairs (raw quinn, then this), a table of medians and ranges\n  --qbench-bin PATH  the qbench binary the pairs run\n  --quick            fewer iterations (smoke run)\n  --only PART        one part: handshake, latency, rate, bulk or memory (e.g. under a profiler)\n  --requests N       the rate part runs N 64 B requests (32 in flight) and nothing else\n  --bulk-mib M       the bulk part moves one M MiB item\n  --fill-mib M       the server's reply buffer is M MiB (default: what the run needs)\n  --raw              run --only rate or bulk over bare quinn, set up as qbench does (profiling)\n  --keep             with --raw: gather each reply into one buffer, as Butter returns it"
        );
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if let Some(o) = &only {
        if !["handshake", "latency", "rate", "bulk", "memory"].contains(&o.as_str()) {
            eprintln!("--only {o}: expected handshake, latency, rate, bulk or memory");
            std::process::exit(2);
        }
    }
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str| -> Option<u64> {
        let v = value(flag)?;
        match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                eprintln!("{flag} {v}: expected a number");
                std::process::exit(2);
            }
        }
    };
    let requests = number("--requests").map(|n| n as usize);
    let bulk_mib = number("--bulk-mib");
    // The server's reply buffer in MiB (default: what the run needs), so a setup-only run can
    // fill as much as the run it is subtracted from.
    let fill_mib = number("--fill-mib");
    if args.iter().any(|a| a == "--raw") {
        let n = requests.unwrap_or(20000);
        let mib = bulk_mib.unwrap_or(256);
        let keep = args.iter().any(|a| a == "--keep");
        return raw::run(part("rate").then_some(n), part("bulk").then_some(mib), keep);
    }
    if let Some(n) = value("--pairs") {
        let Ok(n) = n.parse::<usize>() else {
            eprintln!("--pairs {n}: expected a number of pairs, e.g. 3");
            std::process::exit(2);
        };
        let Some(bin) = value("--qbench-bin") else {
            eprintln!(
                "--pairs needs --qbench-bin PATH (make bench builds qbench into target/release)"
            );
            std::process::exit(2);
        };
        let mut pass: Vec<String> = Vec::new();
        if quick {
            pass.push("--quick".into());
        }
        if let Some(o) = &only {
            pass.extend(["--only".into(), o.clone()]);
        }
        return pairs(n, &bin, &pass);
    }
    let base = args
        .iter()
        .position(|a| a == "--qbench")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse_qbench(&t))
        .unwrap_or_default();

    // Idle node RSS, in a fresh process so nothing else is counted.
    let exe = std::env::current_exe().expect("own path");
    let idle_kib: f64 = if !part("memory") {
        f64::NAN
    } else {
        std::process::Command::new(exe)
            .arg("--idle-child")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(f64::NAN)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows: Vec<(&str, &str, f64, Option<&'static str>, bool)> = Vec::new();
    rt.block_on(async {
        // Filling the server's reply buffer dominates a short profiled run: size it to the run.
        let chunk_len = match (fill_mib.or(bulk_mib), requests) {
            (Some(mib), _) => (mib as usize) << 20,
            (None, Some(_)) => 64 << 10,
            (None, None) => 1 << 30,
        };
        let s = server(chunk_len.max(64 << 10)).await;
        let c = client().await;
        let addr = s.local_addr().expect("addr");
        let peer = c.connect(addr).await.expect("connect");
        let n = if quick { 50 } else { 300 };

        if part("handshake") {
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
        }

        let iters = if quick { 300 } else { 3000 };
        if part("latency") {
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
        }

        let total = requests.unwrap_or(if quick { 2000 } else { 20000 });
        if part("rate") {
            eprintln!("[3/5] request rate, 32 in flight ({total} requests, 64 B and 4 KiB)");
            for (label, size, key) in [
                ("64 B rate, 32 in flight", 64u64, Some("rate32")),
                ("4 KiB rate, 32 in flight", 4096, None),
            ] {
                if requests.is_some() && size != 64 {
                    continue;
                }
                let stats = || c.transport().pooled(&peer).map(|conn| conn.stats());
                let before = stats();
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
                let elapsed = t.elapsed();
                // Packets per request on the client's pooled connection: where framework
                // overhead turns into datagrams, it shows here before it shows in time.
                if let (Some(a), Some(b)) = (before, stats()) {
                    let per = |x: u64, y: u64| (y - x) as f64 / total as f64;
                    eprintln!(
                        "      {label}: {:.2} datagrams sent, {:.2} received per request",
                        per(a.udp_tx.datagrams, b.udp_tx.datagrams),
                        per(a.udp_rx.datagrams, b.udp_rx.datagrams)
                    );
                }
                rows.push((
                    label,
                    "req/s",
                    total as f64 / elapsed.as_secs_f64(),
                    key,
                    true,
                ));
            }
        }

        let mib = bulk_mib.unwrap_or(if quick { 64 } else { 256 });
        if part("bulk") {
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
        }

        let m = if quick { 100 } else { 500 };
        if part("memory") {
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
        }
        c.shutdown(Duration::from_secs(1)).await;
        s.shutdown(Duration::from_secs(1)).await;
    });
    if part("memory") {
        rows.push(("RSS idle node", "KiB", idle_kib, Some("idle_kib"), false));
    }

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

/// One figure of a run's table: butter's value, raw quinn's (if compared), the ratio.
type Figure = (f64, Option<f64>, Option<f64>);

/// The figures of a table printed by this bench, in order.
fn parse_table(text: &str) -> Vec<(String, String, Figure)> {
    let num = |cell: &str| -> Option<f64> {
        cell.split_whitespace()
            .next()?
            .trim_end_matches('×')
            .parse()
            .ok()
    };
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let [label, butter, raw, ratio] = cells[..] else {
                return None;
            };
            let unit = butter.split_whitespace().nth(1).unwrap_or("").to_string();
            Some((
                label.to_string(),
                unit,
                (num(butter)?, num(raw), num(ratio)),
            ))
        })
        .collect()
}

fn median_range(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let fmt = |x: f64| {
        if x < 10.0 {
            format!("{x:.2}")
        } else {
            format!("{x:.0}")
        }
    };
    format!(
        "{} ({}–{})",
        fmt(s[s.len() / 2]),
        fmt(s[0]),
        fmt(s[s.len() - 1])
    )
}

/// `n` interleaved pairs: raw quinn (qbench, then `qbench idle`), then this bench against it in
/// a fresh process; prints every figure's median and range, and the ratio's, so noise and gap
/// can be told apart.
fn pairs(n: usize, qbench: &str, pass: &[String]) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!("butter-bench-pairs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut runs: Vec<Vec<(String, String, Figure)>> = Vec::new();
    for i in 0..n {
        eprintln!("pair {}/{n}: raw quinn ({qbench})", i + 1);
        let mut text = String::new();
        for extra in [None, Some("idle")] {
            let out = std::process::Command::new(qbench)
                .args(extra)
                .output()
                .unwrap_or_else(|e| {
                    eprintln!("cannot run {qbench}: {e} (make bench builds it)");
                    std::process::exit(2)
                });
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        let file = dir.join(format!("qbench-{i}.txt"));
        std::fs::write(&file, &text).expect("write qbench output");
        eprintln!("pair {}/{n}: butter", i + 1);
        let out = std::process::Command::new(&exe)
            .arg("--qbench")
            .arg(&file)
            .args(pass)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run the bench");
        let table = String::from_utf8_lossy(&out.stdout);
        print!("{table}");
        runs.push(parse_table(&table));
    }
    println!("\n## {n} interleaved pairs: median (min–max)\n");
    println!("| figure | butter | raw quinn | ratio |");
    println!("|---|---:|---:|---:|");
    let Some(first) = runs.first() else { return };
    for (label, unit, _) in first {
        let pick = |f: fn(&Figure) -> Option<f64>| -> Vec<f64> {
            runs.iter()
                .filter_map(|r| r.iter().find(|(l, _, _)| l == label))
                .filter_map(|(_, _, fig)| f(fig))
                .collect()
        };
        println!(
            "| {label} | {} {unit} | {} {unit} | {}× |",
            median_range(&pick(|f| Some(f.0))),
            median_range(&pick(|f| f.1)),
            median_range(&pick(|f| f.2)),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rate and bulk parts over bare quinn, set up as `../shared/bench/qbench` does (self-signed
/// certificate, default transport config but 1000 streams, one stream per request, the reply
/// written as slices of one shared buffer), built with this crate's profile: the reference path
/// for instruction counts.
mod raw {
    use std::sync::Arc;
    use std::time::Instant;

    use bytes::Bytes;
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    use quinn::{ClientConfig, Endpoint, ServerConfig, TransportConfig};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    fn configs() -> (ServerConfig, ClientConfig) {
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        let cert = CertificateDer::from(ck.cert);
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let mut sc = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server cert");
        sc.alpn_protocols = vec![b"bench".to_vec()];
        let mut server = ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(sc).expect("quic server"),
        ));
        let mut tc = TransportConfig::default();
        tc.max_concurrent_bidi_streams(1000u32.into());
        server.transport_config(Arc::new(tc));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("root");
        let mut cc = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cc.alpn_protocols = vec![b"bench".to_vec()];
        let client = ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(cc).expect("quic client"),
        ));
        (server, client)
    }

    async fn serve(ep: Endpoint) {
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        while let Some(inc) = ep.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let chunk = chunk.clone();
                    tokio::spawn(async move {
                        let Ok(req) = recv.read_to_end(64 * 1024).await else {
                            return;
                        };
                        let Some(n) = req.get(..8) else { return };
                        let mut left = u64::from_be_bytes(n.try_into().unwrap_or([0; 8]));
                        while left > 0 {
                            let k = left.min(chunk.len() as u64) as usize;
                            if send.write_chunk(chunk.slice(..k)).await.is_err() {
                                return;
                            }
                            left -= k as u64;
                        }
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    }

    /// One request; with `keep` the reply is gathered into one buffer (as Butter returns it)
    /// rather than counted and dropped chunk by chunk (as qbench does).
    async fn request(conn: &quinn::Connection, resp: u64, keep: bool) -> u64 {
        let (mut s, mut r) = conn.open_bi().await.expect("open");
        s.write_all(&resp.to_be_bytes()).await.expect("write");
        s.finish().expect("finish");
        let mut got = 0u64;
        let mut kept = Vec::new();
        while let Some(c) = r.read_chunk(usize::MAX, true).await.expect("read") {
            got += c.bytes.len() as u64;
            if keep {
                kept.extend_from_slice(&c.bytes);
            }
        }
        std::hint::black_box(kept);
        got
    }

    /// `requests` 64 B requests with 32 in flight, then one `bulk_mib` MiB reply.
    pub fn run(requests: Option<usize>, bulk_mib: Option<u64>, keep: bool) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (sc, cc) = configs();
            let server = Endpoint::server(sc, "127.0.0.1:0".parse().expect("addr")).expect("bind");
            let addr = server.local_addr().expect("addr");
            tokio::spawn(serve(server.clone()));
            let mut client = Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
            client.set_default_client_config(cc);
            let conn = client
                .connect(addr, "localhost")
                .expect("connect")
                .await
                .expect("handshake");
            if let Some(total) = requests {
                let t = Instant::now();
                let mut tasks = Vec::new();
                for w in 0..32 {
                    let c2 = conn.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut i = w;
                        while i < total {
                            request(&c2, 64, keep).await;
                            i += 32;
                        }
                    }));
                }
                for t in tasks {
                    t.await.expect("worker");
                }
                let rate = total as f64 / t.elapsed().as_secs_f64();
                println!("raw quinn: {total} × 64 B, 32 in flight: {rate:.0} req/s");
            }
            if let Some(mib) = bulk_mib {
                let t = Instant::now();
                let got = request(&conn, mib << 20, keep).await;
                let rate = got as f64 / t.elapsed().as_secs_f64() / 1048576.0;
                println!("raw quinn: bulk {mib} MiB: {rate:.0} MiB/s");
            }
            conn.close(0u32.into(), b"");
            client.wait_idle().await;
        });
    }
}
