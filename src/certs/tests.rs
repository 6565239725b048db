use super::*;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

fn tempdir() -> PathBuf {
    std::env::temp_dir().join(format!("canopy-certs-{:016x}", fastrand::u64(..)))
}

fn window() -> Window {
    let start = parse_time("--start", "2026-12-05T10:00:00Z", false).expect("start");
    let end = parse_time("--end", "2026-12-07T22:00:00Z", false).expect("end");
    Window::event(start, end, Duration::hours(12)).expect("window")
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from(pem_der(pem).expect("pem"))
}

fn at(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).expect("after 1970"),
    ))
}

fn roots(ca: &str) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    r.add(der(ca)).expect("root");
    Arc::new(r)
}

fn client_ok(ca: &str, leaf: &str, t: OffsetDateTime) -> Result<(), rustls::Error> {
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots(ca),
        tunnel_io::tls::provider(),
    )
    .build()
    .expect("verifier");
    v.verify_client_cert(&der(leaf), &[], at(t)).map(|_| ())
}

fn server_ok(ca: &str, leaf: &str, name: &str, t: OffsetDateTime) -> Result<(), rustls::Error> {
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots(ca),
        tunnel_io::tls::provider(),
    )
    .build()
    .expect("verifier");
    let name = ServerName::try_from(name.to_string()).expect("name");
    v.verify_server_cert(&der(leaf), &[], &name, &[], at(t))
        .map(|_| ())
}

fn validity(pem: &str) -> (OffsetDateTime, OffsetDateTime) {
    let d = pem_der(pem).expect("pem");
    let (_, x) = x509_parser::parse_x509_certificate(&d).expect("x509");
    (
        x.validity().not_before.to_datetime(),
        x.validity().not_after.to_datetime(),
    )
}

#[test]
fn generated_material_builds_both_tls_configs() {
    let certs = EventCerts::generate(
        "test",
        Window::from(OffsetDateTime::now_utc()),
        None,
        &["localhost".into(), "127.0.0.1".into()],
        Leaves {
            gateways: &["gw1".into()],
            sites: &[],
        },
    )
    .expect("certs");
    let t = tunnel_io::TransportSettings::default().quinn();
    certs
        .relay_tls()
        .expect("relay")
        .relay_quic(t.clone(), tunnel_io::Revoked::none())
        .expect("relay quic");
    certs
        .gateway_tls(0)
        .expect("gw")
        .gateway_quic(t)
        .expect("gw quic");
}

#[test]
fn every_certificate_is_valid_for_the_event_window_and_no_longer() {
    let w = window();
    let certs = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs");
    let ca = certs.ca.pem().cert;
    for pem in [&ca, &certs.relay.pem.cert, &certs.gateways[0].pem.cert] {
        assert_eq!(validity(pem), (w.not_before, w.not_after));
    }
    let gw = &certs.gateways[0].pem.cert;
    let inside = w.not_before + Duration::hours(1);
    client_ok(&ca, gw, inside).expect("a gateway inside the window");
    server_ok(&ca, &certs.relay.pem.cert, "relay.test", inside).expect("the relay inside");
    for outside in [
        w.not_before - Duration::hours(1),
        w.not_after + Duration::hours(1),
    ] {
        assert!(client_ok(&ca, gw, outside).is_err(), "{outside}");
        assert!(server_ok(&ca, &certs.relay.pem.cert, "relay.test", outside).is_err());
    }
    // serials differ and are what the leaf says
    assert_ne!(certs.relay.serial, certs.gateways[0].serial);
    let d = pem_der(gw).expect("pem");
    let (_, x) = x509_parser::parse_x509_certificate(&d).expect("x509");
    assert_eq!(hex(x.raw_serial()), certs.gateways[0].serial);
}

