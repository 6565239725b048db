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
//! The queueing delay `q` of a round is the one-way delay the peer measures for our data
//! (timestamped probes, see `crate::owd`) when the peer sends probes, the smallest of the
//! round's reports (jitter filtered out, as LEDBAT filters: in the demo a round's mean read
//! Wi-Fi's jitter and the probes' wait at a busy sender as 7-12 ms
//! against the 6 ms target and held its window below its BDP with data waiting; slow
//! start still ends on the mean), else the round's smallest RTT sample minus the path's
//! minimum RTT `base` (which also holds the reverse direction's queue: with both
//! directions loaded the two senders then fight over one number, which is why Canopy's
//! ends probe). The update, once per round trip:
//! `w <- w + 3/4 * (w' * (base + target) / (base + q) - w)`, where `w'` is the window of
//! the round before (whose data built the queue the round read), and never against the
//! reading's direction; the equilibrium queue is `target` whatever the link rate. These
//! guards make it work on radio links, measured with the demo's cellular profile (jitter
//! and bursty loss), where the bare update starved the link (0.6 Mbit/s of 20), and with
//! bulk both ways:
//! - a floor: the window never drops below the best delivery rate of the last 10 rounds
//!   times `base + target` (jitter looks like queueing; the floor keeps what the link has
//!   really delivered, and adds no standing queue beyond the target by itself). A round's
//!   rate is its bytes over the longer of the spans its packets were sent and acknowledged
//!   in (acknowledgements that come bunched read as more than the link carries);
//! - a probe: one round in eight grows the window by an eighth above that floor, so a link
//!   with room is discovered even when the delay signal is noisy (measured: a quarter
//!   every six rounds left 10 ms more at the bid p99; one in four, about 4 ms more than
//!   one in eight). A round that reads at or below the target on a link that lost
//!   nothing for [`QUIET_ROUNDS`] skips its probe: below the target the delay rule grows
//!   the window by itself, at it the link is full with the target queue, and the probe
//!   would only add queue;
//! - a jitter allowance (RTT signal only): the effective target is at least twice the
//!   smoothed change of the round's queueing delay between rounds;
//! - a collapse: a round that lost more than it delivered, at under half the best recent
//!   rate, takes the window straight down to what carries the rate it delivered, and that
//!   rate becomes the floor's memory; a round that ended long after it was due is an
//!   outage's end, not a collapse.
//!
//! Slow start doubles the window per round until the queueing delay passes three times
//! the target, the delivery rate stops growing by a quarter for three rounds, or a second
//! loss comes. A loss shrinks the window by a fifth, at most once per round (random loss
//! on Wi-Fi must not starve us; overflow loss is rare because the queue stays short).
//!
//! When another path of the bond dies, its load lands on this one, whose window may be
//! small from a quiet spell (the delay rule keeps a lightly used path's window near what it
//! carried): the bond then asks the controller to search again ([`Restart`]), and slow
//! start finds the path's rate in a few round trips instead of the probes' eighth every
//! eight rounds (measured in the demo: Wi-Fi stuck near 0.6 Mbit/s of 4 for three seconds
//! after cellular was cut, and the live stream fell a second behind).
//!
//! Weakness, stated: like every delay-based controller it yields to loss-based flows that
//! share the bottleneck; probing and the jitter allowance let the queue reach about twice
//! the target; the bonding scheduler (next issue) owns the rest.

use quinn_proto::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The one-way queueing delay the peer reports for this connection, if it probes.
    pub signal: Option<Arc<crate::owd::QueueSignal>>,
    /// Requests from outside quinn to search for the path's rate again.
    pub restart: Option<Arc<Restart>>,
    /// Where the controller reports a collapse of its link, for the bond.
    pub collapse: Option<Arc<Collapse>>,
    /// Where the controller publishes the rate its packets are paced at, for the socket
    /// shell (`crate::pace`).
    pub pace: Option<Arc<crate::pace::PaceRate>>,
    /// Where the controller counts the bytes the peer acknowledged, for the bond.
    pub delivered: Option<Arc<Delivered>>,
}

/// A collapse of the link the controller found (a round that lost more than it delivered,
/// at under half the best recent rate): the rate the link delivered then, bytes per
/// second, until the bond takes it. That round is the first sure reading of what the link
/// carries now, while the bond's meters still count what the sender pushes into the
/// overflowing queue.
#[derive(Debug, Default)]
pub struct Collapse {
    /// The rate's bits; 0: none reported since the last take.
    rate: AtomicU64,
}

impl Collapse {
    fn report(&self, rate: f64) {
        // a rate of 0 would read as none
        self.rate.store(rate.max(1.0).to_bits(), Ordering::Relaxed);
    }

