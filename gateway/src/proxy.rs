//! The venue-facing HTTP/1.1 proxy: explicit proxy (absolute-form and CONNECT) and
//! reverse "sites" by Host. Every request travels as an HTTP/3 request to the relay.

use crate::config::{GatewayConfig, Site};
use crate::uplink::{Uplink, UplinkSettings, UplinkState};
use crate::GatewayError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::{debug, info, Instrument};
use tunnel::{hop, wire, Classifier, TrafficClass};
use tunnel_io::{copy_bidirectional, pump_body, H3Body, TlsFiles};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

struct SiteTarget {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    class: Option<TrafficClass>,
}

struct State {
    name: String,
    classifier: Classifier,
    sites: HashMap<String, SiteTarget>,
    max_body: Option<u64>,
    max_header_bytes: usize,
    response_timeout: Duration,
    tunnel_idle: Duration,
    uplink: Uplink,
}

/// A bound gateway: the proxy listener plus its uplink to the relay.
pub struct Gateway {
    listener: TcpListener,
    state: Arc<State>,
}

impl Gateway {
    /// Binds the proxy listener and starts the uplink.
    pub async fn bind(cfg: &GatewayConfig, tls: &TlsFiles) -> Result<Self, GatewayError> {
        let errs = cfg.validate();
        if let Some((key, msg)) = errs.first() {
            return Err(GatewayError::Config(format!("{key}: {msg}")));
        }
        let client = tls.gateway_quic(cfg.tunnel.quinn())?;
        let uplink = Uplink::start(UplinkSettings {
            relay_addr: cfg.relay.addr.clone(),
            server_name: cfg.relay.tls_name(),
            bind: cfg.relay.bind,
            client,
            transport: cfg.tunnel.clone(),
            backoff_min: Duration::from_millis(cfg.relay.reconnect_min_ms),
            backoff_max: Duration::from_millis(cfg.relay.reconnect_max_ms),
        })
        .map_err(|source| GatewayError::Bind {
            addr: cfg.relay.bind,
            source,
        })?;
        let listener = TcpListener::bind(cfg.proxy.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: cfg.proxy.listen,
                source,
            })?;
        let sites = cfg.sites.iter().filter_map(site_target).collect();
        let state = State {
            name: cfg.gateway.name.clone(),
            classifier: Classifier::new(cfg.classes.clone()),
            sites,
            max_body: (cfg.proxy.max_body_bytes > 0).then_some(cfg.proxy.max_body_bytes),
            max_header_bytes: cfg.proxy.max_header_bytes,
            response_timeout: Duration::from_millis(cfg.proxy.response_timeout_ms),
            tunnel_idle: Duration::from_millis(cfg.proxy.tunnel_idle_timeout_ms.max(1000)),
            uplink,
        };
        Ok(Self {
            listener,
            state: Arc::new(state),
        })
    }

    /// The proxy's TCP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The uplink supervisor.
    pub fn uplink(&self) -> Uplink {
        self.state.uplink.clone()
    }

    /// Serves venue devices until the task is dropped.
    pub async fn run(self) {
        info!(addr = ?self.listener.local_addr().ok(), "proxy listening (HTTP/1.1)");
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let state = self.state.clone();
            // hyper answers 431 when the header section outgrows its read buffer (min 8 KiB).
            let max_buf = state.max_header_bytes.max(8192);
            tokio::spawn(
                async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .max_buf_size(max_buf);
                    let _ = http
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                }
                .instrument(tracing::debug_span!("device", %peer)),
            );
        }
    }
}

fn site_target(site: &Site) -> Option<(String, SiteTarget)> {
    let uri: Uri = site.origin.parse().ok()?;
    Some((
        site.host.to_ascii_lowercase(),
        SiteTarget {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
            class: site.class,
        },
    ))
}

/// Where a request goes.
struct Route {
    /// Absolute URI (or authority-form for CONNECT) sent to the relay.
    target: Uri,
    class: TrafficClass,
}

/// A response the gateway makes itself, with a short reason (also in `canopy-reason`).
fn synthetic(status: StatusCode, reason: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("{reason}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&wire::reason_header_value(reason)) {
        resp.headers_mut().insert(wire::HDR_REASON, v);
    }
    resp
}

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let (resp, class) = match route(&state, &req) {
        Err((status, reason)) => (synthetic(status, &reason), TrafficClass::Bulk),
        Ok(None) => (local(&req), TrafficClass::Bulk),
        Ok(Some(route)) => {
            let class = route.class;
            let resp = if method == Method::CONNECT {
                connect(&state, req, route).await
            } else {
                forward(&state, req, route).await
            };
            (resp, class)
        }
    };
    let c = class.as_str();
    let status = resp.status();
    metrics::counter!("canopy_gateway_requests_total", "class" => c, "status" => status.as_str().to_owned()).increment(1);
    metrics::histogram!("canopy_gateway_request_duration_seconds", "class" => c)
        .record(started.elapsed().as_secs_f64());
    debug!(%method, %status, class = c, ms = started.elapsed().as_millis() as u64, "request");
    Ok(resp)
}

