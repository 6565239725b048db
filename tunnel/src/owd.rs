//! One-way queueing delay between the two ends of a connection, from timestamped probes.
//!
//! Both ends send a small probe (a QUIC datagram) every few milliseconds carrying their
//! local clock and the queueing delay they last measured for the *other* direction. The
//! receiver computes `d = now - sent` with its own clock: the clocks' offset is unknown but
//! constant, so `d - min(d)` is the queueing delay of that direction alone. Echoed back,
//! it tells each sender the queue its own data builds, which the RTT cannot: with both
//! directions loaded, the RTT holds both queues and the two senders fight over one number.
//! The minimum is taken over a sliding window (six 10 s buckets) so clock drift and route
//! changes age out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First byte of a probe that echoes a probe of the peer's.
pub const PROBE_MAGIC: u8 = 0xC7;
/// First byte of a probe with nothing to echo yet.
pub const PROBE_MAGIC_NO_ECHO: u8 = 0xC6;
/// Probe length in bytes: magic, sender clock (µs, u32), echoed peer clock (µs, u32: the
/// newest probe received from the peer), echoed queueing delay (u16, units of
/// [`QUEUE_UNIT_US`]). Clocks wrap every 71 minutes; the receiver unwraps them against its
/// own timeline. Probes go out every 10 ms on every path, so every byte counts on a 2 Mbit/s
/// satellite link (a 21-byte format took a tenth of a percent of the bonded capacity).
pub const PROBE_LEN: usize = 11;
/// Unit of the echoed queueing delay: 50 µs, so a u16 holds up to 3.2 s.
pub const QUEUE_UNIT_US: u64 = 50;

/// What a received probe tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReport {
    /// Queueing delay of *our* direction, as the peer measured it.
    pub queue: Duration,
    /// When we sent the newest probe the peer had received (a round-trip liveness proof).
    pub echoed_sent_at: Option<Instant>,
}

const BUCKET: Duration = Duration::from_secs(10);
const BUCKETS: usize = 6;
/// Echoes older than this are not believed (a u32 µs clock wraps after 71 minutes).
const MAX_ECHO_AGE_US: u64 = 60_000_000;

/// Sans-IO probe state of one connection end.
#[derive(Debug)]
pub struct OwdProbe {
    epoch: Instant,
    /// Minimum `d` (µs) per bucket, newest last, with the bucket's start.
    mins: Vec<(Instant, i64)>,
    /// Queueing delay of the peer-to-us direction, last measured (µs).
    inbound_queue_us: u32,
    /// Whether any probe arrived (the peer speaks the protocol).
    heard: bool,
    /// The peer's clock, unwrapped to 64 bits, in its newest probe (echoed back).
    peer_ts: Option<i64>,
}

impl OwdProbe {
    /// A probe state whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            mins: Vec::with_capacity(BUCKETS),
            inbound_queue_us: 0,
            heard: false,
            peer_ts: None,
        }
    }

    fn local_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// The probe to send now.
    pub fn make_probe(&self, now: Instant) -> [u8; PROBE_LEN] {
        let mut out = [0u8; PROBE_LEN];
        out[0] = if self.peer_ts.is_some() {
            PROBE_MAGIC
        } else {
            PROBE_MAGIC_NO_ECHO
        };
        out[1..5].copy_from_slice(&(self.local_us(now) as u32).to_be_bytes());
        out[5..9].copy_from_slice(&(self.peer_ts.unwrap_or(0) as u32).to_be_bytes());
        let q = (u64::from(self.inbound_queue_us) / QUEUE_UNIT_US).min(u64::from(u16::MAX));
        out[9..11].copy_from_slice(&(q as u16).to_be_bytes());
        out
    }

    /// Whether the peer has sent a probe.
    pub fn heard_peer(&self) -> bool {
        self.heard
    }

    /// Handles a received datagram; `None` when it is not a probe.
    pub fn on_probe(&mut self, now: Instant, data: &[u8]) -> Option<ProbeReport> {
        if data.len() != PROBE_LEN || (data[0] != PROBE_MAGIC && data[0] != PROBE_MAGIC_NO_ECHO) {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let (peer_raw, ours) = (word(1), word(5));
        let queue_units = u16::from_be_bytes([data[9], data[10]]);
        let local = self.local_us(now);
        // our own clock when we sent the echoed probe: at most MAX_ECHO_AGE_US ago
        let echoed_sent_at = (data[0] == PROBE_MAGIC)
            .then(|| u64::from((local as u32).wrapping_sub(ours)))
            .filter(|age| *age <= MAX_ECHO_AGE_US.min(local))
            .and_then(|age| self.epoch.checked_add(Duration::from_micros(local - age)));
        // the peer's clock, unwrapped next to the newest value seen (probes may reorder)
        let peer = match self.peer_ts {
            None => i64::from(peer_raw),
            Some(p) => p + i64::from(peer_raw.wrapping_sub(p as u32) as i32),
        };
        if self.peer_ts.is_none_or(|p| peer > p) {
            self.peer_ts = Some(peer);
        }
        let d = i64::try_from(local).ok()?.saturating_sub(peer);
        let current = self.mins.iter().map(|(_, m)| *m).min();
        if current.is_some_and(|m| d < m.saturating_sub(10_000_000)) {
            return None; // a clock step of more than 10 s: ignore rather than poison the minimum
        }
        match self.mins.last_mut() {
            Some((start, m)) if now.saturating_duration_since(*start) < BUCKET => *m = (*m).min(d),
            _ => {
                if self.mins.len() == BUCKETS {
                    self.mins.remove(0);
                }
                self.mins.push((now, d));
            }
        }
        let min = self.mins.iter().map(|(_, m)| *m).min().unwrap_or(d);
        self.inbound_queue_us = u32::try_from(d.saturating_sub(min)).unwrap_or(u32::MAX);
        self.heard = true;
        Some(ProbeReport {
            queue: Duration::from_micros(u64::from(queue_units) * QUEUE_UNIT_US),
            echoed_sent_at,
        })
    }
}

