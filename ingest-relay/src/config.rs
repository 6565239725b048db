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
    /// `[viewers]`: where viewers (and a CDN in front) fetch the live streams.
    pub viewers: ViewersSection,
    /// `[live]`: the live streams gateways send: outage hold, playlists, recording.
    pub live: LiveSection,
    /// `[bids]`: the duplicate table of bids and check-ins, on disk.
    pub bids: RelayBidsSection,
    /// `[auction]`: the relay's own bid sink (lots, close times, standings).
    pub auction: AuctionSection,
    /// `[jetstream]`: a bid sink on a NATS JetStream cluster that several relays share.
    pub jetstream: JetStreamSection,
    /// `[fleet]`: the fleet view, every gateway from its delta telemetry.
    pub fleet: FleetSection,
}

/// `[fleet]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetSection {
    /// TCP address of the fleet page and `GET /api/fleet` (keep it on the operators'
    /// network or loopback); unset = off. The relay takes gateways' telemetry either way.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token `/api/fleet` needs (one line, at least 16 characters;
    /// made on first start). Relative to the config file.
    pub token_file: PathBuf,
    /// A gateway with no report for this long is shown offline, ms (gateways report every
    /// `[telemetry] every_ms`, 1000 by default).
    pub offline_after_ms: u64,
    /// Serve the fleet view over HTTPS, with the viewers' certificate (`[viewers] cert` and
    /// `key`, default `[tls]`): the token then never crosses the network in the clear.
    pub tls: bool,
}

impl Default for FleetSection {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: "fleet.token".into(),
            offline_after_ms: 3000,
            tls: false,
        }
    }
}

/// `[jetstream]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamSection {
    /// The name bids for this sink are sent to (a venue site's origin, e.g.
    /// `http://bids.canopy`): the relay publishes them to JetStream. Unset = off.
    pub host: Option<String>,
    /// The NATS servers (`nats://host:port`); the client reconnects to any of them.
    pub servers: Vec<String>,
    /// NATS user and password, when the servers ask for them. One kind of credentials
    /// at most: `user` and `password`, `token`, `nkey_seed_file` or `creds_file`.
    pub user: Option<String>,
    /// See `user`.
    pub password: Option<String>,
    /// A token, for servers with `authorization { token: ... }`.
    pub token: Option<String>,
    /// A file holding the relay's nkey seed (`SU...`; relative to the config file), for
    /// servers that list its public key (`authorization { users = [{ nkey: U... }] }`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A NATS credentials file (a user JWT and its seed, as `nsc` writes them) for an
    /// operator-mode cluster (relative to the config file).
    pub creds_file: Option<PathBuf>,
    /// The CA certificate(s), PEM, that signed the NATS servers' certificates (relative to
    /// the config file). Set: TLS is required and only this CA is trusted. Unset: a
    /// `tls://` server, or any server when a client pair is set, is checked against the
    /// public roots.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate chain, PEM, for servers that verify clients (`verify: true`);
    /// taken up again when the file changes, like the relay's own certificate. Set: TLS
    /// is required.
    pub tls_cert: Option<PathBuf>,
    /// The key of `tls_cert`, PEM.
    pub tls_key: Option<PathBuf>,
    /// The JetStream stream bids are published to (made if missing).
    pub stream: String,
    /// Bids are published as `<subject>.<event>.<gateway>`; the stream takes `<subject>.>`.
    pub subject: String,
    /// Copies of the stream and the key bucket kept by the cluster (1 to 5).
    pub replicas: usize,
    /// How long the servers drop a bid whose message id they saw (`Nats-Msg-Id`), s.
    pub duplicate_window_s: u64,
    /// The key-value bucket that keeps every key's answer, for relays and for retries
    /// after the duplicate window (made if missing).
    pub bucket: String,
    /// How long a key's answer is kept in the bucket, s.
    pub keep_keys_s: u64,
    /// How long a bid may wait for a stream leader (a server failing over) before the
    /// relay answers 503 and the gateway queues it, ms.
    pub publish_timeout_ms: u64,
}

impl Default for JetStreamSection {
    fn default() -> Self {
        Self {
            host: None,
            servers: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            nkey_seed_file: None,
            creds_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            stream: "CANOPY_BIDS".into(),
            subject: "canopy.bids".into(),
            replicas: 1,
            duplicate_window_s: 86_400,
            bucket: "canopy_bid_keys".into(),
            keep_keys_s: 30 * 86_400,
            publish_timeout_ms: 5_000,
        }
    }
}

