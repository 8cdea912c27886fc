//! Behaviours: named request handlers an application registers on a node (the original's "server
//! behaviours"). Peers call them with [`Node::request`](crate::Node::request).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use butter_proto::PeerId;
use bytes::Bytes;

use crate::node::Node;
use crate::transport::BoxFuture;

/// What a handler knows about the call it answers.
#[derive(Clone, Debug)]
pub struct Context {
    /// The authenticated caller.
    pub peer: PeerId,
    /// The address the call came from.
    pub remote: SocketAddr,
    /// The node answering, to make requests of its own.
    pub node: Node,
}

/// A handler failed; the caller receives the message as a `handler_failed` error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BehaviourError(pub String);

impl BehaviourError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        BehaviourError(msg.into())
    }
}

/// A named request handler.
pub trait Behaviour: Send + Sync + 'static {
    /// Answers one call with a reply body.
    fn call(&self, ctx: Context, body: Bytes) -> BoxFuture<Result<Bytes, BehaviourError>>;
}

/// A behaviour made from an async closure.
struct FnBehaviour<F>(F);

impl<F, Fut> Behaviour for FnBehaviour<F>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, BehaviourError>> + Send + 'static,
{
    fn call(&self, ctx: Context, body: Bytes) -> BoxFuture<Result<Bytes, BehaviourError>> {
        Box::pin((self.0)(ctx, body))
    }
}

/// Wraps an async closure as a behaviour.
pub fn from_fn<F, Fut>(f: F) -> Arc<dyn Behaviour>
where
    F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, BehaviourError>> + Send + 'static,
{
    Arc::new(FnBehaviour(f))
}
