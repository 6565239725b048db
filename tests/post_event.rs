//! The event's end, as the crew meets it: check-in closes at `[event] end`; the post-event
//! hygiene (`canopy purge --post-event`, or by itself after the grace period) empties the
//! edge cache, destroys the leaf keys, reduces the journal to reconciliation records and
//! writes a report; `--dry-run` shows it all and deletes nothing.

mod common;

use common::{
    bid, canopy, check_in, curl, free_port, issue_token, tokens, wait_until, Stack, TempDir, SITE,
};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(s)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// A stack whose gateway knows the event (`[event]` with `event_extra`), an admin API
/// and check-in; returns it with the check-in key file, and the admin API's address.
fn stack(tag: &str, start: i64, end: i64, event_extra: &str) -> (Stack, TempDir, String, String) {
    let keys = TempDir::new(&format!("{tag}-keys"));
    let key = keys.path().join("organizer.key");
    let public = tokens(&["keygen", "--out", key.to_str().expect("utf8")]);
    let admin = format!("127.0.0.1:{}", free_port());
    let s = Stack::start_full(
        tag,
        "",
        &format!(
            "[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n\
             [checkin]\npublic_key = \"{public}\"\n\
             [event]\nslug = \"market\"\nstart = \"{}\"\nend = \"{}\"\n{event_extra}\n",
            rfc3339(start),
            rfc3339(end)
        ),
    );
    let k = key.to_str().expect("utf8").to_string();
    (s, keys, k, admin)
}

/// A PUT to the gateway's admin API: (status, body).
fn admin_put(s: &Stack, admin: &str, path: &str, body: &str) -> (String, String) {
    let token = std::fs::read_to_string(s.dir.path().join("admin.token")).expect("admin token");
    let out = curl(&[
        "-s",
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        "-X",
        "PUT",
        "--data",
        body,
        &format!("http://{admin}{path}"),
    ]);
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (b, code) = t.rsplit_once('\n').unwrap_or(("", &t));
    (code.to_string(), b.to_string())
}

