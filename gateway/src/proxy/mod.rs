//! The venue-facing HTTP/1.1 proxy: explicit proxy (absolute-form and CONNECT) and
//! reverse "sites" by Host. Every request travels as an HTTP/3 request to the relay.

use crate::bond::{Bond, Flow};
use crate::config::{GatewayConfig, Site};
use crate::devices::{Devices, Held, Slot};
use crate::GatewayError;
use bytes::{Bytes, BytesMut};
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
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info, Instrument};
use tunnel::scheduler::{PathId, Unit};
use tunnel::{hop, wire, Classifier, TrafficClass};
use tunnel_io::{copy_bidirectional, pump_body, H3Body, PumpError, TlsFiles};

mod answer;
mod cache_disk;
mod cached;
mod connect;
mod forward;
mod https;
mod linger;
mod privacy_gate;
mod route;
pub(crate) mod whole_body;

use crate::BoxError;
use answer::*;
pub use cached::EdgeCache;
use connect::*;
pub(crate) use forward::*;
use route::*;
pub(crate) use whole_body::read_whole;

pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;

struct SiteTarget {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    class: Option<TrafficClass>,
    /// Default max-age (s) of its static assets that say nothing of their freshness.
    static_max_age: u64,
    /// Its privacy gate, when `[sites.privacy]`.
    privacy: Option<Arc<crate::privacy::Privacy>>,
    /// The HTTPS port it is answered on (`tls = true` with `[proxy] https_listen`) when
    /// a request for it in cleartext is sent there (`redirect_to_https`).
    https_port: Option<u16>,
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
    /// Classes local actions have paused.
    paused: Arc<crate::actions::Paused>,
    /// Origins whose pages may load the on-site LL-HLS (CORS).
    cors_origins: Vec<String>,
    /// The edge cache, when `[cache] enabled`.
    pub(crate) cache: Option<Arc<cached::EdgeCache>>,
    /// Where bodies without a length are written before they are striped; `None`: off.
    pub(crate) body_spool: Option<Arc<crate::body_spool::BodySpool>>,
    /// Longest a body without a length is held before it streams on.
    pub(crate) chunked_hold: Duration,
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
    levels: Option<Arc<crate::levels::Levels>>,
    /// Camera priorities for the low-bandwidth mode, by name.
    priorities: std::collections::HashMap<String, i32>,
    /// `[[actions]]`, started with `run`.
    actions: Vec<crate::config::ActionConfig>,
    /// The admin API's listener, when `[admin] listen`.
    admin: Option<crate::admin::Admin>,
    /// Cameras whose transcode level the gateway makes.
    transcodes: Vec<(Arc<LiveStream>, media_io::transcode::TranscodeSettings)>,
    /// The HTTPS listener for the tls sites, when `[proxy] https_listen`.
    https: Option<https::Https>,
    /// `[event]`, and what its post-event hygiene deletes.
    post_event: Option<PostEventFiles>,
    /// `[telemetry]`.
    telemetry: crate::config::TelemetrySection,
}

/// What the post-event hygiene needs from the config.
struct PostEventFiles {
    event: crate::event::Event,
    keys: Vec<std::path::PathBuf>,
    journal: std::path::PathBuf,
}

impl PostEventFiles {
    fn of(cfg: &GatewayConfig) -> Option<Self> {
        let event = cfg.event()?;
        let mut keys = vec![cfg.tls.key.clone()];
        keys.extend(cfg.sites.iter().filter(|s| s.tls).map(|s| s.tls_files().1));
        let next: Vec<_> = keys
            .iter()
            .map(|k| tunnel_io::own_cert::next_of(k))
            .collect();
        keys.extend(next);
        keys.dedup();
        Some(Self {
            event,
            keys,
            journal: cfg.bids.journal.clone(),
        })
    }
}

impl Gateway {
    /// Binds the proxy listener and starts the uplinks, on the kernel's sockets.
    pub async fn bind(cfg: &GatewayConfig, tls: &TlsFiles) -> Result<Self, GatewayError> {
        Self::bind_with(cfg, tls, Arc::new(crate::sockets::KernelSockets)).await
    }

