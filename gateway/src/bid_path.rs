//! The bid path: a bid or check-in from a device is given its key and edge time, journaled,
//! and then delivered through the bond, answered with the origin's answer when that comes
//! within the deadline, else with `202 Accepted` and a receipt; `GET /bids/<key>` tells
//! what became of it. Sending again is always safe here: the relay answers a key it has
//! seen with the first answer, and refuses a key that stands for another request.

use crate::bids::Delivered;
use crate::bond::PathSignal;
use crate::proxy::{
    attempt_on, body_limit_exceeded, full, synthetic, tunnel_headers, Body, OnDeath, Outgoing,
    ReqBody, Route, State,
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use ledger::outbox::{Admit, Status, View};
use ledger::record::{Accepted, Delivery, Kind, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tunnel::scheduler::{PathId, Unit};
use tunnel::{hop, wire, TrafficClass};
use tunnel_io::H3Body;

/// Bytes of an answer kept with its outcome (and given to a device that asks again).
const ANSWER_KEEP: usize = 1 << 20;
/// How long a copy waits for its answer on a silent path (the path's connection is closed
/// after at most a few seconds of silence anyway, which ends the copy sooner).
const HOLD_ON_SILENCE: Duration = Duration::from_secs(5);
/// Copies of one delivery a path may take (on new connections after a failed one).
const COPIES_PER_PATH: usize = 2;

fn kind_of(class: TrafficClass) -> Kind {
    match class {
        TrafficClass::Checkin => Kind::Checkin,
        _ => Kind::Bid,
    }
}

fn class_of(kind: Kind) -> TrafficClass {
    match kind {
        Kind::Bid => TrafficClass::Bid,
        Kind::Checkin => TrafficClass::Checkin,
    }
}

/// A bid or check-in from a device.
pub(crate) async fn journaled(
    state: &Arc<State>,
    req: Request<Incoming>,
    route: Route,
) -> Response<Body> {
    let limit = crate::proxy::REPLAY_MAX.min(state.max_body.unwrap_or(u64::MAX));
    if hop::declared_length(req.headers()).is_some_and(|n| n > limit) {
        return body_limit_exceeded(limit);
    }
    let headers = tunnel_headers(state, req.headers(), req.version(), route.class);
    let Some(key) = headers
        .get(wire::HDR_IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return synthetic(StatusCode::INTERNAL_SERVER_ERROR, "no idempotency key");
    };
    let method = req.method().clone();
    let body = match crate::proxy::read_whole(req.into_body(), limit, state.body_idle).await {
        Ok(b) => b,
        Err(e) => return e.answer(),
    };
    let target = route.target.to_string();
    let clock = &state.bond.clock;
    let edge_us = crate::clock::wall_us().saturating_add_signed(clock.offset_ms() * 1000);
    let request = Accepted {
        key: key.clone(),
        kind: kind_of(route.class),
        edge_us,
        clock_known: clock.known(),
        fingerprint: ledger::fingerprint(method.as_str(), &target, &body),
        method: method.to_string(),
        target,
        headers: header_pairs(&headers, &[wire::HDR_IDEMPOTENCY_KEY]),
        body: body.to_vec(),
    };
    let bids = &state.bids;
    let until = tokio::time::Instant::now() + bids.deadline;
    let (admit, written) = bids.admit(request);
    let status = match admit {
        Admit::New(r) => {
            if let Some(w) = written {
                if let Err(e) = w.await {
                    bids.abandon(&key, &e);
                    return synthetic(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("the bid was not taken: {e}"),
                    );
                }
            }
            metrics::counter!("canopy_gateway_bids_total", "result" => "accepted").increment(1);
            let st = state.clone();
            tokio::spawn(async move {
                let key = r.key.clone();
                let d = deliver(&st, r).await;
                st.bids.settle(&key, d);
            });
            bids.wait(&key, until).await
        }
        Admit::Again(Status::Sending) => {
            metrics::counter!("canopy_gateway_bids_total", "result" => "again").increment(1);
            bids.wait(&key, until).await
        }
        Admit::Again(s) => {
            metrics::counter!("canopy_gateway_bids_total", "result" => "again").increment(1);
            Some(s)
        }
        Admit::Conflict => {
            metrics::counter!("canopy_gateway_bids_total", "result" => "key_reused").increment(1);
            return with_key(
                synthetic(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used for another request (method, target or body differ)",
                ),
                &key,
            );
        }
        Admit::Full => {
            metrics::counter!("canopy_gateway_bids_total", "result" => "full").increment(1);
            return synthetic(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many bids wait for an uplink; try again shortly",
            );
        }
    };
    match status {
        Some(Status::Done(o)) => answer(&o, &key),
        _ => match bids.view(&key) {
            Some(v) => {
                metrics::counter!("canopy_gateway_bids_total", "result" => "queued").increment(1);
                receipt(&v)
            }
            None => synthetic(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the bid was lost track of",
            ),
        },
    }
}

/// One delivery attempt of a journaled request: on every path the bond offers (copies on
/// several for bids and check-ins), until one answers or none is left.
pub(crate) async fn deliver(state: &State, r: Arc<Accepted>) -> Delivered {
    let class = class_of(r.kind);
    let mut headers = HeaderMap::new();
    append_pairs(&mut headers, &r.headers);
    let fixed = [
        (wire::HDR_IDEMPOTENCY_KEY, r.key.clone()),
        (wire::HDR_EDGE_TIME, r.edge_us.to_string()),
        (wire::HDR_FINGERPRINT, r.fingerprint.hex()),
    ];
    for (n, v) in fixed {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(n, v);
        }
    }
    let (Ok(method), Ok(uri)) = (r.method.parse::<Method>(), r.target.parse::<http::Uri>()) else {
        return Delivered::Done(refused(
            &r.key,
            StatusCode::BAD_REQUEST,
            "the journaled request does not parse",
        ));
    };
    let out = Arc::new(Outgoing {
        method,
        uri,
        headers,
        class,
    });
    let unit = Unit {
        class,
        up_bytes: r.body.len() as u64,
        down_bytes: 0,
    };
    let body = Bytes::from(r.body.clone());
    // Copies go on the paths the bond offers, and on each path that it offers later while
    // no answer has come: a copy whose path goes silent is held (a collapsed link's queue
    // still delivers it), while the next path offered takes another. Whatever reached the
    // relay is answered from its duplicate table, so every copy is safe.
    let paths = state.bond.paths();
    // a change of any path's signal (one silent, another back) is when a copy may be due
    let mut signals: Vec<_> = paths.iter().map(|p| p.watch()).collect();
    // a path whose copy failed, with the connection the copy went on: a new connection
    // may take another, up to COPIES_PER_PATH in all (a link that connects and goes
    // silent again must not keep the delivery, and the replay loop behind it, for ever)
    let mut failed: Vec<(PathId, Option<u64>)> = Vec::new();
    let mut carrying: Vec<PathId> = Vec::new();
    let mut attempts = futures_util::stream::FuturesUnordered::new();
    let answer = loop {
        for s in &mut signals {
            s.borrow_and_update();
        }
        let excluded: Vec<PathId> = paths
            .iter()
            .map(|p| p.id)
            .filter(|&p| {
                let now = connection_of(&paths[p]);
                let tries: Vec<_> = failed.iter().filter(|(f, _)| *f == p).collect();
                tries.len() >= COPIES_PER_PATH || tries.iter().any(|(_, conn)| *conn == now)
            })
            .collect();
        let mut offered = state.bond.place(&unit, &excluded).paths;
        // as many copies on paths that carry traffic as the policy places (two): another
        // path takes one only when a copy's path went silent or out of use
        let mut live = carrying.iter().filter(|p| paths[**p].is_usable()).count();
        let mut wanted = offered.len();
        if offered.is_empty() {
            // No path is up: every connected one takes a copy (backup links too, as bids
            // may always use them). A silent path may only be slow (a collapsed link's
            // queue drains; measured in `cargo bench --bench lowbw`: a bid that found
            // both paths silent waited 1.4 s for one to rejoin), and a cut one ends the
            // copy when its connection is given up.
            offered = state.bond.connected_for(class, &excluded);
            wanted = offered.len();
            live = 0;
        }
        for p in offered {
            if live < wanted && !carrying.contains(&p) {
                live += 1;
                carrying.push(p);
                let copy = ReqBody::Kept(body.clone());
                let out = out.clone();
                let unit = &unit;
                let conn = connection_of(&paths[p]);
                attempts.push(async move {
                    let on_death = OnDeath::Hold(HOLD_ON_SILENCE);
                    let res = attempt_on(state, out, copy, p, unit, u64::MAX, on_death).await;
                    (p, conn, res)
                });
            }
        }
        if attempts.is_empty() {
            return Delivered::Undelivered(state.bond.why_not(class));
        }
        tokio::select! {
            Some((p, conn, res)) = futures_util::StreamExt::next(&mut attempts) => match res {
                Ok(a) => break a,
                Err(e) => {
                    tracing::debug!(path = p, reason = %e.reason, "bid copy failed");
                    carrying.retain(|c| *c != p);
                    failed.push((p, conn));
                }
            },
            () = any_signal_change(&mut signals) => {}
        }
    };
    // the other copies end here, not after the answer's body
    drop(attempts);
    read_answer(&r.key, answer).await
}

/// The connection a path has now (its uplink's connection count; quinn's `stable_id`
/// is an address, which a new connection may get again).
fn connection_of(path: &crate::bond::Path) -> Option<u64> {
    path.connected().map(|l| l.generation)
}

/// Resolves when any of the paths' signals changes (never, if none can).
async fn any_signal_change(signals: &mut [tokio::sync::watch::Receiver<PathSignal>]) {
    let mut changes: futures_util::stream::FuturesUnordered<_> =
        signals.iter_mut().map(|s| s.changed()).collect();
    while let Some(r) = futures_util::StreamExt::next(&mut changes).await {
        if r.is_ok() {
            return;
        }
    }
    std::future::pending::<()>().await
}

async fn read_answer(key: &str, a: crate::proxy::Answer) -> Delivered {
    let mut parts = a.head;
    if let Some(reason) = wire::reason_of(&parts.headers).map(str::to_owned) {
        // the relay's own answer: not reached the origin (try again later), or refused
        return match parts.status {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Delivered::Undelivered(reason),
            s => Delivered::Done(refused(key, s, &reason)),
        };
    }
    a.flow
        .expect_down(hop::declared_length(&parts.headers).unwrap_or(0));
    let mut body = H3Body::new(a.recv, None, Some(a.flow.down_counter()));
    let mut kept = Vec::new();
    // a replayed answer the relay kept only the start of
    let mut truncated = parts.headers.contains_key(wire::HDR_ANSWER_TRUNCATED);
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    let room = ANSWER_KEEP.saturating_sub(kept.len());
                    truncated |= d.len() > room;
                    kept.extend_from_slice(&d[..d.len().min(room)]);
                }
            }
            // the answer's head came: the origin has the request; what it said is cut
            Some(Err(e)) => {
                tracing::debug!(key, error = %e, "answer body cut short");
                truncated = true;
                break;
            }
        }
    }
    hop::strip_hop_by_hop(&mut parts.headers);
    hop::strip_private(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut headers = header_pairs(&parts.headers, &[]);
    if truncated {
        headers.push((wire::HDR_ANSWER_TRUNCATED.into(), b"1".to_vec()));
    }
    Delivered::Done(Outcome {
        key: key.to_owned(),
        at_us: crate::clock::wall_us(),
        result: Delivery::Answered {
            status: parts.status.as_u16(),
            headers,
            body: kept,
        },
    })
}

