//! The QUIC transport: one endpoint, one pooled connection per peer, one bidirectional stream per
//! request, length-prefixed frames with bounded sizes and a deadline on everything.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use butter_proto::PeerId;
use butter_proto::wire::{self, ErrorCode, FrameError, Message, Request, Response};
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::Limits;
use crate::identity::{Identity, peer_id_of_certificate};
use crate::metrics::{Direction, Event, Metrics};
use crate::tls;

/// Stream error code sent when we refuse to read further (oversized or malformed input).
const STOP_REFUSED: VarInt = VarInt::from_u32(1);
/// Connection close code on shutdown.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The UDP socket could not be bound.
    #[error(
        "cannot bind QUIC socket on {addr}: {source}; is the port in use? pick another with --listen"
    )]
    Socket {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error("tls setup: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC parameters were rejected.
    #[error("quic setup: {0}")]
    Quic(String),
}

/// Why a connection could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The peer presented a key for another id.
    #[error("peer at {addr} is not {expected}: {detail}")]
    WrongPeer {
        /// Where we dialled.
        addr: SocketAddr,
        /// Whom we expected.
        expected: PeerId,
        /// What the TLS layer said.
        detail: String,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {0} timed out")]
    Timeout(SocketAddr),
    /// The handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connection {
        /// Where we dialled.
        addr: SocketAddr,
        /// Why.
        source: quinn::ConnectionError,
    },
    /// The dial could not even start.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where we dialled.
        addr: SocketAddr,
        /// Why.
        source: quinn::ConnectError,
    },
    /// We are at the connection limit.
    #[error("connection limit of {0} reached")]
    TooManyConnections(usize),
    /// No address is known for the peer.
    #[error("no known address for peer {0}")]
    NoAddress(PeerId),
    /// The peer's certificate did not yield a peer id.
    #[error("peer presented no usable certificate")]
    NoIdentity,
    /// A relayed path could not be used.
    #[error("relay {} cannot carry us: {reason}", relay.short())]
    Relay {
        /// The relay that refused or failed.
        relay: PeerId,
        /// Why, in words.
        reason: String,
    },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No connection could be made.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The request did not complete before the deadline.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed during the request.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A stream operation failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The reply could not be decoded.
    #[error("bad reply: {0}")]
    Frame(#[from] FrameError),
    /// The peer answered with an error.
    #[error("peer refused: {code:?}: {message}")]
    Remote {
        /// Machine-readable reason.
        code: ErrorCode,
        /// Detail from the peer.
        message: String,
    },
    /// The peer answered with a message that does not fit the request.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
}

impl RequestError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::Dial(_) => "dial_failed",
            RequestError::Timeout(_) => "timeout",
            RequestError::Connection(_) => "connection_lost",
            RequestError::Stream(_) => "stream_error",
            RequestError::Frame(_) => "bad_reply",
            RequestError::Remote { code, .. } => code.as_str(),
            RequestError::Unexpected(_) => "unexpected_reply",
        }
    }
}

/// Who is on the other end of an inbound request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    /// The authenticated peer id.
    pub id: PeerId,
    /// The address the request came from.
    pub addr: SocketAddr,
    /// Whether the peer opened the connection the request came on (it dialled us).
    pub inbound: bool,
}

/// How often, at most, [`Inbound::contact`] is called for one connection. Far below SWIM's
/// suspicion timeout (3 s by default), so a suspicion is still cleared by the next request in time.
pub const CONTACT_EVERY: Duration = Duration::from_millis(100);

/// When a connection's requests last counted as contact: milliseconds since `base`, plus one
/// (0: never). Shared by the connection's stream tasks.
struct ContactStamp {
    base: Instant,
    last: AtomicU64,
}

