//! The clock exchange: the gateway learns how far the relay's wall clock is from its own,
//! so capture times it sends (program date time, glass-to-relay latency) are in the
//! relay's clock. An NTP-style exchange on each uplink: `GET https://canopy.session/clock`
//! with `canopy-clock: t1` (gateway clock at sending, µs since the Unix epoch); the relay
//! answers `canopy-clock: t1,t2,t3` (its clock at receipt and at answering). The probes'
//! clocks cannot serve: they are monotonic per connection, not wall clocks.

/// The request and answer header.
pub const HDR_CLOCK: &str = "canopy-clock";

/// Path of the exchange (under [`super::SESSION_AUTHORITY`]).
pub const CLOCK_PATH: &str = "/clock";

/// The relay's answer: the gateway's send time echoed, the relay's receive and send times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockAnswer {
    /// Gateway clock when the request left, µs.
    pub t1: u64,
    /// Relay clock when it arrived, µs.
    pub t2: u64,
    /// Relay clock when the answer left, µs.
    pub t3: u64,
}

impl ClockAnswer {
    /// The header value.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.t1, self.t2, self.t3)
    }

    /// Parses a header value.
    pub fn decode(v: &str) -> Option<Self> {
        let mut it = v.split(',').map(|x| x.trim().parse::<u64>());
        let (Some(Ok(t1)), Some(Ok(t2)), Some(Ok(t3)), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        Some(Self { t1, t2, t3 })
    }

    /// With `t4` (gateway clock when the answer arrived): (relay minus gateway clock offset,
    /// round trip), µs.
    pub fn offset_and_rtt(&self, t4: u64) -> (i64, u64) {
        let (t1, t2, t3, t4) = (
            self.t1 as i128,
            self.t2 as i128,
            self.t3 as i128,
            t4 as i128,
        );
        let offset = ((t2 - t1) + (t3 - t4)) / 2;
        let rtt = (t4 - t1) - (t3 - t2);
        (offset as i64, rtt.max(0) as u64)
    }
}

/// Keeps the offset of the best (shortest round trip) recent exchange: the error of an
/// exchange is at most half its round trip.
#[derive(Debug, Clone, Default)]
pub struct ClockOffset {
    /// (taken at, offset µs, round trip µs), newest last.
    samples: std::collections::VecDeque<(u64, i64, u64)>,
}

impl ClockOffset {
    /// Samples older than this (µs) are not used.
    pub const WINDOW_US: u64 = 120_000_000;

    /// One exchange's result, taken at gateway time `now_us`.
    pub fn add(&mut self, now_us: u64, offset_us: i64, rtt_us: u64) {
        self.samples.push_back((now_us, offset_us, rtt_us));
        while self
            .samples
            .front()
            .is_some_and(|(t, _, _)| now_us.saturating_sub(*t) > Self::WINDOW_US)
            || self.samples.len() > 256
        {
            self.samples.pop_front();
        }
    }

    /// Relay clock minus gateway clock, µs, if known: the shortest round trip's.
    pub fn offset_us(&self) -> Option<i64> {
        self.samples
            .iter()
            .min_by_key(|(_, _, rtt)| *rtt)
            .map(|(_, o, _)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_exchanges() {
        // relay clock 5 s ahead, 40 ms each way, 1 ms at the relay
        let a = ClockAnswer {
            t1: 1_000_000,
            t2: 6_040_000,
            t3: 6_041_000,
        };
        assert_eq!(ClockAnswer::decode(&a.encode()), Some(a));
        assert_eq!(a.offset_and_rtt(1_081_000), (5_000_000, 80_000));
        assert!(ClockAnswer::decode("1,2").is_none());
        assert!(ClockAnswer::decode("1,2,x").is_none());
        let mut c = ClockOffset::default();
        assert_eq!(c.offset_us(), None);
        c.add(0, 5_100_000, 300_000); // a queued exchange: worse
        c.add(1_000_000, 5_000_000, 80_000);
        assert_eq!(c.offset_us(), Some(5_000_000));
        // two minutes later the good one has aged out
        c.add(122_000_000, 4_990_000, 90_000);
        assert_eq!(c.offset_us(), Some(4_990_000));
    }
}
