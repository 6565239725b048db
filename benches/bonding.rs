//! Bonding bench (root: network namespaces). Uplinks of 20/5/2 Mbit/s with 25/8/20 ms one
//! way (tc tbf for the rates, the link emulator's frame bridge for the delay). Parallel bulk
//! uploads through the bonded tunnel for 20 s after a 5 s warm-up; then, over the same
//! namespaces and links, Linux MPTCP (in-kernel path manager, one subflow per link, a small
//! IPPROTO_MPTCP client) as the reference. Both at 16 and at 8 parallel transfers; the
//! headline figures are at 16.
//!
//! `cargo bench --bench bonding` -> target/canopy-bench/bonding.json: nominal_mbps,
//! goodput_mbps, efficiency, mptcp_goodput_mbps, ratio_vs_mptcp (and the same at 8).

mod common;

use serde_json::{json, Value};

fn main() -> anyhow::Result<()> {
    if !common::is_root() {
        println!("bonding: skipped (needs root for network namespaces)");
        return Ok(());
    }
    let secs = common::measure_secs(20).to_string();
    let p16 = common::run_netns_scenario("benches/netns/bonding.sh", &[&secs, "16"])?;
    let p8 = common::run_netns_scenario("benches/netns/bonding.sh", &[&secs, "8"])?;
    let g = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    let mut out = json!({
        "scenario": "bonding",
        "git_rev": common::git_rev(),
        "unix_time": common::unix_time(),
        "seconds": secs.parse::<u64>().unwrap_or(20),
        "parallel": 16,
    });
    for k in [
        "nominal_mbps",
        "goodput_mbps",
        "efficiency",
        "mptcp_goodput_mbps",
        "mptcp_efficiency",
        "ratio_vs_mptcp",
        "uploads_ok",
        "uploads_failed",
        "per_link",
    ] {
        out[k] = g(&p16, k);
    }
    for k in [
        "goodput_mbps",
        "efficiency",
        "mptcp_goodput_mbps",
        "ratio_vs_mptcp",
        "uploads_failed",
    ] {
        out[format!("{k}_p8")] = g(&p8, k);
    }
    let path = common::write_json("bonding", &out)?;
    println!(
        "bonding: goodput {} of {} Mbit/s (efficiency {}), MPTCP {} (ratio {}); at 8 parallel {} vs MPTCP {} -> {}",
        out["goodput_mbps"],
        out["nominal_mbps"],
        out["efficiency"],
        out["mptcp_goodput_mbps"],
        out["ratio_vs_mptcp"],
        out["goodput_mbps_p8"],
        out["mptcp_goodput_mbps_p8"],
        path.display()
    );
    Ok(())
}