    /// Binds the proxy listener and starts the uplinks, on sockets from `sockets`.
    pub async fn bind_with(
        cfg: &GatewayConfig,
        tls: &TlsFiles,
        sockets: Arc<dyn crate::sockets::UplinkSockets>,
    ) -> Result<Self, GatewayError> {
        let errs = cfg.validate();
        if let Some((key, msg)) = errs.first() {
            return Err(GatewayError::Config(format!("{key}: {msg}")));
        }
        let client = tls.gateway_quic(cfg.tunnel.quinn())?;
        // a rotated certificate is taken up for the next connections without a restart
        tokio::spawn(tls.own.clone().run());
        let bond = Bond::start(cfg, client, sockets).map_err(GatewayError::Config)?;
        let listener = TcpListener::bind(cfg.proxy.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: cfg.proxy.listen,
                source,
            })?;
        let sites = cfg
            .sites
            .iter()
            .filter_map(|s| site_target(s, cfg.proxy.https_listen))
            .collect();
        let live = Arc::new(match &cfg.live.spool_dir {
            Some(dir) => LiveStreams::with_spool(dir.clone(), cfg.live.spool_bytes),
            None => LiveStreams::default(),
        });
        let rcfg = cfg.live.rendition();
        let mut pulls = Vec::new();
        let mut transcodes = Vec::new();
        for cam in &cfg.cameras {
            let stream = live.add(&cam.name, &cam.renditions(), rcfg, cam.url.is_some());
            if let Some(settings) = cam.transcode() {
                transcodes.push((stream.clone(), settings));
            }
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
        let body_spool = match cfg.proxy.body_spool_bytes {
            0 => None,
            max => Some(
                crate::body_spool::BodySpool::new(cfg.proxy.body_spool_dir.clone(), max).map_err(
                    |e| {
                        GatewayError::Config(format!(
                            "proxy.body_spool_dir {}: {e}",
                            cfg.proxy.body_spool_dir.display()
                        ))
                    },
                )?,
            ),
        };
        let admin = crate::admin::Admin::bind(&cfg.admin).await?;
        let https = match cfg.proxy.https_listen {
            Some(addr) => Some(https::Https::bind(addr, &cfg.sites).await?),
            None => None,
        };
        let state = State {
            paused: Arc::default(),
            bids,
            checkin: crate::checkin::Desk::new(cfg)
                .map_err(|e| GatewayError::Config(format!("checkin.revoked: {e}")))?,
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
            body_spool,
            chunked_hold: Duration::from_millis(cfg.proxy.chunked_hold_ms),
            bond,
            live,
            cache: match cfg.cache.enabled {
                true => Some(Arc::new(
                    cached::EdgeCache::new(
                        crate::cache::StoreConfig {
                            memory_bytes: cfg.cache.memory_bytes,
                            disk_bytes: cfg.cache.disk_bytes,
                            max_object_bytes: cfg.cache.max_object_bytes,
                            stale_max: Duration::from_secs(cfg.cache.stale_max_s),
                        },
                        cfg.cache.disk_dir.as_deref(),
                    )
                    .map_err(|e| {
                        GatewayError::Config(format!(
                            "cache.disk_dir {}: {e}",
                            cfg.cache
                                .disk_dir
                                .as_deref()
                                .unwrap_or(std::path::Path::new(""))
                                .display()
                        ))
                    })?,
                )),
                false => None,
            },
        };
        Ok(Self {
            listener,
            state: Arc::new(state),
            push,
            pulls,
            contributor: None,
            levels: None,
            priorities: cfg
                .cameras
                .iter()
                .map(|c| (c.name.clone(), c.priority))
                .collect(),
            actions: cfg.actions.clone(),
            admin,
            transcodes,
            https,
            post_event: PostEventFiles::of(cfg),
            telemetry: cfg.telemetry.clone(),
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

    /// The HTTPS address of the tls sites, when enabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|h| h.local_addr().ok())
    }

    /// The bonded uplinks.
    pub fn bond(&self) -> Arc<Bond> {
        self.state.bond.clone()
    }

    /// Starts sending the cameras to the relay (`[live] contribute`); idempotent.
    /// The low-bandwidth mode starts with it: each camera's program carries what the
    /// uplinks can.
    pub fn contribute(&mut self) -> Arc<crate::contribute::Contributor> {
        let c = self
            .contributor
            .get_or_insert_with(|| {
                crate::contribute::Contributor::start(
                    self.state.bond.clone(),
                    self.state.live.clone(),
                )
            })
            .clone();
        if self.levels.is_none() {
            self.levels = Some(crate::levels::Levels::start(
                self.state.bond.clone(),
                self.state.live.clone(),
                c.clone(),
                self.priorities.clone(),
            ));
        }
        c
    }

    /// The admin API's address, when `[admin] listen`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The cameras' low-bandwidth levels, once contributing.
    pub fn levels(&self) -> Option<Arc<crate::levels::Levels>> {
        self.levels.clone()
    }

    /// Serves venue devices until the task is dropped.
    pub async fn run(mut self) {
        info!(addr = ?self.listener.local_addr().ok(), "proxy listening (HTTP/1.1)");
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(push) = self.push.take() {
            tasks.spawn(push.run());
        }
        let actions = crate::actions::Actions::start(
            std::mem::take(&mut self.actions),
            crate::actions::Targets {
                bond: self.state.bond.clone(),
                live: self.state.live.clone(),
                levels: self.levels.clone(),
                contributor: self.contributor.clone(),
                paused: self.state.paused.clone(),
            },
        );
        let holds = self.admin.as_ref().map(|a| a.holds());
        let hygiene = self.post_event.take().map(|p| {
            crate::hygiene::Hygiene::new(crate::hygiene::Parts {
                event: p.event,
                bids: self.state.bids.clone(),
                cache: self.state.cache.clone(),
                actions: actions.clone(),
                live: self.state.live.clone(),
                keys: p.keys,
                journal: p.journal,
                holds: holds.clone(),
                levels: self.levels.clone(),
            })
        });
        let history = crate::admin::history_for(&self.state.bond);
        let view = Arc::new(crate::admin::AdminView {
            history: history.clone(),
            live: self.state.live.clone(),
            bids: self.state.bids.clone(),
            hygiene,
            cache: self.state.cache.clone(),
            name: self.state.name.clone(),
            bond: self.state.bond.clone(),
            levels: self.levels.clone(),
            actions,
            paused: self.state.paused.clone(),
            holds,
        });
        view.restore_holds();
        // after the holds are back: a hygiene run that lifts them must not be undone
        if let Some(h) = &view.hygiene {
            tasks.spawn(h.clone().run());
        }
        if let Some(admin) = self.admin.take() {
            tasks.spawn(crate::admin::sample_links(self.state.bond.clone(), history));
            tasks.spawn(admin.serve(view.clone()));
        }
        if self.telemetry.enabled {
            tasks.spawn(crate::telemetry::run(
                view,
                std::time::Duration::from_millis(self.telemetry.every_ms),
            ));
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
        if let Some(h) = self.https.take() {
            tasks.spawn(h.run(DeviceDoor(self.state.clone())));
        }
        for (stream, settings) in std::mem::take(&mut self.transcodes) {
            let span = tracing::info_span!("camera", name = stream.name());
            tasks.spawn(media_io::transcode::run_transcode(stream, settings).instrument(span));
        }
        for (stream, rendition, url, creds) in std::mem::take(&mut self.pulls) {
            let span = tracing::info_span!("camera", name = stream.name());
            tasks.spawn(media_io::pull::run_pull(stream, rendition, url, creds).instrument(span));
        }
        loop {
            let (tcp, peer) = tunnel_io::listen::accept(&self.listener).await;
            let door = DeviceDoor(self.state.clone());
            tokio::spawn(door.serve(tcp, peer));
        }
    }

    /// Where venue devices' connections are served, whatever carries them (the harness
    /// hands in-memory streams).
    pub fn devices(&self) -> DeviceDoor {
        DeviceDoor(self.state.clone())
    }
}

/// Serves venue devices' HTTP/1.1 connections (see [`Gateway::devices`]).
#[derive(Clone)]
pub struct DeviceDoor(Arc<State>);

/// How a device's connection came in.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// The plain listener: proxy requests and sites by `Host`.
    Plain,
    /// HTTPS for the site of this name (the TLS server name).
    Site(Arc<str>),
}

impl DeviceDoor {
    /// Serves one device connection `io` from `peer` until it closes.
    pub async fn serve<IO>(self, io: IO, peer: SocketAddr)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        self.serve_entry(io, peer, Entry::Plain).await
    }

    /// Serves one device connection that came in through `entry`.
    pub(crate) async fn serve_entry<IO>(self, io: IO, peer: SocketAddr, entry: Entry)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let state = self.0;
        let device = peer.ip();
        let conn_slot = state.devices.take(device, Slot::Connection);
        // hyper answers a bare 431 when the header section outgrows its read buffer; the
        // buffer is larger than the limit, so the limit's own 431 (with its reason) is
        // what a device sees, up to a head four times the limit
        let max_buf = (state.max_header_bytes * 4).max(64 * 1024);
        // a device that stops reading its answer frees its slot and the answer's stream
        // (a CONNECT tunnel raises the bound to its own idle timeout)
        let io = tunnel_io::WriteIdle::new(io, state.body_idle);
        let writes = io.setting();
        // hyper hands the connection back when it is done with it, for a lingering close
        let (io, back) = linger::HandBack::new(io);
        async move {
            match conn_slot {
                Ok(_held) => {
                    let svc = service_fn(move |mut req: Request<Incoming>| {
                        req.extensions_mut().insert(writes.clone());
                        handle(state.clone(), device, entry.clone(), req)
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(30))
                        .max_buf_size(max_buf);
                    let _ = http
                        .serve_connection(TokioIo::new(io), svc)
                        .with_upgrades()
                        .await;
                    // the slot is held until the connection has lingered and closed
                    linger::close(back).await;
                }
                Err(refused) => {
                    // a connection over the limit: its 429s and its linger, in 10 s
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        too_many_connections(io, refused).await;
                        linger::close(back).await;
                    })
                    .await;
                }
            }
        }
        .instrument(tracing::debug_span!("device", %peer))
        .await
    }
}

