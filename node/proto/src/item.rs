//! Content-addressed items: ids, chunking with a manifest, verification, possession proofs and
//! the [`Store`] trait with its memory implementation.
//!
//! ## Concepts
//! - An item's id is the SHA-256 of its content ([`ItemId::of`]). Nothing else names an item, so a
//!   retrieval can always be checked against the id it asked for ([`Item::verified`]).
//! - Items above [`Config::block_size`] travel as a [`Manifest`] (the item id, its size and the
//!   SHA-256 of every block) followed by the blocks; an [`Assembler`] checks each block against the
//!   manifest as it arrives and the whole against the id at the end.
//! - A holder proves it still has an item by answering a [`Challenge`]: a nonce picks a block and the
//!   answer is `SHA-256(nonce || block)`, which only someone holding the block can compute and which
//!   the challenger (another holder) checks against its own copy ([`Item::prove`]).
//! - A [`Store`] holds whole, verified items. Capacity is accounted byte-exactly in one place,
//!   [`Capacity`]: a store reserves an item's content length before keeping it and releases the same
//!   number when it drops it.
//! - Updates and deletes: a content-addressed item never changes (a new version is a new id).
//!   Deleting one is removing it from every group ([`crate::pcg::Message::Delete`]); the store
//!   only offers `remove`. Items that change are *owned* ([`crate::owned`]): their id names a slot
//!   `(owner, name)` and their content is the newest signed record, which [`Item::verified`]
//!   checks by signature instead of by hash.
//!
//! ```
//! use butter_proto::item::{Config, Item, MemoryStore, Store};
//! let item = Item::new(b"hello butter".to_vec());
//! let mut store = MemoryStore::new(1024);
//! store.insert(item.clone()).unwrap();
//! assert_eq!(store.usage().used, 12);
//! assert!(Item::verified(item.id(), b"hello butter".to_vec()).is_ok());
//! assert!(Item::verified(item.id(), b"tampered".to_vec()).is_err());
//! assert_eq!(item.manifest(&Config::default()), None, "small items need no manifest");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The id of an item (or of one of its blocks): SHA-256 of the content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemId(pub [u8; 32]);

// Byte-lexicographic order, compared a word at a time: ids are map keys on every hot path.
impl Ord for ItemId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        for i in 0..4 {
            let a = u64::from_be_bytes(self.0[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            let b = u64::from_be_bytes(other.0[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            match a.cmp(&b) {
                std::cmp::Ordering::Equal => {}
                o => return o,
            }
        }
        std::cmp::Ordering::Equal
    }
}

impl PartialOrd for ItemId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl ItemId {
    /// The id of `content`.
    pub fn of(content: &[u8]) -> Self {
        ItemId(Sha256::digest(content).into())
    }

    /// The first 10 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The `i`-th 64-bit word of the id: ids are uniform hashes, so these serve as hash values.
    pub fn word(&self, i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[(i % 4) * 8..(i % 4) * 8 + 8]);
        u64::from_le_bytes(w)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({})", self.short())
    }
}

/// Error parsing a printable item id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseItemIdError {
    /// The string is not 64 hexadecimal characters.
    #[error("item id must be 64 hex characters, got {0}")]
    Length(usize),
    /// A character is not hexadecimal.
    #[error("item id contains a non-hex character")]
    NotHex,
}

impl FromStr for ItemId {
    type Err = ParseItemIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseItemIdError::Length(s.len()));
        }
        // `from_str_radix` alone would also take a sign: "+f" is not a hex digit pair.
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseItemIdError::NotHex);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| ParseItemIdError::NotHex)?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| ParseItemIdError::NotHex)?;
        }
        Ok(ItemId(out))
    }
}

/// Item limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Items larger than this travel as a manifest plus blocks of this size. Default 256 KiB.
    pub block_size: usize,
    /// Largest item accepted. Default 64 MiB.
    pub max_item_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            block_size: 256 * 1024,
            max_item_size: 64 * 1024 * 1024,
        }
    }
}

