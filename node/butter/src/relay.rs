//! The relay driver: reaching peers that cannot be dialled, and punching holes to reach them
//! directly.
//!
//! A node that is not reachable from outside its LAN keeps a *link* (see [`butter_proto::relay`])
//! to a reachable node, its **home relay**, and announces it in its record. Another node that wants
//! it opens a link to that relay (or, when it cannot reach the relay directly, goes through its own
//! home relay first) and dials a **virtual address** standing for the route. Every datagram the
//! QUIC endpoint sends to a virtual address is wrapped in a link frame by the endpoint's socket
//! wrapper; frames arriving for this node are handed back to the endpoint as datagrams from the virtual address of
//! the route back. The QUIC connection, and its mutual TLS, therefore runs end to end over the relay:
//! the relay carries ciphertext it cannot read, forge or usefully replay, and everything above the
//! transport (behaviours, membership, PCG, search) works over it unchanged.
//!
//! Once a relayed connection works, the dialler asks the relay for a **hole punch**: the relay tells
//! each side the other's public address (as it sees them), the target sends a few datagrams towards
//! the dialler to open its NAT, and the dialler dials the target's public address directly. Behind
//! endpoint-independent NATs this succeeds and the connection moves off the relay; behind a
//! symmetric NAT it fails and the relayed path stays.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use butter_proto::relay::{self as core, Body, Frame, RelayHint, Routed};
use butter_proto::wire::{self, PeerRecord, Request};
use butter_proto::{PeerId, Time};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Connection, RecvStream, SendStream, UdpPoller};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use crate::config::{Reachability, RelayFault};
use crate::node::Node;
use crate::transport::{DialError, Remote};

/// First octet of IPv4 virtual addresses (240.0.0.0/8 is reserved and never routed).
const VIRTUAL_OCTET: u8 = 240;
/// Port of every virtual address.
const VIRTUAL_PORT: u16 = 9;
/// Most routes with a virtual address at once.
const MAX_ROUTES: usize = 1 << 16;
/// Relayed datagrams waiting for the endpoint.
const INBOUND_QUEUE: usize = 2048;
/// Frames waiting to be written on one link.
const LINK_QUEUE: usize = 1024;
/// How often a link says it is alive (NAT mappings for UDP typically last 30 s or more).
const KEEPALIVE: Duration = Duration::from_secs(10);
/// A link that heard nothing for this long is dead.
const LINK_IDLE: Duration = Duration::from_secs(35);
/// Deadline for opening a link (dial, request, answer).
const LINK_OPEN_TIMEOUT: Duration = Duration::from_secs(4);
/// A relay we could not dial directly is not tried directly again for this long.
const UNREACHABLE_FOR: Duration = Duration::from_secs(15);
/// Records heard in samples, kept to dial their owners through their relays.
const DIRECTORY_MAX: usize = 4096;
/// The datagram a punching node sends: too short for QUIC to answer or misread.
const PUNCH: &[u8] = b"\0btr";
/// Digests of the latest relayed datagrams received, over all routes, kept to catch a relay that
/// replays what it carries (QUIC never sends the same datagram twice: every packet has a new
/// number, retransmissions included).
const REPLAY_WINDOW: usize = 8192;
/// How long a relay caught replaying what it carries is not used (and its datagrams dropped).
const DISTRUST_FOR: Duration = Duration::from_secs(600);

/// True for an address that stands for a relayed route.
pub fn is_virtual(addr: &SocketAddr) -> bool {
    match addr.ip().to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == VIRTUAL_OCTET,
        IpAddr::V6(_) => false,
    }
}

/// Virtual addresses ↔ relay routes.
#[derive(Default)]
struct Routes {
    by_route: HashMap<Vec<PeerId>, SocketAddr>,
    by_addr: HashMap<SocketAddr, Vec<PeerId>>,
}

/// A relayed datagram for the endpoint, with the virtual address it comes from.
type Datagram = (Vec<u8>, SocketAddr);

struct LinkTx {
    tx: mpsc::Sender<Frame>,
    seq: u64,
    observed: SocketAddr,
}

