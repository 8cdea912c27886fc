//! Where a node keeps its items: in memory (no data directory), or on disk in atomic files that
//! survive a restart (and a `kill -9` in the middle of writes), with only an index and a small,
//! byte-bounded cache of recently read items in memory — so a node's memory does not grow with
//! the data it holds.
//!
//! Layout under `<data_dir>/items/`: one file per item named by its id, written to a temporary
//! name, fsynced and renamed, so a file either holds the whole item or does not exist. Every file
//! is verified against its id when loaded at start-up *and* whenever it is read back into the
//! cache; a file that does not match is moved to `<data_dir>/items/corrupt/`, dropped from the
//! index and not served (the item's group then repairs it like any lost replica). Group views live
//! in `<data_dir>/views/` the same way.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use butter_proto::item::{Capacity, Item, ItemId, MemoryStore, Store, StoreError, Usage};
use butter_proto::pcg::View;
use tracing::warn;

/// Default bytes of item content a disk-backed store keeps in memory (see [`NodeStore::open`]).
pub const DEFAULT_CACHE_BYTES: u64 = 8 << 20;

/// Items held in memory, or on disk behind a bounded read cache when a directory is given.
#[derive(Debug)]
pub struct NodeStore {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Memory(MemoryStore),
    Disk(Disk),
}

/// The folder of saved group views ([`NodeStore::views`]).
#[derive(Clone, Debug)]
pub struct ViewFiles {
    dir: PathBuf,
}

impl ViewFiles {
    /// Saves `view` (atomically: a whole file or none).
    pub fn save(&self, view: &View) {
        let Ok(bytes) = postcard::to_stdvec(view) else {
            return;
        };
        if let Err(e) = write_atomic(&self.dir, &view.item.to_string(), &bytes) {
            warn!(error = %e, "cannot save group view");
        }
    }

    /// Forgets the saved view of `item`.
    pub fn drop_view(&self, item: &ItemId) {
        let _ = fs::remove_file(self.dir.join(item.to_string()));
    }
}

/// The on-disk store. Reads go through `&self` ([`Store::get`]) but may fill the cache or find a
/// corrupt file, so the state sits behind a mutex (never contended: the data driver owns the
/// store under its own lock).
#[derive(Debug)]
struct Disk {
    root: PathBuf,
    state: Mutex<DiskState>,
}

#[derive(Debug)]
struct DiskState {
    /// Every item held and its content length.
    index: BTreeMap<ItemId, u64>,
    capacity: Capacity,
    generation: u64,
    cache: Cache,
    /// Files found not to match their id after start-up (moved aside).
    corrupt_found: u64,
}

/// Least-recently-read items, at most `budget` bytes of content — except that the item read last
/// is always kept, so serving the blocks of an item larger than the budget reads it from disk once,
/// not once per block.
#[derive(Debug, Default)]
struct Cache {
    budget: u64,
    used: u64,
    tick: u64,
    items: HashMap<ItemId, (Item, u64)>,
    order: BTreeMap<u64, ItemId>,
}

impl Cache {
    fn get(&mut self, id: &ItemId) -> Option<Item> {
        let (item, tick) = self.items.get_mut(id)?;
        self.order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.order.insert(self.tick, *id);
        Some(item.clone())
    }

    fn put(&mut self, item: Item) {
        let id = item.id();
        self.remove(&id);
        let len = item.len() as u64;
        while self.used + len > self.budget {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((it, _)) = self.items.remove(&old) {
                self.used -= it.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, id);
        self.items.insert(id, (item, self.tick));
        self.used += len;
    }

    fn remove(&mut self, id: &ItemId) {
        if let Some((it, tick)) = self.items.remove(id) {
            self.order.remove(&tick);
            self.used -= it.len() as u64;
        }
    }
}

/// What [`NodeStore::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Items loaded and verified.
    pub items: usize,
    /// Files that did not match their id (moved aside).
    pub corrupt: usize,
}