impl ContactStamp {
    fn new() -> Self {
        ContactStamp {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether a request at `now` should count as contact; if so, claims it (one caller wins).
    fn due(&self, now: Instant) -> bool {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX - 1)
            + 1;
        let last = self.last.load(Ordering::Relaxed);
        let every = CONTACT_EVERY.as_millis() as u64;
        if last != 0 && ms.saturating_sub(last) < every {
            return false;
        }
        self.last
            .compare_exchange(last, ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// A boxed future, as inbound handlers return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the node does with a decoded inbound request.
pub trait Inbound: Send + Sync + 'static {
    /// Answers one request. The returned label names the request kind in metrics.
    fn handle(&self, from: Remote, request: Request, body: Bytes) -> BoxFuture<(Response, Bytes)>;

    /// `from` sent a request that was read whole and allowed by the rate limiter: proof it is
    /// alive. Called before [`handle`](Self::handle) for such a request, but at most once per
    /// [`CONTACT_EVERY`] per connection (the requests in between are the same evidence). The
    /// default does nothing.
    fn contact(&self, from: Remote, request: &Request) {
        let _ = (from, request);
    }

    /// Takes over a stream opened with [`Request::Relay`]: a long-lived relay link. The default
    /// refuses it.
    fn link(
        &self,
        from: Remote,
        register: bool,
        send: SendStream,
        recv: RecvStream,
    ) -> BoxFuture<()> {
        let _ = (from, register, recv);
        let mut send = send;
        Box::pin(async move {
            let _ = send.reset(STOP_REFUSED);
        })
    }
}

struct Inner {
    endpoint: Endpoint,
    local_id: PeerId,
    pool: Mutex<HashMap<PeerId, Connection>>,
    open: AtomicUsize,
    limits: Limits,
    metrics: Metrics,
    tasks: TaskTracker,
    cancel: CancellationToken,
    handler: Arc<dyn Inbound>,
    limiter: crate::limiter::Limiter,
    plumbing: Option<Arc<crate::relay::Plumbing>>,
}

/// The QUIC transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local_id", &self.inner.local_id)
            .finish_non_exhaustive()
    }
}

fn transport_config(limits: &Limits) -> Result<TransportConfig, BindError> {
    let mut tc = TransportConfig::default();
    tc.max_concurrent_bidi_streams(limits.max_streams.into());
    tc.max_concurrent_uni_streams(0u32.into());
    tc.max_idle_timeout(Some(
        limits
            .idle_timeout
            .try_into()
            .map_err(|e| BindError::Quic(format!("idle_timeout: {e}")))?,
    ));
    Ok(tc)
}

/// Classifies a failed handshake for metrics.
fn handshake_failure_reason(err: &quinn::ConnectionError) -> &'static str {
    let text = err.to_string();
    if text.contains("PeerIdMismatch") || text.contains("peer id mismatch") {
        return "peer_id_mismatch";
    }
    match err {
        quinn::ConnectionError::TransportError(te) => classify_code(u64::from(te.code)),
        quinn::ConnectionError::ConnectionClosed(close) => {
            classify_code(u64::from(close.error_code))
        }
        quinn::ConnectionError::TimedOut => "timeout",
        quinn::ConnectionError::Reset => "reset",
        _ => "other",
    }
}

fn classify_code(code: u64) -> &'static str {
    // TLS alerts are carried as QUIC CRYPTO_ERROR 0x100 + alert.
    match code.checked_sub(0x100) {
        Some(120) => "alpn",
        Some(42 | 43 | 44 | 45 | 46 | 48) => "bad_certificate",
        Some(40) => "handshake_failure",
        Some(_) => "tls",
        None => "transport",
    }
}

impl Transport {
    /// Binds the endpoint and starts accepting connections; inbound requests go to `handler`.
    pub fn bind(
        identity: &Identity,
        addr: SocketAddr,
        limits: Limits,
        metrics: Metrics,
        handler: Arc<dyn Inbound>,
        cancel: CancellationToken,
        ca: Option<rustls::pki_types::CertificateDer<'static>>,
    ) -> Result<Self, BindError> {
        Self::bind_relayed(identity, addr, limits, metrics, handler, cancel, ca, None)
    }

