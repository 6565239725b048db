//! The relay's JetStream bid sink against real NATS servers (Debian's nats-server; tests/
//! run.sh installs it): each bid stored once whatever is retried, restarted or killed, and
//! a key reused for another request refused. Read back with async-nats, not with the
//! relay.

mod common;

use async_nats::jetstream;
use common::{acknowledged, burst_with, canopy, curl, free_port, wait_until, Proc, Stack, TempDir};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const STREAM: &str = "BIDS";

/// A NATS server with JetStream, from a config file in `dir`, logging to `<name>.log`.
fn nats_server(dir: &Path, name: &str, conf: &str) -> Proc {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).expect("nats conf");
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("nats log");
    Proc(
        Command::new("nats-server")
            .args(["-c", path.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server is installed (tests/run.sh installs it)"),
    )
}

/// Waits until the server of `name` (logging in `dir`) listens on `port`.
fn wait_listening(dir: &Path, name: &str, port: u16) {
    wait_until(
        &format!(
            "nats-server {name} to listen on {port} (its log: {})",
            dir.join(format!("{name}.log")).display()
        ),
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// Gateway sites: `bids.test` is the JetStream sink at the relay.
const GATEWAY: &str = "[bids]\ndeadline_ms = 500\n[[sites]]\nhost = \"bids.test\"\norigin = \"http://bids.canopy\"\n[[classes]]\nclass = \"bid\"\npath_prefix = \"/lots/\"\nmethod = \"POST\"\n";

fn relay_section(servers: &[u16], extra: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|p| format!("\"nats://127.0.0.1:{p}\""))
        .collect();
    format!(
        "[jetstream]\nhost = \"bids.canopy\"\nservers = [{}]\nstream = \"{STREAM}\"\nsubject = \"bids\"\nbucket = \"bid_keys\"\n{extra}\n",
        list.join(", ")
    )
}

/// A bid through the gateway: (status, body).
fn post(s: &Stack, key: &str, body: &str) -> (u16, String) {
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "Host: bids.test",
        "-H",
        "Content-Type: application/json",
        "-H",
        &format!("Idempotency-Key: {key}"),
        "--data-binary",
        body,
        &format!("{}/lots/3/bids", s.proxy_url()),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// How the test's own client reaches the servers.
#[derive(Clone, Copy, Default)]
struct Access<'a> {
    auth: Option<(&'a str, &'a str)>,
    /// A token.
    token: Option<&'a str>,
    /// An nkey seed.
    nkey: Option<&'a str>,
    /// A credentials file.
    creds: Option<&'a Path>,
    /// A certificates directory (`canopy certs init`): its `ca.pem` signed the servers,
    /// and `CLIENT.pem`/`.key` is the client's pair.
    tls: Option<&'a Path>,
}

const CLIENT: &str = "nats-client";

async fn context(port: u16, access: Access<'_>) -> jetstream::Context {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some((u, p)) = access.auth {
        opts = opts.user_and_password(u.into(), p.into());
    }
    if let Some(t) = access.token {
        opts = opts.token(t.into());
    }
    if let Some(seed) = access.nkey {
        opts = opts.nkey(seed.into());
    }
    if let Some(f) = access.creds {
        opts = opts.credentials_file(f).await.expect("the reader's creds");
    }
    if let Some(d) = access.tls {
        opts = opts
            .require_tls(true)
            .add_root_certificates(d.join("ca.pem"))
            .add_client_certificate(
                d.join(format!("{CLIENT}.pem")),
                d.join(format!("{CLIENT}.key")),
            );
    }
    let c = opts
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("connect to nats");
    jetstream::new(c)
}

/// Every message of the stream: Idempotency-Key → how many times, and the gateways of the
/// messages that carry an edge time.
fn stored(port: u16, access: Access<'_>) -> (HashMap<String, usize>, Vec<String>) {
    runtime().block_on(async {
        let js = context(port, access).await;
        let mut st = match js.get_stream(STREAM).await {
            Ok(s) => s,
            Err(_) => return (HashMap::new(), Vec::new()),
        };
        let last = st.info().await.map_or(0, |i| i.state.last_sequence);
        let mut keys = HashMap::new();
        let mut gateways = Vec::new();
        for seq in 1..=last {
            let Ok(m) = st.get_raw_message(seq).await else {
                continue;
            };
            let h = |n: &str| m.headers.get(n).map(|v| v.as_str().to_owned());
            *keys
                .entry(h("Idempotency-Key").unwrap_or_default())
                .or_insert(0) += 1;
            // who sent it, and when the venue took it (µs since the epoch)
            let edge = h("Canopy-Edge-Time").and_then(|t| t.parse::<u64>().ok());
            gateways.extend(h("Canopy-Gateway").filter(|_| edge.is_some_and(|t| t > 0)));
        }
        (keys, gateways)
    })
}

#[test]
fn each_bid_is_stored_once_through_retries_restarts_and_an_outage() {
    let dir = TempDir::new("js-single");
    let port = free_port();
    let conf = format!(
        "server_name: n1\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ user: canopy, password: s3cret }}\n",
        dir.path().join("n1").display()
    );
    let mut nats = nats_server(dir.path(), "n1", &conf);
    wait_listening(dir.path(), "n1", port);
    let auth = Access {
        auth: Some(("canopy", "s3cret")),
        ..Access::default()
    };
    let mut s = Stack::start_custom(
        "js-single",
        "",
        GATEWAY,
        &relay_section(
            &[port],
            "user = \"canopy\"\npassword = \"s3cret\"\npublish_timeout_ms = 1000",
        ),
    );
    let (st, first) = post(&s, "k-1", "{\"bidder\":\"p1\",\"amount\":100}");
    assert_eq!(st, 201, "{first}");
    let v: serde_json::Value = serde_json::from_str(&first).expect("json answer");
    assert_eq!(v["stream"], STREAM, "{first}");
    assert_eq!(v["seq"], 1, "{first}");
    // the device's retry: the same answer, nothing published again
    let (st, again) = post(&s, "k-1", "{\"bidder\":\"p1\",\"amount\":100}");
    assert_eq!((st, again.as_str()), (201, first.as_str()));
    // another request under the same key: refused, the first answer does not leak
    let (st, other) = post(&s, "k-1", "{\"bidder\":\"p2\",\"amount\":900}");
    assert_eq!(st, 422, "{other}");
    assert!(!other.contains("\"seq\""), "{other}");
    // a relay that never saw the key (its own table gone): the bucket answers
    s.kill_relay();
    std::fs::remove_file(s.dir.path().join("relay-bids.journal")).expect("the relay's table");
    s.start_relay();
    s.wait_up();
    let (st, after) = post(&s, "k-1", "{\"bidder\":\"p1\",\"amount\":100}");
    assert_eq!((st, after.as_str()), (201, first.as_str()));
    let (st, other) = post(&s, "k-1", "{\"bidder\":\"p3\",\"amount\":5}");
    assert_eq!(st, 422, "{other}");
    // the servers are gone: the gateway keeps the bid (202) and sends it when they return
    drop(nats);
    let (st, queued) = post(&s, "k-2", "{\"bidder\":\"p2\",\"amount\":200}");
    assert_eq!(st, 202, "{queued}");
    std::thread::sleep(Duration::from_secs(3));
    nats = nats_server(dir.path(), "n1", &conf);
    wait_listening(dir.path(), "n1", port);
    wait_until(
        "the queued bid in the stream",
        Duration::from_secs(60),
        || stored(port, auth).0.contains_key("k-2"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (keys, gateways) = stored(port, auth);
    assert_eq!(
        keys,
        HashMap::from([("k-1".to_string(), 1), ("k-2".to_string(), 1)]),
        "each bid once"
    );
    assert!(gateways.iter().all(|g| g == "gateway.test"), "{gateways:?}");
    drop(nats);
}

/// A server from `conf` on `port` and a stack whose relay reaches it with `relay_keys`: one
/// bid is answered 201 and stored once, as `access` reads the stream.
fn one_bid_stored(dir: &TempDir, port: u16, conf: &str, relay_keys: &str, access: Access<'_>) {
    let nats = nats_server(dir.path(), "n1", conf);
    wait_listening(dir.path(), "n1", port);
    let s = Stack::start_custom("js-auth", "", GATEWAY, &relay_section(&[port], relay_keys));
    let (st, first) = post(&s, "k-1", "{\"bidder\":\"p1\",\"amount\":100}");
    assert_eq!(
        st,
        201,
        "{first} (the server's log: {})",
        std::fs::read_to_string(dir.path().join("n1.log")).unwrap_or_default()
    );
    let (keys, _) = stored(port, access);
    assert_eq!(keys, HashMap::from([("k-1".to_string(), 1)]));
    drop(nats);
}

#[test]
fn a_server_that_wants_a_token_stores_the_bids_of_a_relay_that_has_it() {
    let dir = TempDir::new("js-token");
    let port = free_port();
    let token = "canopy-t0ken-s3cret";
    let conf = format!(
        "server_name: n1\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ token: \"{token}\" }}\n",
        dir.path().join("n1").display(),
    );
    let access = Access {
        token: Some(token),
        ..Access::default()
    };
    one_bid_stored(&dir, port, &conf, &format!("token = \"{token}\""), access);
}

#[test]
fn a_server_that_knows_the_relay_by_its_nkey_stores_its_bids() {
    let dir = TempDir::new("js-nkey");
    let port = free_port();
    let relay_key = nkeys::KeyPair::new_user();
    let seed = relay_key.seed().expect("seed");
    let seed_file = dir.path().join("relay.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).expect("seed file");
    // the test's own client has a key of its own
    let reader = nkeys::KeyPair::new_user();
    let reader_seed = reader.seed().expect("seed");
    let conf = format!(
        "server_name: n1\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ users = [ {{ nkey: {} }}, {{ nkey: {} }} ] }}\n",
        dir.path().join("n1").display(),
        relay_key.public_key(),
        reader.public_key()
    );
    let access = Access {
        nkey: Some(&reader_seed),
        ..Access::default()
    };
    one_bid_stored(
        &dir,
        port,
        &conf,
        &format!("nkey_seed_file = \"{}\"", seed_file.display()),
        access,
    );
}

/// A NATS JWT (`ed25519-nkey`): `claims` with `iss` and `sub` added, signed by `issuer`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut c = claims;
    c["iss"] = issuer.public_key().into();
    c["sub"] = subject.into();
    c["iat"] = 1_700_000_000u64.into();
    c["jti"] = format!("{:x}", subject.len() * 7919 + c.to_string().len()).into();
    let head = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64(c.to_string().as_bytes());
    let signed = format!("{head}.{body}");
    let sig = issuer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", b64(&sig))
}

#[test]
fn an_operator_mode_server_takes_the_relay_by_its_credentials_file() {
    let dir = TempDir::new("js-creds");
    let port = free_port();
    // an operator, one account with JetStream, and its users: the relay and the reader
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let op_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"name": "op", "nats": {"type": "operator", "version": 2}}),
    );
    let acc_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"name": "venue", "nats": {"limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        }, "type": "account", "version": 2}}),
    );
    // the server's own account (JetStream needs one)
    let system = nkeys::KeyPair::new_account();
    let sys_jwt = nats_jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"name": "SYS", "nats": {"limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1
        }, "type": "account", "version": 2}}),
    );
    let user = |name: &str| {
        let u = nkeys::KeyPair::new_user();
        let jwt = nats_jwt(
            &account,
            &u.public_key(),
            serde_json::json!({"name": name, "nats": {
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2
            }}),
        );
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            u.seed().expect("seed")
        );
        let path = dir.path().join(format!("{name}.creds"));
        std::fs::write(&path, creds).expect("creds");
        path
    };
    let relay_creds = user("relay");
    let reader_creds = user("reader");
    let conf = format!(
        "server_name: n1\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\noperator: {op_jwt}\nsystem_account: {sys}\nresolver: MEMORY\nresolver_preload: {{ {acc}: {acc_jwt}, {sys}: {sys_jwt} }}\n",
        dir.path().join("n1").display(),
        acc = account.public_key(),
        sys = system.public_key(),
    );
    let access = Access {
        creds: Some(&reader_creds),
        ..Access::default()
    };
    one_bid_stored(
        &dir,
        port,
        &conf,
        &format!("creds_file = \"{}\"", relay_creds.display()),
        access,
    );
}

