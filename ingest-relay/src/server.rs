//! The relay's HTTP/3 server: accepts gateway connections (client certificate required),
//! and serves each request stream: CONNECT tunnels and proxied requests to origins.

use crate::budget::{Budget, Grant};
use crate::claim_log::ClaimLog;
use crate::config::RelayConfig;
use crate::egress::{Egress, OriginStream};
use crate::error::{Refusal, RelayError};
use crate::origin_pool::{OriginBody, OriginKey, OriginPool, Sender};
pub(crate) use crate::session::ConnCtx;
use crate::session::{Admission, AdmitError, Outcome, Publisher, Sessions};
use crate::stripe;
use crate::viewers::{self, Viewers};
use bytes::Bytes;
use h3::server::RequestStream;
use http::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use media_io::relayed::{Relayed, RelayedConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn, Instrument};
use tunnel::{hop, wire, TrafficClass};
use tunnel_io::{copy_bidirectional, pump_body, H3Body, IdleBody, IdleError, TlsFiles};

pub(crate) type Stream = RequestStream<tunnel_io::quic::BidiStream, Bytes>;
type SendHalf = RequestStream<tunnel_io::quic::SendStream, Bytes>;

/// Bytes of request bodies read whole one gateway may have the relay hold at once.
const INTAKE_PER_GATEWAY: u64 = 64 << 20;
/// The same for all gateways together.
const INTAKE_GLOBAL: u64 = 1 << 30;

/// Largest answer to a bid or check-in the relay keeps for duplicates.
const KEYED_ANSWER_MAX: usize = 64 * 1024;

pub(crate) struct State {
    pub(crate) relayed: Arc<Relayed>,
    name: String,
    server_names: Vec<String>,
    egress: Egress,
    /// Idle origin connections, for the next request to the same origin.
    origins: Arc<OriginPool>,
    response_timeout: Duration,
    tunnel_idle: Duration,
    body_idle: Duration,
    small_first: bool,
    max_body: Option<u64>,
    max_header_bytes: u64,
    sessions: Sessions,
    stripes: stripe::Stripes,
    /// Large answers the gateways pull in chunks over their paths.
    pulls: crate::pull::Pulls,
    /// Bytes of request bodies read whole (media pieces, chunks, bids) the relay may hold.
    intake: Arc<Budget>,
    /// The embedded auction, when `[auction] host` is set.
    auction: Option<crate::auction::AuctionSink>,
    /// The JetStream bid sink, when `[jetstream] host` is set.
    jetstream: Option<crate::jetstream::JetStreamSink>,
}

impl State {
    /// Where `ctx`'s bodies read whole take their bytes from.
    pub(crate) fn intake<'a>(&'a self, ctx: &ConnCtx) -> Intake<'a> {
        (&self.intake, ctx.identity)
    }
}

/// A bound relay; `run` serves it.
pub struct Relay {
    endpoint: quinn::Endpoint,
    /// TLS and defaults; each connection gets its own transport config and queue signal.
    server: quinn::ServerConfig,
    transport: tunnel_io::TransportSettings,
    state: Arc<State>,
    viewers: Arc<Viewers>,
    viewer_http: Option<tokio::net::TcpListener>,
    viewer_https: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    viewer_h3: Option<quinn::Endpoint>,
}

