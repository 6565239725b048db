//! Egress to origins: a proxied request checked against the allowlist, sent over a pooled
//! connection, and its answer delivered to the gateway (kept for duplicates when keyed);
//! CONNECT tunnels.

use super::*;

/// Decides what the request is and opens the connection it needs (`keyed`: a bid or
/// check-in with its key admitted, whose origin connection waits for its whole body).
pub(super) async fn prepare(
    state: &State,
    req: &Request<()>,
    keyed: bool,
) -> Result<Target, Refusal> {
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
            OriginStream::Tls(_) | OriginStream::Dialed(_) => Err(Refusal::new(
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
    let limit = body_limit(state, keyed);
    if hop::declared_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the relay's limit of {limit} bytes"),
        ));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let key = OriginKey::new(host, port, tls);
    state.egress.permits(host, port)?;
    if keyed {
        return Ok(Target::ForwardWhole(key));
    }
    open(state, key).await.map(Target::Forward)
}

/// The most a request body may carry: the relay's `max_body`, and for a keyed request
/// what the gateway keeps to send again.
fn body_limit(state: &State, keyed: bool) -> u64 {
    let limit = state.max_body.unwrap_or(u64::MAX);
    if keyed {
        limit.min(KEYED_BODY_MAX)
    } else {
        limit
    }
}

/// An idle pooled connection to `key`'s origin, or a new one.
async fn open(state: &State, key: OriginKey) -> Result<Origin, Refusal> {
    if let Some(s) = state.origins.take(&key) {
        return Ok(Origin::Pooled(key, s));
    }
    let stream = state.egress.connect(&key.host, key.port, key.tls).await?;
    Ok(Origin::Fresh(key, stream))
}

pub(super) async fn tunnel(
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

pub(super) async fn forward(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    stream: Stream,
    origin: Origin,
    class: TrafficClass,
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
    deliver(state, &mut send, class, None, pull, result).await
}

/// A keyed request (a bid or check-in) goes to the origin only whole: one whose body broke
/// on the way then never reached the origin, and its key is free for the next copy.
/// Streamed, the origin could take all of it while the relay saw the stream fail, and the
/// next copy would be delivered a second time. The body is bounded (1 MiB, what the
/// gateway keeps to send again) and its bytes come from the relay's intake budget, held
/// until the origin has it. Its origin connection is taken only then: a slow body holds
/// no connection the origin could close for idleness, and a refused one opens none.
pub(super) async fn forward_whole(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    mut stream: Stream,
    key: OriginKey,
    class: TrafficClass,
    publisher: Publisher,
) -> StatusCode {
    let read = read_capped(&mut stream, body_limit(state, true), state.intake(ctx)).await;
    let (mut send, _recv) = stream.split();
    let (parts, ()) = req.into_parts();
    let result = match read {
        Capped::Body(bytes, grant) => {
            count_bytes(class, bytes.len() as u64, 0);
            match open(state, key).await {
                Ok(origin) => {
                    // the body is whole already: the response timeout runs from now
                    let (done, body_done) = tokio::sync::oneshot::channel();
                    let _ = done.send(());
                    let body = http_body_util::BodyExt::map_err(
                        http_body_util::Full::new(bytes),
                        |never| match never {},
                    );
                    let r = origin_exchange(state, parts, body, body_done, origin).await;
                    drop(grant);
                    r
                }
                // an origin that could not be reached saw nothing: a later copy may try
                // again
                Err(r) => Err(Refusal {
                    unreached: matches!(
                        r.status,
                        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
                    ),
                    ..r
                }),
            }
        }
        refused => Err(match refused {
            Capped::TooLarge => over_limit(),
            Capped::NoRoom => Refusal {
                unreached: true,
                ..no_room()
            },
            _ => Refusal::unreached(StatusCode::BAD_GATEWAY, "request body did not arrive"),
        }),
    };
    deliver(state, &mut send, class, Some(publisher), None, result).await
}

/// Sends the request (head `parts`, `body`) to the origin; the origin's response head.
pub(super) async fn origin_exchange<B>(
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
        OriginStream::Dialed(io) => {
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
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
pub(super) async fn deliver(
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
                over_limit()
            } else {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    format!("origin request failed: {e}"),
                )
            }))
        }
    }
}

/// A body over the relay's request body limit (413).
pub(super) fn over_limit() -> Refusal {
    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, crate::stripe::OVER_LIMIT)
}
