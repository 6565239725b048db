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
//!
//! A body the device sends without a length (chunked) is striped as it comes too: the
//! source reads one byte beyond each chunk, so the chunk with the device's last byte knows
//! it is the last and names the body's length, as every chunk after it does (the relay
//! then ends the origin request's body).

use crate::bond::{until_dead, Bond, Flow};
use bytes::{Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::debug;
use tunnel::chunk_gate::ChunkGate;
use tunnel::pull::Failed;
use tunnel::push::{Next, PushedBody};
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

/// Most bytes of a body read ahead and held for its primary path while slower paths send
/// chunks beyond them (`tunnel::push`): bounds the memory a streamed body takes.
pub const MAX_HELD: u64 = 1024 * 1024;
/// A slower path's chunk skips ahead of the front only by at least this much (less is
/// within a chunk's noise, and would cut the primary's chunks small).
const LEAD_MIN: u64 = CHUNK_MIN;

/// Chunk length for a path sending `rate` bytes per second.
pub fn chunk_len(rate: f64) -> u64 {
    ((rate.max(0.0) * CHUNK_TIME_S) as u64).clamp(CHUNK_MIN, CHUNK)
}
/// A body of unknown length goes on when its device pauses this long with bytes read: a
/// slow push (audio, telemetry) is not held back until it fills a chunk, nor left for the
/// relay's idle limit.
const PAUSE: Duration = Duration::from_millis(50);

/// Bodies at least this large are striped (when two or more paths are up).
pub const STRIPE_MIN: u64 = 2 * CHUNK;

/// Where the chunks come from.
pub enum Source {
    /// A body already in memory.
    Kept(Bytes),
    /// The device's body, read as chunks are placed: what went to the body spool before
    /// it outgrew its room or its time (if any), what was read beyond that, then the rest,
    /// and how long the device may send nothing while a chunk waits for its bytes.
    Stream {
        spooled: Option<crate::body_spool::Spooled>,
        buf: BytesMut,
        body: DeviceBody,
        idle: Duration,
        device: Device,
    },
    /// A body the device sent without a length, spooled to disk whole first.
    Spooled(crate::body_spool::Spooled),
}

/// The device's body as the stripe loop reads it.
type DeviceBody = http_body_util::combinators::UnsyncBoxBody<Bytes, crate::BoxError>;

/// What the stripe loop knows of the device's body as it reads it.
#[derive(Debug, Clone, Copy)]
pub struct Device {
    /// When its last frame came (or the reading began).
    last: tokio::time::Instant,
    /// It paused: no frame for [`PAUSE`] after its last while the loop waited for one.
    paused: bool,
    /// When the loop first looked for a frame after a pause was due (see [`Source::more`]).
    asked: Option<tokio::time::Instant>,
    /// It ended (what is left of it is in the buffer).
    ended: bool,
}

impl Device {
    fn new() -> Self {
        Self {
            last: tokio::time::Instant::now(),
            paused: false,
            asked: None,
            ended: false,
        }
    }

    /// What one look at the body gave (`None`: its end), into `buf`.
    fn put(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, crate::BoxError>>,
        buf: &mut BytesMut,
    ) -> Result<(), BodyReadError> {
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
                self.last = tokio::time::Instant::now();
                self.paused = false;
                self.asked = None;
            }
            Some(Err(e)) => return Err(BodyReadError::Broken(e.to_string())),
            None => self.ended = true,
        }
        Ok(())
    }

    /// Whether bytes here (`left` on disk, `read` in memory) may go on when the device
    /// pauses: with `look_ahead` a read byte must be there to stay back.
    fn may_pause(left: u64, read: usize, look_ahead: bool) -> bool {
        left + read as u64 >= least(look_ahead) as u64 && (!look_ahead || read > 0)
    }
}

/// Bytes a take needs read before its own (one more with `look_ahead`: it stays back).
fn least(look_ahead: bool) -> usize {
    if look_ahead {
        2
    } else {
        1
    }
}

impl Source {
    /// The device's body, of which `spooled` went to the body spool (if any), then `read`
    /// was read. It fails after `idle` without bytes while a chunk waits for them (not
    /// while chunks wait for room: that is our back-pressure, not a stalled device).
    pub fn spooled_then(
        spooled: Option<crate::body_spool::Spooled>,
        read: Bytes,
        body: Incoming,
        idle: Duration,
    ) -> Self {
        Self::stream(spooled, read, body, idle)
    }

    /// [`Self::spooled_then`] of any body.
    fn stream<B>(
        spooled: Option<crate::body_spool::Spooled>,
        read: Bytes,
        body: B,
        idle: Duration,
    ) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::BoxError>,
    {
        Source::Stream {
            spooled: spooled.filter(|f| f.left() > 0),
            buf: BytesMut::from(read),
            body: body.map_err(Into::into).boxed_unsync(),
            idle,
            device: Device::new(),
        }
    }

