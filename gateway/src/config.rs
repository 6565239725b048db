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
    /// `[admin]`: the local admin API (levels, actions, overrides).
    pub admin: AdminSection,
    /// `[telemetry]`: the summary the relay's fleet view shows of this gateway.
    pub telemetry: TelemetrySection,
    /// `[[actions]]`: local actions fired by thresholds over the gateway's measurements.
    pub actions: Vec<ActionConfig>,
    /// `[cache]`: the edge cache for GETs through the proxy and the sites.
    pub cache: CacheSection,
    /// `[event]`: the event's slug and times, and what follows its end; unset = no end
    /// (check-in tokens go by their own expiry, no post-event hygiene).
    pub event: Option<crate::event::EventSection>,
}

/// `[cache]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Keep answers to GETs by RFC 9111's rules (a shared cache).
    pub enabled: bool,
    /// Bytes of answers kept in memory; the least recently used go first.
    pub memory_bytes: u64,
    /// Folder of the disk tier (relative to the config file): every answer that fits is
    /// also kept there, served when memory has let it go, and read back after a restart;
    /// unset = memory only.
    pub disk_dir: Option<PathBuf>,
    /// Bytes of answers kept on disk; the least recently used go first.
    pub disk_bytes: u64,
    /// Largest answer kept, bytes.
    pub max_object_bytes: u64,
    /// How long past its freshness an answer may still be served when no uplink is up or
    /// the origin fails (unless the answer forbids it: must-revalidate, no-cache), s.
    pub stale_max_s: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            enabled: true,
            memory_bytes: 64 << 20,
            disk_dir: None,
            disk_bytes: 1 << 30,
            max_object_bytes: 8 << 20,
            stale_max_s: 86_400,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// TCP address of the admin API (keep it on the crew's LAN or loopback); unset = off.
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token every admin request must present (one line, at
    /// least 16 characters; the gateway makes one on first start). Relative to the config file.
    pub token_file: PathBuf,
    /// File keeping what the crew set by hand on the admin API (pinned camera levels,
    /// uplinks preferred or avoided) across restarts. Relative to the config file.
    pub holds_file: PathBuf,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            listen: None,
            token_file: "admin.token".into(),
            holds_file: "admin.holds.json".into(),
        }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Send the relay a summary of what changed (links, cameras, bids, problems).
    pub enabled: bool,
    /// Time between reports, ms (the relay calls a gateway offline after three missed).
    pub every_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            enabled: true,
            every_ms: 1000,
        }
    }
}

/// What an action's rule watches (`[[actions]] when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// What the bond can give the stream class is below `value` Mbit/s.
    CapacityBelowMbps,
    /// An uplink's loss (or `link`'s) is above `value` %.
    LossAbovePct,
    /// An uplink (or `link`) cannot carry traffic.
    LinkDown,
    /// An uplink's data cap (or `link`'s) is used above `value` % today.
    DataCapAbovePct,
    /// The spool is fuller than `value` %.
    SpoolAbovePct,
    /// No uplink can carry traffic.
    AllUplinksDown,
}

impl When {
    /// Its name in config.
    pub fn as_str(self) -> &'static str {
        match self {
            When::CapacityBelowMbps => "capacity_below_mbps",
            When::LossAbovePct => "loss_above_pct",
            When::LinkDown => "link_down",
            When::DataCapAbovePct => "data_cap_above_pct",
            When::SpoolAbovePct => "spool_above_pct",
            When::AllUplinksDown => "all_uplinks_down",
        }
    }

    fn takes_value(self) -> bool {
        !matches!(self, When::LinkDown | When::AllUplinksDown)
    }

    fn takes_link(self) -> bool {
        matches!(
            self,
            When::LossAbovePct | When::LinkDown | When::DataCapAbovePct
        )
    }
}

/// What an action does while its rule is fired (`[[actions]] then`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Then {
    /// Holds `cameras` (default all) at `level` or lower.
    Level,
    /// Puts traffic on `uplink` first: the other primary uplinks count as secondary.
    PreferUplink,
    /// Leaves `uplink` as a backup: it carries traffic only when the others cannot.
    AvoidUplink,
    /// Once, when fired: removes the spooled parts the relay has answered for (it has
    /// them, or refused them for good): nothing a backfill still needs.
    PurgeCache,
    /// Refuses new requests of `class` (only `bulk`) with 503 and a retry hint.
    PauseClass,
    /// Once, when fired: runs `command` (no shell), with the rule's name and cause in
    /// its environment.
    Run,
}

