//! The relay's HTTP/3 server: accepts gateway connections (client certificate required),
//! greets them into sessions and dispatches each request stream: to the origins
//! (`origin`), to the bonded transfers' stripes and pulls (`bonded`), to live media, the
//! auction or JetStream; bodies read whole take the intake budget (`intake`).

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
use std::time::Duration;
use tracing::{debug, info, warn, Instrument};
use tunnel::{hop, wire, TrafficClass};
use tunnel_io::{copy_bidirectional, pump_body, H3Body, IdleBody, IdleError, TlsFiles};

mod bonded;
mod intake;
mod origin;

use bonded::*;
pub(crate) use intake::*;
use origin::*;

pub(crate) type Stream = RequestStream<tunnel_io::quic::BidiStream, Bytes>;
type SendHalf = RequestStream<tunnel_io::quic::SendStream, Bytes>;

/// Bytes of request bodies read whole one gateway may have the relay hold at once.
const INTAKE_PER_GATEWAY: u64 = 64 << 20;
/// The same for all gateways together.
const INTAKE_GLOBAL: u64 = 1 << 30;

/// Largest answer to a bid or check-in the relay keeps for duplicates.
const KEYED_ANSWER_MAX: usize = 64 * 1024;
/// Bytes of a keyed request's body (a bid or check-in), read whole before it goes to the
/// origin: what the gateway keeps of a request to send again.
const KEYED_BODY_MAX: u64 = 1 << 20;

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
    /// Bytes of request bodies read whole (media pieces, bids) the relay may hold.
    intake: Arc<Budget>,
    /// The same for striped bodies' chunks: their own budget, so chunks that wait for
    /// their stripe's window never leave live media and bids without room.
    chunk_intake: Arc<Budget>,
    /// The embedded auction, when `[auction] host` is set.
    auction: Option<Arc<crate::auction::AuctionSink>>,
    /// The JetStream bid sink, when `[jetstream] host` is set.
    jetstream: Option<crate::jetstream::JetStreamSink>,
    /// Gateway certificates refused although the CA signed them.
    revoked: Arc<tunnel_io::Revoked>,
    /// Every gateway's telemetry and viewers.
    pub(crate) fleet: Arc<crate::fleet::FleetState>,
}

impl State {
    /// Where `ctx`'s bodies read whole take their bytes from.
    pub(crate) fn intake<'a>(&'a self, ctx: &ConnCtx) -> Intake<'a> {
        Intake {
            budget: &self.intake,
            gateway: ctx.identity,
            idle: self.body_idle,
        }
    }

    /// Where `ctx`'s striped chunks take their bytes from.
    pub(crate) fn chunk_intake<'a>(&'a self, ctx: &ConnCtx) -> Intake<'a> {
        Intake {
            budget: &self.chunk_intake,
            gateway: ctx.identity,
            idle: self.body_idle,
        }
    }
}

/// A bound relay; `run` serves it.
pub struct Relay {
    endpoint: quinn::Endpoint,
    /// The endpoint's socket, told each connection's pacing rate.
    socket: Arc<tunnel_io::PacedSocket>,
    /// TLS and defaults; each connection gets its own transport config and queue signal.
    server: quinn::ServerConfig,
    /// `[tls] revoked` and its version when it was read, watched while the relay runs.
    revoked_file: Option<(std::path::PathBuf, tunnel_io::own_cert::Stamp)>,
    /// The relay's certificates (its own, the viewers' when another), watched while it runs.
    own_certs: Vec<Arc<tunnel_io::own_cert::OwnCert>>,
    transport: tunnel_io::TransportSettings,
    state: Arc<State>,
    viewers: Arc<Viewers>,
    viewer_http: Option<tokio::net::TcpListener>,
    viewer_https: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
    viewer_h3: Option<quinn::Endpoint>,
    /// The fleet view's listener and token, when `[fleet] listen`.
    fleet_http: Option<(
        tokio::net::TcpListener,
        Arc<str>,
        Option<tokio_rustls::TlsAcceptor>,
    )>,
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
        let bind_err = |source| RelayError::Bind {
            addr: cfg.relay.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(cfg.relay.listen).map_err(bind_err)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
        let socket = runtime.wrap_udp_socket(socket).map_err(bind_err)?;
        Self::bind_with(cfg, tls, viewer_tls, token_key, socket, None).await
    }

