//! Pulled answers (`tunnel::wire::pull`): a large origin answer's body, kept in a bounded
//! buffer while the gateway fetches it chunk by chunk over every path of its session.
//!
//! A pull is known by (gateway identity, pull id). The relay reads the origin's body only
//! while it holds less than [`PULL_WINDOW`] beyond what the gateway has in order (so a
//! slow gateway slows the origin, not the relay's memory), and drops bytes as each chunk
//! request reports what the gateway has. A pull's window comes from the same budgets as
//! striped uploads (per gateway and for all) before the answer's head goes out; without
//! room the answer goes whole as before. A gateway has at most [`MAX_PULLS`] pulls at once,
//! and one nobody asked anything of for [`IDLE`] is dropped (its origin answer with it).

use crate::budget::{Budget, Grant};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tunnel::wire::pull::{PullChunk, PULL_WINDOW};

/// A pull nobody asked for a chunk of for this long is dropped.
const IDLE: Duration = Duration::from_secs(60);
/// Pulls of one gateway at once.
pub(crate) const MAX_PULLS: usize = 256;

/// What the relay holds of one pulled body (sans-IO): the bytes from `base` (the gateway
/// has everything below) up to `read` (what the origin gave so far).
#[derive(Debug)]
pub(crate) struct PullBuffer {
    total: u64,
    window: u64,
    base: u64,
    read: u64,
    /// The bytes from `base` to `read`, in order.
    held: VecDeque<Bytes>,
    failed: Option<String>,
}

/// What a chunk request gets from the buffer now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Slice {
    /// The chunk's bytes, in order (pieces of what the origin sent).
    Ready(Vec<Bytes>),
    /// Not read from the origin yet.
    Wait,
    /// Refused: the request can never be answered.
    Refused(PullRefusal),
}

/// Why a chunk request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PullRefusal {
    /// No such pull (it ended, was dropped idle, or never was).
    #[error("no such pulled answer at the relay (it ended or was dropped)")]
    Unknown,
    /// The chunk ends beyond the body.
    #[error("the chunk ends beyond the body")]
    BeyondEnd,
    /// The chunk starts below what the gateway said it has (dropped already).
    #[error("the chunk lies below what the gateway has")]
    Dropped,
    /// The chunk lies beyond the window the relay holds.
    #[error("the chunk lies beyond the window")]
    BeyondWindow,
    /// The origin's body failed.
    #[error("the origin's answer failed: {0}")]
    Failed(String),
    /// The origin did not send the chunk's bytes in time.
    #[error("the origin did not send the chunk in time")]
    Timeout,
}

impl PullBuffer {
    pub(crate) fn new(total: u64, window: u64) -> Self {
        Self {
            total,
            window,
            base: 0,
            read: 0,
            held: VecDeque::new(),
            failed: None,
        }
    }

