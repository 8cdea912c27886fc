//! The simulated world: the node's real composed core ([`NodeCore`]: known-host table, beacons,
//! SWIM, membership exchange, PCG and RBFS with the glue between them), thousands of them, on
//! proto's deterministic network ([`Net`]: sites as multicast domains, latency, loss,
//! partitions), with churn, a workload and the measurements the rigs report.
//!
//! Nothing about membership is modelled here: a node learns its first hosts from LAN beacons and
//! from the bootstrap addresses it is given (the first node of its own site and of the next two, as
//! a compose LAN node is given gateways), fills its table by exchanges, and learns that a node died
//! when SWIM says so. A killed node is replaced at once by a new, empty node with a new identity at the same address
//! (a container restarted with its volume lost).
//!
//! Everything random comes from one seeded RNG (plus per-node and network RNGs seeded from it),
//! and every container iterates in a fixed order, so one seed gives one history
//! ([`Report::log_hash`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use butter_proto::item::{Item, ItemId, MemoryStore, Store, StoreError, Usage};
use butter_proto::membership::{self, Action, RemoveReason};
use butter_proto::node::net::{Net, Observer};
use butter_proto::node::{self, ConfigError, Event, NodeCore, TableView, Transmit, data};
use butter_proto::pcg;
use butter_proto::peers::Source;
use butter_proto::rbfs::{self, QueryId};
use butter_proto::wire::PeerRecord;
use butter_proto::{PeerId, Time};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::churn::Churn;

pub use butter_proto::node::net::{NetConfig, Partition};

/// A node's store in the simulator: a [`MemoryStore`], or a liar's. A liar keeps every item's
/// id but not its content (it stores a few garbage bytes in its place), so it claims to hold
/// what it cannot prove or serve: the possession challenges, and every recipient's check of
/// content against id, must catch it. Holder counts in the reports count honest copies only.
#[derive(Debug)]
pub struct SimStore {
    inner: MemoryStore,
    liar: bool,
}

impl SimStore {
    /// An honest store of `limit` bytes, or a liar's.
    pub fn new(limit: u64, liar: bool) -> Self {
        SimStore {
            inner: MemoryStore::new(limit),
            liar,
        }
    }

    /// Whether this store really holds `id` (a liar never does).
    pub fn really_holds(&self, id: &ItemId) -> bool {
        !self.liar && self.inner.contains(id)
    }

    /// Whether it is a liar's.
    pub fn is_liar(&self) -> bool {
        self.liar
    }
}

impl Store for SimStore {
    fn insert(&mut self, item: Item) -> Result<(), StoreError> {
        let id = item.id();
        self.inner.insert(item)?;
        if self.liar {
            self.inner.corrupt(&id, b"not the data".to_vec());
        }
        Ok(())
    }
    fn get(&self, id: &ItemId) -> Option<Item> {
        self.inner.get(id)
    }
    fn contains(&self, id: &ItemId) -> bool {
        self.inner.contains(id)
    }
    fn remove(&mut self, id: &ItemId) -> bool {
        self.inner.remove(id)
    }
    fn ids(&self) -> Vec<ItemId> {
        self.inner.ids()
    }
    fn usage(&self) -> Usage {
        self.inner.usage()
    }
    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}

