//! The relay's JetStream bid sink: bids for `[jetstream] host` are published to a NATS
//! JetStream stream that several relays share, instead of going to an origin over HTTP.
//!
//! - Each bid is published once per key: its message id (`Nats-Msg-Id`, from the gateway
//!   and the idempotency key, see [`policy::bid_id`]) makes the servers drop a copy within
//!   the stream's duplicate window, whichever relay sent it.
//! - Every key's outcome (the request's fingerprint, the stream and sequence) is kept in a
//!   key-value bucket, so a retry after the window, or a copy that reached another relay,
//!   gets the first answer, and a key reused for another request is refused (422).
//! - While the cluster elects a leader (a server died) a publish keeps trying with the
//!   same message id for `publish_timeout_ms`; then the relay answers 503 and the
//!   gateway keeps the bid in its journal and sends it again later.
//!
//! - TLS to the servers (a private CA, a client certificate) is built in [`tls`]; the
//!   relay's credentials (user, token, nkey, credentials file) in [`auth`].
//!
//! The message carries the request's body and, as headers, the gateway (`Canopy-Gateway`),
//! the key (`Idempotency-Key`), the edge time (`Canopy-Edge-Time`), the method, target,
//! content type and fingerprint. Answers: `201` `{"accepted":true,"key","stream","seq"}`.

mod auth;
mod policy;
mod tls;

use crate::config::JetStreamSection;
use crate::error::Refusal;
use crate::server::{no_room, read_capped, refuse, Capped, Intake, Stream};
use crate::session::Publisher;
use crate::sink_answer::answer;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use policy::{Judged, Kept, Retry};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};
use tunnel::wire;

/// Largest bid body.
const MAX_BODY: u64 = 256 * 1024;
/// One request to the servers (a publish's ack, a bucket read) waits at most this long
/// before it is tried again.
const ATTEMPT: Duration = Duration::from_secs(2);

/// The sink: a NATS client (reconnecting on its own) and, once reached, the stream and
/// bucket.
pub(crate) struct JetStreamSink {
    host: String,
    /// The client pair, when the servers verify clients: the relay watches it on disk.
    own_cert: Option<Arc<tunnel_io::own_cert::OwnCert>>,
    cfg: JetStreamSection,
    js: jetstream::Context,
    /// The stream and the bucket, once made or found.
    bus: watch::Receiver<Option<Arc<Bus>>>,
}

/// The stream and the bucket, made if missing.
struct Bus {
    stream: stream::Stream,
    keys: kv::Store,
}

/// Why a bid was not published.
#[derive(Debug, thiserror::Error)]
enum BusError {
    #[error("the NATS servers did not answer in time ({0})")]
    Unavailable(String),
    #[error("the bid is over the servers' largest message")]
    TooLarge,
}

