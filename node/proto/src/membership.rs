//! Membership: the known-host table, LAN beacons, bootstrap, peer exchange and SWIM liveness,
//! composed into one sans-IO state machine that a thin async driver runs.
//!
//! ## How hosts enter the table
//! A host is **reached** when a Hello with it completed (we dialled it and it answered, or it
//! dialled us) or it sent us any request over an authenticated connection. Only reached hosts are
//! probed by SWIM, offered to the data layer (group members, search targets, relays) and counted
//! for `/ready`. Hosts are *found* by:
//! - **multicast**: a beacon from an unknown peer. With room in the table it takes a free place
//!   at once, **unverified** ([`Liveness::Unverified`]); at capacity it is dialled (at most one
//!   unknown beaconer per `exchange_min`), to contest a place under the diversity rule;
//! - **bootstrap**: configured addresses (resolved by the driver, re-supplied with
//!   [`Membership::set_bootstrap`]) not yet in the table are dialled, with backoff;
//! - **exchange**: each Hello answer carries a bounded, site-balanced sample (default 32) of the
//!   responder's reached hosts and of the unverified hosts it heard by beacon itself. With room,
//!   unknown ones take free places unverified; at capacity they are dialled as candidates (one per
//!   periodic exchange). The node also exchanges periodically with a random reached host (every
//!   1 s while that keeps bringing news, backing off to 30 s), which refreshes records and spreads
//!   far sites' hosts. Whenever a Hello (either way) shows a peer knowing more hosts than we do
//!   while we have room, the next exchange is brought forward to within 1 s, whatever the
//!   backoff: a LAN where a few pairs missed each other converges in seconds rather than waiting
//!   out the backoff;
//! - **inbound**: a peer that dials us and says Hello.
//!
//! Unverified hosts are checked by Hellos from a bucket of `verify_burst` (8) tokens refilled one
//! per `verify_interval` (250 ms): a newcomer reaches, and is held by, 8 hosts within a round
//! trip, and checks the rest at an even pace. An unverified host never evicts anyone, yields its
//! place to any reached newcomer, is never shared onward unless heard first-hand by beacon, and is
//! dropped after 3 failed Hellos (then not taken on anyone's word for 30 s). **Why:** when a LAN
//! of N nodes starts at one instant, dialling every host before admitting it costs ~N × 64 QUIC
//! handshakes in the first second; on 2 cores at N = 100 that took 13 s to converge. Taking hosts
//! on a reached peer's word (as SWIM-style memberships do) fills every table within a round trip
//! of the beacons and spreads the handshakes over the following seconds.
//!
//! **Invariant** (tested at N = 40, 100 and 150 in `membership::tests`, and in the netns lab):
//! a node on a LAN of N keeps `min(N − 1, capacity)` hosts, is held by at least 8 others, and the
//! who-knows-whom graph is strongly connected; a newcomer to a full LAN is held by 8 others within
//! 2 s. A node that can reach live peers is never left with zero known hosts: with room every
//! beacon and sample entry is taken, and at capacity an unknown beaconer is dialled.
//!
//! A failed dial to a peer heard by beacon or named in a sample is retried up to 3 times (after
//! about 0.25, 0.5 and 1 s) rather than waiting for its next, possibly suppressed, beacon.
//!
//! Hosts leave when SWIM declares them dead ([`RemoveReason::Dead`]) or the diversity rule evicts
//! them ([`RemoveReason::Evicted`]). When the table empties, discovery restarts: beacons go back to
//! the fast start and bootstrap addresses are redialled at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};

use crate::beacon::{self, Beacon};
use crate::id::PeerId;
use crate::peers::{self, Insert, Liveness, Source, Table};
use crate::swim::{self, Swim};
use crate::time::Time;
use crate::wire::{MemberUpdate, PeerRecord};

/// Settings of the membership layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Network id: beacons and Hellos of other networks are refused. Default `"butter"`.
    pub network: String,
    /// Whether to send LAN beacons (off where multicast cannot work, e.g. most Kubernetes CNIs;
    /// received beacons are still handled). Default on.
    pub multicast: bool,
    /// The known-host table.
    pub peers: peers::Config,
    /// The beacon schedule.
    pub beacon: beacon::Config,
    /// Liveness.
    pub swim: swim::Config,
    /// Most records exchanged in one Hello, either way. Default 32 (half a default table, never
    /// the whole): on a LAN started at once, a node that missed some beacons fills its table from
    /// about half as many Hellos as with 16 (in the core's harness, 64 nodes starting over 1.5 s
    /// all hold all 2.3 s after the last start; 4 s with 16, measured before the verification
    /// pick took half its turns at random).
    pub sample_size: u16,
    /// Most dials of exchange candidates in flight. Default 8.
    pub max_dials: usize,
    /// A dial the driver has not reported after this long counts as failed. Default 5 s.
    pub dial_timeout: Duration,
    /// Most exchange candidates waiting to be dialled. Default 64.
    pub max_candidates: usize,
    /// First retry delay for an unreachable bootstrap address (doubles per failure). Default 1 s.
    pub bootstrap_backoff_min: Duration,
    /// Longest retry delay, and how often a reachable bootstrap address not in the table is
    /// redialled. Default 30 s.
    pub bootstrap_backoff_max: Duration,
    /// Shortest peer-exchange interval (while exchanges bring news). Default 1 s.
    pub exchange_min: Duration,
    /// Longest peer-exchange interval. Default 30 s.
    pub exchange_max: Duration,
    /// How long a host a full table evicted or refused is not dialled again while the table stays
    /// full (its beacons and sample entries are ignored meanwhile; a table with room takes it at
    /// once). Default 60 s: at capacity, without it every exchange would redial the same refused
    /// hosts.
    pub reject_memory: Duration,
    /// Pace of Hellos to unverified hosts (taken on a reached host's word while the table had
    /// room): one every `verify_interval` (jittered ±50 %), within `max_dials`. Default 250 ms:
    /// a table of 64 is checked in well under a minute, and a LAN of 150 nodes started at one
    /// instant costs ~600 handshakes per second in all instead of ~10 000 at once.
    pub verify_interval: Duration,
    /// Hellos to unverified hosts a node may send at once before the `verify_interval` pace
    /// applies. Default 8: a newcomer is held (verified) by at least that many hosts within
    /// one round trip, which the who-knows-whom graph needs on a LAN past capacity.
    pub verify_burst: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network: "butter".into(),
            multicast: true,
            peers: peers::Config::default(),
            beacon: beacon::Config::default(),
            swim: swim::Config::default(),
            sample_size: 32,
            max_dials: 8,
            dial_timeout: Duration::from_secs(5),
            max_candidates: 64,
            bootstrap_backoff_min: Duration::from_secs(1),
            bootstrap_backoff_max: Duration::from_secs(30),
            exchange_min: Duration::from_secs(1),
            exchange_max: Duration::from_secs(30),
            reject_memory: Duration::from_secs(60),
            verify_interval: Duration::from_millis(250),
            verify_burst: 8,
        }
    }
}

