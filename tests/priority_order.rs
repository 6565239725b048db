//! Priority with the link emulator: a bid sent while bulk downloads fill a slow, deeply
//! buffered link completes before any of them. The test asserts the order of completion,
//! not a speed.

use canopy::linkem::LinkProfile;
use canopy::load::{empty, small, ProxyClient};
use canopy::testbed::{TestLink, Testbed, TestbedOptions, DEMO_SITE};
use http::Method;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_overtakes_queued_bulk_data() {
    let bed = Testbed::start(TestbedOptions {
        links: vec![TestLink::new(
            "slow",
            Some(LinkProfile::symmetric("slow", 2_000, 20, 300)),
        )],
        tunnel: Default::default(),
        proxy_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics: None,
        record_dir: None,
        checkin: Default::default(),
        ..TestbedOptions::single(None)
    })
    .await
    .expect("testbed");
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut downloads = Vec::new();
    for i in 0..3 {
        let (order, url, proxy) = (order.clone(), bed.origin_url("/assets/1500000"), bed.proxy);
        downloads.push(tokio::spawn(async move {
            let r = ProxyClient::new(proxy)
                .send(Method::GET, &url, &[], empty(), None)
                .await;
            assert!(matches!(r, Ok((200, 1_500_000))), "download {i}: {r:?}");
            order.lock().expect("lock").push(format!("bulk{i}"));
        }));
    }
    // let the bulk transfers fill the link and its queue
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        order.lock().expect("lock").is_empty(),
        "downloads finished before the bid was sent; make them bigger"
    );
    let r = ProxyClient::new(bed.proxy)
        .send(
            Method::POST,
            &format!("http://{DEMO_SITE}/bid"),
            &[],
            small("{\"lot\":1}"),
            None,
        )
        .await;
    assert!(matches!(r, Ok((200, _))), "bid: {r:?}");
    order.lock().expect("lock").push("bid".into());
    for d in downloads {
        d.await.expect("download task");
    }
    let order = order.lock().expect("lock").clone();
    assert_eq!(
        order.first().map(String::as_str),
        Some("bid"),
        "completion order: {order:?}"
    );
}