/// Memory a store spends on item content, for the `butter_store_cache_bytes` gauge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    /// Content bytes held in memory (all of them for a memory store).
    pub bytes: u64,
    /// Items whose content is held in memory.
    pub items: u64,
    /// Files found corrupt when read back (disk store; since start).
    pub corrupt_found: u64,
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    // Make the rename itself durable.
    fs::File::open(dir)?.sync_all()
}

fn move_aside(items: &Path, name: &str) -> std::io::Result<()> {
    let aside = items.join("corrupt");
    fs::create_dir_all(&aside)?;
    fs::rename(items.join(name), aside.join(name))
}

impl Disk {
    fn items(&self) -> PathBuf {
        self.root.join("items")
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding this lock leaves a consistent state (every update is one step).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &ItemId) -> Option<Item> {
        let mut st = self.lock();
        if let Some(item) = st.cache.get(id) {
            return Some(item);
        }
        let len = *st.index.get(id)?;
        let name = id.to_string();
        let path = self.items().join(&name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warn!(item = %id.short(), "stored item file vanished; dropping it from the index");
                st.forget(id, len);
                return None;
            }
            Err(e) => {
                warn!(item = %id.short(), error = %e, "cannot read stored item");
                return None;
            }
        };
        match Item::verified(*id, bytes) {
            Ok(item) if item.len() as u64 == len => {
                st.cache.put(item.clone());
                Some(item)
            }
            _ => {
                warn!(item = %id.short(), "stored item no longer matches its id; moved aside, the group will repair it");
                if let Err(e) = move_aside(&self.items(), &name) {
                    warn!(item = %id.short(), error = %e, "cannot move the corrupt file aside");
                }
                st.forget(id, len);
                st.corrupt_found += 1;
                None
            }
        }
    }
}

impl DiskState {
    fn forget(&mut self, id: &ItemId, len: u64) {
        self.index.remove(id);
        self.cache.remove(id);
        self.capacity.release(len);
        self.generation += 1;
    }
}

impl NodeStore {
    /// A store in memory only.
    pub fn memory(limit: u64) -> Self {
        NodeStore {
            backend: Backend::Memory(MemoryStore::new(limit)),
        }
    }

