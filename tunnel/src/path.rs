//! One uplink path as the bonding scheduler sees it: its config (kind, cost tier, class
//! restrictions, data cap) and its health, a state machine fed with probe echoes and
//! transport statistics.
//!
//! Health rule: the gateway probes every [`PROBE_INTERVAL`] and the relay echoes the newest
//! probe it has received. While the path works, echoes of ever newer probes arrive every
//! interval, however long the queue they waited in. A path is *down* when the echo has not
//! advanced for `srtt + 4·rttvar + (2 + k)·interval`, at least 150 ms (srtt and rttvar of
//! the echoes' round trips, RFC 6298 style, so jitter and queue swings widen the bound),
//! where `k` is the number of probes in a row the path's own loss rate would lose with
//! probability below 10⁻⁴ (at least 5). At 100 ms RTT with 10 ms of variation and no loss
//! that is 210 ms after the last echo, so a cut is detected within about 260 ms. A path is also demoted when its
//! RTT degrades far above its own minimum (`max(3·min, min + 300 ms)`).
//!
//! A demoted path rejoins only after it has proved stable for a hold time: five round trips
//! (250 ms to 1 s; on a new connection its setup's three round trips count, so at least
//! 100 ms after it), unless it was also demoted in the minute before this demotion; then 60 s,
//! doubling with each further demotion in the last ten minutes, up to ten minutes. So a marginal link flaps at most once
//! a minute, and a link that returns after an outage is back in well under a second.

use crate::class::TrafficClass;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Interval of the health probes (the one-way-delay probes double as health probes).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Probes that may go missing in a row on a clean path (Wi-Fi retries fail in bursts).
const MIN_LOST_PROBES: u32 = 5;
/// The detection bound is never shorter than this: short gaps in the echoes come from
/// radio retries and scheduling, not from a dead link.
pub const MIN_DOWN_AFTER: Duration = Duration::from_millis(150);
/// Hold time of a first rejoin: five round trips of stable probes, within these bounds.
pub const HOLD_FIRST_MIN: Duration = Duration::from_millis(250);
/// Upper bound of the first rejoin's hold time.
pub const HOLD_FIRST_MAX: Duration = Duration::from_secs(1);
/// Round trips a new connection's setup takes before it is handed over: the QUIC
/// handshake, HTTP/3's settings and the session's hello.
pub const SETUP_ROUND_TRIPS: u32 = 3;
/// A new connection's probation lasts at least this long (ten probe intervals), however
/// long its setup took; it also needs an echo of a probe sent after it came up.
pub const HOLD_CONNECTED_MIN: Duration = Duration::from_millis(100);
/// Hold time of a repeated rejoin (a demotion within [`FLAP_MEMORY`] of the previous).
pub const HOLD_REPEAT: Duration = Duration::from_secs(60);
/// Longest hold time.
pub const HOLD_MAX: Duration = Duration::from_secs(600);
/// How long a demotion counts towards the backoff.
pub const FLAP_MEMORY: Duration = Duration::from_secs(600);
/// How long after joining the silence bound stays wide (see `PathHealth::silence_bound`).
pub const JOIN_SETTLE: Duration = Duration::from_secs(2);
/// How long the minimum RTT is remembered, in buckets of [`MIN_RTT_BUCKET`].
const MIN_RTT_WINDOW: Duration = Duration::from_secs(60);
const MIN_RTT_BUCKET: Duration = Duration::from_secs(10);

/// A first rejoin's hold: five round trips of `rt`, within [`HOLD_FIRST_MIN`] and
/// [`HOLD_FIRST_MAX`].
fn first_hold(rt: Duration) -> Duration {
    (rt * 5).clamp(HOLD_FIRST_MIN, HOLD_FIRST_MAX)
}

/// What kind of link an uplink is (informational; shown in status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// A cellular modem.
    Cellular,
    /// Venue Wi-Fi.
    Wifi,
    /// A satellite terminal.
    Satellite,
    /// Wired ethernet.
    #[default]
    Ethernet,
}

impl LinkKind {
    /// Name in config and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cellular => "cellular",
            Self::Wifi => "wifi",
            Self::Satellite => "satellite",
            Self::Ethernet => "ethernet",
        }
    }
}

/// Cost tier of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Used for everything.
    #[default]
    Primary,
    /// Used for everything, but a request goes there only when it finishes clearly earlier
    /// than on a primary path (its completion time counts 1.5×).
    Secondary,
    /// Carries traffic only when no primary or secondary path can; bids and check-ins may
    /// always use it.
    Backup,
}

