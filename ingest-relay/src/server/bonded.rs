//! What the gateway spreads over its paths: striped request bodies put back together
//! (heads and chunks), and large answers kept for the gateway to pull in chunks.

use super::*;
use tunnel::wire::stripe::StripeHead;

/// Stripe `id` of this gateway, made if new, for a body of `total` bytes: refused when the
/// body is over the relay's limit or the stripe has another length. (A body of unknown
/// length is held to the limit by its stripe, chunk by chunk.)
fn stripe_for(
    state: &State,
    ctx: &ConnCtx,
    id: u64,
    total: Option<u64>,
) -> Result<Arc<stripe::Stripe>, Refusal> {
    if state.max_body.is_some_and(|m| total.is_some_and(|t| t > m)) {
        return Err(over_limit());
    }
    state
        .stripes
        .get(ctx.identity, id, total)
        .map_err(|e| match e {
            stripe::NoStripe::OtherLength => {
                Refusal::new(StatusCode::CONFLICT, "the stripe has another total length")
            }
            stripe::NoStripe::Gone => Refusal::new(
                StatusCode::GONE,
                "this striped request is over at the relay (its answer is no longer kept)",
            ),
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
pub(super) async fn pull(
    state: &State,
    ctx: &ConnCtx,
    req: &Request<()>,
    mut stream: Stream,
) -> StatusCode {
    if req.method() == Method::DELETE {
        return match wire::pull::PullEnd::read(req.headers()) {
            Ok(end) => {
                state.pulls.end(ctx.identity, end.id);
                no_content(&mut stream).await
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
    // a chunk's answer is bulk from its first byte (bids keep the small-first lane); one the
    // body waits for goes ahead of bulk, in its rank (with priorities off, streams take no
    // marks: a mark nobody reads would stay)
    match chunk.urgent {
        _ if !state.small_first => {}
        None => ctx.bulk.mark(stream.send_id()),
        Some(rank) => ctx
            .bulk
            .mark_as(stream.send_id(), tunnel_io::quic::Start::Resend(rank)),
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
                // bytes another request said the gateway has: it may ask for what it lacks
                R::Dropped => StatusCode::RANGE_NOT_SATISFIABLE,
                // a range no body has: asking again cannot help
                R::BeyondEnd | R::BeyondWindow => StatusCode::BAD_REQUEST,
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
pub(super) async fn stripe_chunk(
    state: &State,
    ctx: &ConnCtx,
    req: &Request<()>,
    mut stream: Stream,
) -> StatusCode {
    let chunk = match wire::stripe::StripeChunk::read(req.headers()) {
        Ok(c) => c,
        Err(e) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            let why = format!(
                "a chunk needs canopy-stripe (hex) and canopy-stripe-offset, and \
                 canopy-stripe-total once the body's length is known: {e}"
            );
            return refuse(&mut stream, Refusal::new(StatusCode::BAD_REQUEST, why)).await;
        }
    };
    let wire::stripe::StripeChunk { id, offset, total } = chunk;
    let stripe = match stripe_for(state, ctx, id, total) {
        Ok(s) => s,
        Err(r) => {
            stream.stop_sending(h3::error::Code::H3_NO_ERROR);
            return refuse(&mut stream, r).await;
        }
    };
    let status = match take_chunk(&stripe, &mut stream, offset, state, ctx).await {
        Ok(n) => {
            metrics::counter!("canopy_relay_stripe_chunks_total").increment(1);
            debug!(stripe = id, offset, n, "chunk");
            StatusCode::OK
        }
        Err(NotTaken::Read(Stopped::TooLarge)) => {
            return refuse(
                &mut stream,
                Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "chunk over 1 MiB"),
            )
            .await
        }
        Err(NotTaken::Read(Stopped::NoRoom)) => return refuse(&mut stream, no_room()).await,
        Err(NotTaken::Read(Stopped::Failed)) => return StatusCode::BAD_REQUEST,
        // the gateway dropped a piece sent again: the relay had its bytes by another way
        Err(NotTaken::Read(Stopped::CalledOff)) => {
            metrics::counter!("canopy_relay_stripe_pieces_called_off_total").increment(1);
            return called_off();
        }
        Err(NotTaken::Stripe(stripe::ChunkError::OutOfRange)) => {
            return refuse(
                &mut stream,
                Refusal::new(StatusCode::BAD_REQUEST, "chunk beyond the stripe's end"),
            )
            .await
        }
        Err(NotTaken::Stripe(stripe::ChunkError::OverLimit)) => {
            return refuse(&mut stream, over_limit()).await
        }
        Err(NotTaken::Stripe(stripe::ChunkError::Failed(why))) => {
            return refuse(&mut stream, Refusal::new(StatusCode::CONFLICT, why)).await
        }
        Err(NotTaken::Stripe(stripe::ChunkError::NoBudget)) => {
            return refuse(
                &mut stream,
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the relay holds as many striped bytes of this gateway as it may",
                ),
            )
            .await
        }
        Err(NotTaken::Stripe(stripe::ChunkError::Timeout)) => {
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
    let mut resp = Response::builder()
        .status(status)
        .body(())
        .unwrap_or_default();
    // how far the body is in order here: a gateway sending a dead path's chunks again
    // leaves that out
    wire::stripe::write_have(resp.headers_mut(), stripe.front());
    if stream.send_response(resp).await.is_ok() {
        let _ = stream.finish().await;
    }
    status
}

/// What a chunk the gateway called off counts as in the relay's request metrics (nginx's
/// "client closed request"): not a 400, which would count the gateway's routine drops as
/// malformed requests.
fn called_off() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

/// Why a chunk was not taken whole.
enum NotTaken {
    /// Reading its bytes stopped.
    Read(Stopped),
    /// Its stripe refused a piece.
    Stripe(stripe::ChunkError),
}

/// The rest of a chunk that found no room in its stripe's window: read on, its bytes on
/// the chunks' intake budget.
struct Waiting {
    at: u64,
    data: bytes::BytesMut,
    grant: Grant,
}

/// Reads a chunk into its stripe piece by piece as its bytes arrive, so the origin gets
/// the front of a chunk while its end is still on the way. Read whole first, a chunk (150
/// ms of its path's time) reached the origin at once when its last byte came, and a
/// single upload through the relay stalled 100-260 ms at a time with no fault at all.
/// Once a piece finds no room in the stripe's window, the rest of the chunk is read on
/// into the chunks' intake budget (the stream is never left unread: its bytes would hold
/// the connection's flow-control credit, and every stream on the path with it) and goes
/// in whole, waiting up to the response timeout for room. Returns the chunk's length.
async fn take_chunk(
    stripe: &stripe::Stripe,
    stream: &mut Stream,
    offset: u64,
    state: &State,
    ctx: &ConnCtx,
) -> Result<u64, NotTaken> {
    let bytes = metrics::counter!("canopy_relay_stripe_bytes_total");
    let mut pieces = Pieces::new(state.chunk_intake(ctx), stripe::CHUNK_MAX);
    let mut waiting: Option<Waiting> = None;
    loop {
        let at = offset.saturating_add(pieces.read);
        if let Some(w) = &mut waiting {
            match pieces.next(stream, &mut w.grant).await {
                Ok(Some(d)) => {
                    w.data.extend_from_slice(&d);
                    // held to the body's end and the relay's limit as it comes
                    stripe
                        .within(w.at.saturating_add(w.data.len() as u64))
                        .map_err(NotTaken::Stripe)?;
                }
                Ok(None) => break,
                Err(e) => return Err(NotTaken::Read(e)),
            }
            continue;
        }
        let Some((d, grant)) = pieces.next_granted(stream).await.map_err(NotTaken::Read)? else {
            break;
        };
        let n = d.len() as u64;
        match stripe.try_insert(at, d).map_err(NotTaken::Stripe)? {
            None => bytes.increment(n),
            Some(back) => {
                waiting = Some(Waiting {
                    at,
                    data: bytes::BytesMut::from(&back[..]),
                    grant,
                })
            }
        }
    }
    let (at, data, _grant) = match waiting {
        Some(w) => (w.at, w.data.freeze(), w.grant),
        // an empty chunk asks how far the body is in order (the answer says): it needs no
        // window and waits for nothing
        None if pieces.read == 0 => {
            stripe.ask(offset).map_err(NotTaken::Stripe)?;
            return Ok(0);
        }
        None => return Ok(pieces.read),
    };
    let n = data.len() as u64;
    stripe
        .insert(at, data, state.response_timeout)
        .await
        .map_err(NotTaken::Stripe)?;
    bytes.increment(n);
    Ok(pieces.read)
}

/// The head of a request whose body comes striped. The first head of a stripe opens the
/// origin request and feeds it the stripe; the newest head (a head is sent again when its
/// path dies) gets the origin's answer.
pub(super) async fn striped(
    state: &State,
    ctx: &ConnCtx,
    req: Request<()>,
    mut stream: Stream,
    class: TrafficClass,
) -> StatusCode {
    while let Ok(Some(_)) = stream.recv_data().await {}
    // no content-length: the device sent the body without one, and a chunk names it
    let total = hop::declared_length(req.headers());
    let StripeHead { id, number: head } = match StripeHead::read(req.headers()) {
        Ok(m) => m,
        Err(e) => {
            let why = format!("a striped request's head: {e}");
            return refuse(&mut stream, Refusal::new(StatusCode::BAD_REQUEST, why)).await;
        }
    };
    let stripe = match stripe_for(state, ctx, id, total) {
        Ok(s) => s,
        Err(r) => return refuse(&mut stream, r).await,
    };
    if stripe.attach_head(head) {
        let result = match prepare(state, &req, false).await {
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
