//! A device that stops sending its request body half way: the gateway answers it 408
//! Request Timeout once the body's idle time is up (the device's fault, not the relay's),
//! whichever way the body was going: read whole first, or striped (over two uplinks, or
//! over one: a POST too large to keep). (A body streamed as it comes, a GET's say, is
//! told apart in `gateway::proxy::forward`'s own test: an origin answers such a GET
//! before its body.)

mod emulated;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::time::Duration;

use canopy::linkem::LinkProfile;
use canopy::testbed::{Testbed, TestbedOptions};
use emulated::{http1, two_links_with};

/// Sends `method` with `sent` bytes of a body to `url` through the proxy, with `length` as its
/// Content-Length (None: chunked), then sends nothing more and keeps the connection
/// open: the status and answer the gateway gives, and how long after the last byte.
async fn stall_after(
    proxy: std::net::SocketAddr,
    method: http::Method,
    url: &str,
    length: Option<usize>,
    sent: usize,
) -> (u16, String, Duration) {
    let body: Bytes = (0..sent).map(|i| (i % 251) as u8).collect();
    let (last_tx, last_rx) = tokio::sync::oneshot::channel();
    let frames =
        futures_util::stream::unfold((Some(body), Some(last_tx)), |(body, last_tx)| async move {
            match body {
                Some(b) => Some((
                    Ok::<_, std::convert::Infallible>(Frame::data(b)),
                    (None, last_tx),
                )),
                None => {
                    if let Some(tx) = last_tx {
                        let _ = tx.send(tokio::time::Instant::now());
                    }
                    // the device goes quiet and never ends its body
                    std::future::pending::<()>().await;
                    None
                }
            }
        });
    let mut sender = http1(proxy).await;
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(n) = length {
        req = req.header(http::header::CONTENT_LENGTH, n);
    }
    let req = req
        .body(StreamBody::new(Box::pin(frames)))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("an answer within 20 s")
        .expect("response");
    let took = tokio::time::timeout(Duration::from_secs(1), last_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .map_or(Duration::ZERO, |t| tokio::time::Instant::now() - t);
    let status = resp.status().as_u16();
    let text = match tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await
    {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => String::new(),
    };
    (status, text, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_half_way_is_answered_408() {
    let bed = two_links_with(|p| {
        p.body_idle_timeout_ms = 1000;
        p.chunked_hold_ms = 100;
    })
    .await;
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "both uplinks up"
    );
    let url = bed.origin_url("/digest");
    // (what is sent, then the stall)
    let post = http::Method::POST;
    let cases = [
        // 4 MiB announced, 1 MiB sent: striped over both uplinks
        (
            "a body with its length",
            &post,
            &url,
            Some(4 << 20),
            1 << 20,
        ),
        // chunked, 1.5 MB sent, then quiet past the gateway's hold: it goes on as stripes
        // of unknown length
        ("a chunked body", &post, &url, None, 1_500_000),
        // chunked and small: the gateway gathers it first
        ("a small chunked body", &post, &url, None, 10_000),
        // a request safe to send again, small enough to keep whole: read whole first
        (
            "a PUT with its length",
            &http::Method::PUT,
            &url,
            Some(100_000),
            1_000,
        ),
        // a bid, kept whole to be sent again (and journaled)
        ("a bid", &post, &bed.origin_url("/bid"), Some(1_000), 10),
    ];
    for (what, method, url, length, sent) in cases {
        let (status, text, took) = stall_after(bed.proxy, method.clone(), url, length, sent).await;
        assert_eq!(status, 408, "{what}: {status} {text}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(10),
            "{what}: answered {took:?} after the last byte"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_the_one_uplink_that_stops_is_answered_408() {
    let bed = Testbed::start(TestbedOptions {
        gateway_proxy: |p| p.body_idle_timeout_ms = 1000,
        ..TestbedOptions::single(Some(LinkProfile::symmetric("one", 6_000, 15, 100)))
    })
    .await
    .expect("testbed");
    assert!(
        bed.bond.wait_all_usable(Duration::from_secs(5)).await,
        "the uplink up"
    );
    let url = bed.origin_url("/digest");
    // a POST too large to keep goes as a stripe even on one uplink (it survives the loss
    // of its path that way)
    let (status, text, took) =
        stall_after(bed.proxy, http::Method::POST, &url, Some(4 << 20), 2 << 20).await;
    assert_eq!(status, 408, "{status} {text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "answered {took:?} after the last byte"
    );
}
