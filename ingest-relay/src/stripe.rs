//! Striped request bodies: a large upload's body arrives as chunks over every path of a
//! gateway's session, in any order; the relay puts them back in order and feeds them to the
//! one origin request the striped request's head opened.
//!
//! A stripe is known by (gateway identity, stripe id). Chunks may arrive before the head.
//! The relay holds at most [`WINDOW`] bytes of a stripe that the origin has not taken yet,
//! counted by what it stores (overlapping chunks at odd offsets cannot stack up): a chunk
//! beyond that waits (its answer is the gateway's flow control). A chunk seen twice
//! (re-sent after its path died) is taken once. A stripe's window comes from the budgets
//! of `budget` (per gateway and for all) before its first chunk goes in, and goes
//! back when the origin has the whole body or the stripe fails; a gateway has at most
//! [`MAX_STRIPES`] unfinished stripes at once, and a stripe that never gets a head is
//! dropped after [`IDLE`]. The head may come again on another path if
//! its first path died: the newest head gets the origin's answer.
//!
//! A body the device sent without a length comes without one (the head has no
//! `content-length`, chunks no total) until the gateway has read the device's last byte:
//! every chunk after that names the body's length, the chunk with the last byte too. The
//! origin request then goes without a length (chunked), and ends when the stripe knows its
//! length and has fed it every byte. A length that contradicts another, or bytes already
//! taken, is refused.

use crate::budget::{Budget, Grant};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tunnel_io::BodyError;

/// Bytes of one stripe the relay holds beyond what the origin has taken.
pub(crate) const WINDOW: u64 = tunnel::wire::STRIPE_WINDOW;
/// Largest chunk.
pub(crate) const CHUNK_MAX: u64 = 1024 * 1024;
/// A stripe nobody touched for this long is dropped (its origin request fails).
const IDLE: Duration = Duration::from_secs(60);
/// Stripe windows one gateway may hold at once (32 full windows), bytes.
const GATEWAY_BUDGET: u64 = 32 * WINDOW;
/// Stripe windows all gateways together may hold, bytes.
const GLOBAL_BUDGET: u64 = 256 * WINDOW;
/// Unfinished stripes of one gateway at once (ones that failed or have their whole body
/// do not count, while they linger for a late head).
pub(crate) const MAX_STRIPES: usize = 1024;
/// Finished stripes of one gateway kept for a late head; beyond it the oldest whose origin
/// request is over go.
pub(crate) const MAX_FINISHED: usize = 4096;
/// Ids of dropped stripes remembered per gateway (so a late head or chunk is refused
/// instead of opening a second origin request): 16 bytes or so each.
const MAX_GONE: usize = 65_536;

/// Why a stripe that grew over the relay's request body limit failed.
pub(crate) const OVER_LIMIT: &str = "request body over the relay's limit";

/// What the origin request of a stripe gives: the origin's response, or why there is none.
pub(crate) type Answer = Result<http::Response<hyper::body::Incoming>, crate::error::Refusal>;

/// The answer as the heads see it: kept whole (small, or a refusal; every newest head gets
/// it, also one sent after the answer went out on a path that then died) or streamed once.
pub(crate) enum Published {
    Kept(Arc<crate::session::Outcome>),
    Stream(http::Response<hyper::body::Incoming>),
}

/// Why a head gets no answer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// A newer head came: it answers.
    Superseded,
    /// The answer was streamed to an earlier head already.
    Gone,
    /// None came in time.
    Timeout,
}

/// Every stripe in progress.
pub(crate) struct Stripes {
    map: Mutex<HashMap<(u64, u64), Arc<Stripe>>>,
    gone: Mutex<HashMap<u64, Gone>>,
    budget: Arc<Budget>,
    /// The most a body may carry (the relay's request body limit).
    limit: u64,
}

impl Default for Stripes {
    fn default() -> Self {
        Self::with_budget(GATEWAY_BUDGET, GLOBAL_BUDGET)
    }
}

/// Why a stripe cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoStripe {
    /// The stripe exists with another total length (or has bytes beyond it).
    OtherLength,
    /// The gateway has [`MAX_STRIPES`] unfinished stripes already.
    TooMany,
    /// The stripe is over and was dropped (idle, or making room): a head or chunk that
    /// comes now must not open another origin request.
    Gone,
}

/// Ids of stripes that were dropped, per gateway, the oldest forgotten first.
#[derive(Default)]
struct Gone {
    order: VecDeque<u64>,
    ids: std::collections::HashSet<u64>,
}

