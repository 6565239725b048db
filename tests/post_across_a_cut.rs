//! POSTs across the loss of an uplink, with the link emulator: a POST is not safe to send
//! twice, so the gateway sends its body as chunks the relay takes once, and a head sent
//! again after its path died gets the one origin answer. Back-to-back POSTs of every size
//! (a form, a photo, a few chunks' worth) all succeed while the uplink that carries them
//! dies, and the origin sees each of them exactly once.

mod emulated;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::Digest;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use emulated::{http1, two_links};

/// POST `body` to `url` through the proxy (a new connection each time, as a tablet's
/// retry-less form would): status and answer.
async fn post(proxy: SocketAddr, url: &str, body: Bytes) -> (u16, String) {
    let mut sender = http1(proxy).await;
    let req = http::Request::post(url)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn digest_line(body: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{} {hex}\n", body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_of_every_size_survive_the_loss_of_their_uplink() {
    let bed = two_links().await;
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let url = bed.origin_url("/digest");
    let proxy = bed.proxy;
    let sizes = [2_000usize, 200_000, 600_000];
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let posts = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let started = tokio::time::Instant::now();
            let mut n = 0u64;
            // back to back for 6 s: the cut comes after 1.5 s and lasts 2 s
            while started.elapsed() < Duration::from_secs(6) && n < 200 {
                let size = sizes[n as usize % sizes.len()];
                let body: Bytes = (0..size)
                    .map(|i| ((i * 7 + n as usize) % 251) as u8)
                    .collect();
                let want = digest_line(&body);
                let (status, answer) = post(proxy, &url, body).await;
                if status != 200 || answer != want {
                    failures.push(format!("POST {n} of {size} bytes: {status} {answer}"));
                }
                n += 1;
                sent.store(n, Ordering::Relaxed);
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // the fast uplink carries most POSTs; cut it
    if let Some(link) = &bed.links[0] {
        link.set_outage(true);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(link) = &bed.links[0] {
        link.set_outage(false);
    }
    let failures = tokio::time::timeout(Duration::from_secs(60), posts)
        .await
        .expect("POSTs in time")
        .expect("POST task");
    let n = sent.load(Ordering::Relaxed);
    assert!(n >= 6, "only {n} POSTs went in 6 s");
    assert!(
        failures.is_empty(),
        "{} of {n} POSTs failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(
        bed.origin_stats.digests.load(Ordering::Relaxed),
        n,
        "the origin saw each POST exactly once"
    );
}
