//! The default data overlay on a real node: Peer Content Groups keep every item alive on `r`
//! diverse nodes, random breadth-first search finds it. Both run inside the node's one sans-IO
//! core ([`NodeCore`](butter_proto::node::NodeCore), also what the simulator runs), composed with
//! membership; this module is the data half of its driver (the crate's `driver` module): the application
//! calls (`put`, `get`, `delete`), inbound data messages fed to the core, its data transmits
//! sent, and its data events turned into metrics, persisted views and answers to searches.
//!
//! PCG and RBFS messages travel as `Request::Overlay { name: "pcg" | "rbfs" }` with a postcard
//! body; blocks of large items are fetched with `Request::Overlay { name: "block" }`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use butter_proto::PeerId;
use butter_proto::item::{Assembler, ItemId, Store};
use butter_proto::node::data as core;
pub use butter_proto::node::data::Placement;
use butter_proto::owned::{self, OwnerId, Record};
use butter_proto::pcg::{self, GroupInfo};
use butter_proto::rbfs::{self, QueryId};
use butter_proto::signed_log;
use butter_proto::wire::Request;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
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
    /// The owned item was deleted by its owner (a signed tombstone is all the network keeps).
    #[error(
        "{owner}/{name} was deleted by its owner (tombstone seq {seq}); put a value with a higher seq to use the name again"
    )]
    Deleted {
        /// The owner.
        owner: OwnerId,
        /// The name.
        name: String,
        /// The tombstone's sequence number.
        seq: u64,
    },
    /// The item is owned: only its owner deletes it, with a signed tombstone.
    #[error(
        "item {0} is an owned item: only its owner deletes it, with a signed tombstone (butter-node delete --key KEY --name NAME)"
    )]
    Owned(ItemId),
    /// A log could not be appended to or did not verify.
    #[error("log: {0}")]
    Log(#[from] signed_log::LogError),
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

enum Outcome {
    Found {
        content: Option<butter_proto::item::Item>,
        manifest: Option<butter_proto::item::Manifest>,
        holder: PeerId,
        hops: u8,
    },
    NotFound,
}

/// What the data overlay keeps beside the core: searches waiting for their outcome, and how many
/// corrupt files the store found that the metrics have counted. Present only when the overlay
/// is enabled.
pub(crate) struct Data {
    waiters: Mutex<HashMap<QueryId, oneshot::Sender<Outcome>>>,
    corrupt_counted: AtomicU64,
}

impl Data {
    pub(crate) fn new() -> Self {
        Data {
            waiters: Mutex::new(HashMap::new()),
            corrupt_counted: AtomicU64::new(0),
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, oneshot::Sender<Outcome>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The data half of a node core's settings, its item store and the group views it was in before
/// a restart (to rejoin them). With the overlay disabled: an empty store in memory.
pub(crate) fn setup(
    cfg: &DataConfig,
    data_dir: Option<&std::path::Path>,
) -> Result<(pcg::Config, NodeStore, Vec<pcg::View>), SetupError> {
    let mut pc = pcg::Config {
        replicas: cfg.replicas,
        heartbeat_interval: Duration::from_secs_f64(cfg.heartbeat_secs.max(0.05)),
        accept_deletes: cfg.deletes,
        ..pcg::Config::default()
    };
    pc.item.max_item_size = cfg.max_item_size;
    if !cfg.enabled {
        return Ok((pc, NodeStore::memory(0), Vec::new()));
    }
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
    Ok((pc, store, views))
}

impl Node {
    fn data(&self) -> Result<&Data, DataError> {
        self.inner.data.as_deref().ok_or(DataError::Disabled)
    }

    /// Stores `content` in the network: here, and in a group of `r` diverse nodes. Returns its id
    /// (the SHA-256 of the content).
    pub fn put(&self, content: Vec<u8>) -> Result<ItemId, DataError> {
        self.data()?;
        let id = self.inner.core.with(|c, now| c.put(now, content))?;
        info!(item = %id.short(), "item stored");
        Ok(id)
    }

    /// Stores an owner's signed record of an owned item (a new value, or a tombstone to delete it)
    /// in the item's group, where it replaces every older record: at once on a member
    /// ([`Placement::Stored`]); from any other node through a holder found by search, or in a new
    /// group when nobody holds the item ([`Placement::Searching`]: under way, logged and counted
    /// when done). Fails with [`pcg::PutError::Owned`] when this node holds a record of the item
    /// at the same or a higher seq.
    pub fn put_owned(&self, record: &Record) -> Result<Placement, DataError> {
        self.data()?;
        let placed = self.inner.core.with(|c, now| c.put_owned(now, record))?;
        info!(item = %placed.id().short(), owner = ?record.owner(), name = record.name(), seq = record.seq(), tombstone = record.is_tombstone(), searching = matches!(placed, Placement::Searching(_)), "owned record put");
        Ok(placed)
    }

    /// Finds the owned item `(owner, name)` (locally, through its group, else by search) and
    /// returns its verified record with how it was found. A record signed by the owner is all a
    /// reader checks: it is the newest one the answering holder has, which after an update may
    /// lag behind for a heartbeat or two on a holder that was away. A tombstone is
    /// [`DataError::Deleted`].
    pub async fn get_owned(
        &self,
        owner: OwnerId,
        name: &str,
    ) -> Result<(Record, Retrieved), DataError> {
        let id = owned::slot(&owner, name);
        let found = self.get(id).await?;
        let record = Record::decode(&found.content).map_err(|_| DataError::NotFound(id))?;
        if record.is_tombstone() {
            return Err(DataError::Deleted {
                owner,
                name: name.to_owned(),
                seq: record.seq(),
            });
        }
        Ok((record, found))
    }

    /// Appends `payload` to the owner's log `log` ([`butter_proto::signed_log`]): the entry,
    /// signed and chained to `head` (the writer's last head; `None` for the first entry), is
    /// stored as an item, then the head is put as the owned item `(owner, log)` with `seq =
    /// index + 1`. Returns the new head, to pass to the next append. A writer that lost its head
    /// reads it back with [`read_log`](Self::read_log).
    pub fn append_log(
        &self,
        key: &owned::OwnerKey,
        log: &str,
        head: Option<signed_log::Head>,
        payload: Vec<u8>,
    ) -> Result<signed_log::Head, DataError> {
        let (entry, record) = signed_log::append(key, log, head, payload)?;
        self.put(entry.encode())?;
        self.put_owned(&record)?;
        Ok(signed_log::head_of(&record)?)
    }

    /// Reads the owner's log `log`: its head (an owned item), then every entry back to the
    /// first, each verified (hash link, owner's signature, log name, index). At most
    /// `max_entries`; oldest first.
    pub async fn read_log(
        &self,
        owner: OwnerId,
        log: &str,
        max_entries: u64,
    ) -> Result<(signed_log::Head, Vec<signed_log::Entry>), DataError> {
        let (record, _) = self.get_owned(owner, log).await?;
        let head = signed_log::head_of(&record)?;
        if head.index >= max_entries {
            return Err(signed_log::LogError::TooLong(head.index.saturating_add(1)).into());
        }
        // Fetch the chain newest first (each entry names the one before it), then verify it.
        let mut fetched = HashMap::new();
        let mut want = Some(head.entry);
        while let Some(id) = want {
            let found = self.get(id).await?;
            want = signed_log::Entry::decode(&found.content)
                .map_err(|e| DataError::Fetch(id, e.to_string()))?
                .prev();
            fetched.insert(id, found.content);
            if fetched.len() as u64 > head.index + 1 {
                break;
            }
        }
        let entries = signed_log::verify(&owner, log, head, max_entries, |id| {
            fetched.get(id).cloned()
        })?;
        Ok((head, entries))
    }

    /// Deletes `id` from the network: this node drops it and tells the other members of its group,
    /// which drop it too and refuse it for a while (`pcg::Config::tombstone_ttl`, 10 min), also to
    /// members that were away and come back holding it. Fails with [`DataError::NotMember`] on a
    /// node outside the item's group (members accept deletes only from members).
    pub fn delete(&self, id: ItemId) -> Result<(), DataError> {
        self.data()?;
        self.inner.core.with(|c, now| {
            if c.data().pcg().owned_version(&id).is_some() {
                return Err(DataError::Owned(id));
            }
            if !c.data().pcg().config().accept_deletes {
                return Err(DataError::DeletesOff);
            }
            if !c.delete(now, id) {
                return Err(DataError::NotMember(id));
            }
            Ok(())
        })?;
        info!(item = %id.short(), "item deleted");
        Ok(())
    }

    /// Finds `id` (locally, through its group, else by random breadth-first search) and returns
    /// its verified content.
    pub async fn get(&self, id: ItemId) -> Result<Retrieved, DataError> {
        let data = self.data()?;
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        // The waiter goes in under the core's lock: the driver drains the search's outcome under
        // that lock too, and an outcome with no waiter yet would be dropped.
        self.inner.core.with(|c, now| {
            let q = c.find(now, id);
            data.waiters().insert(q, tx);
        });
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
        self.data()?;
        let cfg = self
            .inner
            .core
            .read(|c, _| c.data().pcg().config().item.clone());
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
        self.inner.data.as_ref()?;
        self.inner
            .core
            .read(|c, now| c.data().pcg().group(id, &c.hosts(now)))
    }

    /// Items this node holds.
    pub fn items(&self) -> Vec<ItemId> {
        if self.inner.data.is_none() {
            return Vec::new();
        }
        self.inner.core.read(|c, _| c.store().ids())
    }

    /// The version of the owned record this node holds for `id`, and whether it is a tombstone.
    pub fn owned_version(&self, id: &ItemId) -> Option<(owned::Version, bool)> {
        self.inner.data.as_ref()?;
        self.inner
            .core
            .read(|c, _| c.data().pcg().owned_version(id))
    }

    /// Groups this node is in, by state: `[cold, goldilocks, hot]`.
    pub fn group_states(&self) -> [usize; 3] {
        if self.inner.data.is_none() {
            return [0; 3];
        }
        self.inner
            .core
            .read(|c, now| c.data().pcg().states(&c.hosts(now)))
    }

    /// Test hook: replaces the bytes of a locally held item without changing its id, as a disk
    /// error or a lying holder would. The possession check must detect it.
    #[doc(hidden)]
    pub fn corrupt_local_copy(&self, id: &ItemId, bytes: Vec<u8>) -> bool {
        self.inner.data.is_some()
            && self
                .inner
                .core
                .with(|c, _| c.store_mut().corrupt(id, bytes))
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

/// Why an inbound data overlay message was refused (the peer gets the message as its error).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InboundError {
    /// A block request that cannot be answered.
    #[error(transparent)]
    Block(#[from] core::BlockError),
    /// A PCG or RBFS body that does not decode.
    #[error(transparent)]
    Decode(#[from] core::DecodeError),
}

/// Answers `Request::Overlay` for the data overlay's names (`None`: not one of them, or the
/// overlay is disabled).
pub(crate) fn handle(
    node: &Node,
    from: Remote,
    name: &str,
    body: &[u8],
) -> Option<Result<Bytes, InboundError>> {
    node.inner.data.as_ref()?;
    if name == core::BLOCK {
        let block = node.inner.core.read(|c, _| c.handle_block_request(body));
        return Some(block.map(Bytes::from).map_err(InboundError::from));
    }
    let msg = match core::Message::decode(name, body) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(e) => return Some(Err(e.into())),
    };
    let counter = match msg {
        core::Message::Pcg(_) => &node.metrics().pcg_messages,
        core::Message::Rbfs(_) => &node.metrics().rbfs_messages,
    };
    counter.with_label_values(&["in", msg.kind()]).inc();
    node.inner
        .core
        .with(|c, now| c.handle_message(now, from.id, msg));
    Some(Ok(Bytes::new()))
}

/// Graceful hand-off: PCG hands every group over, bounded by `limit`, and reports how it went.
/// Afterwards the node takes no new items or group memberships (it declines them), so this serves
/// both shutdown and draining a live node. Calling it again waits for the same hand-off.
pub(crate) async fn hand_off(node: &Node, limit: Duration) -> pcg::HandOff {
    if node.inner.data.is_none() {
        return pcg::HandOff::default();
    }
    let started = node.inner.core.with(|c, now| {
        let started = !c.data().pcg().is_leaving();
        c.begin_shutdown(now);
        // Offer no storage from now on: peers read it as a reason not to pick this node.
        c.membership_mut().set_storage_free(0);
        started
    });
    let deadline = Instant::now() + limit;
    loop {
        let (drained, report) = node.inner.core.read(|c, _| {
            (
                c.data().pcg().is_drained(),
                c.data().pcg().hand_off().unwrap_or_default(),
            )
        });
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
    node.inner.data.is_some() && node.inner.core.read(|c, _| c.data().pcg().is_leaving())
}

/// Persists what a data event changed in the group views kept on disk. The driver calls it in
/// the order the events came, after releasing the core's lock (each save is two fsyncs).
pub(crate) fn persist(views: &crate::store::ViewFiles, e: &core::Event) {
    match e {
        core::Event::Pcg(pcg::Event::ViewChanged(v)) => views.save(v),
        core::Event::Pcg(pcg::Event::Dropped(item)) => views.drop_view(item),
        _ => {}
    }
}

/// Turns a data event into metrics and logs, or into the answer a search waits for.
pub(crate) fn record(node: &Node, e: core::Event) {
    match e {
        core::Event::Pcg(e) => record_pcg(node, &e),
        core::Event::Rbfs(e) => answer_search(node, e),
        core::Event::OwnedPlaced {
            item,
            holder,
            stale_against,
        } => match (holder, stale_against) {
            (Some(h), Some(seq)) => {
                info!(item = %item.short(), holder = %h.short(), held_seq = seq, "owned put from outside the group was stale: the group holds this seq or newer");
                node.metrics()
                    .owned_refused
                    .with_label_values(&["stale"])
                    .inc();
            }
            (Some(h), None) => {
                info!(item = %item.short(), holder = %h.short(), "owned record sent to the group through a holder");
            }
            (None, _) => {
                info!(item = %item.short(), "nobody held the owned item: placed it in a new group here");
            }
        },
        core::Event::Banned { peer, .. } => {
            warn!(peer = %peer.short(), "peer lied about data repeatedly: the data core treats it as dead (its groups replace it)");
            node.metrics()
                .pcg_events
                .with_label_values(&["liar_banned"])
                .inc();
        }
        _ => {}
    }
}

/// Sends one transmit of the core in a task of its own, bounded by a deadline; a PCG message
/// that is not delivered goes back to the core as unreachable.
pub(crate) fn send(node: &Node, mut t: core::Transmit) {
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
    node.inner.tasks.spawn(async move {
        let overlay = t.msg.overlay();
        let r =
            tokio::time::timeout(deadline, n.send_overlay(t.to, overlay, Bytes::from(body))).await;
        if !matches!(r, Ok(Ok(_))) {
            debug!(peer = %t.to.short(), overlay, "data overlay message not delivered");
            n.inner.core.with(|c, _| c.handle_send_failed(&t));
        }
    });
}

/// Hands a search's outcome to whoever waits for it; a corrupt answer strikes its holder.
fn answer_search(node: &Node, e: rbfs::Event) {
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
    if let Some(tx) = node
        .inner
        .data
        .as_ref()
        .and_then(|d| d.waiters().remove(&q))
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
        pcg::Event::Updated {
            item,
            seq,
            tombstone,
        } => {
            debug!(item = %item.short(), seq, tombstone, "owned item updated");
            let kind = if *tombstone { "tombstone" } else { "value" };
            m.owned_updates.with_label_values(&[kind]).inc();
        }
        pcg::Event::OwnedRefused { item, from, reason } => {
            info!(item = %item.short(), from = %from.short(), reason, "refused an owned record");
            m.owned_refused.with_label_values(&[reason]).inc();
        }
        pcg::Event::Refounded(item) => {
            warn!(item = %item.short(), "left out of the item's group and shown by no member that it holds the item: founded the group anew around our copy");
        }
        _ => {}
    }
    let kind = e.kind();
    m.pcg_events.with_label_values(&[kind]).inc();
}

/// Refreshes the data gauges (groups by state, items and bytes stored, the read cache) and the
/// storage this node offers in its record.
pub(crate) fn update_gauges(node: &Node) {
    let Some(data) = node.inner.data.as_ref() else {
        return;
    };
    let m = node.metrics();
    let (states, usage, cache, leaving) = node.inner.core.read(|c, now| {
        (
            c.data().pcg().states(&c.hosts(now)),
            c.store().usage(),
            c.store().cache_usage(),
            c.data().pcg().is_leaving(),
        )
    });
    let newly_corrupt = cache.corrupt_found.saturating_sub(
        data.corrupt_counted
            .swap(cache.corrupt_found, Ordering::Relaxed),
    );
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
    node.inner
        .core
        .with(|c, _| c.membership_mut().set_storage_free(free));
}
