//! Low-bandwidth bench (root: network namespaces): a 4 Mbit/s camera with a 200 kbit/s
//! substream over two 7 Mbit/s uplinks that collapse to 0.25 Mbit/s each for 30 s, with a
//! bid every 100 ms; then a minute of a marginal Wi-Fi (RTT swinging 100 <-> 1200 ms every
//! 3 s). See `benches/netns/lowbw.sh`.
//!
//! `cargo bench --bench lowbw` -> target/canopy-bench/lowbw.json: engage_ms (collapse to the
//! first lower-level part listed at the relay), relay_stall_ms (longest time between two
//! live parts arriving at the relay, across the collapse and the return),
//! level_changes_per_min_marginal, recover_s (return to level full), transcode_cpu_cores
//! (the ffmpeg transcoder of one 1080p camera, measured first on its own),
//! bid_p99_ms_during_collapse, bids_sent,
//! bids_not_answered_200 (a 202 receipt, queued and delivered later, counts there), and
//! gateway_step_down_ms (collapse to the gateway's level change), gateway_switch_ms
//! (collapse to the new level's first keyframe on air at the gateway), collapsed_queue_ms (how
//! long the collapsed uplink's full queue takes to drain at its new rate: a part sent after
//! the collapse waits behind it, so engage_ms is at least that).
//! Targets: engage_ms <= 500, relay_stall_ms <= 600, level_changes_per_min_marginal <= 2,
//! recover_s <= 15.

mod common;

use serde_json::json;

fn main() -> anyhow::Result<()> {
    if !common::is_root() {
        println!("lowbw: skipped (needs root for network namespaces)");
        return Ok(());
    }
    let r = common::run_netns_scenario("benches/netns/lowbw.sh", &[])?;
    let mut out = json!({
        "scenario": "lowbw",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
    });
    if let Some(m) = r.as_object() {
        for (k, v) in m {
            out[k] = v.clone();
        }
    }
    let path = common::write_json("lowbw", &out)?;
    println!(
        "lowbw: engage {} ms (gateway step {} ms, on air {} ms, the collapsed queue {} ms), relay stall {} ms, {} level changes/min on a marginal link, recover {} s, transcode {} cores (1080p), bid p99 during the collapse {} ms ({} of {} without a 200) -> {}",
        out["engage_ms"],
        out["gateway_step_down_ms"],
        out["gateway_switch_ms"],
        out["collapsed_queue_ms"],
        out["relay_stall_ms"],
        out["level_changes_per_min_marginal"],
        out["recover_s"],
        out["transcode_cpu_cores"],
        out["bid_p99_ms_during_collapse"],
        out["bids_not_answered_200"],
        out["bids_sent"],
        path.display()
    );
    Ok(())
}
