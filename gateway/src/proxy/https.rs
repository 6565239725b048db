//! HTTPS at the venue edge: for the `[[sites]]` marked `tls`, the gateway answers TLS on
//! `[proxy] https_listen` with the certificate of the name the device asks for (SNI). A
//! name it has no site for, or no name at all, is refused in the handshake. Each site's
//! certificate is watched like the gateway's own (a next pair beside it is taken up by
//! itself). Inside, requests go to that site as over plain HTTP: classified, tunnelled.

use super::*;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tunnel_io::own_cert::OwnCert;

/// How long a device has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sites' certificates by name.
#[derive(Debug)]
struct SiteCerts(HashMap<String, Arc<OwnCert>>);

impl ResolvesServerCert for SiteCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match self.0.get(&name) {
            Some(c) => Some(c.current()),
            None => {
                metrics::counter!("canopy_gateway_https_refused_total", "why" => "unknown name")
                    .increment(1);
                debug!(%name, "HTTPS for a name without a tls site: refused");
                None
            }
        }
    }
}

/// The HTTPS listener and what it serves.
pub(crate) struct Https {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Vec<Arc<OwnCert>>,
}

impl Https {
    /// Loads every tls site's certificate and binds `addr`.
    pub(crate) async fn bind(addr: SocketAddr, sites: &[Site]) -> Result<Self, GatewayError> {
        let mut by_name = HashMap::new();
        for (i, site) in sites.iter().enumerate().filter(|(_, s)| s.tls) {
            let (cert, key) = site.tls_files();
            let own = tunnel_io::tls::own_cert(&cert, &key)
                .map_err(|e| GatewayError::Config(format!("sites[{i}].cert: {e}")))?;
            by_name.insert(site.host.to_ascii_lowercase(), own);
        }
        let certs = by_name.values().cloned().collect();
        let mut cfg = rustls::ServerConfig::builder_with_provider(tunnel_io::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| GatewayError::Config(format!("proxy.https_listen: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SiteCerts(by_name)));
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        Ok(Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            certs,
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves devices until the task is dropped.
    pub(crate) async fn run(self, door: DeviceDoor) {
        info!(addr = ?self.listener.local_addr().ok(), "sites listening (HTTPS)");
        for c in &self.certs {
            tokio::spawn(c.clone().run());
        }
        loop {
            let (tcp, peer) = tunnel_io::listen::accept(&self.listener).await;
            let acceptor = self.acceptor.clone();
            let door = door.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "HTTPS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "HTTPS handshake timed out");
                        return;
                    }
                };
                // the resolver let only known names through
                let Some(name) = tls
                    .get_ref()
                    .1
                    .server_name()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                else {
                    return;
                };
                door.serve_entry(tls, peer, Entry::Site(name.into())).await
            });
        }
    }
}
