//! The default data overlay on a real node: Peer Content Groups keep every item alive on `r`
//! diverse nodes, random breadth-first search finds it. Both run composed in one sans-IO core,
//! [`DataCore`] (`butter-proto`, also what the simulator runs), with the glue between them; this
//! module is its thin async driver: it feeds the core messages, timers and the membership
//! layer's liveness, sends what it asks to send, and turns its events into metrics and answers.
//!
//! PCG and RBFS messages travel as `Request::Overlay { name: "pcg" | "rbfs" }` with a postcard
//! body; blocks of large items are fetched with `Request::Overlay { name: "block" }`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use butter_proto::item::{Assembler, ItemId, Store};
use butter_proto::node::TableView;
use butter_proto::node::data::{self as core, DataCore};
use butter_proto::pcg::{self, GroupInfo};
use butter_proto::peers::Table;
use butter_proto::rbfs::{self, QueryId};
use butter_proto::wire::Request;
use butter_proto::{PeerId, Time};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::store::NodeStore;
use crate::transport::{Remote, RequestError};

/// Data overlay settings (the `[node.data]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Run the data overlay. Default on.
    pub enabled: bool,
    /// Group size `r`. Default 3.
    pub replicas: usize,
    /// Bytes of item content this node stores for the network. Default 1 GiB.
    pub storage_bytes: u64,
    /// Largest item accepted. Default 16 MiB.
    pub max_item_size: usize,
    /// PCG heartbeat period in seconds. Default 2.
    pub heartbeat_secs: f64,
    /// With a data directory: bytes of item content kept in memory as a read cache (the items
    /// themselves live on disk; the item read last is kept even when larger). Default 8 MiB.
    pub cache_bytes: u64,
    /// Whether members of an item's group may delete it (`DELETE /items/{id}`). Items have no
    /// owner, so in a network whose members are not trusted turn this off. Default on.
    pub deletes: bool,
    /// Test only: answer every possession challenge with a wrong proof, like a peer claiming to
    /// hold data it does not.
    #[doc(hidden)]
    #[serde(skip)]
    pub lie: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            enabled: true,
            replicas: 3,
            storage_bytes: 1 << 30,
            max_item_size: 16 << 20,
            heartbeat_secs: 2.0,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
            deletes: true,
            lie: false,
        }
    }
}