/// A membership setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The table settings.
    #[error("peers: {0}")]
    Peers(#[from] peers::ConfigError),
    /// The beacon settings.
    #[error("beacon: {0}")]
    Beacon(#[from] beacon::ConfigError),
    /// The liveness settings.
    #[error("swim: {0}")]
    Swim(#[from] swim::ConfigError),
    /// The network id is empty.
    #[error("network id must not be empty")]
    EmptyNetwork,
    /// A count or duration that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A minimum above its maximum.
    #[error("{0} minimum exceeds its maximum")]
    Range(&'static str),
}

impl Config {
    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.peers.validate()?;
        self.beacon.validate()?;
        self.swim.validate()?;
        if self.network.is_empty() {
            return Err(ConfigError::EmptyNetwork);
        }
        let zero = [
            ("sample_size", self.sample_size == 0),
            ("max_dials", self.max_dials == 0),
            ("dial_timeout", self.dial_timeout.is_zero()),
            (
                "bootstrap_backoff_min",
                self.bootstrap_backoff_min.is_zero(),
            ),
            ("exchange_min", self.exchange_min.is_zero()),
            ("verify_interval", self.verify_interval.is_zero()),
            ("verify_burst", self.verify_burst == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(ConfigError::Zero(name));
        }
        if self.bootstrap_backoff_min > self.bootstrap_backoff_max {
            return Err(ConfigError::Range("bootstrap_backoff"));
        }
        if self.exchange_min > self.exchange_max {
            return Err(ConfigError::Range("exchange"));
        }
        Ok(())
    }
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send this datagram to the multicast group on every multicast interface.
    SendBeacon {
        /// The encoded beacon.
        datagram: Vec<u8>,
    },
    /// Connect (or reuse the connection) and run a Hello: send `Request::Hello{record:
    /// local_record(now), network, sample: sample_size}`. On `Response::Hello` call
    /// [`Membership::handle_hello`]; on any failure (connect, TLS id mismatch with `expected_id`,
    /// timeout, error reply) call [`Membership::handle_dial_failed`].
    Dial {
        /// Addresses to try, best first.
        addrs: Vec<SocketAddr>,
        /// The peer id the certificate must have, if known.
        expected_id: Option<PeerId>,
        /// Why we dial (pass it back).
        source: Source,
    },
    /// Send `Request::Ping{seq}` to `to`. On `Response::Ack` call
    /// [`Membership::handle_probe_result`] with [`ProbeOutcome::Ack`]; if it cannot even be sent,
    /// with [`ProbeOutcome::Failed`]. Time-outs are the core's business: no need to report them.
    Ping {
        /// The probed peer.
        to: PeerId,
        /// Where it listens.
        addrs: Vec<SocketAddr>,
        /// Probe sequence number.
        seq: u64,
    },
    /// Send `Request::PingReq{seq, target, addrs: target_addrs}` to `via`; report its `Ack`/`Nack`
    /// with [`Membership::handle_probe_result`] (`from` = `via`).
    PingReq {
        /// The helper.
        via: PeerId,
        /// Where the helper listens.
        via_addrs: Vec<SocketAddr>,
        /// Whom to probe.
        target: PeerId,
        /// Where the target listens.
        target_addrs: Vec<SocketAddr>,
        /// Probe sequence number.
        seq: u64,
    },
    /// Send `Request::Gossip{updates}` to `to` (fire and forget; the answer is `Response::Ok`).
    Gossip {
        /// The recipient.
        to: PeerId,
        /// Where it listens.
        addrs: Vec<SocketAddr>,
        /// The updates.
        updates: Vec<MemberUpdate>,
    },
}

/// Why a host left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveReason {
    /// SWIM declared it dead.
    Dead,
    /// The diversity rule evicted it for a newcomer.
    Evicted {
        /// Whether the random factor chose it.
        random: bool,
    },
    /// It was unverified and our Hello to it failed.
    Unreachable,
    /// It was unverified and a host we reached took its place.
    Displaced,
}

impl RemoveReason {
    /// A stable label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            RemoveReason::Dead => "dead",
            RemoveReason::Evicted { random: false } => "evicted",
            RemoveReason::Evicted { random: true } => "evicted_random",
            RemoveReason::Unreachable => "unreachable",
            RemoveReason::Displaced => "displaced",
        }
    }
}

/// Something that happened, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A host entered the table.
    PeerAdded {
        /// The host.
        id: PeerId,
        /// How it was discovered.
        source: Source,
    },
    /// A host was taken on a reached host's word, unverified ([`Table::vouch`]); a
    /// [`Event::PeerAdded`] follows once a Hello with it succeeds.
    PeerVouched {
        /// The host.
        id: PeerId,
    },
    /// A host left the table.
    PeerRemoved {
        /// The host.
        id: PeerId,
        /// Why.
        reason: RemoveReason,
    },
    /// The table was full and a newcomer lost on diversity.
    PeerRejected {
        /// The newcomer.
        id: PeerId,
        /// How it was discovered.
        source: Source,
    },
    /// SWIM gossip declared dead a node that is not in the table (it may share a data group
    /// with this node, which then replaces it at once).
    PeerHeardDead {
        /// The node.
        id: PeerId,
    },
    /// A host became suspect.
    PeerSuspected {
        /// The host.
        id: PeerId,
        /// Whether our own probe found it (rather than gossip).
        local: bool,
    },
    /// A suspicion was cleared.
    PeerAlive {
        /// The host.
        id: PeerId,
    },
    /// A probe was sent (`indirect`: a ping-req through a helper).
    ProbeSent {
        /// Whether it is a ping-req.
        indirect: bool,
    },
    /// A direct probe went unanswered (the indirect phase starts).
    ProbeFailed {
        /// The host.
        id: PeerId,
    },
    /// We were suspected and refuted it.
    Refuted {
        /// Our new incarnation.
        incarnation: u64,
    },
    /// A beacon was sent.
    BeaconSent,
    /// A received datagram was ignored.
    BeaconIgnored {
        /// Why.
        reason: beacon::Ignored,
    },
    /// A dial failed (or was never reported within `dial_timeout`).
    DialFailed {
        /// Why we dialled.
        source: Source,
    },
    /// An inbound Hello was refused.
    HelloRefused {
        /// Why.
        reason: HelloRefused,
    },
    /// The table emptied: discovery restarted.
    Rediscovery,
}

