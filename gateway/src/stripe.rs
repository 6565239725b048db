//! Striped upload bodies: a large request body is cut into chunks, and each chunk goes on
//! the path that will deliver it soonest (the same late binding and earliest-completion rule
//! as whole requests). Every uplink then works on one upload at once, as MPTCP's subflows
//! do, instead of a slow uplink holding a whole request for seconds or idling. A chunk whose
//! path dies is sent again on another path; the relay takes each offset once and feeds the
//! chunks, in order, to the origin request the head opened (see the relay's `stripe`).
//!
//! The head travels as an ordinary request with `canopy-stripe` and no body; it is sent
//! again on another path if its own path dies before the answer (the relay answers the
//! newest head), so even a POST survives the loss of any one path.

use crate::bond::{until_dead, Bond, Flow};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::debug;
use tunnel::resend_rank::ResendRanks;
use tunnel::scheduler::{PathId, Unit};
use tunnel::{wire, TrafficClass};

/// Largest chunk. Each chunk costs a request head (about 100 bytes, under 0.1% of this).
pub const CHUNK: u64 = 128 * 1024;
/// Smallest chunk (but the body's last).
pub const CHUNK_MIN: u64 = 32 * 1024;
/// Chunks are placed while a path has less than this queued. Shorter than whole requests'
/// horizon: a chunk waits in its path's queue while later chunks of its body are already
/// at the relay, and what is queued on a path that dies must be sent again before the
/// body goes on.
pub const HORIZON: Duration = Duration::from_millis(100);
/// A path with less than this queued is about to run dry: it takes chunks of bodies whose
/// primary path is another.
pub const IDLE: Duration = Duration::from_millis(40);
/// A chunk sent again after its path died goes in pieces of this size, each ahead of
/// queued bulk data and ranked by offset (`tunnel_io::quic::Start::Resend`), so the body it
/// holds up goes on after one round trip on another path, not after that path's queue, and
/// piece by piece, not when the last of them arrives.
pub const RESEND_PIECE: usize = 32 * 1024;
/// A chunk takes about this long on its path: a slow path gets small chunks, so the relay's
/// in-order delivery never waits long for the chunk a slow path carries.
const CHUNK_TIME_S: f64 = 0.15;

/// Chunk length for a path sending `rate` bytes per second.
pub fn chunk_len(rate: f64) -> u64 {
    ((rate.max(0.0) * CHUNK_TIME_S) as u64).clamp(CHUNK_MIN, CHUNK)
}
/// Bodies at least this large are striped (when two or more paths are up).
pub const STRIPE_MIN: u64 = 2 * CHUNK;

/// Where the chunks come from.
pub enum Source {
    /// A body already in memory.
    Kept(Bytes),
    /// The device's body, read as chunks are placed, with what was read beyond the last
    /// chunk, and how long the device may send nothing while a chunk waits for its bytes.
    Stream(Incoming, BytesMut, Duration),
}

impl Source {
    /// The device's body; it fails after `idle` without bytes while a chunk waits for them
    /// (not while chunks wait for room: that is our back-pressure, not a stalled device).
    pub fn stream(body: Incoming, idle: Duration) -> Self {
        Self::stream_after(Bytes::new(), body, idle)
    }

    /// The device's body, of which `read` was read already.
    pub fn stream_after(read: Bytes, body: Incoming, idle: Duration) -> Self {
        Source::Stream(body, BytesMut::from(read), idle)
    }

    /// The next `n` bytes (fewer only at the end).
    async fn take(&mut self, n: u64) -> Result<Bytes, String> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        match self {
            Source::Kept(b) => Ok(b.split_to(n.min(b.len()))),
            Source::Stream(inc, buf, idle) => {
                fill(inc, buf, n, *idle).await.map_err(|e| e.to_string())?;
                Ok(buf.split_to(n.min(buf.len())).freeze())
            }
        }
    }
}

/// Why the device's body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyReadError {
    #[error("no request body bytes for {0:?}")]
    Idle(Duration),
    #[error("request body not received: {0}")]
    Broken(String),
}

/// Reads the device's body into `buf` until it holds at least `n` bytes or the body ends
/// (fewer only then); it fails after `idle` without a frame.
pub(crate) async fn fill(
    inc: &mut Incoming,
    buf: &mut BytesMut,
    n: usize,
    idle: Duration,
) -> Result<(), BodyReadError> {
    while buf.len() < n {
        let Ok(frame) = tokio::time::timeout(idle, inc.frame()).await else {
            return Err(BodyReadError::Idle(idle));
        };
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => return Err(BodyReadError::Broken(e.to_string())),
            None => break,
        }
    }
    Ok(())
}

