//! The relay's duplicate table as it survives a restart, sans-IO.
//!
//! A bid or check-in reaches the relay once per path the gateway sent it on, and again
//! whenever the gateway replays it. The first copy *claims* its key (gateway name +
//! idempotency key) before it goes to the origin; its answer *settles* the claim, and every
//! later copy gets that answer. A claim whose first copy never reached the origin is
//! *released*. The shell journals each of these before acting on it, so after a restart:
//! - a settled key is answered from the table, never sent again;
//! - a claimed key without an answer is *in doubt* (the origin may have it): a later copy
//!   goes to the origin again with the same `Idempotency-Key`, which is how an origin tells
//!   it is the same request;
//! - a key reused for another request (another fingerprint) is refused.
//!
//! Memory is bounded by age, count and the bytes of kept answers; time comes in as `now`.

use crate::key::Fingerprint;
use crate::record::{Claim, Delivery, Entry, Settled};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Claim table settings.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsConfig {
    /// Claims are kept this long.
    pub keep: Duration,
    /// Claims kept at most.
    pub max_claims: usize,
    /// Bytes of kept answers at most (the oldest claims go first beyond it).
    pub max_answer_bytes: usize,
    /// Claims of one gateway (scope) at most: beyond, that gateway's oldest go, never
    /// another's, so one gateway cannot push the others' keys out.
    pub max_claims_per_scope: usize,
    /// Bytes of one gateway's kept answers at most (its oldest claims go first beyond).
    pub max_answer_bytes_per_scope: usize,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(24 * 3600),
            max_claims: 200_000,
            max_answer_bytes: 256 << 20,
            max_claims_per_scope: 50_000,
            max_answer_bytes_per_scope: 64 << 20,
        }
    }
}

/// Where a key stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Never claimed (or forgotten): the copy goes to the origin.
    Free,
    /// Claimed, no answer kept: the origin may have it. The copy goes again, with its key.
    InDoubt,
    /// Answered: later copies get this.
    Settled(Arc<Delivery>),
    /// The key stands for another request.
    Conflict,
}

/// What the table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimStats {
    /// Keys kept.
    pub claims: usize,
    /// Of them, without an answer.
    pub in_doubt: usize,
    /// Bytes of kept answers.
    pub answer_bytes: usize,
}

type Id = (String, String);

#[derive(Debug)]
struct Item {
    fingerprint: Option<Fingerprint>,
    at_us: u64,
    /// When it entered the eviction order (tells a stale order entry from the current).
    since: Instant,
    answer: Option<Arc<Delivery>>,
}

/// What one gateway (scope) holds, and its claims oldest first.
#[derive(Debug, Default)]
struct ScopeUse {
    claims: usize,
    answer_bytes: usize,
    order: VecDeque<(Instant, String)>,
}

/// The relay's claims, by (gateway, key).
#[derive(Debug)]
pub struct Claims {
    cfg: ClaimsConfig,
    items: HashMap<Id, Item>,
    order: VecDeque<(Instant, Id)>,
    scopes: HashMap<String, ScopeUse>,
    stats: ClaimStats,
}

impl Claims {
    /// An empty table.
    pub fn new(cfg: ClaimsConfig) -> Self {
        Self {
            cfg,
            items: HashMap::new(),
            order: VecDeque::new(),
            scopes: HashMap::new(),
            stats: ClaimStats::default(),
        }
    }

    /// Where `key` of `scope` stands for a copy with `fingerprint`.
    pub fn lookup(&self, scope: &str, key: &str, fingerprint: Option<&Fingerprint>) -> Lookup {
        let Some(item) = self.items.get(&(scope.to_owned(), key.to_owned())) else {
            return Lookup::Free;
        };
        if let (Some(a), Some(b)) = (&item.fingerprint, fingerprint) {
            if a != b {
                return Lookup::Conflict;
            }
        }
        match &item.answer {
            Some(a) => Lookup::Settled(a.clone()),
            None => Lookup::InDoubt,
        }
    }

    /// Claims a key for a first copy; the record to journal before it goes on.
    pub fn claim(&mut self, now: Instant, c: Claim) -> Entry {
        self.apply_claim(now, c.clone());
        self.expire(now);
        self.trim_scope(&c.scope);
        Entry::Claimed(c)
    }

    /// Settles a claim with its answer; the record to journal.
    pub fn settle(&mut self, now: Instant, s: Settled) -> Entry {
        self.apply_settled(now, s.clone());
        self.expire(now);
        self.trim_scope(&s.scope);
        Entry::Settled(s)
    }

