//! Delta telemetry to the relay's fleet view: every `[telemetry] every_ms` the gateway
//! sums itself up (links, cameras' levels, bids, problems: what `/api/status` says, in
//! [`summary`]) and sends what changed since the summary the relay last took
//! (`tunnel::telemetry::Reporter`), on one usable uplink, as bulk: below bids, check-ins
//! and live media from its first byte.

use crate::admin::AdminView;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tunnel::telemetry::Reporter;
use tunnel::wire::telemetry::{clean_value, key_part, two_digits, LinkLine, Summary};
use tunnel::wire::{self, telemetry};

/// Most problems a summary carries (the most pressing first).
const MAX_PROBLEMS: usize = 4;
/// Most cameras and links a summary carries each.
const MAX_NAMED: usize = 32;

/// The summary of a gateway's `/api/status`.
pub fn summary(status: &Value) -> Summary {
    let mut s = Summary::new();
    let mut put = |k: String, v: String| {
        s.insert(k, clean_value(&v));
    };
    let links = status["links"].as_array().map_or(&[][..], |v| v.as_slice());
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let (mut up, mut down, mut links_up) = (0.0, 0.0, 0);
    for l in links {
        up += num(l, "up_bps");
        down += num(l, "down_bps");
        links_up += usize::from(l["usable"].as_bool().unwrap_or(false));
    }
    put("up".into(), two_digits(up / 1000.0));
    put("down".into(), two_digits(down / 1000.0));
    put("links".into(), links.len().to_string());
    put("links_up".into(), links_up.to_string());
    for l in links.iter().take(MAX_NAMED) {
        let line = LinkLine {
            state: l["state"].as_str().unwrap_or("unknown").into(),
            kind: l["kind"].as_str().unwrap_or("other").into(),
            up_kbps: num(l, "up_bps") / 1000.0,
            down_kbps: num(l, "down_bps") / 1000.0,
            rtt_ms: num(l, "srtt_ms"),
            loss_pct: num(l, "loss") * 100.0,
        };
        put(
            format!("l.{}", key_part(l["name"].as_str().unwrap_or("?"))),
            line.encode(),
        );
    }
    if let Some(cams) = status["cameras"].as_array() {
        for c in cams.iter().take(MAX_NAMED) {
            let level = c["level"].as_str().unwrap_or("full");
            let v = match c["pinned"].as_str() {
                Some(_) => format!("{level} pinned"),
                None => level.to_string(),
            };
            put(
                format!("c.{}", key_part(c["camera"].as_str().unwrap_or("?"))),
                v,
            );
        }
    }
    let b = &status["bids"];
    put(
        "bids".into(),
        format!(
            "{} {} {} {}",
            b["accepted"].as_u64().unwrap_or(0),
            b["pending"].as_u64().unwrap_or(0),
            b["queued"].as_u64().unwrap_or(0),
            two_digits(b["oldest_pending_s"].as_f64().unwrap_or(0.0))
        ),
    );
    if let Some(c) = status["stream_capacity_bps"].as_f64() {
        put("capacity".into(), two_digits(c / 1000.0));
    }
    if let Some(ps) = status["problems"].as_array() {
        for (i, p) in ps.iter().take(MAX_PROBLEMS).enumerate() {
            put(format!("p.{i}"), p.as_str().unwrap_or("").to_string());
        }
    }
    put("v".into(), env!("CARGO_PKG_VERSION").into());
    s
}

