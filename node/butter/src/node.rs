//! [`Node`] and [`NodeBuilder`]: a running Butter peer.
//!
//! A node owns the QUIC transport, the registered behaviours, the membership driver (known hosts,
//! discovery, liveness) and every background task; [`Node::shutdown`] stops them in order.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use butter_proto::wire::{ErrorCode, PeerRecord, Request, Response};
use butter_proto::{PeerId, Time};
use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span};

use crate::behaviour::{Behaviour, Context};
use crate::config::{Config, ConfigError};
use crate::driver::Shared;
use crate::identity::{Identity, IdentityError};
use crate::membership;
use crate::metrics::{Direction, Metrics};
use crate::transport::{BindError, BoxFuture, DialError, Inbound, Remote, RequestError, Transport};
use butter_proto::peers::Source;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A protocol setting of the node core (membership, PCG, RBFS) is out of range.
    #[error("invalid protocol settings: {0}")]
    Core(#[from] butter_proto::node::ConfigError),
    /// The data overlay could not be set up (its settings, or the item store).
    #[error(transparent)]
    Data(#[from] crate::data::SetupError),
}

/// Builds a [`Node`]: configuration, behaviours, optional identity and metrics.
pub struct NodeBuilder {
    config: Config,
    behaviours: BTreeMap<String, Arc<dyn Behaviour>>,
    overlays: BTreeMap<String, Arc<dyn crate::overlay::Overlay>>,
    identity: Option<Identity>,
    metrics: Option<Metrics>,
}

impl NodeBuilder {
    /// Starts from a configuration.
    pub fn new(config: Config) -> Self {
        NodeBuilder {
            config,
            behaviours: BTreeMap::new(),
            overlays: BTreeMap::new(),
            identity: None,
            metrics: None,
        }
    }

    /// Registers a behaviour under `name` (replacing any earlier one).
    pub fn behaviour(mut self, name: impl Into<String>, behaviour: Arc<dyn Behaviour>) -> Self {
        self.behaviours.insert(name.into(), behaviour);
        self
    }

    /// Registers an overlay under each of `names` (messages `Request::Overlay { name }` go to it).
    pub fn overlay(mut self, names: &[&str], overlay: Arc<dyn crate::overlay::Overlay>) -> Self {
        for n in names {
            self.overlays.insert((*n).to_string(), overlay.clone());
        }
        self
    }

    /// Uses this identity instead of the one in the data directory.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Records into this metrics registry (e.g. one the daemon also serves).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Validates the configuration, loads the identity, binds the endpoint and starts the tasks.
    pub async fn build(self) -> Result<Node, BuildError> {
        self.config.validate()?;
        let identity = match (self.identity, &self.config.data_dir) {
            (Some(id), _) => id,
            (None, Some(dir)) => Identity::load_or_generate(dir)?,
            (None, None) => Identity::generate()?,
        };
        let (identity, ca) = match &self.config.network_ca {
            None => (identity, None),
            Some(ca_path) => {
                let ca = crate::ca::read_cert(ca_path)
                    .map_err(|e| IdentityError::Private(e.to_string()))?;
                let dir = self.config.data_dir.clone().unwrap_or_default();
                let cert = crate::ca::read_cert(&dir.join(crate::ca::NODE_CERT)).map_err(|e| {
                    IdentityError::Private(format!(
                        "{e}; issue one with `butter-node ca sign --ca <dir> --data-dir {}`",
                        dir.display()
                    ))
                })?;
                if !crate::ca::issued_by(&cert, &ca) {
                    return Err(IdentityError::Private(format!(
                        "{} was not issued by {}",
                        dir.join(crate::ca::NODE_CERT).display(),
                        ca_path.display()
                    ))
                    .into());
                }
                (identity.with_certificate(cert)?, Some(ca))
            }
        };
        let metrics = self.metrics.unwrap_or_default();
        let cancel = CancellationToken::new();
        let slot: Arc<OnceLock<Weak<NodeInner>>> = Arc::new(OnceLock::new());
        let handler = Arc::new(Dispatcher { node: slot.clone() });
        let plumbing = crate::relay::Plumbing::new();
        let transport = Transport::bind_relayed(
            &identity,
            self.config.listen,
            self.config.limits.clone(),
            metrics.clone(),
            handler,
            cancel.clone(),
            ca,
            Some(plumbing.clone()),
        )?;
        let relay = crate::relay::Relayer::new(identity.peer_id(), &self.config.relay, plumbing);
        let local_addr = transport.local_addr().map_err(|source| BindError::Socket {
            addr: self.config.listen,
            source,
        })?;
        let listen_addrs = if local_addr.ip().is_unspecified() {
            // Bound to every interface: announce each interface address (beacons and hellos must
            // carry something dialable; receivers also try the address a beacon came from).
            crate::discovery::interface_addrs(local_addr)
        } else {
            vec![local_addr]
        };
        // The site defaults to the subnet of the first dialable address.
        let site = if self.config.site.is_empty() {
            membership::site_of(listen_addrs.first().map_or(local_addr.ip(), |a| a.ip()))
        } else {
            self.config.site.clone()
        };
        let started = Instant::now();
        let local = PeerRecord {
            id: identity.peer_id(),
            addrs: listen_addrs,
            site: site.clone(),
            uptime_secs: 0,
            storage_free: 0,
            known_hosts: 0,
            public: false,
            relays: vec![],
        };
        let seed = u64::from_le_bytes(identity.peer_id().0[..8].try_into().unwrap_or([0; 8]))
            ^ u64::from(std::process::id());
        let (mut pcg, store, views) =
            crate::data::setup(&self.config.data, self.config.data_dir.as_deref())?;
        // The core's ban on liars follows the transport's (`limits.ban_after_lies`, `ban_for`).
        pcg.ban_after_lies = self.config.limits.ban_after_lies;
        pcg.ban_for = self.config.limits.ban_for;
        let core_config = butter_proto::node::Config {
            membership: membership::core_config(&self.config),
            pcg,
            rbfs: butter_proto::rbfs::Config::default(),
        };
        let mut core = crate::driver::Core::new(core_config, local, store, Time::ZERO, seed)?;
        // Rejoin our groups: within their grace window the others keep us instead of replacing us.
        for view in views {
            core.restore(Time::ZERO, view);
        }
        let data = self
            .config
            .data
            .enabled
            .then(|| Arc::new(crate::data::Data::new()));
        let mut overlays = self.overlays;
        if data.is_some() {
            let d: Arc<dyn crate::overlay::Overlay> = Arc::new(crate::overlay::DataOverlay);
            for n in crate::overlay::DATA_OVERLAY_NAMES {
                overlays.entry(n.to_string()).or_insert_with(|| d.clone());
            }
        }
        let inner = Arc::new(NodeInner {
            id: identity.peer_id(),
            config: self.config,
            site,
            local_addr,
            transport,
            behaviours: self.behaviours,
            overlays,
            core: Arc::new(Shared::new(core, started)),
            relay,
            data,
            metrics,
            started,
            cancel,
            tasks: TaskTracker::new(),
            drained: std::sync::atomic::AtomicBool::new(false),
        });
        let _ = slot.set(Arc::downgrade(&inner));
        let node = Node { inner };
        info!(id = %node.id(), addr = %local_addr, site = %node.inner.site, "node started");
        crate::driver::start(&node);
        crate::relay::start(&node);
        for o in node.distinct_overlays() {
            o.start(&node);
        }
        Ok(node)
    }
}

pub(crate) struct NodeInner {
    pub(crate) id: PeerId,
    pub(crate) config: Config,
    pub(crate) site: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) transport: Transport,
    behaviours: BTreeMap<String, Arc<dyn Behaviour>>,
    overlays: BTreeMap<String, Arc<dyn crate::overlay::Overlay>>,
    /// The node core (membership and data), driven by [`crate::driver`].
    pub(crate) core: Arc<Shared>,
    pub(crate) relay: crate::relay::Relayer,
    pub(crate) data: Option<Arc<crate::data::Data>>,
    pub(crate) metrics: Metrics,
    pub(crate) started: Instant,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Set by [`Node::drain`].
    drained: std::sync::atomic::AtomicBool,
}

