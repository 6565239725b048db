use super::*;

const MIB: u64 = 1 << 20;

fn store(memory: u64) -> Store {
    Store::new(StoreConfig {
        memory_bytes: memory,
        disk_bytes: 0,
        max_object_bytes: MIB,
        stale_max: Duration::from_secs(3600),
    })
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn at(s: u64) -> SystemTime {
    t0() + Duration::from_secs(s)
}

fn req(method: &str, url: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn get(url: &str) -> http::request::Parts {
    req("GET", url, &[])
}

fn resp(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("response").into_parts().0
}

const URL: &str = "http://shop.test/a.png";

fn is_fresh(l: &Lookup) -> bool {
    matches!(l, Lookup::Fresh(_))
}

/// (case, request headers, response status and headers, expected)
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
    &'static [(&'static str, &'static str)],
    Result<(), NotStored>,
);

#[test]
fn what_may_be_stored_follows_rfc_9111_for_a_shared_cache() {
    let cases: &[Case] = &[
        (
            "max-age",
            &[],
            200,
            &[("cache-control", "max-age=60")],
            Ok(()),
        ),
        (
            "expires",
            &[],
            200,
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("date", "Fri, 15 Jan 2027 08:00:00 GMT"),
            ],
            Ok(()),
        ),
        ("validator only", &[], 200, &[("etag", "\"v1\"")], Ok(())),
        (
            "no-store",
            &[],
            200,
            &[("cache-control", "no-store, max-age=60")],
            Err(NotStored::Forbidden),
        ),
        (
            "private",
            &[],
            200,
            &[("cache-control", "private, max-age=60")],
            Err(NotStored::Forbidden),
        ),
        (
            "request no-store",
            &[("cache-control", "no-store")],
            200,
            &[("cache-control", "max-age=60")],
            Err(NotStored::Forbidden),
        ),
        (
            "authorization",
            &[("authorization", "Bearer x")],
            200,
            &[("cache-control", "max-age=60")],
            Err(NotStored::Forbidden),
        ),
        (
            "authorization, public",
            &[("authorization", "Bearer x")],
            200,
            &[("cache-control", "public, max-age=60")],
            Ok(()),
        ),
        (
            "set-cookie",
            &[],
            200,
            &[("cache-control", "max-age=60"), ("set-cookie", "s=1")],
            Err(NotStored::SetsCookie),
        ),
        (
            "partial",
            &[],
            206,
            &[("cache-control", "max-age=60")],
            Err(NotStored::Forbidden),
        ),
        (
            "server error",
            &[],
            500,
            &[("cache-control", "max-age=60")],
            Err(NotStored::Forbidden),
        ),
        ("nothing said", &[], 200, &[], Err(NotStored::Useless)),
        (
            "too large",
            &[],
            200,
            &[
                ("cache-control", "max-age=60"),
                ("content-length", "2000000"),
            ],
            Err(NotStored::TooLarge),
        ),
    ];
    for (case, rh, status, h, want) in cases {
        let mut s = store(64 * MIB);
        let got = s
            .insert(
                "shop.test",
                &req("GET", URL, rh),
                &resp(*status, h),
                Bytes::from_static(b"x"),
                at(0),
            )
            .map(|_| ());
        assert_eq!(got, *want, "{case}");
    }
}

