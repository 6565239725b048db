//! The venue-facing HTTP/1.1 proxy: explicit proxy (absolute-form and CONNECT) and
//! reverse "sites" by Host. Every request travels as an HTTP/3 request to the relay.

use crate::bond::{Bond, Flow};
use crate::config::{GatewayConfig, Site};
use crate::devices::{Devices, Held, Slot};
use crate::GatewayError;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use media_io::rtsp::PushListener;
use media_io::{LiveRendition, LiveStream, LiveStreams};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::{debug, info, Instrument};
use tunnel::scheduler::{PathId, Unit};
use tunnel::{hop, wire, Classifier, TrafficClass};
use tunnel_io::{copy_bidirectional, pump_body, H3Body, PumpError, TlsFiles};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

struct SiteTarget {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    class: Option<TrafficClass>,
}

pub(crate) struct State {
    pub(crate) name: String,
    classifier: Classifier,
    sites: HashMap<String, SiteTarget>,
    pub(crate) max_body: Option<u64>,
    max_header_bytes: usize,
    pub(crate) response_timeout: Duration,
    tunnel_idle: Duration,
    /// A request body with no bytes for this long is cut.
    pub(crate) body_idle: Duration,
    pub(crate) bond: Arc<Bond>,
    live: Arc<LiveStreams>,
    /// Bids and check-ins: journal, outbox, replay.
    pub(crate) bids: Arc<crate::bids::Bids>,
    /// The check-in desk, when `[checkin]` is on.
    pub(crate) checkin: Option<crate::checkin::Desk>,
    /// Per-device limits.
    devices: Arc<Devices>,
    /// Origins whose pages may load the on-site LL-HLS (CORS).
    cors_origins: Vec<String>,
}

/// A camera rendition to pull: stream, rendition, URL, credentials.
type Pull = (
    Arc<LiveStream>,
    Arc<LiveRendition>,
    String,
    Option<(String, String)>,
);

/// A bound gateway: the proxy listener plus its uplink to the relay.
pub struct Gateway {
    listener: TcpListener,
    state: Arc<State>,
    push: Option<PushListener>,
    pulls: Vec<Pull>,
    contributor: Option<Arc<crate::contribute::Contributor>>,
}

