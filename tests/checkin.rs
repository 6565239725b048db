//! Check-in at the door with no uplink needed: real `canopy relay` and `canopy gateway`
//! processes, tokens from `canopy tokens`, curl as the scanner.

mod common;

use common::{canopy, check_in, curl, issue_token, tokens, Stack, TempDir};
use std::time::{Duration, Instant};

fn origin_checkins(s: &Stack) -> u64 {
    s.origin_stats()["checkins"].as_u64().unwrap_or(0)
}

#[test]
fn tokens_are_checked_offline_once_each_and_synced_after_an_outage() {
    let keys = TempDir::new("checkin-keys");
    let key = keys.path().join("organizer.key");
    let other = keys.path().join("other.key");
    let public = tokens(&["keygen", "--out", key.to_str().expect("utf8")]);
    tokens(&["keygen", "--out", other.to_str().expect("utf8")]);
    // a second keygen onto the same file is refused
    let again = canopy(&["tokens", "keygen", "--out", key.to_str().expect("utf8")]);
    assert_eq!(again.status.code(), Some(64));

    let mut s = Stack::start_full(
        "checkin",
        "",
        &format!(
            "[bids]\ndeadline_ms = 300\n[checkin]\npublic_key = \"{public}\"\nevent = \"market\"\nsync_url = \"$ORIGIN/checkin\"\n"
        ),
    );
    let k = key.to_str().expect("utf8");
    let issue = |attendee: &str, extra: &[&str]| issue_token(k, "market", attendee, extra);
    let a1 = issue("A-1", &[]);
    let a1_second = issue("A-1", &[]);
    let a2 = issue("A-2", &[]);
    let a3 = issue("A-3", &[]);
    let expired = issue("A-9", &["--not-before", "1000", "--expires", "2000"]);
    let later = issue(
        "A-9",
        &["--not-before", "4000000000", "--expires", "4000003600"],
    );
    let wrong_event = tokens(&[
        "issue",
        "--key",
        k,
        "--event",
        "other-fair",
        "--attendee",
        "A-9",
    ]);
    let forged = tokens(&[
        "issue",
        "--key",
        other.to_str().expect("utf8"),
        "--event",
        "market",
        "--attendee",
        "A-9",
    ]);

    let (st, v) = check_in(&s, &a1);
    assert_eq!((st, v["result"].as_str()), (200, Some("admitted")), "{v}");
    assert_eq!(v["attendee"], "A-1");
    assert_eq!(v["gate"], "north");
    for (token, status, reason) in [
        (&a1, 409, "replayed"),
        (&a1_second, 409, "double_entry"),
        (&expired, 403, "expired"),
        (&later, 403, "not_yet_valid"),
        (&wrong_event, 403, "wrong_event"),
        (&forged, 403, "forged"),
        (&"not-a-token".to_string(), 400, "malformed"),
    ] {
        let (st, v) = check_in(&s, token);
        assert_eq!((st, v["reason"].as_str()), (status, Some(reason)), "{v}");
    }
    wait_until("the first check-in synced", || origin_checkins(&s) == 1);

    // every uplink gone: the door keeps working
    s.kill_relay();
    let t = Instant::now();
    let (st, v) = check_in(&s, &a2);
    assert_eq!((st, v["result"].as_str()), (200, Some("admitted")), "{v}");
    let offline = t.elapsed();
    assert!(offline < Duration::from_secs(1), "{offline:?}");
    let (st, _) = check_in(&s, &a3);
    assert_eq!(st, 200);
    assert_eq!(origin_checkins(&s), 1);

    // the gateway dies and comes back: who is inside is not forgotten
    s.kill_gateway();
    s.start_gateway();
    wait_until("the gateway to listen", || {
        curl(&[&format!("{}/healthz", s.proxy_url())])
            .stdout
            .starts_with(b"ok")
    });
    let (st, v) = check_in(&s, &a2);
    assert_eq!((st, v["reason"].as_str()), (409, Some("replayed")), "{v}");

    // links return: the outage's check-ins reach the organizer, once each
    s.start_relay();
    s.wait_up();
    wait_until("the outage's check-ins synced", || origin_checkins(&s) >= 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(origin_checkins(&s), 3);
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
