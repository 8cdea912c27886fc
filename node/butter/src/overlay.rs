//! Overlays: network-level data management an application plugs into a node.
//!
//! An overlay receives the `Request::Overlay { name }` messages addressed to its names and sends
//! its own with [`Node::send_overlay`](crate::Node::send_overlay); it starts its background work
//! in [`Overlay::start`], hands off in [`Overlay::shutdown`], and on [`Node::drain`](crate::Node::drain)
//! hands off while the node stays up ([`Overlay::drain`]). Butter's default data overlay
//! (Peer Content Groups + random breadth-first search, names `pcg`, `rbfs`, `block`) is registered
//! through this same trait; an application can add its own beside it, or turn the default off
//! (`data.enabled = false`) and bring its own.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::behaviour::{BehaviourError, Context};
use crate::node::Node;
use crate::transport::{BoxFuture, Remote};

/// A network-level overlay.
pub trait Overlay: Send + Sync + 'static {
    /// Answers one message sent to overlay `name` (one of the names it was registered under).
    fn handle(
        &self,
        name: &str,
        ctx: Context,
        body: Bytes,
    ) -> BoxFuture<Result<Bytes, BehaviourError>>;

    /// Starts the overlay's background tasks (use [`Node::spawn`]). Default: nothing.
    fn start(&self, _node: &Node) {}

    /// Hands off before the node leaves. Default: nothing.
    fn shutdown(&self, _node: &Node) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Hands every group over and takes no new ones, while the node stays up; waits at most
    /// `limit` for the hand-off to be confirmed. Default: nothing to hand over.
    fn drain(&self, _node: &Node, _limit: Duration) -> BoxFuture<DrainReport> {
        Box::pin(async { DrainReport::default() })
    }
}

/// How draining went, summed over the overlays. Every figure counts groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DrainReport {
    /// Groups this node was in when the drain began.
    pub groups: usize,
    /// Groups whose replacement member confirmed it holds the data.
    pub handed_over: usize,
    /// Groups not handed over: `groups - handed_over` (the breakdown follows).
    pub not_handed_over: usize,
    /// No candidate to hand over to: the group was told to repair without this node.
    pub no_replacement: usize,
    /// The replacement had not confirmed by the deadline.
    pub unconfirmed: usize,
    /// Hand-offs still in flight when the report was taken.
    pub pending: usize,
    /// Groups this node held no data for (the other members keep the item).
    pub not_holding: usize,
}

impl DrainReport {
    /// Adds another overlay's figures.
    pub fn merge(&mut self, other: DrainReport) {
        self.groups += other.groups;
        self.handed_over += other.handed_over;
        self.not_handed_over += other.not_handed_over;
        self.no_replacement += other.no_replacement;
        self.unconfirmed += other.unconfirmed;
        self.pending += other.pending;
        self.not_holding += other.not_holding;
    }
}

impl From<butter_proto::pcg::HandOff> for DrainReport {
    fn from(h: butter_proto::pcg::HandOff) -> Self {
        DrainReport {
            groups: h.groups,
            handed_over: h.handed_over,
            not_handed_over: h.not_handed_over(),
            no_replacement: h.no_replacement,
            unconfirmed: h.unconfirmed,
            pending: h.pending,
            not_holding: h.not_holding,
        }
    }
}

/// The default data overlay, as an [`Overlay`].
#[derive(Debug, Default)]
pub struct DataOverlay;

/// The names the data overlay answers to.
pub const DATA_OVERLAY_NAMES: [&str; 3] = ["pcg", "rbfs", "block"];

impl Overlay for DataOverlay {
    fn handle(
        &self,
        name: &str,
        ctx: Context,
        body: Bytes,
    ) -> BoxFuture<Result<Bytes, BehaviourError>> {
        let from = Remote {
            id: ctx.peer,
            addr: ctx.remote,
            inbound: false,
        };
        let reply = match crate::data::handle(&ctx.node, from, name, &body) {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(BehaviourError::new(e.to_string())),
            None => Err(BehaviourError::new(format!(
                "the data overlay has no message kind {name:?}"
            ))),
        };
        Box::pin(async move { reply })
    }

    fn shutdown(&self, node: &Node) -> BoxFuture<()> {
        let node = node.clone();
        Box::pin(async move {
            crate::data::hand_off(&node, Duration::from_secs(2)).await;
        })
    }

    fn drain(&self, node: &Node, limit: Duration) -> BoxFuture<DrainReport> {
        let node = node.clone();
        Box::pin(async move { crate::data::hand_off(&node, limit).await.into() })
    }
}
