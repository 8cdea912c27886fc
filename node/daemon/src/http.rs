//! The HTTP side of the daemon: metrics, health, readiness, a JSON view of the node, the items API,
//! the owned-items API and `POST /drain`.
//!
//! Owned items: `PUT /owned/{owner}/{name}` takes an owner-signed record (the body is
//! `owned::Record::encode`; `butter-node put --key` makes one), `DELETE` the same with a signed
//! tombstone, `GET` answers the value with its `x-butter-seq`. The node never holds an owner's
//! key: clients sign, every node verifies.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use butter::Node;
use serde::{Deserialize, Serialize};

/// The routes served on the HTTP listener.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/peers", get(peers))
        .route("/status", get(status))
        .route("/items", get(list_items).put(put_item).post(put_item))
        .route("/items/{id}", get(get_item).delete(delete_item))
        .route("/items/{id}/group", get(get_group))
        .route(
            "/owned/{owner}/{name}",
            get(get_owned).put(put_owned).delete(delete_owned),
        )
        .route("/peers/{id}/call/{name}", post(call_peer))
        .route("/drain", post(drain))
        .layer(DefaultBodyLimit::max(node.config().data.max_item_size))
        .with_state(node)
}

/// `butter_heap_bytes`, registered with the node's registry on first use.
static HEAP: std::sync::OnceLock<Option<prometheus::IntGauge>> = std::sync::OnceLock::new();

async fn metrics(State(node): State<Node>) -> Response {
    let heap = HEAP.get_or_init(|| {
        let g = prometheus::IntGauge::new(
            "butter_heap_bytes",
            "Bytes of heap currently allocated by the node process (live allocations)",
        )
        .ok()?;
        node.metrics()
            .registry()
            .register(Box::new(g.clone()))
            .ok()?;
        Some(g)
    });
    if let Some(g) = heap {
        g.set(i64::try_from(crate::heap_bytes()).unwrap_or(i64::MAX));
    }
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
    } else if node.is_drained() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: drained (groups handed over; stop this node when convenient)\n",
        )
            .into_response()
    } else {
        let dropped = node.metrics().udp_send_dropped.get();
        let why = if dropped > 0 {
            format!(
                "not ready: no live peer yet; {dropped} outgoing datagrams dropped by the kernel \
                 since start: is the host's neighbour (ARP) table full? \
                 (net.ipv4.neigh.default.gc_thresh3)\n"
            )
        } else {
            "not ready: no live peer yet\n".to_owned()
        };
        (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
    }
}

async fn peers(State(node): State<Node>) -> Json<Vec<butter::node::PeerSnapshot>> {
    Json(node.peers())
}

fn bad_request(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": msg.into() })),
    )
        .into_response()
}

fn parse_id(id: &str) -> Result<butter::ItemId, Box<Response>> {
    id.parse().map_err(|e| {
        Box::new(bad_request(format!(
            "{id:?} is not an item id ({e}); ids are 64 hex characters"
        )))
    })
}

