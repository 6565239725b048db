//! The relay's duplicate filter: bids and check-ins arrive once per path they were sent on;
//! the first copy goes to the origin and every later copy with the same idempotency key (from
//! the same gateway) gets the first copy's answer instead.
//!
//! Generic over the value kept per key (the relay keeps a channel that yields the answer), so
//! this stays sans-IO. Keys are (owner, key): each gateway's keys are its own. Entries live
//! for a TTL and the table is bounded; when it is full, the owner holding the most entries
//! gives up its oldest, so a gateway that floods the table evicts only its own keys and never
//! another gateway's bid that is still on its way to the origin.

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

/// One owner's keys, oldest first (a forgotten key may linger here until it is popped).
#[derive(Debug)]
struct Owned<K> {
    order: VecDeque<(Instant, K)>,
    held: usize,
}

/// A bounded, TTL-limited table of keys seen, per owner.
#[derive(Debug)]
pub struct DedupTable<O, K, V> {
    entries: HashMap<(O, K), (Instant, V)>,
    owners: HashMap<O, Owned<K>>,
    ttl: Duration,
    max: usize,
    duplicates: u64,
}

impl<O: Hash + Eq + Clone, K: Hash + Eq + Clone, V: Clone> DedupTable<O, K, V> {
    /// A table keeping keys for `ttl`, at most `max` of them in all.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: HashMap::new(),
            owners: HashMap::new(),
            ttl,
            max: max.max(1),
            duplicates: 0,
        }
    }

    /// Admits a copy with `key`: the first stores `value`; later ones get the stored value.
    pub fn admit(&mut self, now: Instant, key: (O, K), value: V) -> Admit<V> {
        self.expire(now);
        if let Some((_, v)) = self.entries.get(&key) {
            self.duplicates += 1;
            return Admit::Duplicate(v.clone());
        }
        while self.entries.len() >= self.max {
            // the owner holding the most gives up its oldest (the one admitting, on a tie)
            let Some(victim) = self
                .owners
                .iter()
                .max_by_key(|(owner, o)| (o.held, **owner == key.0))
                .map(|(owner, _)| owner.clone())
            else {
                break;
            };
            // an owner with nothing left to give is dropped, so this ends
            self.pop_oldest(&victim);
        }
        let (owner, k) = key;
        let o = self.owners.entry(owner.clone()).or_insert_with(|| Owned {
            order: VecDeque::new(),
            held: 0,
        });
        // forgotten keys linger in the order: keep it within twice what is held
        if o.order.len() >= 2 * o.held + 17 {
            let entries = &self.entries;
            o.order.retain(|(at, k)| current(entries, &owner, k, *at));
        }
        o.order.push_back((now, k.clone()));
        o.held += 1;
        self.entries.insert((owner, k), (now, value));
        Admit::First
    }

    /// Forgets `key` (its first copy failed before reaching the origin, so a retry must go
    /// through).
    pub fn forget(&mut self, key: &(O, K)) {
        if self.entries.remove(key).is_some() {
            if let Some(o) = self.owners.get_mut(&key.0) {
                o.held = o.held.saturating_sub(1);
            }
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Keys held for `owner`.
    pub fn held_by(&self, owner: &O) -> usize {
        self.owners.get(owner).map_or(0, |o| o.held)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Duplicates seen since start.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Drops `owner`'s oldest held key; false when it has none.
    fn pop_oldest(&mut self, owner: &O) -> bool {
        let Some(o) = self.owners.get_mut(owner) else {
            return false;
        };
        while let Some((at, k)) = o.order.pop_front() {
            if current(&self.entries, owner, &k, at) {
                self.entries.remove(&(owner.clone(), k));
                o.held = o.held.saturating_sub(1);
                if o.order.is_empty() {
                    self.owners.remove(owner);
                }
                return true;
            }
        }
        self.owners.remove(owner);
        false
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        let entries = &mut self.entries;
        self.owners.retain(|owner, o| {
            while let Some((at, _)) = o.order.front() {
                if now.saturating_duration_since(*at) < ttl {
                    break;
                }
                if let Some((at, k)) = o.order.pop_front() {
                    if current(entries, owner, &k, at) {
                        entries.remove(&(owner.clone(), k));
                        o.held = o.held.saturating_sub(1);
                    }
                }
            }
            !o.order.is_empty()
        });
    }
}

/// Whether an order item (`owner`, `k`, admitted `at`) is still the key's entry (not
/// forgotten, nor admitted again since).
fn current<O: Hash + Eq + Clone, K: Hash + Eq + Clone, V>(
    entries: &HashMap<(O, K), (Instant, V)>,
    owner: &O,
    k: &K,
    at: Instant,
) -> bool {
    entries
        .get(&(owner.clone(), k.clone()))
        .is_some_and(|(t, _)| *t == at)
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
            assert_eq!(d.admit(t, ("gw", i), ()), Admit::First);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.admit(t, ("gw", 0), ()), Admit::First, "oldest evicted");
        assert_eq!(d.admit(t, ("gw", 4), ()), Admit::Duplicate(()));
        assert_eq!(
            d.admit(t + Duration::from_secs(11), ("gw", 4), ()),
            Admit::First,
            "expired"
        );
        assert_eq!(d.len(), 1);
        d.forget(&("gw", 4));
        assert_eq!(d.held_by(&"gw"), 0);
        assert_eq!(
            d.admit(t + Duration::from_secs(11), ("gw", 4), ()),
            Admit::First
        );
    }

    #[test]
    fn a_flooding_gateway_evicts_only_its_own_keys() {
        let t = Instant::now();
        let mut d = DedupTable::new(Duration::from_secs(600), 100);
        for i in 0..10 {
            assert_eq!(d.admit(t, ("venue", i), ()), Admit::First);
        }
        // another gateway sends 10 000 keys: the table stays at 100, the venue keeps its 10
        for i in 0..10_000 {
            assert_eq!(d.admit(t, ("flood", i), ()), Admit::First);
        }
        assert_eq!(d.len(), 100);
        assert_eq!(d.held_by(&"venue"), 10);
        assert_eq!(d.held_by(&"flood"), 90);
        for i in 0..10 {
            assert_eq!(d.admit(t, ("venue", i), ()), Admit::Duplicate(()));
        }
        // the flood's oldest went first
        assert_eq!(d.admit(t, ("flood", 9_999), ()), Admit::Duplicate(()));
        assert_eq!(d.admit(t, ("flood", 0), ()), Admit::First);
        // a forgotten key and re-admitted ones do not grow the order without bound
        for _ in 0..1_000 {
            d.forget(&("venue", 3));
            d.admit(t, ("venue", 3), ());
        }
        assert_eq!(d.held_by(&"venue"), 10);
        assert!(d.owners[&"venue"].order.len() <= 2 * 10 + 17);
    }
}
