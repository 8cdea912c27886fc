//! A deterministic network of [`NodeCore`]s: a driver for tests (and, next, the simulator).
//!
//! It performs every [`Transmit`] the way the binary's QUIC driver does, over a modelled network:
//! - **sites** are multicast domains: a beacon reaches every live node of the sender's site;
//! - **latency**: LAN within a site, WAN between sites, each drawn with jitter;
//! - **loss**: each message (each leg of a request and its answer) is lost with a chance; a lost
//!   Hello or an unreachable address fails the dial after `connect_timeout`, as a QUIC handshake
//!   that never completes does;
//! - **partitions**: between `from` and `until`, sites on one side cannot reach the others;
//! - **identity**: a slot keeps its address across restarts, a restarted node has a new id, and a
//!   request for the old id at that address fails (as the TLS id check does);
//! - a data message to a node that is down or cut off is reported undelivered
//!   ([`NodeCore::handle_send_failed`]) after `connect_timeout`; a lost one is simply lost.
//!
//! Probes are answered as the binary answers them: a `Ping` with an `Ack` from the target, a
//! `PingReq` by the helper probing the target within its `ping_req_timeout` and answering `Ack`
//! or `Nack`. Every request a core receives (Hello, probe, ping-req, gossip, data) counts as
//! contact from its sender, as on a real node; a beacon does not.
//!
//! Everything random comes from one seeded RNG and events at one instant run in the order they
//! were scheduled, so a seed gives one history, summarised by [`Net::log_hash`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::composed::{Event, NodeCore, Transmit};
use super::data;
use crate::id::PeerId;
use crate::item::Store;
use crate::membership::{Action, ProbeOutcome};
use crate::peers::Source;
use crate::time::Time;
use crate::wire::{MemberUpdate, PeerRecord};

/// Network conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way latency between nodes of one site (LAN). Default 0.5 ms.
    pub lan_latency: Duration,
    /// One-way latency between sites. Default 20 ms.
    pub wan_latency: Duration,
    /// Each latency is drawn uniformly within ± this fraction. Default 0.5.
    pub latency_jitter: f64,
    /// Chance that a message is lost. Default 0.
    pub loss: f64,
    /// How long a dial to an unreachable address, or an undeliverable message, takes to fail.
    /// Default 1 s.
    pub connect_timeout: Duration,
    /// Slots whose nodes replay: every data message such a node sends is delivered a second
    /// time, 5 to 60 s later, as a peer that records its own messages and sends them again
    /// would (stale views, trims, heartbeats, proofs). A replay is dropped once the replaying
    /// node is gone: the transport authenticates the sender, so only a live peer can replay.
    pub replayers: Vec<usize>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            lan_latency: Duration::from_micros(500),
            wan_latency: Duration::from_millis(20),
            latency_jitter: 0.5,
            loss: 0.0,
            connect_timeout: Duration::from_secs(1),
            replayers: Vec::new(),
        }
    }
}

/// A partition: sites in `side` cannot talk to the others between `from` and `until`.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Sites on one side.
    pub side: Vec<usize>,
    /// Start (from the simulation's start).
    pub from: Duration,
    /// End.
    pub until: Duration,
}