/// Everything that defines one simulation run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed: same seed, same run.
    pub seed: u64,
    /// Nodes alive at any time (dead nodes are replaced).
    pub nodes: usize,
    /// Sites (LAN segments, multicast domains); node `i` is on site `i % sites`. The first node
    /// of each site is every node's bootstrap address.
    pub sites: usize,
    /// The node core's settings (membership, PCG, RBFS): the protocol sections of the daemon's
    /// configuration.
    pub core: node::Config,
    /// Network conditions.
    pub net: NetConfig,
    /// Partitions.
    pub partitions: Vec<Partition>,
    /// Nodes start at random instants within this span from t = 0 (a network brought up at
    /// once, as `make up` does).
    pub start_spread: Duration,
    /// Store capacity per node in bytes.
    pub store_bytes: u64,
    /// Items stored, spread evenly over `store_window` from random nodes.
    pub items: usize,
    /// Bytes per item.
    pub item_size: usize,
    /// When items are stored (after discovery: a node that knows nobody stores alone).
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
    /// Slots whose first node lies about what it holds ([`SimStore`]).
    pub liars: Vec<usize>,
    /// Check the invariants as the run goes ([`Report::invariants`]): costs a scan of every
    /// holder at each death and of every table at each sample, so the big rigs leave it off.
    pub check_invariants: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 1,
            nodes: 100,
            sites: 5,
            core: node::Config::default(),
            net: NetConfig::default(),
            partitions: Vec::new(),
            start_spread: Duration::from_secs(1),
            store_bytes: 64 << 20,
            items: 100,
            item_size: 64,
            store_window: (Duration::from_secs(5), Duration::from_secs(10)),
            churn: Churn::None,
            churn_window: (Duration::ZERO, Duration::ZERO),
            probe_rate: 0.0,
            probe_window: (Duration::ZERO, Duration::ZERO),
            final_sweep: None,
            sweep_spread: Duration::from_secs(5),
            duration: Duration::from_secs(60),
            sample_every: Duration::from_secs(1),
            measure_from: Duration::ZERO,
            liars: Vec::new(),
            check_invariants: false,
        }
    }
}

/// What the invariant checks found ([`Scenario::check_invariants`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Invariants {
    /// Items whose last copy died with its node (lost to deaths, which no protocol prevents).
    pub destroyed: usize,
    /// Items that vanished while a node holding them stayed up (a live node dropped the last
    /// copy): must be 0.
    pub dropped_by_live: usize,
    /// When the first of them was seen gone (seconds), to start a replay's investigation.
    pub first_dropped_s: Option<f64>,
    /// For each of them, the copies dropped by live nodes (`t=… node=… item=…`), in order.
    pub drop_trace: Vec<String>,
    /// For each item below r at the end, each live holder's view of its group.
    pub under_r_trace: Vec<String>,
    /// The longest any live node's table held a node that had been dead for that long, in
    /// seconds, over every sample.
    pub stale_dead_max_s: f64,
    /// Items (not destroyed) with fewer than `r` live holders at the end.
    pub under_r_at_end: usize,
    /// Items with more than `r` live holders at the end.
    pub over_r_at_end: usize,
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
    /// Events processed (the network's and the workload's).
    pub events: u64,
    /// Samples over time.
    pub series: Vec<Sample>,
    /// Every search.
    pub queries: Vec<QueryOutcome>,
    /// Messages sent, by kind: the data messages by their metric label (`heartbeat`, `query`,
    /// …), membership requests as `beacon` (one per datagram multicast), `hello_*` (by what
    /// led to the dial: `multicast`, `bootstrap`, `exchange`), `ping`, `ping_req` and `gossip`
    /// (each request, its answer not counted apart).
    pub messages: BTreeMap<String, u64>,
    /// Item bytes sent by PCG (replication and repair).
    pub data_bytes: u64,
    /// Item bytes destroyed by node deaths (replicas lost).
    pub bytes_lost_by_deaths: u64,
    /// Nodes that died.
    pub deaths: u64,
    /// PCG events, by kind.
    pub pcg_events: BTreeMap<String, u64>,
    /// Membership events, by the label the node's `butter_membership_events_total` uses.
    pub membership_events: BTreeMap<String, u64>,
    /// Seconds from a node's death to the first table that dropped it as dead (SWIM's verdict),
    /// one entry per death some node detected, in order of detection.
    pub detection_s: Vec<f64>,
    /// Deaths no node declared before the run ended (or before the node's table was empty).
    pub undetected: u64,
    /// Times a live node was declared dead by some table (SWIM false positives).
    pub false_dead: u64,
    /// Items lost at the end.
    pub lost_at_end: usize,
    /// What the invariant checks found (all zero when they were off).
    pub invariants: Invariants,
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

    /// The `p` quantile (0..=1) of [`detection_s`](Self::detection_s), if any death was detected.
    pub fn detection_quantile(&self, p: f64) -> Option<f64> {
        let mut v = self.detection_s.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let i = ((v.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
        Some(v[i])
    }
}

/// How many sites' first nodes a node is given as bootstrap addresses (its own and the next).
pub const BOOTSTRAP_SITES: usize = 3;

/// Membership request kinds, as counted in [`Report::messages`].
pub const MEMBERSHIP_KINDS: [&str; 8] = [
    "beacon",
    "hello_multicast",
    "hello_bootstrap",
    "hello_exchange",
    "hello_other",
    "ping",
    "ping_req",
    "gossip",
];

fn transmit_kind(t: &Transmit) -> &'static str {
    match t {
        Transmit::Membership(a) => match a {
            Action::SendBeacon { .. } => "beacon",
            Action::Dial { source, .. } => match source {
                Source::Multicast => "hello_multicast",
                Source::Bootstrap => "hello_bootstrap",
                Source::Exchange => "hello_exchange",
                _ => "hello_other",
            },
            Action::Ping { .. } => "ping",
            Action::PingReq { .. } => "ping_req",
            Action::Gossip { .. } => "gossip",
            _ => "membership_other",
        },
        Transmit::Data(d) => d.msg.kind(),
        _ => "other",
    }
}