    /// Gives up a claim whose copy never reached the origin; the record to journal.
    pub fn release(&mut self, scope: &str, key: &str) -> Entry {
        self.remove(&(scope.to_owned(), key.to_owned()));
        Entry::Released {
            scope: scope.to_owned(),
            key: key.to_owned(),
        }
    }

    /// Rebuilds the table from a journal's records, in file order (`now_us`: the wall
    /// clock now, to age what the records hold).
    pub fn restore(&mut self, now: Instant, now_us: u64, entries: impl IntoIterator<Item = Entry>) {
        for e in entries {
            match e {
                Entry::Claimed(c) => {
                    let at = aged(now, now_us, c.at_us);
                    self.apply_claim(at, c);
                }
                Entry::Settled(s) => {
                    let at = aged(now, now_us, s.at_us);
                    self.apply_settled(at, s);
                }
                Entry::Released { scope, key } => self.remove(&(scope, key)),
                // the gateway's records
                Entry::Accepted(_)
                | Entry::Outcome(_)
                | Entry::CheckedIn(_)
                | Entry::LotBid(_)
                | Entry::LotSet(_)
                | Entry::LotFinal(_) => {}
            }
        }
        self.order.make_contiguous().sort_by_key(|(at, _)| *at);
        for u in self.scopes.values_mut() {
            u.order.make_contiguous().sort_by_key(|(at, _)| *at);
        }
        self.expire(now);
        let scopes: Vec<String> = self.scopes.keys().cloned().collect();
        for scope in scopes {
            self.trim_scope(&scope);
        }
    }

