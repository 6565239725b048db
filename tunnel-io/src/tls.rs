//! TLS for the tunnel: the relay requires a client certificate issued by the event CA;
//! gateways present theirs and trust only that CA. rustls with the ring provider only.

use crate::own_cert::OwnCert;
use crate::revoked::{Revoked, RevokingVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors building TLS configuration; Display names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls config.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// TLS material of one end: its own certificate (taken up from disk again when it
/// changes, see [`OwnCert`]) and the event CA it trusts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// This end's certificate and key.
    pub own: Arc<OwnCert>,
    /// Event CA certificates.
    pub ca: Vec<CertificateDer<'static>>,
}

impl TlsFiles {
    /// Loads certificate, key and CA from PEM files; the certificate and key are looked
    /// at again while the process runs (with the next pair beside them).
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            own: own_cert(cert, key)?,
            ca: certs_file(ca)?,
        })
    }

    /// Parses PEM text; the paths are only used in error messages.
    pub fn from_pem(
        cert: &[u8],
        cert_path: &Path,
        key: &[u8],
        key_path: &Path,
        ca: &[u8],
        ca_path: &Path,
    ) -> Result<Self, TlsError> {
        let certified = certified_key(cert, cert_path, key, key_path)?;
        let ca = certs(ca, ca_path)?;
        Ok(Self {
            own: OwnCert::fixed(Arc::new(certified)),
            ca,
        })
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(roots)
    }

    /// rustls server config for the relay: TLS 1.3, ALPN h3, client certificate required
    /// and not on the `revoked` list.
    pub fn relay_rustls(&self, revoked: Arc<Revoked>) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()?;
        let verifier = Arc::new(RevokingVerifier { inner, revoked });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.own.clone());
        cfg.alpn_protocols = vec![tunnel::wire::ALPN_H3.to_vec()];
        // no resumption: a resumed session keeps the certificate it was made with unseen,
        // and every handshake must see it (revoked, expired). Gateways send no early data,
        // so a full handshake costs them no round trip.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }

    /// rustls server config for viewers: TLS 1.3, ALPN `alpn`, no client certificate.
    pub fn viewer_rustls(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.own.clone());
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(cfg)
    }

    /// quinn server config for viewers (HTTP/3, no client certificate, quinn's own
    /// congestion control: a viewer is an ordinary client).
    pub fn viewer_quic(&self) -> Result<quinn::ServerConfig, TlsError> {
        let mut tls = self.viewer_rustls(&[tunnel::wire::ALPN_H3])?;
        tls.max_early_data_size = 0;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// quinn server config for the relay.
    pub fn relay_quic(
        &self,
        transport: Arc<quinn::TransportConfig>,
        revoked: Arc<Revoked>,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(self.relay_rustls(revoked)?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(transport);
        Ok(cfg)
    }

    /// quinn client config for a gateway: presents its certificate, trusts only the event CA.
    pub fn gateway_quic(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_cert_resolver(self.own.clone());
        cfg.alpn_protocols = vec![tunnel::wire::ALPN_H3.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport);
        Ok(client)
    }
}

/// The one crypto provider Canopy uses: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key (PEM text), checked to belong together; the paths are
/// only used in error messages.
pub fn certified_key(
    cert: &[u8],
    cert_path: &Path,
    key: &[u8],
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let cert_chain = certs(cert, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        path: key_path.into(),
        what: format!("no private key: {e}"),
    })?;
    CertifiedKey::from_der(cert_chain, key, &provider()).map_err(|e| TlsError::Pem {
        path: key_path.into(),
        what: format!("not the key of {}: {e}", cert_path.display()),
    })
}

/// Reads a certificate and its key from files, watched while the process runs (see
/// [`OwnCert`]).
pub fn own_cert(cert: &Path, key: &Path) -> Result<Arc<OwnCert>, TlsError> {
    let initial = certified_key(&read(cert)?, cert, &read(key)?, key)?;
    Ok(OwnCert::watched(cert, key, Arc::new(initial)))
}

/// Bytes as lower-case hex: how serials and fingerprints are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads all certificates of a PEM file's text.
pub fn certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let out = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            what: format!("bad certificate PEM: {e}"),
        })?;
    if out.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "no certificate found".into(),
        });
    }
    Ok(out)
}

/// Reads all certificates of a PEM file.
pub fn certs_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs(&read(path)?, path)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}