impl Tier {
    /// Name in config and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::Backup => "backup",
        }
    }
}

/// Health of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No QUIC connection (never connected, or closed and reconnecting).
    Connecting,
    /// Connected and proving itself stable since `since`; carries no traffic yet.
    Probation {
        /// Start of the hold time.
        since: Instant,
    },
    /// Carrying traffic.
    Up,
    /// Connected, but silent or degraded since `since`.
    Down {
        /// When the path was declared down.
        since: Instant,
    },
}

impl Health {
    /// Name for status lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Probation { .. } => "probation",
            Self::Up => "up",
            Self::Down { .. } => "down",
        }
    }

    /// Numeric value for the state gauge: 0 connecting, 1 down, 2 probation, 3 up.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Connecting => 0.0,
            Self::Down { .. } => 1.0,
            Self::Probation { .. } => 2.0,
            Self::Up => 3.0,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthEvent {
    /// Probation passed: the path carries traffic.
    Joined,
    /// No echo for longer than the detection bound.
    Silent {
        /// How long the path had been silent when declared down.
        silent_for: Duration,
    },
    /// RTT far above the path's minimum.
    Degraded {
        /// Smoothed RTT at the time.
        srtt: Duration,
    },
    /// Echoes came back: probation starts (hold time given).
    Recovering {
        /// How long the path must stay stable.
        hold: Duration,
    },
    /// The QUIC connection closed.
    Closed,
}

/// Health state machine of one path. Sans-IO: every input takes `now`.
#[derive(Debug)]
pub struct PathHealth {
    health: Health,
    hold: Duration,
    /// Send time of the newest probe the peer echoed.
    last_echo: Option<Instant>,
    /// When the echo last advanced (or the grace start after connecting).
    last_advance: Option<Instant>,
    /// When the current connection came up (silence before the first echo counts from here).
    connected_at: Option<Instant>,
    srtt: Duration,
    rttvar: Duration,
    /// Round trip of the echoes (probe sent → its echo seen), smoothed, and its variation.
    echo_srtt: Duration,
    echo_rttvar: Duration,
    /// Minimum RTT per 10 s bucket over the last minute, newest last.
    min_rtt: VecDeque<(Instant, Duration)>,
    loss: f64,
    demotions: VecDeque<Instant>,
    demotion_count: u64,
    /// When the path last joined (probation passed).
    joined_at: Option<Instant>,
    /// The smallest smoothed RTT among the bond's other usable paths (None: there is
    /// none). A path is demoted for its RTT only when another would serve better.
    best_other: Option<Duration>,
}

impl Default for PathHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl PathHealth {
    /// A path that has not connected yet.
    pub fn new() -> Self {
        Self {
            health: Health::Connecting,
            hold: HOLD_FIRST_MAX,
            last_echo: None,
            last_advance: None,
            connected_at: None,
            srtt: Duration::from_millis(100),
            rttvar: Duration::from_millis(25),
            echo_srtt: Duration::from_millis(100),
            echo_rttvar: Duration::from_millis(50),
            min_rtt: VecDeque::new(),
            loss: 0.0,
            demotions: VecDeque::new(),
            demotion_count: 0,
            joined_at: None,
            // until the bond says otherwise, another path is taken to be there
            best_other: Some(Duration::ZERO),
        }
    }

    /// The smallest smoothed RTT among the bond's other usable paths, None when no other
    /// is usable: a path whose RTT degrades is demoted only when another usable path's RTT
    /// is within its bound. When every path slows down together (a collapse of all of
    /// them, a shared bottleneck), demoting them all would make an outage of a slow link:
    /// seen in `tests/netns/lowbw.sh`, both uplinks collapsed to 0.25 Mbit/s were demoted
    /// in turn for 7 s and every piece in flight went again.
    pub fn set_best_other(&mut self, best: Option<Duration>) {
        self.best_other = best;
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether the path may carry traffic.
    pub fn is_usable(&self) -> bool {
        self.health == Health::Up
    }

    /// Smoothed RTT.
    pub fn srtt(&self) -> Duration {
        self.srtt
    }

    /// The smallest RTT of the last minute, if any was seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.iter().map(|(_, m)| *m).min()
    }

    /// The minimum RTT of the buckets still within the window at `now` (nothing is
    /// recorded while the path is down, so the kept ones may be older).
    fn min_rtt_within(&self, now: Instant) -> Option<Duration> {
        self.min_rtt
            .iter()
            .filter(|(start, _)| now.saturating_duration_since(*start) <= MIN_RTT_WINDOW)
            .map(|(_, m)| *m)
            .min()
    }

