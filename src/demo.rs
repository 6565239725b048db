//! `canopy demo`: the whole path on one machine with no root and no config. A relay, a
//! gateway, the demo origin, and three emulated uplinks between gateway and relay (cellular,
//! Wi-Fi, satellite as backup), bonded; scripted venue load (bulk downloads and uploads, a
//! bid every 200 ms, a check-in every second); the busiest uplink is cut for 5 s in the
//! middle; one status line per second and a summary at the end.

use crate::linkem::LinkProfile;
use crate::load::{self, LoadStats};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel::path::{LinkKind, Tier};
use tunnel_io::TransportSettings;

use crate::testbed::{Network, TestLink, Testbed, TestbedOptions, DEMO_GATEWAY, DEMO_SITE};

/// Options of `canopy demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seconds to run; `None` runs until Ctrl-C.
    pub duration: Option<u64>,
    /// Where to write the JSON summary.
    pub summary: Option<PathBuf>,
    /// The emulated uplinks.
    pub uplinks: Vec<DemoUplink>,
    /// Cut the busiest uplink for this many seconds in the middle of the run (0: never).
    pub cut_for_s: u64,
    /// Parallel bulk downloads.
    pub downloads: usize,
    /// Proxy listen address.
    pub proxy_listen: SocketAddr,
    /// Congestion control of the tunnel.
    pub congestion: tunnel_io::CongestionChoice,
    /// Serve both ends' Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
}

/// One emulated uplink of the demo (`[[demo.uplinks]]`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUplink {
    /// Uplink name.
    pub name: String,
    /// Link kind.
    #[serde(default)]
    pub kind: LinkKind,
    /// Cost tier.
    #[serde(default)]
    pub tier: Tier,
    /// Link profile: built-in name or file.
    pub link: String,
}

/// One uplink in the summary.
#[derive(Debug, Serialize)]
pub struct LinkSummary {
    /// Name.
    pub name: String,
    /// Cost tier.
    pub tier: String,
    /// Health at the end.
    pub state: String,
    /// Average goodput towards the relay, Mbit/s.
    pub up_mbps: f64,
    /// Average goodput from the relay, Mbit/s.
    pub down_mbps: f64,
    /// Times it was demoted.
    pub demotions: u64,
}

/// The demo's end summary (also written as JSON).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Seconds run.
    pub duration_s: f64,
    /// Link profiles, in uplink order.
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
    /// The uplink that was cut, when, and for how long (s).
    pub cut: Option<(String, f64, u64)>,
    /// Per uplink.
    pub links: Vec<LinkSummary>,
    /// First link emulator's counters.
    pub link_stats: crate::linkem::LinkStats,
    /// The demo camera.
    pub camera: CameraSummary,
}

/// The demo camera in the summary.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CameraSummary {
    /// Frames packaged.
    pub frames: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Parts made.
    pub parts: u64,
    /// Segments made.
    pub segments: u64,
    /// The on-site media playlist was served with parts and a preload hint.
    pub playlist_ok: bool,
    /// Where viewers watch it: the relay's URL.
    pub viewer_url: String,
    /// Parts the relay put together from what the gateway sent.
    pub relay_parts: u64,
    /// Gap parts the relay listed (media that did not arrive in time, no still part made).
    pub relay_gap_parts: u64,
    /// Still parts the relay listed (media that did not arrive in time: the picture held).
    pub relay_still_parts: u64,
    /// Glass to relay (capture of a part's first frame to the part whole at the relay),
    /// median, ms.
    pub glass_to_relay_p50_ms: f64,
    /// Glass to relay, 95th percentile, ms.
    pub glass_to_relay_p95_ms: f64,
    /// The longest the relay's newest whole part did not move on, ms: what a viewer's
    /// blocking playlist request waits at most (hls.js gives up on one after 800 ms here).
    pub relay_stall_max_ms: u64,
    /// The relay's media playlist was served with parts and a preload hint.
    pub relay_playlist_ok: bool,
    /// Bytes the gateway sent again as copies of late pieces, over all it sent.
    pub redundant_ratio: f64,
}

