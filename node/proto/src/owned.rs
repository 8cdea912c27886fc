//! Owned items: values named by (owner key, name), signed by the owner, replaced by a higher
//! sequence number and deleted only by a signed tombstone.
//!
//! ## Concepts
//! - An **owner** is an Ed25519 key pair ([`OwnerKey`]), separate from any node's identity: an
//!   application or a user keeps it and may use it from any node. Its public half is the
//!   [`OwnerId`] (32 bytes, printed as 64 hex characters).
//! - An owned item is named by `(owner, name)`. Its [`ItemId`] is [`slot`]`(owner, name)`, a
//!   SHA-256 under a domain prefix, so it falls into a PCG group like any content-addressed item
//!   and every node computes the same group for it.
//! - Its value is a [`Record`]: `{owner, name, seq, value, signature}`. A record with a higher
//!   `seq` replaces a lower one everywhere; a lower or equal one is refused. A record whose
//!   `value` is `None` is a **tombstone**: the owner deleted the item. Tombstones replicate like
//!   values, so a member holding an older value that comes back from a partition is given the
//!   tombstone rather than bringing the value back (see `pcg::Config::owned_tombstone_ttl` for
//!   how long).
//! - Records are the stored content of their item: [`MAGIC`], a kind byte, the postcard body and
//!   the 64-byte signature over everything before it. Content that starts with [`MAGIC`] is
//!   never a content-addressed item ([`crate::item::Item::verified`] reads it as a record or
//!   refuses it), so nobody can squat a slot by storing its preimage anonymously.
//! - Two records of one slot are ordered by [`Version`]: `seq`, then a tag drawn from the
//!   record's hash, so even an owner who signs two values under one `seq` cannot keep its groups
//!   disagreeing: every node picks the same one.
//!
//! ```
//! use butter_proto::owned::{OwnerKey, Record, slot};
//! let key = OwnerKey::from_seed([7; 32]);
//! let v1 = Record::sign(&key, "profile", 1, Some(b"hello".to_vec())).unwrap();
//! let bytes = v1.encode();
//! let back = Record::decode(&bytes).unwrap();
//! assert_eq!(back, v1);
//! assert_eq!(back.slot(), slot(&key.id(), "profile"));
//! let v2 = Record::sign(&key, "profile", 2, None).unwrap();
//! assert!(v2.version() > v1.version() && v2.is_tombstone());
//! ```

use std::fmt;
use std::str::FromStr;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::item::ItemId;

/// The first bytes of every owned record and of every slot preimage. Chosen so no text and no
/// common file format starts with it (a NUL, then a tag).
pub const MAGIC: [u8; 8] = *b"\0butown1";
/// Kind byte of a slot preimage (`MAGIC`, this, owner, name).
const KIND_SLOT: u8 = 0;
/// Kind byte of a record.
const KIND_RECORD: u8 = 1;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest name, in bytes.
pub const MAX_NAME: usize = 128;
/// Largest value, in bytes: owned values always travel whole in one message (never as blocks).
pub const MAX_VALUE: usize = 64 * 1024;
/// Largest encoded record (header, body, signature) for [`MAX_NAME`] and [`MAX_VALUE`].
pub const MAX_RECORD: usize = MAX_VALUE + MAX_NAME + 128;

/// An owner's public key (Ed25519, 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerId(pub [u8; 32]);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_string();
        write!(f, "OwnerId({})", &s[..10])
    }
}

impl FromStr for OwnerId {
    type Err = OwnedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex32(s.trim())
            .map(OwnerId)
            .ok_or(OwnedError::BadOwner(s.len()))
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// An owner's key pair. Made from a 32-byte seed the caller draws from the OS (the core has no
/// RNG of its own): `butter-node key new` writes one to a file.
pub struct OwnerKey {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the seed.
        write!(f, "OwnerKey({:?})", self.id())
    }
}

