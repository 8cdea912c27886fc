//! The simulated world: nodes running the real `butter-proto` state machines, a network with
//! sites, latency, loss and partitions, a membership model, churn, and an event log hash.
//!
//! Everything random comes from one seeded RNG (plus per-node RNGs seeded from it), and every
//! container iterates in a fixed order, so one seed gives one history ([`Report::log_hash`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use butter_proto::item::{ItemId, MemoryStore, Store};
use butter_proto::node::data::{self, DataCore};
use butter_proto::pcg::{self, HostView};
use butter_proto::rbfs::{self, QueryId};
use butter_proto::{PeerId, Time};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::churn::Churn;

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
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            lan_latency: Duration::from_micros(500),
            wan_latency: Duration::from_millis(20),
            latency_jitter: 0.5,
            loss: 0.0,
        }
    }
}

pub use butter_proto::node::net::Partition;

/// Everything that defines one simulation run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed: same seed, same run.
    pub seed: u64,
    /// Nodes alive at any time (dead nodes are replaced).
    pub nodes: usize,
    /// Sites (LAN segments); node `i` starts on site `i % sites`.
    pub sites: usize,
    /// Known hosts per node (the membership model's table bound).
    pub known: usize,
    /// How often a node refreshes its known hosts by an exchange with one of them.
    pub exchange_interval: Duration,
    /// The membership layer declares a dead node dead after a delay drawn uniformly in this range.
    pub detect: (Duration, Duration),
    /// Network conditions.
    pub net: NetConfig,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// PCG settings of every node.
    pub pcg: pcg::Config,
    /// RBFS settings of every node.
    pub rbfs: rbfs::Config,
    /// Store capacity per node in bytes.
    pub store_bytes: u64,
    /// Items stored, spread evenly over `store_window` from random nodes.
    pub items: usize,
    /// Bytes per item.
    pub item_size: usize,
    /// When items are stored.
    pub store_window: (Duration, Duration),
    /// The churn model.
    pub churn: Churn,
    /// When churn is active.
    pub churn_window: (Duration, Duration),
    /// Background retrieval probes per second (random node, random item), during `probe_window`.
    pub probe_rate: f64,
    /// When background probes run.
    pub probe_window: (Duration, Duration),
    /// At this time, every item is searched once from a random live node that does not hold it.
    pub final_sweep: Option<Duration>,
    /// How long the sweep's searches are spread over.
    pub sweep_spread: Duration,
    /// Simulated duration.
    pub duration: Duration,
    /// Metrics sample period.
    pub sample_every: Duration,
    /// Messages are counted by kind ([`Report::messages`]) only from this time on, so a rate can
    /// leave out the start-up.
    pub measure_from: Duration,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            nodes: 100,
            sites: 5,
            known: 24,
            exchange_interval: Duration::from_secs(10),
            detect: (Duration::from_secs(2), Duration::from_secs(4)),
            net: NetConfig::default(),
            partitions: Vec::new(),
            pcg: pcg::Config::default(),
            rbfs: rbfs::Config::default(),
            store_bytes: 64 << 20,
            items: 100,
            item_size: 64,
            store_window: (Duration::ZERO, Duration::from_secs(5)),
            churn: Churn::None,
            churn_window: (Duration::ZERO, Duration::ZERO),
            probe_rate: 0.0,
            probe_window: (Duration::ZERO, Duration::ZERO),
            final_sweep: None,
            sweep_spread: Duration::from_secs(5),
            duration: Duration::from_secs(60),
            sample_every: Duration::from_secs(1),
            measure_from: Duration::ZERO,
        }
    }
}

/// One metrics sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Live nodes.
    pub live_nodes: usize,
    /// Items with at least `r` live holders.
    pub held_ok: usize,
    /// Items with 1..r live holders.
    pub held_low: usize,
    /// Items no live node holds.
    pub lost: usize,
    /// Items stored so far.
    pub stored: usize,
    /// Searches that succeeded since the previous sample.
    pub found: usize,
    /// Searches that failed since the previous sample.
    pub failed: usize,
    /// Messages sent since the previous sample, per live node per second.
    pub msgs_per_node_s: f64,
}

/// The outcome of one search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueryOutcome {
    /// Whether it found the item (verified).
    pub found: bool,
    /// Hops to the holder.
    pub hops: u8,
    /// Messages attributed to it (every query forward and every answer hop).
    pub messages: u32,
    /// Seconds from start to outcome.
    pub seconds: f64,
    /// Whether it was part of the final sweep.
    pub sweep: bool,
    /// Whether the item still existed (some live node held it) when the search started.
    pub existed: bool,
}