/// What a [`Net`] reports as it runs: every transmit a core emitted and every event.
pub trait Observer {
    /// `from` emitted `t` at `now` (before the network decides its fate).
    fn transmit(&mut self, now: Time, from: PeerId, t: &Transmit) {
        let _ = (now, from, t);
    }
    /// `node` reported `e` at `now`.
    fn event(&mut self, now: Time, node: PeerId, e: Event) {
        let _ = (now, node, e);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ignore;
impl Observer for Ignore {}

/// A slot: one address on one site that a node occupies (restarts reuse it).
#[derive(Debug)]
struct Slot<S: Store> {
    site: u16,
    addr: SocketAddr,
    /// Bumped when the node dies, so events meant for it are dropped.
    inc: u32,
    node: Option<Box<NodeCore<S>>>,
    wake: Option<Time>,
}

#[derive(Debug)]
enum Ev {
    Wake,
    Beacon {
        datagram: Arc<[u8]>,
        from: SocketAddr,
    },
    HelloReq {
        dialer: (usize, u32),
        addr: SocketAddr,
        source: Source,
    },
    HelloResp {
        addr: SocketAddr,
        record: PeerRecord,
        sample: Vec<PeerRecord>,
        source: Source,
    },
    DialFailed {
        addrs: Vec<SocketAddr>,
        expected: Option<PeerId>,
        source: Source,
    },
    /// A probe arrives; `answer` is where the `Ack` goes (the prober, or nowhere for the
    /// helper's own probe on behalf of another).
    Ping {
        from: PeerId,
        answer: Option<(usize, u32, u64)>,
    },
    ProbeResult {
        from: PeerId,
        seq: u64,
        outcome: ProbeOutcome,
    },
    PingReq {
        origin: (usize, u32),
        from: PeerId,
        seq: u64,
        target: PeerId,
    },
    Gossip {
        from: PeerId,
        updates: Vec<MemberUpdate>,
    },
    Data {
        from: PeerId,
        msg: data::Message,
    },
    SendFailed(data::Transmit),
    /// A data message sent again by the replaying node in slot `origin.0` (incarnation
    /// `origin.1`).
    Replay {
        origin: (usize, u32),
        from: PeerId,
        msg: data::Message,
    },
}

impl Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Wake => 1,
            Ev::Beacon { .. } => 2,
            Ev::HelloReq { .. } => 3,
            Ev::HelloResp { .. } => 4,
            Ev::DialFailed { .. } => 5,
            Ev::Ping { .. } => 6,
            Ev::ProbeResult { .. } => 7,
            Ev::PingReq { .. } => 8,
            Ev::Gossip { .. } => 9,
            Ev::Data { .. } => 10,
            Ev::SendFailed(_) => 11,
            Ev::Replay { .. } => 12,
        }
    }
}

struct Scheduled {
    at: Time,
    seq: u64,
    slot: u32,
    inc: u32,
    ev: Box<Ev>,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The deterministic network. See the [module docs](self).
pub struct Net<S: Store> {
    cfg: NetConfig,
    partitions: Vec<Partition>,
    rng: SmallRng,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    slots: Vec<Slot<S>>,
    by_site: Vec<Vec<usize>>,
    by_id: BTreeMap<PeerId, usize>,
    log: u64,
    events: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<S: Store> Net<S> {
    /// An empty network with conditions `cfg`, randomness from `seed`.
    pub fn new(cfg: NetConfig, partitions: Vec<Partition>, seed: u64) -> Self {
        Net {
            cfg,
            partitions,
            rng: SmallRng::seed_from_u64(mix(seed ^ 0x006e_6574)),
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            by_site: Vec::new(),
            by_id: BTreeMap::new(),
            log: mix(seed),
            events: 0,
        }
    }

    /// The current time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// A hash of every event processed so far (time, kind, slot).
    pub fn log_hash(&self) -> u64 {
        mix(self.log ^ self.events)
    }

    /// Adds an empty slot on `site`; returns its index. Its address is
    /// [`addr`](Self::addr)`(index)`.
    pub fn add_slot(&mut self, site: u16) -> usize {
        let n = self.slots.len();
        let k = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let [_, a, b, c] = k.to_be_bytes();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 7000);
        self.slots.push(Slot {
            site,
            addr,
            inc: 0,
            node: None,
            wake: None,
        });
        let s = usize::from(site);
        if self.by_site.len() <= s {
            self.by_site.resize_with(s + 1, Vec::new);
        }
        self.by_site[s].push(n);
        n
    }

    /// Slots, live or not.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The address of slot `s`.
    pub fn addr(&self, s: usize) -> SocketAddr {
        self.slots[s].addr
    }

    /// The site of slot `s`.
    pub fn site(&self, s: usize) -> u16 {
        self.slots[s].site
    }

    /// The node in slot `s`, if one is up.
    pub fn node(&self, s: usize) -> Option<&NodeCore<S>> {
        self.slots[s].node.as_deref()
    }

    /// Every node that is up, by slot.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &NodeCore<S>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_deref().map(|n| (i, n)))
    }