impl Then {
    /// Its name in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Then::Level => "level",
            Then::PreferUplink => "prefer_uplink",
            Then::AvoidUplink => "avoid_uplink",
            Then::PurgeCache => "purge_cache",
            Then::PauseClass => "pause_class",
            Then::Run => "run",
        }
    }
}

/// `[[actions]]`: one rule and what it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Name in logs, metrics and status.
    pub name: String,
    /// The condition.
    pub when: When,
    /// The condition's threshold (Mbit/s or %).
    #[serde(default)]
    pub value: Option<f64>,
    /// The one uplink a per-link condition watches; unset: any uplink.
    #[serde(default)]
    pub link: Option<String>,
    /// How long the condition must hold before the action fires, s.
    #[serde(default = "default_for_s")]
    pub for_s: f64,
    /// How long the condition must be clear (past a margin) before the action is undone, s.
    #[serde(default = "default_clear_after_s")]
    pub clear_after_s: f64,
    /// The action.
    pub then: Then,
    /// With `then = "level"`: `full`, `substream`, `transcode`, `keyframes` or `audio`.
    #[serde(default)]
    pub level: Option<String>,
    /// With `then = "level"`: the cameras it holds down; empty: every camera.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// With `then = "prefer_uplink"` or `"avoid_uplink"`: the uplink.
    #[serde(default)]
    pub uplink: Option<String>,
    /// With `then = "pause_class"`: the class (`bulk`).
    #[serde(default)]
    pub class: Option<TrafficClass>,
    /// With `then = "run"`: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Log and count firings without doing anything.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_for_s() -> f64 {
    5.0
}

fn default_clear_after_s() -> f64 {
    10.0
}

impl ActionConfig {
    /// The rule the action's condition makes (config already validated).
    pub fn rule(&self) -> tunnel::actions::Rule {
        use tunnel::actions::Condition;
        let v = self.value.unwrap_or(0.0);
        let ratio = v / 100.0;
        let link = self.link.clone();
        let condition = match self.when {
            When::CapacityBelowMbps => Condition::CapacityBelow(v * 1e6 / 8.0),
            When::LossAbovePct => Condition::LossAbove { link, ratio },
            When::LinkDown => Condition::LinkDown { link },
            When::DataCapAbovePct => Condition::CapAbove { link, ratio },
            When::SpoolAbovePct => Condition::SpoolAbove(ratio),
            When::AllUplinksDown => Condition::AllDown,
        };
        tunnel::actions::Rule {
            condition,
            hold: std::time::Duration::from_secs_f64(self.for_s.clamp(0.0, 86_400.0)),
            clear_after: std::time::Duration::from_secs_f64(
                self.clear_after_s.clamp(0.0, 86_400.0),
            ),
        }
    }