/// What a run produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Hash of the event log (same seed ⇒ same hash).
    pub log_hash: String,
    /// Events processed.
    pub events: u64,
    /// Samples over time.
    pub series: Vec<Sample>,
    /// Every search.
    pub queries: Vec<QueryOutcome>,
    /// Messages sent, by kind.
    pub messages: BTreeMap<String, u64>,
    /// Item bytes sent by PCG (replication and repair).
    pub data_bytes: u64,
    /// Item bytes destroyed by node deaths (replicas lost).
    pub bytes_lost_by_deaths: u64,
    /// Nodes that died.
    pub deaths: u64,
    /// PCG events, by kind.
    pub pcg_events: BTreeMap<String, u64>,
    /// Items lost at the end.
    pub lost_at_end: usize,
    /// Items stored.
    pub items: usize,
    /// Node-seconds lived (for per-node rates).
    pub node_seconds: f64,
}

impl Report {
    /// Messages of the given kinds per live node per second, over the whole run.
    pub fn rate(&self, kinds: &[&str]) -> f64 {
        let n: u64 = kinds
            .iter()
            .map(|k| self.messages.get(*k).copied().unwrap_or(0))
            .sum();
        n as f64 / self.node_seconds.max(1e-9)
    }
}

/// A message in flight: the data core's own.
type Msg = data::Message;

#[derive(Debug)]
struct Delivery {
    from: PeerId,
    to: PeerId,
    msg: Msg,
}

#[derive(Debug)]
enum Ev {
    Wake {
        slot: u32,
        inc: u32,
    },
    /// Boxed so queued events stay small (the heap moves them on every push and pop).
    Deliver(Box<Delivery>),
    Store {
        index: u32,
    },
    ChurnTick,
    Kill {
        slot: u32,
        inc: u32,
    },
    Detect {
        co_members: Box<[PeerId]>,
    },
    Exchange {
        slot: u32,
        inc: u32,
    },
    Probe,
    Sweep {
        item: u32,
    },
    SearchFor {
        item: Box<ItemId>,
    },
    Sample,
}

impl Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Wake { .. } => 1,
            Ev::Deliver(_) => 2,
            Ev::Store { .. } => 3,
            Ev::ChurnTick => 4,
            Ev::Kill { .. } => 5,
            Ev::Detect { .. } => 6,
            Ev::Exchange { .. } => 7,
            Ev::Probe => 8,
            Ev::Sweep { .. } => 9,
            Ev::Sample => 10,
            Ev::SearchFor { .. } => 11,
        }
    }
}

struct Scheduled {
    at: Time,
    seq: u64,
    ev: Ev,
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

/// Liveness facts about one slot (a position a node occupies; replacements reuse the slot).
#[derive(Clone, Debug)]
struct Meta {
    inc: u32,
    alive: bool,
    site: u16,
    /// The previous incarnation and when its death is detected.
    prev: Option<(u32, Time)>,
}

struct SimNode {
    id: PeerId,
    /// The node binary's data core (PCG, RBFS and their glue).
    core: DataCore<MemoryStore>,
    known: Vec<PeerId>,
    wake: Option<Time>,
    born: Time,
}

/// The membership layer as a node sees it, built on the fly for each call.
struct Hosts<'a> {
    me: PeerId,
    meta: &'a [Meta],
    site_names: &'a [String],
    known: &'a [PeerId],
    now: Time,
}

/// Encodes slot and incarnation into a peer id (the rest is a hash, so ranks look random).
fn make_id(seed: u64, slot: u32, inc: u32) -> PeerId {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&seed.to_le_bytes());
    key.extend_from_slice(&slot.to_le_bytes());
    key.extend_from_slice(&inc.to_le_bytes());
    let mut id = PeerId::from_public_key(&key);
    id.0[..4].copy_from_slice(&slot.to_be_bytes());
    id.0[4..8].copy_from_slice(&inc.to_be_bytes());
    id
}

fn decode(id: &PeerId) -> (u32, u32) {
    let mut s = [0u8; 4];
    s.copy_from_slice(&id.0[..4]);
    let mut i = [0u8; 4];
    i.copy_from_slice(&id.0[4..8]);
    (u32::from_be_bytes(s), u32::from_be_bytes(i))
}

fn live_in(meta: &[Meta], id: &PeerId, now: Time) -> bool {
    let (slot, inc) = decode(id);
    let Some(m) = meta.get(slot as usize) else {
        return false;
    };
    if m.inc == inc {
        return m.alive;
    }
    // A dead incarnation looks alive until the membership layer detects its death.
    matches!(m.prev, Some((p, at)) if p == inc && now < at)
}

