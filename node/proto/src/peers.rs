//! The bounded known-host table and its diversity rule.
//!
//! Every node keeps at most [`Config::capacity`] known hosts. When the table is full, a newcomer
//! competes with the incumbents for a place, and the table keeps the set that is most *diverse*:
//! hosts that differ in uptime, free storage, number of known hosts and network location (site) are
//! less likely to fail together and know different parts of the network.
//!
//! ## The rule
//! Each host falls in one of 8 [`Class`]es: its uptime, free storage and known-host count are each
//! above or below the mean over the hosts being compared (the original Butter's rule). Its *crowding*
//! is how many hosts share its class plus [`Config::site_weight`] times how many share its site. At
//! capacity, with probability [`Config::random_factor`] the newcomer is accepted and a random
//! incumbent evicted (exploration: it keeps the table from freezing into one local optimum);
//! otherwise the most crowded host of incumbents-plus-newcomer loses: if that is the newcomer it is
//! rejected, else one of the most crowded incumbents is evicted (a suspect one first, then the one
//! with the most failures, then at random). With `site_weight = 0` and `random_factor = 0` this is
//! exactly the original rule.
//!
//! ## How many hosts of one site
//! A node keeps every host it hears of while the table has room, so on a LAN of N nodes with no
//! other site known it keeps `min(N − 1, capacity)` of them: all of a LAN up to 65 nodes, 64 of a
//! larger one (the *site share*). Once other sites are known the site term makes same-site hosts
//! the most crowded, so they give way to remote ones and a LAN's share shrinks towards
//! `capacity / sites`. Nobody is left with no host: a newcomer is admitted by every table with room
//! and, at capacity, competes on its class and site like anyone else (with `random_factor`
//! exploration on top); and the newcomer's own table has room for all it hears. The LAN tier of
//! the netns lab checks it past the share (72 nodes at once, then 4 joiners one by one: every node
//! keeps `min(N − 1, 64)` same-site hosts, is listed by at least 8 others and the who-knows-whom
//! graph is strongly connected). What did leave nodes alone on large one-host testbeds was the
//! machine's neighbour (ARP) table, shared by every namespace (see the README).
//!
//! Classes and crowding are **recomputed from the table on every decision** (at most `capacity`
//! hosts, a few microseconds), never kept as running counters: the original's incremental counters
//! drifted and at last rejected every newcomer.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::id::PeerId;
use crate::time::Time;
use crate::wire::PeerRecord;

/// Weight of a new RTT sample in the smoothed RTT (1/8, as TCP's SRTT).
const RTT_GAIN: f64 = 0.125;

/// Settings of the known-host table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Most hosts kept. Default 64: enough for a LAN of a few dozen plus a diverse set of remote
    /// hosts, small enough that every decision can afford to look at the whole table.
    pub capacity: usize,
    /// Probability, at capacity, of accepting a newcomer and evicting a random incumbent regardless
    /// of diversity. Default 0.05.
    pub random_factor: f64,
    /// Weight of the site term in a host's crowding, relative to the class term (1.0 = a host
    /// sharing its site counts as much as one sharing its class). Default 1.0.
    pub site_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: 64,
            random_factor: 0.05,
            site_weight: 1.0,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The capacity must be at least 1.
    #[error("capacity must be at least 1")]
    ZeroCapacity,
    /// A probability outside `0..=1`.
    #[error("{name} must be within 0..=1, got {value}")]
    Probability {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A weight that is negative or not finite.
    #[error("{name} must be finite and non-negative, got {value}")]
    Weight {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

impl Config {
    /// Checks that every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if !(0.0..=1.0).contains(&self.random_factor) {
            return Err(ConfigError::Probability {
                name: "random_factor",
                value: self.random_factor,
            });
        }
        if !self.site_weight.is_finite() || self.site_weight < 0.0 {
            return Err(ConfigError::Weight {
                name: "site_weight",
                value: self.site_weight,
            });
        }
        Ok(())
    }
}

/// How a host was first discovered.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum Source {
    /// Heard its LAN multicast beacon and dialled it.
    Multicast,
    /// Dialled one of the configured bootstrap addresses.
    Bootstrap,
    /// Learnt from another host's sample and dialled it.
    Exchange,
    /// It dialled us.
    Inbound,
}

impl Source {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Multicast => "multicast",
            Source::Bootstrap => "bootstrap",
            Source::Exchange => "exchange",
            Source::Inbound => "inbound",
        }
    }
}

/// What the liveness protocol currently thinks of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Liveness {
    /// Answering.
    Alive,
    /// Missed a probe; will be removed unless it refutes in time.
    Suspect,
    /// Named in the Hello sample of a host we reached, not reached by us yet
    /// ([`Table::vouch`]): it holds a free place and counts as known, but it is never shared,
    /// probed, recruited or searched until a Hello with it succeeds, and it yields its place to
    /// any verified newcomer.
    Unverified,
}

/// One of the 8 diversity classes: uptime, free storage and known-host count each above (bit set)
/// or at/below the mean over the hosts compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Class(u8);

impl Class {
    /// Number of classes.
    pub const COUNT: usize = 8;
    const UPTIME: u8 = 1;
    const STORAGE: u8 = 2;
    const KNOWN: u8 = 4;
    const LABELS: [&'static str; 8] = [
        "uptime_lo_storage_lo_known_lo",
        "uptime_hi_storage_lo_known_lo",
        "uptime_lo_storage_hi_known_lo",
        "uptime_hi_storage_hi_known_lo",
        "uptime_lo_storage_lo_known_hi",
        "uptime_hi_storage_lo_known_hi",
        "uptime_lo_storage_hi_known_hi",
        "uptime_hi_storage_hi_known_hi",
    ];

