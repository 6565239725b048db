//! The gateway's bids and check-ins between the device and their outcome, sans-IO.
//!
//! A request is admitted (its key checked against what the key already stands for),
//! journaled by the shell, then sent at once; when it cannot be delivered it waits in the
//! queue and is sent again, one at a time and in edge-time order (the order the venue
//! received them in), whenever the shell asks for the next one. Its outcome is kept for a
//! while so a device's retry gets the answer, and `GET /bids/<key>` can tell it. Memory is
//! bounded: queued requests by bytes (a full outbox refuses new ones), outcomes by count
//! and age.
//!
//! Time comes in as `now`; the shell does the journal writes and the sending.

use crate::key::Fingerprint;
use crate::record::{Accepted, Delivery, Entry, Kind, Outcome};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outbox settings.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    /// First wait before a failed request is sent again.
    pub retry_min: Duration,
    /// Longest wait between tries.
    pub retry_max: Duration,
    /// Outcomes are kept this long.
    pub keep_done: Duration,
    /// Outcomes kept at most.
    pub max_done: usize,
    /// Bytes of undelivered requests held at most: beyond it new ones are refused.
    pub max_pending_bytes: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            keep_done: Duration::from_secs(24 * 3600),
            max_done: 200_000,
            max_pending_bytes: 256 << 20,
        }
    }
}

/// Where a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Being sent (first try, or a replay).
    Sending,
    /// Waiting for a path: sent again in edge-time order.
    Queued {
        /// Tries that failed so far.
        attempts: u32,
    },
    /// Delivered or refused for good.
    Done(Arc<Outcome>),
}

/// What [`Outbox::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// A new request: journal it, then send it.
    New(Arc<Accepted>),
    /// The same request again (same key, same fingerprint): its status.
    Again(Status),
    /// The key stands for another request: refuse (422), never answer with its answer.
    Conflict,
    /// Too many bytes undelivered: refuse (503) until the queue drains.
    Full,
}

/// A request's status for `GET /bids/<key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The key.
    pub key: String,
    /// Bid or check-in.
    pub kind: Kind,
    /// Edge time, µs since the Unix epoch.
    pub edge_us: u64,
    /// Where it is.
    pub status: Status,
}

/// Counters and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Requests admitted as new.
    pub accepted: u64,
    /// Requests that went to the queue (a failed try).
    pub queued: u64,
    /// Tries of queued requests.
    pub replayed: u64,
    /// Retries of a request already admitted.
    pub again: u64,
    /// Keys refused because they stand for another request.
    pub conflicts: u64,
    /// Requests refused because the outbox was full.
    pub refused_full: u64,
    /// Requests undelivered now (sending or queued).
    pub pending: usize,
    /// Their bytes.
    pub pending_bytes: usize,
}

#[derive(Debug)]
enum State {
    Sending,
    Queued {
        attempts: u32,
        next_try: Instant,
    },
    /// Sent again from the queue; `attempts` before this try.
    Replaying {
        attempts: u32,
    },
    Done(Arc<Outcome>),
}

#[derive(Debug)]
struct Item {
    fingerprint: Fingerprint,
    kind: Kind,
    edge_us: u64,
    /// The request while undelivered (dropped once done).
    request: Option<Arc<Accepted>>,
    state: State,
}

/// The gateway's undelivered requests and recent outcomes.
#[derive(Debug)]
pub struct Outbox {
    cfg: OutboxConfig,
    items: HashMap<String, Item>,
    /// Queued requests, by edge time then key.
    queue: BTreeSet<(u64, String)>,
    /// Every undelivered request (sending, queued, replaying), by edge time then key.
    undelivered: BTreeSet<(u64, String)>,
    done_order: VecDeque<(Instant, String)>,
    replaying: Option<String>,
    stats: OutboxStats,
}

