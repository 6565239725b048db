//! The relay's duplicate filter: bids and check-ins arrive once per path they were sent on;
//! the first copy goes to the origin and every later copy with the same idempotency key (from
//! the same gateway) gets the first copy's answer instead.
//!
//! Generic over the value kept per key (the relay keeps a channel that yields the answer), so
//! this stays sans-IO. Entries live for a TTL and the table is bounded; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What [`DedupTable::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<V> {
    /// First copy: forward it (the given value is now stored under the key).
    First,
    /// A later copy: answer with what the first copy gets (the stored value).
    Duplicate(V),
}

/// A bounded, TTL-limited table of keys seen.
#[derive(Debug)]
pub struct DedupTable<K, V> {
    entries: HashMap<K, (Instant, V)>,
    order: VecDeque<(Instant, K)>,
    ttl: Duration,
    max: usize,
    duplicates: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> DedupTable<K, V> {
    /// A table keeping keys for `ttl`, at most `max` of them.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            max: max.max(1),
            duplicates: 0,
        }
    }

    /// Admits a copy with `key`: the first stores `value`; later ones get the stored value.
    pub fn admit(&mut self, now: Instant, key: K, value: V) -> Admit<V> {
        self.expire(now);
        if let Some((_, v)) = self.entries.get(&key) {
            self.duplicates += 1;
            return Admit::Duplicate(v.clone());
        }
        while self.entries.len() >= self.max {
            match self.order.pop_front() {
                Some((at, k)) => {
                    if self.entries.get(&k).is_some_and(|(t, _)| *t == at) {
                        self.entries.remove(&k);
                    }
                }
                None => break,
            }
        }
        self.entries.insert(key.clone(), (now, value));
        self.order.push_back((now, key));
        Admit::First
    }

    /// Forgets `key` (its first copy failed before reaching the origin, so a retry must go
    /// through).
    pub fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Duplicates seen since start.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            if let Some((at, k)) = self.order.pop_front() {
                if self.entries.get(&k).is_some_and(|(t, _)| *t == at) {
                    self.entries.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicated_bid_is_answered_once() {
        let t = Instant::now();
        let mut d = DedupTable::new(Duration::from_secs(600), 100);
        let mut forwarded = 0;
        let mut answers = vec![];
        // two copies of each of 10 bids, interleaved as two paths deliver them
        for i in 0..10 {
            for _copy in 0..2 {
                match d.admit(t, ("gw", format!("bid-{i}")), format!("answer-{i}")) {
                    Admit::First => forwarded += 1,
                    Admit::Duplicate(v) => answers.push(v),
                }
            }
        }
        assert_eq!(forwarded, 10);
        assert_eq!(answers.len(), 10);
        assert_eq!(answers[3], "answer-3");
        assert_eq!(d.duplicates(), 10);
        // another gateway's key is its own
        assert_eq!(
            d.admit(t, ("gw2", "bid-1".into()), "x".into()),
            Admit::First
        );
    }

    #[test]
    fn keys_expire_and_the_table_is_bounded() {
        let t = Instant::now();
        let mut d = DedupTable::new(Duration::from_secs(10), 3);
        for i in 0..5 {
            assert_eq!(d.admit(t, i, ()), Admit::First);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.admit(t, 0, ()), Admit::First, "oldest evicted");
        assert_eq!(d.admit(t, 4, ()), Admit::Duplicate(()));
        assert_eq!(
            d.admit(t + Duration::from_secs(11), 4, ()),
            Admit::First,
            "expired"
        );
        d.forget(&4);
        assert_eq!(d.admit(t + Duration::from_secs(11), 4, ()), Admit::First);
    }
}