    /// Whether the path, demoted now, would rejoin after a first rejoin's short hold (not
    /// the flapping link's minute or more).
    pub fn rejoins_soon(&self, now: Instant) -> bool {
        self.repeat_hold(now).is_none()
    }

    /// Loss rate estimate (0..1).
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Demotions since start.
    pub fn demotions(&self) -> u64 {
        self.demotion_count
    }

    /// The demotions since `since` were not this link's doing (every uplink of the venue
    /// went down together, or collapsed together): they do not count towards the flap
    /// backoff, so the link rejoins after the usual few round trips; a probation already
    /// under way at `now` is held to that too (a link can be back on probation before the
    /// others show that they suffered the same). Returns whether any was forgiven.
    pub fn forgive_demotions_since(&mut self, now: Instant, since: Instant) -> bool {
        let before = self.demotions.len();
        self.demotions.retain(|t| *t < since);
        let forgiven = self.demotions.len() != before;
        if forgiven && matches!(self.health, Health::Probation { .. }) {
            self.hold = self.hold.min(self.next_hold(now));
        }
        forgiven
    }

    /// When the latest demotion happened.
    pub fn last_demotion(&self) -> Option<Instant> {
        self.demotions.back().copied()
    }

    /// The QUIC connection is up (handshake done, and the session joined), with `rtt`:
    /// probation starts. A first rejoin's hold is five of the link's round trips (the
    /// least of `rtt` and the one remembered) less the [`SETUP_ROUND_TRIPS`] its setup
    /// took, at least [`HOLD_CONNECTED_MIN`]: each of those was the link answering. (Before,
    /// the hold counted five round trips of the connection before, 100 ms at the start,
    /// from after the setup: a link back from a blackhole carried traffic 300 ms after its
    /// setup, and 0.96-1.4 s after its return.)
    pub fn on_connected(&mut self, now: Instant, rtt: Duration) {
        self.hold = self.repeat_hold(now).unwrap_or_else(|| {
            // the link's round trip: the least of the handshake's and the one remembered
            // (after a carrier's return the first packets wait for the next hop's address:
            // 143 ms against the link's 55 in the failover bench, and a 286 ms hold)
            let rt = self.min_rtt_within(now).map_or(rtt, |m| m.min(rtt));
            first_hold(rt)
                .saturating_sub(rt * SETUP_ROUND_TRIPS)
                .max(HOLD_CONNECTED_MIN)
        });
        self.connected_at = Some(now);
        self.srtt = rtt;
        self.last_echo = None;
        // the first echo needs a round trip: silence counts from one RTT after the start
        self.last_advance = Some(now + rtt);
        self.rttvar = rtt / 2;
        self.echo_srtt = rtt;
        self.echo_rttvar = rtt / 2;
        self.note_min_rtt(now, rtt);
        self.health = Health::Probation { since: now };
    }

    /// The QUIC connection closed.
    pub fn on_closed(&mut self, now: Instant) -> Option<HealthEvent> {
        let was = self.health;
        self.connected_at = None;
        self.last_echo = None;
        self.last_advance = None;
        self.health = Health::Connecting;
        if was == Health::Up {
            self.record_demotion(now);
        }
        (was != Health::Connecting).then_some(HealthEvent::Closed)
    }

    /// The peer echoed a probe we sent at `sent_at`.
    pub fn on_echo(&mut self, now: Instant, sent_at: Instant) {
        if self.last_echo.is_none_or(|t| sent_at > t) {
            self.last_echo = Some(sent_at);
            self.last_advance = Some(self.last_advance.map_or(now, |a| a.max(now)));
            let sample = now.saturating_duration_since(sent_at);
            let dev = sample.abs_diff(self.echo_srtt);
            self.echo_rttvar = (self.echo_rttvar * 3 + dev) / 4;
            self.echo_srtt = (self.echo_srtt * 7 + sample) / 8;
        }
    }

    /// Transport statistics: the smoothed RTT and RTT variation of the connection, and the
    /// packets sent and lost since the previous call.
    pub fn on_stats(
        &mut self,
        now: Instant,
        srtt: Duration,
        rttvar: Duration,
        sent: u64,
        lost: u64,
    ) {
        self.srtt = srtt;
        self.rttvar = rttvar;
        self.note_min_rtt(now, srtt);
        if sent > 0 {
            let sample = (lost as f64 / sent as f64).min(1.0);
            // weight by how much was sent, so idle periods do not reset the estimate
            let w = (sent as f64 / 200.0).min(1.0) * 0.25;
            self.loss = self.loss * (1.0 - w) + sample * w;
        }
    }

