//! Bonding bench (root: network namespaces). Uplinks of 20/5/2 Mbit/s with 25/8/20 ms one
//! way (tc tbf for the rates, the link emulator's frame bridge for the delay). One gateway,
//! aged first by 3 minutes of mixed traffic (downloads, uploads and bids, then bids alone,
//! then all again: a fresh gateway hides estimates that drift with uptime); then on it, bulk
//! transfers through the bonded tunnel for 40 s after a 5 s warm-up, both ways, with 16, 8
//! and 1 transfers at once (a download is one transfer for the whole run); then, over the
//! same namespaces and links, Linux MPTCP (in-kernel path manager, one subflow per link, a
//! small IPPROTO_MPTCP client) the same way as the reference. The headline figures are
//! uploads at 16.
//!
//! `cargo bench --bench bonding` -> target/canopy-bench/bonding.json: nominal_mbps,
//! goodput_mbps, efficiency, mptcp_goodput_mbps, ratio_vs_mptcp (uploads at 16; the same at
//! 8 with `_p8`), and for each direction and count up_efficiency_N, down_efficiency_N,
//! mptcp_up_efficiency_N, mptcp_down_efficiency_N (N = 1, 8, 16). MPTCP does the same
//! transfers as Canopy (parallel uploads of 1 MB back to back, each waiting for its answer;
//! one upload as long as the run; downloads as long as the run); for reference,
//! mptcp_stream_up_efficiency_8 / _16 are its parallel uploads as endless streams.
//! `CANOPY_BONDING_RUNS=down1,up1` runs only those (the others are left out of the JSON);
//! `CANOPY_BONDING_AGE=0` skips the ageing (seconds, default 180); `gateway_aged_s` and
//! `gateway_age_at_end_s` say what the gateway had behind it.

mod common;

use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    if !common::is_root() {
        println!("bonding: skipped (needs root for network namespaces)");
        return Ok(());
    }
    // 40 s: MPTCP hands a download to its reader in bursts of up to 1.8 MB (in-order
    // delivery waits for the slowest subflow), and over 20 s that moved its figure by
    // 0.948-0.965 of nominal as the window shifted by a second
    let secs = common::measure_secs(40).to_string();
    let age = std::env::var("CANOPY_BONDING_AGE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(180)
        .to_string();
    let only = std::env::var("CANOPY_BONDING_RUNS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|r| r == name))
    };
    let g = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let mut runs = Vec::new();
    for dir in ["up", "down"] {
        for par in [16, 8, 1] {
            let name = format!("{dir}{par}");
            if wanted(&name) {
                runs.push((dir, par, name));
            }
        }
    }
    let list: Vec<&str> = runs.iter().map(|(_, _, n)| n.as_str()).collect();
    let all =
        common::run_netns_scenario("benches/netns/bonding.sh", &[&secs, &age, &list.join(",")])?;
    let mut out = json!({
        "scenario": "bonding",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
        "seconds": secs.parse::<u64>().unwrap_or(20),
        "parallel": 16,
        "gateway_aged_s": g(&all, "gateway_aged_s"),
        "gateway_age_at_end_s": g(&all, "gateway_age_at_end_s"),
    });
    for (dir, par, name) in &runs {
        let r = all["runs"].get(name).cloned().unwrap_or(Value::Null);
        println!(
            "bonding {dir} x{par}: {} Mbit/s (efficiency {}), MPTCP {} ({})",
            g(&r, "goodput_mbps"),
            g(&r, "efficiency"),
            g(&r, "mptcp_goodput_mbps"),
            g(&r, "mptcp_efficiency")
        );
        out[format!("{dir}_efficiency_{par}")] = g(&r, "efficiency");
        out[format!("mptcp_{dir}_efficiency_{par}")] = g(&r, "mptcp_efficiency");
        if *dir == "up" && *par != 1 {
            out[format!("mptcp_stream_up_efficiency_{par}")] = g(&r, "mptcp_stream_efficiency");
        }
        out[format!("{dir}_goodput_mbps_{par}")] = g(&r, "goodput_mbps");
        out[format!("mptcp_{dir}_goodput_mbps_{par}")] = g(&r, "mptcp_goodput_mbps");
        out[format!("{dir}_failed_{par}")] = g(&r, "transfers_failed");
        out[format!("{dir}_per_link_{par}")] = g(&r, "per_link");
        // the earlier fields: uploads at 16 (and at 8)
        if *dir == "up" && *par == 16 {
            for k in [
                "nominal_mbps",
                "goodput_mbps",
                "efficiency",
                "mptcp_goodput_mbps",
                "mptcp_efficiency",
                "ratio_vs_mptcp",
                "per_link",
            ] {
                out[k] = g(&r, k);
            }
            out["uploads_ok"] = g(&r, "transfers_ok");
            out["uploads_failed"] = g(&r, "transfers_failed");
        }
        if *dir == "up" && *par == 8 {
            for k in [
                "goodput_mbps",
                "efficiency",
                "mptcp_goodput_mbps",
                "ratio_vs_mptcp",
            ] {
                out[format!("{k}_p8")] = g(&r, k);
            }
            out["uploads_failed_p8"] = g(&r, "transfers_failed");
        }
    }
    let path = common::write_json("bonding", &out)?;
    println!(
        "bonding: up x16 {} of {} Mbit/s (efficiency {}, MPTCP {}); down x1 efficiency {} (MPTCP {}), up x1 {} (MPTCP {}) -> {}",
        out["goodput_mbps"],
        out["nominal_mbps"],
        out["efficiency"],
        out["mptcp_efficiency"],
        out["down_efficiency_1"],
        out["mptcp_down_efficiency_1"],
        out["up_efficiency_1"],
        out["mptcp_up_efficiency_1"],
        path.display()
    );
    Ok(())
}