#[test]
fn init_refuses_an_event_that_has_a_ca_and_keys_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let w = window();
    let first = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs");
    let written = first.write(&dir, Existing::Keep).expect("first init");
    assert_eq!(written.len(), 6);
    for p in &written {
        let mode = std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let key = p.extension().is_some_and(|e| e == "key");
        if key {
            assert_eq!(mode, 0o600, "{}", p.display());
        } else {
            // 0644 less the umask: nobody but its owner writes it
            assert_eq!((mode & 0o600, mode & 0o133), (0o600, 0), "{}", p.display());
        }
    }
    let ca_before = std::fs::read(dir.join("ca.key")).expect("ca key");
    // a second init (say, to add a gateway) would replace the CA: refused, nothing written
    let second = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into(), "stall-2".into()],
            sites: &[],
        },
    )
    .expect("certs");
    match second.write(&dir, Existing::Keep) {
        Err(e @ CertsError::Exists(_)) => {
            assert_eq!(e.exit_code(), 64);
            let CertsError::Exists(paths) = e else {
                unreachable!()
            };
            assert!(paths.contains(&dir.join("ca.key")));
        }
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(dir.join("ca.key")).expect("ca key"),
        ca_before
    );
    assert!(!dir.join("stall-2.key").exists());
    // --force replaces
    second.write(&dir, Existing::Replace).expect("forced");
    assert_ne!(
        std::fs::read(dir.join("ca.key")).expect("ca key"),
        ca_before
    );
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn add_issues_from_the_ca_there_and_keeps_what_exists() {
    let dir = tempdir();
    let w = window();
    EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs")
    .write(&dir, Existing::Keep)
    .expect("init");
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let relay_key = std::fs::read(dir.join("relay.key")).expect("relay key");
    let inside = w.not_before + Duration::hours(1);

    let added = add(
        &dir,
        Leaves {
            gateways: &["stall-2".into()],
            sites: &[],
        },
        &[],
        Existing::Keep,
    )
    .expect("add");
    assert_eq!(added.event, "market");
    assert_eq!(added.window, w);
    let leaf = std::fs::read_to_string(dir.join("stall-2.pem")).expect("leaf");
    client_ok(&ca, &leaf, inside).expect("the new gateway verifies against the old CA");
    assert_eq!(validity(&leaf), (w.not_before, w.not_after));
    let d = pem_der(&leaf).expect("pem");
    let (_, x) = x509_parser::parse_x509_certificate(&d).expect("x509");
    assert_eq!(common_name(&x).as_deref(), Some("stall-2.market"));

    // the same gateway again: its key stays
    let key = std::fs::read(dir.join("stall-2.key")).expect("key");
    assert!(matches!(
        add(
            &dir,
            Leaves {
                gateways: &["stall-2".into()],
                sites: &[]
            },
            &[],
            Existing::Keep
        ),
        Err(CertsError::Exists(_))
    ));
    assert_eq!(std::fs::read(dir.join("stall-2.key")).expect("key"), key);
    // with one that exists among new ones, none is written
    assert!(matches!(
        add(&dir, Leaves { gateways: &["stall-3".into(), "stall-2".into()], sites: &[] }, &[], Existing::Keep),
        Err(CertsError::Exists(p)) if p == vec![dir.join("stall-2.pem"), dir.join("stall-2.key")]
    ));
    assert!(!dir.join("stall-3.pem").exists() && !dir.join("stall-3.key").exists());

    // another relay name: the old names stay, and so does the relay's key
    add(
        &dir,
        Leaves {
            gateways: &[],
            sites: &[],
        },
        &["10.200.0.1".into()],
        Existing::Keep,
    )
    .expect("relay name");
    let relay = std::fs::read_to_string(dir.join("relay.pem")).expect("relay");
    server_ok(&ca, &relay, "relay.test", inside).expect("old name");
    server_ok(&ca, &relay, "10.200.0.1", inside).expect("new name");
    assert_eq!(
        std::fs::read(dir.join("relay.key")).expect("relay key"),
        relay_key
    );

    // names that cannot be files or are not gateways'
    for bad in ["ca", "relay", "a.b", "../x", ""] {
        let e = add(
            &dir,
            Leaves {
                gateways: &[bad.into()],
                sites: &[],
            },
            &[],
            Existing::Keep,
        )
        .expect_err(bad);
        assert_eq!(e.exit_code(), 64, "{bad}");
    }
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn add_without_the_ca_key_says_which_file_is_missing() {
    let dir = tempdir();
    EventCerts::generate(
        "market",
        window(),
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs")
    .write(&dir, Existing::Keep)
    .expect("init");
    std::fs::remove_file(dir.join("ca.key")).expect("rm");
    let e = add(
        &dir,
        Leaves {
            gateways: &["stall-2".into()],
            sites: &[],
        },
        &[],
        Existing::Keep,
    )
    .expect_err("no key");
    assert_eq!(e.exit_code(), 66);
    assert!(e.to_string().contains("ca.key"), "{e}");
    // another CA's key is refused
    let other = Ca::new("other", window()).expect("ca");
    std::fs::write(dir.join("ca.key"), other.pem().key).expect("write");
    let e = add(
        &dir,
        Leaves {
            gateways: &["stall-2".into()],
            sites: &[],
        },
        &[],
        Existing::Keep,
    )
    .expect_err("wrong key");
    assert!(e.to_string().contains("is not the key of ca.pem"), "{e}");
    assert!(!dir.join("stall-2.pem").exists());
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn a_revocation_list_names_a_leaf_by_serial_or_by_hash() {
    let certs = EventCerts::generate(
        "market",
        window(),
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["a".into(), "b".into()],
            sites: &[],
        },
    )
    .expect("certs");
    let (a, b) = (&certs.gateways[0], &certs.gateways[1]);
    let der_a = pem_der(&a.pem.cert).expect("a");
    let der_b = pem_der(&b.pem.cert).expect("b");
    let by_serial =
        tunnel_io::RevocationList::parse(&format!("serial:{}", a.serial)).expect("list");
    assert!(by_serial.contains(&der_a) && !by_serial.contains(&der_b));
    let by_hash = tunnel_io::RevocationList::parse(&format!("sha256:{}", b.sha256)).expect("list");
    assert!(by_hash.contains(&der_b) && !by_hash.contains(&der_a));
    assert_eq!(
        tunnel_io::revoked::line_for(&der_b),
        format!("sha256:{}", b.sha256)
    );
}

#[test]
fn revoke_appends_once_and_leaves_a_broken_list_alone() {
    let dir = tempdir();
    EventCerts::generate(
        "market",
        window(),
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs")
    .write(&dir, Existing::Keep)
    .expect("init");
    let list = dir.join("revoked.txt");
    let r = revoke(&list, &dir.join("gw.pem"), "gateway gw").expect("revoke");
    assert!(r.added);
    assert_eq!(r.listed, 1);
    let text = std::fs::read_to_string(&list).expect("list");
    assert!(
        text.starts_with(&r.line) && text.contains("# gateway gw, serial "),
        "{text}"
    );
    let again = revoke(&list, &dir.join("gw.pem"), "gateway gw").expect("again");
    assert!(!again.added);
    assert_eq!(std::fs::read_to_string(&list).expect("list"), text);
    std::fs::write(&list, format!("{text}oops\n")).expect("break");
    let e = revoke(&list, &dir.join("relay.pem"), "relay").expect_err("broken list");
    assert!(e.to_string().contains("line 2"), "{e}");
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn an_event_past_its_first_day_gets_a_next_pair_taken_up_at_t_plus_24h() {
    let dir = tempdir();
    let w = window();
    let start = parse_time("--start", "2026-12-05T10:00:00Z", false).expect("start");
    let made = EventCerts::generate(
        "market",
        w,
        Some(start + ROTATE_AFTER),
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs");
    let next_nb = start + ROTATE_AFTER - Duration::seconds(tunnel_io::own_cert::SKEW);
    assert_eq!(made.next.len(), 2);
    for n in &made.next {
        assert_eq!(n.generation, Generation::Next);
        assert_eq!(validity(&n.pem.cert), (next_nb, w.not_after));
    }
    let written = made.write(&dir, Existing::Keep).expect("write");
    for f in [
        "relay.next.pem",
        "relay.next.key",
        "gw.next.pem",
        "gw.next.key",
    ] {
        assert!(written.contains(&dir.join(f)), "{f}");
    }
    let ca = made.ca.pem().cert;
    let gw_next = std::fs::read_to_string(dir.join("gw.next.pem")).expect("next");
    client_ok(&ca, &gw_next, start + ROTATE_AFTER).expect("the next pair verifies");
    // a relay name added later is in the next pair too (it takes over at T+24h)
    let next_key = std::fs::read(dir.join("relay.next.key")).expect("key");
    add(
        &dir,
        Leaves::default(),
        &["relay2.test".into()],
        Existing::Keep,
    )
    .expect("relay name");
    let relay_next = std::fs::read_to_string(dir.join("relay.next.pem")).expect("next");
    server_ok(&ca, &relay_next, "relay2.test", start + ROTATE_AFTER).expect("new name");
    server_ok(&ca, &relay_next, "relay.test", start + ROTATE_AFTER).expect("old name");
    assert_eq!(validity(&relay_next), (next_nb, w.not_after));
    assert_eq!(
        std::fs::read(dir.join("relay.next.key")).expect("key"),
        next_key
    );
    // a one-day event gets none
    let short = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &[],
        },
    )
    .expect("certs");
    assert!(short.next.is_empty());
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn rotate_issues_next_pairs_for_the_relay_and_every_gateway_there() {
    let dir = tempdir();
    let w = window();
    EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into(), "10.200.0.1".into()],
        Leaves {
            gateways: &["gw".into(), "b".into()],
            sites: &[],
        },
    )
    .expect("certs")
    .write(&dir, Existing::Keep)
    .expect("init");
    let at = w.not_before + Duration::hours(30);
    let r = rotate(&dir, at, at).expect("rotate");
    let mut stems: Vec<String> = r.issued.iter().map(Issued::stem).collect();
    stems.sort();
    assert_eq!(stems, vec!["b.next", "gw.next", "relay.next"]);
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca");
    let relay_next = std::fs::read_to_string(dir.join("relay.next.pem")).expect("relay next");
    server_ok(&ca, &relay_next, "10.200.0.1", at).expect("same names");
    assert_eq!(
        validity(&relay_next),
        (
            at - Duration::seconds(tunnel_io::own_cert::SKEW),
            w.not_after
        )
    );
    // new keys, the current pairs untouched
    assert_ne!(
        std::fs::read(dir.join("gw.next.key")).expect("k"),
        std::fs::read(dir.join("gw.key")).expect("k")
    );
    // again, once the next pair is in use: it becomes the current pair, and a new next
    // pair is made (never a step back to the older pair)
    let before = std::fs::read(dir.join("gw.next.key")).expect("k");
    let before_pem = std::fs::read(dir.join("gw.next.pem")).expect("p");
    rotate(&dir, at + Duration::hours(1), at).expect("again");
    assert_ne!(std::fs::read(dir.join("gw.next.key")).expect("k"), before);
    assert_eq!(std::fs::read(dir.join("gw.key")).expect("k"), before);
    assert_eq!(std::fs::read(dir.join("gw.pem")).expect("p"), before_pem);
    // a revoked gateway gets no next pair
    let list = dir.join("revoked.txt");
    revoke(&list, &dir.join("b.pem"), "gateway b").expect("revoke");
    let b_next = std::fs::read(dir.join("b.next.pem")).expect("b next");
    let r = rotate(&dir, at + Duration::hours(2), at).expect("rotate");
    assert_eq!(r.skipped, vec!["b".to_string()]);
    assert_eq!(
        std::fs::read(dir.join("b.next.pem")).expect("b next"),
        b_next
    );
    // past the CA's end: nothing to rotate to
    let e = rotate(&dir, w.not_after + Duration::hours(1), at).expect_err("too late");
    assert_eq!(e.exit_code(), 64);
    std::fs::remove_dir_all(&dir).expect("clean");
}

#[test]
fn a_site_gets_a_server_certificate_for_its_name_and_rotates_with_the_rest() {
    let dir = tempdir();
    let w = window();
    let sites = ["Shop.Venue.test".to_string()];
    let made = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["gw".into()],
            sites: &sites,
        },
    )
    .expect("certs");
    made.write(&dir, Existing::Keep).expect("write");
    let ca = made.ca.pem().cert;
    let site = std::fs::read_to_string(dir.join("shop.venue.test.pem")).expect("site");
    let inside = w.not_before + Duration::hours(1);
    server_ok(&ca, &site, "shop.venue.test", inside).expect("its name");
    assert!(server_ok(&ca, &site, "other.venue.test", inside).is_err());
    // a site's certificate is no gateway's
    assert!(client_ok(&ca, &site, inside).is_err());
    let r = rotate(&dir, inside, inside).expect("rotate");
    let mut stems: Vec<String> = r.issued.iter().map(Issued::stem).collect();
    stems.sort();
    assert_eq!(stems, vec!["gw.next", "relay.next", "shop.venue.test.next"]);
    let added = add(
        &dir,
        Leaves {
            gateways: &[],
            sites: &["menu.venue.test".into()],
        },
        &[],
        Existing::Keep,
    )
    .expect("add a site");
    assert_eq!(added.issued[0].role, Role::Site);
    for bad in ["10.0.0.1", "a..b", "-x.test", "x_y.test", "ca", "x.next"] {
        let e = add(
            &dir,
            Leaves {
                gateways: &[],
                sites: &[bad.into()],
            },
            &[],
            Existing::Keep,
        )
        .expect_err(bad);
        assert_eq!(e.exit_code(), 64, "{bad}");
    }
    let clash = EventCerts::generate(
        "market",
        w,
        None,
        &["relay.test".into()],
        Leaves {
            gateways: &["shop".into()],
            sites: &["shop".into()],
        },
    );
    assert!(matches!(clash, Err(CertsError::Name(_))));
    std::fs::remove_dir_all(&dir).expect("clean");
}
