//! Retrieval: ask known holders first, else a budgeted random breadth-first search guided by
//! neighbour summaries; the original's RBFS and an exhaustive BFS remain as baselines.
//!
//! ## Concepts
//! - A **search** ([`Node::find`]) runs up to [`Config::attempts`] *attempts*, each a query with a
//!   fresh [`QueryId`], a hop limit and a message **budget**; the budget grows by
//!   [`Config::budget_growth`] per attempt. A search that finds nothing ends with
//!   [`Event::NotFound`] after a bounded time and a bounded number of messages: at most
//!   `Σ (2·budget_i + parallel + 1)` queries plus the replies.
//! - **Neighbour summaries** (Gia's one-hop replication of *indexes*, not data): every node pulls
//!   from each known host a Bloom filter of the items it holds ([`Message::SummaryPull`] answered by
//!   [`Message::Summary`]). A pull also subscribes the puller: the holder then pushes its summary
//!   again whenever its holdings changed (checked every [`Config::summary_interval`]), and pullers
//!   refresh a summary (and their subscription) only after [`Config::summary_refresh`] of silence.
//!   A node that receives a query therefore answers for its whole neighbourhood: if a neighbour's
//!   filter holds the item, the query goes straight to it. Steady-state cost is a fixed number of
//!   messages per known host per refresh period, whatever the number of items.
//! - **Hints**: holders seen in answers (and any the driver adds, e.g. from PCG views) are
//!   remembered, bounded, and asked first.
//! - **Strategies** ([`Strategy`]): `Guided` (ours: hints, summaries, budgeted random fan-out of a
//!   fraction `p` of known hosts, capped), `Random` (the original RBFS: forward to a fraction `p` of
//!   known hosts at every hop, no hints) and `Flood` (exhaustive BFS).
//! - Duplicate suppression: every node remembers query ids for [`Config::seen_ttl`] and drops
//!   repeats. Answers travel back along the path ([`Reply::Path`], each node remembers who asked
//!   it) or straight to the origin ([`Reply::Direct`]). Content is verified against the item id
//!   before a search reports success.
//!
//! ## Driving a node
//! [`Node::find`] starts a search; [`Node::handle_message`] takes every RBFS message;
//! [`Node::handle_timeout`] runs at [`Node::poll_timeout`]; drain [`Node::poll_transmit`] and
//! [`Node::poll_event`] after each call. Every call gets the local [`Store`] (to answer queries and
//! summarise holdings) and the [`HostView`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::item::{self, ConfigError, Item, ItemId, Manifest, Store};
pub use crate::pcg::HostView;
use crate::time::Time;

/// How queries spread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Strategy {
    /// Ours: hints and neighbour summaries first, then a budgeted random fan-out.
    Guided,
    /// The original RBFS: a fraction `p` of known hosts at every hop, until the hop limit.
    Random,
    /// Exhaustive breadth-first flood to every known host, until the hop limit.
    Flood,
}

/// How answers travel back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// Back along the query's path (works through NATs: every hop already has a connection).
    Path,
    /// Straight to the origin.
    Direct,
}

/// RBFS settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// How queries spread. Default [`Strategy::Guided`].
    pub strategy: Strategy,
    /// Fraction `p` of known hosts a node forwards to. Default 0.5.
    pub fraction: f64,
    /// Hop limit. Default 4.
    pub max_hops: u8,
    /// Forwards one node makes at most (Guided only). Default 4.
    pub max_fanout: usize,
    /// Query messages of the first attempt (Guided only). Default 16.
    pub budget: u32,
    /// Factor by which the budget grows per attempt. Default 3.
    pub budget_growth: u32,
    /// Attempts per search. Default 3.
    pub attempts: u32,
    /// Known holders asked at once. Default 2.
    pub parallel: usize,
    /// Round-trip allowance per hop; an attempt lasts `2 · hops · hop_timeout`. Default 150 ms.
    pub hop_timeout: Duration,
    /// How answers travel back. Default [`Reply::Path`].
    pub reply: Reply,
    /// How long query ids are remembered for duplicate suppression. Default 30 s.
    pub seen_ttl: Duration,
    /// How often a node checks whether its holdings changed and, if so, pushes its summary to its
    /// subscribers; also how often it looks for known hosts whose summary it lacks (Guided only).
    /// Default 10 s.
    pub summary_interval: Duration,
    /// A neighbour's summary not heard of for this long is pulled again (renewing the
    /// subscription). Default 300 s.
    pub summary_refresh: Duration,
    /// Bloom filter bits per item in summaries. Default 16 (false positives ≈ 0.05 %).
    pub summary_bits_per_item: u32,
    /// Holder hints remembered. Default 4096.
    pub max_hints: usize,
    /// Timer jitter, a fraction of the period. Default 0.2.
    pub jitter: f64,
    /// Item limits (to check manifests in answers).
    pub item: item::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::Guided,
            fraction: 0.5,
            max_hops: 4,
            max_fanout: 4,
            budget: 16,
            budget_growth: 3,
            attempts: 3,
            parallel: 2,
            hop_timeout: Duration::from_millis(150),
            reply: Reply::Path,
            seen_ttl: Duration::from_secs(30),
            summary_interval: Duration::from_secs(10),
            summary_refresh: Duration::from_secs(300),
            summary_bits_per_item: 16,
            max_hints: 4096,
            jitter: 0.2,
            item: item::Config::default(),
        }
    }
}

