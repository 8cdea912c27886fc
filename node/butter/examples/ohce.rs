//! `ohce`: the reverse-echo behaviour of the original Butter.
//!
//! One command runs a two-node demo in one process:
//!
//!     cargo run -p butter --example ohce -- "hello butter"
//!
//! Or across processes: `--serve 127.0.0.1:7300` in one terminal, then
//! `--call 127.0.0.1:7300 "hello"` in another.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use butter::{Config, Node, NodeBuilder, behaviour};
use bytes::Bytes;

/// The behaviour: reply with the request's characters reversed.
async fn build(listen: SocketAddr) -> anyhow::Result<Node> {
    let mut cfg = Config::for_tests();
    cfg.listen = listen;
    cfg.alone = true;
    Ok(NodeBuilder::new(cfg)
        .behaviour(
            "ohce",
            behaviour::from_fn(|ctx, body: Bytes| async move {
                let text = String::from_utf8_lossy(&body)
                    .chars()
                    .rev()
                    .collect::<String>();
                tracing::info!(from = %ctx.peer.short(), "ohce");
                Ok(Bytes::from(text))
            }),
        )
        .build()
        .await?)
}

fn usage() -> ! {
    eprintln!("usage: ohce [TEXT]                  two nodes in one process, prints TEXT reversed");
    eprintln!("       ohce --serve ADDR             run an ohce node on ADDR until Ctrl-C");
    eprintln!("       ohce --call ADDR TEXT         call the node at ADDR");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--help" | "-h") => usage(),
        Some("--serve") => {
            let addr: SocketAddr = args
                .get(1)
                .unwrap_or_else(|| usage())
                .parse()
                .context("ADDR must be ip:port")?;
            let node = build(addr).await?;
            println!(
                "ohce node {} listening on {}",
                node.id().short(),
                node.local_addr()?
            );
            tokio::signal::ctrl_c().await?;
            node.shutdown(Duration::from_secs(2)).await;
        }
        Some("--call") => {
            let addr: SocketAddr = args
                .get(1)
                .unwrap_or_else(|| usage())
                .parse()
                .context("ADDR must be ip:port")?;
            let text = args.get(2).cloned().unwrap_or_else(|| usage());
            let client = build("127.0.0.1:0".parse()?).await?;
            let peer = client
                .connect(addr)
                .await
                .with_context(|| format!("is an ohce node running on {addr}?"))?;
            let reply = client.request(peer, "ohce", text).await?;
            println!("{}", String::from_utf8_lossy(&reply));
            client.shutdown(Duration::from_secs(1)).await;
        }
        _ => {
            let text = if args.is_empty() {
                "hello butter".to_string()
            } else {
                args.join(" ")
            };
            let server = build("127.0.0.1:0".parse()?).await?;
            let client = build("127.0.0.1:0".parse()?).await?;
            let peer = client.connect(server.local_addr()?).await?;
            let reply = client.request(peer, "ohce", text).await?;
            println!("{}", String::from_utf8_lossy(&reply));
            client.shutdown(Duration::from_secs(1)).await;
            server.shutdown(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
