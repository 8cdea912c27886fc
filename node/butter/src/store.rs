//! Where a node keeps its items: in memory, and — with a data directory — in atomic files that
//! survive a restart (and a `kill -9` in the middle of writes).
//!
//! Layout under `<data_dir>/items/`: one file per item named by its id, written to a temporary
//! name, fsynced and renamed, so a file either holds the whole item or does not exist. Every file
//! is verified against its id when loaded; a file that does not match is moved to
//! `<data_dir>/items/corrupt/` and not served. Group views live in `<data_dir>/views/` the same way.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use butter_proto::item::{Item, ItemId, MemoryStore, Store, StoreError, Usage};
use butter_proto::pcg::View;
use tracing::warn;

/// Items held in memory, written through to disk when a directory is given.
#[derive(Debug)]
pub struct NodeStore {
    mem: MemoryStore,
    dir: Option<PathBuf>,
}

/// What [`NodeStore::open`] found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Items loaded and verified.
    pub items: usize,
    /// Files that did not match their id (moved aside).
    pub corrupt: usize,
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

impl NodeStore {
    /// A store in memory only.
    pub fn memory(limit: u64) -> Self {
        NodeStore {
            mem: MemoryStore::new(limit),
            dir: None,
        }
    }

    /// A store persisted under `data_dir`, loading (and verifying) what is already there.
    pub fn open(data_dir: &Path, limit: u64) -> std::io::Result<(Self, Loaded)> {
        let dir = data_dir.join("items");
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(data_dir.join("views"))?;
        let mut mem = MemoryStore::new(limit);
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
            match Item::verified(id, content) {
                Ok(item) => {
                    if let Err(e) = mem.insert(item) {
                        warn!(item = %id.short(), error = %e, "stored item does not fit the configured capacity");
                    } else {
                        loaded.items += 1;
                    }
                }
                Err(_) => {
                    let aside = dir.join("corrupt");
                    fs::create_dir_all(&aside)?;
                    fs::rename(&path, aside.join(&name))?;
                    warn!(item = %id.short(), "stored item does not match its id; moved aside");
                    loaded.corrupt += 1;
                }
            }
        }
        Ok((
            NodeStore {
                mem,
                dir: Some(data_dir.to_path_buf()),
            },
            loaded,
        ))
    }

    /// Group views saved by an earlier run.
    pub fn load_views(&self) -> Vec<View> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(dir.join("views")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| postcard::from_bytes::<View>(&b).ok())
            .filter(|v| self.mem.contains(&v.item))
            .collect()
    }

    /// Saves a group view so a restart can rejoin the group within its grace window.
    pub fn save_view(&self, view: &View) {
        let Some(dir) = &self.dir else { return };
        let Ok(bytes) = postcard::to_stdvec(view) else {
            return;
        };
        if let Err(e) = write_atomic(&dir.join("views"), &view.item.to_string(), &bytes) {
            warn!(error = %e, "cannot save group view");
        }
    }

    /// Forgets a saved view.
    pub fn drop_view(&self, item: &ItemId) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join("views").join(item.to_string()));
        }
    }

    /// Test hook: corrupts the in-memory copy (see [`MemoryStore::corrupt`]).
    pub fn corrupt(&mut self, id: &ItemId, bytes: Vec<u8>) -> bool {
        self.mem.corrupt(id, bytes)
    }
}

impl Store for NodeStore {
    fn insert(&mut self, item: Item) -> Result<(), StoreError> {
        if self.mem.contains(&item.id()) {
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            // Durable before acknowledged: the file is complete and synced before we say yes.
            write_atomic(&dir.join("items"), &item.id().to_string(), item.content())
                .map_err(|e| StoreError::Backend(format!("writing item: {e}")))?;
        }
        let id = item.id();
        let r = self.mem.insert(item);
        if r.is_err() {
            if let Some(dir) = &self.dir {
                let _ = fs::remove_file(dir.join("items").join(id.to_string()));
            }
        }
        r
    }

    fn get(&self, id: &ItemId) -> Option<Item> {
        self.mem.get(id)
    }

    fn contains(&self, id: &ItemId) -> bool {
        self.mem.contains(id)
    }

    fn remove(&mut self, id: &ItemId) -> bool {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join("items").join(id.to_string()));
            self.drop_view(id);
        }
        self.mem.remove(id)
    }

    fn ids(&self) -> Vec<ItemId> {
        self.mem.ids()
    }

    fn usage(&self) -> Usage {
        self.mem.usage()
    }

    fn generation(&self) -> u64 {
        self.mem.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_survive_reopen_and_corrupt_files_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, loaded) = NodeStore::open(dir.path(), 1 << 20).unwrap();
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
        let (s, loaded) = NodeStore::open(dir.path(), 1 << 20).unwrap();
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
}
