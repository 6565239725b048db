//! `canopy certs` as a crew runs it: the event's window, keys private from creation, a
//! second `init` refused, `add` issuing from the CA there, and the result tried in a real
//! QUIC handshake with the relay's TLS settings.

mod common;

use common::{canopy, curl, wait_until, Stack, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Connects a gateway with `name`'s files in `gw_dir` to a relay with the files in
/// `relay_dir`; true when the handshake completes.
async fn handshake(relay_dir: &Path, gw_dir: &Path, name: &str) -> bool {
    let relay = tunnel_io::TlsFiles::load(
        &relay_dir.join("relay.pem"),
        &relay_dir.join("relay.key"),
        &relay_dir.join("ca.pem"),
    )
    .expect("relay files");
    let gw = tunnel_io::TlsFiles::load(
        &gw_dir.join(format!("{name}.pem")),
        &gw_dir.join(format!("{name}.key")),
        &gw_dir.join("ca.pem"),
    )
    .expect("gateway files");
    let t = tunnel_io::TransportSettings::default().quinn();
    let server = quinn::Endpoint::server(
        relay
            .relay_quic(t.clone(), tunnel_io::Revoked::none())
            .expect("relay tls"),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("server");
    let addr = server.local_addr().expect("addr");
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client");
    client.set_default_client_config(gw.gateway_quic(t).expect("gw tls"));
    // the client may finish its side of the handshake before the relay has read its
    // certificate: the relay's side says whether it was let in
    let connecting = client.connect(addr, "localhost").expect("connect");
    let client_side = tokio::spawn(async move {
        let conn = connecting.await.ok()?;
        conn.closed().await;
        Some(())
    });
    let let_in = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        match server.accept().await {
            Some(inc) => inc.await.is_ok(),
            None => false,
        }
    })
    .await
    .unwrap_or(false);
    client_side.abort();
    let_in
}

#[tokio::test]
async fn init_add_and_a_second_init_as_a_crew_runs_them() {
    let dir = TempDir::new("certs-cli");
    let certs = dir.path().join("certs");
    let c = certs.to_str().expect("utf8");
    let out = canopy(&[
        "certs",
        "init",
        "--event",
        "market",
        "--out",
        c,
        "--start",
        "2026-12-05T10:00:00+01:00",
        "--end",
        "2026-12-07",
        "--margin-hours",
        "6",
        "--gateway",
        "gw",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("certificates valid 2026-12-05T03:00:00Z to 2026-12-08T06:00:00Z"),
        "{}",
        text(&out)
    );
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&certs), 0o700);
    for f in ["ca.key", "relay.key", "gw.key"] {
        assert_eq!(mode(&certs.join(f)), 0o600, "{f}");
    }
    let ca_key = std::fs::read(certs.join("ca.key")).expect("ca key");

    // a second init, meant to add a gateway, would replace the CA: refused
    let again = canopy(&[
        "certs",
        "init",
        "--event",
        "market",
        "--out",
        c,
        "--gateway",
        "stall-2",
    ]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again));
    assert!(text(&again).contains("certs add"), "{}", text(&again));
    assert_eq!(std::fs::read(certs.join("ca.key")).expect("ca key"), ca_key);
    assert!(!certs.join("stall-2.key").exists());

    // bad times are usage errors
    let bad = canopy(&[
        "certs", "init", "--event", "x", "--out", c, "--start", "friday",
    ]);
    assert_eq!(bad.status.code(), Some(64), "{}", text(&bad));
    assert!(
        text(&bad).contains("--start: `friday` is not a time"),
        "{}",
        text(&bad)
    );

    let add = canopy(&["certs", "add", "--dir", c, "--gateway", "stall-2"]);
    assert!(add.status.success(), "{}", text(&add));
    assert!(
        text(&add).contains("gateway stall-2: serial "),
        "{}",
        text(&add)
    );
    assert_eq!(mode(&certs.join("stall-2.key")), 0o600);
    let twice = canopy(&["certs", "add", "--dir", c, "--gateway", "stall-2"]);
    assert_eq!(twice.status.code(), Some(64), "{}", text(&twice));
    let no_ca = canopy(&[
        "certs",
        "add",
        "--dir",
        dir.path().to_str().expect("utf8"),
        "--gateway",
        "x",
    ]);
    assert_eq!(no_ca.status.code(), Some(66), "{}", text(&no_ca));

    // the window given above starts in two days: make events valid now for handshakes
    let init = |dir: &Path| {
        let d = dir.to_str().expect("utf8");
        let out = canopy(&[
            "certs",
            "init",
            "--event",
            "market",
            "--out",
            d,
            "--gateway",
            "gw",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    };
    let live = dir.path().join("live");
    init(&live);
    let l = live.to_str().expect("utf8");
    let out = canopy(&["certs", "add", "--dir", l, "--gateway", "stall-2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        handshake(&live, &live, "stall-2").await,
        "an added gateway is let in"
    );
    // a gateway certificate from another CA (what a forced second init makes) is not
    let other = dir.path().join("other");
    init(&other);
    std::fs::copy(live.join("ca.pem"), other.join("ca.pem")).expect("trust the relay");
    assert!(
        !handshake(&live, &other, "gw").await,
        "another CA's gateway is refused"
    );
}

#[test]
fn a_revoked_gateway_is_cut_off_within_a_second_and_refused_until_the_list_changes() {
    let mut s = Stack::start("revoke");
    let url = s.origin_url("/echo");
    assert_eq!(s.status_via_proxy(&url), "200");
    let connected = "canopy_relay_gateways_connected";
    assert!(s.relay_metric(connected) >= 1.0);
    let certs = s.dir.path().join("certs");
    let c = certs.to_str().expect("utf8");

    let t0 = Instant::now();
    let out = canopy(&["certs", "revoke", "--dir", c, "--gateway", "gateway"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("revoked gateway gateway: sha256:"),
        "{}",
        text(&out)
    );
    // its next pair too: a stolen box must not come back with it at T+24h
    assert!(
        text(&out).contains("revoked gateway gateway (next pair): sha256:"),
        "{}",
        text(&out)
    );
    let cut = loop {
        if s.relay_metric(connected) == 0.0 {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still connected after 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("cut off {} ms after the list changed", cut.as_millis());
    assert!(cut < Duration::from_secs(1), "cut off after {cut:?}");
    let closes = "canopy_relay_revoked_closes_total";
    let closed = s.relay_metric(closes);
    assert!(closed >= 1.0);
    // and refused at every handshake since (not let in and closed again): nothing passes
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_ne!(s.status_via_proxy(&url), "200");
        assert_eq!(s.relay_metric(connected), 0.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        s.relay_metric(closes),
        closed,
        "a revoked gateway got past a handshake"
    );
    // a second revoke changes nothing
    let again = canopy(&["certs", "revoke", "--dir", c, "--gateway", "gateway"]);
    assert!(
        text(&again).contains("was revoked already"),
        "{}",
        text(&again)
    );

    // a list that stops parsing leaves the one in force
    let list = certs.join("revoked.txt");
    let kept = std::fs::read_to_string(&list).expect("list");
    std::fs::write(&list, format!("{kept}not a line\n")).expect("write");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.relay_metric(connected), 0.0);
    // the list emptied: the gateway is back
    std::fs::write(&list, "# nobody\n").expect("write");
    s.wait_up();
    assert_eq!(s.status_via_proxy(&url), "200");
}

/// The certificate the relay at `port` serves now (a gateway's handshake with the files
/// in `certs`).
fn served(port: u16, certs: &Path) -> Option<Vec<u8>> {
    let gw = tunnel_io::TlsFiles::load(
        &certs.join("gateway.pem"),
        &certs.join("gateway.key"),
        &certs.join("ca.pem"),
    )
    .ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let t = tunnel_io::TransportSettings::default().quinn();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().ok()?).ok()?;
        client.set_default_client_config(gw.gateway_quic(t).ok()?);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.connect(addr, "localhost").ok()?,
        )
        .await
        .ok()?
        .ok()?;
        let chain = conn
            .peer_identity()?
            .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()?;
        conn.close(0u32.into(), b"");
        chain.first().map(|c| c.as_ref().to_vec())
    })
}

