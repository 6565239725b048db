//! The in-process harness: the real gateway and relay (quinn, probes, bond, duplicate
//! table, embedded auction) over in-memory links with the emulator's model, on tokio's
//! paused clock. Link cuts that take seconds run in milliseconds, without root, and the
//! timings are the simulation's, not the machine's load. The network-namespace suite
//! (`tests/netns/`) stays for the kernel's path.
//!
//! The links are the failover bench's: 20, 5 and 2 Mbit/s with 25, 8 and 20 ms one way;
//! the busiest is blackholed (the emulator drops everything) from 3 s to 8 s.

use bytes::Bytes;
use canopy::linkem::{LinkProfile, VirtualNet};
use canopy::testbed::{Network, TestLink, Testbed, TestbedOptions, AUCTION_SITE};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

async fn three_links() -> Testbed {
    three_links_with(tunnel_io::TransportSettings::default()).await
}

async fn three_links_with(tunnel: tunnel_io::TransportSettings) -> Testbed {
    three_links_proxy(tunnel, |_| {}).await
}

/// [`three_links`] with the gateway's `[proxy]` section changed by `proxy`.
async fn three_links_proxy(
    tunnel: tunnel_io::TransportSettings,
    proxy: fn(&mut gateway::config::ProxySection),
) -> Testbed {
    let links = [
        ("cellular", 20_000, 25),
        ("wifi", 5_000, 8),
        ("satellite", 2_000, 20),
    ];
    links_proxy(&links, tunnel, proxy).await
}

/// A testbed over emulated links, each (name, kbit/s, one-way ms), 100 ms of queue.
async fn links_with(links: &[(&str, u64, u64)], tunnel: tunnel_io::TransportSettings) -> Testbed {
    links_proxy(links, tunnel, |_| {}).await
}

/// [`links_with`] with the gateway's `[proxy]` section changed by `proxy`.
async fn links_proxy(
    links: &[(&str, u64, u64)],
    tunnel: tunnel_io::TransportSettings,
    proxy: fn(&mut gateway::config::ProxySection),
) -> Testbed {
    let link = |&(name, kbps, ms): &(&str, u64, u64)| {
        TestLink::new(name, Some(LinkProfile::symmetric(name, kbps, ms, 100)))
    };
    Testbed::start(TestbedOptions {
        links: links.iter().map(link).collect(),
        network: Network::Virtual(VirtualNet::new()),
        auction_lots: vec!["7".into()],
        tunnel,
        gateway_proxy: proxy,
        ..TestbedOptions::single(None)
    })
    .await
    .expect("testbed")
}

/// A device's HTTP/1.1 connection to the gateway's proxy (in memory).
async fn device<B>(bed: &Testbed, n: u32) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (device, gateway) = tokio::io::duplex(64 * 1024);
    let peer = SocketAddr::from(([192, 168, 1, 20], 40_000 + (n % 20_000) as u16));
    tokio::spawn(bed.devices.clone().serve(gateway, peer));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(device))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// A device's PUT of `len` bytes to the origin's `path`, under way in a task of its own.
async fn upload_in_background(
    bed: &Testbed,
    path: &str,
    len: u32,
) -> tokio::task::JoinHandle<hyper::Result<http::StatusCode>> {
    let body: Bytes = (0..len).map(|i| (i % 251) as u8).collect();
    let mut sender = device(bed, 1).await;
    let req = http::Request::put(bed.origin_url(path))
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .expect("request");
    tokio::spawn(async move { sender.send_request(req).await.map(|r| r.status()) })
}

/// Samples `counter` every 10 ms until `done`: the longest time it did not grow after
/// `from` (the cut), and when it last grew.
async fn longest_stall(
    counter: impl Fn() -> u64,
    from: Instant,
    done: impl Fn() -> bool,
) -> Duration {
    let mut last = (counter(), Instant::now());
    let mut worst = Duration::ZERO;
    while !done() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = Instant::now();
        let v = counter();
        if v != last.0 {
            if now > from {
                worst = worst.max(now - last.1.max(from));
            }
            last = (v, now);
        }
    }
    worst
}