    /// [`Transport::bind`], with the socket wrapped so relayed routes work.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bind_relayed(
        identity: &Identity,
        addr: SocketAddr,
        limits: Limits,
        metrics: Metrics,
        handler: Arc<dyn Inbound>,
        cancel: CancellationToken,
        ca: Option<rustls::pki_types::CertificateDer<'static>>,
        plumbing: Option<Arc<crate::relay::Plumbing>>,
    ) -> Result<Self, BindError> {
        let tc = Arc::new(transport_config(&limits)?);
        let server_crypto = QuicServerConfig::try_from(tls::server_config(identity, ca.clone())?)
            .map_err(|e| BindError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(tc.clone());
        let client_crypto = QuicClientConfig::try_from(tls::client_config(identity, ca)?)
            .map_err(|e| BindError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(tc);

        let socket = bind_udp(addr).map_err(|source| BindError::Socket { addr, source })?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| BindError::Quic("no async runtime found".into()))?;
        let socket = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| BindError::Socket { addr, source })?;
        let socket = match &plumbing {
            Some(p) => {
                p.count_not_quic_into(metrics.rejected_counter("not_quic"));
                p.wrap(socket)
            }
            None => socket,
        };
        // The fixed bit is not greased, so a datagram without it is garbage and gets counted.
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.grease_quic_bit(false);
        let mut endpoint =
            Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket, runtime)
                .map_err(|source| BindError::Socket { addr, source })?;
        endpoint.set_default_client_config(client);

        let inner = Arc::new(Inner {
            endpoint,
            local_id: identity.peer_id(),
            pool: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            metrics,
            tasks: TaskTracker::new(),
            cancel,
            handler,
            limiter: crate::limiter::Limiter::new(crate::limiter::RateConfig {
                per_second: limits.peer_rate,
                burst: limits.peer_burst,
                ban_after: limits.ban_after,
                ban_for: limits.ban_for,
                ban_after_lies: limits.ban_after_lies,
            }),
            limits,
            plumbing,
        });
        let transport = Transport { inner };
        let t = transport.clone();
        transport
            .inner
            .tasks
            .spawn(async move { t.accept_loop().await });
        Ok(transport)
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// This node's peer id.
    pub fn local_id(&self) -> PeerId {
        self.inner.local_id
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metrics this transport records into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Connections currently pooled.
    pub fn connection_count(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Tasks the transport tracks (accept loop, connection drivers, inbound streams).
    pub(crate) fn task_count(&self) -> usize {
        self.inner.tasks.len()
    }

    /// The pooled connection to `peer`, if one is open.
    pub fn pooled(&self, peer: &PeerId) -> Option<Connection> {
        let pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.get(peer)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Every pooled connection with its peer.
    pub fn connections(&self) -> Vec<(PeerId, Connection)> {
        let pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.iter()
            .filter(|(_, c)| c.close_reason().is_none())
            .map(|(p, c)| (*p, c.clone()))
            .collect()
    }

    /// Connects to `addr`, insisting on `expected` when given; reuses a pooled connection.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<(PeerId, Connection), DialError> {
        if let Some(id) = expected {
            if let Some(conn) = self.pooled(&id) {
                return Ok((id, conn));
            }
        }
        self.dial(addr, expected).await
    }

    /// Opens a new connection to `addr` even if one to the peer is pooled (it replaces it).
    pub async fn dial(
        &self,
        addr: SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<(PeerId, Connection), DialError> {
        let max = self.inner.limits.max_connections;
        if self.connection_count() >= max {
            return Err(DialError::TooManyConnections(max));
        }
        let start = Instant::now();
        let name = tls::server_name_for(expected);
        let connecting = self
            .inner
            .endpoint
            .connect(addr, &name)
            .map_err(|source| DialError::Connect { addr, source })?;
        let result = timeout(self.inner.limits.handshake_timeout, connecting).await;
        let conn = match result {
            Err(_) => {
                self.record(Event::HandshakeFailed {
                    direction: Direction::Outbound,
                    reason: "timeout",
                });
                return Err(DialError::Timeout(addr));
            }
            Ok(Err(source)) => {
                let reason = handshake_failure_reason(&source);
                self.record(Event::HandshakeFailed {
                    direction: Direction::Outbound,
                    reason,
                });
                if let (Some(expected), "peer_id_mismatch") = (expected, reason) {
                    return Err(DialError::WrongPeer {
                        addr,
                        expected,
                        detail: source.to_string(),
                    });
                }
                return Err(DialError::Connection { addr, source });
            }
            Ok(Ok(conn)) => conn,
        };
        let id = peer_id_of_connection(&conn).ok_or(DialError::NoIdentity)?;
        self.record(Event::HandshakeSucceeded {
            direction: Direction::Outbound,
            duration: start.elapsed(),
        });
        self.adopt(id, conn.clone(), Direction::Outbound);
        Ok((id, conn))
    }

    /// Sends one request on `conn` and waits for the reply, all within the request deadline.
    pub async fn request_on(
        &self,
        conn: &Connection,
        request: &Request,
        body: Bytes,
    ) -> Result<(Response, Bytes), RequestError> {
        let limits = &self.inner.limits;
        let deadline = limits.request_timeout;
        let fut = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            let frame = wire::encode_frame(request, limits.max_frame)?;
            let sent = write_message(&mut send, frame, body)
                .await
                .map_err(|e| RequestError::Stream(e.to_string()))?;
            self.record(Event::BytesSent(sent));
            let (response, received, body) =
                read_message::<Response>(&mut recv, limits.max_frame, limits.max_body, |_| false)
                    .await
                    .map_err(|e| match e {
                        ReadError::Frame(f) => RequestError::Frame(f),
                        ReadError::Stream(s) => RequestError::Stream(s),
                    })?;
            self.record(Event::BytesReceived(received));
            if let Response::Error { code, message } = response {
                return Err(RequestError::Remote { code, message });
            }
            Ok((response, body))
        };
        match timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Timeout(deadline)),
        }
    }

    /// Closes every connection and the endpoint, then waits (bounded) for tasks to finish.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.cancel.cancel();
        self.inner.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        self.inner.tasks.close();
        let _ = timeout(grace, async {
            self.inner.endpoint.wait_idle().await;
            self.inner.tasks.wait().await;
        })
        .await;
    }

    fn record(&self, event: Event) {
        self.inner.metrics.record(&event);
    }

    /// `peer` lied about data (`reason`: `wrong_proof`, `wrong_data`): counted, and banned once it
    /// has done so `ban_after_lies` times — its connection closed, its handshakes refused.
    pub(crate) fn strike(&self, peer: &PeerId, reason: &'static str) {
        self.record(Event::Rejected { reason });
        if self.inner.limiter.strike(peer, Instant::now()) {
            warn!(peer = %peer.short(), reason, for_secs = self.inner.limits.ban_for.as_secs(), "peer lied about data repeatedly: banned");
            self.record(Event::Rejected { reason: "banned" });
            if let Some(conn) = self.pooled(peer) {
                conn.close(STOP_REFUSED, b"banned");
            }
        }
    }

    /// Whether `peer` is banned now.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.inner.limiter.is_banned(peer, Instant::now())
    }

    /// Puts a fresh connection in the pool and serves the streams the peer opens on it.
    fn adopt(&self, id: PeerId, conn: Connection, direction: Direction) {
        if self.inner.limiter.is_banned(&id, Instant::now()) {
            self.record(Event::HandshakeFailed {
                direction,
                reason: "banned",
            });
            conn.close(STOP_REFUSED, b"banned");
            return;
        }
        {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.insert(id, conn.clone());
        }
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        self.record(Event::ConnectionOpened);
        let t = self.clone();
        let span = info_span!("conn", peer = %id.short(), remote = %conn.remote_address(), dir = ?direction);
        self.inner.tasks.spawn(
            async move {
                debug!("connection open");
                t.serve_connection(id, &conn, direction).await;
                let reason = conn.closed().await;
                debug!(%reason, "connection closed");
                {
                    let mut pool = t.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
                    if pool
                        .get(&id)
                        .is_some_and(|c| c.stable_id() == conn.stable_id())
                    {
                        pool.remove(&id);
                    }
                }
                t.inner.open.fetch_sub(1, Ordering::Relaxed);
                t.record(Event::ConnectionClosed);
            }
            .instrument(span),
        );
    }

    async fn accept_loop(self) {
        loop {
            let incoming = tokio::select! {
                _ = self.inner.cancel.cancelled() => break,
                i = self.inner.endpoint.accept() => match i { Some(i) => i, None => break },
            };
            if let Some(p) = &self.inner.plumbing {
                if !p.admits(&incoming.remote_address()) {
                    incoming.ignore();
                    continue;
                }
            }
            if self.connection_count() >= self.inner.limits.max_connections {
                self.record(Event::HandshakeFailed {
                    direction: Direction::Inbound,
                    reason: "connection_limit",
                });
                incoming.refuse();
                continue;
            }
            let t = self.clone();
            self.inner.tasks.spawn(async move {
                let start = Instant::now();
                let remote = incoming.remote_address();
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => {
                        let reason = handshake_failure_reason(&e);
                        debug!(%remote, error = %e, reason, "refused incoming connection");
                        t.record(Event::HandshakeFailed {
                            direction: Direction::Inbound,
                            reason,
                        });
                        return;
                    }
                };
                match timeout(t.inner.limits.handshake_timeout, connecting).await {
                    Ok(Ok(conn)) => {
                        let Some(id) = peer_id_of_connection(&conn) else {
                            conn.close(STOP_REFUSED, b"no identity");
                            t.record(Event::HandshakeFailed {
                                direction: Direction::Inbound,
                                reason: "bad_certificate",
                            });
                            return;
                        };
                        t.record(Event::HandshakeSucceeded {
                            direction: Direction::Inbound,
                            duration: start.elapsed(),
                        });
                        t.adopt(id, conn, Direction::Inbound);
                    }
                    Ok(Err(e)) => {
                        let reason = handshake_failure_reason(&e);
                        debug!(%remote, error = %e, reason, "inbound handshake failed");
                        t.record(Event::HandshakeFailed {
                            direction: Direction::Inbound,
                            reason,
                        });
                    }
                    Err(_) => {
                        t.record(Event::HandshakeFailed {
                            direction: Direction::Inbound,
                            reason: "timeout",
                        });
                    }
                }
            });
        }
    }

    async fn serve_connection(&self, id: PeerId, conn: &Connection, direction: Direction) {
        let handler = self.inner.handler.clone();
        let contact = Arc::new(ContactStamp::new());
        loop {
            let (send, recv) = tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                s = conn.accept_bi() => match s { Ok(s) => s, Err(_) => return },
            };
            let t = self.clone();
            let handler = handler.clone();
            let contact = contact.clone();
            let from = Remote {
                id,
                addr: conn.remote_address(),
                inbound: direction == Direction::Inbound,
            };
            self.inner
                .tasks
                .spawn(t.serve_stream(from, send, recv, handler, contact));
        }
    }

    /// Takes the transport by value so the spawned task is this future alone, not one wrapping
    /// it (each layer is copied when the task starts).
    async fn serve_stream(
        self,
        from: Remote,
        mut send: SendStream,
        mut recv: RecvStream,
        handler: Arc<dyn Inbound>,
        contact: Arc<ContactStamp>,
    ) {
        let limits = &self.inner.limits;
        let start = Instant::now();
        let read = async {
            // A relay link's header stands alone: frames follow it, not a body.
            let (request, received, body) =
                read_message::<Request>(&mut recv, limits.max_frame, limits.max_body, |r| {
                    matches!(r, Request::Relay { .. })
                })
                .await?;
            self.record(Event::BytesReceived(received));
            Ok::<_, ReadError>((request, body))
        };
        let (response, body, kind) = match bounded(limits.request_timeout, read).await {
            Err(_) => {
                self.record(Event::Rejected {
                    reason: "read_timeout",
                });
                let _ = recv.stop(STOP_REFUSED);
                send.reset(STOP_REFUSED).ok();
                return;
            }
            Ok(Err(ReadError::Stream(e))) => {
                debug!(peer = %from.id.short(), error = %e, "stream failed while reading request");
                return;
            }
            Ok(Err(ReadError::Frame(e))) => {
                let code = e.code();
                warn!(peer = %from.id.short(), error = %e, "refused request");
                self.record(Event::Rejected {
                    reason: code.as_str(),
                });
                let _ = recv.stop(STOP_REFUSED);
                (
                    Response::Error {
                        code,
                        message: e.to_string(),
                    },
                    Bytes::new(),
                    Cow::Borrowed("invalid"),
                )
            }
            Ok(Ok((request, body)))
                if self.inner.limiter.check(&from.id, Instant::now())
                    != crate::limiter::Verdict::Allow =>
            {
                let _ = body;
                self.record(Event::Rejected {
                    reason: "rate_limited",
                });
                if self.inner.limiter.is_banned(&from.id, Instant::now()) {
                    warn!(peer = %from.id.short(), "peer flooded past its rate limit: banned");
                    self.record(Event::Rejected { reason: "banned" });
                    if let Some(conn) = self.pooled(&from.id) {
                        conn.close(STOP_REFUSED, b"banned");
                    }
                }
                (
                    Response::Error {
                        code: ErrorCode::Busy,
                        message: "rate limit exceeded; slow down".into(),
                    },
                    Bytes::new(),
                    kind_of(&request),
                )
            }
            Ok(Ok((Request::Relay { register }, _))) => {
                self.record(Event::Request {
                    direction: Direction::Inbound,
                    kind: "relay_link".into(),
                    outcome: "ok",
                    duration: start.elapsed(),
                });
                handler.link(from, register, send, recv).await;
                return;
            }
            Ok(Ok((request, body))) => {
                let kind = kind_of(&request);
                if contact.due(Instant::now()) {
                    handler.contact(from, &request);
                }
                match bounded(limits.request_timeout, handler.handle(from, request, body)).await {
                    Ok((resp, body)) => (resp, body, kind),
                    Err(_) => (
                        Response::Error {
                            code: ErrorCode::Busy,
                            message: "handler timed out".into(),
                        },
                        Bytes::new(),
                        kind,
                    ),
                }
            }
        };
        let outcome = match &response {
            Response::Error { code, .. } => code.as_str(),
            _ => "ok",
        };
        // Never label by a name the peer made up: unknown names are one series.
        let kind = if outcome == ErrorCode::UnknownName.as_str() {
            Cow::Borrowed("unknown")
        } else {
            kind
        };
        let frame = match wire::encode_frame(&response, limits.max_frame) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "reply does not fit a frame");
                send.reset(STOP_REFUSED).ok();
                return;
            }
        };
        let write = write_message(&mut send, frame, body);
        if let Ok(Ok(sent)) = bounded(limits.request_timeout, write).await {
            self.record(Event::BytesSent(sent));
        }
        self.inner
            .metrics
            .record_request(Direction::Inbound, &kind, outcome, start.elapsed());
    }
}

