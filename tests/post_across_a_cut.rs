//! POSTs across the loss of an uplink, with the link emulator: a POST is not safe to send
//! twice, so the gateway sends its body as chunks the relay takes once, and a head sent
//! again after its path died gets the one origin answer. Back-to-back POSTs of every size
//! (a form, a photo, a few chunks' worth), chunked ones over a mebibyte, and chunked ones
//! still coming when the gateway stops holding them, all succeed while the uplink that
//! carries them dies, and the origin sees each of them exactly once.

mod emulated;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use emulated::{http1, two_links, two_links_with};

/// How a POST's body is sent.
#[derive(Clone, Copy)]
enum Sent {
    /// With its length.
    Length,
    /// Without (chunked), in 64 KiB pieces: the first `at_once` bytes at once, then each
    /// piece `gap` after the one before.
    Chunked { at_once: usize, gap: Duration },
}

/// POST `body` to `url` through the proxy (a new connection each time, as a tablet's
/// retry-less form would), as `how` says: status and answer.
async fn post(proxy: SocketAddr, url: &str, body: Bytes, how: Sent) -> (u16, String) {
    if let Sent::Chunked { at_once, gap } = how {
        let piece = 64 * 1024;
        let pieces = body
            .chunks(piece)
            .enumerate()
            .map(|(i, c)| {
                let gap = if i * piece < at_once {
                    Duration::ZERO
                } else {
                    gap
                };
                (Bytes::copy_from_slice(c), gap)
            })
            .collect();
        return post_paced(proxy, url, pieces).await;
    }
    let mut sender = http1(proxy).await;
    let req = http::Request::post(url)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .expect("request");
    answer(sender.send_request(req).await.expect("response")).await
}

/// Status and text of an answer.
async fn answer(resp: http::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs of `sizes` back to back for 6 s through `bed`, the uplink carrying most of them
/// cut after 1.5 s for 2 s (a body streamed on one path rides the one with the least
/// delay, the slower here): every one succeeds, at least `min` went, and the origin saw
/// each exactly once.
async fn posts_across_a_cut(
    bed: canopy::testbed::Testbed,
    sizes: &'static [usize],
    how: Sent,
    min: u64,
) {
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let url = bed.origin_url("/digest");
    let proxy = bed.proxy;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let posts = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let started = tokio::time::Instant::now();
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(6) && n < 200 {
                let size = sizes[n as usize % sizes.len()];
                let body: Bytes = (0..size)
                    .map(|i| ((i * 7 + n as usize) % 251) as u8)
                    .collect();
                let want = canopy::origin::digest_of(&body);
                let (status, answer) = post(proxy, &url, body, how).await;
                if status != 200 || answer != want {
                    failures.push(format!("POST {n} of {size} bytes: {status} {answer}"));
                }
                n += 1;
                sent.store(n, Ordering::Relaxed);
            }
            failures
        })
    };
    // cut the uplink that carried the most upload bytes in the last 300 ms
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let up = |bed: &canopy::testbed::Testbed| -> Vec<u64> {
        bed.links
            .iter()
            .map(|l| l.as_ref().map_or(0, |l| l.stats().up_bytes))
            .collect()
    };
    let before = up(&bed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busiest = up(&bed)
        .iter()
        .zip(&before)
        .enumerate()
        .max_by_key(|(_, (now, then))| *now - *then)
        .map_or(0, |(i, _)| i);
    let link = bed.links[busiest].as_ref().expect("an emulated uplink");
    link.set_outage(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    link.set_outage(false);
    let failures = tokio::time::timeout(Duration::from_secs(60), posts)
        .await
        .expect("POSTs in time")
        .expect("POST task");
    let n = sent.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {n} POSTs failed: {failures:#?}",
        failures.len()
    );
    assert!(n >= min, "only {n} POSTs went in 6 s");
    assert_eq!(
        bed.origin_stats.digests.load(Ordering::Relaxed),
        n,
        "the origin saw each POST exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_of_every_size_survive_the_loss_of_their_uplink() {
    let bed = two_links().await;
    posts_across_a_cut(bed, &[2_000, 200_000, 600_000], Sent::Length, 6).await;
}

/// A body sent without a length (chunked) and over 1 MiB is spooled at the gateway, then
/// striped: it survives the loss of its uplink too (streamed on one path, it failed with
/// 502 at the cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_posts_over_a_mebibyte_survive_the_loss_of_their_uplink() {
    let bed = two_links().await;
    let at_once = Sent::Chunked {
        at_once: usize::MAX,
        gap: Duration::ZERO,
    };
    posts_across_a_cut(bed, &[2_500_000], at_once, 2).await;
}

/// A body sent without a length and still coming when the gateway stops holding it (here
/// after 100 ms) goes on as a stripe of unknown length, what was spooled first: it
/// survives the loss of its uplink too (streamed on once, on one path, it failed with it).
/// Each is 1.5 MB, its first 1.1 MB at once (spooled within the hold), the rest at about
/// 3 MB/s, so every one outlives its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_posts_still_coming_after_their_hold_survive_the_loss_of_their_uplink() {
    let bed = two_links_with(|p| p.chunked_hold_ms = 100).await;
    let how = Sent::Chunked {
        at_once: 1_100_000,
        gap: Duration::from_millis(20),
    };
    posts_across_a_cut(bed, &[1_500_000], how, 3).await;
}

