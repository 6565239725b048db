//! Test helper: a self-signed `localhost` certificate, as quinn configs for a loopback
//! server and a client that trusts it.

use std::sync::Arc;

/// A server config with a fresh self-signed certificate for `localhost`, and a client
/// config that trusts it.
pub(crate) fn loopback_configs() -> (quinn::ServerConfig, quinn::ClientConfig) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert = key.cert.der().clone();
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der());
    let server =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], der.into()).expect("tls");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client tls");
    (server, client)
}
