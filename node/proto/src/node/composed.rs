//! [`NodeCore`]: the membership core and the data core composed, with the glue between them.
//!
//! What used to be the binary's job between two drivers now happens here, on every input:
//! - liveness reaches PCG as the table changes, not on a poll: whenever membership reports a host
//!   added, removed, suspected or alive, the data core is told the new live set and SWIM's recent
//!   deaths ([`DataCore::handle_liveness`]), so a suspect co-member is *down* (grace period) and a
//!   dead one is replaced at once;
//! - a data message from a peer is proof it is alive (`Membership::handle_contact`), as any
//!   other request is;
//! - PCG and RBFS see the known-host table through [`TableView`], whose diversity choice is the
//!   table's own.
//!
//! The request/response shape of membership stays as it is on the wire: the core asks for a
//! Hello, a probe or a gossip ([`Transmit::Membership`]) and is told the outcome
//! (`handle_hello`, `handle_dial_failed`, `handle_probe_result`); inbound requests are answered
//! from it (`handle_inbound_hello`, `handle_ping`, `handle_gossip`). Data messages are
//! fire-and-forget ([`Transmit::Data`]).

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::data::{self, DataCore};
use super::hosts::TableView;
use crate::id::PeerId;
use crate::item::{ItemId, Store};
use crate::membership::{self, HelloRefused, HelloReply, Membership, ProbeOutcome};
use crate::pcg;
use crate::peers::{Source, Table};
use crate::rbfs::{self, QueryId};
use crate::time::Time;
use crate::wire::{MemberUpdate, PeerRecord};

/// Everything a node core is configured with: the sections of the daemon's configuration that
/// decide protocol behaviour.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Membership: table, beacons, SWIM, exchange.
    pub membership: membership::Config,
    /// Peer Content Groups.
    pub pcg: pcg::Config,
    /// Random breadth-first search.
    pub rbfs: rbfs::Config,
}

