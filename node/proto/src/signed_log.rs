//! An append-only log on owned items: entries signed by the owner and chained by hash, the head
//! kept as an owned item, readers verify the whole chain.
//!
//! ## Concepts
//! - An [`Entry`] is `{owner, log, index, prev, payload}` signed by the owner. It is stored as a
//!   *content-addressed* item, so its id (SHA-256 of its bytes) names it for good; `prev` is the
//!   id of the entry before it (`None` for entry 0). Changing any entry changes its id and breaks
//!   every link after it.
//! - The **head** is the owned item `(owner, log)` ([`crate::owned`]) whose value is a [`Head`]:
//!   the index and id of the last entry. An append signs a new entry, stores it, then puts a head
//!   with `seq = index + 1`, so the owned-item rule (a higher seq replaces, a lower is refused)
//!   means a stale member can never roll the log back to an older head.
//! - A reader takes the head, then walks `prev` links, checking each entry's hash against the
//!   link, its signature against the owner, its log name and its index ([`verify`]). Whatever the
//!   holders are, a reader either gets the owner's exact log up to the head or an error saying
//!   which entry is wrong or missing.
//!
//! ```
//! use butter_proto::owned::OwnerKey;
//! use butter_proto::signed_log::{self, Head};
//! use std::collections::BTreeMap;
//! let key = OwnerKey::from_seed([1; 32]);
//! let mut store = BTreeMap::new();
//! let mut head: Option<Head> = None;
//! for text in ["first", "second", "third"] {
//!     let (entry, record) = signed_log::append(&key, "journal", head, text.as_bytes().to_vec()).unwrap();
//!     store.insert(entry.id(), entry.encode());
//!     head = Some(signed_log::head_of(&record).unwrap());
//! }
//! let head = head.unwrap();
//! let entries = signed_log::verify(&key.id(), "journal", head, 100, |id| store.get(id).cloned()).unwrap();
//! let texts: Vec<&[u8]> = entries.iter().map(|e| e.payload()).collect();
//! assert_eq!(texts, [&b"first"[..], b"second", b"third"]);
//! ```

use std::fmt;

use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::item::ItemId;
use crate::owned::{self, OwnedError, OwnerId, OwnerKey, Record, SIGNATURE_LEN};

/// The first bytes of every encoded entry.
pub const MAGIC: [u8; 8] = *b"\0butlog1";
/// Largest payload of one entry, in bytes (an entry is a small item; larger content goes in an
/// item of its own, with its id in the payload).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest encoded entry.
pub const MAX_ENTRY: usize = MAX_PAYLOAD + owned::MAX_NAME + 160;

/// What the head of a log says: the last entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The index of the last entry (the log holds `index + 1` entries).
    pub index: u64,
    /// The id of the last entry.
    pub entry: ItemId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    owner: OwnerId,
    log: String,
    index: u64,
    prev: Option<ItemId>,
    payload: Vec<u8>,
}

/// One signed entry of a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    body: Body,
    /// The encoded entry, signature included (what is stored, and what its id is the hash of).
    bytes: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Entry({:?}/{} #{} {} bytes)",
            self.body.owner,
            self.body.log,
            self.body.index,
            self.body.payload.len()
        )
    }
}

