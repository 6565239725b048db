//! The gateway's edge cache as venue devices meet it: fifty tablets asking for the same
//! assets at once cross the uplink once, a stale asset still loads with every uplink down,
//! and the crew purges through the admin API.

mod common;

use common::{curl, free_port, wait_until, Stack, SITE};
use std::collections::BTreeMap;
use std::time::Duration;

/// (status, Cache-Status, canopy-reason) of each URL fetched by one curl through the
/// gateway's site `SITE`.
fn fetch(s: &Stack, paths: &[String]) -> Vec<(String, String, String)> {
    let host = format!("Host: {SITE}");
    let mut args = vec![
        "-H".to_string(),
        host,
        "-w".to_string(),
        "%{http_code}|%header{cache-status}|%header{canopy-reason}\\n".to_string(),
    ];
    for p in paths {
        args.push("-o".into());
        args.push("/dev/null".into());
        args.push(format!("{}{p}", s.proxy_url()));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = curl(&refs);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, '|');
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn origin_fetches(s: &Stack) -> BTreeMap<String, u64> {
    let out = curl(&[&s.origin_url("/stats/static")]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn is_hit(cache_status: &str) -> bool {
    cache_status.starts_with("canopy; hit")
}

#[test]
fn fifty_devices_asking_for_twenty_assets_at_once_cross_the_uplink_once_each() {
    let s = Stack::start("edge-burst");
    let assets: Vec<String> = (0..20).map(|i| format!("/static/a{i}.png")).collect();
    let round = |s: &Stack| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..50)
                .map(|d| {
                    // each device in its own order, all at once
                    let mut mine = assets.clone();
                    mine.rotate_left(d % 20);
                    scope.spawn(move || fetch(s, &mine))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("device"))
                .collect::<Vec<_>>()
        })
    };
    let burst = round(&s);
    assert_eq!(burst.len(), 1000);
    assert!(burst.iter().all(|(st, ..)| st == "200"), "{burst:?}");
    let fetched = origin_fetches(&s);
    assert_eq!(fetched.len(), 20, "{fetched:?}");
    assert!(
        fetched.values().all(|&n| n == 1),
        "each asset once: {fetched:?}"
    );
    let hits = burst.iter().filter(|(_, cs, _)| is_hit(cs)).count();
    let ratio = hits as f64 / burst.len() as f64;
    eprintln!(
        "burst: {hits} of {} from the cache (ratio {ratio:.3})",
        burst.len()
    );
    assert!(ratio >= 0.97, "burst hit ratio {ratio}");
    let after = round(&s);
    let hits = after.iter().filter(|(_, cs, _)| is_hit(cs)).count();
    assert_eq!(hits, after.len(), "afterwards every answer is a hit");
    assert_eq!(origin_fetches(&s), fetched);
}

#[test]
fn with_every_uplink_down_stale_assets_load_and_uncached_ones_get_504() {
    let mut s = Stack::start("edge-offline");
    let short = "/short/menu.css".to_string();
    let long = "/static/logo.png".to_string();
    let first = fetch(&s, &[short.clone(), long.clone(), short.clone()]);
    assert!(
        first[0].1.contains("fwd=uri-miss") && first[0].1.contains("stored"),
        "{first:?}"
    );
    assert!(is_hit(&first[2].1), "{first:?}");
    // the short one goes stale; then every uplink goes (the relay is gone)
    std::thread::sleep(Duration::from_millis(1500));
    s.kill_relay();
    let uncached = "/static/never.png".to_string();
    wait_until(
        "the gateway to see no uplink",
        Duration::from_secs(15),
        || {
            let r = fetch(&s, std::slice::from_ref(&uncached));
            r[0].0 == "504" && r[0].1.contains("no uplink")
        },
    );
    let r = fetch(&s, &[short.clone(), long.clone(), uncached.clone()]);
    assert_eq!(r[0].0, "200", "{r:?}");
    assert!(
        r[0].1.starts_with("canopy; hit; ttl=-") && r[0].1.contains("stale, no uplink"),
        "{r:?}"
    );
    assert_eq!(r[1].0, "200");
    assert!(is_hit(&r[1].1), "{r:?}");
    assert_eq!(r[2].0, "504");
    assert!(r[2].2.contains("no uplink"), "{r:?}");
    // the relay back: the stale one is fetched again
    s.start_relay();
    s.wait_up();
    let r = fetch(&s, std::slice::from_ref(&short));
    assert_eq!(r[0].0, "200");
    assert!(r[0].1.contains("fwd=stale"), "{r:?}");
}

