//! Egress: connecting to allowlisted origins (TCP, TLS for https) on behalf of gateways.

use crate::config::EgressSection;
use crate::error::Refusal;
use http::StatusCode;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tunnel::Allowlist;

/// An established connection to an origin.
pub(crate) enum OriginStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// From an [`OriginDialer`] (plain HTTP only).
    Dialed(Box<dyn OriginIo>),
}

/// A byte stream to an origin that is not a kernel socket.
pub trait OriginIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> OriginIo for T {}

/// A connection being dialed.
pub type Dialing<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Box<dyn OriginIo>>> + Send + 'a>,
>;

/// Opens origin connections instead of the kernel's TCP, after the allowlist and address
/// checks (the in-process harness reaches its in-memory origins so).
pub trait OriginDialer: Send + Sync {
    /// A connection to `addr`.
    fn dial(&self, addr: SocketAddr) -> Dialing<'_>;
}

pub(crate) struct Egress {
    allow: Allowlist,
    connect_timeout: Duration,
    tls: tokio_rustls::TlsConnector,
    dialer: Option<Arc<dyn OriginDialer>>,
}

impl Egress {
    pub(crate) fn new(cfg: &EgressSection) -> Result<Self, String> {
        let allow =
            Allowlist::parse(&cfg.allow).map_err(|(i, e)| format!("egress.allow[{i}]: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &cfg.extra_ca {
            let pem = std::fs::read(path)
                .map_err(|e| format!("egress.extra_ca {}: {e}", path.display()))?;
            for c in tunnel_io::tls::certs(&pem, path).map_err(|e| e.to_string())? {
                roots
                    .add(c)
                    .map_err(|e| format!("egress.extra_ca {}: {e}", path.display()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(tunnel_io::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            allow,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            dialer: None,
        })
    }

    /// Origin connections come from `dialer` instead of the kernel.
    pub(crate) fn with_dialer(mut self, dialer: Option<Arc<dyn OriginDialer>>) -> Self {
        self.dialer = dialer;
        self
    }

    /// Whether `host:port` is on the allowlist (its addresses are checked when a
    /// connection is made; a pooled connection was).
    pub(crate) fn permits(&self, host: &str, port: u16) -> Result<(), Refusal> {
        self.allow
            .check(host, port)
            .map(|_| ())
            .map_err(|d| Refusal::new(StatusCode::FORBIDDEN, d.to_string()))
    }

    /// Checks the allowlist, resolves, refuses non-public addresses the allowlist does not
    /// name, and connects (with TLS when `tls`).
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        tls: bool,
    ) -> Result<OriginStream, Refusal> {
        let grant = self
            .allow
            .check(host, port)
            .map_err(|d| Refusal::new(StatusCode::FORBIDDEN, d.to_string()))?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let resolved: Vec<SocketAddr> =
            tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| {
                    Refusal::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("resolving {host} timed out"),
                    )
                })?
                .map_err(|e| {
                    Refusal::new(
                        StatusCode::BAD_GATEWAY,
                        format!("cannot resolve {host}: {e}"),
                    )
                })?
                .collect();
        let mut first_denial = None;
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| match Allowlist::check_addr(grant, host, a.ip()) {
                Ok(()) => true,
                Err(d) => {
                    first_denial.get_or_insert(d);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(match first_denial {
                Some(d) => Refusal::new(StatusCode::FORBIDDEN, d.to_string()),
                None => Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("{host} resolved to no address"),
                ),
            });
        }
        if let Some(dialer) = &self.dialer {
            let unreached = |why: String| Refusal::new(StatusCode::BAD_GATEWAY, why);
            if tls {
                return Err(unreached(format!("no TLS to the dialed origin {host}")));
            }
            let dialed = tokio::time::timeout(self.connect_timeout, dialer.dial(allowed[0]))
                .await
                .map_err(|_| unreached(format!("connecting to {host}:{port} timed out")))?
                .map_err(|e| unreached(format!("cannot connect to {host}:{port}: {e}")))?;
            return Ok(OriginStream::Dialed(dialed));
        }
        let tcp = tokio::time::timeout(self.connect_timeout, connect_any(&allowed))
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("connecting to {host}:{port} timed out"),
                )
            })?
            .map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot connect to {host}:{port}: {e}"),
                )
            })?;
        let _ = tcp.set_nodelay(true);
        if !tls {
            return Ok(OriginStream::Plain(tcp));
        }
        let name = ServerName::try_from(bare.to_string()).map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("bad TLS server name {host}"),
            )
        })?;
        let stream = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("TLS handshake with {host} timed out"),
                )
            })?
            .map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("TLS handshake with {host} failed: {e}"),
                )
            })?;
        Ok(OriginStream::Tls(Box::new(stream)))
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}