#[test]
fn a_fresh_answer_is_a_hit_with_its_age_then_stale_with_validators() {
    let mut s = store(64 * MIB);
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("content-type", "image/png"),
        ],
    );
    s.insert(
        "shop.test",
        &get(URL),
        &r,
        Bytes::from_static(b"png"),
        at(0),
    )
    .expect("stored");
    match s.lookup(&get(URL), at(10)) {
        Lookup::Fresh(hit) => {
            assert_eq!(hit.body, ServedBody::Memory(Bytes::from_static(b"png")));
            assert_eq!(hit.head.headers[header::AGE], "10");
            assert_eq!(hit.ttl, 50);
            assert_eq!(hit.head.status, StatusCode::OK);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    // a HEAD is answered from the GET's answer
    assert!(is_fresh(&s.lookup(&req("HEAD", URL, &[]), at(10))));
    // after max-age: stale, asked again with If-None-Match
    match s.lookup(&get(URL), at(61)) {
        Lookup::Stale { request, .. } => {
            assert_eq!(request.headers[header::IF_NONE_MATCH], "\"v1\"")
        }
        other => panic!("expected stale, got {other:?}"),
    }
    // a request that asks for no cached answer
    assert!(!is_fresh(&s.lookup(
        &req("GET", URL, &[("cache-control", "no-cache")]),
        at(10)
    )));
    assert!(matches!(
        s.lookup(&get("http://shop.test/other.png"), at(10)),
        Lookup::UriMiss
    ));
}

#[test]
fn a_304_refreshes_the_stored_answer_and_a_200_does_not() {
    let mut s = store(64 * MIB);
    let r = resp(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    s.insert("shop.test", &get(URL), &r, Bytes::from_static(b"v1"), at(0))
        .expect("stored");
    let Lookup::Stale { entry, request } = s.lookup(&get(URL), at(100)) else {
        panic!("stale")
    };
    let changed = resp(200, &[("cache-control", "max-age=60"), ("etag", "\"v2\"")]);
    assert!(s.revalidated(entry, &request, &changed, at(100)).is_none());
    let same = resp(304, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    let served = s
        .revalidated(entry, &request, &same, at(100))
        .expect("not modified");
    assert_eq!(served.body, ServedBody::Memory(Bytes::from_static(b"v1")));
    assert_eq!(served.head.status, StatusCode::OK);
    // fresh again for another minute
    assert!(is_fresh(&s.lookup(&get(URL), at(150))));
    assert!(!is_fresh(&s.lookup(&get(URL), at(161))));
}

#[test]
fn vary_keeps_a_variant_per_selecting_header() {
    let mut s = store(64 * MIB);
    let r = resp(
        200,
        &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
    );
    let gz = req("GET", URL, &[("accept-encoding", "gzip")]);
    let br = req("GET", URL, &[("accept-encoding", "br")]);
    s.insert("shop.test", &gz, &r, Bytes::from_static(b"gz"), at(0))
        .expect("gz");
    assert!(matches!(s.lookup(&br, at(1)), Lookup::VaryMiss));
    s.insert("shop.test", &br, &r, Bytes::from_static(b"br"), at(1))
        .expect("br");
    for (r, want) in [(&gz, "gz"), (&br, "br")] {
        match s.lookup(r, at(2)) {
            Lookup::Fresh(hit) => assert_eq!(hit.body, ServedBody::Memory(Bytes::from(want))),
            other => panic!("{want}: {other:?}"),
        }
    }
    // storing gz again replaces its variant only
    s.insert("shop.test", &gz, &r, Bytes::from_static(b"gz2"), at(3))
        .expect("gz2");
    assert_eq!(s.len(), 2);
    // Vary: * never matches: not kept at all (even with a validator)
    let mut s = store(64 * MIB);
    let star = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("vary", "*"),
            ("etag", "\"s\""),
        ],
    );
    assert_eq!(
        s.insert("shop.test", &gz, &star, Bytes::from_static(b"x"), at(0)),
        Err(NotStored::Forbidden)
    );
    // one URL keeps at most a few variants, however many values its Vary header sees
    let mut s = store(64 * MIB);
    for i in 0..(MAX_VARIANTS + 5) {
        let v = format!("v{i}");
        let r = req("GET", URL, &[("accept-encoding", v.as_str())]);
        s.insert(
            "shop.test",
            &r,
            &resp(
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept-encoding")],
            ),
            Bytes::from_static(b"x"),
            at(0),
        )
        .expect("stored");
    }
    assert_eq!(s.len(), MAX_VARIANTS);
}

#[test]
fn memory_is_bounded_and_the_least_recently_used_goes_first() {
    let mut s = store(10_000);
    let r = resp(200, &[("cache-control", "max-age=600")]);
    let body = Bytes::from(vec![0u8; 3_000]);
    for i in 0..3 {
        s.insert(
            "shop.test",
            &get(&format!("http://shop.test/{i}")),
            &r,
            body.clone(),
            at(0),
        )
        .expect("stored");
    }
    // the first is used again: the second is now the oldest
    assert!(is_fresh(&s.lookup(&get("http://shop.test/0"), at(1))));
    s.insert("shop.test", &get("http://shop.test/3"), &r, body, at(2))
        .expect("stored");
    assert!(s.bytes() <= 10_000, "{}", s.bytes());
    assert!(is_fresh(&s.lookup(&get("http://shop.test/0"), at(3))));
    assert!(matches!(
        s.lookup(&get("http://shop.test/1"), at(3)),
        Lookup::UriMiss
    ));
    assert!(is_fresh(&s.lookup(&get("http://shop.test/3"), at(3))));
}

#[test]
fn a_revalidation_keeps_the_byte_count_true() {
    let mut s = store(64 * MIB);
    let long = "y".repeat(500);
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("x-h", long.as_str()),
        ],
    );
    s.insert("shop.test", &get(URL), &r, Bytes::from_static(b"v1"), at(0))
        .expect("stored");
    assert!(s.bytes() > 500);
    let Lookup::Stale { entry, request } = s.lookup(&get(URL), at(100)) else {
        panic!("stale")
    };
    // the 304 replaces the long header with a short one: the count follows
    let shorter = resp(
        304,
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("x-h", "short"),
        ],
    );
    s.revalidated(entry, &request, &shorter, at(100))
        .expect("not modified");
    assert!(s.bytes() < 500, "{}", s.bytes());
    s.purge(&Purge::All);
    assert_eq!(s.bytes(), 0);
}