impl Gone {
    fn add(&mut self, id: u64) {
        if self.ids.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_GONE {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}

/// One striped body.
pub(crate) struct Stripe {
    /// Whose stripe (the gateway's identity), and where its window comes from.
    gateway: u64,
    budget: Arc<Budget>,
    /// The most its body may carry.
    limit: u64,
    /// Its window, once granted; given back when done.
    grant: Mutex<Option<Grant>>,
    /// The bytes of its kept answer, from the same budgets; given back when it goes.
    kept: Mutex<Option<Grant>>,
    /// Held by the chunk that asks for the window, so parallel chunks take one grant.
    granting: tokio::sync::Mutex<()>,
    /// When the stripe was made: one that never got a head is dropped after [`IDLE`],
    /// whatever chunks keep coming.
    created: Instant,
    inner: Mutex<Inner>,
    /// Wakes chunks waiting for window and heads waiting for the answer.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    /// The body's length, once known (the head's `content-length`, or a chunk's total).
    total: Option<u64>,
    /// Next offset not yet received in order.
    next: u64,
    /// Offset up to which the origin request has taken the body.
    consumed: u64,
    /// Received out of order (offsets above `next`).
    pending: BTreeMap<u64, Bytes>,
    /// Bytes in `pending` and `ready`.
    held: u64,
    /// In order, not yet taken by the origin request.
    ready: VecDeque<Bytes>,
    body_waker: Option<Waker>,
    failed: Option<String>,
    /// It failed because the body grew over the relay's limit (the origin request's body
    /// ends with `BodyError::TooLarge`, which the head answers 413).
    over_limit: bool,
    /// The newest head's number (the gateway numbers them); it answers.
    heads: u64,
    /// A head started the origin request.
    origin_started: bool,
    /// The origin request runs (the stripe is not idle, whatever `touched` says).
    origin_running: bool,
    answer: Option<Published>,
    /// A streamed answer went to a head.
    streamed: bool,
    touched: Option<Instant>,
}

impl Stripes {
    /// Stripes whose windows come from budgets of `per_gateway` and `global` bytes.
    pub(crate) fn with_budget(per_gateway: u64, global: u64) -> Self {
        Self {
            map: Mutex::default(),
            gone: Mutex::default(),
            budget: Budget::new("canopy_relay_stripe_window_bytes", per_gateway, global),
            limit: u64::MAX,
        }
    }

    /// The same, with bodies of at most `limit` bytes (`None`: no limit): a body of
    /// unknown length that grows over it fails, and its origin request with it.
    pub(crate) fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit.unwrap_or(u64::MAX);
        self
    }

    /// The budgets stripes take their windows from.
    pub(crate) fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    /// The stripe, made if new.
    pub(crate) fn get(
        &self,
        identity: u64,
        id: u64,
        total: Option<u64>,
    ) -> Result<Arc<Stripe>, NoStripe> {
        let now = tunnel_io::clock::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = self.gone.lock().unwrap_or_else(|e| e.into_inner());
        // drop stripes left idle: their gateway gave up on them
        map.retain(|(g, sid), s| {
            let keep = !s.idle_at(now);
            if !keep {
                s.fail("no chunk or head for 60 s");
                gone.entry(*g).or_default().add(*sid);
            }
            keep
        });
        if !map.contains_key(&(identity, id)) {
            if gone.get(&identity).is_some_and(|g| g.ids.contains(&id)) {
                return Err(NoStripe::Gone);
            }
            let mut unfinished = 0;
            let mut finished = 0;
            let mut over = Vec::new();
            for ((g, sid), s) in map.iter() {
                if *g != identity {
                    continue;
                }
                if s.unfinished() {
                    unfinished += 1;
                } else {
                    finished += 1;
                    if s.over() {
                        over.push((s.touched(), *sid));
                    }
                }
            }
            if unfinished >= MAX_STRIPES {
                return Err(NoStripe::TooMany);
            }
            // stripes that linger for a late head: the oldest whose origin request is over
            // make room (a head sent again that late is refused, as after a minute idle)
            if finished >= MAX_FINISHED {
                over.sort_unstable();
                let n = (finished + 1 - MAX_FINISHED).min(over.len());
                let g = gone.entry(identity).or_default();
                for (_, sid) in &over[..n] {
                    map.remove(&(identity, *sid));
                    g.add(*sid);
                }
            }
        }
        drop(gone);
        let s = map
            .entry((identity, id))
            .or_insert_with(|| {
                Arc::new(Stripe {
                    gateway: identity,
                    budget: self.budget.clone(),
                    limit: self.limit,
                    grant: Mutex::new(None),
                    kept: Mutex::new(None),
                    granting: tokio::sync::Mutex::new(()),
                    created: now,
                    inner: Mutex::new(Inner {
                        touched: Some(now),
                        ..Inner::default()
                    }),
                    changed: Notify::new(),
                })
            })
            .clone();
        metrics::gauge!("canopy_relay_stripes").set(map.len() as f64);
        drop(map);
        match total {
            Some(t) => s.learn_total(t).map(|()| s),
            None => Ok(s),
        }
    }
}

/// Why a chunk was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// Beyond the stripe's end.
    OutOfRange,
    /// Beyond the relay's request body limit (a body of unknown length grew over it):
    /// the stripe failed with it.
    OverLimit,
    /// The stripe failed (its origin request ended without the body).
    Failed(String),
    /// The window did not open in time.
    Timeout,
    /// No window could be granted in time: the relay holds as many striped bytes of this
    /// gateway (or of all) as it may.
    NoBudget,
}

