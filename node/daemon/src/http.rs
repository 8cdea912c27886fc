//! The HTTP side of the daemon: metrics, health, readiness and a JSON view of the node.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use butter::Node;
use serde::Serialize;

/// The routes served on the HTTP listener.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/peers", get(peers))
        .route("/status", get(status))
        .with_state(node)
}

async fn metrics(State(node): State<Node>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.metrics().encode(),
    )
        .into_response()
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(node): State<Node>) -> Response {
    if node.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no live peer yet\n",
        )
            .into_response()
    }
}

async fn peers(State(node): State<Node>) -> Json<Vec<butter::node::PeerSnapshot>> {
    Json(node.peers())
}

#[derive(Serialize)]
struct Status {
    id: String,
    short: String,
    site: String,
    listen: Vec<String>,
    network: String,
    peers: usize,
    ready: bool,
    uptime_secs: u64,
    version: &'static str,
}

async fn status(State(node): State<Node>) -> Json<Status> {
    let listen = node
        .local_addr()
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    Json(Status {
        id: node.id().to_string(),
        short: node.id().short(),
        site: node.site().to_string(),
        listen,
        network: node.config().network.clone(),
        peers: node.peers().len(),
        ready: node.is_ready(),
        uptime_secs: node.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
    })
}
