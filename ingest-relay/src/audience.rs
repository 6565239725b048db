//! How many viewers each gateway's streams have: the distinct addresses that fetched one of
//! its playlists within [`WINDOW`] (a player reloads its playlist every part or segment);
//! an IPv6 address counts by its /64 (one host may use a whole /64). Behind a CDN this
//! counts the CDN's nodes, not people. Sans-IO, bounded: when the table is full, expired
//! entries are swept at most once a second, and new viewers go uncounted until then.

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
    last_sweep: Option<Instant>,
}

/// What counts as one viewer's address: an IPv6 one's /64 (an IPv4 address mapped into
/// IPv6, as a listener on `[::]` sees IPv4 viewers, is the IPv4 address).
fn viewer_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
        v4 => v4,
    }
}

impl Audience {
    /// `ip` fetched a playlist of `gateway`.
    pub(crate) fn saw(&mut self, now: Instant, gateway: &str, ip: IpAddr) {
        let swept_lately = self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
        if self.seen.len() >= MAX_SEEN && !swept_lately {
            self.expire(now);
        }
        let key = (gateway.to_string(), viewer_of(ip));
        if self.seen.len() < MAX_SEEN || self.seen.contains_key(&key) {
            self.seen.insert(key, now);
        }
    }

    fn expire(&mut self, now: Instant) {
        self.last_sweep = Some(now);
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
        // two addresses of one IPv6 /64 are one viewer
        a.saw(t0, "door", "2001:db8::1".parse().unwrap());
        a.saw(t0, "door", "2001:db8::2".parse().unwrap());
        // IPv4 viewers seen by a listener on [::] stay apart (and one is 10.0.0.2 again)
        a.saw(t0, "door", "::ffff:10.0.0.2".parse().unwrap());
        a.saw(t0, "door", "::ffff:10.0.0.3".parse().unwrap());
        a.saw(t0 + Duration::from_secs(15), "stage", ip(1));
        assert_eq!(a.counts(t0 + Duration::from_secs(1))["door"], 4);
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
