//! Segmenter speed and the gateway's memory with four cameras.
//!
//! 1. Criterion: frames/s through a rendition (segmenter + part ring + playlist), fed the
//!    frames of a 1080p H.264 + AAC fixture at 4 Mbit/s (made once with ffmpeg under
//!    target/canopy-bench/); and part build latency: the time of the `handle_frame` call
//!    that completes a part (the last frame in -> the part out), p50/p99 over every part.
//! 2. Scenario: four encoders (ffmpeg, `-c copy` of the fixture, real time) push RTSP into
//!    one real gateway for 30 s, each camera with a 30 s ring (15 MB at 4 Mbit/s); the
//!    gateway's peak RSS (VmHWM).
//!
//! Writes target/canopy-bench/segmenter.json: frames_per_sec, part_latency_p50_us,
//! part_latency_p99_us, rss_mb_4cams. Needs ffmpeg. CANOPY_BENCH_SECS shortens the scenario.
//!
//! cargo bench --bench segmenter

mod common;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use segmenter::mp4file::{demux, Clip};
use segmenter::{Rendition, RenditionConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/canopy-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("fixture-1080p-4mbit.mp4");
    if !path.exists() {
        eprintln!("making the 1080p fixture with ffmpeg (once)...");
        let tmp = dir.join("fixture.tmp.mp4");
        let st = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=25",
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "10",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
                "-bf",
                "0",
                "-g",
                "25",
            ])
            .args([
                "-b:v", "4M", "-maxrate", "4M", "-bufsize", "2M", "-c:a", "aac", "-b:a", "96k",
            ])
            .args(["-movflags", "+faststart"])
            .arg(&tmp)
            .status()?;
        anyhow::ensure!(
            st.success(),
            "ffmpeg could not make the fixture (is ffmpeg installed?)"
        );
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Feeds the whole clip once (looped `loops` times); returns per-part latencies (ns).
fn run_clip(clip: &Clip, loops: i64, latencies: &mut Vec<u64>) -> usize {
    let mut r = Rendition::new(RenditionConfig::default());
    r.set_tracks(clip.tracks.clone()).expect("tracks");
    let mut frames = 0;
    for n in 0..loops {
        for f in &clip.frames {
            let f = clip.looped(f, n);
            let t = Instant::now();
            let parts = r.handle_frame(f, 1_800_000_000_000).unwrap_or(0);
            let dt = t.elapsed();
            if parts > 0 {
                latencies.push(dt.as_nanos() as u64);
            }
            frames += 1;
        }
    }
    frames
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

fn scenario(bin: &str, file: &Path, secs: u64) -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
    let dir = tempdir()?;
    let port = |udp: bool| -> anyhow::Result<u16> {
        Ok(if udp {
            std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port()
        } else {
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port()
        })
    };
    let (http, rtsp) = (port(false)?, port(false)?);
    let st = Command::new(bin)
        .args(["certs", "init", "--event", "bench", "--out"])
        .arg(dir.join("certs"))
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "certs init failed");
    let mut cfg = format!(
        "[relay]\naddr = \"127.0.0.1:9\"\nserver_name = \"localhost\"\nbind = \"127.0.0.1:0\"\n\
         [proxy]\nlisten = \"127.0.0.1:{http}\"\n[live]\nrtsp_listen = \"127.0.0.1:{rtsp}\"\n\
         ring_bytes = 15000000\n"
    );
    for i in 0..4 {
        cfg.push_str(&format!("[[cameras]]\nname = \"cam{i}\"\n"));
    }
    std::fs::write(dir.join("gateway.toml"), cfg)?;
    let mut gw = Kill(
        Command::new(bin)
            .args(["gateway", "--config"])
            .arg(dir.join("gateway.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut encoders = Vec::new();
    for i in 0..4 {
        encoders.push(Kill(
            Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
                .arg(file)
                .args([
                    "-c",
                    "copy",
                    "-t",
                    &secs.to_string(),
                    "-f",
                    "rtsp",
                    "-rtsp_transport",
                    "tcp",
                ])
                .arg(format!("rtsp://127.0.0.1:{rtsp}/cam{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(secs + 5);
    while Instant::now() < deadline
        && encoders
            .iter_mut()
            .any(|e| e.0.try_wait().ok().flatten().is_none())
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.0.id()))?;
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let index = Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{http}/live/")])
        .output()?;
    let cams: Vec<serde_json::Value> = serde_json::from_slice(&index.stdout).unwrap_or_default();
    let _ = gw.0.kill();
    let _ = std::fs::remove_dir_all(&dir);
    let per_cam = cams
        .iter()
        .map(|c| {
            let r = &c["renditions"][0];
            serde_json::json!({"name": c["name"], "frames": r["frames"], "parts": r["parts"],
                "ring_bytes": r["ring_bytes"], "ring_parts": r["ring_parts"]})
        })
        .collect();
    Ok((hwm_kib / 1024.0, per_cam))
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("canopy-bench-seg-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn main() -> anyhow::Result<()> {
    let file = fixture()?;
    let clip = demux(&Bytes::from(std::fs::read(&file)?)).map_err(anyhow::Error::msg)?;
    let n = clip.frames.len() as u64;

    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut g = c.benchmark_group("segmenter");
    g.throughput(Throughput::Elements(n));
    g.bench_function("1080p_4mbit_clip_frames", |b| {
        b.iter(|| run_clip(&clip, 1, &mut Vec::new()))
    });
    g.finish();

    // the same work, timed here for the JSON (best of 5)
    let mut best = f64::MAX;
    let mut lat = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let frames = run_clip(&clip, 3, &mut lat);
        best = best.min(t.elapsed().as_secs_f64() / frames as f64);
    }
    let frames_per_sec = 1.0 / best;
    let p50 = quantile(&mut lat, 0.5) as f64 / 1000.0;
    let p99 = quantile(&mut lat, 0.99) as f64 / 1000.0;
    let max = quantile(&mut lat, 1.0) as f64 / 1000.0;

    let secs = common::measure_secs(30);
    let (rss, cams) = scenario(env!("CARGO_BIN_EXE_canopy"), &file, secs)?;
    let v = serde_json::json!({
        "bench": "segmenter",
        "git": common::git_rev(),
        "unix_time": common::unix_time(),
        "fixture": {"file": file.file_name().map(|f| f.to_string_lossy().to_string()), "frames": n,
                    "video": "1920x1080 25 fps H.264 4 Mbit/s", "audio": "AAC 48 kHz"},
        "frames_per_sec": frames_per_sec.round(),
        "part_latency_p50_us": (p50 * 10.0).round() / 10.0,
        "part_latency_p99_us": (p99 * 10.0).round() / 10.0,
        "part_latency_max_us": (max * 10.0).round() / 10.0,
        "parts_measured": lat.len(),
        "rss_mb_4cams": (rss * 10.0).round() / 10.0,
        "scenario": {"cameras": 4, "secs": secs, "ring_bytes_each": 15_000_000, "per_camera": cams},
        "targets": {"part_latency_p99_us": 1000, "rss_mb_4cams": 96},
    });
    let path = common::write_json("segmenter", &v)?;
    println!(
        "segmenter: {:.0} frames/s (1080p H.264+AAC), part latency p50 {:.1} us p99 {:.1} us; 4 cameras x {} s at 4 Mbit/s, 30 s rings: peak RSS {:.1} MB -> {}",
        frames_per_sec, p50, p99, secs, rss, path.display()
    );
    Ok(())
}