    /// Current detection bound: silence longer than this declares the path down.
    pub fn down_after(&self) -> Duration {
        let k = if self.loss <= 0.0 {
            MIN_LOST_PROBES
        } else if self.loss >= 0.5 {
            14
        } else {
            ((1e-4f64).ln() / self.loss.ln())
                .ceil()
                .clamp(f64::from(MIN_LOST_PROBES), 14.0) as u32
        };
        (self.echo_srtt + 4 * self.echo_rttvar + PROBE_INTERVAL * (2 + k)).max(MIN_DOWN_AFTER)
    }

    /// Silence after which the connection is given up (closed and made again): a link that
    /// was only stalled answers before this.
    pub fn close_after(&self) -> Duration {
        (self.down_after() * 4).max(Duration::from_secs(2))
    }

    /// The RTT above which the path counts as degraded.
    pub fn degraded_above(&self) -> Option<Duration> {
        let m = self.min_rtt.iter().map(|(_, m)| *m).min()?;
        Some((m * 3).max(m + Duration::from_millis(300)))
    }

    /// How long the path has been silent at `now`: since the echo last advanced (or since
    /// one RTT after the connection started, before the first echo).
    pub fn silence(&self, now: Instant) -> Option<Duration> {
        let since = self.last_advance?;
        Some(now.saturating_duration_since(since))
    }

    /// How long the path has been silent beyond the gaps its echoes usually show: the
    /// silence less half of what the path's jitter adds to the least detection bound. A
    /// clean link's silence counts from the first missing echo; a thin link whose probes
    /// queue behind its data answers in bursts, and a 100 ms gap there is no sign of a cut
    /// (the contribution sent every piece on such a link again, and a collapse choked on
    /// the copies).
    pub fn excess_silence(&self, now: Instant) -> Option<Duration> {
        let slack = self.down_after().saturating_sub(MIN_DOWN_AFTER) / 2;
        Some(self.silence(now)?.saturating_sub(slack))
    }

    /// The silence bound at `now`: [`Self::down_after`], but for [`JOIN_SETTLE`] after the
    /// path joined at least three echo round trips and seven probes. The bound was learnt
    /// on an idle path (probes only); the traffic it takes when it joins queues for a while
    /// before the senders' controllers settle (a relay answering many chunks at once on a
    /// fresh connection). Measured in the demo: a rejoined 8 Mbit/s link went silent for
    /// 240 ms, 300 ms after joining, and that second demotion within a minute held it out
    /// for 60 s.
    fn silence_bound(&self, now: Instant) -> Duration {
        let bound = self.down_after();
        match self.joined_at {
            Some(t)
                if self.health == Health::Up && now.saturating_duration_since(t) < JOIN_SETTLE =>
            {
                bound.max(self.echo_srtt * 3 + PROBE_INTERVAL * 7)
            }
            _ => bound,
        }
    }

    /// Advances the state machine; returns what changed. Call at least every probe interval.
    pub fn poll(&mut self, now: Instant) -> Option<HealthEvent> {
        let silent = self.silence(now)?; // connecting: nothing to do
        let bound = self.silence_bound(now);
        let degraded = self
            .degraded_above()
            .is_some_and(|d| self.srtt > d && self.best_other.is_some_and(|o| o <= d));
        match self.health {
            Health::Connecting => None,
            Health::Up | Health::Probation { .. } if silent > bound => {
                self.demote(now);
                Some(HealthEvent::Silent { silent_for: silent })
            }
            Health::Up | Health::Probation { .. } if degraded => {
                self.demote(now);
                Some(HealthEvent::Degraded { srtt: self.srtt })
            }
            Health::Probation { since } => {
                // the hold over, and the probes answering on this connection now (an echo
                // of one sent since it came up, not during its setup): a new connection's
                // hold may end before a dead one's silence passes its bound
                let answered = self
                    .last_echo
                    .is_some_and(|s| self.connected_at.is_none_or(|c| s >= c));
                if now.saturating_duration_since(since) >= self.hold
                    && answered
                    && silent <= bound / 2
                {
                    self.health = Health::Up;
                    self.joined_at = Some(now);
                    Some(HealthEvent::Joined)
                } else {
                    None
                }
            }
            Health::Up => None,
            Health::Down { .. } => {
                // echoes fresh again (within one detection bound) and RTT sane: probation
                if silent <= bound && !degraded {
                    self.hold = self.next_hold(now);
                    self.health = Health::Probation { since: now };
                    Some(HealthEvent::Recovering { hold: self.hold })
                } else {
                    None
                }
            }
        }
    }