impl OwnerKey {
    /// The key pair of `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        // An Ed25519 seed of 32 bytes is always valid; `from_seed_unchecked` only fails on length.
        let pair = match Ed25519KeyPair::from_seed_unchecked(&seed) {
            Ok(p) => p,
            Err(_) => unreachable!("a 32-byte Ed25519 seed is always accepted"),
        };
        OwnerKey { pair, seed }
    }

    /// The seed, to write the key to a file.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The public key.
    pub fn id(&self) -> OwnerId {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        OwnerId(out)
    }

    /// Signs `message` (for structures built on owned items, such as
    /// [`crate::signed_log`]; records sign themselves with [`Record::sign`]).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }

    /// The key file's text: a header line and the seed in hex.
    pub fn to_file(&self) -> String {
        let mut s = String::from(KEY_FILE_HEADER);
        s.push('\n');
        for b in self.seed {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }

    /// Reads a key file written by [`to_file`](Self::to_file).
    pub fn from_file(text: &str) -> Result<Self, OwnedError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(OwnedError::BadKeyFile);
        }
        let seed = lines.next().and_then(hex32).ok_or(OwnedError::BadKeyFile)?;
        if lines.next().is_some() {
            return Err(OwnedError::BadKeyFile);
        }
        Ok(OwnerKey::from_seed(seed))
    }
}

/// First line of an owner key file.
pub const KEY_FILE_HEADER: &str = "butter owner key v1 (Ed25519 seed, keep it secret)";

/// The item id of `(owner, name)`: `SHA-256(MAGIC || 0 || owner || name)`.
pub fn slot(owner: &OwnerId, name: &str) -> ItemId {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update([KIND_SLOT]);
    h.update(owner.0);
    h.update(name.as_bytes());
    ItemId(h.finalize().into())
}

/// Checks a name: 1 to [`MAX_NAME`] bytes of ASCII letters, digits, `.`, `_`, `-` and `~` (it
/// is a URL path segment and a file-name-like label, so nothing needs escaping).
pub fn check_name(name: &str) -> Result<(), OwnedError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(OwnedError::BadName("must be 1 to 128 bytes"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
    {
        return Err(OwnedError::BadName(
            "only ASCII letters, digits, '.', '_', '-' and '~'",
        ));
    }
    Ok(())
}

/// The order of two records of one slot: the higher wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The owner's sequence number.
    pub seq: u64,
    /// The first 8 bytes of the record's signature (Ed25519 signatures are deterministic, so
    /// each record has one): breaks ties between two records an owner signed under one `seq`,
    /// the same way on every node.
    pub tag: [u8; 8],
}

/// What is signed and stored, besides the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    owner: OwnerId,
    name: String,
    seq: u64,
    value: Option<Vec<u8>>,
}

/// A signed value (or tombstone) of an owned item. Only [`Record::sign`] and [`Record::decode`]
/// make one, so every `Record` is well formed; `decode` also checks the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    body: Body,
    signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Record({:?}/{} seq {} {})",
            self.body.owner,
            self.body.name,
            self.body.seq,
            match &self.body.value {
                Some(v) => format!("{} bytes", v.len()),
                None => "tombstone".to_owned(),
            }
        )
    }
}

/// Why an owned record, key or name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedError {
    /// The bytes are not a record (wrong header, truncated, trailing bytes, bad body).
    #[error("not an owned record: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the record's owner key.
    #[error("bad signature: the record was not signed by its owner key")]
    BadSignature,
    /// The name is not acceptable.
    #[error("bad name: {0}")]
    BadName(&'static str),
    /// The value exceeds [`MAX_VALUE`].
    #[error("value of {0} bytes exceeds the limit of 65536")]
    TooLarge(usize),
    /// An owner id that is not 64 hex characters.
    #[error("owner must be 64 hex characters (a public key from `butter-node key new`), got {0}")]
    BadOwner(usize),
    /// A key file that is not one `butter-node key new` wrote.
    #[error("not a butter owner key file (make one with `butter-node key new --out FILE`)")]
    BadKeyFile,
    /// A record whose version is not above the one held.
    #[error(
        "stale: seq {offered} is not above the seq {held} already held (put with a higher --seq)"
    )]
    Stale {
        /// The sequence number held.
        held: u64,
        /// The sequence number offered.
        offered: u64,
    },
}

impl OwnedError {
    /// A stable label for the counter of refused records (`butter_owned_refused_total`).
    pub fn reason(&self) -> &'static str {
        match self {
            OwnedError::Malformed(_) => "malformed",
            OwnedError::BadSignature => "bad_signature",
            OwnedError::BadName(_) => "bad_name",
            OwnedError::TooLarge(_) => "too_large",
            OwnedError::BadOwner(_) => "bad_owner",
            OwnedError::BadKeyFile => "bad_key_file",
            OwnedError::Stale { .. } => "stale",
        }
    }
}