impl Relay {
    /// Binds the QUIC endpoint with the relay's TLS material, and the viewer listeners
    /// (`viewer_tls`: their certificate when not the relay's; `token_key`: the secret that
    /// signs viewer URLs, when they need one).
    pub async fn bind(
        cfg: &RelayConfig,
        tls: &TlsFiles,
        viewer_tls: Option<&TlsFiles>,
        token_key: Option<&[u8]>,
    ) -> Result<Self, RelayError> {
        let server = tls.relay_quic(cfg.tunnel.quinn())?;
        let bind_err = |source| RelayError::Bind {
            addr: cfg.relay.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(cfg.relay.listen).map_err(bind_err)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
        let endpoint = quinn::Endpoint::new(
            tunnel_io::transport::endpoint_config(tunnel_io::transport::RELAY_CID_LEN),
            Some(server.clone()),
            socket,
            runtime,
        )
        .map_err(bind_err)?;
        let egress = Egress::new(&cfg.egress).map_err(RelayError::Config)?;
        // pulled answers and striped uploads hold bytes from the same budgets
        let stripes = stripe::Stripes::default();
        let pulls = crate::pull::Pulls::new(stripes.budget());
        let state = State {
            name: cfg.relay.name.clone(),
            server_names: cfg.relay.server_names.clone(),
            egress,
            origins: OriginPool::start(),
            response_timeout: Duration::from_millis(cfg.egress.response_timeout_ms),
            tunnel_idle: Duration::from_millis(cfg.egress.tunnel_idle_timeout_ms.max(1000)),
            body_idle: Duration::from_millis(cfg.egress.body_idle_timeout_ms.max(1000)),
            small_first: cfg.tunnel.small_first,
            max_body: (cfg.egress.max_request_body_bytes > 0)
                .then_some(cfg.egress.max_request_body_bytes),
            max_header_bytes: cfg.egress.max_header_bytes,
            sessions: Sessions::new(ClaimLog::open(&cfg.bids.journal).map_err(|source| {
                RelayError::Journal {
                    path: cfg.bids.journal.clone(),
                    source,
                }
            })?),
            stripes,
            pulls,
            intake: Budget::new(
                "canopy_relay_intake_bytes",
                INTAKE_PER_GATEWAY,
                INTAKE_GLOBAL,
            ),
            auction: crate::auction::AuctionSink::open(&cfg.auction).map_err(|source| {
                RelayError::Journal {
                    path: cfg.auction.journal.clone(),
                    source,
                }
            })?,
            jetstream: crate::jetstream::JetStreamSink::start(&cfg.jetstream)
                .await
                .map_err(|e| RelayError::Config(format!("jetstream: {e}")))?,
            relayed: Arc::new(Relayed::new(relayed_config(cfg))),
        };
        let vtls = viewer_tls.unwrap_or(tls);
        let bind_tcp = |addr: SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RelayError::Bind { addr, source })
        };
        let viewer_http = match cfg.viewers.listen {
            Some(a) => Some(bind_tcp(a).await?),
            None => None,
        };
        let viewer_https = match cfg.viewers.https_listen {
            Some(a) => {
                let t = vtls.viewer_rustls(&[b"http/1.1"])?;
                Some((
                    bind_tcp(a).await?,
                    tokio_rustls::TlsAcceptor::from(Arc::new(t)),
                ))
            }
            None => None,
        };
        let viewer_h3 = match cfg.viewers.h3_listen {
            Some(a) => Some(
                viewers::bind_h3(a, vtls.viewer_quic()?)
                    .map_err(|source| RelayError::Bind { addr: a, source })?,
            ),
            None => None,
        };
        let alt_svc = viewer_h3
            .as_ref()
            .and_then(|e| e.local_addr().ok())
            .and_then(|a| {
                http::HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", a.port())).ok()
            });
        let state = Arc::new(state);
        let viewers = Arc::new(Viewers {
            relayed: state.relayed.clone(),
            cors: cfg
                .viewers
                .cors_origins
                .clone()
                .unwrap_or_else(|| vec!["*".into()]),
            token: token_key.map(crate::viewer_token::TokenKey::new),
            alt_svc,
        });
        Ok(Self {
            endpoint,
            server,
            transport: cfg.tunnel.clone(),
            state,
            viewers,
            viewer_http,
            viewer_https,
            viewer_h3,
        })
    }

    /// The viewers' addresses: HTTP/1.1, HTTPS, HTTP/3.
    pub fn viewer_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.viewer_http.as_ref().and_then(|l| l.local_addr().ok()),
            self.viewer_https
                .as_ref()
                .and_then(|(l, _)| l.local_addr().ok()),
            self.viewer_h3.as_ref().and_then(|e| e.local_addr().ok()),
        )
    }

    /// The live streams gateways send.
    pub fn relayed(&self) -> Arc<Relayed> {
        self.state.relayed.clone()
    }

    /// The UDP address the relay listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves gateways (and viewers) until the endpoint is closed.
    pub async fn run(mut self) {
        if let Some(l) = self.viewer_http.take() {
            tokio::spawn(viewers::serve_http1(l, self.viewers.clone(), None));
        }
        if let Some((l, acc)) = self.viewer_https.take() {
            tokio::spawn(viewers::serve_http1(l, self.viewers.clone(), Some(acc)));
        }
        if let Some(ep) = self.viewer_h3.take() {
            tokio::spawn(viewers::serve_h3(ep, self.viewers.clone()));
        }
        info!(addr = ?self.endpoint.local_addr().ok(), "relay listening (HTTP/3)");
        while let Some(incoming) = self.endpoint.accept().await {
            let state = self.state.clone();
            let remote = incoming.remote_address();
            let (transport, signal) = self.transport.quinn_for_connection();
            let mut server = self.server.clone();
            server.transport_config(transport);
            let connecting = match incoming.accept_with(Arc::new(server)) {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "connection refused");
                    continue;
                }
            };
            tokio::spawn(
                async move {
                    match connecting.await {
                        Ok(conn) => {
                            tokio::spawn(tunnel_io::probe::run(conn.clone(), signal, false, None));
                            serve_connection(state, conn).await
                        }
                        Err(e) => info!(error = %e, "handshake refused"),
                    }
                }
                .instrument(tracing::info_span!("gateway", %remote)),
            );
        }
    }
}

async fn serve_connection(state: Arc<State>, conn: quinn::Connection) {
    info!("gateway connected");
    if tracing::enabled!(tracing::Level::TRACE) {
        let c = conn.clone();
        tokio::spawn(async move {
            while c.close_reason().is_none() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let s = c.stats();
                tracing::trace!(
                    cwnd = s.path.cwnd,
                    rtt_ms = s.path.rtt.as_millis() as u64,
                    lost = s.path.lost_packets,
                    sent = s.path.sent_packets,
                    tx = s.udp_tx.bytes,
                    "connection stats"
                );
            }
        });
    }
    let identity = state.sessions.identity(&conn);
    let (gateway_name, scope) = crate::session::gateway_names(&conn);
    let quic = tunnel_io::quic::Connection::new(conn.clone(), state.small_first);
    let ctx = Arc::new(ConnCtx {
        identity,
        conn_id: conn.stable_id(),
        joined: std::sync::Mutex::new(None),
        gateway_name,
        scope,
        bulk: quic.bulk_marks(),
    });
    metrics::gauge!("canopy_relay_gateways_connected").increment(1.0);
    let h3 = h3::server::builder()
        .max_field_section_size(state.max_header_bytes)
        .build::<_, Bytes>(quic)
        .await;
    match h3 {
        Ok(mut h3) => loop {
            match h3.accept().await {
                Ok(Some(resolver)) => {
                    let state = state.clone();
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((req, stream)) => handle(state, &ctx, req, stream).await,
                            Err(e) => debug!(error = %e, "bad request stream"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "connection ended");
                    break;
                }
            }
        },
        Err(e) => warn!(error = %e, "HTTP/3 setup failed"),
    }
    metrics::gauge!("canopy_relay_gateways_connected").decrement(1.0);
    state.sessions.leave(&ctx);
    info!(reason = ?conn.close_reason(), "gateway disconnected");
}

async fn handle(state: Arc<State>, ctx: &ConnCtx, req: Request<()>, stream: Stream) {
    let started = Instant::now();
    let class = req
        .headers()
        .get(wire::HDR_CLASS)
        .and_then(|v| v.to_str().ok())
        .and_then(TrafficClass::parse)
        .unwrap_or(TrafficClass::Bulk);
    let method = req.method().clone();
    let target = req.uri().to_string();
    let status = serve(&state, ctx, req, stream, class).await;
    let c = class.as_str();
    metrics::counter!("canopy_relay_requests_total", "class" => c, "status" => status.as_str().to_owned()).increment(1);
    metrics::histogram!("canopy_relay_request_duration_seconds", "class" => c)
        .record(started.elapsed().as_secs_f64());
    debug!(%method, %target, %status, class = c, ms = started.elapsed().as_millis() as u64, "done");
}