    /// Whether [`Self::take`] of `n` bytes (with `look_ahead`, see there) has what it
    /// needs: its bytes, on disk or read (one more with `look_ahead`), or the body ended,
    /// or the device paused with bytes read. The stripe loop takes only then (a take
    /// never waits for the device), and meanwhile waits for the device in its `select!`
    /// ([`Self::more`]), where it also handles answers, failed chunks and silent paths.
    fn ready(&self, n: u64, look_ahead: bool) -> bool {
        match self {
            Source::Stream {
                spooled,
                buf,
                device,
                ..
            } => {
                let left = spooled.as_ref().map_or(0, |f| f.left());
                let have = left + buf.len() as u64;
                // (what went to the spool may go on a pause too)
                let paused = device.paused && Device::may_pause(left, buf.len(), look_ahead);
                device.ended || have > n || (!look_ahead && have == n) || paused
            }
            Source::Kept(_) | Source::Spooled(_) => true,
        }
    }

    /// Waits for the device's next frame (cancel-safe: a frame read is in the buffer), and
    /// takes the frames already there after it while fewer than `want` bytes are
    /// buffered; or for the device's pause, which makes bytes read ready to go. It fails
    /// when the device sent nothing for its idle time, counted from `since` (when the loop
    /// began to wait for bytes: a wait for room is our back-pressure, not the device's)
    /// or from its last frame, whichever is later.
    async fn more(
        &mut self,
        since: tokio::time::Instant,
        look_ahead: bool,
        want: u64,
    ) -> Result<(), StripeError> {
        let Source::Stream {
            spooled,
            buf,
            body,
            idle,
            device,
        } = self
        else {
            return Ok(());
        };
        if device.ended {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let idle_at = device.last.max(since) + *idle;
        let left = spooled.as_ref().map_or(0, |f| f.left());
        let until = if Device::may_pause(left, buf.len(), look_ahead) && !device.paused {
            // (a moment at least from the first look once the pause was due: a frame the
            // device sent while the loop did not look may be read only once asked for)
            let due = device.last + PAUSE;
            let asked = if due <= now {
                *device.asked.get_or_insert(now)
            } else {
                now
            };
            due.max(asked + Duration::from_millis(5)).min(idle_at)
        } else {
            idle_at
        };
        match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) if tokio::time::Instant::now() >= idle_at => {
                Err(BodyReadError::Idle(*idle).into())
            }
            // the device paused: what came may go
            Err(_) => {
                device.paused = true;
                Ok(())
            }
            Ok(mut frame) => {
                let want = want.saturating_sub(left);
                loop {
                    device.put(frame, buf)?;
                    if device.ended || buf.len() as u64 >= want {
                        return Ok(());
                    }
                    // (one loop turn per frame a fast device sends would be wasted work)
                    match futures_util::FutureExt::now_or_never(body.frame()) {
                        Some(next) => frame = next,
                        None => return Ok(()),
                    }
                }
            }
        }
    }

    /// The next `n` bytes, and whether the body ends with them, without waiting for the
    /// device (see [`Self::ready`]). Fewer come at the end, and from a streamed body when
    /// the device paused with bytes read (a slow device's bytes go on as they come, not
    /// once they fill a chunk), or when they are not read yet. With `look_ahead` (a body of
    /// unknown length), a streamed body is read one byte beyond them, so that its end is
    /// known with its last byte; without, a body that ends right after them says so only
    /// on the next take.
    async fn take(&mut self, n: u64, look_ahead: bool) -> Result<(Bytes, bool), StripeError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        match self {
            Source::Kept(b) => {
                let d = b.split_to(n.min(b.len()));
                Ok((d, b.is_empty()))
            }
            Source::Stream {
                spooled,
                buf,
                body,
                device,
                ..
            } => {
                let mut from_disk = Bytes::new();
                if let Some(f) = spooled {
                    from_disk = f.read(n as u64).await.map_err(unspooled)?;
                    if f.left() > 0 {
                        return Ok((from_disk, false));
                    }
                    *spooled = None;
                }
                let want = n - from_disk.len();
                let (d, ended) = take_read(body, buf, want, look_ahead, device)?;
                if from_disk.is_empty() {
                    return Ok((d, ended));
                }
                let mut both = BytesMut::from(from_disk);
                both.extend_from_slice(&d);
                Ok((both.freeze(), ended))
            }
            Source::Spooled(f) => {
                let d = f.read(n as u64).await.map_err(unspooled)?;
                Ok((d, f.left() == 0))
            }
        }
    }
}