/// A configuration value is out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field has a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl Config {
    /// Checks the limits are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.block_size == 0 {
            return Err(ConfigError::Invalid {
                field: "block_size",
                reason: "must be > 0",
            });
        }
        if self.max_item_size < self.block_size {
            return Err(ConfigError::Invalid {
                field: "max_item_size",
                reason: "must be at least block_size",
            });
        }
        if self.max_item_size / self.block_size > u32::MAX as usize {
            return Err(ConfigError::Invalid {
                field: "block_size",
                reason: "too many blocks",
            });
        }
        Ok(())
    }
}

/// Bytes that do not match the id they were asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The content's hash is not the item id.
    #[error("content does not hash to item {0:?}")]
    Mismatch(ItemId),
    /// A block does not hash to its manifest entry.
    #[error("block {index} of item {item:?} does not match the manifest")]
    BadBlock {
        /// The item.
        item: ItemId,
        /// Index of the block.
        index: u32,
    },
    /// A block index outside the manifest.
    #[error("block {index} is outside the manifest of item {item:?}")]
    NoSuchBlock {
        /// The item.
        item: ItemId,
        /// Index of the block.
        index: u32,
    },
    /// The manifest is inconsistent (sizes or block count).
    #[error("inconsistent manifest for item {0:?}")]
    BadManifest(ItemId),
    /// The item exceeds the configured maximum size.
    #[error("item of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced or actual size.
        size: u64,
        /// Limit.
        max: u64,
    },
}

/// A verified item: its content and the id it hashes to. Cheap to clone (the content is shared).
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    id: ItemId,
    content: Arc<[u8]>,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({}, {} bytes)", self.id.short(), self.content.len())
    }
}

impl Item {
    /// Wraps content, computing its id.
    pub fn new(content: Vec<u8>) -> Self {
        Item {
            id: ItemId::of(&content),
            content: content.into(),
        }
    }

    /// Wraps content that must be a valid value of `id` (every retrieval goes through here): for
    /// a content-addressed item, content that hashes to `id`; for content in the owned-record
    /// space ([`crate::owned::MAGIC`]), a record signed by its owner whose slot is `id`.
    pub fn verified(id: ItemId, content: Vec<u8>) -> Result<Self, VerifyError> {
        if crate::owned::is_owned_content(&content) {
            return match crate::owned::Record::decode(&content) {
                Ok(r) if r.slot() == id => Ok(Item {
                    id,
                    content: content.into(),
                }),
                _ => Err(VerifyError::Mismatch(id)),
            };
        }
        let item = Item::new(content);
        if item.id == id {
            Ok(item)
        } else {
            Err(VerifyError::Mismatch(id))
        }
    }

    /// The item holding an owned record: its id is the record's slot, its content the record.
    pub fn owned(record: &crate::owned::Record) -> Self {
        Item {
            id: record.slot(),
            content: record.encode().into(),
        }
    }

    /// Whether the content is still a valid value of the id (a disk error or a liar changes it).
    pub fn is_intact(&self) -> bool {
        Item::verified(self.id, self.content.to_vec()).is_ok()
    }

    /// The owned record this item holds, if it is an owned item (not re-verified: items are
    /// verified when they are made).
    pub fn record(&self) -> Option<crate::owned::Record> {
        if !crate::owned::is_owned_content(&self.content) {
            return None;
        }
        crate::owned::Record::decode_unverified(&self.content).ok()
    }

    /// The version of the owned record this item holds (`None` for a content-addressed item).
    pub fn version(&self) -> Option<crate::owned::Version> {
        crate::owned::version_of(&self.content)
    }

    /// The item id.
    pub fn id(&self) -> ItemId {
        self.id
    }

    /// The content.
    pub fn content(&self) -> &[u8] {
        &self.content
    }

    /// Content length in bytes.
    pub fn len(&self) -> usize {
        self.content.len()
    }

