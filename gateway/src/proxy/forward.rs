//! A request through the bond: the tunnelled head, the body kept, streamed or striped,
//! copies raced on paths, each attempt up to the response head, and resends when a path
//! dies and the request is safe to send again.

use super::whole_body::{device_fault, read_whole, unread_body, unread_status};
use super::*;
use crate::body_spool::{SpoolError, Taken};
use crate::stripe::BodyReadError;
use tunnel::wire::stripe::StripeHead;

/// Headers for the tunnelled request: hop-by-hop removed, Via, class, idempotency key.
pub(crate) fn tunnel_headers(
    state: &State,
    device: &http::HeaderMap,
    version: http::Version,
    class: TrafficClass,
) -> http::HeaderMap {
    let mut headers = device.clone();
    hop::strip_hop_by_hop(&mut headers);
    hop::strip_private(&mut headers);
    // HTTP/3 carries the host in :authority; a Host header that disagrees is an error there.
    headers.remove(header::HOST);
    hop::append_via(&mut headers, hop::via_protocol(version), &state.name);
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
    /// Over the relay's request body limit (a striped body of unknown length).
    #[error("request body over the relay's limit")]
    OverRelayLimit,
    /// The device's body could not be read: it went quiet, or broke off.
    #[error("{0}")]
    Device(BodyReadError),
    /// A striped body's chunks failed.
    #[error("striped body: {0}")]
    Stripe(String),
    /// Sending it on failed.
    #[error("{0}")]
    Send(String),
}

impl UploadError {
    /// What a streamed body's pump failed with: the device's own fault when its body
    /// went quiet or broke off.
    fn of_pump(e: PumpError) -> Self {
        let PumpError::Source(s) = e else {
            return UploadError::Send(e.to_string());
        };
        if s.is::<http_body_util::LengthLimitError>() {
            return UploadError::OverLimit;
        }
        match device_fault::<hyper::Error>(&*s) {
            Some(e) => UploadError::Device(e),
            None => UploadError::Send(PumpError::Source(s).to_string()),
        }
    }
}

/// Largest request body kept in memory so the request can be sent again on another path
/// (or redundantly): bids, check-ins, and idempotent requests up to this size.
pub(crate) const REPLAY_MAX: u64 = 1024 * 1024;

/// A request body: kept whole (replayable), streamed once, spooled to disk (to be
/// striped), or striped over the paths (the head's stream carries none; it waits for the
/// chunks' outcome).
pub(crate) enum ReqBody {
    Kept(Bytes),
    Once(Option<Streamed>),
    /// Always becomes `Striped` before an attempt (`forward_body`).
    Spooled(crate::body_spool::Spooled),
    /// The chunks' outcome, and the marks of this copy of the head.
    Striped(crate::stripe::Outcome, StripeHead),
}

/// A body streamed from the device as it comes: what went to the body spool before it
/// outgrew its room (if any), what was read already, then the rest.
pub(crate) struct Streamed {
    spooled: Option<crate::body_spool::Spooled>,
    prefix: Bytes,
    rest: Incoming,
}

impl From<Incoming> for Streamed {
    fn from(rest: Incoming) -> Self {
        Self {
            spooled: None,
            prefix: Bytes::new(),
            rest,
        }
    }
}

/// A body without a declared length (chunked), read up to a bound.
enum Gathered {
    /// The whole body.
    Whole(Bytes),
    /// More than the bound: it streams on.
    Beyond(Streamed),
}

/// The device's answer when its body could not be taken into the body spool.
fn unspooled(e: &SpoolError, limit: u64) -> Response<Body> {
    match e {
        SpoolError::Read(e) => unread_body(e),
        SpoolError::OverLimit(_) => body_limit_exceeded(limit),
        SpoolError::Disk { .. } => {
            tracing::warn!(error = %e, "request body lost in the body spool");
            synthetic(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the gateway could not keep the request body",
            )
        }
    }
}