enum Target {
    Local,
    /// The embedded auction.
    Auction,
    /// The JetStream bid sink.
    JetStream,
    Connect(tokio::net::TcpStream),
    Forward(Origin),
}

/// Where a forwarded request goes: an idle connection to its origin, or a new one.
enum Origin {
    Pooled(OriginKey, Sender),
    Fresh(OriginKey, OriginStream),
}

async fn serve(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    mut stream: Stream,
    class: TrafficClass,
) -> StatusCode {
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().eq_ignore_ascii_case(wire::SESSION_AUTHORITY))
    {
        if req.uri().path() == wire::clock::CLOCK_PATH {
            return crate::media::clock(&req, &mut stream).await;
        }
        return hello(state, ctx, &req, &mut stream).await;
    }
    if req.uri().authority().is_some_and(|a| {
        a.as_str()
            .eq_ignore_ascii_case(wire::media::MEDIA_AUTHORITY)
    }) {
        return crate::media::intake(state, ctx, req, stream).await;
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().eq_ignore_ascii_case(wire::STRIPE_AUTHORITY))
    {
        if req.uri().path() == wire::pull::PULL_PATH {
            return pull(state, ctx, &req, stream).await;
        }
        return stripe_chunk(state, ctx, &req, stream).await;
    }
    if req.headers().contains_key(wire::HDR_STRIPE) {
        return striped(state, ctx, req, stream, class).await;
    }
    // Bids and check-ins come once per path they were sent on: the first copy goes on,
    // later copies get its answer.
    let key = class
        .is_transactional()
        .then(|| wire::idempotency_key(req.headers()))
        .flatten()
        .map(str::to_owned);
    let mut publisher = None;
    if let Some(key) = key {
        match state
            .sessions
            // the first copy may need a connect, its whole body and the origin's answer
            .admit(
                &ctx.scope,
                &key,
                req.headers()
                    .get(wire::HDR_FINGERPRINT)
                    .and_then(|v| v.to_str().ok()),
                state.response_timeout * 2 + Duration::from_secs(10),
            )
            .await
        {
            Ok(Admission::First(p)) => publisher = Some(p),
            Ok(Admission::Conflict) => {
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return refuse(
                    &mut stream,
                    Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "this idempotency key was used for another request",
                    ),
                )
                .await;
            }
            Ok(Admission::Replay(outcome)) => {
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return replay(&mut stream, &outcome, true).await;
            }
            Err(AdmitError::Busy) => {
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return refuse(
                    &mut stream,
                    Refusal::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "an earlier copy of this request is still without an answer",
                    ),
                )
                .await;
            }
            Err(AdmitError::Journal(e)) => {
                warn!(error = %e, "keyed request refused: the duplicate table is not writable");
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return refuse(
                    &mut stream,
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the relay cannot record this request's key",
                    ),
                )
                .await;
            }
        }
    }
    match prepare(state, &req).await {
        Err(refusal) => {
            // The body is not wanted: say so (H3_NO_ERROR) instead of leaving it unread.
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            // an origin that could not be reached saw nothing: a later copy may try again
            let unreached = matches!(
                refusal.status,
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
            );
            if let Some(p) = publisher.filter(|_| !unreached) {
                p.refused(&refusal).await;
            }
            refuse(&mut stream, refusal).await
        }
        Ok(Target::Local) => local(&req, &mut stream).await,
        Ok(Target::Auction) => match &state.auction {
            Some(a) => {
                a.serve(&ctx.scope, state.intake(ctx), &req, &mut stream, publisher)
                    .await
            }
            None => StatusCode::NOT_FOUND,
        },
        Ok(Target::JetStream) => match &state.jetstream {
            Some(j) => {
                j.serve(&ctx.scope, state.intake(ctx), &req, &mut stream, publisher)
                    .await
            }
            None => StatusCode::NOT_FOUND,
        },
        Ok(Target::Connect(tcp)) => tunnel(stream, tcp, class, state.tunnel_idle).await,
        Ok(Target::Forward(origin)) => {
            forward(state, ctx, req, stream, origin, class, publisher).await
        }
    }
}

/// A request body read whole, within a bound.
pub(crate) enum Capped {
    /// The body, and the bytes of the relay's intake budget it holds (give them back by
    /// dropping the grant once the body is handed on).
    Body(Bytes, Grant),
    /// Over the bound: reading stopped (STOP_SENDING sent).
    TooLarge,
    /// The gateway's (or every gateway's) unread bodies fill the relay's intake budget:
    /// reading stopped (STOP_SENDING sent).
    NoRoom,
    /// The stream failed.
    Failed,
}

/// Where bodies read whole take their bytes from: the relay's intake budget, and whose
/// share (the gateway's identity).
pub(crate) type Intake<'a> = (&'a Arc<Budget>, u64);

/// Reads a request body of at most `max` bytes, its bytes taken from `intake` as they come:
/// many streams of one gateway, each under its bound, cannot make the relay hold more than
/// that gateway's share.
pub(crate) async fn read_capped(stream: &mut Stream, max: u64, intake: Intake<'_>) -> Capped {
    use bytes::Buf;
    let Some(mut grant) = intake.0.try_grant(intake.1, 0) else {
        return Capped::NoRoom;
    };
    let mut data = bytes::BytesMut::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut b)) => {
                let n = b.remaining() as u64;
                if data.len() as u64 + n > max {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return Capped::TooLarge;
                }
                if !grant.grow(n) {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    metrics::counter!("canopy_relay_intake_refused_total").increment(1);
                    return Capped::NoRoom;
                }
                while b.has_remaining() {
                    let c = b.chunk();
                    data.extend_from_slice(c);
                    let n = c.len();
                    b.advance(n);
                }
            }
            Ok(None) => return Capped::Body(data.freeze(), grant),
            Err(e) => {
                debug!(error = %e, "request body not received");
                return Capped::Failed;
            }
        }
    }
}

