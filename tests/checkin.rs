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

#[test]
fn tokens_the_organizer_voided_are_refused_at_the_door_offline() {
    let keys = TempDir::new("revoked-keys");
    let key = keys.path().join("organizer.key");
    let public = tokens(&["keygen", "--out", key.to_str().expect("utf8")]);
    let mut s = Stack::start_full(
        "checkin-revoked",
        "",
        &format!(
            "[checkin]\npublic_key = \"{public}\"\nevent = \"market\"\nrevoked = \"revoked.txt\"\n"
        ),
    );
    let k = key.to_str().expect("utf8");
    let issue = |attendee: &str, id: &str| issue_token(k, "market", attendee, &["--id", id]);
    let probe = issue("A-0", "t-probe");
    let voided = issue("A-1", "t-void");
    let inside = issue("A-2", "t-2");
    let attendee_voided = issue("A-3", "t-3");
    let fine = issue("A-4", "t-4");
    // no list yet (a missing file voids nothing)
    let (st, v) = check_in(&s, &inside);
    assert_eq!(st, 200, "{v}");
    // the organizer's list lands on the box, copied as a crew would (a rename)
    let list = s.dir.path().join("revoked.txt");
    let tmp = s.dir.path().join("revoked.txt.new");
    let write = |text: &str| {
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &list).expect("rename");
    };
    write("# refunds\ntoken t-probe\ntoken t-void\ntoken t-2\nattendee A-3\n");
    wait_until("the list in force", || {
        check_in(&s, &probe).1["reason"] == "revoked"
    });
    // with every uplink gone
    s.kill_relay();
    for (token, why) in [
        (&voided, "revoked this token"),
        (&attendee_voided, "revoked this attendee's tokens"),
        // voided once inside: not let in again
        (&inside, "revoked this token"),
    ] {
        let (st, v) = check_in(&s, token);
        assert_eq!((st, v["reason"].as_str()), (403, Some("revoked")), "{v}");
        assert!(v["detail"].as_str().unwrap_or("").contains(why), "{v}");
    }
    let (st, v) = check_in(&s, &fine);
    assert_eq!((st, v["result"].as_str()), (200, Some("admitted")), "{v}");
    // a list that stops parsing leaves the one in force (read 2 s after it settled)...
    write("token t-probe\nticket t-void\n");
    std::thread::sleep(Duration::from_millis(3500));
    let (st, v) = check_in(&s, &voided);
    assert_eq!((st, v["reason"].as_str()), (403, Some("revoked")), "{v}");
    // ...and the next good one is in force again (t-void no longer voided)
    write("token t-probe # only the probe now\n");
    wait_until("the next list in force", || check_in(&s, &voided).0 == 200);
    // a bad list stops a start, as a bad config does
    write("token t-probe\nticket t-void\n");
    s.kill_gateway();
    s.start_gateway();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = s.gateway.0.try_wait().expect("wait") {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "the gateway started with a bad list"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(64));
}