    /// Whether the content is empty.
    pub fn is_empty(&self) -> bool {
        self.content.is_empty()
    }

    /// The manifest this item travels with, or `None` if it fits in one block.
    pub fn manifest(&self, config: &Config) -> Option<Manifest> {
        if self.content.len() <= config.block_size {
            return None;
        }
        let blocks = self
            .content
            .chunks(config.block_size)
            .map(ItemId::of)
            .collect();
        Some(Manifest {
            item: self.id,
            size: self.content.len() as u64,
            block_size: config.block_size as u32,
            blocks,
        })
    }

    /// Block `index` of the item under `manifest` (what a holder sends for a fetch).
    pub fn block(&self, manifest: &Manifest, index: u32) -> Option<&[u8]> {
        let bs = manifest.block_size as usize;
        let start = (index as usize).checked_mul(bs)?;
        if start >= self.content.len() {
            return None;
        }
        Some(&self.content[start..(start + bs).min(self.content.len())])
    }

    /// Answers a possession challenge (see the module docs).
    pub fn prove(&self, nonce: u64, config: &Config) -> [u8; 32] {
        let bs = config.block_size.max(1);
        let blocks = self.content.len().div_ceil(bs).max(1);
        let index = (nonce % blocks as u64) as usize;
        let start = index * bs;
        let block =
            &self.content[start.min(self.content.len())..(start + bs).min(self.content.len())];
        let mut h = Sha256::new();
        h.update(nonce.to_le_bytes());
        h.update(block);
        h.finalize().into()
    }
}

/// The description of an item that travels in blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The item (hash of the whole content).
    pub item: ItemId,
    /// Total size in bytes.
    pub size: u64,
    /// Size of every block but the last.
    pub block_size: u32,
    /// SHA-256 of each block, in order.
    pub blocks: Vec<ItemId>,
}

impl Manifest {
    /// Checks the manifest is self-consistent and within the limits.
    pub fn check(&self, config: &Config) -> Result<(), VerifyError> {
        if self.size > config.max_item_size as u64 {
            return Err(VerifyError::TooLarge {
                size: self.size,
                max: config.max_item_size as u64,
            });
        }
        if self.block_size == 0 {
            return Err(VerifyError::BadManifest(self.item));
        }
        let expected = self.size.div_ceil(u64::from(self.block_size));
        if expected != self.blocks.len() as u64 {
            return Err(VerifyError::BadManifest(self.item));
        }
        Ok(())
    }
}

/// Collects the blocks of an item, verifying each on arrival and the whole at the end.
#[derive(Debug)]
pub struct Assembler {
    manifest: Manifest,
    blocks: BTreeMap<u32, Vec<u8>>,
}

impl Assembler {
    /// Starts assembling the item `manifest` describes, after checking it.
    pub fn new(manifest: Manifest, config: &Config) -> Result<Self, VerifyError> {
        manifest.check(config)?;
        Ok(Assembler {
            manifest,
            blocks: BTreeMap::new(),
        })
    }

    /// The manifest being assembled.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Adds block `index`, refusing it if it does not match the manifest.
    pub fn add(&mut self, index: u32, bytes: Vec<u8>) -> Result<(), VerifyError> {
        let item = self.manifest.item;
        let want = self
            .manifest
            .blocks
            .get(index as usize)
            .ok_or(VerifyError::NoSuchBlock { item, index })?;
        if ItemId::of(&bytes) != *want {
            return Err(VerifyError::BadBlock { item, index });
        }
        self.blocks.insert(index, bytes);
        Ok(())
    }

    /// Indexes of the blocks still missing, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.manifest.blocks.len() as u32)
            .filter(|i| !self.blocks.contains_key(i))
            .collect()
    }

    /// Whether every block is present.
    pub fn is_complete(&self) -> bool {
        self.blocks.len() == self.manifest.blocks.len()
    }

    /// The verified item, once complete.
    pub fn finish(self) -> Result<Item, VerifyError> {
        if !self.is_complete() {
            return Err(VerifyError::BadManifest(self.manifest.item));
        }
        let mut content = Vec::with_capacity(self.manifest.size as usize);
        for (_, b) in self.blocks {
            content.extend_from_slice(&b);
        }
        if content.len() as u64 != self.manifest.size {
            return Err(VerifyError::BadManifest(self.manifest.item));
        }
        Item::verified(self.manifest.item, content)
    }
}