/// The outcome of a stripe's chunks, for the head's attempt: `None` while they go.
pub type Outcome = watch::Receiver<Option<Result<(), String>>>;

/// A new stripe id.
pub fn new_id() -> u64 {
    fastrand::u64(..)
}

/// Whether a body of `total` bytes should be striped now: when a path that may carry it
/// is about to run dry while the whole body would go elsewhere. With many transfers under
/// way, whole requests already keep every path busy, and each depends on one path only (a
/// path that dies holds up only its own requests); with few, striping is the only way to
/// use every path.
pub fn worth_it(bond: &Bond, method: &Method, class: TrafficClass, total: u64) -> bool {
    if class != TrafficClass::Bulk
        || total < STRIPE_MIN
        || !may_carry(method, class)
        || bond.paths().iter().filter(|p| p.is_usable()).count() < 2
    {
        return false;
    }
    let chunk = Unit {
        class,
        up_bytes: CHUNK,
        down_bytes: 0,
    };
    let whole = Unit {
        class,
        up_bytes: total,
        down_bytes: 0,
    };
    let goes_to = bond.place(&whole, &[]).paths.first().copied();
    bond.with_room(&chunk, &[], IDLE, 0)
        .into_iter()
        .any(|dry| Some(dry) != goes_to)
}

/// Whether a request of `method` and `class` may go as a stripe at all: not a bid or a
/// check-in (they go whole, in copies, under their idempotency key), not a GET or HEAD
/// (their answers are what matters: see `crate::pull`).
pub fn may_carry(method: &Method, class: TrafficClass) -> bool {
    !class.is_transactional() && *method != Method::GET && *method != Method::HEAD
}

/// Starts sending the chunks of stripe `id`; the task ends with the outcome (aborted when
/// the returned guard drops).
pub fn start(
    bond: Arc<Bond>,
    class: TrafficClass,
    id: u64,
    total: u64,
    source: Source,
    timeout: Duration,
) -> (AbortOnDrop, Outcome) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let r = send_all(bond, class, id, total, source, timeout).await;
        if let Err(e) = &r {
            debug!(stripe = id, error = %e, "striped body not delivered");
        }
        let _ = tx.send(Some(r));
    });
    (AbortOnDrop(task), rx)
}

/// How long no path at all could carry a transfer's next piece (none up, or none that
/// admits its class): the transfer fails after its timeout instead of waiting for ever.
#[derive(Debug, Default)]
pub(crate) struct NoPath(Option<tokio::time::Instant>);

impl NoPath {
    /// A piece was placed: the clock stops.
    pub(crate) fn placed(&mut self) {
        self.0 = None;
    }

    /// No piece was placed now: whether no path could have carried `unit` for longer
    /// than `timeout` (paths that only lack room do not count).
    pub(crate) fn expired(&mut self, bond: &Bond, unit: &Unit, timeout: Duration) -> bool {
        if !bond.place(unit, &[]).paths.is_empty() {
            return false;
        }
        let since = *self.0.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() > timeout
    }
}

/// Aborts the task when dropped.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A striped body's primary path: most of its chunks go there, and other paths take chunks
/// only when they would otherwise run dry. Bodies are spread over the paths by capacity, so
/// a path that dies holds up only the bodies it was primary for, while the others go on.
struct Primary(PathId, Arc<Bond>);

impl Primary {
    fn new(bond: &Arc<Bond>, path: PathId) -> Self {
        bond.paths()[path]
            .stripes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(path, bond.clone())
    }
}

impl Drop for Primary {
    fn drop(&mut self) {
        self.1.paths()[self.0]
            .stripes
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Why a chunk did not arrive.
struct ChunkError {
    path: PathId,
    /// Sending it again elsewhere may work.
    retry: bool,
    reason: String,
}

struct Pending {
    offset: u64,
    data: Bytes,
    /// The paths it failed on (a piece sent again).
    excluded: Vec<PathId>,
    /// A piece sent again (its body waits for it), not a new chunk.
    resent: bool,
}

impl Pending {
    /// `data` at `offset` as pieces sent again, avoiding `excluded`.
    fn pieces(offset: u64, data: &Bytes, excluded: &[PathId]) -> Vec<Pending> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + RESEND_PIECE).min(data.len());
            out.push(Pending {
                offset: offset + at as u64,
                data: data.slice(at..end),
                excluded: excluded.to_vec(),
                resent: true,
            });
            at = end;
        }
        out
    }
}

/// A new chunk on its way: its path and its bytes.
type Flying = (PathId, Bytes);

