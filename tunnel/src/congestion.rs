//! `LowDelay`: a delay-based congestion controller for quinn that keeps the bottleneck's
//! standing queue short.
//!
//! Why this is how Canopy prioritizes bids: on a cellular uplink the delay a bid sees is
//! the drop-tail queue at the bottleneck (hundreds of milliseconds when loss-based Cubic
//! fills it), not the order of frames in quinn's buffers; quinn's `set_priority` only
//! reorders what is still in the sender. Keeping every connection's queue near a small
//! target (FAST-TCP style update, once per round trip) means a bid waits a few
//! milliseconds at most, in both directions, because both ends run this controller. quinn
//! round-robins streams of equal priority, so a bid stream's frames go out within a few
//! packets of being written even when bulk streams have megabytes buffered.
//!
//! The update, once per round trip, with `base` the path's minimum RTT and `rtt` the
//! smallest RTT sample of the round: `w <- (w + w * (base + target) / rtt) / 2`, so the
//! equilibrium RTT is `base + target` whatever the link rate. Slow start doubles the
//! window per round until the queueing delay passes half the target. A loss shrinks the
//! window by a fifth, at most once per round (random loss on Wi-Fi must not starve us;
//! overflow loss is rare because the queue stays short).
//!
//! Weakness, stated: like every delay-based controller it yields to loss-based flows that
//! share the bottleneck, and a path whose RTT jitters by more than the target is
//! under-used. The bonding scheduler (next issue) owns the remedy.

use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// Configuration of [`LowDelay`].
#[derive(Debug, Clone)]
pub struct LowDelayConfig {
    /// Standing-queue delay the controller aims for above the path's minimum RTT.
    pub target: Duration,
    /// Initial window in packets.
    pub initial_packets: u64,
}

impl Default for LowDelayConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(8),
            initial_packets: 10,
        }
    }
}

impl ControllerFactory for LowDelayConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(LowDelay::new(self, now, current_mtu))
    }
}

/// Delay-based congestion controller; see the module docs.
#[derive(Debug, Clone)]
pub struct LowDelay {
    config: Arc<LowDelayConfig>,
    mtu: u64,
    window: u64,
    slow_start: bool,
    /// End of the current measurement round.
    round_end: Option<Instant>,
    /// Smallest RTT sample seen in the current round.
    round_min_rtt: Option<Duration>,
    /// Bytes acknowledged in the current round.
    round_acked: u64,
    /// Whether any ack of the round was sent while the sender had more to send.
    round_limited_by_window: bool,
    /// Loss reactions are limited to one per round: packets sent before this are ignored.
    recovery_start: Option<Instant>,
}

impl LowDelay {
    /// A controller at its initial window.
    pub fn new(config: Arc<LowDelayConfig>, _now: Instant, current_mtu: u16) -> Self {
        let mtu = u64::from(current_mtu);
        Self {
            window: config.initial_packets * mtu,
            config,
            mtu,
            slow_start: true,
            round_end: None,
            round_min_rtt: None,
            round_acked: 0,
            round_limited_by_window: false,
            recovery_start: None,
        }
    }

    /// The sans-IO core of `on_ack`: one acknowledged packet, sent at `sent`, with the
    /// path's minimum RTT `base` and smoothed RTT `srtt`.
    pub fn on_ack_sample(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        base: Duration,
        srtt: Duration,
    ) {
        let sample = now.saturating_duration_since(sent);
        self.round_min_rtt = Some(self.round_min_rtt.map_or(sample, |m| m.min(sample)));
        self.round_acked += bytes;
        if !app_limited {
            self.round_limited_by_window = true;
        }
        match self.round_end {
            Some(end) if now < end => {}
            _ => {
                self.end_round(base);
                self.round_end = Some(now + srtt.max(Duration::from_millis(1)));
            }
        }
    }

    fn min_window(&self) -> u64 {
        4 * self.mtu
    }