/// A possession challenge: "prove you hold `item`, salted with `nonce`".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The item.
    pub item: ItemId,
    /// The salt, chosen by the challenger's RNG.
    pub nonce: u64,
}

/// The answer to a [`Challenge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The item.
    pub item: ItemId,
    /// The challenge's nonce.
    pub nonce: u64,
    /// `SHA-256(nonce || block)` (see [`Item::prove`]).
    pub hash: [u8; 32],
}

/// Why a store refused an operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// Not enough capacity left for the item.
    #[error("store full: need {need} bytes, {free} free")]
    Full {
        /// Bytes the item needs.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// The item exceeds the configured maximum item size.
    #[error("item of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Item size.
        size: u64,
        /// Limit.
        max: u64,
    },
    /// The backend failed (disk, database).
    #[error("store backend: {0}")]
    Backend(String),
}

/// Byte-exact capacity accounting. Every store keeps exactly one and changes `used` only through
/// [`Capacity::reserve`] and [`Capacity::release`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Bytes the store may hold.
    pub limit: u64,
    /// Bytes currently held.
    pub used: u64,
}

impl Capacity {
    /// A capacity of `limit` bytes, none used.
    pub fn new(limit: u64) -> Self {
        Capacity { limit, used: 0 }
    }

    /// Bytes still free.
    pub fn free(&self) -> u64 {
        self.limit - self.used
    }

    /// Takes `bytes` of capacity, or fails without changing anything.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), StoreError> {
        if bytes > self.free() {
            return Err(StoreError::Full {
                need: bytes,
                free: self.free(),
            });
        }
        self.used += bytes;
        Ok(())
    }

    /// Gives back `bytes` previously reserved.
    pub fn release(&mut self, bytes: u64) {
        debug_assert!(bytes <= self.used, "released more than reserved");
        self.used = self.used.saturating_sub(bytes);
    }
}

/// What a store holds, for metrics and for the diversity score (storage offered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes held (sum of the content lengths of the items).
    pub used: u64,
    /// Bytes the store may hold.
    pub limit: u64,
    /// Number of items held.
    pub items: u64,
}

/// Where a node keeps the items of its groups. Items are whole and verified ([`Item`]); blocks are a
/// transfer concern. Implementations keep one [`Capacity`] and count content bytes exactly.
pub trait Store: fmt::Debug + Send + 'static {
    /// Keeps `item`. Inserting an item already held is a no-op that succeeds.
    fn insert(&mut self, item: Item) -> Result<(), StoreError>;
    /// The item, if held.
    fn get(&self, id: &ItemId) -> Option<Item>;
    /// Whether the item is held.
    fn contains(&self, id: &ItemId) -> bool {
        self.get(id).is_some()
    }
    /// Drops the item; returns whether it was held.
    fn remove(&mut self, id: &ItemId) -> bool;
    /// Keeps `item` in place of the copy held under its id (an owned item's newer record), or
    /// inserts it when none is held. Fails without changing anything when the capacity freed by
    /// the old copy is not enough. Stores that keep more than the item under its id (a disk
    /// store's saved view) override it to replace only the content.
    fn replace(&mut self, item: Item) -> Result<(), StoreError> {
        let id = item.id();
        let old = self.get(&id).map_or(0, |o| o.len() as u64);
        let usage = self.usage();
        let free = usage.limit.saturating_sub(usage.used) + old;
        if item.len() as u64 > free {
            return Err(StoreError::Full {
                need: item.len() as u64,
                free,
            });
        }
        self.remove(&id);
        self.insert(item)
    }
    /// Ids of every item held, in order.
    fn ids(&self) -> Vec<ItemId>;
    /// Bytes and items held.
    fn usage(&self) -> Usage;
    /// A counter that changes whenever the set of items changes (summaries are rebuilt on change).
    fn generation(&self) -> u64;
}