    /// The slot of the node with id `id`, if it is up.
    pub fn slot_of(&self, id: &PeerId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Starts `core` in the empty slot `s` (build it with `addr(s)` as its address).
    pub fn start(&mut self, s: usize, core: NodeCore<S>, obs: &mut dyn Observer) {
        assert!(self.slots[s].node.is_none(), "slot {s} is occupied");
        self.by_id.insert(core.id(), s);
        self.slots[s].node = Some(Box::new(core));
        self.slots[s].wake = None;
        self.settle(s, obs);
    }

    /// Stops the node in slot `s` at once (a crash: nothing is sent); returns it.
    pub fn kill(&mut self, s: usize) -> Option<Box<NodeCore<S>>> {
        let slot = &mut self.slots[s];
        let node = slot.node.take()?;
        slot.inc += 1;
        slot.wake = None;
        self.by_id.remove(&node.id());
        Some(node)
    }

    /// Runs `f` on the node in slot `s` (an application call) and performs what it produced.
    pub fn with_node<R>(
        &mut self,
        s: usize,
        obs: &mut dyn Observer,
        f: impl FnOnce(&mut NodeCore<S>, Time) -> R,
    ) -> Option<R> {
        let now = self.now;
        let r = f(self.slots[s].node.as_deref_mut()?, now);
        self.settle(s, obs);
        Some(r)
    }

    /// When the next event is due.
    pub fn next_at(&self) -> Option<Time> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Processes every event due at or before `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Time, obs: &mut dyn Observer) {
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > until {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            self.now = s.at;
            self.step(s, obs);
        }
        self.now = self.now.max(until);
    }

    fn push(&mut self, at: Time, slot: usize, ev: Ev) {
        self.seq += 1;
        let inc = self.slots[slot].inc;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            slot: slot as u32,
            inc,
            ev: Box::new(ev),
        }));
    }

    fn step(&mut self, s: Scheduled, obs: &mut dyn Observer) {
        let slot = s.slot as usize;
        if self.slots[slot].inc != s.inc || self.slots[slot].node.is_none() {
            return;
        }
        let now = self.now;
        if matches!(*s.ev, Ev::Wake) && self.slots[slot].wake != Some(now) {
            return;
        }
        self.events += 1;
        self.log = mix(self.log ^ now.0.wrapping_mul(0x1000_0000_01b3) ^ (s.ev.code() << 40))
            ^ u64::from(s.slot);
        let Some(node) = self.slots[slot].node.as_deref_mut() else {
            return;
        };
        let me = node.id();
        match *s.ev {
            Ev::Wake => {
                node.handle_timeout(now);
                self.slots[slot].wake = None;
            }
            Ev::Beacon { datagram, from } => node.handle_beacon(now, &datagram, from),
            Ev::HelloReq {
                dialer,
                addr,
                source,
            } => {
                let (ds, dinc) = dialer;
                let Some(d) = self.slots[ds]
                    .node
                    .as_deref()
                    .filter(|_| self.slots[ds].inc == dinc)
                else {
                    return;
                };
                let record = d.local_record(now);
                let network = d.membership().config().network.clone();
                let sample = d.membership().config().sample_size;
                let observed = self.slots[ds].addr;
                let Some(node) = self.slots[slot].node.as_deref_mut() else {
                    return;
                };
                let reply = node.handle_inbound_hello(now, observed, record, &network, sample);
                match (reply, self.path(slot, ds)) {
                    (Ok(r), Some(lat)) => self.push(
                        now + lat,
                        ds,
                        Ev::HelloResp {
                            addr,
                            record: r.record,
                            sample: r.sample,
                            source,
                        },
                    ),
                    (refused, _) => {
                        let wait = if refused.is_err() {
                            self.latency(slot, ds)
                        } else {
                            self.cfg.connect_timeout
                        };
                        self.push(
                            now + wait,
                            ds,
                            Ev::DialFailed {
                                addrs: vec![addr],
                                expected: Some(me),
                                source,
                            },
                        );
                    }
                }
            }
            Ev::HelloResp {
                addr,
                record,
                sample,
                source,
            } => node.handle_hello(now, addr, record, sample, source),
            Ev::DialFailed {
                addrs,
                expected,
                source,
            } => node.handle_dial_failed(now, &addrs, expected, source),
            Ev::Ping { from, answer } => {
                node.handle_ping(now, from);
                if let Some((to, inc, seq)) = answer {
                    if self.slots[to].inc == inc {
                        if let Some(lat) = self.path(slot, to) {
                            self.push(
                                now + lat,
                                to,
                                Ev::ProbeResult {
                                    from: me,
                                    seq,
                                    outcome: ProbeOutcome::Ack,
                                },
                            );
                        }
                    }
                }
            }
            Ev::ProbeResult { from, seq, outcome } => {
                node.handle_probe_result(now, from, seq, outcome)
            }
            Ev::PingReq {
                origin,
                from,
                seq,
                target,
            } => {
                node.handle_ping(now, from);
                let timeout = node.ping_req_timeout();
                // The helper probes the target; the answer is known when its ack arrives, or
                // Nack at the helper's timeout.
                let leg = self
                    .slot_of(&target)
                    .and_then(|t| Some((t, self.path(slot, t)?, self.path(t, slot)?)));
                let (os, oinc) = origin;
                let (after, outcome) = match leg {
                    Some((t, there, back)) if there + back <= timeout => {
                        self.push(
                            now + there,
                            t,
                            Ev::Ping {
                                from: me,
                                answer: None,
                            },
                        );
                        (there + back, ProbeOutcome::Ack)
                    }
                    _ => (timeout, ProbeOutcome::Nack),
                };
                if self.slots[os].inc == oinc {
                    if let Some(lat) = self.path(slot, os) {
                        self.push(
                            now + after + lat,
                            os,
                            Ev::ProbeResult {
                                from: me,
                                seq,
                                outcome,
                            },
                        );
                    }
                }
            }
            Ev::Gossip { from, updates } => node.handle_gossip(now, from, &updates),
            Ev::Data { from, msg } => node.handle_message(now, from, msg),
            Ev::SendFailed(t) => node.handle_send_failed(&t),
            Ev::Replay { origin, from, msg } => {
                let (os, oinc) = origin;
                if self.slots[os].inc != oinc || self.slots[os].node.is_none() {
                    return;
                }
                if let Some(node) = self.slots[slot].node.as_deref_mut() {
                    node.handle_message(now, from, msg);
                }
            }
        }
        self.settle(slot, obs);
    }

    /// Drains what node `s` produced (transmits performed, events reported) and re-arms its
    /// timer.
    fn settle(&mut self, s: usize, obs: &mut dyn Observer) {
        let now = self.now;
        loop {
            let Some(node) = self.slots[s].node.as_deref_mut() else {
                return;
            };
            let id = node.id();
            let Some(t) = node.poll_transmit() else {
                break;
            };
            obs.transmit(now, id, &t);
            self.perform(s, id, t);
        }
        let Some(node) = self.slots[s].node.as_deref_mut() else {
            return;
        };
        let id = node.id();
        while let Some(e) = node.poll_event() {
            obs.event(now, id, e);
        }
        let wake = node.poll_timeout().map(|t| t.max(now));
        if wake != self.slots[s].wake {
            self.slots[s].wake = wake;
            if let Some(t) = wake {
                self.push(t, s, Ev::Wake);
            }
        }
    }

    /// The slot of a live node at `addrs` whose id is `expected` (when given).
    fn target(&self, addrs: &[SocketAddr], expected: Option<PeerId>) -> Option<usize> {
        addrs.iter().find_map(|a| {
            let s = self.slot_at(*a)?;
            let n = self.slots[s].node.as_deref()?;
            expected.is_none_or(|e| e == n.id()).then_some(s)
        })
    }

    /// The slot of a live node at `addrs` (with id `expected`, when given) and the latency of a
    /// message from `s` to it, or `None` when there is none or the message does not arrive.
    fn reach(
        &mut self,
        s: usize,
        addrs: &[SocketAddr],
        expected: Option<PeerId>,
    ) -> Option<(usize, Duration)> {
        let t = self.target(addrs, expected)?;
        Some((t, self.path(s, t)?))
    }

    fn slot_at(&self, a: SocketAddr) -> Option<usize> {
        let IpAddr::V4(v4) = a.ip() else {
            return None;
        };
        let [ten, x, y, z] = v4.octets();
        if ten != 10 || a.port() != 7000 {
            return None;
        }
        let k = u32::from_be_bytes([0, x, y, z]) as usize;
        (1..=self.slots.len()).contains(&k).then(|| k - 1)
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        let now = self.now.as_duration();
        let (sa, sb) = (
            usize::from(self.slots[a].site),
            usize::from(self.slots[b].site),
        );
        self.partitions.iter().any(|p| {
            now >= p.from && now < p.until && (p.side.contains(&sa) != p.side.contains(&sb))
        })
    }

    fn latency(&mut self, a: usize, b: usize) -> Duration {
        let base = if self.slots[a].site == self.slots[b].site {
            self.cfg.lan_latency
        } else {
            self.cfg.wan_latency
        };
        let j = self.cfg.latency_jitter;
        if j > 0.0 {
            base.mul_f64(1.0 + self.rng.random_range(-j..j))
        } else {
            base
        }
    }

    /// The one-way latency of a message from `a` to `b`, or `None` when it does not arrive
    /// (partitioned, or lost).
    fn path(&mut self, a: usize, b: usize) -> Option<Duration> {
        if self.partitioned(a, b) {
            return None;
        }
        if self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss) {
            return None;
        }
        Some(self.latency(a, b))
    }

    fn perform(&mut self, s: usize, me: PeerId, t: Transmit) {
        let now = self.now;
        let inc = self.slots[s].inc;
        match t {
            Transmit::Membership(Action::SendBeacon { datagram }) => {
                let from = self.slots[s].addr;
                let datagram: Arc<[u8]> = datagram.into();
                let site = usize::from(self.slots[s].site);
                let peers = self.by_site[site].clone();
                for to in peers {
                    if to == s || self.slots[to].node.is_none() {
                        continue;
                    }
                    if let Some(lat) = self.path(s, to) {
                        let datagram = datagram.clone();
                        self.push(now + lat, to, Ev::Beacon { datagram, from });
                    }
                }
            }
            Transmit::Membership(Action::Dial {
                addrs,
                expected_id,
                source,
            }) => match self.reach(s, &addrs, expected_id) {
                Some((t, lat)) => {
                    let addr = self.slots[t].addr;
                    self.push(
                        now + lat,
                        t,
                        Ev::HelloReq {
                            dialer: (s, inc),
                            addr,
                            source,
                        },
                    )
                }
                None => self.push(
                    now + self.cfg.connect_timeout,
                    s,
                    Ev::DialFailed {
                        addrs,
                        expected: expected_id,
                        source,
                    },
                ),
            },
            Transmit::Membership(Action::Ping { to, addrs, seq }) => {
                if let Some((t, lat)) = self.reach(s, &addrs, Some(to)) {
                    self.push(
                        now + lat,
                        t,
                        Ev::Ping {
                            from: me,
                            answer: Some((s, inc, seq)),
                        },
                    );
                }
            }
            Transmit::Membership(Action::PingReq {
                via,
                via_addrs,
                target,
                seq,
                ..
            }) => {
                if let Some((v, lat)) = self.reach(s, &via_addrs, Some(via)) {
                    self.push(
                        now + lat,
                        v,
                        Ev::PingReq {
                            origin: (s, inc),
                            from: me,
                            seq,
                            target,
                        },
                    );
                }
            }
            Transmit::Membership(Action::Gossip { to, addrs, updates }) => {
                if let Some((t, lat)) = self.reach(s, &addrs, Some(to)) {
                    self.push(now + lat, t, Ev::Gossip { from: me, updates });
                }
            }
            Transmit::Data(t) => {
                let dest = self.slot_of(&t.to);
                match dest {
                    Some(d) if !self.partitioned(s, d) => {
                        let lost = self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss);
                        if !lost {
                            let lat = self.latency(s, d);
                            if self.cfg.replayers.contains(&s) {
                                // The delay comes from a hash, not the network's RNG, so runs
                                // without a replayer draw exactly as before.
                                let z = mix(self.seq ^ now.0.rotate_left(17));
                                let delay = Duration::from_millis(5_000 + z % 55_000);
                                let origin = (s, self.slots[s].inc);
                                self.push(
                                    now + lat + delay,
                                    d,
                                    Ev::Replay {
                                        origin,
                                        from: me,
                                        msg: t.msg.clone(),
                                    },
                                );
                            }
                            self.push(
                                now + lat,
                                d,
                                Ev::Data {
                                    from: me,
                                    msg: t.msg,
                                },
                            );
                        }
                    }
                    _ => self.push(now + self.cfg.connect_timeout, s, Ev::SendFailed(t)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