/// Headers as the journal keeps them (names lower case), but `skip`.
fn header_pairs(headers: &HeaderMap, skip: &[&str]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Appends headers the journal kept (any that no longer parse are left out).
fn append_pairs(to: &mut HeaderMap, pairs: &[(String, Vec<u8>)]) {
    for (n, v) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            to.append(n, v);
        }
    }
}

fn refused(key: &str, status: StatusCode, reason: &str) -> Outcome {
    Outcome {
        key: key.to_owned(),
        at_us: crate::clock::wall_us(),
        result: Delivery::Refused {
            status: status.as_u16(),
            reason: reason.to_owned(),
        },
    }
}

fn with_key(mut r: Response<Body>, key: &str) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(key) {
        r.headers_mut()
            .insert(HeaderName::from_static(wire::HDR_DEVICE_IDEMPOTENCY_KEY), v);
    }
    r
}

/// The device's answer from an outcome.
fn answer(o: &Outcome, key: &str) -> Response<Body> {
    match &o.result {
        Delivery::Answered {
            status,
            headers,
            body,
        } => {
            let mut r = Response::new(full(Bytes::from(body.clone())));
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            append_pairs(r.headers_mut(), headers);
            with_key(r, key)
        }
        Delivery::Refused { status, reason } => with_key(
            synthetic(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                reason,
            ),
            key,
        ),
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(format!("{v}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn view_json(v: &View) -> serde_json::Value {
    let mut j = serde_json::json!({
        "key": v.key,
        "kind": match v.kind { Kind::Bid => "bid", Kind::Checkin => "checkin" },
        "edge_time_us": v.edge_us,
        "location": format!("/bids/{}", percent_encode(&v.key)),
    });
    match &v.status {
        Status::Sending => j["status"] = "sending".into(),
        Status::Queued { attempts } => {
            j["status"] = "queued".into();
            j["attempts"] = (*attempts).into();
        }
        Status::Done(o) => match &o.result {
            Delivery::Answered { status, body, .. } => {
                j["status"] = "delivered".into();
                j["answer_status"] = (*status).into();
                if let Ok(text) = std::str::from_utf8(body) {
                    j["answer"] = text.into();
                }
            }
            Delivery::Refused { status, reason } => {
                j["status"] = "refused".into();
                j["answer_status"] = (*status).into();
                j["reason"] = reason.as_str().into();
            }
        },
    }
    j
}

/// `202 Accepted`: the request is journaled and will be delivered; where to ask.
fn receipt(v: &View) -> Response<Body> {
    let j = view_json(v);
    let mut r = json_response(StatusCode::ACCEPTED, &j);
    if let Ok(loc) = HeaderValue::from_str(&format!("/bids/{}", percent_encode(&v.key))) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    with_key(r, &v.key)
}

/// `GET /bids/<key>`: what became of a request.
pub(crate) fn status(state: &State, method: &Method, key: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = synthetic(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(key) = percent_decode(key) else {
        return synthetic(StatusCode::BAD_REQUEST, "malformed key");
    };
    match state.bids.view(&key) {
        Some(v) => json_response(StatusCode::OK, &view_json(&v)),
        None => synthetic(StatusCode::NOT_FOUND, "no bid or check-in with this key"),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_the_url() {
        for k in ["k-123", "a/b%c d", "cnp-00ff"] {
            assert_eq!(percent_decode(&percent_encode(k)).as_deref(), Some(k));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
