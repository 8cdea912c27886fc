//! The default data overlay on a real node: Peer Content Groups keep every item alive on `r`
//! diverse nodes, random breadth-first search finds it. Both are sans-IO state machines in
//! `butter-proto` ([`pcg`], [`rbfs`]); this module is their thin async driver.
//!
//! PCG and RBFS messages travel as `Request::Overlay { name: "pcg" | "rbfs" }` with a postcard
//! body; blocks of large items are fetched with `Request::Overlay { name: "block" }`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use butter_proto::item::{Assembler, ItemId, Store};
use butter_proto::pcg::{self, GroupInfo, HostView};
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
    pcg: pcg::Node<NodeStore>,
    rbfs: rbfs::Node,
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
    ) -> Result<Self, String> {
        let mut pc = pcg::Config {
            replicas: cfg.replicas,
            heartbeat_interval: Duration::from_secs_f64(cfg.heartbeat_secs.max(0.05)),
            accept_deletes: cfg.deletes,
            ..pcg::Config::default()
        };
        pc.item.max_item_size = cfg.max_item_size;
        pc.validate().map_err(|e| format!("data: {e}"))?;
        let rc = rbfs::Config {
            item: pc.item.clone(),
            ..rbfs::Config::default()
        };
        let store = match data_dir {
            Some(dir) => {
                let (store, loaded) = NodeStore::open(dir, cfg.storage_bytes, cfg.cache_bytes)
                    .map_err(|e| {
                        format!("data: cannot open the item store in {}: {e}", dir.display())
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
        let mut pcg = pcg::Node::new(me, pc, store, seed).map_err(|e| format!("data: {e}"))?;
        // Rejoin our groups: within their grace window the others keep us instead of replacing us.
        for view in views {
            pcg.restore(Time::ZERO, view);
        }
        let rbfs = rbfs::Node::new(me, rc, seed ^ 0x5eed).map_err(|e| format!("data: {e}"))?;
        Ok(Data {
            state: Mutex::new(State {
                pcg,
                rbfs,
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

/// The membership layer's view of other nodes, as PCG and RBFS ask for it.
struct Hosts {
    entries: BTreeMap<PeerId, (String, bool, f64)>,
    /// This node and its site: its own site counts when choosing diverse members.
    me: (PeerId, String),
}

impl Hosts {
    fn of(node: &Node) -> Hosts {
        let entries = node.inner.membership.read(|c, now| {
            c.table()
                .iter()
                .map(|h| {
                    let live = matches!(h.liveness, butter_proto::peers::Liveness::Alive);
                    let score = c.table().score(&h.record.id, now).unwrap_or(0.0);
                    (h.record.id, (h.record.site.clone(), live, score))
                })
                .collect()
        });
        Hosts {
            entries,
            me: (node.id(), node.site().to_string()),
        }
    }
}

impl HostView for Hosts {
    fn live_hosts(&self) -> Vec<PeerId> {
        self.entries
            .iter()
            .filter(|(_, (_, live, _))| *live)
            .map(|(id, _)| *id)
            .collect()
    }

    fn is_live(&self, id: &PeerId) -> bool {
        self.entries.get(id).is_none_or(|(_, live, _)| *live)
    }

    fn site(&self, id: &PeerId) -> Option<&str> {
        if *id == self.me.0 {
            return Some(&self.me.1);
        }
        self.entries.get(id).map(|(s, _, _)| s.as_str())
    }

    fn most_diverse(&self, k: usize, exclude: &BTreeSet<PeerId>) -> Vec<PeerId> {
        // Greedy: each pick prefers a site not yet represented (by the excluded members or earlier
        // picks), then the higher diversity score.
        let mut used: BTreeSet<&str> = exclude.iter().filter_map(|e| self.site(e)).collect();
        let mut pool: Vec<(&PeerId, &str, f64)> = self
            .entries
            .iter()
            .filter(|(id, (_, live, _))| *live && !exclude.contains(id))
            .map(|(id, (site, _, score))| (id, site.as_str(), *score))
            .collect();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let best = pool
                .iter()
                .enumerate()
                .max_by(|(_, a), (_, b)| {
                    let fresh_a = !used.contains(a.1);
                    let fresh_b = !used.contains(b.1);
                    fresh_a
                        .cmp(&fresh_b)
                        .then(a.2.total_cmp(&b.2))
                        .then(b.0.cmp(a.0))
                })
                .map(|(i, _)| i);
            let Some(i) = best else { break };
            let (id, site, _) = pool.swap_remove(i);
            used.insert(site);
            out.push(*id);
        }
        out
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
        let id = data.lock().pcg.store_item(now, content, &hosts)?;
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
            if !st.pcg.config().accept_deletes {
                return Err(DataError::DeletesOff);
            }
            if !st.pcg.delete(now, id) {
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
            let mut st = data.lock();
            let State { pcg, rbfs, .. } = &mut *st;
            let q = rbfs.find(now, id, pcg.store(), &hosts);
            data.waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(q, tx);
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
        let cfg = data.lock().pcg.config().item.clone();
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
        data.lock().pcg.group(id, &hosts)
    }

    /// Items this node holds.
    pub fn items(&self) -> Vec<ItemId> {
        self.inner
            .data
            .as_ref()
            .map(|d| d.lock().pcg.store().ids())
            .unwrap_or_default()
    }

    /// Groups this node is in, by state: `[cold, goldilocks, hot]`.
    pub fn group_states(&self) -> [usize; 3] {
        let Some(data) = self.inner.data.as_ref() else {
            return [0; 3];
        };
        let hosts = Hosts::of(self);
        data.lock().pcg.states(&hosts)
    }

    /// Test hook: replaces the bytes of a locally held item without changing its id, as a disk
    /// error or a lying holder would. The possession check must detect it.
    #[doc(hidden)]
    pub fn corrupt_local_copy(&self, id: &ItemId, bytes: Vec<u8>) -> bool {
        self.inner
            .data
            .as_ref()
            .is_some_and(|d| d.lock().pcg.store_mut().corrupt(id, bytes))
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
    let now = data.now();
    match name {
        "pcg" => {
            let msg: pcg::Message = match postcard::from_bytes(body) {
                Ok(m) => m,
                Err(e) => return Some(Err(format!("bad pcg message: {e}"))),
            };
            node.metrics()
                .pcg_messages
                .with_label_values(&["in", msg.kind()])
                .inc();
            let hosts = Hosts::of(node);
            data.lock().pcg.handle_message(now, from.id, msg, &hosts);
            data.notify.notify_one();
            Some(Ok(Bytes::new()))
        }
        "rbfs" => {
            let msg: rbfs::Message = match postcard::from_bytes(body) {
                Ok(m) => m,
                Err(e) => return Some(Err(format!("bad rbfs message: {e}"))),
            };
            node.metrics()
                .rbfs_messages
                .with_label_values(&["in", msg.kind()])
                .inc();
            let hosts = Hosts::of(node);
            let mut st = data.lock();
            let State { pcg, rbfs, .. } = &mut *st;
            rbfs.handle_message(now, from.id, msg, pcg.store(), &hosts);
            drop(st);
            data.notify.notify_one();
            Some(Ok(Bytes::new()))
        }
        "block" => {
            let (id, index): (ItemId, u32) = match postcard::from_bytes(body) {
                Ok(v) => v,
                Err(e) => return Some(Err(format!("bad block request: {e}"))),
            };
            let st = data.lock();
            let cfg = st.pcg.config().item.clone();
            let Some(item) = st.pcg.store().get(&id) else {
                return Some(Err(format!("item {} not held here", id.short())));
            };
            let block = item
                .manifest(&cfg)
                .and_then(|m| item.block(&m, index).map(|b| b.to_vec()));
            Some(
                block
                    .map(Bytes::from)
                    .ok_or_else(|| format!("no block {index}")),
            )
        }
        _ => None,
    }
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
        let started = !st.pcg.is_leaving();
        st.pcg.begin_shutdown(now, &hosts);
        started
    };
    data.notify.notify_one();
    // Offer no storage from now on: peers read it as a reason not to pick this node.
    node.inner.membership.with(|c, _| c.set_storage_free(0));
    let deadline = Instant::now() + limit;
    loop {
        let (drained, report) = {
            let st = data.lock();
            (st.pcg.is_drained(), st.pcg.hand_off().unwrap_or_default())
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
        .is_some_and(|d| d.lock().pcg.is_leaving())
}

async fn drive(node: Node) {
    let Some(data) = node.inner.data.clone() else {
        return;
    };
    let cancel = node.cancelled();
    let mut live: BTreeSet<PeerId> = BTreeSet::new();
    let mut dead: BTreeSet<PeerId> = BTreeSet::new();
    let mut check_at = Instant::now();
    {
        let now = data.now();
        data.lock().rbfs.start(now);
    }
    loop {
        let hosts = Hosts::of(&node);
        let now = data.now();
        let (pcg_tx, rbfs_tx, pcg_ev, rbfs_ev, timeout) = {
            let mut st = data.lock();
            let mut pcg_tx = Vec::new();
            while let Some(t) = st.pcg.poll_transmit() {
                pcg_tx.push(t);
            }
            let mut rbfs_tx = Vec::new();
            while let Some(t) = st.rbfs.poll_transmit() {
                rbfs_tx.push(t);
            }
            let mut pcg_ev = Vec::new();
            while let Some(e) = st.pcg.poll_event() {
                pcg_ev.push(e);
            }
            let mut rbfs_ev = Vec::new();
            while let Some(e) = st.rbfs.poll_event() {
                rbfs_ev.push(e);
            }
            for e in &pcg_ev {
                match e {
                    pcg::Event::ViewChanged(v) => {
                        st.rbfs.add_hint(v.item, &v.members);
                        st.pcg.store().save_view(v);
                    }
                    pcg::Event::Dropped(item) => st.pcg.store().drop_view(item),
                    pcg::Event::Deleted(item) => st.rbfs.forget_hint(item),
                    _ => {}
                }
            }
            let t = [st.pcg.poll_timeout(), st.rbfs.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            (pcg_tx, rbfs_tx, pcg_ev, rbfs_ev, t)
        };
        for mut t in pcg_tx {
            if node.config().data.lie {
                if let pcg::Message::Heartbeat(hb) = &mut t.msg {
                    for p in &mut hb.proofs {
                        p.hash = [0x11; 32];
                    }
                }
            }
            let body = match postcard::to_stdvec(&t.msg) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "cannot encode pcg message");
                    continue;
                }
            };
            node.metrics()
                .pcg_messages
                .with_label_values(&["out", t.msg.kind()])
                .inc();
            let n = node.clone();
            let d = data.clone();
            node.inner.tasks.spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    n.send_overlay(t.to, "pcg", Bytes::from(body)),
                )
                .await;
                if !matches!(r, Ok(Ok(_))) {
                    debug!(peer = %t.to.short(), "pcg message not delivered");
                    d.lock().pcg.handle_unreachable(t.to);
                    d.notify.notify_one();
                }
            });
        }
        for t in rbfs_tx {
            let Ok(body) = postcard::to_stdvec(&t.msg) else {
                continue;
            };
            node.metrics()
                .rbfs_messages
                .with_label_values(&["out", t.msg.kind()])
                .inc();
            let n = node.clone();
            node.inner.tasks.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    n.send_overlay(t.to, "rbfs", Bytes::from(body)),
                )
                .await;
            });
        }
        for e in pcg_ev {
            record_pcg(&node, &e);
        }
        for e in rbfs_ev {
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
                    continue;
                }
                _ => continue,
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
        // Members the membership layer dropped are down for PCG too.
        if Instant::now() >= check_at {
            check_at = Instant::now() + Duration::from_millis(500);
            let now_live: BTreeSet<PeerId> = hosts.live_hosts().into_iter().collect();
            let gone: Vec<PeerId> = live.difference(&now_live).copied().collect();
            // Declared dead by SWIM (not merely suspect or evicted for diversity): groups replace
            // it at once, SWIM's suspicion having been its grace.
            let dead_now: BTreeSet<PeerId> = node
                .inner
                .membership
                .read(|c, _| c.swim().recently_dead().copied().collect());
            let newly_dead: Vec<PeerId> = dead_now.difference(&dead).copied().collect();
            if !gone.is_empty() || !newly_dead.is_empty() {
                let mut st = data.lock();
                for p in gone {
                    st.pcg.handle_peer_down(now, p, &hosts);
                }
                for p in newly_dead {
                    st.pcg.handle_peer_dead(now, p, &hosts);
                }
            }
            dead = dead_now;
            live = now_live;
            update_gauges(&node, &data, &hosts);
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
                let mut st = data.lock();
                let State { pcg, rbfs, .. } = &mut *st;
                pcg.handle_timeout(now, &hosts);
                rbfs.handle_timeout(now, pcg.store(), &hosts);
            }
        }
    }
}

fn record_pcg(node: &Node, e: &pcg::Event) {
    let m = node.metrics();
    let kind = match e {
        pcg::Event::ViewChanged(_) => "view_changed",
        pcg::Event::Holding(_) => "holding",
        pcg::Event::Dropped(_) => "dropped",
        pcg::Event::Deleted(_) => "deleted",
        pcg::Event::Recruited { item, peers } => {
            info!(item = %item.short(), recruits = peers.len(), "group repaired");
            "repair"
        }
        pcg::Event::Trimmed { item, peers } => {
            info!(item = %item.short(), removed = peers.len(), "group trimmed");
            "trim"
        }
        pcg::Event::Spread { item, peer } => {
            info!(item = %item.short(), recruit = %peer.short(), "group spreading to another site");
            "spread"
        }
        pcg::Event::ProofFailed { item, peer } => {
            warn!(item = %item.short(), peer = %peer.short(), "possession check failed");
            node.inner.transport.strike(peer, "wrong_proof");
            "proof_failed"
        }
        pcg::Event::NoCandidates(_) => "no_candidates",
        pcg::Event::ViewRefused { item, from } => {
            warn!(item = %item.short(), from = %from.short(), "refused a group view from outside the group (or too far ahead)");
            "view_refused"
        }
        pcg::Event::Corrupt { item, from } => {
            warn!(item = %item.short(), from = %from.short(), "received data that does not match its id");
            if *from != node.id() {
                node.inner.transport.strike(from, "wrong_data");
            }
            "corrupt"
        }
        pcg::Event::Drained => "drained",
        pcg::Event::Refounded(item) => {
            warn!(item = %item.short(), "left out of the item's group and shown by no member that it holds the item: founded the group anew around our copy");
            "refounded"
        }
        _ => "other",
    };
    m.pcg_events.with_label_values(&[kind]).inc();
}

fn update_gauges(node: &Node, data: &Data, hosts: &Hosts) {
    let m = node.metrics();
    let (states, usage, cache, leaving, newly_corrupt) = {
        let mut st = data.lock();
        let cache = st.pcg.store().cache_usage();
        let newly_corrupt = cache.corrupt_found.saturating_sub(st.corrupt_counted);
        st.corrupt_counted = cache.corrupt_found;
        (
            st.pcg.states(hosts),
            st.pcg.store().usage(),
            cache,
            st.pcg.is_leaving(),
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
