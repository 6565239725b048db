//! A whole Canopy in one process: relay, gateway, the demo origin and one emulated link per
//! uplink. The demo, the benches and the tests build on it. Its links are the emulator's
//! UDP forwarders on loopback, or (`TestbedOptions::network`) in-memory links of a
//! [`VirtualNet`], where a test on tokio's paused clock runs the tunnel in simulated time.

use crate::linkem::{LinkEmulator, LinkPort, LinkProfile, VirtualNet};
use crate::origin::{self, OriginStats};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tunnel::path::{LinkKind, Tier};
use tunnel::{ClassRule, TrafficClass};
use tunnel_io::TransportSettings;

/// Host name venue devices use for the demo's bid and check-in service (a reverse site).
pub const DEMO_SITE: &str = "shop.canopy.test";

/// The demo gateway's name (its certificate's): viewer URLs carry it.
pub const DEMO_GATEWAY: &str = "venue";

/// Relay, gateway, origin and link emulators, on loopback or a virtual network.
pub struct Testbed {
    /// The demo origin's address.
    pub origin: SocketAddr,
    /// The origin's counters.
    pub origin_stats: Arc<OriginStats>,
    /// The relay's UDP address.
    pub relay: SocketAddr,
    /// The relay's viewer address (HTTP/1.1).
    pub viewers: SocketAddr,
    /// The relay's viewer address for HTTP/3.
    pub viewers_h3: Option<SocketAddr>,
    /// The relay's live streams.
    pub relayed: Arc<media_io::relayed::Relayed>,
    /// The gateway's contribution to the relay.
    pub contributor: Option<Arc<gateway::contribute::Contributor>>,
    /// The gateway's cameras' low-bandwidth levels.
    pub levels: Option<Arc<gateway::levels::Levels>>,
    /// One emulated link per uplink, in uplink order (`None`: that uplink talks to the
    /// relay directly).
    pub links: Vec<Option<LinkEmulator>>,
    /// The gateway's proxy address.
    pub proxy: SocketAddr,
    /// The gateway's bonded uplinks.
    pub bond: Arc<gateway::Bond>,
    /// The gateway's cameras.
    pub live: Arc<gateway::LiveStreams>,
    /// Serves device connections handed to the gateway (in-memory ones on a virtual
    /// network, where the proxy's TCP listener would leave simulated time).
    pub devices: gateway::DeviceDoor,
    /// The gateway's HTTPS address for the demo site, with `https_site`.
    pub https: Option<SocketAddr>,
    /// The event CA's certificate (PEM): what a device trusts.
    pub ca_pem: String,
    /// The gateway's admin API (its status page at `/`) and its token, with `admin`.
    pub admin: Option<(SocketAddr, String)>,
    /// The relay's fleet view (its page at `/`) and its token, with `fleet`.
    pub fleet: Option<(SocketAddr, String)>,
    /// The gateway's state folder (its bids journal).
    _state_dir: StateDir,
}

/// The demo camera's clip (H.264 + AAC, 10 s, made once with ffmpeg; see assets/README.md).
pub const DEMO_CLIP: &[u8] = include_bytes!("../assets/demo-camera.mp4");