    /// What a compacted journal holds: each kept claim, and its answer.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut out = Vec::with_capacity(self.items.len() * 2);
        for (at, id) in &self.order {
            let Some(item) = self.items.get(id).filter(|i| i.since == *at) else {
                continue;
            };
            out.push(Entry::Claimed(Claim {
                scope: id.0.clone(),
                key: id.1.clone(),
                fingerprint: item.fingerprint,
                at_us: item.at_us,
            }));
            if let Some(a) = &item.answer {
                out.push(Entry::Settled(Settled {
                    scope: id.0.clone(),
                    key: id.1.clone(),
                    at_us: item.at_us,
                    result: (**a).clone(),
                }));
            }
        }
        out
    }

    /// What the table holds.
    pub fn stats(&self) -> ClaimStats {
        self.stats
    }

    fn apply_claim(&mut self, at: Instant, c: Claim) {
        let id = (c.scope, c.key);
        self.remove(&id);
        self.order.push_back((at, id.clone()));
        let u = self.scopes.entry(id.0.clone()).or_default();
        u.claims += 1;
        u.order.push_back((at, id.1.clone()));
        self.stats.claims += 1;
        self.stats.in_doubt += 1;
        self.items.insert(
            id,
            Item {
                fingerprint: c.fingerprint,
                at_us: c.at_us,
                since: at,
                answer: None,
            },
        );
    }

    fn apply_settled(&mut self, at: Instant, s: Settled) {
        let id = (s.scope, s.key);
        if !self.items.contains_key(&id) {
            // a settle whose claim was compacted away or evicted: keep the answer anyway
            self.apply_claim(
                at,
                Claim {
                    scope: id.0.clone(),
                    key: id.1.clone(),
                    fingerprint: None,
                    at_us: s.at_us,
                },
            );
        }
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        let bytes = size(&s.result);
        let old_bytes = match item.answer.replace(Arc::new(s.result)) {
            Some(old) => size(&old),
            None => {
                self.stats.in_doubt -= 1;
                0
            }
        };
        self.stats.answer_bytes = self.stats.answer_bytes - old_bytes + bytes;
        if let Some(u) = self.scopes.get_mut(&id.0) {
            u.answer_bytes = u.answer_bytes - old_bytes + bytes;
        }
    }

    fn remove(&mut self, id: &Id) {
        if let Some(item) = self.items.remove(id) {
            self.stats.claims -= 1;
            let bytes = match &item.answer {
                Some(a) => size(a),
                None => {
                    self.stats.in_doubt -= 1;
                    0
                }
            };
            self.stats.answer_bytes -= bytes;
            if let Some(u) = self.scopes.get_mut(&id.0) {
                u.claims -= 1;
                u.answer_bytes -= bytes;
                if u.claims == 0 {
                    self.scopes.remove(&id.0);
                }
            }
        }
    }

    /// Forgets `scope`'s oldest claims while it holds more than its share.
    fn trim_scope(&mut self, scope: &str) {
        loop {
            let Some(u) = self.scopes.get_mut(scope) else {
                return;
            };
            let over = u.claims > self.cfg.max_claims_per_scope
                || u.answer_bytes > self.cfg.max_answer_bytes_per_scope;
            if !over {
                // released and reclaimed keys leave stale places behind: drop them in bulk
                if u.order.len() > 2 * u.claims + 64 {
                    let items = &self.items;
                    u.order.retain(|(at, key)| {
                        items
                            .get(&(scope.to_owned(), key.clone()))
                            .is_some_and(|i| i.since == *at)
                    });
                }
                return;
            }
            let Some((at, key)) = u.order.pop_front() else {
                return;
            };
            let id = (scope.to_owned(), key);
            if self.items.get(&id).is_some_and(|i| i.since == at) {
                self.remove(&id);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front() {
            let current = self.items.get(id).is_some_and(|i| i.since == *at);
            let over = self.stats.claims > self.cfg.max_claims
                || self.stats.answer_bytes > self.cfg.max_answer_bytes;
            let old = now.saturating_duration_since(*at) > self.cfg.keep;
            if current && !over && !old {
                break;
            }
            let (_, id) = self.order.pop_front().expect("front exists");
            if current {
                self.remove(&id);
            }
        }
        // released and reclaimed keys leave stale places behind: drop them in bulk
        if self.order.len() > 2 * self.items.len() + 1024 {
            let items = &self.items;
            self.order
                .retain(|(at, id)| items.get(id).is_some_and(|i| i.since == *at));
        }
    }
}

/// The instant a record written at `at_us` corresponds to (never later than `now`).
fn aged(now: Instant, now_us: u64, at_us: u64) -> Instant {
    now.checked_sub(Duration::from_micros(now_us.saturating_sub(at_us)))
        .unwrap_or(now)
}

fn size(d: &Delivery) -> usize {
    match d {
        Delivery::Answered { headers, body, .. } => {
            body.len()
                + headers
                    .iter()
                    .map(|(n, v)| n.len() + v.len())
                    .sum::<usize>()
                + 16
        }
        Delivery::Refused { reason, .. } => reason.len() + 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::fingerprint;

    fn claim(key: &str, fp: &[u8], at_us: u64) -> Claim {
        Claim {
            scope: "stall-1".into(),
            key: key.into(),
            fingerprint: Some(fingerprint("POST", "http://a/bids", fp)),
            at_us,
        }
    }

    fn answer(key: &str, body: &[u8]) -> Settled {
        Settled {
            scope: "stall-1".into(),
            key: key.into(),
            at_us: 2,
            result: Delivery::Answered {
                status: 201,
                headers: vec![],
                body: body.to_vec(),
            },
        }
    }

    #[test]
    fn a_claim_is_in_doubt_until_settled_and_survives_a_restart() {
        let t0 = Instant::now();
        let mut c = Claims::new(ClaimsConfig::default());
        let fp = fingerprint("POST", "http://a/bids", b"x");
        assert_eq!(c.lookup("stall-1", "k", Some(&fp)), Lookup::Free);
        let mut journal = vec![c.claim(t0, claim("k", b"x", 1))];
        assert_eq!(c.lookup("stall-1", "k", Some(&fp)), Lookup::InDoubt);
        // the same key from another gateway is another key
        assert_eq!(c.lookup("stall-2", "k", Some(&fp)), Lookup::Free);
        journal.push(c.settle(t0, answer("k", b"ok")));
        let Lookup::Settled(a) = c.lookup("stall-1", "k", Some(&fp)) else {
            panic!("settled");
        };
        assert!(matches!(&*a, Delivery::Answered { status: 201, .. }));
        // another request under the same key
        let other = fingerprint("POST", "http://a/bids", b"y");
        assert_eq!(c.lookup("stall-1", "k", Some(&other)), Lookup::Conflict);

        // a restart: the journal rebuilds the same table
        let mut d = Claims::new(ClaimsConfig::default());
        d.restore(t0, 10, journal.clone());
        assert_eq!(d.lookup("stall-1", "k", Some(&fp)), Lookup::Settled(a));
        // so does its compaction
        let mut e = Claims::new(ClaimsConfig::default());
        e.restore(t0, 10, d.snapshot());
        assert_eq!(e.lookup("stall-1", "k", Some(&other)), Lookup::Conflict);
        assert_eq!(e.stats(), d.stats());

        // a claim without its answer comes back in doubt; a released one is free
        journal.push(c.claim(t0, claim("m", b"x", 3)));
        journal.push(c.claim(t0, claim("n", b"x", 3)));
        journal.push(c.release("stall-1", "n"));
        let mut f = Claims::new(ClaimsConfig::default());
        f.restore(t0, 10, journal);
        assert_eq!(f.lookup("stall-1", "m", None), Lookup::InDoubt);
        assert_eq!(f.lookup("stall-1", "n", None), Lookup::Free);
        assert_eq!(
            f.stats(),
            ClaimStats {
                claims: 2,
                in_doubt: 1,
                answer_bytes: 2 + 16
            }
        );
    }

    #[test]
    fn claims_are_bounded_by_age_count_and_bytes() {
        let t0 = Instant::now();
        let cfg = ClaimsConfig {
            keep: Duration::from_secs(60),
            max_claims: 100,
            max_answer_bytes: 10_000,
            ..ClaimsConfig::default()
        };
        let mut c = Claims::new(cfg);
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i);
            c.claim(at, claim(&format!("k{i}"), b"x", i));
            c.settle(at, answer(&format!("k{i}"), &[0; 200]));
        }
        let s = c.stats();
        assert!(s.claims <= 100 && s.answer_bytes <= 10_000, "{s:?}");
        // the newest are kept, the oldest forgotten
        assert!(matches!(
            c.lookup("stall-1", "k999", None),
            Lookup::Settled(_)
        ));
        assert_eq!(c.lookup("stall-1", "k0", None), Lookup::Free);
        // age: a minute later everything is gone
        c.claim(t0 + Duration::from_secs(120), claim("late", b"x", 5));
        assert_eq!(c.stats().claims, 1);
        // restored records older than `keep` are dropped at once
        let mut d = Claims::new(cfg);
        d.restore(
            t0,
            3_600_000_000,
            vec![Entry::Claimed(claim("old", b"x", 1))],
        );
        assert_eq!(d.stats().claims, 0);
    }

    #[test]
    fn one_gateway_cannot_push_out_anothers_keys() {
        let t0 = Instant::now();
        let mut c = Claims::new(ClaimsConfig {
            max_claims_per_scope: 50,
            max_answer_bytes_per_scope: 5_000,
            ..ClaimsConfig::default()
        });
        c.claim(t0, claim("honest", b"x", 1));
        c.settle(t0, answer("honest", &[1; 100]));
        // another gateway floods the table with keys and large answers
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_millis(i);
            let mut k = claim(&format!("flood-{i}"), b"y", i);
            k.scope = "stall-9".into();
            c.claim(at, k);
            let mut a = answer(&format!("flood-{i}"), &[0; 300]);
            a.scope = "stall-9".into();
            c.settle(at, a);
        }
        // it keeps only its own share, newest first; the honest key stands
        assert!(matches!(
            c.lookup("stall-1", "honest", None),
            Lookup::Settled(_)
        ));
        assert_eq!(c.lookup("stall-9", "flood-0", None), Lookup::Free);
        assert!(matches!(
            c.lookup("stall-9", "flood-9999", None),
            Lookup::Settled(_)
        ));
        let s = c.stats();
        assert!(s.claims <= 51, "{s:?}");
        assert!(
            s.answer_bytes <= 5_000 + size(&answer("honest", &[1; 100]).result),
            "{s:?}"
        );
        // the same share holds after a restart from the records
        let mut d = Claims::new(ClaimsConfig {
            max_claims_per_scope: 10,
            ..ClaimsConfig::default()
        });
        d.restore(t0, 0, c.snapshot());
        assert!(d.stats().claims <= 11, "{:?}", d.stats());
        assert!(matches!(
            d.lookup("stall-1", "honest", None),
            Lookup::Settled(_)
        ));
    }

    #[test]
    fn a_reclaimed_key_keeps_one_place_in_the_order() {
        let t0 = Instant::now();
        let mut c = Claims::new(ClaimsConfig {
            max_claims: 2,
            ..ClaimsConfig::default()
        });
        c.claim(t0, claim("a", b"x", 1));
        c.release("stall-1", "a");
        c.claim(t0 + Duration::from_millis(1), claim("a", b"x", 2));
        c.claim(t0 + Duration::from_millis(2), claim("b", b"x", 3));
        assert_eq!(c.stats().claims, 2);
        assert_eq!(c.snapshot().len(), 2);
        c.claim(t0 + Duration::from_millis(3), claim("c", b"x", 4));
        assert_eq!(c.lookup("stall-1", "a", None), Lookup::Free);
        assert_eq!(c.lookup("stall-1", "c", None), Lookup::InDoubt);
    }
}