/// The next `n` bytes of a streamed body (`buf` holds what was read of it already), and
/// whether it ends with them (see [`Source::take`]): from what is read and the frames
/// already there, none waited for.
fn take_read(
    body: &mut DeviceBody,
    buf: &mut BytesMut,
    n: usize,
    look_ahead: bool,
    device: &mut Device,
) -> Result<(Bytes, bool), BodyReadError> {
    // with `look_ahead` one byte beyond what goes is read first, so the chunk with the
    // last byte knows it is the last
    let want = if look_ahead { n.saturating_add(1) } else { n };
    while buf.len() < want && !device.ended {
        match futures_util::FutureExt::now_or_never(body.frame()) {
            None => break,
            Some(frame) => device.put(frame, buf)?,
        }
    }
    if device.ended {
        let d = buf.split_to(n.min(buf.len())).freeze();
        return Ok((d, buf.is_empty()));
    }
    // more follows: with `look_ahead` the last byte read stays back
    let k = if look_ahead {
        n.min(buf.len().saturating_sub(1))
    } else {
        n.min(buf.len())
    };
    Ok((buf.split_to(k).freeze(), false))
}

/// Why the device's body could not be read: the device's fault, answered 408 or 400.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyReadError {
    /// The device sent nothing for this long while its body was wanted.
    #[error("no request body bytes for {0:?}")]
    Idle(Duration),
    /// Its body broke off (the connection failed, or ended before the body did).
    #[error("request body not received: {0}")]
    Broken(String),
}

/// A body spool read that failed: the gateway's own disk.
fn unspooled(e: std::io::Error) -> StripeError {
    StripeError::Failed(format!("the body spool: {e}"))
}

/// Reads the device's body into `buf` until it holds at least `n` bytes or the body ends
/// (fewer only then); it fails after `idle` without a frame.
pub(crate) async fn fill<B>(
    inc: &mut B,
    buf: &mut BytesMut,
    n: usize,
    idle: Duration,
) -> Result<(), BodyReadError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
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
pub type Outcome = watch::Receiver<Option<Result<(), StripeError>>>;

/// Why a striped body did not reach the relay.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeError {
    /// A body sent without a length grew over the gateway's request body limit.
    #[error("request body over the gateway's limit of {0} bytes")]
    OverLimit(u64),
    /// A body sent without a length grew over the relay's request body limit.
    #[error("request body over the relay's limit")]
    OverRelayLimit,
    /// The device's body could not be read.
    #[error(transparent)]
    Device(#[from] BodyReadError),
    /// Its chunks could not be delivered, or read from the body spool.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for StripeError {
    fn from(why: String) -> Self {
        StripeError::Failed(why)
    }
}

impl From<&str> for StripeError {
    fn from(why: &str) -> Self {
        StripeError::Failed(why.to_string())
    }
}

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

/// Starts sending the chunks of stripe `id`, a body of `total` bytes (`None`: not known
/// until the device's last byte; it may not grow over `limit`); the task ends with the
/// outcome (aborted when the returned guard drops).
pub fn start(
    bond: Arc<Bond>,
    class: TrafficClass,
    id: u64,
    (total, limit): (Option<u64>, u64),
    source: Source,
    timeout: Duration,
) -> (AbortOnDrop, Outcome) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let r = send_all(bond, class, id, total, limit, source, timeout).await;
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

/// The body's next `n` bytes (from `body.read()`; fewer when the device paused): a body of
/// known length ending sooner is an error; one of unknown length may end within them, and
/// `body` learns its length, or grow over `limit` bytes, an error.
async fn take_next(
    source: &mut Source,
    body: &mut PushedBody,
    n: u64,
    limit: u64,
) -> Result<Bytes, StripeError> {
    let offset = body.read();
    let (data, ended) = source.take(n, body.total().is_none()).await?;
    let got = offset + data.len() as u64;
    match body.total() {
        // (fewer than asked without the end: the device paused)
        // (hyper ends a body at its declared length: more is our own miscount)
        Some(total) if got > total => Err(StripeError::Failed(format!(
            "{got} bytes read of a body of {total}"
        ))),
        Some(total) if ended && got < total => Err(BodyReadError::Broken(format!(
            "the body ended after {got} of {total} bytes"
        ))
        .into()),
        Some(_) => Ok(data),
        None if got > limit => Err(StripeError::OverLimit(limit)),
        None => {
            if ended {
                body.ends_at(got);
            }
            Ok(data)
        }
    }
}

/// What a chunk's task was sent for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    /// Bytes of the body: the flight's ticket.
    Chunk(u64),
    /// An empty chunk at this offset that asks the relay how far it has the body.
    Ask(u64),
}

/// How a chunk's task ended well.
enum Sent {
    /// The relay took it, and has the body in order up to this offset (if it said).
    Answered(Option<u64>),
    /// A piece sent again was dropped on its way: the relay had its bytes meanwhile.
    Dropped,
}

/// Why a chunk did not arrive.
struct ChunkError {
    path: PathId,
    /// Sending it again elsewhere may work.
    retry: bool,
    reason: String,
    /// The relay refused it as over its request body limit.
    over_relay_limit: bool,
}

