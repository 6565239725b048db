//! `canopy demo`: the whole path on one machine with no root and no config. A relay, a
//! gateway, the demo origin, and an emulated cellular uplink between gateway and relay;
//! scripted venue load (bulk downloads and uploads, a bid every 200 ms, a check-in every
//! second); one status line per second and a summary at the end.

use crate::linkem::{LinkEmulator, LinkProfile};
use crate::load::{self, LoadStats};
use crate::origin::{self, OriginStats};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel::{ClassRule, TrafficClass};
use tunnel_io::TransportSettings;

/// Host name venue devices use for the demo's bid and check-in service (a reverse site).
pub const DEMO_SITE: &str = "shop.canopy.test";

/// Relay, gateway, origin and link emulator, all on loopback.
pub struct Testbed {
    /// The demo origin's address.
    pub origin: SocketAddr,
    /// The origin's counters.
    pub origin_stats: Arc<OriginStats>,
    /// The relay's UDP address.
    pub relay: SocketAddr,
    /// The emulated link between gateway and relay (`None`: the gateway talks to the
    /// relay directly).
    pub link: Option<LinkEmulator>,
    /// The gateway's proxy address.
    pub proxy: SocketAddr,
    /// The gateway's uplink.
    pub uplink: gateway::Uplink,
}

/// What a testbed is built with.
pub struct TestbedOptions {
    /// The emulated uplink (`None`: direct, no emulator in the path).
    pub link: Option<LinkProfile>,
    /// QUIC transport settings at both ends.
    pub tunnel: TransportSettings,
    /// Proxy listen address (port 0: any).
    pub proxy_listen: SocketAddr,
    /// Prometheus endpoints (relay, gateway), if wanted.
    pub metrics: Option<(SocketAddr, SocketAddr)>,
}

impl Testbed {
    /// Starts everything and waits (up to 10 s) for the uplink.
    pub async fn start(opts: TestbedOptions) -> anyhow::Result<Self> {
        let certs = crate::certs::EventCerts::generate(
            "demo",
            &["localhost".into(), "127.0.0.1".into()],
            &["gateway".into()],
        )?;
        let origin_stats = Arc::new(OriginStats::default());
        let listener = origin::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let origin = listener.local_addr()?;
        tokio::spawn(origin::serve(listener, origin_stats.clone()));

        let mut relay_cfg = ingest_relay::RelayConfig::default();
        relay_cfg.relay.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        relay_cfg.egress.allow = vec![format!("127.0.0.1:{}", origin.port())];
        relay_cfg.tunnel = opts.tunnel.clone();
        relay_cfg.metrics.listen = opts.metrics.map(|m| m.0);
        let relay = crate::runtime::spawn_relay(&relay_cfg, &certs.relay_tls()?).await?;

        let link = match opts.link {
            Some(profile) => Some(
                LinkEmulator::start(SocketAddr::from(([127, 0, 0, 1], 0)), relay, profile).await?,
            ),
            None => None,
        };

        let mut gw_cfg = gateway::GatewayConfig::default();
        gw_cfg.relay.addr = link.as_ref().map_or(relay, |l| l.local_addr()).to_string();
        gw_cfg.relay.server_name = Some("localhost".into());
        gw_cfg.relay.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        gw_cfg.proxy.listen = opts.proxy_listen;
        gw_cfg.tunnel = opts.tunnel;
        gw_cfg.metrics.listen = opts.metrics.map(|m| m.1);
        gw_cfg.sites = vec![gateway::config::Site {
            host: DEMO_SITE.into(),
            origin: format!("http://127.0.0.1:{}", origin.port()),
            class: None,
        }];
        gw_cfg.classes = vec![
            ClassRule {
                class: TrafficClass::Bid,
                host: None,
                path_prefix: Some("/bid".into()),
                method: Some("POST".into()),
            },
            ClassRule {
                class: TrafficClass::Checkin,
                host: None,
                path_prefix: Some("/checkin".into()),
                method: None,
            },
        ];
        let (proxy, uplink) =
            crate::runtime::spawn_gateway(&gw_cfg, &certs.gateway_tls(0)?).await?;
        if !uplink.wait_up(Duration::from_secs(10)).await {
            anyhow::bail!("the gateway's uplink did not come up within 10 s");
        }
        Ok(Self {
            origin,
            origin_stats,
            relay,
            link,
            proxy,
            uplink,
        })
    }