impl HostView for Hosts<'_> {
    fn live_hosts(&self) -> Vec<PeerId> {
        self.known
            .iter()
            .copied()
            .filter(|p| *p != self.me && live_in(self.meta, p, self.now))
            .collect()
    }

    fn is_live(&self, id: &PeerId) -> bool {
        live_in(self.meta, id, self.now)
    }

    fn site(&self, id: &PeerId) -> Option<&str> {
        let (slot, _) = decode(id);
        self.meta
            .get(slot as usize)
            .map(|m| self.site_names[m.site as usize].as_str())
    }

    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        let used: BTreeSet<u16> = exclude
            .iter()
            .filter_map(|p| self.meta.get(decode(p).0 as usize))
            .map(|m| m.site)
            .collect();
        let mut fresh = Vec::new();
        let mut rest = Vec::new();
        for p in self.live_hosts() {
            if exclude.contains(&p) {
                continue;
            }
            let site = self.meta[decode(&p).0 as usize].site;
            if used.contains(&site) {
                rest.push(p)
            } else {
                fresh.push(p)
            }
        }
        fresh.extend(rest);
        fresh.truncate(k);
        fresh
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug)]
struct Track {
    messages: u32,
    started: Time,
    sweep: bool,
    existed: bool,
    done: Option<usize>,
}

/// A running simulation.
pub struct World {
    sc: Scenario,
    rng: SmallRng,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    meta: Vec<Meta>,
    nodes: Vec<Option<Box<SimNode>>>,
    site_names: Vec<String>,
    items: Vec<ItemId>,
    stored: usize,
    log: u64,
    events: u64,
    report: Report,
    /// (origin, item) → search being tracked; attempt query ids → the same.
    tracks: Vec<Track>,
    by_origin: BTreeMap<(PeerId, ItemId), usize>,
    by_qid: BTreeMap<QueryId, usize>,
    window_found: usize,
    window_failed: usize,
    window_msgs: u64,
    msg_counts: Vec<(&'static str, u64)>,
    measure_from: Time,
    last_sample: Time,
    progress: Option<Box<dyn Fn(f64) + Send>>,
}

impl World {
    /// Builds the world: `nodes` nodes on `sites` sites, each knowing `known` random others.
    pub fn new(sc: Scenario) -> Self {
        let mut rng = SmallRng::seed_from_u64(mix(sc.seed));
        let site_names = (0..sc.sites.max(1)).map(|s| format!("site-{s}")).collect();
        let meta: Vec<Meta> = (0..sc.nodes)
            .map(|i| Meta {
                inc: 0,
                alive: true,
                site: (i % sc.sites.max(1)) as u16,
                prev: None,
            })
            .collect();
        let mut w = World {
            rng: SmallRng::seed_from_u64(0),
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            meta,
            nodes: Vec::new(),
            site_names,
            items: Vec::new(),
            stored: 0,
            log: mix(sc.seed),
            events: 0,
            report: Report {
                seed: sc.seed,
                items: sc.items,
                ..Report::default()
            },
            tracks: Vec::new(),
            by_origin: BTreeMap::new(),
            by_qid: BTreeMap::new(),
            window_found: 0,
            window_failed: 0,
            window_msgs: 0,
            msg_counts: Vec::new(),
            measure_from: Time::from_duration(sc.measure_from),
            last_sample: Time::ZERO,
            progress: None,
            sc,
        };
        // Every node knows `known` random others to begin with.
        let n = w.sc.nodes;
        for slot in 0..n as u32 {
            let node = w.make_node(slot, 0);
            w.nodes.push(Some(node));
        }
        for slot in 0..n {
            let k = w.sc.known.min(n.saturating_sub(1));
            let mut known = BTreeSet::new();
            while known.len() < k {
                let j = rng.random_range(0..n);
                if j != slot {
                    known.insert(j);
                }
            }
            let ids: Vec<PeerId> = known
                .into_iter()
                .map(|j| make_id(w.sc.seed, j as u32, 0))
                .collect();
            if let Some(node) = w.nodes[slot].as_mut() {
                node.known = ids;
            }
        }
        w.rng = rng;
        w.schedule_initial();
        w
    }

    /// Reports progress (fraction of simulated time done) to `f` about once per simulated second.
    pub fn on_progress(&mut self, f: impl Fn(f64) + Send + 'static) {
        self.progress = Some(Box::new(f));
    }

