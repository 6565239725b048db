//! How many viewers each gateway's streams have: the distinct addresses that fetched one of
//! its playlists within [`WINDOW`] (a player reloads its playlist every part or segment).
//! Behind a CDN this counts the CDN's nodes, not people. Sans-IO, bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A viewer counts this long after its last playlist request.
pub(crate) const WINDOW: Duration = Duration::from_secs(20);
/// Most (gateway, address) pairs kept; past it new viewers are not counted until old ones
/// expire.
const MAX_SEEN: usize = 65_536;

#[derive(Debug, Default)]
pub(crate) struct Audience {
    seen: HashMap<(String, IpAddr), Instant>,
}

impl Audience {
    /// `ip` fetched a playlist of `gateway`.
    pub(crate) fn saw(&mut self, now: Instant, gateway: &str, ip: IpAddr) {
        if self.seen.len() >= MAX_SEEN {
            self.expire(now);
        }
        let key = (gateway.to_string(), ip);
        if self.seen.len() < MAX_SEEN || self.seen.contains_key(&key) {
            self.seen.insert(key, now);
        }
    }

    fn expire(&mut self, now: Instant) {
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) <= WINDOW);
    }

    /// Viewers per gateway now.
    pub(crate) fn counts(&mut self, now: Instant) -> HashMap<String, usize> {
        self.expire(now);
        let mut c = HashMap::new();
        for (g, _) in self.seen.keys() {
            *c.entry(g.clone()).or_insert(0) += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_addresses_count_until_they_stop_fetching() {
        let t0 = Instant::now();
        let mut a = Audience::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        for _ in 0..5 {
            a.saw(t0, "door", ip(1));
        }
        a.saw(t0, "door", ip(2));
        a.saw(t0 + Duration::from_secs(15), "stage", ip(1));
        assert_eq!(a.counts(t0 + Duration::from_secs(1))["door"], 2);
        let later = a.counts(t0 + WINDOW + Duration::from_secs(1));
        assert_eq!((later.get("door"), later["stage"]), (None, 1));
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let t0 = Instant::now();
        let mut a = Audience::default();
        for i in 0..(MAX_SEEN as u32 + 100) {
            a.saw(t0, "door", IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(a.counts(t0)["door"], MAX_SEEN);
        // once the old ones expire, new ones count again
        a.saw(t0 + WINDOW * 2, "door", IpAddr::from([1, 2, 3, 4]));
        assert_eq!(a.counts(t0 + WINDOW * 2)["door"], 1);
    }
}