/// What to do with a probe's answer, for [`Membership::handle_probe_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeOutcome {
    /// `Response::Ack`.
    Ack,
    /// `Response::Nack` (a helper could not reach the target).
    Nack,
    /// The request could not be sent or got an error reply.
    Failed,
}

/// Why an inbound Hello was refused (answer with `Response::Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloRefused {
    /// Another network (`ErrorCode::WrongNetwork`).
    #[error("peer belongs to another network")]
    WrongNetwork,
    /// It claims our own id.
    #[error("peer claims our own id")]
    OwnId,
}

/// The answer to an inbound Hello: send `Response::Hello{record, observed, sample}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// Our record.
    pub record: PeerRecord,
    /// A bounded sample of our hosts (never the requester).
    pub sample: Vec<PeerRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DialKey {
    Id(PeerId),
    Addr(SocketAddr),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    deadline: Time,
    source: Source,
}

#[derive(Clone, Copy, Debug)]
struct Bootstrap {
    next_try: Time,
    backoff: Duration,
}

/// Remembers `id` until `until` in a memory of at most `cap` entries: when full, the one whose
/// memory runs out first is forgotten.
fn remember_until(memory: &mut BTreeMap<PeerId, Time>, id: PeerId, until: Time, cap: usize) {
    if memory.len() >= cap && !memory.contains_key(&id) {
        let first = memory.iter().min_by_key(|(_, t)| **t).map(|(id, _)| *id);
        if let Some(first) = first {
            memory.remove(&first);
        }
    }
    memory.insert(id, until);
}

/// Failed Hellos after which an unverified host is dropped.
const VERIFY_ATTEMPTS: u32 = 3;
/// How long an unverified host whose Hello failed is not taken on anyone's word again.
const UNREACHABLE_MEMORY: Duration = Duration::from_secs(30);
/// Most neighbours (heard by beacon or named in a sample) waiting for a redial.
const MAX_RETRIES: usize = 256;
/// Redials of one neighbour after a failed dial.
const RETRY_ATTEMPTS: u8 = 3;
/// First redial delay (doubled for each further attempt, jittered ±50 %).
const RETRY_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
struct Retry {
    addrs: Vec<SocketAddr>,
    source: Source,
    attempts: u8,
    at: Option<Time>,
}

/// The membership state machine of one node.
///
/// Construct with [`Membership::new`]. Then, from one task:
/// 1. Feed inputs as they arrive, each with the current time:
///    [`handle_beacon`](Self::handle_beacon) (a multicast datagram),
///    [`handle_hello`](Self::handle_hello) / [`handle_dial_failed`](Self::handle_dial_failed)
///    (outcome of an [`Action::Dial`]), [`handle_inbound_hello`](Self::handle_inbound_hello) (a peer
///    sent `Request::Hello`; its return value is the answer),
///    [`handle_probe_result`](Self::handle_probe_result) (outcome of [`Action::Ping`] /
///    [`Action::PingReq`]), [`handle_gossip`](Self::handle_gossip) (a peer sent `Request::Gossip`),
///    [`handle_contact`](Self::handle_contact) (any other request from a known peer), and
///    [`set_bootstrap`](Self::set_bootstrap) whenever bootstrap names are (re-)resolved.
/// 2. When [`poll_timeout`](Self::poll_timeout) is reached, call
///    [`handle_timeout`](Self::handle_timeout).
/// 3. After any of the above, drain [`poll_action`](Self::poll_action) (and perform each action)
///    and [`poll_event`](Self::poll_event) (metrics, logs) until they return `None`, then sleep
///    until the new [`poll_timeout`](Self::poll_timeout).
///
/// The driver answers `Request::Ping` with `Ack` itself, and `Request::PingReq` by pinging the
/// target with a timeout of [`ping_req_timeout`](Self::ping_req_timeout) and answering `Ack` or
/// `Nack`. Queries: [`table`](Self::table) (and its `most_diverse`, `sample`, counts),
/// [`local_record`](Self::local_record).
#[derive(Debug)]
pub struct Membership {
    config: Config,
    local: PeerRecord,
    created: Time,
    rng: SmallRng,
    table: Table,
    beacon: beacon::Schedule,
    swim: Swim,
    bootstrap: BTreeMap<SocketAddr, Bootstrap>,
    own_addrs: BTreeSet<SocketAddr>,
    pending: BTreeMap<DialKey, Pending>,
    candidates: BTreeMap<PeerId, PeerRecord>,
    /// Neighbours heard by beacon or named in a sample whose dial failed: redialled soon, a few
    /// times, instead of waiting for their next (suppressed) beacon or another exchange.
    retries: BTreeMap<PeerId, Retry>,
    /// Hosts a full table evicted or refused, until when (see `recently_rejected`).
    rejected: BTreeMap<PeerId, Time>,
    /// Unverified hosts whose Hello failed, until when they are not taken on anyone's word again.
    unreachable: BTreeMap<PeerId, Time>,
    next_verify: Time,
    verify_tokens: f64,
    verify_refilled: Time,
    /// When a full table may next dial an unknown beaconer.
    next_beacon_dial: Time,
    next_exchange: Time,
    exchange_interval: Duration,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    had_hosts: bool,
}