    /// As [`Relay::bind`], with the gateways' QUIC endpoint on `socket` and origin
    /// connections from `dialer` (the in-process harness gives its in-memory network's).
    pub async fn bind_with(
        cfg: &RelayConfig,
        tls: &TlsFiles,
        viewer_tls: Option<&TlsFiles>,
        token_key: Option<&[u8]>,
        socket: std::sync::Arc<dyn quinn::AsyncUdpSocket>,
        dialer: Option<Arc<dyn crate::egress::OriginDialer>>,
    ) -> Result<Self, RelayError> {
        let revoked_file = cfg.tls.revoked.clone();
        let revoked_seen = revoked_file.as_deref().map(tunnel_io::watched::version);
        let revoked = tunnel_io::Revoked::new(match &revoked_file {
            Some(f) => crate::revocation::load(f)?,
            None => tunnel_io::RevocationList::default(),
        });
        let server = tls.relay_quic(cfg.tunnel.quinn(), revoked.clone())?;
        let bind_err = |source| RelayError::Bind {
            addr: cfg.relay.listen,
            source,
        };
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime")))?;
        // each connection's packets leave one by one at its controller's rate
        let socket = tunnel_io::PacedSocket::new(socket);
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            tunnel_io::transport::endpoint_config(tunnel_io::transport::RELAY_CID_LEN),
            Some(server.clone()),
            socket.clone(),
            runtime,
        )
        .map_err(bind_err)?;
        let egress = Egress::new(&cfg.egress)
            .map_err(RelayError::Config)?
            .with_dialer(dialer);
        // pulled answers and striped uploads hold bytes from the same budgets
        let max_body =
            (cfg.egress.max_request_body_bytes > 0).then_some(cfg.egress.max_request_body_bytes);
        let stripes = stripe::Stripes::default().with_limit(max_body);
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
            max_body,
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
            chunk_intake: Budget::new(
                "canopy_relay_chunk_intake_bytes",
                INTAKE_PER_GATEWAY,
                INTAKE_GLOBAL,
            ),
            auction: crate::auction::AuctionSink::open(&cfg.auction)
                .map_err(|source| RelayError::Journal {
                    path: cfg.auction.journal.clone(),
                    source,
                })?
                .map(|a| {
                    let a = Arc::new(a);
                    crate::auction::AuctionSink::keep_folding(&a);
                    a
                }),
            jetstream: crate::jetstream::JetStreamSink::start(&cfg.jetstream)
                .await
                .map_err(RelayError::Config)?,
            relayed: Arc::new(Relayed::new(relayed_config(cfg))),
            revoked,
            fleet: Arc::new(crate::fleet::FleetState::new(Duration::from_millis(
                cfg.fleet.offline_after_ms,
            ))),
        };
        let vtls = viewer_tls.unwrap_or(tls);
        let mut own_certs = vec![tls.own.clone()];
        if !Arc::ptr_eq(&vtls.own, &tls.own) {
            own_certs.push(vtls.own.clone());
        }
        own_certs.extend(state.jetstream.as_ref().and_then(|j| j.own_cert()));
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
        let fleet_http = match cfg.fleet.listen {
            Some(a) => {
                let token = tunnel_io::admin_token::read_or_make_token(&cfg.fleet.token_file)
                    .map_err(|e| {
                        RelayError::Config(format!(
                            "fleet.token_file {}: {e}",
                            cfg.fleet.token_file.display()
                        ))
                    })?;
                let tls = match cfg.fleet.tls {
                    true => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                        vtls.viewer_rustls(&[b"http/1.1"])?,
                    ))),
                    false => None,
                };
                Some((bind_tcp(a).await?, Arc::<str>::from(token), tls))
            }
            None => None,
        };
        let state = Arc::new(state);
        let viewers = Arc::new(Viewers {
            fleet: state.fleet.clone(),
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
            socket,
            server,
            revoked_file: revoked_file.zip(revoked_seen),
            own_certs,
            transport: cfg.tunnel.clone(),
            state,
            viewers,
            viewer_http,
            viewer_https,
            viewer_h3,
            fleet_http,
        })
    }

    /// The fleet view's address, when `[fleet] listen`.
    pub fn fleet_addr(&self) -> Option<SocketAddr> {
        self.fleet_http
            .as_ref()
            .and_then(|(l, _, _)| l.local_addr().ok())
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
        tokio::spawn(self.state.fleet.clone().run());
        if let Some((l, token, tls)) = self.fleet_http.take() {
            tokio::spawn(crate::fleet::page::serve(
                l,
                tls,
                self.state.fleet.clone(),
                self.state.auction.clone(),
                self.state.name.clone(),
                token,
            ));
        }
        for own in std::mem::take(&mut self.own_certs) {
            tokio::spawn(own.run());
        }
        if let Some((f, seen)) = self.revoked_file.take() {
            tokio::spawn(crate::revocation::watch(
                f,
                seen,
                self.state.revoked.clone(),
            ));
        }
        info!(addr = ?self.endpoint.local_addr().ok(), "relay listening (HTTP/3)");
        while let Some(incoming) = self.endpoint.accept().await {
            let state = self.state.clone();
            let remote = incoming.remote_address();
            let transport = self.transport.connection();
            let signal = transport.signal;
            let restart = transport.restart;
            self.socket.pace(remote, &transport.pace);
            let mut server = self.server.clone();
            server.transport_config(transport.config);
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
                            serve_connection(state, conn, restart).await
                        }
                        Err(e) => info!(error = %e, "handshake refused"),
                    }
                }
                .instrument(tracing::info_span!("gateway", %remote)),
            );
        }
    }
}