/// Reports every `every` until the task is dropped.
pub async fn run(view: Arc<AdminView>, every: Duration) {
    let mut reporter = Reporter::new(fastrand::u64(1..), every);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let bytes = metrics::counter!("canopy_gateway_telemetry_bytes_total");
    loop {
        tick.tick().await;
        // the best usable uplink by round trip; none: nothing is sent, nothing is lost
        let Some(live) = view
            .bond
            .paths()
            .iter()
            .filter(|p| p.is_usable())
            .min_by_key(|p| p.status().srtt)
            .and_then(|p| p.live())
        else {
            continue;
        };
        let report = reporter.report(
            std::time::Instant::now(),
            summary(&crate::admin::status(&view)),
        );
        let body = report.encode();
        let uri = format!(
            "https://{}{}",
            wire::SESSION_AUTHORITY,
            telemetry::TELEMETRY_PATH
        );
        // what goes on the wire at most: the body, and the request's fields uncompressed
        bytes.increment((body.len() + uri.len() + "POST".len() + 8) as u64);
        let mut sender = live.sender.clone();
        let sent = tunnel_io::quic::opening_as(
            tunnel_io::quic::Start::Bulk,
            // unanswered within the interval: the next report goes, on the best path then
            tokio::time::timeout(every, send(&mut sender, &uri, body)),
        )
        .await;
        match sent {
            Ok(Some(Answer::Taken)) => reporter.taken(report.seq),
            Ok(Some(Answer::WantFull)) => reporter.want_full(),
            // no answer: the next report is from the last summary the relay took
            _ => {}
        }
    }
}

/// What the relay did with a report.
enum Answer {
    Taken,
    WantFull,
}

async fn send(sender: &mut crate::uplink::Sender, uri: &str, body: String) -> Option<Answer> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(())
        .ok()?;
    let mut stream = sender.send_request(req).await.ok()?;
    stream.send_data(Bytes::from(body)).await.ok()?;
    stream.finish().await.ok()?;
    let resp = stream.recv_response().await.ok()?;
    while let Ok(Some(_)) = stream.recv_data().await {}
    match resp.status() {
        StatusCode::NO_CONTENT => Some(Answer::Taken),
        StatusCode::CONFLICT
            if resp
                .headers()
                .get(telemetry::HDR_TELEMETRY)
                .is_some_and(|v| v == telemetry::WANT_FULL) =>
        {
            Some(Answer::WantFull)
        }
        s => {
            tracing::debug!(status = %s, "telemetry not taken");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_sums_up_in_short_keys() {
        let status = serde_json::json!({
            "links": [
                {"name": "cell", "kind": "cellular", "state": "up", "usable": true,
                 "up_bps": 12_345_000.0, "down_bps": 800_000.0, "srtt_ms": 45.2, "loss": 0.001},
                {"name": "wi fi", "kind": "wifi", "state": "down", "usable": false,
                 "up_bps": 0.0, "down_bps": 0.0, "srtt_ms": 0.0, "loss": 0.0},
            ],
            "cameras": [{"camera": "stage", "level": "substream", "pinned": "substream"}],
            "bids": {"accepted": 80, "pending": 2, "queued": 1, "oldest_pending_s": 1.26},
            "stream_capacity_bps": 9_000_000.0,
            "problems": ["an uplink is down: wi fi", "b", "c", "d", "e"],
        });
        let s = summary(&status);
        assert_eq!(s["up"], "12000");
        assert_eq!(s["links"], "2");
        assert_eq!(s["links_up"], "1");
        assert_eq!(s["l.cell"], "up cellular 12000 800 45 0.1");
        assert_eq!(s["l.wi_fi"], "down wifi 0 0 0 0");
        assert_eq!(s["c.stage"], "substream pinned");
        assert_eq!(s["bids"], "80 2 1 1.3");
        assert_eq!(s["capacity"], "9000");
        assert_eq!(s["p.0"], "an uplink is down: wi fi");
        assert!(!s.contains_key("p.4"));
        // every key and value passes the relay's checks
        let r = tunnel::wire::telemetry::Report {
            epoch: 1,
            every_ms: 1000,
            seq: 1,
            base: 0,
            set: s.into_iter().collect(),
            removed: vec![],
        };
        assert!(tunnel::wire::telemetry::Report::decode(r.encode().as_bytes()).is_ok());
    }
}