    /// A store persisted under `data_dir`, loading (and verifying) what is already there. At most
    /// `cache_bytes` of content (plus the one item read last) stays in memory.
    pub fn open(data_dir: &Path, limit: u64, cache_bytes: u64) -> std::io::Result<(Self, Loaded)> {
        let dir = data_dir.join("items");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(data_dir.join("views"))?;
        let mut st = DiskState {
            index: BTreeMap::new(),
            capacity: Capacity::new(limit),
            generation: 0,
            cache: Cache {
                budget: cache_bytes,
                ..Cache::default()
            },
            corrupt_found: 0,
        };
        let mut loaded = Loaded::default();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write interrupted before its rename: never acknowledged, drop it.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Ok(id) = name.parse::<ItemId>() else {
                continue;
            };
            let content = fs::read(&path)?;
            let len = content.len() as u64;
            match Item::verified(id, content) {
                Ok(_) => {
                    if let Err(e) = st.capacity.reserve(len) {
                        warn!(item = %id.short(), error = %e, "stored item does not fit the configured capacity");
                    } else {
                        st.index.insert(id, len);
                        loaded.items += 1;
                    }
                }
                Err(_) => {
                    move_aside(&dir, &name)?;
                    warn!(item = %id.short(), "stored item does not match its id; moved aside");
                    loaded.corrupt += 1;
                }
            }
        }
        Ok((
            NodeStore {
                backend: Backend::Disk(Disk {
                    root: data_dir.to_path_buf(),
                    state: Mutex::new(st),
                }),
            },
            loaded,
        ))
    }

    fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Disk(d) => Some(&d.root),
        }
    }

    /// Content bytes held in memory.
    pub fn cache_usage(&self) -> CacheUsage {
        match &self.backend {
            Backend::Memory(m) => {
                let u = m.usage();
                CacheUsage {
                    bytes: u.used,
                    items: u.items,
                    corrupt_found: 0,
                }
            }
            Backend::Disk(d) => {
                let st = d.lock();
                CacheUsage {
                    bytes: st.cache.used,
                    items: st.cache.items.len() as u64,
                    corrupt_found: st.corrupt_found,
                }
            }
        }
    }

    /// Group views saved by an earlier run.
    pub fn load_views(&self) -> Vec<View> {
        let Some(dir) = self.root() else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir.join("views")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| postcard::from_bytes::<View>(&b).ok())
            .filter(|v| self.contains(&v.item))
            .collect()
    }

    /// Saves a group view so a restart can rejoin the group within its grace window.
    pub fn save_view(&self, view: &View) {
        if let Some(views) = self.views() {
            views.save(view);
        }
    }

    /// Forgets a saved view.
    pub fn drop_view(&self, item: &ItemId) {
        if let Some(views) = self.views() {
            views.drop_view(item);
        }
    }

    /// Where group views are kept (with a data directory), to write them without holding the
    /// store: each save is two fsyncs, too slow to make under the node core's lock.
    pub fn views(&self) -> Option<ViewFiles> {
        self.root().map(|r| ViewFiles {
            dir: r.join("views"),
        })
    }

    /// Test hook: replaces the content of a held item without changing its id, as a disk error or
    /// a malicious holder would — in memory (see [`MemoryStore::corrupt`]), or on disk (the file is
    /// overwritten in place and dropped from the cache, so the next read finds it corrupt).
    pub fn corrupt(&mut self, id: &ItemId, bytes: Vec<u8>) -> bool {
        match &mut self.backend {
            Backend::Memory(m) => m.corrupt(id, bytes),
            Backend::Disk(d) => {
                let mut st = d.lock();
                if !st.index.contains_key(id) {
                    return false;
                }
                st.cache.remove(id);
                fs::write(d.items().join(id.to_string()), bytes).is_ok()
            }
        }
    }
}

impl Store for NodeStore {
    fn insert(&mut self, item: Item) -> Result<(), StoreError> {
        let d = match &mut self.backend {
            Backend::Memory(m) => return m.insert(item),
            Backend::Disk(d) => d,
        };
        let items = d.items();
        let mut st = d.lock();
        if st.index.contains_key(&item.id()) {
            return Ok(());
        }
        let len = item.len() as u64;
        st.capacity.reserve(len)?;
        // Durable before acknowledged: the file is complete and synced before we say yes.
        if let Err(e) = write_atomic(&items, &item.id().to_string(), item.content()) {
            st.capacity.release(len);
            return Err(StoreError::Backend(format!("writing item: {e}")));
        }
        st.index.insert(item.id(), len);
        st.generation += 1;
        // A new item is usually read again soon (pushed to the group, fetched by the client).
        st.cache.put(item);
        Ok(())
    }

    fn replace(&mut self, item: Item) -> Result<(), StoreError> {
        let d = match &mut self.backend {
            Backend::Memory(m) => return m.replace(item),
            Backend::Disk(d) => d,
        };
        let items = d.items();
        let mut st = d.lock();
        let id = item.id();
        let old = st.index.get(&id).copied().unwrap_or(0);
        let len = item.len() as u64;
        st.capacity.release(old);
        if let Err(e) = st.capacity.reserve(len) {
            let _ = st.capacity.reserve(old);
            return Err(e);
        }
        // The rename replaces the old file whole, and the group's saved view stays where it is.
        if let Err(e) = write_atomic(&items, &id.to_string(), item.content()) {
            st.capacity.release(len);
            let _ = st.capacity.reserve(old);
            return Err(StoreError::Backend(format!("writing item: {e}")));
        }
        st.index.insert(id, len);
        st.generation += 1;
        st.cache.put(item);
        Ok(())
    }

