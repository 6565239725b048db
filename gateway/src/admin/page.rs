//! The status page on the admin listener: its static files built into the binary (no
//! data in them, so they are served without the token), the cameras' on-site LL-HLS under
//! `/live/` for its previews (same origin, with the token), and `GET /api/events`, the
//! server-sent events the page reads with the token: each second the status and the
//! history's seconds the page has not had yet (all of it first), and at once (within
//! 200 ms) when a link changes state.

use super::{history_after, status, AdminView, Answer};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tunnel_io::operator_http::OPERATOR_JS;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/page.js");
const STYLE: &str = include_str!("page/page.css");
/// hls.js (light build), for the cameras' previews: see `page/vendor/README.md`.
const HLS_JS: &str = include_str!("page/vendor/hls.light.min.js");

/// How often the page hears from the gateway at least.
const EVERY: Duration = Duration::from_secs(1);
/// How often the links are looked at between: a link that changes state is sent at once.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// What of the links, when it changes, is sent at once: each one's state and usability
/// (read from the bond, not from a whole status: it is looked at five times a second).
fn links_signature(view: &AdminView) -> Vec<(&'static str, bool)> {
    view.bond
        .paths()
        .iter()
        .map(|p| (p.status().health.as_str(), p.is_usable()))
        .collect()
}

/// A static file of the page, when `path` names one.
pub(super) fn asset(method: &Method, path: &str) -> Option<Answer> {
    let (body, kind) = match path {
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/operator.js" => (OPERATOR_JS, "text/javascript; charset=utf-8"),
        "/page.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/page.css" => (STYLE, "text/css; charset=utf-8"),
        "/hls.light.min.js" => (HLS_JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        return Some(super::not_allowed("GET"));
    }
    // the page runs only its own scripts and talks only to this listener
    let csp = "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; \
               worker-src 'self' blob:; frame-ancestors 'none'";
    let r = tunnel_io::operator_http::asset(body, kind, csp).map(super::infallible);
    Some(r)
}

/// `GET /live/...`: the cameras' on-site LL-HLS, as the proxy port serves it.
pub(super) async fn live<B>(view: &AdminView, req: &http::Request<B>) -> Option<Answer> {
    let rest = req.uri().path().strip_prefix("/live/")?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Some(super::not_allowed("GET"));
    }
    let served = match view.live.serve(rest, req.uri().query()).await {
        Ok(r) => media_io::hls_http::whole_for(req.version(), r).await,
        Err(e) => Err(e),
    };
    Some(match served {
        Ok(r) => r.map(|b| b.map_err(Into::into).boxed_unsync()),
        Err(e) => super::error(e.status(), &e.to_string()),
    })
}

/// One server-sent event carrying `v`.
fn event(name: &str, v: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

/// `GET /api/events`: the stream; it ends when the page goes (or with the connection's
/// own limit, and the page reconnects).
pub(super) fn events(view: Arc<AdminView>) -> Answer {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let mut since = 0;
        let mut sent: Option<(tokio::time::Instant, Vec<_>)> = None;
        let mut tick = tokio::time::interval(LOOK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sig = links_signature(&view);
            let due = sent
                .as_ref()
                .is_none_or(|(at, last)| at.elapsed() >= EVERY || *last != sig);
            if !due {
                continue;
            }
            // a wall clock that stepped back: the history starts again, for the page too
            let newest = view
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .newest();
            let reset = newest.is_some_and(|n| n < since);
            if reset {
                since = 0;
            }
            let st = status(&view);
            let (history, newest) = history_after(&view, since);
            since = newest;
            let v = serde_json::json!({ "status": st, "history": history, "reset": reset });
            if tx.send(event("status", &v)).await.is_err() {
                return;
            }
            sent = Some((tokio::time::Instant::now(), sig));
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(super::infallible(StreamBody::new(frames)));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
