//! Live bench (root: network namespaces): a 4 Mbit/s 1080p camera through the gateway and
//! three uplinks (cellular 8 Mbit/s 50 ms 0.5% loss, Wi-Fi 4 Mbit/s 20 ms, satellite
//! 2 Mbit/s 300 ms as backup) to the relay and 20 viewers; 60 s with the busiest uplink cut
//! at 20 s for 10 s and every uplink down at 40 s for 10 s.
//!
//! `cargo bench --bench live` -> target/canopy-bench/live.json: glass_to_relay_p50_ms and
//! glass_to_relay_p95_ms (capture of a part's first frame to the part whole at the relay,
//! parts captured while some uplink was up), frame_to_relay_p95_ms (a piece's newest frame
//! to its bytes at the relay), parts_missing_at_relay (holes in the recording after the
//! backfill), viewer_errors (HTTP errors and skipped numbers), backfill_speed_x (seconds of
//! outage backfilled per second after the return; backfill_sending_speed_x the same from
//! the backfill's first bytes after the return), redundant_bytes_ratio (copies of late
//! pieces and pieces sent again after a dead path, over first sends), viewers_held.

mod common;

use serde_json::json;

fn main() -> anyhow::Result<()> {
    if !common::is_root() {
        println!("live: skipped (needs root for network namespaces)");
        return Ok(());
    }
    let r = common::run_netns_scenario("benches/netns/live.sh", &[])?;
    let mut out = json!({
        "scenario": "live",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
    });
    if let Some(m) = r.as_object() {
        for (k, v) in m {
            out[k] = v.clone();
        }
    }
    let path = common::write_json("live", &out)?;
    println!(
        "live: glass-to-relay p50 {} ms p95 {} ms, frame-to-relay p95 {} ms, parts missing {}, viewer errors {}, backfill {}x ({}x once sending), redundant {} -> {}",
        out["glass_to_relay_p50_ms"],
        out["glass_to_relay_p95_ms"],
        out["frame_to_relay_p95_ms"],
        out["parts_missing_at_relay"],
        out["viewer_errors"],
        out["backfill_speed_x"],
        out["backfill_sending_speed_x"],
        out["redundant_bytes_ratio"],
        path.display()
    );
    Ok(())
}