    /// The class from its three halves.
    pub fn new(uptime_high: bool, storage_high: bool, known_high: bool) -> Self {
        let mut bits = 0;
        if uptime_high {
            bits |= Self::UPTIME;
        }
        if storage_high {
            bits |= Self::STORAGE;
        }
        if known_high {
            bits |= Self::KNOWN;
        }
        Class(bits)
    }

    /// Index in `0..8`, e.g. for [`Table::class_counts`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Uptime above the mean.
    pub fn uptime_high(self) -> bool {
        self.0 & Self::UPTIME != 0
    }

    /// Free storage above the mean.
    pub fn storage_high(self) -> bool {
        self.0 & Self::STORAGE != 0
    }

    /// Known-host count above the mean.
    pub fn known_high(self) -> bool {
        self.0 & Self::KNOWN != 0
    }

    /// A stable label for metrics, e.g. `uptime_hi_storage_lo_known_hi`.
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// All classes, in index order.
    pub fn all() -> impl Iterator<Item = Class> {
        (0..8u8).map(Class)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the table knows about one host.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// The host's last record (from a Hello with it).
    pub record: PeerRecord,
    /// How it was discovered.
    pub source: Source,
    /// What the liveness protocol thinks of it.
    pub liveness: Liveness,
    /// Smoothed round-trip time of direct probes, if any has been measured.
    pub rtt: Option<Duration>,
    /// When we last heard from it directly.
    pub last_seen: Time,
    /// When it entered the table.
    pub added: Time,
    /// When `record` was received (its `uptime_secs` was true then).
    pub updated: Time,
    /// Consecutive failed probes or dials since the last success.
    pub failures: u32,
}

impl Host {
    fn new(now: Time, record: PeerRecord, source: Source) -> Self {
        Host {
            record,
            source,
            liveness: Liveness::Alive,
            rtt: None,
            last_seen: now,
            added: now,
            updated: now,
            failures: 0,
        }
    }

    /// The peer id.
    pub fn id(&self) -> PeerId {
        self.record.id
    }

    /// Its uptime at `now`: the reported uptime aged by the time since the report.
    pub fn uptime_at(&self, now: Time) -> Duration {
        Duration::from_secs(self.record.uptime_secs) + now.saturating_since(self.updated)
    }

    /// Whether liveness currently considers it alive.
    pub fn is_alive(&self) -> bool {
        self.liveness == Liveness::Alive
    }
}

/// The outcome of [`Table::insert`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Insert {
    /// A new host entered the table.
    Added,
    /// The host was known; its record was refreshed.
    Updated,
    /// The host was known unverified ([`Liveness::Unverified`]) and is now reached: alive.
    Verified,
    /// A new host entered the table and another was evicted to make room.
    Replaced {
        /// The evicted host.
        evicted: Box<Host>,
        /// Whether the random accept/evict factor chose it rather than diversity.
        random: bool,
    },
    /// The host was not added.
    Rejected(Rejected),
}

/// Why [`Table::insert`] refused a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// It is this node.
    Local,
    /// The table is full and the newcomer is (one of) the most crowded hosts.
    Crowded,
}

impl Rejected {
    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Local => "local",
            Rejected::Crowded => "crowded",
        }
    }
}

/// The attributes diversity looks at, for one host.
#[derive(Clone, Copy)]
struct Traits<'a> {
    uptime: f64,
    storage: f64,
    known: f64,
    site: &'a str,
}

/// Class and site tallies over a set of hosts, recomputed from scratch.
struct Census<'a> {
    means: (f64, f64, f64),
    class_counts: [usize; Class::COUNT],
    site_counts: BTreeMap<&'a str, usize>,
    total: usize,
}

