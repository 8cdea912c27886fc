//! The data half of the node: PCG and RBFS composed, with the glue between them.
//!
//! [`DataCore`] owns a [`pcg::Node`] and an [`rbfs::Node`] over one item store and does what the
//! node binary's driver used to do by hand between them:
//! - a group view that changes teaches RBFS where the item lives (`add_hint`), a deleted item is
//!   forgotten there (`forget_hint`);
//! - the membership layer's liveness reaches PCG: a host that left the live set is *down*
//!   (`handle_peer_down`, it keeps its place for the grace period), one SWIM declared dead is
//!   *dead* (`handle_peer_dead`, replaced at once, SWIM's suspicion having been its grace);
//! - a PCG message that could not be delivered counts against its destination
//!   (`handle_unreachable`); an RBFS one does not (a search simply tries elsewhere);
//! - messages are decoded here from the overlay name and body they travel as (`pcg`, `rbfs`),
//!   with a typed error for a body that does not decode, and block requests of large items are
//!   answered from the store.
//!
//! The binary (`butter::data`) and the simulator (`butter-sim`) drive this same object (the PCG
//! fault-mix harness still drives `pcg::Node` alone): inputs through `handle_*(now, …)` and the
//! application calls, outputs drained with [`poll_transmit`](DataCore::poll_transmit),
//! [`poll_event`](DataCore::poll_event) and [`poll_timeout`](DataCore::poll_timeout).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::id::PeerId;
use crate::item::{self, ItemId, Store};
use crate::pcg::{self, HostView};
use crate::rbfs::{self, QueryId};
use crate::time::Time;

/// The overlay name PCG messages travel under.
pub const PCG: &str = "pcg";
/// The overlay name RBFS messages travel under.
pub const RBFS: &str = "rbfs";
/// The overlay name block requests of large items travel under.
pub const BLOCK: &str = "block";

/// A message of the data overlay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Peer Content Groups.
    Pcg(pcg::Message),
    /// Random breadth-first search.
    Rbfs(rbfs::Message),
}

impl Message {
    /// The overlay name it travels under ([`PCG`] or [`RBFS`]).
    pub fn overlay(&self) -> &'static str {
        match self {
            Message::Pcg(_) => PCG,
            Message::Rbfs(_) => RBFS,
        }
    }

    /// Its kind, for counters (`heartbeat`, `query`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Pcg(m) => m.kind(),
            Message::Rbfs(m) => m.kind(),
        }
    }

    /// The body it travels with (postcard).
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        match self {
            Message::Pcg(m) => postcard::to_stdvec(m),
            Message::Rbfs(m) => postcard::to_stdvec(m),
        }
        .map_err(|e| DecodeError::Body {
            overlay: self.overlay(),
            reason: e.to_string(),
        })
    }

    /// Decodes a body received under `overlay`; `Ok(None)` when the name is not a message of
    /// this overlay (e.g. [`BLOCK`], or another protocol's).
    pub fn decode(overlay: &str, body: &[u8]) -> Result<Option<Message>, DecodeError> {
        let bad = |overlay: &'static str, e: postcard::Error| DecodeError::Body {
            overlay,
            reason: e.to_string(),
        };
        match overlay {
            PCG => postcard::from_bytes(body)
                .map(|m| Some(Message::Pcg(m)))
                .map_err(|e| bad(PCG, e)),
            RBFS => postcard::from_bytes(body)
                .map(|m| Some(Message::Rbfs(m)))
                .map_err(|e| bad(RBFS, e)),
            _ => Ok(None),
        }
    }
}

/// A body that is not a valid message of its overlay name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body does not decode (or, when encoding, the message does not fit postcard).
    #[error("bad {overlay} message: {reason}")]
    Body {
        /// `pcg`, `rbfs` or `block`.
        overlay: &'static str,
        /// The decoder's reason.
        reason: String,
    },
}

/// Why a block request was not answered with a block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockError {
    /// The request body does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// This node does not hold the item.
    #[error("item {0} not held here")]
    NotHeld(String),
    /// The item has no block of that index (or is small enough to travel whole).
    #[error("no block {0}")]
    NoBlock(u32),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// The destination.
    pub to: PeerId,
    /// The message.
    pub msg: Message,
}