    fn make_node(&mut self, slot: u32, inc: u32) -> Box<SimNode> {
        let id = make_id(self.sc.seed, slot, inc);
        let nseed = mix(self.sc.seed ^ mix(u64::from(slot) << 32 | u64::from(inc)));
        let store = MemoryStore::new(self.sc.store_bytes);
        let mut core = DataCore::new(id, self.sc.pcg.clone(), self.sc.rbfs.clone(), store, nseed)
            .expect("valid pcg and rbfs config");
        core.start(self.now);
        Box::new(SimNode {
            id,
            core,
            known: Vec::new(),
            wake: None,
            born: self.now,
        })
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_initial(&mut self) {
        let sc = self.sc.clone();
        // Items: content derived from the seed and index, so each run has its own items.
        for i in 0..sc.items {
            let span = sc.store_window.1.saturating_sub(sc.store_window.0);
            let at = sc.store_window.0 + span.mul_f64(i as f64 / sc.items.max(1) as f64);
            self.push(Time::from_duration(at), Ev::Store { index: i as u32 });
        }
        if !matches!(sc.churn, Churn::None) {
            self.push(Time::from_duration(sc.churn_window.0), Ev::ChurnTick);
        }
        for slot in 0..sc.nodes as u32 {
            let first = sc
                .exchange_interval
                .mul_f64(self.rng.random_range(0.0..1.0));
            self.push(Time::from_duration(first), Ev::Exchange { slot, inc: 0 });
            if let Some(session) = sc.churn.session(&mut self.rng) {
                self.push(
                    Time::from_duration(sc.churn_window.0 + session),
                    Ev::Kill { slot, inc: 0 },
                );
            }
            self.refresh_wake(slot as usize);
        }
        if sc.probe_rate > 0.0 {
            self.push(Time::from_duration(sc.probe_window.0), Ev::Probe);
        }
        if let Some(at) = sc.final_sweep {
            for i in 0..sc.items {
                let at = at + sc.sweep_spread.mul_f64(i as f64 / sc.items.max(1) as f64);
                self.push(Time::from_duration(at), Ev::Sweep { item: i as u32 });
            }
        }
        self.push(Time::ZERO, Ev::Sample);
    }

    fn content(&self, index: u32) -> Vec<u8> {
        let mut c = Vec::with_capacity(self.sc.item_size.max(12));
        c.extend_from_slice(&self.sc.seed.to_le_bytes());
        c.extend_from_slice(&index.to_le_bytes());
        let mut x = mix(self.sc.seed ^ u64::from(index));
        while c.len() < self.sc.item_size {
            x = mix(x);
            c.extend_from_slice(&x.to_le_bytes());
        }
        c.truncate(self.sc.item_size.max(12));
        c
    }

    fn log(&mut self, a: u64, b: u64) {
        self.log = mix(self.log ^ a.wrapping_mul(0x1000_0000_01b3) ^ b.rotate_left(17));
    }

    fn random_live_slot(&mut self) -> Option<usize> {
        for _ in 0..64 {
            let s = self.rng.random_range(0..self.meta.len());
            if self.meta[s].alive {
                return Some(s);
            }
        }
        (0..self.meta.len()).find(|s| self.meta[*s].alive)
    }

    /// Runs to the end of the scenario and returns the report. A panic inside the run is
    /// reported with the seed that replays it, then propagated.
    pub fn run(self) -> Report {
        let seed = self.sc.seed;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_inner())) {
            Ok(report) => report,
            Err(panic) => {
                eprintln!("butter-sim: the run with seed {seed} failed; replay it with that seed");
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn run_inner(mut self) -> Report {
        let end = Time::from_duration(self.sc.duration);
        let mut next_progress = Time::ZERO;
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at > end {
                break;
            }
            self.now = s.at;
            self.events += 1;
            self.log(s.at.0, s.ev.code());
            if self.now >= next_progress {
                if let Some(p) = &self.progress {
                    p(self.now.0 as f64 / end.0.max(1) as f64);
                }
                next_progress = self.now + Duration::from_secs(1);
            }
            self.handle(s.ev);
        }
        self.now = end;
        self.sample();
        self.finish()
    }

    fn finish(mut self) -> Report {
        // Messages keep arriving after an outcome (other branches of the search): count them all.
        for t in &self.tracks {
            match t.done {
                Some(i) => self.report.queries[i].messages = t.messages,
                None => self.report.queries.push(QueryOutcome {
                    found: false,
                    hops: 0,
                    messages: t.messages,
                    seconds: self.now.saturating_since(t.started).as_secs_f64(),
                    sweep: t.sweep,
                    existed: t.existed,
                }),
            }
        }
        let lost = self
            .holder_counts()
            .iter()
            .take(self.stored)
            .filter(|c| **c == 0)
            .count();
        self.report.lost_at_end = lost;
        for n in self.nodes.iter().flatten() {
            self.report.node_seconds += self.now.saturating_since(n.born).as_secs_f64();
        }
        for (k, v) in &self.msg_counts {
            self.report.messages.insert((*k).to_owned(), *v);
        }
        self.report.events = self.events;
        self.report.log_hash = format!("{:016x}", mix(self.log ^ self.events));
        self.report
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { slot, inc } => {
                let s = slot as usize;
                let now = self.now;
                let due = self.meta[s].inc == inc
                    && self.nodes[s].as_ref().is_some_and(|n| n.wake == Some(now));
                if !due {
                    return;
                }
                self.log(u64::from(slot), 1);
                self.with_node(s, |n, h| n.core.handle_timeout(h.now, h));
            }
            Ev::Deliver(d) => {
                let Delivery { from, to, msg } = *d;
                let (slot, inc) = decode(&to);
                let s = slot as usize;
                if self.meta.get(s).is_none_or(|m| m.inc != inc || !m.alive) {
                    return;
                }
                self.log(u64::from(slot), u64::from(decode(&from).0));
                self.with_node(s, |n, h| n.core.handle_message(h.now, from, msg, h));
            }
            Ev::Store { index } => {
                let content = self.content(index);
                let Some(s) = self.random_live_slot() else {
                    return;
                };
                let id = self
                    .with_node(s, |n, h| n.core.put(h.now, content, h).ok())
                    .flatten();
                if let Some(id) = id {
                    self.items.push(id);
                    self.stored += 1;
                }
            }
            Ev::ChurnTick => {
                if let Churn::PerSecond { chance } = self.sc.churn {
                    for s in 0..self.meta.len() {
                        if self.meta[s].alive && self.rng.random_bool(chance.clamp(0.0, 1.0)) {
                            self.kill_and_replace(s);
                        }
                    }
                }
                if let Churn::SiteFailure { site, at } = self.sc.churn {
                    if self.now >= Time::from_duration(at) {
                        for s in 0..self.meta.len() {
                            if self.meta[s].alive && usize::from(self.meta[s].site) == site {
                                self.kill_and_replace(s);
                            }
                        }
                        return;
                    }
                    self.push(Time::from_duration(at), Ev::ChurnTick);
                    return;
                }
                let next = self.now + Duration::from_secs(1);
                if next < Time::from_duration(self.sc.churn_window.1) {
                    self.push(next, Ev::ChurnTick);
                }
            }
            Ev::Kill { slot, inc } => {
                let s = slot as usize;
                if self.meta[s].inc == inc
                    && self.meta[s].alive
                    && self.now < Time::from_duration(self.sc.churn_window.1)
                {
                    self.kill_and_replace(s);
                }
            }
            Ev::Detect { co_members } => {
                for p in co_members.into_vec() {
                    let (slot, inc) = decode(&p);
                    let s = slot as usize;
                    if self.meta[s].inc != inc || !self.meta[s].alive {
                        continue;
                    }
                    // The membership layer tells the node; PCG repairs at once.
                    self.with_node(s, |n, h| {
                        for d in n.core.pcg().co_members() {
                            if !h.is_live(&d) {
                                n.core.handle_peer_down(h.now, d, h);
                            }
                        }
                    });
                }
            }
            Ev::Exchange { slot, inc } => {
                let s = slot as usize;
                if self.meta[s].inc != inc || !self.meta[s].alive {
                    return;
                }
                self.exchange(s);
                let next = self.now
                    + self
                        .sc
                        .exchange_interval
                        .mul_f64(self.rng.random_range(0.8..1.2));
                self.push(next, Ev::Exchange { slot, inc });
            }
            Ev::Probe => {
                let end = Time::from_duration(self.sc.probe_window.1);
                if self.stored > 0 {
                    let i = self.rng.random_range(0..self.stored);
                    self.search(self.items[i], false);
                }
                let gap = Duration::from_secs_f64(1.0 / self.sc.probe_rate);
                if self.now + gap < end {
                    self.push(self.now + gap, Ev::Probe);
                }
            }
            Ev::Sweep { item } => {
                if (item as usize) < self.stored {
                    self.search(self.items[item as usize], true);
                }
            }
            Ev::SearchFor { item } => self.search(*item, false),
            Ev::Sample => {
                self.sample();
                let next = self.now + self.sc.sample_every;
                self.push(next, Ev::Sample);
            }
        }
    }