/// `[auction]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuctionSection {
    /// The name bids for the embedded auction are sent to (a venue site's origin, e.g.
    /// `http://auction.canopy`): the relay answers it itself. Unset = off.
    pub host: Option<String>,
    /// The auction's bid log (relative to the config file).
    pub journal: PathBuf,
    /// Where the bids of a lot whose result is final go, one JSON line per lot, before
    /// the log keeps only its tally, leader and latest bids (relative to the config file).
    pub archive: PathBuf,
    /// Bids held at once, every lot together (a folded lot holds only what it keeps).
    pub max_bids: usize,
    /// A bid placed before a lot's close counts if it arrives at most this long after the
    /// close (an outage held it back), s.
    pub max_outage_s: u64,
    /// A folded lot made through the API leaves the auction this long after its result
    /// became final (its bids stay in the archive), days.
    pub retire_after_days: u64,
    /// `[[auction.lots]]`: the lots and their close times.
    pub lots: Vec<LotSection>,
}

impl Default for AuctionSection {
    fn default() -> Self {
        Self {
            host: None,
            journal: "auction.journal".into(),
            archive: "auction-archive.jsonl".into(),
            max_bids: 200_000,
            max_outage_s: 300,
            retire_after_days: 30,
            lots: Vec::new(),
        }
    }
}

/// `[[auction.lots]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotSection {
    /// The lot's id (in `/lots/<id>/bids`).
    pub id: String,
    /// When bidding closes, Unix seconds.
    pub closes_at_unix: u64,
}

/// `[bids]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayBidsSection {
    /// The journal of the duplicate table: which gateway's keys went to the origin and
    /// what they were answered, so a restarted relay never sends a key twice (relative to
    /// the config file).
    pub journal: PathBuf,
}

impl Default for RelayBidsSection {
    fn default() -> Self {
        Self {
            journal: "relay-bids.journal".into(),
        }
    }
}

/// `[viewers]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ViewersSection {
    /// TCP address for HTTP/1.1 without TLS (behind a CDN or a caching proxy); unset = off.
    pub listen: Option<SocketAddr>,
    /// TCP address for HTTP/1.1 over TLS (browsers; advertises HTTP/3); unset = off.
    pub https_listen: Option<SocketAddr>,
    /// UDP address for HTTP/3; unset = off. Advertised with `Alt-Svc` on HTTP/1.1.
    pub h3_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) for HTTPS and HTTP/3; default: `[tls] cert`.
    pub cert: Option<PathBuf>,
    /// Its key (PEM); default: `[tls] key`.
    pub key: Option<PathBuf>,
    /// Origins whose pages may play the streams (CORS); `"*"` (the default) allows any.
    pub cors_origins: Option<Vec<String>>,
    /// A file holding the secret that signs viewer URLs (`canopy viewer-token`); when set,
    /// every `/live/` and `/rec/` request needs a valid `token`.
    pub token_key_file: Option<PathBuf>,
}