/// Something the application or the metrics may want to know.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// From PCG (a view changed, a group was repaired, a proof failed, …).
    Pcg(pcg::Event),
    /// From RBFS (a search found its item or gave up, an answer was corrupt).
    Rbfs(rbfs::Event),
    /// How an owned put from outside the item's group ([`Placement::Searching`]) ended.
    OwnedPlaced {
        /// The item.
        item: ItemId,
        /// The holder the record was sent to, or `None` when nobody held the item and this
        /// node placed it in a new group.
        holder: Option<PeerId>,
        /// The seq of the record found at that holder, when it was not older than the one put
        /// (the put was stale there and nothing changed).
        stale_against: Option<u64>,
    },
    /// `peer` lied about data `pcg::Config::ban_after_lies` times: the data core treats it as
    /// dead until `until` (its groups replace it, nothing is recruited from or searched on it,
    /// its data messages are ignored). A driver may also refuse its connections.
    Banned {
        /// The liar.
        peer: PeerId,
        /// When the ban ends.
        until: Time,
    },
}

/// Where an owned record went ([`DataCore::put_owned`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Stored here and sent to the group's members.
    Stored(ItemId),
    /// This node is not in the item's group: it searches for a holder to send it to (or, when
    /// there is none, places the item itself); [`Event::OwnedPlaced`] follows.
    Searching(ItemId),
}

impl Placement {
    /// The item id.
    pub fn id(&self) -> ItemId {
        match self {
            Placement::Stored(id) | Placement::Searching(id) => *id,
        }
    }
}

/// Most owned puts a node may have searching for their group at once.
const MAX_PENDING_PUTS: usize = 256;

/// How long a lie counts towards a ban.
const LIE_MEMORY: std::time::Duration = std::time::Duration::from_secs(600);

/// Peers caught lying about data: strikes, and bans in force. Bounded: strikes are forgotten
/// after [`LIE_MEMORY`], bans when they end, and neither map grows past 4096 peers.
#[derive(Debug, Default)]
struct Liars {
    strikes: BTreeMap<PeerId, (u32, Time)>,
    banned: BTreeMap<PeerId, Time>,
    /// Banned since the last `settle`, still to be replaced in their groups.
    fresh: Vec<PeerId>,
}

const MAX_LIARS: usize = 4096;

impl Liars {
    /// Counts a lie; true when it earns a ban.
    fn strike(
        &mut self,
        peer: PeerId,
        now: Time,
        after: u32,
        ban_for: std::time::Duration,
    ) -> bool {
        if after == 0 || self.is_banned(&peer, now) {
            return false;
        }
        if self.strikes.len() >= MAX_LIARS {
            self.strikes
                .retain(|_, (_, at)| now.saturating_since(*at) < LIE_MEMORY);
            if self.strikes.len() >= MAX_LIARS {
                self.strikes.pop_first();
            }
        }
        let s = self.strikes.entry(peer).or_insert((0, now));
        if now.saturating_since(s.1) >= LIE_MEMORY {
            s.0 = 0;
        }
        s.0 += 1;
        s.1 = now;
        if s.0 < after {
            return false;
        }
        self.strikes.remove(&peer);
        if self.banned.len() >= MAX_LIARS {
            self.banned.retain(|_, until| *until > now);
            if self.banned.len() >= MAX_LIARS {
                self.banned.pop_first();
            }
        }
        self.banned.insert(peer, now + ban_for);
        self.fresh.push(peer);
        true
    }

    fn is_banned(&self, peer: &PeerId, now: Time) -> bool {
        self.banned.get(peer).is_some_and(|until| *until > now)
    }

    fn expire(&mut self, now: Time) {
        self.banned.retain(|_, until| *until > now);
    }
}

/// The hosts as PCG and RBFS should see them: a banned liar is not live, not chosen, not asked.
struct Unbanned<'a> {
    hosts: &'a dyn HostView,
    liars: &'a Liars,
    now: Time,
}

impl<'a> Unbanned<'a> {
    fn new(hosts: &'a dyn HostView, liars: &'a Liars, now: Time) -> Self {
        Unbanned { hosts, liars, now }
    }

    fn banned(&self, id: &PeerId) -> bool {
        self.liars.is_banned(id, self.now)
    }
}

impl HostView for Unbanned<'_> {
    fn live_hosts(&self) -> Vec<PeerId> {
        let mut v = self.hosts.live_hosts();
        v.retain(|p| !self.banned(p));
        v
    }

    fn is_live(&self, id: &PeerId) -> bool {
        !self.banned(id) && self.hosts.is_live(id)
    }

    fn site(&self, id: &PeerId) -> Option<&str> {
        self.hosts.site(id)
    }

    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        if self.liars.banned.is_empty() {
            return self.hosts.most_diverse(k, exclude);
        }
        let mut ex = exclude.clone();
        ex.extend(self.liars.banned.keys().filter(|p| self.banned(p)).copied());
        self.hosts.most_diverse(k, &ex)
    }
}