impl Stripe {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body is `total` bytes long: kept if it agrees with what the stripe knows (its
    /// length, the bytes it has); the origin request's body may end now.
    fn learn_total(&self, total: u64) -> Result<(), NoStripe> {
        let waker = {
            let mut g = self.lock();
            match g.total {
                Some(t) if t == total => return Ok(()),
                Some(_) => return Err(NoStripe::OtherLength),
                None => {}
            }
            let beyond = g
                .pending
                .last_key_value()
                .is_some_and(|(at, d)| at + d.len() as u64 > total);
            if g.next > total || beyond {
                return Err(NoStripe::OtherLength);
            }
            g.total = Some(total);
            g.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Whether nothing touched the stripe for [`IDLE`] and its origin request is not running.
    fn idle_at(&self, now: Instant) -> bool {
        let g = self.lock();
        let headless = !g.origin_started && now.duration_since(self.created) >= IDLE;
        !g.origin_running && (headless || g.touched.is_none_or(|t| now.duration_since(t) >= IDLE))
    }

    /// When a head or chunk last touched the stripe.
    fn touched(&self) -> Option<Instant> {
        self.lock().touched
    }

    /// Keeps `grant` (the bytes of its kept answer) as long as the stripe lingers.
    pub(crate) fn hold(&self, grant: Grant) {
        *self.kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(grant);
    }

    /// Whether the stripe's origin request is over and can no longer be opened by a late
    /// head: it failed, or it ran and its answer is published.
    fn over(&self) -> bool {
        let g = self.lock();
        !g.origin_running && (g.failed.is_some() || g.origin_started)
    }

    /// Whether the stripe still takes chunks (not failed, body not whole).
    fn unfinished(&self) -> bool {
        let g = self.lock();
        g.failed.is_none() && g.next < g.end()
    }

    /// Gives the stripe's window back to the budgets.
    fn release(&self) {
        self.grant.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Bytes held (received, not yet taken by the origin request).
    #[cfg(test)]
    fn held(&self) -> u64 {
        self.lock().held
    }

    /// Fails the stripe: the origin request's body ends with an error, waiting chunks give up.
    pub(crate) fn fail(&self, why: &str) {
        self.fail_with(why, false);
    }

    /// [`Self::fail`], saying whether the body grew over the relay's limit (unless the
    /// stripe failed already: the first reason stands).
    fn fail_with(&self, why: &str, over_limit: bool) {
        let waker = {
            let mut g = self.lock();
            if g.failed.is_none() && g.consumed < g.end() {
                g.failed = Some(why.to_string());
                g.over_limit = over_limit;
            }
            if g.failed.is_some() {
                // nothing held will be read: give the memory back
                g.pending.clear();
                g.ready.clear();
                g.held = 0;
            }
            g.body_waker.take()
        };
        self.release();
        if let Some(w) = waker {
            w.wake();
        }
        self.changed.notify_waiters();
    }

    /// The body is here in order below this offset (handed to the origin request's side).
    pub(crate) fn front(&self) -> u64 {
        self.lock().next
    }

    /// An empty chunk at `offset`: a question (how far is the body in order?), not bytes.
    /// It needs no window and waits for nothing; it is refused only when the stripe failed
    /// or `offset` lies beyond the body.
    pub(crate) fn ask(&self, offset: u64) -> Result<(), ChunkError> {
        let mut g = self.lock();
        if offset > g.end() {
            return Err(ChunkError::OutOfRange);
        }
        g.touched = Some(tunnel_io::clock::now());
        g.not_failed()
    }

    /// Takes a chunk, waiting (up to `wait`) while it lies beyond the window.
    pub(crate) async fn insert(
        &self,
        offset: u64,
        data: Bytes,
        wait: Duration,
    ) -> Result<(), ChunkError> {
        self.within(offset.saturating_add(data.len() as u64))?;
        let deadline = tokio::time::Instant::now() + wait;
        let window = self.window(deadline).await?;
        let mut data = data;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.admit(offset, data, window)? {
                None => return Ok(()),
                Some(back) => data = back,
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ChunkError::Timeout);
            }
        }
    }

    /// Takes a piece of a chunk now if the stripe's window has room for it: `Ok(None)`
    /// taken, `Ok(Some(data))` no room (or no window to be had now).
    pub(crate) fn try_insert(&self, offset: u64, data: Bytes) -> Result<Option<Bytes>, ChunkError> {
        self.within(offset.saturating_add(data.len() as u64))?;
        match self.window_now() {
            Some(w) => self.admit(offset, data, w),
            None => Ok(Some(data)),
        }
    }

    /// The window granted to the stripe, if any.
    fn granted(&self) -> Option<u64> {
        self.grant
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.bytes)
    }

    /// The stripe's window if it has one, or can have one from the budgets at once (the
    /// first piece of an upload: read whole, the first chunk on each path reached the
    /// origin at once); None while another chunk is being granted one, or the budgets
    /// have no room (that chunk is read on and waits, see [`Self::insert`]).
    fn window_now(&self) -> Option<u64> {
        if let Some(b) = self.granted() {
            return Some(b);
        }
        let _turn = self.granting.try_lock().ok()?;
        if let Some(b) = self.granted() {
            return Some(b);
        }
        if self.settled().is_some() {
            return None;
        }
        let grant = self.budget.try_grant(self.gateway, self.window_size())?;
        self.keep_window(grant).ok()
    }

    /// Whether bytes up to `end` may be part of the body: not beyond its length, nor
    /// beyond the relay's limit (a body of unknown length that grows over it fails: its
    /// origin request ends at once, not after a minute idle), nor in a stripe that failed.
    pub(crate) fn within(&self, end: u64) -> Result<(), ChunkError> {
        {
            let g = self.lock();
            if end > g.end() {
                return Err(ChunkError::OutOfRange);
            }
            g.not_failed()?;
            if end <= self.limit {
                return Ok(());
            }
        }
        self.fail_with(OVER_LIMIT, true);
        // (another failure may have come first: its reason stands)
        self.lock().not_failed()?;
        Err(ChunkError::OverLimit)
    }

    /// One look: takes `data` at `offset` if it lies within `window`; gives it back if not.
    fn admit(&self, offset: u64, data: Bytes, window: u64) -> Result<Option<Bytes>, ChunkError> {
        let end = offset.saturating_add(data.len() as u64);
        let mut g = self.lock();
        if end > g.end() {
            return Err(ChunkError::OutOfRange);
        }
        g.touched = Some(tunnel_io::clock::now());
        g.not_failed()?;
        // had it: in order already, or inside a chunk waiting (a chunk sent again
        // comes in 32 KiB pieces)
        let len = data.len() as u64;
        let covered = g
            .pending
            .range(..=offset)
            .next_back()
            .is_some_and(|(at, d)| at + d.len() as u64 >= end);
        if end <= g.next || covered {
            return Ok(None);
        }
        // a chunk at the front goes in whatever is held out of order (it moves to
        // the origin's side at once): at most two windows in all
        let in_order = offset <= g.next;
        if end <= g.consumed.saturating_add(window) && (in_order || g.held + len <= window) {
            let waker = g.put(offset, data);
            drop(g);
            if let Some(w) = waker {
                w.wake();
            }
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// The stripe's window: granted from the budgets on the first chunk (waiting until
    /// `deadline` for room), `min(total, WINDOW)` bytes ([`WINDOW`] while the length is
    /// not known).
    async fn window(&self, deadline: tokio::time::Instant) -> Result<u64, ChunkError> {
        if let Some(b) = self.granted() {
            return Ok(b);
        }
        // one chunk of the stripe asks; the others (sent in parallel) wait for its grant
        let _turn = self.granting.lock().await;
        if let Some(b) = self.granted() {
            return Ok(b);
        }
        if let Some(r) = self.settled() {
            return r;
        }
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let grant = self
            .budget
            .grant(self.gateway, self.window_size(), wait)
            .await
            .ok_or(ChunkError::NoBudget)?;
        self.keep_window(grant)
    }

    /// A window's size: `min(total, WINDOW)` bytes.
    fn window_size(&self) -> u64 {
        self.lock().end().clamp(1, WINDOW)
    }

    /// Whether the stripe still needs a window: not when failed or whole.
    fn settled(&self) -> Option<Result<u64, ChunkError>> {
        let g = self.lock();
        if let Err(e) = g.not_failed() {
            return Some(Err(e));
        }
        // the whole body came (its window went back): a chunk now is a copy
        (g.next >= g.end()).then_some(Ok(0))
    }

    /// Keeps `grant` as the stripe's window, unless the stripe failed or became whole
    /// meanwhile (the grant then goes straight back).
    fn keep_window(&self, grant: Grant) -> Result<u64, ChunkError> {
        let mut slot = self.grant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.settled() {
            return r;
        }
        let bytes = grant.bytes;
        *slot = Some(grant);
        Ok(bytes)
    }

    /// Registers head number `n` (the gateway counts the copies of a head; a late copy on
    /// a dying path must not take over from a newer one). Returns whether this head is the
    /// first to come, which opens the origin request.
    pub(crate) fn attach_head(&self, n: u64) -> bool {
        let first = {
            let mut g = self.lock();
            g.heads = g.heads.max(n);
            g.touched = Some(tunnel_io::clock::now());
            let first = !g.origin_started;
            if first {
                g.origin_started = true;
                g.origin_running = true;
            }
            first
        };
        // an older head still waiting gives way
        self.changed.notify_waiters();
        first
    }

    /// Stores the origin's answer for the newest head.
    pub(crate) fn publish(&self, answer: Published) {
        {
            let mut g = self.lock();
            g.answer = Some(answer);
            g.origin_running = false;
            g.touched = Some(tunnel_io::clock::now());
        }
        self.changed.notify_waiters();
    }

    /// The answer, for head number `head` while it is the newest; `wait` is the longest
    /// time without progress (chunks taken by the origin request count as progress).
    pub(crate) async fn answer(&self, head: u64, wait: Duration) -> Result<Published, NoAnswer> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut g = self.lock();
                if g.heads > head {
                    return Err(NoAnswer::Superseded);
                }
                g.touched = Some(tunnel_io::clock::now());
                match g.answer.take() {
                    Some(Published::Kept(a)) => {
                        g.answer = Some(Published::Kept(a.clone()));
                        return Ok(Published::Kept(a));
                    }
                    Some(Published::Stream(r)) => {
                        g.streamed = true;
                        return Ok(Published::Stream(r));
                    }
                    None if g.streamed => return Err(NoAnswer::Gone),
                    None => {}
                }
            }
            if tokio::time::timeout(wait, notified).await.is_err() {
                return Err(NoAnswer::Timeout);
            }
        }
    }

