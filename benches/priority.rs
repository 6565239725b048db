//! Priority under a saturated, bufferbloated uplink.
//!
//! One emulated link, 10 Mbit/s each way, 40 ms RTT, 200 ms drop-tail queue. Parallel bulk
//! downloads and uploads saturate both directions while a small bid goes out every 100 ms
//! for 20 s. First with Canopy's low-delay tunnel, then, in the same process, with quinn's
//! default Cubic (FIFO: nothing keeps the queue short). Writes
//! target/canopy-bench/priority.json.
//!
//! cargo bench --bench priority

mod common;

use canopy::linkem::LinkProfile;
use canopy::load::{self, quantile, LoadStats};
use canopy::testbed::{TestLink, Testbed, TestbedOptions, DEMO_SITE};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel_io::{CongestionChoice, TransportSettings};

const RATE_KBPS: u64 = 10_000;
const ONE_WAY_MS: u64 = 20;
const QUEUE_MS: u64 = 200;

struct Run {
    base_p50: f64,
    p50: f64,
    p99: f64,
    bids: usize,
    bids_failed: u64,
    down_mbps: f64,
    up_mbps: f64,
    owd_up: f64,
    owd_down: f64,
}

async fn run(congestion: CongestionChoice, secs: u64) -> anyhow::Result<Run> {
    let bed = Testbed::start(TestbedOptions {
        links: vec![TestLink::new(
            "bench-10m",
            Some(LinkProfile::symmetric(
                "bench-10m",
                RATE_KBPS,
                ONE_WAY_MS,
                QUEUE_MS,
            )),
        )],
        tunnel: TransportSettings {
            congestion,
            // FIFO is quinn as it comes: Cubic and plain round-robin
            small_first: congestion != CongestionChoice::Cubic,
            ..TransportSettings::default()
        },
        proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics: None,
        record_dir: None,
        checkin: Default::default(),
        ..TestbedOptions::single(None)
    })
    .await?;
    let stats = Arc::new(LoadStats::default());
    let bid_url = format!("http://{DEMO_SITE}/bid");
    // Base: bids alone.
    let bids = tokio::spawn(load::transaction_loop(
        bed.proxy,
        bid_url.clone(),
        Duration::from_millis(100),
        false,
        stats.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let base = stats.bid_rtts_since(Instant::now() - Duration::from_secs(2));
    // Saturate both directions.
    let mut tasks = vec![bids];
    for _ in 0..3 {
        tasks.push(tokio::spawn(load::download_loop(
            bed.proxy,
            bed.origin_url("/assets/20000000"),
            stats.clone(),
        )));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(load::upload_loop(
            bed.proxy,
            bed.origin_url("/upload"),
            2_000_000,
            stats.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // let the queues build
    let from = Instant::now();
    let l0 = bed.link_stats();
    let (d0, u0, f0) = (
        stats.down_bytes.load(Ordering::Relaxed),
        bed.origin_stats.upload_bytes.load(Ordering::Relaxed),
        stats.bids_failed.load(Ordering::Relaxed),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let el = from.elapsed().as_secs_f64();
    let (d1, u1, f1) = (
        stats.down_bytes.load(Ordering::Relaxed),
        bed.origin_stats.upload_bytes.load(Ordering::Relaxed),
        stats.bids_failed.load(Ordering::Relaxed),
    );
    let (owd_up, owd_down) = bed.link_stats().mean_delay_ms_since(&l0);
    for t in &tasks {
        t.abort();
    }
    let rtts: Vec<f64> = {
        let v = stats
            .bid_rtts
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let mut v: Vec<f64> = v
            .iter()
            .filter(|(t, _)| *t >= from && t.duration_since(from).as_secs_f64() < el)
            .map(|(_, ms)| *ms)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    Ok(Run {
        base_p50: quantile(&base, 0.5),
        p50: quantile(&rtts, 0.5),
        p99: quantile(&rtts, 0.99),
        bids: rtts.len(),
        bids_failed: f1 - f0,
        down_mbps: (d1 - d0) as f64 * 8.0 / el / 1e6,
        up_mbps: (u1 - u0) as f64 * 8.0 / el / 1e6,
        owd_up,
        owd_down,
    })
}

fn main() -> anyhow::Result<()> {
    let secs = common::measure_secs(20);
    let rt = common::runtime()?;
    let (ours, fifo) = rt.block_on(async {
        let ours = run(CongestionChoice::LowDelay, secs).await?;
        let fifo = run(CongestionChoice::Cubic, secs).await?;
        anyhow::Ok((ours, fifo))
    })?;
    let link = RATE_KBPS as f64 / 1000.0;
    let goodput = (ours.down_mbps + ours.up_mbps) / 2.0;
    let json = serde_json::json!({
        "scenario": "priority",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
        "link_rate_mbps": link,
        "link_one_way_ms": ONE_WAY_MS,
        "queue_ms": QUEUE_MS,
        "measure_secs": secs,
        "base_rtt_ms": ours.base_p50,
        "bid_p50_ms": ours.p50,
        "bid_p99_ms": ours.p99,
        "bids_measured": ours.bids,
        "bids_failed": ours.bids_failed,
        "bulk_down_mbps": ours.down_mbps,
        "bulk_up_mbps": ours.up_mbps,
        "bulk_goodput_mbps": goodput,
        "link_mean_one_way_up_ms": ours.owd_up,
        "link_mean_one_way_down_ms": ours.owd_down,
        "fifo_link_mean_one_way_up_ms": fifo.owd_up,
        "fifo_link_mean_one_way_down_ms": fifo.owd_down,
        "fifo_base_rtt_ms": fifo.base_p50,
        "fifo_bid_p50_ms": fifo.p50,
        "fifo_bid_p99_ms": fifo.p99,
        "fifo_bids_failed": fifo.bids_failed,
        "fifo_bulk_down_mbps": fifo.down_mbps,
        "fifo_bulk_up_mbps": fifo.up_mbps,
        "target_bid_p99_ok": ours.p99 <= ours.base_p50 + 30.0,
        "target_vs_fifo_ok": ours.p99 <= fifo.p99 / 5.0,
        "target_goodput_ok": goodput >= 0.85 * link,
    });
    let path = common::write_json("priority", &json)?;
    println!(
        "priority: base {:.1} ms; bid p50 {:.1} / p99 {:.1} ms (fifo {:.1} / {:.1}); bulk down {:.2} up {:.2} Mbit/s of {link} (fifo {:.2} / {:.2}) link one-way up {:.1} down {:.1} ms (fifo {:.1} / {:.1}) -> {}",
        ours.base_p50, ours.p50, ours.p99, fifo.p50, fifo.p99, ours.down_mbps, ours.up_mbps, fifo.down_mbps, fifo.up_mbps, ours.owd_up, ours.owd_down, fifo.owd_up, fifo.owd_down, path.display()
    );
    Ok(())
}