async fn send_all(
    bond: Arc<Bond>,
    class: TrafficClass,
    id: u64,
    total: Option<u64>,
    limit: u64,
    mut source: Source,
    timeout: Duration,
) -> Result<(), StripeError> {
    let mut body = PushedBody::new(
        total,
        wire::STRIPE_WINDOW,
        CHUNK,
        RESEND_PIECE as u64,
        MAX_HELD,
    );
    let resends = metrics::counter!("canopy_gateway_resends_total", "class" => class.as_str());
    // each chunk is a task of its own (they progress while this loop waits or reads)
    let mut inflight = tokio::task::JoinSet::new();
    let mut no_path = NoPath::default();
    let mut primary: Option<Primary> = None;
    // the pieces sent again and on their way, by ticket: a piece's rank among them orders
    // it on its path
    let mut resending: ResendRanks<u64> = ResendRanks::default();
    // new chunks write in offset order on their path, within its allowance
    // (`tunnel::chunk_gate`); each waits on its turn
    let mut gate: ChunkGate<u64> = ChunkGate::default();
    let mut turns: HashMap<u64, watch::Sender<bool>> = HashMap::new();
    // chunks that ended, told at once (the loop collects their tasks only when it waits)
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    // the relay's front as far as the gateway knows: a piece sent again is dropped on its
    // way once the front passes it
    let (front_tx, front_rx) = watch::channel(0u64);
    // the offset of the question on its way, if any (one per front is enough)
    let mut asking: Option<u64> = None;
    // since when a new chunk waits for the device's bytes (the loop waits for them in its
    // `select!`, so answers and silent paths are handled meanwhile)
    let mut starved_since: Option<tokio::time::Instant> = None;
    'next: loop {
        if body.done() {
            return Ok(());
        }
        // (how many bytes the new chunk waits for, if it does)
        let mut starved: Option<u64> = None;
        while let Ok(ticket) = ended_rx.try_recv() {
            turns.remove(&ticket);
            open_turns(&turns, &gate.end(&ticket, |p| allowance(&bond, p)));
        }
        // a path silent for a while has most likely lost what it carries (a cut link),
        // though the bond calls it down only later: its chunks go again now
        let silent = tunnel::spread::silent_paths(&bond.views());
        for &p in &silent {
            let n = body.silent(p);
            if n > 0 {
                debug!(
                    stripe = id,
                    path = p,
                    chunks = n,
                    "silent path: its chunks sent again"
                );
                resends.increment(n as u64);
                let question = ChunkOf::question(id, body.total(), body.in_order());
                ask_front(
                    &bond,
                    class,
                    question,
                    &silent,
                    timeout,
                    &mut asking,
                    &mut inflight,
                );
            }
        }
        let mut placed = false;
        if let Some(next) = body.next_send() {
            let (len, excluded) = match &next {
                Next::Again(p) => (p.data.len() as u64, p.excluded.clone()),
                Next::Held { len, .. } | Next::New { len, .. } => (*len, Vec::new()),
            };
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
            let pick = match &next {
                // a piece sent again goes at once, wherever it finishes soonest (not where
                // it failed, nor on a silent path): the body waits for it
                Next::Again(_) => {
                    let mut avoid = excluded;
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
                }
                // the primary while it has room; a path about to run dry otherwise (new
                // chunks avoid a silent path)
                Next::Held { .. } | Next::New { .. } => {
                    let roomy = bond.with_room(&unit, &silent, HORIZON, 0);
                    match primary.as_ref().map(|p| p.0) {
                        Some(p) if roomy.contains(&p) => Some(p),
                        // (two round trips: a path in slow start doubles its window each round)
                        _ => bond.with_room(&unit, &silent, IDLE, 2).first().copied(),
                    }
                }
            };
            match pick {
                Some(path) => 'place: {
                    let (ticket, offset, data, rank) = match next {
                        Next::Again(p) => {
                            let t = body.start_again(&p, path);
                            (t, p.offset, p.data, Some(resending.start(t, p.offset)))
                        }
                        next => {
                            let rate = bond.paths()[path].rate_up();
                            // the new bytes this path would take: their length, and, on a path
                            // slower than the primary, how many to skip and hold first so the
                            // chunk starts ahead of the front (held bytes go first, on the next
                            // path without a lead)
                            let fresh = match body.fresh() {
                                Some(Next::New { len, .. }) => {
                                    let len = chunk_len(rate).min(len);
                                    let piece = Unit {
                                        up_bytes: len,
                                        ..unit
                                    };
                                    let lead = primary
                                        .as_ref()
                                        .map_or(0, |p| bond.lead(&piece, path, p.0, &silent));
                                    let skip = (lead >= LEAD_MIN).then(|| body.skip_for(lead, len));
                                    Some((len, skip))
                                }
                                _ => None,
                            };
                            match (next, fresh) {
                                (Next::Held { offset, len }, None | Some((_, None))) => {
                                    let len = chunk_len(rate).min(len);
                                    let Some((t, data)) = body.start_held(offset, len, path) else {
                                        return Err("held bytes went missing".into());
                                    };
                                    (t, offset, data, None)
                                }
                                (_, Some((len, skip))) => {
                                    let skip = skip.unwrap_or(0);
                                    let look_ahead = body.total().is_none();
                                    if !source.ready(skip + len, look_ahead) {
                                        // its bytes are not here yet: wait for them below
                                        // (a path could carry it: no "no path" spell)
                                        starved = Some(skip + len + u64::from(look_ahead));
                                        no_path.placed();
                                        break 'place;
                                    }
                                    starved_since = None;
                                    // (a body of unknown length may give fewer: it ended,
                                    // or its device paused)
                                    let mut short = false;
                                    if skip > 0 {
                                        let held =
                                            take_next(&mut source, &mut body, skip, limit).await?;
                                        short = (held.len() as u64) < skip;
                                        body.hold(held);
                                    }
                                    let offset = body.read();
                                    let data = if short || body.total() == Some(offset) {
                                        Bytes::new()
                                    } else {
                                        take_next(&mut source, &mut body, len, limit).await?
                                    };
                                    if data.is_empty() {
                                        // what is held goes next, not after the device's
                                        // next bytes
                                        continue 'next;
                                    }
                                    (body.start_new(data.clone(), path), offset, data, None)
                                }
                                // a new chunk is what `fresh` offers
                                (_, None) => return Err("no new bytes to send".into()),
                            }
                        }
                    };
                    // reserved now, so the next placement sees this chunk in the path's queue
                    let Some(flow) = bond.flow(path, class, data.len() as u64, 0) else {
                        return Err("no such uplink".into());
                    };
                    tracing::trace!(offset, len = data.len(), path, rank = ?rank, "chunk placed");
                    // a piece sent again is dropped once the relay has its bytes
                    let front = rank.map(|_| front_rx.clone());
                    // a new chunk waits its turn on its path (a piece sent again goes at once)
                    let turn = rank.is_none().then(|| {
                        let (tx, rx) = watch::channel(false);
                        turns.insert(ticket, tx);
                        let len = data.len() as u64;
                        let allowed = |p| allowance(&bond, p);
                        open_turns(&turns, &gate.start(ticket, path, offset, len, allowed));
                        Turn {
                            turn: rx,
                            front: front_rx.clone(),
                        }
                    });
                    let fut = send_one(
                        bond.clone(),
                        path,
                        flow,
                        ChunkOf {
                            stripe: id,
                            total: body.total(),
                            offset,
                            data,
                        },
                        Order {
                            resent: rank,
                            front,
                            turn,
                        },
                        timeout,
                    );
                    let task = Task::Chunk(ticket);
                    let ended = ended_tx.clone();
                    inflight.spawn(async move {
                        let r = fut.await;
                        let _ = ended.send(ticket);
                        (task, r)
                    });
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
        let since = match (starved, starved_since) {
            // (not waiting for the device: its idle time does not run)
            (None, _) => {
                starved_since = None;
                None
            }
            (Some(_), Some(t)) => Some(t),
            (Some(_), None) => Some(*starved_since.insert(tokio::time::Instant::now())),
        };
        let look_ahead = body.total().is_none();
        tokio::select! {
            r = source.more(
                since.unwrap_or_else(tokio::time::Instant::now),
                look_ahead,
                starved.unwrap_or(0),
            ), if since.is_some() => {
                r?;
            }
            done = inflight.join_next(), if !inflight.is_empty() => {
                let Some(joined) = done else { continue };
                let Ok((task, r)) = joined else {
                    return Err("a chunk's task failed".into());
                };
                match task {
                    // (its turn and its place in the gate went as it ended: `ended_rx`)
                    Task::Chunk(ticket) => resending.end(&ticket),
                    Task::Ask(offset) if asking == Some(offset) => asking = None,
                    Task::Ask(_) => {}
                }
                let (ticket, e) = match (task, r) {
                    (Task::Chunk(ticket), Err(e)) => (ticket, e),
                    (task, Ok(sent)) => {
                        if let Task::Chunk(ticket) = task {
                            body.answered(ticket);
                        }
                        if let Sent::Answered(Some(front)) = sent {
                            body.relay_has(front);
                        }
                        let moved = front_tx.send_if_modified(|f| {
                            let now = body.in_order();
                            (now > *f).then(|| *f = now).is_some()
                        });
                        if moved {
                            // chunks whose bytes came another way give up their place
                            let passed = gate.passed(body.in_order(), |p| allowance(&bond, p));
                            open_turns(&turns, &passed);
                        }
                        continue;
                    }
                    (Task::Ask(_), Err(e)) => {
                        debug!(stripe = id, path = e.path, reason = %e.reason, "no answer to a front question");
                        continue;
                    }
                };
                let outcome = if e.retry { body.failed(ticket) } else { body.refused(ticket) };
                match outcome {
                    Failed::Again(n) => {
                        debug!(stripe = id, path = e.path, reason = %e.reason, chunks = n, "chunk sent again");
                        resends.increment(n as u64);
                        // not on the path that just failed it
                        let mut avoid = silent.clone();
                        avoid.push(e.path);
                        let question = ChunkOf::question(id, body.total(), body.in_order());
                        ask_front(&bond, class, question, &avoid, timeout, &mut asking, &mut inflight);
                    }
                    Failed::Covered => {
                        debug!(stripe = id, path = e.path, reason = %e.reason, "copy lost; another brings it");
                    }
                    Failed::GiveUp if e.over_relay_limit => return Err(StripeError::OverRelayLimit),
                    Failed::GiveUp => return Err(e.reason.into()),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}

/// Asks the relay, on the path that answers soonest (not a silent one), how far it has the
/// body: an empty chunk at the gateway's front, ahead of bulk. The relay takes a chunk's
/// bytes as they come, so when a path dies or falls silent it may have much of what that
/// path carried beyond the front its last answer named (traced: 280 KB, sent again first
/// on the 5 Mbit/s path). Its answer comes after one round trip, and the pieces it makes
/// needless are dropped on their way.
///
/// One question per front: while one asked at this front is on its way, no other goes
/// (`asking`). It goes first among the pieces sent again (`Start::Resend(0)`), and takes no
/// rank among them (a rank orders the body's pieces by offset).
fn ask_front(
    bond: &Arc<Bond>,
    class: TrafficClass,
    question: ChunkOf,
    avoid: &[PathId],
    timeout: Duration,
    asking: &mut Option<u64>,
    inflight: &mut tokio::task::JoinSet<(Task, Result<Sent, ChunkError>)>,
) {
    if *asking == Some(question.offset) {
        return;
    }
    let unit = Unit {
        class,
        up_bytes: 0,
        down_bytes: 0,
    };
    let Some(path) = bond.place(&unit, avoid).paths.first().copied() else {
        return;
    };
    let Some(flow) = bond.flow(path, class, 0, 0) else {
        return;
    };
    *asking = Some(question.offset);
    let task = Task::Ask(question.offset);
    let fut = send_one(
        bond.clone(),
        path,
        flow,
        question,
        Order {
            resent: Some(0),
            front: None,
            turn: None,
        },
        timeout,
    );
    inflight.spawn(async move { (task, fut.await) });
}

/// A chunk's stream, reset as it drops unless its answer came: when the front passed it,
/// when it timed out or its path died, and when its task is aborted (the stripe ended or
/// failed). quinn finishes a stream that is merely dropped: what was written of it would
/// still be sent, for nothing, ahead of bulk.
struct CallOff<S: h3::quic::SendStream<Bytes>> {
    stream: h3::client::RequestStream<S, Bytes>,
    answered: bool,
}

impl<S: h3::quic::SendStream<Bytes>> Drop for CallOff<S> {
    fn drop(&mut self) {
        if !self.answered {
            self.stream
                .stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// A chunk of stripe `stripe` (a body of `total` bytes, when known): `data` at `offset`.
struct ChunkOf {
    stripe: u64,
    total: Option<u64>,
    offset: u64,
    data: Bytes,
}

impl ChunkOf {
    /// An empty chunk at the gateway's front `offset`: a question (how far has the relay
    /// the body in order?).
    fn question(stripe: u64, total: Option<u64>, offset: u64) -> Self {
        Self {
            stripe,
            total,
            offset,
            data: Bytes::new(),
        }
    }
}

/// The bytes a stripe's earlier chunks on `path` may hold while a chunk writes
/// (`tunnel::chunk_gate::allowance`).
fn allowance(bond: &Bond, path: PathId) -> u64 {
    bond.paths().get(path).map_or(2 * CHUNK, |p| {
        tunnel::chunk_gate::allowance(p.rate_up(), p.srtt(), CHUNK)
    })
}

/// Lets the chunks of `tickets` write.
fn open_turns(turns: &HashMap<u64, watch::Sender<bool>>, tickets: &[u64]) {
    for t in tickets {
        if let Some(tx) = turns.get(t) {
            tx.send_replace(true);
        }
    }
}

/// How a chunk goes (see [`send_one`]).
struct Order {
    /// Its rank among the pieces sent again (0 for a question).
    resent: Option<u8>,
    /// The relay's front, for a piece sent again.
    front: Option<watch::Receiver<u64>>,
    /// A new chunk's turn on its path.
    turn: Option<Turn>,
}

/// A new chunk's turn to write on its path, and the relay's front (a chunk the front
/// passed while it waited is not sent).
struct Turn {
    turn: watch::Receiver<bool>,
    front: watch::Receiver<u64>,
}

/// One chunk on one path, up to the relay's answer. It goes ahead of bulk when `resent`
/// (its rank among the pieces sent again, or 0 for a question). Given the gateway's view
/// of the relay's `front`, it is dropped (its stream reset) once the front passes its
/// end, or not sent at all if it did already. A new chunk with a `turn` waits for it
/// before it opens its stream (not sent at all if the front passes it meanwhile).
async fn send_one(
    bond: Arc<Bond>,
    id: PathId,
    flow: Arc<Flow>,
    chunk: ChunkOf,
    Order {
        resent,
        mut front,
        turn,
    }: Order,
    timeout: Duration,
) -> Result<Sent, ChunkError> {
    let ChunkOf {
        stripe,
        total,
        offset,
        data,
    } = chunk;
    let fail = |retry: bool, reason: String| ChunkError {
        path: id,
        retry,
        reason,
        over_relay_limit: false,
    };
    let path = bond.paths()[id].clone();
    let n = data.len() as u64;
    let end = offset + n;
    let class = flow.class();
    let mut watch = path.watch();
    let died = async move { until_dead(&mut watch).await };
    tokio::pin!(died);
    // its turn on the path, bounded on its own (the exchange's bound is for the relay)
    if let Some(Turn {
        turn: mut t,
        front: mut f,
    }) = turn
    {
        tokio::select! {
            r = tokio::time::timeout(timeout, t.wait_for(|&open| open)) => match r {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(fail(true, "the stripe ended".into())),
                Err(_) => return Err(fail(true, format!("no turn on uplink {} in time", path.name))),
            },
            _ = f.wait_for(|&at| at >= end) => return Ok(Sent::Dropped),
            _ = &mut died => return Err(fail(true, format!("uplink {} went down", path.name))),
        }
    }
    let Some(live) = path.live().or_else(|| path.connected()) else {
        return Err(fail(true, format!("uplink {} is not connected", path.name)));
    };
    let chunk = wire::stripe::StripeChunk {
        id: stripe,
        offset,
        total,
    };
    let Some(req) = chunk.request(class.as_str()) else {
        return Err(fail(false, "cannot build a chunk request".into()));
    };
    if front.as_ref().is_some_and(|f| *f.borrow() >= end) {
        // passed while it waited for its turn: not sent at all
        return Ok(Sent::Dropped);
    }
    let mut sender = live.sender.clone();
    let up = flow.up_counter();
    let exchange = async {
        // a chunk is bulk from its first byte (bids keep the small-first lane); a piece sent
        // again to unblock its body goes ahead of bulk, in its rank
        let start = match resent {
            Some(rank) => tunnel_io::quic::Start::Resend(rank),
            None => tunnel_io::quic::Start::Bulk,
        };
        let stream = tunnel_io::quic::opening_as(start, sender.send_request(req))
            .await
            .map_err(|e| format!("cannot open a chunk stream: {e}"))?;
        let mut stream = CallOff {
            stream,
            answered: false,
        };
        let talk = async {
            let stream = &mut stream.stream;
            if !data.is_empty() {
                stream
                    .send_data(data)
                    .await
                    .map_err(|e| format!("chunk not sent: {e}"))?;
            }
            stream
                .finish()
                .await
                .map_err(|e| format!("chunk not sent: {e}"))?;
            up.increment(n);
            let resp = stream
                .recv_response()
                .await
                .map_err(|e| format!("no answer to a chunk: {e}"))?;
            Ok::<_, String>((resp.status(), wire::stripe::read_have(resp.headers())))
        };
        let passed = async {
            let passed = match front.as_mut() {
                Some(f) => f.wait_for(|&at| at >= end).await.is_ok(),
                None => false,
            };
            if !passed {
                // no front to watch, or its sender closed (the stripe is over, and this
                // task is aborted with it)
                std::future::pending::<()>().await;
            }
        };
        let talked = tokio::select! {
            r = talk => Some(r),
            () = passed => None,
        };
        match talked {
            Some(Ok(answer)) => {
                stream.answered = true;
                Ok(Some(answer))
            }
            Some(Err(e)) => Err(e),
            // the stream is reset as it drops: what quinn has not sent of it is dropped
            None => Ok(None),
        }
    };
    // longer than the relay waits for its window to open (it then answers 503 itself): a
    // chunk held by back-pressure is not a dead path
    let (status, have) = tokio::select! {
        r = tokio::time::timeout(timeout * 2, exchange) => match r {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => {
                tracing::trace!(offset, len = n, path = id, "piece dropped: the relay has it");
                return Ok(Sent::Dropped);
            }
            Ok(Err(e)) => return Err(fail(true, format!("{e} (uplink {})", path.name))),
            Err(_) => return Err(fail(true, format!("no answer to a chunk over uplink {} in time", path.name))),
        },
        _ = &mut died => return Err(fail(true, format!("uplink {} went down", path.name))),
    };
    drop(flow);
    tracing::trace!(offset, len = n, path = id, "chunk answered");
    if status.is_success() {
        Ok(Sent::Answered(have))
    } else {
        Err(ChunkError {
            over_relay_limit: status == http::StatusCode::PAYLOAD_TOO_LARGE,
            ..fail(
                false,
                format!("the relay refused a chunk of the body ({status})"),
            )
        })
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
        for want in [(40, false), (40, false), (20, true)] {
            let got = s
                .take(40, false)
                .await
                .map(|(b, end)| (b.len(), end))
                .map_err(|e| e.to_string());
            assert_eq!(got, Ok(want));
        }
    }

    type Frames = http_body_util::StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>,
        >,
    >;

    /// A device's body sent as `parts` (one frame each), with no length.
    fn frames(parts: &[usize]) -> Frames {
        let frames: Vec<_> = parts
            .iter()
            .map(|&n| Ok(http_body::Frame::data(Bytes::from(vec![1u8; n]))))
            .collect();
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    /// A take of 40 bytes from a device's `body` as the stripe loop makes it (waiting for
    /// the device until the take is ready), idle after 1 s: how many came, and whether the
    /// body ended.
    async fn take40(source: &mut Source, look_ahead: bool) -> Result<(usize, bool), String> {
        let since = tokio::time::Instant::now();
        while !source.ready(40, look_ahead) {
            source
                .more(since, look_ahead, 40 + u64::from(look_ahead))
                .await
                .map_err(|e| e.to_string())?;
        }
        let (d, end) = source
            .take(40, look_ahead)
            .await
            .map_err(|e| e.to_string())?;
        Ok((d.len(), end))
    }

    /// A source of the device's `body`, nothing read of it yet.
    fn device<B>(body: B) -> Source
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::BoxError>,
    {
        Source::stream(None, Bytes::new(), body, Duration::from_secs(1))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_without_a_length_ends_with_its_last_byte_when_read_ahead() {
        // 100 bytes in frames that do not fall on the takes' bounds, and exactly on them
        for parts in [vec![30, 30, 40], vec![40, 40, 20], vec![100]] {
            let mut body = device(frames(&parts));
            let mut got = Vec::new();
            loop {
                let (n, end) = take40(&mut body, true).await.expect("read");
                got.push((n, end));
                if end {
                    break;
                }
            }
            assert_eq!(
                got,
                [(40, false), (40, false), (20, true)],
                "{parts:?}: the last bytes come knowing they are the last"
            );
        }
        // a body that ends on a take's bound is known to end with it
        let mut body = device(frames(&[40, 40]));
        assert_eq!(take40(&mut body, true).await, Ok((40, false)));
        assert_eq!(take40(&mut body, true).await, Ok((40, true)));
        // a device that pauses: what came goes on, but for the byte that stays back
        let paced = futures_util::stream::unfold(0, |i| async move {
            match i {
                0 => Some((
                    Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![1u8; 10]))),
                    1,
                )),
                1 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Ok(http_body::Frame::data(Bytes::from(vec![2u8; 10]))), 2))
                }
                _ => None,
            }
        });
        let mut body = device(http_body_util::StreamBody::new(Box::pin(paced)));
        assert_eq!(take40(&mut body, true).await, Ok((9, false)));
        assert_eq!(take40(&mut body, true).await, Ok((11, true)));
        // a device silent for its idle time fails the body (the byte kept back is not
        // something to send)
        let paced = futures_util::stream::unfold(0, |i| async move {
            if i == 1 {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Some((
                Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![3u8; 10]))),
                i + 1,
            ))
        });
        let mut body = device(http_body_util::StreamBody::new(Box::pin(paced)));
        assert_eq!(take40(&mut body, true).await, Ok((9, false)));
        assert_eq!(
            take40(&mut body, true).await,
            Err(BodyReadError::Idle(Duration::from_secs(1)).to_string()),
            "the device's fault, as such"
        );
        // a device of a body with its length that pauses: what came goes on too (a slow
        // device's bytes are not held until they fill a chunk)
        let paced = futures_util::stream::unfold(0, |i| async move {
            if i == 2 {
                return None;
            }
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some((
                Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![4u8; 10]))),
                i + 1,
            ))
        });
        let mut body = device(http_body_util::StreamBody::new(Box::pin(paced)));
        assert_eq!(take40(&mut body, false).await, Ok((10, false)));
        // (its end came within the pause)
        assert_eq!(take40(&mut body, false).await, Ok((10, true)));
        // without reading ahead, that end shows only on the next take
        let mut body = device(frames(&[40]));
        assert_eq!(take40(&mut body, false).await, Ok((40, false)));
        assert_eq!(take40(&mut body, false).await, Ok((0, true)));
    }
}