/// Reads a chunked body into memory while it stays within `max` bytes, so that the request
/// can be sent again, or striped, when its path dies: a body streamed once fails with its
/// path (nginx buffers request bodies before it proxies them, by default, for the same
/// reason). A longer body, or one still coming at `until`, streams on (or goes to the body
/// spool) from where this stopped.
async fn gather(
    mut inc: Incoming,
    max: usize,
    idle: Duration,
    until: Option<tokio::time::Instant>,
) -> Result<Gathered, BodyReadError> {
    let mut buf = BytesMut::new();
    let filled = crate::stripe::fill(&mut inc, &mut buf, max.saturating_add(1), idle);
    let late = match until {
        // `fill` keeps what it read in `buf` when it is dropped between frames
        Some(t) => match tokio::time::timeout_at(t, filled).await {
            Ok(r) => r.map(|_| false)?,
            Err(_) => true,
        },
        None => filled.await.map(|_| false)?,
    };
    Ok(if late || buf.len() > max {
        Gathered::Beyond(Streamed {
            spooled: None,
            prefix: buf.freeze(),
            rest: inc,
        })
    } else {
        Gathered::Whole(buf.freeze())
    })
}

/// The request as sent on each attempt.
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: http::HeaderMap,
    pub(crate) class: TrafficClass,
}