    /// The rate of the last collapse reported since the last take, if any.
    pub fn take(&self) -> Option<f64> {
        let bits = self.rate.swap(0, Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }
}

/// The bytes the peer has acknowledged on the controller's connection: what the path
/// carried, where the window over the RTT is only what it may send (a window grown by
/// bursts of a thin stream read 93-144 Mbit/s on links that carried 0.25-7).
#[derive(Debug, Default)]
pub struct Delivered {
    bytes: AtomicU64,
}

impl Delivered {
    fn add(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The bytes acknowledged so far.
    pub fn total(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The window a controller resumes at for a link that carried `rate` (bytes per second)
/// with minimum RTT `base`: half the bandwidth-delay product (careful resume, as the
/// IETF's draft for QUIC and TCP has it: the jump is half the saved window, and slow start
/// goes on from there).
pub fn careful_resume_window(rate: f64, base: Duration) -> u64 {
    (rate * base.as_secs_f64() / 2.0) as u64
}

/// A request that the controller search for its path's rate again (slow start, from its
/// current window), taken at its next acknowledgement. The bond makes it when another path
/// dies and this one must carry its load, and when a returning link joins with a window to
/// resume at (careful resume: the search starts from there, not from the initial window).
#[derive(Debug, Default)]
pub struct Restart {
    search: AtomicBool,
    resume: AtomicU64,
}

impl Restart {
    /// Asks for a new search.
    pub fn request(&self) {
        self.search.store(true, Ordering::Relaxed);
    }

    /// Asks for a new search from a window of at least `window` bytes.
    pub fn resume(&self, window: u64) {
        self.resume.fetch_max(window, Ordering::Relaxed);
        self.request();
    }

    /// (search again, window to resume at: 0 for none)
    fn take(&self) -> (bool, u64) {
        let resume = self.resume.swap(0, Ordering::Relaxed);
        (self.search.swap(false, Ordering::Relaxed), resume)
    }
}

impl Default for LowDelayConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(6),
            initial_packets: 10,
            signal: None,
            restart: None,
            collapse: None,
            pace: None,
            delivered: None,
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
    /// Bytes declared lost in the current round.
    round_lost: u64,
    /// Whether any ack of the round was sent while the sender had more to send.
    round_limited_by_window: bool,
    /// Whether some acknowledged packet of the round was sent while the sender had
    /// nothing more to send (then the round's rate says nothing about the link).
    round_app_limited: bool,
    /// Loss reactions are limited to one per round: packets sent before this are ignored.
    recovery_start: Option<Instant>,
    /// Start of the current round (for its delivery rate).
    round_start: Option<Instant>,
    /// When the round's acknowledged packets were sent: the earliest and the latest.
    round_sent: Option<(Instant, Instant)>,
    /// Whether the last round had the peer's one-way queue reading.
    probed: bool,
    /// Delivery rates (bytes/s) of the last `RATE_ROUNDS` rounds.
    rates: [f64; RATE_ROUNDS],
    /// Next slot of `rates`.
    rate_slot: usize,
    /// Rounds since the start.
    round_no: u32,
    /// Queueing delay of the previous round, and the smoothed change between rounds.
    prev_queueing: Option<Duration>,
    jitter: Duration,
    /// Best delivery rate seen in slow start, and rounds since it last grew by a quarter.
    startup_best: f64,
    startup_flat: u32,
    /// Losses seen in slow start.
    startup_losses: u32,
    /// The smoothed RTT of the last acknowledgement (the pacing rate's divisor).
    srtt: Duration,
    /// The window in force during the previous round: see [`LowDelay::measured_window`].
    window_before: Option<u64>,
    /// Rounds since one lost a packet.
    rounds_since_loss: u32,
}

/// Rounds over which the best delivery rate is remembered.
const RATE_ROUNDS: usize = 10;

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
            round_lost: 0,
            round_limited_by_window: false,
            round_app_limited: false,
            recovery_start: None,
            round_start: None,
            round_sent: None,
            probed: false,
            rates: [0.0; RATE_ROUNDS],
            rate_slot: 0,
            round_no: 0,
            prev_queueing: None,
            jitter: Duration::ZERO,
            startup_best: 0.0,
            startup_flat: 0,
            startup_losses: 0,
            srtt: Duration::ZERO,
            window_before: None,
            rounds_since_loss: 0,
        }
    }

    /// The window that carries the best recent delivery rate with the target queue: the
    /// delay signal may not push the window below it. Jitter on a radio link looks like
    /// queueing to a delay-based controller; without this floor it would shrink the window
    /// until the link idles. A real standing queue cannot build from the floor alone: it
    /// is one target's worth of data above the bandwidth-delay product.
    fn floor(&self, base: Duration) -> u64 {
        self.floor_at(base, self.best_rate())
    }

    fn floor_at(&self, base: Duration, rate: f64) -> u64 {
        (rate * (base + self.allowed_queue()).as_secs_f64()) as u64
    }

    /// The standing queue aimed for: the target, or (with the RTT as the only signal) at
    /// least twice the jitter. The peer's one-way reading is already filtered for the
    /// link's jitter (the least of the round's reports); what moves it from round to round
    /// is then our own window's swing, and allowing twice that grew the swing (measured in
    /// the bids bench, both directions loaded: 15 ms of "jitter" held the window at twice
    /// the path's BDP and bids waited 45 ms in the queues).
    fn allowed_queue(&self) -> Duration {
        if self.probed {
            self.config.target
        } else {
            self.config.target.max(self.jitter * 2)
        }
    }

    /// Best delivery rate (bytes/s) of the recent rounds.
    fn best_rate(&self) -> f64 {
        self.rates.iter().copied().fold(0.0, f64::max)
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
        if let Some((search, resume)) = self.config.restart.as_ref().map(|r| r.take()) {
            if search {
                self.search_again();
            }
            self.window = self.window.max(resume.min(MAX_WINDOW));
        }
        if let Some(d) = &self.config.delivered {
            d.add(bytes);
        }
        let sample = now.saturating_duration_since(sent);
        self.round_min_rtt = Some(self.round_min_rtt.map_or(sample, |m| m.min(sample)));
        self.round_acked += bytes;
        self.round_sent = Some(self.round_sent.map_or((sent, sent), |(first, last)| {
            (first.min(sent), last.max(sent))
        }));
        if !app_limited {
            self.round_limited_by_window = true;
        } else {
            self.round_app_limited = true;
        }
        match self.round_end {
            Some(end) if now < end => {}
            _ => {
                let mut collapsed = None;
                if let Some(start) = self.round_start {
                    // Acknowledgements may arrive bunched (the reverse direction's queue
                    // drains at once): the round's packets cannot have been delivered
                    // faster than they were sent, so the longer of the two spans counts
                    // (BBR's rule). Measured with both directions loaded: the ack span
                    // alone read 1.3-1.5 times the link's rate, and the floor held that.
                    let sent_span = self
                        .round_sent
                        .map_or(Duration::ZERO, |(first, last)| last - first);
                    let secs = now
                        .saturating_duration_since(start)
                        .max(sent_span)
                        .as_secs_f64();
                    let rate = (secs > 0.0).then(|| self.round_acked as f64 / secs);
                    if let Some(r) = rate.filter(|_| self.round_limited_by_window) {
                        self.rates[self.rate_slot] = r;
                        self.rate_slot = (self.rate_slot + 1) % RATE_ROUNDS;
                    }
                    collapsed = rate.filter(|r| self.shows_collapse(now, start, srtt, *r));
                }
                self.round_sent = None;
                self.rounds_since_loss = if self.round_lost > 0 {
                    0
                } else {
                    self.rounds_since_loss.saturating_add(1)
                };
                self.round_lost = 0;
                self.end_round(now, base, srtt);
                self.window = self.window.max(self.floor(base));
                if let Some(rate) = collapsed {
                    self.on_collapse(rate, base);
                }
                self.round_start = Some(now);
                self.round_end = Some(now + srtt.max(Duration::from_millis(1)));
            }
        }
        self.srtt = srtt;
        self.publish_pace();
    }

