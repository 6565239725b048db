//! TLS towards the NATS servers: the CA that signed them and the relay's client
//! certificate, built here so a missing or wrong file stops the relay at start with the key
//! and the file named, instead of failing every connection attempt in the background.

use crate::config::JetStreamSection;
use std::sync::Arc;
use tunnel_io::own_cert::OwnCert;
use tunnel_io::tls::TlsError;

/// Why the section's TLS files could not be used: the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("jetstream.{key}: {source}")]
pub(crate) struct NatsTlsError {
    key: &'static str,
    #[source]
    source: TlsError,
}

fn at(key: &'static str) -> impl FnOnce(TlsError) -> NatsTlsError {
    move |source| NatsTlsError { key, source }
}

/// The TLS a section asks for.
#[derive(Debug)]
pub(crate) struct NatsTls {
    /// For async-nats.
    pub(crate) config: rustls::ClientConfig,
    /// The client pair, to be watched on disk (`OwnCert::run`) so a rotated pair is used
    /// at the next reconnect.
    pub(crate) own: Option<Arc<OwnCert>>,
}

/// The rustls client config the section asks for; `None` when it names no TLS file (a
/// `tls://` server then gets async-nats's own, with the system's roots). With a client
/// pair and no CA the servers are checked against the public roots (webpki's, as the
/// relay's origins are).
pub(crate) fn client_config(cfg: &JetStreamSection) -> Result<Option<NatsTls>, NatsTlsError> {
    if cfg.tls_ca.is_none() && cfg.tls_cert.is_none() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca {
        Some(path) => {
            for c in tunnel_io::tls::certs_file(path).map_err(at("tls_ca"))? {
                roots.add(c).map_err(|e| at("tls_ca")(e.into()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let asked_by = if cfg.tls_ca.is_some() {
        "tls_ca"
    } else {
        "tls_cert"
    };
    let builder = rustls::ClientConfig::builder_with_provider(tunnel_io::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| at(asked_by)(e.into()))?
        .with_root_certificates(roots);
    Ok(Some(match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let own = tunnel_io::tls::own_cert(cert, key).map_err(|e| {
                let at_fault = match &e {
                    TlsError::Read { path, .. } | TlsError::Pem { path, .. } if path == key => {
                        "tls_key"
                    }
                    _ => "tls_cert",
                };
                at(at_fault)(e)
            })?;
            NatsTls {
                config: builder.with_client_cert_resolver(own.clone()),
                own: Some(own),
            }
        }
        _ => NatsTls {
            config: builder.with_no_client_auth(),
            own: None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_leave_tls_to_the_server_address() {
        assert!(client_config(&JetStreamSection::default())
            .expect("nothing to read")
            .is_none());
    }

    #[test]
    fn a_missing_or_empty_ca_names_its_key_and_file() {
        let dir = std::env::temp_dir().join(format!("canopy-nats-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        let cfg = JetStreamSection {
            tls_ca: Some(missing.clone()),
            ..Default::default()
        };
        let e = client_config(&cfg).expect_err("no file").to_string();
        assert!(e.starts_with("jetstream.tls_ca: "), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let cfg = JetStreamSection {
            tls_ca: Some(empty),
            ..Default::default()
        };
        let e = client_config(&cfg).expect_err("no certificate").to_string();
        assert!(e.contains("no certificate found"), "{e}");
        // a client pair whose key is missing names the key
        let cert = dir.join("client.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let cfg = JetStreamSection {
            tls_cert: Some(cert),
            tls_key: Some(dir.join("client.key")),
            ..Default::default()
        };
        let e = client_config(&cfg).expect_err("no key").to_string();
        assert!(e.starts_with("jetstream.tls_key: cannot read "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