/// POST `pieces` without a length, each `gap` after the one before: status and answer.
async fn post_paced(proxy: SocketAddr, url: &str, pieces: Vec<(Bytes, Duration)>) -> (u16, String) {
    let frames = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        let (b, gap) = it.next()?;
        tokio::time::sleep(gap).await;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(b)), it))
    });
    let mut sender = http1(proxy).await;
    let req = http::Request::post(url)
        .body(StreamBody::new(Box::pin(frames)))
        .expect("request");
    answer(sender.send_request(req).await.expect("response")).await
}

/// Chunked bodies the body spool cannot hold whole go on as stripes of unknown length,
/// every byte in order: one over its share of the spool (a quarter of 8 MiB), one still
/// coming when its hold (100 ms) is up after it filled the first mebibyte, one still
/// coming before it did, and a slow push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_beyond_their_room_or_time_go_on_whole() {
    let bed = two_links_with(|p| {
        p.body_spool_bytes = 8 << 20;
        p.chunked_hold_ms = 100;
    })
    .await;
    let url = bed.origin_url("/digest");
    let piece = |i: usize| -> Bytes { (0..64 * 1024).map(|j| ((j * 7 + i) % 251) as u8).collect() };
    let whole = |p: &[(Bytes, Duration)]| -> Vec<u8> {
        p.iter().flat_map(|(b, _)| b.iter().copied()).collect()
    };
    let cases: Vec<(&str, Vec<(Bytes, Duration)>)> = vec![
        // 2.6 MB at once: over the 2 MiB one body may spool
        (
            "over its room",
            (0..40).map(|i| (piece(i), Duration::ZERO)).collect(),
        ),
        // 1.3 MB at once, then 640 KB over 300 ms
        (
            "late after a mebibyte",
            (0..30)
                .map(|i| (piece(i), Duration::from_millis(if i < 20 { 0 } else { 30 })))
                .collect(),
        ),
        // 320 KB over 250 ms
        (
            "late from the start",
            (0..5)
                .map(|i| (piece(i), Duration::from_millis(50)))
                .collect(),
        ),
        // a slow push, 1 MiB at once, then 40 pieces of 1 KB every 80 ms: each pause
        // sends what came but the byte kept back to learn the end, so many small chunks
        // must come together in order (that the pause sends them is the gateway's unit
        // test, `stripe::tests`)
        (
            "a slow push",
            (0..16)
                .map(|i| (piece(i), Duration::ZERO))
                .chain((0..40).map(|i| (piece(i).slice(..1000), Duration::from_millis(80))))
                .collect(),
        ),
    ];
    for (what, pieces) in cases {
        let want = canopy::origin::digest_of(&whole(&pieces));
        let (status, answer) = post_paced(bed.proxy, &url, pieces).await;
        assert_eq!((status, answer.as_str()), (200, want.as_str()), "{what}");
    }
    assert_eq!(bed.origin_stats.digests.load(Ordering::Relaxed), 4);
}

/// A body without a length that grows over the relay's request body limit (4 MiB here;
/// the gateway's is larger, and its spool is off, so the body is striped as it comes) is
/// refused with 413 naming the relay's limit, and the relay ends the origin request at
/// once (`ingest_relay::stripe`'s unit test). Before, the device got 502 ("the relay
/// refused a chunk") and the origin request waited a minute for bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_relays_limit_gets_413() {
    let bed = canopy::testbed::Testbed::start(canopy::testbed::TestbedOptions {
        links: vec![
            canopy::testbed::TestLink::new(
                "fast",
                Some(canopy::linkem::LinkProfile::symmetric(
                    "fast", 20_000, 15, 100,
                )),
            ),
            canopy::testbed::TestLink::new(
                "slow",
                Some(canopy::linkem::LinkProfile::symmetric(
                    "slow", 10_000, 10, 100,
                )),
            ),
        ],
        gateway_proxy: |p| p.body_spool_bytes = 0,
        relay_egress: |e| e.max_request_body_bytes = 4 << 20,
        ..canopy::testbed::TestbedOptions::single(None)
    })
    .await
    .expect("testbed");
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let url = bed.origin_url("/digest");
    // 8 MiB in 64 KiB pieces, 10 ms apart (about 50 Mbit/s)
    let pieces = (0..128)
        .map(|i| {
            let b: Bytes = (0..64 * 1024).map(|j| ((j * 7 + i) % 251) as u8).collect();
            (b, Duration::from_millis(10))
        })
        .collect();
    let (status, answer) =
        tokio::time::timeout(Duration::from_secs(30), post_paced(bed.proxy, &url, pieces))
            .await
            .expect("an answer in time");
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("relay's limit"), "{answer}");
}