/// Why storing or retrieving an item failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The data overlay is disabled on this node.
    #[error("the data overlay is disabled on this node")]
    Disabled,
    /// The local store or the group refused the item.
    #[error("cannot store: {0}")]
    Put(#[from] pcg::PutError),
    /// Nobody answered with the item in time.
    #[error("item {0} not found")]
    NotFound(ItemId),
    /// Deleting is turned off on this node (`data.deletes = false`).
    #[error("deleting is turned off on this node (data.deletes = false)")]
    DeletesOff,
    /// Only a member of an item's group may delete it, and this node is not one.
    #[error(
        "this node is not in the group of item {0}; send the delete to a member (GET /items/{0}/group on a holder lists them)"
    )]
    NotMember(ItemId),
    /// The holder's blocks did not assemble into the item.
    #[error("item {0} could not be fetched: {1}")]
    Fetch(ItemId, String),
    /// A network request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// Why the data overlay could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A `[node.data]` value is out of range.
    #[error("data: {0}")]
    Config(#[from] core::ConfigError),
    /// The item store in the data directory could not be opened.
    #[error("data: cannot open the item store in {dir}: {source}")]
    Store {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How a search ended, for the API.
#[derive(Clone, Debug, Serialize)]
pub struct Retrieved {
    /// The verified content.
    #[serde(skip)]
    pub content: Vec<u8>,
    /// Who answered.
    pub holder: String,
    /// Hops to the holder (0: local).
    pub hops: u8,
    /// Time taken.
    pub elapsed_ms: f64,
}

struct State {
    core: DataCore<NodeStore>,
    /// Corrupt files the store found on read that the metrics have counted.
    corrupt_counted: u64,
}

enum Outcome {
    Found {
        content: Option<butter_proto::item::Item>,
        manifest: Option<butter_proto::item::Manifest>,
        holder: PeerId,
        hops: u8,
    },
    NotFound,
}

/// The overlay's state behind a short lock, with the driver's wake-up and pending searches.
pub(crate) struct Data {
    state: Mutex<State>,
    notify: Notify,
    epoch: Instant,
    waiters: Mutex<HashMap<QueryId, oneshot::Sender<Outcome>>>,
}

impl Data {
    pub(crate) fn new(
        me: PeerId,
        cfg: &DataConfig,
        data_dir: Option<&std::path::Path>,
        epoch: Instant,
        seed: u64,
    ) -> Result<Self, SetupError> {
        let mut pc = pcg::Config {
            replicas: cfg.replicas,
            heartbeat_interval: Duration::from_secs_f64(cfg.heartbeat_secs.max(0.05)),
            accept_deletes: cfg.deletes,
            ..pcg::Config::default()
        };
        pc.item.max_item_size = cfg.max_item_size;
        pc.validate()?;
        let store = match data_dir {
            Some(dir) => {
                let (store, loaded) = NodeStore::open(dir, cfg.storage_bytes, cfg.cache_bytes)
                    .map_err(|source| SetupError::Store {
                        dir: dir.to_path_buf(),
                        source,
                    })?;
                if loaded.items > 0 || loaded.corrupt > 0 {
                    info!(
                        items = loaded.items,
                        corrupt = loaded.corrupt,
                        "item store loaded and verified"
                    );
                }
                store
            }
            None => NodeStore::memory(cfg.storage_bytes),
        };
        let views = store.load_views();
        let mut core = DataCore::new(me, pc, rbfs::Config::default(), store, seed)?;
        // Rejoin our groups: within their grace window the others keep us instead of replacing us.
        for view in views {
            core.restore(Time::ZERO, view);
        }
        Ok(Data {
            state: Mutex::new(State {
                core,
                corrupt_counted: 0,
            }),
            notify: Notify::new(),
            epoch,
            waiters: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> Time {
        Time::from_duration(self.epoch.elapsed())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The known-host table at one instant, as PCG and RBFS ask for it (a copy, so the membership
/// lock is not held while the data core runs): live hosts, sites, and the table's own diversity
/// choice ([`TableView`]).
struct Hosts {
    table: Table,
    now: Time,
    me: PeerId,
    site: String,
}

impl Hosts {
    fn of(node: &Node) -> Hosts {
        let (table, now) = node
            .inner
            .membership
            .read(|c, now| (c.table().clone(), now));
        Hosts {
            table,
            now,
            me: node.id(),
            site: node.site().to_string(),
        }
    }

    fn view(&self) -> TableView<'_> {
        TableView::new(&self.table, self.now, self.me, &self.site)
    }
}

impl Node {
    fn data(&self) -> Result<&Arc<Data>, DataError> {
        self.inner.data.as_ref().ok_or(DataError::Disabled)
    }

    /// Stores `content` in the network: here, and in a group of `r` diverse nodes. Returns its id
    /// (the SHA-256 of the content).
    pub fn put(&self, content: Vec<u8>) -> Result<ItemId, DataError> {
        let data = self.data()?;
        let hosts = Hosts::of(self);
        let now = data.now();
        let id = data.lock().core.put(now, content, &hosts.view())?;
        data.notify.notify_one();
        info!(item = %id.short(), "item stored");
        Ok(id)
    }

    /// Deletes `id` from the network: this node drops it and tells the other members of its group,
    /// which drop it too and refuse it for a while (`pcg::Config::tombstone_ttl`, 10 min), also to
    /// members that were away and come back holding it. Fails with [`DataError::NotMember`] on a
    /// node outside the item's group (members accept deletes only from members).
    pub fn delete(&self, id: ItemId) -> Result<(), DataError> {
        let data = self.data()?;
        let now = data.now();
        {
            let mut st = data.lock();
            if !st.core.pcg().config().accept_deletes {
                return Err(DataError::DeletesOff);
            }
            if !st.core.delete(now, id) {
                return Err(DataError::NotMember(id));
            }
        }
        data.notify.notify_one();
        info!(item = %id.short(), "item deleted");
        Ok(())
    }

    /// Finds `id` (locally, through its group, else by random breadth-first search) and returns
    /// its verified content.
    pub async fn get(&self, id: ItemId) -> Result<Retrieved, DataError> {
        let data = self.data()?;
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let hosts = Hosts::of(self);
        {
            let now = data.now();
            // The waiter goes in under the state lock: the driver drains the search's outcome
            // under that lock too, and an outcome with no waiter yet would be dropped.
            let mut st = data.lock();
            let q = st.core.find(now, id, &hosts.view());
            data.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(q, tx);
            drop(st);
        }
        data.notify.notify_one();
        let outcome = tokio::time::timeout(Duration::from_secs(20), rx).await;
        let result = match outcome {
            Ok(Ok(Outcome::Found {
                content: Some(item),
                holder,
                hops,
                ..
            })) => Ok(Retrieved {
                content: item.content().to_vec(),
                holder: holder.to_string(),
                hops,
                elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            }),
            Ok(Ok(Outcome::Found {
                content: None,
                manifest: Some(m),
                holder,
                hops,
            })) => {
                let content = self.fetch_blocks(id, m, holder).await?;
                Ok(Retrieved {
                    content,
                    holder: holder.to_string(),
                    hops,
                    elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
                })
            }
            _ => Err(DataError::NotFound(id)),
        };
        let label = if result.is_ok() { "found" } else { "not_found" };
        self.metrics().retrievals.with_label_values(&[label]).inc();
        if let Ok(r) = &result {
            self.metrics().retrieval_hops.observe(f64::from(r.hops));
            self.metrics()
                .retrieval_duration
                .observe(start.elapsed().as_secs_f64());
        }
        result
    }

    async fn fetch_blocks(
        &self,
        id: ItemId,
        manifest: butter_proto::item::Manifest,
        holder: PeerId,
    ) -> Result<Vec<u8>, DataError> {
        let data = self.data()?;
        let cfg = data.lock().core.pcg().config().item.clone();
        let mut asm =
            Assembler::new(manifest, &cfg).map_err(|e| DataError::Fetch(id, e.to_string()))?;
        for index in asm.missing() {
            let body = postcard::to_stdvec(&(id, index))
                .map_err(|e| DataError::Fetch(id, e.to_string()))?;
            let bytes = self
                .send_overlay(holder, "block", Bytes::from(body))
                .await?;
            asm.add(index, bytes.to_vec())
                .map_err(|e| DataError::Fetch(id, e.to_string()))?;
        }
        let item = asm
            .finish()
            .map_err(|e| DataError::Fetch(id, e.to_string()))?;
        Ok(item.content().to_vec())
    }

    /// The item's group as this node sees it.
    pub fn group(&self, id: &ItemId) -> Option<GroupInfo> {
        let data = self.inner.data.as_ref()?;
        let hosts = Hosts::of(self);
        data.lock().core.pcg().group(id, &hosts.view())
    }

    /// Items this node holds.
    pub fn items(&self) -> Vec<ItemId> {
        self.inner
            .data
            .as_ref()
            .map(|d| d.lock().core.store().ids())
            .unwrap_or_default()
    }

    /// Groups this node is in, by state: `[cold, goldilocks, hot]`.
    pub fn group_states(&self) -> [usize; 3] {
        let Some(data) = self.inner.data.as_ref() else {
            return [0; 3];
        };
        let hosts = Hosts::of(self);
        data.lock().core.pcg().states(&hosts.view())
    }

    /// Test hook: replaces the bytes of a locally held item without changing its id, as a disk
    /// error or a lying holder would. The possession check must detect it.
    #[doc(hidden)]
    pub fn corrupt_local_copy(&self, id: &ItemId, bytes: Vec<u8>) -> bool {
        self.inner
            .data
            .as_ref()
            .is_some_and(|d| d.lock().core.store_mut().corrupt(id, bytes))
    }

    /// Sends an overlay message and returns the reply body.
    pub async fn send_overlay(
        &self,
        peer: PeerId,
        name: &str,
        body: Bytes,
    ) -> Result<Bytes, RequestError> {
        let req = Request::Overlay {
            name: name.to_string(),
        };
        let (_, reply) = self
            .send(peer, &req, body, &format!("overlay:{name}"))
            .await?;
        Ok(reply)
    }
}

/// Answers `Request::Overlay` for the data overlay's names.
pub(crate) fn handle(
    node: &Node,
    from: Remote,
    name: &str,
    body: &[u8],
) -> Option<Result<Bytes, String>> {
    let data = node.inner.data.as_ref()?;
    if name == core::BLOCK {
        let block = data.lock().core.handle_block_request(body);
        return Some(block.map(Bytes::from).map_err(|e| e.to_string()));
    }
    let msg = match core::Message::decode(name, body) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.to_string())),
    };
    let counter = match msg {
        core::Message::Pcg(_) => &node.metrics().pcg_messages,
        core::Message::Rbfs(_) => &node.metrics().rbfs_messages,
    };
    counter.with_label_values(&["in", msg.kind()]).inc();
    let hosts = Hosts::of(node);
    let now = data.now();
    data.lock()
        .core
        .handle_message(now, from.id, msg, &hosts.view());
    data.notify.notify_one();
    Some(Ok(Bytes::new()))
}

/// Starts the driver task.
pub(crate) fn start(node: &Node) {
    if node.inner.data.is_some() {
        let n = node.clone();
        node.inner.tasks.spawn(async move { drive(n).await });
    }
}

/// Graceful hand-off: PCG hands every group over, bounded by `limit`, and reports how it went.
/// Afterwards the node takes no new items or group memberships (it declines them), so this serves
/// both shutdown and draining a live node. Calling it again waits for the same hand-off.
pub(crate) async fn hand_off(node: &Node, limit: Duration) -> pcg::HandOff {
    let Some(data) = node.inner.data.as_ref() else {
        return pcg::HandOff::default();
    };
    let hosts = Hosts::of(node);
    let now = data.now();
    let started = {
        let mut st = data.lock();
        let started = !st.core.pcg().is_leaving();
        st.core.begin_shutdown(now, &hosts.view());
        started
    };
    data.notify.notify_one();
    // Offer no storage from now on: peers read it as a reason not to pick this node.
    node.inner.membership.with(|c, _| c.set_storage_free(0));
    let deadline = Instant::now() + limit;
    loop {
        let (drained, report) = {
            let st = data.lock();
            (
                st.core.pcg().is_drained(),
                st.core.pcg().hand_off().unwrap_or_default(),
            )
        };
        if drained {
            if started && report.groups > 0 {
                info!(
                    groups = report.groups,
                    handed_over = report.handed_over,
                    not_handed_over = report.not_handed_over(),
                    "groups handed over"
                );
            }
            return report;
        }
        if Instant::now() >= deadline {
            warn!(
                pending = report.pending,
                "hand-off incomplete at its deadline"
            );
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether this node handed its groups over (drain or shutdown) and takes no new ones.
pub(crate) fn is_leaving(node: &Node) -> bool {
    node.inner
        .data
        .as_ref()
        .is_some_and(|d| d.lock().core.pcg().is_leaving())
}

async fn drive(node: Node) {
    let Some(data) = node.inner.data.clone() else {
        return;
    };
    let cancel = node.cancelled();
    let mut check_at = Instant::now();
    {
        let now = data.now();
        data.lock().core.start(now);
    }
    loop {
        let (transmits, events, timeout) = {
            let mut st = data.lock();
            let mut transmits = Vec::new();
            while let Some(t) = st.core.poll_transmit() {
                transmits.push(t);
            }
            let mut events = Vec::new();
            while let Some(e) = st.core.poll_event() {
                // Persist group views so a restart rejoins its groups.
                match &e {
                    core::Event::Pcg(pcg::Event::ViewChanged(v)) => st.core.store().save_view(v),
                    core::Event::Pcg(pcg::Event::Dropped(item)) => st.core.store().drop_view(item),
                    _ => {}
                }
                events.push(e);
            }
            (transmits, events, st.core.poll_timeout())
        };
        for t in transmits {
            send(&node, &data, t);
        }
        for e in events {
            match e {
                core::Event::Pcg(e) => record_pcg(&node, &e),
                core::Event::Rbfs(e) => answer_search(&node, &data, e),
                _ => {}
            }
        }
        // The membership layer's liveness, every 500 ms: hosts that left the live set are down
        // for PCG; those SWIM declared dead (not merely suspect or evicted for diversity) are
        // replaced at once, SWIM's suspicion having been their grace.
        if Instant::now() >= check_at {
            check_at = Instant::now() + Duration::from_millis(500);
            let hosts = Hosts::of(&node);
            let dead: BTreeSet<PeerId> = node
                .inner
                .membership
                .read(|c, _| c.swim().recently_dead().copied().collect());
            let now = data.now();
            data.lock().core.handle_liveness(now, &hosts.view(), dead);
            update_gauges(&node, &data, &hosts);
            continue;
        }
        let wake = timeout
            .map(|t| data.epoch + t.as_duration())
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(500));
        let wake = wake.min(check_at);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = data.notify.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                let hosts = Hosts::of(&node);
                let now = data.now();
                data.lock().core.handle_timeout(now, &hosts.view());
            }
        }
    }
}

/// Sends one transmit of the core in a task of its own, bounded by a deadline; a PCG message
/// that is not delivered goes back to the core as unreachable.
fn send(node: &Node, data: &Arc<Data>, mut t: core::Transmit) {
    if node.config().data.lie {
        if let core::Message::Pcg(pcg::Message::Heartbeat(hb)) = &mut t.msg {
            for p in &mut hb.proofs {
                p.hash = [0x11; 32];
            }
        }
    }
    let body = match t.msg.encode() {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "cannot encode a data overlay message");
            return;
        }
    };
    let (counter, deadline) = match t.msg {
        core::Message::Pcg(_) => (&node.metrics().pcg_messages, Duration::from_secs(5)),
        core::Message::Rbfs(_) => (&node.metrics().rbfs_messages, Duration::from_secs(2)),
    };
    counter.with_label_values(&["out", t.msg.kind()]).inc();
    let n = node.clone();
    let d = data.clone();
    node.inner.tasks.spawn(async move {
        let overlay = t.msg.overlay();
        let r =
            tokio::time::timeout(deadline, n.send_overlay(t.to, overlay, Bytes::from(body))).await;
        if !matches!(r, Ok(Ok(_))) {
            debug!(peer = %t.to.short(), overlay, "data overlay message not delivered");
            d.lock().core.handle_send_failed(&t);
            d.notify.notify_one();
        }
    });
}

/// Hands a search's outcome to whoever waits for it; a corrupt answer strikes its holder.
fn answer_search(node: &Node, data: &Data, e: rbfs::Event) {
    let (q, outcome) = match e {
        rbfs::Event::Found {
            search,
            content,
            manifest,
            holder,
            hops,
            ..
        } => (
            search,
            Outcome::Found {
                content,
                manifest,
                holder,
                hops,
            },
        ),
        rbfs::Event::NotFound { search, .. } => (search, Outcome::NotFound),
        rbfs::Event::Corrupt { item, holder } => {
            warn!(item = %item.short(), holder = %holder.short(), "search answer did not match its id");
            node.inner.transport.strike(&holder, "wrong_data");
            node.metrics()
                .pcg_events
                .with_label_values(&["corrupt_answer"])
                .inc();
            return;
        }
        _ => return,
    };
    if let Some(tx) = data
        .waiters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&q)
    {
        let _ = tx.send(outcome);
    }
}

fn record_pcg(node: &Node, e: &pcg::Event) {
    let m = node.metrics();
    match e {
        pcg::Event::Recruited { item, peers } => {
            info!(item = %item.short(), recruits = peers.len(), "group repaired");
        }
        pcg::Event::Trimmed { item, peers } => {
            info!(item = %item.short(), removed = peers.len(), "group trimmed");
        }
        pcg::Event::Spread { item, peer } => {
            info!(item = %item.short(), recruit = %peer.short(), "group spreading to another site");
        }
        pcg::Event::ProofFailed { item, peer } => {
            warn!(item = %item.short(), peer = %peer.short(), "possession check failed");
            node.inner.transport.strike(peer, "wrong_proof");
        }
        pcg::Event::ViewRefused { item, from } => {
            warn!(item = %item.short(), from = %from.short(), "refused a group view from outside the group (or too far ahead)");
        }
        pcg::Event::Corrupt { item, from } => {
            warn!(item = %item.short(), from = %from.short(), "received data that does not match its id");
            if *from != node.id() {
                node.inner.transport.strike(from, "wrong_data");
            }
        }
        pcg::Event::Refounded(item) => {
            warn!(item = %item.short(), "left out of the item's group and shown by no member that it holds the item: founded the group anew around our copy");
        }
        _ => {}
    }
    let kind = e.kind();
    m.pcg_events.with_label_values(&[kind]).inc();
}

fn update_gauges(node: &Node, data: &Data, hosts: &Hosts) {
    let m = node.metrics();
    let (states, usage, cache, leaving, newly_corrupt) = {
        let mut st = data.lock();
        let cache = st.core.store().cache_usage();
        let newly_corrupt = cache.corrupt_found.saturating_sub(st.corrupt_counted);
        st.corrupt_counted = cache.corrupt_found;
        (
            st.core.pcg().states(&hosts.view()),
            st.core.store().usage(),
            cache,
            st.core.pcg().is_leaving(),
            newly_corrupt,
        )
    };
    if newly_corrupt > 0 {
        m.pcg_events
            .with_label_values(&["corrupt_on_disk"])
            .inc_by(newly_corrupt);
    }
    m.store_memory_bytes
        .set(i64::try_from(cache.bytes).unwrap_or(i64::MAX));
    for (i, s) in ["cold", "goldilocks", "hot"].iter().enumerate() {
        m.groups
            .with_label_values(&[s])
            .set(i64::try_from(states[i]).unwrap_or(i64::MAX));
    }
    m.items_stored
        .set(i64::try_from(usage.items).unwrap_or(i64::MAX));
    m.stored_bytes
        .set(i64::try_from(usage.used).unwrap_or(i64::MAX));
    let free = if leaving {
        0
    } else {
        usage.limit.saturating_sub(usage.used)
    };
    node.inner.membership.with(|c, _| c.set_storage_free(free));
}