/// The answer to a body the relay had no room for.
pub(crate) fn no_room() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the relay holds as many unread request bytes of this gateway as it may",
    )
}

/// The live streams' settings from the relay's config.
fn relayed_config(cfg: &RelayConfig) -> RelayedConfig {
    let l = &cfg.live;
    let mut rc = RelayedConfig {
        record_dir: l.record_dir.clone(),
        ..RelayedConfig::default()
    };
    rc.mirror.hold = Duration::from_secs(l.hold_s);
    rc.mirror.stall_after = Duration::from_millis(l.stall_ms);
    rc.mirror.window.part_hold_back = l.part_hold_back_ms as f64 / 1000.0;
    rc.mirror.window.playlist_segments = l.playlist_segments;
    rc.mirror.window.ring_bytes = l.ring_bytes;
    rc
}

fn header_u64(req: &Request<()>, name: &str, radix: u32) -> Option<u64> {
    u64::from_str_radix(req.headers().get(name)?.to_str().ok()?, radix).ok()
}

/// Stripe `id` of this gateway, made if new, for a body of `total` bytes: refused when the
/// body is over the relay's limit or the stripe has another length.
fn stripe_for(
    state: &State,
    ctx: &ConnCtx,
    id: u64,
    total: u64,
) -> Result<Arc<stripe::Stripe>, Refusal> {
    if state.max_body.is_some_and(|m| total > m) {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body over the relay's limit",
        ));
    }
    state
        .stripes
        .get(ctx.identity, id, total)
        .map_err(|e| match e {
            stripe::NoStripe::OtherLength => {
                Refusal::new(StatusCode::CONFLICT, "the stripe has another total length")
            }
            stripe::NoStripe::TooMany => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this gateway has {} striped bodies at the relay already",
                    stripe::MAX_STRIPES
                ),
            ),
        })
}

/// A pulled answer's chunk (`GET`), answered with its bytes once the origin sent them, or
/// the gateway's end of a pull (`DELETE`).
async fn pull(state: &State, ctx: &ConnCtx, req: &Request<()>, mut stream: Stream) -> StatusCode {
    if req.method() == Method::DELETE {
        return match wire::pull::PullEnd::read(req.headers()) {
            Ok(end) => {
                state.pulls.end(ctx.identity, end.id);
                let resp = Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(())
                    .unwrap_or_default();
                if stream.send_response(resp).await.is_ok() {
                    let _ = stream.finish().await;
                }
                StatusCode::NO_CONTENT
            }
            Err(e) => {
                refuse(
                    &mut stream,
                    Refusal::new(StatusCode::BAD_REQUEST, e.to_string()),
                )
                .await
            }
        };
    }
    let chunk = match wire::pull::PullChunk::read(req.headers()) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                &mut stream,
                Refusal::new(StatusCode::BAD_REQUEST, e.to_string()),
            )
            .await
        }
    };
    // a chunk's answer is bulk from its first byte (bids keep the small-first lane), unless
    // the body waits for it
    if !chunk.urgent {
        ctx.bulk.mark(stream.send_id());
    }
    let parts = match state
        .pulls
        .chunk(ctx.identity, &chunk, state.response_timeout)
        .await
    {
        Ok(parts) => parts,
        Err(r) => {
            use crate::pull::PullRefusal as R;
            let status = match r {
                R::Unknown => StatusCode::NOT_FOUND,
                R::BeyondEnd | R::Dropped => StatusCode::RANGE_NOT_SATISFIABLE,
                R::BeyondWindow => StatusCode::BAD_REQUEST,
                R::Failed(_) => StatusCode::BAD_GATEWAY,
                R::Timeout => StatusCode::GATEWAY_TIMEOUT,
            };
            return refuse(&mut stream, Refusal::new(status, r.to_string())).await;
        }
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, chunk.len)
        .body(())
        .unwrap_or_default();
    if stream.send_response(resp).await.is_err() {
        return StatusCode::OK;
    }
    let down =
        metrics::counter!("canopy_relay_bytes_total", "class" => "bulk", "direction" => "down");
    for b in parts {
        let n = b.len() as u64;
        if stream.send_data(b).await.is_err() {
            return StatusCode::OK;
        }
        down.increment(n);
    }
    let _ = stream.finish().await;
    metrics::counter!("canopy_relay_pull_chunks_total").increment(1);
    StatusCode::OK
}

