//! The viewer side of the relay: the live streams (and their recordings) over HTTP/1.1
//! (plain, for a CDN or caching proxy in front; or TLS) and HTTP/3, to any player.
//!
//! Every answer carries CORS headers for the configured origins; HTTP/1.1 answers advertise
//! HTTP/3 with `Alt-Svc`. With a token key configured, `/live/` and `/rec/` need a signed
//! URL (`crate::viewer_token`). Refusals are synthetic responses with `canopy-reason`. A
//! viewer is served by its own task and reads shared parts; a slow or stalled one only
//! fills its own connection's buffers, never the ingest's.

use crate::error::Refusal;
use crate::viewer_token::{split_token, TokenKey};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use media_io::hls_http::{full, MediaBody, ServeError};
use media_io::relayed::Relayed;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{debug, info, warn, Instrument};

/// What every viewer connection shares.
pub(crate) struct Viewers {
    pub(crate) relayed: Arc<Relayed>,
    /// Counts each gateway's viewers for the fleet view.
    pub(crate) fleet: Arc<crate::fleet::FleetState>,
    pub(crate) cors: Vec<String>,
    pub(crate) token: Option<TokenKey>,
    /// `Alt-Svc` value when HTTP/3 is on.
    pub(crate) alt_svc: Option<HeaderValue>,
}

fn refusal(status: StatusCode, reason: &str) -> Response<MediaBody> {
    let r = Refusal::new(status, reason);
    let mut resp = Response::new(full(r.body()));
    *resp.status_mut() = status;
    *resp.headers_mut() = r.headers();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Viewers {
    /// Answers one viewer request.
    pub(crate) async fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        origin: Option<&HeaderValue>,
        peer: std::net::IpAddr,
    ) -> Response<MediaBody> {
        let allowed = origin.and_then(|o| {
            self.cors
                .iter()
                .any(|a| a == "*" || o.as_bytes().eq_ignore_ascii_case(a.as_bytes()))
                .then(|| {
                    if self.cors.iter().any(|a| a == "*") {
                        HeaderValue::from_static("*")
                    } else {
                        o.clone()
                    }
                })
        });
        let mut resp = match *method {
            Method::GET | Method::HEAD => self.get(uri).await,
            Method::OPTIONS => {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                );
                r
            }
            _ => {
                let mut r = refusal(StatusCode::METHOD_NOT_ALLOWED, "use GET");
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, OPTIONS"),
                );
                r
            }
        };
        let h = resp.headers_mut();
        if let Some(o) = allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(a) = &self.alt_svc {
            h.insert(header::ALT_SVC, a.clone());
        }
        if *method == Method::HEAD {
            *resp.body_mut() = full(Bytes::new());
        }
        let path = uri.path();
        let file = if path.ends_with(".m3u8") {
            "playlist"
        } else if path.contains("/part-") {
            "part"
        } else if path.contains("/seg-") {
            "segment"
        } else if path.contains("/init-") {
            "init"
        } else {
            "other"
        };
        if file == "playlist" && resp.status() == StatusCode::OK {
            if let Some(gateway) = path
                .strip_prefix("/live/")
                .and_then(|r| r.split('/').next())
            {
                self.fleet.viewer(gateway, peer);
            }
        }
        metrics::counter!("canopy_relay_viewer_requests_total", "file" => file, "status" => resp.status().as_str().to_owned())
            .increment(1);
        resp
    }

    async fn get(&self, uri: &http::Uri) -> Response<MediaBody> {
        let path = uri.path();
        let (token, query) = split_token(uri.query());
        let result = if let Some(rest) = path.strip_prefix("/live/") {
            match self.authorize(rest, token.as_deref()) {
                Ok(suffix) => self.relayed.serve(rest, query.as_deref(), &suffix).await,
                Err(e) => Err(e),
            }
        } else if let Some(rest) = path.strip_prefix("/rec/") {
            match self.authorize(rest, token.as_deref()) {
                Ok(_) => self.relayed.serve_recording(rest).await,
                Err(e) => Err(e),
            }
        } else if path == "/healthz" {
            Ok(Response::new(full("ok\n")))
        } else {
            Err(ServeError::NotFound("not found"))
        };
        match result {
            Ok(r) => r,
            Err(e) => refusal(e.status(), &e.to_string()),
        }
    }

    /// With a token key: checks the token for the stream `path` names (its first two
    /// segments, gateway and camera) and returns the URI suffix playlists carry.
    fn authorize(&self, path: &str, token: Option<&str>) -> Result<String, ServeError> {
        let Some(key) = &self.token else {
            return Ok(String::new());
        };
        let mut it = path.split('/');
        let (gw, cam) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        if gw.is_empty() || cam.is_empty() {
            // the listing names every stream: only with a token for none of them, never
            return Err(ServeError::Forbidden("a viewer token names one stream"));
        }
        key.check(&format!("{gw}/{cam}"), token, unix_now())
            .map_err(|e| match e {
                crate::viewer_token::TokenError::Missing => {
                    ServeError::Forbidden("this stream needs a viewer token")
                }
                crate::viewer_token::TokenError::Expired => {
                    ServeError::Forbidden("the viewer token has expired")
                }
                _ => ServeError::Forbidden("the viewer token is not valid for this stream"),
            })?;
        Ok(format!("?token={}", token.unwrap_or("")))
    }
}