#[test]
fn an_origin_cannot_overflow_the_clock() {
    let mut s = store(64 * MIB);
    let r = resp(
        200,
        &[
            ("cache-control", "max-age=18446744073709551615"),
            ("age", "18446744073709551615"),
            ("etag", "\"e\""),
        ],
    );
    s.insert("shop.test", &get(URL), &r, Bytes::from_static(b"x"), at(0))
        .expect("stored");
    let _ = s.lookup(&get(URL), at(10));
    let _ = s.lookup(&get(URL), at(1_000_000));
}

#[test]
fn purge_by_url_prefix_site_or_all() {
    let mut s = store(64 * MIB);
    let r = resp(200, &[("cache-control", "max-age=600")]);
    for (site, url) in [
        ("shop.test", "http://shop.test/img/a.png"),
        ("shop.test", "http://shop.test/img/b.png"),
        ("shop.test", "http://shop.test/menu.json"),
        ("menu.test", "http://menu.test/a.png"),
    ] {
        s.insert(site, &get(url), &r, Bytes::from_static(b"x"), at(0))
            .expect("stored");
    }
    assert_eq!(
        s.purge(&Purge::Url("http://shop.test/menu.json".into()))
            .entries,
        1
    );
    assert_eq!(
        s.purge(&Purge::Prefix("http://shop.test/img/".into()))
            .entries,
        2
    );
    assert_eq!(s.purge(&Purge::Site("MENU.test".into())).entries, 1);
    assert!(s.is_empty());
    s.insert("shop.test", &get(URL), &r, Bytes::from_static(b"x"), at(0))
        .expect("stored");
    let p = s.purge(&Purge::All);
    assert_eq!(p.entries, 1);
    assert!(p.bytes > 0);
    assert_eq!(s.bytes(), 0);
}

#[test]
fn a_stale_answer_is_served_without_the_origin_unless_it_forbids_it() {
    let mut s = store(64 * MIB);
    let ok = resp(200, &[("cache-control", "max-age=60, stale-if-error=100")]);
    s.insert("shop.test", &get(URL), &ok, Bytes::from_static(b"x"), at(0))
        .expect("stored");
    let Lookup::Stale { entry, .. } = s.lookup(&get(URL), at(90)) else {
        panic!("stale")
    };
    // no uplink: up to the venue's bound (an hour here)
    let served = s.stale(entry, at(90), false).expect("no uplink");
    assert_eq!(served.ttl, -30);
    assert_eq!(served.head.headers[header::AGE], "90");
    assert!(s.stale(entry, at(60 + 3_601), false).is_none());
    // the origin failed: its own stale-if-error
    assert!(s.stale(entry, at(150), true).is_some());
    assert!(s.stale(entry, at(161), true).is_none());
    let strict = resp(200, &[("cache-control", "max-age=60, must-revalidate")]);
    let u = "http://shop.test/strict";
    s.insert(
        "shop.test",
        &get(u),
        &strict,
        Bytes::from_static(b"x"),
        at(0),
    )
    .expect("stored");
    let Lookup::Stale { entry, .. } = s.lookup(&get(u), at(90)) else {
        panic!("stale")
    };
    assert!(s.stale(entry, at(90), false).is_none());
}

fn tiered(memory: u64, disk: u64) -> Store {
    Store::new(StoreConfig {
        memory_bytes: memory,
        disk_bytes: disk,
        max_object_bytes: MIB,
        stale_max: Duration::from_secs(3600),
    })
}

