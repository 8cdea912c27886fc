//! Node identity: an Ed25519 key pair kept in the data directory, a self-signed certificate made
//! from it, and the peer id derived from its public key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use butter_proto::PeerId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// File name of the private key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The key file does not hold a usable key.
    #[error(
        "key file {path} is not a valid PKCS#8 key ({source}); move it away to generate a new identity"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// The parse error.
        source: rcgen::Error,
    },
    /// The node certificate is not for this node's key.
    #[error("node.crt is not for this node's key; sign it again with `butter-node ca sign`")]
    CertificateMismatch,
    /// The network CA or node certificate cannot be used.
    #[error("private network: {0}")]
    Private(String),
    /// Generating the key or certificate failed.
    #[error("cannot generate identity: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A node's key pair, certificate and peer id.
pub struct Identity {
    key_der: Vec<u8>,
    cert: CertificateDer<'static>,
    peer_id: PeerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh, ephemeral identity (not persisted).
    pub fn generate() -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        Self::from_key(&key)
    }

    /// Loads the identity from `dir/node.key`, creating the directory and key on first use, so a
    /// restarted node keeps its peer id.
    pub fn load_or_generate(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(pem) => {
                let key =
                    rcgen::KeyPair::from_pem(&pem).map_err(|source| IdentityError::BadKey {
                        path: path.clone(),
                        source,
                    })?;
                Self::from_key(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io)?;
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                // Write to a temporary file and rename, so a crash never leaves half a key.
                let tmp = dir.join(format!("{KEY_FILE}.tmp"));
                let mut f = fs::File::create(&tmp).map_err(io)?;
                f.write_all(key.serialize_pem().as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                restrict_permissions(&tmp).map_err(io)?;
                fs::rename(&tmp, &path).map_err(io)?;
                Self::from_key(&key)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_key(key: &rcgen::KeyPair) -> Result<Self, IdentityError> {
        let peer_id = PeerId::from_public_key(&key.public_key_der());
        let mut params = rcgen::CertificateParams::new(vec!["butter".to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, peer_id.to_string());
        let cert = params.self_signed(key)?;
        Ok(Identity {
            key_der: key.serialize_der(),
            cert: cert.der().clone(),
            peer_id,
        })
    }

    /// Uses a CA-signed certificate (private network mode) instead of the self-signed one. The
    /// certificate must carry this node's key.
    pub fn with_certificate(
        mut self,
        cert: CertificateDer<'static>,
    ) -> Result<Self, IdentityError> {
        if peer_id_of_certificate(&cert) != Some(self.peer_id) {
            return Err(IdentityError::CertificateMismatch);
        }
        self.cert = cert;
        Ok(self)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The self-signed certificate presented in every handshake.
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The peer id a certificate proves, if it parses.
pub fn peer_id_of_certificate(cert: &CertificateDer<'_>) -> Option<PeerId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(PeerId::from_public_key(parsed.public_key().raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_peer_id() {
        let id = Identity::generate().unwrap();
        assert_eq!(
            peer_id_of_certificate(&id.certificate()),
            Some(id.peer_id())
        );
    }

    #[test]
    fn identity_persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_generate(dir.path()).unwrap();
        let b = Identity::load_or_generate(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            a.peer_id(),
            Identity::load_or_generate(other.path()).unwrap().peer_id()
        );
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let err = Identity::load_or_generate(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::BadKey { .. }), "{err}");
        assert!(err.to_string().contains("move it away"));
    }
}