/// A stripe's bookkeeping as chunks are sent again.
struct Lost<'a> {
    flying: &'a BTreeMap<u64, Flying>,
    hurried: &'a mut BTreeSet<u64>,
    unanswered: &'a mut BTreeMap<u64, u64>,
    again: &'a mut VecDeque<Pending>,
}

impl Lost<'_> {
    /// Queues `pieces` (what `dead` lost), lowest offset first.
    ///
    /// Pieces sent again go ahead of bulk on their paths: a new chunk on another path below
    /// them would wait behind the ones above it, and the body with it. It goes again too,
    /// as pieces in its turn, where it arrives soonest (its own path included); the relay
    /// keeps the first copy of each byte. Measured on the in-process harness: such a chunk
    /// on satellite held a single upload 0.8 s at a cut.
    /// Returns how many new chunks were hurried along.
    fn send_again(&mut self, mut pieces: Vec<Pending>, dead: PathId) -> usize {
        let mut hurried = 0;
        let end = pieces
            .iter()
            .map(|p| p.offset + p.data.len() as u64)
            .max()
            .unwrap_or(0);
        for (&o, (path, data)) in self.flying.range(..end) {
            if *path != dead && self.hurried.insert(o) {
                pieces.extend(Pending::pieces(o, data, &[]));
                hurried += 1;
            }
        }
        for piece in pieces {
            self.unanswered
                .insert(piece.offset, piece.data.len() as u64);
            self.again.push_back(piece);
        }
        // the lowest offset first: the relay hands the body on in order
        self.again.make_contiguous().sort_by_key(|p| p.offset);
        hurried
    }
}

