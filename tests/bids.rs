//! Bids that are never lost and never doubled, end to end: real `canopy relay` and `canopy
//! gateway` processes, curl as the venue device, the demo origin counting what it gets.

mod common;

use common::{acknowledged, bid, burst_with, curl, free_port, spawn, wait_until, Proc, Stack};
use std::time::{Duration, Instant};

fn get(url: &str) -> String {
    String::from_utf8_lossy(&curl(&[url]).stdout).to_string()
}

fn bid_status(s: &Stack, key: &str) -> serde_json::Value {
    serde_json::from_str(&get(&format!("{}/bids/{key}", s.proxy_url()))).unwrap_or_default()
}

fn origin_keys(s: &Stack) -> Vec<String> {
    serde_json::from_str(&get(&s.origin_url("/bids"))).unwrap_or_default()
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

/// The plain origin's `host:port`.
fn origin_authority(s: &Stack) -> String {
    s.origin_url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
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
        "max_tunnels_per_device = 5\nmax_requests_per_device = 5\nbody_idle_timeout_ms = 2000\n",
    );
    let origin = origin_authority(&s);
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
    // the stalled uploads are cut after 2 s without bytes: the device has room again
    std::thread::sleep(Duration::from_millis(3000));
    let mut after = raw(
        &s,
        "127.0.0.1",
        &format!("GET http://{origin}/stats HTTP/1.1\r\nHost: {origin}\r\n\r\n"),
    );
    assert!(status_line(&mut after).contains(" 200"));
    drop(held);
}

#[test]
fn a_device_that_stops_reading_its_answers_gets_its_slots_back() {
    let s = Stack::start_with(
        "bids-unread",
        "max_requests_per_device = 2\nbody_idle_timeout_ms = 2000\n",
    );
    let origin = origin_authority(&s);
    let get = |path: &str| format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    // two 200 MB answers the device never reads: they fill the sockets' buffers and wait
    let held: Vec<_> = (0..2)
        .map(|_| raw(&s, "127.0.0.1", &get("/assets/200000000")))
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let mut third = raw(&s, "127.0.0.1", &get("/stats"));
    assert!(
        status_line(&mut third).contains(" 429"),
        "both slots are held by the unread answers"
    );
    // the answers waited 2 s for the device: cut, and the slots are free again
    wait_until("a slot free again", Duration::from_secs(20), || {
        status_line(&mut raw(&s, "127.0.0.1", &get("/stats"))).contains(" 200")
    });
    drop(held);
}

