//! The check-in desk: `POST /checkins` on the gateway. The token is verified with the
//! organizer's public key alone (no uplink needed), the register decides replays and double
//! entries, the check-in is journaled before the device hears "admitted", and, when
//! `[checkin] sync_url` is set, a record of it goes to the organizer through the relay
//! whenever links allow (the bid path's outbox: journaled, sent again until answered).
//!
//! The device sends the token as the body (text), or JSON `{"token": ..., "gate": ...}`;
//! `?gate=` names the gate too. Answers are JSON: `200 {"result":"admitted", ...}`, or a
//! refusal with its reason: `400` malformed, `408` timeout (the body stalled), `413`
//! too_large, `403` forged / wrong event / not yet valid /
//! expired / revoked by the organizer (`[checkin] revoked`) / the event is over (`[event]
//! end`), `409` replayed / double entry, `503` the journal failed.

use crate::config::GatewayConfig;
use crate::event::Event;
use crate::proxy::{full, synthetic, Body, State};
use crate::revocations::{InForce, LoadError};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use ledger::checkin::Refused;
use ledger::record::{Accepted, CheckedIn, Kind};
use ledger::revocations::Revocations;
use ledger::token::{TokenError, Verifier};
use std::sync::Arc;

/// Largest check-in request body.
const MAX_BODY: usize = 4096;

/// The gateway's check-in settings, ready to use.
#[derive(Debug)]
pub(crate) struct Desk {
    verifier: Verifier,
    event: String,
    reentry: bool,
    leeway_s: u64,
    sync_url: Option<String>,
    /// `[event]`: no check-in from its end on.
    closes: Option<Event>,
    /// `[checkin] revoked`: the organizer's voided tokens.
    revoked: Arc<InForce>,
}

impl Desk {
    /// The desk of a config; `None` when check-in is off (or the key does not parse,
    /// which config validation reports). Its revocation list is read now (a bad line is an
    /// error naming the file and the line) and watched while the desk is in use.
    pub(crate) fn new(cfg: &GatewayConfig) -> Result<Option<Self>, LoadError> {
        let ci = &cfg.checkin;
        let Some(verifier) = ci.public_key.as_deref().and_then(Verifier::from_base64) else {
            return Ok(None);
        };
        let seen = ci.revoked.as_deref().map(tunnel_io::watched::version);
        let revoked = Arc::new(InForce::new(match &ci.revoked {
            Some(path) => crate::revocations::load(path)?,
            None => Revocations::default(),
        }));
        if let (Some(path), Some(seen)) = (&ci.revoked, seen) {
            tokio::spawn(crate::revocations::watch(
                path.clone(),
                seen,
                Arc::downgrade(&revoked),
            ));
        }
        Ok(Some(Self {
            verifier,
            event: cfg.checkin_event().to_owned(),
            reentry: ci.reentry,
            leeway_s: ci.leeway_s,
            sync_url: ci.sync_url.clone(),
            closes: cfg.event(),
            revoked,
        }))
    }
}

