//! Owner keys on disk: the Ed25519 key pair an application or a user signs its owned items with
//! (see [`butter_proto::owned`]). It is not the node's identity: one owner may write through any
//! node, and a node never needs the owner's key (clients sign, nodes verify).
//!
//! ```no_run
//! # fn demo() -> Result<(), butter::owner::KeyFileError> {
//! let key = butter::owner::generate(std::path::Path::new("alice.key"))?;
//! let again = butter::owner::load(std::path::Path::new("alice.key"))?;
//! assert_eq!(key.id(), again.id());
//! # Ok(()) }
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use butter_proto::owned::{OwnedError, OwnerKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why an owner key file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file exists: a key is never overwritten (its items would lose their owner).
    #[error(
        "{0} exists; an owner key is never overwritten (pick another --out, or delete it first if you really mean to lose its items' ownership)"
    )]
    Exists(PathBuf),
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an owner key file.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        source: OwnedError,
    },
    /// The operating system gave no random bytes.
    #[error("no randomness from the operating system for a new key")]
    Random,
}

/// A new owner key from the operating system's randomness, in memory only (a key that is never
/// written can never be used again once the process ends: for tests and throw-away owners).
pub fn fresh() -> Result<OwnerKey, KeyFileError> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| KeyFileError::Random)?;
    Ok(OwnerKey::from_seed(seed))
}

/// Makes a new owner key from the operating system's randomness and writes it to `path`
/// (created, readable by its owner only; an existing file is refused).
pub fn generate(path: &Path) -> Result<OwnerKey, KeyFileError> {
    let key = fresh()?;
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists(path.to_path_buf())
        } else {
            io(e)
        }
    })?;
    f.write_all(key.to_file().as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

/// Reads the owner key in `path` (at most 4 KiB are read: a key file is two short lines).
pub fn load(path: &Path) -> Result<OwnerKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.len() > 4096 {
        return Err(KeyFileError::Format {
            path: path.to_path_buf(),
            source: OwnedError::BadKeyFile,
        });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    OwnerKey::from_file(&text).map_err(|source| KeyFileError::Format {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = generate(&path).unwrap();
        assert_eq!(load(&path).unwrap().id(), key.id());
        assert!(matches!(generate(&path), Err(KeyFileError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::write(&path, "not a key").unwrap();
        assert!(matches!(load(&path), Err(KeyFileError::Format { .. })));
        let other = generate(&dir.path().join("k2")).unwrap();
        assert_ne!(other.id(), key.id(), "fresh randomness per key");
    }
}
