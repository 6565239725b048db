//! End to end: the real `canopy relay` and `canopy gateway` processes, real origins, curl
//! as the venue device.

mod common;

use common::{curl, Stack, SITE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The demo origin's generated body: byte `i` of every 64 KiB chunk is `i % 251`.
fn expected_asset(len: usize) -> Vec<u8> {
    (0..len).map(|o| ((o % 65536) % 251) as u8).collect()
}

#[test]
fn explicit_connect_and_site_requests_get_the_right_bytes() {
    let s = Stack::start("e2e");
    // explicit proxy, absolute-form
    let body = curl(&["-x", &s.proxy_url(), &s.origin_url("/assets/300000")]);
    assert!(body.status.success());
    assert_eq!(
        body.stdout,
        expected_asset(300_000),
        "explicit proxy body differs"
    );

    // the origin sees both hops in Via, and no Canopy-private header
    let echo = text(&curl(&["-x", &s.proxy_url(), &s.origin_url("/echo")]));
    assert!(
        echo.contains("via: 1.1 test-gateway, 3 test-relay"),
        "{echo}"
    );
    assert!(
        !echo.contains("canopy-"),
        "private headers leaked to the origin: {echo}"
    );

    // CONNECT to a local TLS origin, verified against the event CA
    let ca = s.dir.path().join("certs/ca.pem");
    let url = format!("https://localhost:{}/assets/70000", s.tls_origin.port());
    let out = curl(&[
        "-x",
        &s.proxy_url(),
        "--proxytunnel",
        "--cacert",
        ca.to_str().expect("utf8"),
        &url,
    ]);
    assert!(
        out.status.success(),
        "CONNECT failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, expected_asset(70_000));

    // a reverse site by Host, without proxy configuration on the device
    let out = curl(&[
        "-H",
        &format!("Host: {SITE}"),
        &format!("{}/echo?x=1", s.proxy_url()),
    ]);
    let echo = text(&out);
    assert!(echo.starts_with("GET /echo?x=1 "), "{echo}");
    // a bid through the site carries an idempotency key to the origin
    let out = curl(&[
        "-X",
        "POST",
        "-d",
        "{}",
        "-H",
        &format!("Host: {SITE}"),
        &format!("{}/bid", s.proxy_url()),
    ]);
    let bid = text(&out);
    assert!(
        bid.contains("\"accepted\":true") && bid.contains("\"key\":\"cnp-"),
        "{bid}"
    );
}

#[test]
fn hundred_megabytes_stream_both_ways_with_bounded_memory() {
    let s = Stack::start("big");
    const SIZE: u64 = 100_000_000;
    let out = curl(&[
        "-x",
        &s.proxy_url(),
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{http_code}",
        &s.origin_url(&format!("/assets/{SIZE}")),
    ]);
    assert_eq!(
        text(&out),
        format!("{SIZE} 200"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = s.dir.path().join("upload.bin");
    let f = std::fs::File::create(&file).expect("create");
    f.set_len(SIZE).expect("sparse 100 MB file");
    let out = curl(&[
        "-x",
        &s.proxy_url(),
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &s.origin_url("/upload"),
    ]);
    assert_eq!(
        text(&out).trim(),
        SIZE.to_string(),
        "origin must receive every byte: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing is buffered whole: each process stays far below the body size.
    let (relay, gw) = (s.relay.peak_rss_kib(), s.gateway.peak_rss_kib());
    assert!(relay > 0 && gw > 0, "could not read VmHWM");
    assert!(relay < 80 * 1024, "relay peak RSS {relay} KiB");
    assert!(gw < 80 * 1024, "gateway peak RSS {gw} KiB");
}

#[test]
fn refusals_have_the_right_status_and_a_reason() {
    let s = Stack::start("refuse");
    let status = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        text(&curl(&a))
    };
    // not on the allowlist
    assert_eq!(
        status(&["-x", &s.proxy_url(), "http://not-listed.test/"]),
        "403"
    );
    let out = curl(&["-x", &s.proxy_url(), "-D", "-", "http://not-listed.test/"]);
    assert!(
        text(&out).contains("not on the relay's egress allowlist"),
        "{}",
        text(&out)
    );
    // matched only by a wildcard, resolving to loopback: refused
    assert_eq!(
        status(&["-x", &s.proxy_url(), "http://127.0.0.1:9/"]),
        "403"
    );
    let out = text(&curl(&["-x", &s.proxy_url(), "http://127.0.0.1:9/"]));
    assert!(out.contains("non-public address 127.0.0.1"), "{out}");
    // a loopback origin on a port the allowlist does not name
    assert_eq!(
        status(&[
            "-x",
            &s.proxy_url(),
            &format!("http://127.0.0.1:{}/", s.tls_origin.port())
        ]),
        "403"
    );
    // CONNECT refused by the relay's allowlist carries the status through
    let out = curl(&[
        "-x",
        &s.proxy_url(),
        "--proxytunnel",
        "-o",
        "/dev/null",
        "-w",
        "%{http_connect}",
        "https://not-listed.test/",
    ]);
    assert_eq!(text(&out), "403");
    // an unknown Host without proxy form
    assert_eq!(
        status(&["-H", "Host: elsewhere.test", &format!("{}/", s.proxy_url())]),
        "421"
    );

    // malformed request line
    assert!(raw(&s, b"GARBAGE\r\n\r\n").starts_with("HTTP/1.1 400"));
    // header section over the limit (16 KiB)
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\nX-Big: ",
        s.origin_url("/echo")
    )
    .into_bytes();
    req.extend(std::iter::repeat_n(b'a', 20_000));
    req.extend_from_slice(b"\r\n\r\n");
    let resp = raw(&s, &req);
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[test]
fn bodies_over_the_gateway_limit_get_413_declared_or_chunked() {
    let s = Stack::start_with("limit", "max_body_bytes = 100000");
    let file = s.dir.path().join("body.bin");
    std::fs::write(&file, vec![7u8; 200_000]).expect("write");
    let data = format!("@{}", file.display());
    let proxy = s.proxy_url();
    let code = |extra: &[&str]| {
        let mut a = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy,
            "-H",
            "Expect:",
            "--data-binary",
            &data,
        ];
        a.extend_from_slice(extra);
        let url = s.origin_url("/upload");
        a.push(&url);
        text(&curl(&a))
    };
    assert_eq!(code(&[]), "413", "declared Content-Length over the limit");
    assert_eq!(
        code(&["-H", "Transfer-Encoding: chunked"]),
        "413",
        "chunked body over the limit"
    );
    // under the limit passes
    let small = text(&curl(&[
        "-x",
        &s.proxy_url(),
        "--data-binary",
        "hello",
        &s.origin_url("/upload"),
    ]));
    assert_eq!(small.trim(), "5");
}

fn raw(s: &Stack, req: &[u8]) -> String {
    let mut tcp = TcpStream::connect(s.proxy).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = tcp.write_all(req);
    let mut buf = vec![0u8; 256];
    let n = tcp.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_gateway_without_a_client_certificate_is_refused() {
    let s = Stack::start("mtls");
    let ca = std::fs::read(s.dir.path().join("certs/ca.pem")).expect("ca");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let refused = rt.block_on(async {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.expect("pem")).expect("root");
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(tunnel_io::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
        let mut ep =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
        let addr = format!("127.0.0.1:{}", s.relay_port).parse().expect("addr");
        match ep.connect(addr, "localhost").expect("connect").await {
            Err(e) => Some(e.to_string()),
            // TLS 1.3: the client may finish first; the relay then closes the connection.
            Ok(conn) => tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .ok()
                .map(|e| e.to_string()),
        }
    });
    let reason = refused.expect("the relay must refuse a connection without a client certificate");
    assert!(
        reason.to_lowercase().contains("certificate")
            || reason.contains("0x174")
            || reason.contains("116"),
        "{reason}"
    );
}

#[test]
fn bad_config_exits_64_naming_file_line_and_key() {
    let dir = common::TempDir::new("badcfg");
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, "[relay]\nname = \"r\"\nlisten = \"not an address\"\n[egress]\nallow = [\"a.*.b\"]\nbogus = true\n").expect("write");
    for args in [
        vec!["check-config", path.to_str().expect("utf8")],
        vec!["relay", "--config", path.to_str().expect("utf8")],
    ] {
        let out = common::canopy(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let f = path.display();
        assert!(err.contains(&format!("{f}:3: key `relay.listen`")), "{err}");
        assert!(
            err.contains(&format!("{f}:5: key `egress.allow[0]`")),
            "{err}"
        );
        assert!(err.contains(&format!("{f}:6: key `egress.bogus`")), "{err}");
    }
}

#[test]
fn requests_to_one_origin_share_a_connection() {
    let s = Stack::start("e2e-pool");
    let url = s.origin_url("/echo");
    for _ in 0..5 {
        assert_eq!(s.status_via_proxy(&url), "200");
        // the answer is done: its connection goes back to the relay's pool
        std::thread::sleep(Duration::from_millis(100));
    }
    let reused = s.relay_metric("canopy_relay_origin_connections_reused_total");
    // the stack's own readiness request and these five: all but the first reuse one
    assert!(reused >= 4.0, "reused {reused}");
    // and the origin saw one connection for them all
    let stats = s.origin_stats();
    assert_eq!(
        stats["connections"], 2,
        "the curl above and the relay's one: {stats}"
    );
}

type RawSender = h3::client::SendRequest<tunnel_io::quic::OpenStreams, bytes::Bytes>;

/// A raw HTTP/3 connection to the stack's relay with the gateway's certificate, as a
/// gateway that misbehaves would have: its endpoint, connection and request sender.
async fn raw_gateway(s: &Stack) -> (quinn::Endpoint, quinn::Connection, RawSender) {
    let d = s.dir.path();
    let tls = tunnel_io::TlsFiles::load(
        &d.join("certs/gateway.pem"),
        &d.join("certs/gateway.key"),
        &d.join("certs/ca.pem"),
    )
    .expect("the gateway's certificate");
    let client = tls
        .gateway_quic(tunnel_io::TransportSettings::default().quinn())
        .expect("client config");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(client);
    let relay = std::net::SocketAddr::from(([127, 0, 0, 1], s.relay_port));
    let conn = ep
        .connect(relay, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut driver, sender) =
        h3::client::new(tunnel_io::quic::Connection::new(conn.clone(), false))
            .await
            .expect("h3");
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    (ep, conn, sender)
}

/// A body the relay reads whole (here a media init segment, from a client holding the
/// gateway's certificate) that stops sending is given up after `[egress]
/// body_idle_timeout_ms`: a stalled stream holds neither the stream nor intake bytes
/// longer than that.
#[test]
fn a_body_that_stalls_at_the_relay_is_given_up_after_the_idle_bound() {
    use tunnel::wire::media::{InitHeader, MediaPath, HDR_MEDIA_INIT, MEDIA_AUTHORITY};
    let s = Stack::start_relay_custom("stall", "", "", "body_idle_timeout_ms = 1000", "");
    let stalled = "canopy_relay_bodies_stalled_total";
    assert_eq!(s.relay_metric(stalled), 0.0);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_kept, sent_at) = rt.block_on(async {
        let (ep, conn, mut sender) = raw_gateway(&s).await;
        let path = MediaPath {
            camera: "cam".into(),
            rendition: "main".into(),
            init: true,
        };
        let head = InitHeader {
            run: 1,
            generation: 1,
            codecs: "avc1.64001f".into(),
            resolution: None,
        };
        let req = http::Request::put(format!("https://{MEDIA_AUTHORITY}{}", path.encode()))
            .header(HDR_MEDIA_INIT, head.encode())
            .body(())
            .expect("request");
        let mut stream = sender.send_request(req).await.expect("send the head");
        stream
            .send_data(bytes::Bytes::from_static(
                b"the first bytes of an init segment",
            ))
            .await
            .expect("send some of the body");
        // ... and never the rest: the stream stays open, the connection alive
        ((ep, conn, sender, stream), std::time::Instant::now())
    });
    let mut given_up = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        if s.relay_metric(stalled) >= 1.0 {
            given_up = Some(sent_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let given_up = given_up.expect("the relay never gave up the stalled body");
    println!(
        "stalled body given up {} ms after its last byte",
        given_up.as_millis()
    );
    // not before the bound (the scrape adds its own time after it)
    assert!(given_up >= Duration::from_millis(950), "{given_up:?}");
    assert_eq!(s.relay_metric(stalled), 1.0);
}

/// A keyed request (a bid) takes its origin connection only once its body is whole: one
/// declaring more than the 1 MiB a keyed body may have is refused with 413 at once, and
/// while a bid's body comes slowly the relay's pooled origin connection stays free for
/// other requests (the origin sees no new connection for them).
#[test]
fn a_bid_takes_its_origin_connection_only_once_its_body_is_whole() {
    let s = Stack::start("e2e-keyed");
    let echo = s.origin_url("/echo");
    let origin_connections = || {
        s.origin_stats()["connections"]
            .as_u64()
            .expect("connections")
    };
    let bid = |key: &str, length: Option<u64>| {
        let mut b = http::Request::post(format!("http://{}/bid", s.origin))
            .header(tunnel::wire::HDR_CLASS, "bid")
            .header(tunnel::wire::HDR_IDEMPOTENCY_KEY, key);
        if let Some(n) = length {
            b = b.header(http::header::CONTENT_LENGTH, n);
        }
        b.body(()).expect("request")
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (_ep, _conn, mut sender) = rt.block_on(raw_gateway(&s));
    let too_large = rt.block_on(async {
        let mut big = sender
            .send_request(bid("keyed-too-large-1", Some(2 << 20)))
            .await
            .expect("send the head");
        big.recv_response().await.expect("an answer").status()
    });
    assert_eq!(too_large, http::StatusCode::PAYLOAD_TOO_LARGE);

    // the relay's pool holds a connection to the origin (within its 4 s idle)
    assert_eq!(s.status_via_proxy(&echo), "200");
    let before = origin_connections();
    // a bid whose body takes 1.5 s: its first half now
    let mut stream = rt.block_on(async {
        let mut stream = sender
            .send_request(bid("keyed-slow-1", None))
            .await
            .expect("send the head");
        stream
            .send_data(bytes::Bytes::from_static(b"{\"lot\":1,"))
            .await
            .expect("the first half");
        stream
    });
    std::thread::sleep(Duration::from_millis(300));
    // meanwhile another request to the same origin takes the pooled connection
    assert_eq!(s.status_via_proxy(&echo), "200");
    let slow = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        stream
            .send_data(bytes::Bytes::from_static(b"\"amount\":5}"))
            .await
            .expect("the second half");
        stream.finish().await.expect("finish");
        stream.recv_response().await.expect("an answer").status()
    });
    assert_eq!(slow, http::StatusCode::OK);
    // the only new connection is the curl asking for these stats
    let after = origin_connections();
    assert_eq!(after, before + 1, "the slow bid held the pooled connection");
    let bids = text(&curl(&[&s.origin_url("/bids")]));
    assert_eq!(bids.matches("keyed-slow-1").count(), 1, "{bids}");
    assert!(!bids.contains("keyed-too-large-1"), "{bids}");
}
