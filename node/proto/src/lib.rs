//! # butter-proto — the sans-IO core of Butter
//!
//! Everything Butter *decides* lives here; everything it *does* (sockets, timers, tasks) lives in the
//! `butter` crate. No tokio, no sockets, no OS clock and no global RNG: time comes in as a
//! [`Time`] argument and randomness from an RNG the driver seeds, so the same core runs in the real
//! node and in the deterministic simulator (`butter-sim`).
//!
//! ## Layout
//! - [`id`]: peer ids (hash of the node's public key) and their printable forms.
//! - [`time`]: the core's notion of time, a monotonic microsecond counter owned by the driver.
//! - [`wire`]: length-prefixed frames and the versioned, serde-encoded message enums.
//! - [`peers`]: the bounded known-host table and its diversity rule.
//! - [`beacon`]: LAN discovery beacons (encoding and the announce schedule).
//! - [`swim`]: SWIM-style liveness (direct and indirect probes, suspicion).
//! - [`owned`]: owned items, named by (owner key, name), signed records replaced by sequence.
//! - [`signed_log`]: an append-only log on them: signed entries chained by hash, head owned.
//! - [`pcg`], [`rbfs`]: Peer Content Groups and random breadth-first search.
//! - [`node`]: the machines composed into one core ([`node::DataCore`] so far).
//!
//! ## Concepts
//! State machines take inputs through `handle_*(now, …)` methods and produce outputs that the driver
//! drains with `poll_*()` methods; `poll_timeout()` says when to call `handle_timeout(now)` next.
//!
//! ```
//! use butter_proto::{id::PeerId, wire};
//! let id = PeerId::from_public_key(b"an example public key");
//! let frame = wire::encode_frame(&wire::Request::Ping { seq: 1 }, 1024).unwrap();
//! let back: wire::Request = wire::decode_frame(&frame, 1024).unwrap();
//! assert_eq!(back, wire::Request::Ping { seq: 1 });
//! assert_eq!(id.short().len(), 10);
//! ```

pub mod beacon;
pub mod id;
pub mod item;
pub mod membership;
pub mod node;
pub mod owned;
pub mod pcg;
pub mod peers;
pub mod rbfs;
pub mod relay;
pub mod signed_log;
pub mod swim;
pub mod time;
pub mod wire;

pub use id::PeerId;
pub use time::Time;