/// The names the ops write, and those they delete.
fn written_and_deleted(ops: &[DiskOp]) -> (Vec<String>, Vec<String>) {
    let mut w = Vec::new();
    let mut d = Vec::new();
    for op in ops {
        match op {
            DiskOp::Write { name, .. } => w.push(name.clone()),
            DiskOp::Delete { name } => d.push(name.clone()),
            DiskOp::WriteHead { .. } => {}
        }
    }
    (w, d)
}

fn body_of(l: Lookup) -> ServedBody {
    match l {
        Lookup::Fresh(s) => s.body,
        other => panic!("not fresh: {other:?}"),
    }
}

#[test]
fn the_disk_tier_keeps_what_memory_lets_go_and_gives_it_back() {
    let mut s = tiered(10_000, 100_000);
    let r = resp(200, &[("cache-control", "max-age=600")]);
    let body = |i: u8| Bytes::from(vec![i; 3_000]);
    for i in 0..4u8 {
        s.insert(
            "shop.test",
            &get(&format!("http://shop.test/{i}")),
            &r,
            body(i),
            at(0),
        )
        .expect("stored");
    }
    // every answer is written through; none is deleted
    let (w, d) = written_and_deleted(&s.take_ops());
    assert_eq!((w.len(), d.len()), (4, 0));
    assert!(s.bytes() <= 10_000 && s.disk_bytes() > 12_000);
    // the oldest left memory but is still served: from disk
    let ServedBody::Disk { name, len } = body_of(s.lookup(&get("http://shop.test/0"), at(1)))
    else {
        panic!("from disk")
    };
    assert_eq!((name.as_str(), len), (w[0].as_str(), 3_000));
    let Lookup::Fresh(hit) = s.lookup(&get("http://shop.test/0"), at(1)) else {
        panic!("fresh")
    };
    // read back, it is in memory again, and another body leaves memory for disk
    s.promote(hit.entry, &name, body(0));
    assert_eq!(
        body_of(s.lookup(&get("http://shop.test/0"), at(2))),
        ServedBody::Memory(body(0))
    );
    assert!(s.bytes() <= 10_000);
    assert!(matches!(
        body_of(s.lookup(&get("http://shop.test/1"), at(3))),
        ServedBody::Disk { .. }
    ));
    // a body of another length is not taken for it
    let Lookup::Fresh(hit) = s.lookup(&get("http://shop.test/1"), at(3)) else {
        panic!("fresh")
    };
    s.promote(hit.entry, &w[1], Bytes::from_static(b"short"));
    assert!(matches!(
        body_of(s.lookup(&get("http://shop.test/1"), at(3))),
        ServedBody::Disk { .. }
    ));
    // a copy that cannot be read is forgotten, and its answer with it
    s.disk_lost(&w[1]);
    assert!(matches!(
        s.lookup(&get("http://shop.test/1"), at(4)),
        Lookup::UriMiss
    ));
    // a purge deletes the disk copies
    s.take_ops();
    let p = s.purge(&Purge::All);
    let (_, d) = written_and_deleted(&s.take_ops());
    assert_eq!((p.entries, d.len()), (3, 3));
    assert_eq!((s.bytes(), s.disk_bytes()), (0, 0));
}

#[test]
fn the_disk_tier_is_bounded_and_its_oldest_copy_goes_first() {
    let mut s = tiered(100_000, 10_000);
    let r = resp(200, &[("cache-control", "max-age=600")]);
    for i in 0..4 {
        s.insert(
            "shop.test",
            &get(&format!("http://shop.test/{i}")),
            &r,
            Bytes::from(vec![0u8; 3_000]),
            at(i),
        )
        .expect("stored");
    }
    let (w, d) = written_and_deleted(&s.take_ops());
    assert_eq!(d, [w[0].clone()]);
    assert!(s.disk_bytes() <= 10_000);
    // memory still has it
    assert!(matches!(
        body_of(s.lookup(&get("http://shop.test/0"), at(5))),
        ServedBody::Memory(_)
    ));
    // an answer larger than the whole disk tier is kept in memory only
    let mut s = tiered(100_000, 2_000);
    s.insert(
        "shop.test",
        &get(URL),
        &r,
        Bytes::from(vec![0u8; 3_000]),
        at(0),
    )
    .expect("stored");
    assert!(s.take_ops().is_empty());
}

