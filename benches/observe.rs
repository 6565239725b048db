//! What watching costs: the CPU of a gateway with everything the crew and the operators
//! look at on (Prometheus metrics scraped every 5 s, the status page open: its files once
//! and its event stream throughout, delta telemetry to the relay) against a gateway with
//! all of it off, both at once in one run (same machine, same moment; then again with
//! their places swapped), each carrying 20 Mbit/s of bonded traffic (two uplinks on
//! loopback, two downloads through its proxy read at exactly their rate). CPU from the
//! scheduler's account of each thread (threads that end during the run take theirs with
//! them; the gateway's are long-lived); the ratio is of CPU per Mbit/s carried. Telemetry
//! bytes per minute: the gateway's own count (with metrics on: each report's HTTP/3
//! request, fields uncompressed; the QUIC and UDP headers it shares with the 10 ms probes
//! not counted), and the report bodies the relay received (its fleet view).
//! Writes target/canopy-bench/observe.json.
//!
//! cargo bench --bench observe    (CANOPY_BENCH_SECS: seconds measured, 60;
//!                                 CANOPY_OBSERVE_WATCH=metrics|page|telemetry: one alone;
//!                                 =off: both unwatched, the measurement's own noise)

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_canopy");
/// Bonded traffic each gateway carries, as two paced downloads of half each.
const MBIT_S: u64 = 20;
const WARMUP: Duration = Duration::from_secs(5);

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn port_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn spawn(args: &[&str]) -> anyhow::Result<Kill> {
    Ok(Kill(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

fn curl(args: &[&str]) -> String {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// CPU seconds `pid`'s threads have run, to the nanosecond (the scheduler's own account
/// in /proc/<pid>/task/*/schedstat: user and system time in /proc/<pid>/stat are sampled
/// at each 10 ms tick, and at a few percent of a core that sampling alone is ±9% over
/// 30 s). Threads that ended are not counted.
fn cpu_s(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// A metric's value in Prometheus text (0 when missing).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

struct Setup {
    dir: PathBuf,
    /// The relay's fleet view.
    fleet: u16,
    relay_port: u16,
    origin: SocketAddr,
}

/// What a gateway watches: `off`, `all`, or one of `metrics`, `page`, `telemetry`.
fn has(what: &str, part: &str) -> bool {
    what == "all" || what == part
}

fn gateway_config(s: &Setup, what: &str, proxy: u16, metrics: u16, admin: u16) -> String {
    let mut watch = String::new();
    if has(what, "metrics") {
        watch += &format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n");
    }
    if has(what, "page") {
        watch +=
            &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_file = \"admin.token\"\n");
    }
    watch += &format!("[telemetry]\nenabled = {}\n", has(what, "telemetry"));
    format!(
        r#"[gateway]
name = "bench"
[relay]
addr = "127.0.0.1:{rp}"
server_name = "localhost"
[tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:{proxy}"
[[uplinks]]
name = "cellular"
kind = "cellular"
bind = "127.0.0.1"
[[uplinks]]
name = "wifi"
kind = "wifi"
bind = "127.0.0.2"
{watch}"#,
        rp = s.relay_port
    )
}

struct Phase {
    cpu_cores: f64,
    mbit_s: f64,
    /// The gateway's count (with metrics on).
    telemetry_bytes_per_min: Option<f64>,
    /// The report bodies the relay received from it.
    telemetry_body_bytes_per_min: Option<f64>,
}

/// Report body bytes the relay received from gateway `name` (its fleet view).
fn relay_received(s: &Setup, name: &str) -> f64 {
    let token = std::fs::read_to_string(s.dir.join("fleet.token")).unwrap_or_default();
    let out = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", token.trim()),
        &format!("http://127.0.0.1:{}/api/fleet", s.fleet),
    ]);
    serde_json::from_str::<serde_json::Value>(&out)
        .ok()
        .and_then(|v| {
            v["gateways"]
                .as_array()?
                .iter()
                .find(|g| g["name"] == name)?["telemetry_bytes"]
                .as_f64()
        })
        .unwrap_or(0.0)
}

/// A download through `proxy` read at exactly `rate` bytes a second (TCP's flow control
/// holds the rest back); its bytes counted in `got` until `stop`.
fn paced_download(
    proxy: SocketAddr,
    url: String,
    rate: f64,
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(proxy)?;
    write!(tcp, "GET {url} HTTP/1.1\r\nHost: origin\r\n\r\n")?;
    let t0 = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = tcp.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        got.fetch_add(n as u64, Ordering::Relaxed);
        let due = Duration::from_secs_f64(total as f64 / rate);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

/// A gateway carrying its paced downloads, watched as `what` says.
struct Running {
    what: String,
    cert: String,
    gw: Kill,
    got: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    _page: Option<Kill>,
    metrics: u16,
}

impl Running {
    fn start(s: &Setup, what: &str, cert: &str) -> anyhow::Result<Self> {
        let (proxy, metrics, admin) = (port_tcp(), port_tcp(), port_tcp());
        let cfg = s.dir.join(format!("gateway-{cert}.toml"));
        let token_file = format!("admin-{cert}.token");
        let text = gateway_config(s, what, proxy, metrics, admin)
            .replace("certs/gateway.", &format!("certs/{cert}."))
            .replace("admin.token", &token_file);
        std::fs::write(&cfg, text)?;
        let gw = spawn(&["gateway", "--config", cfg.to_str().unwrap_or_default()])?;
        let proxy_url = format!("http://127.0.0.1:{proxy}");
        let echo = format!("http://{}/echo", s.origin);
        let t0 = Instant::now();
        while curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy_url,
            &echo,
        ]) != "200"
        {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "the gateway did not come up"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // both uplinks joined
        std::thread::sleep(Duration::from_secs(1));
        let url = format!("http://{}/assets/100000000000", s.origin);
        let (got, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let proxy_addr = SocketAddr::from(([127, 0, 0, 1], proxy));
        for _ in 0..2 {
            let (url, got, stop) = (url.clone(), got.clone(), stop.clone());
            let rate = (MBIT_S * 1_000_000 / 8 / 2) as f64;
            std::thread::spawn(move || paced_download(proxy_addr, url, rate, got, stop));
        }
        let mut page = None;
        if has(what, "page") {
            for f in [
                "/",
                "/operator.js",
                "/page.js",
                "/page.css",
                "/hls.light.min.js",
            ] {
                curl(&["-o", "/dev/null", &format!("http://127.0.0.1:{admin}{f}")]);
            }
            let token = std::fs::read_to_string(s.dir.join(&token_file))?;
            page = Some(Kill(
                Command::new("curl")
                    .args(["-s", "-N", "-o", "/dev/null", "-H"])
                    .arg(format!("Authorization: Bearer {}", token.trim()))
                    .arg(format!("http://127.0.0.1:{admin}/api/events"))
                    .spawn()?,
            ));
        }
        Ok(Self {
            what: what.into(),
            cert: cert.into(),
            gw,
            got,
            stop,
            _page: page,
            metrics,
        })
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn scrape(&self) -> String {
        curl(&[&format!("http://127.0.0.1:{}/metrics", self.metrics)])
    }

    /// (CPU seconds, bytes downloaded, telemetry bytes sent by the gateway's count,
    /// report bodies the relay received).
    fn read(&self, s: &Setup) -> (f64, f64, f64, f64) {
        let sent = if has(&self.what, "telemetry") && has(&self.what, "metrics") {
            metric(&self.scrape(), "canopy_gateway_telemetry_bytes_total")
        } else {
            0.0
        };
        (
            cpu_s(self.gw.0.id()),
            self.got.load(Ordering::Relaxed) as f64,
            sent,
            relay_received(s, &self.cert),
        )
    }
}

/// A gateway watched as `watch` says and one not watched, at once, for `secs` (`swap`:
/// each in the other's place: certificate, ports, which starts first).
fn run(s: &Setup, watch: &str, secs: u64, swap: bool) -> anyhow::Result<[Phase; 2]> {
    let (a, b) = if swap {
        ("spare", "gateway")
    } else {
        ("gateway", "spare")
    };
    let on = Running::start(s, watch, a)?;
    let off = Running::start(s, "off", b)?;
    std::thread::sleep(WARMUP);
    let (a0, b0, m0) = (on.read(s), off.read(s), Instant::now());
    while m0.elapsed() < Duration::from_secs(secs) {
        let left = Duration::from_secs(secs).saturating_sub(m0.elapsed());
        std::thread::sleep(Duration::from_secs(5).min(left));
        // Prometheus scrapes the watched gateway every 5 s
        if has(watch, "metrics") {
            on.scrape();
        }
    }
    let (a1, b1, took) = (on.read(s), off.read(s), m0.elapsed().as_secs_f64());
    on.stop();
    off.stop();
    type Read = (f64, f64, f64, f64);
    let result = |r: &Running, x: Read, y: Read| {
        let tele = has(&r.what, "telemetry");
        Phase {
            cpu_cores: (y.0 - x.0) / took,
            mbit_s: (y.1 - x.1) * 8.0 / took / 1e6,
            telemetry_bytes_per_min: (tele && has(&r.what, "metrics"))
                .then(|| (y.2 - x.2) / took * 60.0),
            telemetry_body_bytes_per_min: tele.then(|| (y.3 - x.3) / took * 60.0),
        }
    };
    Ok([result(&on, a0, a1), result(&off, b0, b1)])
}

fn setup(dir: &Path) -> anyhow::Result<(Setup, Vec<Kill>)> {
    let out = Command::new(BIN)
        .args(["certs", "init", "--event", "bench", "--out"])
        .arg(dir.join("certs"))
        .output()?;
    anyhow::ensure!(out.status.success(), "certs init failed");
    let out = Command::new(BIN)
        .args(["certs", "add", "--gateway", "spare", "--dir"])
        .arg(dir.join("certs"))
        .output()?;
    anyhow::ensure!(out.status.success(), "certs add failed");
    let mut origin = Command::new(BIN)
        .args(["origin", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    if let Some(o) = origin.stdout.take() {
        BufReader::new(o).read_line(&mut line)?;
    }
    let origin_addr: SocketAddr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("origin address not printed"))?;
    let relay_port = port_udp();
    let fp = port_tcp();
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            r#"[relay]
listen = "127.0.0.1:{relay_port}"
name = "bench-relay"
[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
ca = "certs/ca.pem"
[egress]
allow = ["127.0.0.1:{op}"]
[fleet]
listen = "127.0.0.1:{fp}"
"#,
            op = origin_addr.port(),
        ),
    )?;
    let relay = spawn(&[
        "relay",
        "--config",
        dir.join("relay.toml").to_str().unwrap_or_default(),
    ])?;
    Ok((
        Setup {
            dir: dir.to_path_buf(),
            fleet: fp,
            relay_port,
            origin: origin_addr,
        },
        vec![Kill(origin), relay],
    ))
}

fn main() -> anyhow::Result<()> {
    let secs = common::measure_secs(60);
    let watch = std::env::var("CANOPY_OBSERVE_WATCH").unwrap_or_else(|_| "all".into());
    anyhow::ensure!(
        ["all", "metrics", "page", "telemetry", "off"].contains(&watch.as_str()),
        "CANOPY_OBSERVE_WATCH: {watch}? (all, metrics, page, telemetry; off: the noise)"
    );
    let dir = std::env::temp_dir().join(format!("canopy-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // two rounds, the watched gateway in the other's place in the second: what one place
    // has over the other cancels out
    let result = (|| {
        let (s, _keep) = setup(&dir)?;
        Ok::<_, anyhow::Error>([run(&s, &watch, secs, false)?, run(&s, &watch, secs, true)?])
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = result?;
    let per_mbit = |p: &Phase| p.cpu_cores / p.mbit_s.max(0.1);
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|[on, off]| per_mbit(on) / per_mbit(off).max(1e-12))
        .collect();
    let overhead_ratio = (ratios[0] * ratios[1]).sqrt();
    let mean = |f: &dyn Fn(&[Phase; 2]) -> f64| rounds.iter().map(f).sum::<f64>() / 2.0;
    let both =
        |f: &dyn Fn(&Phase) -> Option<f64>| Some((f(&rounds[0][0])? + f(&rounds[1][0])?) / 2.0);
    let (cpu_on, mbit_on) = (mean(&|r| r[0].cpu_cores), mean(&|r| r[0].mbit_s));
    let (cpu_off, mbit_off) = (mean(&|r| r[1].cpu_cores), mean(&|r| r[1].mbit_s));
    let telemetry_bytes_per_min = both(&|p| p.telemetry_bytes_per_min);
    let telemetry_body_bytes_per_min = both(&|p| p.telemetry_body_bytes_per_min);
    println!(
        "observe: gateway cpu watched ({watch}) {cpu_on:.4} cores at {mbit_on:.1} Mbit/s, unwatched \
         {cpu_off:.4} at {mbit_off:.1}: ratio per Mbit/s {overhead_ratio:.3} (rounds {ratios:.3?}; \
         target <= 1.03), telemetry {} B/min, bodies at the relay {} B/min (target <= 30000)",
        telemetry_bytes_per_min.map_or("-".into(), |b| format!("{b:.0}")),
        telemetry_body_bytes_per_min.map_or("-".into(), |b| format!("{b:.0}")),
    );
    let path = common::write_json(
        "observe",
        &serde_json::json!({
            "bench": "observe",
            "git": common::git_rev(),
            "unix_time": common::unix_time(),
            "secs": secs,
            "watching": watch,
            "target_mbit_s": MBIT_S,
            "mbit_s_on": mbit_on,
            "mbit_s_off": mbit_off,
            "cpu_on": cpu_on,
            "cpu_off": cpu_off,
            "overhead_ratio": overhead_ratio,
            "overhead_ratio_rounds": ratios,
            "telemetry_bytes_per_min": telemetry_bytes_per_min,
            "telemetry_body_bytes_per_min": telemetry_body_bytes_per_min,
        }),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
