//! Bids bench: a bid burst through a saturated link, the journal's fsync'd append rate,
//! check-in with every uplink down, and bids while one device abuses the proxy.
//!
//! One emulated link, 10 Mbit/s each way, 40 ms RTT, 200 ms drop-tail queue, saturated by
//! three bulk downloads and two uploads. The burst: 50 clients send 10 bids each over 1 s
//! (500 bids, each with its own Idempotency-Key); `lost` counts bids that were not answered
//! 200/202 or never reached the origin, `duplicated` keys the origin got more than once.
//! The journal: 64 writers appending 200-byte bids, fsync'd with group commit, 3 s, last
//! (its writes stalled the fsyncs of the phases after it).
//! Check-in: 200 token check-ins at the gateway after every uplink was cut. Abuse: one
//! device (its own loopback address) tries to open 5000 idle CONNECT tunnels and 200
//! uploads that stall after their first bytes, while bids from other devices go every
//! 100 ms (the gateway's per-device limits refuse the tunnels beyond 256 and the requests
//! beyond 256 in flight with 429). Each bidder of the burst is a device of its own.
//!
//! `cargo bench --bench bids` -> target/canopy-bench/bids.json: burst_bids, lost,
//! duplicated, bid_p50_ms, bid_p99_ms (the burst's bids answered 200), base_rtt_ms,
//! journal_appends_per_sec, checkin_p99_ms_offline, bid_p99_ms_under_abuse; and, to tell
//! where a bid waits, burst_link_delay_up_ms / _down_ms: the link's mean one-way delay
//! (latency plus queue) during the burst; burst_link_use_up / _down: the bytes the link
//! delivered during the burst over what its rate allows (bulk must keep the link full).

mod common;

use canopy::linkem::LinkProfile;
use canopy::load::{self, quantile, LoadStats, ProxyClient};
use canopy::testbed::{TestLink, Testbed, TestbedOptions, DEMO_SITE};
use hyper::Method;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tunnel_io::TransportSettings;

const RATE_KBPS: u64 = 10_000;
const ONE_WAY_MS: u64 = 20;
const QUEUE_MS: u64 = 200;
const CLIENTS: usize = 50;
const BIDS_PER_CLIENT: usize = 10;
const ABUSE_TUNNELS: usize = 5000;
const ABUSE_UPLOADS: usize = 200;
const EVENT: &str = "bench-fair";

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Appends per second through the journal (fsync'd, group commit), and each append's
/// wait (p50, p99 ms).
async fn journal_rate(secs: u64) -> anyhow::Result<(f64, f64, f64)> {
    let dir = std::env::temp_dir().join(format!("canopy-bench-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bids.journal");
    let journal = ledger_io::Journal::start(path.clone(), ledger_io::open(&path)?)?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let j = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline && i < 100_000 {
                let body = format!("{{\"lot\":{w},\"amount\":{i},\"pad\":\"{:0>150}\"}}", 0);
                let e = ledger::Entry::Accepted(ledger::Accepted {
                    key: format!("w{w}-{i}"),
                    kind: ledger::Kind::Bid,
                    edge_us: i,
                    clock_known: true,
                    fingerprint: ledger::fingerprint("POST", "http://a/bid", body.as_bytes()),
                    method: "POST".into(),
                    target: "http://a/bid".into(),
                    headers: vec![],
                    body: body.into_bytes(),
                });
                let t = Instant::now();
                if j.append(&e).await.is_err() {
                    break;
                }
                waits.push(t.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            waits
        }));
    }
    let t0 = Instant::now();
    let mut waits = Vec::new();
    for t in tasks {
        waits.extend(t.await?);
    }
    let rate = waits.len() as f64 / t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let w = sorted(waits);
    Ok((rate, quantile(&w, 0.5), quantile(&w, 0.99)))
}

struct Burst {
    sent: usize,
    answered_ok: usize,
    receipts: usize,
    unanswered: usize,
    lost: usize,
    duplicated: usize,
    p50: f64,
    p99: f64,
}