/// From parts' (capture ms, glass-to-relay ms): the longest time between two moves of the
/// relay's newest whole part (a part joins the playlist once every part before it is whole).
fn longest_stall(samples: &[(u64, u64)]) -> u64 {
    let mut by_capture = samples.to_vec();
    by_capture.sort_unstable();
    let mut newest: Option<u64> = None;
    let mut longest = 0;
    for (capture, latency) in by_capture {
        let whole = capture + latency;
        if let Some(prev) = newest {
            if whole > prev {
                longest = longest.max(whole - prev);
            }
        }
        newest = Some(newest.map_or(whole, |p| p.max(whole)));
    }
    longest
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e6
}

/// Runs the demo.
pub async fn run(opts: DemoOptions) -> anyhow::Result<Summary> {
    // the recorder before anything counts
    let metrics = match opts.metrics {
        Some(a) => Some(crate::runtime::spawn_metrics(a).await?),
        None => None,
    };
    let mut links = Vec::new();
    for u in &opts.uplinks {
        links.push(TestLink {
            name: u.name.clone(),
            kind: u.kind,
            tier: u.tier,
            profile: Some(LinkProfile::load(&u.link)?),
        });
    }
    anyhow::ensure!(!links.is_empty(), "the demo needs at least one uplink");
    let link_names: Vec<String> = opts.uplinks.iter().map(|u| u.link.clone()).collect();
    let descriptions: Vec<String> = links
        .iter()
        .filter_map(|l| {
            l.profile
                .as_ref()
                .map(|p| format!("  {:<10} {:<9} {}", l.name, l.tier.as_str(), p.description))
        })
        .collect();
    let bed = Testbed::start(TestbedOptions {
        links,
        tunnel: TransportSettings {
            congestion: opts.congestion,
            // `--congestion cubic` shows quinn as it comes: no small-first priorities either
            small_first: opts.congestion == tunnel_io::CongestionChoice::LowDelay,
            ..TransportSettings::default()
        },
        proxy_listen: opts.proxy_listen,
        metrics: None,
        record_dir: None,
        checkin: Default::default(),
        network: Network::Loopback,
        auction_lots: Vec::new(),
        https_site: false,
        admin: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        fleet: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        gateway_proxy: |_| {},
        relay_egress: |_| {},
    })
    .await?;
    if let Some((addr, token)) = &bed.admin {
        // first: the one place that shows everything below, live
        println!("status page: http://{addr}/#token={token}");
        println!("  (or in a terminal: curl -H 'Authorization: Bearer {token}' http://{addr}/api/status)");
    }
    if let Some((addr, token)) = &bed.fleet {
        println!("fleet page (the relay's view of every gateway): http://{addr}/#token={token}");
    }
    if let Some(m) = metrics {
        println!("metrics: http://{m}/metrics (Prometheus text, relay and gateway)");
    }
    let camera = bed.add_demo_camera("demo")?;
    let viewer_url = bed.viewer_url("demo");
    println!("watch live: {viewer_url}");
    println!(
        "  (the relay's LL-HLS, over HTTP/1.1{}; ffplay, mpv, VLC, Safari or hls.js play it)",
        bed.viewers_h3
            .map(|a| format!(", and HTTP/3 on udp/{}", a.port()))
            .unwrap_or_default()
    );
    println!(
        "canopy demo: a camera, a venue gateway, a relay and a demo shop on loopback, joined by {} emulated uplink(s), bonded:",
        descriptions.len()
    );
    for d in &descriptions {
        println!("{d}");
    }
    println!(
        "  camera: a looped H.264+AAC clip as a live camera -> gateway (200 ms parts, sent frame by frame) -> every uplink -> relay"
    );
    println!(
        "  on-site screens: http://{}/live/demo/index.m3u8 (the gateway's own LL-HLS)",
        bed.proxy
    );
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
    // the busiest uplink is cut for cut_for_s in the middle of the run (at 10 s without an end)
    let cut_at = match opts.duration {
        _ if opts.cut_for_s == 0 || bed.links.len() < 2 => None,
        Some(d) => Some(Duration::from_secs_f64(
            (d as f64 - opts.cut_for_s as f64).max(0.0) / 2.0,
        )),
        None => Some(Duration::from_secs(10)),
    };
    if let Some(at) = cut_at {
        println!(
            "  at t={:.0}s the busiest uplink is cut for {} s",
            at.as_secs_f64(),
            opts.cut_for_s
        );
    }

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
    let paths = bed.bond.paths().to_vec();
    let mut path_bytes: Vec<(u64, u64)> = vec![(0, 0); paths.len()];
    let mut cut: Option<(usize, Instant)> = None;
    let mut cut_summary = None;
    let mut cut_at_done = false;
    while ticker.next().await {
        let now = Instant::now();
        let t = now.duration_since(started);
        let dt = now.duration_since(last_t).as_secs_f64();
        let down = stats.down_bytes.load(Ordering::Relaxed);
        // uploads counted as the origin receives them, not when each one completes
        let up = bed.origin_stats.upload_bytes.load(Ordering::Relaxed);
        let rtts = stats.bid_rtts_since(last_t);
        let mut line = format!(
            "t={:>4.0}s down {:>5.1} up {:>4.1} Mbit/s | bids {:>2} ok p50 {:>4.0} max {:>4.0} ms, {} failed |",
            t.as_secs_f64(),
            mbps(down - last_down, dt),
            mbps(up - last_up, dt),
            rtts.len(),
            load::quantile(&rtts, 0.5),
            rtts.last().copied().unwrap_or(f64::NAN),
            stats.bids_failed.load(Ordering::Relaxed),
        );
        let mut rates = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let st = p.status();
            let (u, d) = (
                p.bytes_up.load(Ordering::Relaxed),
                p.bytes_down.load(Ordering::Relaxed),
            );
            let (pu, pd) = path_bytes[i];
            path_bytes[i] = (u, d);
            rates.push(u - pu + d - pd);
            let cut_mark = if cut.is_some_and(|(c, _)| c == i) {
                " CUT"
            } else {
                ""
            };
            line.push_str(&format!(
                " {} {}{} {:.1}/{:.1} {:.0}ms |",
                p.name,
                st.health,
                cut_mark,
                mbps(d - pd, dt),
                mbps(u - pu, dt),
                st.srtt.as_secs_f64() * 1000.0
            ));
        }
        let since_ms = media_io::wall_ms().saturating_sub((dt * 1000.0) as u64);
        match bed
            .relayed
            .get(DEMO_GATEWAY, "demo", media_io::program::PROGRAM)
        {
            Some(m) => {
                let mut lat: Vec<f64> = m
                    .latency()
                    .iter()
                    .filter(|(cap, _)| *cap >= since_ms.saturating_sub(1000))
                    .map(|(_, l)| *l as f64)
                    .collect();
                lat.sort_by(f64::total_cmp);
                let (state, st, _) = m.state();
                line.push_str(&format!(
                    " live {} glass->relay p50 {:>4.0} ms, {} still + {} gap parts",
                    format!("{state:?}").to_lowercase(),
                    load::quantile(&lat, 0.5),
                    st.still_parts,
                    st.gap_parts
                ));
            }
            None => line.push_str(" live starting"),
        }
        if let Some(l) = &bed.levels {
            for c in l.snapshot() {
                line.push_str(&format!(" | level {}", c.level));
            }
        }
        println!("{line}");
        if let (Some(at), None, false) = (cut_at, cut, cut_at_done) {
            if t >= at {
                let busiest = (0..rates.len()).max_by_key(|i| rates[*i]).unwrap_or(0);
                if let Some(Some(l)) = bed.links.get(busiest) {
                    l.set_outage(true);
                    println!(
                        "  cut: uplink {} goes dark for {} s",
                        paths[busiest].name, opts.cut_for_s
                    );
                    cut = Some((busiest, now));
                    cut_summary = Some((
                        paths[busiest].name.clone(),
                        (t.as_secs_f64() * 10.0).round() / 10.0,
                        opts.cut_for_s,
                    ));
                }
            }
        }
        if let Some((i, since)) = cut {
            if now.duration_since(since) >= Duration::from_secs(opts.cut_for_s) {
                if let Some(Some(l)) = bed.links.get(i) {
                    l.set_outage(false);
                    println!("  restored: uplink {}", paths[i].name);
                    cut = None;
                    cut_at_done = true;
                }
            }
        }
        (last_down, last_up, last_t) = (down, up, now);
        if opts.duration.is_some_and(|d| t >= Duration::from_secs(d)) {
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
        link: link_names.join("+"),
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
        cut: cut_summary,
        links: paths
            .iter()
            .map(|p| {
                let st = p.status();
                LinkSummary {
                    name: p.name.clone(),
                    tier: p.tier().as_str().into(),
                    state: st.health.as_str().into(),
                    up_mbps: mbps(p.bytes_up.load(Ordering::Relaxed), secs),
                    down_mbps: mbps(p.bytes_down.load(Ordering::Relaxed), secs),
                    demotions: st.demotions,
                }
            })
            .collect(),
        link_stats: bed.link_stats(),
        camera: {
            let st = camera.main().with(|r| r.stats());
            let pl = match bed.live.serve("demo/main/stream.m3u8", None).await {
                Ok(r) => http_body_util::BodyExt::collect(r.into_body())
                    .await
                    .map(|c| c.to_bytes())
                    .ok(),
                Err(_) => None,
            };
            let text = String::from_utf8_lossy(pl.as_deref().unwrap_or_default());
            let relay_text = match bed
                .relayed
                .serve(
                    &format!(
                        "{DEMO_GATEWAY}/demo/{}/stream.m3u8",
                        media_io::program::PROGRAM
                    ),
                    None,
                    "",
                )
                .await
            {
                Ok(r) => http_body_util::BodyExt::collect(r.into_body())
                    .await
                    .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
            let (relay_parts, relay_gap_parts, relay_still_parts, mut lat, relay_stall_max_ms) =
                match bed
                    .relayed
                    .get(DEMO_GATEWAY, "demo", media_io::program::PROGRAM)
                {
                    Some(m) => {
                        let (_, ms, _) = m.state();
                        let samples = m.latency();
                        let lat: Vec<f64> = samples.iter().map(|(_, l)| *l as f64).collect();
                        let stall = longest_stall(&samples);
                        (ms.parts, ms.gap_parts, ms.still_parts, lat, stall)
                    }
                    None => (0, 0, 0, Vec::new(), 0),
                };
            lat.sort_by(f64::total_cmp);
            let c = bed
                .contributor
                .as_ref()
                .map(|c| c.status().bytes)
                .unwrap_or_default();
            let sent = c.first_bytes + c.copy_bytes + c.again_bytes;
            CameraSummary {
                frames: st.frames,
                dropped: st.dropped,
                parts: st.parts,
                segments: st.segments,
                playlist_ok: text.contains("#EXT-X-PART:") && text.contains("#EXT-X-PRELOAD-HINT"),
                viewer_url: viewer_url.clone(),
                relay_parts,
                relay_gap_parts,
                relay_still_parts,
                glass_to_relay_p50_ms: load::quantile(&lat, 0.5),
                glass_to_relay_p95_ms: load::quantile(&lat, 0.95),
                relay_stall_max_ms,
                relay_playlist_ok: relay_text.contains("#EXT-X-PART:")
                    && relay_text.contains("#EXT-X-PRELOAD-HINT"),
                redundant_ratio: c.copy_bytes as f64 / (sent.max(1)) as f64,
            }
        },
    };
    println!(
        "summary: {:.0} s over {}: down {:.1} Mbit/s, up {:.1} Mbit/s; bids {} ok / {} failed, p50 {:.0} ms, p99 {:.0} ms; check-ins {} ok / {} failed; bulk failures {}",
        summary.duration_s, summary.link, summary.down_mbps, summary.up_mbps, summary.bids_ok, summary.bids_failed,
        summary.bid_p50_ms, summary.bid_p99_ms, summary.checkins_ok, summary.checkins_failed, summary.bulk_failed
    );
    let cam = &summary.camera;
    println!(
        "camera: {} frames, {} parts, {} segments; at the relay {} parts, {} still and {} gap parts, glass->relay p50 {:.0} ms p95 {:.0} ms, longest wait for a part {} ms, copies {:.1}% of the bytes; playlists {}",
        cam.frames,
        cam.parts,
        cam.segments,
        cam.relay_parts,
        cam.relay_still_parts,
        cam.relay_gap_parts,
        cam.glass_to_relay_p50_ms,
        cam.glass_to_relay_p95_ms,
        cam.relay_stall_max_ms,
        cam.redundant_ratio * 100.0,
        if cam.playlist_ok && cam.relay_playlist_ok {
            "ok"
        } else {
            "MISSING"
        }
    );
    println!("watched at {}", cam.viewer_url);
    for l in &summary.links {
        println!(
            "  {:<10} {:<9} {:<10} down {:>5.1} up {:>4.1} Mbit/s, {} demotion(s)",
            l.name, l.tier, l.state, l.down_mbps, l.up_mbps, l.demotions
        );
    }
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
    /// Seconds to run (absent: until Ctrl-C).
    #[serde(default)]
    pub duration_s: Option<u64>,
    /// Parallel bulk downloads.
    pub downloads: usize,
    /// Proxy listen address.
    pub proxy_listen: SocketAddr,
    /// Cut the busiest uplink for this many seconds in the middle of the run (0: never).
    #[serde(default)]
    pub cut_for_s: u64,
    /// `[[demo.uplinks]]`: the emulated uplinks.
    pub uplinks: Vec<DemoUplink>,
}

const BUILTIN_DEMO: &str = include_str!("../configs/demo.toml");

impl DemoConfig {
    /// The built-in demo settings (configs/demo.toml).
    pub fn builtin() -> Self {
        // The file is part of the binary and a unit test parses it.
        toml::from_str(BUILTIN_DEMO).unwrap_or(Self {
            demo: DemoSection {
                duration_s: None,
                downloads: 2,
                proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                cut_for_s: 0,
                uplinks: vec![DemoUplink {
                    name: "cellular".into(),
                    kind: LinkKind::Cellular,
                    tier: Tier::Primary,
                    link: "cellular-4g".into(),
                }],
            },
        })
    }
}

impl crate::config::Validate for DemoConfig {
    fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if self.demo.uplinks.is_empty() || self.demo.uplinks.len() > 8 {
            errs.push(("demo.uplinks".into(), "one to eight uplinks".into()));
        }
        for (i, u) in self.demo.uplinks.iter().enumerate() {
            if let Err(e) = LinkProfile::load(&u.link) {
                errs.push((format!("demo.uplinks[{i}].link"), e.to_string()));
            }
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
    fn the_longest_stall_counts_from_the_newest_whole_part() {
        // parts every 200 ms; the third is 900 ms late, the fourth waits on it
        let samples = [(0, 250), (200, 250), (400, 900), (600, 300), (800, 250)];
        // whole at 250, 450, 1300, 900 (listed at 1300), 1050 (listed at 1300)
        assert_eq!(super::longest_stall(&samples), 850);
        assert_eq!(super::longest_stall(&[]), 0);
        assert_eq!(super::longest_stall(&[(0, 100)]), 0);
    }

    #[test]
    fn builtin_demo_config_parses() {
        let cfg: super::DemoConfig =
            toml::from_str(super::BUILTIN_DEMO).expect("configs/demo.toml");
        assert!(crate::config::Validate::validate(&cfg).is_empty());
    }
}