impl Config {
    /// The original Butter's RBFS: `p = 0.5` of known hosts per hop, no hints, no budget.
    pub fn original() -> Self {
        Config {
            strategy: Strategy::Random,
            attempts: 1,
            ..Config::default()
        }
    }

    /// Exhaustive BFS with a hop limit of `hops`.
    pub fn flood(hops: u8) -> Self {
        Config {
            strategy: Strategy::Flood,
            attempts: 1,
            max_hops: hops,
            ..Config::default()
        }
    }

    /// Checks the settings can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError::Invalid { field, reason });
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return bad("fraction", "must be in (0, 1]");
        }
        if self.max_hops == 0 {
            return bad("max_hops", "must be at least 1");
        }
        if self.attempts == 0 {
            return bad("attempts", "must be at least 1");
        }
        if self.max_fanout == 0 || self.parallel == 0 {
            return bad("max_fanout", "fan-outs must be at least 1");
        }
        if self.budget_growth == 0 {
            return bad("budget_growth", "must be at least 1");
        }
        if self.hop_timeout.is_zero()
            || self.summary_interval.is_zero()
            || self.summary_refresh < self.summary_interval
        {
            return bad("hop_timeout", "timers must be > 0");
        }
        if !(1..=64).contains(&self.summary_bits_per_item) {
            return bad("summary_bits_per_item", "must be in 1..=64");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("jitter", "must be in [0, 1)");
        }
        self.item.validate()
    }
}

/// A query (and search) id, random so that ids from different origins do not collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueryId(pub u64);

/// A Bloom filter of item ids: a node's summary of what it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bloom {
    bits: Vec<u64>,
    hashes: u8,
}

impl Bloom {
    /// A filter sized for `items` at `bits_per_item`.
    pub fn new(items: usize, bits_per_item: u32) -> Self {
        let m = (items * bits_per_item as usize).max(64).div_ceil(64);
        let hashes = ((bits_per_item as f64) * std::f64::consts::LN_2)
            .round()
            .clamp(1.0, 16.0);
        Bloom {
            bits: vec![0; m],
            hashes: hashes as u8,
        }
    }

    fn positions(&self, id: &ItemId) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bits.len() * 64) as u64;
        let h1 = id.word(0);
        let h2 = id.word(1) | 1;
        (0..u64::from(self.hashes.min(32)))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1)) as usize)
    }

    /// Adds an item.
    pub fn insert(&mut self, id: &ItemId) {
        if self.bits.is_empty() {
            return;
        }
        let pos: Vec<usize> = self.positions(id).collect();
        for p in pos {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    /// Whether the item may be in the set (false positives possible, no false negatives). A filter
    /// with no hash functions (only a peer's forged summary has none) matches nothing rather than
    /// everything, so it cannot draw every search to its sender.
    pub fn contains(&self, id: &ItemId) -> bool {
        self.is_usable()
            && self
                .positions(id)
                .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    /// Whether the filter can hold anything: it has bits and hash functions. An unusable one (only
    /// a peer's forged summary) matches nothing.
    pub fn is_usable(&self) -> bool {
        !self.bits.is_empty() && self.hashes > 0
    }

    /// Size in bytes on the wire (roughly).
    pub fn byte_len(&self) -> usize {
        self.bits.len() * 8 + 1
    }
}

/// A query travelling through the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The attempt's id.
    pub id: QueryId,
    /// What is sought.
    pub item: ItemId,
    /// Who asked (for [`Reply::Direct`]).
    pub origin: PeerId,
    /// Links travelled to reach the receiver.
    pub hops: u8,
    /// Further hops allowed.
    pub ttl: u8,
    /// Forwards the receiver's subtree may still make (Guided).
    pub budget: u32,
}

/// RBFS messages, carried in `wire::Request::Overlay { name: "rbfs" }` bodies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A query.
    Query(Query),
    /// An answer, travelling back to the origin.
    Hit {
        /// The attempt answered.
        id: QueryId,
        /// The item.
        item: ItemId,
        /// Who holds it.
        holder: PeerId,
        /// Hops from the origin to the holder.
        hops: u8,
        /// The content, for items of one block.
        content: Option<Vec<u8>>,
        /// The manifest, for larger items (blocks are fetched from the holder).
        manifest: Option<Manifest>,
    },
    /// "Send me your summary unless it is still `have`."
    SummaryPull {
        /// The epoch of the summary the asker holds.
        have: Option<u64>,
    },
    /// A node's summary (`filter: None` means "unchanged since `epoch`").
    Summary {
        /// Changes whenever the holdings change.
        epoch: u64,
        /// The filter, unless unchanged.
        filter: Option<Bloom>,
    },
}

