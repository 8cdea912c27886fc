//! The composed node core, built up in steps towards one `NodeCore` that owns every decision of
//! a node (membership, SWIM, data, relay policy) behind one `handle_*` / `poll_*` surface, driven
//! alike by the binary, the simulator and the tests.
//!
//! Composed so far:
//! - [`data::DataCore`]: PCG and RBFS over one store, with the glue between them and between
//!   them and liveness (view changes feed search hints, deletes forget them, hosts leaving the
//!   live set or declared dead reach PCG, undelivered PCG messages count against their peer).
//!   The binary's data driver and the simulator both run it.
//! - [`TableView`]: the known-host table as PCG and RBFS see it, with the table's own diversity
//!   choice ([`Table::most_diverse_beside`](crate::peers::Table::most_diverse_beside)) as the
//!   way group members and spread recruits are picked on a real node.
//! - [`NodeCore`]: the membership core (table, beacons, SWIM, exchange) and the data core
//!   composed, liveness reaching PCG as the table changes. The binary (`butter`'s one driver
//!   task), the simulator and the tests all run it.
//! - [`net::Net`]: a deterministic network that drives `NodeCore`s as the binary's QUIC driver
//!   does (sites as multicast domains, latency, loss, partitions, restarts at the same address),
//!   meant to become the one harness the simulator and the tests share.
//!
//! Not yet inside: the relay policy, which the binary drives beside these.

pub mod composed;
pub mod data;
mod hosts;
pub mod net;

pub use composed::{Config, ConfigError, Event, NodeCore, Transmit};
pub use data::DataCore;
pub use hosts::TableView;