    /// Runs `f` on node `s` with its host view, then drains its outputs.
    fn with_node<R>(
        &mut self,
        s: usize,
        f: impl FnOnce(&mut SimNode, &Hosts<'_>) -> R,
    ) -> Option<R> {
        let mut node = self.nodes[s].take()?;
        let known = std::mem::take(&mut node.known);
        let out = {
            let hosts = Hosts {
                me: node.id,
                meta: &self.meta,
                site_names: &self.site_names,
                known: &known,
                now: self.now,
            };
            f(&mut node, &hosts)
        };
        node.known = known;
        self.drain(&mut node);
        self.nodes[s] = Some(node);
        self.refresh_wake(s);
        Some(out)
    }

    fn refresh_wake(&mut self, s: usize) {
        let inc = self.meta[s].inc;
        let Some(node) = self.nodes[s].as_mut() else {
            return;
        };
        let wake = node.core.poll_timeout().map(|t| t.max(self.now));
        if wake != node.wake {
            node.wake = wake;
            if let Some(t) = wake {
                self.push(
                    t,
                    Ev::Wake {
                        slot: s as u32,
                        inc,
                    },
                );
            }
        }
    }

    fn count(&mut self, kind: &'static str) {
        self.window_msgs += 1;
        if self.now < self.measure_from {
            return;
        }
        // A short list compared by pointer first: message kinds are a handful of static labels.
        match self
            .msg_counts
            .iter_mut()
            .find(|(k, _)| std::ptr::eq(*k, kind) || *k == kind)
        {
            Some((_, v)) => *v += 1,
            None => self.msg_counts.push((kind, 1)),
        }
    }

    fn drain(&mut self, node: &mut SimNode) {
        let from = node.id;
        while let Some(t) = node.core.poll_transmit() {
            self.count(t.msg.kind());
            match &t.msg {
                Msg::Pcg(m) => self.report.data_bytes += m.data_bytes() as u64,
                Msg::Rbfs(m) => self.attribute(m),
            }
            self.send(from, t.to, t.msg);
        }
        while let Some(e) = node.core.poll_event() {
            let e = match e {
                data::Event::Pcg(e) => e,
                data::Event::Rbfs(e) => {
                    self.search_event(from, e);
                    continue;
                }
                _ => continue,
            };
            let k = match e {
                pcg::Event::Recruited { .. } => "recruited",
                pcg::Event::Trimmed { .. } => "trimmed",
                pcg::Event::Spread { .. } => "spread",
                pcg::Event::ProofFailed { .. } => "proof_failed",
                pcg::Event::NoCandidates(_) => "no_candidates",
                pcg::Event::ViewRefused { .. } => "view_refused",
                pcg::Event::Corrupt { .. } => "corrupt",
                pcg::Event::Dropped(_) => "dropped",
                pcg::Event::Holding(_) => "holding",
                _ => continue,
            };
            *self.report.pcg_events.entry(k.to_owned()).or_default() += 1;
        }
    }

    /// Records the outcome of a tracked search.
    fn search_event(&mut self, from: PeerId, e: rbfs::Event) {
        let (item, outcome) = match e {
            rbfs::Event::Found { item, hops, .. } => (item, Some(hops)),
            rbfs::Event::NotFound { item, .. } => (item, None),
            _ => return,
        };
        let Some(&idx) = self.by_origin.get(&(from, item)) else {
            return;
        };
        let t = &mut self.tracks[idx];
        if t.done.is_some() {
            return;
        }
        let q = QueryOutcome {
            found: outcome.is_some(),
            hops: outcome.unwrap_or(0),
            messages: 0,
            seconds: self.now.saturating_since(t.started).as_secs_f64(),
            sweep: t.sweep,
            existed: t.existed,
        };
        t.done = Some(self.report.queries.len());
        self.report.queries.push(q);
        if outcome.is_some() {
            self.window_found += 1
        } else {
            self.window_failed += 1
        }
    }

    /// Counts a query-related message against its search.
    fn attribute(&mut self, msg: &rbfs::Message) {
        let idx = match msg {
            rbfs::Message::Query(q) => {
                let idx = self
                    .by_qid
                    .get(&q.id)
                    .copied()
                    .or_else(|| self.by_origin.get(&(q.origin, q.item)).copied());
                if let Some(i) = idx {
                    self.by_qid.insert(q.id, i);
                }
                idx
            }
            rbfs::Message::Hit { id, .. } => self.by_qid.get(id).copied(),
            _ => None,
        };
        if let Some(i) = idx {
            self.tracks[i].messages += 1;
        }
    }

    fn send(&mut self, from: PeerId, to: PeerId, msg: Msg) {
        let (fs, _) = decode(&from);
        let (ts, _) = decode(&to);
        let (Some(fm), Some(tm)) = (self.meta.get(fs as usize), self.meta.get(ts as usize)) else {
            return;
        };
        let (a, b) = (usize::from(fm.site), usize::from(tm.site));
        let now = self.now.as_duration();
        for p in &self.sc.partitions {
            if now >= p.from && now < p.until && (p.side.contains(&a) != p.side.contains(&b)) {
                return;
            }
        }
        if self.sc.net.loss > 0.0 && self.rng.random_bool(self.sc.net.loss) {
            return;
        }
        let base = if a == b {
            self.sc.net.lan_latency
        } else {
            self.sc.net.wan_latency
        };
        let j = self.sc.net.latency_jitter;
        let lat = if j > 0.0 {
            base.mul_f64(1.0 + self.rng.random_range(-j..j))
        } else {
            base
        };
        let at = self.now + lat;
        self.push(at, Ev::Deliver(Box::new(Delivery { from, to, msg })));
    }

    /// Schedules a search for `item` (which need not exist) from a random live node at `at`.
    pub fn search_at(&mut self, at: Duration, item: ItemId) {
        self.push(
            Time::from_duration(at),
            Ev::SearchFor {
                item: Box::new(item),
            },
        );
    }

    fn search(&mut self, id: ItemId, sweep: bool) {
        // A random live node that does not hold the item (a local hit would prove nothing).
        let mut origin = None;
        for _ in 0..64 {
            let Some(s) = self.random_live_slot() else {
                return;
            };
            if self.nodes[s]
                .as_ref()
                .is_some_and(|n| !n.core.store().contains(&id))
            {
                origin = Some(s);
                break;
            }
        }
        let Some(s) = origin else { return };
        let existed = self.holder_count(&id) > 0;
        let Some(pid) = self.nodes[s].as_ref().map(|n| n.id) else {
            return;
        };
        let idx = self.tracks.len();
        self.tracks.push(Track {
            messages: 0,
            started: self.now,
            sweep,
            existed,
            done: None,
        });
        self.by_origin.insert((pid, id), idx);
        self.with_node(s, |n, h| {
            n.core.find(h.now, id, h);
        });
    }

    fn holder_count(&self, id: &ItemId) -> usize {
        self.nodes
            .iter()
            .flatten()
            .filter(|n| n.core.store().contains(id))
            .count()
    }

    fn holder_counts(&self) -> Vec<usize> {
        let index: BTreeMap<ItemId, usize> = self
            .items
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let mut counts = vec![0usize; self.items.len()];
        for n in self.nodes.iter().flatten() {
            for id in n.core.store().ids() {
                if let Some(i) = index.get(&id) {
                    counts[*i] += 1;
                }
            }
        }
        counts
    }

    fn sample(&mut self) {
        let r = self.sc.pcg.replicas;
        let counts = self.holder_counts();
        let live = self.meta.iter().filter(|m| m.alive).count();
        let secs = self.now.saturating_since(self.last_sample).as_secs_f64();
        let s = Sample {
            t: self.now.as_duration().as_secs_f64(),
            live_nodes: live,
            held_ok: counts.iter().filter(|c| **c >= r).count(),
            held_low: counts.iter().filter(|c| **c > 0 && **c < r).count(),
            lost: counts.iter().filter(|c| **c == 0).count(),
            stored: self.stored,
            found: std::mem::take(&mut self.window_found),
            failed: std::mem::take(&mut self.window_failed),
            msgs_per_node_s: if secs > 0.0 {
                std::mem::take(&mut self.window_msgs) as f64 / secs / live.max(1) as f64
            } else {
                0.0
            },
        };
        self.last_sample = self.now;
        self.report.series.push(s);
    }

    /// The membership model's exchange: forget detected-dead hosts, fill up from a random known
    /// host's table, and make ourselves known to it.
    fn exchange(&mut self, s: usize) {
        let now = self.now;
        let k = self.sc.known;
        let Some(node) = self.nodes[s].as_mut() else {
            return;
        };
        let me = node.id;
        node.known.retain(|p| live_in(&self.meta, p, now));
        let partner = node.known.choose(&mut self.rng).copied();
        let Some(partner) = partner else {
            // Isolated: bootstrap from any live node.
            if let Some(b) = self.random_live_slot() {
                if b != s {
                    let bid = self.nodes[b].as_ref().map(|n| n.id);
                    if let (Some(bid), Some(node)) = (bid, self.nodes[s].as_mut()) {
                        node.known.push(bid);
                    }
                }
            }
            return;
        };
        let (ps, _) = decode(&partner);
        let sample: Vec<PeerId> = self.nodes[ps as usize]
            .as_ref()
            .map(|n| {
                n.known
                    .iter()
                    .copied()
                    .filter(|p| live_in(&self.meta, p, now))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(node) = self.nodes[s].as_mut() {
            for p in sample {
                if node.known.len() >= k {
                    break;
                }
                if p != me && !node.known.contains(&p) {
                    node.known.push(p);
                }
            }
        }
        self.introduce(ps as usize, me);
    }

    /// Puts `id` into slot `s`'s known hosts, replacing a random entry when full.
    fn introduce(&mut self, s: usize, id: PeerId) {
        let k = self.sc.known;
        let Some(node) = self.nodes[s].as_mut() else {
            return;
        };
        if node.id == id || node.known.contains(&id) {
            return;
        }
        if node.known.len() < k {
            node.known.push(id);
        } else if k > 0 {
            let i = self.rng.random_range(0..k);
            node.known[i] = id;
        }
    }

    fn kill_and_replace(&mut self, s: usize) {
        let Some(dead) = self.nodes[s].take() else {
            return;
        };
        self.report.deaths += 1;
        self.report.bytes_lost_by_deaths += dead.core.store().usage().used;
        self.report.node_seconds += self.now.saturating_since(dead.born).as_secs_f64();
        let (d0, d1) = self.sc.detect;
        let delay = if d1 > d0 {
            d0 + (d1 - d0).mul_f64(self.rng.random_range(0.0..1.0))
        } else {
            d0
        };
        let detect_at = self.now + delay;
        let m = &mut self.meta[s];
        m.prev = Some((m.inc, detect_at));
        m.inc += 1;
        let inc = m.inc;
        self.push(
            detect_at,
            Ev::Detect {
                co_members: dead.core.pcg().co_members().into_boxed_slice(),
            },
        );
        // Replaced empty: a new identity on the same site, bootstrapped from a random live node.
        let mut node = self.make_node(s as u32, inc);
        let id = node.id;
        if let Some(b) = self.random_live_slot().filter(|b| *b != s) {
            if let Some(bn) = self.nodes[b].as_ref() {
                let mut known: Vec<PeerId> =
                    bn.known.iter().copied().filter(|p| *p != id).collect();
                known.truncate(self.sc.known.saturating_sub(1));
                known.push(bn.id);
                node.known = known;
            }
            self.introduce(b, id);
        }
        // A few more nodes hear of it (LAN beacons, exchanges).
        for _ in 0..self.sc.known / 4 {
            if let Some(o) = self.random_live_slot().filter(|o| *o != s) {
                self.introduce(o, id);
            }
        }
        self.nodes[s] = Some(node);
        self.meta[s].alive = true;
        let first = self
            .sc
            .exchange_interval
            .mul_f64(self.rng.random_range(0.1..1.0));
        self.push(
            self.now + first,
            Ev::Exchange {
                slot: s as u32,
                inc,
            },
        );
        if let Some(session) = self.sc.churn.session(&mut self.rng) {
            self.push(
                self.now + session,
                Ev::Kill {
                    slot: s as u32,
                    inc,
                },
            );
        }
        self.refresh_wake(s);
    }
}

/// Runs a scenario to its end.
pub fn run(sc: Scenario) -> Report {
    World::new(sc).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_slot_and_incarnation() {
        let id = make_id(7, 1234, 5);
        assert_eq!(decode(&id), (1234, 5));
        assert_ne!(make_id(7, 1234, 5), make_id(8, 1234, 5));
    }

    #[test]
    fn dead_incarnations_look_alive_until_detected() {
        let meta = vec![Meta {
            inc: 1,
            alive: true,
            site: 0,
            prev: Some((0, Time(100))),
        }];
        let old = make_id(1, 0, 0);
        let new = make_id(1, 0, 1);
        assert!(live_in(&meta, &old, Time(50)));
        assert!(!live_in(&meta, &old, Time(100)));
        assert!(live_in(&meta, &new, Time(100)));
        assert!(!live_in(&meta, &make_id(1, 3, 0), Time(0)));
    }
}
