//! Mutual TLS for Butter connections: both sides present self-signed certificates, and each side
//! checks that the certificate's key hashes to the peer id it expects (the dialler learns the
//! expected id from the server name it asks for; the listener accepts any valid key and reads the id
//! from it). ALPN `butter/1` is required on both sides.

use std::sync::Arc;

use butter_proto::{PeerId, wire::ALPN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::identity::{Identity, peer_id_of_certificate};

/// Server name used when dialling an address whose peer id is not known yet.
pub const ANY_PEER: &str = "any.butter";

/// The TLS server name that asks the verifier to insist on `id`.
pub fn server_name_for(id: Option<PeerId>) -> String {
    match id {
        Some(id) => {
            let hex = id.to_string();
            format!("{}.{}.id.butter", &hex[..32], &hex[32..])
        }
        None => ANY_PEER.to_string(),
    }
}

fn expected_from_server_name(name: &ServerName<'_>) -> Result<Option<PeerId>, rustls::Error> {
    let ServerName::DnsName(dns) = name else {
        return Err(rustls::Error::General(
            "butter dials by peer name, not IP".into(),
        ));
    };
    let s = dns.as_ref();
    if s == ANY_PEER {
        return Ok(None);
    }
    let hex = s
        .strip_suffix(".id.butter")
        .map(|h| h.replace('.', ""))
        .ok_or_else(|| rustls::Error::General(format!("unexpected server name {s}")))?;
    hex.parse::<PeerId>()
        .map(Some)
        .map_err(|e| rustls::Error::General(format!("bad peer id in server name: {e}")))
}

/// The crypto provider: rustls with ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks a presented certificate: it must parse, be the only one, and hash to `expected`.
fn check_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    expected: Option<PeerId>,
    ca: Option<&CertificateDer<'static>>,
) -> Result<PeerId, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "butter peers present exactly one certificate".into(),
        ));
    }
    if let Some(ca) = ca {
        if !crate::ca::issued_by(end_entity, ca) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
    }
    let got = peer_id_of_certificate(end_entity).ok_or(rustls::Error::InvalidCertificate(
        rustls::CertificateError::BadEncoding,
    ))?;
    match expected {
        Some(want) if want != got => Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(PeerIdMismatch {
                expected: want,
                got,
            }))),
        )),
        _ => Ok(got),
    }
}

/// The peer presented a key that does not match the id we dialled.
#[derive(Debug, thiserror::Error)]
#[error("peer id mismatch: expected {expected}, certificate is for {got}")]
pub struct PeerIdMismatch {
    /// The id we dialled.
    pub expected: PeerId,
    /// The id the certificate proves.
    pub got: PeerId,
}

#[derive(Debug)]
struct PeerVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    /// The network CA in private network mode.
    ca: Option<CertificateDer<'static>>,
}

impl PeerVerifier {
    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = expected_from_server_name(server_name)?;
        check_certificate(end_entity, intermediates, expected, self.ca.as_ref())?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates, None, self.ca.as_ref())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn verifier(ca: Option<CertificateDer<'static>>) -> Arc<PeerVerifier> {
    Arc::new(PeerVerifier {
        algorithms: provider().signature_verification_algorithms,
        ca,
    })
}

/// Builds the rustls server configuration for `identity` (`ca`: private network mode).
pub fn server_config(
    identity: &Identity,
    ca: Option<CertificateDer<'static>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier(ca))
        .with_single_cert(vec![identity.certificate()], identity.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Builds the rustls client configuration for `identity` (`ca`: private network mode).
pub fn client_config(
    identity: &Identity,
    ca: Option<CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier(ca))
        .with_client_auth_cert(vec![identity.certificate()], identity.private_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_round_trips_the_peer_id() {
        let id = Identity::generate().unwrap().peer_id();
        let name = ServerName::try_from(server_name_for(Some(id))).unwrap();
        assert_eq!(expected_from_server_name(&name).unwrap(), Some(id));
        let any = ServerName::try_from(ANY_PEER).unwrap();
        assert_eq!(expected_from_server_name(&any).unwrap(), None);
    }

    #[test]
    fn mismatched_certificate_is_refused() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert!(check_certificate(&a.certificate(), &[], Some(a.peer_id()), None).is_ok());
        let err = check_certificate(&a.certificate(), &[], Some(b.peer_id()), None).unwrap_err();
        assert!(err.to_string().contains("PeerIdMismatch"), "{err}");
    }
}