impl Record {
    /// Signs `value` (or, for `None`, a tombstone) under `(key, name)` at `seq`.
    pub fn sign(
        key: &OwnerKey,
        name: &str,
        seq: u64,
        value: Option<Vec<u8>>,
    ) -> Result<Record, OwnedError> {
        check_name(name)?;
        if let Some(v) = &value
            && v.len() > MAX_VALUE
        {
            return Err(OwnedError::TooLarge(v.len()));
        }
        let body = Body {
            owner: key.id(),
            name: name.to_owned(),
            seq,
            value,
        };
        let signed = signed_bytes(&body)?;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(key.pair.sign(&signed).as_ref());
        Ok(Record { body, signature })
    }

    /// The stored form: `MAGIC`, kind, postcard body, signature.
    pub fn encode(&self) -> Vec<u8> {
        // The body was encoded once already when signed or decoded; it cannot fail now.
        let mut out = signed_bytes(&self.body).unwrap_or_default();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes and verifies a stored record (bounded: at most [`MAX_RECORD`] bytes are read).
    pub fn decode(bytes: &[u8]) -> Result<Record, OwnedError> {
        let r = Record::decode_unverified(bytes)?;
        let (signed, _) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        UnparsedPublicKey::new(&ED25519, &r.body.owner.0)
            .verify(signed, &r.signature)
            .map_err(|_| OwnedError::BadSignature)?;
        Ok(r)
    }

    /// Decodes without checking the signature: for copies this node verified when it took them.
    pub fn decode_unverified(bytes: &[u8]) -> Result<Record, OwnedError> {
        if bytes.len() > MAX_RECORD {
            return Err(OwnedError::Malformed("longer than the largest record"));
        }
        if bytes.len() < MAGIC.len() + 1 + SIGNATURE_LEN {
            return Err(OwnedError::Malformed("truncated"));
        }
        if bytes[..MAGIC.len()] != MAGIC || bytes[MAGIC.len()] != KIND_RECORD {
            return Err(OwnedError::Malformed("wrong header"));
        }
        let (signed, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let (body, rest): (Body, &[u8]) = postcard::take_from_bytes(&signed[MAGIC.len() + 1..])
            .map_err(|_| OwnedError::Malformed("body does not decode"))?;
        if !rest.is_empty() {
            return Err(OwnedError::Malformed("trailing bytes"));
        }
        check_name(&body.name)?;
        if let Some(v) = &body.value
            && v.len() > MAX_VALUE
        {
            return Err(OwnedError::TooLarge(v.len()));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig);
        Ok(Record { body, signature })
    }

    /// The owner.
    pub fn owner(&self) -> OwnerId {
        self.body.owner
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.body.name
    }

    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.body.seq
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.body.value.as_deref()
    }

    /// Whether the owner deleted the item with this record.
    pub fn is_tombstone(&self) -> bool {
        self.body.value.is_none()
    }

    /// The item id this record is a value of.
    pub fn slot(&self) -> ItemId {
        slot(&self.body.owner, &self.body.name)
    }

    /// Its place in the order of the slot's records.
    pub fn version(&self) -> Version {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.signature[..8]);
        Version {
            seq: self.body.seq,
            tag,
        }
    }
}

/// The version of a stored record, read without copying its value or checking its signature
/// (for copies this node verified when it took them): `None` when `content` is not a record.
pub fn version_of(content: &[u8]) -> Option<Version> {
    if !is_owned_content(content)
        || content.len() < MAGIC.len() + 1 + SIGNATURE_LEN
        || content.len() > MAX_RECORD
    {
        return None;
    }
    // The body starts with owner, name and seq: decode just that prefix.
    let (head, _): ((OwnerId, String, u64), &[u8]) =
        postcard::take_from_bytes(&content[MAGIC.len() + 1..]).ok()?;
    let sig = &content[content.len() - SIGNATURE_LEN..];
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&sig[..8]);
    Some(Version { seq: head.2, tag })
}

/// Whether `content` is in the owned-record space (starts with [`MAGIC`]).
pub fn is_owned_content(content: &[u8]) -> bool {
    content.starts_with(&MAGIC)
}