/// Configuration out of range.
pub type ConfigError = item::ConfigError;

/// PCG and RBFS over one store, with the glue between them. See the [module docs](self).
#[derive(Debug)]
pub struct DataCore<S: Store> {
    pcg: pcg::Node<S>,
    rbfs: rbfs::Node,
    events: VecDeque<Event>,
    /// The live set last reported by [`handle_liveness`](Self::handle_liveness).
    live: BTreeSet<PeerId>,
    /// The dead set last reported.
    dead: BTreeSet<PeerId>,
    /// Peers caught lying about data, and bans in force.
    liars: Liars,
    /// The time of the last input (for lies found while draining events).
    clock: Time,
    /// Owned puts from outside their group, by the search looking for it.
    pending_puts: BTreeMap<QueryId, crate::owned::Record>,
    /// Owned puts whose search found nobody: placed here at the next input with a host view.
    to_place: Vec<crate::owned::Record>,
}

impl<S: Store> DataCore<S> {
    /// A data core for node `me` over `store`; the RBFS item limits are PCG's. `seed` seeds both
    /// machines (differently).
    pub fn new(
        me: PeerId,
        pcg: pcg::Config,
        rbfs: rbfs::Config,
        store: S,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let rbfs = rbfs::Config {
            item: pcg.item.clone(),
            ..rbfs
        };
        Ok(DataCore {
            pcg: pcg::Node::new(me, pcg, store, seed)?,
            rbfs: rbfs::Node::new(me, rbfs, seed ^ 0x5eed)?,
            events: VecDeque::new(),
            live: BTreeSet::new(),
            dead: BTreeSet::new(),
            liars: Liars::default(),
            clock: Time::ZERO,
            pending_puts: BTreeMap::new(),
            to_place: Vec::new(),
        })
    }

    /// Starts RBFS's timers (summary pulls); call once, at start.
    pub fn start(&mut self, now: Time) {
        self.rbfs.start(now);
    }

    /// PCG, for queries (groups, states, store, hand-off report).
    pub fn pcg(&self) -> &pcg::Node<S> {
        &self.pcg
    }

    /// RBFS, for queries.
    pub fn rbfs(&self) -> &rbfs::Node {
        &self.rbfs
    }

    /// The item store.
    pub fn store(&self) -> &S {
        self.pcg.store()
    }

    /// The item store, to change it outside the protocol (a test corrupting a copy).
    pub fn store_mut(&mut self) -> &mut S {
        self.pcg.store_mut()
    }

    /// Rejoins a group this node was in before a restart (its saved view).
    pub fn restore(&mut self, now: Time, view: pcg::View) {
        self.pcg.restore(now, view);
        self.pump();
    }

    /// Stores `content` here and in a group of `r` diverse hosts; returns its id.
    pub fn put(
        &mut self,
        now: Time,
        content: Vec<u8>,
        hosts: &dyn HostView,
    ) -> Result<ItemId, pcg::PutError> {
        self.clock = now;
        let view = Unbanned::new(hosts, &self.liars, now);
        let r = self.pcg.store_item(now, content, &view);
        self.settle(now, hosts);
        r
    }

    /// Stores an owner's signed record (a value or a tombstone) of an owned item.
    ///
    /// On a node that keeps the item (a member of its group, or a holder), the record goes into
    /// the local store and to the co-members at once ([`pcg::Node::put_owned`]); refused when not
    /// newer than the record held here. On any other node, a new group here would split the
    /// item's group in two that may never meet, so the node first *searches* for the item: a
    /// holder found is sent the record (it passes it to its co-members, each taking it only if it
    /// is newer, and a holder of a newer one counts this put as stale); when nobody has it, the
    /// node places the item in a new group of its own, as for a first put. Either way the put is
    /// under way when this returns [`Placement::Searching`]; [`Event::OwnedPlaced`] says how it
    /// ended.
    pub fn put_owned(
        &mut self,
        now: Time,
        record: &crate::owned::Record,
        hosts: &dyn HostView,
    ) -> Result<Placement, pcg::PutError> {
        self.clock = now;
        let id = record.slot();
        if !self.pcg.keeps(&id) {
            if self.pending_puts.len() >= MAX_PENDING_PUTS {
                return Err(pcg::PutError::Busy);
            }
            let view = Unbanned::new(hosts, &self.liars, now);
            let q = self.rbfs.find(now, id, self.pcg.store(), &view);
            self.pending_puts.insert(q, record.clone());
            self.settle(now, hosts);
            return Ok(Placement::Searching(id));
        }
        let view = Unbanned::new(hosts, &self.liars, now);
        let r = self.pcg.put_owned(now, record, &view);
        self.settle(now, hosts);
        r.map(Placement::Stored)
    }