    /// The emulator's counters (zero without one).
    pub fn link_stats(&self) -> crate::linkem::LinkStats {
        self.link
            .as_ref()
            .map(LinkEmulator::stats)
            .unwrap_or_default()
    }

    /// URL of a path on the origin, for the explicit proxy.
    pub fn origin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.origin.port(), path)
    }
}

/// Options of `canopy demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seconds to run; `None` runs until Ctrl-C.
    pub duration: Option<u64>,
    /// Where to write the JSON summary.
    pub summary: Option<PathBuf>,
    /// Link profile name or file.
    pub link: String,
    /// Parallel bulk downloads.
    pub downloads: usize,
    /// Proxy listen address.
    pub proxy_listen: SocketAddr,
    /// Congestion control of the tunnel.
    pub congestion: tunnel_io::CongestionChoice,
}

/// The demo's end summary (also written as JSON).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Seconds run.
    pub duration_s: f64,
    /// Link profile.
    pub link: String,
    /// Average download goodput through the tunnel, Mbit/s.
    pub down_mbps: f64,
    /// Average upload goodput, Mbit/s.
    pub up_mbps: f64,
    /// Bids answered.
    pub bids_ok: u64,
    /// Bids failed.
    pub bids_failed: u64,
    /// Bid round trip, median, ms.
    pub bid_p50_ms: f64,
    /// Bid round trip, 99th percentile, ms.
    pub bid_p99_ms: f64,
    /// Slowest bid, ms.
    pub bid_max_ms: f64,
    /// Check-ins answered.
    pub checkins_ok: u64,
    /// Check-ins failed.
    pub checkins_failed: u64,
    /// Bulk requests failed.
    pub bulk_failed: u64,
    /// Link emulator counters.
    pub link_stats: crate::linkem::LinkStats,
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    let profile = LinkProfile::load(&opts.link)?;
    let link_name = profile.name.clone();
    println!("canopy demo: relay, gateway and a demo origin on loopback, joined by an emulated {link_name} link");
    println!("  {}", profile.description);
    let bed = Testbed::start(TestbedOptions {
        link: Some(profile),
        tunnel: TransportSettings {
            congestion: opts.congestion,
            // `--congestion cubic` shows quinn as it comes: no small-first priorities either
            small_first: opts.congestion == tunnel_io::CongestionChoice::LowDelay,
            ..TransportSettings::default()
        },
        proxy_listen: opts.proxy_listen,
        metrics: None,
    })
    .await?;
    println!(
        "  gateway proxy http://{}  (try: curl -x http://{} {})",
        bed.proxy,
        bed.proxy,
        bed.origin_url("/assets/1000")
    );
    println!(
        "  load: {} bulk downloads, 1 bulk upload, a bid every 200 ms, a check-in every second",
        opts.downloads
    );

    let stats = Arc::new(LoadStats::default());
    let mut tasks = Vec::new();
    for _ in 0..opts.downloads {
        tasks.push(tokio::spawn(load::download_loop(
            bed.proxy,
            bed.origin_url("/assets/4000000"),
            stats.clone(),
        )));
    }
    tasks.push(tokio::spawn(load::upload_loop(
        bed.proxy,
        bed.origin_url("/upload"),
        1_000_000,
        stats.clone(),
    )));
    let site = format!("http://{DEMO_SITE}");
    tasks.push(tokio::spawn(load::transaction_loop(
        bed.proxy,
        format!("{site}/bid"),
        Duration::from_millis(200),
        false,
        stats.clone(),
    )));
    tasks.push(tokio::spawn(load::transaction_loop(
        bed.proxy,
        format!("{site}/checkin"),
        Duration::from_secs(1),
        true,
        stats.clone(),
    )));

    let started = Instant::now();
    let mut ticker = crate::runtime::SecondTicker::new();
    ticker.next().await;
    let (mut last_down, mut last_up, mut last_t) = (0u64, 0u64, started);
    while ticker.next().await {
        let now = Instant::now();
        let dt = now.duration_since(last_t).as_secs_f64();
        let down = stats.down_bytes.load(Ordering::Relaxed);
        // uploads counted as the origin receives them, not when each one completes
        let up = bed.origin_stats.upload_bytes.load(Ordering::Relaxed);
        let rtts = stats.bid_rtts_since(last_t);
        let ls = bed.link_stats();
        println!(
            "t={:>4.0}s  down {:>5.1} Mbit/s  up {:>5.1} Mbit/s  bids {:>2} ok (p50 {:>4.0} ms, max {:>4.0} ms) {} failed  link {} drops {}/{}",
            now.duration_since(started).as_secs_f64(),
            mbps(down - last_down, dt),
            mbps(up - last_up, dt),
            rtts.len(),
            load::quantile(&rtts, 0.5),
            rtts.last().copied().unwrap_or(f64::NAN),
            stats.bids_failed.load(Ordering::Relaxed),
            if bed.uplink.is_up() { "up" } else { "DOWN" },
            ls.up_dropped,
            ls.down_dropped,
        );
        (last_down, last_up, last_t) = (down, up, now);
        if opts
            .duration
            .is_some_and(|d| now.duration_since(started) >= Duration::from_secs(d))
        {
            break;
        }
    }
    for t in &tasks {
        t.abort();
    }
    let secs = started.elapsed().as_secs_f64();
    let rtts = stats.bid_rtts_since(started);
    let summary = Summary {
        duration_s: (secs * 10.0).round() / 10.0,
        link: link_name,
        down_mbps: mbps(stats.down_bytes.load(Ordering::Relaxed), secs),
        up_mbps: mbps(bed.origin_stats.upload_bytes.load(Ordering::Relaxed), secs),
        bids_ok: stats.bids_ok.load(Ordering::Relaxed),
        bids_failed: stats.bids_failed.load(Ordering::Relaxed),
        bid_p50_ms: load::quantile(&rtts, 0.5),
        bid_p99_ms: load::quantile(&rtts, 0.99),
        bid_max_ms: rtts.last().copied().unwrap_or(f64::NAN),
        checkins_ok: stats.checkins_ok.load(Ordering::Relaxed),
        checkins_failed: stats.checkins_failed.load(Ordering::Relaxed),
        bulk_failed: stats.bulk_failed.load(Ordering::Relaxed),
        link_stats: bed.link_stats(),
    };
    println!(
        "summary: {:.0} s over {}: down {:.1} Mbit/s, up {:.1} Mbit/s; bids {} ok / {} failed, p50 {:.0} ms, p99 {:.0} ms; check-ins {} ok / {} failed",
        summary.duration_s, summary.link, summary.down_mbps, summary.up_mbps, summary.bids_ok, summary.bids_failed,
        summary.bid_p50_ms, summary.bid_p99_ms, summary.checkins_ok, summary.checkins_failed
    );
    if let Some(path) = &opts.summary {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")?;
        println!("summary written to {}", path.display());
    }
    Ok(summary)
}