#[test]
fn a_three_node_cluster_loses_its_leader_mid_burst_and_stores_each_bid_once() {
    let dir = TempDir::new("js-cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list: Vec<String> = routes
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    let mut nodes: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            let conf = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\ncluster {{ name: C1, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                ports[i],
                dir.path().join(format!("n{i}")).display(),
                routes[i],
                route_list.join(", ")
            );
            Some(nats_server(dir.path(), &format!("n{i}"), &conf))
        })
        .collect();
    for (i, p) in ports.iter().enumerate() {
        wait_listening(dir.path(), &format!("n{i}"), *p);
    }
    let s = Stack::start_custom(
        "js-cluster",
        "",
        GATEWAY,
        &relay_section(&ports, "replicas = 3\npublish_timeout_ms = 3000"),
    );
    // the sink makes the replicated stream once the cluster has a meta leader
    wait_until("a first bid stored", Duration::from_secs(60), || {
        post(&s, "warm-up", "{\"bidder\":\"p0\",\"amount\":1}").0 == 201
    });
    let leader = runtime().block_on(async {
        let js = context(ports[0], Access::default()).await;
        let mut st = js.get_stream(STREAM).await.expect("stream");
        let info = st.info().await.expect("info");
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("a replicated stream has a leader")
    });
    let victim: usize = leader.trim_start_matches('n').parse().expect("leader name");
    let survivor = ports[(victim + 1) % 3];
    let killed = nodes[victim].take().expect("node");
    let results = burst_with(
        &s,
        8,
        25,
        |s, key, n| {
            post(
                s,
                key,
                &format!("{{\"bidder\":\"p{}\",\"amount\":{}}}", n % 5, 100 + n),
            )
            .0
        },
        || {
            std::thread::sleep(Duration::from_millis(400));
            drop(killed);
        },
    );
    let acked = acknowledged(&results, &[201, 202]);
    assert_eq!(
        acked.len(),
        results.len(),
        "every bid answered 201 or 202: {:?}",
        results
            .iter()
            .filter(|(_, st)| *st != 201 && *st != 202)
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{} of {} bids queued at the gateway while the cluster elected a leader",
        results.iter().filter(|(_, st)| *st == 202).count(),
        results.len()
    );
    wait_until(
        "every acknowledged bid in the stream",
        Duration::from_secs(90),
        || {
            let keys = stored(survivor, Access::default()).0;
            acked.iter().all(|k| keys.contains_key(k))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let (keys, _) = stored(survivor, Access::default());
    let doubled: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    assert_eq!(keys.len(), acked.len() + 1, "the burst and the warm-up bid");
    drop(nodes);
}

#[test]
fn bids_reach_a_server_that_wants_tls_and_a_client_certificate() {
    let dir = TempDir::new("js-tls");
    // the NATS servers' own PKI: a CA, the server's pair (named 127.0.0.1), and a client
    // pair for the relay and one for the test's reader
    let certs = dir.path().join("nats-certs");
    let out = canopy(&[
        "certs",
        "init",
        "--event",
        "nats",
        "--out",
        certs.to_str().expect("utf8"),
        "--gateway",
        "relay-client",
        "--gateway",
        CLIENT,
    ]);
    assert!(
        out.status.success(),
        "certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let conf = format!(
        "server_name: n1\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\ntls {{\n  cert_file: \"{c}/relay.pem\"\n  key_file: \"{c}/relay.key\"\n  ca_file: \"{c}/ca.pem\"\n  verify: true\n}}\n",
        dir.path().join("n1").display(),
        c = certs.display()
    );
    let _nats = nats_server(dir.path(), "n1", &conf);
    wait_listening(dir.path(), "n1", port);
    let access = Access {
        tls: Some(&certs),
        ..Access::default()
    };
    let tls_keys = |client: bool| {
        let mut keys = format!("tls_ca = \"{}/ca.pem\"\n", certs.display());
        if client {
            keys.push_str(&format!(
                "tls_cert = \"{c}/relay-client.pem\"\ntls_key = \"{c}/relay-client.key\"\n",
                c = certs.display()
            ));
        }
        keys + "publish_timeout_ms = 1000"
    };
    let mut s = Stack::start_custom(
        "js-tls",
        "",
        GATEWAY,
        &relay_section(&[port], &tls_keys(true)),
    );
    let (st, first) = post(&s, "t-1", "{\"bidder\":\"p1\",\"amount\":100}");
    assert_eq!(st, 201, "{first}");
    // without its client certificate the relay is refused: the gateway keeps the bid
    s.kill_relay();
    let relay_toml = s.dir.path().join("relay.toml");
    let with_cert = std::fs::read_to_string(&relay_toml).expect("relay.toml");
    let without = with_cert.replace(&tls_keys(true), &tls_keys(false));
    assert_ne!(
        with_cert, without,
        "the relay's config names the client pair"
    );
    std::fs::write(&relay_toml, &without).expect("relay.toml");
    s.start_relay();
    s.wait_up();
    let (st, queued) = post(&s, "t-2", "{\"bidder\":\"p2\",\"amount\":200}");
    assert_eq!(st, 202, "{queued}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !stored(port, access).0.contains_key("t-2"),
        "a relay without a client certificate published"
    );
    // with it again: the queued bid goes through, once
    s.kill_relay();
    std::fs::write(&relay_toml, &with_cert).expect("relay.toml");
    s.start_relay();
    s.wait_up();
    wait_until(
        "the queued bid in the stream",
        Duration::from_secs(60),
        || stored(port, access).0.contains_key("t-2"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        stored(port, access).0,
        HashMap::from([("t-1".to_string(), 1), ("t-2".to_string(), 1)]),
        "each bid once"
    );
}

#[test]
fn a_missing_nats_ca_stops_the_relay_naming_key_and_file() {
    let dir = TempDir::new("js-no-ca");
    let d = dir.path();
    let out = canopy(&[
        "certs",
        "init",
        "--event",
        "x",
        "--out",
        d.join("certs").to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = d.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[relay]\nlisten = \"127.0.0.1:{}\"\n{}",
            free_port(),
            relay_section(&[free_port()], "tls_ca = \"nats/ca.pem\"")
        ),
    )
    .expect("relay.toml");
    // bounded: a relay that started anyway would otherwise hold the test for ever
    let out = Command::new("timeout")
        .args([
            "30",
            common::BIN,
            "relay",
            "--config",
            config.to_str().expect("utf8"),
        ])
        .output()
        .expect("run canopy");
    assert_eq!(out.status.code(), Some(64), "124: the relay started");
    let err = String::from_utf8_lossy(&out.stderr);
    let ca = d.join("nats/ca.pem");
    assert!(
        err.contains(&format!("jetstream.tls_ca: cannot read {}", ca.display())),
        "{err}"
    );
}