fn der_of(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .expect("certificate")
        .as_ref()
        .to_vec()
}

#[test]
fn rotation_during_traffic_fails_no_request_and_the_next_certificate_is_served() {
    let mut s = Stack::start("rotate");
    let certs = s.dir.path().join("certs");
    let old_gateway = s.dir.path().join("old-gateway.pem");
    std::fs::copy(certs.join("gateway.pem"), &old_gateway).expect("copy");
    assert_eq!(
        served(s.relay_port, &certs),
        Some(der_of(&certs.join("relay.pem")))
    );

    // a request every 50 ms through the whole rotation (at most 100)
    let (proxy, url) = (s.proxy_url(), s.origin_url("/echo"));
    let load = std::thread::spawn(move || {
        (0..100)
            .map(|_| {
                let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", &proxy, &url]);
                std::thread::sleep(Duration::from_millis(50));
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(500));
    let c = certs.to_str().expect("utf8");
    let out = canopy(&["certs", "rotate", "--dir", c]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("relay relay (next: relay.next.pem"),
        "{}",
        text(&out)
    );
    let next = der_of(&certs.join("relay.next.pem"));
    let t0 = Instant::now();
    wait_until(
        "the relay serves its next certificate",
        Duration::from_secs(5),
        || served(s.relay_port, &certs).as_deref() == Some(next.as_slice()),
    );
    eprintln!(
        "next certificate served {} ms after the rotation",
        t0.elapsed().as_millis()
    );
    let statuses = load.join().expect("load");
    let failed: Vec<_> = statuses.iter().filter(|st| st.as_str() != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {}: {failed:?}",
        failed.len(),
        statuses.len()
    );

    // the old gateway certificate revoked: its connection closes, and the gateway comes
    // back with its next one (the same gateway to the relay)
    let list = certs.join("revoked.txt");
    let out = canopy(&[
        "certs",
        "revoke",
        "--cert",
        old_gateway.to_str().expect("utf8"),
        "--list",
        list.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "the old certificate's connection closed",
        Duration::from_secs(5),
        || s.relay_metric("canopy_relay_revoked_closes_total") >= 1.0,
    );
    s.wait_up();
    assert_eq!(s.status_via_proxy(&s.origin_url("/echo")), "200");
}