impl Message {
    /// The query this message belongs to (for counting messages per query).
    pub fn query_id(&self) -> Option<QueryId> {
        match self {
            Message::Query(q) => Some(q.id),
            Message::Hit { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// A stable label for metrics and message counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Query(_) => "query",
            Message::Hit { .. } => "hit",
            Message::SummaryPull { .. } => "summary_pull",
            Message::Summary { .. } => "summary",
        }
    }
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The destination.
    pub to: PeerId,
    /// The message.
    pub msg: Message,
}

/// Outcomes of searches started here.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The item was found. `content` is verified against the id; for items that travel in blocks
    /// it is `None` and `manifest` says what to fetch from `holder`.
    Found {
        /// The search (the id [`Node::find`] returned).
        search: QueryId,
        /// The item.
        item: ItemId,
        /// Who holds it (this node for a local hit).
        holder: PeerId,
        /// Hops from here to the holder.
        hops: u8,
        /// Attempts used (0: local).
        attempts: u32,
        /// Time from [`Node::find`] to the answer.
        elapsed: Duration,
        /// The verified content.
        content: Option<Item>,
        /// The manifest of a large item.
        manifest: Option<Manifest>,
    },
    /// Every attempt ran out.
    NotFound {
        /// The search.
        search: QueryId,
        /// The item.
        item: ItemId,
        /// Time from [`Node::find`] to giving up.
        elapsed: Duration,
    },
    /// An answer whose content did not match the id was dropped.
    Corrupt {
        /// The item.
        item: ItemId,
        /// Who claimed to hold it.
        holder: PeerId,
    },
}

#[derive(Debug)]
struct Search {
    item: ItemId,
    started: Time,
    attempt: u32,
    current: QueryId,
    deadline: Time,
    /// Holders asked directly already (never asked twice).
    asked: BTreeSet<PeerId>,
    /// Whether the current attempt only asked hinted holders (no fan-out yet).
    hint_only: bool,
}

#[derive(Debug)]
struct Summary {
    epoch: u64,
    filter: Bloom,
    at: Time,
}

