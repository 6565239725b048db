//! The relay's configuration (`canopy relay --config relay.toml`). See configs/relay.toml.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tunnel_io::TransportSettings;

/// Whole relay config file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// `[relay]`: where to listen and how to introduce itself.
    pub relay: RelaySection,
    /// `[tls]`: the relay's certificate and the event CA that signs gateway certificates.
    pub tls: TlsSection,
    /// `[egress]`: which origins venue traffic may reach, and limits.
    pub egress: EgressSection,
    /// `[tunnel]`: QUIC transport settings.
    pub tunnel: TransportSettings,
    /// `[metrics]`: Prometheus endpoint.
    pub metrics: MetricsSection,
}

/// `[relay]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// UDP address for QUIC (HTTP/3).
    pub listen: SocketAddr,
    /// Name used in `Via` headers.
    pub name: String,
    /// Host names under which the relay answers requests itself (e.g. `/healthz`)
    /// instead of proxying them.
    pub server_names: Vec<String>,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4433)),
            name: "canopy-relay".into(),
            server_names: vec!["localhost".into()],
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Relay certificate chain (PEM), issued by the event CA (`canopy certs init`).
    pub cert: PathBuf,
    /// Relay private key (PEM).
    pub key: PathBuf,
    /// Event CA certificate (PEM): gateways must present a certificate it signed.
    pub ca: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: "certs/relay.pem".into(),
            key: "certs/relay.key".into(),
            ca: "certs/ca.pem".into(),
        }
    }
}

/// `[egress]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSection {
    /// Allowlist of `host[:port]` patterns (see `tunnel::allowlist`). Empty refuses all.
    pub allow: Vec<String>,
    /// TCP (and TLS) connect timeout towards an origin, ms.
    pub connect_timeout_ms: u64,
    /// Time from the end of the request body to the origin's response headers, ms.
    pub response_timeout_ms: u64,
    /// A CONNECT tunnel with no bytes either way for this long is closed, ms.
    pub tunnel_idle_timeout_ms: u64,
    /// Largest request body forwarded, bytes (0 = unlimited).
    pub max_request_body_bytes: u64,
    /// Largest request header section accepted from a gateway, bytes.
    pub max_header_bytes: u64,
    /// Extra CA certificates (PEM) trusted for https origins, besides the public roots.
    pub extra_ca: Option<PathBuf>,
}

impl Default for EgressSection {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 30_000,
            tunnel_idle_timeout_ms: 300_000,
            max_request_body_bytes: 0,
            max_header_bytes: 16 * 1024,
            extra_ca: None,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// TCP address of the Prometheus endpoint (`/metrics`); unset = off.
    pub listen: Option<SocketAddr>,
}

impl RelayConfig {
    /// Checks what serde cannot: returns (dotted key, message) per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err((i, e)) = tunnel::Allowlist::parse(&self.egress.allow) {
            errs.push((format!("egress.allow[{i}]"), e.to_string()));
        }
        if self.egress.max_header_bytes < 1024 {
            errs.push((
                "egress.max_header_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.egress.connect_timeout_ms == 0 {
            errs.push((
                "egress.connect_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.egress.response_timeout_ms == 0 {
            errs.push((
                "egress.response_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        if self.relay.name.trim().is_empty() || self.relay.name.contains(char::is_whitespace) {
            errs.push((
                "relay.name".into(),
                "must be a single token without spaces".into(),
            ));
        }
        errs
    }
}
