//! The JSON answers of the relay's own bid sinks (the auction, JetStream): sent to the
//! gateway, and kept against the bid's key when the request holds its claim.

use crate::server::{replay, Stream};
use crate::session::{Outcome, Publisher};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};

/// Headers of a sink's answer: JSON, never cached.
fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h
}

/// Sends `status` with the JSON `body`; keeps it for the key when `publisher` is given
/// (copies and replays get the same answer). `duplicate` marks an answer to a copy.
pub(crate) async fn answer(
    stream: &mut Stream,
    publisher: Option<Publisher>,
    status: StatusCode,
    body: Bytes,
    duplicate: bool,
) -> StatusCode {
    if let Some(p) = publisher {
        p.answer(status, json_headers(), body.clone()).await;
    }
    let o = Outcome::Answer {
        status,
        headers: json_headers(),
        body,
    };
    replay(stream, &o, duplicate).await
}
