//! The embedded auction's lots on the relay's operator listener (`[fleet] listen`, with its
//! bearer token): what an auctioneer needs while the sale runs.
//!
//! - `GET /api/lots`: every lot's standing; `GET /api/lots/<lot>`: one.
//! - `PUT /api/lots/<lot>` with `{"closes_at_unix": 1767225600}` (or `{"close_now": true}`):
//!   makes the lot, or moves its close while it is open (an extension, or the hammer on a
//!   lot there is: now, or just after the latest bid taken if a fast venue clock put it
//!   ahead); never to the past and never before a bid already taken (`ledger::auction`).
//!   Journaled before the answer: `201` made, `200` moved or unchanged (a retry), `404` the
//!   hammer on no lot, `409` refused by the auction's rules, `422` a malformed setting,
//!   `503` not recorded.

use crate::auction::{AuctionSink, SetLotError};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use ledger::auction::{LotChange, LotError};
use std::time::Duration;
use tunnel_io::admin_token::authorized;

/// Largest setting body.
const MAX_BODY: usize = 4 * 1024;
/// How long a setting's body may take to arrive.
const READ_WITHIN: Duration = Duration::from_secs(5);

type Answer = Response<Full<Bytes>>;

/// Whether `path` is the lots API's.
pub(crate) fn is_for(path: &str) -> bool {
    path == "/api/lots" || path.starts_with("/api/lots/")
}

/// Answers one request of the lots API (`auction`: None when the relay runs none).
pub(crate) async fn answer(
    auction: Option<&AuctionSink>,
    token: &str,
    req: Request<Incoming>,
) -> Answer {
    if !authorized(req.headers().get(header::AUTHORIZATION), token) {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({ "error": "the lots need Authorization: Bearer <the token in [fleet] token_file>" }),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"canopy fleet\""),
        );
        return r;
    }
    let Some(auction) = auction else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "this relay runs no auction ([auction] host)" }),
        );
    };
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let lot = path
        .strip_prefix("/api/lots/")
        .filter(|l| !l.is_empty())
        .map(str::to_owned);
    match (req.method().clone(), lot) {
        (Method::GET | Method::HEAD, None) => json(StatusCode::OK, auction.lots_json()),
        (Method::GET | Method::HEAD, Some(lot)) => match auction.lot_json(&lot) {
            Some(s) => json(StatusCode::OK, s),
            None => no_lot(&lot),
        },
        (Method::PUT, Some(lot)) => put(auction, &lot, req).await,
        (_, lot) => {
            let allow = if lot.is_some() {
                "GET, HEAD, PUT"
            } else {
                "GET, HEAD"
            };
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({ "error": format!("use {allow}") }),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
    }
}

/// `PUT /api/lots/<lot>`.
async fn put(auction: &AuctionSink, lot: &str, req: Request<Incoming>) -> Answer {
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let body = match tokio::time::timeout(READ_WITHIN, body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "error": format!("a lot's setting is at most {MAX_BODY} bytes") }),
            )
        }
        Err(_) => {
            return json(
                StatusCode::REQUEST_TIMEOUT,
                serde_json::json!({ "error": "the setting's body did not arrive" }),
            )
        }
    };
    let closes_at_us = match close_of(&body) {
        Ok(c) => c,
        Err(e) => {
            return json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({ "error": e }),
            )
        }
    };
    match auction.set_lot(lot, closes_at_us).await {
        Ok((change, standing)) => {
            let (status, result) = match change {
                LotChange::Created => (StatusCode::CREATED, "created"),
                LotChange::Moved { .. } => (StatusCode::OK, "moved"),
                LotChange::Same => (StatusCode::OK, "unchanged"),
            };
            metrics::counter!("canopy_relay_auction_lot_settings_total", "result" => result)
                .increment(1);
            json(
                status,
                serde_json::json!({ "result": result, "lot": standing }),
            )
        }
        Err(SetLotError::Refused(e)) => {
            let (status, reason) = match e {
                LotError::BadId => (StatusCode::UNPROCESSABLE_ENTITY, "bad_id"),
                LotError::InThePast { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "in_the_past"),
                LotError::Closed { .. } => (StatusCode::CONFLICT, "closed"),
                LotError::BidAfter { .. } => (StatusCode::CONFLICT, "bid_after"),
                LotError::TooMany => (StatusCode::CONFLICT, "too_many"),
            };
            metrics::counter!("canopy_relay_auction_lot_settings_total", "result" => reason)
                .increment(1);
            json(
                status,
                serde_json::json!({ "reason": reason, "detail": e.to_string() }),
            )
        }
        Err(e @ SetLotError::NotRecorded(_)) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": e.to_string() }),
        ),
        Err(SetLotError::UnknownLot) => no_lot(lot),
    }
}

fn no_lot(lot: &str) -> Answer {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "error": format!("no lot {lot:?}") }),
    )
}

/// The close a setting asks, µs since the Unix epoch (None: now, the hammer).
fn close_of(body: &[u8]) -> Result<Option<u64>, &'static str> {
    const SHAPE: &str =
        "a lot's setting is {\"closes_at_unix\": seconds since the Unix epoch} or {\"close_now\": true}";
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| SHAPE)?;
    match (&v["closes_at_unix"], &v["close_now"]) {
        (serde_json::Value::Null, serde_json::Value::Bool(true)) => Ok(None),
        (c, serde_json::Value::Null) => c
            .as_u64()
            .and_then(|s| s.checked_mul(1_000_000))
            .map(Some)
            .ok_or(SHAPE),
        _ => Err(SHAPE),
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Answer {
    tunnel_io::operator_http::json(status, format!("{v}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_names_a_close_or_the_hammer() {
        assert_eq!(
            close_of(br#"{"closes_at_unix": 1767225600}"#),
            Ok(Some(1_767_225_600_000_000))
        );
        assert_eq!(close_of(br#"{"close_now": true}"#), Ok(None));
        for bad in [
            &b"not json"[..],
            br#"{}"#,
            br#"{"closes_at_unix": -1}"#,
            br#"{"closes_at_unix": "soon"}"#,
            br#"{"closes_at_unix": 18446744073709551615}"#,
            br#"{"close_now": false}"#,
            br#"{"closes_at_unix": 1767225600, "close_now": true}"#,
        ] {
            assert!(close_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