/// A setting out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// In the membership section.
    #[error("membership: {0}")]
    Membership(#[from] membership::ConfigError),
    /// In the data sections (PCG, RBFS, item limits).
    #[error("data: {0}")]
    Data(#[from] data::ConfigError),
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Transmit {
    /// A membership action: a beacon, a Hello, a probe or a gossip (see
    /// [`membership::Action`] for what to send and which outcome to report).
    Membership(membership::Action),
    /// A data message (PCG or RBFS) to one peer; report a failure with
    /// [`NodeCore::handle_send_failed`].
    Data(data::Transmit),
}

/// Something that happened, for metrics, logs and the application.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// From membership.
    Membership(membership::Event),
    /// From the data core.
    Data(data::Event),
}

/// One node's protocol state: membership and data composed. See the [module docs](self).
#[derive(Debug)]
pub struct NodeCore<S: Store> {
    me: PeerId,
    site: String,
    membership: Membership,
    data: DataCore<S>,
    events: VecDeque<Event>,
}

impl<S: Store> NodeCore<S> {
    /// A node described by `local` (id, addresses, site), over `store`, starting at `now`; `seed`
    /// seeds every machine inside (differently).
    pub fn new(
        config: Config,
        local: PeerRecord,
        store: S,
        now: Time,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        let me = local.id;
        let site = local.site.clone();
        let membership = Membership::new(
            config.membership,
            local,
            now,
            SmallRng::seed_from_u64(seed ^ 0x6d65_6d62),
        )?;
        let mut data = DataCore::new(me, config.pcg, config.rbfs, store, seed)?;
        data.start(now);
        Ok(NodeCore {
            me,
            site,
            membership,
            data,
            events: VecDeque::new(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.me
    }

    /// This node's site label.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The membership core, for queries (table, SWIM, local record).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The membership core, to change what this node announces (addresses, relays, storage).
    pub fn membership_mut(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// The data core, for queries (PCG groups, RBFS, store).
    pub fn data(&self) -> &DataCore<S> {
        &self.data
    }

    /// The known-host table.
    pub fn table(&self) -> &Table {
        self.membership.table()
    }

    /// The item store.
    pub fn store(&self) -> &S {
        self.data.store()
    }

    /// The item store, to change it outside the protocol (tests that corrupt a replica).
    pub fn store_mut(&mut self) -> &mut S {
        self.data.store_mut()
    }

    /// The known-host table as PCG and RBFS see it at `now` (live hosts, sites, the table's
    /// diversity choice), for queries such as a group's state.
    pub fn hosts(&self, now: Time) -> TableView<'_> {
        TableView::new(self.membership.table(), now, self.me, &self.site)
    }

    /// Replaces the bootstrap addresses (see [`Membership::set_bootstrap`]).
    pub fn set_bootstrap(&mut self, now: Time, addrs: impl IntoIterator<Item = SocketAddr>) {
        self.membership.set_bootstrap(now, addrs);
    }

    // ---- membership inputs ----

    /// A datagram arrived on the beacon socket.
    pub fn handle_beacon(&mut self, now: Time, datagram: &[u8], from: SocketAddr) {
        self.membership.handle_beacon(now, datagram, from);
        self.after(now);
    }

    /// A Hello this node asked for was answered.
    pub fn handle_hello(
        &mut self,
        now: Time,
        addr: SocketAddr,
        record: PeerRecord,
        sample: Vec<PeerRecord>,
        source: Source,
    ) {
        self.membership
            .handle_hello(now, addr, record, sample, source);
        self.after(now);
    }

    /// A Hello this node asked for failed.
    pub fn handle_dial_failed(
        &mut self,
        now: Time,
        addrs: &[SocketAddr],
        expected_id: Option<PeerId>,
        source: Source,
    ) {
        self.membership
            .handle_dial_failed(now, addrs, expected_id, source);
        self.after(now);
    }

    /// A peer sent a Hello: the answer to send back, or why it is refused.
    pub fn handle_inbound_hello(
        &mut self,
        now: Time,
        observed: SocketAddr,
        record: PeerRecord,
        network: &str,
        sample: u16,
    ) -> Result<HelloReply, HelloRefused> {
        let r = self
            .membership
            .handle_inbound_hello(now, observed, record, network, sample);
        self.after(now);
        r
    }

    /// The outcome of a probe this node sent.
    pub fn handle_probe_result(
        &mut self,
        now: Time,
        from: PeerId,
        seq: u64,
        outcome: ProbeOutcome,
    ) {
        self.membership.handle_probe_result(now, from, seq, outcome);
        self.after(now);
    }

    /// A peer probed this node (answer `Ack`) or asked it to probe another (`PingReq`): either is
    /// proof the peer is alive.
    pub fn handle_ping(&mut self, now: Time, from: PeerId) {
        self.membership.handle_contact(now, from);
        self.after(now);
    }

    /// A peer sent gossip.
    pub fn handle_gossip(&mut self, now: Time, from: PeerId, updates: &[MemberUpdate]) {
        self.membership.handle_gossip(now, from, updates);
        self.after(now);
    }

    /// How long to wait for the target when answering a `PingReq`.
    pub fn ping_req_timeout(&self) -> std::time::Duration {
        self.membership.ping_req_timeout()
    }

    /// This node's record (send it in Hellos).
    pub fn local_record(&self, now: Time) -> PeerRecord {
        self.membership.local_record(now)
    }

    // ---- data inputs ----

    /// A data message from `from` (also proof that `from` is alive).
    pub fn handle_message(&mut self, now: Time, from: PeerId, msg: data::Message) {
        self.membership.handle_contact(now, from);
        self.after(now);
        let view = TableView::new(self.membership.table(), now, self.me, &self.site);
        self.data.handle_message(now, from, msg, &view);
    }

    /// A data transmit could not be delivered.
    pub fn handle_send_failed(&mut self, t: &data::Transmit) {
        self.data.handle_send_failed(t);
    }

    /// Answers a block request of a large item from the store.
    pub fn handle_block_request(&self, body: &[u8]) -> Result<Vec<u8>, data::BlockError> {
        self.data.handle_block_request(body)
    }

    /// Timers: call at [`poll_timeout`](Self::poll_timeout) or later.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.membership.poll_timeout().is_some_and(|t| t <= now) {
            self.membership.handle_timeout(now);
            self.after(now);
        }
        if self.data.poll_timeout().is_some_and(|t| t <= now) {
            let view = TableView::new(self.membership.table(), now, self.me, &self.site);
            self.data.handle_timeout(now, &view);
        }
    }

    // ---- application calls ----

    /// Stores `content` here and in a group of diverse hosts; returns its id.
    pub fn put(&mut self, now: Time, content: Vec<u8>) -> Result<ItemId, pcg::PutError> {
        let view = TableView::new(self.membership.table(), now, self.me, &self.site);
        self.data.put(now, content, &view)
    }

    /// Stores an owner's signed record (a value or a tombstone) of an owned item: here and in
    /// its group on a member, else through a holder found by search (see
    /// [`DataCore::put_owned`](super::DataCore::put_owned)).
    pub fn put_owned(
        &mut self,
        now: Time,
        record: &crate::owned::Record,
    ) -> Result<super::data::Placement, pcg::PutError> {
        let view = TableView::new(self.membership.table(), now, self.me, &self.site);
        self.data.put_owned(now, record, &view)
    }

    /// Deletes `item` from its group; `false` when this node is not a member.
    pub fn delete(&mut self, now: Time, item: ItemId) -> bool {
        self.data.delete(now, item)
    }

    /// Starts a search; the answer comes as an [`Event::Data`] with the returned id.
    pub fn find(&mut self, now: Time, item: ItemId) -> QueryId {
        let view = TableView::new(self.membership.table(), now, self.me, &self.site);
        self.data.find(now, item, &view)
    }

    /// Rejoins a group this node was in before a restart.
    pub fn restore(&mut self, now: Time, view: pcg::View) {
        self.data.restore(now, view);
    }

    /// Hands every group over and takes no new ones.
    pub fn begin_shutdown(&mut self, now: Time) {
        let view = TableView::new(self.membership.table(), now, self.me, &self.site);
        self.data.begin_shutdown(now, &view);
    }

    // ---- outputs ----

    /// The next thing to send: membership actions first (probes are time-critical).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(a) = self.membership.poll_action() {
            return Some(Transmit::Membership(a));
        }
        self.data.poll_transmit().map(Transmit::Data)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.data.poll_event().map(Event::Data)
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Time> {
        [self.membership.poll_timeout(), self.data.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// After a membership input: collect its events, and tell the data core the new liveness
    /// when the table or SWIM changed.
    fn after(&mut self, now: Time) {
        let mut liveness_changed = false;
        while let Some(e) = self.membership.poll_event() {
            liveness_changed |= matches!(
                e,
                membership::Event::PeerAdded { .. }
                    | membership::Event::PeerRemoved { .. }
                    | membership::Event::PeerSuspected { .. }
                    | membership::Event::PeerAlive { .. }
                    | membership::Event::PeerHeardDead { .. }
            );
            self.events.push_back(Event::Membership(e));
        }
        if liveness_changed {
            let dead = self.membership.swim().recently_dead().copied().collect();
            let view = TableView::new(self.membership.table(), now, self.me, &self.site);
            self.data.handle_liveness(now, &view, dead);
        }
    }
}
