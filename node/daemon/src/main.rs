//! `butter-node`: the Butter node daemon.
//!
//! `butter-node run` starts a node with a QUIC endpoint and an HTTP listener for `/metrics`,
//! `/health`, `/ready`, `/peers`, `/status`, the items and owned-items APIs and `POST /drain`. Configuration comes from a TOML file, `BUTTER_*`
//! environment variables and flags, in that order of precedence (flags win). `butter-node health`
//! checks `/ready` (or `/health`) of a running node for container health checks.

/// The system allocator, counting the bytes currently allocated: `/metrics` shows them as
/// `butter_heap_bytes`, the live heap — what a leak grows, unlike RSS, which also holds the
/// binary's pages and memory the allocator keeps for reuse.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes currently allocated by this process.
pub(crate) fn heap_bytes() -> usize {
    ALLOCATOR.allocated()
}

mod client;
mod config;
mod http;
mod telemetry;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing::{error, info};

/// A Butter peer-to-peer node.
#[derive(Parser, Debug)]
#[command(name = "butter-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node until SIGTERM or SIGINT.
    Run(Box<config::RunArgs>),
    /// Print the peer id stored in a data directory (creating the key if there is none).
    Id {
        /// The node's data directory.
        #[arg(long, env = "BUTTER_DATA_DIR")]
        data_dir: std::path::PathBuf,
    },
    /// Print a config file with every key at its default.
    Config,
    /// Store a file (or stdin with `-`) through a running node; prints the item id.
    ///
    /// With `--key` and `--name` the file becomes the value of an owned item: signed here with the
    /// owner key (the node never sees it) and stored under (owner, name); a put with a higher
    /// seq replaces the value everywhere, a lower or equal one is refused.
    #[command(
        after_help = "Owned items: `butter-node key new --out me.key`, then `butter-node put --key me.key \
                      --name profile profile.json`; read it with `butter-node get OWNER/profile` \
                      (OWNER: `butter-node key show me.key`)."
    )]
    Put {
        /// The file to store, or `-` for stdin.
        file: String,
        /// Owner key file (from `butter-node key new`): store the file as an owned item.
        #[arg(long, requires = "name")]
        key: Option<std::path::PathBuf>,
        /// The owned item's name: 1 to 128 ASCII letters, digits, `.`, `_`, `-`, `~`.
        #[arg(long, requires = "key")]
        name: Option<String>,
        /// The record's sequence number (default: the current time in milliseconds, so later
        /// puts from one clock replace earlier ones).
        #[arg(long, requires = "key")]
        seq: Option<u64>,
        /// The node's HTTP address.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
    },
    /// Retrieve an item by id, or an owned item by OWNER/NAME, through a running node (searches
    /// the network).
    Get {
        /// The item id (64 hex characters), or OWNER/NAME for an owned item.
        id: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<String>,
        /// The node's HTTP address.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
    },
    /// Delete an item from the network through a running node that is a member of its group (the
    /// members drop it and refuse it for 10 minutes).
    ///
    /// With `--key` and `--name`: delete an owned item through any node, with a tombstone signed
    /// here by the owner key; its group keeps the tombstone for a day
    /// (`owned_tombstone_ttl`), so a holder back from a partition cannot bring the value back.
    Delete {
        /// The item id (64 hex characters); not with --key.
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        id: Option<String>,
        /// Owner key file: delete the owned item `--name` of this key.
        #[arg(long, requires = "name")]
        key: Option<std::path::PathBuf>,
        /// The owned item's name.
        #[arg(long, requires = "key")]
        name: Option<String>,
        /// The tombstone's sequence number (default: the current time in milliseconds); it must
        /// be above the value's.
        #[arg(long, requires = "key")]
        seq: Option<u64>,
        /// The node's HTTP address.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
    },
    /// Owner keys for owned items (Ed25519, separate from any node's identity).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Private network mode: create a network CA, or sign a node's certificate with it.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Drain a running node: hand every group it is in over to other nodes, stop taking new items
    /// and memberships, and turn `/ready` to not-ready. Prints the figures; exits non-zero if a
    /// group could not be handed over. The node keeps running: stop it afterwards.
    Drain {
        /// The node's HTTP address.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
        /// Longest wait, in seconds, for the replacements to confirm they hold the data.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Show a running node's status and known hosts.
    Status {
        /// The node's HTTP address.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
    },
    /// Check that a running node is ready (exit 0) or say why not (exit 1).
    ///
    /// Asks `GET /ready` (or `/health` with `--live`) and exits 0 if it answers 200, else 1 with
    /// one line on stderr saying what failed and what to do. Made for container health checks:
    /// the image needs no shell or HTTP client.
    #[command(
        after_help = "Docker: healthcheck `test: [\"CMD\", \"/butter-node\", \"health\"]` (BUTTER_HTTP comes \
                      from the container's environment)."
    )]
    Health {
        /// The node's HTTP address (its `--http`). An unspecified address such as `0.0.0.0:7100` or
        /// `[::]:7100` is checked on the loopback of the same family and port.
        #[arg(long, env = "BUTTER_HTTP", default_value = "127.0.0.1:7100")]
        http: std::net::SocketAddr,
        /// Check liveness (`/health`: the process answers) instead of readiness (`/ready`: it has
        /// a live peer, or runs alone by configuration, and is not drained).
        #[arg(long)]
        live: bool,
        /// Longest time, in seconds, for the whole check (connect and reply).
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create an owner key file (readable by you only; an existing file is never overwritten) and
    /// print its public key, the OWNER in OWNER/NAME.
    New {
        /// Where to write the key. Keep it secret and back it up: whoever holds it can update and
        /// delete its items, and without it nobody can.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print the public key (OWNER) of an owner key file.
    Show {
        /// The key file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Create a network CA (ca.key, ca.crt) in a new directory. Keep ca.key secret.
    Init {
        /// Where to write the CA.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// A name for the network, shown in the CA certificate.
        #[arg(long, default_value = "butter")]
        name: String,
    },
    /// Sign the certificate of the node whose data directory is given (its key is created if
    /// missing); then run it with `network_ca = "<data-dir>/ca.crt"`.
    Sign {
        /// The CA directory made by `ca init`.
        #[arg(long)]
        ca: std::path::PathBuf,
        /// The node's data directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Id { data_dir } => match butter::identity::Identity::load_or_generate(&data_dir) {
            Ok(id) => {
                println!("{}", id.peer_id());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Put {
            file,
            key: Some(key),
            name: Some(name),
            seq,
            http,
        } => report(client::put_owned(http, &key, &name, seq, &file)),
        Command::Put { file, http, .. } => report(client::put(http, &file)),
        Command::Get { id, output, http } => report(client::get(http, &id, output.as_deref())),
        Command::Delete {
            key: Some(key),
            name: Some(name),
            seq,
            http,
            ..
        } => report(client::delete_owned(http, &key, &name, seq)),
        Command::Delete { id, http, .. } => {
            report(client::delete(http, id.as_deref().unwrap_or_default()))
        }
        Command::Key(KeyCommand::New { out }) => report(
            butter::owner::generate(&out)
                .map(|k| {
                    println!("{}", k.id());
                    eprintln!(
                        "owner key written to {}; keep it secret (it signs every update and delete of its items)",
                        out.display()
                    );
                })
                .map_err(Into::into),
        ),
        Command::Key(KeyCommand::Show { file }) => report(
            butter::owner::load(&file)
                .map(|k| println!("{}", k.id()))
                .map_err(Into::into),
        ),
        Command::Status { http } => report(client::status(http)),
        Command::Drain { http, timeout } => report(client::drain(http, timeout)),
        // Exit 1 for every failure: 1 is "unhealthy" to Docker, which reserves 2.
        Command::Health {
            http,
            live,
            timeout,
        } => match client::health(http, live, timeout) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(line) => {
                eprintln!("{line}");
                ExitCode::from(1)
            }
        },
        Command::Ca(CaCommand::Init { dir, name }) => report(
            butter::ca::init(&dir, &name)
                .map(|cert| println!("network CA created; certificate {}", cert.display()))
                .map_err(Into::into),
        ),
        Command::Ca(CaCommand::Sign { ca, data_dir }) => report(
            butter::ca::sign(&ca, &data_dir)
                .map(|id| {
                    println!(
                        "signed node {id}; run it with --network-ca {}",
                        data_dir.join(butter::ca::CA_CERT).display()
                    )
                })
                .map_err(Into::into),
        ),
        Command::Config => match toml::to_string_pretty(&config::FileConfig::default()) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn run(args: config::RunArgs) -> ExitCode {
    let cfg = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("hint: `butter-node config` prints every key with its default");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(cfg: config::FileConfig) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&cfg.log, "butter-node")?;
    let node = butter::NodeBuilder::new(cfg.node.clone())
        // `POST /peers/{id}/call/echo` on any node answers with the body: reachability checks.
        .behaviour(
            "echo",
            butter::behaviour::from_fn(|_ctx, body| async move { Ok(body) }),
        )
        .build()
        .await
        .context("starting the node")?;
    let span = tracing::info_span!("node", id = %node.id().short());
    let _enter = span.enter();
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| {
            format!(
                "binding HTTP on {}; is the port in use? pick another with --http",
                cfg.http.listen
            )
        })?;
    info!(http = %listener.local_addr()?, quic = %node.local_addr()?, id = %node.id(), "serving");
    let stop = tokio_util::sync::CancellationToken::new();
    let http_stop = stop.clone();
    let app = http::router(node.clone());
    let http_task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
    });
    shutdown_signal().await;
    info!("shutting down");
    stop.cancel();
    node.shutdown(Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