    /// The origin request's body: the chunks in order. `on_done` fires once it has all.
    pub(crate) fn body(
        self: &Arc<Self>,
        counter: Option<metrics::Counter>,
    ) -> (StripeBody, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            StripeBody {
                stripe: self.clone(),
                done: Some(tx),
                counter,
                idle: Box::pin(tokio::time::sleep(IDLE)),
            },
            rx,
        )
    }
}

impl Inner {
    /// Where the body ends: its length, or nowhere yet.
    fn end(&self) -> u64 {
        self.total.unwrap_or(u64::MAX)
    }

    /// Refused with the reason when the stripe failed.
    fn not_failed(&self) -> Result<(), ChunkError> {
        if self.over_limit {
            return Err(ChunkError::OverLimit);
        }
        match &self.failed {
            Some(f) => Err(ChunkError::Failed(f.clone())),
            None => Ok(()),
        }
    }

    /// Stores a chunk and moves what is now in order to `ready`; the waker to wake.
    fn put(&mut self, offset: u64, data: Bytes) -> Option<Waker> {
        let end = offset + data.len() as u64;
        if end <= self.next || data.is_empty() {
            return None; // already had it
        }
        // keep only what is new: pieces sent again may overlap chunks and each other (a
        // chunk sent again as pieces while the chunk itself still arrives), and what came
        // in order
        let (offset, data) = if offset < self.next {
            let skip = (self.next - offset) as usize;
            (self.next, data.slice(skip..))
        } else {
            (offset, data)
        };
        // two at one offset: the longer stays (the gateway counts an answered chunk as
        // kept, and may then drop its pieces still to send)
        match self.pending.entry(offset) {
            std::collections::btree_map::Entry::Vacant(v) => {
                self.held += data.len() as u64;
                v.insert(data);
            }
            std::collections::btree_map::Entry::Occupied(mut o) if o.get().len() < data.len() => {
                self.held += (data.len() - o.get().len()) as u64;
                o.insert(data);
            }
            std::collections::btree_map::Entry::Occupied(_) => {}
        }
        let (fresh, dropped) = tunnel::reorder::take_in_order(&mut self.pending, &mut self.next);
        self.held -= dropped;
        let moved = !fresh.is_empty();
        self.ready.extend(fresh);
        if moved {
            self.body_waker.take()
        } else {
            None
        }
    }
}