    /// Whether the round that started at `start` and delivered `rate` shows its link
    /// collapsed: it lost more than it delivered, and delivered less than half the best
    /// recent rate. A round that ended much later than planned (no acknowledgement for a
    /// while: an outage, whose packets all count lost at its end) shows an outage, not a
    /// collapse. Random radio loss, even in bursts (the demo's Wi-Fi loses 60% of 4
    /// packets in 400), never loses half a round.
    fn shows_collapse(&self, now: Instant, start: Instant, srtt: Duration, rate: f64) -> bool {
        let planned = self
            .round_end
            .map_or(Duration::ZERO, |e| e.saturating_duration_since(start));
        let late = now.saturating_duration_since(start).saturating_sub(planned);
        late <= srtt.max(Duration::from_millis(100))
            && self.round_lost > self.round_acked
            && rate < self.best_rate() / 2.0
    }

    /// The link now carries `rate`: the window drops at once to what carries that rate
    /// with the target queue (twice over, so the link stays busy), and the rates of the
    /// link before no longer hold the floor up. Halving per round (the delay rule's most)
    /// took 2-3 s to bring a 700 kB window down to a link that collapsed from 7 to 0.25
    /// Mbit/s; meanwhile the link dropped nine packets in ten, bids and probes among them,
    /// and the bond read both links as down.
    fn on_collapse(&mut self, rate: f64, base: Duration) {
        self.rates = [rate; RATE_ROUNDS];
        self.slow_start = false;
        let fit = 2 * self.floor_at(base, rate);
        self.cut_to(self.window.min(fit));
        if let Some(c) = &self.config.collapse {
            c.report(rate);
        }
    }

    /// Cuts the window to `window` (at least the least window) for a collapse or a
    /// persistent congestion: the link itself changed. The next reading is still of the
    /// queue the window before built, but the delay rule goes on from the cut window.
    fn cut_to(&mut self, window: u64) {
        self.window = window.max(self.min_window());
        self.window_before = self.window_before.map(|w| w.min(self.window));
    }

    /// Publishes the pacing rate of the current window, once an RTT is known.
    fn publish_pace(&self) {
        if let Some(pace) = &self.config.pace {
            pace.set(self.window, self.srtt);
        }
    }

    /// Slow start again from the current window: its exits (a growing queue, a flat
    /// delivery rate, a second loss) count afresh.
    fn search_again(&mut self) {
        self.slow_start = true;
        self.startup_best = self.best_rate();
        self.startup_flat = 0;
        self.startup_losses = 0;
    }

    fn min_window(&self) -> u64 {
        4 * self.mtu
    }

    /// The window whose queue the round that just ended read: the one in force a round
    /// earlier. The peer reads a probe's one-way delay when the probe arrives and its
    /// report comes back a one-way trip later, so the reports of a round are of probes sent
    /// during the round before, queued behind what that round's window sent (an RTT
    /// sample likewise is of a packet sent a round earlier). Steered by a queue its
    /// predecessor built, the window swung (in the bids bench, 65 to 94 kB on a 50 kB path
    /// within ten rounds, the queue 1 to 25 ms); steered by the window that built the
    /// queue, it moves 3/4 of the way each round where halfway was the most that did not
    /// swing further (bid p99 78-88 ms against 82-96, 91-93 with 3/4 unsteered).
    fn measured_window(&mut self) -> f64 {
        self.window_before
            .replace(self.window)
            .unwrap_or(self.window) as f64
    }

    /// Whether a round that read `queueing` against the allowed queue `target` shows the
    /// link's room by itself, so that a probe would only add queue: it read at or below
    /// the target (below it the delay rule grows the window, at it the link is full with
    /// the target queue), and no round lost a packet in the last [`QUIET_ROUNDS`]. A radio
    /// link keeps its probes: its losses cut the window and its jitter holds the reading
    /// above the target in other rounds, and the probes find the rate again. Measured in
    /// `canopy demo` (25 s): skipping on a low reading alone took the uploads from about 6
    /// to 3.4-3.5 Mbit/s in two of three runs; with 16 quiet rounds, cellular's upload
    /// (a loss burst every few seconds) fell to 1.9-2.9 Mbit/s in three of seven runs,
    /// against 3.3-4.8 in twelve runs without the skip; with 64, 3.5-4.8 in eight runs.
    /// The bids bench's wired link loses nothing, and its burst's bid p99 went from 77-81
    /// to 71-75 ms.
    fn shows_room(&self, queueing: Duration, target: Duration) -> bool {
        queueing <= target && self.rounds_since_loss >= QUIET_ROUNDS
    }