#[test]
fn the_crew_purges_through_the_admin_api_with_its_token() {
    let admin = format!("127.0.0.1:{}", free_port());
    let s = Stack::start_full(
        "edge-purge",
        "",
        &format!("[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n"),
    );
    let paths: Vec<String> = (0..3).map(|i| format!("/static/p{i}.js")).collect();
    fetch(&s, &paths);
    assert!(fetch(&s, &paths).iter().all(|(_, cs, _)| is_hit(cs)));
    let token_file = s.dir.path().join("admin.token");
    wait_until("the admin token", Duration::from_secs(5), || {
        token_file.exists()
    });
    let token = std::fs::read_to_string(&token_file).expect("token");
    let url = format!("http://{admin}/api/cache/purge");
    let body = format!("{{\"prefix\": \"http://{SITE}/static/p1\"}}");
    let refused = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "--data",
        &body,
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
    let auth = format!("Authorization: Bearer {}", token.trim());
    let out = curl(&["-H", &auth, "-X", "POST", "--data", &body, &url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["purged_entries"], 1, "{v}");
    let r = fetch(&s, &paths);
    assert!(
        is_hit(&r[0].1) && !is_hit(&r[1].1) && is_hit(&r[2].1),
        "{r:?}"
    );
    let out = curl(&["-H", &auth, "-X", "POST", "--data", "{\"all\": true}", &url]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["purged_entries"], 3, "{v}");
    // the same from the command line, with the gateway's config
    fetch(&s, &paths);
    let config = s.dir.path().join("gateway.toml");
    let c = config.to_str().expect("utf8");
    let out = common::canopy(&["purge", "--config", c, "--site", SITE]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("purged 3 answers"), "{said}");
    let out = common::canopy(&["purge", "--config", c]);
    assert_eq!(out.status.code(), Some(64));
    let bad = curl(&[
        "-H",
        &auth,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "--data",
        "{\"all\": true, \"url\": \"x\"}",
        &url,
    ]);
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "422");
}

/// A counter's value on the gateway's /metrics (0 when absent).
fn gateway_counter(s: &Stack, name: &str) -> f64 {
    let out = curl(&[&format!("http://{}/metrics", s.metrics.1)]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_disk_tier_serves_what_memory_let_go_and_outlives_a_restart_with_no_uplink() {
    // memory for about five of the ten assets; the disk for all of them
    let mut s = Stack::start_full(
        "edge-disk",
        "",
        "[cache]\nmemory_bytes = 16384\ndisk_dir = \"edge-cache\"\ndisk_bytes = 10485760\n",
    );
    let paths: Vec<String> = (0..10).map(|i| format!("/static/d{i}.png")).collect();
    assert!(fetch(&s, &paths).iter().all(|(st, ..)| st == "200"));
    let again = fetch(&s, &paths);
    assert!(
        again.iter().all(|(st, cs, _)| st == "200" && is_hit(cs)),
        "{again:?}"
    );
    assert!(
        gateway_counter(&s, "canopy_gateway_cache_disk_reads_total") >= 1.0,
        "some hits came from the disk tier"
    );
    let fetched = origin_fetches(&s);
    assert!(fetched.values().all(|&n| n == 1), "{fetched:?}");
    let dir = s.dir.path().join("edge-cache");
    let heads = || {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "head"))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until("ten answers on disk", Duration::from_secs(5), || {
        heads() == 10
    });
    // the box restarts while every uplink is down: the menu still loads
    s.kill_relay();
    s.kill_gateway();
    s.start_gateway();
    wait_until("the gateway back", Duration::from_secs(20), || {
        fetch(&s, &paths[..1])
            .first()
            .is_some_and(|(st, ..)| st == "200")
    });
    let after = fetch(&s, &paths);
    assert!(
        after.iter().all(|(st, cs, _)| st == "200" && is_hit(cs)),
        "{after:?}"
    );
    // and what it never had is still a 504 with its reason
    let miss = fetch(&s, &["/static/never.png".to_string()]);
    assert_eq!(miss[0].0, "504", "{miss:?}");
}

#[test]
fn a_paused_class_is_still_answered_from_the_cache() {
    // a rule that pauses bulk traffic ten seconds after the start (capacity is always
    // below 100 Gbit/s): time enough to cache an asset first
    let admin = format!("127.0.0.1:{}", free_port());
    let s = Stack::start_full(
        "edge-paused",
        "",
        &format!(
            "[admin]\nlisten = \"{admin}\"\ntoken_file = \"admin.token\"\n\
             [[actions]]\nname = \"hold-bulk\"\nwhen = \"capacity_below_mbps\"\nvalue = 100000\n\
             for_s = 10\nclear_after_s = 600\nthen = \"pause_class\"\nclass = \"bulk\"\n"
        ),
    );
    let cached = vec!["/static/kept.css".to_string()];
    assert_eq!(fetch(&s, &cached)[0].0, "200");
    assert!(is_hit(&fetch(&s, &cached)[0].1));
    let token_file = s.dir.path().join("admin.token");
    let paused = || {
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        let out = curl(&[
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://{admin}/api/actions"),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|r| r["name"] == "hold-bulk" && r["active"] == true)
        })
    };
    wait_until("bulk paused", Duration::from_secs(30), paused);
    // what the cache has is answered; what it has not waits for the pause to end
    let r = fetch(&s, &cached);
    assert_eq!(r[0].0, "200", "{r:?}");
    assert!(is_hit(&r[0].1), "{r:?}");
    let r = fetch(&s, &["/static/new.css".to_string()]);
    assert_eq!(r[0].0, "503", "{r:?}");
    assert!(r[0].2.contains("paused"), "{r:?}");
}