fn size(a: &Accepted) -> usize {
    a.body.len()
        + a.target.len()
        + a.key.len()
        + a.headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

impl Outbox {
    /// An empty outbox.
    pub fn new(cfg: OutboxConfig) -> Self {
        Self {
            cfg,
            items: HashMap::new(),
            queue: BTreeSet::new(),
            undelivered: BTreeSet::new(),
            done_order: VecDeque::new(),
            replaying: None,
            stats: OutboxStats::default(),
        }
    }

    /// Rebuilds the outbox from the journal's entries, in file order: every request without
    /// an outcome is queued (to be sent again, in edge-time order).
    pub fn restore(&mut self, now: Instant, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            match e {
                Entry::Accepted(a) => {
                    if self.items.contains_key(&a.key) {
                        continue;
                    }
                    let key = a.key.clone();
                    self.stats.pending_bytes += size(&a);
                    self.queue.insert((a.edge_us, key.clone()));
                    self.undelivered.insert((a.edge_us, key.clone()));
                    self.items.insert(
                        key,
                        Item {
                            fingerprint: a.fingerprint,
                            kind: a.kind,
                            edge_us: a.edge_us,
                            request: Some(Arc::new(a)),
                            state: State::Queued {
                                attempts: 0,
                                next_try: now,
                            },
                        },
                    );
                }
                Entry::Outcome(o) => self.finish(now, o),
                // the relay's records
                Entry::Claimed(_)
                | Entry::Settled(_)
                | Entry::Released { .. }
                | Entry::CheckedIn(_)
                | Entry::LotBid(_)
                | Entry::LotSet(_)
                | Entry::LotFinal(_) => {}
            }
        }
    }

    /// A request from a device: new, the same again, or a key reused for another request.
    pub fn admit(&mut self, request: Accepted) -> Admit {
        if let Some(item) = self.items.get(&request.key) {
            if item.fingerprint != request.fingerprint {
                self.stats.conflicts += 1;
                return Admit::Conflict;
            }
            self.stats.again += 1;
            return Admit::Again(status(&item.state));
        }
        let n = size(&request);
        if self.stats.pending_bytes + n > self.cfg.max_pending_bytes {
            self.stats.refused_full += 1;
            return Admit::Full;
        }
        self.stats.accepted += 1;
        self.stats.pending_bytes += n;
        let request = Arc::new(request);
        self.undelivered
            .insert((request.edge_us, request.key.clone()));
        self.items.insert(
            request.key.clone(),
            Item {
                fingerprint: request.fingerprint,
                kind: request.kind,
                edge_us: request.edge_us,
                request: Some(request.clone()),
                state: State::Sending,
            },
        );
        Admit::New(request)
    }

    /// The journal could not take a new request: it is forgotten (the device is refused and
    /// may send it again).
    pub fn abandon(&mut self, key: &str) {
        if let Some(item) = self.items.get(key) {
            if matches!(item.state, State::Sending) {
                if let Some(r) = &item.request {
                    self.stats.pending_bytes -= size(r);
                }
                self.undelivered.remove(&(item.edge_us, key.to_owned()));
                self.items.remove(key);
            }
        }
    }

    /// A request's outcome: delivered, or refused for good.
    pub fn finish(&mut self, now: Instant, outcome: Outcome) {
        let key = outcome.key.clone();
        let Some(item) = self.items.get_mut(&key) else {
            return;
        };
        if matches!(item.state, State::Done(_)) {
            return;
        }
        if let State::Queued { .. } = item.state {
            self.queue.remove(&(item.edge_us, key.clone()));
        }
        if let Some(r) = item.request.take() {
            self.stats.pending_bytes -= size(&r);
        }
        self.undelivered.remove(&(item.edge_us, key.clone()));
        item.state = State::Done(Arc::new(outcome));
        if self.replaying.as_deref() == Some(key.as_str()) {
            self.replaying = None;
        }
        self.done_order.push_back((now, key));
        self.expire(now);
    }

    /// A try failed before reaching the origin: the request waits in the queue.
    pub fn undelivered(&mut self, now: Instant, key: &str) {
        let Some(item) = self.items.get_mut(key) else {
            return;
        };
        let attempts = match item.state {
            State::Sending => 1,
            State::Replaying { attempts } => attempts + 1,
            _ => return,
        };
        if self.replaying.as_deref() == Some(key) {
            self.replaying = None;
        }
        self.stats.queued += u64::from(attempts == 1);
        let backoff = self
            .cfg
            .retry_min
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(self.cfg.retry_max);
        item.state = State::Queued {
            attempts,
            next_try: now + backoff,
        };
        self.queue.insert((item.edge_us, key.to_owned()));
    }

    /// The next request to send again: the oldest queued by edge time, once its wait is
    /// over, and only while no other replay is under way (so they arrive in order).
    pub fn next_replay(&mut self, now: Instant) -> Option<Arc<Accepted>> {
        if self.replaying.is_some() {
            return None;
        }
        let (edge, key) = self.queue.first()?.clone();
        let item = self.items.get_mut(&key)?;
        let State::Queued { attempts, next_try } = item.state else {
            return None;
        };
        if next_try > now {
            return None;
        }
        self.queue.remove(&(edge, key.clone()));
        item.state = State::Replaying { attempts };
        self.replaying = Some(key);
        self.stats.replayed += 1;
        item.request.clone()
    }

    /// When [`Outbox::next_replay`] may have something next (none: nothing queued, or a
    /// replay under way).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.replaying.is_some() {
            return None;
        }
        let (_, key) = self.queue.first()?;
        match self.items.get(key)?.state {
            State::Queued { next_try, .. } => Some(next_try),
            _ => None,
        }
    }

    /// A queued request may go now (a path came back): the waits are over.
    pub fn retry_now(&mut self, now: Instant) {
        for (_, key) in &self.queue {
            if let Some(Item {
                state: State::Queued { next_try, .. },
                ..
            }) = self.items.get_mut(key)
            {
                *next_try = (*next_try).min(now);
            }
        }
    }

    /// A request's status.
    pub fn view(&self, key: &str) -> Option<View> {
        let item = self.items.get(key)?;
        Some(View {
            key: key.to_owned(),
            kind: item.kind,
            edge_us: item.edge_us,
            status: status(&item.state),
        })
    }

    /// Counters and gauges.
    pub fn stats(&self) -> OutboxStats {
        OutboxStats {
            pending: self.undelivered.len(),
            ..self.stats
        }
    }

    /// The oldest undelivered request's edge time, µs.
    pub fn oldest_pending_edge_us(&self) -> Option<u64> {
        self.undelivered.first().map(|(edge, _)| *edge)
    }

    /// What a compacted journal holds: every undelivered request, and every outcome kept
    /// (as its request without headers and body, then the outcome).
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut items: Vec<(&String, &Item)> = self.items.iter().collect();
        items.sort_by_key(|(k, i)| (i.edge_us, *k));
        for (key, item) in items {
            match (&item.request, &item.state) {
                (Some(r), _) => out.push(Entry::Accepted((**r).clone())),
                (None, State::Done(outcome)) => {
                    out.push(Entry::Accepted(Accepted {
                        key: key.clone(),
                        kind: item.kind,
                        edge_us: item.edge_us,
                        clock_known: true,
                        fingerprint: item.fingerprint,
                        method: String::new(),
                        target: String::new(),
                        headers: Vec::new(),
                        body: Vec::new(),
                    }));
                    out.push(Entry::Outcome((**outcome).clone()));
                }
                _ => {}
            }
        }
        out
    }

    /// Requests that have their outcome, kept for the device's retries.
    pub fn done(&self) -> usize {
        self.items.len() - self.undelivered.len()
    }

    /// Forgets every request that has its outcome (the event is over: the journal keeps
    /// only what is still to be sent); how many.
    pub fn forget_done(&mut self) -> usize {
        let before = self.items.len();
        self.items
            .retain(|_, item| !matches!(item.state, State::Done(_)));
        self.done_order.clear();
        before - self.items.len()
    }

    /// Every request that has its outcome: (kind, edge time, outcome), oldest edge time
    /// first.
    pub fn done_outcomes(&self) -> Vec<(Kind, u64, Arc<Outcome>)> {
        let mut done: Vec<(Kind, u64, Arc<Outcome>)> = self
            .items
            .values()
            .filter_map(|item| match &item.state {
                State::Done(o) => Some((item.kind, item.edge_us, o.clone())),
                _ => None,
            })
            .collect();
        done.sort_by(|a, b| (a.1, &a.2.key).cmp(&(b.1, &b.2.key)));
        done
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.done_order.front() {
            let old = now.saturating_duration_since(*at) > self.cfg.keep_done;
            if !old && self.done_order.len() <= self.cfg.max_done {
                break;
            }
            let key = key.clone();
            self.done_order.pop_front();
            if matches!(
                self.items.get(&key),
                Some(Item {
                    state: State::Done(_),
                    ..
                })
            ) {
                self.items.remove(&key);
            }
        }
    }
}