/// The body of a striped request, as the origin request reads it.
pub(crate) struct StripeBody {
    stripe: Arc<Stripe>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    counter: Option<metrics::Counter>,
    /// Fails the body when no chunk comes for [`IDLE`] (the gateway gave up on it).
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl StripeBody {
    /// The origin request has the whole body: its response timeout may start.
    fn finished(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for StripeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let mut g = this.stripe.lock();
        let total = g.end();
        if let Some(d) = g.ready.pop_front() {
            this.idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
            g.consumed += d.len() as u64;
            g.held -= d.len() as u64;
            g.touched = Some(tunnel_io::clock::now());
            let all = g.consumed >= total;
            drop(g);
            if all {
                // the origin has the whole body: the window goes back
                this.stripe.release();
            }
            // the window moved: waiting chunks may go in
            this.stripe.changed.notify_waiters();
            if let Some(c) = &this.counter {
                c.increment(d.len() as u64);
            }
            if all {
                this.finished();
            }
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if g.consumed >= total {
            drop(g);
            // (a length learnt after the last byte went: the window goes back now)
            this.stripe.release();
            this.finished();
            return Poll::Ready(None);
        }
        if g.over_limit {
            return Poll::Ready(Some(Err(BodyError::TooLarge(this.stripe.limit))));
        }
        if let Some(f) = g.failed.clone() {
            return Poll::Ready(Some(Err(BodyError::Stripe(f))));
        }
        g.body_waker = Some(cx.waker().clone());
        drop(g);
        if this.idle.as_mut().poll(cx).is_ready() {
            this.stripe.fail("no chunk for 60 s");
            return Poll::Ready(Some(Err(BodyError::Stripe("no chunk for 60 s".into()))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let g = self.stripe.lock();
        g.consumed >= g.end() && g.ready.is_empty()
    }

    /// Exact while the body's length is known: the origin request then has a
    /// `content-length` (chunked otherwise).
    fn size_hint(&self) -> SizeHint {
        let g = self.stripe.lock();
        match g.total {
            Some(t) => SizeHint::with_exact(t - g.consumed.min(t)),
            None => SizeHint::default(),
        }
    }
}

impl Drop for StripeBody {
    fn drop(&mut self) {
        // the origin request ended (or gave up): chunks still waiting must not wait forever
        self.stripe.fail("the origin request ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn chunks_in_any_order_and_twice_make_the_body_once() {
        let stripes = Stripes::default();
        let s = stripes.get(1, 7, Some(10)).expect("stripe");
        assert_eq!(
            stripes.get(1, 7, Some(11)).err(),
            Some(NoStripe::OtherLength),
            "total must match"
        );
        let (body, done) = s.body(None);
        let w = Duration::from_secs(1);
        s.insert(6, Bytes::from_static(b"6789"), w)
            .await
            .expect("c");
        s.insert(0, Bytes::from_static(b"012"), w).await.expect("a");
        s.insert(0, Bytes::from_static(b"012"), w)
            .await
            .expect("dup");
        s.insert(3, Bytes::from_static(b"345"), w).await.expect("b");
        s.insert(6, Bytes::from_static(b"6789"), w)
            .await
            .expect("dup");
        assert_eq!(
            s.insert(8, Bytes::from_static(b"89x"), w).await,
            Err(ChunkError::OutOfRange)
        );
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"0123456789");
        done.await.expect("done fired");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_that_grows_over_the_limit_fails_at_once() {
        let stripes = Stripes::default().with_limit(Some(10));
        let s = stripes.get(1, 9, None).expect("stripe");
        let (body, _done) = s.body(None);
        let w = Duration::from_secs(1);
        s.insert(0, Bytes::from_static(b"0123"), w)
            .await
            .expect("within");
        assert_eq!(
            s.try_insert(8, Bytes::from_static(b"89x")),
            Err(ChunkError::OverLimit),
            "its last byte is past the limit"
        );
        // the origin request's body ends with an error now, not after a minute idle
        let got = tokio::time::timeout(Duration::from_secs(1), body.collect())
            .await
            .expect("the body ends at once");
        assert!(
            matches!(got, Err(BodyError::TooLarge(10))),
            "a body cut short never looks whole, and its head is answered 413"
        );
        assert!(!s.unfinished());
        // every chunk after it is refused the same way (413 at the gateway), whatever
        // its offset; a question too
        assert_eq!(
            s.insert(4, Bytes::from_static(b"4"), w).await,
            Err(ChunkError::OverLimit)
        );
        assert_eq!(s.ask(4), Err(ChunkError::OverLimit));
        assert_eq!(stripes.budget.held(1), (0, 0), "the window went back");
    }

    #[tokio::test]
    async fn a_stripe_that_failed_before_its_body_grew_over_the_limit_keeps_its_reason() {
        let stripes = Stripes::default().with_limit(Some(10));
        let s = stripes.get(1, 10, None).expect("stripe");
        s.fail("the origin answered already");
        assert_eq!(
            s.try_insert(8, Bytes::from_static(b"89x")),
            Err(ChunkError::Failed("the origin answered already".into()))
        );
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_ends_at_the_length_a_later_chunk_names() {
        let stripes = Stripes::default();
        let s = stripes.get(1, 8, None).expect("stripe");
        let (body, done) = s.body(None);
        assert_eq!(body.size_hint().exact(), None, "the origin gets it chunked");
        let w = Duration::from_secs(1);
        s.insert(0, Bytes::from_static(b"0123"), w)
            .await
            .expect("a");
        // a chunk beyond the end of a body of unknown length is not out of range
        s.insert(8, Bytes::from_static(b"89"), w).await.expect("c");
        assert!(s.unfinished());
        // a chunk without a total changes nothing; a shorter length than bytes taken is
        // refused
        assert!(stripes.get(1, 8, None).is_ok());
        assert_eq!(
            stripes.get(1, 8, Some(9)).err(),
            Some(NoStripe::OtherLength)
        );
        // the chunk with the last bytes names the length
        let s = stripes.get(1, 8, Some(10)).expect("the length");
        assert_eq!(
            stripes.get(1, 8, Some(11)).err(),
            Some(NoStripe::OtherLength)
        );
        assert_eq!(
            s.insert(9, Bytes::from_static(b"9x"), w).await,
            Err(ChunkError::OutOfRange),
            "beyond the end, now that it is known"
        );
        s.insert(4, Bytes::from_static(b"4567"), w)
            .await
            .expect("b");
        let got = body.collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"0123456789");
        done.await.expect("done fired");
        assert!(!s.unfinished());
        assert_eq!(stripes.budget.held(1), (0, 0), "the window went back");
    }

    #[tokio::test]
    async fn a_length_learnt_after_the_last_byte_went_ends_the_body() {
        let stripes = Stripes::default();
        let s = stripes.get(1, 4, None).expect("stripe");
        let (mut body, done) = s.body(None);
        s.insert(0, Bytes::from_static(b"abc"), Duration::from_secs(1))
            .await
            .expect("bytes");
        let f = body.frame().await.expect("frame").expect("data");
        assert_eq!(f.into_data().ok().as_deref(), Some(&b"abc"[..]));
        let rest = tokio::spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !rest.is_finished(),
            "the body waits while its length is unknown"
        );
        // an empty chunk at the end that names the length (a question sent again)
        stripes.get(1, 4, Some(3)).expect("the length");
        let got = rest.await.expect("join").expect("body");
        assert!(got.is_empty());
        done.await.expect("done fired");
        assert_eq!(stripes.budget.held(1), (0, 0), "the window went back");
    }

    #[test]
    fn an_empty_chunk_is_a_question_that_needs_no_window() {
        let stripes = Stripes::default();
        let s = stripes.get(1, 3, Some(100)).expect("stripe");
        // no window granted yet, and none is taken for a question
        assert_eq!(s.ask(0), Ok(()));
        assert_eq!(s.ask(100), Ok(()), "the body's end is a front too");
        assert_eq!(stripes.budget.held(1), (0, 0), "no window granted for it");
        assert_eq!(s.ask(101), Err(ChunkError::OutOfRange));
        s.fail("origin gone");
        assert_eq!(s.ask(0), Err(ChunkError::Failed("origin gone".into())));
    }

    #[tokio::test]
    async fn a_chunk_beyond_the_window_waits_for_the_origin() {
        let stripes = Stripes::default();
        let total = WINDOW + 10;
        let s = stripes.get(1, 1, Some(total)).expect("stripe");
        let (mut body, _done) = s.body(None);
        let far = Bytes::from(vec![1u8; 10]);
        // beyond the window: times out while nothing is consumed
        assert_eq!(
            s.insert(WINDOW, far.clone(), Duration::from_millis(20))
                .await,
            Err(ChunkError::Timeout)
        );
        // the first bytes arrive and are taken: the window moves and the far chunk goes in
        let s2 = s.clone();
        let waiter =
            tokio::spawn(async move { s2.insert(WINDOW, far, Duration::from_secs(2)).await });
        s.insert(0, Bytes::from(vec![0u8; 1000]), Duration::from_secs(1))
            .await
            .expect("first");
        let f = body.frame().await.expect("frame").expect("data");
        assert_eq!(f.into_data().map(|d| d.len()).ok(), Some(1000));
        assert_eq!(waiter.await.expect("join"), Ok(()));
    }

    #[tokio::test]
    async fn overlapping_chunks_at_odd_offsets_cannot_grow_a_stripe_past_its_window() {
        let stripes = Stripes::default();
        let total = 4 * WINDOW;
        let s = stripes.get(1, 9, Some(total)).expect("stripe");
        let mib = Bytes::from(vec![7u8; 1 << 20]);
        // 1 MiB chunks one byte apart, none in order: each ends within the window
        let mut taken = 0;
        for off in 1..64u64 {
            if s.insert(off, mib.clone(), Duration::from_millis(5)).await == Ok(()) {
                taken += 1;
            }
        }
        assert!(s.held() <= WINDOW, "held {}", s.held());
        assert_eq!(
            taken,
            (WINDOW >> 20) as usize,
            "a window's worth went in, no more"
        );
        s.fail("test over");
        assert_eq!(s.held(), 0, "a failed stripe gives its memory back");
        assert_eq!(stripes.budget.held(1), (0, 0), "and its window");
    }

    #[tokio::test]
    async fn pieces_of_a_chunk_sent_again_never_block_the_front() {
        let stripes = Stripes::default();
        let k = 1024u64;
        // a 300 KiB stripe: its window is 300 KiB
        let s = stripes.get(1, 5, Some(300 * k)).expect("stripe");
        let w = Duration::from_millis(50);
        let chunk = |from: u64, to: u64| Bytes::from(vec![3u8; (to - from) as usize]);
        s.insert(128 * k, chunk(128 * k, 256 * k), w)
            .await
            .expect("middle");
        // its answer was lost: sent again in 32 KiB pieces, all inside what is held
        for at in [128, 160, 192, 224] {
            s.insert(at * k, chunk(at * k, (at + 32) * k), w)
                .await
                .expect("a piece of a held chunk");
        }
        s.insert(256 * k, chunk(256 * k, 300 * k), w)
            .await
            .expect("tail");
        assert_eq!(s.held(), 172 * k, "pieces are not held twice");
        // the front goes in at once, whatever is held out of order
        s.insert(0, chunk(0, 128 * k), w).await.expect("front");
    }

    #[tokio::test]
    async fn parallel_first_chunks_share_one_window() {
        // room for exactly one window
        let stripes = Stripes::with_budget(WINDOW, WINDOW);
        let s = stripes.get(1, 1, Some(4 * WINDOW)).expect("stripe");
        let mut tasks = Vec::new();
        for i in 0..4u64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.insert(
                    i * 1000,
                    Bytes::from(vec![1u8; 1000]),
                    Duration::from_millis(200),
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("join"), Ok(()));
        }
        assert_eq!(stripes.budget.held(1), (WINDOW, WINDOW));
    }

    #[tokio::test]
    async fn a_gateway_over_its_budget_waits_and_many_ids_are_refused() {
        let stripes = Stripes::with_budget(2 * WINDOW, 8 * WINDOW);
        let total = 3 * WINDOW;
        let a = stripes.get(1, 1, Some(total)).expect("a");
        let b = stripes.get(1, 2, Some(total)).expect("b");
        let c = stripes.get(1, 3, Some(total)).expect("c");
        let w = Duration::from_millis(20);
        let piece = Bytes::from(vec![1u8; 1000]);
        a.insert(0, piece.clone(), w).await.expect("a has a window");
        b.insert(0, piece.clone(), w).await.expect("b has a window");
        // the gateway's budget is two windows: c waits, then is refused for now
        assert_eq!(
            c.insert(0, piece.clone(), w).await,
            Err(ChunkError::NoBudget)
        );
        // another gateway is not held up
        let other = stripes.get(2, 1, Some(total)).expect("other gateway");
        other.insert(0, piece.clone(), w).await.expect("own budget");
        // a ends (here: fails): its window goes to c, which was waiting
        let c2 = c.clone();
        let waiter = tokio::spawn(async move {
            c2.insert(0, Bytes::from(vec![1u8; 1000]), Duration::from_secs(5))
                .await
        });
        tokio::task::yield_now().await;
        a.fail("done");
        assert_eq!(waiter.await.expect("join"), Ok(()));
        // ids without end: at most MAX_STRIPES unfinished per gateway
        for id in 100..(100 + MAX_STRIPES as u64) {
            let _ = stripes.get(3, id, Some(10));
        }
        assert_eq!(
            stripes.get(3, 99_999, Some(10)).err(),
            Some(NoStripe::TooMany)
        );
        assert!(stripes.get(4, 99_999, Some(10)).is_ok(), "per gateway");
    }

    #[test]
    fn finished_stripes_linger_up_to_a_bound_and_the_oldest_go_first() {
        let stripes = Stripes::default();
        for id in 0..(MAX_FINISHED as u64 + 10) {
            let s = stripes
                .get(5, id, Some(10))
                .expect("a finished stripe never counts as unfinished");
            s.fail("done");
        }
        let held = |g: u64| {
            let map = stripes.map.lock().unwrap_or_else(|e| e.into_inner());
            map.keys()
                .filter(|(gw, _)| *gw == g)
                .map(|(_, id)| *id)
                .collect::<Vec<_>>()
        };
        let ids = held(5);
        assert_eq!(ids.len(), MAX_FINISHED, "at most MAX_FINISHED linger");
        assert!(!ids.contains(&0), "the oldest went first");
        assert!(ids.contains(&(MAX_FINISHED as u64 + 9)), "the newest stays");
        // a head sent again that late must not open a second origin request
        assert_eq!(stripes.get(5, 0, Some(10)).err(), Some(NoStripe::Gone));
    }

    #[test]
    fn a_stripe_whose_origin_request_runs_is_never_dropped_to_make_room() {
        let stripes = Stripes::default();
        // the whole body came and the head opened the origin request, which still runs
        let running = stripes.get(6, 0, Some(10)).expect("stripe");
        assert!(running.attach_head(1));
        running.lock().next = 10;
        for id in 1..(MAX_FINISHED as u64 + 10) {
            stripes.get(6, id, Some(10)).expect("stripe").fail("done");
        }
        let map = stripes.map.lock().unwrap_or_else(|e| e.into_inner());
        assert!(map.contains_key(&(6, 0)), "the running one stays");
    }

    #[tokio::test]
    async fn the_newest_head_gets_the_answer_and_failures_reach_the_body() {
        let stripes = Stripes::default();
        let s = stripes.get(2, 3, Some(5)).expect("stripe");
        // head 2 comes first (head 1 is late on a dying path): it opens the origin request
        assert!(s.attach_head(2));
        assert!(!s.attach_head(1));
        let (first, second) = (1, 2);
        // the first head gives way at once
        assert_eq!(
            s.answer(first, Duration::from_secs(1)).await.err(),
            Some(NoAnswer::Superseded)
        );
        s.publish(Published::Kept(Arc::new(crate::session::Outcome::Retry)));
        assert!(s.answer(second, Duration::from_secs(1)).await.is_ok());
        // a kept answer is there for a head sent again later
        assert!(!s.attach_head(3));
        assert!(s.answer(3, Duration::from_secs(1)).await.is_ok());
        let (body, _done) = s.body(None);
        s.fail("gateway gone");
        assert!(body.collect().await.is_err());
        assert!(matches!(
            s.insert(0, Bytes::from_static(b"a"), Duration::from_millis(10))
                .await,
            Err(ChunkError::Failed(_))
        ));
    }
}
