//! Peer identity: a peer id is the SHA-256 of the node's public key (SubjectPublicKeyInfo DER).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The identity of a node: SHA-256 of its public key. Stable as long as the key is kept.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

/// Error parsing a printable peer id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParsePeerIdError {
    /// The string is not 64 hexadecimal characters.
    #[error("peer id must be 64 hex characters, got {0}")]
    Length(usize),
    /// A character is not hexadecimal.
    #[error("peer id contains a non-hex character")]
    NotHex,
}

impl PeerId {
    /// Derives the peer id from a DER-encoded SubjectPublicKeyInfo.
    pub fn from_public_key(spki_der: &[u8]) -> Self {
        PeerId(Sha256::digest(spki_der).into())
    }

    /// The first 10 hex characters: enough to tell peers apart in logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(10);
        s
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = ParsePeerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParsePeerIdError::Length(s.len()));
        }
        // `from_str_radix` alone would also take a sign: "+f" is not a hex digit pair.
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParsePeerIdError::NotHex);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).map_err(|_| ParsePeerIdError::NotHex)?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| ParsePeerIdError::NotHex)?;
        }
        Ok(PeerId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let id = PeerId::from_public_key(b"key");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<PeerId>(), Ok(id));
        assert_eq!(id.short(), s[..10]);
    }

    #[test]
    fn bad_strings_are_rejected() {
        assert_eq!("abc".parse::<PeerId>(), Err(ParsePeerIdError::Length(3)));
        let bad = "z".repeat(64);
        assert_eq!(bad.parse::<PeerId>(), Err(ParsePeerIdError::NotHex));
    }

    #[test]
    fn different_keys_give_different_ids() {
        assert_ne!(PeerId::from_public_key(b"a"), PeerId::from_public_key(b"b"));
    }
}