    fn end_round(&mut self, base: Duration) {
        let Some(rtt) = self.round_min_rtt.take() else {
            return;
        };
        let acked = std::mem::take(&mut self.round_acked);
        let limited = std::mem::take(&mut self.round_limited_by_window);
        let target = self.config.target;
        let queueing = rtt.saturating_sub(base);
        let w = self.window as f64;
        if self.slow_start {
            if queueing > target / 2 {
                self.slow_start = false;
            } else if limited {
                self.window = self.window.saturating_add(acked.min(self.window));
                return;
            } else {
                return;
            }
        }
        let goal = w * (base + target).as_secs_f64() / rtt.as_secs_f64().max(1e-6);
        let mut next = (w + goal) / 2.0;
        if next > w && !limited {
            // Only grow when the window, not the application, limited the round.
            next = w;
        }
        let next = next.clamp(w / 2.0, w * 2.0) as u64;
        self.window = next.max(self.min_window());
    }
}

impl Controller for LowDelay {
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.on_ack_sample(now, sent, bytes, app_limited, rtt.min(), rtt.get());
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        _lost_bytes: u64,
    ) {
        if is_persistent_congestion {
            self.window = self.min_window();
            self.slow_start = false;
            self.recovery_start = Some(now);
            return;
        }
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.recovery_start = Some(now);
        self.slow_start = false;
        self.window = (self.window * 4 / 5).max(self.min_window());
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.mtu = u64::from(new_mtu);
        self.window = self.window.max(self.min_window());
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.window;
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_packets * self.mtu
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-link simulation: a bottleneck of `rate` bytes/s with base RTT `base`. Each
    /// round the sender sends a full window; the queue delay is what exceeds the BDP.
    fn simulate(rate: f64, base: Duration, rounds: usize) -> (u64, Duration) {
        let cfg = Arc::new(LowDelayConfig::default());
        let start = Instant::now();
        let mut cc = LowDelay::new(cfg, start, 1200);
        let mut now = start;
        let mut last_rtt = base;
        for _ in 0..rounds {
            let w = cc.window() as f64;
            let bdp = rate * base.as_secs_f64();
            let queue = (w - bdp).max(0.0) / rate;
            let rtt = base + Duration::from_secs_f64(queue);
            last_rtt = rtt;
            let sent = now;
            now += rtt;
            let packets = (w / 1200.0).ceil() as u64;
            for _ in 0..packets {
                cc.on_ack_sample(now, sent, 1200, false, base, rtt);
            }
            // force the round boundary in the simulation
            cc.round_end = Some(now);
        }
        (cc.window(), last_rtt)
    }

    #[test]
    fn converges_to_target_queue_at_several_rates() {
        for (mbps, base_ms) in [(2.0, 40u64), (10.0, 40), (20.0, 50), (5.0, 16)] {
            let rate = mbps * 1e6 / 8.0;
            let base = Duration::from_millis(base_ms);
            let (w, rtt) = simulate(rate, base, 200);
            let bdp = rate * base.as_secs_f64();
            let queue_ms = (rtt - base).as_secs_f64() * 1000.0;
            assert!(w as f64 >= bdp, "{mbps} Mbit/s: window {w} below BDP {bdp}");
            assert!(queue_ms <= 12.0, "{mbps} Mbit/s: queue {queue_ms} ms");
        }
    }

    #[test]
    fn loss_shrinks_once_per_round() {
        let start = Instant::now();
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), start, 1200);
        let w0 = cc.window();
        let later = start + Duration::from_millis(10);
        cc.on_congestion_event(later, start, false, 1200);
        let w1 = cc.window();
        assert!(w1 < w0);
        cc.on_congestion_event(later, start + Duration::from_millis(5), false, 1200);
        assert_eq!(cc.window(), w1, "second loss of the same round ignored");
        cc.on_congestion_event(later, start, true, 1200);
        assert_eq!(cc.window(), 4 * 1200);
    }
}