/// A folder for the gateway's state (its bids journal), removed with the testbed.
#[derive(Debug)]
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> std::io::Result<Self> {
        let d = std::env::temp_dir().join(format!(
            "canopy-demo-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d)?;
        Ok(Self(d))
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Testbed {
    /// Adds a camera named `name` to the gateway that plays the demo clip, live and looped.
    pub fn add_demo_camera(&self, name: &str) -> anyhow::Result<Arc<media_io::LiveStream>> {
        let clip = segmenter::mp4file::demux(&bytes::Bytes::from_static(DEMO_CLIP))
            .map_err(|e| anyhow::anyhow!("demo clip: {e}"))?;
        let cfg = gateway::config::LiveSection::default().rendition();
        let stream = self
            .live
            .add(name, &["main", media_io::program::PROGRAM], cfg, false);
        tokio::spawn(media_io::clip::run_clip(stream.clone(), Arc::new(clip)));
        Ok(stream)
    }
}

/// One uplink of a testbed.
#[derive(Debug, Clone)]
pub struct TestLink {
    /// Uplink name.
    pub name: String,
    /// Link kind.
    pub kind: LinkKind,
    /// Cost tier.
    pub tier: Tier,
    /// The emulated link (`None`: direct, no emulator in the path).
    pub profile: Option<LinkProfile>,
}

impl TestLink {
    /// A primary uplink over `profile` (or direct).
    pub fn new(name: &str, profile: Option<LinkProfile>) -> Self {
        Self {
            name: name.into(),
            kind: LinkKind::Ethernet,
            tier: Tier::Primary,
            profile,
        }
    }
}

/// What a testbed is built with.
pub struct TestbedOptions {
    /// The uplinks (at least one).
    pub links: Vec<TestLink>,
    /// QUIC transport settings at both ends.
    pub tunnel: TransportSettings,
    /// Proxy listen address (port 0: any).
    pub proxy_listen: SocketAddr,
    /// Prometheus endpoints (relay, gateway), if wanted.
    pub metrics: Option<(SocketAddr, SocketAddr)>,
    /// Where the relay records the streams, if anywhere.
    pub record_dir: Option<PathBuf>,
    /// The gateway's check-in desk (off by default).
    pub checkin: gateway::config::CheckinSection,
    /// What carries the tunnel between gateway and relay.
    pub network: Network,
    /// Lots of the relay's embedded auction (none: no auction). Venue devices reach it as
    /// [`AUCTION_SITE`]; `POST /lots/<lot>/bids` is a bid; every lot closes in an hour.
    pub auction_lots: Vec<String>,
    /// The gateway also answers HTTPS for [`DEMO_SITE`] (on loopback, any port), with a
    /// certificate from the testbed's event CA ([`Testbed::ca_pem`]).
    pub https_site: bool,
    /// The gateway's admin API listens here (port 0: any), its token in the state folder.
    pub admin: Option<SocketAddr>,
    /// The relay's fleet view listens here (port 0: any), its token in the state folder.
    pub fleet: Option<SocketAddr>,
    /// Changes to the gateway's `[proxy]` section (limits, the body spool).
    pub gateway_proxy: fn(&mut gateway::config::ProxySection),
    /// Changes to the relay's `[egress]` section (limits).
    pub relay_egress: fn(&mut ingest_relay::config::EgressSection),
}

/// What carries the tunnel between a testbed's gateway and relay.
#[derive(Clone, Default)]
pub enum Network {
    /// UDP on loopback, through one emulator forwarder per emulated link.
    #[default]
    Loopback,
    /// In-memory sockets and links of this network: the relay at [`VIRTUAL_RELAY`], the
    /// origin at [`VIRTUAL_ORIGIN`], uplink `i` at `10.200.<i + 1>.2`. Every link must have
    /// a profile; devices reach the gateway through [`Testbed::devices`]. On tokio's paused clock
    /// the tunnel runs in simulated time.
    Virtual(VirtualNet),
}

/// The demo origin's address on a [`Network::Virtual`] (beside the relay: no link).
pub const VIRTUAL_ORIGIN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 200, 100, 2)),
    8080,
);

/// The relay's address on a [`Network::Virtual`].
pub const VIRTUAL_RELAY: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 200, 100, 1)),
    4433,
);

/// Host name venue devices use for the relay's embedded auction (a reverse site).
pub const AUCTION_SITE: &str = "auction.test";

/// Uplink sockets on a virtual network's links, by uplink name.
struct LinkSockets {
    net: VirtualNet,
    ports: Vec<(String, std::net::IpAddr, LinkPort)>,
}

impl gateway::sockets::UplinkSockets for LinkSockets {
    fn socket(
        &self,
        name: &str,
        _bind: &gateway::config::BindTo,
        _relay: SocketAddr,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let (_, ip, port) = self
            .ports
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| std::io::Error::other(format!("no virtual link for uplink {name}")))?;
        Ok(self.net.bind_on(port, SocketAddr::new(*ip, 0))?)
    }
}

impl TestbedOptions {
    /// One uplink over `link` (or direct), default transport, any port, no metrics.
    pub fn single(link: Option<LinkProfile>) -> Self {
        Self {
            links: vec![TestLink::new("uplink", link)],
            tunnel: TransportSettings::default(),
            proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            record_dir: None,
            checkin: Default::default(),
            network: Network::Loopback,
            auction_lots: Vec::new(),
            https_site: false,
            admin: None,
            fleet: None,
            gateway_proxy: |_| {},
            relay_egress: |_| {},
        }
    }
}