/// What the socket wrapper and the driver share.
pub(crate) struct Plumbing {
    routes: Mutex<Routes>,
    links: Mutex<HashMap<PeerId, LinkTx>>,
    inbound: mpsc::Sender<Datagram>,
    inbound_rx: Mutex<Option<mpsc::Receiver<Datagram>>>,
    raw: OnceLock<Arc<dyn AsyncUdpSocket>>,
    v6: OnceLock<bool>,
    /// Test only: behave like a NAT's filter (see [`crate::config::RelayConfig`]).
    nat_sim: std::sync::atomic::AtomicBool,
    contacted: Mutex<HashSet<SocketAddr>>,
    /// Relays caught replaying datagrams, with what they did and when: nothing goes through them.
    distrusted: Mutex<HashMap<PeerId, (&'static str, Instant)>>,
    /// Counts datagrams on the real socket that cannot be QUIC (see [`not_quic`]).
    not_quic: OnceLock<prometheus::IntCounter>,
}

/// True for a datagram that cannot be a QUIC packet for this endpoint: shorter than the smallest
/// packet (21 bytes, a stateless reset), with the fixed bit (0x40) clear — the endpoint does not
/// grease that bit, so peers must set it — or a long header naming a version quinn does not
/// speak (1 and the 0xff00_00xx drafts); except a version negotiation packet (version 0, other
/// bits arbitrary) and our own hole-punching datagram. quinn drops (or answers with version
/// negotiation) such datagrams without telling us; this is how they get counted
/// (`butter_rejected_total{reason="not_quic"}`). Garbage shaped like a short-header packet is
/// dropped by quinn uncounted.
fn not_quic(d: &[u8]) -> bool {
    if d == PUNCH {
        return false;
    }
    if d.len() < 21 {
        return true;
    }
    if d[0] & 0x80 != 0 {
        let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
        if version == 0 {
            return false;
        }
        let known = version == 1 || version & 0xffff_ff00 == 0xff00_0000;
        return d[0] & 0x40 == 0 || !known;
    }
    d[0] & 0x40 == 0
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Plumbing {
    pub(crate) fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        Arc::new(Plumbing {
            routes: Mutex::new(Routes::default()),
            links: Mutex::new(HashMap::new()),
            inbound: tx,
            inbound_rx: Mutex::new(Some(rx)),
            raw: OnceLock::new(),
            v6: OnceLock::new(),
            nat_sim: std::sync::atomic::AtomicBool::new(false),
            contacted: Mutex::new(HashSet::new()),
            distrusted: Mutex::new(HashMap::new()),
            not_quic: OnceLock::new(),
        })
    }

    /// Counts datagrams that cannot be QUIC into `counter`.
    pub(crate) fn count_not_quic_into(&self, counter: prometheus::IntCounter) {
        let _ = self.not_quic.set(counter);
    }

    /// Why `relay` is not used now, if it was caught misbehaving within [`DISTRUST_FOR`].
    fn distrust_of(&self, relay: &PeerId) -> Option<(&'static str, Instant)> {
        let mut d = lock(&self.distrusted);
        match d.get(relay).copied() {
            Some((_, at)) if at.elapsed() >= DISTRUST_FOR => {
                d.remove(relay);
                None
            }
            other => other,
        }
    }

    /// True when a relay on `route` (all but its last hop) is distrusted.
    fn blocked(&self, route: &[PeerId]) -> bool {
        let relays = &route[..route.len().saturating_sub(1)];
        relays.iter().any(|x| self.distrust_of(x).is_some())
    }

    /// Test only: drop inbound connections from addresses this node never sent to.
    pub(crate) fn simulate_nat(&self, on: bool) {
        self.nat_sim.store(on, Ordering::Relaxed);
    }

    fn note_contact(&self, to: &SocketAddr) {
        if self.nat_sim.load(Ordering::Relaxed) {
            let key = SocketAddr::new(to.ip().to_canonical(), to.port());
            lock(&self.contacted).insert(key);
        }
    }

    /// Whether an inbound connection from `from` gets through (always, unless simulating a NAT).
    pub(crate) fn admits(&self, from: &SocketAddr) -> bool {
        if !self.nat_sim.load(Ordering::Relaxed) || is_virtual(from) {
            return true;
        }
        let key = SocketAddr::new(from.ip().to_canonical(), from.port());
        lock(&self.contacted).contains(&key)
    }

    /// Wraps the endpoint's real socket so virtual addresses go over links.
    pub(crate) fn wrap(
        self: &Arc<Self>,
        inner: Arc<dyn AsyncUdpSocket>,
    ) -> Arc<dyn AsyncUdpSocket> {
        let v6 = inner.local_addr().is_ok_and(|a| a.is_ipv6());
        let _ = self.v6.set(v6);
        let _ = self.raw.set(inner.clone());
        let rx = lock(&self.inbound_rx).take();
        match rx {
            Some(rx) => Arc::new(RelaySocket {
                inner,
                plumbing: self.clone(),
                inbound: Mutex::new(rx),
            }),
            None => inner,
        }
    }

    /// The virtual address of `route`, allocating one if needed.
    fn addr_for(&self, route: &[PeerId]) -> Option<SocketAddr> {
        let mut r = lock(&self.routes);
        if let Some(a) = r.by_route.get(route) {
            return Some(self.present(*a));
        }
        let n = r.by_addr.len();
        if n >= MAX_ROUTES {
            return None;
        }
        let n = u32::try_from(n).ok()? + 1;
        let [_, b, c, d] = n.to_be_bytes();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(VIRTUAL_OCTET, b, c, d)),
            VIRTUAL_PORT,
        );
        r.by_route.insert(route.to_vec(), addr);
        r.by_addr.insert(addr, route.to_vec());
        Some(self.present(addr))
    }

    /// The address in the endpoint's family.
    fn present(&self, addr: SocketAddr) -> SocketAddr {
        match (addr, self.v6.get().copied().unwrap_or(false)) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            (a, _) => a,
        }
    }

    fn route_of(&self, addr: &SocketAddr) -> Option<Vec<PeerId>> {
        let key = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        lock(&self.routes).by_addr.get(&key).cloned()
    }

    /// Queues `frame` on the link to `peer`; false when there is no link (or it is full).
    fn send(&self, peer: &PeerId, frame: Frame) -> bool {
        let links = lock(&self.links);
        match links.get(peer) {
            // A full queue drops the frame, like a full UDP buffer; QUIC retransmits.
            Some(l) => l.tx.try_send(frame).is_ok(),
            None => false,
        }
    }

    fn has_link(&self, peer: &PeerId) -> bool {
        lock(&self.links).contains_key(peer)
    }

    fn link_observed(&self, peer: &PeerId) -> Option<SocketAddr> {
        lock(&self.links).get(peer).map(|l| l.observed)
    }

    /// Sends a raw datagram from the endpoint's socket (hole punching).
    fn send_raw(&self, to: SocketAddr, contents: &[u8]) {
        let Some(raw) = self.raw.get() else { return };
        self.note_contact(&to);
        let destination = self.present(to);
        let t = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: None,
            src_ip: None,
        };
        if let Err(e) = raw.try_send(&t) {
            debug!(%to, error = %e, "punch datagram not sent");
        }
    }
}

