//! Pulled answers (`tunnel::wire::pull`): a large response body comes in chunks over every
//! path, as striped uploads go, so one download uses every uplink.
//!
//! The gateway offers to pull every bulk request's answer while two or more paths are up;
//! the relay keeps an answer of at least `PULL_MIN` bytes and sends its head alone. The
//! gateway then asks for the body chunk by chunk: a chunk goes to the body's primary path
//! (the one the head came on) while that path has less than [`HORIZON`] asked for beyond a
//! round trip, and to any other path that is about to run dry ([`IDLE`]); so a path that
//! has carried nothing yet gets chunks as soon as it is up, and its measured rate follows.
//! Chunks are put back in order for the device; a chunk whose path died is asked for again
//! on another path, in small urgent pieces (the body waits for them; the relay sends them
//! ahead of bulk, the lowest offset first), so the download goes on after a round trip
//! elsewhere instead of failing or waiting for a range request.

use crate::bond::{until_dead, Bond, Flow};
use crate::stripe::{chunk_len, NoPath, CHUNK, IDLE, RESEND_PIECE};
use crate::BoxError;
use bytes::{Buf, Bytes};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;
use tunnel::pull::{Failed, PulledBody};
use tunnel::scheduler::{PathId, Unit};
use tunnel::wire::pull::{PullChunk, PullEnd, PullHead, PULL_WINDOW};
use tunnel::TrafficClass;

/// A pulled chunk goes to the primary path while it has less than this asked for beyond
/// a round trip.
pub const HORIZON: Duration = Duration::from_millis(100);
/// A chunk that failed on this many paths fails the body.
const MAX_TRIES: usize = 6;

/// Whether to offer pulling a request's answer: bulk, with two or more paths up.
pub fn worth_offering(bond: &Bond, class: TrafficClass) -> bool {
    class == TrafficClass::Bulk && bond.paths().iter().filter(|p| p.is_usable()).count() >= 2
}

/// A new pull id.
pub fn new_id() -> u64 {
    fastrand::u64(..)
}

/// Pulls the body of `head` (whose head came on `primary`) and sends it, in order, to
/// `tx`; the device's body ends with an error if the pull fails. Returns at once.
pub fn spawn(
    bond: Arc<Bond>,
    class: TrafficClass,
    head: PullHead,
    primary: PathId,
    timeout: Duration,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
) {
    tokio::spawn(async move {
        let r = pull_all(&bond, class, head, primary, timeout, &tx).await;
        match r {
            Ok(()) => {
                metrics::counter!("canopy_gateway_pulls_total", "result" => "ok").increment(1)
            }
            Err(e) => {
                debug!(pull = head.id, error = %e, "pulled answer not delivered");
                metrics::counter!("canopy_gateway_pulls_total", "result" => "failed").increment(1);
                let _ = tx.send(Err(e.into())).await;
            }
        }
        end(&bond, head.id).await;
    });
}

/// Tells the relay the pull is over (on any path that is up), so it drops what it holds.
/// A lost end message costs the relay memory only until the pull's idle limit.
async fn end(bond: &Bond, id: u64) {
    let Some(req) = (PullEnd { id }).request() else {
        return;
    };
    let Some(live) = bond.paths().iter().find_map(|p| p.live()) else {
        return;
    };
    let mut sender = live.sender.clone();
    let _ = tokio::time::timeout(Duration::from_secs(2), async move {
        let mut s = sender.send_request(req).await.ok()?;
        s.finish().await.ok()?;
        s.recv_response().await.ok()
    })
    .await;
}

/// Why a chunk did not arrive.
struct ChunkError {
    path: PathId,
    /// Asking again on another path may work.
    retry: bool,
    reason: String,
}

