//! Proxied bulk throughput on loopback, no emulation, against a raw quinn stream between
//! the same hosts in the same run.
//!
//! Tunnel: venue client -> gateway proxy (HTTP/1.1) -> HTTP/3 over QUIC -> relay -> origin
//! (HTTP/1.1), downloads in parallel. Raw: the same number of QUIC streams with the same
//! TLS and transport settings, the server writing as fast as it can. Both for the same
//! time; then both again with quinn's Cubic (on loopback a delay-based controller reads
//! CPU scheduling delay as queueing). Writes target/canopy-bench/throughput.json.
//!
//! cargo bench --bench throughput

mod common;

use canopy::load::{self, LoadStats};
use canopy::testbed::{TestLink, Testbed, TestbedOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tunnel_io::{CongestionChoice, TransportSettings};

const STREAMS: usize = 4;

async fn tunnel(secs: u64, settings: TransportSettings) -> anyhow::Result<f64> {
    let bed = Testbed::start(TestbedOptions {
        links: vec![TestLink::new("direct", None)],
        tunnel: settings,
        proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics: None,
        record_dir: None,
        checkin: Default::default(),
        ..TestbedOptions::single(None)
    })
    .await?;
    let stats = Arc::new(LoadStats::default());
    let tasks: Vec<_> = (0..STREAMS)
        .map(|_| {
            tokio::spawn(load::download_loop(
                bed.proxy,
                bed.origin_url("/assets/1000000000"),
                stats.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b0, t0) = (stats.down_bytes.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let mbps = (stats.down_bytes.load(Ordering::Relaxed) - b0) as f64 * 8.0
        / t0.elapsed().as_secs_f64()
        / 1e6;
    for t in tasks {
        t.abort();
    }
    Ok(mbps)
}

async fn raw_quinn(secs: u64, settings: TransportSettings) -> anyhow::Result<f64> {
    let certs = canopy::certs::EventCerts::generate(
        "bench",
        canopy::certs::Window::from(time::OffsetDateTime::now_utc()),
        None,
        &["localhost".into()],
        canopy::certs::Leaves {
            gateways: &["gateway".into()],
            sites: &[],
        },
    )?;
    let transport = settings.quinn();
    let server = quinn::Endpoint::server(
        certs
            .relay_tls()?
            .relay_quic(transport.clone(), tunnel_io::Revoked::none())?,
        "127.0.0.1:0".parse()?,
    )?;
    let addr = server.local_addr()?;
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut first = [0u8; 1];
                        let _ = recv.read_exact(&mut first).await;
                        let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
                        while send.write_chunk(chunk.clone()).await.is_ok() {}
                    });
                }
            });
        }
    });
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(certs.gateway_tls(0)?.gateway_quic(transport)?);
    let conn = client.connect(addr, "localhost")?.await?;
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[1]).await?;
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let _keep = send;
            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                total.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b0, t0) = (total.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let mbps = (total.load(Ordering::Relaxed) - b0) as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e6;
    for t in tasks {
        t.abort();
    }
    conn.close(0u32.into(), b"done");
    Ok(mbps)
}

fn main() -> anyhow::Result<()> {
    let secs = common::measure_secs(10);
    let rt = common::runtime()?;
    let ours = TransportSettings::default();
    let cubic = TransportSettings {
        congestion: CongestionChoice::Cubic,
        ..TransportSettings::default()
    };
    let (t, r, tc, rc) = rt.block_on(async {
        anyhow::Ok((
            tunnel(secs, ours.clone()).await?,
            raw_quinn(secs, ours).await?,
            tunnel(secs, cubic.clone()).await?,
            raw_quinn(secs, cubic).await?,
        ))
    })?;
    let (ratio, ratio_cubic) = (t / r, tc / rc);
    let json = serde_json::json!({
        "scenario": "throughput",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
        "streams": STREAMS,
        "measure_secs": secs,
        "tunnel_mbps": t,
        "raw_quinn_mbps": r,
        "ratio": ratio,
        "tunnel_cubic_mbps": tc,
        "raw_quinn_cubic_mbps": rc,
        "ratio_cubic": ratio_cubic,
        "target_ratio_ok": ratio >= 0.8,
    });
    let path = common::write_json("throughput", &json)?;
    println!(
        "throughput: tunnel {t:.0} Mbit/s, raw quinn {r:.0} Mbit/s, ratio {ratio:.2} (both with cubic: {tc:.0} / {rc:.0}, {ratio_cubic:.2}) -> {}",
        path.display()
    );
    Ok(())
}
