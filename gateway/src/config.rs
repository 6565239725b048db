//! The gateway's configuration (`canopy gateway --config gateway.toml`). See configs/gateway.toml.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use tunnel::path::{LinkKind, Tier};
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
    /// `[[uplinks]]`: the venue's uplinks, bonded. None: one uplink bound to `relay.bind`.
    pub uplinks: Vec<UplinkConfig>,
    /// `[[sites]]`: host names venue devices call that the gateway maps to origins.
    pub sites: Vec<Site>,
    /// `[[classes]]`: classification rules, first match wins, default `bulk`.
    pub classes: Vec<ClassRule>,
    /// `[tunnel]`: QUIC transport settings.
    pub tunnel: TransportSettings,
    /// `[metrics]`: Prometheus endpoint.
    pub metrics: MetricsSection,
    /// `[live]`: packaging and on-site LL-HLS of the cameras, the RTSP push listener.
    pub live: LiveSection,
    /// `[[cameras]]`: RTSP cameras, pulled (with `url`) or pushing to the listener.
    pub cameras: Vec<CameraConfig>,
    /// `[bids]`: the journal of bids and check-ins, and how long a device waits.
    pub bids: BidsSection,
    /// `[checkin]`: tokens the gateway checks at the door, offline.
    pub checkin: CheckinSection,
}

/// `[checkin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckinSection {
    /// The organizer's Ed25519 public key, base64url (`canopy tokens keygen` prints it);
    /// unset = check-in off.
    pub public_key: Option<String>,
    /// The event's slug: tokens for another event are refused.
    pub event: String,
    /// Let a used token, or an attendee already inside, in again (marked as re-entry).
    pub reentry: bool,
    /// Clock difference tolerated at not-before and expiry, s.
    pub leeway_s: u64,
    /// Where each check-in is posted (JSON, with an `Idempotency-Key`) through the relay,
    /// when links allow: the organizer's ticketing system (must be in the relay's egress
    /// allowlist); unset = check-ins stay on the gateway.
    pub sync_url: Option<String>,
}

impl Default for CheckinSection {
    fn default() -> Self {
        Self {
            public_key: None,
            event: String::new(),
            reentry: false,
            leeway_s: 60,
            sync_url: None,
        }
    }
}

/// `[bids]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BidsSection {
    /// The journal file: every bid and check-in is on disk here before its device gets an
    /// answer, and is sent again after a restart until it has an outcome. Relative to the
    /// config file.
    pub journal: PathBuf,
    /// A request no path delivers within this long is answered `202 Accepted` with a
    /// receipt, and delivered later, ms.
    pub deadline_ms: u64,
}

impl Default for BidsSection {
    fn default() -> Self {
        Self {
            journal: "bids.journal".into(),
            deadline_ms: 2000,
        }
    }
}

/// `[live]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSection {
    /// LL-HLS part duration target, ms.
    pub part_ms: u64,
    /// Segment duration target, ms (segments are cut on the first keyframe after it).
    pub segment_ms: u64,
    /// Bytes of recent parts kept per rendition (the on-site ring).
    pub ring_bytes: usize,
    /// Segments listed in each media playlist.
    pub playlist_segments: usize,
    /// RTSP listener for encoders that push (ANNOUNCE/RECORD over TCP); unset = off.
    pub rtsp_listen: Option<SocketAddr>,
    /// Accept pushes to names not declared in `[[cameras]]`.
    pub accept_any_push: bool,
    /// Directory where parts leaving the ring are kept (for backfill after an outage);
    /// unset = off.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Bytes of spooled parts per rendition.
    pub spool_bytes: u64,
    /// Origins of web pages allowed to play the on-site LL-HLS (CORS), e.g.
    /// `["https://screens.venue.example"]`; `"*"` allows any. Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Send every camera to the relay (its viewers, its recording).
    pub contribute: bool,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            part_ms: 200,
            segment_ms: 1000,
            ring_bytes: 32 << 20,
            playlist_segments: 7,
            rtsp_listen: None,
            accept_any_push: false,
            spool_dir: None,
            spool_bytes: 1 << 30,
            cors_origins: Vec::new(),
            contribute: true,
        }
    }
}

impl LiveSection {
    /// The renditions' settings.
    pub fn rendition(&self) -> segmenter::RenditionConfig {
        segmenter::RenditionConfig {
            segmenter: segmenter::SegmenterConfig {
                part_target: std::time::Duration::from_millis(self.part_ms),
                segment_target: std::time::Duration::from_millis(self.segment_ms),
            },
            ring_bytes: self.ring_bytes,
            playlist_segments: self.playlist_segments,
        }
    }
}