/// Requests to the gateway itself.
fn local(req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/healthz" => Response::new(full("ok\n")),
        _ => synthetic(StatusCode::NOT_FOUND, "not found on this gateway"),
    }
}

/// Classifies and resolves the destination. `Ok(None)`: the request is for the gateway.
fn route(state: &State, req: &Request<Incoming>) -> Result<Option<Route>, (StatusCode, String)> {
    let method = req.method().as_str();
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .filter(|a| a.port_u16().is_some())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "CONNECT needs host:port".to_string(),
            ))?;
        let class = state.classifier.classify(method, authority.host(), "");
        let target = Uri::builder()
            .authority(authority.clone())
            .build()
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        return Ok(Some(Route { target, class }));
    }
    let uri = req.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) {
        // explicit proxy: absolute-form
        if scheme != &http::uri::Scheme::HTTP && scheme != &http::uri::Scheme::HTTPS {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("unsupported scheme {scheme}"),
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        if let Some(site) = state.sites.get(&host) {
            // a device that uses the proxy and calls a site by name
            return site_route(state, site, method, &host, uri.path(), path).map(Some);
        }
        let class = state.classifier.classify(method, &host, uri.path());
        return Ok(Some(Route {
            target: uri.clone(),
            class,
        }));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h)
        })
        .unwrap_or("")
        .to_ascii_lowercase();
    let Some(site) = state.sites.get(&host) else {
        if req.uri().path() == "/healthz" {
            return Ok(None);
        }
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            format!("no site is configured for host {host:?}; use this gateway as an HTTP proxy or add a [[sites]] entry"),
        ));
    };
    site_route(state, site, method, &host, uri.path(), path).map(Some)
}