/// `POST /checkins`.
pub(crate) async fn serve(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let Some(desk) = &state.checkin else {
        return synthetic(
            StatusCode::NOT_FOUND,
            "check-in is off on this gateway (set [checkin] public_key and event)",
        );
    };
    if req.method() != Method::POST {
        let mut r = synthetic(StatusCode::METHOD_NOT_ALLOWED, "use POST with the token");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let query_gate = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("gate=")))
        .map(str::to_owned);
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body =
        match crate::proxy::read_whole(req.into_body(), MAX_BODY as u64, state.body_idle).await {
            Ok(b) => b,
            Err(e) => {
                use crate::proxy::whole_body::WholeBodyError;
                use crate::stripe::BodyReadError;
                // a scanner whose body stalled or was too long is told so, not "malformed"
                let code = match &e {
                    WholeBodyError::OverLimit(_) => "too_large",
                    WholeBodyError::Device(BodyReadError::Idle(_)) => "timeout",
                    WholeBodyError::Device(BodyReadError::Broken(_)) => "malformed",
                };
                return refusal(e.status(), code, &e.to_string());
            }
        };
    let (token, gate) = match parse(&body, json) {
        Ok(t) => t,
        Err(why) => return refusal(StatusCode::BAD_REQUEST, "malformed", why),
    };
    let gate = gate.or(query_gate).unwrap_or_default();
    if gate.len() > 64 || gate.chars().any(char::is_control) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "malformed",
            "gate: at most 64 characters",
        );
    }
    let now_s = crate::clock::wall_us() / 1_000_000;
    if let Some(ev) = desk.closes.as_ref().filter(|e| !e.admits_at(now_s as i64)) {
        return refusal(
            StatusCode::FORBIDDEN,
            "event_over",
            &format!(
                "the event {} ended at {}: check-in is closed",
                ev.slug,
                ev.local(ev.end_s)
            ),
        );
    }
    let grant = match desk
        .verifier
        .verify(&token, &desk.event, now_s, desk.leeway_s)
    {
        Ok(g) => g,
        Err(e) => return refused(&Refused::Token(e)),
    };
    // voided by the organizer: after the signature (a forged token is "forged"), before the
    // register (a voided ticket is never let in, not even again)
    if let Some(v) = desk.revoked.get().check(&grant) {
        return refused(&Refused::Revoked(v));
    }
    let sync = |c: &CheckedIn| {
        desk.sync_url
            .as_ref()
            .map(|url| sync_request(state, url, c))
    };
    let w = match state.bids.check_in(&grant, &gate, desk.reentry, sync) {
        Ok(x) => x,
        Err(r) => return refused(&r),
    };
    let crate::bids::CheckinWrite {
        written,
        record,
        to_send,
    } = w;
    if let Err(e) = written.await {
        state.bids.check_in_failed(&record, to_send.as_deref(), &e);
        metrics::counter!("canopy_gateway_checkins_total", "result" => "not_journaled")
            .increment(1);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_journaled",
            &format!("the check-in was not recorded: {e}"),
        );
    }
    if let Some(r) = to_send {
        let st = state.clone();
        tokio::spawn(async move {
            let key = r.key.clone();
            let d = crate::bid_path::deliver(&st, r).await;
            st.bids.settle(&key, d);
        });
    }
    let result = if record.reentry {
        "reentry"
    } else {
        "admitted"
    };
    metrics::counter!("canopy_gateway_checkins_total", "result" => result).increment(1);
    let body = serde_json::json!({
        "result": result,
        "attendee": grant.attendee,
        "event": grant.event,
        "token_id": grant.id,
        "expires": grant.expires,
        "gate": gate,
    });
    json_response(StatusCode::OK, &body)
}

/// The token and the gate of a request body.
fn parse(body: &Bytes, json: bool) -> Result<(String, Option<String>), &'static str> {
    if json {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| "the JSON body does not parse")?;
        let token = v["token"]
            .as_str()
            .ok_or("the JSON body has no \"token\" string")?;
        return Ok((token.to_owned(), v["gate"].as_str().map(str::to_owned)));
    }
    let t = std::str::from_utf8(body).map_err(|_| "the token is not text")?;
    Ok((t.trim().to_owned(), None))
}

/// What the organizer's system gets for a check-in.
fn sync_request(state: &State, url: &str, c: &CheckedIn) -> Accepted {
    let body = serde_json::json!({
        "event": c.event,
        "attendee": c.attendee,
        "token_id": c.token_id,
        "at_us": c.at_us,
        "gate": c.gate,
        "reentry": c.reentry,
        "gateway": state.name,
    })
    .to_string()
    .into_bytes();
    let clock = &state.bond.clock;
    Accepted {
        key: format!("checkin-{}-{}", c.token_id, c.at_us),
        kind: Kind::Checkin,
        edge_us: c.at_us.saturating_add_signed(clock.offset_ms() * 1000),
        clock_known: clock.known(),
        fingerprint: ledger::fingerprint("POST", url, &body),
        method: "POST".into(),
        target: url.to_owned(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body,
    }
}

fn refused(r: &Refused) -> Response<Body> {
    let status = match r {
        Refused::Token(TokenError::Malformed(_)) => StatusCode::BAD_REQUEST,
        Refused::Token(_) | Refused::Revoked(_) => StatusCode::FORBIDDEN,
        Refused::Replayed { .. } | Refused::AlreadyInside { .. } => StatusCode::CONFLICT,
        Refused::Full => StatusCode::SERVICE_UNAVAILABLE,
    };
    refusal(status, r.code(), &r.to_string())
}

fn refusal(status: StatusCode, code: &'static str, detail: &str) -> Response<Body> {
    metrics::counter!("canopy_gateway_checkins_total", "result" => code).increment(1);
    json_response(
        status,
        &serde_json::json!({ "result": "refused", "reason": code, "detail": detail }),
    )
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