/// The busiest link goes dark at 3 s and returns at 8 s.
async fn cut_busiest(bed: &Testbed) {
    cut(bed, 0).await
}

/// Link `i` goes dark at 3 s and returns at 8 s.
async fn cut(bed: &Testbed, i: usize) {
    let link = bed.links[i].as_ref().expect("link");
    tokio::time::sleep(Duration::from_secs(3)).await;
    link.set_outage(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    link.set_outage(false);
}

/// One bid from a device on a connection of its own: its status and how long it took.
async fn bid(bed: &Testbed, n: u32) -> (u16, Duration) {
    let mut sender = device(bed, n).await;
    let body = format!(r#"{{"bidder":"b{n}","amount":{}}}"#, 1000 + n);
    let req = http::Request::post(format!("http://{AUCTION_SITE}/lots/7/bids"))
        .header(http::header::HOST, AUCTION_SITE)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", format!("sim-bid-{n:06}"))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let started = Instant::now();
    let resp = sender.send_request(req).await.expect("answer");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    (status, started.elapsed())
}

/// Checks that the auction recorded every bid (201; a 202 would be a receipt: not
/// delivered); the slowest bid's time.
fn all_recorded(results: &[(u16, Duration)]) -> Duration {
    let refused: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s != 201)
        .collect();
    assert!(refused.is_empty(), "bids not recorded: {refused:?}");
    results.iter().map(|r| r.1).max().unwrap_or_default()
}

/// Waits until every link carries traffic (fails the test after 5 s).
async fn all_joined(bed: &Testbed) {
    let paths = bed.bond.paths().to_vec();
    let joined = until(Duration::from_secs(5), || {
        paths.iter().all(|p| p.is_usable())
    })
    .await;
    assert!(joined.is_some(), "every link joins");
}

/// Waits (simulated time) until `ok` holds; how long it took, or None after `limit`.
async fn until(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ok() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test(start_paused = true)]
async fn bids_ride_through_a_blackholed_link_on_simulated_time() {
    let bed = three_links().await;
    all_joined(&bed).await;
    let paths = bed.bond.paths().to_vec();

    // a bid every 100 ms for 12 s; the busiest link goes dark from 3 s to 8 s
    let bids = {
        let bed = &bed;
        async move {
            let mut out = Vec::new();
            for n in 0..120 {
                out.push(bid(bed, n).await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        }
    };
    let script = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cut = Instant::now();
        bed.links[0].as_ref().expect("cellular").set_outage(true);
        let down = until(Duration::from_secs(3), || !paths[0].is_usable()).await;
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(cut.elapsed())).await;
        bed.links[0].as_ref().expect("cellular").set_outage(false);
        let back = until(Duration::from_secs(10), || paths[0].is_usable()).await;
        (down, back)
    };
    let (results, (down, back)) = tokio::join!(bids, script);

    let down = down.expect("the bond stops using the dark link");
    assert!(
        down < Duration::from_millis(300),
        "dark link left after {down:?}"
    );
    let back = back.expect("the link rejoins after it returns");
    assert!(
        back < Duration::from_millis(1500),
        "rejoined after {back:?}"
    );
    let slowest = all_recorded(&results);
    // a bid goes in copies on two links: losing one costs it nothing (one round trip on
    // the 16 ms Wi-Fi link is what a bid takes with nothing else under way)
    assert!(
        slowest < Duration::from_millis(100),
        "slowest bid {slowest:?}"
    );
    eprintln!(
        "sim: 120 bids recorded, slowest {} ms; dark link left after {} ms, back after {} ms",
        slowest.as_millis(),
        down.as_millis(),
        back.as_millis()
    );
}

#[tokio::test(start_paused = true)]
async fn one_upload_goes_on_across_a_blackholed_link() {
    let bed = three_links().await;
    one_upload_across_a_blackholed_link(bed, false).await;
}

/// The same upload sent without a length, with the body spool off: it goes on as a stripe
/// of unknown length from its first mebibyte (it streamed once, on one path, before).
#[tokio::test(start_paused = true)]
async fn one_chunked_upload_goes_on_across_a_blackholed_link() {
    let bed = three_links_proxy(tunnel_io::TransportSettings::default(), |p| {
        p.body_spool_bytes = 0
    })
    .await;
    one_upload_across_a_blackholed_link(bed, true).await;
}

/// A device slower than the uplinks (a phone on busy venue Wi-Fi: 16 KiB every 64 ms,
/// about 2 Mbit/s) uploads 3 MB with its length across the blackhole of the link that
/// carries it. Its bytes go on as they come (a chunk when the device pauses, not once
/// 128 KiB are in), and what the dark link held goes again while the gateway waits for
/// the device: the origin's longest wait after the cut stays under 400 ms (100-140 ms).
/// Before, the stripe loop waited for each chunk's bytes and placed it at once, so it
/// never came to collect the chunks that failed on the dark link: the origin waited
/// 8.2 s, until the device's last bytes.
#[tokio::test(start_paused = true)]
async fn a_slow_devices_upload_goes_on_across_a_blackholed_link() {
    let bed = three_links().await;
    all_joined(&bed).await;
    let body: Bytes = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let frames = futures_util::stream::unfold(body.clone(), |mut rest| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(64)).await;
        let piece = rest.split_to(rest.len().min(16 * 1024));
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(piece)),
            rest,
        ))
    });
    let req = http::Request::put(bed.origin_url("/digest"))
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(http_body_util::StreamBody::new(Box::pin(frames)))
        .expect("request");
    // the link with the least delay carries it (the device is the bottleneck)
    let up = upload_across_a_cut(&bed, req, 1).await;
    assert_eq!(
        up.answer,
        (200, digest_answer(&body)),
        "the upload arrives whole, each byte once and in order"
    );
    eprintln!(
        "sim: a slow device's 3 MB upload took {} ms; longest wait at the origin after the \
         cut {} ms",
        up.took.as_millis(),
        up.stall.as_millis()
    );
    assert!(
        up.stall < Duration::from_millis(400),
        "the origin waited {:?}",
        up.stall
    );
}