    /// Bytes that may be read from the origin now.
    pub(crate) fn room(&self) -> u64 {
        (self.base.saturating_add(self.window))
            .min(self.total)
            .saturating_sub(self.read)
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> u64 {
        self.read - self.base
    }

    /// Whether the origin gave the whole body.
    pub(crate) fn complete(&self) -> bool {
        self.read >= self.total
    }

    /// Takes bytes the origin sent. More than the body's length fails the pull.
    pub(crate) fn push(&mut self, data: Bytes) {
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        let n = data.len() as u64;
        if self.read + n > self.total {
            self.fail("the origin sent more than its content-length");
            return;
        }
        self.read += n;
        self.held.push_back(data);
    }

    /// The origin's body failed (or ended short).
    pub(crate) fn fail(&mut self, why: &str) {
        if self.failed.is_none() {
            self.failed = Some(why.to_string());
            self.held.clear();
            self.base = self.read;
        }
    }

    /// The gateway has every byte below `offset`: what lies below goes.
    pub(crate) fn have(&mut self, offset: u64) {
        let target = offset.min(self.read);
        while self.base < target {
            let Some(front) = self.held.front_mut() else {
                break;
            };
            let drop = (target - self.base).min(front.len() as u64);
            if drop == front.len() as u64 {
                self.held.pop_front();
            } else {
                let _ = front.split_to(drop as usize);
            }
            self.base += drop;
        }
    }

    /// The chunk `[offset, offset + len)` as it stands.
    pub(crate) fn slice(&self, offset: u64, len: u64) -> Slice {
        let end = offset.saturating_add(len);
        if end > self.total {
            return Slice::Refused(PullRefusal::BeyondEnd);
        }
        if let Some(why) = &self.failed {
            return Slice::Refused(PullRefusal::Failed(why.clone()));
        }
        if offset < self.base {
            return Slice::Refused(PullRefusal::Dropped);
        }
        if end > self.base.saturating_add(self.window) {
            return Slice::Refused(PullRefusal::BeyondWindow);
        }
        if end > self.read {
            return Slice::Wait;
        }
        let mut out = Vec::new();
        let mut at = self.base;
        for b in &self.held {
            let (start, stop) = (at, at + b.len() as u64);
            at = stop;
            if stop <= offset {
                continue;
            }
            if start >= end {
                break;
            }
            let from = offset.max(start) - start;
            let to = end.min(stop) - start;
            out.push(b.slice(from as usize..to as usize));
        }
        Slice::Ready(out)
    }
}

/// One pull: its buffer, shared with the task that reads the origin's body.
struct Shared {
    buf: Mutex<PullBuffer>,
    /// Wakes the reader (room) and chunk requests (bytes).
    changed: Notify,
    /// When the gateway last asked for a chunk.
    touched: Mutex<Instant>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PullBuffer> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.touched.lock().unwrap_or_else(|e| e.into_inner()) = tunnel_io::clock::now();
    }