    fn end_round(&mut self, now: Instant, base: Duration, srtt: Duration) {
        let Some(rtt) = self.round_min_rtt.take() else {
            return;
        };
        let measured = self.measured_window();
        let acked = std::mem::take(&mut self.round_acked);
        let limited = std::mem::take(&mut self.round_limited_by_window);
        let app_limited = std::mem::take(&mut self.round_app_limited);
        let fully_limited = limited && !app_limited;
        // The queue our own data builds: measured one way by the peer when it sends
        // probes (see `owd`), else estimated from the RTT, which also holds the reverse
        // direction's queue.
        let max_age = (srtt * 2).max(Duration::from_millis(100));
        let one_way = self
            .config
            .signal
            .as_ref()
            .and_then(|s| s.take(now, max_age));
        // The window follows the standing queue; slow start ends on the mean, so that a
        // queue filling within one round (the window doubles per round) shows at once.
        let queueing = one_way.map_or_else(|| rtt.saturating_sub(base), |r| r.standing);
        let filling = one_way.map_or(queueing, |r| r.mean);
        // Radio links jitter; a delay-based controller must not read jitter as queueing.
        // Track how much the round's queueing delay moves from round to round, and allow a
        // standing queue of at least twice that.
        if let Some(prev) = self.prev_queueing {
            let step = queueing.abs_diff(prev);
            self.jitter = (self.jitter * 7 + step) / 8;
        }
        self.prev_queueing = Some(queueing);
        self.probed = one_way.is_some();
        let target = self.allowed_queue();
        let rtt = base + queueing;
        let w = self.window as f64;
        self.round_no = self.round_no.wrapping_add(1);
        let best = self.best_rate();
        if self.slow_start {
            // Leave slow start when the queue clearly grows, or when the delivery rate
            // stopped growing by a quarter for three rounds (on a jittery radio link the
            // delay alone would end it far too early). Only rounds the window limited count:
            // an idle connection (probes and acks only) has a flat rate because it has
            // nothing to send, not because the link is full.
            // a round fed in bursts (a striped body's chunks, placed as room appears) is
            // partly application-limited: its flat rate must not end slow start
            if fully_limited {
                if best > self.startup_best * 1.25 {
                    self.startup_best = best;
                    self.startup_flat = 0;
                } else {
                    self.startup_flat += 1;
                }
            }
            // Only a round that sent data can show our own queue: a fresh connection's
            // first probes may come late for other reasons (the next hop resolving its
            // address after a link came back), and must not end slow start while the
            // connection is still idle.
            if (limited && filling > target * 3) || self.startup_flat >= 3 {
                self.slow_start = false;
            } else if limited {
                self.window = self
                    .window
                    .saturating_add(acked.min(self.window))
                    .min(MAX_WINDOW);
                return;
            } else {
                return;
            }
        }
        // The window that carries the link's rate with the target queue, from the window
        // whose queue was read; the window moves most of the way there each round.
        let goal = measured * (base + target).as_secs_f64() / rtt.as_secs_f64().max(1e-6);
        let mut next = w + GAIN * (goal - w);
        // ... in the direction the reading says: with a queue read above the target the
        // window never grows (one cut since, by a loss or a collapse, does not grow back
        // on a queue its bigger predecessor built)
        next = if queueing > target {
            next.min(w)
        } else {
            next.max(w)
        };
        if next > w && !limited {
            // Only grow when the window, not the application, limited the round.
            next = w;
        }
        let mut next = (next.clamp(w / 2.0, w * 2.0) as u64).min(MAX_WINDOW);
        if limited
            && self.round_no.is_multiple_of(PROBE_EVERY)
            && !self.shows_room(queueing, target)
        {
            // Probe for more bandwidth one round in PROBE_EVERY: if the link had room the
            // delivery rate rises and the floor follows; if not, the delay signal and the
            // floor (which only remembers rates really delivered) bring the window back.
            next = next.max(self.floor_at(base, best)).min(MAX_WINDOW) / 8 * 9;
        }
        self.window = next.min(MAX_WINDOW).max(self.min_window());
    }
}

/// Rounds without a loss before a low reading may stand in for a probe (about 3 s on a
/// 45 ms path: the demo's Wi-Fi loses a burst every second or so, its cellular link one
/// every few seconds).
const QUIET_ROUNDS: u32 = 8 * PROBE_EVERY;

/// One probing round in this many.
const PROBE_EVERY: u32 = 8;

/// How far the window moves towards its goal each round.
const GAIN: f64 = 0.75;