fn site_route(
    state: &State,
    site: &SiteTarget,
    method: &str,
    host: &str,
    path: &str,
    path_and_query: &str,
) -> Result<Route, (StatusCode, String)> {
    let class = site
        .class
        .unwrap_or_else(|| state.classifier.classify(method, host, path));
    let target = Uri::builder()
        .scheme(site.scheme.clone())
        .authority(site.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(Route { target, class })
}

/// The connection to the relay, if it is up.
fn sender(state: &State) -> Option<crate::uplink::Sender> {
    match state.uplink.state() {
        UplinkState::Up(sender, _) => Some(sender),
        UplinkState::Down => None,
    }
}

/// Opens a request stream on the uplink. Waiting for a stream (the relay's concurrency
/// limit) is bounded by the response timeout, so a request never hangs without an answer.
async fn open(
    state: &State,
    sender: &mut crate::uplink::Sender,
    req: Request<()>,
) -> Result<h3::client::RequestStream<tunnel_io::quic::BidiStream, Bytes>, String> {
    match tokio::time::timeout(state.response_timeout, sender.send_request(req)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no stream to the relay became free in time".into()),
    }
}

/// The answer when no uplink is up.
fn no_uplink() -> Response<Body> {
    synthetic(
        StatusCode::SERVICE_UNAVAILABLE,
        "no uplink to the relay is up",
    )
}

/// Headers for the tunnelled request: hop-by-hop removed, Via, class, idempotency key.
fn tunnel_headers(state: &State, req: &Request<Incoming>, class: TrafficClass) -> http::HeaderMap {
    let mut headers = req.headers().clone();
    hop::strip_hop_by_hop(&mut headers);
    hop::strip_private(&mut headers);
    // HTTP/3 carries the host in :authority; a Host header that disagrees is an error there.
    headers.remove(header::HOST);
    hop::append_via(&mut headers, hop::via_protocol(req.version()), &state.name);
    headers.insert(wire::HDR_CLASS, HeaderValue::from_static(class.as_str()));
    if class.is_transactional() {
        let key = headers
            .get(wire::HDR_DEVICE_IDEMPOTENCY_KEY)
            .and_then(|v| v.to_str().ok())
            .filter(|k| wire::valid_idempotency_key(k))
            .map(str::to_owned)
            .unwrap_or_else(|| wire::idempotency_key_from(fastrand::u128(..)));
        if let Ok(v) = HeaderValue::from_str(&key) {
            headers.insert(wire::HDR_IDEMPOTENCY_KEY, v);
        }
    }
    headers
}

async fn forward(state: &State, req: Request<Incoming>, route: Route) -> Response<Body> {
    let Some(mut sender) = sender(state) else {
        return no_uplink();
    };
    if let Some(limit) = state.max_body {
        let declared = hop::declared_length(req.headers());
        if declared.is_some_and(|n| n > limit) {
            return synthetic(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over the gateway's limit of {limit} bytes"),
            );
        }
    }
    let class = route.class;
    let headers = tunnel_headers(state, &req, class);
    let mut h3req = Request::builder()
        .method(req.method().clone())
        .uri(route.target);
    if let Some(h) = h3req.headers_mut() {
        *h = headers;
    }
    let Ok(h3req) = h3req.body(()) else {
        return synthetic(
            StatusCode::BAD_REQUEST,
            "cannot build the tunnelled request",
        );
    };
    let stream = match open(state, &mut sender, h3req).await {
        Ok(s) => s,
        Err(e) => {
            return synthetic(
                StatusCode::BAD_GATEWAY,
                &format!("cannot open a request to the relay: {e}"),
            )
        }
    };
    let (mut send, mut recv) = stream.split();
    let c = class.as_str();
    let up = metrics::counter!("canopy_gateway_bytes_total", "class" => c, "direction" => "up");
    let body = req.into_body();
    let limit = state.max_body.unwrap_or(u64::MAX);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    tokio::spawn(async move {
        let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
        let r = pump_body(limited, &mut send, Some(&up)).await;
        if let Err(e) = &r {
            debug!(error = %e, "request body not delivered");
        }
        let _ = done_tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    // The response timeout runs from the end of the request body: a long upload over a
    // slow uplink is not a slow relay.
    let head = {
        let response = recv.recv_response();
        tokio::pin!(response);
        let early = tokio::select! {
            r = &mut response => Some(r),
            pumped = done_rx => {
                if let Ok(Err(e)) = &pumped {
                    if e.contains("length limit") {
                        return synthetic(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!("request body over the gateway's limit of {limit} bytes"),
                        );
                    }
                }
                None
            }
        };
        let head = match early {
            Some(r) => Ok(r),
            None => tokio::time::timeout(state.response_timeout, &mut response).await,
        };
        match head {
            Err(_) => {
                return synthetic(
                    StatusCode::GATEWAY_TIMEOUT,
                    "no response through the relay in time",
                )
            }
            Ok(Err(e)) => {
                return synthetic(
                    StatusCode::BAD_GATEWAY,
                    &format!("tunnel failed before the response: {e}"),
                )
            }
            Ok(Ok(h)) => h,
        }
    };
    let (mut parts, ()) = head.into_parts();
    hop::strip_hop_by_hop(&mut parts.headers);
    hop::append_via(&mut parts.headers, "3", &state.name);
    parts.version = http::Version::HTTP_11;
    let down = metrics::counter!("canopy_gateway_bytes_total", "class" => c, "direction" => "down");
    let body = H3Body::new(recv, None, Some(down))
        .map_err(|e| Box::new(e) as BoxError)
        .boxed_unsync();
    Response::from_parts(parts, body)
}

async fn connect(state: &State, mut req: Request<Incoming>, route: Route) -> Response<Body> {
    let Some(mut sender) = sender(state) else {
        return no_uplink();
    };
    let class = route.class;
    let headers = tunnel_headers(state, &req, class);
    let mut h3req = Request::builder().method(Method::CONNECT).uri(route.target);
    if let Some(h) = h3req.headers_mut() {
        *h = headers;
    }
    let Ok(h3req) = h3req.body(()) else {
        return synthetic(StatusCode::BAD_REQUEST, "cannot build the CONNECT request");
    };
    let mut stream = match open(state, &mut sender, h3req).await {
        Ok(s) => s,
        Err(e) => {
            return synthetic(
                StatusCode::BAD_GATEWAY,
                &format!("cannot open a tunnel through the relay: {e}"),
            )
        }
    };
    let head = match tokio::time::timeout(state.response_timeout, stream.recv_response()).await {
        Err(_) => {
            return synthetic(
                StatusCode::GATEWAY_TIMEOUT,
                "no response through the relay in time",
            )
        }
        Ok(Err(e)) => return synthetic(StatusCode::BAD_GATEWAY, &format!("tunnel failed: {e}")),
        Ok(Ok(h)) => h,
    };
    if !head.status().is_success() {
        // Pass the relay's refusal (status and reason) through.
        let reason = head
            .headers()
            .get(wire::HDR_REASON)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("refused by the relay")
            .to_string();
        return synthetic(head.status(), &reason);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = state.tunnel_idle;
    let c = class.as_str();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (send, recv) = stream.split();
                let (up, down) = copy_bidirectional(TokioIo::new(upgraded), send, recv, idle).await;
                metrics::counter!("canopy_gateway_bytes_total", "class" => c, "direction" => "up")
                    .increment(up);
                metrics::counter!("canopy_gateway_bytes_total", "class" => c, "direction" => "down").increment(down);
            }
            Err(e) => debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(Body::default())
}