/// `configs/demo.toml`: the demo's settings; the file in the repository is also the
/// built-in default.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// `[demo]`
    pub demo: DemoSection,
}

/// `[demo]`
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSection {
    /// Link profile name or file.
    pub link: String,
    /// Seconds to run (absent: until Ctrl-C).
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// Parallel bulk downloads.
    pub downloads: usize,
    /// Proxy listen address.
    pub proxy_listen: SocketAddr,
}

const BUILTIN_DEMO: &str = include_str!("../configs/demo.toml");

impl DemoConfig {
    /// The built-in demo settings (configs/demo.toml).
    pub fn builtin() -> Self {
        // The file is part of the binary and a unit test parses it.
        toml::from_str(BUILTIN_DEMO).unwrap_or(Self {
            demo: DemoSection {
                link: "cellular-4g".into(),
                duration_s: None,
                downloads: 2,
                proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
        })
    }
}

impl crate::config::Validate for DemoConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Err(e) = LinkProfile::load(&self.demo.link) {
            errs.push(("demo.link".into(), e.to_string()));
        }
        if self.demo.downloads > 64 {
            errs.push(("demo.downloads".into(), "at most 64".into()));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_demo_config_parses() {
        let cfg: super::DemoConfig =
            toml::from_str(super::BUILTIN_DEMO).expect("configs/demo.toml");
        assert!(crate::config::Validate::validate(&cfg).is_empty());
    }
}
