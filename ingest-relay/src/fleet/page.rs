//! `[fleet] listen`: the fleet page (its files hold no data and are served without the
//! token) and `GET /api/fleet[?hour=1]` (with `Authorization: Bearer <token>`, the token in
//! `[fleet] token_file`, made on first start); the auction's lots (`crate::auction_api`)
//! with the same token.

use super::FleetState;
use crate::auction::AuctionSink;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use std::sync::Arc;
use tracing::{debug, info};
use tunnel_io::admin_token::authorized;
use tunnel_io::operator_http::{asset, json, OPERATOR_JS};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/fleet.js");
const STYLE: &str = include_str!("page/fleet.css");

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 32;

type Answer = Response<Full<Bytes>>;

/// Serves the fleet view on `listener` (over TLS with `tls`) until the task is dropped.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    fleet: Arc<FleetState>,
    auction: Option<Arc<AuctionSink>>,
    relay: String,
    token: Arc<str>,
) {
    info!(addr = ?listener.local_addr().ok(), https = tls.is_some(), "fleet view listening");
    let relay: Arc<str> = relay.into();
    tunnel_io::operator_http::serve_tls(listener, tls, MAX_CONNECTIONS, move |peer, req| {
        let (fleet, auction, relay, token) =
            (fleet.clone(), auction.clone(), relay.clone(), token.clone());
        async move {
            let a = if crate::auction_api::is_for(req.uri().path()) {
                crate::auction_api::answer(auction.as_deref(), &token, req).await
            } else {
                answer(&fleet, &relay, &token, &req)
            };
            if a.status() == StatusCode::UNAUTHORIZED {
                debug!(%peer, "fleet: refused without the token");
            }
            a
        }
    })
    .await;
}

fn answer(fleet: &FleetState, relay: &str, token: &str, req: &Request<Incoming>) -> Answer {
    let path = req.uri().path();
    let file = match path {
        "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/operator.js" => Some((OPERATOR_JS, "text/javascript; charset=utf-8")),
        "/fleet.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/fleet.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Some((body, kind)) = file {
        return asset(body, kind, "default-src 'self'; frame-ancestors 'none'");
    }
    if path != "/api/fleet" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /, /api/fleet or /api/lots\n",
        );
    }
    if !authorized(req.headers().get(header::AUTHORIZATION), token) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "the fleet view needs Authorization: Bearer <the token in [fleet] token_file>\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"canopy fleet\""),
        );
        return r;
    }
    let with_hour = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "hour=1"));
    json(
        StatusCode::OK,
        format!("{}\n", fleet.view(relay, with_hour)),
    )
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