fn status(s: &State) -> Status {
    match s {
        State::Sending | State::Replaying { .. } => Status::Sending,
        State::Queued { attempts, .. } => Status::Queued {
            attempts: *attempts,
        },
        State::Done(outcome) => Status::Done(outcome.clone()),
    }
}

/// Whether an outcome is an answer from the origin (as opposed to a refusal).
pub fn answered(o: &Outcome) -> bool {
    matches!(o.result, Delivery::Answered { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::fingerprint;

    fn bid(key: &str, edge_us: u64, amount: u32) -> Accepted {
        let body = format!("amount={amount}").into_bytes();
        Accepted {
            key: key.into(),
            kind: Kind::Bid,
            edge_us,
            clock_known: true,
            fingerprint: fingerprint("POST", "http://a.test/bids", &body),
            method: "POST".into(),
            target: "http://a.test/bids".into(),
            headers: Vec::new(),
            body,
        }
    }

    fn ok(key: &str) -> Outcome {
        Outcome {
            key: key.into(),
            at_us: 0,
            result: Delivery::Answered {
                status: 201,
                headers: Vec::new(),
                body: b"taken".to_vec(),
            },
        }
    }

    #[test]
    fn forgetting_the_done_keeps_what_is_still_to_send() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t = Instant::now();
        for (k, edge) in [("b", 20), ("a", 10), ("q", 30)] {
            assert!(matches!(o.admit(bid(k, edge, 1)), Admit::New(_)));
        }
        o.finish(t, ok("b"));
        o.finish(t, ok("a"));
        o.undelivered(t, "q");
        let done = o.done_outcomes();
        let keys: Vec<&str> = done.iter().map(|(_, _, o)| o.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(done[0].1, 10);
        assert_eq!(o.forget_done(), 2);
        // the queued one stays, whole, and is all a compaction keeps
        assert!(o.view("a").is_none());
        assert_eq!(o.view("q").unwrap().status, Status::Queued { attempts: 1 });
        let snap = o.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(matches!(&snap[0], Entry::Accepted(a) if a.key == "q" && !a.body.is_empty()));
        assert_eq!(o.forget_done(), 0);
    }

    #[test]
    fn a_key_stands_for_one_request() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t = Instant::now();
        assert!(matches!(o.admit(bid("k-1", 10, 100)), Admit::New(_)));
        // the device's retry: same request
        assert_eq!(o.admit(bid("k-1", 11, 100)), Admit::Again(Status::Sending));
        // another request under the same key: refused
        assert_eq!(o.admit(bid("k-1", 12, 999)), Admit::Conflict);
        o.finish(t, ok("k-1"));
        assert_eq!(
            o.admit(bid("k-1", 13, 100)),
            Admit::Again(Status::Done(Arc::new(ok("k-1"))))
        );
        assert_eq!(o.admit(bid("k-1", 14, 5)), Admit::Conflict);
        let s = o.stats();
        assert_eq!((s.accepted, s.again, s.conflicts, s.pending), (1, 2, 2, 0));
    }

    #[test]
    fn queued_requests_go_again_in_edge_time_order_one_at_a_time() {
        let mut o = Outbox::new(OutboxConfig::default());
        let t = Instant::now();
        // arrive out of edge order (a slow device), all fail
        for (k, edge) in [("c", 30), ("a", 10), ("b", 20)] {
            assert!(matches!(o.admit(bid(k, edge, 1)), Admit::New(_)));
            o.undelivered(t, k);
        }
        assert_eq!(o.view("a").unwrap().status, Status::Queued { attempts: 1 });
        assert_eq!(o.oldest_pending_edge_us(), Some(10));
        // nothing before the wait is over
        assert!(o.next_replay(t).is_none());
        let t1 = o.poll_timeout().unwrap();
        assert_eq!(t1, t + Duration::from_millis(250));
        let first = o.next_replay(t1).unwrap();
        assert_eq!(first.key, "a");
        // one at a time
        assert!(o.next_replay(t1).is_none());
        assert_eq!(o.poll_timeout(), None);
        o.finish(t1, ok("a"));
        assert_eq!(o.oldest_pending_edge_us(), Some(20));
        assert_eq!(o.next_replay(t1).unwrap().key, "b");
        // b fails again: it stays first, with a longer wait; c does not overtake it
        o.undelivered(t1, "b");
        assert!(o.next_replay(t1 + Duration::from_millis(300)).is_none());
        assert_eq!(o.poll_timeout(), Some(t1 + Duration::from_millis(500)));
        // a path returns: the waits are over
        o.retry_now(t1 + Duration::from_millis(10));
        assert_eq!(
            o.next_replay(t1 + Duration::from_millis(10)).unwrap().key,
            "b"
        );
        o.finish(t1, ok("b"));
        assert_eq!(o.next_replay(t1 + Duration::from_secs(1)).unwrap().key, "c");
        assert_eq!(o.stats().replayed, 4);
    }

    #[test]
    fn restore_queues_what_has_no_outcome() {
        let t = Instant::now();
        let entries = vec![
            Entry::Accepted(bid("x", 5, 1)),
            Entry::Accepted(bid("y", 3, 1)),
            Entry::Outcome(ok("x")),
            Entry::Accepted(bid("z", 4, 1)),
        ];
        let mut o = Outbox::new(OutboxConfig::default());
        o.restore(t, entries);
        assert_eq!(o.stats().pending, 2);
        assert!(matches!(o.view("x").unwrap().status, Status::Done(_)));
        assert_eq!(o.next_replay(t).unwrap().key, "y");
        o.finish(t, ok("y"));
        assert_eq!(o.next_replay(t).unwrap().key, "z");
        // a snapshot restores to the same state
        let mut again = Outbox::new(OutboxConfig::default());
        again.restore(t, o.snapshot());
        for k in ["x", "y"] {
            assert!(
                matches!(again.view(k).unwrap().status, Status::Done(_)),
                "{k}"
            );
        }
        assert_eq!(
            again.view("z").unwrap().status,
            Status::Queued { attempts: 0 }
        );
        // the fingerprint survives the snapshot
        assert_eq!(again.admit(bid("x", 9, 2)), Admit::Conflict);
    }

    #[test]
    fn memory_is_bounded() {
        let cfg = OutboxConfig {
            max_pending_bytes: 200,
            max_done: 3,
            ..OutboxConfig::default()
        };
        let mut o = Outbox::new(cfg);
        let t = Instant::now();
        let mut admitted = 0;
        for i in 0..20 {
            match o.admit(bid(&format!("k{i}"), i, 1)) {
                Admit::New(_) => admitted += 1,
                Admit::Full => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(admitted > 0 && admitted < 20);
        assert!(o.stats().pending_bytes <= 200);
        for i in 0..admitted {
            o.finish(t, ok(&format!("k{i}")));
        }
        assert_eq!(o.stats().pending_bytes, 0);
        assert!(o.items.len() <= 3);
        // outcomes expire with age
        o.finish(t, ok("late"));
        let later = t + Duration::from_secs(25 * 3600);
        assert!(matches!(o.admit(bid("fresh", 1, 1)), Admit::New(_)));
        o.finish(later, ok("fresh"));
        assert!(o.view(&format!("k{}", admitted - 1)).is_none());
        assert!(o.view("fresh").is_some());
    }

    #[test]
    fn an_abandoned_request_can_come_again() {
        let mut o = Outbox::new(OutboxConfig::default());
        assert!(matches!(o.admit(bid("k", 1, 1)), Admit::New(_)));
        o.abandon("k");
        assert_eq!(o.stats().pending, 0);
        assert_eq!(o.oldest_pending_edge_us(), None);
        assert!(matches!(o.admit(bid("k", 2, 1)), Admit::New(_)));
    }
}