/// One node's retrieval state machine. See the module docs for the call order.
#[derive(Debug)]
pub struct Node {
    me: PeerId,
    config: Config,
    rng: SmallRng,
    /// Query id → who sent it to us (None: we are the origin).
    seen: BTreeMap<QueryId, Option<PeerId>>,
    seen_expiry: VecDeque<(Time, QueryId)>,
    /// Search id → state; attempt ids map to their search through `attempts`.
    searches: BTreeMap<QueryId, Search>,
    attempts: BTreeMap<QueryId, QueryId>,
    summaries: BTreeMap<PeerId, Summary>,
    own: Option<(u64, u64, Bloom)>,
    own_epoch: u64,
    /// Who pulled our summary, until when they want pushes.
    subscribers: BTreeMap<PeerId, Time>,
    pushed_epoch: u64,
    hints: BTreeMap<ItemId, Vec<PeerId>>,
    hint_order: VecDeque<ItemId>,
    next_summary: Option<Time>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Node {
    /// A node `me`; `seed` seeds its RNG (query ids, random choices, jitter).
    pub fn new(me: PeerId, config: Config, seed: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Node {
            me,
            config,
            rng: SmallRng::seed_from_u64(seed),
            seen: BTreeMap::new(),
            seen_expiry: VecDeque::new(),
            searches: BTreeMap::new(),
            attempts: BTreeMap::new(),
            summaries: BTreeMap::new(),
            own: None,
            own_epoch: 0,
            subscribers: BTreeMap::new(),
            pushed_epoch: 0,
            hints: BTreeMap::new(),
            hint_order: VecDeque::new(),
            next_summary: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts pulling neighbour summaries (Guided only). Call once when the node starts.
    pub fn start(&mut self, now: Time) {
        if self.config.strategy == Strategy::Guided && self.next_summary.is_none() {
            // Spread first pulls over one interval so a simultaneous start does not burst.
            let first = self
                .config
                .summary_interval
                .mul_f64(self.rng.random_range(0.0..1.0));
            self.next_summary = Some(now + first);
        }
    }

    /// Remembers that `peers` hold `item` (e.g. from a PCG view).
    pub fn add_hint(&mut self, item: ItemId, peers: &[PeerId]) {
        let entry = self.hints.entry(item).or_insert_with(|| {
            self.hint_order.push_back(item);
            Vec::new()
        });
        for p in peers {
            if *p != self.me && !entry.contains(p) {
                entry.push(*p);
            }
        }
        if entry.len() > 8 {
            let excess = entry.len() - 8;
            entry.drain(..excess);
        }
        while self.hint_order.len() > self.config.max_hints {
            if let Some(old) = self.hint_order.pop_front() {
                self.hints.remove(&old);
            }
        }
    }

    /// The hosts this node was told hold `item` (its group's members), if any.
    pub fn hint(&self, item: &ItemId) -> Option<&[PeerId]> {
        self.hints.get(item).map(Vec::as_slice)
    }

    /// Forgets the holders remembered for `item` (it was deleted: they hold nothing).
    pub fn forget_hint(&mut self, item: &ItemId) {
        if self.hints.remove(item).is_some() {
            self.hint_order.retain(|i| i != item);
        }
    }

    /// Starts a search for `item`. A local hit completes at once (see [`Node::poll_event`]).
    pub fn find(
        &mut self,
        now: Time,
        item: ItemId,
        store: &dyn Store,
        hosts: &dyn HostView,
    ) -> QueryId {
        let search = QueryId(self.rng.random());
        if let Some(it) = store.get(&item) {
            self.events.push_back(Event::Found {
                search,
                item,
                holder: self.me,
                hops: 0,
                attempts: 0,
                elapsed: Duration::ZERO,
                manifest: it.manifest(&self.config.item),
                content: Some(it),
            });
            return search;
        }
        self.searches.insert(
            search,
            Search {
                item,
                started: now,
                attempt: 0,
                current: search,
                deadline: now,
                asked: BTreeSet::new(),
                hint_only: false,
            },
        );
        self.run_attempt(now, search, search, store, hosts);
        search
    }

    /// Searches still running.
    pub fn pending(&self) -> usize {
        self.searches.len()
    }

    /// When [`Node::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let searches = self.searches.values().map(|s| s.deadline).min();
        let expiry = self.seen_expiry.front().map(|(t, _)| *t);
        [searches, expiry, self.next_summary]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Timers: attempt deadlines, summary pulls, forgetting old query ids.
    pub fn handle_timeout(&mut self, now: Time, store: &dyn Store, hosts: &dyn HostView) {
        while let Some((t, id)) = self.seen_expiry.front().copied() {
            if t > now {
                break;
            }
            self.seen_expiry.pop_front();
            self.seen.remove(&id);
            self.attempts.remove(&id);
        }
        let due: Vec<QueryId> = self
            .searches
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for search in due {
            let Some(s) = self.searches.get_mut(&search) else {
                continue;
            };
            if s.hint_only {
                // Hinted holders did not answer: fan out within the same attempt.
                s.hint_only = false;
                let q = s.current;
                self.fan_out_from_origin(now, search, q, store, hosts);
                continue;
            }
            s.attempt += 1;
            if s.attempt >= self.config.attempts {
                let s = self.searches.remove(&search).expect("present");
                self.events.push_back(Event::NotFound {
                    search,
                    item: s.item,
                    elapsed: now.saturating_since(s.started),
                });
                continue;
            }
            let q = QueryId(self.rng.random());
            self.run_attempt(now, search, q, store, hosts);
        }
        if self.next_summary.is_some_and(|t| t <= now) {
            self.summary_tick(now, store, hosts);
        }
    }

    /// An RBFS message from `from`.
    pub fn handle_message(
        &mut self,
        now: Time,
        from: PeerId,
        msg: Message,
        store: &dyn Store,
        hosts: &dyn HostView,
    ) {
        match msg {
            Message::Query(q) => self.on_query(now, from, q, store, hosts),
            Message::Hit {
                id,
                item,
                holder,
                hops,
                content,
                manifest,
            } => self.on_hit(now, id, item, holder, hops, content, manifest),
            Message::SummaryPull { have } => {
                let until = now + self.config.summary_refresh * 2;
                self.subscribers.insert(from, until);
                let (epoch, filter) = self.own_summary(store);
                let filter = (have != Some(epoch)).then(|| filter.clone());
                self.send(from, Message::Summary { epoch, filter });
            }
            Message::Summary { epoch, filter } => match filter {
                Some(filter) => {
                    self.summaries.insert(
                        from,
                        Summary {
                            epoch,
                            filter,
                            at: now,
                        },
                    );
                }
                None => {
                    if let Some(s) = self.summaries.get_mut(&from) {
                        if s.epoch == epoch {
                            s.at = now;
                        }
                    }
                }
            },
        }
    }

    // ---- internals ----

    fn send(&mut self, to: PeerId, msg: Message) {
        if to != self.me {
            self.outbox.push_back(Transmit { to, msg });
        }
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        let j = self.config.jitter;
        if j == 0.0 {
            d
        } else {
            d.mul_f64(1.0 + self.rng.random_range(-j..j))
        }
    }

    fn remember(&mut self, now: Time, id: QueryId, prev: Option<PeerId>) {
        self.seen.insert(id, prev);
        self.seen_expiry.push_back((now + self.config.seen_ttl, id));
    }

    fn own_summary(&mut self, store: &dyn Store) -> (u64, &Bloom) {
        let generation = store.generation();
        let stale = self.own.as_ref().is_none_or(|(g, _, _)| *g != generation);
        if stale {
            let ids = store.ids();
            let mut f = Bloom::new(ids.len(), self.config.summary_bits_per_item);
            for id in &ids {
                f.insert(id);
            }
            self.own_epoch += 1;
            self.own = Some((generation, self.own_epoch, f));
        }
        let (_, epoch, f) = self.own.as_ref().expect("just built");
        (*epoch, f)
    }

    fn summary_tick(&mut self, now: Time, store: &dyn Store, hosts: &dyn HostView) {
        let live: BTreeSet<PeerId> = hosts.live_hosts().into_iter().collect();
        self.summaries.retain(|p, _| live.contains(p));
        let refresh = self.config.summary_refresh;
        for p in &live {
            let summary = self.summaries.get(p);
            if summary.is_none_or(|s| now.saturating_since(s.at) >= refresh) {
                let have = summary.map(|s| s.epoch);
                self.send(*p, Message::SummaryPull { have });
            }
        }
        // Push our summary to subscribers when our holdings changed since the last push.
        self.subscribers.retain(|_, until| *until > now);
        let epoch = self.own_summary(store).0;
        let changed = epoch != self.pushed_epoch;
        if let Some((_, _, filter)) = self.own.as_ref().filter(|_| changed).cloned() {
            self.pushed_epoch = epoch;
            let subs: Vec<PeerId> = self.subscribers.keys().copied().collect();
            for p in subs {
                let msg = Message::Summary {
                    epoch,
                    filter: Some(filter.clone()),
                };
                self.send(p, msg);
            }
        }
        let next = self.jittered(self.config.summary_interval);
        self.next_summary = Some(now + next);
    }

    /// Known or summarised holders of `item` among live hosts, excluding `not`.
    fn holders(&self, item: &ItemId, not: &[PeerId], hosts: &dyn HostView) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::new();
        if let Some(h) = self.hints.get(item) {
            out.extend(h.iter().copied().filter(|p| hosts.is_live(p)));
        }
        if self.config.strategy == Strategy::Guided {
            for (p, s) in &self.summaries {
                if s.filter.contains(item) && !out.contains(p) && hosts.is_live(p) {
                    out.push(*p);
                }
            }
        }
        out.retain(|p| *p != self.me && !not.contains(p));
        out
    }

    fn run_attempt(
        &mut self,
        now: Time,
        search: QueryId,
        q: QueryId,
        store: &dyn Store,
        hosts: &dyn HostView,
    ) {
        self.remember(now, q, None);
        self.attempts.insert(q, search);
        let Some(s) = self.searches.get(&search) else {
            return;
        };
        let item = s.item;
        let asked: Vec<PeerId> = s.asked.iter().copied().collect();
        let mut holders = self.holders(&item, &asked, hosts);
        holders.shuffle(&mut self.rng);
        holders.truncate(self.config.parallel);
        let hint_only = !holders.is_empty() && self.config.strategy == Strategy::Guided;
        for h in &holders {
            let query = Query {
                id: q,
                item,
                origin: self.me,
                hops: 1,
                ttl: 0,
                budget: 0,
            };
            self.send(*h, Message::Query(query));
        }
        if let Some(s) = self.searches.get_mut(&search) {
            s.current = q;
            s.asked.extend(holders.iter().copied());
            s.hint_only = hint_only;
        }
        if hint_only {
            let wait = self.config.hop_timeout * 2;
            if let Some(s) = self.searches.get_mut(&search) {
                s.deadline = now + wait;
            }
        } else {
            self.fan_out_from_origin(now, search, q, store, hosts);
        }
    }

    fn fan_out_from_origin(
        &mut self,
        now: Time,
        search: QueryId,
        q: QueryId,
        _store: &dyn Store,
        hosts: &dyn HostView,
    ) {
        let Some(s) = self.searches.get(&search) else {
            return;
        };
        let item = s.item;
        let attempt = s.attempt;
        let budget = self
            .config
            .budget
            .saturating_mul(self.config.budget_growth.saturating_pow(attempt));
        let query = Query {
            id: q,
            item,
            origin: self.me,
            hops: 0,
            ttl: self.config.max_hops,
            budget,
        };
        let exclude: Vec<PeerId> = s.asked.iter().copied().collect();
        self.spread(&query, &exclude, hosts);
        let wait = self.config.hop_timeout * 2 * u32::from(self.config.max_hops);
        if let Some(s) = self.searches.get_mut(&search) {
            s.deadline = now + wait;
        }
    }

    /// Forwards `q` (as received, or as created by the origin with `hops = 0`) to the next ring.
    fn spread(&mut self, q: &Query, exclude: &[PeerId], hosts: &dyn HostView) {
        if q.ttl == 0 {
            return;
        }
        let mut live = hosts.live_hosts();
        live.retain(|p| !exclude.contains(p) && *p != self.me);
        if live.is_empty() {
            return;
        }
        let wanted = ((live.len() as f64) * self.config.fraction).ceil() as usize;
        let (k, share, extra) = match self.config.strategy {
            Strategy::Flood => (live.len(), 0, 0),
            Strategy::Random => (wanted.max(1), 0, 0),
            Strategy::Guided => {
                let k = wanted
                    .clamp(1, self.config.max_fanout)
                    .min(q.budget as usize);
                if k == 0 {
                    return;
                }
                let rest = q.budget - k as u32;
                (k, rest / k as u32, rest % k as u32)
            }
        };
        let targets: Vec<PeerId> = if k >= live.len() {
            live
        } else {
            live.choose_multiple(&mut self.rng, k).copied().collect()
        };
        for (i, t) in targets.into_iter().enumerate() {
            let budget = share + u32::from((i as u32) < extra);
            let next = Query {
                // `hops` comes from the peer: a hostile 255 must not overflow.
                hops: q.hops.saturating_add(1),
                ttl: q.ttl - 1,
                budget,
                ..q.clone()
            };
            self.send(t, Message::Query(next));
        }
    }

    fn on_query(
        &mut self,
        now: Time,
        from: PeerId,
        q: Query,
        store: &dyn Store,
        hosts: &dyn HostView,
    ) {
        if self.seen.contains_key(&q.id) {
            return;
        }
        // The sender chose `ttl` and `budget`: never spread further than our own searches would.
        let max_budget = self.config.budget.saturating_mul(
            self.config
                .budget_growth
                .saturating_pow(self.config.attempts.saturating_sub(1)),
        );
        let q = Query {
            ttl: q.ttl.min(self.config.max_hops),
            budget: q.budget.min(max_budget),
            ..q
        };
        self.remember(now, q.id, Some(from));
        if let Some(it) = store.get(&q.item) {
            let manifest = it.manifest(&self.config.item);
            let content = manifest.is_none().then(|| it.content().to_vec());
            let to = match self.config.reply {
                Reply::Path => from,
                Reply::Direct => q.origin,
            };
            let hit = Message::Hit {
                id: q.id,
                item: q.item,
                holder: self.me,
                hops: q.hops,
                content,
                manifest,
            };
            self.send(to, hit);
            return;
        }
        // A direct ask to a summarised holder is one more hop: only within the hop limit.
        if self.config.strategy == Strategy::Guided && q.hops < self.config.max_hops {
            let mut holders = self.holders(&q.item, &[from, q.origin], hosts);
            if !holders.is_empty() {
                holders.shuffle(&mut self.rng);
                // One direct ask at a leaf, up to `parallel` where budget remains.
                let n = (q.budget as usize).clamp(1, self.config.parallel);
                for h in holders.into_iter().take(n) {
                    let next = Query {
                        hops: q.hops + 1,
                        ttl: 0,
                        budget: 0,
                        ..q.clone()
                    };
                    self.send(h, Message::Query(next));
                }
                return;
            }
        }
        self.spread(&q, &[from, q.origin], hosts);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_hit(
        &mut self,
        now: Time,
        id: QueryId,
        item: ItemId,
        holder: PeerId,
        hops: u8,
        content: Option<Vec<u8>>,
        manifest: Option<Manifest>,
    ) {
        self.add_hint(item, &[holder]);
        match self.seen.get(&id) {
            Some(Some(prev)) => {
                let prev = *prev;
                self.send(
                    prev,
                    Message::Hit {
                        id,
                        item,
                        holder,
                        hops,
                        content,
                        manifest,
                    },
                );
            }
            Some(None) | None => {
                let Some(search) = self.attempts.get(&id).copied() else {
                    return;
                };
                let Some(s) = self.searches.get(&search) else {
                    return;
                };
                if s.item != item {
                    return;
                }
                let verified = match (&content, &manifest) {
                    (Some(c), _) => Item::verified(item, c.clone()).ok().map(Some),
                    (None, Some(m)) => {
                        (m.item == item && m.check(&self.config.item).is_ok()).then_some(None)
                    }
                    (None, None) => None,
                };
                let Some(content) = verified else {
                    self.events.push_back(Event::Corrupt { item, holder });
                    return;
                };
                let s = self.searches.remove(&search).expect("present");
                self.events.push_back(Event::Found {
                    search,
                    item,
                    holder,
                    hops,
                    attempts: s.attempt + 1,
                    elapsed: now.saturating_since(s.started),
                    content,
                    manifest,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::MemoryStore;

    #[test]
    fn hints_are_bounded_and_forgotten_for_deleted_items() {
        let me = PeerId([1; 32]);
        let config = Config {
            max_hints: 10,
            ..Config::default()
        };
        let mut n = Node::new(me, config, 1).unwrap();
        let ids: Vec<ItemId> = (0..20u32).map(|i| ItemId::of(&i.to_le_bytes())).collect();
        for id in &ids {
            n.add_hint(*id, &[PeerId([2; 32]), me]);
        }
        assert_eq!(n.hints.len(), 10);
        assert!(!n.hints.contains_key(&ids[0]) && n.hints[&ids[19]] == [PeerId([2; 32])]);
        n.forget_hint(&ids[19]);
        assert_eq!((n.hints.len(), n.hint_order.len()), (9, 9));
        assert!(!n.hints.contains_key(&ids[19]));
    }

    struct Hosts {
        me: PeerId,
        known: Vec<PeerId>,
        dead: BTreeSet<PeerId>,
    }

    impl HostView for Hosts {
        fn live_hosts(&self) -> Vec<PeerId> {
            self.known
                .iter()
                .copied()
                .filter(|p| *p != self.me && !self.dead.contains(p))
                .collect()
        }
        fn is_live(&self, id: &PeerId) -> bool {
            !self.dead.contains(id)
        }
        fn site(&self, _: &PeerId) -> Option<&str> {
            None
        }
        fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
            self.live_hosts()
                .into_iter()
                .filter(|p| !exclude.contains(p))
                .take(k)
                .collect()
        }
    }

    /// `n` nodes on a ring of known hosts (each knows its `k` successors), instant delivery.
    struct Net {
        ids: Vec<PeerId>,
        nodes: Vec<Node>,
        stores: Vec<MemoryStore>,
        known: Vec<Vec<PeerId>>,
        dead: BTreeSet<PeerId>,
        now: Time,
        by_query: BTreeMap<QueryId, usize>,
        other: usize,
        corrupt: usize,
    }

    impl Net {
        fn new(n: usize, k: usize, config: Config) -> Self {
            let ids: Vec<PeerId> = (0..n)
                .map(|i| PeerId::from_public_key(&(i as u32).to_le_bytes()))
                .collect();
            let known = (0..n)
                .map(|i| (1..=k).map(|d| ids[(i + d) % n]).collect())
                .collect();
            let nodes = ids
                .iter()
                .enumerate()
                .map(|(i, id)| Node::new(*id, config.clone(), i as u64).unwrap())
                .collect();
            let stores = (0..n).map(|_| MemoryStore::new(1 << 20)).collect();
            Net {
                ids,
                nodes,
                stores,
                known,
                dead: BTreeSet::new(),
                now: Time::ZERO,
                by_query: BTreeMap::new(),
                other: 0,
                corrupt: 0,
            }
        }
        fn hosts(&self, i: usize) -> Hosts {
            Hosts {
                me: self.ids[i],
                known: self.known[i].clone(),
                dead: self.dead.clone(),
            }
        }
        fn deliver(&mut self) {
            loop {
                let mut any = false;
                for i in 0..self.nodes.len() {
                    while let Some(t) = self.nodes[i].poll_transmit() {
                        any = true;
                        match t.msg.query_id() {
                            Some(q) => *self.by_query.entry(q).or_default() += 1,
                            None => self.other += 1,
                        }
                        if self.dead.contains(&t.to) {
                            continue;
                        }
                        let j = self.ids.iter().position(|p| *p == t.to).unwrap();
                        let h = self.hosts(j);
                        let now = self.now;
                        self.nodes[j].handle_message(now, self.ids[i], t.msg, &self.stores[j], &h);
                    }
                }
                if !any {
                    return;
                }
            }
        }
        fn tick(&mut self, d: Duration) {
            self.now = self.now + d;
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                    let h = self.hosts(i);
                    let now = self.now;
                    self.nodes[i].handle_timeout(now, &self.stores[i], &h);
                }
            }
            self.deliver();
        }
        fn search(&mut self, at: usize, item: ItemId) -> Event {
            let h = self.hosts(at);
            let now = self.now;
            self.nodes[at].find(now, item, &self.stores[at], &h);
            self.deliver();
            for _ in 0..200 {
                while let Some(e) = self.nodes[at].poll_event() {
                    if matches!(e, Event::Corrupt { .. }) {
                        self.corrupt += 1;
                        continue;
                    }
                    return e;
                }
                self.tick(Duration::from_millis(50));
            }
            panic!("search never ended");
        }
    }

    fn msgs(net: &Net) -> usize {
        net.by_query.values().sum()
    }

    #[test]
    fn flood_finds_anything_reachable_and_costs_about_n_times_k() {
        let mut net = Net::new(30, 4, Config::flood(30));
        let item = Item::new(b"x".to_vec());
        net.stores[17].insert(item.clone()).unwrap();
        match net.search(0, item.id()) {
            Event::Found {
                holder, content, ..
            } => {
                assert_eq!(holder, net.ids[17]);
                assert_eq!(content.unwrap(), item);
            }
            e => panic!("{e:?}"),
        }
        assert!(
            msgs(&net) > 30 && msgs(&net) <= 30 * 4 + 20,
            "{}",
            msgs(&net)
        );
    }

    #[test]
    fn a_missing_item_fails_in_bounded_time_and_messages() {
        let config = Config::default();
        let mut net = Net::new(50, 6, config.clone());
        match net.search(3, ItemId::of(b"nowhere")) {
            Event::NotFound { elapsed, .. } => {
                let per_attempt = config.hop_timeout * 2 * u32::from(config.max_hops);
                assert!(elapsed <= per_attempt * config.attempts + Duration::from_millis(100));
            }
            e => panic!("{e:?}"),
        }
        let bound: u32 = (0..config.attempts)
            .map(|a| 2 * config.budget * config.budget_growth.pow(a) + 3)
            .sum();
        assert!(msgs(&net) as u32 <= bound, "{} > {bound}", msgs(&net));
        assert!(msgs(&net) > 0);
    }

    #[test]
    fn summaries_let_a_neighbour_answer_for_its_neighbourhood() {
        let mut net = Net::new(40, 5, Config::default());
        let item = Item::new(b"far".to_vec());
        net.stores[8].insert(item.clone()).unwrap();
        let now = net.now;
        for n in &mut net.nodes {
            n.start(now);
        }
        for _ in 0..30 {
            net.tick(Duration::from_millis(500));
        }
        assert!(net.other > 0, "summaries were pulled");
        // Node 3 knows 4..=8: its summary of 8 sends the query straight there.
        match net.search(3, item.id()) {
            Event::Found {
                holder,
                hops,
                attempts,
                ..
            } => {
                assert_eq!(holder, net.ids[8]);
                assert_eq!((hops, attempts), (1, 1));
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(msgs(&net), 2, "one query, one hit");
    }

    #[test]
    fn changed_holdings_are_pushed_to_subscribers_without_new_pulls() {
        let mut net = Net::new(40, 5, Config::default());
        let now = net.now;
        for n in &mut net.nodes {
            n.start(now);
        }
        for _ in 0..25 {
            net.tick(Duration::from_millis(500));
        }
        let pulls_before = net.other;
        assert!(
            pulls_before >= 40 * 5 * 2,
            "every node pulled every known host"
        );
        let item = Item::new(b"new".to_vec());
        net.stores[8].insert(item.clone()).unwrap();
        for _ in 0..25 {
            net.tick(Duration::from_millis(500));
        }
        // Node 8 pushed once to each of its 5 subscribers; nobody pulled (refresh is 300 s).
        assert_eq!(net.other - pulls_before, 5);
        match net.search(3, item.id()) {
            Event::Found { holder, hops, .. } => assert_eq!((holder, hops), (net.ids[8], 1)),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn answers_travel_back_along_the_path_and_duplicates_are_dropped() {
        let config = Config {
            strategy: Strategy::Random,
            fraction: 1.0,
            attempts: 1,
            max_hops: 10,
            ..Config::default()
        };
        let mut net = Net::new(12, 2, config);
        let item = Item::new(b"y".to_vec());
        net.stores[6].insert(item.clone()).unwrap();
        match net.search(0, item.id()) {
            Event::Found { hops, .. } => assert_eq!(hops, 3, "0→2→4→6 on a ring of step ≤ 2"),
            e => panic!("{e:?}"),
        }
        // Every node forwards a query once at most: at most 2 per node plus the hits.
        assert!(msgs(&net) <= 12 * 2 + 6);
    }

    #[test]
    fn forged_content_is_never_returned() {
        let mut net = Net::new(
            10,
            3,
            Config {
                attempts: 1,
                ..Config::default()
            },
        );
        let item = Item::new(b"real".to_vec());
        net.stores[2].insert(item.clone()).unwrap();
        net.stores[2].corrupt(&item.id(), b"fake".to_vec());
        match net.search(0, item.id()) {
            Event::NotFound { .. } => {}
            e => panic!("{e:?}"),
        }
        assert!(net.corrupt >= 1, "the forged answer was seen and dropped");
    }

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let ids: Vec<ItemId> = (0..1000u32).map(|i| ItemId::of(&i.to_le_bytes())).collect();
        let mut b = Bloom::new(1000, 16);
        for id in &ids {
            b.insert(id);
        }
        assert!(ids.iter().all(|id| b.contains(id)));
        let fp = (1000..101_000u32)
            .filter(|i| b.contains(&ItemId::of(&i.to_le_bytes())))
            .count();
        assert!(fp < 200, "false positives {fp} / 100000");
        assert!(!Bloom::new(0, 16).contains(&ids[0]));
        // A forged summary with no hash functions would match every id: it matches none.
        let forged = Bloom {
            bits: vec![0; 4],
            hashes: 0,
        };
        assert!(ids.iter().all(|id| !forged.contains(id)));
    }

    #[test]
    fn config_validation() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::original().validate().is_ok());
        assert!(
            Config {
                fraction: 0.0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Config {
                attempts: 0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }
}