impl Testbed {
    /// Starts everything and waits (up to 10 s) for an uplink to carry traffic.
    pub async fn start(opts: TestbedOptions) -> anyhow::Result<Self> {
        let certs = crate::certs::EventCerts::generate(
            "demo",
            crate::certs::Window::from(time::OffsetDateTime::now_utc()),
            None,
            &["localhost".into(), "127.0.0.1".into()],
            crate::certs::Leaves {
                gateways: &[DEMO_GATEWAY.into()],
                sites: &[DEMO_SITE.into()],
            },
        )?;
        let origin_stats = Arc::new(OriginStats::default());
        let origin = match &opts.network {
            Network::Loopback => {
                let listener = origin::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
                let origin = listener.local_addr()?;
                tokio::spawn(origin::serve(listener, origin_stats.clone()));
                origin
            }
            Network::Virtual(net) => {
                let listener = net.listen(VIRTUAL_ORIGIN)?;
                tokio::spawn(origin::serve_virtual(listener, origin_stats.clone()));
                VIRTUAL_ORIGIN
            }
        };

        // the demo's journals live as long as the demo
        let state_dir = StateDir::new()?;
        let mut relay_cfg = ingest_relay::RelayConfig::default();
        relay_cfg.bids.journal = state_dir.0.join("relay-bids.journal");
        relay_cfg.relay.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        relay_cfg.egress.allow = vec![origin.to_string()];
        (opts.relay_egress)(&mut relay_cfg.egress);
        relay_cfg.tunnel = opts.tunnel.clone();
        relay_cfg.metrics.listen = opts.metrics.map(|m| m.0);
        relay_cfg.viewers.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        relay_cfg.viewers.h3_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        relay_cfg.live.record_dir = opts.record_dir.clone();
        relay_cfg.fleet.listen = opts.fleet;
        relay_cfg.fleet.token_file = state_dir.0.join("fleet.token");
        if !opts.auction_lots.is_empty() {
            let close = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + 3600;
            relay_cfg.auction.host = Some("auction.canopy".into());
            relay_cfg.auction.journal = state_dir.0.join("auction.journal");
            relay_cfg.auction.archive = state_dir.0.join("auction-archive.jsonl");
            relay_cfg.auction.lots = opts
                .auction_lots
                .iter()
                .map(|id| ingest_relay::config::LotSection {
                    id: id.clone(),
                    closes_at_unix: close,
                })
                .collect();
        }
        let rh = match &opts.network {
            Network::Loopback => {
                crate::runtime::spawn_relay(&relay_cfg, &certs.relay_tls()?, None, None).await?
            }
            Network::Virtual(net) => {
                relay_cfg.relay.listen = VIRTUAL_RELAY;
                let socket = net.bind(VIRTUAL_RELAY)?;
                let dialer = Arc::new(net.clone());
                crate::runtime::spawn_relay_on(&relay_cfg, &certs.relay_tls()?, socket, dialer)
                    .await?
            }
        };
        let relay = rh.addr;
        let viewers = rh
            .viewers
            .0
            .ok_or_else(|| anyhow::anyhow!("the relay has no viewer listener"))?;

        let mut links = Vec::new();
        let mut uplinks = Vec::new();
        let mut ports = Vec::new();
        for (i, l) in opts.links.iter().enumerate() {
            let emu = match (&l.profile, &opts.network) {
                (Some(profile), Network::Loopback) => Some(
                    LinkEmulator::start(
                        SocketAddr::from(([127, 0, 0, 1], 0)),
                        relay,
                        profile.clone(),
                    )
                    .await?,
                ),
                (None, Network::Loopback) => None,
                (Some(profile), Network::Virtual(net)) => {
                    let (emu, port) = net.link(profile.clone());
                    let ip = std::net::Ipv4Addr::new(10, 200, u8::try_from(i + 1)?, 2);
                    ports.push((l.name.clone(), ip.into(), port));
                    // the gateway reaches the relay itself: the link is its socket's
                    Some(emu)
                }
                (None, Network::Virtual(_)) => {
                    anyhow::bail!("uplink {}: a virtual network needs a link profile", l.name)
                }
            };
            let emu_addr = match &opts.network {
                Network::Loopback => emu.as_ref().map(LinkEmulator::local_addr),
                Network::Virtual(_) => None,
            };
            uplinks.push(gateway::config::UplinkConfig {
                name: l.name.clone(),
                kind: l.kind,
                bind: "127.0.0.1".into(),
                tier: l.tier,
                cap_bytes_per_day: None,
                classes: None,
                relay: Some(emu_addr.unwrap_or(relay).to_string()),
            });
            links.push(emu);
        }

        let mut gw_cfg = gateway::GatewayConfig::default();
        gw_cfg.relay.addr = relay.to_string();
        gw_cfg.relay.server_name = Some("localhost".into());
        gw_cfg.uplinks = uplinks;
        gw_cfg.proxy.listen = opts.proxy_listen;
        gw_cfg.tunnel = opts.tunnel;
        gw_cfg.metrics.listen = opts.metrics.map(|m| m.1);
        gw_cfg.sites = vec![gateway::config::Site {
            host: DEMO_SITE.into(),
            origin: format!("http://{origin}"),
            class: None,
            tls: false,
            redirect_to_https: true,
            cert: None,
            key: None,
            static_max_age_s: 1800,
            privacy: None,
        }];
        if !opts.auction_lots.is_empty() {
            gw_cfg.sites.push(gateway::config::Site {
                host: AUCTION_SITE.into(),
                origin: "http://auction.canopy".into(),
                class: None,
                tls: false,
                redirect_to_https: true,
                cert: None,
                key: None,
                static_max_age_s: 1800,
                privacy: None,
            });
        }
        gw_cfg.classes = vec![
            ClassRule {
                class: TrafficClass::Bid,
                host: None,
                path_prefix: Some("/bid".into()),
                method: Some("POST".into()),
            },
            ClassRule {
                class: TrafficClass::Bid,
                host: Some(AUCTION_SITE.into()),
                path_prefix: Some("/lots/".into()),
                method: Some("POST".into()),
            },
            ClassRule {
                class: TrafficClass::Checkin,
                host: None,
                path_prefix: Some("/checkin".into()),
                method: None,
            },
        ];
        gw_cfg.bids.journal = state_dir.0.join("bids.journal");
        gw_cfg.proxy.body_spool_dir = state_dir.0.join("body-spool");
        (opts.gateway_proxy)(&mut gw_cfg.proxy);
        if opts.https_site {
            // the site's certificate beside the journal, as a gateway reads it
            let site = certs
                .gateways
                .iter()
                .find(|l| l.role == crate::certs::Role::Site)
                .ok_or_else(|| anyhow::anyhow!("no site certificate"))?;
            let (cert, key) = (state_dir.0.join("site.pem"), state_dir.0.join("site.key"));
            std::fs::write(&cert, &site.pem.cert)?;
            crate::files::write(
                &key,
                site.pem.key.as_bytes(),
                crate::files::Access::Owner,
                crate::files::Existing::Replace,
            )?;
            gw_cfg.proxy.https_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
            if let Some(s) = gw_cfg.sites.first_mut() {
                s.tls = true;
                // the same site measured in cleartext too
                s.redirect_to_https = false;
                s.cert = Some(cert);
                s.key = Some(key);
            }
        }
        gw_cfg.checkin = opts.checkin.clone();
        gw_cfg.admin.listen = opts.admin;
        gw_cfg.admin.token_file = state_dir.0.join("admin.token");
        gw_cfg.admin.holds_file = state_dir.0.join("admin.holds.json");
        let gh = match &opts.network {
            Network::Loopback => {
                crate::runtime::spawn_gateway(&gw_cfg, &certs.gateway_tls(0)?).await?
            }
            Network::Virtual(net) => {
                let sockets = Arc::new(LinkSockets {
                    net: net.clone(),
                    ports,
                });
                crate::runtime::spawn_gateway_with(&gw_cfg, &certs.gateway_tls(0)?, sockets).await?
            }
        };
        let (proxy, bond, live) = (gh.proxy, gh.bond.clone(), gh.live.clone());
        if !bond.wait_usable(Duration::from_secs(10)).await {
            anyhow::bail!("no uplink of the gateway came up within 10 s");
        }
        // load placed before the other uplinks join would all start on the first one
        bond.wait_all_usable(Duration::from_secs(3)).await;
        Ok(Self {
            origin,
            origin_stats,
            relay,
            viewers,
            viewers_h3: rh.viewers.2,
            relayed: rh.relayed,
            contributor: gh.contributor,
            levels: gh.levels,
            links,
            proxy,
            bond,
            live,
            devices: gh.devices,
            https: gh.https,
            admin: match gh.admin {
                Some(a) => Some((
                    a,
                    std::fs::read_to_string(state_dir.0.join("admin.token"))?
                        .trim()
                        .to_owned(),
                )),
                None => None,
            },
            fleet: match rh.fleet {
                Some(a) => Some((
                    a,
                    std::fs::read_to_string(state_dir.0.join("fleet.token"))?
                        .trim()
                        .to_owned(),
                )),
                None => None,
            },
            ca_pem: certs.ca.pem().cert,
            _state_dir: state_dir,
        })
    }

    /// The first emulator's counters (zero without one).
    pub fn link_stats(&self) -> crate::linkem::LinkStats {
        self.links
            .first()
            .and_then(Option::as_ref)
            .map(LinkEmulator::stats)
            .unwrap_or_default()
    }

    /// The relay's viewer URL of a camera of the gateway.
    pub fn viewer_url(&self, camera: &str) -> String {
        format!(
            "http://{}/live/{DEMO_GATEWAY}/{camera}/index.m3u8",
            self.viewers
        )
    }

    /// URL of a path on the origin, for the explicit proxy.
    pub fn origin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.origin, path)
    }
}