    /// How long the gateway has asked for nothing.
    fn quiet_for(&self) -> Duration {
        tunnel_io::clock::since(*self.touched.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct Pull {
    shared: Arc<Shared>,
    /// Reads the origin's body, then holds the pull until the gateway ends it or goes
    /// quiet for [`IDLE`].
    reader: tokio::task::JoinHandle<()>,
    _grant: Grant,
}

type Map = Mutex<HashMap<(u64, u64), Arc<Pull>>>;

impl Drop for Pull {
    fn drop(&mut self) {
        // the origin's answer goes with it
        self.reader.abort();
    }
}

/// Every pull in progress.
pub(crate) struct Pulls {
    map: Arc<Map>,
    budget: Arc<Budget>,
}

impl Pulls {
    /// Pulls whose windows come from `budget`.
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self {
            map: Arc::default(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<Pull>>> {
        lock_map(&self.map)
    }

    /// Keeps `body` (of `total` bytes) for gateway `identity` to pull as `id`; gives it
    /// back when the relay has no room for it (or the id is taken): it then goes whole.
    pub(crate) fn start<B>(
        &self,
        identity: u64,
        id: u64,
        total: u64,
        body: B,
        idle: Duration,
    ) -> Result<(), B>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Display,
    {
        let mut map = self.lock();
        if map.contains_key(&(identity, id))
            || map.keys().filter(|(g, _)| *g == identity).count() >= MAX_PULLS
        {
            return Err(body);
        }
        let window = PULL_WINDOW.min(total);
        let Some(grant) = self.budget.try_grant(identity, window) else {
            return Err(body);
        };
        let shared = Arc::new(Shared {
            buf: Mutex::new(PullBuffer::new(total, window)),
            changed: Notify::new(),
            touched: Mutex::new(tunnel_io::clock::now()),
        });
        let (s, map_ref, key) = (shared.clone(), Arc::downgrade(&self.map), (identity, id));
        let reader = tokio::spawn(async move {
            read_origin(&s, body, idle).await;
            // what is left stays until the gateway ends the pull or goes quiet
            loop {
                let quiet = s.quiet_for();
                if quiet >= IDLE {
                    break;
                }
                tokio::time::sleep(IDLE - quiet).await;
            }
            if let Some(map) = map_ref.upgrade() {
                let mut map = lock_map(&map);
                map.remove(&key);
                metrics::gauge!("canopy_relay_pulls").set(map.len() as f64);
            }
        });
        map.insert(
            key,
            Arc::new(Pull {
                shared,
                reader,
                _grant: grant,
            }),
        );
        metrics::gauge!("canopy_relay_pulls").set(map.len() as f64);
        Ok(())
    }

    /// The bytes of chunk `c` for gateway `identity`, waiting up to `wait` for the origin.
    pub(crate) async fn chunk(
        &self,
        identity: u64,
        c: &PullChunk,
        wait: Duration,
    ) -> Result<Vec<Bytes>, PullRefusal> {
        let pull = self
            .lock()
            .get(&(identity, c.id))
            .cloned()
            .ok_or(PullRefusal::Unknown)?;
        pull.shared.touch();
        {
            let mut b = pull.shared.lock();
            let before = b.held();
            b.have(c.have);
            if b.held() < before {
                pull.shared.changed.notify_waiters();
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = pull.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match pull.shared.lock().slice(c.offset, c.len) {
                Slice::Ready(b) => return Ok(b),
                Slice::Refused(r) => return Err(r),
                Slice::Wait => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(PullRefusal::Timeout);
            }
        }
    }

    /// Gateway `identity` is done with pull `id`.
    pub(crate) fn end(&self, identity: u64, id: u64) -> bool {
        let mut map = self.lock();
        let found = map.remove(&(identity, id)).is_some();
        metrics::gauge!("canopy_relay_pulls").set(map.len() as f64);
        found
    }
}

fn lock_map(map: &Map) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<Pull>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads the origin's body into the buffer while it has room; returns when the body is
/// whole, failed, or the gateway asked for nothing for [`IDLE`].
async fn read_origin<B>(shared: &Shared, body: B, idle: Duration)
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    loop {
        // wait for room (the gateway's progress frees it)
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let b = shared.lock();
                if b.complete() {
                    return;
                }
                if b.room() > 0 {
                    break;
                }
            }
            if tokio::time::timeout(IDLE, changed).await.is_err() && shared.quiet_for() >= IDLE {
                shared
                    .lock()
                    .fail("the gateway asked for nothing for a minute");
                return;
            }
        }
        let why = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    shared.lock().push(data);
                    shared.changed.notify_waiters();
                }
                continue;
            }
            Ok(Some(Err(e))) => format!("the origin's body failed: {e}"),
            Ok(None) => {
                let b = shared.lock();
                if b.complete() {
                    drop(b);
                    shared.changed.notify_waiters();
                    return;
                }
                "the origin's body ended before its content-length".to_string()
            }
            Err(_) => format!("the origin sent nothing for {} ms", idle.as_millis()),
        };
        shared.lock().fail(&why);
        shared.changed.notify_waiters();
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(range: std::ops::Range<u8>) -> Bytes {
        Bytes::from(range.collect::<Vec<u8>>())
    }

    fn joined(s: Slice) -> Vec<u8> {
        match s {
            Slice::Ready(parts) => parts.iter().flat_map(|b| b.iter().copied()).collect(),
            other => panic!("not ready: {other:?}"),
        }
    }

    #[test]
    fn chunks_come_from_across_the_origins_pieces() {
        let mut b = PullBuffer::new(30, 16);
        assert_eq!(b.room(), 16);
        b.push(bytes(0..10));
        b.push(bytes(10..16));
        assert_eq!(b.room(), 0);
        assert_eq!(joined(b.slice(8, 4)), vec![8, 9, 10, 11]);
        assert_eq!(joined(b.slice(0, 16)), (0..16).collect::<Vec<u8>>());
        // beyond what was read: wait; beyond the window: refused at once
        assert_eq!(b.slice(14, 4), Slice::Refused(PullRefusal::BeyondWindow));
        b.have(9);
        assert_eq!(b.held(), 7);
        assert_eq!(b.room(), 9);
        assert_eq!(b.slice(14, 4), Slice::Wait);
        assert_eq!(b.slice(8, 2), Slice::Refused(PullRefusal::Dropped));
        assert_eq!(joined(b.slice(9, 3)), vec![9, 10, 11]);
        b.push(bytes(16..30));
        assert!(b.complete());
        assert_eq!(joined(b.slice(14, 4)), vec![14, 15, 16, 17]);
        assert_eq!(b.slice(28, 3), Slice::Refused(PullRefusal::BeyondEnd));
        b.have(30);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_window() {
        let mut b = PullBuffer::new(1 << 30, 1000);
        let mut have = 0;
        for step in 0..500u64 {
            // the reader takes only the room there is
            let n = b.room().min(97);
            b.push(Bytes::from(vec![0u8; n as usize]));
            assert!(b.held() <= 1000);
            // the gateway reports progress in odd steps, sometimes beyond what was read
            have += step % 7 * 13;
            b.have(have);
        }
    }

    #[test]
    fn an_origin_that_sends_too_much_or_fails_fails_the_pull() {
        let mut b = PullBuffer::new(4, 16);
        b.push(bytes(0..5));
        assert!(matches!(
            b.slice(0, 1),
            Slice::Refused(PullRefusal::Failed(_))
        ));
        let mut b = PullBuffer::new(10, 16);
        b.push(bytes(0..4));
        b.fail("reset");
        assert_eq!(
            b.slice(0, 2),
            Slice::Refused(PullRefusal::Failed("reset".into()))
        );
        assert_eq!(b.held(), 0);
    }

    #[tokio::test]
    async fn a_chunk_waits_for_the_origin_and_the_window_follows_the_gateway() {
        let budget = Budget::new("test_bytes", 1 << 30, 1 << 30);
        let pulls = Pulls::new(budget);
        let total = (PULL_WINDOW + (1 << 20)) as usize;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, String>>(4);
        let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
        assert!(pulls
            .start(1, 42, total as u64, body, Duration::from_secs(5))
            .is_ok());
        let feeder = tokio::spawn(async move {
            let mut sent = 0;
            while sent < total {
                let n = (64 * 1024).min(total - sent);
                let piece: Vec<u8> = (sent..sent + n).map(|i| (i % 251) as u8).collect();
                if tx
                    .send(Ok(http_body::Frame::data(piece.into())))
                    .await
                    .is_err()
                {
                    return sent;
                }
                sent += n;
            }
            sent
        });
        let c = |offset: u64, have: u64| PullChunk {
            id: 42,
            offset,
            len: 1 << 20,
            have,
            urgent: None,
        };
        let first = pulls.chunk(1, &c(0, 0), Duration::from_secs(5)).await;
        let got: Vec<u8> = first
            .expect("chunk")
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        // the last chunk lies beyond the first window: the gateway's progress opens it
        let last = pulls
            .chunk(1, &c(PULL_WINDOW, 1 << 20), Duration::from_secs(5))
            .await
            .expect("last chunk");
        let got: Vec<u8> = last.iter().flat_map(|b| b.to_vec()).collect();
        let at = PULL_WINDOW as usize;
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((at + i) % 251) as u8));
        assert_eq!(feeder.await.expect("feeder"), total);
        assert_eq!(
            pulls.chunk(2, &c(0, 0), Duration::from_millis(10)).await,
            Err(PullRefusal::Unknown),
            "another gateway cannot pull it"
        );
        assert!(pulls.end(1, 42));
        assert_eq!(
            pulls.chunk(1, &c(0, 0), Duration::from_millis(10)).await,
            Err(PullRefusal::Unknown)
        );
    }

    #[tokio::test]
    async fn a_gateway_without_budget_gets_its_body_back() {
        let pulls = Pulls::new(Budget::new("test_bytes", 1 << 20, 1 << 30));
        let body = || http_body_util::Full::new(Bytes::from_static(b"x"));
        let idle = Duration::from_secs(1);
        assert!(pulls.start(1, 1, 1 << 20, body(), idle).is_ok());
        assert!(
            pulls.start(1, 2, 1 << 20, body(), idle).is_err(),
            "no budget"
        );
        assert!(
            pulls.start(1, 1, 1 << 20, body(), idle).is_err(),
            "id taken"
        );
        assert!(pulls.start(2, 2, 1 << 20, body(), idle).is_ok());
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