impl<'a> Census<'a> {
    fn of(traits: &[Traits<'a>]) -> Self {
        let n = traits.len().max(1) as f64;
        let sum = traits.iter().fold((0.0, 0.0, 0.0), |(u, s, k), t| {
            (u + t.uptime, s + t.storage, k + t.known)
        });
        let means = (sum.0 / n, sum.1 / n, sum.2 / n);
        let mut census = Census {
            means,
            class_counts: [0; Class::COUNT],
            site_counts: BTreeMap::new(),
            total: traits.len(),
        };
        for t in traits {
            census.class_counts[census.class(t).index()] += 1;
            *census.site_counts.entry(t.site).or_default() += 1;
        }
        census
    }

    fn class(&self, t: &Traits<'_>) -> Class {
        Class::new(
            t.uptime > self.means.0,
            t.storage > self.means.1,
            t.known > self.means.2,
        )
    }

    /// Hosts sharing `t`'s class plus `site_weight` times hosts sharing its site (both include `t`).
    fn crowding(&self, t: &Traits<'_>, site_weight: f64) -> f64 {
        let class = self.class_counts[self.class(t).index()] as f64;
        let site = self.site_counts.get(t.site).copied().unwrap_or(0) as f64;
        class + site_weight * site
    }

    /// Crowding mapped to `[0, 1)`: 0 when every host shares `t`'s class and site.
    fn score(&self, t: &Traits<'_>, site_weight: f64) -> f64 {
        let n = self.total.max(1) as f64;
        ((1.0 + site_weight) * n - self.crowding(t, site_weight)) / ((1.0 + site_weight) * n)
    }
}

/// The bounded known-host table. See the [module documentation](self) for the diversity rule.
#[derive(Clone, Debug)]
pub struct Table {
    config: Config,
    local: PeerId,
    hosts: BTreeMap<PeerId, Host>,
}

impl Table {
    /// An empty table for the node `local` (which it never holds).
    pub fn new(config: Config, local: PeerId) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Table {
            config,
            local,
            hosts: BTreeMap::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Most hosts kept.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether the table is full.
    pub fn is_full(&self) -> bool {
        self.hosts.len() >= self.config.capacity
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.hosts.contains_key(id)
    }

    /// The host `id`, if known.
    pub fn get(&self, id: &PeerId) -> Option<&Host> {
        self.hosts.get(id)
    }

    /// All hosts, in peer-id order.
    pub fn iter(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// The known host that listens on `addr`, if any.
    pub fn find_by_addr(&self, addr: std::net::SocketAddr) -> Option<&Host> {
        self.hosts.values().find(|h| h.record.addrs.contains(&addr))
    }

    /// Offers a host we just heard from directly (a completed Hello): adds it, refreshes it, or —
    /// at capacity — applies the diversity rule.
    pub fn insert<R: Rng + ?Sized>(
        &mut self,
        now: Time,
        record: PeerRecord,
        source: Source,
        rng: &mut R,
    ) -> Insert {
        if record.id == self.local {
            return Insert::Rejected(Rejected::Local);
        }
        if let Some(host) = self.hosts.get_mut(&record.id) {
            host.record = record;
            host.updated = now;
            host.last_seen = now;
            if host.liveness == Liveness::Unverified {
                host.liveness = Liveness::Alive;
                host.failures = 0;
                return Insert::Verified;
            }
            return Insert::Updated;
        }
        if !self.is_full() {
            self.hosts.insert(record.id, Host::new(now, record, source));
            return Insert::Added;
        }
        // A place held by an unverified host is a free place for a host we reached.
        let unverified: Vec<PeerId> = self
            .hosts
            .values()
            .filter(|h| h.liveness == Liveness::Unverified)
            .map(|h| h.id())
            .collect();
        if let Some(victim) = unverified.choose(rng).copied() {
            return self.replace(victim, now, record, source, false);
        }
        if self.config.random_factor > 0.0 && rng.random_bool(self.config.random_factor) {
            let ids: Vec<PeerId> = self.hosts.keys().copied().collect();
            if let Some(victim) = ids.choose(rng).copied() {
                return self.replace(victim, now, record, source, true);
            }
        }
        let victim = {
            let (crowd, max, newcomer_loses) = self.contest(now, &record);
            if newcomer_loses {
                return Insert::Rejected(Rejected::Crowded);
            }
            // The most crowded incumbents; among them a suspect first, then the most failures.
            let candidates: Vec<&Host> = self
                .hosts
                .values()
                .zip(&crowd)
                .filter(|(_, c)| **c >= max - 1e-9)
                .map(|(h, _)| h)
                .collect();
            let worst = candidates
                .iter()
                .map(|h| (h.liveness == Liveness::Suspect, h.failures))
                .max()
                .unwrap_or((false, 0));
            let worst: Vec<PeerId> = candidates
                .iter()
                .filter(|h| (h.liveness == Liveness::Suspect, h.failures) == worst)
                .map(|h| h.id())
                .collect();
            worst.choose(rng).copied()
        };
        let Some(victim) = victim else {
            return Insert::Rejected(Rejected::Crowded);
        };
        self.replace(victim, now, record, source, false)
    }

    /// Puts the newcomer in `victim`'s place.
    fn replace(
        &mut self,
        victim: PeerId,
        now: Time,
        record: PeerRecord,
        source: Source,
        random: bool,
    ) -> Insert {
        let evicted = self.hosts.remove(&victim).map(Box::new);
        self.hosts.insert(record.id, Host::new(now, record, source));
        match evicted {
            Some(evicted) => Insert::Replaced { evicted, random },
            None => Insert::Added,
        }
    }

    /// Whether [`Table::insert`] would take `record` now, leaving the random factor aside: it is
    /// known, or there is room (a place held by an unverified host counts as room), or it is not
    /// (one of) the most crowded. Lets the caller skip dialling exchange candidates that would
    /// only be rejected.
    pub fn would_admit(&self, now: Time, record: &PeerRecord) -> bool {
        record.id != self.local
            && (self.hosts.contains_key(&record.id)
                || !self.is_full()
                || self.unverified_count() > 0
                || !self.contest(now, record).2)
    }

    /// Takes `record` on another host's word (it was in the Hello sample of a host we reached),
    /// as [`Liveness::Unverified`], if it is unknown and a place is free: never evicts. Returns
    /// whether it was added. A later Hello with it ([`insert`](Self::insert)) makes it alive.
    pub fn vouch(&mut self, now: Time, record: PeerRecord, source: Source) -> bool {
        if record.id == self.local
            || record.addrs.is_empty()
            || self.is_full()
            || self.hosts.contains_key(&record.id)
        {
            return false;
        }
        let mut host = Host::new(now, record, source);
        host.liveness = Liveness::Unverified;
        self.hosts.insert(host.id(), host);
        true
    }

    /// How many hosts are [`Liveness::Unverified`].
    pub fn unverified_count(&self) -> usize {
        self.hosts
            .values()
            .filter(|h| h.liveness == Liveness::Unverified)
            .count()
    }

    /// The unverified host that has waited longest (ties: lowest id), if any.
    pub fn oldest_unverified(&self) -> Option<&Host> {
        self.hosts
            .values()
            .filter(|h| h.liveness == Liveness::Unverified)
            .min_by_key(|h| (h.added, h.id()))
    }

    /// Crowding of every incumbent (in id order), the maximum over incumbents and newcomer, and
    /// whether the newcomer is (one of) the most crowded.
    fn contest(&self, now: Time, record: &PeerRecord) -> (Vec<f64>, f64, bool) {
        let newcomer = Host::new(now, record.clone(), Source::Exchange);
        let traits: Vec<Traits<'_>> = self
            .hosts
            .values()
            .chain(std::iter::once(&newcomer))
            .map(|h| traits(h, now))
            .collect();
        let census = Census::of(&traits);
        let mut crowd: Vec<f64> = traits
            .iter()
            .map(|t| census.crowding(t, self.config.site_weight))
            .collect();
        let max = crowd.iter().copied().fold(f64::MIN, f64::max);
        let newcomer_crowd = crowd.pop().unwrap_or(f64::MIN);
        (crowd, max, newcomer_crowd >= max - 1e-9)
    }

    /// Removes `id`, returning what was known about it.
    pub fn remove(&mut self, id: &PeerId) -> Option<Host> {
        self.hosts.remove(id)
    }

    /// Records a direct contact with `id` (it answered us or asked us something).
    pub fn mark_seen(&mut self, id: &PeerId, now: Time) {
        if let Some(h) = self.hosts.get_mut(id) {
            h.last_seen = h.last_seen.max(now);
            h.failures = 0;
        }
    }

    /// Records a round-trip time measured by a direct probe (also a contact).
    pub fn record_rtt(&mut self, id: &PeerId, rtt: Duration, now: Time) {
        if let Some(h) = self.hosts.get_mut(id) {
            h.rtt = Some(match h.rtt {
                None => rtt,
                Some(srtt) => srtt.mul_f64(1.0 - RTT_GAIN) + rtt.mul_f64(RTT_GAIN),
            });
        }
        self.mark_seen(id, now);
    }

    /// Records a failed probe or dial; returns the new failure count.
    pub fn record_failure(&mut self, id: &PeerId) -> u32 {
        match self.hosts.get_mut(id) {
            Some(h) => {
                h.failures = h.failures.saturating_add(1);
                h.failures
            }
            None => 0,
        }
    }

    /// Sets what liveness thinks of `id`.
    pub fn set_liveness(&mut self, id: &PeerId, liveness: Liveness) {
        if let Some(h) = self.hosts.get_mut(id) {
            h.liveness = liveness;
        }
    }

    /// Each host's class, relative to the means over the whole table at `now`.
    pub fn classes(&self, now: Time) -> BTreeMap<PeerId, Class> {
        let traits: Vec<Traits<'_>> = self.hosts.values().map(|h| traits(h, now)).collect();
        let census = Census::of(&traits);
        self.hosts
            .keys()
            .zip(&traits)
            .map(|(id, t)| (*id, census.class(t)))
            .collect()
    }

    /// The class of `id` at `now`, if known.
    pub fn class_of(&self, id: &PeerId, now: Time) -> Option<Class> {
        self.classes(now).get(id).copied()
    }

    /// How many hosts are in each class (indexed by [`Class::index`]); sums to [`Table::len`].
    pub fn class_counts(&self, now: Time) -> [usize; Class::COUNT] {
        let traits: Vec<Traits<'_>> = self.hosts.values().map(|h| traits(h, now)).collect();
        Census::of(&traits).class_counts
    }

    /// How many hosts each site has; sums to [`Table::len`].
    pub fn site_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for h in self.hosts.values() {
            *counts.entry(h.record.site.as_str()).or_default() += 1;
        }
        counts
    }

    /// The diversity score of `id` in `[0, 1)`: higher means fewer hosts share its class and site.
    pub fn score(&self, id: &PeerId, now: Time) -> Option<f64> {
        let traits: Vec<Traits<'_>> = self.hosts.values().map(|h| traits(h, now)).collect();
        let census = Census::of(&traits);
        let i = self.hosts.keys().position(|k| k == id)?;
        Some(census.score(&traits[i], self.config.site_weight))
    }

    /// The `k` most diverse *alive* hosts passing `filter`, most diverse first: how a node picks
    /// group members and spread recruits (through `node::TableView`). Same as
    /// [`most_diverse_beside`](Self::most_diverse_beside) with no site represented yet.
    pub fn most_diverse<F: Fn(&Host) -> bool>(&self, now: Time, k: usize, filter: F) -> Vec<&Host> {
        self.most_diverse_beside(now, k, &[], filter)
    }

    /// The `k` most diverse *alive* hosts passing `filter`, beside the sites in `represented`
    /// (e.g. a group's current members and this node's own site), most diverse first.
    ///
    /// Chosen greedily as a set: each pick is the host whose site is least represented among
    /// `represented` and the hosts already picked (so a set spans sites first; with
    /// `site_weight = 0` sites are ignored), then whose class is least represented among the
    /// picks, ties broken by the table-wide score, then the lower RTT, then the peer id.
    /// Deterministic for a given table.
    pub fn most_diverse_beside<F: Fn(&Host) -> bool>(
        &self,
        now: Time,
        k: usize,
        represented: &[&str],
        filter: F,
    ) -> Vec<&Host> {
        let all: Vec<Traits<'_>> = self.hosts.values().map(|h| traits(h, now)).collect();
        let census = Census::of(&all);
        let w = self.config.site_weight;
        let mut pool: Vec<(&Host, Class, f64)> = self
            .hosts
            .values()
            .zip(&all)
            .filter(|(h, _)| h.is_alive() && filter(h))
            .map(|(h, t)| (h, census.class(t), census.score(t, w)))
            .collect();
        let mut picked: Vec<&Host> = Vec::with_capacity(k.min(pool.len()));
        let mut class_taken = [0usize; Class::COUNT];
        let mut site_taken: BTreeMap<&str, usize> = BTreeMap::new();
        for s in represented {
            *site_taken.entry(s).or_default() += 1;
        }
        while picked.len() < k && !pool.is_empty() {
            let key = |(h, c, s): &(&Host, Class, f64)| {
                let site = if w > 0.0 {
                    site_taken.get(h.record.site.as_str()).copied().unwrap_or(0)
                } else {
                    0
                };
                (
                    site,
                    class_taken[c.index()],
                    -*s,
                    h.rtt.unwrap_or(Duration::MAX),
                    h.id(),
                )
            };
            let best = (0..pool.len())
                .min_by(|&a, &b| {
                    key(&pool[a])
                        .partial_cmp(&key(&pool[b]))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0);
            let (host, class, _) = pool.swap_remove(best);
            class_taken[class.index()] += 1;
            *site_taken.entry(host.record.site.as_str()).or_default() += 1;
            picked.push(host);
        }
        picked
    }

    /// A random sample of at most `n` hosts (alive ones, and unverified ones heard by beacon on this
    /// node's LAN), balanced across sites: sites are visited in
    /// random order, round-robin, each contributing a random host per round. Used for peer exchange
    /// (never the whole table), so a far site's hosts spread as fast as the local ones.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<&Host> {
        let mut by_site: BTreeMap<&str, Vec<&Host>> = BTreeMap::new();
        // Alive hosts, and hosts heard by beacon on this node's own LAN (first-hand, though not
        // yet reached): a LAN whose members lost a few beacons still converges by exchange.
        let shared = |h: &&Host| {
            h.is_alive() || (h.liveness == Liveness::Unverified && h.source == Source::Multicast)
        };
        for h in self.hosts.values().filter(shared) {
            by_site.entry(h.record.site.as_str()).or_default().push(h);
        }
        let mut sites: Vec<Vec<&Host>> = by_site.into_values().collect();
        sites.shuffle(rng);
        for hosts in &mut sites {
            hosts.shuffle(rng);
        }
        let mut out = Vec::with_capacity(n);
        let mut round = 0;
        while out.len() < n {
            let mut any = false;
            for hosts in &sites {
                if let Some(h) = hosts.get(round) {
                    any = true;
                    if out.len() < n {
                        out.push(*h);
                    }
                }
            }
            if !any {
                break;
            }
            round += 1;
        }
        out
    }
}

fn traits(h: &Host, now: Time) -> Traits<'_> {
    Traits {
        uptime: h.uptime_at(now).as_secs_f64(),
        storage: h.record.storage_free as f64,
        known: f64::from(h.record.known_hosts),
        site: h.record.site.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::BTreeSet;

    fn id(n: u32) -> PeerId {
        PeerId::from_public_key(&n.to_be_bytes())
    }

    fn rec(n: u32, site: &str, uptime: u64, storage: u64, known: u32) -> PeerRecord {
        PeerRecord {
            id: id(n),
            addrs: vec![std::net::SocketAddr::from((
                [10, 0, 0, (n % 250) as u8],
                4000,
            ))],
            site: site.into(),
            uptime_secs: uptime,
            storage_free: storage,
            known_hosts: known,
            public: false,
            relays: vec![],
        }
    }

    fn table(capacity: usize, random_factor: f64, site_weight: f64) -> Table {
        Table::new(
            Config {
                capacity,
                random_factor,
                site_weight,
            },
            id(0),
        )
        .unwrap()
    }

    /// Classes computed the slow, obvious way.
    fn naive_classes(t: &Table, now: Time) -> BTreeMap<PeerId, Class> {
        let n = t.len() as f64;
        let mu = t
            .iter()
            .map(|h| h.uptime_at(now).as_secs_f64())
            .sum::<f64>()
            / n;
        let ms = t.iter().map(|h| h.record.storage_free as f64).sum::<f64>() / n;
        let mk = t
            .iter()
            .map(|h| f64::from(h.record.known_hosts))
            .sum::<f64>()
            / n;
        t.iter()
            .map(|h| {
                let c = Class::new(
                    h.uptime_at(now).as_secs_f64() > mu,
                    h.record.storage_free as f64 > ms,
                    f64::from(h.record.known_hosts) > mk,
                );
                (h.id(), c)
            })
            .collect()
    }

    #[test]
    fn default_config_is_valid_and_bad_values_are_refused() {
        Config::default().validate().unwrap();
        assert_eq!(
            Config {
                capacity: 0,
                ..Config::default()
            }
            .validate(),
            Err(ConfigError::ZeroCapacity)
        );
        assert!(
            Config {
                random_factor: 1.5,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Config {
                site_weight: f64::NAN,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn local_node_is_never_inserted_and_known_hosts_are_refreshed() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut t = table(4, 0.0, 1.0);
        assert_eq!(
            t.insert(Time::ZERO, rec(0, "a", 1, 1, 1), Source::Inbound, &mut rng),
            Insert::Rejected(Rejected::Local)
        );
        assert_eq!(
            t.insert(
                Time::ZERO,
                rec(1, "a", 1, 1, 1),
                Source::Multicast,
                &mut rng
            ),
            Insert::Added
        );
        assert_eq!(
            t.insert(Time(5), rec(1, "a", 9, 1, 1), Source::Exchange, &mut rng),
            Insert::Updated
        );
        let h = t.get(&id(1)).unwrap();
        assert_eq!(
            (h.record.uptime_secs, h.source, h.updated),
            (9, Source::Multicast, Time(5))
        );
    }

    #[test]
    fn at_capacity_a_newcomer_of_the_biggest_class_is_rejected() {
        // site_weight 0 and no randomness: the original rule exactly.
        let mut rng = SmallRng::seed_from_u64(1);
        let mut t = table(4, 0.0, 0.0);
        // Three low-everything hosts and one high-everything host.
        for n in 1..=3 {
            t.insert(
                Time::ZERO,
                rec(n, "a", 10, 10, 1),
                Source::Multicast,
                &mut rng,
            );
        }
        t.insert(
            Time::ZERO,
            rec(4, "a", 1000, 1000, 50),
            Source::Multicast,
            &mut rng,
        );
        let before: BTreeSet<PeerId> = t.iter().map(Host::id).collect();
        // Another low-everything host falls in the biggest class: rejected, table unchanged.
        assert_eq!(
            t.insert(
                Time::ZERO,
                rec(5, "a", 11, 11, 1),
                Source::Multicast,
                &mut rng
            ),
            Insert::Rejected(Rejected::Crowded)
        );
        assert_eq!(before, t.iter().map(Host::id).collect());
        // A host of a new class evicts one of the biggest class.
        let out = t.insert(
            Time::ZERO,
            rec(6, "a", 1000, 10, 1),
            Source::Multicast,
            &mut rng,
        );
        let Insert::Replaced {
            evicted,
            random: false,
        } = out
        else {
            panic!("expected an eviction, got {out:?}")
        };
        assert!([id(1), id(2), id(3)].contains(&evicted.id()));
        assert_eq!(t.len(), 4);
        assert!(t.contains(&id(6)));
    }

    #[test]
    fn at_capacity_an_under_represented_site_wins() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut t = table(4, 0.0, 1.0);
        for n in 1..=4 {
            t.insert(
                Time::ZERO,
                rec(n, "a", 10 * u64::from(n), 10, 1),
                Source::Multicast,
                &mut rng,
            );
        }
        // Same class mix, but from a site nobody else is in.
        let out = t.insert(
            Time::ZERO,
            rec(9, "b", 25, 10, 1),
            Source::Bootstrap,
            &mut rng,
        );
        assert!(
            matches!(out, Insert::Replaced { random: false, .. }),
            "{out:?}"
        );
        assert_eq!(t.site_counts().get("b"), Some(&1));
        // A second newcomer from the crowded site is refused rather than evicting site b.
        let out = t.insert(
            Time::ZERO,
            rec(10, "a", 25, 10, 1),
            Source::Multicast,
            &mut rng,
        );
        assert_eq!(out, Insert::Rejected(Rejected::Crowded));
        assert!(t.contains(&id(9)));
    }

    #[test]
    fn suspects_are_evicted_first_among_the_most_crowded() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut t = table(3, 0.0, 1.0);
        for n in 1..=3 {
            t.insert(
                Time::ZERO,
                rec(n, "a", 10, 10, 1),
                Source::Multicast,
                &mut rng,
            );
        }
        t.set_liveness(&id(2), Liveness::Suspect);
        let out = t.insert(
            Time::ZERO,
            rec(7, "b", 10, 10, 1),
            Source::Exchange,
            &mut rng,
        );
        let Insert::Replaced { evicted, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(evicted.id(), id(2));
    }

    #[test]
    fn random_factor_one_always_accepts() {
        let mut rng = SmallRng::seed_from_u64(4);
        let mut t = table(2, 1.0, 1.0);
        t.insert(
            Time::ZERO,
            rec(1, "a", 1, 1, 1),
            Source::Multicast,
            &mut rng,
        );
        t.insert(
            Time::ZERO,
            rec(2, "a", 1, 1, 1),
            Source::Multicast,
            &mut rng,
        );
        let out = t.insert(
            Time::ZERO,
            rec(3, "a", 1, 1, 1),
            Source::Multicast,
            &mut rng,
        );
        assert!(matches!(out, Insert::Replaced { random: true, .. }));
        assert!(t.contains(&id(3)));
    }

    #[test]
    fn rtt_is_smoothed_and_contact_clears_failures() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut t = table(2, 0.0, 1.0);
        t.insert(
            Time::ZERO,
            rec(1, "a", 1, 1, 1),
            Source::Multicast,
            &mut rng,
        );
        assert_eq!(t.record_failure(&id(1)), 1);
        t.record_rtt(&id(1), Duration::from_millis(8), Time(10));
        t.record_rtt(&id(1), Duration::from_millis(16), Time(20));
        let h = t.get(&id(1)).unwrap();
        assert_eq!(h.rtt, Some(Duration::from_millis(9)));
        assert_eq!((h.failures, h.last_seen), (0, Time(20)));
    }

    #[test]
    fn most_diverse_spans_sites_and_skips_suspects() {
        let mut rng = SmallRng::seed_from_u64(6);
        let mut t = table(16, 0.0, 1.0);
        for n in 1..=6 {
            t.insert(
                Time::ZERO,
                rec(n, "a", u64::from(n), 5, 1),
                Source::Multicast,
                &mut rng,
            );
        }
        t.insert(
            Time::ZERO,
            rec(20, "b", 3, 5, 1),
            Source::Bootstrap,
            &mut rng,
        );
        t.insert(
            Time::ZERO,
            rec(21, "c", 3, 5, 1),
            Source::Exchange,
            &mut rng,
        );
        t.insert(
            Time::ZERO,
            rec(22, "d", 3, 5, 1),
            Source::Exchange,
            &mut rng,
        );
        t.set_liveness(&id(22), Liveness::Suspect);
        let picked = t.most_diverse(Time::ZERO, 3, |_| true);
        let sites: BTreeSet<&str> = picked.iter().map(|h| h.record.site.as_str()).collect();
        assert_eq!(sites, BTreeSet::from(["a", "b", "c"]));
        let none_from_b = t.most_diverse(Time::ZERO, 10, |h| h.record.site != "b");
        assert_eq!(none_from_b.len(), 7);
        assert!(t.score(&id(20), Time::ZERO).unwrap() > t.score(&id(1), Time::ZERO).unwrap());
    }

    #[test]
    fn most_diverse_beside_prefers_sites_not_yet_represented() {
        let mut rng = SmallRng::seed_from_u64(8);
        let mut t = table(16, 0.0, 1.0);
        // Site a: the best scores; b and c one host each, in the crowded class.
        for n in 1..=4 {
            t.insert(
                Time::ZERO,
                rec(n, "a", u64::from(n) * 10, u64::from(n), 1),
                Source::Multicast,
                &mut rng,
            );
        }
        t.insert(Time::ZERO, rec(5, "b", 1, 1, 1), Source::Exchange, &mut rng);
        t.insert(Time::ZERO, rec(6, "c", 1, 1, 1), Source::Exchange, &mut rng);
        // A group on a and b recruits on c first, whatever the scores of a's hosts.
        let picked = t.most_diverse_beside(Time::ZERO, 3, &["a", "b"], |_| true);
        let sites: Vec<&str> = picked.iter().map(|h| h.record.site.as_str()).collect();
        assert_eq!(sites[0], "c");
        assert_eq!(BTreeSet::from_iter(sites), BTreeSet::from(["a", "b", "c"]));
        // Beside nothing, the first pick is on the best-scored site.
        let first = t.most_diverse(Time::ZERO, 1, |_| true)[0];
        let best = t
            .iter()
            .max_by(|x, y| {
                let sx = t.score(&x.record.id, Time::ZERO).unwrap();
                let sy = t.score(&y.record.id, Time::ZERO).unwrap();
                sx.total_cmp(&sy).then(y.id().cmp(&x.id()))
            })
            .unwrap();
        assert_eq!(first.id(), best.id());
        // With sites ignored (site_weight 0), the site of the group does not matter.
        let mut flat = table(16, 0.0, 0.0);
        for h in t.iter() {
            flat.insert(Time::ZERO, h.record.clone(), Source::Exchange, &mut rng);
        }
        let a = flat.most_diverse_beside(Time::ZERO, 2, &["a", "b"], |_| true);
        let b = flat.most_diverse(Time::ZERO, 2, |_| true);
        assert_eq!(
            a.iter().map(|h| h.id()).collect::<Vec<_>>(),
            b.iter().map(|h| h.id()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sample_is_bounded_and_balanced_across_sites() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut t = table(64, 0.0, 1.0);
        for n in 1..=40 {
            t.insert(
                Time::ZERO,
                rec(n, "a", 1, 1, 1),
                Source::Multicast,
                &mut rng,
            );
        }
        for n in 41..=44 {
            t.insert(Time::ZERO, rec(n, "b", 1, 1, 1), Source::Exchange, &mut rng);
        }
        let s = t.sample(8, &mut rng);
        assert_eq!(s.len(), 8);
        assert_eq!(s.iter().filter(|h| h.record.site == "b").count(), 4);
        assert_eq!(s.iter().map(|h| h.id()).collect::<BTreeSet<_>>().len(), 8);
        assert_eq!(t.sample(100, &mut rng).len(), 44);
    }

    /// Table at capacity, many candidates arriving in a realistic order (the local LAN's young,
    /// similar nodes first): the diversity rule keeps more sites and more classes than
    /// first-come-first-served.
    #[test]
    fn at_capacity_the_kept_set_is_more_diverse_than_first_come_first_served() {
        let mut rng = SmallRng::seed_from_u64(8);
        let sites = ["lan", "b", "c", "d", "e", "f"];
        let mut candidates = Vec::new();
        for n in 1..=200u32 {
            // The first half: the node's own LAN, freshly started, small and similar.
            let r = if n <= 100 {
                rec(
                    n,
                    "lan",
                    rng.random_range(0..60),
                    rng.random_range(0..1 << 20),
                    rng.random_range(0..5),
                )
            } else {
                let site = sites[rng.random_range(0..sites.len())];
                rec(
                    n,
                    site,
                    rng.random_range(0..100_000),
                    rng.random_range(0..1 << 40),
                    rng.random_range(0..64),
                )
            };
            candidates.push(r);
        }
        let capacity = 16;
        let fcfs: Vec<&PeerRecord> = candidates.iter().take(capacity).collect();
        let mut t = table(capacity, 0.05, 1.0);
        for r in &candidates {
            t.insert(Time::ZERO, r.clone(), Source::Exchange, &mut rng);
        }
        assert_eq!(t.len(), capacity);
        let kept: Vec<&PeerRecord> = t.iter().map(|h| &h.record).collect();

        // Classes relative to the same reference (the means over all candidates) for both sets.
        let n = candidates.len() as f64;
        let mu = candidates.iter().map(|r| r.uptime_secs as f64).sum::<f64>() / n;
        let ms = candidates
            .iter()
            .map(|r| r.storage_free as f64)
            .sum::<f64>()
            / n;
        let mk = candidates
            .iter()
            .map(|r| f64::from(r.known_hosts))
            .sum::<f64>()
            / n;
        let class = |r: &PeerRecord| {
            Class::new(
                r.uptime_secs as f64 > mu,
                r.storage_free as f64 > ms,
                f64::from(r.known_hosts) > mk,
            )
        };
        let classes =
            |set: &[&PeerRecord]| set.iter().map(|r| class(r)).collect::<BTreeSet<_>>().len();
        let site_set = |set: &[&PeerRecord]| {
            set.iter()
                .map(|r| r.site.clone())
                .collect::<BTreeSet<_>>()
                .len()
        };
        assert_eq!(site_set(&fcfs), 1);
        assert!(
            site_set(&kept) > site_set(&fcfs),
            "sites: kept {} vs fcfs {}",
            site_set(&kept),
            site_set(&fcfs)
        );
        assert!(site_set(&kept) >= 5, "kept only {} sites", site_set(&kept));
        assert!(
            classes(&kept) > classes(&fcfs),
            "classes: kept {} vs fcfs {}",
            classes(&kept),
            classes(&fcfs)
        );
        // No site holds more than half the table.
        assert!(
            t.site_counts().values().all(|&c| c <= capacity / 2),
            "{:?}",
            t.site_counts()
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert {
            n: u32,
            site: u8,
            uptime: u64,
            storage: u64,
            known: u32,
        },
        Remove(u32),
        Suspect(u32),
        Fail(u32),
        Advance(u64),
        Vouch {
            n: u32,
            site: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1..300u32, 0..5u8, 0..10_000u64, 0..1_000_000u64, 0..100u32)
                .prop_map(|(n, site, uptime, storage, known)| Op::Insert { n, site, uptime, storage, known }),
            2 => (1..300u32).prop_map(Op::Remove),
            1 => (1..300u32).prop_map(Op::Suspect),
            1 => (1..300u32).prop_map(Op::Fail),
            1 => (0..10_000_000u64).prop_map(Op::Advance),
            2 => (1..300u32, 0..5u8).prop_map(|(n, site)| Op::Vouch { n, site }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Thousands of random operations: the table never exceeds capacity, never holds itself,
        /// class and site tallies always match a from-scratch recount, a table below capacity
        /// always admits a newcomer, and at capacity an insert either changes nothing or swaps
        /// exactly one host (so it can never wedge into rejecting everything by drift).
        #[test]
        fn bookkeeping_stays_consistent(
            seed in any::<u64>(),
            capacity in 1..24usize,
            random_factor in prop_oneof![Just(0.0), Just(0.1)],
            ops in proptest::collection::vec(op(), 1..2000),
        ) {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut t = table(capacity, random_factor, 1.0);
            let mut now = Time::ZERO;
            for op in ops {
                match op {
                    Op::Insert { n, site, uptime, storage, known } => {
                        let before: BTreeSet<PeerId> = t.iter().map(Host::id).collect();
                        let r = rec(n, &format!("s{site}"), uptime, storage, known);
                        let was_full = t.is_full();
                        let existed = t.contains(&r.id);
                        let unverified_before = t.unverified_count();
                        let would = t.would_admit(now, &r);
                        let out = t.insert(now, r.clone(), Source::Exchange, &mut rng);
                        if random_factor == 0.0 {
                            prop_assert_eq!(would, !matches!(out, Insert::Rejected(_)));
                        }
                        let after: BTreeSet<PeerId> = t.iter().map(Host::id).collect();
                        match out {
                            Insert::Updated => prop_assert!(existed && before == after),
                            Insert::Verified => prop_assert!(existed && before == after),
                            Insert::Added => prop_assert!(!existed && !was_full && after.len() == before.len() + 1),
                            Insert::Replaced { evicted, .. } => {
                                prop_assert!(was_full && !existed);
                                prop_assert!(before.contains(&evicted.id()) && !after.contains(&evicted.id()));
                                prop_assert!(after.contains(&r.id) && after.len() == before.len());
                            }
                            Insert::Rejected(Rejected::Crowded) => prop_assert!(was_full && before == after && unverified_before == 0),
                            Insert::Rejected(Rejected::Local) => prop_assert!(false, "never inserted the local id"),
                        }
                    }
                    Op::Remove(n) => { t.remove(&id(n)); }
                    Op::Suspect(n) => t.set_liveness(&id(n), Liveness::Suspect),
                    Op::Fail(n) => { t.record_failure(&id(n)); }
                    Op::Advance(us) => now = Time(now.0 + us),
                    Op::Vouch { n, site } => {
                        // Only into a free place, never over a known host, and unverified.
                        let before: BTreeSet<PeerId> = t.iter().map(Host::id).collect();
                        let room = !t.is_full() && !t.contains(&id(n));
                        let added = t.vouch(now, rec(n, &format!("s{site}"), 0, 0, 0), Source::Multicast);
                        prop_assert_eq!(added, room);
                        let after: BTreeSet<PeerId> = t.iter().map(Host::id).collect();
                        prop_assert!(before.is_subset(&after));
                        if added {
                            prop_assert_eq!(t.get(&id(n)).map(|h| h.liveness), Some(Liveness::Unverified));
                            prop_assert!(!t.sample(t.len(), &mut rng).is_empty());
                        }
                    }
                }
                // Unverified hosts are never picked for data, and a verified insert at capacity
                // takes an unverified host's place before contesting anyone else's.
                prop_assert!(t.most_diverse(now, capacity, |_| true).iter().all(|h| h.liveness != Liveness::Unverified));
                prop_assert!(t.len() <= capacity);
                prop_assert!(!t.contains(&id(0)));
                let counts = t.class_counts(now);
                prop_assert_eq!(counts.iter().sum::<usize>(), t.len());
                prop_assert_eq!(t.site_counts().values().sum::<usize>(), t.len());
                if !t.is_empty() {
                    let naive = naive_classes(&t, now);
                    prop_assert_eq!(&t.classes(now), &naive);
                    let mut naive_counts = [0usize; Class::COUNT];
                    for c in naive.values() { naive_counts[c.index()] += 1; }
                    prop_assert_eq!(counts, naive_counts);
                }
            }
        }
    }
}