fn signed_bytes(body: &Body) -> Result<Vec<u8>, OwnedError> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + 64);
    out.extend_from_slice(&MAGIC);
    out.push(KIND_RECORD);
    let encoded =
        postcard::to_stdvec(body).map_err(|_| OwnedError::Malformed("body does not encode"))?;
    out.extend_from_slice(&encoded);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> OwnerKey {
        OwnerKey::from_seed([n; 32])
    }

    #[test]
    fn records_round_trip_and_verify() {
        let k = key(1);
        let r = Record::sign(&k, "a.b-c_d~1", 5, Some(b"v".to_vec())).unwrap();
        let bytes = r.encode();
        assert!(is_owned_content(&bytes));
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.owner(), k.id());
        assert_eq!(
            (back.name(), back.seq(), back.value()),
            ("a.b-c_d~1", 5, Some(&b"v"[..]))
        );
        assert_eq!(back.slot(), slot(&k.id(), "a.b-c_d~1"));
        assert_eq!(version_of(&bytes), Some(r.version()));
        assert_eq!(version_of(b"plain content"), None);
        assert_ne!(
            slot(&k.id(), "a"),
            slot(&key(2).id(), "a"),
            "slots differ by owner"
        );
    }

    #[test]
    fn a_changed_byte_or_another_key_fails_the_signature() {
        let k = key(1);
        let r = Record::sign(&k, "n", 1, Some(b"value".to_vec())).unwrap();
        let mut bytes = r.encode();
        let i = bytes.len() - SIGNATURE_LEN - 1;
        bytes[i] ^= 1; // the last byte of the value
        assert_eq!(Record::decode(&bytes), Err(OwnedError::BadSignature));
        // A record claiming another owner with this owner's signature.
        let other = Record::sign(&key(2), "n", 1, Some(b"value".to_vec())).unwrap();
        let mut forged = other.encode();
        let sig_at = forged.len() - SIGNATURE_LEN;
        forged[sig_at..].copy_from_slice(&r.encode()[bytes.len() - SIGNATURE_LEN..]);
        assert_eq!(Record::decode(&forged), Err(OwnedError::BadSignature));
    }

    #[test]
    fn names_values_and_headers_are_bounded() {
        let k = key(1);
        assert!(matches!(
            Record::sign(&k, "", 1, None),
            Err(OwnedError::BadName(_))
        ));
        assert!(matches!(
            Record::sign(&k, "a/b", 1, None),
            Err(OwnedError::BadName(_))
        ));
        assert!(Record::sign(&k, &"x".repeat(MAX_NAME), 1, None).is_ok());
        assert!(matches!(
            Record::sign(&k, &"x".repeat(MAX_NAME + 1), 1, None),
            Err(OwnedError::BadName(_))
        ));
        assert_eq!(
            Record::sign(&k, "n", 1, Some(vec![0; MAX_VALUE + 1])),
            Err(OwnedError::TooLarge(MAX_VALUE + 1))
        );
        let big = Record::sign(
            &k,
            &"x".repeat(MAX_NAME),
            u64::MAX,
            Some(vec![0; MAX_VALUE]),
        )
        .unwrap()
        .encode();
        assert!(big.len() <= MAX_RECORD, "{} > {MAX_RECORD}", big.len());
        assert!(Record::decode(&big).is_ok());
        assert!(matches!(
            Record::decode(b"hello"),
            Err(OwnedError::Malformed(_))
        ));
        let mut trailing = Record::sign(&k, "n", 1, None).unwrap().encode();
        trailing.insert(trailing.len() - SIGNATURE_LEN, 0);
        assert!(matches!(
            Record::decode(&trailing),
            Err(OwnedError::Malformed(_))
        ));
    }

    #[test]
    fn versions_order_by_seq_then_by_tag() {
        let k = key(3);
        let a = Record::sign(&k, "n", 1, Some(b"a".to_vec())).unwrap();
        let b = Record::sign(&k, "n", 1, Some(b"b".to_vec())).unwrap();
        let c = Record::sign(&k, "n", 2, None).unwrap();
        assert_ne!(a.version(), b.version(), "equivocation is still ordered");
        assert!(c.version() > a.version().max(b.version()));
    }

    #[test]
    fn key_files_round_trip_and_owner_ids_parse() {
        let k = key(9);
        let back = OwnerKey::from_file(&k.to_file()).unwrap();
        assert_eq!(back.id(), k.id());
        assert_eq!(
            OwnerKey::from_file("nope").unwrap_err(),
            OwnedError::BadKeyFile
        );
        assert_eq!(k.id().to_string().parse::<OwnerId>(), Ok(k.id()));
        assert_eq!("xy".parse::<OwnerId>(), Err(OwnedError::BadOwner(2)));
        assert!(!format!("{k:?}").contains(&format!("{:02x}", 9u8).repeat(32)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut framed = MAGIC.to_vec();
            framed.push(KIND_RECORD);
            framed.extend_from_slice(&bytes);
            let _ = Record::decode(&bytes);
            prop_assert!(Record::decode(&framed).is_err());
        }
    }
}