impl JetStreamSink {
    /// The sink of a config, connecting in the background; `None` when off.
    pub(crate) async fn start(cfg: &JetStreamSection) -> Result<Option<Self>, String> {
        let Some(host) = &cfg.host else {
            return Ok(None);
        };
        let opts = async_nats::ConnectOptions::new()
            .name("canopy-relay")
            .retry_on_initial_connect()
            .connection_timeout(ATTEMPT);
        let (mut opts, identity) = auth::apply(cfg, opts).await.map_err(|e| e.to_string())?;
        let mut own_cert = None;
        if let Some(tls) = tls::client_config(cfg).map_err(|e| e.to_string())? {
            opts = opts.require_tls(true).tls_client_config(tls.config);
            own_cert = tls.own;
        }
        let client = opts
            .connect(cfg.servers.clone())
            .await
            .map_err(|e| format!("jetstream.servers: {e}"))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ATTEMPT);
        info!(host, servers = ?cfg.servers, stream = cfg.stream, identity, "jetstream sink configured");
        let (tx, bus) = watch::channel(None);
        tokio::spawn(prepare(js.clone(), cfg.clone(), tx));
        Ok(Some(Self {
            own_cert,
            host: host.to_ascii_lowercase(),
            cfg: cfg.clone(),
            js,
            bus,
        }))
    }

    /// The client certificate the servers get, to be watched on disk
    /// (`OwnCert::run`, started with the relay's own).
    pub(crate) fn own_cert(&self) -> Option<Arc<tunnel_io::own_cert::OwnCert>> {
        self.own_cert.clone()
    }

    /// Whether a request for `host` is for this sink.
    pub(crate) fn is_for(&self, host: &str) -> bool {
        self.host.eq_ignore_ascii_case(host)
    }

    async fn bus(&self, budget: Duration) -> Result<Arc<Bus>, BusError> {
        let mut rx = self.bus.clone();
        let ready = match tokio::time::timeout(budget, rx.wait_for(Option::is_some)).await {
            Ok(Ok(b)) => b.clone(),
            _ => None,
        };
        ready.ok_or_else(|| {
            BusError::Unavailable("the stream and bucket are not reachable yet".into())
        })
    }

    /// Serves one request from the gateway of `scope`.
    pub(crate) async fn serve(
        &self,
        scope: &str,
        intake: Intake<'_>,
        req: &Request<()>,
        stream: &mut Stream,
        publisher: Option<Publisher>,
    ) -> StatusCode {
        if req.method() != Method::POST {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return answer(
                stream,
                publisher,
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from("{\"error\":\"the bid sink takes POST\"}\n"),
                false,
            )
            .await;
        }
        let Some(key) = wire::idempotency_key(req.headers()).map(str::to_owned) else {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return answer(
                stream,
                publisher,
                StatusCode::BAD_REQUEST,
                Bytes::from(
                    "{\"error\":\"a bid needs its Idempotency-Key (send it as class bid)\"}\n",
                ),
                false,
            )
            .await;
        };
        let body = match read_capped(stream, MAX_BODY, intake).await {
            Capped::Body(b, _) => b,
            // nothing stands for its key: a later copy may try again
            Capped::NoRoom => return refuse(stream, no_room()).await,
            Capped::TooLarge => {
                return answer(
                    stream,
                    publisher,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Bytes::from(format!(
                        "{{\"error\":\"a bid is at most {MAX_BODY} bytes\"}}\n"
                    )),
                    false,
                )
                .await
            }
            // the bid did not arrive: nothing stands for its key
            Capped::Failed => return StatusCode::BAD_REQUEST,
        };
        let target = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // what the gateway says the key stands for; our own reading when it did not say
        let fingerprint = req
            .headers()
            .get(wire::HDR_FINGERPRINT)
            .and_then(|v| v.to_str().ok())
            .and_then(ledger::Fingerprint::from_hex)
            .unwrap_or_else(|| ledger::fingerprint(req.method().as_str(), &target, &body));
        let bid = Bid {
            id: policy::bid_id(scope, &key),
            subject: policy::subject(&self.cfg.subject, scope),
            scope,
            key: &key,
            target: &target,
            fingerprint,
            edge: req
                .headers()
                .get(wire::HDR_EDGE_TIME)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            content_type: req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream"),
            body,
        };
        let started = tunnel_io::clock::now();
        let result = self.record(&bid).await;
        metrics::histogram!("canopy_relay_jetstream_publish_seconds")
            .record(tunnel_io::clock::since(started).as_secs_f64());
        let recorded = match result {
            Ok(r) => r,
            Err(BusError::TooLarge) => {
                metrics::counter!("canopy_relay_jetstream_bids_total", "result" => "too_large")
                    .increment(1);
                return answer(
                    stream,
                    publisher,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Bytes::from("{\"error\":\"the bid is over the bus's largest message\"}\n"),
                    false,
                )
                .await;
            }
            Err(e @ BusError::Unavailable(_)) => {
                metrics::counter!("canopy_relay_jetstream_bids_total", "result" => "unavailable")
                    .increment(1);
                warn!(key, error = %e, "jetstream sink: bid not published");
                // not recorded: dropping the publisher lets the gateway's next copy try
                drop(publisher);
                return refuse(
                    stream,
                    Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the bid bus is unavailable: {e}"),
                    ),
                )
                .await;
            }
        };
        metrics::counter!("canopy_relay_jetstream_bids_total", "result" => recorded.as_str())
            .increment(1);
        let (kept, copy) = match recorded {
            Recorded::Published(k) => (k, false),
            Recorded::Duplicate(k) | Recorded::Replayed(k) => (k, true),
            Recorded::Conflict => {
                drop(publisher);
                return refuse(
                    stream,
                    Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "this idempotency key was used for another request",
                    ),
                )
                .await;
            }
        };
        let body = Bytes::from(kept.answer(&key));
        answer(stream, publisher, StatusCode::CREATED, body, copy).await
    }

    /// Publishes a bid unless its key is known: how it went, and the key's record.
    async fn record(&self, bid: &Bid<'_>) -> Result<Recorded, BusError> {
        let budget = Duration::from_millis(self.cfg.publish_timeout_ms);
        let started = tunnel_io::clock::now();
        let bus = self.bus(budget).await?;
        let left = || budget.saturating_sub(tunnel_io::clock::since(started));
        let found = retrying(left(), || bus.keys.get(bid.id.clone())).await?;
        match policy::judge(found.as_deref(), &bid.fingerprint) {
            Judged::Replay(k) => return Ok(Recorded::Replayed(k)),
            Judged::Conflict => return Ok(Recorded::Conflict),
            Judged::Publish => {}
        }
        let mut msg = jetstream::message::PublishMessage::build()
            .payload(bid.body.clone())
            .message_id(&bid.id)
            .header("Canopy-Gateway", bid.scope)
            .header("Idempotency-Key", bid.key);
        if !bid.edge.is_empty() {
            msg = msg.header("Canopy-Edge-Time", bid.edge);
        }
        let msg = msg
            .header("Canopy-Method", "POST")
            .header("Canopy-Target", bid.target)
            .header("Canopy-Fingerprint", bid.fingerprint.hex().as_str())
            .header("Content-Type", bid.content_type);
        let ack = retrying(left(), || async {
            let ack = self
                .js
                .send_publish(bid.subject.clone(), msg.clone())
                .await?
                .await?;
            if ack.duplicate && ack.sequence == 0 {
                // a clustered server may call a copy still being stored a duplicate
                // without its sequence yet: ask again
                return Err(jetstream::context::PublishError::new(
                    jetstream::context::PublishErrorKind::Other,
                ));
            }
            Ok(ack)
        })
        .await?;
        let kept = Kept {
            fingerprint: bid.fingerprint.hex(),
            stream: ack.stream.clone(),
            seq: ack.sequence,
        };
        if ack.duplicate {
            // the servers stored an earlier copy (another relay's, or ours before a
            // restart): it must be this request
            let stored = retrying(left(), || bus.stream.get_raw_message(ack.sequence)).await?;
            let fp = stored
                .headers
                .get("Canopy-Fingerprint")
                .map(|v| v.as_str().to_owned());
            if !policy::same_request(fp.as_deref(), &bid.fingerprint) {
                return Ok(Recorded::Conflict);
            }
        }
        // the key's record, for copies after the window and for other relays; a record
        // already there (another relay's copy won) is the same bid
        let kept_key = retrying(left(), || async {
            match bus.keys.create(&bid.id, Bytes::from(kept.encode())).await {
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(0),
                r => r,
            }
        })
        .await;
        if let Err(e) = kept_key {
            // stored, but its key is not kept: within the duplicate window the message id
            // still guards it; say so rather than fail a bid the stream holds
            metrics::counter!("canopy_relay_jetstream_key_errors_total").increment(1);
            warn!(key = bid.key, error = %e, "jetstream sink: key not kept (the message id still guards it)");
        }
        Ok(if ack.duplicate {
            Recorded::Duplicate(kept)
        } else {
            Recorded::Published(kept)
        })
    }
}