/// The label a membership event is counted under (the node's metric labels).
fn membership_label(e: &membership::Event) -> Option<&'static str> {
    use membership::Event as M;
    Some(match e {
        M::PeerAdded { .. } => "added",
        M::PeerRemoved { reason, .. } => match reason {
            RemoveReason::Dead => "removed_dead",
            _ => "removed_evicted",
        },
        M::PeerRejected { .. } => "rejected",
        M::PeerSuspected { .. } => "suspected",
        M::PeerAlive { .. } => "suspicion_cleared",
        M::ProbeFailed { .. } => "probe_failed",
        M::Refuted { .. } => "refuted",
        M::DialFailed { .. } => "dial_failed",
        M::HelloRefused { .. } => "hello_refused",
        M::Rediscovery => "rediscovery",
        _ => return None,
    })
}

#[derive(Debug)]
struct Track {
    messages: u32,
    started: Time,
    sweep: bool,
    existed: bool,
    done: Option<usize>,
}

/// What the world learns from the network as it runs: message counts, searches, detections.
#[derive(Default)]
struct Stats {
    measure_from: Time,
    msg_counts: Vec<(&'static str, u64)>,
    window_msgs: u64,
    data_bytes: u64,
    pcg_events: BTreeMap<&'static str, u64>,
    membership_events: BTreeMap<&'static str, u64>,
    tracks: Vec<Track>,
    by_origin: BTreeMap<(PeerId, ItemId), usize>,
    by_qid: BTreeMap<QueryId, usize>,
    queries: Vec<QueryOutcome>,
    window_found: usize,
    window_failed: usize,
    /// Dead nodes no table has declared dead yet, with their time of death.
    killed: BTreeMap<PeerId, Time>,
    /// Every node's id → whether it is alive now.
    alive: BTreeMap<PeerId, bool>,
    detection_s: Vec<f64>,
    false_dead: u64,
    /// Copies dropped by live nodes (time, node, item), kept when invariants are checked.
    drops: Option<Vec<(Time, PeerId, ItemId)>>,
}

impl Stats {
    fn count(&mut self, now: Time, kind: &'static str) {
        self.window_msgs += 1;
        if now < self.measure_from {
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

    /// Records the outcome of a tracked search.
    fn search_event(&mut self, now: Time, from: PeerId, e: rbfs::Event) {
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
            seconds: now.saturating_since(t.started).as_secs_f64(),
            sweep: t.sweep,
            existed: t.existed,
        };
        t.done = Some(self.queries.len());
        self.queries.push(q);
        if outcome.is_some() {
            self.window_found += 1
        } else {
            self.window_failed += 1
        }
    }
}

/// `BUTTER_SIM_TRACE_ITEM=<short id>`: print every PCG message and event that names that item
/// (and every death), to follow one group through a run.
fn trace_item() -> Option<&'static str> {
    static ITEM: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ITEM.get_or_init(|| std::env::var("BUTTER_SIM_TRACE_ITEM").ok())
        .as_deref()
}

impl Observer for Stats {
    fn transmit(&mut self, now: Time, from: PeerId, t: &Transmit) {
        if let (Some(item), Transmit::Data(d)) = (trace_item(), t) {
            let line = format!("{:?}", d.msg);
            if line.contains(item) {
                eprintln!(
                    "trace t={:.2}s {} -> {}: {line}",
                    now.as_duration().as_secs_f64(),
                    from.short(),
                    d.to.short()
                );
            }
        }
        self.count(now, transmit_kind(t));
        if let Transmit::Data(d) = t {
            match &d.msg {
                data::Message::Pcg(m) => self.data_bytes += m.data_bytes() as u64,
                data::Message::Rbfs(m) => self.attribute(m),
            }
        }
    }