impl Membership {
    /// A node described by `local` (its `uptime_secs` is the uptime at `now`; `known_hosts` is
    /// filled in), starting at `now`, with randomness from `rng` (seed it from the node's seed).
    pub fn new(
        config: Config,
        local: PeerRecord,
        now: Time,
        mut rng: SmallRng,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let table = Table::new(config.peers.clone(), local.id)?;
        let beacon = beacon::Schedule::new(config.beacon.clone(), now, &mut rng)?;
        let swim = Swim::new(config.swim.clone(), local.id, now, &mut rng)?;
        let exchange_interval = config.exchange_min;
        Ok(Membership {
            created: now,
            table,
            beacon,
            swim,
            bootstrap: BTreeMap::new(),
            own_addrs: BTreeSet::new(),
            pending: BTreeMap::new(),
            candidates: BTreeMap::new(),
            retries: BTreeMap::new(),
            rejected: BTreeMap::new(),
            unreachable: BTreeMap::new(),
            next_verify: now,
            verify_tokens: f64::from(config.verify_burst),
            verify_refilled: now,
            next_beacon_dial: now,
            next_exchange: now + exchange_interval,
            exchange_interval,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            had_hosts: false,
            local,
            config,
            rng,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.local.id
    }

    /// The known-host table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The liveness state machine (read-only).
    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    /// How long a helper should wait for the target when answering a `PingReq`.
    pub fn ping_req_timeout(&self) -> Duration {
        self.config.swim.probe_timeout
    }

    /// This node's record as of `now` (send it in Hellos).
    pub fn local_record(&self, now: Time) -> PeerRecord {
        let mut r = self.local.clone();
        r.uptime_secs = r
            .uptime_secs
            .saturating_add(now.saturating_since(self.created).as_secs());
        r.known_hosts = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
        r
    }

    /// Sets the addresses this node listens on (announced from now on; beacons restart quickly).
    pub fn set_listen_addrs(&mut self, now: Time, addrs: Vec<SocketAddr>) {
        if addrs != self.local.addrs {
            self.local.addrs = addrs;
            self.beacon.restart(now, &mut self.rng);
        }
    }

    /// Sets the free storage this node offers.
    pub fn set_storage_free(&mut self, bytes: u64) {
        self.local.storage_free = bytes;
    }

    /// Sets whether this node is reachable from outside its LAN.
    pub fn set_public(&mut self, public: bool) {
        self.local.public = public;
    }

    /// Sets the relays this node can be reached through (announced in its record from now on).
    pub fn set_relays(&mut self, relays: Vec<crate::relay::RelayHint>) {
        self.local.relays = relays;
    }

    /// Replaces the bootstrap addresses (already resolved; call again whenever names re-resolve).
    /// New addresses are dialled at the next [`handle_timeout`](Self::handle_timeout).
    pub fn set_bootstrap(&mut self, now: Time, addrs: impl IntoIterator<Item = SocketAddr>) {
        let addrs: BTreeSet<SocketAddr> = addrs.into_iter().collect();
        self.bootstrap.retain(|a, _| addrs.contains(a));
        for a in addrs {
            self.bootstrap.entry(a).or_insert(Bootstrap {
                next_try: now,
                backoff: self.config.bootstrap_backoff_min,
            });
        }
    }

    /// A datagram arrived on the beacon socket from `from`.
    pub fn handle_beacon(&mut self, now: Time, datagram: &[u8], from: SocketAddr) {
        match beacon::accept(datagram, &self.config.network, &self.local.id) {
            Err(reason) => self.events.push_back(Event::BeaconIgnored { reason }),
            Ok(b) if self.table.contains(&b.id) || self.recently_rejected(&b.id, now) => {
                self.beacon.heard_known()
            }
            Ok(b) => {
                let addrs = b.dial_addrs(from);
                if !self.table.is_full() {
                    self.beacon.heard_new(now, &mut self.rng);
                    // Heard on our own LAN: with room it takes a free place at once, unverified,
                    // and is checked at the `verify_interval` pace (no handshake storm when a
                    // whole LAN starts together).
                    if self.unreachable.get(&b.id).is_none_or(|t| *t <= now) {
                        let record = PeerRecord {
                            id: b.id,
                            addrs,
                            site: b.site,
                            uptime_secs: 0,
                            storage_free: 0,
                            known_hosts: 0,
                            public: false,
                            relays: Vec::new(),
                        };
                        if self.table.vouch(now, record, Source::Multicast) {
                            self.events.push_back(Event::PeerVouched { id: b.id });
                        }
                    }
                } else if self.next_beacon_dial <= now {
                    // A full table's picture is not changing for want of this host: no reason
                    // to speed the LAN's beacons up (on a LAN past capacity every node always
                    // hears beaconers it does not hold).
                    self.beacon.heard_known();
                    // At capacity a newcomer can only trade places with an incumbent: dial at
                    // most one unknown beaconer per `exchange_min`, or every full table on a
                    // large LAN dials every late beacon at once.
                    self.next_beacon_dial = now
                        + self
                            .config
                            .exchange_min
                            .mul_f64(0.5 + self.rng.random::<f64>());
                    self.dial(now, addrs, Some(b.id), Source::Multicast);
                } else {
                    self.beacon.heard_known();
                }
            }
        }
        self.after(now);
    }

    /// An [`Action::Dial`] succeeded: `addr` answered with `record` and `sample`.
    pub fn handle_hello(
        &mut self,
        now: Time,
        addr: SocketAddr,
        record: PeerRecord,
        sample: Vec<PeerRecord>,
        source: Source,
    ) {
        self.pending.remove(&DialKey::Addr(addr));
        self.pending.remove(&DialKey::Id(record.id));
        if let Some(b) = self.bootstrap.get_mut(&addr) {
            // Reachable: redial only rarely, and only if it is not in the table by then.
            b.backoff = self.config.bootstrap_backoff_min;
            b.next_try = now + self.config.bootstrap_backoff_max;
        }
        if record.id == self.local.id {
            self.own_addrs.insert(addr);
            self.after(now);
            return;
        }
        let mut record = record;
        put_first(&mut record.addrs, addr);
        let id = record.id;
        // A partner is a host we already reached: a Hello that verifies a host we held on
        // another's word is not a periodic exchange and, at capacity, brings no candidate.
        let partner = self.table.get(&id).is_some_and(|h| h.is_alive());
        let behind = self.behind(&record, now);
        self.admit(now, record, source);
        // A peer that knows more hosts than we do has news for us even if this sample happened to
        // hold none of it.
        let mut news = behind;
        // With room, every host a sample offers is worth a dial. At capacity a newcomer can only
        // trade places with an incumbent: one candidate per periodic exchange (or bootstrap
        // answer), none from the answer of a candidate itself, and no "news" that would keep the
        // exchange pace at its fastest. Otherwise a full table trades hosts forever, each trade
        // a Hello whose answer offers the next (seen in the simulator at 250+ nodes: ~19 dials
        // per node per second).
        let limit = if !self.table.is_full() {
            usize::MAX
        } else if (partner && source == Source::Exchange) || source == Source::Bootstrap {
            1
        } else {
            0
        };
        let mut taken = 0;
        for r in sample
            .into_iter()
            .take(usize::from(self.config.sample_size))
        {
            if r.id == self.local.id
                || r.id == id
                || self.table.contains(&r.id)
                || self.swim.is_recently_dead(&r.id)
                || self.recently_rejected(&r.id, now)
                || self.unreachable.get(&r.id).is_some_and(|t| *t > now)
                || r.addrs.is_empty()
                || !self.table.would_admit(now, &r)
            {
                continue;
            }
            // With room, a host a reached peer vouches for takes a free place at once, unverified:
            // no handshake now (a LAN of N nodes started together would otherwise dial ~N·64
            // handshakes in its first second); it is checked later at the `verify_interval` pace.
            if limit == usize::MAX && !self.table.is_full() {
                let rid = r.id;
                if self.table.vouch(now, r, Source::Exchange) {
                    news = true;
                    self.candidates.remove(&rid);
                    self.events.push_back(Event::PeerVouched { id: rid });
                }
                continue;
            }
            if taken >= limit {
                break;
            }
            taken += 1;
            news |= limit == usize::MAX;
            if self.candidates.len() < self.config.max_candidates {
                self.candidates.insert(r.id, r);
            }
        }
        if source == Source::Exchange {
            self.exchange_interval = if news {
                self.config.exchange_min
            } else {
                (self.exchange_interval * 2).min(self.config.exchange_max)
            };
        }
        self.after(now);
    }

    /// An [`Action::Dial`] failed (pass back its `addrs`, `expected_id` and `source`).
    pub fn handle_dial_failed(
        &mut self,
        now: Time,
        addrs: &[SocketAddr],
        expected_id: Option<PeerId>,
        source: Source,
    ) {
        for a in addrs {
            self.pending.remove(&DialKey::Addr(*a));
            if let Some(b) = self.bootstrap.get_mut(a) {
                b.next_try = now + b.backoff;
                b.backoff = (b.backoff * 2).min(self.config.bootstrap_backoff_max);
            }
        }
        if let Some(id) = expected_id {
            self.pending.remove(&DialKey::Id(id));
            let failures = self.table.record_failure(&id);
            if failures >= VERIFY_ATTEMPTS
                && self
                    .table
                    .get(&id)
                    .is_some_and(|h| h.liveness == Liveness::Unverified)
            {
                // Taken on another's word and we cannot reach it (a lost handshake alone does not
                // count: it is retried at the next verification turns): drop it, and do not take
                // it on anyone's word again for a while.
                self.table.remove(&id);
                self.remember_unreachable(id, now);
                self.events.push_back(Event::PeerRemoved {
                    id,
                    reason: RemoveReason::Unreachable,
                });
            }
            if matches!(source, Source::Multicast | Source::Exchange) && !self.table.contains(&id) {
                let r = self.retries.entry(id).or_insert(Retry {
                    addrs: addrs.to_vec(),
                    source,
                    attempts: 0,
                    at: None,
                });
                if r.attempts < RETRY_ATTEMPTS {
                    let delay = RETRY_DELAY * (1u32 << r.attempts);
                    r.attempts += 1;
                    r.at = Some(now + delay.mul_f64(0.5 + self.rng.random::<f64>()));
                } else {
                    self.retries.remove(&id);
                }
                if self.retries.len() > MAX_RETRIES {
                    self.retries.pop_first();
                }
            }
        }
        self.events.push_back(Event::DialFailed { source });
        self.after(now);
    }

    /// A peer sent `Request::Hello{record, network, sample}` over a connection from `observed`.
    /// Returns the answer (or why to refuse it, as `Response::Error`).
    pub fn handle_inbound_hello(
        &mut self,
        now: Time,
        observed: SocketAddr,
        record: PeerRecord,
        network: &str,
        sample: u16,
    ) -> Result<HelloReply, HelloRefused> {
        let refused = if network != self.config.network {
            Some(HelloRefused::WrongNetwork)
        } else if record.id == self.local.id {
            Some(HelloRefused::OwnId)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.events.push_back(Event::HelloRefused { reason });
            self.after(now);
            return Err(reason);
        }
        let requester = record.id;
        self.behind(&record, now);
        let mut record = record;
        for a in &mut record.addrs {
            if a.ip().is_unspecified() {
                a.set_ip(observed.ip());
            }
        }
        // The connection's source address is the requester's endpoint: known to route back.
        put_first(&mut record.addrs, observed);
        record.addrs.dedup();
        self.admit(now, record, Source::Inbound);
        let n = usize::from(sample.min(self.config.sample_size));
        let sample = self
            .table
            .sample(n + 1, &mut self.rng)
            .into_iter()
            .filter(|h| h.id() != requester)
            .take(n)
            .map(|h| PeerRecord {
                uptime_secs: h.uptime_at(now).as_secs(),
                ..h.record.clone()
            })
            .collect();
        let reply = HelloReply {
            record: self.local_record(now),
            sample,
        };
        self.after(now);
        Ok(reply)
    }

    /// The answer to an [`Action::Ping`] or [`Action::PingReq`] sent to `from`.
    pub fn handle_probe_result(
        &mut self,
        now: Time,
        from: PeerId,
        seq: u64,
        outcome: ProbeOutcome,
    ) {
        match outcome {
            ProbeOutcome::Ack => {
                self.swim.handle_ack(now, seq);
                self.table.mark_seen(&from, now);
            }
            ProbeOutcome::Nack => self.table.mark_seen(&from, now),
            ProbeOutcome::Failed => self.swim.handle_send_failed(now, seq, &from, &mut self.rng),
        }
        self.after(now);
    }

    /// A peer sent `Request::Gossip{updates}`.
    pub fn handle_gossip(&mut self, now: Time, from: PeerId, updates: &[MemberUpdate]) {
        self.verified_by_contact(&from);
        self.table.mark_seen(&from, now);
        self.swim.handle_gossip(now, from, updates, &mut self.rng);
        self.after(now);
    }

    /// A known peer sent us some other request: proof it is alive.
    pub fn handle_contact(&mut self, now: Time, from: PeerId) {
        self.verified_by_contact(&from);
        self.table.mark_seen(&from, now);
        self.swim.contact(from);
        self.after(now);
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t = self.swim.poll_timeout();
        if self.config.multicast {
            t = t.min(self.beacon.poll_timeout());
        }
        if let Some(p) = self.pending.values().map(|p| p.deadline).min() {
            t = t.min(p);
        }
        for (addr, b) in &self.bootstrap {
            // The cheap test first: this runs after every input.
            if b.next_try < t && !self.bootstrap_satisfied(addr) {
                t = b.next_try;
            }
        }
        if !self.table.is_empty() {
            t = t.min(self.next_exchange);
        }
        if let Some(r) = self.retries.values().filter_map(|r| r.at).min() {
            t = t.min(r);
        }
        if self.table.unverified_count() > 0 {
            t = t.min(self.next_verify);
        }
        Some(t)
    }

    /// Advances every timer to `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.config.multicast && self.beacon.poll_timeout() <= now {
            let lan = self.lan_neighbours();
            if self.beacon.handle_timeout(now, lan, &mut self.rng) {
                let b = Beacon {
                    id: self.local.id,
                    network: self.config.network.clone(),
                    addrs: self.local.addrs.clone(),
                    site: self.local.site.clone(),
                };
                // Too many addresses for one datagram: announce what fits.
                let mut b = b;
                let datagram = loop {
                    match b.encode() {
                        Ok(d) => break Some(d),
                        Err(_) if b.addrs.len() > 1 => {
                            b.addrs.pop();
                        }
                        Err(_) => break None,
                    }
                };
                if let Some(datagram) = datagram {
                    self.actions.push_back(Action::SendBeacon { datagram });
                    self.events.push_back(Event::BeaconSent);
                }
            }
        }
        self.swim.handle_timeout(now, &mut self.rng);
        self.rejected.retain(|_, until| *until > now);
        self.unreachable.retain(|_, until| *until > now);
        self.verify(now);
        // Dials the driver never reported.
        let expired: Vec<(DialKey, Pending)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, p)| (*k, *p))
            .collect();
        for (key, p) in expired {
            self.pending.remove(&key);
            self.events
                .push_back(Event::DialFailed { source: p.source });
        }
        // Beacon-heard neighbours whose dial failed.
        let redial: Vec<(PeerId, Vec<SocketAddr>, Source)> = self
            .retries
            .iter_mut()
            .filter(|(_, r)| r.at.is_some_and(|at| at <= now))
            .map(|(id, r)| {
                r.at = None;
                (*id, r.addrs.clone(), r.source)
            })
            .collect();
        for (id, addrs, source) in redial {
            if self.table.contains(&id) {
                self.retries.remove(&id);
            } else {
                self.dial(now, addrs, Some(id), source);
            }
        }
        // Bootstrap addresses not in the table.
        let due: Vec<SocketAddr> = self
            .bootstrap
            .iter()
            .filter(|(a, b)| b.next_try <= now && !self.bootstrap_satisfied(a))
            .map(|(a, _)| *a)
            .collect();
        for a in due {
            if let Some(b) = self.bootstrap.get_mut(&a) {
                // Until the outcome is known, retry no sooner than the dial timeout.
                b.next_try = now + self.config.dial_timeout.max(b.backoff);
            }
            self.dial(now, vec![a], None, Source::Bootstrap);
        }
        // Periodic peer exchange with one random host.
        if self.next_exchange <= now {
            let jitter = self
                .exchange_interval
                .mul_f64(0.5 + self.rng.random::<f64>());
            self.next_exchange = now + jitter;
            let alive: Vec<(PeerId, Vec<SocketAddr>)> = self
                .table
                .iter()
                .filter(|h| h.is_alive())
                .map(|h| (h.id(), h.record.addrs.clone()))
                .collect();
            if let Some((id, addrs)) = alive.choose(&mut self.rng).cloned()
                && !self.pending.contains_key(&DialKey::Id(id))
            {
                self.pending.insert(
                    DialKey::Id(id),
                    Pending {
                        deadline: now + self.config.dial_timeout,
                        source: Source::Exchange,
                    },
                );
                self.actions.push_back(Action::Dial {
                    addrs,
                    expected_id: Some(id),
                    source: Source::Exchange,
                });
            }
        }
        self.after(now);
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next thing that happened, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Hosts on this node's LAN: found by multicast or sharing its site.
    fn lan_neighbours(&self) -> usize {
        self.table
            .iter()
            .filter(|h| h.source == Source::Multicast || h.record.site == self.local.site)
            .count()
    }

    /// Whether `peer` knows more hosts than we do while we have room (so we miss some): then the
    /// next exchange is brought forward to within `exchange_min` and its pace reset, whatever the
    /// backoff had grown to. Converges a LAN where a few pairs missed each other's beacons.
    fn behind(&mut self, peer: &PeerRecord, now: Time) -> bool {
        let ours = self.table.len();
        let behind = usize::try_from(peer.known_hosts).unwrap_or(usize::MAX) > ours
            && ours < self.table.capacity();
        if behind {
            self.exchange_soon(now);
        }
        behind
    }

    /// Resets the exchange pace to its fastest and brings the next exchange forward to within
    /// `exchange_min`.
    fn exchange_soon(&mut self, now: Time) {
        self.exchange_interval = self.config.exchange_min;
        let soon = now
            + self
                .config
                .exchange_min
                .mul_f64(0.5 + 0.5 * self.rng.random::<f64>());
        self.next_exchange = self.next_exchange.min(soon);
    }

    fn recently_rejected(&self, id: &PeerId, now: Time) -> bool {
        // A host evicted or refused by a full table is remembered so that the table does not
        // trade hosts back and forth. Both happen only at capacity, so the memory holds only
        // there: a table with room takes any live host again (a node one host short of its
        // share must not stay short because every host it lacks was once evicted or refused).
        self.table.is_full() && self.rejected.get(id).is_some_and(|until| *until > now)
    }

    fn bootstrap_satisfied(&self, addr: &SocketAddr) -> bool {
        self.own_addrs.contains(addr)
            || self.pending.contains_key(&DialKey::Addr(*addr))
            || self.table.find_by_addr(*addr).is_some()
    }

    /// Asks the driver to dial, unless the peer is known or already being dialled.
    fn dial(
        &mut self,
        now: Time,
        addrs: Vec<SocketAddr>,
        expected_id: Option<PeerId>,
        source: Source,
    ) {
        if addrs.is_empty() {
            return;
        }
        let key = match expected_id {
            Some(id)
                if self.table.contains(&id)
                    || id == self.local.id
                    || self.recently_rejected(&id, now) =>
            {
                return;
            }
            Some(id) => DialKey::Id(id),
            None => DialKey::Addr(addrs[0]),
        };
        if self.pending.contains_key(&key) {
            return;
        }
        let pending = Pending {
            deadline: now + self.config.dial_timeout,
            source,
        };
        self.pending.insert(key, pending);
        if expected_id.is_none() {
            for a in &addrs {
                self.pending.insert(DialKey::Addr(*a), pending);
            }
        }
        self.actions.push_back(Action::Dial {
            addrs,
            expected_id,
            source,
        });
    }

    /// Asks the driver for a Hello with `id`, which the table may already hold (unverified).
    fn dial_unchecked(&mut self, now: Time, addrs: Vec<SocketAddr>, id: PeerId, source: Source) {
        if addrs.is_empty() || self.pending.contains_key(&DialKey::Id(id)) {
            return;
        }
        self.pending.insert(
            DialKey::Id(id),
            Pending {
                deadline: now + self.config.dial_timeout,
                source,
            },
        );
        self.actions.push_back(Action::Dial {
            addrs,
            expected_id: Some(id),
            source,
        });
    }

    /// Offers a host we just completed a Hello with to the table, and keeps SWIM in step.
    fn admit(&mut self, now: Time, record: PeerRecord, source: Source) {
        let id = record.id;
        self.candidates.remove(&id);
        self.retries.remove(&id);
        match self.table.insert(now, record, source, &mut self.rng) {
            Insert::Added => {
                self.swim.add(id, &mut self.rng);
                self.events.push_back(Event::PeerAdded { id, source });
            }
            Insert::Verified => {
                self.swim.add(id, &mut self.rng);
                let source = self.table.get(&id).map_or(source, |h| h.source);
                self.events.push_back(Event::PeerAdded { id, source });
            }
            Insert::Replaced { evicted, .. } if evicted.liveness == Liveness::Unverified => {
                self.events.push_back(Event::PeerRemoved {
                    id: evicted.id(),
                    reason: RemoveReason::Displaced,
                });
                self.swim.add(id, &mut self.rng);
                self.events.push_back(Event::PeerAdded { id, source });
            }
            Insert::Replaced { evicted, random } => {
                // Evicted for diversity: not redialled from the next sample that lists it, or
                // a full table keeps trading hosts back and forth (one Hello per trade).
                self.remember_rejected(evicted.id(), now);
                self.swim.remove(&evicted.id());
                self.events.push_back(Event::PeerRemoved {
                    id: evicted.id(),
                    reason: RemoveReason::Evicted { random },
                });
                self.swim.add(id, &mut self.rng);
                self.events.push_back(Event::PeerAdded { id, source });
            }
            Insert::Updated => self.swim.contact(id),
            Insert::Rejected(peers::Rejected::Crowded) => {
                self.remember_rejected(id, now);
                self.events.push_back(Event::PeerRejected { id, source });
            }
            Insert::Rejected(_) => {}
        }
    }

    /// A host we hold unverified reached us on its own (a request over an authenticated
    /// connection): it is alive.
    fn verified_by_contact(&mut self, id: &PeerId) {
        if self
            .table
            .get(id)
            .is_some_and(|h| h.liveness == Liveness::Unverified)
        {
            self.table.set_liveness(id, Liveness::Alive);
            self.swim.add(*id, &mut self.rng);
            let source = self.table.get(id).map_or(Source::Exchange, |h| h.source);
            self.events.push_back(Event::PeerAdded { id: *id, source });
        }
    }

    /// Hellos to unverified hosts, from a bucket of `verify_burst` tokens refilled one per
    /// `verify_interval` (within `max_dials` of exchange dials in flight): a newcomer reaches its
    /// first few hosts at once — and so is held by them — and checks the rest at an even pace.
    /// Half the turns take the newest host (one whose beacon we just heard has likely just
    /// started and missed ours, and our Hello is how it learns of us: oldest first, a node started
    /// last on a LAN of 64 waited for every earlier node's backlog, 6 s in the harness), half a
    /// random one (newest only, 150 nodes started at once took 3.2 s: every newcomer's Hellos
    /// went to the same few hosts, whose full tables refused them).
    fn verify(&mut self, now: Time) {
        if self.next_verify > now {
            return;
        }
        let interval = self.config.verify_interval;
        let burst = f64::from(self.config.verify_burst);
        let elapsed = now.saturating_since(self.verify_refilled);
        self.verify_tokens =
            (self.verify_tokens + elapsed.as_secs_f64() / interval.as_secs_f64()).min(burst);
        self.verify_refilled = now;
        let mut in_flight = self
            .pending
            .values()
            .filter(|p| p.source == Source::Exchange)
            .count();
        while self.verify_tokens >= 1.0 && in_flight < self.config.max_dials {
            let pending = &self.pending;
            let next = self
                .table
                .iter()
                .filter(|h| {
                    h.liveness == Liveness::Unverified
                        && !pending.contains_key(&DialKey::Id(h.id()))
                })
                .map(|h| (h.added, h.id(), h.record.addrs.clone()))
                .collect::<Vec<_>>();
            // Half the turns go to the host heard most recently (likely just started, and our
            // Hello is how it learns of us), half to a random one (so that a LAN started at once
            // does not send every newcomer's Hellos to the same few hosts, whose full tables would
            // then refuse them).
            let next = if self.rng.random_bool(0.5) {
                next.iter()
                    .max_by_key(|(added, id, _)| (*added, *id))
                    .cloned()
            } else {
                next.choose(&mut self.rng).cloned()
            }
            .map(|(_, id, addrs)| (id, addrs));
            let Some((id, addrs)) = next else {
                break;
            };
            self.dial_unchecked(now, addrs, id, Source::Exchange);
            self.verify_tokens -= 1.0;
            in_flight += 1;
        }
        // The next turn: when the next token is in (or one interval away if tokens are left but
        // dials are not); never in the past, or the driver would spin.
        let wait = if self.verify_tokens >= 1.0 {
            1.0
        } else {
            // At least a tenth of an interval: a wait rounded down to nothing would spin.
            (1.0 - self.verify_tokens).max(0.1)
        };
        self.next_verify = now + interval.mul_f64(wait * (0.5 + self.rng.random::<f64>()));
    }

    /// Remembers an unverified host whose Hello failed, bounded.
    fn remember_unreachable(&mut self, id: PeerId, now: Time) {
        let cap = 4 * self.table.capacity();
        remember_until(&mut self.unreachable, id, now + UNREACHABLE_MEMORY, cap);
    }

    /// Remembers that the diversity rule does not want `id` for [`Config::reject_memory`].
    fn remember_rejected(&mut self, id: PeerId, now: Time) {
        let cap = 4 * self.table.capacity();
        remember_until(&mut self.rejected, id, now + self.config.reject_memory, cap);
    }

    /// Common tail of every input: SWIM's outputs, candidate dials, the empty-table check.
    fn after(&mut self, now: Time) {
        while let Some(c) = self.swim.poll_command() {
            let addrs_of = |t: &Table, id: &PeerId| t.get(id).map(|h| h.record.addrs.clone());
            match c {
                swim::Command::Ping { to, seq } => {
                    if let Some(addrs) = addrs_of(&self.table, &to) {
                        self.actions.push_back(Action::Ping { to, addrs, seq });
                        self.events.push_back(Event::ProbeSent { indirect: false });
                    }
                }
                swim::Command::PingReq { via, target, seq } => {
                    if let (Some(via_addrs), Some(target_addrs)) =
                        (addrs_of(&self.table, &via), addrs_of(&self.table, &target))
                    {
                        self.actions.push_back(Action::PingReq {
                            via,
                            via_addrs,
                            target,
                            target_addrs,
                            seq,
                        });
                        self.events.push_back(Event::ProbeSent { indirect: true });
                    }
                }
                swim::Command::Gossip { to, updates } => {
                    if let Some(addrs) = addrs_of(&self.table, &to) {
                        self.actions
                            .push_back(Action::Gossip { to, addrs, updates });
                    }
                }
            }
        }
        while let Some(e) = self.swim.poll_event() {
            match e {
                swim::Event::Acked { id, rtt } => match rtt {
                    Some(rtt) => self.table.record_rtt(&id, rtt, now),
                    None => self.table.mark_seen(&id, now),
                },
                swim::Event::DirectFailed { id } => {
                    self.table.record_failure(&id);
                    self.events.push_back(Event::ProbeFailed { id });
                }
                swim::Event::Suspected { id, local, .. } => {
                    self.table.set_liveness(&id, Liveness::Suspect);
                    self.events.push_back(Event::PeerSuspected { id, local });
                }
                swim::Event::Cleared { id } => {
                    self.table.set_liveness(&id, Liveness::Alive);
                    self.events.push_back(Event::PeerAlive { id });
                }
                swim::Event::Dead { id, .. } => {
                    if self.table.remove(&id).is_some() {
                        self.events.push_back(Event::PeerRemoved {
                            id,
                            reason: RemoveReason::Dead,
                        });
                        // A place fell free: look for a host to fill it at the fastest exchange
                        // pace, not at whatever the backoff of a quiet table had grown to.
                        self.exchange_soon(now);
                    }
                }
                swim::Event::HeardDead { id } => {
                    if self
                        .table
                        .get(&id)
                        .is_some_and(|h| h.liveness == Liveness::Unverified)
                    {
                        self.table.remove(&id);
                        self.events.push_back(Event::PeerRemoved {
                            id,
                            reason: RemoveReason::Dead,
                        });
                    }
                    self.events.push_back(Event::PeerHeardDead { id })
                }
                swim::Event::Refuted { incarnation } => {
                    self.events.push_back(Event::Refuted { incarnation })
                }
            }
        }
        // Dial exchange candidates while there is room.
        while self
            .pending
            .values()
            .filter(|p| p.source == Source::Exchange)
            .count()
            < self.config.max_dials
        {
            let Some((id, record)) = self.candidates.pop_first() else {
                break;
            };
            // At capacity, dial only those the diversity rule would keep.
            if self.table.contains(&id)
                || self.swim.is_recently_dead(&id)
                || self.recently_rejected(&id, now)
                || !self.table.would_admit(now, &record)
            {
                continue;
            }
            self.dial(now, record.addrs, Some(id), Source::Exchange);
        }
        // Alone again: start discovery over.
        if self.table.is_empty() {
            if self.had_hosts {
                self.had_hosts = false;
                self.beacon.restart(now, &mut self.rng);
                for b in self.bootstrap.values_mut() {
                    b.next_try = now;
                    b.backoff = self.config.bootstrap_backoff_min;
                }
                self.exchange_interval = self.config.exchange_min;
                self.events.push_back(Event::Rediscovery);
            }
        } else {
            self.had_hosts = true;
        }
    }
}

/// Moves (or inserts) `addr` to the front of `addrs`.
/// Puts `addr` first in `addrs`. An unspecified address (what a driver passes when the peer came
/// over a relayed path, which has no address worth announcing) changes nothing.
fn put_first(addrs: &mut Vec<SocketAddr>, addr: SocketAddr) {
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return;
    }
    addrs.retain(|a| *a != addr);
    addrs.insert(0, addr);
}

#[cfg(test)]
mod tests;