/// One 30 MB upload (`chunked`: without a length) across the busiest link's blackhole: it
/// arrives whole, over every link, and the origin's longest stall after the cut stays
/// under 600 ms.
async fn one_upload_across_a_blackholed_link(bed: Testbed, chunked: bool) {
    all_joined(&bed).await;
    // 30 MB: about 9 s on all three links, so the cut falls in its middle
    let body: Bytes = (0..30_000_000u32).map(|i| (i % 251) as u8).collect();
    let req = http::Request::put(bed.origin_url("/digest"));
    let req = if chunked {
        req.body(http_body_util::Either::Right(self::chunked(body.clone())))
    } else {
        req.header(http::header::CONTENT_LENGTH, body.len())
            .body(http_body_util::Either::Left(Full::new(body.clone())))
    }
    .expect("request");
    let AcrossACut {
        answer,
        stall,
        took,
    } = upload_across_a_cut(&bed, req, 0).await;
    assert_eq!(
        answer,
        (200, digest_answer(&body)),
        "the upload arrives whole, each byte once and in order"
    );
    // what the dark link held comes again over the others, piece by piece in order: the
    // origin waits for the silence to be noticed and the first piece, not for all of them
    // (0.55-0.93 s before pieces were ranked and the chunks below them hurried; the
    // issue's goal is 0.3 s)
    assert!(
        stall < Duration::from_millis(600),
        "the upload stalled {stall:?}"
    );
    // every link carries it (27 Mbit/s in all: 8.9 s, 14 s with the cut); on the one
    // with the least delay alone, as a body of unknown length went before, it took 49 s
    assert!(
        took < Duration::from_secs(20),
        "the upload took {took:?}: not over every link"
    );
    eprintln!(
        "sim: one 30 MB upload (chunked: {chunked}) took {} ms; longest stall at the origin \
         after the cut {} ms",
        took.as_millis(),
        stall.as_millis()
    );
}

