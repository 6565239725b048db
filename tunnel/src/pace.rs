//! Pacing a connection's packets one by one at its congestion controller's rate.
//!
//! quinn paces a connection in bursts of at least ten packets (its pacer waits until ten
//! packets' worth of credit has built up, then sends them at once). On a 10 Mbit/s link
//! ten 1,200-byte packets are 10 ms of the bottleneck's time, so every burst adds up to
//! 10 ms to the bottleneck's queue for whatever comes behind it: a bid waits behind the
//! burst in both directions. On a 2 Mbit/s link it is 50 ms. The socket shell
//! (`tunnel_io::paced`) asks a [`Bucket`] before it lets quinn send its next packet, at
//! the rate the controller publishes in a [`PaceRate`]; quinn's own pacer still runs in
//! front, so this only ever spreads what quinn would have sent at once. quinn holds one
//! built transmit (at most two packets here) while it waits, and builds the next only
//! when the socket took that one: a bid written during a spread burst waits behind that
//! transmit, not behind the rest of the burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much faster than the window over the smoothed RTT packets may leave: the same
/// factor quinn's pacer uses (the window's bytes leave within 80% of a round trip, so the
/// pacer never holds a window-limited sender back).
pub const PACE_GAIN: f64 = 1.25;

/// The longest burst, as time at the pacing rate (quinn aims its bursts at 2 ms too).
const BURST: Duration = Duration::from_millis(2);

/// The longest wait for one packet, whatever the rate (a rate near zero must not stop a
/// connection, nor overflow the clock).
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The least burst, bytes: two full-size packets, so a late timer costs no rate.
const MIN_BURST_BYTES: f64 = 2.0 * 1500.0;

/// The rate one connection's controller paces at, bytes per second: written by the
/// controller on every acknowledgement, read by the socket shell before every packet.
#[derive(Debug, Default)]
pub struct PaceRate {
    /// The rate's bits; 0: not known yet (no RTT sample), do not pace.
    bits: AtomicU64,
}

impl PaceRate {
    /// Paces at `window` bytes per `srtt`, times [`PACE_GAIN`].
    pub fn set(&self, window: u64, srtt: Duration) {
        if srtt.is_zero() {
            return;
        }
        let rate = window as f64 * PACE_GAIN / srtt.as_secs_f64();
        self.bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// The rate, bytes per second, once the controller has published one.
    pub fn get(&self) -> Option<f64> {
        let rate = f64::from_bits(self.bits.load(Ordering::Relaxed));
        (rate.is_finite() && rate > 0.0).then_some(rate)
    }
}

/// A token bucket of one connection: a packet may leave when the bucket is not in debt;
/// it takes its bytes (the bucket may go into debt by one packet or one GSO batch).
#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Credit, bytes; negative: debt.
    tokens: f64,
    /// When the credit was last brought up to date; `None`: full.
    last: Option<Instant>,
}

impl Bucket {
    /// When the next packet may leave at `rate` bytes per second: `None` for now.
    pub fn ready_at(&mut self, now: Instant, rate: f64) -> Option<Instant> {
        self.refill(now, rate);
        if self.tokens >= 0.0 {
            return None;
        }
        let wait = Duration::try_from_secs_f64(-self.tokens / rate).unwrap_or(MAX_WAIT);
        Some(now + wait.min(MAX_WAIT))
    }

    /// Takes `bytes` that left at `now`.
    pub fn spend(&mut self, now: Instant, bytes: usize, rate: f64) {
        self.refill(now, rate);
        self.tokens -= bytes as f64;
    }

    fn refill(&mut self, now: Instant, rate: f64) {
        let depth = depth(rate);
        self.tokens = match self.last {
            None => depth,
            Some(last) => {
                let credit = now.saturating_duration_since(last).as_secs_f64() * rate;
                (self.tokens + credit).min(depth)
            }
        };
        self.last = Some(now);
    }
}

/// The bucket's depth at `rate`: [`BURST`] of it, at least [`MIN_BURST_BYTES`].
fn depth(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(MIN_BURST_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: usize = 1200;

    /// Sends packets as soon as the bucket lets them over `span`, returns their times.
    fn send_times(rate: f64, span: Duration) -> Vec<Duration> {
        let start = Instant::now();
        let mut b = Bucket::default();
        let mut now = start;
        let mut times = Vec::new();
        while now < start + span {
            match b.ready_at(now, rate) {
                None => {
                    b.spend(now, PACKET, rate);
                    times.push(now - start);
                }
                Some(at) => now = at,
            }
        }
        times
    }

    #[test]
    fn a_slow_link_gets_two_packets_at_once_then_one_per_packet_time() {
        // 10 Mbit/s: 1.25 MB/s, a packet every 0.96 ms
        let rate = 1_250_000.0;
        let times = send_times(rate, Duration::from_millis(100));
        // the full bucket's three packets (two and a half in credit, the third half in
        // debt), then one per packet time
        assert_eq!(&times[..3], &[Duration::ZERO; 3]);
        assert!(times[3] > Duration::from_micros(400), "{:?}", times[3]);
        let gaps: Vec<f64> = times[3..]
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
            .collect();
        assert!(gaps.iter().all(|g| (g - 0.96).abs() < 0.01), "{gaps:?}");
        // over the span, the rate is kept
        let sent = times.len() as f64 * PACKET as f64;
        assert!((sent / 0.1 - rate).abs() / rate < 0.05, "{sent}");
    }

    #[test]
    fn a_fast_link_sends_two_milliseconds_at_once() {
        // 200 Mbit/s: 25 MB/s, 2 ms of it is 50 kB, about 41 packets
        let times = send_times(25_000_000.0, Duration::from_millis(10));
        let at_once = times.iter().filter(|t| t.is_zero()).count();
        assert_eq!(at_once, 42);
    }

    #[test]
    fn credit_does_not_build_beyond_the_burst_while_idle() {
        let rate = 1_250_000.0;
        let start = Instant::now();
        let mut b = Bucket::default();
        assert_eq!(b.ready_at(start, rate), None);
        b.spend(start, 10 * PACKET, rate);
        let later = start + Duration::from_secs(5);
        assert_eq!(b.ready_at(later, rate), None);
        // five idle seconds leave the burst's credit only: three packets go, the fourth waits
        for _ in 0..3 {
            assert_eq!(b.ready_at(later, rate), None);
            b.spend(later, PACKET, rate);
        }
        assert!(b.ready_at(later, rate).is_some());
    }

    #[test]
    fn a_rate_near_zero_waits_at_most_a_second() {
        let start = Instant::now();
        let mut b = Bucket::default();
        b.spend(start, 10 * PACKET, 1e-20);
        assert_eq!(b.ready_at(start, 1e-20), Some(start + MAX_WAIT));
    }

    #[test]
    fn a_rate_needs_an_rtt() {
        let p = PaceRate::default();
        assert_eq!(p.get(), None);
        p.set(60_000, Duration::ZERO);
        assert_eq!(p.get(), None);
        p.set(60_000, Duration::from_millis(48));
        assert_eq!(p.get(), Some(60_000.0 * 1.25 / 0.048));
    }
}