/// The largest window, bytes. On loopback a round lasts microseconds and a window-limited
/// connection may double its window every round: unbounded, it overflowed.
const MAX_WINDOW: u64 = 1 << 30;

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
        lost_bytes: u64,
    ) {
        self.round_lost = self.round_lost.saturating_add(lost_bytes);
        if is_persistent_congestion {
            self.cut_to(self.min_window());
            self.slow_start = false;
            self.recovery_start = Some(now);
            self.publish_pace();
            return;
        }
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return;
        }
        self.recovery_start = Some(now);
        // one loss in slow start is a radio link's random loss as likely as a full queue
        // (a full drop-tail queue shows as delay first, which ends slow start on its own):
        // the second ends it. Measured: a fresh connection over a link with 0.5% random
        // loss left slow start at its first loss near 1 Mbit/s and took 4 s to reach 8.
        self.startup_losses += 1;
        if self.startup_losses >= 2 {
            self.slow_start = false;
        }
        // The next round steers from the window before this cut (the reading is of the
        // queue that window built): with a queue above the target the cut holds; at the
        // target or below, the loss was not our queue's (a radio link's), and the window
        // goes most of the way back. With every cut held, the 25 s demo carried 6.9-7.9
        // Mbit/s down in six runs, against 7.2-8.2 in eight (the demo varies: a hint).
        // A policer that drops without queueing is then held off by the floor alone.
        self.window = (self.window * 4 / 5).max(self.min_window());
        self.publish_pace();
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
        let mut rtts = Vec::new();
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
            rtts.push(rtt);
            let sent = now;
            now += rtt;
            let packets = (w / 1200.0).ceil() as u64;
            for _ in 0..packets {
                cc.on_ack_sample(now, sent, 1200, false, base, rtt);
            }
            // force the round boundary in the simulation
            cc.round_end = Some(now);
        }
        // the median of the last 60 rounds: probing rounds briefly add queue
        let mut tail = rtts[rtts.len() - 60..].to_vec();
        tail.sort();
        let _ = last_rtt;
        (cc.window(), tail[30])
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
            // Bound: the bid budget is 30 ms above the base RTT for both directions
            // together; one direction's standing queue must stay under 25 ms (probing
            // rounds and the jitter allowance keep it above the 8 ms target), far below
            // the 200+ ms a loss-based sender leaves in a drop-tail queue.
            assert!(queue_ms <= 25.0, "{mbps} Mbit/s: queue {queue_ms} ms");
        }
    }

    /// One round of [`PATH`] at the controller's window in which ten packets are acked
    /// and the peer reports a one-way queue of `queue_ms`.
    fn read_round(
        cc: &mut LowDelay,
        signal: &crate::owd::QueueSignal,
        now: &mut Instant,
        queue_ms: u64,
    ) {
        let sent = *now;
        *now += PATH;
        signal.report(*now, Duration::from_millis(queue_ms));
        for _ in 0..10 {
            cc.on_ack_sample(*now, sent, 1200, false, PATH, PATH);
        }
        cc.round_end = Some(*now);
    }

    #[test]
    fn the_bytes_acknowledged_are_counted_for_the_bond() {
        let delivered = Arc::new(Delivered::default());
        let config = LowDelayConfig {
            delivered: Some(delivered.clone()),
            ..LowDelayConfig::default()
        };
        let t0 = Instant::now();
        let mut cc = LowDelay::new(Arc::new(config), t0, 1200);
        let base = Duration::from_millis(40);
        for i in 1..=5u32 {
            let now = t0 + base + Duration::from_millis(u64::from(i));
            cc.on_ack_sample(now, now - base, 1200, i % 2 == 0, base, base);
        }
        // window-limited or not: what the peer acknowledged is what the path carried
        assert_eq!(delivered.total(), 6000);
    }

    /// A fresh controller that steers by the peer's one-way readings, given on the signal.
    fn probed_controller() -> (LowDelay, Arc<crate::owd::QueueSignal>, Instant) {
        let signal = Arc::new(crate::owd::QueueSignal::default());
        let config = LowDelayConfig {
            signal: Some(signal.clone()),
            ..LowDelayConfig::default()
        };
        let t0 = Instant::now();
        (LowDelay::new(Arc::new(config), t0, 1200), signal, t0)
    }

    /// The base RTT of the path the steering tests run on.
    const PATH: Duration = Duration::from_millis(40);

    /// A controller past slow start on [`PATH`] after one round at `window` whose reading
    /// is the target.
    fn after_a_round_at(window: u64) -> (LowDelay, Arc<crate::owd::QueueSignal>, Instant) {
        let (mut cc, signal, mut now) = probed_controller();
        cc.slow_start = false;
        cc.window = window;
        read_round(&mut cc, &signal, &mut now, 6);
        (cc, signal, now)
    }

    /// One round at window `first` whose reading is the target, then one at `second` that
    /// reads `queue_ms` (the queue the first window built): the window after the first
    /// round, and after the second.
    fn window_after_a_late_reading(first: u64, second: u64, queue_ms: u64) -> (u64, u64) {
        let (mut cc, signal, mut now) = after_a_round_at(first);
        let held = cc.window();
        cc.window = second;
        read_round(&mut cc, &signal, &mut now, queue_ms);
        (held, cc.window())
    }

    #[test]
    fn a_loss_free_link_that_reads_low_is_not_probed() {
        let (mut cc, signal, mut now) = after_a_round_at(60_000);
        // a fresh controller probes: no round has gone quiet yet
        for _ in 0..QUIET_ROUNDS {
            read_round(&mut cc, &signal, &mut now, 6);
        }
        let quiet = cc.window();
        assert!(quiet > 60_000, "window {quiet}");
        // at the target the delay rule holds the window; nothing lost: no probe adds queue
        for _ in 0..3 * PROBE_EVERY {
            read_round(&mut cc, &signal, &mut now, 6);
        }
        assert_eq!(cc.window(), quiet);
        // a loss: the probes come back, and take the window past where it was
        cc.on_congestion_event(now, now, false, 1200);
        for _ in 0..PROBE_EVERY + 2 {
            read_round(&mut cc, &signal, &mut now, 6);
        }
        assert!(cc.window() > quiet, "window {} of {quiet}", cc.window());
    }

    #[test]
    fn the_queue_read_steers_from_the_window_that_built_it() {
        // the window grew by half (the delay rule's growth on an empty queue); the next
        // round reads the queue of the 60 kB window before it: twice the target. 60 kB
        // built 12 ms: 53 kB carries the target, and the window goes 3/4 of the way there
        // from 90 kB (steering from 90 kB would leave 82 kB)
        let (held, w) = window_after_a_late_reading(60_000, 90_000, 12);
        assert_eq!(held, 60_000, "at the target the window holds");
        assert!((60_000..66_000).contains(&w), "window {w}");
    }

    #[test]
    fn a_loss_cut_holds_while_the_queue_reads_above_the_target() {
        let (mut cc, signal, mut now) = after_a_round_at(90_000);
        cc.on_congestion_event(now, now, false, 1200);
        assert_eq!(cc.window(), 72_000);
        // the round reads 12 ms: the queue of the 90 kB window before the loss (steering
        // from it without regard to the reading's direction would leave 78 kB)
        read_round(&mut cc, &signal, &mut now, 12);
        assert_eq!(cc.window(), 72_000);
    }

    #[test]
    fn a_collapse_cut_holds_on_a_short_queue() {
        let (mut cc, signal, mut now) = after_a_round_at(90_000);
        // the link now carries 200 kB/s: the window fits it twice over (18.4 kB)
        cc.on_collapse(200_000.0, PATH);
        assert_eq!(cc.window(), 18_400);
        // an empty queue grows the window from the cut, not from the 90 kB before it
        // (which would double it)
        read_round(&mut cc, &signal, &mut now, 0);
        assert!(cc.window() <= 21_200, "window {}", cc.window());
    }

    #[test]
    fn a_window_cut_since_does_not_grow_on_the_queue_before_it() {
        // the window fell from 90 to 20 kB since the round the reading is of; the round
        // reads the 100 ms queue the 90 kB window built (steering from 90 kB would take the
        // window to 26 kB)
        let (_, w) = window_after_a_late_reading(90_000, 20_000, 100);
        assert!(w <= 20_000, "window {w}");
    }

    /// `n` rounds of `base` in which only an app-limited probe is acked; each reports a
    /// 100 ms queue on `signal` if given.
    fn idle_rounds(
        cc: &mut LowDelay,
        now: &mut Instant,
        base: Duration,
        n: usize,
        signal: Option<&crate::owd::QueueSignal>,
    ) {
        for _ in 0..n {
            let sent = *now;
            *now += base;
            if let Some(s) = signal {
                s.report(*now, Duration::from_millis(100));
            }
            cc.on_ack_sample(*now, sent, 60, true, base, base);
            cc.round_end = Some(*now);
        }
    }

    /// `n` rounds of `base` in which a whole window of 1200-byte packets is acked.
    fn full_rounds(cc: &mut LowDelay, now: &mut Instant, base: Duration, n: usize) {
        for _ in 0..n {
            let sent = *now;
            *now += base;
            for _ in 0..cc.window() / 1200 {
                cc.on_ack_sample(*now, sent, 1200, false, base, base);
            }
            cc.round_end = Some(*now);
        }
    }

    #[test]
    fn bunched_acknowledgements_do_not_raise_the_rate() {
        // one 1200-byte packet sent each millisecond (1.2 MB/s); the acknowledgements come
        // in bursts 40 ms after, the gaps between bursts alternating 50 and 30 ms (the
        // reverse direction's queue draining at once), so one round of a short RTT holds
        // 50 ms of packets acknowledged within 30 ms
        let base = Duration::from_millis(40);
        let t0 = Instant::now();
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), t0, 1200);
        let (mut burst_at, mut next_unacked) = (100u64, 0u64);
        for k in 0..40 {
            let gap = if k % 2 == 0 { 50 } else { 30 };
            burst_at += gap;
            let now = t0 + Duration::from_millis(burst_at);
            // every packet sent before the burst's time minus 40 ms
            while next_unacked < burst_at - 40 {
                let sent = t0 + Duration::from_millis(next_unacked);
                cc.on_ack_sample(now, sent, 1200, false, base, Duration::from_millis(10));
                next_unacked += 1;
            }
        }
        let best = cc.best_rate();
        assert!(
            best <= 1.2e6 * 1.05,
            "best rate {best:.0} B/s of 1.2e6 sent"
        );
        assert!(best >= 1.2e6 * 0.9, "best rate {best:.0} B/s of 1.2e6 sent");
    }

    #[test]
    fn the_window_stays_bounded_on_a_loopback_path() {
        let start = Instant::now();
        let base = Duration::from_micros(30);
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), start, 1200);
        let mut now = start;
        // window-limited rounds of a few acks each, on a path with no queue: the window
        // doubles round after round (before the bound, it overflowed after ~50)
        for round in 0..200 {
            let sent = now;
            now += base;
            for _ in 0..64 {
                cc.on_ack_sample(now, sent, 1200, false, base, base);
            }
            cc.round_end = Some(now);
            assert!(cc.window() <= MAX_WINDOW, "round {round}: {}", cc.window());
        }
        assert!(cc.window() > 1 << 20, "{}", cc.window());
    }

    /// A packet-level model of the link emulator the demo and benches use (str0m-netem)
    /// and of how quinn sends: each packet leaves the link at `max(arrival + latency +
    /// jitter, when the link is free)`, so a packet delayed by jitter holds the ones behind
    /// it; the receiver acknowledges every second packet; the sender is window-limited and
    /// a 60-byte probe made every 10 ms goes out in the next packet the window allows (as
    /// quinn sends a datagram), its one-way delay above the least seen coming back as the
    /// queue signal. A probe may also wait up to `stall_ms` at the sender before it goes (the
    /// runtime busy with other tasks: the demo's trace shows a spread of 5-8 ms between a
    /// round's smallest and mean report on an uncongested Wi-Fi path). Returns the share of
    /// the link's rate delivered over the last half of `secs`, and the mean queue the
    /// probes met there (ms).
    fn jittery_link(
        rate_bps: f64,
        one_way_ms: u64,
        jitter_ms: u64,
        stall_ms: u64,
        secs: u64,
    ) -> (f64, f64) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Ev {
            /// Packets sent at these times arrive acknowledged.
            Ack {
                sent: Vec<Instant>,
            },
            /// The far end has a packet sent at `sent`.
            Arrive {
                sent: Instant,
            },
            Probe,
            Report {
                queue_us: u64,
            },
        }
        let rate = rate_bps / 8.0;
        let lat = Duration::from_millis(one_way_ms);
        let (mut cc, signal, start) = probed_controller();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut jitter = 0.0f64;
        let mut link_free = start;
        let mut random = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut stall = Duration::ZERO;
        // one packet into the link at `t`: when it arrives at the far end
        let mut cross = |t: Instant, bytes: f64, stall: &mut Duration| {
            let r = random() * 2.0 - 1.0;
            jitter = r * 0.5 + jitter * 0.5;
            *stall = Duration::from_secs_f64(random() * stall_ms as f64 / 1000.0);
            let delay = lat.as_secs_f64() + jitter * jitter_ms as f64 / 1000.0;
            let leave = (t + Duration::from_secs_f64(delay)).max(link_free);
            link_free = leave + Duration::from_secs_f64(bytes / rate);
            leave
        };
        let mut events = BinaryHeap::new();
        let mut inflight = 0u64;
        let (mut base, mut srtt) = (Duration::MAX, lat * 2);
        let mut least_owd = Duration::MAX;
        let half = start + Duration::from_secs(secs / 2);
        let (mut delivered_late, mut queue_sum, mut queue_n) = (0u64, 0u64, 0u64);
        let mut probe_made: Option<Instant> = None;
        let mut unacked = Vec::new();
        events.push(Reverse((start, Ev::Probe)));
        let mut now = start;
        while let Some(Reverse((t, ev))) = events.pop() {
            if t > start + Duration::from_secs(secs) {
                break;
            }
            now = t;
            match ev {
                Ev::Arrive { sent } => {
                    unacked.push(sent);
                    if unacked.len() >= 2 {
                        let sent = std::mem::take(&mut unacked);
                        events.push(Reverse((now + lat, Ev::Ack { sent })));
                    }
                }
                Ev::Ack { sent } => {
                    for sent in sent {
                        inflight -= 1200;
                        let sample = now - sent;
                        base = base.min(sample);
                        srtt = (srtt * 7 + sample) / 8;
                        cc.on_ack_sample(now, sent, 1200, false, base, srtt);
                        if now >= half {
                            delivered_late += 1200;
                        }
                    }
                }
                Ev::Probe => {
                    probe_made = Some(now);
                    events.push(Reverse((now + Duration::from_millis(10), Ev::Probe)));
                }
                Ev::Report { queue_us } => {
                    signal.report(now, Duration::from_micros(queue_us));
                    if now >= half {
                        queue_sum += queue_us;
                        queue_n += 1;
                    }
                }
            }
            while inflight + 1200 <= cc.window() {
                let arrive = cross(now, 1200.0, &mut stall);
                inflight += 1200;
                events.push(Reverse((arrive, Ev::Arrive { sent: now })));
                if let Some(made) = probe_made.take() {
                    // the probe rides in this packet (or waits `stall` for the next):
                    // its clock is when it was made
                    let owd = arrive + stall - made;
                    least_owd = least_owd.min(owd);
                    let queue_us = (owd - least_owd).as_micros() as u64;
                    events.push(Reverse((arrive + lat, Ev::Report { queue_us })));
                }
            }
        }
        let secs_late = now.saturating_duration_since(half).as_secs_f64();
        (
            delivered_late as f64 / secs_late / rate,
            queue_sum as f64 / queue_n.max(1) as f64 / 1000.0,
        )
    }

    #[test]
    fn a_jittery_link_is_kept_busy() {
        // the demo's Wi-Fi: 4 Mbit/s, 20 ms one way, +-5 ms of jitter, probes that may wait
        // at the sender. A guard, not a reproduction: this model keeps the link full with
        // the mean filter too (its delivery-rate floor holds); in the demo the mean left
        // Wi-Fi's window below its BDP with 0.5-1 MB waiting (1.5-2.5 Mbit/s of 4), the
        // smallest report lets it fill (figures in docs/architecture.md)
        for (jitter_ms, stall_ms) in [(0, 0), (5, 0), (5, 8)] {
            let (used, queue_ms) = jittery_link(4e6, 20, jitter_ms, stall_ms, 30);
            eprintln!("jitter {jitter_ms} ms: {used:.3} of the link, queue {queue_ms:.1} ms");
            assert!(
                used >= 0.9,
                "jitter {jitter_ms} ms: {used:.3} of the link used"
            );
            // and the queue a bid meets stays short
            assert!(
                queue_ms <= 20.0,
                "jitter {jitter_ms} ms: queue {queue_ms:.1} ms"
            );
        }
    }

    #[test]
    fn idle_rounds_do_not_end_slow_start() {
        let start = Instant::now();
        let base = Duration::from_millis(70);
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), start, 1200);
        let mut now = start;
        // two seconds of an idle connection: a probe acked every round, app-limited
        idle_rounds(&mut cc, &mut now, base, 30, None);
        let w0 = cc.window();
        // then a download: full windows on an empty 20 Mbit/s link for three rounds
        full_rounds(&mut cc, &mut now, base, 3);
        assert!(
            cc.window() >= w0 * 3,
            "still in slow start: {w0} -> {}",
            cc.window()
        );
    }

    #[test]
    fn a_late_probe_on_an_idle_connection_does_not_end_slow_start() {
        let start = Instant::now();
        let base = Duration::from_millis(50);
        let signal = Arc::new(crate::owd::QueueSignal::default());
        let config = LowDelayConfig {
            signal: Some(signal.clone()),
            ..LowDelayConfig::default()
        };
        let mut cc = LowDelay::new(Arc::new(config), start, 1200);
        let mut now = start;
        // idle rounds whose probes report a 100 ms queue (they waited for ARP)
        idle_rounds(&mut cc, &mut now, base, 5, Some(&signal));
        let w0 = cc.window();
        full_rounds(&mut cc, &mut now, base, 3);
        assert!(
            cc.window() >= w0 * 3,
            "slow start ended while idle: {w0} -> {}",
            cc.window()
        );
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

    #[test]
    fn one_random_loss_does_not_end_slow_start() {
        let start = Instant::now();
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), start, 1200);
        let later = start + Duration::from_millis(10);
        cc.on_congestion_event(later, start, false, 1200);
        assert!(cc.slow_start, "a first loss keeps slow start");
        let again = later + Duration::from_millis(100);
        cc.on_congestion_event(again, later + Duration::from_millis(50), false, 1200);
        assert!(!cc.slow_start, "a second loss ends it");
    }

    #[test]
    fn a_resume_starts_the_search_from_the_window_given() {
        let start = Instant::now();
        let base = Duration::from_millis(50);
        let restart = Arc::new(Restart::default());
        let config = LowDelayConfig {
            restart: Some(restart.clone()),
            ..LowDelayConfig::default()
        };
        let mut cc = LowDelay::new(Arc::new(config), start, 1200);
        assert_eq!(cc.window(), 12_000);
        cc.slow_start = false;
        restart.resume(60_000);
        let mut now = start;
        full_rounds(&mut cc, &mut now, base, 1);
        assert!(cc.window() >= 60_000, "{}", cc.window());
        assert!(cc.slow_start);
        // taken once: a later round does not jump again
        restart.request();
        let before = cc.window();
        cc.window = 20_000;
        full_rounds(&mut cc, &mut now, base, 1);
        assert!(cc.window() < before, "{}", cc.window());
    }

    #[test]
    fn a_restart_finds_the_rate_of_a_path_that_carried_little() {
        // a 4 Mbit/s path whose window the delay rule held near 12 KB (it carried a stream
        // of 1 Mbit/s, jitter read as queueing); then the other path dies and it must carry
        // everything: the window must reach the link's BDP (23 KB at 46 ms) within a few
        // rounds, not the dozens the probes take
        let start = Instant::now();
        let base = Duration::from_millis(46);
        let restart = Arc::new(Restart::default());
        let config = LowDelayConfig {
            restart: Some(restart.clone()),
            ..LowDelayConfig::default()
        };
        let mut cc = LowDelay::new(Arc::new(config), start, 1200);
        let mut now = start;
        cc.slow_start = false;
        cc.window = 12_000;
        let bdp = 4e6 / 8.0 * base.as_secs_f64();
        let mut without = cc.clone();
        let mut t = now;
        full_rounds(&mut without, &mut t, base, 4);
        assert!((without.window() as f64) < bdp, "{}", without.window());
        restart.request();
        full_rounds(&mut cc, &mut now, base, 4);
        assert!(cc.window() as f64 >= bdp, "{}", cc.window());
        assert!(cc.slow_start);
    }

    /// One round of a link that delivers `rate` bytes/s over `base` plus a full 100 ms
    /// queue: the window's packets go out at once, what the link carries in the round is
    /// acknowledged at its end and the rest is declared lost there (a drop-tail queue
    /// overflowing).
    fn overflowing_round(cc: &mut LowDelay, now: &mut Instant, base: Duration, rate: f64) {
        let sent = *now;
        let rtt = base + Duration::from_millis(100);
        *now += rtt;
        let window = cc.window();
        let delivered = ((rate * rtt.as_secs_f64()) as u64).min(window);
        for _ in 0..(delivered / 1200).max(1) {
            cc.on_ack_sample(*now, sent, 1200, false, base, rtt);
        }
        cc.on_congestion_event(*now, sent, false, window.saturating_sub(delivered));
        cc.round_end = Some(*now);
    }

    #[test]
    fn a_collapse_brings_the_window_down_within_two_rounds() {
        // a link at 7 Mbit/s whose window grew far above its BDP (an app-limited stream
        // never shrinks it), then collapses to 0.25 Mbit/s behind a 100 ms drop-tail queue
        let start = Instant::now();
        let base = Duration::from_millis(20);
        let collapse = Arc::new(Collapse::default());
        let config = LowDelayConfig {
            collapse: Some(collapse.clone()),
            ..LowDelayConfig::default()
        };
        let mut cc = LowDelay::new(Arc::new(config), start, 1200);
        let mut now = start;
        cc.slow_start = false;
        cc.window = 700_000;
        cc.rates = [7e6 / 8.0; RATE_ROUNDS];
        let low = 0.25e6 / 8.0;
        let fits = 2.0 * low * (base + Duration::from_millis(12)).as_secs_f64();
        let mut halving = cc.clone();
        let mut t = now;
        for _ in 0..2 {
            overflowing_round(&mut cc, &mut now, base, low);
            overflowing_round(&mut halving, &mut t, base, 7e6 / 8.0 * 0.99);
        }
        assert!(
            (cc.window() as f64) <= fits.max(4.0 * 1200.0),
            "window {} after two collapsed rounds, {fits:.0} carries the link",
            cc.window()
        );
        assert!(
            cc.best_rate() < low * 2.0,
            "the old rate no longer holds the floor"
        );
        let reported = collapse.take().expect("the collapse is reported");
        assert!(reported < low * 2.0, "reported {reported}");
        assert_eq!(collapse.take(), None, "taken once");
        // a round that lost less than half is no collapse
        assert!(halving.window() > 100_000, "{}", halving.window());
    }

    #[test]
    fn an_outage_is_not_read_as_a_collapse() {
        // no acknowledgement for a second, then the link answers at its full rate and the
        // packets of the outage are declared lost at once: the window keeps what it had
        let start = Instant::now();
        let base = Duration::from_millis(20);
        let mut cc = LowDelay::new(Arc::new(LowDelayConfig::default()), start, 1200);
        let mut now = start;
        cc.slow_start = false;
        full_rounds(&mut cc, &mut now, base, 3);
        cc.rates = [7e6 / 8.0; RATE_ROUNDS];
        cc.window = 60_000;
        let sent = now;
        cc.round_end = Some(now + base);
        now += Duration::from_secs(1);
        cc.on_congestion_event(now, sent, false, 500_000);
        let after = cc.window();
        cc.on_ack_sample(now, now - base, 1200, false, base, base);
        assert!(cc.window() >= after, "{} < {after}", cc.window());
        assert!(cc.best_rate() >= 7e6 / 8.0, "the link's rate is remembered");
    }

    #[test]
    fn the_pacing_rate_follows_the_window() {
        let pace = Arc::new(crate::pace::PaceRate::default());
        let config = LowDelayConfig {
            pace: Some(pace.clone()),
            ..LowDelayConfig::default()
        };
        let start = Instant::now();
        let base = Duration::from_millis(40);
        let mut cc = LowDelay::new(Arc::new(config), start, 1200);
        assert_eq!(pace.get(), None, "no rate before an RTT");
        let mut now = start;
        full_rounds(&mut cc, &mut now, base, 3);
        let rate = pace.get().expect("a rate");
        let want = cc.window() as f64 * crate::pace::PACE_GAIN / base.as_secs_f64();
        assert!((rate - want).abs() < 1.0, "{rate} vs {want}");
        // a loss shrinks the window and the rate with it
        cc.on_congestion_event(now, now, false, 1200);
        let after = pace.get().expect("a rate");
        assert!(after < rate, "{after} < {rate}");
    }
}
