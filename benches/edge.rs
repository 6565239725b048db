//! The venue edge's cache, in one process on loopback (the in-process testbed: origin,
//! relay, gateway; no link emulator): fifty devices asking for the same twenty assets at
//! once, then hits through the proxy one at a time (latency) and from eight connections
//! (rate), then hits over the HTTPS site with resumed TLS sessions. Writes
//! target/canopy-bench/edge.json: hit_latency_p99_us, hits_per_sec,
//! origin_fetches_for_burst, tls_hit_latency_p99_us.
//!
//! cargo bench --bench edge

mod common;

use bytes::Bytes;
use canopy::load::quantile;
use canopy::testbed::{Testbed, TestbedOptions, DEMO_SITE};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEVICES: usize = 50;
const ASSETS: usize = 20;
const LATENCY_SAMPLES: usize = 5_000;
const TLS_SAMPLES: usize = 500;
const RATE_CONNECTIONS: usize = 8;

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect<IO>(io: IO) -> anyhow::Result<Sender>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(send)
}

/// GETs `path` of the demo site on `send`; the answer's Cache-Status.
async fn get(send: &mut Sender, path: &str) -> anyhow::Result<String> {
    send.ready().await?;
    let req = http::Request::get(path)
        .header(http::header::HOST, DEMO_SITE)
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    anyhow::ensure!(
        resp.status() == http::StatusCode::OK,
        "status {}",
        resp.status()
    );
    let cs = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    resp.into_body().collect().await?;
    Ok(cs)
}

fn asset(i: usize) -> String {
    format!("/static/bench-{i}.png")
}

/// Fifty devices, each on its own connection, ask for the twenty assets at once (each in
/// its own order). Returns the origin's fetches of them and the answers from the cache.
async fn burst(bed: &Testbed) -> anyhow::Result<(u64, usize)> {
    let start = Arc::new(tokio::sync::Barrier::new(DEVICES));
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let proxy = bed.proxy;
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(tokio::net::TcpStream::connect(proxy).await?).await?;
            start.wait().await;
            let mut hits = 0;
            for k in 0..ASSETS {
                let cs = get(&mut send, &asset((k + d) % ASSETS)).await?;
                hits += usize::from(cs.starts_with("canopy; hit"));
            }
            anyhow::Ok(hits)
        }));
    }
    let mut hits = 0;
    for t in tasks {
        hits += t.await??;
    }
    let fetched = bed
        .origin_stats
        .static_fetches
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(p, _)| p.starts_with("/static/bench-"))
        .map(|(_, n)| *n)
        .sum();
    Ok((fetched, hits))
}

/// Latency of hits one after another on one connection, µs.
async fn hit_latency(proxy: SocketAddr) -> anyhow::Result<Vec<f64>> {
    let mut send = connect(tokio::net::TcpStream::connect(proxy).await?).await?;
    let mut out = Vec::with_capacity(LATENCY_SAMPLES);
    for i in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        let cs = get(&mut send, &asset(i % ASSETS)).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(cs.starts_with("canopy; hit"), "not a hit: {cs}");
    }
    Ok(out)
}

/// Hits a second from eight connections for `secs`.
async fn hit_rate(proxy: SocketAddr, secs: u64) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..RATE_CONNECTIONS {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut send = connect(tokio::net::TcpStream::connect(proxy).await?).await?;
            let mut i = c;
            // bounded in time and count
            while Instant::now() < until && i < 10_000_000 {
                get(&mut send, &asset(i % ASSETS)).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Latency of a hit over the HTTPS site on a new connection each time, the TLS session
/// resumed, µs; and how many handshakes were resumptions.
async fn tls_hit_latency(https: SocketAddr, ca_pem: &str) -> anyhow::Result<(Vec<f64>, usize)> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(tunnel_io::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from(DEMO_SITE)?;
    // the site over HTTPS is its own URL (https://...): fetched once into the cache
    {
        let tls = connector
            .connect(name.clone(), tokio::net::TcpStream::connect(https).await?)
            .await?;
        let mut send = connect(tls).await?;
        for i in 0..ASSETS {
            get(&mut send, &asset(i)).await?;
        }
    }
    let mut out = Vec::with_capacity(TLS_SAMPLES);
    let mut resumed = 0;
    for i in 0..TLS_SAMPLES {
        let t = Instant::now();
        let tcp = tokio::net::TcpStream::connect(https).await?;
        tcp.set_nodelay(true)?;
        let tls = connector.connect(name.clone(), tcp).await?;
        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            resumed += 1;
        }
        let mut send = connect(tls).await?;
        let cs = get(&mut send, &asset(i % ASSETS)).await?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(cs.starts_with("canopy; hit"), "not a hit: {cs}");
    }
    Ok((out, resumed))
}

fn main() -> anyhow::Result<()> {
    let secs = common::measure_secs(3);
    let rt = common::runtime()?;
    let json = rt.block_on(async {
        let bed = Testbed::start(TestbedOptions {
            https_site: true,
            ..TestbedOptions::single(None)
        })
        .await?;
        let (fetched, burst_hits) = burst(&bed).await?;
        let mut lat = hit_latency(bed.proxy).await?;
        let rate = hit_rate(bed.proxy, secs).await?;
        let https = bed
            .https
            .ok_or_else(|| anyhow::anyhow!("the testbed has no HTTPS site"))?;
        let (mut tls, resumed) = tls_hit_latency(https, &bed.ca_pem).await?;
        lat.sort_by(f64::total_cmp);
        tls.sort_by(f64::total_cmp);
        let p50 = quantile(&lat, 0.5);
        let p99 = quantile(&lat, 0.99);
        let tls_p50 = quantile(&tls, 0.5);
        let tls_p99 = quantile(&tls, 0.99);
        println!(
            "edge: burst of {DEVICES}x{ASSETS}: {fetched} origin fetches, {burst_hits} of {} from the cache; hit p50 {p50:.0} / p99 {p99:.0} us; {rate:.0} hits/s ({RATE_CONNECTIONS} connections); HTTPS hit on a resumed session p50 {tls_p50:.0} / p99 {tls_p99:.0} us ({resumed} of {TLS_SAMPLES} resumed)",
            DEVICES * ASSETS
        );
        anyhow::Ok(serde_json::json!({
            "scenario": "edge",
            "git_rev": common::git_rev(),
            "unix_time": common::unix_time(),
            "devices": DEVICES,
            "assets": ASSETS,
            "origin_fetches_for_burst": fetched,
            "burst_hits": burst_hits,
            "burst_requests": DEVICES * ASSETS,
            "hit_latency_p50_us": p50,
            "hit_latency_p99_us": p99,
            "hit_latency_samples": LATENCY_SAMPLES,
            "hits_per_sec": rate,
            "hits_per_sec_connections": RATE_CONNECTIONS,
            "tls_hit_latency_p50_us": tls_p50,
            "tls_hit_latency_p99_us": tls_p99,
            "tls_resumed": resumed,
            "tls_samples": TLS_SAMPLES,
            "target_hit_latency_ok": p99 <= 1000.0,
            "target_origin_fetches_ok": fetched == ASSETS as u64,
        }))
    })?;
    let path = common::write_json("edge", &json)?;
    println!("edge: -> {}", path.display());
    Ok(())
}