async fn pull_all(
    bond: &Arc<Bond>,
    class: TrafficClass,
    head: PullHead,
    primary: PathId,
    timeout: Duration,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), String> {
    let mut body = PulledBody::new(
        head.total,
        PULL_WINDOW,
        CHUNK,
        RESEND_PIECE as u64,
        MAX_TRIES,
    );
    let mut inflight = tokio::task::JoinSet::new();
    // what the chunks bring, piece by piece, and how each ends: one channel, so a chunk's
    // end never overtakes its last piece
    let (pieces_tx, mut pieces) = mpsc::unbounded_channel();
    let mut primary = primary;
    let mut no_path = NoPath::default();
    let resends = metrics::counter!("canopy_gateway_resends_total", "class" => class.as_str());
    // the urgent pieces in flight, by ticket: a piece's rank among them orders its answer
    // on its path (the lowest offset first)
    let mut urgent: tunnel::resend_rank::ResendRanks<u64> = Default::default();
    loop {
        let before = body.delivered();
        let ready = body.take_ready();
        if !ready.is_empty() {
            tracing::trace!(
                pull = head.id,
                from = before,
                to = body.delivered(),
                "in order"
            );
        }
        for b in ready {
            if tx.send(Ok(b)).await.is_err() {
                return Ok(()); // the device went away
            }
        }
        if body.done() {
            return Ok(());
        }
        // a path silent for a while has most likely lost what it carries (a cut link),
        // though the bond calls it down only later: its chunks are asked for again
        // elsewhere now, and new ones avoid it
        let silent = tunnel::spread::silent_paths(&bond.views());
        for &p in &silent {
            let n = body.silent(p);
            if n > 0 {
                debug!(
                    pull = head.id,
                    path = p,
                    chunks = n,
                    "silent path: its chunks asked for again"
                );
                resends.increment(n as u64);
            }
        }
        let mut placed = false;
        if let Some(ask) = body.next_ask() {
            let unit = Unit {
                class,
                up_bytes: 0,
                down_bytes: ask.len,
            };
            if !bond.paths()[primary].is_usable() || silent.contains(&primary) {
                if let Some(p) = bond.place(&unit, &silent).primary() {
                    primary = p;
                }
            }
            let pick = if ask.urgent {
                // the body waits for it: wherever it arrives soonest, not where it failed
                let mut avoid = silent.clone();
                avoid.extend(&ask.excluded);
                let mut placement = bond.place(&unit, &avoid);
                if placement.paths.is_empty() {
                    placement = bond.place(&unit, &silent);
                }
                placement.paths.first().copied()
            } else {
                let roomy = bond.with_room_after_rtt(&unit, &silent, HORIZON);
                if roomy.contains(&primary) {
                    Some(primary)
                } else {
                    bond.with_room_after_rtt(&unit, &silent, IDLE)
                        .first()
                        .copied()
                }
            };
            match pick {
                Some(path) => {
                    let len = if ask.urgent {
                        ask.len
                    } else {
                        chunk_len(bond.paths()[path].rate_down()).min(ask.len)
                    };
                    let Some(flow) = bond.flow(path, class, 0, len) else {
                        return Err("no such uplink".into());
                    };
                    let ticket = body.start(&ask, len, path);
                    let rank = ask.urgent.then(|| urgent.start(ticket, ask.offset));
                    tracing::trace!(
                        pull = head.id,
                        ticket,
                        offset = ask.offset,
                        len,
                        path,
                        urgent = ask.urgent,
                        "chunk asked"
                    );
                    let chunk = PullChunk {
                        id: head.id,
                        offset: ask.offset,
                        len,
                        have: body.delivered(),
                        urgent: rank,
                    };
                    let (bond, out) = (bond.clone(), pieces_tx.clone());
                    inflight.spawn(async move {
                        let r = fetch(bond, path, flow, chunk, timeout, ticket, &out).await;
                        let _ = out.send(Piece::End(ticket, r));
                    });
                    placed = true;
                    no_path.placed();
                }
                None if no_path.expired(bond, &unit, timeout) => {
                    return Err("no uplink could carry the response body".into());
                }
                None => {}
            }
        }
        if placed {
            continue;
        }
        tokio::select! {
            Some(piece) = pieces.recv() => {
                // everything that came meanwhile, before the next look at the paths
                let mut next = Some(piece);
                while let Some(piece) = next {
                    take_piece(&mut body, &mut urgent, &resends, head.id, piece)?;
                    next = pieces.try_recv().ok();
                }
            }
            Some(joined) = inflight.join_next(), if !inflight.is_empty() => {
                if joined.is_err() {
                    return Err("a chunk's task failed".into());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Feeds what a flight brought to the body; Err when the body fails.
fn take_piece(
    body: &mut PulledBody,
    urgent: &mut tunnel::resend_rank::ResendRanks<u64>,
    resends: &metrics::Counter,
    pull: u64,
    piece: Piece,
) -> Result<(), String> {
    match piece {
        Piece::Data(ticket, data) => body.received(ticket, data),
        Piece::End(ticket, Ok(())) => {
            urgent.end(&ticket);
            tracing::trace!(pull, ticket, "chunk arrived");
            body.arrived(ticket, Bytes::new());
        }
        Piece::End(ticket, Err(e)) => {
            urgent.end(&ticket);
            let outcome = if e.retry {
                body.failed(ticket)
            } else {
                body.refused(ticket)
            };
            match outcome {
                Failed::Again(n) => {
                    debug!(pull, path = e.path, reason = %e.reason, ranges = n, "chunk asked for again");
                    resends.increment(n as u64);
                }
                Failed::Covered => {}
                Failed::GiveUp => return Err(e.reason),
            }
        }
    }
    Ok(())
}

/// What a chunk's flight brings to the pull.
enum Piece {
    /// The next bytes of flight `ticket`.
    Data(u64, Bytes),
    /// Flight `ticket` ended: whole, or failed.
    End(u64, Result<(), ChunkError>),
}

/// One chunk on one path, flight `ticket`: its bytes go to `out` as they come (its end is
/// the caller's to send).
async fn fetch(
    bond: Arc<Bond>,
    id: PathId,
    flow: Arc<Flow>,
    chunk: PullChunk,
    timeout: Duration,
    ticket: u64,
    out: &mpsc::UnboundedSender<Piece>,
) -> Result<(), ChunkError> {
    let fail = |retry: bool, reason: String| ChunkError {
        path: id,
        retry,
        reason,
    };
    let path = bond.paths()[id].clone();
    let Some(live) = path.live().or_else(|| path.connected()) else {
        return Err(fail(true, format!("uplink {} is not connected", path.name)));
    };
    let Some(req) = chunk.request() else {
        return Err(fail(false, "cannot build a chunk request".into()));
    };
    let mut watch = path.watch();
    let died = async move { until_dead(&mut watch).await };
    tokio::pin!(died);
    let mut sender = live.sender.clone();
    let down = flow.down_counter();
    let want = chunk.len as usize;
    let exchange = async {
        let mut s = sender
            .send_request(req)
            .await
            .map_err(|e| (true, format!("cannot open a chunk stream: {e}")))?;
        s.finish()
            .await
            .map_err(|e| (true, format!("chunk request not sent: {e}")))?;
        let resp = s
            .recv_response()
            .await
            .map_err(|e| (true, format!("no answer to a chunk: {e}")))?;
        if !resp.status().is_success() {
            let why = tunnel::wire::reason_of(resp.headers()).unwrap_or("no reason given");
            // the relay waited for the origin in vain, or dropped bytes another path's
            // request said the gateway has (requests race over paths): asking again for
            // what is still missing may work
            let retry = matches!(
                resp.status(),
                http::StatusCode::GATEWAY_TIMEOUT | http::StatusCode::RANGE_NOT_SATISFIABLE
            );
            return Err((
                retry,
                format!("the relay refused a chunk ({}): {why}", resp.status()),
            ));
        }
        let mut got = 0;
        while let Some(mut d) = s
            .recv_data()
            .await
            .map_err(|e| (true, format!("chunk cut short: {e}")))?
        {
            let n = d.remaining();
            if got + n > want {
                return Err((false, "the relay sent a chunk longer than asked".into()));
            }
            got += n;
            down.increment(n as u64);
            // the pull is gone once its receiver is: nothing more to do
            let _ = out.send(Piece::Data(ticket, d.copy_to_bytes(n)));
        }
        if got != want {
            return Err((true, format!("chunk cut short at {got} of {want} bytes")));
        }
        Ok::<(), (bool, String)>(())
    };
    // longer than the relay waits for the origin (it then answers 504 itself)
    let r = tokio::select! {
        r = tokio::time::timeout(timeout * 2, exchange) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err((retry, e))) => Err(fail(retry, format!("{e} (uplink {})", path.name))),
            Err(_) => Err(fail(true, format!("no chunk over uplink {} in time", path.name))),
        },
        _ = &mut died => Err(fail(true, format!("uplink {} went down", path.name))),
    };
    drop(flow);
    r
}