/// Finds or makes the stream and the bucket, trying until it can (the servers may come up
/// after the relay), and hands them to the sink.
async fn prepare(js: jetstream::Context, c: JetStreamSection, tx: watch::Sender<Option<Arc<Bus>>>) {
    let mut warned = false;
    loop {
        match ensure(&js, &c).await {
            Ok(bus) => {
                info!(stream = c.stream, bucket = c.bucket, "jetstream sink ready");
                let _ = tx.send(Some(Arc::new(bus)));
                return;
            }
            Err(e) => {
                if !warned {
                    warn!(error = %e, "jetstream sink: stream or bucket not ready yet; trying again");
                    warned = true;
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn ensure(js: &jetstream::Context, c: &JetStreamSection) -> Result<Bus, BusError> {
    let stream = retrying(ATTEMPT * 2, || {
        js.get_or_create_stream(stream::Config {
            name: c.stream.clone(),
            subjects: vec![format!("{}.>", c.subject)],
            duplicate_window: Duration::from_secs(c.duplicate_window_s),
            num_replicas: c.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
    })
    .await?;
    // the bucket's stream as `nats kv add` makes it; made here rather than with
    // `create_key_value`, which first reads the account's limits in a shape servers
    // before 2.10 (Debian's 2.9) do not answer in
    retrying(ATTEMPT * 2, || {
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{}", c.bucket),
            subjects: vec![format!("$KV.{}.>", c.bucket)],
            max_messages_per_subject: 1,
            max_age: Duration::from_secs(c.keep_keys_s),
            storage: stream::StorageType::File,
            num_replicas: c.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
    })
    .await?;
    let keys = retrying(ATTEMPT * 2, || js.get_key_value(&c.bucket)).await?;
    Ok(Bus { stream, keys })
}

/// One bid on its way to the bus.
struct Bid<'a> {
    id: String,
    subject: String,
    scope: &'a str,
    key: &'a str,
    target: &'a str,
    fingerprint: ledger::Fingerprint,
    edge: &'a str,
    content_type: &'a str,
    body: Bytes,
}

/// How a bid was recorded, with its key's record.
#[derive(Debug)]
enum Recorded {
    /// Stored now.
    Published(Kept),
    /// The servers had it (the message id): the first copy stands.
    Duplicate(Kept),
    /// The bucket had its key: the first answer again.
    Replayed(Kept),
    /// The key stands for another request.
    Conflict,
}

impl Recorded {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Published(_) => "published",
            Self::Duplicate(_) => "duplicate",
            Self::Replayed(_) => "replayed",
            Self::Conflict => "conflict",
        }
    }
}

/// What can fail in a call to the servers: too large never gets better; everything else
/// (no responders, timeouts, a leader election, a lost connection) may.
trait Transient {
    fn too_large(&self) -> bool {
        false
    }
}

impl Transient for jetstream::context::PublishError {
    fn too_large(&self) -> bool {
        self.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded
    }
}
impl Transient for kv::EntryError {}
impl Transient for kv::CreateError {}
impl Transient for stream::RawMessageError {}
impl Transient for jetstream::context::CreateStreamError {}
impl Transient for jetstream::context::KeyValueError {}

/// Runs `call` until it succeeds, for at most `budget` (each try bounded too).
async fn retrying<T, E, F, Fut>(budget: Duration, mut call: F) -> Result<T, BusError>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retry = Retry::new(tunnel_io::clock::now(), budget);
    loop {
        let last = match tokio::time::timeout(
            retry.left(tunnel_io::clock::now()).min(ATTEMPT * 2),
            call(),
        )
        .await
        {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.too_large() => return Err(BusError::TooLarge),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        match retry.next(tunnel_io::clock::now()) {
            Some(at) => {
                metrics::counter!("canopy_relay_jetstream_retries_total").increment(1);
                tokio::time::sleep_until(at.into()).await;
            }
            None => return Err(BusError::Unavailable(last)),
        }
    }
}