/// The endpoint's socket: real datagrams go to the kernel, virtual ones over relay links.
struct RelaySocket {
    inner: Arc<dyn AsyncUdpSocket>,
    plumbing: Arc<Plumbing>,
    inbound: Mutex<mpsc::Receiver<Datagram>>,
}

impl fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if !is_virtual(&transmit.destination) {
            self.plumbing.note_contact(&transmit.destination);
            return self.inner.try_send(transmit);
        }
        // Like UDP, a datagram with nowhere to go is dropped; QUIC recovers or times out.
        let Some(route) = self.plumbing.route_of(&transmit.destination) else {
            return Ok(());
        };
        if self.plumbing.blocked(&route) {
            return Ok(());
        }
        let Some((first, rest)) = route.split_first() else {
            return Ok(());
        };
        let seg = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for chunk in transmit.contents.chunks(seg) {
            let frame = Frame {
                to: rest.to_vec(),
                from: Vec::new(),
                body: Body::Packet(chunk.to_vec()),
            };
            self.plumbing.send(first, frame);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut n = 0;
        {
            let mut rx = lock(&self.inbound);
            let room = bufs.len().min(meta.len());
            while n < room {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some((data, from))) => {
                        let len = data.len().min(bufs[n].len());
                        bufs[n][..len].copy_from_slice(&data[..len]);
                        meta[n] = RecvMeta {
                            addr: from,
                            len,
                            stride: len,
                            ..RecvMeta::default()
                        };
                        n += 1;
                    }
                    _ => break,
                }
            }
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        let res = self.inner.poll_recv(cx, bufs, meta);
        if let (Poll::Ready(Ok(n)), Some(counter)) = (&res, self.plumbing.not_quic.get()) {
            for (buf, m) in bufs.iter().zip(meta.iter()).take(*n) {
                let data = &buf[..m.len.min(buf.len())];
                for seg in data.chunks(m.stride.max(1)) {
                    if not_quic(seg) {
                        counter.inc();
                    }
                }
            }
        }
        res
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// The node's relay state: the core, links, routes, what it learned about others.
pub(crate) struct Relayer {
    plumbing: Arc<Plumbing>,
    core: Mutex<core::Relay>,
    epoch: Instant,
    fault: Option<RelayFault>,
    link_seq: AtomicU64,
    directory: Mutex<HashMap<PeerId, PeerRecord>>,
    refusals: Mutex<HashMap<PeerId, (core::Refusal, Instant)>>,
    punches: Mutex<HashMap<PeerId, oneshot::Sender<SocketAddr>>>,
    punched: Mutex<HashSet<PeerId>>,
    unreachable: Mutex<HashMap<PeerId, Instant>>,
    connecting: Mutex<HashSet<PeerId>>,
    dialing: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    home: Mutex<Option<RelayHint>>,
    behind_nat: std::sync::atomic::AtomicBool,
    replays: Mutex<ReplayGuard>,
}

/// A bounded window of digests of relayed datagrams received.
struct ReplayGuard {
    keys: std::hash::RandomState,
    seen: HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

impl ReplayGuard {
    fn new() -> Self {
        ReplayGuard {
            keys: std::hash::RandomState::new(),
            seen: HashSet::with_capacity(REPLAY_WINDOW),
            order: std::collections::VecDeque::with_capacity(REPLAY_WINDOW),
        }
    }

    /// True when `packet` from `addr` was already received within the window.
    fn replayed(&mut self, addr: SocketAddr, packet: &[u8]) -> bool {
        use std::hash::BuildHasher;
        let digest = self.keys.hash_one((addr, packet));
        if !self.seen.insert(digest) {
            return true;
        }
        self.order.push_back(digest);
        if self.order.len() > REPLAY_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        false
    }
}

impl Relayer {
    pub(crate) fn new(
        local: PeerId,
        config: &crate::config::RelayConfig,
        plumbing: Arc<Plumbing>,
    ) -> Self {
        plumbing.simulate_nat(config.simulate_nat);
        Relayer {
            plumbing,
            core: Mutex::new(core::Relay::new(local, config.limits())),
            epoch: Instant::now(),
            fault: config.fault,
            link_seq: AtomicU64::new(0),
            directory: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            punches: Mutex::new(HashMap::new()),
            punched: Mutex::new(HashSet::new()),
            unreachable: Mutex::new(HashMap::new()),
            connecting: Mutex::new(HashSet::new()),
            dialing: Mutex::new(HashMap::new()),
            home: Mutex::new(None),
            behind_nat: std::sync::atomic::AtomicBool::new(false),
            replays: Mutex::new(ReplayGuard::new()),
        }
    }

