//! Bids that are never lost and never doubled, end to end: real `canopy relay` and `canopy
//! gateway` processes, curl as the venue device, the demo origin counting what it gets.

mod common;

use common::{curl, Stack, SITE};
use std::time::{Duration, Instant};

/// A bid through the gateway as a reverse site: (status, headers and body).
fn bid(s: &Stack, key: Option<&str>, body: &str) -> (u16, String) {
    let mut args = vec![
        "-i".to_string(),
        "-H".into(),
        format!("Host: {SITE}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.into(),
    ];
    if let Some(k) = key {
        args.push("-H".into());
        args.push(format!("Idempotency-Key: {k}"));
    }
    args.push(format!("{}/bid", s.proxy_url()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(url: &str) -> String {
    String::from_utf8_lossy(&curl(&[url]).stdout).to_string()
}

fn bid_status(s: &Stack, key: &str) -> serde_json::Value {
    serde_json::from_str(&get(&format!("{}/bids/{key}", s.proxy_url()))).unwrap_or_default()
}

fn origin_keys(s: &Stack) -> Vec<String> {
    serde_json::from_str(&get(&s.origin_url("/bids"))).unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bids_during_an_outage_get_receipts_and_arrive_once_in_order() {
    let mut s = Stack::start_full("bids-outage", "", "[bids]\ndeadline_ms = 500\n");
    // one bid on a healthy link: the origin's answer, with the key
    let (st, text) = bid(&s, Some("k-0"), "{\"lot\":1,\"amount\":100}");
    assert_eq!(st, 200, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("idempotency-key: k-0"),
        "{text}"
    );
    // the relay goes away: bids are journaled and answered 202 with a receipt
    s.kill_relay();
    for i in 1..=8 {
        let (st, text) = bid(
            &s,
            Some(&format!("k-{i}")),
            &format!("{{\"lot\":1,\"amount\":{}}}", 100 + i),
        );
        assert_eq!(st, 202, "bid {i}: {text}");
        assert!(
            text.contains("\"status\":\"queued\"") || text.contains("\"status\":\"sending\""),
            "{text}"
        );
        assert!(text.contains(&format!("/bids/k-{i}")), "{text}");
    }
    // a bid without a key of its own gets one, and its receipt names it
    let (st, text) = bid(&s, None, "{\"lot\":1,\"amount\":200}");
    assert_eq!(st, 202, "{text}");
    let made = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("idempotency-key: ")
                .map(|k| k.trim().to_string())
        })
        .expect("the gateway's key in the answer");
    assert!(made.starts_with("cnp-"), "{made}");
    assert_eq!(bid_status(&s, "k-3")["status"], "queued");
    assert_eq!(origin_keys(&s), vec!["k-0"]);
    // the relay returns: every bid arrives, once, in the order the venue got them
    s.start_relay();
    wait_until(
        "the queued bids to be delivered",
        Duration::from_secs(30),
        || bid_status(&s, &made)["status"] == "delivered",
    );
    let mut want: Vec<String> = (0..=8).map(|i| format!("k-{i}")).collect();
    want.push(made.clone());
    assert_eq!(origin_keys(&s), want);
    let st = bid_status(&s, "k-3");
    assert_eq!(st["answer_status"], 200, "{st}");
    // the device's retry gets the answer again; nothing more reaches the origin
    let (code, text) = bid(&s, Some("k-3"), "{\"lot\":1,\"amount\":103}");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"key\":\"k-3\""), "{text}");
    assert_eq!(origin_keys(&s).len(), want.len());
}

#[test]
fn a_reused_key_with_another_body_is_refused_and_leaks_nothing() {
    let s = Stack::start("bids-reuse");
    let (st, first) = bid(&s, Some("shared-1"), "{\"lot\":2,\"amount\":50}");
    assert_eq!(st, 200, "{first}");
    // another device, another bid, the same key
    let (st, text) = bid(&s, Some("shared-1"), "{\"lot\":2,\"amount\":5000}");
    assert_eq!(st, 422, "{text}");
    assert!(
        !text.contains("\"accepted\""),
        "the first answer leaked: {text}"
    );
    assert_eq!(origin_keys(&s), vec!["shared-1"]);
    // a short key of the device's own is kept: its retry is a retry
    let (st, _) = bid(&s, Some("k-12"), "{\"lot\":3}");
    assert_eq!(st, 200);
    let (st, text) = bid(&s, Some("k-12"), "{\"lot\":3}");
    assert_eq!(st, 200, "{text}");
    assert_eq!(origin_keys(&s), vec!["shared-1", "k-12"]);
    // unknown keys
    assert!(get(&format!("{}/bids/nope", s.proxy_url())).contains("no bid"));
}

#[test]
fn a_gateway_killed_with_bids_queued_delivers_them_after_restart() {
    let mut s = Stack::start_full("bids-crash", "", "[bids]\ndeadline_ms = 300\n");
    s.kill_relay();
    for i in 0..5 {
        let (st, text) = bid(&s, Some(&format!("c-{i}")), &format!("{{\"n\":{i}}}"));
        assert_eq!(st, 202, "{text}");
    }
    // the gateway dies (SIGKILL) with five acknowledged bids undelivered
    s.kill_gateway();
    s.start_relay();
    s.start_gateway();
    s.wait_up();
    wait_until(
        "the journaled bids to be delivered",
        Duration::from_secs(30),
        || origin_keys(&s).len() >= 5,
    );
    std::thread::sleep(Duration::from_millis(500));
    let want: Vec<String> = (0..5).map(|i| format!("c-{i}")).collect();
    assert_eq!(origin_keys(&s), want);
    assert_eq!(bid_status(&s, "c-4")["status"], "delivered");
}

#[test]
fn a_restarted_relay_never_sends_an_answered_key_twice() {
    let mut s = Stack::start("bids-relay-restart");
    let body = "{\"lot\":4,\"amount\":10}";
    let (st, first) = bid(&s, Some("r-1"), body);
    assert_eq!(st, 200, "{first}");
    // both ends die, and the gateway's journal is gone: only the relay remembers the key
    s.kill_relay();
    s.kill_gateway();
    std::fs::remove_file(s.dir.path().join("bids.journal")).expect("gateway journal");
    s.start_relay();
    s.start_gateway();
    s.wait_up();
    let (st, again) = bid(&s, Some("r-1"), body);
    assert_eq!(st, 200, "{again}");
    let answer = |t: &str| t.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    assert_eq!(answer(&again), answer(&first), "the first answer, replayed");
    // another request under the key is still refused
    let (st, text) = bid(&s, Some("r-1"), "{\"lot\":4,\"amount\":99}");
    assert_eq!(st, 422, "{text}");
    assert_eq!(origin_keys(&s), vec!["r-1"]);
}

/// Opens a raw connection to the proxy from `from` and writes `head` (and no more).
fn raw(s: &Stack, from: &str, head: &str) -> std::net::TcpStream {
    use std::io::Write;
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("addr");
    sock.bind(&local.into()).expect("bind");
    let proxy: std::net::SocketAddr = s.proxy_url()["http://".len()..].parse().expect("proxy");
    sock.connect(&proxy.into()).expect("connect");
    let mut tcp: std::net::TcpStream = sock.into();
    tcp.write_all(head.as_bytes()).expect("write");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp
}

fn status_line(tcp: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let n = tcp.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn one_device_holding_tunnels_and_stalled_uploads_cannot_starve_bids() {
    let s = Stack::start_with(
        "bids-abuse",
        "max_tunnels_per_device = 5\nmax_requests_per_device = 5\n",
    );
    let origin = s.origin_url("/");
    let origin = origin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut t = raw(
            &s,
            "127.0.0.1",
            &format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n"),
        );
        assert!(status_line(&mut t).contains(" 200"), "tunnel refused");
        held.push(t);
    }
    let mut sixth = raw(
        &s,
        "127.0.0.1",
        &format!("CONNECT {origin} HTTP/1.1\r\nHost: {origin}\r\n\r\n"),
    );
    assert!(status_line(&mut sixth).contains(" 429"));
    // five uploads that stall after their first bytes
    for i in 0..5 {
        held.push(raw(
            &s,
            "127.0.0.1",
            &format!(
                "POST http://{origin}/upload HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 1000000\r\n\r\nstalled-{i}"
            ),
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut more = raw(
        &s,
        "127.0.0.1",
        &format!("GET http://{origin}/stats HTTP/1.1\r\nHost: {origin}\r\n\r\n"),
    );
    assert!(status_line(&mut more).contains(" 429"));
    // the busy device's own bid, and another device's, go through
    let (st, text) = bid(&s, Some("abuse-1"), "{\"lot\":5}");
    assert_eq!(st, 200, "{text}");
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--interface",
        "127.0.0.2",
        "-x",
        &s.proxy_url(),
        &format!("http://{origin}/stats"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    drop(held);
}
