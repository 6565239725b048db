//! The relay's fleet view: two real gateways send their delta telemetry through the
//! tunnel; the relay lists both, shows one going offline within 5 s of its death, and
//! asks a gateway for a whole summary after the relay restarts.

mod common;

use common::{canopy, curl, free_port, Proc, Stack, BIN};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fleet(addr: &str, token: &str) -> serde_json::Value {
    fleet_at(addr, token, "/api/fleet?hour=1")
}

fn fleet_at(addr: &str, token: &str, path: &str) -> serde_json::Value {
    let out = curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://{addr}{path}"),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn gateway<'a>(f: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    f["gateways"].as_array()?.iter().find(|g| g["name"] == name)
}

/// Polls every 100 ms until `ok` holds of the fleet; the time it took.
fn until(
    what: &str,
    within: Duration,
    addr: &str,
    token: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let f = fleet(addr, token);
        if ok(&f) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}: {f:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_fleet_lists_two_gateways_and_shows_one_going_offline_within_5_s() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut s = Stack::start_custom(
        "fleet",
        "",
        "",
        &format!("[fleet]\nlisten = \"{addr}\"\ntoken_file = \"fleet.token\"\n"),
    );
    let d = s.dir.path().to_path_buf();
    // a second gateway of the same event, with its own certificate
    let out = canopy(&[
        "certs",
        "add",
        "--dir",
        d.join("certs").to_str().expect("utf8"),
        "--gateway",
        "door",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = std::fs::read_to_string(d.join("gateway.toml")).expect("gateway.toml");
    let proxy = s.proxy.port().to_string();
    let metrics = s.metrics.1.to_string();
    let second = first
        .replace("certs/gateway.", "certs/door.")
        .replace(&proxy, &free_port().to_string())
        .replace(&metrics, &format!("127.0.0.1:{}", free_port()))
        .replace("name = \"test-gateway\"", "name = \"door\"");
    std::fs::write(d.join("door.toml"), second).expect("door.toml");
    let mut door = Proc(
        Command::new(BIN)
            .args([
                "gateway",
                "--config",
                d.join("door.toml").to_str().expect("utf8"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn"),
    );

    // the page holds no data and needs no token; the fleet needs it
    let page = curl(&[&format!("http://{addr}/")]);
    let page = String::from_utf8_lossy(&page.stdout).to_string();
    for script in ["/operator.js", "/fleet.js"] {
        assert!(page.contains(script), "{page}");
        let got = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{addr}{script}"),
        ]);
        assert_eq!(String::from_utf8_lossy(&got.stdout), "200", "{script}");
    }
    let refused = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/api/fleet"),
    ]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
    let token = std::fs::read_to_string(d.join("fleet.token")).expect("token");
    let token = token.trim();

    // both listed, online, with their uplink and bids from the telemetry
    let both_online = |f: &serde_json::Value| {
        ["gateway", "door"].iter().all(|n| {
            gateway(f, n).is_some_and(|g| {
                g["online"] == true
                    && g["event"] == "test"
                    && g["links"][0]["state"] == "up"
                    && g["links_up"] == 1
                    && g["bids"]["pending"] == 0
            })
        })
    };
    until(
        "both gateways online",
        Duration::from_secs(20),
        &addr,
        token,
        both_online,
    );
    let f = fleet(&addr, token);
    let g = gateway(&f, "gateway").expect("listed");
    assert!(g["reports"].as_u64() >= Some(1), "{g:#}");
    assert!(g["telemetry_bytes"].as_u64() > Some(0), "{g:#}");
    assert!(g["hour"].as_array().is_some_and(|h| !h.is_empty()), "{g:#}");
    // the hour only when asked for
    let f = fleet_at(&addr, token, "/api/fleet");
    let g = gateway(&f, "gateway").expect("listed");
    assert!(g["hour"].is_null(), "{g:#}");

    // one dies without a word: it shows offline within 5 s, the other stays online
    Proc::kill_pid(door.0.id());
    let _ = door.0.wait();
    let took = until("door offline", Duration::from_secs(8), &addr, token, |f| {
        gateway(f, "door").is_some_and(|g| g["online"] == false)
    });
    eprintln!("door shown offline {} ms after its death", took.as_millis());
    assert!(took <= Duration::from_secs(5), "{} ms", took.as_millis());
    let f = fleet(&addr, token);
    assert_eq!(
        gateway(&f, "gateway").map(|g| &g["online"]),
        Some(&serde_json::json!(true)),
        "{f:#}"
    );
    assert!(
        gateway(&f, "door").is_some_and(|g| g["why_offline"]
            .as_str()
            .is_some_and(|w| w.contains("no report"))),
        "{f:#}"
    );

    // a restarted relay knows nothing: the gateway's next delta is refused and it sends
    // a whole summary, so every key is back, not only what changed
    s.kill_relay();
    s.start_relay();
    until(
        "the gateway whole again after the relay's restart",
        Duration::from_secs(20),
        &addr,
        token,
        |f| {
            // the version never changes, so only a whole summary carries it
            gateway(f, "gateway").is_some_and(|g| {
                g["online"] == true
                    && g["links"][0]["state"] == "up"
                    && g["bids"]["pending"] == 0
                    && g["version"].is_string()
            })
        },
    );
}

#[test]
fn the_fleet_view_over_https_answers_only_over_tls() {
    let port = free_port();
    let s = Stack::start_custom(
        "fleet-tls",
        "",
        "",
        &format!(
            "[fleet]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"fleet.token\"\ntls = true\n"
        ),
    );
    let d = s.dir.path();
    let token = std::fs::read_to_string(d.join("fleet.token")).expect("token");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let ca = d.join("certs/ca.pem");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let https = |path: &str, auth: &[&str]| {
        let mut args = vec![
            "-s",
            "-w",
            "\n%{http_code}",
            "--cacert",
            ca.to_str().expect("utf8"),
            "--resolve",
            &resolve,
        ];
        args.extend_from_slice(auth);
        let url = format!("https://localhost:{port}{path}");
        args.push(&url);
        String::from_utf8_lossy(&curl(&args).stdout).into_owned()
    };
    let page = https("/", &[]);
    assert!(
        page.ends_with("200") && page.contains("/fleet.js"),
        "{page}"
    );
    assert!(https("/api/fleet", &[]).ends_with("401"));
    // the gateway is listed once its first report is in
    let t0 = std::time::Instant::now();
    loop {
        let f = https("/api/fleet", &["-H", &auth]);
        if f.ends_with("200") && f.contains("\"name\":\"gateway\"") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{f}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // in the clear, the listener answers nothing: no token crosses it
    let plain = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &auth,
        &format!("http://127.0.0.1:{port}/api/fleet"),
    ]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
}
