//! Overlays: network-level data management an application plugs into a node.
//!
//! An overlay receives the `Request::Overlay { name }` messages addressed to its names and sends
//! its own with [`Node::send_overlay`](crate::Node::send_overlay); it starts its background work
//! in [`Overlay::start`] and hands off in [`Overlay::shutdown`]. Butter's default data overlay
//! (Peer Content Groups + random breadth-first search, names `pcg`, `rbfs`, `block`) is registered
//! through this same trait; an application can add its own beside it, or turn the default off
//! (`data.enabled = false`) and bring its own.

use bytes::Bytes;

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
            Some(Err(e)) => Err(BehaviourError::new(e)),
            None => Err(BehaviourError::new(format!(
                "the data overlay has no message kind {name:?}"
            ))),
        };
        Box::pin(async move { reply })
    }

    fn start(&self, node: &Node) {
        crate::data::start(node);
    }

    fn shutdown(&self, node: &Node) -> BoxFuture<()> {
        let node = node.clone();
        Box::pin(
            async move { crate::data::hand_off(&node, std::time::Duration::from_secs(2)).await },
        )
    }
}