async fn send_all(
    bond: Arc<Bond>,
    class: TrafficClass,
    id: u64,
    total: u64,
    mut source: Source,
    timeout: Duration,
) -> Result<(), String> {
    let mut read = 0u64;
    let resends = metrics::counter!("canopy_gateway_resends_total", "class" => class.as_str());
    // offset -> length of every chunk and piece sent or queued and not yet answered (the
    // first piece of a hurried chunk takes its chunk's entry)
    let mut unanswered: BTreeMap<u64, u64> = BTreeMap::new();
    let mut again: VecDeque<Pending> = VecDeque::new();
    // each chunk is a task of its own (they progress while this loop waits or reads)
    let mut inflight = tokio::task::JoinSet::new();
    let mut no_path = NoPath::default();
    let mut primary: Option<Primary> = None;
    // the pieces sent again and not answered yet, by offset: a piece's rank among them
    // orders it on its path
    let mut resending: ResendRanks<u64> = ResendRanks::default();
    // new chunks on their way, by offset: their path and bytes (to hurry them, below)
    let mut flying: BTreeMap<u64, Flying> = BTreeMap::new();
    // new chunks sent again as pieces while still on their way
    let mut hurried: BTreeSet<u64> = BTreeSet::new();
    // hurried chunks the relay answered (it has their bytes): offset -> end
    let mut kept: BTreeMap<u64, u64> = BTreeMap::new();
    loop {
        if read >= total && unanswered.is_empty() && again.is_empty() {
            return Ok(());
        }
        // A path that answered no probe for a while has most likely lost what it carries
        // (a cut link), though the bond calls it down only later: its chunks go again now,
        // as pulled chunks do. If it was only a lost burst of probes, the relay keeps the
        // first copy of each byte.
        let mut silent = Vec::new();
        let views = bond.views();
        // every path silent at once is the relay or this box pausing, not a cut link
        let some_answer = views
            .iter()
            .any(|v| v.usable && v.silent < crate::pull::SILENT_AFTER);
        for v in views {
            if !some_answer || !v.usable || v.silent < crate::pull::SILENT_AFTER {
                continue;
            }
            silent.push(v.id);
            let on_it: Vec<(u64, Bytes)> = flying
                .iter()
                .filter(|(o, (path, _))| *path == v.id && !hurried.contains(o))
                .map(|(&o, (_, d))| (o, d.clone()))
                .collect();
            if on_it.is_empty() {
                continue;
            }
            debug!(
                stripe = id,
                path = v.id,
                chunks = on_it.len(),
                "silent path: its chunks sent again"
            );
            let chunks = on_it.len();
            let mut pieces = Vec::new();
            for (o, d) in on_it {
                hurried.insert(o);
                pieces.extend(Pending::pieces(o, &d, &[v.id]));
            }
            let mut lost = Lost {
                flying: &flying,
                hurried: &mut hurried,
                unanswered: &mut unanswered,
                again: &mut again,
            };
            let hurried_along = lost.send_again(pieces, v.id);
            resends.increment((chunks + hurried_along) as u64);
        }
        // the next chunk: one to send again first, else a new one if the window allows
        let base = unanswered.keys().next().copied().unwrap_or(read);
        let next_len = CHUNK.min(total.saturating_sub(read));
        let want = match again.front() {
            Some(p) => Some((p.data.len() as u64, p.excluded.clone())),
            None if read < total && read + next_len <= base + wire::STRIPE_WINDOW => {
                Some((next_len, Vec::new()))
            }
            None => None,
        };
        let mut placed = false;
        if let Some((len, excluded)) = want {
            let unit = Unit {
                class,
                up_bytes: len,
                down_bytes: 0,
            };
            // the body's primary path, while it carries traffic
            if primary
                .as_ref()
                .is_none_or(|p| !bond.paths()[p.0].is_usable())
            {
                primary = bond.stripe_primary(class).map(|p| Primary::new(&bond, p));
            } else if let Some(better) = primary
                .as_ref()
                .and_then(|p| bond.better_primary(class, p.0))
            {
                primary = Some(Primary::new(&bond, better));
            }
            let resend = !again.is_empty();
            let pick = if resend {
                // a piece sent again goes at once, wherever it finishes soonest (not where
                // it failed, nor on a silent path): the body waits for it
                let mut avoid = excluded.clone();
                avoid.extend(&silent);
                let mut placement = bond.place(&unit, &avoid);
                if placement.paths.is_empty() {
                    // every other path failed it once: any path that is up will do
                    placement = bond.place(&unit, &silent);
                }
                if placement.paths.is_empty() {
                    placement = bond.place(&unit, &[]);
                }
                placement.paths.first().copied()
            } else {
                // the primary while it has room; a path about to run dry otherwise (new
                // chunks avoid a silent path)
                let mut excluded = excluded;
                excluded.extend(&silent);
                let roomy = bond.with_room(&unit, &excluded, HORIZON, 0);
                match primary.as_ref().map(|p| p.0) {
                    Some(p) if roomy.contains(&p) => Some(p),
                    // (two round trips: a path in slow start doubles its window each round)
                    _ => bond.with_room(&unit, &excluded, IDLE, 2).first().copied(),
                }
            };
            match pick {
                Some(path) => {
                    let p = match again.pop_front() {
                        Some(p) => p,
                        None => {
                            let len = chunk_len(bond.paths()[path].rate_up()).min(len);
                            let data = source.take(len).await?;
                            if data.len() as u64 != len {
                                return Err(format!(
                                    "request body ended after {} of {total} bytes",
                                    read + data.len() as u64
                                ));
                            }
                            let p = Pending {
                                offset: read,
                                data,
                                excluded: Vec::new(),
                                resent: false,
                            };
                            read += len;
                            unanswered.insert(p.offset, len);
                            p
                        }
                    };
                    // reserved now, so the next placement sees this chunk in the path's queue
                    let Some(flow) = bond.flow(path, class, p.data.len() as u64, 0) else {
                        return Err("no such uplink".into());
                    };
                    let rank = p.resent.then(|| resending.start(p.offset, p.offset));
                    if !p.resent {
                        flying.insert(p.offset, (path, p.data.clone()));
                    }
                    tracing::trace!(offset = p.offset, len = p.data.len(), path, rank = ?rank, "chunk placed");
                    let fut = send_one(
                        bond.clone(),
                        path,
                        flow,
                        id,
                        total,
                        p.offset,
                        p.data.clone(),
                        rank,
                        timeout,
                    );
                    inflight.spawn(async move { (fut.await, p) });
                    placed = true;
                    no_path.placed();
                }
                None if no_path.expired(&bond, &unit, timeout) => {
                    return Err("no uplink could carry the request body".into());
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
                let Ok((r, mut p)) = joined else {
                    return Err("a chunk's task failed".into());
                };
                if p.resent {
                    resending.end(&p.offset);
                } else {
                    flying.remove(&p.offset);
                }
                let end = p.offset + p.data.len() as u64;
                match r {
                    Ok(()) => {
                        unanswered.remove(&p.offset);
                        if !p.resent && hurried.contains(&p.offset) {
                            // the relay has it (it keeps the longer of two at one offset):
                            // its pieces still to send are not needed
                            kept.insert(p.offset, end);
                            again.retain(|q| {
                                let needed = q.offset < p.offset || q.offset >= end;
                                if !needed {
                                    unanswered.remove(&q.offset);
                                }
                                needed
                            });
                        }
                    }
                    // a new chunk sent again as pieces already (they bring it), or a piece
                    // of one the relay has: its failure changes nothing
                    Err(e)
                        if (!p.resent && hurried.contains(&p.offset))
                            || (p.resent
                                && kept
                                    .range(..=p.offset)
                                    .next_back()
                                    .is_some_and(|(_, &k)| end <= k)) =>
                    {
                        debug!(stripe = id, offset = p.offset, path = e.path, reason = %e.reason, "copy lost; another brings it");
                        if p.resent {
                            unanswered.remove(&p.offset);
                        }
                    }
                    Err(e) if e.retry => {
                        debug!(stripe = id, offset = p.offset, path = e.path, reason = %e.reason, "chunk sent again");
                        p.excluded.push(e.path);
                        unanswered.remove(&p.offset);
                        let pieces = Pending::pieces(p.offset, &p.data, &p.excluded);
                        let mut lost = Lost { flying: &flying, hurried: &mut hurried, unanswered: &mut unanswered, again: &mut again };
                        let hurried_along = lost.send_again(pieces, e.path);
                        resends.increment(1 + hurried_along as u64);
                    }
                    Err(e) => return Err(e.reason),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// One chunk on one path, up to the relay's answer.
#[allow(clippy::too_many_arguments)]
async fn send_one(
    bond: Arc<Bond>,
    id: PathId,
    flow: Arc<Flow>,
    stripe: u64,
    total: u64,
    offset: u64,
    data: Bytes,
    resent: Option<u8>,
    timeout: Duration,
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
    let n = data.len() as u64;
    let class = flow.class();
    let mut watch = path.watch();
    let died = async move { until_dead(&mut watch).await };
    tokio::pin!(died);
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri(format!("https://{}/", wire::STRIPE_AUTHORITY))
        .header(wire::HDR_CLASS, class.as_str())
        .header(wire::HDR_STRIPE_OFFSET, offset)
        .header(wire::HDR_STRIPE_TOTAL, total);
    if let Ok(v) = HeaderValue::from_str(&format!("{stripe:016x}")) {
        req = req.header(wire::HDR_STRIPE, v);
    }
    let Ok(req) = req.body(()) else {
        return Err(fail(false, "cannot build a chunk request".into()));
    };
    let mut sender = live.sender.clone();
    let up = flow.up_counter();
    let exchange = async {
        // a chunk is bulk from its first byte (bids keep the small-first lane); a piece sent
        // again to unblock its body goes ahead of bulk, in its rank
        let start = match resent {
            Some(rank) => tunnel_io::quic::Start::Resend(rank),
            None => tunnel_io::quic::Start::Bulk,
        };
        let mut stream = tunnel_io::quic::opening_as(start, sender.send_request(req))
            .await
            .map_err(|e| format!("cannot open a chunk stream: {e}"))?;
        stream
            .send_data(data)
            .await
            .map_err(|e| format!("chunk not sent: {e}"))?;
        stream
            .finish()
            .await
            .map_err(|e| format!("chunk not sent: {e}"))?;
        up.increment(n);
        let resp = stream
            .recv_response()
            .await
            .map_err(|e| format!("no answer to a chunk: {e}"))?;
        Ok::<StatusCode, String>(resp.status())
    };
    // longer than the relay waits for its window to open (it then answers 503 itself): a
    // chunk held by back-pressure is not a dead path
    let status = tokio::select! {
        r = tokio::time::timeout(timeout * 2, exchange) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(true, format!("{e} (uplink {})", path.name))),
            Err(_) => return Err(fail(true, format!("no answer to a chunk over uplink {} in time", path.name))),
        },
        _ = &mut died => return Err(fail(true, format!("uplink {} went down", path.name))),
    };
    drop(flow);
    if status.is_success() {
        Ok(())
    } else {
        Err(fail(
            false,
            format!("the relay refused a chunk of the body ({status})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_path_rate_within_bounds() {
        // 2 Mbit/s: 250 kB/s * 0.15 s = 37.5 kB
        assert_eq!(chunk_len(250_000.0), 37_500);
        assert_eq!(chunk_len(1_000.0), CHUNK_MIN);
        assert_eq!(chunk_len(100e6), CHUNK);
        assert_eq!(chunk_len(f64::NAN), CHUNK_MIN);
    }

    #[tokio::test]
    async fn a_kept_body_is_cut_exactly() {
        let mut s = Source::Kept(Bytes::from(vec![7u8; 100]));
        assert_eq!(s.take(40).await.map(|b| b.len()), Ok(40));
        assert_eq!(s.take(40).await.map(|b| b.len()), Ok(40));
        assert_eq!(s.take(40).await.map(|b| b.len()), Ok(20));
    }
}