    /// Deletes `item` from its group; `false` when this node is not a member (or the item is
    /// owned: only its owner deletes it, with a signed tombstone through
    /// [`put_owned`](Self::put_owned)).
    pub fn delete(&mut self, now: Time, item: ItemId) -> bool {
        self.clock = now;
        let done = self.pcg.delete(now, item);
        self.pump();
        done
    }

    /// Starts a search for `item` (local store and hints first); the answer comes as an
    /// [`Event::Rbfs`] `Found`/`NotFound` with the returned id.
    pub fn find(&mut self, now: Time, item: ItemId, hosts: &dyn HostView) -> QueryId {
        self.clock = now;
        let view = Unbanned::new(hosts, &self.liars, now);
        let q = self.rbfs.find(now, item, self.pcg.store(), &view);
        self.settle(now, hosts);
        q
    }

    /// A message received from `from`.
    pub fn handle_message(&mut self, now: Time, from: PeerId, msg: Message, hosts: &dyn HostView) {
        self.clock = now;
        if self.liars.is_banned(&from, now) {
            return;
        }
        let view = Unbanned::new(hosts, &self.liars, now);
        match msg {
            Message::Pcg(m) => self.pcg.handle_message(now, from, m, &view),
            Message::Rbfs(m) => self
                .rbfs
                .handle_message(now, from, m, self.pcg.store(), &view),
        }
        self.settle(now, hosts);
    }

    /// Answers a block request (`(item, index)`, postcard) of a large item from the store.
    pub fn handle_block_request(&self, body: &[u8]) -> Result<Vec<u8>, BlockError> {
        let (id, index): (ItemId, u32) =
            postcard::from_bytes(body).map_err(|e| DecodeError::Body {
                overlay: BLOCK,
                reason: e.to_string(),
            })?;
        let item = self
            .pcg
            .store()
            .get(&id)
            .ok_or_else(|| BlockError::NotHeld(id.short()))?;
        item.manifest(&self.pcg.config().item)
            .and_then(|m| item.block(&m, index).map(<[u8]>::to_vec))
            .ok_or(BlockError::NoBlock(index))
    }

    /// A transmit could not be delivered (no connection, a timeout, an error reply).
    pub fn handle_send_failed(&mut self, t: &Transmit) {
        if let Message::Pcg(_) = t.msg {
            self.pcg.handle_unreachable(t.to);
            self.pump();
        }
    }

    /// The membership layer's liveness now: the hosts it believes up (`hosts.live_hosts()`) and
    /// those SWIM declared dead recently. A host that left the live set since the last call is
    /// down for PCG, one newly in `dead` is dead. Call it whenever liveness may have changed (the
    /// binary: every 500 ms).
    pub fn handle_liveness(&mut self, now: Time, hosts: &dyn HostView, dead: BTreeSet<PeerId>) {
        self.clock = now;
        let view = Unbanned::new(hosts, &self.liars, now);
        let live: BTreeSet<PeerId> = view.live_hosts().into_iter().collect();
        for p in self.live.difference(&live) {
            self.pcg.handle_peer_down(now, *p, &view);
        }
        for p in dead.difference(&self.dead) {
            self.pcg.handle_peer_dead(now, *p, &view);
        }
        self.live = live;
        self.dead = dead;
        self.settle(now, hosts);
    }

    /// `peer` is believed down (a driver that learns of single deaths rather than live sets).
    pub fn handle_peer_down(&mut self, now: Time, peer: PeerId, hosts: &dyn HostView) {
        self.clock = now;
        let view = Unbanned::new(hosts, &self.liars, now);
        self.pcg.handle_peer_down(now, peer, &view);
        self.settle(now, hosts);
    }

    /// Timers: call at [`poll_timeout`](Self::poll_timeout) or later.
    pub fn handle_timeout(&mut self, now: Time, hosts: &dyn HostView) {
        self.clock = now;
        self.liars.expire(now);
        let view = Unbanned::new(hosts, &self.liars, now);
        if self.pcg.poll_timeout().is_some_and(|t| t <= now) {
            self.pcg.handle_timeout(now, &view);
        }
        if self.rbfs.poll_timeout().is_some_and(|t| t <= now) {
            self.rbfs.handle_timeout(now, self.pcg.store(), &view);
        }
        self.settle(now, hosts);
    }