    fn demote(&mut self, now: Instant) {
        let was_up = self.health == Health::Up;
        self.health = Health::Down { since: now };
        if was_up {
            self.record_demotion(now);
        }
    }

    fn record_demotion(&mut self, now: Instant) {
        self.demotion_count += 1;
        self.demotions.push_back(now);
        while self
            .demotions
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FLAP_MEMORY)
        {
            self.demotions.pop_front();
        }
    }

    /// The hold time for the next rejoin: five round trips, unless the latest demotion followed
    /// another within a minute; then 60 s, doubling per further demotion in ten minutes.
    fn next_hold(&self, now: Instant) -> Duration {
        self.repeat_hold(now)
            .unwrap_or_else(|| first_hold(self.srtt))
    }

    /// A flapping link's hold (the latest demotion followed another within a minute): 60 s,
    /// doubling per further demotion in ten minutes. None for a first rejoin.
    fn repeat_hold(&self, now: Instant) -> Option<Duration> {
        let recent: Vec<&Instant> = self
            .demotions
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= FLAP_MEMORY)
            .collect();
        let flapping = match recent.as_slice() {
            [.., prev, last] => last.saturating_duration_since(**prev) < HOLD_REPEAT,
            _ => false,
        };
        flapping.then(|| {
            let doublings = (recent.len() - 2).min(8) as u32;
            (HOLD_REPEAT * 2u32.pow(doublings)).min(HOLD_MAX)
        })
    }

    fn note_min_rtt(&mut self, now: Instant, rtt: Duration) {
        match self.min_rtt.back_mut() {
            Some((start, m)) if now.saturating_duration_since(*start) < MIN_RTT_BUCKET => {
                *m = (*m).min(rtt);
            }
            _ => self.min_rtt.push_back((now, rtt)),
        }
        while self
            .min_rtt
            .front()
            .is_some_and(|(start, _)| now.saturating_duration_since(*start) > MIN_RTT_WINDOW)
        {
            self.min_rtt.pop_front();
        }
    }
}

/// Static policy of a path, from config.
#[derive(Debug, Clone, PartialEq)]
pub struct PathPolicy {
    /// Cost tier.
    pub tier: Tier,
    /// Classes this path may carry (`None` = all).
    pub classes: Option<Vec<TrafficClass>>,
}

impl PathPolicy {
    /// Whether the path's config admits `class` (cap and tier aside).
    pub fn admits(&self, class: TrafficClass) -> bool {
        self.classes.as_ref().is_none_or(|c| c.contains(&class))
    }
}

/// Daily data cap state of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CapState {
    /// No cap, or under 75% of it.
    #[default]
    Normal,
    /// At or over 75%: a warning is logged and shown.
    Warn,
    /// At or over 100%: only bid and check-in traffic may use the path.
    Exhausted,
}

/// Byte counter against a daily cap. Days are counted from the counter's start, in the
/// gateway's monotonic clock (an event runs for hours, not across calendar days).
#[derive(Debug, Clone)]
pub struct DataCap {
    cap: Option<u64>,
    day_start: Instant,
    used: u64,
}

/// One day.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

impl DataCap {
    /// A counter for `cap` bytes a day (`None`: unlimited).
    pub fn new(now: Instant, cap: Option<u64>) -> Self {
        Self {
            cap,
            day_start: now,
            used: 0,
        }
    }

    /// Counts `bytes` used; returns the state after, and whether it just changed.
    pub fn add(&mut self, now: Instant, bytes: u64) -> (CapState, bool) {
        let before = self.state(now);
        self.used = self.used.saturating_add(bytes);
        let after = self.state(now);
        (after, after != before)
    }

    /// Bytes used today.
    pub fn used(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.used
    }

    /// The cap, if any.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// State at `now`.
    pub fn state(&mut self, now: Instant) -> CapState {
        self.roll(now);
        match self.cap {
            Some(cap) if self.used >= cap => CapState::Exhausted,
            Some(cap) if self.used.saturating_mul(4) >= cap.saturating_mul(3) => CapState::Warn,
            _ => CapState::Normal,
        }
    }

