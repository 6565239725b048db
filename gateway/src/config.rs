//! The gateway's configuration (`canopy gateway --config gateway.toml`). See configs/gateway.toml.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tunnel::{ClassRule, TrafficClass};
use tunnel_io::TransportSettings;

/// Whole gateway config file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `[gateway]`: identity.
    pub gateway: GatewaySection,
    /// `[relay]`: where the relay is.
    pub relay: RelayTarget,
    /// `[tls]`: the gateway's client certificate and the event CA.
    pub tls: TlsSection,
    /// `[proxy]`: the venue-facing HTTP proxy.
    pub proxy: ProxySection,
    /// `[[sites]]`: host names venue devices call that the gateway maps to origins.
    pub sites: Vec<Site>,
    /// `[[classes]]`: classification rules, first match wins, default `bulk`.
    pub classes: Vec<ClassRule>,
    /// `[tunnel]`: QUIC transport settings.
    pub tunnel: TransportSettings,
    /// `[metrics]`: Prometheus endpoint.
    pub metrics: MetricsSection,
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Name used in `Via` headers and logs.
    pub name: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            name: "canopy-gateway".into(),
        }
    }
}

/// `[relay]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayTarget {
    /// Relay address, `host:port` (UDP).
    pub addr: String,
    /// TLS name of the relay certificate; defaults to the host part of `addr`.
    pub server_name: Option<String>,
    /// Local address the uplink's QUIC socket binds to.
    pub bind: SocketAddr,
    /// First reconnect delay after the connection drops, ms (doubles up to `reconnect_max_ms`).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, ms.
    pub reconnect_max_ms: u64,
}

impl Default for RelayTarget {
    fn default() -> Self {
        Self {
            addr: "localhost:4433".into(),
            server_name: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            reconnect_min_ms: 100,
            reconnect_max_ms: 5_000,
        }
    }
}

impl RelayTarget {
    /// The TLS server name to verify.
    pub fn tls_name(&self) -> String {
        self.server_name.clone().unwrap_or_else(|| {
            let host = self
                .addr
                .rsplit_once(':')
                .map_or(self.addr.as_str(), |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
    }
}

/// `[tls]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// Gateway client certificate (PEM), issued by the event CA (`canopy certs init`).
    pub cert: PathBuf,
    /// Gateway private key (PEM).
    pub key: PathBuf,
    /// Event CA certificate (PEM): the only CA trusted for the relay.
    pub ca: PathBuf,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: "certs/gateway.pem".into(),
            key: "certs/gateway.key".into(),
            ca: "certs/ca.pem".into(),
        }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// TCP address venue devices connect to.
    pub listen: SocketAddr,
    /// Largest request header section (request line + headers), bytes; over it: 431.
    pub max_header_bytes: usize,
    /// Largest request body, bytes (0 = unlimited); over it: 413.
    pub max_body_bytes: u64,
    /// Time to the response headers through the tunnel, counted from the end of the
    /// request body, ms; over it: 504.
    pub response_timeout_ms: u64,
    /// A CONNECT tunnel with no bytes either way for this long is closed, ms.
    pub tunnel_idle_timeout_ms: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3128)),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 0,
            response_timeout_ms: 30_000,
            tunnel_idle_timeout_ms: 300_000,
        }
    }
}

/// `[[sites]]`: a name venue devices call directly (reverse proxy).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Host name (as in the `Host` header), e.g. `bids.venue.example`.
    pub host: String,
    /// Origin the relay forwards to, e.g. `https://bids.example.com` (scheme://host[:port]).
    pub origin: String,
    /// Class of every request to this site; otherwise `[[classes]]` rules decide.
    #[serde(default)]
    pub class: Option<TrafficClass>,
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// TCP address of the Prometheus endpoint (`/metrics`); unset = off.
    pub listen: Option<SocketAddr>,
}

impl GatewayConfig {
    /// Checks what serde cannot: returns (dotted key, message) per problem.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if !self.relay.addr.contains(':') {
            errs.push(("relay.addr".into(), "must be host:port".into()));
        } else if let Some((_, port)) = self.relay.addr.rsplit_once(':') {
            if port.parse::<u16>().is_err() {
                errs.push(("relay.addr".into(), format!("bad port {port:?}")));
            }
        }
        if self.proxy.max_header_bytes < 1024 {
            errs.push((
                "proxy.max_header_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.relay.reconnect_min_ms == 0
            || self.relay.reconnect_max_ms < self.relay.reconnect_min_ms
        {
            errs.push((
                "relay.reconnect_max_ms".into(),
                "must be >= reconnect_min_ms > 0".into(),
            ));
        }
        for (i, site) in self.sites.iter().enumerate() {
            match site.origin.parse::<http::Uri>() {
                Ok(u)
                    if matches!(u.scheme_str(), Some("http" | "https"))
                        && u.authority().is_some() =>
                {
                    if u.path_and_query().is_some_and(|p| p.as_str() != "/") {
                        errs.push((
                            format!("sites[{i}].origin"),
                            "must be scheme://host[:port] without a path".into(),
                        ));
                    }
                }
                _ => errs.push((
                    format!("sites[{i}].origin"),
                    "must be http:// or https:// followed by host[:port]".into(),
                )),
            }
            if site.host.is_empty() || site.host.contains('/') {
                errs.push((format!("sites[{i}].host"), "must be a host name".into()));
            }
        }
        for (i, rule) in self.classes.iter().enumerate() {
            if rule.host.is_none() && rule.path_prefix.is_none() && rule.method.is_none() {
                errs.push((
                    format!("classes[{i}]"),
                    "a rule needs host, path_prefix or method".into(),
                ));
            }
        }
        errs
    }
}