    /// Checks one action against the rest of the config: (dotted key, message) per problem.
    fn validate(&self, i: usize, cfg: &GatewayConfig, errs: &mut Vec<(String, String)>) {
        let key = |k: &str| format!("actions[{i}].{k}");
        let uplinks = cfg.effective_uplinks();
        let has_uplink = |n: &str| uplinks.iter().any(|u| u.name == n);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            errs.push((key("name"), "must be 1-64 letters, digits, - or _".into()));
        }
        match (self.when.takes_value(), self.value) {
            (true, None) => {
                errs.push((key("when"), format!("{} needs a value", self.when.as_str())))
            }
            (false, Some(_)) => errs.push((
                key("value"),
                format!("{} takes no value", self.when.as_str()),
            )),
            (true, Some(v)) => {
                let ok = match self.when {
                    When::CapacityBelowMbps => v > 0.0 && v <= 100_000.0,
                    _ => v > 0.0 && v < 100.0,
                };
                if !ok || !v.is_finite() {
                    errs.push((
                        key("value"),
                        match self.when {
                            When::CapacityBelowMbps => {
                                "must be a rate above 0 and at most 100000 Mbit/s".into()
                            }
                            _ => "must be a percentage above 0 and below 100".into(),
                        },
                    ));
                }
            }
            (false, None) => {}
        }
        if let Some(l) = &self.link {
            if !self.when.takes_link() {
                errs.push((
                    key("link"),
                    format!("{} watches no single uplink", self.when.as_str()),
                ));
            } else if !has_uplink(l) {
                errs.push((key("link"), format!("no uplink is named {l:?}")));
            } else if self.when == When::DataCapAbovePct
                && uplinks
                    .iter()
                    .any(|u| &u.name == l && u.cap_bytes_per_day.is_none())
            {
                errs.push((
                    key("link"),
                    format!("uplink {l:?} has no cap_bytes_per_day"),
                ));
            }
        }
        for (k, v, max) in [
            ("for_s", self.for_s, 3600.0),
            ("clear_after_s", self.clear_after_s, 86_400.0),
        ] {
            if !(0.0..=max).contains(&v) {
                errs.push((key(k), format!("must be 0..={max}")));
            }
        }
        let only = |k: &str, set: bool, then: &[Then], errs: &mut Vec<(String, String)>| {
            if set && !then.contains(&self.then) {
                let names: Vec<String> = then.iter().map(|t| format!("{:?}", t.as_str())).collect();
                errs.push((key(k), format!("only with then = {}", names.join(" or "))));
            }
        };
        only("level", self.level.is_some(), &[Then::Level], errs);
        only("cameras", !self.cameras.is_empty(), &[Then::Level], errs);
        only(
            "uplink",
            self.uplink.is_some(),
            &[Then::PreferUplink, Then::AvoidUplink],
            errs,
        );
        only("class", self.class.is_some(), &[Then::PauseClass], errs);
        only("command", !self.command.is_empty(), &[Then::Run], errs);
        match self.then {
            Then::Level => match self.level.as_deref().map(tunnel::stream_level::Level::from_name) {
                None => errs.push((key("then"), "then = \"level\" needs a level".into())),
                Some(None) => errs.push((
                    key("level"),
                    "must be full, substream, transcode, keyframes or audio".into(),
                )),
                Some(Some(_)) => {
                    for (j, c) in self.cameras.iter().enumerate() {
                        if !cfg.cameras.iter().any(|k| &k.name == c) {
                            errs.push((
                                format!("actions[{i}].cameras[{j}]"),
                                format!("no camera is named {c:?} in [[cameras]]"),
                            ));
                        }
                    }
                }
            },
            Then::PreferUplink | Then::AvoidUplink => match &self.uplink {
                None => errs.push((
                    key("then"),
                    format!("then = {:?} needs an uplink", self.then.as_str()),
                )),
                Some(u) if !has_uplink(u) => {
                    errs.push((key("uplink"), format!("no uplink is named {u:?}")))
                }
                Some(_) => {}
            },
            Then::PauseClass => match self.class {
                None => errs.push((key("then"), "then = \"pause_class\" needs a class".into())),
                Some(TrafficClass::Bulk) => {}
                Some(c) => errs.push((
                    key("class"),
                    format!("{c} cannot be paused: only bulk can (bids and check-ins are never held; the stream has levels)"),
                )),
            },
            Then::Run => {
                if self.command.first().is_none_or(|c| c.is_empty()) {
                    errs.push((
                        key(if self.command.is_empty() { "then" } else { "command" }),
                        "then = \"run\" needs a command: [\"/path/to/program\", \"arg\", ...]".into(),
                    ));
                }
            }
            Then::PurgeCache => {}
        }
    }
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
    /// The organizer's voided tokens (`token <id>` or `attendee <id>` a line), watched
    /// while the gateway runs; relative to the config file; unset or missing = none.
    pub revoked: Option<PathBuf>,
}