/// One chunk of a striped body: taken into its stripe (waiting while it lies beyond the
/// stripe's window), then answered 200.
async fn stripe_chunk(
    state: &State,
    ctx: &ConnCtx,
    req: &Request<()>,
    mut stream: Stream,
) -> StatusCode {
    let id = header_u64(req, wire::HDR_STRIPE, 16);
    let offset = header_u64(req, wire::HDR_STRIPE_OFFSET, 10);
    let total = header_u64(req, wire::HDR_STRIPE_TOTAL, 10);
    let (Some(id), Some(offset), Some(total)) = (id, offset, total) else {
        stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        return refuse(
            &mut stream,
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "a chunk needs canopy-stripe (hex), canopy-stripe-offset and canopy-stripe-total",
            ),
        )
        .await;
    };
    let stripe = match stripe_for(state, ctx, id, total) {
        Ok(s) => s,
        Err(r) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(&mut stream, r).await;
        }
    };
    // the chunk's bytes stay on the intake budget while it waits for its stripe's window
    let (data, _intake) = match read_capped(&mut stream, stripe::CHUNK_MAX, state.intake(ctx)).await
    {
        Capped::Body(d, g) => (d, g),
        Capped::TooLarge => {
            return refuse(
                &mut stream,
                Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "chunk over 1 MiB"),
            )
            .await
        }
        Capped::NoRoom => return refuse(&mut stream, no_room()).await,
        Capped::Failed => return StatusCode::BAD_REQUEST,
    };
    let n = data.len() as u64;
    let status = match stripe.insert(offset, data, state.response_timeout).await {
        Ok(()) => {
            metrics::counter!("canopy_relay_stripe_chunks_total").increment(1);
            metrics::counter!("canopy_relay_stripe_bytes_total").increment(n);
            StatusCode::OK
        }
        Err(stripe::ChunkError::OutOfRange) => {
            return refuse(
                &mut stream,
                Refusal::new(StatusCode::BAD_REQUEST, "chunk beyond the stripe's end"),
            )
            .await
        }
        Err(stripe::ChunkError::Failed(why)) => {
            return refuse(&mut stream, Refusal::new(StatusCode::CONFLICT, why)).await
        }
        Err(stripe::ChunkError::NoBudget) => {
            return refuse(
                &mut stream,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the relay holds as many striped bytes of this gateway as it may",
                ),
            )
            .await
        }
        Err(stripe::ChunkError::Timeout) => {
            return refuse(
                &mut stream,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the origin did not take the body in time",
                ),
            )
            .await
        }
    };
    debug!(stripe = id, offset, n, "chunk");
    let resp = Response::builder()
        .status(status)
        .body(())
        .unwrap_or_default();
    if stream.send_response(resp).await.is_ok() {
        let _ = stream.finish().await;
    }
    status
}

/// The head of a request whose body comes striped. The first head of a stripe opens the
/// origin request and feeds it the stripe; the newest head (a head is sent again when its
/// path dies) gets the origin's answer.
async fn striped(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    mut stream: Stream,
    class: TrafficClass,
) -> StatusCode {
    while let Ok(Some(_)) = stream.recv_data().await {}
    let id = header_u64(&req, wire::HDR_STRIPE, 16);
    let total = hop::declared_length(req.headers());
    let (Some(id), Some(total)) = (id, total) else {
        return refuse(
            &mut stream,
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "a striped request needs canopy-stripe (hex) and content-length",
            ),
        )
        .await;
    };
    let stripe = match stripe_for(state, ctx, id, total) {
        Ok(s) => s,
        Err(r) => return refuse(&mut stream, r).await,
    };
    let head = header_u64(&req, wire::HDR_STRIPE_HEAD, 10).unwrap_or(1);
    if stripe.attach_head(head) {
        let result = match prepare(state, &req).await {
            Ok(Target::Forward(origin)) => {
                let counter = metrics::counter!("canopy_relay_bytes_total", "class" => class.as_str(), "direction" => "up");
                let (body, done) = stripe.body(Some(counter));
                let (parts, ()) = req.into_parts();
                origin_exchange(state, parts, body, done, origin).await
            }
            Ok(_) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "only proxied requests may have a striped body",
            )),
            Err(r) => Err(r),
        };
        let published = match result {
            Ok(resp) => keep_answer(state, ctx, &stripe, resp).await,
            Err(r) => {
                stripe.fail(&r.reason);
                stripe::Published::Kept(Arc::new(Outcome::Answer {
                    status: r.status,
                    headers: r.headers(),
                    body: r.body(),
                }))
            }
        };
        stripe.publish(published);
    }
    // The stripe stays (until idle for a minute) for heads and chunks sent again after
    // their path died, even when the answer already went out.
    let wait = state.response_timeout * 2 + Duration::from_secs(10);
    match stripe.answer(head, wait).await {
        Ok(stripe::Published::Kept(outcome)) => replay(&mut stream, &outcome, head > 1).await,
        Ok(stripe::Published::Stream(resp)) => {
            let (mut send, _recv) = stream.split();
            deliver(state, &mut send, class, None, None, Ok(resp)).await
        }
        Err(why) => {
            let reason = match why {
                stripe::NoAnswer::Superseded => {
                    "a later copy of this request's head carries the answer"
                }
                stripe::NoAnswer::Gone => {
                    "the answer went out on a path that died, and was too large to keep"
                }
                stripe::NoAnswer::Timeout => "no answer from the origin in time",
            };
            let status = if why == stripe::NoAnswer::Superseded {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_GATEWAY
            };
            refuse(&mut stream, Refusal::new(status, reason)).await
        }
    }
}

/// The origin's answer to a striped request: kept whole when small and the gateway's
/// share of the stripes' budget has room (a head sent again gets it too, as long as the
/// stripe lingers), else streamed once.
async fn keep_answer(
    state: &State,
    ctx: &ConnCtx,
    stripe: &stripe::Stripe,
    resp: Response<hyper::body::Incoming>,
) -> stripe::Published {
    let small = hop::declared_length(resp.headers()).filter(|n| *n <= KEYED_ANSWER_MAX as u64);
    let Some(grant) = small.and_then(|n| state.stripes.budget().try_grant(ctx.identity, n)) else {
        return stripe::Published::Stream(resp);
    };
    stripe.hold(grant);
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(
        state.response_timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(body, KEYED_ANSWER_MAX)),
    )
    .await;
    let outcome = match collected {
        Ok(Ok(c)) => {
            let mut headers = parts.headers;
            hop::strip_hop_by_hop(&mut headers);
            hop::strip_private(&mut headers);
            hop::append_via(&mut headers, hop::via_protocol(parts.version), &state.name);
            Outcome::Answer {
                status: parts.status,
                headers,
                body: c.to_bytes(),
            }
        }
        _ => {
            let r = Refusal::new(
                StatusCode::BAD_GATEWAY,
                "origin answer did not arrive whole",
            );
            Outcome::Answer {
                status: r.status,
                headers: r.headers(),
                body: r.body(),
            }
        }
    };
    stripe::Published::Kept(Arc::new(outcome))
}