    fn get(&self, id: &ItemId) -> Option<Item> {
        match &self.backend {
            Backend::Memory(m) => m.get(id),
            Backend::Disk(d) => d.get(id),
        }
    }

    fn contains(&self, id: &ItemId) -> bool {
        match &self.backend {
            Backend::Memory(m) => m.contains(id),
            Backend::Disk(d) => d.lock().index.contains_key(id),
        }
    }

    fn remove(&mut self, id: &ItemId) -> bool {
        let d = match &mut self.backend {
            Backend::Memory(m) => return m.remove(id),
            Backend::Disk(d) => d,
        };
        let _ = fs::remove_file(d.items().join(id.to_string()));
        let _ = fs::remove_file(d.root.join("views").join(id.to_string()));
        let mut st = d.lock();
        match st.index.get(id).copied() {
            Some(len) => {
                st.forget(id, len);
                true
            }
            None => false,
        }
    }

    fn ids(&self) -> Vec<ItemId> {
        match &self.backend {
            Backend::Memory(m) => m.ids(),
            Backend::Disk(d) => d.lock().index.keys().copied().collect(),
        }
    }

    fn usage(&self) -> Usage {
        match &self.backend {
            Backend::Memory(m) => m.usage(),
            Backend::Disk(d) => {
                let st = d.lock();
                Usage {
                    used: st.capacity.used,
                    limit: st.capacity.limit,
                    items: st.index.len() as u64,
                }
            }
        }
    }

    fn generation(&self) -> u64 {
        match &self.backend {
            Backend::Memory(m) => m.generation(),
            Backend::Disk(d) => d.lock().generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_survive_reopen_and_corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, loaded) = NodeStore::open(dir.path(), 1 << 20, 1 << 10).unwrap();
        assert_eq!(loaded, Loaded::default());
        let a = Item::new(b"alpha".to_vec());
        let b = Item::new(b"bravo".to_vec());
        s.insert(a.clone()).unwrap();
        s.insert(b.clone()).unwrap();
        assert!(s.remove(&b.id()));
        // A torn temporary file and a file whose bytes changed on disk.
        fs::write(dir.path().join("items").join(".junk.tmp"), b"half").unwrap();
        let c = Item::new(b"charlie".to_vec());
        fs::write(
            dir.path().join("items").join(c.id().to_string()),
            b"not charlie",
        )
        .unwrap();
        drop(s);
        let (s, loaded) = NodeStore::open(dir.path(), 1 << 20, 1 << 10).unwrap();
        assert_eq!(
            loaded,
            Loaded {
                items: 1,
                corrupt: 1
            }
        );
        assert_eq!(s.get(&a.id()).unwrap().content(), b"alpha");
        assert!(!s.contains(&b.id()) && !s.contains(&c.id()));
        assert_eq!(s.usage().used, 5);
        assert!(!dir.path().join("items").join(".junk.tmp").exists());
    }

    #[test]
    fn an_owned_record_is_replaced_in_place_and_survives_reopen_with_its_view() {
        use butter_proto::owned::{OwnerKey, Record};
        let dir = tempfile::tempdir().unwrap();
        let key = OwnerKey::from_seed([8; 32]);
        let v1 = Item::owned(&Record::sign(&key, "n", 1, Some(vec![1; 100])).unwrap());
        let v2 = Item::owned(&Record::sign(&key, "n", 2, Some(vec![2; 10])).unwrap());
        let (mut s, _) = NodeStore::open(dir.path(), 400, 1 << 10).unwrap();
        s.insert(v1.clone()).unwrap();
        let view = View {
            item: v1.id(),
            version: 3,
            author: butter_proto::PeerId([1; 32]),
            members: vec![butter_proto::PeerId([1; 32])],
        };
        s.views().unwrap().save(&view);
        s.replace(v2.clone()).unwrap();
        assert_eq!(
            s.usage().used,
            v2.len() as u64,
            "capacity follows the new copy"
        );
        // Too large for what is left once the old copy goes: refused, nothing changed.
        let big = Item::owned(&Record::sign(&key, "n", 3, Some(vec![3; 500])).unwrap());
        assert!(matches!(s.replace(big), Err(StoreError::Full { .. })));
        assert_eq!(s.get(&v2.id()).unwrap(), v2);
        drop(s);
        let (s, loaded) = NodeStore::open(dir.path(), 400, 1 << 10).unwrap();
        assert_eq!(loaded.items, 1);
        assert_eq!(
            s.get(&v2.id()).unwrap(),
            v2,
            "the record verifies by signature"
        );
        assert_eq!(s.load_views(), vec![view], "the group's saved view stays");
    }