/// A store in memory: the default for tests, the simulator and nodes without a data directory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    items: BTreeMap<ItemId, Item>,
    capacity: Capacity,
    generation: u64,
}

impl MemoryStore {
    /// An empty store of `limit` bytes.
    pub fn new(limit: u64) -> Self {
        MemoryStore {
            items: BTreeMap::new(),
            capacity: Capacity::new(limit),
            generation: 0,
        }
    }

    /// Test hook: replaces the content of a held item with `bytes` *without* changing its id, as a
    /// disk error or a malicious holder would. The possession check must notice.
    pub fn corrupt(&mut self, id: &ItemId, bytes: Vec<u8>) -> bool {
        let Some(old) = self.items.get(id) else {
            return false;
        };
        let old_len = old.len() as u64;
        let new_len = bytes.len() as u64;
        self.capacity.release(old_len);
        if self.capacity.reserve(new_len).is_err() {
            // Keep the accounting whole: restore the original reservation and refuse.
            let _ = self.capacity.reserve(old_len);
            return false;
        }
        self.items.insert(
            *id,
            Item {
                id: *id,
                content: bytes.into(),
            },
        );
        true
    }
}

impl Store for MemoryStore {
    fn insert(&mut self, item: Item) -> Result<(), StoreError> {
        if self.items.contains_key(&item.id) {
            return Ok(());
        }
        self.capacity.reserve(item.len() as u64)?;
        self.items.insert(item.id, item);
        self.generation += 1;
        Ok(())
    }

    fn get(&self, id: &ItemId) -> Option<Item> {
        self.items.get(id).cloned()
    }

    fn contains(&self, id: &ItemId) -> bool {
        self.items.contains_key(id)
    }

    fn remove(&mut self, id: &ItemId) -> bool {
        match self.items.remove(id) {
            Some(item) => {
                self.capacity.release(item.len() as u64);
                self.generation += 1;
                true
            }
            None => false,
        }
    }

    fn ids(&self) -> Vec<ItemId> {
        self.items.keys().copied().collect()
    }

