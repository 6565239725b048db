//! Bonded downloads with the link emulator: one large download through the proxy comes in
//! chunks over both uplinks (each carries a share of its bytes), arrives byte for byte,
//! and survives the loss of an uplink in the middle. The tests check shares and bytes,
//! not speeds (speeds are the bonding bench's).

mod emulated;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use emulated::{http1, two_links};

const SIZE: u64 = 3_000_000;

/// The origin's generated asset: byte `o` is `(o % 65536) % 251`.
fn expected(len: u64) -> Vec<u8> {
    (0..len).map(|o| ((o % 65536) % 251) as u8).collect()
}

/// GET `url` through the proxy: status, content-length, body.
async fn download(proxy: SocketAddr, url: &str) -> (u16, Option<u64>, Bytes) {
    let mut sender = http1(proxy).await;
    let req = http::Request::get(url)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let length = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, length, body)
}

fn down_bytes(bed: &canopy::testbed::Testbed) -> Vec<u64> {
    bed.bond
        .paths()
        .iter()
        .map(|p| p.bytes_down.load(Ordering::Relaxed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_download_uses_both_uplinks() {
    let bed = two_links().await;
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let before = down_bytes(&bed);
    let (status, length, body) =
        download(bed.proxy, &bed.origin_url(&format!("/assets/{SIZE}"))).await;
    assert_eq!(status, 200);
    assert_eq!(length, Some(SIZE), "the device sees the body's length");
    assert!(
        body.as_ref() == expected(SIZE).as_slice(),
        "the body arrives byte for byte"
    );
    let after = down_bytes(&bed);
    let carried: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    for (i, c) in carried.iter().enumerate() {
        assert!(
            *c >= SIZE / 6,
            "uplink {i} carried {c} of {SIZE} bytes ({carried:?}): the download did not use both"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_survives_the_loss_of_an_uplink() {
    let bed = two_links().await;
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let url = bed.origin_url(&format!("/assets/{SIZE}"));
    let proxy = bed.proxy;
    let dl = tokio::spawn(async move { download(proxy, &url).await });
    // cut the fast uplink while the body flows (it takes about 3 s over both)
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !dl.is_finished(),
        "the download finished before the cut; make it bigger"
    );
    if let Some(link) = &bed.links[0] {
        link.set_outage(true);
    }
    let (status, length, body) = tokio::time::timeout(Duration::from_secs(30), dl)
        .await
        .expect("download in time")
        .expect("download task");
    assert_eq!(status, 200);
    assert_eq!(length, Some(SIZE));
    assert!(
        body.as_ref() == expected(SIZE).as_slice(),
        "the body arrives byte for byte"
    );
    if let Some(link) = &bed.links[0] {
        link.set_outage(false);
    }
}