    #[test]
    fn content_in_memory_stays_within_the_cache_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = NodeStore::open(dir.path(), 1 << 30, 10_000).unwrap();
        let items: Vec<Item> = (0..200u32)
            .map(|i| Item::new(vec![(i % 251) as u8; 1000 + i as usize]))
            .collect();
        for it in &items {
            s.insert(it.clone()).unwrap();
            assert!(s.cache_usage().bytes <= 10_000 + 1200);
        }
        assert_eq!(s.usage().items, 200);
        // Every item reads back whole from disk, and the cache never holds more than its budget
        // plus the item read last.
        for it in items.iter().rev() {
            assert_eq!(s.get(&it.id()).unwrap(), *it);
            let c = s.cache_usage();
            assert!(c.bytes <= 10_000 + it.len() as u64, "{c:?}");
        }
        // An item larger than the whole budget is still served (and kept while it is the last).
        let big = Item::new(vec![9; 50_000]);
        s.insert(big.clone()).unwrap();
        assert_eq!(s.get(&big.id()).unwrap(), big);
        assert_eq!(s.cache_usage().items, 1);
        // Removing drops file, index entry and cached copy.
        assert!(s.remove(&big.id()));
        assert!(s.get(&big.id()).is_none());
        assert_eq!(s.cache_usage().bytes, 0);
        assert!(!dir.path().join("items").join(big.id().to_string()).exists());
    }

    #[test]
    fn a_file_corrupted_after_start_is_found_on_read_moved_aside_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = NodeStore::open(dir.path(), 1 << 20, 0).unwrap();
        let a = Item::new(b"alpha".to_vec());
        let b = Item::new(b"bravo".to_vec());
        s.insert(a.clone()).unwrap();
        s.insert(b.clone()).unwrap();
        let g = s.generation();
        assert!(s.corrupt(&a.id(), b"alphx".to_vec()));
        assert!(s.contains(&a.id()), "not noticed before it is read");
        assert!(s.get(&a.id()).is_none(), "corrupt bytes are never served");
        assert!(!s.contains(&a.id()));
        assert_ne!(s.generation(), g, "summaries must be rebuilt");
        assert_eq!(
            s.usage(),
            Usage {
                used: 5,
                limit: 1 << 20,
                items: 1
            }
        );
        assert_eq!(s.cache_usage().corrupt_found, 1);
        assert!(
            dir.path()
                .join("items/corrupt")
                .join(a.id().to_string())
                .exists()
        );
        // A vanished file is forgotten too (once `b` is no longer the cached item), and the store
        // keeps serving the rest.
        let c = Item::new(b"charlie".to_vec());
        s.insert(c.clone()).unwrap();
        fs::remove_file(dir.path().join("items").join(b.id().to_string())).unwrap();
        assert!(s.get(&b.id()).is_none() && !s.contains(&b.id()));
        assert_eq!(s.usage().used, 7);
        // Still usable.
        s.insert(a.clone()).unwrap();
        assert_eq!(s.get(&a.id()).unwrap(), a);
    }
}