impl Gateway {
    /// Binds the proxy listener and starts the uplink.
    pub async fn bind(cfg: &GatewayConfig, tls: &TlsFiles) -> Result<Self, GatewayError> {
        let errs = cfg.validate();
        if let Some((key, msg)) = errs.first() {
            return Err(GatewayError::Config(format!("{key}: {msg}")));
        }
        let client = tls.gateway_quic(cfg.tunnel.quinn())?;
        let bond = Bond::start(cfg, client).map_err(GatewayError::Config)?;
        let listener = TcpListener::bind(cfg.proxy.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: cfg.proxy.listen,
                source,
            })?;
        let sites = cfg.sites.iter().filter_map(site_target).collect();
        let live = Arc::new(match &cfg.live.spool_dir {
            Some(dir) => LiveStreams::with_spool(dir.clone(), cfg.live.spool_bytes),
            None => LiveStreams::default(),
        });
        let rcfg = cfg.live.rendition();
        let mut pulls = Vec::new();
        for cam in &cfg.cameras {
            let rends: &[&str] = if cam.substream_url.is_some() {
                &["main", "sub"]
            } else {
                &["main"]
            };
            let stream = live.add(&cam.name, rends, rcfg, cam.url.is_some());
            if let (None, Some(user)) = (&cam.url, &cam.username) {
                // a pushing camera with credentials: encoders must present them
                stream.set_push_credentials(user.clone(), cam.password.clone().unwrap_or_default());
            }
            let creds = cam
                .username
                .clone()
                .map(|u| (u, cam.password.clone().unwrap_or_default()));
            for (rend, url) in [("main", &cam.url), ("sub", &cam.substream_url)] {
                if let (Some(url), Some(r)) = (url, stream.rendition(rend)) {
                    pulls.push((stream.clone(), r, url.clone(), creds.clone()));
                }
            }
        }
        let push = match cfg.live.rtsp_listen {
            Some(addr) => Some(
                PushListener::bind(addr, live.clone(), cfg.live.accept_any_push, rcfg)
                    .await
                    .map_err(|source| GatewayError::Bind { addr, source })?,
            ),
            None => None,
        };
        let bids = crate::bids::Bids::open(
            &cfg.bids.journal,
            Duration::from_millis(cfg.bids.deadline_ms),
        )
        .map_err(|e| {
            GatewayError::Config(format!("bids.journal {}: {e}", cfg.bids.journal.display()))
        })?;
        let state = State {
            bids,
            checkin: crate::checkin::Desk::new(&cfg.checkin),
            devices: Devices::new(cfg.proxy.device_limits()),
            name: cfg.gateway.name.clone(),
            classifier: Classifier::new(cfg.classes.clone()),
            sites,
            max_body: (cfg.proxy.max_body_bytes > 0).then_some(cfg.proxy.max_body_bytes),
            max_header_bytes: cfg.proxy.max_header_bytes,
            cors_origins: cfg.live.cors_origins.clone(),
            response_timeout: Duration::from_millis(cfg.proxy.response_timeout_ms),
            tunnel_idle: Duration::from_millis(cfg.proxy.tunnel_idle_timeout_ms.max(1000)),
            body_idle: Duration::from_millis(cfg.proxy.body_idle_timeout_ms.max(1000)),
            bond,
            live,
        };
        Ok(Self {
            listener,
            state: Arc::new(state),
            push,
            pulls,
            contributor: None,
        })
    }

    /// The cameras.
    pub fn live(&self) -> Arc<LiveStreams> {
        self.state.live.clone()
    }

    /// The RTSP push listener's address, when enabled.
    pub fn rtsp_addr(&self) -> Option<SocketAddr> {
        self.push.as_ref().and_then(|p| p.local_addr().ok())
    }

    /// The proxy's TCP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bonded uplinks.
    pub fn bond(&self) -> Arc<Bond> {
        self.state.bond.clone()
    }

    /// Starts sending the cameras to the relay (`[live] contribute`); idempotent.
    pub fn contribute(&mut self) -> Arc<crate::contribute::Contributor> {
        self.contributor
            .get_or_insert_with(|| {
                crate::contribute::Contributor::start(
                    self.state.bond.clone(),
                    self.state.live.clone(),
                )
            })
            .clone()
    }

    /// Serves venue devices until the task is dropped.
    pub async fn run(mut self) {
        info!(addr = ?self.listener.local_addr().ok(), "proxy listening (HTTP/1.1)");
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(push) = self.push.take() {
            tasks.spawn(push.run());
        }
        {
            let st = self.state.clone();
            let bond = st.bond.clone();
            tasks.spawn(st.bids.clone().run_replay(
                move |r| {
                    let st = st.clone();
                    async move { crate::bid_path::deliver(&st, r).await }
                },
                move || bond.any_usable(),
            ));
        }
        for (stream, rendition, url, creds) in std::mem::take(&mut self.pulls) {
            let span = tracing::info_span!("camera", name = stream.name());
            tasks.spawn(media_io::pull::run_pull(stream, rendition, url, creds).instrument(span));
        }
        loop {
            let (tcp, peer) = media_io::accept(&self.listener).await;
            let state = self.state.clone();
            let device = peer.ip();
            let conn_slot = state.devices.take(device, Slot::Connection);
            // hyper answers a bare 431 when the header section outgrows its read buffer; the
            // buffer is larger than the limit, so the limit's own 431 (with its reason) is
            // what a device sees, up to a head four times the limit
            let max_buf = (state.max_header_bytes * 4).max(64 * 1024);
            tokio::spawn(
                async move {
                    let _held = match conn_slot {
                        Ok(h) => h,
                        Err(refused) => return too_many_connections(tcp, refused).await,
                    };
                    let svc = service_fn(move |req| handle(state.clone(), device, req));
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

/// Answers every request on a connection over the device's limit with 429, then closes.
async fn too_many_connections(tcp: tokio::net::TcpStream, refused: crate::devices::Refused) {
    metrics::counter!("canopy_gateway_device_limited_total", "slot" => Slot::Connection.as_str())
        .increment(1);
    let reason = refused.to_string();
    let svc = service_fn(move |_req| {
        let mut r = synthetic(StatusCode::TOO_MANY_REQUESTS, &reason);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        async move { Ok::<_, Infallible>(r) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .keep_alive(false);
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        http.serve_connection(TokioIo::new(tcp), svc),
    )
    .await;
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
pub(crate) struct Route {
    /// Absolute URI (or authority-form for CONNECT) sent to the relay.
    pub(crate) target: Uri,
    pub(crate) class: TrafficClass,
}

/// A response the gateway makes itself, with a short reason (also in `canopy-reason`).
pub(crate) fn synthetic(status: StatusCode, reason: &str) -> Response<Body> {
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

pub(crate) fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn handle(
    state: Arc<State>,
    device: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let head_bytes = req.method().as_str().len()
        + req.uri().to_string().len()
        + 12
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let routed = if head_bytes > state.max_header_bytes {
        Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request header section of {head_bytes} bytes is over the gateway's limit of {}",
                state.max_header_bytes
            ),
        ))
    } else {
        route(&state, &req)
    };
    // the device's slot for this request, held until its answer is done
    let slot = match &routed {
        Ok(Some(route)) if method == Method::CONNECT => Some(Slot::Tunnel),
        Ok(Some(route)) if route.class.is_transactional() && !method.is_safe() => {
            Some(Slot::Transaction)
        }
        Ok(None) if req.uri().path() == "/checkins" => Some(Slot::Transaction),
        Ok(_) => Some(Slot::Request),
        Err(_) => None,
    };
    let mut held = match slot.map(|s| state.devices.take(device, s)) {
        Some(Err(refused)) => {
            metrics::counter!("canopy_gateway_device_limited_total", "slot" => slot.map_or("", Slot::as_str))
                .increment(1);
            let mut r = synthetic(StatusCode::TOO_MANY_REQUESTS, &refused.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(r);
        }
        Some(Ok(h)) => Some(h),
        None => None,
    };
    let (resp, class) = match routed {
        Err((status, reason)) => (synthetic(status, &reason), TrafficClass::Bulk),
        Ok(None) if req.uri().path() == "/checkins" => (
            crate::checkin::serve(&state, req).await,
            TrafficClass::Checkin,
        ),
        Ok(None) => (local(&state, &req).await, TrafficClass::Bulk),
        Ok(Some(route)) => {
            let class = route.class;
            let resp = if method == Method::CONNECT {
                // the tunnel keeps the slot for as long as it is open
                connect(&state, req, route, held.take()).await
            } else if class.is_transactional() && !method.is_safe() {
                crate::bid_path::journaled(&state, req, route).await
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
    Ok(match held {
        // given back once the answer's body is done (or dropped)
        Some(h) => resp.map(|b| {
            b.map_frame(move |f| {
                let _ = &h;
                f
            })
            .boxed_unsync()
        }),
        None => resp,
    })
}

/// Requests to the gateway itself: `/healthz` and the cameras' LL-HLS under `/live/`.
async fn local(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/live/") {
        let origin = req.headers().get(header::ORIGIN);
        let allowed = origin.filter(|o| {
            state
                .cors_origins
                .iter()
                .any(|a| a == "*" || o.as_bytes().eq_ignore_ascii_case(a.as_bytes()))
        });
        let mut r = match *req.method() {
            Method::GET | Method::HEAD => match state.live.serve(rest, req.uri().query()).await {
                Ok(r) => r.map(|b| b.map_err(|never| match never {}).boxed_unsync()),
                Err(e) => synthetic(e.status(), &e.to_string()),
            },
            // a browser's preflight: answered only for the configured origins
            Method::OPTIONS if allowed.is_some() => {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NO_CONTENT;
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, HEAD"),
                );
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                );
                r
            }
            _ => {
                let mut r = synthetic(StatusCode::METHOD_NOT_ALLOWED, "use GET");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        };
        // CORS only for the origins the config names ([live] cors_origins)
        if let Some(o) = allowed {
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if req.method() == Method::HEAD {
            *r.body_mut() = full(Bytes::new());
        }
        return r;
    }
    if let Some(key) = path.strip_prefix("/bids/") {
        return crate::bid_path::status(state, req.method(), key);
    }
    match path {
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
        let p = req.uri().path();
        if p == "/healthz" || p == "/checkins" || p.starts_with("/live/") || p.starts_with("/bids/")
        {
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

/// Headers for the tunnelled request: hop-by-hop removed, Via, class, idempotency key.
pub(crate) fn tunnel_headers(
    state: &State,
    req: &Request<Incoming>,
    class: TrafficClass,
) -> http::HeaderMap {
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
            .and_then(ledger::device_key)
            .map(str::to_owned)
            .unwrap_or_else(|| ledger::gateway_key(fastrand::u128(..)));
        if let Ok(v) = HeaderValue::from_str(&key) {
            headers.insert(wire::HDR_IDEMPOTENCY_KEY, v);
        }
    }
    headers
}

/// The longest a response timeout waits for a path's queue to drain.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(600);

/// Why a request body did not reach the relay whole.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    /// Over the gateway's request body limit.
    #[error("request body over the limit")]
    OverLimit,
    /// A striped body's chunks failed.
    #[error("striped body: {0}")]
    Stripe(String),
    /// Reading it from the device, or sending it on, failed.
    #[error("{0}")]
    Send(String),
}

/// Largest request body kept in memory so the request can be sent again on another path
/// (or redundantly): bids, check-ins, and idempotent requests up to this size.
pub(crate) const REPLAY_MAX: u64 = 1024 * 1024;

/// A request body: kept whole (replayable), streamed once, or striped over the paths (the
/// head's stream carries none; it waits for the chunks' outcome).
pub(crate) enum ReqBody {
    Kept(Bytes),
    Once(Option<Incoming>),
    /// The chunks' outcome, and the number of this copy of the head.
    Striped(crate::stripe::Outcome, u64),
}

/// The request as sent on each attempt.
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: http::HeaderMap,
    pub(crate) class: TrafficClass,
}

impl Outgoing {
    fn request(&self, extra: &[(header::HeaderName, HeaderValue)]) -> Option<Request<()>> {
        let mut r = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone());
        if let Some(h) = r.headers_mut() {
            *h = self.headers.clone();
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        r.body(()).ok()
    }
}

/// Why an attempt on one path failed.
pub(crate) struct AttemptError {
    pub(crate) path: PathId,
    /// The request never reached the origin's answer and may be sent again (if replayable).
    retry: bool,
    status: StatusCode,
    reason: String,
}

pub(crate) type H3Recv = h3::client::RequestStream<tunnel_io::quic::RecvStream, Bytes>;

/// A response head and the stream its body comes on.
pub(crate) struct Answer {
    pub(crate) head: http::response::Parts,
    pub(crate) recv: H3Recv,
    pub(crate) flow: Arc<Flow>,
}

pub(crate) fn body_limit_exceeded(limit: u64) -> Response<Body> {
    synthetic(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body over the gateway's limit of {limit} bytes"),
    )
}

async fn forward(state: &State, req: Request<Incoming>, route: Route) -> Response<Body> {
    let limit = state.max_body.unwrap_or(u64::MAX);
    let declared = hop::declared_length(req.headers());
    if declared.is_some_and(|n| n > limit) {
        return body_limit_exceeded(limit);
    }
    let class = route.class;
    let out = Outgoing {
        method: req.method().clone(),
        uri: route.target,
        headers: tunnel_headers(state, &req, class),
        class,
    };
    let safe = class.is_transactional() || out.method.is_idempotent();
    let incoming = req.into_body();
    let body = if incoming.is_end_stream() {
        ReqBody::Kept(Bytes::new())
    } else if safe && declared.is_some_and(|n| n <= REPLAY_MAX.min(limit)) {
        match Limited::new(incoming, REPLAY_MAX.min(limit) as usize)
            .collect()
            .await
        {
            Ok(c) => ReqBody::Kept(c.to_bytes()),
            Err(e) => {
                return synthetic(
                    StatusCode::BAD_REQUEST,
                    &format!("request body not received: {e}"),
                )
            }
        }
    } else {
        ReqBody::Once(Some(incoming))
    };
    let replayable = safe && matches!(body, ReqBody::Kept(_));
    let unit = Unit {
        class,
        up_bytes: match &body {
            ReqBody::Kept(b) => b.len() as u64,
            _ => declared.unwrap_or(0),
        },
        // a bulk request without a body is a download of unknown size: expect a typical one
        down_bytes: if class == TrafficClass::Bulk && unit_body_is_empty(&body) {
            state.bond.typical_download()
        } else {
            0
        },
    };
    // A large upload is striped over every path: its chunks go where they finish soonest,
    // and its head (no body) may be sent again when its path dies.
    let total = unit.up_bytes;
    let mut out = out;
    // a large answer may come in chunks over every path (`crate::pull`)
    if crate::pull::worth_offering(&state.bond, class) && out.method != Method::HEAD {
        wire::pull::offer(&mut out.headers, crate::pull::new_id());
    }
    let mut unit = unit;
    let mut replayable = replayable;
    let mut _chunks = None;
    let mut body = body;
    // A body that cannot be sent again as it is (a POST, or one too large to keep) goes as
    // a stripe even when striping does not pay: the relay takes each chunk once and answers
    // a head sent again after its path died, so the request survives the loss of its path.
    let protect = !replayable && total > 0 && crate::stripe::may_carry(&out.method, class);
    if protect || crate::stripe::worth_it(&state.bond, &out.method, class, total) {
        let source = match std::mem::replace(&mut body, ReqBody::Kept(Bytes::new())) {
            ReqBody::Kept(b) => Some(crate::stripe::Source::Kept(b)),
            ReqBody::Once(Some(inc)) => Some(crate::stripe::Source::stream(inc, state.body_idle)),
            other => {
                body = other;
                None
            }
        };
        if let Some(source) = source {
            let id = crate::stripe::new_id();
            if let Ok(v) = HeaderValue::from_str(&format!("{id:016x}")) {
                out.headers.insert(wire::HDR_STRIPE, v);
            }
            out.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            let (guard, outcome) = crate::stripe::start(
                state.bond.clone(),
                class,
                id,
                total,
                source,
                state.response_timeout,
            );
            _chunks = Some(guard);
            body = ReqBody::Striped(outcome, 0);
            unit = Unit {
                class,
                up_bytes: 0,
                down_bytes: 0,
            };
            replayable = true;
        }
    }
    let striped = matches!(body, ReqBody::Striped(..));
    let out = Arc::new(out);
    let mut excluded: Vec<PathId> = Vec::new();
    let deadline = Instant::now() + state.response_timeout;
    let mut last: Option<AttemptError> = None;
    loop {
        // late binding: bulk waits here (not in a slow path's queue) until a path has room
        while !striped && !state.bond.has_room(&unit, &excluded) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let placement = state.bond.place(&unit, &excluded);
        if placement.paths.is_empty() {
            return match last {
                Some(e) => synthetic(e.status, &e.reason),
                None => synthetic(StatusCode::SERVICE_UNAVAILABLE, &state.bond.why_not(class)),
            };
        }
        // redundant copies need the whole body in hand; a streamed one goes once
        let copies = if class.is_transactional() && matches!(body, ReqBody::Kept(_)) {
            placement.paths.clone()
        } else {
            vec![placement.paths[0]]
        };
        match race(state, &out, &mut body, &copies, &unit, limit).await {
            Ok(answer) => return respond(state, out, answer, &unit),
            Err(errs) => {
                let retry = errs.iter().all(|e| e.retry) && replayable;
                for e in &errs {
                    debug!(path = e.path, reason = %e.reason, retry, "attempt failed");
                    excluded.push(e.path);
                }
                last = errs.into_iter().next_back();
                // a striped head is sent again on every path that is left, however long
                // the body took
                if !retry || (!striped && Instant::now() >= deadline) {
                    let e = last.unwrap_or(AttemptError {
                        path: 0,
                        retry: false,
                        status: StatusCode::BAD_GATEWAY,
                        reason: "request failed".into(),
                    });
                    return synthetic(e.status, &e.reason);
                }
                metrics::counter!("canopy_gateway_resends_total", "class" => class.as_str())
                    .increment(1);
            }
        }
    }
}

fn unit_body_is_empty(b: &ReqBody) -> bool {
    matches!(b, ReqBody::Kept(b) if b.is_empty())
}

/// Sends copies on `paths` at once; the first answer wins, the others are dropped (the
/// relay answers duplicates of keyed requests from the first copy).
pub(crate) async fn race(
    state: &State,
    out: &Arc<Outgoing>,
    body: &mut ReqBody,
    paths: &[PathId],
    unit: &Unit,
    limit: u64,
) -> Result<Answer, Vec<AttemptError>> {
    let mut attempts = futures_util::stream::FuturesUnordered::new();
    for &p in paths {
        let b = match body {
            ReqBody::Kept(b) => ReqBody::Kept(b.clone()),
            ReqBody::Once(inc) => ReqBody::Once(inc.take()),
            ReqBody::Striped(o, n) => {
                // each copy of a striped head is numbered: the relay answers the newest
                *n += 1;
                ReqBody::Striped(o.clone(), *n)
            }
        };
        attempts.push(attempt(state, out.clone(), b, p, unit, limit));
    }
    let mut errs = Vec::new();
    while let Some(r) = futures_util::StreamExt::next(&mut attempts).await {
        match r {
            Ok(a) => return Ok(a),
            Err(e) => errs.push(e),
        }
    }
    Err(errs)
}

/// One copy of the request on one path, up to the response head.
async fn attempt(
    state: &State,
    out: Arc<Outgoing>,
    body: ReqBody,
    id: PathId,
    unit: &Unit,
    limit: u64,
) -> Result<Answer, AttemptError> {
    let fail = |retry: bool, status: StatusCode, reason: String| AttemptError {
        path: id,
        retry,
        status,
        reason,
    };
    let path = state.bond.paths()[id].clone();
    let Some(live) = path.live().or_else(|| path.connected()) else {
        return Err(fail(
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("uplink {} is not connected", path.name),
        ));
    };
    let mut watch = path.watch();
    let died = async move { crate::bond::until_dead(&mut watch).await };
    tokio::pin!(died);
    let Some(flow) = state
        .bond
        .flow(id, out.class, unit.up_bytes, unit.down_bytes)
    else {
        return Err(fail(
            false,
            StatusCode::BAD_GATEWAY,
            "no such uplink".into(),
        ));
    };
    let head_no = match &body {
        ReqBody::Striped(_, n) => Some((
            header::HeaderName::from_static(wire::HDR_STRIPE_HEAD),
            HeaderValue::from(*n),
        )),
        _ => None,
    };
    let Some(h3req) = out.request(head_no.as_slice()) else {
        return Err(fail(
            false,
            StatusCode::BAD_REQUEST,
            "cannot build the tunnelled request".into(),
        ));
    };
    let mut sender = live.sender.clone();
    let stream = tokio::select! {
        r = tokio::time::timeout(state.response_timeout, sender.send_request(h3req)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(true, StatusCode::BAD_GATEWAY, format!("cannot open a request over uplink {}: {e}", path.name))),
            Err(_) => return Err(fail(true, StatusCode::GATEWAY_TIMEOUT, "no stream to the relay became free in time".into())),
        },
        _ = &mut died => return Err(fail(true, StatusCode::BAD_GATEWAY, format!("uplink {} went down", path.name))),
    };
    let went_down = || {
        fail(
            true,
            StatusCode::BAD_GATEWAY,
            format!(
                "uplink {} went down during the request; it was not safe to send again",
                path.name
            ),
        )
    };
    let (mut send, mut recv) = stream.split();
    let up = flow.up_counter();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<(), UploadError>>();
    let body_idle = state.body_idle;
    tokio::spawn(async move {
        let r = match body {
            ReqBody::Kept(b) => {
                let n = b.len() as u64;
                let r = async {
                    if n > 0 {
                        send.send_data(b).await?;
                    }
                    send.finish().await
                }
                .await;
                if r.is_ok() {
                    up.increment(n);
                }
                r.map_err(|e| UploadError::Send(e.to_string()))
            }
            ReqBody::Once(Some(inc)) => {
                let limited = Limited::new(
                    tunnel_io::IdleBody::new(inc, body_idle),
                    usize::try_from(limit).unwrap_or(usize::MAX),
                );
                pump_body(limited, &mut send, Some(&up))
                    .await
                    .map(|_| ())
                    .map_err(|e| match e {
                        PumpError::Source(s) if s.is::<http_body_util::LengthLimitError>() => {
                            UploadError::OverLimit
                        }
                        e => UploadError::Send(e.to_string()),
                    })
            }
            ReqBody::Once(None) => Err(UploadError::Send(
                "request body already used by another copy".to_string(),
            )),
            ReqBody::Striped(mut outcome, _) => {
                // the head has no body; it is done when every chunk is
                let _ = send.finish().await;
                match outcome.wait_for(Option::is_some).await {
                    Ok(r) => match &*r {
                        Some(Err(e)) => Err(UploadError::Stripe(e.to_string())),
                        _ => Ok(()),
                    },
                    Err(_) => Err(UploadError::Stripe("the chunks' task ended".to_string())),
                }
            }
        };
        if let Err(e) = &r {
            debug!(error = %e, "request body not delivered");
        }
        let _ = done_tx.send(r);
    });
    // The response timeout runs from the end of the request body: a long upload over a
    // slow uplink is not a slow relay.
    let head = {
        let response = recv.recv_response();
        tokio::pin!(response);
        // the body's end first: a body cut at the limit resets the request, and the reset's
        // answer may be ready in the same poll (it was 502 instead of 413 in one CI run)
        let early = tokio::select! {
            biased;
            pumped = done_rx => {
                match pumped {
                    Ok(Err(UploadError::Stripe(why))) => {
                        return Err(fail(false, StatusCode::BAD_GATEWAY, format!("request body not delivered: {why}")));
                    }
                    Ok(Err(UploadError::OverLimit)) => {
                        return Err(fail(false, StatusCode::PAYLOAD_TOO_LARGE, format!("request body over the gateway's limit of {limit} bytes")));
                    }
                    _ => None,
                }
            }
            r = &mut response => Some(r),
            _ = &mut died => return Err(went_down()),
        };
        match early {
            Some(r) => r,
            // The body is in quinn's buffer, not on the wire yet: the timeout counts only
            // once the path's queue has drained (a long upload over a slow uplink is not a
            // slow relay).
            None => {
                let mut deadline = tokio::time::Instant::now() + state.response_timeout;
                let mut extended = Duration::ZERO;
                loop {
                    let check = tokio::time::Instant::now() + Duration::from_millis(500);
                    tokio::select! {
                        r = &mut response => break r,
                        _ = tokio::time::sleep_until(check.min(deadline)) => {
                            if path.drain_time() > Duration::from_millis(500)
                                && extended < MAX_DRAIN_WAIT
                            {
                                extended += Duration::from_millis(500);
                                deadline = tokio::time::Instant::now() + state.response_timeout;
                            } else if tokio::time::Instant::now() >= deadline {
                                return Err(fail(false, StatusCode::GATEWAY_TIMEOUT, "no response through the relay in time".into()));
                            }
                        }
                        _ = &mut died => return Err(went_down()),
                    }
                }
            }
        }
    };
    match head {
        Ok(h) => {
            let (parts, ()) = h.into_parts();
            Ok(Answer {
                head: parts,
                recv,
                flow,
            })
        }
        Err(e) => Err(fail(
            true,
            StatusCode::BAD_GATEWAY,
            format!(
                "tunnel failed before the response over uplink {}: {e}",
                path.name
            ),
        )),
    }
}

/// Turns the winning answer into the device's response. Its body is pumped by a task that
/// watches the path: when the path dies mid-body, a GET of a resource with a validator is
/// resumed with a range request on another path; anything else is cut short.
fn respond(state: &State, out: Arc<Outgoing>, answer: Answer, unit: &Unit) -> Response<Body> {
    let Answer {
        head: parts,
        recv,
        flow,
    } = answer;
    match wire::pull::PullHead::read(&parts.headers) {
        Ok(None) => {}
        Ok(Some(pulled)) => return respond_pulled(state, &out, parts, pulled, flow),
        Err(e) => {
            return synthetic(
                StatusCode::BAD_GATEWAY,
                &format!("the relay's pulled answer is malformed: {e}"),
            )
        }
    }
    let length = hop::declared_length(&parts.headers);
    flow.expect_down(length.unwrap_or(0));
    if let (Some(n), TrafficClass::Bulk) = (length, out.class) {
        state.bond.note_download(n);
    }
    let validator = parts
        .headers
        .get(header::ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/"))
        .or_else(|| parts.headers.get(header::LAST_MODIFIED))
        .cloned();
    let resumable = out.method == Method::GET
        && parts.status == StatusCode::OK
        && length.is_some()
        && validator.is_some()
        && parts
            .headers
            .get(header::ACCEPT_RANGES)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bytes"));
    let (tx, response) = device_response(state, parts);
    let resume = resumable.then(|| Resume {
        bond: state.bond.clone(),
        out: out.clone(),
        validator: validator.unwrap_or(HeaderValue::from_static("")),
        total: length.unwrap_or(0),
        unit: *unit,
        timeout: state.response_timeout,
    });
    tokio::spawn(pump_response(recv, flow, tx, resume));
    response
}

/// The device's response with the relay's answer head `parts` (hop-by-hop headers gone,
/// this hop in `Via`, HTTP/1.1), and the sender its body's bytes go into.
fn device_response(
    state: &State,
    mut parts: http::response::Parts,
) -> (
    tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
    Response<Body>,
) {
    hop::strip_hop_by_hop(&mut parts.headers);
    hop::append_via(&mut parts.headers, "3", &state.name);
    parts.version = http::Version::HTTP_11;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
        .map(|r: Result<Bytes, BoxError>| r.map(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    (tx, Response::from_parts(parts, body))
}

/// The device's response to an answer whose body is pulled in chunks over every path
/// (`crate::pull`); the head came on `flow`'s path, which stays the body's primary.
fn respond_pulled(
    state: &State,
    out: &Outgoing,
    mut parts: http::response::Parts,
    pulled: wire::pull::PullHead,
    flow: Arc<Flow>,
) -> Response<Body> {
    let primary = flow.path.id;
    // the head's stream is done; the chunks reserve their own bytes
    drop(flow);
    state.bond.note_download(pulled.total);
    parts.headers.remove(wire::pull::HDR_PULL);
    parts.headers.remove(wire::pull::HDR_PULL_TOTAL);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(pulled.total));
    let (tx, response) = device_response(state, parts);
    crate::pull::spawn(
        state.bond.clone(),
        out.class,
        pulled,
        primary,
        state.response_timeout,
        tx,
    );
    response
}

struct Resume {
    bond: Arc<Bond>,
    out: Arc<Outgoing>,
    validator: HeaderValue,
    total: u64,
    unit: Unit,
    timeout: Duration,
}

async fn pump_response(
    recv: H3Recv,
    flow: Arc<Flow>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
    resume: Option<Resume>,
) {
    let mut recv = recv;
    let mut flow = flow;
    let mut sent: u64 = 0;
    let mut tried: Vec<PathId> = Vec::new();
    loop {
        let mut body = H3Body::new(recv, None, Some(flow.down_counter()));
        let mut watch = flow.path.watch();
        let failure: String = loop {
            tokio::select! {
                f = body.frame() => match f {
                    None => return,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            sent += data.len() as u64;
                            if tx.send(Ok(data)).await.is_err() {
                                return; // the device went away
                            }
                        }
                    }
                    Some(Err(e)) => break format!("response body cut short: {e}"),
                },
                _ = crate::bond::until_dead(&mut watch) => break format!("uplink {} went down mid-response", flow.path.name),
            }
        };
        let Some(r) = resume.as_ref().filter(|r| sent < r.total) else {
            let _ = tx.send(Err(failure.into())).await;
            return;
        };
        tried.push(flow.path.id);
        metrics::counter!("canopy_gateway_resumes_total").increment(1);
        match resume_on_other_path(r, sent, &tried).await {
            Ok((new_recv, new_flow)) => {
                debug!(
                    offset = sent,
                    "response resumed on uplink {}", new_flow.path.name
                );
                recv = new_recv;
                flow = new_flow;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(format!("{failure}; resume failed: {e}").into()))
                    .await;
                return;
            }
        }
    }
}

/// Asks for the rest of the resource (`Range: bytes=offset-`, `If-Range`) on another path.
async fn resume_on_other_path(
    r: &Resume,
    offset: u64,
    tried: &[PathId],
) -> Result<(H3Recv, Arc<Flow>), String> {
    let deadline = Instant::now() + r.timeout;
    let mut excluded = tried.to_vec();
    loop {
        if Instant::now() >= deadline {
            return Err("no path answered in time".into());
        }
        let Some(id) = r.bond.place(&r.unit, &excluded).primary() else {
            // all tried: wait for any path to come back (tried ones included)
            if !r.bond.wait_usable(Duration::from_millis(500)).await {
                continue;
            }
            excluded.clear();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let path = r.bond.paths()[id].clone();
        let Some(live) = path.live() else {
            excluded.push(id);
            continue;
        };
        let range =
            HeaderValue::from_str(&format!("bytes={offset}-")).map_err(|e| e.to_string())?;
        let Some(req) = r.out.request(&[
            (header::RANGE, range),
            (header::IF_RANGE, r.validator.clone()),
        ]) else {
            return Err("cannot build the range request".into());
        };
        let Some(flow) = r
            .bond
            .flow(id, r.out.class, 0, r.total.saturating_sub(offset))
        else {
            return Err("no such path".into());
        };
        let mut sender = live.sender.clone();
        let attempt = async {
            let mut s = sender.send_request(req).await.map_err(|e| e.to_string())?;
            s.finish().await.map_err(|e| e.to_string())?;
            let head = s.recv_response().await.map_err(|e| e.to_string())?;
            let expected = format!("bytes {offset}-{}/{}", r.total.saturating_sub(1), r.total);
            let ok = head.status() == StatusCode::PARTIAL_CONTENT
                && head
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            if !ok {
                return Err(format!(
                    "the origin answered the range request with {} {:?}",
                    head.status(),
                    head.headers().get(header::CONTENT_RANGE)
                ));
            }
            Ok::<_, String>(s.split().1)
        };
        match tokio::time::timeout(r.timeout, attempt).await {
            Ok(Ok(recv)) => return Ok((recv, flow)),
            Ok(Err(e)) if e.starts_with("the origin") => return Err(e),
            Ok(Err(_)) | Err(_) => excluded.push(id),
        }
    }
}

async fn connect(
    state: &State,
    mut req: Request<Incoming>,
    route: Route,
    held: Option<Held>,
) -> Response<Body> {
    let class = route.class;
    let out = Outgoing {
        method: Method::CONNECT,
        uri: route.target,
        headers: tunnel_headers(state, &req, class),
        class,
    };
    let unit = Unit {
        class,
        up_bytes: 0,
        down_bytes: 0,
    };
    // Opening a tunnel is safe to repeat until the relay answers: nothing reached the origin.
    let mut excluded = Vec::new();
    let (mut stream, flow) = loop {
        let Some(id) = state.bond.place(&unit, &excluded).primary() else {
            return synthetic(StatusCode::SERVICE_UNAVAILABLE, &state.bond.why_not(class));
        };
        excluded.push(id);
        let path = state.bond.paths()[id].clone();
        let Some(live) = path.live().or_else(|| path.connected()) else {
            continue;
        };
        let Some(h3req) = out.request(&[]) else {
            return synthetic(StatusCode::BAD_REQUEST, "cannot build the CONNECT request");
        };
        let Some(flow) = state.bond.flow(id, class, 0, 0) else {
            continue;
        };
        let mut sender = live.sender.clone();
        let opened = tokio::time::timeout(state.response_timeout, async {
            let mut s = sender
                .send_request(h3req)
                .await
                .map_err(|e| e.to_string())?;
            let head = s.recv_response().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((s, head))
        })
        .await;
        match opened {
            Err(_) => {
                return synthetic(
                    StatusCode::GATEWAY_TIMEOUT,
                    "no response through the relay in time",
                )
            }
            Ok(Err(e)) => {
                debug!(uplink = %path.name, error = %e, "CONNECT attempt failed");
                continue;
            }
            Ok(Ok((s, head))) => {
                if !head.status().is_success() {
                    // Pass the relay's refusal (status and reason) through.
                    let reason = wire::reason_of(head.headers())
                        .unwrap_or("refused by the relay")
                        .to_string();
                    return synthetic(head.status(), &reason);
                }
                break (s, flow);
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = state.tunnel_idle;
    tokio::spawn(async move {
        let _held = held;
        match on_upgrade.await {
            Ok(upgraded) => {
                let (send, recv) = stream.split();
                let (up, down) = copy_bidirectional(TokioIo::new(upgraded), send, recv, idle).await;
                flow.up_counter().increment(up);
                flow.down_counter().increment(down);
            }
            Err(e) => {
                debug!(error = %e, "CONNECT upgrade failed");
                stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            }
        }
    });
    Response::new(Body::default())
}