    /// Hands every group over and takes no new ones (drain or shutdown).
    pub fn begin_shutdown(&mut self, now: Time, hosts: &dyn HostView) {
        self.clock = now;
        let view = Unbanned::new(hosts, &self.liars, now);
        self.pcg.begin_shutdown(now, &view);
        self.settle(now, hosts);
    }

    /// Whether `peer` is banned for lying about data now.
    pub fn is_banned(&self, peer: &PeerId, now: Time) -> bool {
        self.liars.is_banned(peer, now)
    }

    /// Drains events, then replaces every peer banned meanwhile in its groups (as dead), until
    /// nothing new is banned.
    fn settle(&mut self, now: Time, hosts: &dyn HostView) {
        self.pump();
        for record in std::mem::take(&mut self.to_place) {
            let view = Unbanned::new(hosts, &self.liars, now);
            let id = record.slot();
            // Nobody answered for the item: found its group here (or, if a group reached this
            // node meanwhile, update it the member's way).
            let _ = self.pcg.put_owned(now, &record, &view);
            self.events.push_back(Event::OwnedPlaced {
                item: id,
                holder: None,
                stale_against: None,
            });
            self.pump();
        }
        while !self.liars.fresh.is_empty() {
            let fresh = std::mem::take(&mut self.liars.fresh);
            let view = Unbanned::new(hosts, &self.liars, now);
            for p in fresh {
                self.live.remove(&p);
                self.pcg.handle_peer_dead(now, p, &view);
            }
            self.pump();
        }
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.pcg.poll_transmit() {
            return Some(Transmit {
                to: t.to,
                msg: Message::Pcg(t.msg),
            });
        }
        self.rbfs.poll_transmit().map(|t| Transmit {
            to: t.to,
            msg: Message::Rbfs(t.msg),
        })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.pump();
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.pcg.poll_timeout(), self.rbfs.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Drains both machines' events into the queue, applying the glue on the way.
    fn pump(&mut self) {
        let me = self.pcg.id();
        while let Some(e) = self.pcg.poll_event() {
            let liar = match &e {
                pcg::Event::ViewChanged(v) => {
                    self.rbfs.add_hint(v.item, &v.members);
                    None
                }
                pcg::Event::Deleted(item) | pcg::Event::TombstoneExpired(item) => {
                    self.rbfs.forget_hint(item);
                    None
                }
                pcg::Event::ProofFailed { peer, .. } => Some(*peer),
                pcg::Event::Corrupt { from, .. } if *from != me => Some(*from),
                _ => None,
            };
            self.events.push_back(Event::Pcg(e));
            if let Some(p) = liar {
                self.strike(p);
            }
        }
        while let Some(e) = self.rbfs.poll_event() {
            let liar = match &e {
                rbfs::Event::Corrupt { holder, .. } => Some(*holder),
                _ => None,
            };
            self.owned_search_ended(&e);
            self.events.push_back(Event::Rbfs(e));
            if let Some(p) = liar {
                self.strike(p);
            }
        }
    }

    /// An owned put's search ended: send the record to the holder found, or place it here.
    fn owned_search_ended(&mut self, e: &rbfs::Event) {
        let (search, found) = match e {
            rbfs::Event::Found {
                search,
                holder,
                content,
                ..
            } => (
                search,
                Some((*holder, content.as_ref().and_then(|c| c.version()))),
            ),
            rbfs::Event::NotFound { search, .. } => (search, None),
            _ => return,
        };
        let Some(record) = self.pending_puts.remove(search) else {
            return;
        };
        let id = record.slot();
        match found {
            Some((holder, held)) if holder != self.pcg.id() => {
                let stale_against = held.filter(|v| v.seq >= record.seq()).map(|v| v.seq);
                if stale_against.is_none() {
                    self.pcg.send_update(holder, &record);
                }
                self.events.push_back(Event::OwnedPlaced {
                    item: id,
                    holder: Some(holder),
                    stale_against,
                });
            }
            _ => self.to_place.push(record),
        }
    }

    fn strike(&mut self, peer: PeerId) {
        let cfg = self.pcg.config();
        let (after, ban_for) = (cfg.ban_after_lies, cfg.ban_for);
        let now = self.clock;
        if self.liars.strike(peer, now, after, ban_for) {
            self.events.push_back(Event::Banned {
                peer,
                until: now + ban_for,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;
    use crate::item::MemoryStore;
    use crate::node::TableView;
    use crate::peers::{self, Liveness, Source, Table};
    use crate::wire::PeerRecord;

    /// Data cores on their own sites over real known-host tables, messages delivered at once.
    struct Net {
        cores: Vec<DataCore<MemoryStore>>,
        tables: Vec<Table>,
        ids: Vec<PeerId>,
        sites: Vec<String>,
        /// Crashed: sends nothing, receives nothing.
        down: BTreeSet<usize>,
        /// Answers every possession challenge with a wrong proof (as the binary's `lie` hook).
        liar: Option<usize>,
        now: Time,
    }

    fn peer(i: usize) -> PeerId {
        PeerId::from_public_key(&(i as u64).to_le_bytes())
    }

    impl Net {
        fn new(n: usize) -> Net {
            let ids: Vec<PeerId> = (0..n).map(peer).collect();
            let sites: Vec<String> = (0..n).map(|i| format!("site-{i}")).collect();
            let mut rng = SmallRng::seed_from_u64(1);
            let tables = (0..n)
                .map(|i| {
                    let mut t = Table::new(peers::Config::default(), ids[i]).unwrap();
                    for j in (0..n).filter(|j| *j != i) {
                        let rec = PeerRecord {
                            id: ids[j],
                            addrs: vec![std::net::SocketAddr::from(([10, 0, 0, j as u8], 7000))],
                            site: sites[j].clone(),
                            uptime_secs: 10,
                            storage_free: 1 << 30,
                            known_hosts: n as u32 - 1,
                            public: false,
                            relays: vec![],
                        };
                        t.insert(Time::ZERO, rec, Source::Exchange, &mut rng);
                    }
                    t
                })
                .collect();
            let cores = (0..n)
                .map(|i| {
                    let pcg = pcg::Config {
                        replicas: 3,
                        ..pcg::Config::default()
                    };
                    let mut c = DataCore::new(
                        ids[i],
                        pcg,
                        rbfs::Config::default(),
                        MemoryStore::new(1 << 20),
                        i as u64,
                    )
                    .unwrap();
                    c.start(Time::ZERO);
                    c
                })
                .collect();
            Net {
                cores,
                tables,
                ids,
                sites,
                down: BTreeSet::new(),
                liar: None,
                now: Time::ZERO,
            }
        }

        fn idx(&self, id: &PeerId) -> usize {
            self.ids.iter().position(|p| p == id).unwrap()
        }

        fn with<R>(
            &mut self,
            i: usize,
            f: impl FnOnce(&mut DataCore<MemoryStore>, &TableView<'_>, Time) -> R,
        ) -> R {
            let view = TableView::new(&self.tables[i], self.now, self.ids[i], &self.sites[i]);
            f(&mut self.cores[i], &view, self.now)
        }

        /// Delivers until quiet; a transmit to or from a crashed node fails (as the driver
        /// reports it) instead.
        fn deliver(&mut self) {
            for _ in 0..10_000 {
                let mut any = false;
                for i in 0..self.cores.len() {
                    while let Some(t) = self.cores[i].poll_transmit() {
                        any = true;
                        let j = self.idx(&t.to);
                        if self.down.contains(&i) || self.down.contains(&j) {
                            if !self.down.contains(&i) {
                                self.cores[i].handle_send_failed(&t);
                            }
                            continue;
                        }
                        let mut t = t;
                        if self.liar == Some(i)
                            && let Message::Pcg(pcg::Message::Heartbeat(hb)) = &mut t.msg
                        {
                            for p in &mut hb.proofs {
                                p.hash = [0x11; 32];
                            }
                        }
                        // Through the wire encoding, as the binary sends it.
                        let body = t.msg.encode().unwrap();
                        let msg = Message::decode(t.msg.overlay(), &body).unwrap().unwrap();
                        assert_eq!(msg, t.msg);
                        let from = self.ids[i];
                        self.with(j, |c, h, now| c.handle_message(now, from, msg, h));
                    }
                }
                if !any {
                    return;
                }
            }
            panic!("message storm");
        }

        fn run_for(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now = self.now + Duration::from_millis(100);
                for i in 0..self.cores.len() {
                    if !self.down.contains(&i) {
                        self.with(i, |c, h, now| c.handle_timeout(now, h));
                    }
                }
                self.deliver();
                for c in &mut self.cores {
                    while c.poll_event().is_some() {}
                }
            }
        }

        /// Stores `content` from node 0 and lets its group form: the item, its r = 3 members, and
        /// one member other than node 0.
        fn placed(&mut self, content: &[u8]) -> (ItemId, BTreeSet<PeerId>, PeerId) {
            let item = self
                .with(0, |c, h, now| c.put(now, content.to_vec(), h))
                .unwrap();
            self.deliver();
            self.run_for(Duration::from_secs(10));
            let members = self.members(0, &item);
            assert_eq!(members.len(), 3, "group at r: {members:?}");
            let other = *members.iter().find(|p| **p != self.ids[0]).unwrap();
            (item, members, other)
        }

        fn members(&self, i: usize, item: &ItemId) -> BTreeSet<PeerId> {
            let view = TableView::new(&self.tables[i], self.now, self.ids[i], &self.sites[i]);
            self.cores[i]
                .pcg()
                .group(item, &view)
                .map(|g| g.view.members.into_iter().collect())
                .unwrap_or_default()
        }
    }

    #[test]
    fn group_views_teach_search_where_an_item_lives_and_deletes_unteach_it() {
        let mut net = Net::new(5);
        let item = net
            .with(0, |c, h, now| c.put(now, b"a hinted item".to_vec(), h))
            .unwrap();
        net.deliver();
        net.run_for(Duration::from_secs(10));
        let members = net.members(0, &item);
        assert_eq!(members.len(), 3, "group at r: {members:?}");
        for m in &members {
            let i = net.idx(m);
            let hint: BTreeSet<PeerId> = net.cores[i]
                .rbfs()
                .hint(&item)
                .expect("a member's search knows its group")
                .iter()
                .copied()
                .collect();
            let others: BTreeSet<PeerId> = members.iter().filter(|p| *p != m).copied().collect();
            assert!(others.is_subset(&hint), "{hint:?} lacks some of {others:?}");
        }
        assert!(net.with(0, |c, _, now| c.delete(now, item)));
        net.deliver();
        for m in &members {
            let i = net.idx(m);
            assert!(
                net.cores[i].rbfs().hint(&item).is_none(),
                "hint kept after delete"
            );
        }
    }

    #[test]
    fn a_host_declared_dead_is_replaced_at_once_and_one_merely_down_keeps_its_place() {
        let mut net = Net::new(6);
        let (item, _, victim) = net.placed(b"kept at r");
        let v = net.idx(&victim);
        net.down.insert(v);
        // Every other node's membership layer sees it leave the live set (down, not dead).
        for i in (0..6).filter(|i| *i != v) {
            net.tables[i].set_liveness(&victim, Liveness::Suspect);
            net.with(i, |c, h, now| c.handle_liveness(now, h, BTreeSet::new()));
        }
        net.run_for(Duration::from_millis(500));
        assert!(
            net.members(0, &item).contains(&victim),
            "a host merely down keeps its place for the grace period"
        );
        // SWIM declares it dead: replaced without waiting for the grace period.
        for i in (0..6).filter(|i| *i != v) {
            net.tables[i].remove(&victim);
            net.with(i, |c, h, now| {
                c.handle_liveness(now, h, BTreeSet::from([victim]))
            });
        }
        net.run_for(Duration::from_secs(2));
        let after = net.members(0, &item);
        assert!(!after.contains(&victim), "dead member still in {after:?}");
        assert_eq!(after.len(), 3, "group back at r: {after:?}");
        for m in &after {
            assert!(net.cores[net.idx(m)].store().contains(&item));
        }
    }

    #[test]
    fn a_member_that_keeps_lying_about_its_copy_is_banned_and_replaced() {
        let mut net = Net::new(6);
        let (item, before, liar) = net.placed(b"worth lying about");
        let l = net.idx(&liar);
        // Every proof it sends is wrong: it claims a copy it cannot prove.
        net.liar = Some(l);
        let mut banned_by = None;
        for _ in 0..300 {
            net.run_for(Duration::from_secs(1));
            let now = net.now;
            banned_by = (0..6).find(|i| *i != l && net.cores[*i].is_banned(&liar, now));
            if banned_by.is_some() {
                break;
            }
        }
        let Some(b) = banned_by else {
            panic!("nobody banned a member whose every proof was wrong");
        };
        assert!(before.contains(&net.ids[b]), "banned by a co-member");
        net.run_for(Duration::from_secs(10));
        let honest = *before.iter().find(|p| **p != liar).unwrap();
        let after = net.members(net.idx(&honest), &item);
        assert!(!after.contains(&liar), "liar still in {after:?}");
        assert_eq!(
            after.len(),
            3,
            "group back at r without the liar: {after:?}"
        );
        for m in &after {
            assert!(net.cores[net.idx(m)].store().contains(&item));
        }
    }

    /// Runs `d` like `run_for`, but keeps node `i`'s events.
    fn run_keeping(net: &mut Net, i: usize, d: Duration) -> Vec<Event> {
        let mut kept = Vec::new();
        let end = net.now + d;
        while net.now < end {
            net.now = net.now + Duration::from_millis(100);
            for j in 0..net.cores.len() {
                net.with(j, |c, h, now| c.handle_timeout(now, h));
            }
            net.deliver();
            for (j, c) in net.cores.iter_mut().enumerate() {
                while let Some(e) = c.poll_event() {
                    if j == i {
                        kept.push(e);
                    }
                }
            }
        }
        kept
    }

    #[test]
    fn an_owned_put_from_outside_the_group_updates_the_group_instead_of_splitting_it() {
        use crate::owned::{OwnerKey, Record};
        let key = OwnerKey::from_seed([3; 32]);
        let rec = |seq: u64| Record::sign(&key, "doc", seq, Some(vec![seq as u8; 8])).unwrap();
        let mut net = Net::new(7);
        let placed = net
            .with(0, |c, h, now| c.put_owned(now, &rec(1), h))
            .unwrap();
        let id = placed.id();
        assert_eq!(placed, Placement::Searching(id), "node 0 keeps nothing yet");
        let evs = run_keeping(&mut net, 0, Duration::from_secs(30));
        assert!(
            evs.iter()
                .any(|e| matches!(e, Event::OwnedPlaced { holder: None, .. })),
            "nobody held it: placed in a new group"
        );
        let members = net.members(0, &id);
        assert_eq!(members.len(), 3, "{members:?}");
        let outsider = (0..7).find(|i| !members.contains(&net.ids[*i])).unwrap();
        let placed = net
            .with(outsider, |c, h, now| c.put_owned(now, &rec(2), h))
            .unwrap();
        assert_eq!(placed, Placement::Searching(id));
        let evs = run_keeping(&mut net, outsider, Duration::from_secs(10));
        assert!(
            evs.iter().any(|e| matches!(
                e,
                Event::OwnedPlaced {
                    holder: Some(_),
                    stale_against: None,
                    ..
                }
            )),
            "{evs:?}"
        );
        for m in &members {
            let held = net.cores[net.idx(m)].store().get(&id).unwrap();
            assert_eq!(
                held.record().unwrap().seq(),
                2,
                "every member took the update"
            );
        }
        assert!(
            !net.cores[outsider].pcg().keeps(&id),
            "no second group was started"
        );
        // A stale put from outside finds the newer record and changes nothing.
        let other = (0..7)
            .find(|i| *i != outsider && !members.contains(&net.ids[*i]))
            .unwrap();
        net.with(other, |c, h, now| c.put_owned(now, &rec(1), h))
            .unwrap();
        let evs = run_keeping(&mut net, other, Duration::from_secs(10));
        assert!(
            evs.iter().any(|e| matches!(
                e,
                Event::OwnedPlaced {
                    stale_against: Some(2),
                    ..
                }
            )),
            "{evs:?}"
        );
        for m in &members {
            let held = net.cores[net.idx(m)].store().get(&id).unwrap();
            assert_eq!(held.record().unwrap().seq(), 2);
        }
    }

    #[test]
    fn bodies_that_do_not_decode_get_a_typed_error_and_other_names_are_not_ours() {
        assert!(matches!(
            Message::decode(PCG, &[0xff; 9]),
            Err(DecodeError::Body { overlay: "pcg", .. })
        ));
        assert!(matches!(
            Message::decode(RBFS, &[]),
            Err(DecodeError::Body {
                overlay: "rbfs",
                ..
            })
        ));
        assert_eq!(Message::decode("chat", b"hello"), Ok(None));
        assert_eq!(Message::decode(BLOCK, b"x"), Ok(None));
        let net = Net::new(1);
        assert!(matches!(
            net.cores[0].handle_block_request(b"\x01"),
            Err(BlockError::Decode(_))
        ));
        let body = postcard::to_stdvec(&(ItemId::of(b"not here"), 0u32)).unwrap();
        assert!(matches!(
            net.cores[0].handle_block_request(&body),
            Err(BlockError::NotHeld(_))
        ));
    }
}