async fn serve_connection(
    state: Arc<State>,
    conn: quinn::Connection,
    restart: Arc<tunnel::congestion::Restart>,
) {
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
    let (gateway_name, scope) = crate::session::gateway_names(&conn);
    let identity = state.sessions.identity(&scope);
    if let Some(leaf) = crate::session::peer_leaf(&conn) {
        tokio::spawn(close_when_invalid(
            conn.clone(),
            leaf,
            state.revoked.subscribe(),
        ));
    }
    let quic = tunnel_io::quic::Connection::new(conn.clone(), state.small_first);
    let ctx = Arc::new(ConnCtx {
        identity,
        conn_id: conn.stable_id(),
        joined: std::sync::Mutex::new(None),
        restart,
        handshake_rtt: conn.rtt(),
        gateway_name,
        scope,
        bulk: quic.bulk_marks(),
    });
    metrics::gauge!("canopy_relay_gateways_connected").increment(1.0);
    // opened and closed here only, in pairs: the fleet's count of connections
    state.fleet.opened(&ctx.scope);
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
    state.fleet.closed(&ctx.scope);
    info!(reason = ?conn.close_reason(), "gateway disconnected");
}

/// Closes `conn` as soon as the revocation list names its certificate, or when the
/// certificate expires; ends with the connection.
async fn close_when_invalid(
    conn: quinn::Connection,
    leaf: rustls::pki_types::CertificateDer<'static>,
    mut list: tokio::sync::watch::Receiver<Arc<tunnel_io::RevocationList>>,
) {
    let expires_in = crate::session::valid_for(&leaf);
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    loop {
        if list.borrow_and_update().contains(leaf.as_ref()) {
            warn!("the gateway's certificate is revoked: connection closed");
            metrics::counter!("canopy_relay_revoked_closes_total").increment(1);
            conn.close(REVOKED_CLOSE, b"certificate revoked");
            return;
        }
        tokio::select! {
            changed = list.changed() => if changed.is_err() { return },
            _ = &mut expiry => {
                warn!("the gateway's certificate expired: connection closed");
                conn.close(REVOKED_CLOSE, b"certificate expired");
                return;
            }
            _ = conn.closed() => return,
        }
    }
}

/// The application close code of a connection whose certificate was revoked.
const REVOKED_CLOSE: quinn::VarInt = quinn::VarInt::from_u32(0x52_45_56);

async fn handle(state: Arc<State>, ctx: &ConnCtx, req: Request<()>, stream: Stream) {
    let started = tunnel_io::clock::now();
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
        .record(tunnel_io::clock::since(started).as_secs_f64());
    debug!(%method, %target, %status, class = c, ms = tunnel_io::clock::since(started).as_millis() as u64, "done");
}

enum Target {
    Local,
    /// The embedded auction.
    Auction,
    /// The JetStream bid sink.
    JetStream,
    Connect(tokio::net::TcpStream),
    Forward(Origin),
    /// A keyed request to an allowlisted origin: its connection is taken once its body is
    /// whole (`origin::forward_whole`).
    ForwardWhole(OriginKey),
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
        if req.uri().path() == wire::probe::PROBE_PATH {
            return crate::probe::sink(&mut stream).await;
        }
        if req.uri().path() == wire::telemetry::TELEMETRY_PATH {
            if req.method() != Method::POST {
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                return refuse(
                    &mut stream,
                    Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "telemetry is a POST"),
                )
                .await;
            }
            return crate::fleet::intake(&state.fleet, ctx, &mut stream).await;
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
    if wire::stripe::StripeHead::marked(req.headers()) {
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
    match prepare(state, &req, publisher.is_some()).await {
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
        Ok(Target::Forward(origin)) => forward(state, ctx, req, stream, origin, class).await,
        Ok(Target::ForwardWhole(key)) => match publisher {
            Some(p) => forward_whole(state, ctx, req, stream, key, class, p).await,
            None => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
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

/// The most a gateway's hello may have a new connection's window resume at: half the
/// bandwidth-delay product of 160 Mbit/s at 100 ms. The gateway says what its link carried;
/// without a bound one saying too much would have the relay burst into its own uplink,
/// which every gateway shares.
const RESUME_MAX_WINDOW: u64 = 1 << 20;

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
            // a returning link: the controller resumes its search from half the window
            // that carried its recent best (careful resume, as the gateway's own does for
            // uploads when the path joins)
            if let Some(rate) = wire::resume_down_of(&h(wire::HDR_RESUME_DOWN)) {
                let window = tunnel::congestion::careful_resume_window(rate, ctx.handshake_rtt)
                    .min(RESUME_MAX_WINDOW);
                debug!(path = %name, window, "resuming the connection's window");
                ctx.restart.resume(window);
            }
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

/// Answers 204 No Content and ends the stream.
pub(crate) async fn no_content(stream: &mut Stream) -> StatusCode {
    let resp = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(())
        .unwrap_or_default();
    if stream.send_response(resp).await.is_ok() {
        let _ = stream.finish().await;
    }
    StatusCode::NO_CONTENT
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