/// What an upload across a cut gave.
struct AcrossACut {
    /// The answer's status and text.
    answer: (u16, String),
    /// The origin's longest wait for the upload's bytes after the cut.
    stall: Duration,
    /// How long the upload took.
    took: Duration,
}

/// Sends `req` (an upload to the origin's `/digest`) from a device while link `link` goes
/// dark from 3 s to 8 s.
async fn upload_across_a_cut<B>(bed: &Testbed, req: http::Request<B>, link: usize) -> AcrossACut
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let upload = async {
        let mut sender = device(bed, 1).await;
        let resp = sender.send_request(req).await.expect("answer");
        let status = resp.status().as_u16();
        let answer = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&answer).trim().to_string())
    };
    let done = Arc::new(AtomicU64::new(0));
    let stats = bed.origin_stats.clone();
    let stall = longest_stall(
        || stats.upload_bytes.load(Ordering::Relaxed),
        started + Duration::from_secs(3),
        || done.load(Ordering::Relaxed) == 1,
    );
    let upload = async {
        let r = upload.await;
        done.store(1, Ordering::Relaxed);
        r
    };
    let (answer, stall, ()) = tokio::join!(upload, stall, cut(bed, link));
    AcrossACut {
        answer,
        stall,
        took: started.elapsed(),
    }
}

/// The origin's answer to a `/digest` upload of `body`, as `upload_across_a_cut` reads it
/// (trimmed).
fn digest_answer(body: &[u8]) -> String {
    canopy::origin::digest_of(body).trim_end().to_string()
}

#[tokio::test(start_paused = true)]
async fn one_download_goes_on_across_a_blackholed_link() {
    let bed = three_links().await;
    all_joined(&bed).await;
    let started = Instant::now();
    let got = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let download = async {
        let mut sender = device(&bed, 2).await;
        let req = http::Request::get(bed.origin_url("/assets/30000000"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await.expect("answer");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut pos = 0u64;
        let mut intact = true;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("body frame").into_data() else {
                continue;
            };
            for (i, b) in data.iter().enumerate() {
                intact &= *b == ((pos + i as u64) % 65536 % 251) as u8;
            }
            pos += data.len() as u64;
            got.store(pos, Ordering::Relaxed);
        }
        done.store(1, Ordering::Relaxed);
        (status, pos, intact)
    };
    let stall = longest_stall(
        || got.load(Ordering::Relaxed),
        started + Duration::from_secs(3),
        || done.load(Ordering::Relaxed) == 1,
    );
    let ((status, len, intact), stall, ()) = tokio::join!(download, stall, cut_busiest(&bed));
    let took = started.elapsed();
    assert_eq!(
        (status, len, intact),
        (200, 30_000_000, true),
        "the download arrives whole"
    );
    // (0.42-0.81 s before pieces asked again were ranked and the chunks below them hurried)
    assert!(
        stall < Duration::from_millis(600),
        "the download stalled {stall:?}"
    );
    eprintln!(
        "sim: one 30 MB download took {} ms; longest stall at the device after the cut {} ms",
        took.as_millis(),
        stall.as_millis()
    );
}

type Frames = std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>;

/// A request body of unknown length (sent chunked): `body` in frames of 16 KB.
fn chunked(body: Bytes) -> http_body_util::StreamBody<futures_util::stream::Iter<Frames>> {
    let frames: Vec<_> = body
        .chunks(16 * 1024)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    http_body_util::StreamBody::new(futures_util::stream::iter(frames))
}

#[tokio::test(start_paused = true)]
async fn chunked_posts_go_on_across_a_blackholed_link() {
    // the issue's case: 200 KB POSTs back to back, one failed with 502 at every cut; these
    // come without a length (chunked), which the gateway had to stream once on one path
    let bed = three_links().await;
    all_joined(&bed).await;
    let posts = async {
        let mut sender = device(&bed, 2).await;
        let started = Instant::now();
        let mut results = Vec::new();
        // from 2.5 s to 4.5 s: Wi-Fi's cut at 3 s falls among them
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let mut n = 0u32;
        while started.elapsed() < Duration::from_millis(4500) {
            let body: Bytes = (0..200_000u32).map(|i| ((i + n) % 251) as u8).collect();
            let req = http::Request::post(bed.origin_url("/digest"))
                .body(chunked(body.clone()))
                .expect("request");
            let sent = Instant::now();
            let resp = sender.send_request(req).await.expect("answer");
            let status = resp.status().as_u16();
            let answer = resp.into_body().collect().await.expect("body").to_bytes();
            results.push((
                n,
                status,
                String::from_utf8_lossy(&answer).trim() == digest_answer(&body),
                sent.elapsed(),
            ));
            n += 1;
        }
        results
    };
    // a body of unknown length was placed as a small request, on the link of least delay
    let (results, ()) = tokio::join!(posts, cut(&bed, 1));
    assert!(results.len() >= 5, "{} POSTs sent", results.len());
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, s, ok, _)| *s != 200 || !ok)
        .collect();
    assert!(
        failed.is_empty(),
        "of {} chunked POSTs, these failed or came wrong (n, status, body ok, took): {failed:?}",
        results.len()
    );
    // the one on the dark link goes on over the others once the silence is noticed; a body
    // streamed once could only wait for the link to come back (5 s) or fail
    let slowest = results.iter().map(|r| r.3).max().unwrap_or_default();
    eprintln!(
        "sim: {} chunked 200 KB POSTs across the cut, all whole; slowest {} ms",
        results.len(),
        slowest.as_millis()
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a chunked POST took {slowest:?}"
    );
}