/// Why a log could not be appended to or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The payload exceeds [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes exceeds the limit of 65536 (store it as an item and log its id)")]
    TooLarge(usize),
    /// The head record is not a log head (a tombstone, or a value that is no [`Head`]).
    #[error("the owned item is not a log head")]
    NotAHead,
    /// An entry the chain needs is not available.
    #[error("entry {index} ({id}) is missing")]
    Missing {
        /// Its index.
        index: u64,
        /// Its id.
        id: ItemId,
    },
    /// An entry does not hash to its link, is badly signed, or belongs to another log or index.
    #[error("entry {index} is not the owner's: {reason}")]
    Bad {
        /// Its index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The log is longer than the reader accepts.
    #[error("the log has {0} entries, more than the reader's limit")]
    TooLong(u64),
    /// The owner's record was refused.
    #[error(transparent)]
    Owned(#[from] OwnedError),
}

impl Entry {
    /// The entry's id: SHA-256 of its bytes (it is stored as a content-addressed item).
    pub fn id(&self) -> ItemId {
        ItemId::of(&self.bytes)
    }

    /// The encoded entry.
    pub fn encode(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// Its index in the log.
    pub fn index(&self) -> u64 {
        self.body.index
    }

    /// The id of the entry before it.
    pub fn prev(&self) -> Option<ItemId> {
        self.body.prev
    }

    /// What was logged.
    pub fn payload(&self) -> &[u8] {
        &self.body.payload
    }

    /// Decodes an entry and checks its signature (bounded: at most [`MAX_ENTRY`] bytes).
    pub fn decode(bytes: &[u8]) -> Result<Entry, &'static str> {
        if bytes.len() > MAX_ENTRY {
            return Err("longer than the largest entry");
        }
        if bytes.len() < MAGIC.len() + SIGNATURE_LEN || bytes[..MAGIC.len()] != MAGIC {
            return Err("not a log entry");
        }
        let (signed, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let (body, rest): (Body, &[u8]) = postcard::take_from_bytes(&signed[MAGIC.len()..])
            .map_err(|_| "body does not decode")?;
        if !rest.is_empty() {
            return Err("trailing bytes");
        }
        if body.payload.len() > MAX_PAYLOAD {
            return Err("payload too large");
        }
        UnparsedPublicKey::new(&ED25519, &body.owner.0)
            .verify(signed, sig)
            .map_err(|_| "bad signature")?;
        Ok(Entry {
            body,
            bytes: bytes.to_vec(),
        })
    }
}

/// Signs the entry after `head` (or the first one) and the new head record; store the entry as
/// an item first, then put the head as the owned item `(key, log)`.
pub fn append(
    key: &OwnerKey,
    log: &str,
    head: Option<Head>,
    payload: Vec<u8>,
) -> Result<(Entry, Record), LogError> {
    owned::check_name(log)?;
    if payload.len() > MAX_PAYLOAD {
        return Err(LogError::TooLarge(payload.len()));
    }
    let (index, prev) = match head {
        Some(h) => (h.index + 1, Some(h.entry)),
        None => (0, None),
    };
    let body = Body {
        owner: key.id(),
        log: log.to_owned(),
        index,
        prev,
        payload,
    };
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(
        &postcard::to_stdvec(&body).map_err(|_| OwnedError::Malformed("body does not encode"))?,
    );
    bytes.extend_from_slice(&key.sign(&bytes));
    let entry = Entry { body, bytes };
    let new_head = Head {
        index,
        entry: entry.id(),
    };
    let value = postcard::to_stdvec(&new_head)
        .map_err(|_| OwnedError::Malformed("head does not encode"))?;
    let record = Record::sign(key, log, index + 1, Some(value))?;
    Ok((entry, record))
}

/// The head a log's owned record holds.
pub fn head_of(record: &Record) -> Result<Head, LogError> {
    let value = record.value().ok_or(LogError::NotAHead)?;
    let head: Head = postcard::from_bytes(value).map_err(|_| LogError::NotAHead)?;
    if head.index.checked_add(1) != Some(record.seq()) {
        return Err(LogError::NotAHead);
    }
    Ok(head)
}

/// Reads and verifies the log of `(owner, log)` ending at `head`, oldest entry first: every entry
/// must be available through `fetch` (by id), hash to its link, carry the owner's signature,
/// this log's name and the index before its successor's, and the first must have no `prev`.
/// At most `max_entries` are read.
pub fn verify(
    owner: &OwnerId,
    log: &str,
    head: Head,
    max_entries: u64,
    mut fetch: impl FnMut(&ItemId) -> Option<Vec<u8>>,
) -> Result<Vec<Entry>, LogError> {
    let len = head.index.saturating_add(1);
    if len > max_entries {
        return Err(LogError::TooLong(len));
    }
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(4096));
    let mut want = Some(head.entry);
    let mut index = head.index;
    while let Some(id) = want {
        let bytes = fetch(&id).ok_or(LogError::Missing { index, id })?;
        let bad = |reason| LogError::Bad { index, reason };
        if ItemId::of(&bytes) != id {
            return Err(bad("does not hash to its link"));
        }
        let e = Entry::decode(&bytes).map_err(bad)?;
        if e.body.owner != *owner {
            return Err(bad("signed by another owner"));
        }
        if e.body.log != log {
            return Err(bad("belongs to another log"));
        }
        if e.body.index != index {
            return Err(bad("index out of order"));
        }
        want = e.body.prev;
        out.push(e);
        match (want, index) {
            (None, 0) => break,
            (None, _) => return Err(bad("the chain ends before entry 0")),
            (Some(_), 0) => return Err(bad("entry 0 has a predecessor")),
            _ => index -= 1,
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn build(key: &OwnerKey, n: usize) -> (BTreeMap<ItemId, Vec<u8>>, Head, Vec<Record>) {
        let mut store = BTreeMap::new();
        let mut head = None;
        let mut records = Vec::new();
        for i in 0..n {
            let (e, r) = append(key, "log", head, format!("entry {i}").into_bytes()).unwrap();
            store.insert(e.id(), e.encode());
            head = Some(head_of(&r).unwrap());
            records.push(r);
        }
        (store, head.unwrap(), records)
    }

    #[test]
    fn appends_chain_and_read_back_in_order_with_rising_head_seqs() {
        let key = OwnerKey::from_seed([2; 32]);
        let (store, head, records) = build(&key, 5);
        let got = verify(&key.id(), "log", head, 10, |id| store.get(id).cloned()).unwrap();
        assert_eq!(got.len(), 5);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.index(), i as u64);
            assert_eq!(e.payload(), format!("entry {i}").as_bytes());
        }
        let seqs: Vec<u64> = records.iter().map(Record::seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "each append raises the head's seq");
        assert_eq!(
            verify(&key.id(), "log", head, 4, |id| store.get(id).cloned()),
            Err(LogError::TooLong(5))
        );
    }

    #[test]
    fn a_changed_missing_or_foreign_entry_is_caught() {
        let key = OwnerKey::from_seed([2; 32]);
        let (store, head, _) = build(&key, 4);
        let entries = verify(&key.id(), "log", head, 10, |id| store.get(id).cloned()).unwrap();
        let target = entries[1].id();
        // A holder serving other bytes for entry 1.
        let mut forged = store.clone();
        let mut bytes = forged[&target].clone();
        bytes[20] ^= 1;
        forged.insert(target, bytes);
        assert!(matches!(
            verify(&key.id(), "log", head, 10, |id| forged.get(id).cloned()),
            Err(LogError::Bad { index: 1, .. })
        ));
        // Entry 1 missing.
        let mut gone = store.clone();
        gone.remove(&target);
        assert!(matches!(
            verify(&key.id(), "log", head, 10, |id| gone.get(id).cloned()),
            Err(LogError::Missing { index: 1, .. })
        ));
        // Another owner's log under this one's name, or this owner's other log.
        assert!(matches!(
            verify(&OwnerKey::from_seed([3; 32]).id(), "log", head, 10, |id| {
                store.get(id).cloned()
            }),
            Err(LogError::Bad { index: 3, .. })
        ));
        assert!(matches!(
            verify(&key.id(), "other", head, 10, |id| store.get(id).cloned()),
            Err(LogError::Bad { index: 3, .. })
        ));
        // A head that lies about the index.
        let lying = Head {
            index: head.index + 1,
            ..head
        };
        assert!(matches!(
            verify(&key.id(), "log", lying, 10, |id| store.get(id).cloned()),
            Err(LogError::Bad { .. })
        ));
        // Garbage never panics the decoder.
        for n in 0..200usize {
            let _ = Entry::decode(&vec![n as u8; n]);
        }
        assert!(Entry::decode(&[0; MAX_ENTRY + 1]).is_err());
    }

    #[test]
    fn a_head_must_be_a_head() {
        let key = OwnerKey::from_seed([4; 32]);
        let tomb = Record::sign(&key, "log", 3, None).unwrap();
        assert_eq!(head_of(&tomb), Err(LogError::NotAHead));
        let junk = Record::sign(&key, "log", 3, Some(b"x".to_vec())).unwrap();
        assert_eq!(head_of(&junk), Err(LogError::NotAHead));
        assert_eq!(
            append(&key, "log", None, vec![0; MAX_PAYLOAD + 1]).unwrap_err(),
            LogError::TooLarge(MAX_PAYLOAD + 1)
        );
    }
}