async fn put_item(State(node): State<Node>, body: Bytes) -> Response {
    if body.is_empty() {
        return bad_request("empty body: send the item's bytes");
    }
    match node.put(body.to_vec()) {
        Ok(id) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": id.to_string(), "bytes": body.len() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INSUFFICIENT_STORAGE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn get_item(State(node): State<Node>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match node.get(id).await {
        Ok(found) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static("x-butter-holder"),
                    found.holder.clone(),
                ),
                (
                    header::HeaderName::from_static("x-butter-hops"),
                    found.hops.to_string(),
                ),
            ],
            found.content,
        )
            .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn delete_item(State(node): State<Node>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match node.delete(id) {
        Ok(()) => Json(serde_json::json!({ "deleted": id.to_string() })).into_response(),
        Err(
            e @ (butter::data::DataError::NotMember(_)
            | butter::data::DataError::DeletesOff
            | butter::data::DataError::Owned(_)),
        ) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn get_group(State(node): State<Node>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match node.group(&id) {
        Some(g) => Json(serde_json::json!({
            "item": id.to_string(),
            "state": g.state.as_str(),
            "orphan": g.orphan,
            "version": g.view.version,
            "leader": g.leader.map(|l| l.to_string()),
            "members": g.members.iter().map(|m| serde_json::json!({
                "id": m.id.to_string(),
                "site": m.site,
                "live": m.live,
                "holding": m.holding,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "this node is not in the item's group; ask a member (GET /items/{id} finds one)" })),
        )
            .into_response(),
    }
}

/// Calls behaviour `name` on peer `id` with the request body (the daemon registers `echo`);
/// the reply body comes back with the path the call took in `x-butter-path`.
async fn call_peer(
    State(node): State<Node>,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let peer: butter::PeerId = match id.parse() {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": format!("bad peer id: {e}") })),
            )
                .into_response();
        }
    };
    match node.request(peer, &name, body).await {
        Ok(reply) => (
            [(
                header::HeaderName::from_static("x-butter-path"),
                node.path_to(&peer).unwrap_or("none").to_string(),
            )],
            reply,
        )
            .into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct DrainParams {
    /// Longest wait for the replacements to confirm, in seconds. Default 10.
    timeout_secs: Option<f64>,
}

/// `POST /drain[?timeout_secs=S]`: hands every group over, stops taking new ones, turns `/ready`
/// to 503 and answers with the figures (200 if every group was handed over, else 500).
async fn drain(State(node): State<Node>, Query(p): Query<DrainParams>) -> Response {
    let limit = p
        .timeout_secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(std::time::Duration::from_secs(10), |s| {
            std::time::Duration::from_secs_f64(s.min(600.0))
        });
    let report = node.drain(limit).await;
    let code = if report.not_handed_over == 0 {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut body = serde_json::to_value(report).unwrap_or_default();
    body["drained"] = serde_json::Value::Bool(true);
    body["items"] = serde_json::json!(node.items().len());
    (code, Json(body)).into_response()
}

async fn list_items(State(node): State<Node>) -> Json<Vec<String>> {
    Json(node.items().iter().map(ToString::to_string).collect())
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
    drained: bool,
    uptime_secs: u64,
    version: &'static str,
    items: usize,
    groups: Groups,
    /// Reachable from outside its LAN (or configured so).
    public: bool,
    /// The relay it is reachable through, when private.
    home_relay: Option<String>,
}

#[derive(Serialize)]
struct Groups {
    cold: usize,
    goldilocks: usize,
    hot: usize,
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
        drained: node.is_drained(),
        uptime_secs: node.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
        items: node.items().len(),
        groups: {
            let [cold, goldilocks, hot] = node.group_states();
            Groups {
                cold,
                goldilocks,
                hot,
            }
        },
        public: node.record().public,
        home_relay: node.home_relay().map(|r| r.to_string()),
    })
}

/// The owner and name of an owned-item path, checked.
fn parse_owned(owner: &str, name: &str) -> Result<butter::owned::OwnerId, Box<Response>> {
    let owner: butter::owned::OwnerId = owner
        .parse()
        .map_err(|e: butter::owned::OwnedError| Box::new(bad_request(e.to_string())))?;
    butter::owned::check_name(name).map_err(|e| Box::new(bad_request(e.to_string())))?;
    Ok(owner)
}

/// The signed record in `body`, checked against the path (and its kind: a value for `PUT`, a
/// tombstone for `DELETE`).
fn signed_record(
    owner: &str,
    name: &str,
    body: &[u8],
    tombstone: bool,
) -> Result<butter::owned::Record, Box<Response>> {
    use butter::owned::{MAX_RECORD, Record};
    let owner = parse_owned(owner, name)?;
    if body.is_empty() {
        return Err(Box::new(bad_request(
            "empty body: send a record signed by the owner key (butter-node put --key K --name N FILE makes one)",
        )));
    }
    if body.len() > MAX_RECORD {
        return Err(Box::new(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(serde_json::json!({ "error": format!(
                    "a record of {} bytes exceeds the limit of {MAX_RECORD} (values up to 64 KiB; store larger content as an item and put its id)",
                    body.len()
                ) })),
            )
                .into_response(),
        ));
    }
    let record = Record::decode(body).map_err(|e| {
        Box::new(bad_request(format!(
            "{e} (the body must be a record signed by the owner key; butter-node put --key makes one)"
        )))
    })?;
    if record.owner() != owner || record.name() != name {
        return Err(Box::new(bad_request(format!(
            "the record is for {}/{}, not for the path's {owner}/{name}",
            record.owner(),
            record.name()
        ))));
    }
    if record.is_tombstone() != tombstone {
        return Err(Box::new(bad_request(if tombstone {
            "DELETE takes a signed tombstone (a record without a value); PUT stores values"
        } else {
            "PUT takes a record with a value; a tombstone goes with DELETE"
        })));
    }
    Ok(record)
}

/// What storing an owned record answers: 201/200, or 409 for a stale seq.
fn owned_stored(
    node: &Node,
    record: &butter::owned::Record,
    ok: StatusCode,
    key: &str,
) -> Response {
    use butter::data::DataError;
    use butter::owned::OwnedError;
    match node.put_owned(record) {
        Ok(placed) => {
            // Outside the item's group the record is on its way to a holder (or to a new group):
            // 202, and the reader checks with GET.
            let (status, how) = match placed {
                butter::data::Placement::Stored(_) => (ok, "stored"),
                _ => (StatusCode::ACCEPTED, "sent to the item's group"),
            };
            (
                status,
                Json(serde_json::json!({
                    key: format!("{}/{}", record.owner(), record.name()),
                    "id": placed.id().to_string(),
                    "seq": record.seq(),
                    "placement": how,
                })),
            )
                .into_response()
        }
        Err(e @ DataError::Put(butter_proto::pcg::PutError::Owned(OwnedError::Stale { .. }))) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INSUFFICIENT_STORAGE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn put_owned(
    State(node): State<Node>,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match signed_record(&owner, &name, &body, false) {
        Ok(record) => owned_stored(&node, &record, StatusCode::CREATED, "stored"),
        Err(r) => *r,
    }
}

async fn delete_owned(
    State(node): State<Node>,
    Path((owner, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match signed_record(&owner, &name, &body, true) {
        Ok(record) => owned_stored(&node, &record, StatusCode::OK, "deleted"),
        Err(r) => *r,
    }
}

async fn get_owned(
    State(node): State<Node>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    use butter::data::DataError;
    let owner = match parse_owned(&owner, &name) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    match node.get_owned(owner, &name).await {
        Ok((record, found)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static("x-butter-seq"),
                    record.seq().to_string(),
                ),
                (
                    header::HeaderName::from_static("x-butter-holder"),
                    found.holder.clone(),
                ),
                (
                    header::HeaderName::from_static("x-butter-hops"),
                    found.hops.to_string(),
                ),
            ],
            record.value().unwrap_or_default().to_vec(),
        )
            .into_response(),
        Err(e @ DataError::Deleted { .. }) => (
            StatusCode::GONE,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