/// `[[cameras]]`: one camera.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Name in URLs (`/live/<name>/index.m3u8`, `rtsp://<gateway>:8554/<name>`), logs, metrics.
    pub name: String,
    /// RTSP URL to pull (`rtsp://host:554/path`, TCP interleaved). Unset: the camera pushes.
    #[serde(default)]
    pub url: Option<String>,
    /// A second, smaller stream of the same camera (for the low-bandwidth mode).
    #[serde(default)]
    pub substream_url: Option<String>,
    /// RTSP user (or put it in the URL). For a camera that pushes: the user encoders must
    /// authenticate as (RTSP Basic).
    #[serde(default)]
    pub username: Option<String>,
    /// RTSP password.
    #[serde(default)]
    pub password: Option<String>,
    /// When the uplinks cannot carry every camera, cameras of lower priority step down to
    /// a lower level first and back up last.
    #[serde(default)]
    pub priority: i32,
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
            reconnect_max_ms: 500,
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

/// `[[uplinks]]`: one uplink (one QUIC connection to the relay).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Name in logs, status and metrics, e.g. `cellular`.
    pub name: String,
    /// `cellular`, `wifi`, `satellite` or `ethernet`.
    #[serde(default)]
    pub kind: LinkKind,
    /// An interface name (`wwan0`; the socket is bound to it with SO_BINDTODEVICE, which
    /// needs root or CAP_NET_RAW) or a local IP address (`192.168.8.10`).
    pub bind: String,
    /// `primary`, `secondary` or `backup` (carries traffic only when the others cannot;
    /// bids and check-ins may always use it).
    #[serde(default)]
    pub tier: Tier,
    /// Daily data cap in bytes (both directions): a warning at 75%; at 100% only bid and
    /// check-in traffic uses the uplink.
    #[serde(default)]
    pub cap_bytes_per_day: Option<u64>,
    /// Classes this uplink may carry (default: all).
    #[serde(default)]
    pub classes: Option<Vec<TrafficClass>>,
    /// The relay address to use over this uplink, if not `relay.addr` (a relay with one
    /// address per carrier, or a link emulator in front of it).
    #[serde(default)]
    pub relay: Option<String>,
}

/// Where an uplink's socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTo {
    /// A local address (port 0 unless given).
    Addr(SocketAddr),
    /// An interface, by name.
    Device(String),
}

impl UplinkConfig {
    /// Parses `bind`.
    pub fn bind_to(&self) -> Result<BindTo, String> {
        let b = self.bind.trim();
        if let Ok(a) = b.parse::<SocketAddr>() {
            return Ok(BindTo::Addr(a));
        }
        if let Ok(ip) = b.parse::<std::net::IpAddr>() {
            return Ok(BindTo::Addr(SocketAddr::new(ip, 0)));
        }
        let valid = !b.is_empty()
            && b.len() < 16
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'@'));
        if valid {
            Ok(BindTo::Device(b.to_string()))
        } else {
            Err(format!(
                "{b:?} is neither an IP address nor an interface name (at most 15 characters)"
            ))
        }
    }
}