    fn distrust_of(&self, relay: &PeerId) -> Option<(&'static str, Instant)> {
        self.plumbing.distrust_of(relay)
    }

    fn now(&self) -> Time {
        Time::from_duration(self.epoch.elapsed())
    }

    /// Keeps records heard in samples so their owners can be dialled through their relays.
    pub(crate) fn remember(&self, records: impl IntoIterator<Item = PeerRecord>) {
        let mut d = lock(&self.directory);
        for r in records {
            if d.len() >= DIRECTORY_MAX && !d.contains_key(&r.id) {
                if let Some(k) = d.keys().next().copied() {
                    d.remove(&k);
                }
            }
            d.insert(r.id, r);
        }
    }

    pub(crate) fn heard_of(&self, peer: &PeerId) -> Option<PeerRecord> {
        lock(&self.directory).get(peer).cloned()
    }

    /// Notes that a peer saw us behind a NAT; true the first time.
    pub(crate) fn set_behind_nat(&self) -> bool {
        !self.behind_nat.swap(true, Ordering::Relaxed)
    }

    /// Whether a peer saw us behind a NAT.
    pub(crate) fn behind_nat(&self) -> bool {
        self.behind_nat.load(Ordering::Relaxed)
    }

    /// The relay this node is registered with, if any.
    pub(crate) fn home(&self) -> Option<RelayHint> {
        lock(&self.home).clone()
    }

    /// How the pooled connection `conn` to `peer` runs: `direct`, `relayed` or `punched`.
    pub(crate) fn path_of(&self, peer: &PeerId, conn: &Connection) -> &'static str {
        if is_virtual(&conn.remote_address()) {
            "relayed"
        } else if lock(&self.punched).contains(peer) {
            "punched"
        } else {
            "direct"
        }
    }
}

/// Whether `record`'s owner must be reached through one of its relays.
pub(crate) fn needs_relay(node: &Node, record: &PeerRecord) -> bool {
    !record.public
        && !record.relays.is_empty()
        && record.site != node.site()
        && !record.relays.iter().any(|h| h.id == node.id())
}

/// Connects to a private peer through one of its relays, then tries to punch a direct path.
pub(crate) async fn connect_relayed(
    node: &Node,
    record: &PeerRecord,
) -> Result<Connection, DialError> {
    let peer = record.id;
    // One relayed dial per peer at a time; whoever waited uses the connection it made.
    let gate = lock(&node.inner.relay.dialing)
        .entry(peer)
        .or_default()
        .clone();
    let _turn = gate.lock().await;
    if let Some(c) = node.inner.transport.pooled(&peer) {
        return Ok(c);
    }
    let result = connect_relayed_now(node, record).await;
    lock(&node.inner.relay.dialing).remove(&peer);
    result
}