/// Answers every request on a connection over the device's limit with 429, then closes
/// (the caller bounds its time).
async fn too_many_connections<IO>(io: IO, refused: crate::devices::Refused)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
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
    let _ = http.serve_connection(TokioIo::new(io), svc).await;
}

fn site_target(site: &Site, https: Option<SocketAddr>) -> Option<(String, SiteTarget)> {
    let uri: Uri = site.origin.parse().ok()?;
    Some((
        site.host.to_ascii_lowercase(),
        SiteTarget {
            scheme: uri.scheme()?.clone(),
            authority: uri.authority()?.clone(),
            class: site.class,
            static_max_age: site.static_max_age_s,
            privacy: site.privacy.clone().map(Arc::new),
            https_port: https
                .filter(|_| site.tls && site.redirect_to_https)
                .map(|a| a.port()),
        },
    ))
}

/// Where a request goes.
pub(crate) struct Route {
    /// Absolute URI (or authority-form for CONNECT) sent to the relay.
    pub(crate) target: Uri,
    pub(crate) class: TrafficClass,
    /// The site's privacy gate, if it has one.
    pub(crate) privacy: Option<Arc<crate::privacy::Privacy>>,
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
    entry: Entry,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = tunnel_io::clock::now();
    let method = req.method().clone();
    let head_bytes = req.method().as_str().len()
        + req.uri().to_string().len()
        + 12
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if let Some(location) = route::https_upgrade(&state, &req, &entry) {
        metrics::counter!("canopy_gateway_https_redirects_total").increment(1);
        let mut r = synthetic(
            StatusCode::PERMANENT_REDIRECT,
            "this site is answered over HTTPS",
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return Ok(r);
    }
    let routed = if head_bytes > state.max_header_bytes {
        Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request header section of {head_bytes} bytes is over the gateway's limit of {}",
                state.max_header_bytes
            ),
        ))
    } else {
        route(&state, &req, &entry)
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
        Ok(Some(mut route)) => {
            let class = route.class;
            let mut req = req;
            let withheld = match route.privacy.clone() {
                Some(p) => privacy_gate::check(&p, &mut req, &mut route),
                None => None,
            };
            let tls_name = match &entry {
                Entry::Site(name) => Some(&**name),
                Entry::Plain => None,
            };
            let cache = state
                .cache
                .as_ref()
                .filter(|_| cached::applies(&req, &route));
            let resp = if let Some(r) = withheld {
                r
            } else if let Some(why) = state.paused.why(class) {
                // what the edge cache has needs no uplink: served all the same
                let cached = match cache {
                    Some(c) => cached::without_uplinks(c, &req, tls_name).await,
                    None => None,
                };
                if let Some(r) = cached {
                    r
                } else {
                    let mut r = synthetic(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("{class} traffic is paused by the gateway's local {why}"),
                    );
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                    r
                }
            } else if method == Method::CONNECT {
                // the tunnel keeps the slot for as long as it is open
                connect(&state, req, route, held.take()).await
            } else if class.is_transactional() && !method.is_safe() {
                crate::bid_path::journaled(&state, req, route).await
            } else if privacy_gate::reads_body(&req, &route) {
                privacy_gate::forward_stripped(&state, req, route).await
            } else if let Some(cache) = cache {
                cached::serve(&state, cache, req, route, tls_name).await
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
        .record(tunnel_io::clock::since(started).as_secs_f64());
    debug!(%method, %status, class = c, ms = tunnel_io::clock::since(started).as_millis() as u64, "request");
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