/// The outbound queueing delay reported by the peer, shared between the probe task and the
/// congestion controller of one connection.
#[derive(Debug, Default)]
pub struct QueueSignal {
    inner: Mutex<SignalState>,
}

#[derive(Debug, Default)]
struct SignalState {
    /// Sum, count and smallest of the reports since the controller last took them, and
    /// when the latest came.
    sum: Duration,
    count: u32,
    least: Option<Duration>,
    latest_at: Option<Instant>,
}

/// The reports of one round, two ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueReading {
    /// Their mean: a queue that fills within the round shows in it.
    pub mean: Duration,
    /// Their smallest: the standing queue, with the link's jitter filtered out (each
    /// report is the queue plus that packet's jitter above the least delay seen; the
    /// smallest of a round's reports carries the least jitter). RFC 6817 (LEDBAT) filters
    /// its delay samples the same way.
    pub standing: Duration,
}

impl QueueSignal {
    /// Records a report from the peer.
    pub fn report(&self, now: Instant, queue: Duration) {
        if let Ok(mut s) = self.inner.lock() {
            s.sum += queue;
            s.count += 1;
            s.least = Some(s.least.map_or(queue, |l| l.min(queue)));
            s.latest_at = Some(now);
        }
    }

    /// The reports since the last call, if they are fresh (the latest younger than
    /// `max_age`).
    pub fn take(&self, now: Instant, max_age: Duration) -> Option<QueueReading> {
        let mut s = self.inner.lock().ok()?;
        let fresh = s
            .latest_at
            .is_some_and(|t| now.saturating_duration_since(t) <= max_age);
        let (sum, count) = (std::mem::take(&mut s.sum), std::mem::take(&mut s.count));
        // a smallest report means at least one report, so `count` is not zero
        match s.least.take() {
            Some(standing) if fresh => Some(QueueReading {
                mean: sum / count,
                standing,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_measured_per_direction_whatever_the_clock_offset() {
        let t0 = Instant::now();
        // the two ends started their clocks 5 s apart
        let a = OwdProbe::new(t0);
        let mut b = OwdProbe::new(t0 + Duration::from_secs(5));
        let owd = Duration::from_millis(20);
        // first probe: empty queue
        let p = a.make_probe(t0 + Duration::from_secs(6));
        b.on_probe(t0 + Duration::from_secs(6) + owd, &p);
        // later probe waits 30 ms in a queue
        let p = a.make_probe(t0 + Duration::from_secs(7));
        b.on_probe(
            t0 + Duration::from_secs(7) + owd + Duration::from_millis(30),
            &p,
        );
        // b echoes 30 ms back to a
        let mut a = a;
        let echo = b.make_probe(t0 + Duration::from_secs(8));
        let r = a
            .on_probe(t0 + Duration::from_secs(8) + owd, &echo)
            .expect("probe");
        assert_eq!(r.queue.as_millis(), 30);
        // b echoes the newest of a's probes it received: the one a sent at 7 s
        assert_eq!(r.echoed_sent_at, Some(t0 + Duration::from_secs(7)));
        assert!(a.on_probe(t0, b"not a probe").is_none());
    }

    #[test]
    fn clocks_wrap_without_harm() {
        // a's clock is near the u32 wrap (71.6 minutes after its start)
        let t0 = Instant::now();
        let near_wrap = Duration::from_micros(u64::from(u32::MAX) - 5_000);
        let mut a = OwdProbe::new(t0);
        let mut b = OwdProbe::new(t0 + near_wrap - Duration::from_secs(3));
        let owd = Duration::from_millis(20);
        let mut at = t0 + near_wrap - Duration::from_millis(50);
        let mut last = None;
        for i in 0..20u64 {
            // a queue builds up in a -> b from the 10th probe on
            let queue = Duration::from_millis(if i >= 10 { 12 } else { 0 });
            let p = a.make_probe(at);
            b.on_probe(at + owd + queue, &p).expect("probe");
            let echo = b.make_probe(at + owd + queue);
            last = a.on_probe(at + 2 * owd + queue, &echo);
            assert_eq!(last.expect("echo").echoed_sent_at, Some(at), "probe {i}");
            at += Duration::from_millis(10);
        }
        // the clocks wrapped in the middle; the queue is still measured
        assert_eq!(last.expect("echo").queue.as_millis(), 12);
    }

    #[test]
    fn signal_reports_the_mean_and_the_least_and_goes_stale() {
        let s = QueueSignal::default();
        let t = Instant::now();
        s.report(t, Duration::from_millis(9));
        s.report(t, Duration::from_millis(3));
        assert_eq!(
            s.take(t, Duration::from_millis(100)),
            Some(QueueReading {
                mean: Duration::from_millis(6),
                standing: Duration::from_millis(3)
            })
        );
        assert_eq!(s.take(t, Duration::from_millis(100)), None);
        s.report(t, Duration::from_millis(7));
        assert_eq!(
            s.take(t + Duration::from_secs(1), Duration::from_millis(100)),
            None
        );
        // the least of a round does not carry over to the next
        s.report(t, Duration::from_millis(8));
        let r = s.take(t, Duration::from_millis(100)).expect("fresh");
        assert_eq!(r.standing, Duration::from_millis(8));
    }
}