#[test]
fn answers_read_back_after_a_restart_follow_the_same_rules() {
    let mut s = tiered(100_000, 100_000);
    let fresh = resp(
        200,
        &[
            ("cache-control", "max-age=600"),
            ("vary", "accept-language"),
        ],
    );
    let de = req(
        "GET",
        URL,
        &[
            ("host", "shop.test"),
            ("accept-language", "de"),
            ("cookie", "id=7"),
        ],
    );
    s.insert(
        "shop.test",
        &de,
        &fresh,
        Bytes::from_static(b"hallo"),
        at(0),
    )
    .expect("stored");
    let short = resp(200, &[("cache-control", "max-age=1")]);
    let s_req = req("GET", "http://shop.test/s", &[("host", "shop.test")]);
    s.insert("shop.test", &s_req, &short, Bytes::from_static(b"s"), at(0))
        .expect("stored");
    let records: Vec<(String, Record)> = s
        .take_ops()
        .into_iter()
        .filter_map(|op| match op {
            DiskOp::Write { name, head, .. } => Some((name, Record::decode(&head).unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 2);
    // a new process: the same records, read back 100 s later
    let mut s = tiered(100_000, 100_000);
    for (name, rec) in records.clone() {
        s.restore(&name, rec, at(100)).expect("restored");
    }
    assert!(s.bytes() < 2_000, "bodies stay on disk until asked for");
    let de_again = req(
        "GET",
        URL,
        &[("host", "shop.test"), ("accept-language", "de")],
    );
    assert!(matches!(
        body_of(s.lookup(&de_again, at(100))),
        ServedBody::Disk { len: 5, .. }
    ));
    let fr = req(
        "GET",
        URL,
        &[("host", "shop.test"), ("accept-language", "fr")],
    );
    assert!(matches!(s.lookup(&fr, at(100)), Lookup::VaryMiss));
    // max-age=1, 100 s old: stale, still servable with no uplink (within stale_max)
    let Lookup::Stale { entry, .. } = s.lookup(&s_req, at(100)) else {
        panic!("stale")
    };
    assert!(s.stale(entry, at(100), false).is_some());
    // read back two hours later, past stale_max and with no validator: refused
    let mut s = tiered(100_000, 100_000);
    let (name, rec) = records[1].clone();
    assert_eq!(s.restore(&name, rec, at(7200)), Err(NotStored::Useless));
    // without a disk tier nothing is read back
    let mut s = tiered(100_000, 0);
    let (name, rec) = records[0].clone();
    assert!(s.restore(&name, rec, at(100)).is_err());
}

#[test]
fn a_revalidation_rewrites_the_disk_copy_head() {
    let mut s = tiered(100_000, 100_000);
    let r = resp(200, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    s.insert("shop.test", &get(URL), &r, Bytes::from_static(b"v1"), at(0))
        .expect("stored");
    s.take_ops();
    let Lookup::Stale { entry, request } = s.lookup(&get(URL), at(100)) else {
        panic!("stale")
    };
    let not_modified = resp(304, &[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
    s.revalidated(entry, &request, &not_modified, at(100))
        .expect("not modified");
    let ops = s.take_ops();
    let [DiskOp::WriteHead { head, .. }] = ops.as_slice() else {
        panic!("{ops:?}")
    };
    assert_eq!(Record::decode(head).unwrap().at, at(100));
}

#[test]
fn heads_of_answers_on_disk_do_not_push_the_newest_bodies_out_of_memory() {
    let mut s = tiered(10_000, 10 * MIB);
    let r = resp(200, &[("cache-control", "max-age=600")]);
    for i in 0..60 {
        s.insert(
            "shop.test",
            &get(&format!("http://shop.test/{i}")),
            &r,
            Bytes::from(vec![0u8; 1_000]),
            at(0),
        )
        .expect("stored");
    }
    // sixty heads are more than the memory bound: they are the index's, not memory's
    assert!(s.index_bytes() > 10_000, "{}", s.index_bytes());
    assert!(s.bytes() <= 10_000);
    assert!(matches!(
        body_of(s.lookup(&get("http://shop.test/59"), at(1))),
        ServedBody::Memory(_)
    ));
    assert!(matches!(
        body_of(s.lookup(&get("http://shop.test/0"), at(1))),
        ServedBody::Disk { .. }
    ));
    s.purge(&Purge::All);
    assert_eq!((s.bytes(), s.index_bytes(), s.disk_bytes()), (0, 0, 0));
}
