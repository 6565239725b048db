//! The privacy gate as a venue site meets it: telemetry without consent never reaches the
//! origin (the gateway answers 204), and with consent it arrives without the identifying
//! headers, query parameters and JSON fields the site's rules name.

mod common;

use common::{curl, Stack};

const PRIVATE: &str = "private.canopy.test";

fn telemetry_seen(s: &Stack) -> serde_json::Value {
    let out = curl(&[&s.origin_url("/stats/telemetry")]);
    serde_json::from_slice(&out.stdout).expect("stats")
}

/// POSTs JSON to `path_and_query` of the private site; (status, canopy-reason).
fn post(s: &Stack, path_and_query: &str, extra: &[&str]) -> (String, String) {
    let host = format!("Host: {PRIVATE}");
    let url = format!("{}{path_and_query}", s.proxy_url());
    let mut args = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}|%header{canopy-reason}",
        "-H",
        &host,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"event":"view","email":"ann@example.com","user":{"phone":"+44 20 7946 0000","name":"Ann"},"n":3}"#,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (st, reason) = text.split_once('|').unwrap_or((&text, ""));
    (st.to_string(), reason.to_string())
}

#[test]
fn telemetry_leaves_only_with_consent_and_without_what_identifies_the_visitor() {
    let s = Stack::start_full(
        "privacy",
        "",
        &format!(
            r#"[[sites]]
host = "{PRIVATE}"
origin = "$ORIGIN"
[sites.privacy]
strip_cookies = true
user_agent = "reduce"
strip_query = ["email"]
strip_json_fields = ["email", "user.phone"]
[[sites.privacy.consent]]
path_prefix = "/t/"
cookie = "consent"
header = "x-consent"
"#
        ),
    );
    // no consent, or consent refused: answered here, nothing reaches the origin
    for extra in [
        &[][..],
        &["-H", "Cookie: consent=no"][..],
        &["-H", "X-Consent: 0"][..],
    ] {
        let (st, reason) = post(&s, "/t/event", extra);
        assert_eq!(st, "204", "{extra:?}");
        assert!(reason.contains("without consent"), "{reason}");
    }
    assert_eq!(telemetry_seen(&s)["count"], 0);

    // consent by cookie: forwarded, stripped
    let (st, _) = post(
        &s,
        "/t/event?a=1&email=ann%40example.com",
        &[
            "-H",
            "Cookie: consent=yes; session=abc123",
            "-H",
            "X-Forwarded-For: 192.168.7.23",
            "-H",
            "Forwarded: for=192.168.7.23",
            "-A",
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
        ],
    );
    assert_eq!(st, "200");
    let seen = telemetry_seen(&s);
    assert_eq!(seen["count"], 1, "{seen}");
    let last = &seen["last"];
    assert_eq!(last["target"], "/t/event?a=1", "{last}");
    let h = &last["headers"];
    for gone in ["cookie", "x-forwarded-for", "forwarded"] {
        assert!(h.get(gone).is_none(), "{gone} reached the origin: {h}");
    }
    assert_eq!(
        h["user-agent"],
        "Mozilla/5 AppleWebKit/537 Chrome/120 Mobile Safari/537"
    );
    let body: serde_json::Value =
        serde_json::from_str(last["body"].as_str().expect("body")).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"event": "view", "user": {"name": "Ann"}, "n": 3})
    );
    // the other signal works too; a body that is not JSON is refused, not sent unchecked
    let (st, _) = post(&s, "/t/event", &["-H", "X-Consent: granted"]);
    assert_eq!(st, "200");
    let bad = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Host: {PRIVATE}"),
        "-H",
        "X-Consent: yes",
        "-H",
        "Content-Type: application/json",
        "--data",
        "email=ann@example.com",
        &format!("{}/t/event", s.proxy_url()),
    ]);
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "400");
    assert_eq!(telemetry_seen(&s)["count"], 2);
}
