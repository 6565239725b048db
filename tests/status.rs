//! What the crew sees without a browser: `canopy status` sums the gateway up, what is
//! wrong first, and the admin API keeps each uplink's last minutes (`/api/history`).

mod common;

use common::{bid, curl, free_port, wait_until, Stack};
use std::time::Duration;

fn status(s: &Stack) -> (Option<i32>, String, String) {
    let config = s.dir.path().join("gateway.toml");
    let out = common::canopy(&["status", "--config", config.to_str().expect("utf8")]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The status of a curl request with `args`.
fn http_status(args: &[&str]) -> String {
    let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&curl(&all).stdout).into_owned()
}

#[test]
fn canopy_status_says_what_is_wrong_first_and_history_keeps_each_second() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut s = Stack::start_full(
        "status",
        "",
        &format!("[bids]\ndeadline_ms = 300\n[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n"),
    );
    // all well: one line says so, and the uplink's row is there
    let (code, out, err) = status(&s);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("OK: every uplink up, nothing waiting"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("uplink "))
        .unwrap_or_else(|| panic!("no uplink row: {out}"));
    assert!(row.split_whitespace().nth(1) == Some("up"), "{row}");
    assert!(out.contains("BIDS     0 waiting"), "{out}");

    // the history has a point a second for the uplink, and only newer ones on asking
    let token = std::fs::read_to_string(s.dir.path().join("admin.token")).expect("token");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let history = |q: &str| {
        let out = curl(&["-s", "-H", &auth, &format!("http://{admin}/api/history{q}")]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    wait_until("three seconds of history", Duration::from_secs(10), || {
        history("")["links"][0]["points"]
            .as_array()
            .is_some_and(|p| p.len() >= 3)
    });
    let h = history("");
    assert_eq!(h["links"][0]["name"], "uplink", "{h}");
    let points = h["links"][0]["points"].as_array().expect("points");
    assert!(
        points
            .windows(2)
            .all(|w| w[0]["at_s"].as_u64() < w[1]["at_s"].as_u64()),
        "{h}"
    );
    // the first second may still be the uplink's probation
    assert_eq!(points.last().expect("a point")["state"], "up", "{h}");
    let last = points.last().expect("a point")["at_s"]
        .as_u64()
        .expect("at_s");
    // after `last - 1`: `last` first, then whatever second closed since
    let newer = history(&format!("?since={}", last - 1));
    let newer = newer["links"][0]["points"].as_array().expect("points");
    assert_eq!(newer.first().map(|p| p["at_s"].as_u64()), Some(Some(last)));
    assert!(newer.iter().all(|p| p["at_s"].as_u64() >= Some(last)));
    let bad = http_status(&[
        "-H",
        &auth,
        &format!("http://{admin}/api/history?since=yesterday"),
    ]);
    assert_eq!(bad, "400");
    assert_eq!(
        http_status(&[&format!("http://{admin}/api/history")]),
        "401"
    );

    // the page holds no data and needs no token; its events do
    let page = curl(&["-s", "-w", "%{http_code}", &format!("http://{admin}/")]);
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(page.ends_with("200") && page.contains("/page.js"), "{page}");
    for asset in ["/operator.js", "/page.js", "/page.css"] {
        assert_eq!(
            http_status(&[&format!("http://{admin}{asset}")]),
            "200",
            "{asset}"
        );
    }
    let events = |auth: &[&str]| {
        let mut args = vec!["-s", "-N", "--max-time", "2.5"];
        args.extend_from_slice(auth);
        let url = format!("http://{admin}/api/events");
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    assert!(
        events(&[]).contains("Authorization: Bearer"),
        "refused without the token"
    );
    let stream = events(&["-H", &auth]);
    let frames: Vec<serde_json::Value> = stream
        .split("\n\n")
        .filter_map(|b| b.strip_prefix("event: status\ndata: "))
        .map(|d| serde_json::from_str(d).expect("an event's JSON"))
        .collect();
    assert!(frames.len() >= 2, "an event a second: {stream}");
    assert_eq!(
        frames[0]["status"]["links"][0]["name"], "uplink",
        "{stream}"
    );
    let points = |f: &serde_json::Value| {
        f["history"]["links"][0]["points"]
            .as_array()
            .map(Vec::len)
            .expect("points")
    };
    assert!(
        points(&frames[0]) >= 3,
        "all of the history first: {stream}"
    );
    assert!(points(&frames[1]) <= 2, "then only what is new: {stream}");

    // an uplink held by hand, and let go
    let hold = |uplink: &str, body: &str| {
        let out = curl(&[
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            &auth,
            "-X",
            "PUT",
            "--data",
            body,
            &format!("http://{admin}/api/uplinks/{uplink}"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let held = hold("uplink", "{\"hold\": \"avoid\"}");
    assert!(held.ends_with("200"), "{held}");
    assert!(
        held.contains("\"tier\": \"backup\"") && held.contains("\"held_by_hand\": \"avoid\""),
        "{held}"
    );
    assert!(hold("uplink", "{\"hold\": \"sometimes\"}").ends_with("422"));
    assert!(hold("nowhere", "{\"hold\": \"avoid\"}").ends_with("404"));
    // the hold outlives a restart of the gateway ([admin] holds_file)
    s.kill_gateway();
    s.start_gateway();
    s.wait_up();
    let link = || {
        let out = curl(&["-s", "-H", &auth, &format!("http://{admin}/api/status")]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        st["links"][0].clone()
    };
    let after = link();
    assert_eq!(after["held_by_hand"], "avoid", "{after}");
    assert_eq!(after["tier"], "backup", "{after}");
    let kept = std::fs::read_to_string(s.dir.path().join("admin.holds.json")).expect("holds");
    assert!(kept.contains("\"uplink\": \"avoid\""), "{kept}");
    let back = hold("uplink", "{\"hold\": \"auto\"}");
    assert!(
        back.ends_with("200") && back.contains("\"held_by_hand\": null"),
        "{back}"
    );
    assert!(back.contains("\"tier\": \"primary\""), "{back}");
    let kept = std::fs::read_to_string(s.dir.path().join("admin.holds.json")).expect("holds");
    assert!(
        !kept.contains("\"uplink\""),
        "a lifted hold is not kept: {kept}"
    );

    // every uplink down, a bid kept on the box: said first, plainly (the history
    // restarted with the gateway: its first second closed first)
    wait_until("a second of history", Duration::from_secs(5), || {
        history("")["links"][0]["points"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    let before = history("")["links"][0]["points"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["at_s"].as_u64())
        .expect("a point");
    s.kill_relay();
    let (st, text) = bid(&s, Some("status-1"), "{\"lot\":1,\"amount\":5}");
    assert_eq!(st, 202, "{text}");
    let mut last = String::new();
    wait_until(
        "the outage and the bid on the status",
        Duration::from_secs(10),
        || {
            last = status(&s).1;
            last.contains("! every uplink is down")
                && last.contains("! 1 bid or check-in waits for an uplink")
        },
    );
    assert!(last.contains("BIDS     1 waiting"), "{last}");
    let h = history("");
    assert!(
        h["links"][0]["points"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["at_s"].as_u64() > Some(before) && p["usable"] == false)),
        "the outage is in the history: {h}"
    );

    // no admin API at the config's address: a plain error, not a trace
    s.kill_gateway();
    let (code, _, err) = status(&s);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is the gateway running?"), "{err}");
}