/// A slow origin never holds bids back. A striped upload's chunks beyond the relay's
/// window wait there for the origin (here it takes 100 kB/s); their bytes must not sit
/// unread in the connections' flow-control windows, or every stream on those paths, bids
/// among them, would wait with them. The windows are 512 KiB here (16 MiB by default), so
/// the chunks waiting outgrow them within a second of the relay's stripe window filling.
/// Measured with a relay that stopped reading a waiting chunk: 10 of 20 bids got a 202
/// receipt after 2 s, two more took 0.65 s.
#[tokio::test(start_paused = true)]
async fn a_slow_origin_never_holds_bids_back() {
    let bed = three_links_with(tunnel_io::TransportSettings {
        connection_window: 512 << 10,
        ..Default::default()
    })
    .await;
    all_joined(&bed).await;
    let upload = upload_in_background(&bed, "/upload/slow/100000", 24_000_000).await;
    // the relay's stripe window (8 MiB) fills in about 3 s on the three links
    tokio::time::sleep(Duration::from_secs(8)).await;
    let taken = bed.origin_stats.upload_bytes.load(Ordering::Relaxed);
    assert!(taken < 2_000_000, "the origin took {taken} bytes: not slow");
    let mut held = Vec::new();
    for n in 0..20 {
        let (status, took) = bid(&bed, n).await;
        // 201: the relay's auction recorded it (202 would be a receipt: not delivered)
        if status != 201 || took > Duration::from_millis(500) {
            held.push((n, status, took));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !upload.is_finished(),
        "the upload still waits for the origin"
    );
    upload.abort();
    assert!(held.is_empty(), "bids held back: {held:?}");
    eprintln!("sim: 20 bids beside an upload to a slow origin, each recorded within 500 ms");
}

/// Bids ride through a collapse: both links fall from 7 Mbit/s to 250 kbit/s with 600 ms
/// of queue (a drop-tail buffer full of what a large upload had under way), so both
/// usually go silent at once while their queues drain. A bid's copy whose path goes silent
/// is held, not given up, and with no path up a bid goes on every connected one: it sits
/// in a queue that drains, so it waits at most that queue and a round trip, and every bid
/// is recorded (none is left to the replay loop's receipt, 202, after 2 s).
///
/// The script's timing varies from run to run, on the paused clock too (the cause is not
/// tracked down): whether a link goes silent at all (in 2 of 20 runs none did), and the
/// slowest bid, 365-795 ms in 20 runs of the code that holds
/// copies, against 630-871 ms in three of the code before it, which gave copies up at the
/// silence. So the bound here is 1 s, what a queue of 600 ms and the round trips never
/// reach, and the script runs again (at most three times) until a link went silent; the
/// finer difference is `cargo bench --bench lowbw`'s (the same collapse under a camera:
/// the slowest bid 1.2-1.5 s before, 0.6-0.93 s after).
#[tokio::test(start_paused = true)]
async fn bids_ride_through_a_collapse() {
    for attempt in 1..=3 {
        let (results, sent_ms, none_up_ms, some_dead) = bids_across_a_collapse().await;
        let slowest = all_recorded(&results);
        // the slow bids, each with when it was sent (ms from the collapse)
        let slow: Vec<String> = results
            .iter()
            .zip(&sent_ms)
            .enumerate()
            .filter(|(_, (r, _))| r.1 > Duration::from_millis(600))
            .map(|(n, (r, at))| format!("bid {n} sent at {at} ms took {} ms", r.1.as_millis()))
            .collect();
        assert!(
            slowest < Duration::from_secs(1),
            "slowest bid {slowest:?} (attempt {attempt}; no path up for {none_up_ms} ms; \
             a link went silent: {some_dead}): {slow:?}"
        );
        eprintln!(
            "sim: 40 bids across a collapse to 250 kbit/s, slowest {} ms; no path up for \
             {none_up_ms} ms; a link went silent: {some_dead}",
            slowest.as_millis()
        );
        if some_dead {
            return;
        }
    }
    panic!("no link went silent at the collapse in three runs");
}

/// One run of [`bids_ride_through_a_collapse`]'s script: the bids' outcomes, when each
/// was sent (ms from the collapse), how long no path was up, and whether some link went
/// silent (the script's premise).
async fn bids_across_a_collapse() -> (Vec<(u16, Duration)>, Vec<i64>, u64, bool) {
    let bed = links_with(
        &[("cellular", 7_000, 25), ("wifi", 7_000, 8)],
        tunnel_io::TransportSettings::default(),
    )
    .await;
    all_joined(&bed).await;
    let upload = upload_in_background(&bed, "/digest", 40_000_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let collapse = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for link in bed.links.iter().flatten() {
            let mut p = link.profile();
            p.up.rate_kbps = 250;
            p.up.queue_ms = 600;
            link.set_profile(p);
        }
    };
    let start = Instant::now();
    let bids = async {
        let (mut out, mut sent_ms) = (Vec::new(), Vec::new());
        for n in 0..40 {
            // from the collapse, 1 s after the start
            sent_ms.push(start.elapsed().as_millis() as i64 - 1000);
            out.push(bid(&bed, n).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (out, sent_ms)
    };
    // how long no path was up (the collapse's silence on both; not every run has one),
    // and whether some path went silent at all
    let paths = bed.bond.paths().to_vec();
    let silences = async {
        let (mut none_up_ms, mut some_dead) = (0, false);
        for _ in 0..400 {
            if paths.iter().all(|p| !p.is_usable()) {
                none_up_ms += 10;
            }
            some_dead |= paths.iter().any(|p| p.is_dead());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (none_up_ms, some_dead)
    };
    let ((results, sent_ms), (), (none_up_ms, some_dead)) = tokio::join!(bids, collapse, silences);
    upload.abort();
    (results, sent_ms, none_up_ms, some_dead)
}
