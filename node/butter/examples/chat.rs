//! `chat`: every line typed is sent to every known peer's `chat` behaviour; incoming lines are
//! printed as `<name> text`.
//!
//!     cargo run -p butter --example chat -- --name alice --listen 127.0.0.1:7301
//!     cargo run -p butter --example chat -- --name bob --listen 127.0.0.1:7302 --peer 127.0.0.1:7301
//!
//! Peers found through the first one (hello sample exchange) join the conversation too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use butter::{Config, NodeBuilder, behaviour};
use bytes::Bytes;
use tokio::io::AsyncBufReadExt;

struct Args {
    name: String,
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        name: "anon".into(),
        listen: "127.0.0.1:0".parse()?,
        peers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--name" => args.name = value()?,
            "--listen" => args.listen = value()?.parse().context("--listen takes ip:port")?,
            "--peer" => args
                .peers
                .push(value()?.parse().context("--peer takes ip:port")?),
            "--help" | "-h" => {
                println!(
                    "usage: chat [--name NAME] [--listen ADDR] [--peer ADDR]...\nType lines to send them to every known peer."
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other}; see --help"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let mut cfg = Config::for_tests();
    cfg.listen = args.listen;
    cfg.alone = true;
    let node = NodeBuilder::new(cfg)
        .behaviour(
            "chat",
            behaviour::from_fn(|_ctx, body: Bytes| async move {
                println!("{}", String::from_utf8_lossy(&body));
                Ok(Bytes::new())
            }),
        )
        .build()
        .await?;
    println!("chat node {} on {}", node.id().short(), node.local_addr()?);
    for p in &args.peers {
        node.connect(*p)
            .await
            .with_context(|| format!("cannot reach chat peer {p}"))?;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let msg = format!("<{}> {}", args.name, line);
        for peer in node.peers() {
            let Ok(id) = peer.id.parse() else { continue };
            if let Err(e) = node.request(id, "chat", msg.clone()).await {
                eprintln!("could not reach {}: {e}", peer.short);
            }
        }
    }
    // Stay a little so late replies are printed, then leave cleanly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
