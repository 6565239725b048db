//! HTTPS at the venue edge: a site marked `tls` answered by the gateway with a certificate
//! from the event CA, chosen by the name the device asks for; unknown names refused.

mod common;

use common::{canopy, curl, free_port, Stack, SECURE_SITE, SITE};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn stack(tag: &str) -> (Stack, u16) {
    let port = free_port();
    let s = Stack::start_full(
        tag,
        &format!("https_listen = \"127.0.0.1:{port}\""),
        &format!("[[sites]]\nhost = \"{SECURE_SITE}\"\norigin = \"$ORIGIN\"\ntls = true\n"),
    );
    (s, port)
}

/// curl against the HTTPS listener as a device that trusts the event CA, asking for
/// `name` (resolved to the gateway without DNS): (exit code, status, stdout).
fn https(s: &Stack, port: u16, name: &str, extra: &[&str]) -> (i32, String) {
    let ca = s.dir.path().join("certs/ca.pem");
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/echo");
    let mut args = vec![
        "--cacert",
        ca.to_str().expect("utf8"),
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = curl(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_tls_site_is_answered_by_name_and_other_names_are_refused() {
    let (s, port) = stack("https-site");
    // the site, verified against the event CA
    assert_eq!(https(&s, port, SECURE_SITE, &[]), (0, "200".into()));
    // a POST goes through too (classified and tunnelled as over plain HTTP)
    assert_eq!(
        https(&s, port, SECURE_SITE, &["-X", "POST", "--data", "x=1"]),
        (0, "200".into())
    );
    // a name the gateway has no tls site for: refused in the handshake
    let (code, status) = https(&s, port, "other.canopy.test", &[]);
    assert_ne!(code, 0, "an unknown name got {status}");
    // the plain site's name is not served over HTTPS either
    let (code, _) = https(&s, port, SITE, &[]);
    assert_ne!(code, 0);
    // no name at all (an address): refused
    let ca = s.dir.path().join("certs/ca.pem");
    let out = curl(&[
        "--cacert",
        ca.to_str().expect("utf8"),
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("https://127.0.0.1:{port}/echo"),
    ]);
    assert_ne!(out.status.code(), Some(0), "no SNI was served");
    // a request for another host on this site's connection: 421
    assert_eq!(
        https(&s, port, SECURE_SITE, &["-H", &format!("Host: {SITE}")]),
        (0, "421".into())
    );
    // the site asked for in cleartext on the proxy port: sent to HTTPS, path and query
    // kept; a plain site is not
    let plain = |host: &str| {
        let out = curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            &format!("Host: {host}"),
            &format!("{}/echo?day=2", s.proxy_url()),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        plain(SECURE_SITE),
        format!("308 https://{SECURE_SITE}:{port}/echo?day=2")
    );
    assert!(plain(SITE).starts_with("200 "), "{}", plain(SITE));

    // rotation: the site's next pair is served to new connections within a second or two
    let certs = s.dir.path().join("certs");
    assert_eq!(
        served(port, &certs),
        der_of(&certs.join(format!("{SECURE_SITE}.pem")))
    );
    let out = canopy(&["certs", "rotate", "--dir", certs.to_str().expect("utf8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next = der_of(&certs.join(format!("{SECURE_SITE}.next.pem")));
    common::wait_until(
        "the site's next certificate",
        Duration::from_secs(5),
        || served(port, &certs) == next,
    );
    assert_eq!(https(&s, port, SECURE_SITE, &[]), (0, "200".into()));
}

fn der_of(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .expect("certificate")
        .as_ref()
        .to_vec()
}

/// The certificate the gateway serves now for the secure site (a TLS client trusting
/// the event CA).
fn served(port: u16, certs: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der_of(
            &certs.join("ca.pem"),
        )))
        .expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(tunnel_io::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(SECURE_SITE).expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"HEAD /echo HTTP/1.1\r\nHost: secure.canopy.test\r\nConnection: close\r\n\r\n")
        .expect("handshake");
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default()
}