    fn event(&mut self, now: Time, node: PeerId, e: Event) {
        if let Some(item) = trace_item() {
            let line = format!("{e:?}");
            if line.contains(item) || matches!(e, Event::Membership(_)) && line.contains("Dead") {
                eprintln!(
                    "trace t={:.2}s {}: {line}",
                    now.as_duration().as_secs_f64(),
                    node.short()
                );
            }
        }
        match e {
            Event::Data(data::Event::Rbfs(e)) => self.search_event(now, node, e),
            Event::Data(data::Event::Pcg(e)) => {
                if let (Some(drops), pcg::Event::Dropped(item)) = (&mut self.drops, &e) {
                    drops.push((now, node, *item));
                }
                *self.pcg_events.entry(e.kind()).or_default() += 1;
            }
            Event::Membership(e) => {
                if let membership::Event::PeerRemoved {
                    id,
                    reason: RemoveReason::Dead,
                } = &e
                {
                    if let Some(died) = self.killed.remove(id) {
                        self.detection_s
                            .push(now.saturating_since(died).as_secs_f64());
                    } else if self.alive.get(id) == Some(&true) {
                        self.false_dead += 1;
                    }
                }
                if let Some(k) = membership_label(&e) {
                    *self.membership_events.entry(k).or_default() += 1;
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
enum Ev {
    Start { slot: u32 },
    Store { index: u32 },
    ChurnTick,
    Kill { slot: u32, inc: u32 },
    Probe,
    Sweep { item: u32 },
    SearchFor { item: Box<ItemId> },
    Delete { item: u32 },
    Sample,
}

impl Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Start { .. } => 1,
            Ev::Store { .. } => 3,
            Ev::ChurnTick => 4,
            Ev::Kill { .. } => 5,
            Ev::Probe => 8,
            Ev::Sweep { .. } => 9,
            Ev::Sample => 10,
            Ev::SearchFor { .. } => 11,
            Ev::Delete { .. } => 12,
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

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A running simulation.
pub struct World {
    sc: Scenario,
    rng: SmallRng,
    net: Net<SimStore>,
    stats: Stats,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// Per slot: the incarnation now (or next) in it, and when it started.
    incs: Vec<u32>,
    born: Vec<Option<Time>>,
    items: Vec<ItemId>,
    stored: usize,
    log: u64,
    events: u64,
    report: Report,
    last_sample: Time,
    progress: Option<Box<dyn Fn(f64) + Send>>,
    /// Invariant checks: when each dead node died, and items whose last copy died.
    died_at: BTreeMap<PeerId, Time>,
    destroyed: std::collections::BTreeSet<ItemId>,
    dropped: std::collections::BTreeSet<ItemId>,
}

impl World {
    /// Builds the world: `nodes` slots on `sites` sites, each node started at a random instant
    /// within `start_spread`. Panics on a configuration [`try_new`](Self::try_new) refuses.
    pub fn new(sc: Scenario) -> Self {
        match Self::try_new(sc) {
            Ok(w) => w,
            Err(e) => panic!("butter-sim: invalid node configuration: {e}"),
        }
    }

    /// Builds the world, or says which node setting is out of range.
    pub fn try_new(sc: Scenario) -> Result<Self, ConfigError> {
        // The same check the daemon makes before it starts a node.
        NodeCore::new(
            sc.core.clone(),
            PeerRecord {
                id: make_id(sc.seed, 0, 0),
                addrs: Vec::new(),
                site: String::new(),
                uptime_secs: 0,
                storage_free: 0,
                known_hosts: 0,
                public: false,
                relays: Vec::new(),
            },
            SimStore::new(0, false),
            Time::ZERO,
            0,
        )?;
        let mut net = Net::new(sc.net.clone(), sc.partitions.clone(), sc.seed);
        let sites = sc.sites.max(1);
        for i in 0..sc.nodes {
            net.add_slot((i % sites) as u16);
        }
        let mut w = World {
            rng: SmallRng::seed_from_u64(mix(sc.seed)),
            net,
            stats: Stats {
                measure_from: Time::from_duration(sc.measure_from),
                drops: sc.check_invariants.then(Vec::new),
                ..Stats::default()
            },
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            incs: vec![0; sc.nodes],
            born: vec![None; sc.nodes],
            items: Vec::new(),
            stored: 0,
            log: mix(sc.seed),
            events: 0,
            report: Report {
                seed: sc.seed,
                items: sc.items,
                ..Report::default()
            },
            last_sample: Time::ZERO,
            progress: None,
            died_at: BTreeMap::new(),
            destroyed: std::collections::BTreeSet::new(),
            dropped: std::collections::BTreeSet::new(),
            sc,
        };
        w.schedule_initial();
        Ok(w)
    }

    /// Reports progress (fraction of simulated time done) to `f` about once per simulated second.
    pub fn on_progress(&mut self, f: impl Fn(f64) + Send + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// Starts incarnation `incs[s]` in the empty slot `s`.
    fn start_node(&mut self, s: usize) {
        let inc = self.incs[s];
        let slot = s as u32;
        let id = make_id(self.sc.seed, slot, inc);
        let record = PeerRecord {
            id,
            addrs: vec![self.net.addr(s)],
            site: format!("site-{}", self.net.site(s)),
            uptime_secs: 0,
            storage_free: self.sc.store_bytes,
            known_hosts: 0,
            public: false,
            relays: Vec::new(),
        };
        let nseed = mix(self.sc.seed ^ mix(u64::from(slot) << 32 | u64::from(inc)));
        // A liar's slot lies in its first life only: its replacement is an honest node.
        let liar = inc == 0 && self.sc.liars.contains(&s);
        let store = SimStore::new(self.sc.store_bytes, liar);
        let Ok(mut core) = NodeCore::new(self.sc.core.clone(), record, store, self.now, nseed)
        else {
            // Checked in `try_new`: the configuration is the same for every node.
            return;
        };
        // Bootstrap: the first node of its own site and of the next two, as a compose LAN node
        // is given its gateways (a handful of seeds, not the whole network).
        let sites = self.sc.sites.max(1).min(self.net.slots());
        let site = usize::from(self.net.site(s));
        let own = self.net.addr(s);
        let seeds: Vec<_> = (0..BOOTSTRAP_SITES.min(sites))
            .map(|k| self.net.addr((site + k) % sites))
            .filter(|a| *a != own)
            .collect();
        core.set_bootstrap(self.now, seeds);
        self.stats.alive.insert(id, true);
        self.born[s] = Some(self.now);
        self.net.start(s, core, &mut self.stats);
        if let Some(session) = self.sc.churn.session(&mut self.rng) {
            let from = self.now.max(Time::from_duration(self.sc.churn_window.0));
            self.push(from + session, Ev::Kill { slot, inc });
        }
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
        for slot in 0..sc.nodes as u32 {
            let at = sc.start_spread.mul_f64(self.rng.random_range(0.0..1.0));
            self.push(Time::from_duration(at), Ev::Start { slot });
        }
        // Items: content derived from the seed and index, so each run has its own items.
        for i in 0..sc.items {
            let span = sc.store_window.1.saturating_sub(sc.store_window.0);
            let at = sc.store_window.0 + span.mul_f64(i as f64 / sc.items.max(1) as f64);
            self.push(Time::from_duration(at), Ev::Store { index: i as u32 });
        }
        if !matches!(sc.churn, Churn::None) {
            self.push(Time::from_duration(sc.churn_window.0), Ev::ChurnTick);
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

    fn live(&self, s: usize) -> bool {
        self.net.node(s).is_some()
    }

    fn random_live_slot(&mut self) -> Option<usize> {
        let n = self.net.slots();
        if n == 0 {
            return None;
        }
        for _ in 0..64 {
            let s = self.rng.random_range(0..n);
            if self.live(s) {
                return Some(s);
            }
        }
        (0..n).find(|s| self.live(*s))
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
        while let Some(Reverse(top)) = self.queue.peek() {
            if top.at > end {
                break;
            }
            let Some(Reverse(s)) = self.queue.pop() else {
                break;
            };
            // The network runs up to the instant, then the workload acts at it.
            self.net.run_until(s.at, &mut self.stats);
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
        self.net.run_until(end, &mut self.stats);
        self.now = end;
        self.sample();
        self.finish()
    }

    fn finish(mut self) -> Report {
        let mut queries = std::mem::take(&mut self.stats.queries);
        // Messages keep arriving after an outcome (other branches of the search): count them all.
        for t in &self.stats.tracks {
            match t.done {
                Some(i) => queries[i].messages = t.messages,
                None => queries.push(QueryOutcome {
                    found: false,
                    hops: 0,
                    messages: t.messages,
                    seconds: self.now.saturating_since(t.started).as_secs_f64(),
                    sweep: t.sweep,
                    existed: t.existed,
                }),
            }
        }
        self.report.queries = queries;
        let lost = self
            .holder_counts()
            .iter()
            .take(self.stored)
            .filter(|c| **c == 0)
            .count();
        self.report.lost_at_end = lost;
        if self.sc.check_invariants {
            let r = self.sc.core.pcg.replicas;
            let counts = self.holder_counts();
            let destroyed = &self.destroyed;
            let items = &self.items;
            let live = |i: &usize| !destroyed.contains(&items[*i]);
            let inv = &mut self.report.invariants;
            inv.destroyed = self
                .items
                .iter()
                .take(self.stored)
                .filter(|i| self.destroyed.contains(i))
                .count();
            inv.dropped_by_live = self.dropped.len();
            for (t, node, item) in self.stats.drops.iter().flatten() {
                if self.dropped.contains(item) {
                    inv.drop_trace.push(format!(
                        "t={:.2}s node={} item={}",
                        t.as_duration().as_secs_f64(),
                        node.short(),
                        item.short()
                    ));
                }
            }
            inv.under_r_at_end = (0..self.stored)
                .filter(|i| live(i) && counts[*i] < r)
                .count();
            inv.over_r_at_end = (0..self.stored).filter(|i| counts[*i] > r).count();
            let now = self.now;
            for i in (0..self.stored).filter(|i| !destroyed.contains(&items[*i]) && counts[*i] < r)
            {
                let id = items[i];
                for (slot, n) in self.net.nodes().filter(|(_, n)| n.store().contains(&id)) {
                    let slot = if n.store().is_liar() {
                        format!("{slot} (liar)")
                    } else {
                        slot.to_string()
                    };
                    let view = TableView::new(n.table(), now, n.id(), n.site());
                    let line = match n.data().pcg().group(&id, &view) {
                        Some(g) => {
                            let members: Vec<String> = g
                                .members
                                .iter()
                                .map(|m| {
                                    let up = self.stats.alive.get(&m.id) == Some(&true);
                                    format!(
                                        "{}{}{}",
                                        m.id.short(),
                                        if up { "" } else { "(dead)" },
                                        if m.holding { "+" } else { "" }
                                    )
                                })
                                .collect();
                            format!(
                                "item={} holder slot {slot}: v{} [{}] leader={} orphan={} state={:?}",
                                id.short(),
                                g.view.version,
                                members.join(" "),
                                g.leader.map(|l| l.short()).unwrap_or_default(),
                                g.orphan,
                                g.state
                            )
                        }
                        None => format!("item={} holder slot {slot}: no group", id.short()),
                    };
                    inv.under_r_trace.push(line);
                }
            }
        }
        for born in self.born.iter().flatten() {
            self.report.node_seconds += self.now.saturating_since(*born).as_secs_f64();
        }
        for (k, v) in &self.stats.msg_counts {
            self.report.messages.insert((*k).to_owned(), *v);
        }
        for (k, v) in &self.stats.pcg_events {
            self.report.pcg_events.insert((*k).to_owned(), *v);
        }
        for (k, v) in &self.stats.membership_events {
            self.report.membership_events.insert((*k).to_owned(), *v);
        }
        self.report.data_bytes = self.stats.data_bytes;
        self.report.detection_s = std::mem::take(&mut self.stats.detection_s);
        self.report.undetected = self.stats.killed.len() as u64;
        self.report.false_dead = self.stats.false_dead;
        self.report.events = self.events + self.net.events();
        self.report.log_hash = format!(
            "{:016x}",
            mix(self.log ^ self.events ^ self.net.log_hash().rotate_left(29))
        );
        self.report
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Start { slot } => {
                let s = slot as usize;
                if !self.live(s) {
                    self.start_node(s);
                }
            }
            Ev::Store { index } => {
                let content = self.content(index);
                // Stored from an honest node: a liar's own application would lose its data to
                // its own node, which no protocol can prevent.
                let mut pick = None;
                for _ in 0..8 {
                    if let Some(s) = self.random_live_slot()
                        && self.net.node(s).is_some_and(|n| !n.store().is_liar())
                    {
                        pick = Some(s);
                        break;
                    }
                }
                let Some(s) = pick else {
                    return;
                };
                let id = self
                    .net
                    .with_node(s, &mut self.stats, |n, now| n.put(now, content).ok())
                    .flatten();
                if let Some(id) = id {
                    self.items.push(id);
                    self.stored += 1;
                }
            }
            Ev::ChurnTick => {
                if let Churn::PerSecond { chance } = self.sc.churn {
                    for s in 0..self.net.slots() {
                        if self.live(s) && self.rng.random_bool(chance.clamp(0.0, 1.0)) {
                            self.kill_and_replace(s);
                        }
                    }
                }
                if let Churn::SiteFailure { site, at } = self.sc.churn {
                    if self.now >= Time::from_duration(at) {
                        for s in 0..self.net.slots() {
                            if self.live(s) && usize::from(self.net.site(s)) == site {
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
                if self.incs[s] == inc
                    && self.live(s)
                    && self.now < Time::from_duration(self.sc.churn_window.1)
                {
                    self.kill_and_replace(s);
                }
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
            Ev::Delete { item } => {
                let Some(id) = self.items.get(item as usize).copied() else {
                    return;
                };
                let holder = self
                    .net
                    .nodes()
                    .find(|(_, n)| n.store().contains(&id))
                    .map(|(s, _)| s);
                if let Some(s) = holder {
                    self.net
                        .with_node(s, &mut self.stats, |n, now| n.delete(now, id));
                }
            }
            Ev::Sample => {
                self.sample();
                let next = self.now + self.sc.sample_every;
                self.push(next, Ev::Sample);
            }
        }
    }

    /// Schedules a delete of the `index`-th item stored, by one of its holders, at `at`.
    pub fn delete_at(&mut self, at: Duration, index: u32) {
        self.push(Time::from_duration(at), Ev::Delete { item: index });
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
            if self.net.node(s).is_some_and(|n| !n.store().contains(&id)) {
                origin = Some(s);
                break;
            }
        }
        let Some(s) = origin else { return };
        let existed = self.holder_count(&id) > 0;
        let Some(pid) = self.net.node(s).map(|n| n.id()) else {
            return;
        };
        let idx = self.stats.tracks.len();
        self.stats.tracks.push(Track {
            messages: 0,
            started: self.now,
            sweep,
            existed,
            done: None,
        });
        self.stats.by_origin.insert((pid, id), idx);
        self.net
            .with_node(s, &mut self.stats, |n, now| n.find(now, id));
    }

    fn holder_count(&self, id: &ItemId) -> usize {
        self.net
            .nodes()
            .filter(|(_, n)| n.store().really_holds(id))
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
        for (_, n) in self.net.nodes().filter(|(_, n)| !n.store().is_liar()) {
            for id in n.store().ids() {
                if let Some(i) = index.get(&id) {
                    counts[*i] += 1;
                }
            }
        }
        counts
    }

    fn sample(&mut self) {
        let r = self.sc.core.pcg.replicas;
        let counts = self.holder_counts();
        let live = self.net.nodes().count();
        let secs = self.now.saturating_since(self.last_sample).as_secs_f64();
        let s = Sample {
            t: self.now.as_duration().as_secs_f64(),
            live_nodes: live,
            held_ok: counts.iter().filter(|c| **c >= r).count(),
            held_low: counts.iter().filter(|c| **c > 0 && **c < r).count(),
            lost: counts.iter().filter(|c| **c == 0).count(),
            stored: self.stored,
            found: std::mem::take(&mut self.stats.window_found),
            failed: std::mem::take(&mut self.stats.window_failed),
            msgs_per_node_s: if secs > 0.0 {
                std::mem::take(&mut self.stats.window_msgs) as f64 / secs / live.max(1) as f64
            } else {
                0.0
            },
        };
        self.last_sample = self.now;
        self.report.series.push(s);
        if self.sc.check_invariants {
            self.check(&counts);
        }
    }

    /// The per-sample invariant checks: no item vanishes from live nodes unless its last copy
    /// died; how long dead nodes linger in live tables.
    fn check(&mut self, counts: &[usize]) {
        for (i, c) in counts.iter().enumerate().take(self.stored) {
            let id = self.items[i];
            if *c == 0 && !self.destroyed.contains(&id) && self.dropped.insert(id) {
                let t = self.now.as_duration().as_secs_f64();
                let first = &mut self.report.invariants.first_dropped_s;
                first.get_or_insert(t);
            }
        }
        let mut worst = 0.0f64;
        for (_, n) in self.net.nodes() {
            for h in n.table().iter() {
                if let Some(died) = self.died_at.get(&h.record.id) {
                    worst = worst.max(self.now.saturating_since(*died).as_secs_f64());
                }
            }
        }
        let inv = &mut self.report.invariants;
        inv.stale_dead_max_s = inv.stale_dead_max_s.max(worst);
    }

    /// Kills the node in slot `s` (a crash: nothing is sent) and starts an empty one with a new
    /// identity at the same address.
    fn kill_and_replace(&mut self, s: usize) {
        if self.sc.check_invariants {
            if let Some(n) = self.net.node(s).filter(|n| !n.store().is_liar()) {
                let held: Vec<ItemId> = n.store().ids();
                for id in held {
                    let others = self
                        .net
                        .nodes()
                        .filter(|(o, n)| *o != s && n.store().really_holds(&id))
                        .count();
                    if others == 0 {
                        self.destroyed.insert(id);
                    }
                }
            }
        }
        let Some(dead) = self.net.kill(s) else {
            return;
        };
        if self.sc.check_invariants {
            self.died_at.insert(dead.id(), self.now);
        }
        self.report.deaths += 1;
        self.report.bytes_lost_by_deaths += dead.store().usage().used;
        if let Some(born) = self.born[s].take() {
            self.report.node_seconds += self.now.saturating_since(born).as_secs_f64();
        }
        // Only a death some table can notice is waited for: a node nobody knew is not "missed".
        self.stats.alive.insert(dead.id(), false);
        self.stats.killed.insert(dead.id(), self.now);
        self.log(s as u64, 0xdead);
        self.incs[s] += 1;
        self.start_node(s);
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
        assert_eq!(&id.0[..4], &1234u32.to_be_bytes());
        assert_eq!(&id.0[4..8], &5u32.to_be_bytes());
        assert_ne!(make_id(7, 1234, 5), make_id(8, 1234, 5));
    }

    #[test]
    fn an_invalid_node_configuration_is_refused_with_its_reason() {
        let mut sc = Scenario::default();
        sc.core.pcg.replicas = 0;
        let err = World::try_new(sc).err().expect("refused");
        assert!(err.to_string().starts_with("data:"), "{err}");
    }
}
