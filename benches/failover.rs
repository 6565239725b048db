//! Failover bench (root: network namespaces). The bonding bench's links; steady bulk
//! uploads plus a bid every 100 ms; at t=5 s the busiest uplink goes down, at t=15 s it
//! returns. Run twice: carrier down (the venue sees the link go) and blackhole (packets
//! silently dropped). Linux MPTCP over the same links and cuts as the reference.
//!
//! `cargo bench --bench failover` -> target/canopy-bench/failover.json: max_stall_ms (longest
//! gap in delivered bytes), recover80_ms (to 80% of the remaining capacity), restore_full_ms
//! (after the return, to 90% of the full aggregate), bids_sent, bids_lost,
//! bid_p99_ms_during_cut, and the same stall figures for MPTCP; the headline is the worse of
//! the two runs, each run's figures are prefixed with its kind. redundant_extra_ratio is the
//! second copies of bids over all body bytes carried (the cost of sending bids twice).
//! Then one transfer alone across the same cuts, each way (one 70 MB upload, one long
//! download): single_up_max_stall_ms, single_down_max_stall_ms, single_up_restore_full_ms,
//! single_down_restore_full_ms and the MPTCP figures beside them (`mptcp_single_...`),
//! the worse of the two kinds. The longest stall is also split by where it began:
//! `single_..._cut_stall_ms` (from 0.5 s before the cut to 2 s after), `_return_stall_ms`
//! (the same around the return) and `_steady_stall_ms` (anywhere else: no fault).
//! `CANOPY_FAILOVER_SINGLE=0` leaves the single runs out.

mod common;

use serde_json::{json, Value};

fn worse(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => json!(x.max(y)),
        // never reached (null) is worse than any time
        _ => Value::Null,
    }
}

fn main() -> anyhow::Result<()> {
    if !common::is_root() {
        println!("failover: skipped (needs root for network namespaces)");
        return Ok(());
    }
    let carrier = common::run_netns_scenario("benches/netns/failover.sh", &["carrier"])?;
    let blackhole = common::run_netns_scenario("benches/netns/failover.sh", &["blackhole"])?;
    let mut out = json!({
        "scenario": "failover",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
    });
    let g = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    if std::env::var("CANOPY_FAILOVER_SINGLE").as_deref() != Ok("0") {
        for dir in ["up", "down"] {
            let mode = format!("{dir}1");
            let runs = [
                common::run_netns_scenario("benches/netns/failover.sh", &["carrier", "1", &mode])?,
                common::run_netns_scenario(
                    "benches/netns/failover.sh",
                    &["blackhole", "1", &mode],
                )?,
            ];
            for k in [
                "max_stall_ms",
                "cut_stall_ms",
                "return_stall_ms",
                "steady_stall_ms",
                "restore_full_ms",
                "recover80_ms",
            ] {
                for prefix in ["", "mptcp_"] {
                    let key = format!("{prefix}{k}");
                    out[format!("{prefix}single_{dir}_{k}")] =
                        worse(&g(&runs[0], &key), &g(&runs[1], &key));
                }
            }
            for (kind, r) in [("carrier", &runs[0]), ("blackhole", &runs[1])] {
                out[format!("single_{dir}_{kind}")] = r.clone();
            }
        }
    }
    for k in [
        "max_stall_ms",
        "recover80_ms",
        "restore_full_ms",
        "bid_p99_ms_during_cut",
        "mptcp_max_stall_ms",
        "mptcp_recover80_ms",
        "mptcp_restore_full_ms",
        "redundant_extra_ratio",
    ] {
        out[k] = worse(&g(&carrier, k), &g(&blackhole, k));
    }
    for k in ["bids_sent", "bids_lost", "uploads_failed"] {
        out[k] =
            json!(g(&carrier, k).as_u64().unwrap_or(0) + g(&blackhole, k).as_u64().unwrap_or(0));
    }
    for (kind, v) in [("carrier", &carrier), ("blackhole", &blackhole)] {
        if let Some(m) = v.as_object() {
            for (k, val) in m {
                if k != "kind" {
                    out[format!("{kind}_{k}")] = val.clone();
                }
            }
        }
    }
    let path = common::write_json("failover", &out)?;
    println!(
        "failover: stall {} ms, recover80 {} ms, restore {} ms, bids {}/{} lost, bid p99 during cut {} ms; MPTCP stall {} ms, recover80 {} ms, restore {} ms -> {}",
        out["max_stall_ms"],
        out["recover80_ms"],
        out["restore_full_ms"],
        out["bids_lost"],
        out["bids_sent"],
        out["bid_p99_ms_during_cut"],
        out["mptcp_max_stall_ms"],
        out["mptcp_recover80_ms"],
        out["mptcp_restore_full_ms"],
        path.display()
    );
    println!(
        "failover, one transfer: upload stall {} ms (MPTCP {}; at the cut {}, without a fault {}), download stall {} ms (MPTCP {}; at the cut {}, without a fault {}); restore {} / {} ms",
        out["single_up_max_stall_ms"],
        out["mptcp_single_up_max_stall_ms"],
        out["single_up_cut_stall_ms"],
        out["single_up_steady_stall_ms"],
        out["single_down_max_stall_ms"],
        out["mptcp_single_down_max_stall_ms"],
        out["single_down_cut_stall_ms"],
        out["single_down_steady_stall_ms"],
        out["single_up_restore_full_ms"],
        out["single_down_restore_full_ms"],
    );
    Ok(())
}
