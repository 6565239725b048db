//! A real relay, gateway and origins as child processes of the `canopy` binary, with
//! configs written to a temporary directory. Killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_canopy");

pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "canopy-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // a failing test's configs and logs stay for a look
            eprintln!("kept {} (the test failed)", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Kills the process with SIGKILL from outside (it may be shared with other threads
    /// of the test) and reaps it.
    pub(crate) fn kill_pid(pid: u32) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A port for a listener a child process will bind, free for both TCP and UDP on
/// 127.0.0.1. Taken outside the kernel's ephemeral range (32768-60999 here) and never
/// twice in one test binary: a port from `bind(0)` is released before the child binds
/// it, and in between another test's client connection could take it as its source
/// port, which made a stack fail to come up once in CI.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // binaries run one after another; start each at its own place all the same
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (u64::from(std::process::id()) * 7919 % u64::from(SPAN)) as u32,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    // a host whose ephemeral range reaches down here: those ports are skipped
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    for _ in 0..SPAN {
        let port = LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        if (ephemeral.0..=ephemeral.1).contains(&port) {
            continue;
        }
        let port = port as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// Starts `canopy origin` and returns it with its address (read from its first line).
pub(crate) fn start_origin(extra: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["origin", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn origin");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("origin line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("origin address");
    (Proc(child), addr)
}

pub(crate) fn canopy(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run canopy")
}

pub(crate) fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .output()
        .expect("curl is installed (tests/run.sh installs it)")
}

/// Starts `canopy <what> --config <dir>/<what>.toml`.
pub(crate) fn spawn(dir: &Path, what: &str) -> Proc {
    Proc(
        Command::new(BIN)
            .args([
                what,
                "--config",
                dir.join(format!("{what}.toml")).to_str().expect("utf8"),
            ])
            // CANOPY_TEST_LOG=info (or any RUST_LOG filter) to see more of a failing test
            .env(
                "RUST_LOG",
                std::env::var("CANOPY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    )
}

pub(crate) struct Stack {
    pub(crate) metrics: (SocketAddr, SocketAddr),
    pub(crate) dir: TempDir,
    pub(crate) origin: SocketAddr,
    pub(crate) tls_origin: SocketAddr,
    pub(crate) relay_port: u16,
    pub(crate) proxy: SocketAddr,
    pub(crate) relay: Proc,
    pub(crate) gateway: Proc,
    _origins: (Proc, Proc),
}

pub(crate) const SITE: &str = "shop.canopy.test";

/// A site the stack's certificates cover for HTTPS at the gateway (`certs init --site`).
pub(crate) const SECURE_SITE: &str = "secure.canopy.test";

impl Stack {
    /// Certificates, two origins (http and https), a relay and a gateway; waits until a
    /// request passes end to end.
    pub(crate) fn start(tag: &str) -> Self {
        Self::start_with(tag, "")
    }

    /// Like `start`, with extra lines in the gateway's `[proxy]` section.
    pub(crate) fn start_with(tag: &str, proxy_extra: &str) -> Self {
        Self::start_full(tag, proxy_extra, "")
    }

    /// Like `start_with`, with extra sections at the end of the gateway's config (`$ORIGIN`
    /// in them stands for the plain origin's URL).
    pub(crate) fn start_full(tag: &str, proxy_extra: &str, gateway_extra: &str) -> Self {
        Self::start_custom(tag, proxy_extra, gateway_extra, "")
    }

    /// Like `start_full`, with extra sections at the end of the relay's config.
    pub(crate) fn start_custom(
        tag: &str,
        proxy_extra: &str,
        gateway_extra: &str,
        relay_extra: &str,
    ) -> Self {
        Self::start_relay_custom(tag, proxy_extra, gateway_extra, "", relay_extra)
    }

    /// Like `start_custom`, with extra keys in the relay's `[egress]` too.
    pub(crate) fn start_relay_custom(
        tag: &str,
        proxy_extra: &str,
        gateway_extra: &str,
        egress_extra: &str,
        relay_extra: &str,
    ) -> Self {
        let dir = TempDir::new(tag);
        let d = dir.path();
        let out = canopy(&[
            "certs",
            "init",
            "--event",
            "test",
            "--out",
            d.join("certs").to_str().expect("utf8"),
            "--site",
            SECURE_SITE,
        ]);
        assert!(
            out.status.success(),
            "certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (o1, origin) = start_origin(&[]);
        let cert = d.join("certs/relay.pem");
        let key = d.join("certs/relay.key");
        let (o2, tls_origin) = start_origin(&[
            "--tls-cert",
            cert.to_str().expect("utf8"),
            "--tls-key",
            key.to_str().expect("utf8"),
        ]);
        let gateway_extra = gateway_extra.replace("$ORIGIN", &format!("http://{origin}"));
        let relay_port = free_port();
        let proxy_port = free_port();
        let metrics = (
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        std::fs::write(
            d.join("relay.toml"),
            format!(
                r#"[relay]
listen = "127.0.0.1:{relay_port}"
name = "test-relay"
[tls]
cert = "certs/relay.pem"
key = "certs/relay.key"
ca = "certs/ca.pem"
revoked = "certs/revoked.txt"
[egress]
allow = ["127.0.0.1:{op}", "localhost:{tp}", "*:9", "*.allowed.test"]
connect_timeout_ms = 2000
max_header_bytes = 16384
{egress_extra}
[metrics]
listen = "{rm}"
{relay_extra}
"#,
                rm = metrics.0,
                op = origin.port(),
                tp = tls_origin.port()
            ),
        )
        .expect("relay.toml");
        std::fs::write(
            d.join("gateway.toml"),
            format!(
                r#"[gateway]
name = "test-gateway"
[relay]
addr = "127.0.0.1:{relay_port}"
server_name = "localhost"
bind = "127.0.0.1:0"
[tls]
cert = "certs/gateway.pem"
key = "certs/gateway.key"
ca = "certs/ca.pem"
[proxy]
listen = "127.0.0.1:{proxy_port}"
max_header_bytes = 16384
{proxy_extra}
[[sites]]
host = "{SITE}"
origin = "http://127.0.0.1:{op}"
[[classes]]
class = "bid"
path_prefix = "/bid"
method = "POST"
[metrics]
listen = "{gm}"
{gateway_extra}
"#,
                gm = metrics.1,
                op = origin.port()
            ),
        )
        .expect("gateway.toml");
        let relay = spawn(d, "relay");
        let gateway = spawn(d, "gateway");
        let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
        let mut stack = Self {
            metrics,
            dir,
            origin,
            tls_origin,
            relay_port,
            proxy,
            relay,
            gateway,
            _origins: (o1, o2),
        };
        stack.wait_ready();
        stack
    }

    /// The test origin's `/stats` (bids, check-ins, upload bytes, connections it took).
    pub(crate) fn origin_stats(&self) -> serde_json::Value {
        let out = curl(&[&self.origin_url("/stats")]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// A value the relay's /metrics shows for `name` without labels (0 when absent).
    pub(crate) fn relay_metric(&self, name: &str) -> f64 {
        let out = curl(&[&format!("http://{}/metrics", self.metrics.0)]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Kills the relay (SIGKILL) and waits for it to be gone.
    pub(crate) fn kill_relay(&mut self) {
        let _ = self.relay.0.kill();
        let _ = self.relay.0.wait();
    }

    /// Starts the relay again with its config.
    pub(crate) fn start_relay(&mut self) {
        self.relay = spawn(self.dir.path(), "relay");
    }

    /// Kills the gateway (SIGKILL) and waits for it to be gone.
    pub(crate) fn kill_gateway(&mut self) {
        let _ = self.gateway.0.kill();
        let _ = self.gateway.0.wait();
    }

    /// Starts the gateway again with its config and waits until it passes requests.
    pub(crate) fn start_gateway(&mut self) {
        self.gateway = spawn(self.dir.path(), "gateway");
    }

    /// Waits until a request passes end to end.
    pub(crate) fn wait_up(&mut self) {
        self.wait_ready();
    }

    pub(crate) fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    pub(crate) fn origin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.origin.port(), path)
    }

    /// The HTTP status of a GET of `url` through the gateway's proxy (curl's `%{http_code}`).
    pub(crate) fn status_via_proxy(&self, url: &str) -> String {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &self.proxy_url(),
            url,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status_via_proxy(&self.origin_url("/echo"));
            if status == "200" {
                return;
            }
            for (what, p) in [("relay", &mut self.relay), ("gateway", &mut self.gateway)] {
                if let Ok(Some(exit)) = p.0.try_wait() {
                    panic!("the {what} exited while the stack came up: {exit} (its log is above)");
                }
            }
            assert!(
                Instant::now() < deadline,
                "the stack did not come up: last status {status:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits until `ok`, checking every 100 ms; fails naming `what` after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `threads` devices each send `per_thread` requests (keys `burst-<t>-<i>`, 20 ms apart)
/// with `send`, while `during` runs on this thread: every (key, status).
pub(crate) fn burst_with(
    s: &Stack,
    threads: usize,
    per_thread: usize,
    send: fn(&Stack, &str, usize) -> u16,
    during: impl FnOnce(),
) -> Vec<(String, u16)> {
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let results = &results;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let key = format!("burst-{t:02}-{i:03}");
                    let st = send(s, &key, t * 1000 + i);
                    results.lock().expect("lock").push((key, st));
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        during();
    });
    results.into_inner().expect("lock")
}

/// The keys whose status is one of `ok`.
pub(crate) fn acknowledged(results: &[(String, u16)], ok: &[u16]) -> Vec<String> {
    results
        .iter()
        .filter(|(_, st)| ok.contains(st))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `canopy tokens <args>`: its output, trimmed (it must succeed).
pub(crate) fn tokens(args: &[&str]) -> String {
    let mut all = vec!["tokens"];
    all.extend_from_slice(args);
    let out = canopy(&all);
    assert!(
        out.status.success(),
        "canopy tokens {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// POST /checkins with a token: (status, JSON answer).
pub(crate) fn check_in(s: &Stack, token: &str) -> (u16, serde_json::Value) {
    let url = format!("{}/checkins?gate=north", s.proxy_url());
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        token,
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

/// A bid through the gateway as a reverse site: (status, headers and body).
pub(crate) fn bid(s: &Stack, key: Option<&str>, body: &str) -> (u16, String) {
    let mut args = vec![
        "-i".to_string(),
        "-H".into(),
        format!("Host: {SITE}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.into(),
    ];
    if let Some(k) = key {
        args.push("-H".into());
        args.push(format!("Idempotency-Key: {k}"));
    }
    args.push(format!("{}/bid", s.proxy_url()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A check-in token signed with the organizer's `key` file (`canopy tokens issue`).
pub(crate) fn issue_token(key: &str, event: &str, attendee: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "issue",
        "--key",
        key,
        "--event",
        event,
        "--attendee",
        attendee,
    ];
    a.extend_from_slice(extra);
    tokens(&a)
}