impl Outgoing {
    pub(super) fn request(
        &self,
        extra: &[(header::HeaderName, HeaderValue)],
    ) -> Option<Request<()>> {
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
    pub(crate) reason: String,
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

pub(super) async fn forward(state: &State, req: Request<Incoming>, route: Route) -> Response<Body> {
    let (parts, body) = req.into_parts();
    forward_parts(state, parts, DeviceBody::Incoming(body), route).await
}

/// A device's request body: as it comes, or already read (and changed: the privacy gate).
pub(crate) enum DeviceBody {
    Incoming(Incoming),
    Kept(Bytes),
}

/// [`forward`] of a request whose head and body are apart.
pub(super) async fn forward_parts(
    state: &State,
    parts: http::request::Parts,
    device_body: DeviceBody,
    route: Route,
) -> Response<Body> {
    let limit = state.max_body.unwrap_or(u64::MAX);
    let declared = match &device_body {
        DeviceBody::Kept(b) => Some(b.len() as u64),
        DeviceBody::Incoming(_) => hop::declared_length(&parts.headers),
    };
    if declared.is_some_and(|n| n > limit) {
        return body_limit_exceeded(limit);
    }
    let class = route.class;
    let mut headers = tunnel_headers(state, &parts.headers, parts.version, class);
    if let Some(n) = declared.filter(|_| matches!(device_body, DeviceBody::Kept(_))) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let out = Outgoing {
        method: parts.method.clone(),
        uri: route.target,
        headers,
        class,
    };
    let safe = class.is_transactional() || out.method.is_idempotent();
    let incoming = match device_body {
        DeviceBody::Kept(b) => {
            return forward_body(state, out, ReqBody::Kept(b), safe, declared, limit).await
        }
        DeviceBody::Incoming(i) => i,
    };
    let body = if incoming.is_end_stream() {
        ReqBody::Kept(Bytes::new())
    } else if safe && declared.is_some_and(|n| n <= REPLAY_MAX.min(limit)) {
        match read_whole(incoming, REPLAY_MAX.min(limit), state.body_idle).await {
            Ok(b) => ReqBody::Kept(b),
            Err(e) => return e.answer(),
        }
    } else if declared.is_none() {
        // held at most `chunked_hold` when it may go on as a stream (not a bid, a check-in)
        let spoolable = crate::stripe::may_carry(&out.method, out.class);
        let until = tokio::time::Instant::now() + state.chunked_hold;
        let max = REPLAY_MAX.min(limit) as usize;
        match gather(incoming, max, state.body_idle, spoolable.then_some(until)).await {
            Ok(Gathered::Whole(b)) => ReqBody::Kept(b),
            Ok(Gathered::Beyond(s)) if s.prefix.len() as u64 > limit => {
                return body_limit_exceeded(limit)
            }
            // longer than kept in memory: to disk, then striped (it then survives the loss
            // of its path), when it may go as a stripe
            Ok(Gathered::Beyond(s)) => match &state.body_spool {
                Some(spool) if spoolable => {
                    match spool
                        .take(s.prefix, s.rest, limit, state.body_idle, until)
                        .await
                    {
                        Ok(Taken::Whole(f)) => ReqBody::Spooled(f),
                        Ok(Taken::Streams {
                            spooled,
                            next,
                            rest,
                        }) => ReqBody::Once(Some(Streamed {
                            spooled,
                            prefix: next,
                            rest,
                        })),
                        Err(e) => return unspooled(&e, limit),
                    }
                }
                _ => ReqBody::Once(Some(s)),
            },
            Err(e) => return unread_body(&e),
        }
    } else {
        ReqBody::Once(Some(incoming.into()))
    };
    forward_body(state, out, body, safe, declared, limit).await
}

/// Sends `out` with `body` through the bond: striped, raced, sent again as it allows.
async fn forward_body(
    state: &State,
    out: Outgoing,
    body: ReqBody,
    safe: bool,
    declared: Option<u64>,
    limit: u64,
) -> Response<Body> {
    let class = out.class;
    let replayable = safe && matches!(body, ReqBody::Kept(_));
    let unit = Unit {
        class,
        up_bytes: match &body {
            ReqBody::Kept(b) => b.len() as u64,
            ReqBody::Spooled(f) => f.len(),
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
    // and its head (no body) may be sent again when its path dies. A body sent without a
    // length (and not spooled whole) goes as a stripe of unknown length.
    let total = unit.up_bytes;
    let length = match &body {
        ReqBody::Once(_) => declared,
        _ => Some(total),
    };
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
    let protect =
        !replayable && length.is_none_or(|n| n > 0) && crate::stripe::may_carry(&out.method, class);
    if protect || crate::stripe::worth_it(&state.bond, &out.method, class, total) {
        let source = match std::mem::replace(&mut body, ReqBody::Kept(Bytes::new())) {
            ReqBody::Kept(b) => Some(crate::stripe::Source::Kept(b)),
            ReqBody::Spooled(f) => Some(crate::stripe::Source::Spooled(f)),
            ReqBody::Once(Some(s)) => Some(crate::stripe::Source::spooled_then(
                s.spooled,
                s.prefix,
                s.rest,
                state.body_idle,
            )),
            other => {
                body = other;
                None
            }
        };
        if let Some(source) = source {
            let id = crate::stripe::new_id();
            // (none for a body of unknown length: the relay's origin request goes chunked)
            if let Some(n) = length {
                out.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            }
            let (guard, outcome) = crate::stripe::start(
                state.bond.clone(),
                class,
                id,
                (length, limit),
                source,
                state.response_timeout,
            );
            _chunks = Some(guard);
            body = ReqBody::Striped(outcome, StripeHead { id, number: 0 });
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
    let deadline = tunnel_io::clock::now() + state.response_timeout;
    let mut last: Option<AttemptError> = None;
    loop {
        // late binding: bulk waits here (not in a slow path's queue) until a path has room
        while !striped
            && !state.bond.has_room(&unit, &excluded)
            && tunnel_io::clock::now() < deadline
        {
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
                if !retry || (!striped && tunnel_io::clock::now() >= deadline) {
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
            // never here: `forward_body` stripes every spooled body (a POST, PUT, ... that
            // is not kept); sent as none, it would fail as a body already used
            ReqBody::Spooled(_) => ReqBody::Once(None),
            ReqBody::Striped(o, head) => {
                // each copy of a striped head is numbered: the relay answers the newest
                head.number += 1;
                ReqBody::Striped(o.clone(), *head)
            }
        };
        attempts.push(attempt_on(
            state,
            out.clone(),
            b,
            p,
            unit,
            limit,
            OnDeath::Abandon,
        ));
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

/// What a copy of a request does when its path is declared dead (silent or closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDeath {
    /// Fail at once (retryable): the caller sends the request again elsewhere.
    Abandon,
    /// Keep waiting for the answer while the path is dead, up to this long after it first
    /// died (the copy may already sit in the link's queue: a collapsed link is silent, not
    /// cut, and its answer comes once the queue drains). A path that answers again carries
    /// the copy on, but the time is not given back: a link that keeps going silent while
    /// its queue drains in bursts ends the copy once it has had it. For requests the relay
    /// answers once per key, whose other copies may go meanwhile.
    Hold(Duration),
}

/// Resolves when a copy on the path watched is given up under `on_death`.
async fn until_given_up(
    watch: &mut tokio::sync::watch::Receiver<crate::bond::PathSignal>,
    on_death: OnDeath,
) {
    let mut given_up_at = None;
    loop {
        crate::bond::until_dead(watch).await;
        let OnDeath::Hold(hold) = on_death else {
            return;
        };
        let at = *given_up_at.get_or_insert_with(|| tokio::time::Instant::now() + hold);
        match tokio::time::timeout_at(at, watch.wait_for(|s| !s.dead)).await {
            // answering again: the copy goes on
            Ok(Ok(_)) => continue,
            _ => return,
        }
    }
}

/// One copy of the request on one path, up to the response head; `on_death` says what it
/// does when the path dies.
pub(crate) async fn attempt_on(
    state: &State,
    out: Arc<Outgoing>,
    body: ReqBody,
    id: PathId,
    unit: &Unit,
    limit: u64,
    on_death: OnDeath,
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
    let died = async move { until_given_up(&mut watch, on_death).await };
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
    let Some(mut h3req) = out.request(&[]) else {
        return Err(fail(
            false,
            StatusCode::BAD_REQUEST,
            "cannot build the tunnelled request".into(),
        ));
    };
    if let ReqBody::Striped(_, head) = &body {
        head.write(h3req.headers_mut());
    }
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
            ReqBody::Once(Some(Streamed {
                spooled,
                prefix,
                rest,
            })) => {
                let n = prefix.len() as u64 + spooled.as_ref().map_or(0, |f| f.len());
                let sent_prefix = async {
                    if let Some(mut f) = spooled {
                        loop {
                            let piece = f
                                .read(crate::stripe::CHUNK)
                                .await
                                .map_err(|e| PumpError::Source(e.into()))?;
                            if piece.is_empty() {
                                break;
                            }
                            let k = piece.len() as u64;
                            send.send_data(piece).await?;
                            up.increment(k);
                        }
                    }
                    if !prefix.is_empty() {
                        let k = prefix.len() as u64;
                        send.send_data(prefix).await?;
                        up.increment(k);
                    }
                    Ok::<(), PumpError>(())
                }
                .await;
                match sent_prefix {
                    // the device's idle time counts from here, not while the spooled part went
                    Ok(()) => {
                        let limited = Limited::new(
                            tunnel_io::IdleBody::new(rest, body_idle),
                            usize::try_from(limit.saturating_sub(n)).unwrap_or(usize::MAX),
                        );
                        pump_body(limited, &mut send, Some(&up)).await
                    }
                    Err(e) => {
                        // a body cut short must never end as if whole
                        tunnel_io::SendData::abort(&mut send);
                        Err(e)
                    }
                }
                .map(|_| ())
                .map_err(UploadError::of_pump)
            }
            ReqBody::Once(None) | ReqBody::Spooled(_) => Err(UploadError::Send(
                "request body already used by another copy".to_string(),
            )),
            ReqBody::Striped(mut outcome, _) => {
                // the head has no body; it is done when every chunk is
                let _ = send.finish().await;
                match outcome.wait_for(Option::is_some).await {
                    Ok(r) => match &*r {
                        Some(Err(crate::stripe::StripeError::OverLimit(_))) => {
                            Err(UploadError::OverLimit)
                        }
                        Some(Err(crate::stripe::StripeError::OverRelayLimit)) => {
                            Err(UploadError::OverRelayLimit)
                        }
                        Some(Err(crate::stripe::StripeError::Device(e))) => {
                            Err(UploadError::Device(e.clone()))
                        }
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
                    Ok(Err(UploadError::OverRelayLimit)) => {
                        return Err(fail(false, StatusCode::PAYLOAD_TOO_LARGE, "request body over the relay's limit".to_string()));
                    }
                    Ok(Err(UploadError::Device(e))) => {
                        return Err(fail(false, unread_status(&e), e.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_streamed_body_that_went_quiet_is_the_devices_fault() {
        let idle = Duration::from_secs(30);
        // as `pump_body` reports it: the `Limited` `IdleBody` of the device's body
        let quiet: crate::BoxError = Box::new(tunnel_io::IdleError::<hyper::Error>::Idle(idle));
        let e = UploadError::of_pump(PumpError::Source(quiet));
        assert!(matches!(e, UploadError::Device(BodyReadError::Idle(d)) if d == idle));
        let over = Limited::new(http_body_util::Full::new(Bytes::from(vec![0u8; 11])), 10)
            .collect()
            .await
            .expect_err("over its limit");
        assert!(matches!(
            UploadError::of_pump(PumpError::Source(over)),
            UploadError::OverLimit
        ));
        // the spool's own disk is not the device
        let disk: crate::BoxError = Box::new(std::io::Error::other("disk"));
        assert!(matches!(
            UploadError::of_pump(PumpError::Source(disk)),
            UploadError::Send(_)
        ));
    }
}