/// Kind label of a request for metrics.
pub fn request_kind(request: &Request) -> String {
    kind_of(request).into_owned()
}

/// Kind label of a request for metrics, allocating only for a name.
fn kind_of(request: &Request) -> Cow<'static, str> {
    match request {
        Request::Ping { .. } => Cow::Borrowed("ping"),
        Request::PingReq { .. } => Cow::Borrowed("ping_req"),
        Request::Hello { .. } => Cow::Borrowed("hello"),
        Request::Behaviour { name } => Cow::Owned(name.clone()),
        Request::Overlay { name } => Cow::Owned(format!("overlay:{name}")),
        Request::Relay { .. } => Cow::Borrowed("relay_link"),
        _ => Cow::Borrowed("other"),
    }
}

enum ReadError {
    Frame(FrameError),
    Stream(String),
}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

/// `fut` within `limit`, like [`timeout`], but the timer is only armed if `fut` does not finish
/// on its first poll. An inbound request has usually arrived whole by the time its stream is
/// accepted, a simple handler answers at once and a small reply fits the send window: those
/// steps then cost no timer registration and removal in tokio's wheel (two locks each). A step
/// that waits gets the full `limit` from the moment it first waited, as before.
async fn bounded<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        })
    })
    .await;
    match first {
        Some(out) => Ok(out),
        None => timeout(limit, fut).await,
    }
}