    fn roll(&mut self, now: Instant) {
        while now.saturating_duration_since(self.day_start) >= DAY {
            self.day_start += DAY;
            self.used = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Drives a health machine with probes every 10 ms over a link whose RTT and liveness
    /// are given per instant; returns the events with their times.
    fn drive(
        h: &mut PathHealth,
        t0: Instant,
        until: Duration,
        link: impl Fn(Duration) -> Option<Duration>,
    ) -> Vec<(Duration, HealthEvent)> {
        let mut events = vec![];
        // echoes in flight: (arrival, sent)
        let mut pending: VecDeque<(Instant, Instant)> = VecDeque::new();
        let mut t = Duration::ZERO;
        while t <= until {
            let now = t0 + t;
            if let Some(rtt) = link(t) {
                pending.push_back((now + rtt, now));
                h.on_stats(now, rtt, rtt / 8, 10, 0);
            }
            while pending.front().is_some_and(|(arr, _)| *arr <= now) {
                if let Some((_, sent)) = pending.pop_front() {
                    h.on_echo(now, sent);
                }
            }
            if let Some(e) = h.poll(now) {
                events.push((t, e));
            }
            t += MS;
        }
        events
    }

    #[test]
    fn a_shared_outage_is_forgiven() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, Duration::from_millis(50));
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // up, then two demotions within a minute: the second would cost a 60 s hold
        for n in (0..2000).step_by(10) {
            h.on_echo(ms(n), ms(n));
            h.poll(ms(n));
        }
        h.on_closed(ms(2000));
        h.on_connected(ms(3000), Duration::from_millis(50));
        for n in (3000..5000).step_by(10) {
            h.on_echo(ms(n), ms(n));
            h.poll(ms(n));
        }
        assert!(h.is_usable());
        h.on_closed(ms(5000));
        assert!(h.next_hold(ms(5000)) >= HOLD_REPEAT);
        assert!(!h.rejoins_soon(ms(5000)));
        // every uplink went down at 5 s: that one is forgiven
        assert!(h.forgive_demotions_since(ms(5000), ms(4900)));
        assert!(h.next_hold(ms(5000)) < Duration::from_secs(2));
        assert!(h.rejoins_soon(ms(5000)));
        assert_eq!(h.demotions(), 2, "still counted as demotions");
    }