/// Serves HTTP/1.1 viewers on `listener` (TLS with `tls`).
pub(crate) async fn serve_http1(
    listener: tokio::net::TcpListener,
    viewers: Arc<Viewers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    info!(addr = ?listener.local_addr().ok(), tls = tls.is_some(), "viewers (HTTP/1.1)");
    loop {
        let (tcp, peer) = tunnel_io::listen::accept(&listener).await;
        let (v, tls) = (viewers.clone(), tls.clone());
        tokio::spawn(
            async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let v = v.clone();
                    async move {
                        let origin = req.headers().get(header::ORIGIN).cloned();
                        let resp = v
                            .handle(req.method(), req.uri(), origin.as_ref(), peer.ip())
                            .await;
                        Ok::<_, std::convert::Infallible>(
                            match media_io::hls_http::whole_for(req.version(), resp).await {
                                Ok(r) => r,
                                Err(e) => refusal(e.status(), &e.to_string()),
                            },
                        )
                    }
                });
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .max_buf_size(64 * 1024);
                let r = match tls {
                    Some(acc) => match tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acc.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await
                        }
                        _ => return,
                    },
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await
                    }
                };
                if let Err(e) = r {
                    debug!(error = %e, "viewer connection ended");
                }
            }
            .instrument(tracing::debug_span!("viewer", %peer)),
        );
    }
}

/// Serves HTTP/3 viewers on `endpoint`.
pub(crate) async fn serve_h3(endpoint: quinn::Endpoint, viewers: Arc<Viewers>) {
    info!(addr = ?endpoint.local_addr().ok(), "viewers (HTTP/3)");
    while let Some(incoming) = endpoint.accept().await {
        let v = viewers.clone();
        let remote = incoming.remote_address();
        tokio::spawn(
            async move {
                let Ok(conn) = incoming.await else { return };
                let h3 = h3::server::builder()
                    .max_field_section_size(16 * 1024)
                    .build::<_, Bytes>(tunnel_io::quic::Connection::new(conn, false))
                    .await;
                let mut h3 = match h3 {
                    Ok(h) => h,
                    Err(e) => {
                        debug!(error = %e, "viewer HTTP/3 setup failed");
                        return;
                    }
                };
                loop {
                    match h3.accept().await {
                        Ok(Some(resolver)) => {
                            let v = v.clone();
                            tokio::spawn(async move {
                                let Ok((req, mut stream)) = resolver.resolve_request().await else {
                                    return;
                                };
                                let origin = req.headers().get(header::ORIGIN).cloned();
                                let resp = v
                                    .handle(req.method(), req.uri(), origin.as_ref(), remote.ip())
                                    .await;
                                let (parts, mut body) = resp.into_parts();
                                if stream
                                    .send_response(Response::from_parts(parts, ()))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                                while let Some(frame) = body.frame().await {
                                    let Ok(frame) = frame else {
                                        // a part given up before it was whole: the
                                        // viewer must see a failed answer, not a short one
                                        stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                                        return;
                                    };
                                    if let Ok(data) = frame.into_data() {
                                        if stream.send_data(data).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                let _ = stream.finish().await;
                            });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(error = %e, "viewer HTTP/3 connection ended");
                            break;
                        }
                    }
                }
            }
            .instrument(tracing::debug_span!("viewer", %remote)),
        );
    }
}

/// Binds a UDP socket for HTTP/3 viewers.
pub(crate) fn bind_h3(
    addr: SocketAddr,
    server: quinn::ServerConfig,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
    let mut ep_cfg = quinn::EndpointConfig::default();
    ep_cfg
        .max_udp_payload_size(1472)
        .map_err(std::io::Error::other)?;
    let ep = quinn::Endpoint::new(ep_cfg, Some(server), socket, runtime);
    if ep.is_err() {
        warn!(%addr, "cannot start the HTTP/3 viewer endpoint");
    }
    ep
}
