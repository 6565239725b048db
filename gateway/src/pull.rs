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
//! on another path, in small urgent pieces (the body waits for them), so the download goes
//! on after a round trip elsewhere instead of failing or waiting for a range request.

use crate::bond::{until_dead, Bond, Flow};
use crate::stripe::{chunk_len, CHUNK, IDLE, RESEND_PIECE};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;
use tunnel::scheduler::{PathId, Unit};
use tunnel::wire::pull::{PullChunk, PullEnd, PullHead, PULL_WINDOW};
use tunnel::TrafficClass;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// A chunk to ask for (again).
struct Want {
    offset: u64,
    len: u64,
    /// The paths it failed on.
    excluded: Vec<PathId>,
}

async fn pull_all(
    bond: &Arc<Bond>,
    class: TrafficClass,
    head: PullHead,
    primary: PathId,
    timeout: Duration,
    tx: &mpsc::Sender<Result<Bytes, BoxError>>,
) -> Result<(), String> {
    let total = head.total;
    // bytes handed to the device (every byte below is in order)
    let mut delivered = 0u64;
    // the next offset never asked for
    let mut asked = 0u64;
    // chunks that came before their turn
    let mut got: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut again: VecDeque<Want> = VecDeque::new();
    let mut inflight = tokio::task::JoinSet::new();
    let mut primary = primary;
    let mut stuck_since: Option<tokio::time::Instant> = None;
    loop {
        while let Some(b) = got.remove(&delivered) {
            delivered += b.len() as u64;
            if tx.send(Ok(b)).await.is_err() {
                return Ok(()); // the device went away
            }
        }
        if delivered >= total {
            return Ok(());
        }
        // the next chunk: one to ask for again first, else a new one within the window
        let next = CHUNK.min(total - asked.min(total));
        let want = match again.front() {
            Some(w) => Some((w.len, w.excluded.clone())),
            None if asked < total && asked + next <= delivered + PULL_WINDOW => {
                Some((next, Vec::new()))
            }
            None => None,
        };
        let mut placed = false;
        if let Some((len, excluded)) = want {
            let unit = Unit {
                class,
                up_bytes: 0,
                down_bytes: len,
            };
            if !bond.paths()[primary].is_usable() {
                if let Some(p) = bond.place(&unit, &[]).primary() {
                    primary = p;
                }
            }
            let urgent = !again.is_empty();
            let pick = if urgent {
                // the body waits for it: wherever it arrives soonest
                let mut placement = bond.place(&unit, &excluded);
                if placement.paths.is_empty() && !excluded.is_empty() {
                    placement = bond.place(&unit, &[]);
                }
                placement.paths.first().copied()
            } else {
                let roomy = bond.with_room_after_rtt(&unit, &[], HORIZON);
                if roomy.contains(&primary) {
                    Some(primary)
                } else {
                    bond.with_room_after_rtt(&unit, &[], IDLE).first().copied()
                }
            };
            match pick {
                Some(path) => {
                    let w = match again.pop_front() {
                        Some(w) => w,
                        None => {
                            let len = chunk_len(bond.paths()[path].rate_down()).min(total - asked);
                            let w = Want {
                                offset: asked,
                                len,
                                excluded: Vec::new(),
                            };
                            asked += len;
                            w
                        }
                    };
                    let Some(flow) = bond.flow(path, class, 0, w.len) else {
                        return Err("no such uplink".into());
                    };
                    let chunk = PullChunk {
                        id: head.id,
                        offset: w.offset,
                        len: w.len,
                        have: delivered,
                        urgent,
                    };
                    let fut = fetch(bond.clone(), path, flow, chunk, timeout);
                    inflight.spawn(async move { (fut.await, w) });
                    placed = true;
                    stuck_since = None;
                }
                // nothing may carry it: fail after the timeout instead of waiting for ever
                None if bond.place(&unit, &[]).paths.is_empty() => {
                    let since = *stuck_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > timeout {
                        return Err("no uplink could carry the response body".into());
                    }
                }
                None => {}
            }
        }
        if placed {
            continue;
        }
        tokio::select! {
            done = inflight.join_next(), if !inflight.is_empty() => {
                let Some(joined) = done else { continue };
                let Ok((r, mut w)) = joined else {
                    return Err("a chunk's task failed".into());
                };
                match r {
                    Ok(data) => {
                        got.insert(w.offset, data);
                    }
                    Err(e) if e.retry && w.excluded.len() + 1 < MAX_TRIES => {
                        debug!(pull = head.id, offset = w.offset, path = e.path, reason = %e.reason, "chunk asked for again");
                        metrics::counter!("canopy_gateway_resends_total", "class" => class.as_str()).increment(1);
                        w.excluded.push(e.path);
                        // in pieces that each take the small-first lane
                        let mut at = 0;
                        while at < w.len {
                            let n = (RESEND_PIECE as u64).min(w.len - at);
                            again.push_back(Want {
                                offset: w.offset + at,
                                len: n,
                                excluded: w.excluded.clone(),
                            });
                            at += n;
                        }
                    }
                    Err(e) => return Err(e.reason),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// One chunk on one path, up to its last byte.
async fn fetch(
    bond: Arc<Bond>,
    id: PathId,
    flow: Arc<Flow>,
    chunk: PullChunk,
    timeout: Duration,
) -> Result<Bytes, ChunkError> {
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
            // the relay waited for the origin in vain: asking again may still work
            let retry = resp.status() == http::StatusCode::GATEWAY_TIMEOUT;
            return Err((
                retry,
                format!("the relay refused a chunk ({}): {why}", resp.status()),
            ));
        }
        let mut buf = BytesMut::with_capacity(want);
        while let Some(mut d) = s
            .recv_data()
            .await
            .map_err(|e| (true, format!("chunk cut short: {e}")))?
        {
            let n = d.remaining();
            if buf.len() + n > want {
                return Err((false, "the relay sent a chunk longer than asked".into()));
            }
            let b = d.copy_to_bytes(n);
            buf.extend_from_slice(&b);
            down.increment(n as u64);
        }
        if buf.len() != want {
            return Err((
                true,
                format!("chunk cut short at {} of {want} bytes", buf.len()),
            ));
        }
        Ok::<Bytes, (bool, String)>(buf.freeze())
    };
    // longer than the relay waits for the origin (it then answers 504 itself)
    let r = tokio::select! {
        r = tokio::time::timeout(timeout * 2, exchange) => match r {
            Ok(Ok(b)) => Ok(b),
            Ok(Err((retry, e))) => Err(fail(retry, format!("{e} (uplink {})", path.name))),
            Err(_) => Err(fail(true, format!("no chunk over uplink {} in time", path.name))),
        },
        _ = &mut died => Err(fail(true, format!("uplink {} went down", path.name))),
    };
    drop(flow);
    r
}
