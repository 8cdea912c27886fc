//! `persist`: the original's store/retrieve tool, on the library. A short-lived node joins the
//! network, stores a file (its group keeps it alive after this node leaves) or retrieves one.
//!
//!     cargo run -p butter --example persist -- --peer 127.0.0.1:7000 put notes.txt
//!     cargo run -p butter --example persist -- --peer 127.0.0.1:7000 get <id> > notes.txt

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use butter::GroupState;
use butter::ItemId;
use butter::{Config, NodeBuilder};

fn usage() -> ! {
    eprintln!("usage: persist --peer ADDR [--peer ADDR]... put FILE");
    eprintln!("       persist --peer ADDR [--peer ADDR]... get ID");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--peer" => peers.push(
                args.next()
                    .unwrap_or_else(|| usage())
                    .parse()
                    .context("--peer takes ip:port")?,
            ),
            "--help" | "-h" => usage(),
            _ => rest.push(a),
        }
    }
    if peers.is_empty() || rest.len() != 2 {
        usage();
    }
    let mut cfg = Config::for_tests();
    cfg.alone = true;
    let node = NodeBuilder::new(cfg).build().await?;
    for p in &peers {
        node.connect(*p)
            .await
            .with_context(|| format!("cannot reach {p}; is a butter node running there?"))?;
    }
    // Give membership a moment to learn a few more hosts through the peers' samples.
    tokio::time::sleep(Duration::from_millis(500)).await;
    match rest[0].as_str() {
        "put" => {
            let data =
                std::fs::read(&rest[1]).with_context(|| format!("cannot read {}", rest[1]))?;
            let id = node.put(data)?;
            // Wait until the group is complete, so the item outlives this short-lived node.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if node.group(&id).is_some_and(|g| g.state != GroupState::Cold) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let state = node
                .group(&id)
                .map(|g| g.state.as_str())
                .unwrap_or("unknown");
            eprintln!("stored; group {state}");
            println!("{id}");
        }
        "get" => {
            let id: ItemId = rest[1].parse().context("the id is 64 hex characters")?;
            let found = node.get(id).await?;
            eprintln!(
                "found at {} after {} hop(s) in {:.1} ms",
                &found.holder[..10],
                found.hops,
                found.elapsed_ms
            );
            use std::io::Write;
            std::io::stdout().write_all(&found.content)?;
        }
        other => bail!("unknown command {other}; use put or get"),
    }
    node.shutdown(Duration::from_secs(4)).await;
    Ok(())
}