/// How many chunks one read takes from quinn: each read locks the connection once, and a small
/// message with its end usually comes in one read.
const READ_BATCH: usize = 8;

/// Writes a header frame and a body and finishes the stream; returns the bytes written. Both go
/// to quinn in one call (one lock of the connection), the frame's buffer and the body's bytes
/// handed over as they are, not copied.
async fn write_message(
    send: &mut SendStream,
    frame: Vec<u8>,
    body: Bytes,
) -> Result<u64, quinn::WriteError> {
    let sent = (frame.len() + body.len()) as u64;
    send.write_all_chunks(&mut [Bytes::from(frame), body])
        .await?;
    send.finish().map_err(|_| quinn::WriteError::ClosedStream)?;
    Ok(sent)
}

/// Reads one message: a header frame, then the body up to the end of the stream (unless
/// `stands_alone` says the header is all there is: a relay link). Returns the header, the bytes
/// read and the body.
///
/// Bounds are checked as bytes arrive, before they are kept: the announced header length against
/// `max_frame`, the body against `max_body`. The body is gathered into one buffer as its chunks
/// come in (each copied once, while still in cache, and dropped), so no chunk, and none of the
/// datagram buffer it points into, outlives the read.
async fn read_message<T: Message>(
    recv: &mut RecvStream,
    max_frame: usize,
    max_body: usize,
    stands_alone: fn(&T) -> bool,
) -> Result<(T, u64, Bytes), ReadError> {
    let mut batch: [Bytes; READ_BATCH] = Default::default();
    // Header bytes, only when the header is split over several chunks.
    let mut head: Vec<u8> = Vec::new();
    let mut header: Option<(T, usize)> = None;
    let mut body: Vec<u8> = Vec::new();
    loop {
        let n = match recv.read_chunks(&mut batch).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => return Err(ReadError::Stream(e.to_string())),
        };
        for i in 0..n {
            let mut chunk = std::mem::take(&mut batch[i]);
            if header.is_none() {
                let Some((msg, len)) = take_header::<T>(&mut head, &mut chunk, max_frame)? else {
                    continue;
                };
                if stands_alone(&msg) {
                    // Whatever follows belongs to the stream's new owner, so nothing may have
                    // been read past the header (our dialler waits for the answer first).
                    if !chunk.is_empty() || batch[i + 1..n].iter().any(|c| !c.is_empty()) {
                        return Err(ReadError::Frame(FrameError::Trailing(chunk.len())));
                    }
                    return Ok((msg, len as u64, Bytes::new()));
                }
                header = Some((msg, len));
            }
            if chunk.is_empty() {
                continue;
            }
            if body.len() + chunk.len() > max_body {
                return Err(ReadError::Frame(FrameError::TooLarge {
                    len: body.len() + chunk.len(),
                    max: max_body,
                }));
            }
            body.extend_from_slice(&chunk);
        }
    }
    let Some((msg, len)) = header else {
        return Err(ReadError::Stream(format!(
            "stream ended after {} bytes, inside the header",
            head.len()
        )));
    };
    Ok((msg, (len + body.len()) as u64, Bytes::from(body)))
}

