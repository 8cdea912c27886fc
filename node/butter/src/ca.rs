//! Private network mode: a network CA signs every member's certificate; members accept only peers
//! whose certificate it signed. The peer id stays the hash of the node's own key, so identities
//! and the rest of the protocol are unchanged.
//!
//! `butter-node ca init --dir ca/` creates `ca.key` and `ca.crt`; `butter-node ca sign --ca ca/
//! --data-dir node1/` issues `node1/node.crt` for the key in `node1/node.key` (creating the key if
//! needed) and copies `ca.crt` beside it. A node runs in private mode when `network_ca` points at
//! the CA certificate. Keys are generated on the operator's machine and never committed.

use std::fs;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;

use crate::identity::KEY_FILE;

/// File name of the CA's private key.
pub const CA_KEY: &str = "ca.key";
/// File name of the CA's certificate.
pub const CA_CERT: &str = "ca.crt";
/// File name of a node's CA-signed certificate, in its data directory.
pub const NODE_CERT: &str = "node.crt";

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Key or certificate handling failed.
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    /// The CA already exists.
    #[error("{0} already exists; refusing to overwrite a network CA")]
    Exists(PathBuf),
    /// The certificate is not a usable CA certificate.
    #[error("{0} is not a PEM certificate")]
    BadCert(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    fs::write(path, text).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

/// Creates a network CA in `dir`.
pub fn init(dir: &Path, name: &str) -> Result<PathBuf, CaError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        return Err(CaError::Exists(key_path));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("butter network CA {name}"),
    );
    let cert = params.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    let cert_path = dir.join(CA_CERT);
    fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok(cert_path)
}

/// Issues a certificate for the node key in `data_dir` (created if missing), signed by the CA in
/// `ca_dir`, and copies the CA certificate beside it. Returns the node's peer id.
pub fn sign(ca_dir: &Path, data_dir: &Path) -> Result<butter_proto::PeerId, CaError> {
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?)?;
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
    let ca = rcgen::CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
    // The node's own key (the same one its peer id comes from).
    let identity =
        crate::identity::Identity::load_or_generate(data_dir).map_err(|e| CaError::Io {
            path: data_dir.join(KEY_FILE),
            source: std::io::Error::other(e.to_string()),
        })?;
    let key_path = data_dir.join(KEY_FILE);
    let node_key =
        rcgen::KeyPair::from_pem(&fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
    let mut params = rcgen::CertificateParams::new(vec!["butter".to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.peer_id().to_string());
    let cert = params.signed_by(&node_key, &ca, &ca_key)?;
    let out = data_dir.join(NODE_CERT);
    fs::write(&out, cert.pem()).map_err(io(&out))?;
    let copy = data_dir.join(CA_CERT);
    fs::write(&copy, ca_pem).map_err(io(&copy))?;
    Ok(identity.peer_id())
}

/// Reads a PEM certificate file into DER.
pub fn read_cert(path: &Path) -> Result<CertificateDer<'static>, CaError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).map_err(|_| CaError::BadCert(path.into()))
}

/// Whether `cert` was issued by the CA whose certificate is `ca` (signature and validity).
pub fn issued_by(cert: &CertificateDer<'_>, ca: &CertificateDer<'_>) -> bool {
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca.as_ref()) else {
        return false;
    };
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    c.issuer() == ca.subject()
        && c.validity().is_valid()
        && c.verify_signature(Some(ca.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_certificates_verify_and_others_do_not() {
        let ca_dir = tempfile::tempdir().unwrap();
        init(ca_dir.path(), "test").unwrap();
        assert!(matches!(
            init(ca_dir.path(), "again"),
            Err(CaError::Exists(_))
        ));
        let node_dir = tempfile::tempdir().unwrap();
        let id = sign(ca_dir.path(), node_dir.path()).unwrap();
        let ca = read_cert(&ca_dir.path().join(CA_CERT)).unwrap();
        let cert = read_cert(&node_dir.path().join(NODE_CERT)).unwrap();
        assert!(issued_by(&cert, &ca));
        assert_eq!(crate::identity::peer_id_of_certificate(&cert), Some(id));
        // A self-signed node certificate, or one from another CA, does not pass.
        let stranger = crate::identity::Identity::generate().unwrap();
        assert!(!issued_by(&stranger.certificate(), &ca));
        let other_ca = tempfile::tempdir().unwrap();
        init(other_ca.path(), "other").unwrap();
        let other = read_cert(&other_ca.path().join(CA_CERT)).unwrap();
        assert!(!issued_by(&cert, &other));
    }
}