/// The session hello of a new gateway connection.
async fn hello(state: &State, ctx: &ConnCtx, req: &Request<()>, stream: &mut Stream) -> StatusCode {
    while let Ok(Some(_)) = stream.recv_data().await {}
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let session = u128::from_str_radix(&h(wire::HDR_SESSION), 16).ok();
    let path = h(wire::HDR_PATH).parse::<usize>().ok();
    let (Some(session), Some(path)) = (session, path) else {
        return refuse(
            stream,
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "hello needs canopy-session (hex) and canopy-path (number)",
            ),
        )
        .await;
    };
    let name = h(wire::HDR_PATH_NAME);
    let kind = h(wire::HDR_LINK_KIND);
    match state.sessions.join(ctx, session, path, &name, &kind) {
        Ok(paths) => {
            let resp = Response::builder()
                .status(StatusCode::OK)
                .header("canopy-session-paths", paths.to_string())
                .body(())
                .unwrap_or_default();
            let _ = stream.send_response(resp).await;
            let _ = stream.finish().await;
            StatusCode::OK
        }
        Err(e) => refuse(stream, Refusal::new(StatusCode::FORBIDDEN, e)).await,
    }
}

/// Answers a duplicate with the first copy's answer.
pub(crate) async fn replay(stream: &mut Stream, outcome: &Outcome, duplicate: bool) -> StatusCode {
    let Outcome::Answer {
        status,
        headers,
        body,
    } = outcome
    else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let mut resp = Response::builder().status(*status);
    if let Some(h) = resp.headers_mut() {
        *h = headers.clone();
        if duplicate {
            h.insert(wire::HDR_DUPLICATE, http::HeaderValue::from_static("1"));
        }
    }
    let Ok(resp) = resp.body(()) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    if stream.send_response(resp).await.is_ok() {
        if !body.is_empty() {
            let _ = stream.send_data(body.clone()).await;
        }
        let _ = stream.finish().await;
    }
    *status
}

/// Decides what the request is and opens the connection it needs.
async fn prepare(state: &State, req: &Request<()>) -> Result<Target, Refusal> {
    let authority = req
        .uri()
        .authority()
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "request without authority"))?;
    let host = authority.host();
    if req.method() == Method::CONNECT {
        let port = authority
            .port_u16()
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "CONNECT needs host:port"))?;
        return match state.egress.connect(host, port, false).await? {
            OriginStream::Plain(tcp) => Ok(Target::Connect(tcp)),
            OriginStream::Tls(_) => Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "CONNECT yields raw TCP",
            )),
        };
    }
    if state
        .server_names
        .iter()
        .any(|n| n.eq_ignore_ascii_case(host))
    {
        return Ok(Target::Local);
    }
    if state.auction.as_ref().is_some_and(|a| a.is_for(host)) {
        return Ok(Target::Auction);
    }
    if state.jetstream.as_ref().is_some_and(|j| j.is_for(host)) {
        return Ok(Target::JetStream);
    }
    let tls = match req.uri().scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("unsupported scheme {other:?}"),
            ))
        }
    };
    if let Some(limit) = state.max_body {
        let declared = hop::declared_length(req.headers());
        if declared.is_some_and(|n| n > limit) {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the relay's limit of {limit} bytes"),
            ));
        }
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let key = OriginKey::new(host, port, tls);
    state.egress.permits(host, port)?;
    if let Some(s) = state.origins.take(&key) {
        return Ok(Target::Forward(Origin::Pooled(key, s)));
    }
    Ok(Target::Forward(Origin::Fresh(
        key,
        state.egress.connect(host, port, tls).await?,
    )))
}

/// Sends a synthetic error response with its reason.
pub(crate) async fn refuse<S: SendResponse>(stream: &mut S, refusal: Refusal) -> StatusCode {
    debug!(status = %refusal.status, reason = %refusal.reason, "refused");
    let _ = stream.synthetic(&refusal).await;
    refusal.status
}