impl GatewayConfig {
    /// The uplinks to run: the configured ones, or one bound to `relay.bind`.
    pub fn effective_uplinks(&self) -> Vec<UplinkConfig> {
        if !self.uplinks.is_empty() {
            return self.uplinks.clone();
        }
        vec![UplinkConfig {
            name: "uplink".into(),
            kind: LinkKind::Ethernet,
            bind: self.relay.bind.to_string(),
            tier: Tier::Primary,
            cap_bytes_per_day: None,
            classes: None,
            relay: None,
        }]
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
    /// A request body with no bytes for this long is cut (a stalled upload frees its
    /// stream and its device's slot), ms.
    pub body_idle_timeout_ms: u64,
    /// Open connections per device (source address); over it: 429 and close.
    pub max_connections_per_device: u32,
    /// Open CONNECT tunnels per device; over it: 429.
    pub max_tunnels_per_device: u32,
    /// Requests in flight per device, bids and check-ins apart; over it: 429.
    pub max_requests_per_device: u32,
    /// Bids and check-ins in flight per device; over it: 429.
    pub max_transactions_per_device: u32,
    /// Tunnels and requests in flight across all devices; the rest of each uplink
    /// connection's 16,384 streams is kept for bids and check-ins. Over it: 429.
    pub max_shared_streams: u32,
}

impl ProxySection {
    /// The per-device limits.
    pub fn device_limits(&self) -> crate::devices::DeviceLimits {
        crate::devices::DeviceLimits {
            connections: self.max_connections_per_device,
            tunnels: self.max_tunnels_per_device,
            requests: self.max_requests_per_device,
            transactions: self.max_transactions_per_device,
            shared: self.max_shared_streams,
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3128)),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 0,
            response_timeout_ms: 30_000,
            tunnel_idle_timeout_ms: 300_000,
            body_idle_timeout_ms: 30_000,
            max_connections_per_device: 512,
            max_tunnels_per_device: 256,
            max_requests_per_device: 256,
            max_transactions_per_device: 64,
            max_shared_streams: 15_360,
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
        let mut names = std::collections::HashSet::new();
        if self.uplinks.len() > 16 {
            errs.push(("uplinks".into(), "at most 16 uplinks".into()));
        }
        for (i, u) in self.uplinks.iter().enumerate() {
            if u.name.is_empty()
                || !u
                    .name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
            {
                errs.push((
                    format!("uplinks[{i}].name"),
                    "must be letters, digits, - or _".into(),
                ));
            } else if !names.insert(u.name.clone()) {
                errs.push((
                    format!("uplinks[{i}].name"),
                    format!("{:?} is used twice", u.name),
                ));
            }
            if let Err(e) = u.bind_to() {
                errs.push((format!("uplinks[{i}].bind"), e));
            }
            if u.cap_bytes_per_day == Some(0) {
                errs.push((
                    format!("uplinks[{i}].cap_bytes_per_day"),
                    "must be > 0 (leave it out for no cap)".into(),
                ));
            }
            if u.classes.as_ref().is_some_and(|c| c.is_empty()) {
                errs.push((
                    format!("uplinks[{i}].classes"),
                    "must name at least one class (leave it out for all)".into(),
                ));
            }
            if let Some(r) = &u.relay {
                if r.rsplit_once(':')
                    .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                {
                    errs.push((format!("uplinks[{i}].relay"), "must be host:port".into()));
                }
            }
        }
        let p = &self.proxy;
        for (k, v) in [
            ("max_connections_per_device", p.max_connections_per_device),
            ("max_tunnels_per_device", p.max_tunnels_per_device),
            ("max_requests_per_device", p.max_requests_per_device),
            ("max_transactions_per_device", p.max_transactions_per_device),
        ] {
            if v == 0 {
                errs.push((format!("proxy.{k}"), "must be at least 1".into()));
            }
        }
        if !(1000..=600_000).contains(&p.body_idle_timeout_ms) {
            errs.push((
                "proxy.body_idle_timeout_ms".into(),
                "must be 1000..=600000".into(),
            ));
        }
        if !(1..=15_360).contains(&p.max_shared_streams) {
            errs.push((
                "proxy.max_shared_streams".into(),
                "must be 1..=15360 (1,024 of each connection's 16,384 streams stay for bids)"
                    .into(),
            ));
        }
        if !(100..=60_000).contains(&self.bids.deadline_ms) {
            errs.push(("bids.deadline_ms".into(), "must be 100..=60000".into()));
        }
        if self.bids.journal.as_os_str().is_empty() {
            errs.push(("bids.journal".into(), "must name a file".into()));
        }
        let ci = &self.checkin;
        if let Some(k) = &ci.public_key {
            if ledger::token::Verifier::from_base64(k).is_none() {
                errs.push((
                    "checkin.public_key".into(),
                    "must be an Ed25519 public key in base64url (43 characters)".into(),
                ));
            }
            if ci.event.is_empty() || ci.event.len() > ledger::token::MAX_FIELD {
                errs.push(("checkin.event".into(), "must be the event's slug".into()));
            }
        }
        if ci.leeway_s > 3600 {
            errs.push(("checkin.leeway_s".into(), "must be at most 3600".into()));
        }
        if let Some(u) = &ci.sync_url {
            let ok = u.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !ok {
                errs.push((
                    "checkin.sync_url".into(),
                    "must be an absolute http:// or https:// URL".into(),
                ));
            }
        }
        let live = &self.live;
        if !(50..=2000).contains(&live.part_ms) {
            errs.push(("live.part_ms".into(), "must be 50..=2000".into()));
        }
        if live.segment_ms < live.part_ms || live.segment_ms > 20_000 {
            errs.push((
                "live.segment_ms".into(),
                "must be >= part_ms and <= 20000".into(),
            ));
        }
        if live.ring_bytes < 1 << 20 {
            errs.push(("live.ring_bytes".into(), "must be at least 1 MiB".into()));
        }
        if !(3..=100).contains(&live.playlist_segments) {
            errs.push(("live.playlist_segments".into(), "must be 3..=100".into()));
        }
        let mut cams = std::collections::HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            if c.name.is_empty()
                || c.name.len() > 64
                || !c
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            {
                errs.push((
                    format!("cameras[{i}].name"),
                    "must be 1-64 letters, digits, - or _".into(),
                ));
            } else if !cams.insert(c.name.clone()) {
                errs.push((
                    format!("cameras[{i}].name"),
                    format!("{:?} is used twice", c.name),
                ));
            }
            for (key, url) in [("url", &c.url), ("substream_url", &c.substream_url)] {
                if let Some(u) = url {
                    if !(u.starts_with("rtsp://") || u.starts_with("rtsps://")) || u.len() < 8 {
                        errs.push((
                            format!("cameras[{i}].{key}"),
                            "must be an rtsp:// URL".into(),
                        ));
                    }
                }
            }
            if c.url.is_none() && c.substream_url.is_some() {
                errs.push((
                    format!("cameras[{i}].substream_url"),
                    "needs url (pushed cameras have one stream)".into(),
                ));
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