impl Default for CheckinSection {
    fn default() -> Self {
        Self {
            public_key: None,
            event: String::new(),
            reentry: false,
            leeway_s: 60,
            sync_url: None,
            revoked: None,
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
    /// Without `substream_url`: the video bit rate of the low-bitrate rendition the gateway
    /// makes for the low-bandwidth mode (ffmpeg, 360p), kbit/s; 0: none.
    #[serde(default = "default_transcode_kbps")]
    pub transcode_kbps: u32,
}

fn default_transcode_kbps() -> u32 {
    250
}

impl CameraConfig {
    /// The renditions the camera has: its main stream, its second stream or a transcode of
    /// the main one, and its program.
    pub fn renditions(&self) -> Vec<&'static str> {
        use media_io::program::{rendition_of, PROGRAM};
        use segmenter::program::Source;
        let mut r = vec![rendition_of(Source::Main)];
        if self.substream_url.is_some() {
            r.push(rendition_of(Source::Sub));
        } else if self.transcode().is_some() {
            r.push(rendition_of(Source::Transcode));
        }
        r.push(PROGRAM);
        r
    }

    /// The transcode the gateway makes of it: without a second stream, unless off.
    pub fn transcode(&self) -> Option<media_io::transcode::TranscodeSettings> {
        (self.substream_url.is_none() && self.transcode_kbps > 0).then(|| {
            media_io::transcode::TranscodeSettings {
                video_kbps: self.transcode_kbps,
                ..Default::default()
            }
        })
    }
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
    /// Longest reconnect delay, ms: a link back from a blackhole (nothing tells the
    /// gateway) is found within this of its return. Each attempt sends a few padded
    /// 1.2 kB handshake packets: a dead link costs some kB/s for a minute, then a tenth.
    pub reconnect_max_ms: u64,
}

impl Default for RelayTarget {
    fn default() -> Self {
        Self {
            addr: "localhost:4433".into(),
            server_name: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            reconnect_min_ms: 100,
            reconnect_max_ms: 250,
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
    /// stream and its device's slot), and so is a device connection whose answer waits
    /// this long for the device to take a byte, ms.
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
    /// TCP address where the gateway answers HTTPS for the `[[sites]]` marked `tls`, by
    /// the name the device asks for (SNI); unset = no HTTPS.
    pub https_listen: Option<SocketAddr>,
    /// Folder where a request body sent without a length (chunked) and over 1 MiB is
    /// written before it goes on, striped over every uplink, so that it survives the loss
    /// of the uplink it was on (relative to the config file). Each file is unlinked as
    /// soon as it is open.
    pub body_spool_dir: PathBuf,
    /// Most bytes such bodies take on disk at once, a quarter of it per body. 0 = off:
    /// such bodies are striped as they come, as stripes of unknown length (the origin
    /// gets them without a length).
    pub body_spool_bytes: u64,
    /// Longest such a body is held (in memory, then in the spool) while the device sends
    /// it; one without room, or still coming after this, goes on from there as a stripe
    /// of unknown length (a live push goes on, and catches up), ms.
    pub chunked_hold_ms: u64,
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
            https_listen: None,
            body_spool_dir: "body-spool".into(),
            body_spool_bytes: 4 << 30,
            chunked_hold_ms: 10_000,
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
    /// Answer HTTPS for this name on `[proxy] https_listen`, with `cert` and `key`.
    #[serde(default)]
    pub tls: bool,
    /// With `tls`: a request for this name in cleartext on the proxy port gets 308 to
    /// HTTPS (`false`: answered in cleartext too, for devices that cannot trust the
    /// event CA).
    #[serde(default = "default_true")]
    pub redirect_to_https: bool,
    /// How long the edge cache keeps the site's static assets (images, styles, scripts,
    /// fonts) whose answers say nothing of their freshness, s; 0 = only what they say.
    #[serde(default = "default_static_max_age")]
    pub static_max_age_s: u64,
    /// `[sites.privacy]`: what is taken out of requests before they leave the venue,
    /// and telemetry forwarded only with consent. Unset = nothing.
    #[serde(default)]
    pub privacy: Option<crate::privacy::Privacy>,
    /// The site's certificate (PEM; `canopy certs add --site HOST` issues one from the
    /// event CA, or the operator's own). Default `certs/<host>.pem`. A next pair beside it
    /// (`<host>.next.pem`) is taken up by itself, as the gateway's own.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    /// Its key (PEM). Default `certs/<host>.key`.
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
}

fn default_true() -> bool {
    true
}

fn default_static_max_age() -> u64 {
    1800
}

impl Site {
    /// The site's certificate and key files (the defaults when unset).
    pub fn tls_files(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let host = self.host.to_ascii_lowercase();
        (
            self.cert
                .clone()
                .unwrap_or_else(|| format!("certs/{host}.pem").into()),
            self.key
                .clone()
                .unwrap_or_else(|| format!("certs/{host}.key").into()),
        )
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// TCP address of the Prometheus endpoint (`/metrics`); unset = off.
    pub listen: Option<SocketAddr>,
}

impl GatewayConfig {
    /// The event check-in tokens must name: `[checkin] event`, else `[event] slug`.
    pub fn checkin_event(&self) -> &str {
        match (&self.event, self.checkin.event.as_str()) {
            (Some(e), "") => &e.slug,
            (_, named) => named,
        }
    }

    /// The event, when `[event]` is set and valid.
    pub fn event(&self) -> Option<crate::event::Event> {
        self.event.as_ref().and_then(|e| e.parse().ok())
    }

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
        if !(200..=60_000).contains(&self.telemetry.every_ms) {
            errs.push(("telemetry.every_ms".into(), "must be 200-60000".into()));
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
            if site.tls && self.proxy.https_listen.is_none() {
                errs.push((
                    format!("sites[{i}].tls"),
                    "needs [proxy] https_listen, where the gateway answers HTTPS".into(),
                ));
            }
            for (j, c) in site
                .privacy
                .iter()
                .flat_map(|p| p.consent.iter())
                .enumerate()
            {
                if !c.path_prefix.starts_with('/') {
                    errs.push((
                        format!("sites[{i}].privacy.consent[{j}].path_prefix"),
                        "must start with /".into(),
                    ));
                }
                if c.header.is_none() && c.cookie.is_none() && c.query.is_none() {
                    errs.push((
                        format!("sites[{i}].privacy.consent[{j}]"),
                        "name the consent signal: header, cookie or query".into(),
                    ));
                }
            }
            if !site.tls && (site.cert.is_some() || site.key.is_some()) {
                errs.push((
                    format!("sites[{i}].cert"),
                    "a certificate is for a site with tls = true".into(),
                ));
            }
        }
        if self.proxy.https_listen.is_some() && !self.sites.iter().any(|s| s.tls) {
            errs.push((
                "proxy.https_listen".into(),
                "no [[sites]] entry has tls = true: nothing to answer HTTPS for".into(),
            ));
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
        if self.cache.disk_dir.is_some() && self.cache.disk_bytes < self.cache.max_object_bytes {
            errs.push((
                "cache.disk_bytes".into(),
                "must be at least cache.max_object_bytes (or leave disk_dir out)".into(),
            ));
        }
        if !(100..=60_000).contains(&self.bids.deadline_ms) {
            errs.push(("bids.deadline_ms".into(), "must be 100..=60000".into()));
        }
        if !(100..=600_000).contains(&p.chunked_hold_ms) {
            errs.push((
                "proxy.chunked_hold_ms".into(),
                "must be 100..=600000".into(),
            ));
        }
        if p.body_spool_bytes > 0 && p.body_spool_dir.as_os_str().is_empty() {
            errs.push((
                "proxy.body_spool_dir".into(),
                "must name a folder (or set proxy.body_spool_bytes = 0)".into(),
            ));
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
            let event = self.checkin_event();
            if event.is_empty() || event.len() > ledger::token::MAX_FIELD {
                errs.push((
                    "checkin.event".into(),
                    "must be the event's slug (or set [event] slug)".into(),
                ));
            }
        }
        if let Some(ev) = &self.event {
            if let Err(e) = ev.parse() {
                errs.extend(e);
            }
            if !ci.event.is_empty() && ci.event != ev.slug {
                errs.push((
                    "checkin.event".into(),
                    format!(
                        "is {:?} but [event] slug is {:?}: leave it out, or make them the same",
                        ci.event, ev.slug
                    ),
                ));
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
            if c.transcode_kbps != 0 && !(50..=5000).contains(&c.transcode_kbps) {
                errs.push((
                    format!("cameras[{i}].transcode_kbps"),
                    "must be 50..=5000, or 0 for none".into(),
                ));
            }
            if c.url.is_none() && c.substream_url.is_some() {
                errs.push((
                    format!("cameras[{i}].substream_url"),
                    "needs url (pushed cameras have one stream)".into(),
                ));
            }
        }
        let mut actions = std::collections::HashSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            a.validate(i, self, &mut errs);
            if !actions.insert(a.name.as_str()) {
                errs.push((
                    format!("actions[{i}].name"),
                    format!("{:?} is used twice", a.name),
                ));
            }
        }
        if self.admin.listen.is_some() && self.admin.token_file.as_os_str().is_empty() {
            errs.push(("admin.token_file".into(), "must name a file".into()));
        }
        if self.admin.listen.is_some() && self.admin.holds_file.as_os_str().is_empty() {
            errs.push(("admin.holds_file".into(), "must name a file".into()));
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