/// 50 clients × 10 bids over 1 s; then waits (up to 60 s) for receipts to be delivered.
async fn burst(bed: &Testbed) -> anyhow::Result<Burst> {
    let url = format!("http://{DEMO_SITE}/bid");
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (proxy, url) = (bed.proxy, url.clone());
        tasks.push(tokio::spawn(async move {
            // spread the clients over the first 100 ms, then one bid each 100 ms
            tokio::time::sleep(Duration::from_millis((c as u64 * 100) / CLIENTS as u64)).await;
            // each bidder is a device of its own
            let me = std::net::IpAddr::from([127, 0, 1, c as u8 + 1]);
            let mut client = ProxyClient::from(proxy, me);
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..BIDS_PER_CLIENT {
                tick.tick().await;
                let key = format!("burst-{c}-{i}");
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    client.send(
                        Method::POST,
                        &url,
                        &[
                            ("content-type", "application/json"),
                            ("idempotency-key", &key),
                        ],
                        load::small("{\"lot\":7,\"amount\":120}"),
                        None,
                    ),
                )
                .await;
                let status = match r {
                    Ok(Ok((s, _))) => s,
                    _ => {
                        client = ProxyClient::from(proxy, me);
                        0
                    }
                };
                out.push((key, status, t.elapsed().as_secs_f64() * 1000.0));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await?);
    }
    let want: Vec<&String> = results
        .iter()
        .filter(|(_, s, _)| *s == 200 || *s == 202)
        .map(|(k, _, _)| k)
        .collect();
    let counts = || -> HashMap<String, usize> {
        let mut m = HashMap::new();
        if let Ok(log) = bed.origin_stats.bid_keys.lock() {
            for k in log.iter().filter(|k| k.starts_with("burst-")) {
                *m.entry(k.clone()).or_insert(0) += 1;
            }
        }
        m
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && want.iter().any(|k| !counts().contains_key(*k)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = counts();
    let unanswered = results.len() - want.len();
    Ok(Burst {
        sent: results.len(),
        answered_ok: results.iter().filter(|(_, s, _)| *s == 200).count(),
        receipts: results.iter().filter(|(_, s, _)| *s == 202).count(),
        unanswered,
        lost: unanswered + want.iter().filter(|k| !got.contains_key(**k)).count(),
        duplicated: got.values().filter(|n| **n > 1).count(),
        p50: quantile(
            &sorted(results.iter().filter(|r| r.1 == 200).map(|r| r.2).collect()),
            0.5,
        ),
        p99: quantile(
            &sorted(results.iter().filter(|r| r.1 == 200).map(|r| r.2).collect()),
            0.99,
        ),
    })
}

/// Check-ins at the gateway (origin-form `POST /checkins`), each's round trip in ms, and
/// how many were admitted.
async fn check_ins(bed: &Testbed, tokens: &[String]) -> (Vec<f64>, usize) {
    let mut client = ProxyClient::new(bed.proxy);
    let host = bed.proxy.to_string();
    let mut rtts = Vec::new();
    let mut admitted = 0;
    for t in tokens {
        let start = Instant::now();
        let r = client
            .send(
                Method::POST,
                "/checkins",
                &[("host", &host), ("content-type", "text/plain")],
                load::bytes(t.clone()),
                None,
            )
            .await;
        rtts.push(start.elapsed().as_secs_f64() * 1000.0);
        if matches!(r, Ok((200, _))) {
            admitted += 1;
        }
    }
    (sorted(rtts), admitted)
}

/// A connection from the abusive device (its own loopback address).
async fn abuser(proxy: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from(([127, 0, 0, 66], 0)))?;
    sock.connect(proxy).await
}

/// The start of the answer on a raw connection (up to 1 s).
async fn first_line(tcp: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        _ => String::new(),
    }
}

/// What the abusive device got.
struct Abuse {
    rtts: Vec<f64>,
    failed: u64,
    tunnels_open: usize,
    tunnels_refused: usize,
    uploads: usize,
}

/// Bids every 100 ms for `secs` from other devices while one device tries to hold
/// `ABUSE_TUNNELS` idle tunnels and `ABUSE_UPLOADS` stalled uploads.
async fn under_abuse(bed: &Testbed, secs: u64) -> anyhow::Result<Abuse> {
    let proxy = bed.proxy;
    let origin = bed.origin;
    let mut held = Vec::new();
    let (mut tunnels_open, mut tunnels_refused) = (0, 0);
    for _ in 0..ABUSE_TUNNELS {
        let Ok(mut tcp) = abuser(proxy).await else {
            break;
        };
        let req = format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
        if tcp.write_all(req.as_bytes()).await.is_err() {
            break;
        }
        let line = first_line(&mut tcp).await;
        if line.contains(" 200") {
            tunnels_open += 1;
            held.push(tcp);
        } else {
            tunnels_refused += 1;
        }
    }
    let mut uploads = 0;
    for i in 0..ABUSE_UPLOADS {
        let Ok(mut tcp) = abuser(proxy).await else {
            break;
        };
        let req = format!(
            "POST http://{DEMO_SITE}/upload HTTP/1.1\r\nHost: {DEMO_SITE}\r\nContent-Length: 100000000\r\n\r\nstalled-upload-{i}"
        );
        if tcp.write_all(req.as_bytes()).await.is_err() {
            break;
        }
        uploads += 1;
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = Arc::new(LoadStats::default());
    let bids = tokio::spawn(load::transaction_loop(
        proxy,
        format!("http://{DEMO_SITE}/bid"),
        Duration::from_millis(100),
        false,
        stats.clone(),
    ));
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    bids.abort();
    drop(held);
    let rtts = stats.bid_rtts_since(from);
    let failed = stats.bids_failed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Abuse {
        rtts,
        failed,
        tunnels_open,
        tunnels_refused,
        uploads,
    })
}

fn main() -> anyhow::Result<()> {
    let secs = common::measure_secs(10);
    let rt = common::runtime()?;
    let json = rt.block_on(async {
        let (key_doc, issuer) =
            ledger::token::Issuer::generate().map_err(|_| anyhow::anyhow!("no key"))?;
        drop(key_doc);
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
            tunnel: TransportSettings::default(),
            proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics: None,
            record_dir: None,
            checkin: gateway::config::CheckinSection {
                public_key: Some(issuer.public_key()),
                event: EVENT.into(),
                ..Default::default()
            },
            ..TestbedOptions::single(None)
        })
        .await?;

        // base: bids alone
        let stats = Arc::new(LoadStats::default());
        let base_loop = tokio::spawn(load::transaction_loop(
            bed.proxy,
            format!("http://{DEMO_SITE}/bid"),
            Duration::from_millis(100),
            false,
            stats.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        base_loop.abort();
        let base = stats.bid_rtts_since(Instant::now() - Duration::from_secs(2));
        let base_rtt = quantile(&base, 0.5);

        // saturate both directions, then the burst
        let bulk_stats = Arc::new(LoadStats::default());
        let mut bulk = Vec::new();
        for _ in 0..3 {
            bulk.push(tokio::spawn(load::download_loop(
                bed.proxy,
                bed.origin_url("/assets/20000000"),
                bulk_stats.clone(),
            )));
        }
        for _ in 0..2 {
            bulk.push(tokio::spawn(load::upload_loop(
                bed.proxy,
                bed.origin_url("/upload"),
                2_000_000,
                bulk_stats.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let link = bed.links.iter().flatten().next();
        let before = link.map(|l| l.stats()).unwrap_or_default();
        let started = Instant::now();
        let b = burst(&bed).await?;
        let after = link.map(|l| l.stats()).unwrap_or_default();
        let (burst_up_ms, burst_down_ms) = after.mean_delay_ms_since(&before);
        // what the link carried meanwhile, of its rate: a low bid delay bought by leaving
        // the link idle would show here
        let carried = |bytes: u64| {
            bytes as f64 * 8.0 / (RATE_KBPS as f64 * 1000.0 * started.elapsed().as_secs_f64())
        };
        let burst_link_use_up = carried(after.up_bytes.saturating_sub(before.up_bytes));
        let burst_link_use_down = carried(after.down_bytes.saturating_sub(before.down_bytes));
        for t in &bulk {
            t.abort();
        }

        // the abusive device
        tokio::time::sleep(Duration::from_secs(1)).await;
        let abuse = under_abuse(&bed, secs).await?;
        let (abuse_rtts, abuse_failed) = (abuse.rtts, abuse.failed);

        // every uplink down: check-in at the door
        for l in bed.links.iter().flatten() {
            l.set_outage(true);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = common::unix_time();
        let tokens: Vec<String> = (0..200)
            .map(|i| {
                issuer.issue(&ledger::token::Grant {
                    event: EVENT.into(),
                    attendee: format!("A-{i:04}"),
                    id: format!("t-{i:04}"),
                    not_before: now - 60,
                    expires: now + 3600,
                })
            })
            .collect();
        let (ci, admitted) = check_ins(&bed, &tokens).await;
        for l in bed.links.iter().flatten() {
            l.set_outage(false);
        }

        // the journal's own rate last, with the testbed gone: its 3 s write some 150 MB to
        // the disk the testbed's journals share. Run first, fsyncs of 34-239 ms came after
        // it in 4 of 12 traced runs, one of them in the burst (its p99: 169 ms), and a
        // separate process's fsyncs stalled with them (8 over 20 ms beside four runs).
        // Without it, none over 5 ms in 8 traced runs, and 1 over 20 ms beside eight: the
        // disk stalls on its own too, less often (an untraced run later read a p99 of 173 ms)
        drop(bed);
        let (appends, append_p50, append_p99) = journal_rate(3).await?;
        let bid_p99_abuse = quantile(&abuse_rtts, 0.99);
        let checkin_p99 = quantile(&ci, 0.99);
        anyhow::Ok(serde_json::json!({
            "scenario": "bids",
            "git_rev": common::git_rev(),
            "unix_time": common::unix_time(),
            "link_rate_mbps": RATE_KBPS as f64 / 1000.0,
            "link_one_way_ms": ONE_WAY_MS,
            "queue_ms": QUEUE_MS,
            "burst_bids": b.sent,
            "burst_answered_200": b.answered_ok,
            "burst_receipts_202": b.receipts,
            "burst_unanswered": b.unanswered,
            "lost": b.lost,
            "duplicated": b.duplicated,
            "base_rtt_ms": base_rtt,
            "bid_p50_ms": b.p50,
            "bid_p99_ms": b.p99,
            "burst_link_delay_up_ms": burst_up_ms,
            "burst_link_delay_down_ms": burst_down_ms,
            "burst_link_use_up": burst_link_use_up,
            "burst_link_use_down": burst_link_use_down,
            "journal_appends_per_sec": appends,
            "journal_append_p50_ms": append_p50,
            "journal_append_p99_ms": append_p99,
            "checkins_offline": ci.len(),
            "checkins_offline_admitted": admitted,
            "checkin_p50_ms_offline": quantile(&ci, 0.5),
            "checkin_p99_ms_offline": checkin_p99,
            "abuse_tunnels_tried": ABUSE_TUNNELS,
            "abuse_tunnels_open": abuse.tunnels_open,
            "abuse_tunnels_refused": abuse.tunnels_refused,
            "abuse_stalled_uploads": abuse.uploads,
            "bids_under_abuse": abuse_rtts.len(),
            "bids_failed_under_abuse": abuse_failed,
            "bid_p50_ms_under_abuse": quantile(&abuse_rtts, 0.5),
            "bid_p99_ms_under_abuse": bid_p99_abuse,
            "target_lost_ok": b.lost == 0,
            "target_duplicated_ok": b.duplicated == 0,
            "target_bid_p99_ok": b.p99 <= base_rtt + 30.0,
            "target_abuse_ok": bid_p99_abuse <= base_rtt + 50.0 && abuse_failed == 0,
            "target_journal_ok": appends >= 2000.0,
            "target_checkin_ok": checkin_p99 <= 5.0 && admitted == ci.len(),
        }))
    })?;
    let path = common::write_json("bids", &json)?;
    println!(
        "bids: burst {} (200: {}, 202: {}) lost {} duplicated {}; base {:.1} ms, bid p50 {:.1} p99 {:.1} ms (link use up {:.2} down {:.2}); journal {:.0} appends/s; check-in offline p99 {:.2} ms; under abuse ({} tunnels open, {} refused, {} stalled uploads) bid p99 {:.1} ms, failed {} -> {}",
        json["burst_bids"], json["burst_answered_200"], json["burst_receipts_202"], json["lost"], json["duplicated"],
        json["base_rtt_ms"].as_f64().unwrap_or(0.0), json["bid_p50_ms"].as_f64().unwrap_or(0.0), json["bid_p99_ms"].as_f64().unwrap_or(0.0),
        json["burst_link_use_up"].as_f64().unwrap_or(0.0), json["burst_link_use_down"].as_f64().unwrap_or(0.0),
        json["journal_appends_per_sec"].as_f64().unwrap_or(0.0), json["checkin_p99_ms_offline"].as_f64().unwrap_or(0.0),
        json["abuse_tunnels_open"], json["abuse_tunnels_refused"], json["abuse_stalled_uploads"], json["bid_p99_ms_under_abuse"].as_f64().unwrap_or(0.0), json["bids_failed_under_abuse"],
        path.display()
    );
    Ok(())
}