/// A running node. Cheap to clone; every clone is a handle to the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// A known host as the node's API and `/peers` show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PeerSnapshot {
    /// Full peer id (64 hex characters).
    pub id: String,
    /// Short form (10 hex characters).
    pub short: String,
    /// Addresses it can be dialled on.
    pub addrs: Vec<SocketAddr>,
    /// Its site label.
    pub site: String,
    /// Whether it reports being reachable from outside its LAN (a peer of another site dialled it).
    pub public: bool,
    /// How it was discovered: `multicast`, `bootstrap`, `exchange` or `inbound`.
    pub source: &'static str,
    /// `alive` or `suspect`.
    pub state: &'static str,
    /// Milliseconds since we last heard from it.
    pub last_seen_ms: u64,
    /// Smoothed round-trip time in milliseconds, if measured.
    pub rtt_ms: Option<f64>,
    /// Relays it announces (short ids), when it is private.
    pub relays: Vec<String>,
    /// How our connection to it runs: `direct`, `relayed`, `punched`, or `none`.
    pub path: &'static str,
}

impl Node {
    /// This node's peer id.
    pub fn id(&self) -> PeerId {
        self.inner.id
    }

    /// The QUIC address the node is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.inner.local_addr)
    }

    /// The node's site label.
    pub fn site(&self) -> &str {
        &self.inner.site
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The QUIC transport, for advanced use (raw dials, pooled connections).
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The known hosts, most recently seen first.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let mut peers = membership::snapshot(&self.inner.core);
        for p in &mut peers {
            if let Ok(id) = p.id.parse::<PeerId>() {
                p.path = self.path_to(&id).unwrap_or("none");
            }
        }
        peers
    }

    /// How the connection to `peer` runs now: `direct`, `relayed`, `punched`, or `None` when
    /// there is no connection.
    pub fn path_to(&self, peer: &PeerId) -> Option<&'static str> {
        let conn = self.inner.transport.pooled(peer)?;
        Some(self.inner.relay.path_of(peer, &conn))
    }

    /// The relay this node is reachable through, when it is private and has one.
    pub fn home_relay(&self) -> Option<PeerId> {
        self.inner.relay.home().map(|h| h.id)
    }

    /// Ready means joined (at least one live peer, or alone by configuration) and not drained.
    pub fn is_ready(&self) -> bool {
        // A host taken on another's word (unverified) does not count: we have not reached it.
        !self.is_drained()
            && (self.inner.config.alone
                || self.inner.core.read(|c, _| {
                    c.table()
                        .iter()
                        .any(|h| h.liveness != butter_proto::peers::Liveness::Unverified)
                }))
    }

    /// Hands every group this node is in over to other members and stops taking new items or
    /// group memberships, while the node stays up and keeps answering (searches, blocks). Waits at
    /// most `limit` for the replacements to confirm. Afterwards the node reports not ready; stop it
    /// at leisure, its data already lives elsewhere. Calling it again reports the same hand-off.
    pub async fn drain(&self, limit: Duration) -> crate::overlay::DrainReport {
        self.inner
            .drained
            .store(true, std::sync::atomic::Ordering::Relaxed);
        info!(id = %self.inner.id.short(), "draining");
        let mut report = crate::overlay::DrainReport::default();
        let deadline = Instant::now() + limit;
        for o in self.distinct_overlays() {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(r) =
                tokio::time::timeout(left + Duration::from_millis(100), o.drain(self, left)).await
            {
                report.merge(r);
            }
        }
        report
    }

    /// Whether [`Node::drain`] was called (or the data overlay is handing off for shutdown).
    pub fn is_drained(&self) -> bool {
        self.inner
            .drained
            .load(std::sync::atomic::Ordering::Relaxed)
            || crate::data::is_leaving(self)
    }

    /// Time since the node started.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Connects to `addr` (any peer id), exchanges hellos and returns the peer's id.
    pub async fn connect(&self, addr: SocketAddr) -> Result<PeerId, RequestError> {
        membership::introduce(self, addr, None, Source::Bootstrap).await
    }

    /// Connects to `addr` insisting that the peer there is `expected`; fails with
    /// [`DialError::WrongPeer`] if it presents another key.
    pub async fn connect_expecting(
        &self,
        addr: SocketAddr,
        expected: PeerId,
    ) -> Result<PeerId, RequestError> {
        membership::introduce(self, addr, Some(expected), Source::Bootstrap).await
    }

    /// Calls behaviour `name` on `peer` with `body` and returns its reply body.
    pub async fn request(
        &self,
        peer: PeerId,
        name: &str,
        body: impl Into<Bytes>,
    ) -> Result<Bytes, RequestError> {
        let req = Request::Behaviour {
            name: name.to_string(),
        };
        let (resp, body) = self.send(peer, &req, body.into(), name).await?;
        match resp {
            Response::Ok => Ok(body),
            other => Err(RequestError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends any request to `peer` over the pooled connection (dialling if needed), with metrics.
    pub(crate) async fn send(
        &self,
        peer: PeerId,
        req: &Request,
        body: Bytes,
        kind: &str,
    ) -> Result<(Response, Bytes), RequestError> {
        let start = Instant::now();
        let result = async {
            let conn = self.connection(peer).await?;
            self.inner.transport.request_on(&conn, req, body).await
        }
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        self.inner
            .metrics
            .record_request(Direction::Outbound, kind, outcome, start.elapsed());
        result
    }

    /// The pooled connection to `peer`, dialling its known addresses if there is none.
    pub(crate) async fn connection(&self, peer: PeerId) -> Result<quinn::Connection, DialError> {
        self.connection_with(peer, &[]).await
    }

    /// What this node knows about `peer`: its table entry, or a record heard in a sample.
    pub(crate) fn record_of(&self, peer: &PeerId) -> Option<PeerRecord> {
        self.inner
            .core
            .read(|c, _| c.table().get(peer).map(|h| h.record.clone()))
            .or_else(|| self.inner.relay.heard_of(peer))
    }

    /// The pooled connection to `peer`; otherwise dials it: through one of its relays when it is
    /// private and elsewhere, else at its known addresses (then `fallback`).
    pub(crate) async fn connection_with(
        &self,
        peer: PeerId,
        fallback: &[SocketAddr],
    ) -> Result<quinn::Connection, DialError> {
        if let Some(c) = self.inner.transport.pooled(&peer) {
            return Ok(c);
        }
        let record = self.record_of(&peer);
        if let Some(r) = record
            .as_ref()
            .filter(|r| crate::relay::needs_relay(self, r))
        {
            return crate::relay::connect_relayed(self, r).await;
        }
        let mut addrs = record.map(|r| r.addrs).unwrap_or_default();
        for a in fallback {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
        let mut last = DialError::NoAddress(peer);
        for addr in addrs.into_iter().take(6) {
            match self.inner.transport.connect(addr, Some(peer)).await {
                Ok((_, conn)) => return Ok(conn),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Runs a background task (a "client behaviour") until it ends or the node shuts down.
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.inner.cancel.clone();
        let fut = task(self.clone());
        let span = info_span!("task", node = %self.inner.id.short());
        self.inner.tasks.spawn(
            async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = fut => {}
                }
            }
            .instrument(span),
        );
    }

    /// A token cancelled when the node shuts down.
    pub fn cancelled(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Stops background tasks, closes connections and the endpoint; bounded by `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        // Hand groups over while the node is still fully up, then stop everything.
        for o in self.distinct_overlays() {
            let _ = tokio::time::timeout(grace / 2, o.shutdown(self)).await;
        }
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        let deadline = Instant::now() + grace;
        self.inner.transport.shutdown(grace / 2).await;
        let _ = tokio::time::timeout_at(deadline, self.inner.tasks.wait()).await;
        info!(id = %self.inner.id.short(), "node stopped");
    }

    /// Each registered overlay once (one overlay may answer several names).
    fn distinct_overlays(&self) -> Vec<Arc<dyn crate::overlay::Overlay>> {
        let mut out: Vec<Arc<dyn crate::overlay::Overlay>> = Vec::new();
        for o in self.inner.overlays.values() {
            if !out.iter().any(|x| Arc::ptr_eq(x, o)) {
                out.push(o.clone());
            }
        }
        out
    }

    /// Stops abruptly, as `kill -9` would: no hand-off, no goodbye. For tests of failure handling.
    #[doc(hidden)]
    pub async fn crash(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner
            .transport
            .shutdown(Duration::from_millis(100))
            .await;
    }

    /// This node's own record, as sent in hellos.
    pub fn record(&self) -> PeerRecord {
        self.inner.core.read(|c, now| c.local_record(now))
    }
}

/// Routes decoded inbound requests to membership, behaviours and overlays.
struct Dispatcher {
    node: Arc<OnceLock<Weak<NodeInner>>>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> (Response, Bytes) {
    (
        Response::Error {
            code,
            message: message.into(),
        },
        Bytes::new(),
    )
}

impl Inbound for Dispatcher {
    fn contact(&self, from: Remote, request: &Request) {
        // Any request is proof the peer is alive. Membership requests say so themselves, and
        // PCG and RBFS messages are marked by the core as it takes them in. The transport calls
        // this at most once per `CONTACT_EVERY` per connection: marking takes the core's lock
        // and wakes the driver, which per request cost more than the request's own handling.
        let Some(inner) = self.node.get().and_then(Weak::upgrade) else {
            return;
        };
        let marked_by_core = match request {
            Request::Hello { .. }
            | Request::Ping { .. }
            | Request::PingReq { .. }
            | Request::Gossip { .. } => true,
            Request::Overlay { name } => {
                inner.data.is_some()
                    && (name == butter_proto::node::data::PCG
                        || name == butter_proto::node::data::RBFS)
            }
            _ => false,
        };
        if !marked_by_core {
            inner.core.with(|c, now| c.handle_ping(now, from.id));
        }
    }

    fn link(
        &self,
        from: Remote,
        register: bool,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> BoxFuture<()> {
        let Some(inner) = self.node.get().and_then(Weak::upgrade) else {
            return Box::pin(async {});
        };
        let node = Node { inner };
        Box::pin(crate::relay::serve_link(node, from, register, send, recv))
    }

    fn handle(&self, from: Remote, request: Request, body: Bytes) -> BoxFuture<(Response, Bytes)> {
        let Some(inner) = self.node.get().and_then(Weak::upgrade) else {
            return Box::pin(async { error(ErrorCode::Busy, "node is starting or stopping") });
        };
        // Each kind boxes only its own future: one future for all three would be as large as
        // the membership handler's, allocated and moved per request.
        let replied = |r: Result<Bytes, crate::behaviour::BehaviourError>| match r {
            Ok(reply) => (Response::Ok, reply),
            Err(e) => error(ErrorCode::HandlerFailed, e.0),
        };
        let context = || Context {
            peer: from.id,
            remote: from.addr,
            node: Node {
                inner: inner.clone(),
            },
        };
        match request {
            Request::Behaviour { name } => {
                let Some(b) = inner.behaviours.get(&name) else {
                    let e = error(
                        ErrorCode::UnknownName,
                        format!("no behaviour named {name:?}"),
                    );
                    return Box::pin(async move { e });
                };
                let call = b.call(context(), body);
                Box::pin(async move { replied(call.await) })
            }
            Request::Overlay { name } => {
                let Some(o) = inner.overlays.get(&name) else {
                    let e = error(ErrorCode::UnknownName, format!("no overlay named {name:?}"));
                    return Box::pin(async move { e });
                };
                let call = o.handle(&name, context(), body);
                Box::pin(async move { replied(call.await) })
            }
            other => {
                let node = Node { inner };
                Box::pin(async move { membership::handle(&node, from, other).await })
            }
        }
    }
}
