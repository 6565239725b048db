//! `canopy status`: the gateway's admin status (`GET /api/status`) at a glance in a
//! terminal, what is wrong first (the gateway's own words, `problems`). Pure: JSON in, text
//! out.

use serde_json::Value;
use std::fmt::Write;

fn mbit(bps: &Value) -> String {
    bps.as_f64()
        .map_or_else(|| "-".into(), |b| format!("{:.2}", b / 1e6))
}

fn bytes(n: &Value) -> String {
    let n = n.as_f64().unwrap_or(0.0);
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.0} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

/// The whole glance.
pub fn glance(s: &Value) -> String {
    let mut o = String::new();
    let cap = s["stream_capacity_bps"]
        .as_f64()
        .map_or_else(String::new, |c| {
            format!(" · stream capacity {:.1} Mbit/s", c / 1e6)
        });
    let _ = writeln!(o, "gateway {}{cap}", s["gateway"].as_str().unwrap_or("?"));
    match s["problems"].as_array() {
        Some(p) if p.is_empty() => {
            let _ = writeln!(o, "OK: every uplink up, nothing waiting");
        }
        Some(p) => {
            for p in p.iter().filter_map(Value::as_str) {
                let _ = writeln!(o, "! {p}");
            }
        }
        // a gateway that does not say: no verdict either way
        None => {}
    }
    let _ = writeln!(
        o,
        "\n{:<12} {:<10} {:>9} {:>11} {:>7} {:>6}",
        "UPLINK", "STATE", "UP Mbit/s", "DOWN Mbit/s", "RTT ms", "LOSS"
    );
    for l in s["links"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let usable = l["usable"] == true;
        let _ = writeln!(
            o,
            "{:<12} {:<10} {:>9} {:>11} {:>7} {:>6}{}",
            l["name"].as_str().unwrap_or("?"),
            l["state"].as_str().unwrap_or("?"),
            mbit(&l["up_bps"]),
            mbit(&l["down_bps"]),
            if usable {
                format!("{:.0}", l["srtt_ms"].as_f64().unwrap_or(0.0))
            } else {
                "-".into()
            },
            format!("{:.1}%", 100.0 * l["loss"].as_f64().unwrap_or(0.0)),
            if l["tier"] == "backup" {
                "  backup"
            } else {
                ""
            },
        );
    }
    let cams = s["cameras"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !cams.is_empty() {
        let list: Vec<String> = cams
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}",
                    c["camera"].as_str().unwrap_or("?"),
                    c["level"].as_str().unwrap_or("?"),
                    if c["pinned"].is_string() {
                        " (pinned)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let _ = writeln!(o, "\nCAMERAS  {}", list.join(" · "));
    }
    let b = &s["bids"];
    if b.is_object() {
        let _ = writeln!(
            o,
            "BIDS     {} waiting · {} taken since start, {} went to the queue · journal {}",
            b["pending"].as_u64().unwrap_or(0),
            b["accepted"].as_u64().unwrap_or(0),
            b["queued"].as_u64().unwrap_or(0),
            bytes(&b["journal_bytes"])
        );
    }
    let c = &s["cache"];
    if c.is_object() {
        let _ = writeln!(
            o,
            "CACHE    {} answers · {} in memory · {} on disk",
            c["entries"].as_u64().unwrap_or(0),
            bytes(&c["bytes"]),
            bytes(&c["disk_bytes"])
        );
    }
    let actions = s["actions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !actions.is_empty() {
        let on = actions.iter().filter(|a| a["active"] == true).count();
        let fired: u64 = actions.iter().filter_map(|a| a["firings"].as_u64()).sum();
        let _ = writeln!(
            o,
            "ACTIONS  {} rules · {on} on now · {fired} firings since start",
            actions.len()
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "gateway": "stall-1",
            "stream_capacity_bps": 12.5e6,
            "links": [
                {"name": "cellular", "state": "up", "usable": true, "srtt_ms": 45.2,
                 "loss": 0.001, "up_bps": 3.2e6, "down_bps": 5.1e6, "tier": "primary",
                 "cap_used_bytes": 95, "cap_bytes": 100},
                {"name": "wifi", "state": "down", "usable": false, "srtt_ms": 0.0,
                 "loss": 0.0, "up_bps": 0.0, "down_bps": 0.0, "tier": "primary",
                 "cap_used_bytes": 0, "cap_bytes": null}
            ],
            "cameras": [{"camera": "stage", "level": "substream", "pinned": null}],
            "actions": [{"name": "low-bw", "active": true, "dry_run": false, "firings": 2,
                         "cause": "bonded capacity 0.40 Mbit/s below 2.00 Mbit/s for 3.0 s"}],
            "paused": [{"class": "bulk", "by": "hold-bulk"}],
            "bids": {"pending": 3, "accepted": 40, "queued": 3, "oldest_pending_s": 12.4,
                     "journal_bytes": 45000},
            "cache": {"entries": 12, "bytes": 4_200_000, "disk_bytes": 0},
            "problems": ["uplink wifi is down", "3 bids or check-ins wait for an uplink (oldest 12 s)"]
        })
    }

    #[test]
    fn what_is_wrong_comes_first() {
        let text = glance(&sample());
        assert!(text.starts_with("gateway stall-1 · stream capacity 12.5 Mbit/s\n! uplink wifi"));
        assert!(
            text.contains("cellular     up              3.20        5.10      45   0.1%"),
            "{text}"
        );
        assert!(
            text.contains("wifi         down            0.00        0.00       -   0.0%"),
            "{text}"
        );
        assert!(text.contains("CAMERAS  stage substream\n"), "{text}");
        assert!(
            text.contains(
                "BIDS     3 waiting · 40 taken since start, 3 went to the queue · journal 45 kB"
            ),
            "{text}"
        );
        assert!(
            text.contains("CACHE    12 answers · 4.2 MB in memory · 0 B on disk"),
            "{text}"
        );
        assert!(
            text.contains("ACTIONS  1 rules · 1 on now · 2 firings since start"),
            "{text}"
        );
    }

    #[test]
    fn all_well_is_said_too() {
        let calm = serde_json::json!({
            "gateway": "g", "links": [{"name": "eth", "state": "up", "usable": true}],
            "problems": []
        });
        assert!(glance(&calm).contains("OK: every uplink up, nothing waiting"));
        let silent = serde_json::json!({"gateway": "g", "links": []});
        assert!(!glance(&silent).contains("OK"));
    }
}