async fn connect_relayed_now(node: &Node, record: &PeerRecord) -> Result<Connection, DialError> {
    let peer = record.id;
    let mut last = DialError::NoAddress(peer);
    for hint in record.relays.iter().take(2) {
        if hint.id == node.id() {
            continue;
        }
        if let Some((what, _)) = node.inner.relay.distrust_of(&hint.id) {
            last = DialError::Relay {
                relay: hint.id,
                reason: format!("not used: it {what}"),
            };
            continue;
        }
        let route = match route_via(node, hint, peer).await {
            Ok(r) => r,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match dial_route(node, peer, &route).await {
            Ok(conn) => {
                if route.len() == 2 && node.config().relay.punch {
                    let n = node.clone();
                    let relay = route[0];
                    node.inner
                        .tasks
                        .spawn(async move { punch(&n, relay, peer).await });
                }
                return Ok(conn);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The route to `peer` through its relay `hint`: directly to the relay when we can reach it,
/// otherwise through our own home relay first.
async fn route_via(node: &Node, hint: &RelayHint, peer: PeerId) -> Result<Vec<PeerId>, DialError> {
    let r = &node.inner.relay;
    let unreachable = lock(&r.unreachable)
        .get(&hint.id)
        .is_some_and(|t| t.elapsed() < UNREACHABLE_FOR);
    if !unreachable {
        match open_link(node, hint.id, &hint.addrs, false).await {
            Ok(_) => return Ok(vec![hint.id, peer]),
            Err(e) => {
                debug!(relay = %hint.id.short(), error = %e, "relay not reachable directly");
                lock(&r.unreachable).insert(hint.id, Instant::now());
            }
        }
    }
    match r.home() {
        Some(home) if home.id != hint.id && r.plumbing.has_link(&home.id) => {
            Ok(vec![home.id, hint.id, peer])
        }
        _ => Err(DialError::Relay {
            relay: hint.id,
            reason: "cannot reach the relay, directly or through a relay of our own".into(),
        }),
    }
}

/// Dials `peer` at the virtual address of `route`, failing early if a relay refuses.
async fn dial_route(node: &Node, peer: PeerId, route: &[PeerId]) -> Result<Connection, DialError> {
    let r = &node.inner.relay;
    let relay = route[0];
    let addr = r.plumbing.addr_for(route).ok_or_else(|| DialError::Relay {
        relay,
        reason: "too many relayed routes on this node".into(),
    })?;
    let start = Instant::now();
    lock(&r.refusals).remove(&peer);
    let relays = &route[..route.len() - 1];
    let refused = async {
        loop {
            sleep(Duration::from_millis(25)).await;
            if let Some((reason, at)) = lock(&r.refusals).get(&peer).copied() {
                if at >= start {
                    return reason.to_string();
                }
            }
            for x in relays {
                if let Some((what, at)) = r.distrust_of(x) {
                    if at >= start {
                        return refused_reason(what, x);
                    }
                }
            }
        }
    };
    tokio::select! {
        res = node.inner.transport.connect(addr, Some(peer)) => match res {
            Ok((_, conn)) => {
                // The handshake may finish just as a replay is caught: refuse it then too.
                if let Some((what, x)) = relays
                    .iter()
                    .find_map(|x| r.distrust_of(x).map(|(what, _)| (what, *x)))
                {
                    conn.close(0u32.into(), b"relay misbehaved");
                    return Err(DialError::Relay {
                        relay: x,
                        reason: refused_reason(what, &x),
                    });
                }
                info!(peer = %peer.short(), route = ?route.iter().map(PeerId::short).collect::<Vec<_>>(), "relayed connection up");
                Ok(conn)
            }
            Err(DialError::Timeout(_)) => Err(DialError::Relay {
                relay,
                reason: "relayed handshake timed out: the peer or the relay is gone, or the relay \
                         altered what it carried"
                    .into(),
            }),
            Err(e) => Err(e),
        },
        reason = refused => {
            warn!(peer = %peer.short(), relay = %relay.short(), %reason, "relay refused");
            Err(DialError::Relay { relay, reason })
        }
    }
}

/// Asks the relay for both public addresses and dials the peer's directly.
async fn punch(node: &Node, relay: PeerId, peer: PeerId) {
    let r = &node.inner.relay;
    let m = &node.metrics().relay.holepunch;
    let (tx, rx) = oneshot::channel();
    lock(&r.punches).insert(peer, tx);
    let asked = r.plumbing.send(
        &relay,
        Frame {
            to: vec![peer],
            from: Vec::new(),
            body: Body::Punch { observed: None },
        },
    );
    let observed = match (asked, timeout(Duration::from_secs(3), rx).await) {
        (true, Ok(Ok(a))) => a,
        _ => {
            lock(&r.punches).remove(&peer);
            m.with_label_values(&["no_reply"]).inc();
            info!(peer = %peer.short(), relay = %relay.short(), asked, "no punch reply from the relay");
            return;
        }
    };
    let old = node.inner.transport.pooled(&peer);
    // Dial at once: our Initial opens our NAT towards the peer before the peer's punch datagrams
    // reach it (an early punch would make a Linux NAT pick another port for us); the peer's
    // punches then open its NAT, and QUIC's retransmitted Initial gets through.
    let started = Instant::now();
    match timeout(
        Duration::from_secs(4),
        node.inner.transport.dial(observed, Some(peer)),
    )
    .await
    {
        Ok(Ok(_)) => {
            lock(&r.punched).insert(peer);
            m.with_label_values(&["success"]).inc();
            info!(peer = %peer.short(), %observed, took_ms = started.elapsed().as_millis() as u64, "hole punched: direct path");
            if let Some(old) = old.filter(|c| is_virtual(&c.remote_address())) {
                // Requests in flight on the relayed connection finish; new ones use the direct one.
                sleep(Duration::from_secs(3)).await;
                old.close(0u32.into(), b"moved to a direct path");
            }
        }
        Ok(Err(e)) => {
            m.with_label_values(&["failed"]).inc();
            info!(peer = %peer.short(), %observed, error = %e, "hole punch failed; staying relayed");
        }
        Err(_) => {
            m.with_label_values(&["failed"]).inc();
            info!(peer = %peer.short(), %observed, "hole punch timed out; staying relayed");
        }
    }
}

/// Opens a link to `peer` (unless one is open) and returns our address as it sees it.
pub(crate) async fn open_link(
    node: &Node,
    peer: PeerId,
    addrs: &[SocketAddr],
    register: bool,
) -> Result<SocketAddr, DialError> {
    let r = &node.inner.relay;
    if !register {
        if let Some(o) = r.plumbing.link_observed(&peer) {
            return Ok(o);
        }
    }
    let fut = async {
        let t = &node.inner.transport;
        let conn = match t.pooled(&peer) {
            Some(c) if !is_virtual(&c.remote_address()) => c,
            _ => {
                // Addresses we reached the relay at ourselves come first: a hint carries the
                // addresses its owner sees, such as a gateway's LAN address, which another LAN
                // cannot reach (its WAN address is in our own table).
                let mut cands: Vec<SocketAddr> = node
                    .inner
                    .core
                    .read(|c, _| c.table().get(&peer).map(|h| h.record.addrs.clone()))
                    .unwrap_or_default();
                for a in addrs {
                    if !cands.contains(a) {
                        cands.push(*a);
                    }
                }
                let mut last = DialError::NoAddress(peer);
                let mut found = None;
                for a in cands.iter().filter(|a| !is_virtual(a)).take(4) {
                    match t.dial(*a, Some(peer)).await {
                        Ok((_, c)) => {
                            found = Some(c);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                found.ok_or(last)?
            }
        };
        let link_err = |reason: String| DialError::Relay {
            relay: peer,
            reason,
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| link_err(format!("cannot open a link: {e}")))?;
        let header = wire::encode_frame(&Request::Relay { register }, wire::DEFAULT_MAX_FRAME)
            .map_err(|e| link_err(e.to_string()))?;
        send.write_all(&header)
            .await
            .map_err(|e| link_err(format!("cannot open a link: {e}")))?;
        let first = read_frame(&mut recv)
            .await
            .map_err(|e| link_err(format!("link answer: {e}")))?;
        match first.body {
            Body::Accepted { observed } => Ok((conn, send, recv, observed)),
            Body::Refused { reason, .. } => {
                node.metrics()
                    .relay
                    .refused
                    .with_label_values(&["client", reason.as_str()])
                    .inc();
                Err(link_err(reason.to_string()))
            }
            other => Err(link_err(format!("unexpected link answer {other:?}"))),
        }
    };
    let (conn, send, recv, observed) =
        timeout(LINK_OPEN_TIMEOUT, fut)
            .await
            .map_err(|_| DialError::Relay {
                relay: peer,
                reason: "opening a link timed out".into(),
            })??;
    start_link(
        node,
        peer,
        conn.remote_address(),
        observed,
        false,
        send,
        recv,
    );
    Ok(observed)
}

/// Serves a link a peer opened to us.
pub(crate) async fn serve_link(
    node: Node,
    from: Remote,
    register: bool,
    mut send: SendStream,
    recv: RecvStream,
) {
    let r = &node.inner.relay;
    let verdict = if is_virtual(&from.addr) {
        Err(core::Refusal::BadRoute)
    } else {
        lock(&r.core).attach(from.id, from.addr, register, false)
    };
    let answer = match verdict {
        Ok(()) => Body::Accepted {
            observed: from.addr,
        },
        Err(reason) => {
            node.metrics()
                .relay
                .refused
                .with_label_values(&["relay", reason.as_str()])
                .inc();
            Body::Refused {
                target: node.id(),
                reason,
            }
        }
    };
    let accepted = matches!(answer, Body::Accepted { .. });
    let frame = Frame {
        to: Vec::new(),
        from: Vec::new(),
        body: answer,
    };
    if write_frame(&mut send, &frame).await.is_err() || !accepted {
        let _ = send.finish();
        return;
    }
    if register {
        info!(peer = %from.id.short(), observed = %from.addr, "peer attached: relaying for it");
    }
    // The link runs in its own tasks; this stream task ends here.
    start_link(&node, from.id, from.addr, from.addr, register, send, recv);
}

/// Runs a link: a writer draining its queue (plus keepalives) and a reader routing what arrives.
fn start_link(
    node: &Node,
    peer: PeerId,
    remote: SocketAddr,
    observed: SocketAddr,
    registered: bool,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let r = &node.inner.relay;
    let seq = r.link_seq.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Frame>(LINK_QUEUE);
    {
        // The link map and the core change together: a replaced link's cleanup cannot detach
        // its successor.
        let mut links = lock(&r.plumbing.links);
        links.insert(peer, LinkTx { tx, seq, observed });
        let _ = lock(&r.core).attach(peer, remote, registered, true);
    }
    let n = node.clone();
    let cancel = node.cancelled();
    node.inner.tasks.spawn(async move {
        let writer = async {
            let mut tick = tokio::time::interval(KEEPALIVE);
            tick.tick().await;
            loop {
                let frame = tokio::select! {
                    f = rx.recv() => match f { Some(f) => f, None => return },
                    _ = tick.tick() => Frame { to: Vec::new(), from: Vec::new(), body: Body::Keepalive },
                };
                if write_frame(&mut send, &frame).await.is_err() {
                    return;
                }
            }
        };
        let reader = async {
            loop {
                match timeout(LINK_IDLE, read_frame(&mut recv)).await {
                    Ok(Ok(frame)) => on_frame(&n, peer, frame),
                    Ok(Err(e)) => {
                        debug!(peer = %peer.short(), error = %e, "link closed");
                        return;
                    }
                    Err(_) => {
                        debug!(peer = %peer.short(), "link idle: closing");
                        return;
                    }
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = writer => {}
            _ = reader => {}
        }
        let _ = send.finish();
        let r = &n.inner.relay;
        let mine = {
            let mut links = lock(&r.plumbing.links);
            if links.get(&peer).is_some_and(|l| l.seq == seq) {
                links.remove(&peer);
                lock(&r.core).detach(&peer);
                true
            } else {
                false
            }
        };
        if mine {
            let was_home = {
                let mut home = lock(&r.home);
                if home.as_ref().is_some_and(|h| h.id == peer) {
                    *home = None;
                    true
                } else {
                    false
                }
            };
            if was_home {
                warn!(relay = %peer.short(), "lost our home relay; looking for another");
                n.inner.core.with(|c, _| c.membership_mut().set_relays(Vec::new()));
            }
        }
    });
}

/// Routes one frame that arrived on the link with `link`.
fn on_frame(node: &Node, link: PeerId, frame: Frame) {
    let r = &node.inner.relay;
    let routed = {
        let now = r.now();
        lock(&r.core).route(now, link, frame)
    };
    match routed {
        Routed::Drop => {}
        Routed::Local(frame) => deliver(node, link, frame),
        Routed::Send(out) => {
            for (i, (next, mut frame)) in out.into_iter().enumerate() {
                let m = &node.metrics().relay;
                if let Body::Refused { reason, .. } = &frame.body {
                    m.refused
                        .with_label_values(&["relay", reason.as_str()])
                        .inc();
                }
                let mut copies = 1;
                if let (0, Body::Packet(p)) = (i, &mut frame.body) {
                    m.relayed_packets.inc();
                    m.relayed_bytes.inc_by(p.len() as u64);
                    match r.fault {
                        Some(RelayFault::Tamper) => {
                            if let Some(b) = p.last_mut() {
                                *b ^= 0x5a;
                            }
                        }
                        Some(RelayFault::Replay) => copies = 2,
                        None => {}
                    }
                }
                for _ in 0..copies {
                    if !r.plumbing.send(&next, frame.clone()) && !r.plumbing.has_link(&next) {
                        // The next hop is another relay we have no link with yet: open one,
                        // carrying this frame; QUIC retransmits whatever is dropped meanwhile.
                        spawn_link_then_send(node, next, frame.clone());
                        break;
                    }
                }
            }
        }
        _ => {}
    }
}

fn spawn_link_then_send(node: &Node, next: PeerId, frame: Frame) {
    let r = &node.inner.relay;
    if !lock(&r.connecting).insert(next) {
        return;
    }
    let n = node.clone();
    node.inner.tasks.spawn(async move {
        let addrs = n.record_of(&next).map(|rec| rec.addrs).unwrap_or_default();
        let res = open_link(&n, next, &addrs, false).await;
        let r = &n.inner.relay;
        lock(&r.connecting).remove(&next);
        match res {
            Ok(_) => {
                r.plumbing.send(&next, frame);
            }
            Err(e) => {
                debug!(next = %next.short(), error = %e, "cannot open a link to the next relay")
            }
        }
    });
}

/// A frame for this node.
fn deliver(node: &Node, link: PeerId, frame: Frame) {
    let r = &node.inner.relay;
    match frame.body {
        Body::Packet(p) => {
            let mut route = Vec::with_capacity(frame.from.len() + 1);
            route.push(link);
            route.extend(frame.from);
            if r.plumbing.blocked(&route) {
                return;
            }
            let relays = &route[..route.len() - 1];
            let Some(addr) = r.plumbing.addr_for(&route) else {
                return;
            };
            if lock(&r.replays).replayed(addr, &p) {
                distrust(node, relays, "replayed relayed datagrams");
                return;
            }
            // A full queue drops the datagram, like a full socket buffer.
            let _ = r.plumbing.inbound.try_send((p, addr));
        }
        Body::Refused { target, reason } => {
            node.metrics()
                .relay
                .refused
                .with_label_values(&["client", reason.as_str()])
                .inc();
            lock(&r.refusals).insert(target, (reason, Instant::now()));
        }
        Body::Punch {
            observed: Some(addr),
        } => {
            let origin = frame.from.last().copied().unwrap_or(link);
            if !node.config().relay.punch {
                return;
            }
            lock(&r.punched).insert(origin);
            info!(peer = %origin.short(), %addr, "punching towards a peer");
            let plumbing = r.plumbing.clone();
            node.inner.tasks.spawn(async move {
                // The dialler sends first (see `punch`); our datagrams follow its Initial.
                for wait in [150u64, 150, 200, 300, 500, 800] {
                    sleep(Duration::from_millis(wait)).await;
                    plumbing.send_raw(addr, PUNCH);
                }
            });
        }
        Body::PunchReply { target, observed } => {
            if let Some(tx) = lock(&r.punches).remove(&target) {
                let _ = tx.send(observed);
            }
        }
        _ => {}
    }
}

fn refused_reason(what: &str, relay: &PeerId) -> String {
    format!(
        "{what}: detected and refused; relay {} is not used for {} s",
        relay.short(),
        DISTRUST_FOR.as_secs()
    )
}

/// `relays` carried a datagram twice: stop using them, drop what they carry, close the
/// connections through them, and find another home relay if ours is one.
fn distrust(node: &Node, relays: &[PeerId], what: &'static str) {
    let r = &node.inner.relay;
    let now = Instant::now();
    {
        let mut d = lock(&r.plumbing.distrusted);
        for x in relays {
            d.insert(*x, (what, now));
        }
    }
    node.metrics()
        .relay
        .refused
        .with_label_values(&["peer", "replay"])
        .inc();
    warn!(
        relays = ?relays.iter().map(PeerId::short).collect::<Vec<_>>(),
        what,
        for_secs = DISTRUST_FOR.as_secs(),
        "relay misbehaved: its connections are closed and it is not used"
    );
    for (peer, conn) in node.inner.transport.connections() {
        let through = r
            .plumbing
            .route_of(&conn.remote_address())
            .is_some_and(|route| route.iter().any(|x| relays.contains(x)));
        if through {
            info!(peer = %peer.short(), "closing a connection through a misbehaving relay");
            conn.close(0u32.into(), b"relay misbehaved");
        }
    }
    let home = r.home();
    if home.is_some_and(|h| relays.contains(&h.id)) {
        lock(&r.home).take();
        node.inner
            .core
            .with(|c, _| c.membership_mut().set_relays(Vec::new()));
    }
}

/// Why a relay frame could not be sent or read on a link.
#[derive(Debug, thiserror::Error)]
enum LinkFrameError {
    /// Too large, or not a relay frame of this protocol version.
    #[error(transparent)]
    Frame(#[from] wire::FrameError),
    /// The stream failed while writing.
    #[error("cannot write to the link: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream failed or ended while reading.
    #[error("cannot read from the link: {0}")]
    Read(#[from] quinn::ReadExactError),
}

async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), LinkFrameError> {
    let bytes = wire::encode_frame(frame, core::MAX_FRAME)?;
    send.write_all(&bytes).await?;
    Ok(())
}

async fn read_frame(recv: &mut RecvStream) -> Result<Frame, LinkFrameError> {
    let mut prefix = [0u8; wire::LEN_PREFIX];
    recv.read_exact(&mut prefix).await?;
    let len = wire::frame_len(prefix, core::MAX_FRAME)?;
    let mut payload = vec![0u8; len];
    recv.read_exact(&mut payload).await?;
    Ok(wire::decode_payload(&payload)?)
}

/// Starts the task that keeps a home relay while the node is private and refreshes gauges.
pub(crate) fn start(node: &Node) {
    if node.config().relay.reachability == Reachability::Public {
        node.inner
            .core
            .with(|c, _| c.membership_mut().set_public(true));
    }
    let n = node.clone();
    let cancel = node.cancelled();
    node.inner.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            maintain(&n).await;
        }
    });
}

async fn maintain(node: &Node) {
    let r = &node.inner.relay;
    {
        let now = r.now();
        let mut c = lock(&r.core);
        c.handle_timeout(now);
        node.metrics().relay.sessions.set(c.session_count() as i64);
    }
    node.metrics()
        .relay
        .links
        .set(lock(&r.plumbing.links).len() as i64);
    let mut paths: HashMap<&'static str, i64> = HashMap::new();
    for (peer, conn) in node.inner.transport.connections() {
        *paths.entry(r.path_of(&peer, &conn)).or_default() += 1;
    }
    for p in ["direct", "relayed", "punched"] {
        node.metrics()
            .relay
            .connections_by_path
            .with_label_values(&[p])
            .set(paths.get(p).copied().unwrap_or(0));
    }
    let public = node.inner.core.read(|c, now| c.local_record(now).public);
    let m = &node.metrics().relay.reachability;
    m.with_label_values(&["public"]).set(i64::from(public));
    m.with_label_values(&["private"]).set(i64::from(!public));
    let mode = node.config().relay.reachability;
    if mode == Reachability::Public || (public && mode == Reachability::Auto) {
        // Reachable now: stop announcing a relay (the link may stay until it idles).
        if lock(&r.home).take().is_some() {
            node.inner
                .core
                .with(|c, _| c.membership_mut().set_relays(Vec::new()));
        }
        return;
    }
    if r.home().is_some_and(|h| r.plumbing.has_link(&h.id)) {
        return;
    }
    // Candidates: live public hosts, our own site first (a LAN's gateway), then the nearest.
    let mut candidates: Vec<(bool, Duration, PeerId, Vec<SocketAddr>)> =
        node.inner.core.read(|c, _| {
            c.table()
                .iter()
                .filter(|h| h.is_alive() && h.record.public && h.id() != node.id())
                .filter(|h| r.distrust_of(&h.id()).is_none())
                .map(|h| {
                    (
                        h.record.site != node.site(),
                        h.rtt.unwrap_or(Duration::from_secs(1)),
                        h.id(),
                        h.record.addrs.clone(),
                    )
                })
                .collect()
        });
    candidates.sort();
    for (_, _, id, addrs) in candidates.into_iter().take(3) {
        match open_link(node, id, &addrs, true).await {
            Ok(observed) => {
                let hint = RelayHint {
                    id,
                    addrs: addrs.into_iter().take(4).collect(),
                };
                info!(relay = %id.short(), %observed, "private: reachable through a home relay");
                *lock(&r.home) = Some(hint.clone());
                node.inner
                    .core
                    .with(|c, _| c.membership_mut().set_relays(vec![hint]));
                crate::membership::announce(node);
                return;
            }
            Err(e) => debug!(relay = %id.short(), error = %e, "relay candidate refused"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_that_cannot_be_quic() {
        assert!(!not_quic(PUNCH), "our own punch is expected");
        assert!(not_quic(b""));
        assert!(not_quic(&[0x41; 20]), "too short for any packet");
        // Short header (0b01…) with the fixed bit set; long header (0b11…) of QUIC v1 or a draft.
        assert!(!not_quic(&[0x41; 30]));
        let long = |first: u8, version: [u8; 4]| {
            let mut d = vec![first];
            d.extend(version);
            d.resize(1200, 8);
            d
        };
        assert!(!not_quic(&long(0xc3, [0, 0, 0, 1])));
        assert!(!not_quic(&long(0xc3, [0xff, 0, 0, 0x1d])));
        // Unknown version, or the fixed bit clear: garbage, unless version negotiation.
        assert!(not_quic(&long(0xc3, [0x12, 0x34, 0x56, 0x78])));
        assert!(not_quic(&long(0x83, [0, 0, 0, 1])));
        assert!(not_quic(&[0x01; 30]));
        assert!(!not_quic(&long(0x83, [0, 0, 0, 0])));
    }
}