/// `[live]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSection {
    /// A stream whose media stops keeps its playlists going (gap parts) this long, s, then
    /// ends.
    pub hold_s: u64,
    /// No media for this long starts the gap parts, ms.
    pub stall_ms: u64,
    /// PART-HOLD-BACK of the viewers' playlists, ms (how far behind the live edge players
    /// stay: room for a link cut).
    pub part_hold_back_ms: u64,
    /// Segments listed in a media playlist.
    pub playlist_segments: usize,
    /// Bytes of recent parts kept per rendition.
    pub ring_bytes: usize,
    /// Where every stream is recorded (fMP4 segments and an HLS playlist); unset = off.
    pub record_dir: Option<PathBuf>,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            hold_s: 60,
            stall_ms: 1000,
            part_hold_back_ms: 1000,
            playlist_segments: 20,
            ring_bytes: 64 << 20,
            record_dir: None,
        }
    }
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
    /// Revocation list: gateway certificates refused although the CA signed them, one per
    /// line (`sha256:<hex>` or `serial:<hex>`, as `canopy certs revoke` writes). Looked at
    /// every 250 ms: a gateway listed is refused at its next handshake and its open
    /// connections are closed. A missing file revokes nothing. Unset = no list.
    pub revoked: Option<PathBuf>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: "certs/relay.pem".into(),
            key: "certs/relay.key".into(),
            ca: "certs/ca.pem".into(),
            revoked: None,
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
    /// A request body from a gateway, or an answer's body from an origin, with no bytes
    /// for this long is cut (a stalled upload or answer frees its stream), ms.
    pub body_idle_timeout_ms: u64,
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
            body_idle_timeout_ms: 30_000,
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
        if !(1000..=600_000).contains(&self.egress.body_idle_timeout_ms) {
            errs.push((
                "egress.body_idle_timeout_ms".into(),
                "must be 1000..=600000".into(),
            ));
        }
        if self.egress.response_timeout_ms == 0 {
            errs.push((
                "egress.response_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        let live = &self.live;
        if !(1..=3600).contains(&live.hold_s) {
            errs.push(("live.hold_s".into(), "must be 1..=3600".into()));
        }
        if !(200..=10_000).contains(&live.stall_ms) {
            errs.push(("live.stall_ms".into(), "must be 200..=10000".into()));
        }
        if !(200..=10_000).contains(&live.part_hold_back_ms) {
            errs.push((
                "live.part_hold_back_ms".into(),
                "must be 200..=10000".into(),
            ));
        }
        if !(3..=1000).contains(&live.playlist_segments) {
            errs.push(("live.playlist_segments".into(), "must be 3..=1000".into()));
        }
        if live.ring_bytes < 1 << 20 {
            errs.push(("live.ring_bytes".into(), "must be at least 1 MiB".into()));
        }
        if self.fleet.tls && self.fleet.listen.is_none() {
            errs.push((
                "fleet.tls".into(),
                "serves the fleet view over HTTPS: set fleet.listen too".into(),
            ));
        }
        if self.fleet.offline_after_ms < 1000 {
            errs.push((
                "fleet.offline_after_ms".into(),
                "must be at least 1000".into(),
            ));
        }
        if self.bids.journal.as_os_str().is_empty() {
            errs.push(("bids.journal".into(), "must name a file".into()));
        }
        let a = &self.auction;
        if let Some(h) = &a.host {
            if h.is_empty() || h.contains(['/', ':', ' ']) {
                errs.push(("auction.host".into(), "must be a host name".into()));
            }
        }
        if !(1..=10_000_000).contains(&a.max_bids) {
            errs.push(("auction.max_bids".into(), "must be 1 to 10000000".into()));
        }
        if a.archive.as_os_str().is_empty() {
            errs.push(("auction.archive".into(), "must name a file".into()));
        }
        if a.max_outage_s > 86_400 {
            errs.push((
                "auction.max_outage_s".into(),
                "must be at most 86400".into(),
            ));
        }
        if a.retire_after_days > 36_500 {
            errs.push((
                "auction.retire_after_days".into(),
                "must be at most 36500".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, l) in a.lots.iter().enumerate() {
            let ok = !l.id.is_empty()
                && l.id.len() <= 128
                && l.id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                errs.push((
                    format!("auction.lots[{i}].id"),
                    "must be 1 to 128 letters, digits, '-', '_' or '.'".into(),
                ));
            } else if !ids.insert(&l.id) {
                errs.push((format!("auction.lots[{i}].id"), "is used twice".into()));
            }
            if l.closes_at_unix == 0 {
                errs.push((
                    format!("auction.lots[{i}].closes_at_unix"),
                    "must be a Unix time".into(),
                ));
            }
        }
        errs.extend(self.jetstream.problems());
        if let (Some(a), Some(j)) = (&self.auction.host, &self.jetstream.host) {
            if a.eq_ignore_ascii_case(j) {
                errs.push((
                    "jetstream.host".into(),
                    "is the auction's host too: give each sink its own name".into(),
                ));
            }
        }
        if self.viewers.cert.is_some() != self.viewers.key.is_some() {
            errs.push(("viewers.cert".into(), "cert and key go together".into()));
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

impl JetStreamSection {
    /// What is wrong with the section: (key, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        let mut bad = |k: &str, m: &str| errs.push((format!("jetstream.{k}"), m.to_owned()));
        if let Some(h) = &self.host {
            if h.is_empty() || h.contains(['/', ':', ' ']) {
                bad("host", "must be a host name");
            }
        }
        if self.servers.is_empty() {
            bad("servers", "must name at least one server");
        }
        for s in &self.servers {
            if s.parse::<async_nats::ServerAddr>().is_err() {
                bad("servers", &format!("{s:?} is not a NATS server address"));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            bad("user", "user and password go together");
        }
        let kinds = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.nkey_seed_file.is_some(),
            self.creds_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            bad(
                "user",
                "one kind of credentials at most: user and password, token, nkey_seed_file or creds_file",
            );
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            bad("token", "must not be empty");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bad("tls_cert", "tls_cert and tls_key go together");
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name_ok(&self.stream) {
            bad(
                "stream",
                "must be 1 to 64 letters, digits, '-' or '_' (no dots, spaces or wildcards)",
            );
        }
        if !name_ok(&self.bucket) {
            bad("bucket", "must be 1 to 64 letters, digits, '-' or '_'");
        }
        let subject_ok = !self.subject.is_empty()
            && self.subject.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"*>".contains(&b))
            });
        if !subject_ok {
            bad(
                "subject",
                "must be dot-separated tokens without spaces or wildcards",
            );
        }
        if !(1..=5).contains(&self.replicas) {
            bad("replicas", "must be 1..=5");
        }
        if !(1..=30 * 86_400).contains(&self.duplicate_window_s) {
            bad("duplicate_window_s", "must be 1..=2592000");
        }
        if self.keep_keys_s < self.duplicate_window_s {
            bad("keep_keys_s", "must be at least duplicate_window_s");
        }
        if !(100..=120_000).contains(&self.publish_timeout_ms) {
            bad("publish_timeout_ms", "must be 100..=120000");
        }
        errs
    }
}