/// Takes header bytes from the front of `chunk`: the decoded header and its length on the wire
/// once complete, `None` while more bytes are needed (they are kept in `head`). A header that
/// arrives whole in one chunk is decoded in place.
fn take_header<T: Message>(
    head: &mut Vec<u8>,
    chunk: &mut Bytes,
    max_frame: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    use bytes::Buf;
    let prefix_of = |b: &[u8]| {
        let mut p = [0u8; wire::LEN_PREFIX];
        p.copy_from_slice(&b[..wire::LEN_PREFIX]);
        p
    };
    if head.is_empty() && chunk.len() >= wire::LEN_PREFIX {
        let len = wire::frame_len(prefix_of(chunk), max_frame)?;
        let total = wire::LEN_PREFIX + len;
        if chunk.len() >= total {
            let msg = wire::decode_payload(&chunk[wire::LEN_PREFIX..total])?;
            chunk.advance(total);
            return Ok(Some((msg, total)));
        }
    }
    loop {
        let need = if head.len() < wire::LEN_PREFIX {
            wire::LEN_PREFIX
        } else {
            wire::LEN_PREFIX + wire::frame_len(prefix_of(head), max_frame)?
        };
        if head.len() == need && need > wire::LEN_PREFIX {
            let msg = wire::decode_payload(&head[wire::LEN_PREFIX..])?;
            return Ok(Some((msg, need)));
        }
        if chunk.is_empty() {
            return Ok(None);
        }
        let take = (need - head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..take]);
        chunk.advance(take);
    }
}