    fn usage(&self) -> Usage {
        Usage {
            used: self.capacity.used,
            limit: self.capacity.limit,
            items: self.items.len() as u64,
        }
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Config {
        Config {
            block_size: 4,
            max_item_size: 64,
        }
    }

    #[test]
    fn id_is_sha256_of_content_and_round_trips_as_hex() {
        let id = ItemId::of(b"abc");
        assert_eq!(
            id.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id.to_string().parse::<ItemId>(), Ok(id));
        assert_eq!("xy".parse::<ItemId>(), Err(ParseItemIdError::Length(2)));
        assert_eq!(
            "g".repeat(64).parse::<ItemId>(),
            Err(ParseItemIdError::NotHex)
        );
    }

    #[test]
    fn id_order_is_byte_lexicographic() {
        let ids: Vec<ItemId> = (0..200u32).map(|i| ItemId::of(&i.to_le_bytes())).collect();
        for a in &ids {
            for b in &ids {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0));
            }
        }
    }

    #[test]
    fn large_items_travel_in_verified_blocks() {
        let cfg = small();
        let item = Item::new(b"0123456789".to_vec());
        let m = item.manifest(&cfg).unwrap();
        assert_eq!(m.blocks.len(), 3);
        let mut a = Assembler::new(m.clone(), &cfg).unwrap();
        // A block from another position is refused.
        assert!(matches!(
            a.add(0, b"4567".to_vec()),
            Err(VerifyError::BadBlock { index: 0, .. })
        ));
        assert!(matches!(
            a.add(9, b"x".to_vec()),
            Err(VerifyError::NoSuchBlock { .. })
        ));
        for i in [2, 0, 1] {
            a.add(i, item.block(&m, i).unwrap().to_vec()).unwrap();
        }
        assert!(a.missing().is_empty());
        assert_eq!(a.finish().unwrap(), item);
    }

    #[test]
    fn manifests_over_the_limit_or_inconsistent_are_refused() {
        let cfg = small();
        let mut m = Item::new(vec![7; 10]).manifest(&cfg).unwrap();
        m.blocks.pop();
        assert!(matches!(
            Assembler::new(m, &cfg),
            Err(VerifyError::BadManifest(_))
        ));
        let big = Item::new(vec![1; 100]).manifest(&cfg).unwrap();
        assert!(matches!(
            Assembler::new(big, &cfg),
            Err(VerifyError::TooLarge { .. })
        ));
    }

    #[test]
    fn proofs_depend_on_nonce_and_content() {
        let cfg = small();
        let a = Item::new(b"0123456789".to_vec());
        let forged = Item {
            id: a.id(),
            content: b"0123456788".to_vec().into(),
        };
        assert_ne!(a.prove(1, &cfg), a.prove(2, &cfg));
        // Nonce 2 picks block 2 ("89"), which the forgery changed.
        assert_ne!(a.prove(2, &cfg), forged.prove(2, &cfg));
        assert_eq!(a.prove(7, &cfg), a.clone().prove(7, &cfg));
    }

    #[test]
    fn store_accounts_bytes_exactly_and_refuses_when_full() {
        let mut s = MemoryStore::new(10);
        let a = Item::new(vec![1; 6]);
        let b = Item::new(vec![2; 5]);
        s.insert(a.clone()).unwrap();
        s.insert(a.clone()).unwrap();
        assert_eq!(
            s.usage(),
            Usage {
                used: 6,
                limit: 10,
                items: 1
            }
        );
        assert_eq!(
            s.insert(b.clone()),
            Err(StoreError::Full { need: 5, free: 4 })
        );
        let g = s.generation();
        assert!(s.remove(&a.id()));
        assert!(!s.remove(&a.id()));
        assert_ne!(s.generation(), g);
        s.insert(b.clone()).unwrap();
        assert_eq!(
            s.usage(),
            Usage {
                used: 5,
                limit: 10,
                items: 1
            }
        );
        assert_eq!(s.ids(), vec![b.id()]);
    }

    #[test]
    fn corruption_keeps_accounting_and_is_caught_by_proofs() {
        let cfg = Config::default();
        let mut s = MemoryStore::new(100);
        let a = Item::new(vec![1; 6]);
        s.insert(a.clone()).unwrap();
        assert!(s.corrupt(&a.id(), vec![9; 8]));
        assert_eq!(s.usage().used, 8);
        let held = s.get(&a.id()).unwrap();
        assert_ne!(held.prove(5, &cfg), a.prove(5, &cfg));
        assert!(!s.corrupt(&a.id(), vec![0; 200]), "over capacity");
        assert_eq!(s.usage().used, 8);
    }

    #[test]
    fn config_validation() {
        assert!(Config::default().validate().is_ok());
        assert!(
            Config {
                block_size: 0,
                ..Config::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Config {
                block_size: 10,
                max_item_size: 5
            }
            .validate()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn any_content_splits_and_reassembles(content in proptest::collection::vec(any::<u8>(), 0..200)) {
            let cfg = small();
            let item = Item::new(content.clone());
            match item.manifest(&cfg) {
                None => prop_assert!(content.len() <= cfg.block_size),
                Some(m) => {
                    let mut a = Assembler::new(m.clone(), &Config { max_item_size: 1024, ..cfg.clone() }).unwrap();
                    for i in a.missing() {
                        a.add(i, item.block(&m, i).unwrap().to_vec()).unwrap();
                    }
                    let done = a.finish().unwrap();
                    prop_assert_eq!(done.content(), &content[..]);
                }
            }
        }
    }
}
