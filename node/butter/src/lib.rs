//! # butter — a peer-to-peer framework for unstructured networks
//!
//! Embed a [`Node`]: it listens on one QUIC endpoint, answers requests, finds peers on its LAN by
//! multicast and beyond it through bootstrap peers, and runs your behaviours.
//!
//! ## Layout
//! - [`identity`]: the node's key pair, certificate and peer id (persisted in the data directory).
//! - [`tls`]: mutual TLS where each side checks the other's key against the expected peer id.
//! - [`transport`]: the QUIC endpoint, connection pool, framed request/response streams.
//! - [`behaviour`]: named request handlers applications register.
//! - [`node`]: [`Node`] and [`NodeBuilder`], which tie it all together.
//! - [`owner`]: owner key files for owned items ([`owned`]: signed, updatable, owner-deleted).
//! - [`config`]: plain-data configuration with defaults and validation.
//! - [`metrics`]: Prometheus series recorded from node events.
//!
//! ## Example
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use butter::{Config, NodeBuilder, behaviour};
//! let node = NodeBuilder::new(Config::for_tests())
//!     .behaviour("ohce", behaviour::from_fn(|_ctx, body| async move {
//!         let mut v = body.to_vec();
//!         v.reverse();
//!         Ok(v.into())
//!     }))
//!     .build()
//!     .await?;
//! println!("listening on {} as {}", node.local_addr()?, node.id());
//! # Ok(()) }
//! ```

pub mod behaviour;
pub mod ca;
pub mod config;
pub mod data;
pub mod discovery;
mod driver;
pub mod identity;
mod kernel;
pub mod limiter;
mod membership;
pub mod metrics;
pub mod node;
pub mod overlay;
pub mod owner;
pub mod relay;
pub mod store;
pub mod tls;
pub mod transport;

pub use butter_proto::PeerId;
/// An item's id: the SHA-256 of its content (what `Node::put` returns and `Node::get` takes).
pub use butter_proto::item::ItemId;
pub use butter_proto::owned;
/// An item's group as a node sees it (`Node::group`), and the state of a group.
pub use butter_proto::pcg::{GroupInfo, GroupState};
pub use config::Config;
pub use node::{Node, NodeBuilder};