async fn local(req: &Request<()>, stream: &mut Stream) -> StatusCode {
    let (status, body): (StatusCode, &'static str) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    while let Ok(Some(_)) = stream.recv_data().await {}
    let _ = stream.synthetic(&Refusal::new(status, body.trim())).await;
    status
}

async fn tunnel(
    mut stream: Stream,
    tcp: tokio::net::TcpStream,
    class: TrafficClass,
    idle: Duration,
) -> StatusCode {
    let resp = Response::builder()
        .status(StatusCode::OK)
        .body(())
        .unwrap_or_default();
    if stream.send_response(resp).await.is_err() {
        return StatusCode::BAD_GATEWAY;
    }
    let (send, recv) = stream.split();
    let (to_gateway, from_gateway) = copy_bidirectional(tcp, send, recv, idle).await;
    count_bytes(class, from_gateway, to_gateway);
    StatusCode::OK
}

fn count_bytes(class: TrafficClass, up: u64, down: u64) {
    let c = class.as_str();
    metrics::counter!("canopy_relay_bytes_total", "class" => c, "direction" => "up").increment(up);
    metrics::counter!("canopy_relay_bytes_total", "class" => c, "direction" => "down")
        .increment(down);
}

async fn forward(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    stream: Stream,
    origin: Origin,
    class: TrafficClass,
    publisher: Option<Publisher>,
) -> StatusCode {
    let (mut send, recv) = stream.split();
    let up_counter = metrics::counter!("canopy_relay_bytes_total", "class" => class.as_str(), "direction" => "up");
    let mut body = H3Body::new(recv, state.max_body, Some(up_counter));
    let body_done = body.on_done();
    // a stalled upload ends (and frees its stream) instead of waiting for ever
    let body =
        http_body_util::BodyExt::map_err(IdleBody::new(body, state.body_idle), |e| match e {
            IdleError::Idle(d) => tunnel_io::BodyError::Idle(d),
            IdleError::Inner(e) => e,
        });
    // the gateway can pull a large bulk answer over all its paths
    let pull = (class == TrafficClass::Bulk && req.method() != Method::HEAD)
        .then(|| wire::pull::offered(req.headers()))
        .flatten()
        .map(|id| (ctx.identity, id));
    let (parts, ()) = req.into_parts();
    let result = origin_exchange(state, parts, body, body_done, origin).await;
    deliver(state, &mut send, class, publisher, pull, result).await
}

/// Sends the request (head `parts`, `body`) to the origin; the origin's response head.
async fn origin_exchange<B>(
    state: &State,
    parts: http::request::Parts,
    body: B,
    body_done: tokio::sync::oneshot::Receiver<()>,
    origin: Origin,
) -> stripe::Answer
where
    B: http_body::Body<Data = Bytes, Error = tunnel_io::BodyError> + Send + Unpin + 'static,
{
    let body: OriginBody = http_body_util::BodyExt::boxed_unsync(body);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut out = Request::builder().method(parts.method).uri(path);
    let mut headers = parts.headers;
    hop::strip_hop_by_hop(&mut headers);
    // The origin sees the request's idempotency key under the standard header name.
    if let Some(key) = headers.get(wire::HDR_IDEMPOTENCY_KEY).cloned() {
        headers
            .entry(wire::HDR_DEVICE_IDEMPOTENCY_KEY)
            .or_insert(key);
    }
    hop::strip_private(&mut headers);
    hop::append_via(&mut headers, hop::via_protocol(parts.version), &state.name);
    if let Ok(v) = http::HeaderValue::from_str(&authority) {
        headers.insert(header::HOST, v);
    }
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    let Ok(out) = out.body(body) else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "cannot rebuild request",
        ));
    };
    let t = state.response_timeout;
    let (key, mut sender, pooled) = match origin {
        Origin::Pooled(k, s) => (k, s, true),
        Origin::Fresh(k, stream) => {
            let s = handshake(stream).await?;
            (k, s, false)
        }
    };
    let mut body_done = Some(body_done);
    let result = match exchange(&mut sender, out, &mut body_done, t).await {
        // the idle connection closed meanwhile and took nothing: a new one takes it
        Err(Exchange::NotSent(out)) if pooled => {
            metrics::counter!("canopy_relay_origin_connections_stale_total").increment(1);
            let unreached = |r: Refusal| Refusal::unreached(r.status, r.reason);
            let fresh = state
                .egress
                .connect(&key.host, key.port, key.tls)
                .await
                .map_err(unreached)?;
            sender = handshake(fresh).await.map_err(unreached)?;
            exchange(&mut sender, *out, &mut body_done, t).await
        }
        r => r,
    };
    match result {
        Ok(resp) => {
            // ready again once this answer is done: the next request to the origin takes it
            state.origins.give_back(key, sender);
            Ok(resp)
        }
        Err(Exchange::NotSent(_)) => Err(Refusal::unreached(
            StatusCode::BAD_GATEWAY,
            "the origin connection closed before the request went out",
        )),
        Err(Exchange::Failed(r)) => Err(r),
    }
}

/// An HTTP/1.1 connection over an established stream to an origin.
async fn handshake(origin: OriginStream) -> Result<Sender, Refusal> {
    let refused = |e: hyper::Error| {
        Refusal::unreached(
            StatusCode::BAD_GATEWAY,
            format!("origin handshake failed: {e}"),
        )
    };
    let sender = match origin {
        OriginStream::Plain(tcp) => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(refused)?;
            drive(conn);
            s
        }
        OriginStream::Tls(tls) => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(*tls))
                .await
                .map_err(refused)?;
            drive(conn);
            s
        }
    };
    Ok(sender)
}

/// Runs an origin connection until it closes.
fn drive(conn: impl std::future::Future<Output = hyper::Result<()>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "origin connection ended with error");
        }
    });
}

/// Why an exchange gave no response.
enum Exchange {
    /// The connection took nothing of the request (closed before): here it is.
    NotSent(Box<Request<OriginBody>>),
    Failed(Refusal),
}

/// Answers the gateway with the origin's response (or the refusal), keeping keyed answers
/// for duplicates.
async fn deliver(
    state: &State,
    send: &mut SendHalf,
    class: TrafficClass,
    publisher: Option<Publisher>,
    pull: Option<(u64, u64)>,
    result: stripe::Answer,
) -> StatusCode {
    let c = class.as_str();
    let resp = match result {
        Ok(resp) => resp,
        Err(refusal) => {
            match publisher {
                // a request whose body never fully arrived, or that never went out, did
                // not reach the origin as sent: dropping the publisher releases the key
                Some(p) if refusal.unreached => drop(p),
                // the origin may hold it (no answer in time, or the exchange broke after
                // the request went out): the key stays in doubt, a later copy goes again
                Some(p)
                    if matches!(
                        refusal.status,
                        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    p.in_doubt()
                }
                Some(p) => p.refused(&refusal).await,
                None => {}
            }
            return refuse(send, refusal).await;
        }
    };
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    hop::strip_hop_by_hop(&mut parts.headers);
    // an origin cannot speak for Canopy (no forged canopy-reason)
    hop::strip_private(&mut parts.headers);
    hop::append_via(
        &mut parts.headers,
        hop::via_protocol(parts.version),
        &state.name,
    );
    // a large answer the gateway offered to pull stays here, and only its head goes
    let total = hop::declared_length(&parts.headers)
        .filter(|n| *n >= wire::pull::PULL_MIN && status.is_success());
    let body = match (pull, total) {
        (Some((identity, id)), Some(total)) if publisher.is_none() => {
            match state
                .pulls
                .start(identity, id, total, body, state.body_idle)
            {
                Ok(()) => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    wire::pull::PullHead { id, total }.write(&mut parts.headers);
                    None
                }
                Err(body) => Some(body),
            }
        }
        _ => Some(body),
    };
    let mut head = Response::builder().status(status);
    if let Some(h) = head.headers_mut() {
        *h = parts.headers;
    }
    let Ok(head) = head.body(()) else {
        return StatusCode::BAD_GATEWAY;
    };
    let Some(body) = body else {
        if send.send_response(head).await.is_ok() {
            let _ = send.finish().await;
        }
        metrics::counter!("canopy_relay_pulls_total").increment(1);
        return status;
    };
    if let Some(p) = publisher {
        return deliver_keyed(state, send, class, p, head, body).await;
    }
    if send.send_response(head).await.is_err() {
        return status;
    }
    let down_counter =
        metrics::counter!("canopy_relay_bytes_total", "class" => c, "direction" => "down");
    let body = IdleBody::new(body, state.body_idle);
    if let Err(e) = pump_body(body, send, Some(&down_counter)).await {
        debug!(error = %e, "response body cut short");
        send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
    }
    status
}