    #[test]
    fn a_probation_under_way_is_shortened_when_its_demotion_is_forgiven() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, Duration::from_millis(50));
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let echo_until = |h: &mut PathHealth, from: u64, to: u64| {
            for n in (from..to).step_by(10) {
                h.on_echo(ms(n), ms(n));
                h.poll(ms(n));
            }
        };
        echo_until(&mut h, 0, 2000);
        h.on_closed(ms(2000));
        h.on_connected(ms(2100), Duration::from_millis(50));
        echo_until(&mut h, 2100, 3000);
        h.on_closed(ms(3000));
        // back on probation at once, held out for a minute for flapping
        h.on_connected(ms(3050), Duration::from_millis(50));
        assert_eq!(h.hold, HOLD_REPEAT);
        // then the other paths show the same trouble: forgiven, and it joins soon
        assert!(h.forgive_demotions_since(ms(3200), ms(200)));
        echo_until(&mut h, 3050, 4500);
        assert!(h.is_usable());
    }

    #[test]
    fn a_dead_path_is_declared_down_within_300_ms_at_100_ms_rtt() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 100 * MS);
        let cut = Duration::from_secs(3);
        let ev = drive(&mut h, t0, Duration::from_secs(4), |t| {
            (t < cut).then_some(100 * MS)
        });
        assert_eq!(ev[0].1, HealthEvent::Joined);
        let (at, e) = ev[1];
        assert!(matches!(e, HealthEvent::Silent { .. }), "{ev:?}");
        // the last echo before the cut was sent ~100 ms before it
        let detect = at - cut;
        assert!(detect <= 300 * MS, "detected after {detect:?}");
        assert!(detect >= 50 * MS, "too eager: {detect:?}");
    }

    #[test]
    fn the_queue_a_path_takes_when_it_joins_is_not_silence() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 100 * MS);
        // joins after 200 ms of probation (five round trips less the setup's three); its
        // new load queues 230 ms for a second
        let ev = drive(&mut h, t0, Duration::from_secs(3), |t| {
            Some(if (220 * MS..1220 * MS).contains(&t) {
                330 * MS
            } else {
                100 * MS
            })
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].1, HealthEvent::Joined);
        // a path cut right after it joined is still found within half a second
        let mut h = PathHealth::new();
        h.on_connected(t0, 100 * MS);
        let ev = drive(&mut h, t0, Duration::from_secs(2), |t| {
            (t < 220 * MS).then_some(100 * MS)
        });
        assert_eq!(ev[0].1, HealthEvent::Joined, "{ev:?}");
        let (at, e) = ev[1];
        assert!(matches!(e, HealthEvent::Silent { .. }), "{ev:?}");
        assert!(
            at - 220 * MS <= 500 * MS,
            "detected after {:?}",
            at - 220 * MS
        );
    }

    #[test]
    fn rtt_swings_do_not_trip_the_silence_rule() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 40 * MS);
        // jitter of ±15 ms around 40 ms for a minute
        let mut rng = 7u64;
        let rtts: Vec<Duration> = (0..60_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                Duration::from_millis(25 + rng % 31)
            })
            .collect();
        let ev = drive(&mut h, t0, Duration::from_secs(60), |t| {
            Some(rtts[t.as_millis() as usize % rtts.len()])
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
    }

    #[test]
    fn a_new_connection_counts_its_setup_towards_the_hold() {
        let t0 = Instant::now();
        let hold_at = |rtt: Duration| {
            let mut h = PathHealth::new();
            h.on_connected(t0, rtt);
            h.hold
        };
        // five round trips less the setup's three
        assert_eq!(hold_at(56 * MS), 112 * MS);
        // the 250 ms floor less the setup
        assert_eq!(hold_at(20 * MS), 190 * MS);
        // a long round trip: its setup was proof enough, ten probes still answered
        assert_eq!(hold_at(600 * MS), HOLD_CONNECTED_MIN);
        // a handshake slower than the link (its next hop resolved first): the link's
        // remembered round trip counts
        let mut h = PathHealth::new();
        h.on_connected(t0, 56 * MS);
        h.on_closed(t0 + Duration::from_secs(1));
        h.on_connected(t0 + Duration::from_secs(11), 143 * MS);
        assert_eq!(h.hold, 112 * MS);
        // and the path joins after that hold, its echoes answered
        let mut h = PathHealth::new();
        h.on_connected(t0, 56 * MS);
        let ev = drive(&mut h, t0, Duration::from_secs(1), |_| Some(56 * MS));
        assert_eq!(ev.first().map(|e| e.1), Some(HealthEvent::Joined), "{ev:?}");
        assert!(ev[0].0 >= 112 * MS && ev[0].0 <= 130 * MS, "{ev:?}");
    }

    #[test]
    fn a_new_connection_joins_only_on_echoes_of_probes_sent_since_it_came_up() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 56 * MS);
        // only the echo of a probe sent during the setup, then nothing: never joins
        let mut events = Vec::new();
        for n in 0..100u32 {
            let now = t0 + MS * 10 * n;
            h.on_echo(now, t0 - 20 * MS);
            events.extend(h.poll(now));
        }
        assert!(!events.contains(&HealthEvent::Joined), "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, HealthEvent::Silent { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_returning_path_rejoins_fast_once_then_backs_off() {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 50 * MS);
        // outage 5..15 s: back within hold + detection
        let ev = drive(&mut h, t0, Duration::from_secs(20), |t| {
            (t < Duration::from_secs(5) || t >= Duration::from_secs(15)).then_some(50 * MS)
        });
        let joins: Vec<_> = ev
            .iter()
            .filter(|(_, e)| *e == HealthEvent::Joined)
            .collect();
        assert_eq!(joins.len(), 2, "{ev:?}");
        let back = joins[1].0 - Duration::from_secs(15);
        assert!(back < Duration::from_secs(1), "rejoined after {back:?}");
    }

    /// Rejoins after the first join, demotions and down events, for a link whose RTT is
    /// 1200 ms during `bad` seconds of every `period`, and 100 ms otherwise, over ten minutes.
    fn marginal_rejoins(period: u64, bad: u64) -> (Vec<Duration>, u64, u64) {
        let t0 = Instant::now();
        let mut h = PathHealth::new();
        h.on_connected(t0, 100 * MS);
        let ev = drive(&mut h, t0, Duration::from_secs(600), |t| {
            Some(if t.as_secs() % period >= period - bad {
                1200 * MS
            } else {
                100 * MS
            })
        });
        let joins: Vec<Duration> = ev
            .iter()
            .filter(|(_, e)| *e == HealthEvent::Joined)
            .map(|(t, _)| *t)
            .collect();
        let downs = ev
            .iter()
            .filter(|(_, e)| matches!(e, HealthEvent::Silent { .. } | HealthEvent::Degraded { .. }))
            .count() as u64;
        (joins[1..].to_vec(), h.demotions(), downs)
    }

    #[test]
    fn a_marginal_link_flaps_at_most_once_a_minute() {
        // fast swings (4 s good, 4 s bad): after one quick rejoin it stays out
        let (rejoins, demotions, downs) = marginal_rejoins(8, 4);
        assert_eq!(rejoins.len(), 1, "{rejoins:?}");
        assert_eq!(demotions, 2);
        // every failed probation is a down event too, but not a demotion: the metric
        // (canopy_gateway_link_demotions_total) counts demotions
        assert!(downs > demotions, "{downs} down events");
        // slow swings (65 s good, 5 s bad): rejoins, but never twice within a minute
        let (rejoins, demotions, _) = marginal_rejoins(70, 5);
        assert!(rejoins.len() >= 2, "{rejoins:?}");
        for w in rejoins.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_secs(60), "{rejoins:?}");
        }
        assert!(demotions <= 1 + 600 / 60, "{demotions}");
    }

    #[test]
    fn a_slow_path_stays_when_no_other_is_faster() {
        let t0 = Instant::now();
        // 50 ms, then 400 ms from 20 s on (past max(3 x 50, 50 + 300) = 350 ms)
        let slow = |t: Duration| {
            Some(if t < 20 * 1000 * MS {
                50 * MS
            } else {
                400 * MS
            })
        };
        let degraded = |best: Option<Duration>| {
            let mut h = PathHealth::new();
            h.on_connected(t0, 50 * MS);
            h.set_best_other(best);
            drive(&mut h, t0, Duration::from_secs(40), slow)
                .iter()
                .filter(|(_, e)| matches!(e, HealthEvent::Degraded { .. }))
                .count()
        };
        // another path at 60 ms: demoted
        assert!(degraded(Some(60 * MS)) >= 1);
        // the others as slow, or none usable: it stays
        assert_eq!(degraded(Some(390 * MS)), 0);
        assert_eq!(degraded(None), 0);
    }

    #[test]
    fn silence_counts_past_the_path_own_jitter() {
        let t0 = Instant::now();
        let mut clean = PathHealth::new();
        clean.on_connected(t0, 20 * MS);
        drive(&mut clean, t0, Duration::from_secs(5), |_| Some(20 * MS));
        // echoes 300 ms late, give or take 100 ms
        let mut thin = PathHealth::new();
        thin.on_connected(t0, 300 * MS);
        drive(&mut thin, t0, Duration::from_secs(5), |t| {
            Some(if (t.as_millis() / 200) % 2 == 0 {
                200 * MS
            } else {
                400 * MS
            })
        });
        let later = t0 + Duration::from_secs(6);
        let (c, n) = (clean.silence(later).unwrap(), thin.silence(later).unwrap());
        assert_eq!(
            clean.excess_silence(later),
            Some(c),
            "a clean link: all of it"
        );
        let e = thin.excess_silence(later).unwrap();
        assert!(e + 100 * MS <= n, "{e:?} of {n:?}");
    }

    #[test]
    fn a_lossy_path_gets_a_longer_bound() {
        let mut h = PathHealth::new();
        let t0 = Instant::now();
        h.on_connected(t0, 50 * MS);
        h.on_stats(t0, 50 * MS, 5 * MS, 1000, 0);
        let clean = h.down_after();
        for i in 0..50 {
            h.on_stats(t0 + i * MS, 50 * MS, 5 * MS, 1000, 200);
        }
        assert!(h.loss() > 0.15);
        assert!(h.down_after() > clean, "{:?} vs {clean:?}", h.down_after());
        assert!(h.down_after() <= 300 * MS);
    }

    #[test]
    fn cap_warns_at_75_and_exhausts_at_100_and_rolls_over_daily() {
        let t0 = Instant::now();
        let mut c = DataCap::new(t0, Some(1000));
        assert_eq!(c.add(t0, 700), (CapState::Normal, false));
        assert_eq!(c.add(t0, 50), (CapState::Warn, true));
        assert_eq!(c.add(t0, 250), (CapState::Exhausted, true));
        assert_eq!(c.state(t0 + DAY), CapState::Normal);
        let mut none = DataCap::new(t0, None);
        assert_eq!(none.add(t0, u64::MAX), (CapState::Normal, false));
    }
}