/// A bid on lot 7 of the relay's auction, through the gateway: (status, body).
fn lot_bid(s: &Stack, key: &str, bidder: &str, amount: u64) -> (u16, String) {
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "Host: auction.test",
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("Idempotency-Key: {key}"),
        "--data-binary",
        &format!("{{\"bidder\":\"{bidder}\",\"amount\":{amount}}}"),
        &format!("{}/lots/7/bids", s.proxy_url()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn lot(s: &Stack) -> serde_json::Value {
    let out = curl(&[
        "-H",
        "Host: auction.test",
        &format!("{}/lots/7", s.proxy_url()),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// `curl` on the relay's lots API with the fleet token: (status, body).
fn lots_api(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut args = vec![
        "-s".to_string(),
        "-w".into(),
        "\n%{http_code}".into(),
        "-X".into(),
        method.into(),
        "-H".into(),
        format!("Authorization: Bearer {token}"),
    ];
    if !body.is_empty() {
        args.extend(["--data-binary".into(), body.into()]);
    }
    args.push(format!("http://{addr}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[test]
fn an_auctioneer_makes_and_moves_lots_and_a_restart_keeps_them() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut s = Stack::start_custom(
        "bids-lots",
        "",
        "[[sites]]\nhost = \"auction.test\"\norigin = \"http://auction.canopy\"\n[[classes]]\nclass = \"bid\"\npath_prefix = \"/lots/\"\nmethod = \"POST\"\n",
        &format!(
            "[fleet]\nlisten = \"{addr}\"\ntoken_file = \"fleet.token\"\n[auction]\nhost = \"auction.canopy\"\nmax_outage_s = 1\n[[auction.lots]]\nid = \"7\"\ncloses_at_unix = {}\n",
            now + 3600
        ),
    );
    let token = std::fs::read_to_string(s.dir.path().join("fleet.token")).expect("token");
    let token = token.trim();
    // a setting's status, and its result or the reason it was refused
    let put = |token: &str, lot: &str, body: &str| {
        let (st, v) = lots_api(&addr, token, "PUT", &format!("/api/lots/{lot}"), body);
        let said = v["result"].as_str().or(v["reason"].as_str()).unwrap_or("");
        (st, said.to_string())
    };
    let at = |secs: u64| format!("{{\"closes_at_unix\": {secs}}}");
    assert_eq!(put("wrong", "9", &at(now + 3600)).0, 401);
    // a lot made while the sale runs takes bids through the venue
    assert_eq!(put(token, "9", &at(now + 3600)), (201, "created".into()));
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: auction.test",
        "-H",
        "Idempotency-Key: lot9-a",
        "--data-binary",
        "{\"bidder\":\"paddle-4\",\"amount\":500}",
        &format!("{}/lots/9/bids", s.proxy_url()),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    // refused: a close in the past, a malformed setting, an id that is not plain
    assert_eq!(put(token, "9", &at(1)), (422, "in_the_past".into()));
    assert_eq!(put(token, "9", "{\"closes\": \"soon\"}").0, 422);
    let hammer = "{\"close_now\": true}";
    assert_eq!(put(token, "a%20b", &at(now + 60)), (422, "bad_id".into()));
    assert_eq!(put(token, "8", hammer).0, 404, "the hammer on no lot");
    // lot 7 takes more bids than a closed lot keeps
    for i in 0..60u64 {
        let (st, body) = lot_bid(
            &s,
            &format!("seven-{i:02}"),
            &format!("paddle-{i}"),
            100 + i,
        );
        assert_eq!(st, 201, "{body}");
    }
    // the hammer on lot 7; then it cannot be reopened
    assert_eq!(put(token, "7", hammer), (200, "moved".into()));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(put(token, "7", &at(now + 7200)), (409, "closed".into()));
    assert_eq!(lot_bid(&s, "late-7", "paddle-1", 100).0, 409);
    // a restart keeps the lot made and the hammer, over the config's close
    s.kill_relay();
    s.start_relay();
    s.wait_up();
    let (st, v) = lots_api(&addr, token, "GET", "/api/lots/9", "");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["bids"], 1, "{v}");
    assert_eq!(v["leader"]["bidder"], "paddle-4", "{v}");
    // lot 7's result is final: its bids went to the archive, the lot keeps its tally,
    // its leader and its latest bids, and so does the journal
    let archive = s.dir.path().join("auction-archive.jsonl");
    let journal = s.dir.path().join("auction.journal");
    wait_until("lot 7 folded", Duration::from_secs(10), || {
        lots_api(&addr, token, "GET", "/api/lots/7", "").1["folded"] == true
    });
    let (_, v) = lots_api(&addr, token, "GET", "/api/lots/7", "");
    assert_eq!(v["phase"], "closed", "{v}");
    assert_eq!(
        (v["bids"].as_u64(), v["raises"].as_u64()),
        (Some(60), Some(60)),
        "{v}"
    );
    assert_eq!(v["leader"]["bidder"], "paddle-59", "{v}");
    let lines = std::fs::read_to_string(&archive).expect("archive");
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON line per lot"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["lot"]["id"], "7");
    let archived = lines[0]["bids"].as_array().expect("bids");
    assert_eq!(archived.len(), 60);
    assert_eq!(archived[0]["key"], "seven-00");
    let history = lot(&s)["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 10);
    assert_eq!(history[0]["key"], "seven-50");
    // a restart reads the folded lot back as it was, and folds nothing again
    let journal_len = std::fs::metadata(&journal).expect("journal").len();
    s.kill_relay();
    s.start_relay();
    s.wait_up();
    let (_, again) = lots_api(&addr, token, "GET", "/api/lots/7", "");
    assert_eq!(again, v);
    assert_eq!(lot(&s)["history"].as_array().map(Vec::len), Some(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(&archive)
            .expect("archive")
            .lines()
            .count(),
        1
    );
    assert_eq!(
        std::fs::metadata(&journal).expect("journal").len(),
        journal_len
    );
    let (_, v) = lots_api(&addr, token, "GET", "/api/lots/9", "");
    assert_eq!(v["bids"], 1, "{v}");
}

#[test]
fn an_outage_across_a_lots_close_is_judged_by_edge_time() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // the lot closes 8 s after the start; the relay is gone from 2 s to about 16 s
    let close = now + 8;
    let mut s = Stack::start_custom(
        "bids-auction",
        "",
        "[bids]\ndeadline_ms = 300\n[[sites]]\nhost = \"auction.test\"\norigin = \"http://auction.canopy\"\n[[classes]]\nclass = \"bid\"\npath_prefix = \"/lots/\"\nmethod = \"POST\"\n",
        &format!(
            "[auction]\nhost = \"auction.canopy\"\nmax_outage_s = 120\n[[auction.lots]]\nid = \"7\"\ncloses_at_unix = {close}\n"
        ),
    );
    let (st, body) = lot_bid(&s, "a-00", "paddle-1", 100);
    assert_eq!(st, 201, "{body}");
    s.kill_relay();
    let mut sent = vec![("a-00".to_string(), 100u64)];
    let mut i = 1;
    let outage_end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < outage_end {
        let key = format!("a-{i:02}");
        let amount = 100 + 10 * i;
        let (st, body) = lot_bid(&s, &key, &format!("paddle-{}", i % 3 + 1), amount);
        assert_eq!(st, 202, "{key}: {body}");
        sent.push((key, amount));
        i += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    s.start_relay();
    s.wait_up();
    let last = sent.last().map(|(k, _)| k.clone()).unwrap_or_default();
    wait_until("every queued bid answered", Duration::from_secs(60), || {
        bid_status(&s, &last)["status"] == "delivered"
    });
    let standing = lot(&s);
    let history = standing["history"].as_array().cloned().unwrap_or_default();
    let close_us = close * 1_000_000;
    // every bid placed before the close is in, in edge-time order; none placed after
    let edges: Vec<u64> = history
        .iter()
        .map(|b| b["edge_us"].as_u64().unwrap_or(0))
        .collect();
    assert!(edges.windows(2).all(|w| w[0] <= w[1]), "{edges:?}");
    assert!(edges.iter().all(|e| *e < close_us), "{edges:?}");
    let keys: Vec<&str> = history
        .iter()
        .map(|b| b["key"].as_str().unwrap_or(""))
        .collect();
    let mut ordered = keys.clone();
    ordered.sort_unstable();
    assert_eq!(keys, ordered, "edge-time order is the order they were sent");
    assert!(keys.len() >= 5 && keys.len() < sent.len(), "{keys:?}");
    // those placed after the close were answered 409 "closed"
    let refused = sent.len() - keys.len();
    let late = &sent[keys.len()].0;
    let v = bid_status(&s, late);
    assert_eq!(v["status"], "delivered", "{v}");
    assert_eq!(v["answer_status"], 409, "{v}");
    assert!(
        v["answer"].as_str().unwrap_or("").contains("\"closed\""),
        "{v}"
    );
    assert!(refused >= 4, "{refused}");
    assert_eq!(standing["leader"]["key"], keys[keys.len() - 1]);
    assert_eq!(standing["bids"], keys.len());
    // every bid recorded once: a retry of a recorded bid is the same bid
    let (st, body) = lot_bid(&s, "a-00", "paddle-1", 100);
    assert_eq!(
        st, 201,
        "the gateway answers a retry with the first answer: {body}"
    );
    assert_eq!(lot(&s)["bids"], keys.len());
}

/// Sends `per_thread` bids from each of `threads` devices, one after another, while
/// `during` runs; every bid's (key, status).
#[test]
fn a_gateway_killed_mid_burst_loses_and_doubles_nothing() {
    let mut s = Stack::start_full("bids-kill-gw", "", "[bids]\ndeadline_ms = 500\n");
    let (pid, dir) = (s.gateway.0.id(), s.dir.path().to_path_buf());
    let mut fresh = None;
    let results = burst_with(
        &s,
        8,
        25,
        |s, key, n| bid(s, Some(key), &format!("{{\"lot\":9,\"amount\":{n}}}")).0,
        || {
            std::thread::sleep(Duration::from_millis(400));
            Proc::kill_pid(pid);
            std::thread::sleep(Duration::from_millis(300));
            fresh = Some(spawn(&dir, "gateway"));
        },
    );
    if let Some(p) = fresh {
        s.gateway = p;
    }
    let acked = acknowledged(&results, &[200, 202]);
    let refused = results.len() - acked.len();
    assert!(refused > 0, "the kill came too late to cut the burst");
    assert!(acked.len() > 50, "{} acknowledged", acked.len());
    s.wait_up();
    wait_until(
        "every acknowledged bid at the origin",
        Duration::from_secs(60),
        || {
            let got = origin_keys(&s);
            acked.iter().all(|k| got.contains(k))
        },
    );
    std::thread::sleep(Duration::from_millis(1000));
    let got = origin_keys(&s);
    let mut seen = std::collections::HashSet::new();
    let doubled: Vec<&String> = got.iter().filter(|k| !seen.insert(*k)).collect();
    assert!(doubled.is_empty(), "delivered twice: {doubled:?}");
}

/// A bid on lot 9 of the relay's auction; its status.
fn auction_bid(s: &Stack, key: &str, n: usize) -> u16 {
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: auction.test",
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("Idempotency-Key: {key}"),
        "--data-binary",
        &format!("{{\"bidder\":\"paddle-{}\",\"amount\":{}}}", n % 7, 100 + n),
        &format!("{}/lots/9/bids", s.proxy_url()),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_relay_killed_mid_burst_records_every_bid_once() {
    let close = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let mut s = Stack::start_custom(
        "bids-kill-relay",
        "",
        "[bids]\ndeadline_ms = 500\n[[sites]]\nhost = \"auction.test\"\norigin = \"http://auction.canopy\"\n[[classes]]\nclass = \"bid\"\npath_prefix = \"/lots/\"\nmethod = \"POST\"\n",
        &format!(
            "[auction]\nhost = \"auction.canopy\"\n[[auction.lots]]\nid = \"9\"\ncloses_at_unix = {close}\n"
        ),
    );
    let (pid, dir) = (s.relay.0.id(), s.dir.path().to_path_buf());
    let mut fresh = None;
    let results = burst_with(&s, 8, 25, auction_bid, || {
        std::thread::sleep(Duration::from_millis(400));
        Proc::kill_pid(pid);
        std::thread::sleep(Duration::from_millis(500));
        fresh = Some(spawn(&dir, "relay"));
    });
    if let Some(p) = fresh {
        s.relay = p;
    }
    // 201 recorded; 202 queued at the gateway during the relay's absence
    let acked = acknowledged(&results, &[201, 202]);
    assert!(
        results.iter().any(|(_, st)| *st == 202),
        "the kill came too late to matter"
    );
    s.wait_up();
    let lot9 = |s: &Stack| -> serde_json::Value {
        let out = curl(&[
            "-H",
            "Host: auction.test",
            &format!("{}/lots/9", s.proxy_url()),
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    wait_until(
        "every acknowledged bid recorded",
        Duration::from_secs(60),
        || lot9(&s)["bids"].as_u64().unwrap_or(0) >= acked.len() as u64,
    );
    std::thread::sleep(Duration::from_millis(1000));
    // recorded once each: the auction keeps one bid per key, and its count is every
    // bid that got through, no more
    let v = lot9(&s);
    assert_eq!(v["bids"].as_u64(), Some(acked.len() as u64), "{v}");
    for k in acked.iter().take(5) {
        assert_eq!(bid_status(&s, k)["status"], "delivered");
    }
}