/// The peer id proven by a connection's TLS certificate.
pub fn peer_id_of_connection(conn: &Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    peer_id_of_certificate(certs.first()?)
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    // Larger buffers keep bulk transfers from dropping packets; the kernel may clamp them.
    socket.set_recv_buffer_size(4 << 20).ok();
    socket.set_send_buffer_size(4 << 20).ok();
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` to `take_header` in pieces of `step`, as quinn may hand them over.
    fn split<T: Message>(bytes: &[u8], step: usize) -> Result<(T, usize, Vec<u8>), FrameError> {
        let mut head = Vec::new();
        let mut pieces = bytes.chunks(step).map(Bytes::copy_from_slice);
        loop {
            let Some(mut piece) = pieces.next() else {
                panic!("input ended inside the header");
            };
            if let Some((msg, len)) = take_header::<T>(&mut head, &mut piece, 1024)? {
                let mut rest = piece.to_vec();
                rest.extend(pieces.flatten());
                return Ok((msg, len, rest));
            }
        }
    }

    #[test]
    fn a_header_split_anywhere_decodes_the_same() {
        let request = Request::Behaviour {
            name: "ohce".into(),
        };
        let mut bytes = wire::encode_frame(&request, 1024).unwrap();
        let header_len = bytes.len();
        bytes.extend_from_slice(b"body");
        for step in 1..=bytes.len() {
            let (msg, len, rest) = split::<Request>(&bytes, step).unwrap();
            assert_eq!(
                (msg, len, rest),
                (request.clone(), header_len, b"body".to_vec())
            );
        }
    }

    #[test]
    fn an_oversized_prefix_is_refused_before_anything_is_buffered() {
        for step in [1, 2, 3, 7] {
            assert!(matches!(
                split::<Request>(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3], step),
                Err(FrameError::TooLarge { .. })
            ));
        }
    }
}