/// Answers a keyed request (a bid or check-in) and keeps its answer for later copies. The
/// origin has taken the request once its answer's head is here, so what is kept is always
/// the origin's status and headers: with the whole body when it is small and arrives in
/// time, else with its first bytes and [`wire::HDR_ANSWER_TRUNCATED`] (never a 502 of our
/// own that would stand for the key while the origin holds the bid). The device that sent
/// it gets the whole answer either way.
async fn deliver_keyed(
    state: &State,
    send: &mut SendHalf,
    class: TrafficClass,
    p: Publisher,
    head: Response<()>,
    mut body: hyper::body::Incoming,
) -> StatusCode {
    use http_body_util::BodyExt;
    let status = head.status();
    let deadline = tokio::time::Instant::now() + state.response_timeout;
    let mut read = bytes::BytesMut::new();
    // Some(rest is worth pumping) when the body did not end within the bounds
    let cut: Option<bool> = loop {
        if read.len() > KEYED_ANSWER_MAX {
            break Some(true);
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => break Some(true),
            Ok(None) => break None,
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    read.extend_from_slice(&d);
                }
            }
            Ok(Some(Err(e))) => {
                debug!(error = %e, "origin answer to a keyed request cut short");
                break Some(false);
            }
        }
    };
    let read = read.freeze();
    let mut kept_headers = head.headers().clone();
    let kept = match cut {
        None => read.clone(),
        Some(_) => {
            metrics::counter!("canopy_relay_answers_truncated_total").increment(1);
            kept_headers.remove(header::CONTENT_LENGTH);
            kept_headers.insert(
                wire::HDR_ANSWER_TRUNCATED,
                http::HeaderValue::from_static("1"),
            );
            read.slice(..read.len().min(KEYED_ANSWER_MAX))
        }
    };
    p.answer(status, kept_headers, kept).await;
    if send.send_response(head).await.is_err() {
        return status;
    }
    count_bytes(class, 0, read.len() as u64);
    if !read.is_empty() && send.send_data(read).await.is_err() {
        return status;
    }
    match cut {
        None => {
            let _ = send.finish().await;
        }
        Some(true) => {
            let down_counter = metrics::counter!("canopy_relay_bytes_total",
                "class" => class.as_str(), "direction" => "down");
            let body = IdleBody::new(body, state.body_idle);
            if let Err(e) = pump_body(body, send, Some(&down_counter)).await {
                debug!(error = %e, "response body cut short");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
            }
        }
        Some(false) => send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR),
    }
    status
}

/// One HTTP/1.1 exchange with an origin over an established connection.
async fn exchange(
    sender: &mut Sender,
    req: Request<OriginBody>,
    body_done: &mut Option<tokio::sync::oneshot::Receiver<()>>,
    timeout: Duration,
) -> Result<Response<hyper::body::Incoming>, Exchange> {
    // The response timeout runs from the end of the request body: a long upload over a
    // slow uplink is not a slow origin.
    let send = sender.try_send_request(req);
    tokio::pin!(send);
    let early = match body_done.as_mut() {
        Some(rx) => {
            let r = tokio::select! {
                r = &mut send => Some(r),
                _ = rx => None,
            };
            if r.is_none() {
                *body_done = None;
            }
            r
        }
        // the body went out whole already (an earlier try): the timeout runs now
        None => None,
    };
    let result = match early {
        Some(r) => Ok(r),
        None => tokio::time::timeout(timeout, &mut send).await,
    };
    match result {
        Err(_) => Err(Exchange::Failed(Refusal::new(
            StatusCode::GATEWAY_TIMEOUT,
            "origin did not answer in time",
        ))),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(mut e)) => {
            if let Some(req) = e.take_message() {
                return Err(Exchange::NotSent(Box::new(req)));
            }
            let e = e.into_error();
            let body_err = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<tunnel_io::BodyError>());
            let too_large =
                body_err.is_some_and(|b| matches!(b, tunnel_io::BodyError::TooLarge(_)));
            if body_err.is_some_and(|b| {
                matches!(
                    b,
                    tunnel_io::BodyError::Stream(_)
                        | tunnel_io::BodyError::Stripe(_)
                        | tunnel_io::BodyError::Idle(_)
                )
            }) {
                let mut r = Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("request body did not arrive: {e}"),
                );
                r.unreached = true;
                return Err(Exchange::Failed(r));
            }
            Err(Exchange::Failed(if too_large {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body over the relay's limit",
                )
            } else {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("origin request failed: {e}"),
                )
            }))
        }
    }
}

/// What a synthetic response needs of a stream half (whole stream or send half).
pub(crate) trait SendResponse: Send {
    fn synthetic(
        &mut self,
        refusal: &Refusal,
    ) -> impl std::future::Future<Output = Result<(), h3::error::StreamError>> + Send;
}

impl<S: h3::quic::SendStream<Bytes> + Send> SendResponse for RequestStream<S, Bytes> {
    async fn synthetic(&mut self, refusal: &Refusal) -> Result<(), h3::error::StreamError> {
        let mut resp = Response::builder().status(refusal.status);
        if let Some(h) = resp.headers_mut() {
            *h = refusal.headers();
        }
        self.send_response(resp.body(()).unwrap_or_default())
            .await?;
        self.send_data(refusal.body()).await?;
        self.finish().await
    }
}