fn purge(s: &Stack, extra: &[&str]) -> (i32, String) {
    let config = s.dir.path().join("gateway.toml");
    let mut args = vec![
        "purge",
        "--config",
        config.to_str().expect("utf8"),
        "--post-event",
    ];
    args.extend_from_slice(extra);
    let out = canopy(&args);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// (status, Cache-Status) of a GET through the site.
fn fetch(s: &Stack, path: &str) -> (String, String) {
    let out = curl(&[
        "-H",
        &format!("Host: {SITE}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}|%header{cache-status}",
        &format!("{}{path}", s.proxy_url()),
    ]);
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    let (a, b) = t.split_once('|').unwrap_or((&t, ""));
    (a.to_string(), b.to_string())
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn after_the_event_the_crew_purges_and_keeps_only_reconciliation_records() {
    let start = now_s() - 3600;
    let end = now_s() + 8;
    let (s, _keys, key, admin) = stack(
        "post-event",
        start,
        end,
        "grace_hours = 0\npost_event = \"manual\"",
    );
    let d = s.dir.path();
    // during the event: a check-in, a bid, cached assets
    let issue = |attendee: &str, extra: &[&str]| issue_token(&key, "market", attendee, extra);
    let token = issue("Grace-Hopper", &["--id", "tok-77"]);
    let (st, v) = check_in(&s, &token);
    assert_eq!(st, 200, "{v}");
    let (st, answer) = bid(
        &s,
        Some("bid-lot7-0001"),
        r#"{"lot":"7","amount":1200,"bidder":"Ada-Lovelace"}"#,
    );
    assert_eq!(st, 200, "{answer}");
    for i in 0..3 {
        fetch(&s, &format!("/static/e{i}.css"));
    }
    assert!(fetch(&s, "/static/e0.css").1.starts_with("canopy; hit"));
    // the crew held the venue's uplink off by hand during the event
    let (code, held) = admin_put(&s, &admin, "/api/uplinks/uplink", "{\"hold\": \"avoid\"}");
    assert_eq!(code, "200", "{held}");
    assert!(held.contains("\"held_by_hand\": \"avoid\""), "{held}");
    let journal = d.join("bids.journal");
    let before = std::fs::read(&journal).expect("journal");
    assert!(
        before.windows(12).any(|w| w == b"Ada-Lovelace"),
        "the journal holds the bid whole during the event"
    );
    // not over yet: a real run is refused, a dry run is not
    let (code, said) = purge(&s, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("is not over"), "{said}");
    let (code, said) = purge(&s, &["--dry-run"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("DRY RUN"), "{said}");
    // the event ends: check-in closes
    let wait = (end - now_s() + 1).max(0) as u64;
    std::thread::sleep(Duration::from_secs(wait));
    let late = issue("Late-1", &[]);
    let (st, v) = check_in(&s, &late);
    assert_eq!((st, v["reason"].as_str()), (403, Some("event_over")), "{v}");
    // a dry run after the end says what would go and deletes nothing
    let (code, said) = purge(&s, &["--dry-run"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("DRY RUN"), "{said}");
    assert!(said.contains("3 answers"), "{said}");
    assert!(said.contains("gateway.key"), "{said}");
    assert!(
        said.contains("uplink uplink held by hand at avoid: hold would be lifted"),
        "{said}"
    );
    assert!(d.join("certs/gateway.key").exists());
    assert_eq!(std::fs::read(&journal).expect("journal"), before);
    assert!(!d.join("market.post-event.json").exists());
    assert!(!d.join("market.records.jsonl").exists());
    assert!(fetch(&s, "/static/e1.css").1.starts_with("canopy; hit"));
    // the real run
    let (code, said) = purge(&s, &[]);
    assert_eq!(code, 0, "{said}");
    assert!(!said.contains("DRY RUN"), "{said}");
    for gone in ["certs/gateway.key", "certs/gateway.next.key"] {
        assert!(said.contains(gone), "{gone} in {said}");
        assert!(!d.join(gone).exists(), "{gone} destroyed");
    }
    // the CA and the public certificates stay: only keys are secrets
    assert!(d.join("certs/ca.pem").exists() && d.join("certs/gateway.pem").exists());
    let (_, cs) = fetch(&s, "/static/e2.css");
    assert!(cs.contains("fwd=uri-miss"), "the cache is empty: {cs}");
    let after = std::fs::read(&journal).expect("journal");
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    for secret in [&b"Ada-Lovelace"[..], b"Grace-Hopper"] {
        assert!(!after.windows(secret.len()).any(|w| w == secret));
    }
    let records_path = d.join("market.records.jsonl");
    assert_eq!(mode(&records_path), 0o600);
    let records = std::fs::read_to_string(&records_path).expect("records");
    let lines: Vec<serde_json::Value> = records
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let b = lines
        .iter()
        .find(|r| r["kind"] == "bid")
        .unwrap_or_else(|| panic!("a bid record in {records}"));
    assert_eq!(b["key"], "bid-lot7-0001");
    assert_eq!(b["lot"], "7");
    assert_eq!(b["amount"], 1200);
    assert_eq!(b["outcome"], "answered 200");
    assert!(b["edge_us"].as_u64().is_some_and(|t| t > 0));
    let checkin = lines
        .iter()
        .find(|r| r["kind"] == "checkin")
        .unwrap_or_else(|| panic!("a check-in record in {records}"));
    assert_eq!(
        (&checkin["key"], &checkin["gate"], &checkin["outcome"]),
        (&"tok-77".into(), &"north".into(), &"admitted".into())
    );
    for secret in ["Ada", "Grace", "bidder", "attendee"] {
        assert!(!records.contains(secret), "{secret} in {records}");
    }
    // the report, as JSON and as text
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("market.post-event.json")).expect("report"))
            .expect("json");
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["cache"]["answers"], 3, "{report}");
    assert_eq!(report["records"]["bids"], 1, "{report}");
    // the hold set by hand is lifted, in the gateway and in its holds file
    assert_eq!(
        report["holds"],
        serde_json::json!([{"kind": "uplink", "name": "uplink", "hold": "avoid"}]),
        "{report}"
    );
    let holds = std::fs::read_to_string(d.join("admin.holds.json")).expect("holds file");
    assert!(!holds.contains("avoid"), "{holds}");
    let token = std::fs::read_to_string(d.join("admin.token")).expect("admin token");
    let out = curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        &format!("http://{admin}/api/status"),
    ]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert!(
        st["links"][0]["held_by_hand"].is_null(),
        "{}",
        st["links"][0]
    );
    assert_eq!(st["links"][0]["tier"], "primary", "{}", st["links"][0]);
    assert!(
        report["errors"].as_array().is_some_and(Vec::is_empty),
        "{report}"
    );
    let text = std::fs::read_to_string(d.join("market.post-event.txt")).expect("text");
    assert!(text.contains("access logs"), "{text}");
    // a bid after the hygiene still works (the box is not bricked while it runs)
    let (st, answer) = bid(&s, Some("bid-late-0002"), r#"{"lot":"8","amount":5}"#);
    assert_eq!(st, 200, "{answer}");
}

#[test]
fn the_gateway_runs_the_hygiene_itself_after_the_grace_period() {
    // an event that ended two hours ago with a one-hour grace period
    let end = now_s() - 7200;
    let (s, _keys, _, _) = stack("post-event-auto", end - 3600, end, "grace_hours = 1");
    let d = s.dir.path();
    let report = d.join("market.post-event.json");
    wait_until(
        "the gateway's own post-event run",
        Duration::from_secs(20),
        || report.exists(),
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(v["trigger"], "auto", "{v}");
    assert!(!d.join("certs/gateway.key").exists());
    // a second run adds to the records, and is not a fresh start
    let (code, said) = purge(&s, &[]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("none left to destroy"), "{said}");
    // records that cannot be read are never replaced, and the journal is left whole
    let records = d.join("market.records.jsonl");
    std::fs::write(&records, "not a record\n").expect("write");
    let (code, said) = purge(&s, &[]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("left whole"), "{said}");
    assert_eq!(
        std::fs::read_to_string(&records).expect("records"),
        "not a record\n"
    );
}

#[test]
fn a_bad_event_section_names_its_line_and_key() {
    let dir = TempDir::new("post-event-config");
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        "[gateway]\nname = \"g\"\n[relay]\naddr = \"127.0.0.1:9\"\n\
         [event]\nslug = \"market\"\nstart = \"2026-12-05T18:00\"\nend = \"2026-12-05T23:00\"\n\
         timezone = \"Mars/Olympus\"\nretention_days = 120\n",
    )
    .expect("write");
    let out = canopy(&["gateway", "--config", path.to_str().expect("utf8")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(
        said.contains("gateway.toml:9: key `event.timezone`"),
        "{said}"
    );
    assert!(
        said.contains("gateway.toml:10: key `event.retention_days`"),
        "{said}"
    );
}
