//! Helpers shared by the scenario benches.
#![allow(dead_code)]

/// Short git revision of the working tree.
pub(crate) fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes target/canopy-bench/NAME.json.
pub(crate) fn write_json(name: &str, v: &serde_json::Value) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/canopy-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(v)? + "\n")?;
    Ok(path)
}

/// Seconds since the epoch.
pub(crate) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Measurement seconds: CANOPY_BENCH_SECS, else `default`.
pub(crate) fn measure_secs(default: u64) -> u64 {
    std::env::var("CANOPY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The runtime scenario benches run on.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Whether this process runs as root (the netns benches need it).
pub(crate) fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|s| s.trim() == "0")
}

/// Builds the release binary the netns scenarios run, then runs `script` with `args` and
/// parses the JSON object it prints last.
pub(crate) fn run_netns_scenario(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "--bin", "canopy"])
        .current_dir(root)
        .status()?;
    anyhow::ensure!(built.success(), "cargo build failed");
    let out = std::process::Command::new("bash")
        .arg(root.join(script))
        .args(args)
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{script} failed ({}); run it by hand to see its logs",
        out.status
    );
    let text = String::from_utf8(out.stdout)?;
    let last = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("{script} printed no result"))?;
    Ok(serde_json::from_str(last)?)
}
