//! What is wrong, in words, most pressing first: read from the admin status itself, so
//! the status page, `canopy status` and the JSON say the same.

use serde_json::Value;

/// A bid or check-in undelivered this long (s) is waiting, not on its way: the bid path's
/// default deadline before it answers 202.
const WAITING_AFTER_S: f64 = 2.0;

/// What an operator must look at, most pressing first; empty when all is well.
pub(crate) fn problems(s: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let links = s["links"].as_array().map(Vec::as_slice).unwrap_or_default();
    let usable = links.iter().filter(|l| l["usable"] == true).count();
    if !links.is_empty() && usable == 0 {
        out.push("every uplink is down: bids and check-ins are kept on the box".into());
    } else {
        for l in links.iter().filter(|l| l["usable"] != true) {
            out.push(format!(
                "uplink {} is {}",
                l["name"].as_str().unwrap_or("?"),
                l["state"].as_str().unwrap_or("not usable")
            ));
        }
    }
    for l in links {
        // a hold by hand is easy to forget once the fault it answered is gone
        if let Some(h) = l["held_by_hand"].as_str() {
            out.push(format!(
                "uplink {} is {} by hand",
                l["name"].as_str().unwrap_or("?"),
                match crate::actions::HandHold::from_name(h) {
                    Some(crate::actions::HandHold::Prefer) => "preferred",
                    _ => "avoided",
                }
            ));
        }
        if let (Some(used), Some(cap)) = (l["cap_used_bytes"].as_f64(), l["cap_bytes"].as_f64()) {
            if cap > 0.0 && used >= 0.9 * cap {
                out.push(format!(
                    "uplink {} has used {:.0}% of its daily cap",
                    l["name"].as_str().unwrap_or("?"),
                    100.0 * used / cap
                ));
            }
        }
    }
    let pending = s["bids"]["pending"].as_u64().unwrap_or(0);
    let oldest = s["bids"]["oldest_pending_s"].as_f64().unwrap_or(0.0);
    // one in flight is not waiting: it is waiting once it is older than a delivery takes
    if pending > 0 && oldest >= WAITING_AFTER_S {
        out.push(format!(
            "{pending} {} for an uplink (oldest {oldest:.0} s)",
            if pending == 1 {
                "bid or check-in waits"
            } else {
                "bids or check-ins wait"
            }
        ));
    }
    for c in s["cameras"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let level = c["level"].as_str().unwrap_or("full");
        if level != "full" {
            out.push(format!(
                "camera {} is at {level}{}",
                c["camera"].as_str().unwrap_or("?"),
                if c["pinned"].is_string() {
                    " (set by hand)"
                } else {
                    ""
                }
            ));
        }
    }
    for a in s["actions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if a["active"] == true {
            out.push(format!(
                "action {} is on{}: {}",
                a["name"].as_str().unwrap_or("?"),
                if a["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                },
                a["cause"].as_str().unwrap_or("")
            ));
        }
    }
    for p in s["paused"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push(format!(
            "{} traffic is paused by {}",
            p["class"].as_str().unwrap_or("?"),
            p["by"].as_str().unwrap_or("?")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "links": [
                {"name": "cellular", "state": "up", "usable": true,
                 "cap_used_bytes": 95, "cap_bytes": 100},
                {"name": "wifi", "state": "down", "usable": false,
                 "cap_used_bytes": 0, "cap_bytes": null, "held_by_hand": "avoid"}
            ],
            "cameras": [{"camera": "stage", "level": "substream", "pinned": null}],
            "actions": [{"name": "low-bw", "active": true, "dry_run": false, "firings": 2,
                         "cause": "bonded capacity 0.40 Mbit/s below 2.00 Mbit/s for 3.0 s"}],
            "paused": [{"class": "bulk", "by": "hold-bulk"}],
            "bids": {"pending": 3, "oldest_pending_s": 12.4}
        })
    }

    #[test]
    fn what_is_wrong_comes_first() {
        assert_eq!(
            problems(&sample()),
            [
                "uplink wifi is down",
                "uplink cellular has used 95% of its daily cap",
                "uplink wifi is avoided by hand",
                "3 bids or check-ins wait for an uplink (oldest 12 s)",
                "camera stage is at substream",
                "action low-bw is on: bonded capacity 0.40 Mbit/s below 2.00 Mbit/s for 3.0 s",
                "bulk traffic is paused by hold-bulk",
            ]
        );
    }

    #[test]
    fn every_uplink_down_is_said_once_and_all_well_is_nothing() {
        let mut s = sample();
        s["links"][0]["usable"] = false.into();
        let p = problems(&s);
        assert_eq!(
            p[0],
            "every uplink is down: bids and check-ins are kept on the box"
        );
        assert!(!p.iter().any(|l| l == "uplink wifi is down"));
        let calm = serde_json::json!({
            "links": [{"name": "eth", "state": "up", "usable": true}],
            "cameras": [], "actions": [], "paused": [], "bids": {"pending": 0}
        });
        assert!(problems(&calm).is_empty());
        // a bid on its way is not a problem; one bid waiting is said as one
        let mut s = sample();
        s["bids"]["oldest_pending_s"] = 0.3.into();
        assert!(!problems(&s).iter().any(|p| p.contains("wait")));
        s["bids"] = serde_json::json!({"pending": 1, "oldest_pending_s": 2.5});
        assert!(problems(&s)
            .contains(&"1 bid or check-in waits for an uplink (oldest 2 s)".to_string()));
    }
}
