//! What the bond knows of one path besides its health: how fast it sends and receives, how
//! much is queued on it, and whether the work on it is lost. Sans-IO: the driver (the
//! gateway's bond) feeds it the connection's events, the transport's statistics once per
//! tick and the bytes requests move, each with `now`; the scheduler reads it as a
//! [`PathView`](crate::scheduler::PathView)'s rates and queues.
//!
//! - **Rate up**: the congestion window over the RTT. A fresh connection is credited with
//!   most of the link's earlier peak for [`PEAK_CREDIT`]: a link that comes back usually
//!   comes back as fast as it was, and its window only shows that once it is fed.
//! - **Rate down**: the goodput of meter windows in which a response was outstanding and
//!   bytes came (a busy window shows the downlink's rate); never below the rate up while
//!   the path has not been measured busy, so a path that carried nothing yet is still
//!   offered downloads.
//! - **Queued up**: body bytes handed to the transport and not sent yet, bounded from
//!   below by what ended requests wrote, so the estimate cannot drift with uptime.

use crate::path::{Health, HealthEvent, PathHealth};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a fresh connection is credited with most of its link's earlier peak rate.
pub const PEAK_CREDIT: Duration = Duration::from_secs(2);
/// How long a link's peak rate counts for a resume after it was last nearly reached.
pub const PEAK_MEMORY: Duration = Duration::from_secs(300);
/// Window of the goodput meters.
pub const METER_WINDOW: Duration = Duration::from_millis(250);
/// A link that carries, or may send, less than this share of its peak is short of it (a
/// collapse).
pub const SHORT_OF_PEAK: f64 = 0.25;
/// How long a path counts as short of its peak after it last showed it
/// ([`PathEstimate::short_of_peak`]).
pub const SHORTAGE_MEMORY: Duration = Duration::from_secs(3);
/// Demotions this close before a shared outage or collapse are part of it.
pub const TOGETHER: Duration = Duration::from_secs(3);
/// The lowest rate estimate, bytes per second.
const MIN_RATE: f64 = 10_000.0;
/// The meter windows [`PathEstimate::delivered_up`] spans: a burst of acknowledgements
/// (the reverse direction's queue draining at once) is not a rate.
const DELIVERED_WINDOWS: usize = 2;
/// The least unsent, beyond a round trip of the window's rate, at every tick of a meter
/// window, that shows a full link: five packets all through the window (what the
/// estimate counts as unsent holds the bytes on the wire too: a 4 Mbit/s stream on a
/// 7 Mbit/s link, 25 kB of them, read as a full link at the stream's rate). Less, or a
/// queue only at times, is the stream's own demand on its way out (a low-bandwidth level's 700-byte frames at 0.3 Mbit/s, a
/// keyframe written at once and sent within the window), and a window read as full there
/// measures the demand, not the link. Measured in network namespaces: after a collapse,
/// 7 Mbit/s links read as 0.3 Mbit/s full for as long as the audio level lasted (the
/// level never stepped back up); with five packets at the close only, the substream's
/// keyframes written at once into windows still small from the collapse read as full at
/// the substream's rate, and it stepped down again on links back at 7 Mbit/s.
const FULL_QUEUE: u64 = 6_000;

/// The transport's statistics of the path's connection at one tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransportStats {
    /// UDP bytes the connection has sent and not declared lost. A lost packet's bytes were
    /// not sent: they wait to be sent again. (Counted as sent, a collapsed link's queue hid
    /// behind its retransmissions: links collapsed from 7 to 0.25 Mbit/s read as neither
    /// queued nor full for 2-3 s, and the stream's level held.)
    pub tx_kept: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// The transport's smoothed RTT.
    pub rtt: Duration,
    /// Packets sent so far.
    pub sent_packets: u64,
    /// Packets declared lost so far.
    pub lost_packets: u64,
    /// Send time of the newest probe the peer echoed.
    pub latest_echo: Option<Instant>,
    /// Bytes the peer has acknowledged on the connection so far, if its congestion
    /// controller counts them (`crate::congestion::Delivered`).
    pub delivered: Option<u64>,
}

/// A closed meter window's goodput, for gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goodput {
    /// Towards the relay, bytes per second.
    pub up: f64,
    /// From the relay, bytes per second.
    pub down: f64,
}

/// What one tick found.
#[derive(Debug, Default)]
pub struct Tick {
    /// Health changes since the last tick (connection events included).
    pub events: Vec<HealthEvent>,
    /// Demotions of the link while it was carrying traffic (a failed probation is none).
    pub demoted: u64,
    /// The path may carry new work.
    pub usable: bool,
    /// Work on the path is lost (silent or closed): abandon it and send it again elsewhere.
    pub dead: bool,
    /// Silent so long that the connection should be closed and made again.
    pub reconnect: bool,
    /// A meter window closed: its goodput.
    pub goodput: Option<Goodput>,
    /// The path joined (probation passed) while its earlier peak is credited: the window, in
    /// bytes, its congestion controller may resume at (see [`PathEstimate::resume_window`]).
    pub resume: Option<u64>,
}

/// Rates, queues and loss of work of one path.
#[derive(Debug)]
pub struct PathEstimate {
    health: PathHealth,
    /// The current connection's number (0: none yet).
    generation: u64,
    connected: bool,
    /// Silent or closed since the last (re)connection or recovery: in-flight work is lost.
    lost: bool,
    events: Vec<HealthEvent>,
    /// Demotions already reported by a tick (a connection closed while up is one too).
    reported_demotions: u64,
    /// Health changes since the last tick came from a fresh connection.
    fresh: bool,
    last_sent: u64,
    last_lost: u64,
    rttvar: Duration,
    rate_up: f64,
    rate_down: f64,
    /// Highest goodput towards the relay seen in a window with a queue.
    peak_up: Peak,
    /// The best rate a busy download window measured.
    peak_down: Peak,
    /// The last meter window's rate up if it was queued all through (the link was full),
    /// else 0.
    last_full_up: f64,
    /// The least unsent at a tick of the open meter window.
    least_unsent: Option<u64>,
    /// A collapse's rate stands as `last_full_up` until this, unless a window reads full.
    collapse_until: Option<Instant>,
    /// When the path was last out of use, or a full window, a collapse or its window over
    /// its RTT last showed it carrying less than [`SHORT_OF_PEAK`] of its peak.
    short_seen: Option<Instant>,
    peak_credit_until: Option<Instant>,
    /// UDP bytes the connection had sent and not lost ([`TransportStats::tx_kept`]) when
    /// the meter window started, and at the last tick.
    meter_tx: u64,
    tx_kept: u64,
    /// Remaining declared request-body bytes not yet handed to the transport.
    pending_up: u64,
    /// Remaining declared response-body bytes not yet received.
    pending_down: u64,
    /// Body bytes handed to the transport on the current connection.
    written: u64,
    /// Body bytes written by the flows of the current connection that have ended.
    retired: u64,
    meter_start: Instant,
    meter_up: u64,
    meter_down: u64,
    meter_busy_down: bool,
    goodput: Goodput,
    /// The acknowledged bytes at the closes of the last meter windows, oldest first.
    delivered_marks: VecDeque<(Instant, u64)>,
}

impl PathEstimate {
    /// A path that has not connected yet, with a 1 Mbit/s guess each way.
    pub fn new(now: Instant) -> Self {
        Self {
            health: PathHealth::new(),
            generation: 0,
            connected: false,
            lost: false,
            events: Vec::new(),
            reported_demotions: 0,
            fresh: false,
            last_sent: 0,
            last_lost: 0,
            rttvar: Duration::from_millis(10),
            rate_up: 125_000.0,
            rate_down: 125_000.0,
            peak_up: Peak::default(),
            last_full_up: 0.0,
            least_unsent: None,
            collapse_until: None,
            short_seen: None,
            peak_down: Peak::default(),
            peak_credit_until: None,
            meter_tx: 0,
            tx_kept: 0,
            pending_up: 0,
            pending_down: 0,
            written: 0,
            retired: 0,
            meter_start: now,
            meter_up: 0,
            meter_down: 0,
            meter_busy_down: false,
            goodput: Goodput { up: 0.0, down: 0.0 },
            delivered_marks: VecDeque::new(),
        }
    }

    /// The path's health.
    pub fn health(&self) -> &PathHealth {
        &self.health
    }

    /// The path's health, to change (the bond's best other RTT).
    pub fn health_mut(&mut self) -> &mut PathHealth {
        &mut self.health
    }

    /// The current connection's number (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the path may carry traffic.
    pub fn is_usable(&self) -> bool {
        self.health.is_usable() && self.connected
    }

    /// Whether the path is connected and on probation (it stands in when nothing is up).
    pub fn on_probation(&self) -> bool {
        self.connected && matches!(self.health.health(), Health::Probation { .. })
    }

    /// Connection `generation` is up with `rtt`: probation starts, the counters of the
    /// connection start afresh, and the link's earlier peak is credited for a while.
    pub fn on_connected(&mut self, now: Instant, generation: u64, rtt: Duration) {
        self.least_unsent = None;
        if self.connected {
            // replaced without a close in between: the old one closed all the same
            self.on_closed(now);
        }
        self.generation = generation;
        self.connected = true;
        self.health.on_connected(now, rtt);
        self.last_sent = 0;
        self.last_lost = 0;
        self.written = 0;
        self.retired = 0;
        self.meter_tx = 0;
        self.last_full_up = 0.0;
        self.collapse_until = None;
        self.tx_kept = 0;
        self.delivered_marks.clear();
        self.fresh = true;
        self.peak_credit_until = Some(now + PEAK_CREDIT);
    }

    /// The connection closed.
    pub fn on_closed(&mut self, now: Instant) {
        self.least_unsent = None;
        self.connected = false;
        self.delivered_marks.clear();
        if let Some(e) = self.health.on_closed(now) {
            self.events.push(e);
        }
    }

    /// Reserves declared bytes for a request; the connection generation they go on.
    pub fn reserve(&mut self, up: u64, down: u64) -> u64 {
        self.pending_up = self.pending_up.saturating_add(up);
        self.pending_down = self.pending_down.saturating_add(down);
        self.generation
    }

    /// Gives back what a request reserved and did not use.
    pub fn release(&mut self, up: u64, down: u64) {
        self.pending_up = self.pending_up.saturating_sub(up);
        self.pending_down = self.pending_down.saturating_sub(down);
    }

    /// A request moved `bytes` of body (`up`: handed to the transport; else received), of
    /// which `reserved` were reserved.
    pub fn carried(&mut self, up: bool, bytes: u64, reserved: u64) {
        if up {
            self.written = self.written.saturating_add(bytes);
            self.meter_up += bytes;
            self.pending_up = self.pending_up.saturating_sub(reserved);
        } else {
            self.meter_down += bytes;
            self.meter_busy_down = true;
            self.pending_down = self.pending_down.saturating_sub(reserved);
        }
    }

    /// A request of connection `generation` that wrote `written` body bytes ended.
    pub fn retire(&mut self, generation: u64, written: u64) {
        if self.generation == generation {
            self.retired = self.retired.saturating_add(written);
        }
    }

    /// Body bytes handed to the transport and not sent yet, when the connection has sent
    /// `tx_kept` UDP bytes it has not lost ([`TransportStats::tx_kept`]). Sent is at least
    /// 95% of the UDP bytes (a full packet carries about 97.8% payload, so this alone
    /// undercounts what left by about 3%, and the error would grow with every byte: after
    /// 20 s at 20 Mbit/s the path looked half a second busier than it was) and at least
    /// what the requests that ended had written: a request that got its answer, or died,
    /// is not queued any more. The second bound keeps the estimate from drifting.
    pub fn unsent_at(&self, tx_kept: u64) -> u64 {
        if !self.connected {
            return 0;
        }
        let sent = (tx_kept * 95 / 100).max(self.retired);
        self.written.saturating_sub(sent)
    }

    /// Bytes queued towards the relay (declared and not handed over, or handed over and not
    /// sent) when the connection has sent `tx_kept` UDP bytes it has not lost.
    pub fn queued_up_at(&self, tx_kept: u64) -> u64 {
        self.pending_up.saturating_add(self.unsent_at(tx_kept))
    }

    /// Declared response bytes not received yet.
    pub fn queued_down(&self) -> u64 {
        self.pending_down
    }

    /// Estimated rate towards the relay, bytes per second.
    pub fn rate_up(&self) -> f64 {
        self.rate_up
    }

    /// Estimated rate from the relay, bytes per second.
    pub fn rate_down(&self) -> f64 {
        self.rate_down
    }

    /// Whether the path is sending at its best rate already: its last meter window closed
    /// with a queue and carried at least 80% of the best such window. When another path
    /// dies, such a path gains nothing from searching for its rate again (its window is
    /// the link's): a search would only overshoot into the link's queue. Seen in network
    /// namespaces: a busy 2 Mbit/s path searched again at a cut, doubled its window, and
    /// its RTT went from 50 to 115 ms while a single upload's pieces waited there.
    pub fn carries_its_peak(&self) -> bool {
        self.peak_up.rate > 0.0 && self.last_full_up >= 0.8 * self.peak_up.rate
    }

    /// Whether the path is of no use at its usual rate at `now`: not usable, or in the last
    /// [`SHORTAGE_MEMORY`] out of use, or a full meter window, a collapse or its congestion
    /// window over its RTT showed it carrying less than [`SHORT_OF_PEAK`] of its peak. A
    /// path with room (no full window, its window as it was) is not short.
    pub fn short_of_peak(&self, now: Instant) -> bool {
        !self.is_usable()
            || self
                .short_seen
                .is_some_and(|t| now.saturating_duration_since(t) <= SHORTAGE_MEMORY)
    }

    /// A reading of what the link carries or may send: short of its peak if under
    /// [`SHORT_OF_PEAK`] of it.
    fn note_rate(&mut self, now: Instant, rate: f64) {
        if rate < self.peak_up.rate * SHORT_OF_PEAK {
            self.short_seen = Some(now);
        }
    }

    /// The congestion controller found the link collapsed, carrying `rate` bytes per
    /// second (`crate::congestion::Collapse`): that is the link's full rate for the next
    /// two meter windows unless one reads full itself. The meter cannot tell yet: the
    /// sender keeps its queue near empty by pushing into the link's overflowing one, and
    /// what it sends there is lost.
    pub fn on_collapse(&mut self, now: Instant, rate: f64) {
        self.note_rate(now, rate);
        self.last_full_up = rate;
        self.collapse_until = Some(now + 2 * METER_WINDOW);
    }

    /// The rate the last meter window measured if it was queued all through (the link was
    /// full, so this is what it carries), or a collapse found meanwhile, bytes per second.
    pub fn full_rate(&self) -> Option<f64> {
        (self.last_full_up > 0.0).then_some(self.last_full_up)
    }

    /// What the peer acknowledged per second over the last [`DELIVERED_WINDOWS`] meter
    /// windows, once that many have closed on the connection and if its controller counts
    /// it: what the path carried, where its window over the RTT ([`Self::rate_up`]) is only
    /// what it may send.
    pub fn delivered_up(&self) -> Option<f64> {
        if self.delivered_marks.len() <= DELIVERED_WINDOWS {
            return None;
        }
        let (t0, b0) = *self.delivered_marks.front()?;
        let (t1, b1) = *self.delivered_marks.back()?;
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs > 0.0).then(|| b1.saturating_sub(b0) as f64 / secs)
    }

    /// The last closed meter window's goodput.
    pub fn goodput(&self) -> Goodput {
        self.goodput
    }

    /// One monitor step: `stats` of the connection, if one is up.
    pub fn tick(&mut self, now: Instant, stats: Option<&TransportStats>) -> Tick {
        let mut events = std::mem::take(&mut self.events);
        let fresh = std::mem::take(&mut self.fresh);
        if let Some(s) = stats.filter(|_| self.connected) {
            self.tx_kept = s.tx_kept;
            let prev = self.health.srtt();
            self.rttvar = (self.rttvar * 3 + s.rtt.abs_diff(prev)) / 4;
            let sent = s.sent_packets.saturating_sub(self.last_sent);
            let lost = s.lost_packets.saturating_sub(self.last_lost);
            self.last_sent = s.sent_packets;
            self.last_lost = s.lost_packets;
            let rttvar = self.rttvar.max(Duration::from_millis(1));
            self.health.on_stats(now, s.rtt, rttvar, sent, lost);
            if let Some(t) = s.latest_echo {
                self.health.on_echo(now, t);
            }
            let unsent = self.unsent_at(s.tx_kept);
            self.least_unsent = Some(self.least_unsent.map_or(unsent, |m| m.min(unsent)));
            let srtt = s.rtt.max(Duration::from_millis(1)).as_secs_f64();
            self.rate_up = (s.cwnd as f64 / srtt).max(MIN_RATE);
            if self.peak_credit_until.is_some_and(|t| now < t) {
                self.rate_up = self.rate_up.max(self.peak_up.rate * 0.8);
            }
            // the controller's own reading of the link: a window shrunk over a round trip
            // grown by the link's queue (a collapse the meter does not see full, as when
            // the stream's keyframes come in bursts)
            self.note_rate(now, self.rate_up);
        }
        if let Some(e) = self.health.poll(now) {
            events.push(e);
        }
        // a path out of use stays short for a while once back: a fresh connection is
        // credited with its peak before its window shows what the link carries
        if !self.is_usable() {
            self.short_seen = Some(now);
        }
        let delivered = stats.filter(|_| self.connected).and_then(|s| s.delivered);
        let goodput = self.meter(now, delivered);
        if events
            .iter()
            .any(|e| matches!(e, HealthEvent::Silent { .. } | HealthEvent::Closed))
        {
            self.lost = true;
        }
        if fresh
            || events
                .iter()
                .any(|e| matches!(e, HealthEvent::Recovering { .. }))
        {
            self.lost = false;
        }
        let reconnect = self.connected
            && matches!(self.health.health(), Health::Down { .. })
            && self
                .health
                .silence(now)
                .is_some_and(|d| d > self.health.close_after());
        let demoted = self.health.demotions() - self.reported_demotions;
        self.reported_demotions = self.health.demotions();
        let resume = events
            .iter()
            .any(|e| matches!(e, HealthEvent::Joined))
            .then(|| self.resume_window(now))
            .flatten();
        Tick {
            resume,
            events,
            demoted,
            usable: self.is_usable(),
            dead: self.lost || !self.connected,
            reconnect,
            goodput,
        }
    }

    /// The window a returning link's congestion controller may resume at when it joins:
    /// half the bandwidth-delay product of the link's earlier peak rate and its minimum RTT
    /// (careful resume, as the IETF's draft for QUIC and TCP has it: the jump is half the
    /// saved window, slow start goes on from there). Only while the peak is credited (the
    /// link came back within [`PEAK_CREDIT`] of connecting) and only if a peak was measured.
    /// Measured in the failover bench before: the bond placed a megabyte on cellular as it
    /// joined, its window started at 12 KB and took four round trips (250 ms) to reach the
    /// link's 137 KB.
    /// The peak must be recent: a busy window showed at least half of it within
    /// [`PEAK_MEMORY`] (a link that peaked in an empty cell an hour ago is not resumed there).
    pub fn resume_window(&self, now: Instant) -> Option<u64> {
        let credited = self.peak_credit_until.is_some_and(|t| now < t);
        let base = self.health.min_rtt()?;
        let peak = self.peak_up.recent(now).filter(|_| credited)?;
        Some(crate::congestion::careful_resume_window(peak, base))
    }

    /// The download rate the relay's controller on a new connection may resume from (it
    /// knows the new connection's round trip; see
    /// [`careful_resume_window`](crate::congestion::careful_resume_window)): the link's best
    /// busy download window, if one showed at least half of it within [`PEAK_MEMORY`], and
    /// unless the link would sit out a flapping link's long hold (the relay's resumed
    /// window would then wait a minute and more, and go out whole when the link joins).
    /// Measured in the failover bench before: one download's returning link reached 90% of
    /// the aggregate 830 ms after it joined (1.1 s after its return), the relay's window
    /// starting at 12 KB, against 300 ms for an upload, whose window resumes.
    pub fn resume_down_rate(&self, now: Instant) -> Option<f64> {
        self.peak_down
            .recent(now)
            .filter(|_| self.health.rejoins_soon(now))
    }

    /// Closes the meter window when it is due: the goodput each way, and the rate estimates
    /// that follow from them; `delivered`: the bytes the peer has acknowledged so far, if
    /// counted on a connection that is up (its mark for [`Self::delivered_up`]).
    fn meter(&mut self, now: Instant, delivered: Option<u64>) -> Option<Goodput> {
        let elapsed = now.saturating_duration_since(self.meter_start);
        if elapsed < METER_WINDOW {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        let up = self.meter_up as f64 / secs;
        // A window with a full queue shows what the link carries: what left on the wire,
        // not what was handed to the transport (a burst of writes is not a rate).
        let wire = self.tx_kept.saturating_sub(self.meter_tx) as f64 * 0.95 / secs;
        self.meter_tx = self.tx_kept;
        match delivered {
            Some(total) => {
                self.delivered_marks.push_back((now, total));
                if self.delivered_marks.len() > DELIVERED_WINDOWS + 1 {
                    self.delivered_marks.pop_front();
                }
            }
            None => self.delivered_marks.clear(),
        }
        if self.collapse_until.is_none_or(|t| now >= t) {
            self.collapse_until = None;
            self.last_full_up = 0.0;
        }
        // what the estimate calls unsent includes what is on the wire and not answered yet
        // (its overhead allowance is rough): a round trip of the window's rate is not queue
        let on_the_wire = (wire * self.health.srtt().as_secs_f64()) as u64;
        let queued_throughout = self
            .least_unsent
            .take()
            .is_some_and(|m| m >= FULL_QUEUE + on_the_wire);
        if self.connected && queued_throughout {
            // what left on the wire, not what was handed over in the window: a queue
            // written before the window (a dead path's pieces sent again here) leaves
            // during it, and the writes meanwhile are only the new demand. Measured in
            // `canopy demo` with the lesser of the two: at the cellular cut, Wi-Fi's 650 kB
            // of re-sent pieces left at 3.8 Mbit/s while the window read full at the
            // camera's 0.77 Mbit/s, and the camera stepped down to keyframes.
            self.last_full_up = wire;
            self.collapse_until = None;
            self.note_rate(now, wire);
            // the peak (a returning link's credit and resume window) stays with the lesser
            // reading: what a big window lets out into an overflowing queue counts as on
            // the wire until it is declared lost, and one such window would raise the peak
            // for good
            let rate = up.min(wire);
            self.peak_up.note(now, rate);
        }
        let down = self.meter_down as f64 / secs;
        if self.meter_busy_down && self.pending_down > 0 {
            // a busy window shows the downlink's rate; otherwise keep the estimate
            self.rate_down = down.max(self.rate_down * 0.9);
            self.peak_down.note(now, down);
        } else if self.rate_down < self.rate_up {
            self.rate_down = self.rate_up;
        }
        self.meter_start = now;
        self.meter_up = 0;
        self.meter_down = 0;
        self.meter_busy_down = false;
        self.goodput = Goodput { up, down };
        Some(self.goodput)
    }
}

/// A link's best measured rate in one direction, and when a reading last came near it.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    /// Bytes per second.
    rate: f64,
    /// When a reading last showed at least half of `rate`.
    seen: Option<Instant>,
}

impl Peak {
    /// A reading of `rate` at `now`.
    fn note(&mut self, now: Instant, rate: f64) {
        self.rate = self.rate.max(rate);
        if rate >= self.rate / 2.0 {
            self.seen = Some(now);
        }
    }

    /// The peak, if one was measured and a reading showed at least half of it within
    /// [`PEAK_MEMORY`] of `now` (a link that peaked in an empty cell an hour ago is not
    /// resumed there).
    fn recent(&self, now: Instant) -> Option<f64> {
        let recent = self
            .seen
            .is_some_and(|t| now.saturating_duration_since(t) <= PEAK_MEMORY);
        (recent && self.rate > 0.0).then_some(self.rate)
    }
}

/// What every path of a bond suffered together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTrouble {
    /// None is usable: the venue's outage, or the relay's.
    Outage,
    /// Each is unusable or short of its peak ([`PathEstimate::short_of_peak`]), and one at
    /// least is usable: a collapse of them all.
    Collapse,
}

/// Tells the demotions of an outage or a collapse of every path from links flapping: those
/// no longer count towards the flap backoff (they stay counted in
/// [`PathHealth::demotions`]), so the links rejoin in a few round trips when it ends. A
/// link that flaps while another carries its usual rate is not forgiven.
///
/// - **An outage** (no path usable): the demotions of the last [`TOGETHER`] are forgiven
///   at once. Measured before: after a one-link cut and a full outage within a minute, the
///   8 Mbit/s link sat out a minute of probation while the stream and its backfill
///   squeezed onto the others.
/// - **A collapse** (each path unusable or short of its peak,
///   [`PathEstimate::short_of_peak`], one at least usable): the demotions from [`TOGETHER`]
///   before it began are forgiven when it ends (some path is no longer short). While it
///   lasts, a path that flaps is held out as usual: a bid is better on the one path that
///   holds than on one that rejoins and goes silent again. Measured before:
///   in a collapse of both links to 0.25 Mbit/s, Wi-Fi was demoted twice 0.74 s apart
///   (silent, then its RTT) and sat out a minute after the links had returned.
#[derive(Debug, Default)]
pub struct TroubleWatch {
    /// When the collapse under way began.
    collapse_since: Option<Instant>,
}

impl TroubleWatch {
    /// Call after every tick of the paths: what they suffered together and the indices of
    /// those whose demotions were forgiven now, if any was.
    pub fn after_tick(
        &mut self,
        paths: &mut [&mut PathEstimate],
        now: Instant,
    ) -> Option<(SharedTrouble, Vec<usize>)> {
        if paths.is_empty() {
            return None;
        }
        let (trouble, since) = if paths.iter().all(|p| p.short_of_peak(now)) {
            if paths.iter().any(|p| p.is_usable()) {
                self.collapse_since.get_or_insert(now);
                return None;
            }
            (
                SharedTrouble::Outage,
                now.checked_sub(TOGETHER).unwrap_or(now),
            )
        } else {
            let began = self.collapse_since.take()?;
            let since = began.checked_sub(TOGETHER).unwrap_or(began);
            (SharedTrouble::Collapse, since)
        };
        let forgiven: Vec<usize> = paths
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.health.forgive_demotions_since(now, since).then_some(i))
            .collect();
        (!forgiven.is_empty()).then_some((trouble, forgiven))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A path driven on simulated time: a connection with `rtt`, probes echoed every 10 ms
    /// while `answering`, and the transport's counters.
    struct Sim {
        est: PathEstimate,
        now: Instant,
        stats: TransportStats,
        answering: bool,
    }

    impl Sim {
        fn connected(rtt: Duration) -> Self {
            Self::connected_at(Instant::now(), rtt)
        }

        fn connected_at(now: Instant, rtt: Duration) -> Self {
            let mut est = PathEstimate::new(now);
            est.on_connected(now, 1, rtt);
            Self {
                est,
                now,
                stats: TransportStats {
                    cwnd: 50_000,
                    rtt,
                    ..TransportStats::default()
                },
                answering: true,
            }
        }

        /// Runs for `d` in 10 ms ticks; returns every tick's result.
        fn run(&mut self, d: Duration) -> Vec<Tick> {
            let mut out = Vec::new();
            let end = self.now + d;
            while self.now < end {
                self.now += 10 * MS;
                if self.answering {
                    self.stats.latest_echo = self.now.checked_sub(self.stats.rtt);
                }
                let stats = self.stats;
                out.push(self.est.tick(self.now, Some(&stats)));
            }
            out
        }

        /// Two seconds carrying 2.5 MB/s with a 200 KB queue (a 125 KB window at 50 ms):
        /// the link's peak.
        fn carry_at_peak(&mut self) {
            self.stats.cwnd = 125_000;
            // a queue beyond the round trip's bytes on the wire, all along
            self.est.reserve(200_000, 0);
            self.est.carried(true, 200_000, 200_000);
            for _ in 0..8 {
                self.est.reserve(1_000_000, 0);
                self.est.carried(true, 625_000, 625_000);
                self.stats.tx_kept += 657_000;
                self.run(250 * MS);
            }
        }

        /// `ticks` ticks of 10 ms, each handing `written` bytes over and the link sending
        /// `sent` of them.
        fn write_and_send(&mut self, written: u64, sent: u64, ticks: usize) {
            for _ in 0..ticks {
                self.est.reserve(written, 0);
                self.est.carried(true, written, written);
                self.stats.tx_kept += sent * 100 / 95;
                self.run(10 * MS);
            }
        }

        /// The link comes back on connection `generation` with a small window, 50 ms RTT.
        fn come_back(&mut self, generation: u64) {
            self.est.on_connected(self.now, generation, 50 * MS);
            self.stats = TransportStats {
                cwnd: 15_000,
                rtt: 50 * MS,
                ..TransportStats::default()
            };
        }

        /// Runs until the path carries traffic.
        fn join(&mut self) {
            let ticks = self.run(Duration::from_secs(5));
            assert!(ticks.iter().any(|t| t.usable), "the path joins");
        }
    }

    #[test]
    fn what_the_peer_acknowledged_is_read_over_two_meter_windows() {
        let mut s = Sim::connected(40 * MS);
        s.join();
        assert_eq!(s.est.delivered_up(), None, "not counted");
        // 2.5 kB acknowledged every 10 ms (250 kB/s) under a 1 MB window (25 MB/s over
        // the RTT): the path carried a hundredth of what its window says it may send
        s.stats.cwnd = 1_000_000;
        let mut acked = 0;
        for _ in 0..100 {
            acked += 2_500;
            s.stats.delivered = Some(acked);
            s.run(10 * MS);
        }
        let d = s.est.delivered_up().expect("a reading");
        assert!((d - 250_000.0).abs() < 10_000.0, "{d}");
        assert!(s.est.rate_up() >= 20_000_000.0, "{}", s.est.rate_up());
        // a burst of 125 kB acknowledged at once in a quiet window reads over both
        // windows (62.5 + 125 kB in 0.5 s), not as that window's 500 kB/s
        acked += 125_000;
        s.stats.delivered = Some(acked);
        s.run(250 * MS);
        let d = s.est.delivered_up().expect("a reading");
        assert!((d - 375_000.0).abs() < 15_000.0, "{d}");
        // a new connection counts afresh, and one window closed on it is no reading yet
        // (a burst would read as a rate)
        s.come_back(2);
        s.stats.delivered = Some(0);
        s.run(260 * MS);
        s.stats.delivered = Some(25_000);
        s.run(260 * MS);
        assert_eq!(s.est.delivered_up(), None, "one window");
        s.stats.delivered = Some(50_000);
        s.run(260 * MS);
        let d = s.est.delivered_up().expect("a reading");
        assert!((d - 100_000.0).abs() < 10_000.0, "{d}");
    }

    #[test]
    fn a_path_that_carried_nothing_is_offered_downloads_at_its_upload_rate() {
        let mut s = Sim::connected(40 * MS);
        s.stats.cwnd = 100_000;
        s.join();
        // 100 kB over 40 ms: 2.5 MB/s each way, though nothing came down yet
        assert!((s.est.rate_up() - 2_500_000.0).abs() < 1.0);
        assert!(s.est.rate_down() >= s.est.rate_up());
    }

    #[test]
    fn busy_download_windows_set_the_download_rate_and_it_falls_slowly() {
        let mut s = Sim::connected(40 * MS);
        s.join();
        // a response outstanding, 250 kB per 250 ms window: 1 MB/s
        s.est.reserve(0, 10_000_000);
        for _ in 0..8 {
            s.est.carried(false, 250_000, 250_000);
            s.run(250 * MS);
        }
        assert!(
            (s.est.rate_down() - 1_000_000.0).abs() < 50_000.0,
            "{}",
            s.est.rate_down()
        );
        // the link slows to a tenth: the estimate follows, at most 10% a window
        let before = s.est.rate_down();
        s.est.carried(false, 25_000, 25_000);
        s.run(250 * MS);
        assert!(s.est.rate_down() >= before * 0.9 - 1.0);
        for _ in 0..40 {
            s.est.carried(false, 25_000, 25_000);
            s.run(250 * MS);
        }
        assert!(s.est.rate_down() < 120_000.0, "{}", s.est.rate_down());
    }

    #[test]
    fn a_returning_link_offers_the_relay_its_recent_download_peak() {
        let mut s = Sim::connected(40 * MS);
        s.join();
        assert_eq!(s.est.resume_down_rate(s.now), None, "nothing measured yet");
        // busy download windows at 1 MB/s, then the link slows to a tenth
        s.est.reserve(0, 10_000_000);
        for _ in 0..8 {
            s.est.carried(false, 250_000, 250_000);
            s.run(250 * MS);
        }
        for _ in 0..8 {
            s.est.carried(false, 25_000, 25_000);
            s.run(250 * MS);
        }
        // the peak stays (a slow stretch or a cut does not lower it) ...
        let peak = s.est.resume_down_rate(s.now).expect("a recent peak");
        assert!((peak - 1_000_000.0).abs() < 50_000.0, "{peak}");
        // ... for `PEAK_MEMORY` after it was last nearly reached
        s.now += PEAK_MEMORY;
        assert_eq!(s.est.resume_down_rate(s.now), None, "too old to resume at");
    }

    #[test]
    fn the_upload_queue_does_not_drift_with_uptime() {
        let mut s = Sim::connected(20 * MS);
        s.join();
        // an hour of 1 MB requests: each handed over whole, sent (with 2.2% framing on
        // top), answered and retired
        let mut udp = 0u64;
        for _ in 0..3600 {
            let g = s.est.reserve(1_000_000, 0);
            s.est.carried(true, 1_000_000, 1_000_000);
            udp += 1_022_000;
            s.est.retire(g, 1_000_000);
        }
        s.stats.tx_kept = udp;
        s.run(10 * MS);
        assert_eq!(s.est.queued_up_at(udp), 0, "what ended is not queued");
        // one more request handed over and not sent: exactly it is queued
        s.est.reserve(300_000, 0);
        s.est.carried(true, 300_000, 300_000);
        assert_eq!(s.est.queued_up_at(udp), 300_000);
    }

    #[test]
    fn a_path_full_at_its_peak_says_so_and_a_quiet_one_does_not() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        assert!(!s.est.carries_its_peak(), "nothing carried yet");
        s.carry_at_peak();
        assert!(s.est.carries_its_peak());
        // a quiet spell: what was handed over is sent, the queue is empty
        s.est.carried(true, 0, 0);
        s.stats.tx_kept += 100_000;
        s.run(250 * MS);
        s.run(250 * MS);
        assert!(!s.est.carries_its_peak(), "a path with room");
    }

    #[test]
    fn a_full_link_far_below_its_peak_is_short_of_it_for_a_while() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        s.carry_at_peak();
        assert!(!s.est.short_of_peak(s.now), "full at its peak");
        // collapsed: queued all through the windows at a tenth of the peak
        s.write_and_send(10_000, 625, 50);
        assert!(s.est.short_of_peak(s.now), "full at a tenth of its peak");
        // the link has room again (its queue sent): short for a while yet, then not
        s.write_and_send(0, 50_000, 20);
        assert!(s.est.short_of_peak(s.now));
        s.run(SHORTAGE_MEMORY + METER_WINDOW);
        assert!(!s.est.short_of_peak(s.now), "a path with room");
        // a path that is not usable is of no use at any rate
        s.answering = false;
        s.run(Duration::from_secs(1));
        assert!(s.est.short_of_peak(s.now));
    }

    /// Two paths at their peak; then `a` collapses and is demoted twice within a second
    /// (silent, back, silent again), while `b` collapses too or carries its peak; then `b`
    /// carries its peak for 4 s. The bond watches after every tick. Whether `a` carries
    /// traffic 1.5 s after its second return, and at the end.
    fn a_after_two_demotions(b_collapses: bool) -> (bool, bool) {
        let t0 = Instant::now();
        let mut a = Sim::connected_at(t0, 50 * MS);
        let mut b = Sim::connected_at(t0, 50 * MS);
        for s in [&mut a, &mut b] {
            s.join();
            s.carry_at_peak();
        }
        let mut watch = TroubleWatch::default();
        // 10 ms steps: `a` at a tenth of its peak, `b` at a tenth or at its peak
        let mut step = |a: &mut Sim, b: &mut Sim, n: usize, b_short: bool| {
            for _ in 0..n {
                a.write_and_send(10_000, 625, 1);
                if b_short {
                    b.write_and_send(10_000, 625, 1);
                } else {
                    b.write_and_send(25_000, 25_000, 1);
                }
                assert_eq!(a.now, b.now);
                watch.after_tick(&mut [&mut a.est, &mut b.est], a.now);
            }
        };
        step(&mut a, &mut b, 100, b_collapses);
        for _ in 0..2 {
            a.answering = false;
            step(&mut a, &mut b, 40, b_collapses);
            assert!(!a.est.is_usable(), "demoted");
            a.answering = true;
            // back on probation, and up after five round trips
            step(&mut a, &mut b, 50, b_collapses);
        }
        assert_eq!(a.est.health().demotions(), 2, "counted either way");
        step(&mut a, &mut b, 150, b_collapses);
        let during = a.est.is_usable();
        // `b`'s link is back: once it has not been short for the shortage's memory, a
        // collapse is over
        step(&mut a, &mut b, 400, false);
        (during, a.est.is_usable())
    }

    #[test]
    fn demotions_in_a_collapse_of_every_path_are_forgiven_when_it_ends() {
        assert_eq!(
            a_after_two_demotions(true),
            (false, true),
            "held out through the collapse, back soon after"
        );
    }

    #[test]
    fn a_link_that_flaps_beside_one_at_its_peak_is_held_out() {
        assert_eq!(a_after_two_demotions(false), (false, false));
    }

    #[test]
    fn a_window_shrunk_far_below_the_peak_is_short_of_it() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        s.carry_at_peak();
        // nothing queued, but the controller's window over the RTT is a tenth of the peak
        s.write_and_send(0, 50_000, 20);
        s.run(SHORTAGE_MEMORY + METER_WINDOW);
        assert!(!s.est.short_of_peak(s.now));
        s.stats.cwnd = 25_000;
        s.stats.rtt = 100 * MS;
        s.run(10 * MS);
        assert!(s.est.short_of_peak(s.now), "rate up {}", s.est.rate_up());
    }

    #[test]
    fn a_link_full_at_half_its_peak_is_not_short_of_it() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        s.carry_at_peak();
        s.write_and_send(40_000, 12_500, 100);
        assert!(s.est.full_rate().is_some(), "full");
        assert!(!s.est.short_of_peak(s.now));
    }

    #[test]
    fn only_a_queue_all_through_a_window_is_a_full_link() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        // a thin stream: 1 kB handed over per window, its last 700 bytes still unsent when
        // the window closes
        for _ in 0..4 {
            s.est.reserve(1_000, 0);
            s.est.carried(true, 1_000, 1_000);
            s.stats.tx_kept = (s.stats.tx_kept + 1_000) - 700 * 100 / 95;
            s.run(250 * MS);
            s.stats.tx_kept += 700 * 100 / 95;
        }
        assert_eq!(s.est.full_rate(), None, "the demand is no rate of the link");
        // a keyframe written at once in the middle of a window, not all sent when it
        // closes: no full link either
        while s.run(10 * MS)[0].goodput.is_none() {}
        s.run(100 * MS);
        s.est.reserve(30_000, 0);
        s.est.carried(true, 30_000, 30_000);
        loop {
            s.stats.tx_kept += 500 * 100 / 95;
            if s.run(10 * MS)[0].goodput.is_some() {
                break;
            }
        }
        assert_eq!(s.est.full_rate(), None, "a burst is no full link");
        s.stats.tx_kept += 30_000 * 100 / 95;
        s.run(300 * MS);
        // a 4 Mbit/s stream with 20 kB on the wire all along (under a round trip of it,
        // 25 kB at 50 ms): no queue
        s.est.reserve(20_000, 0);
        s.est.carried(true, 20_000, 20_000);
        s.write_and_send(5_000, 5_000, 50);
        assert_eq!(s.est.full_rate(), None, "bytes on the wire are no queue");
        s.stats.tx_kept += 20_000 * 100 / 95;
        // a real queue: 20 kB and more not sent all through a window, the link sending
        // 1 kB per tick
        s.est.reserve(20_000, 0);
        s.est.carried(true, 20_000, 20_000);
        s.write_and_send(1_100, 1_000, 50);
        let full = s.est.full_rate().expect("a full link");
        assert!((full - 100_000.0).abs() < 5_000.0, "{full}");
    }

    #[test]
    fn a_queue_written_before_the_window_reads_at_the_rate_it_leaves() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        while s.run(10 * MS)[0].goodput.is_none() {}
        // a dead path's 600 kB handed over at once; then a thin stream's 1 kB per tick
        // while the link sends 5 kB per tick (500 kB/s)
        s.est.reserve(600_000, 0);
        s.est.carried(true, 600_000, 600_000);
        s.write_and_send(1_000, 5_000, 50);
        let full = s.est.full_rate().expect("a full link");
        assert!((full - 500_000.0).abs() < 25_000.0, "{full}");
    }

    #[test]
    fn a_returning_link_is_credited_with_its_earlier_peak_for_a_while() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        s.carry_at_peak();
        // the link comes back on a new connection with a small window
        s.est.on_closed(s.now);
        s.come_back(2);
        s.run(100 * MS);
        assert!(s.est.rate_up() >= 0.8 * 2_000_000.0, "{}", s.est.rate_up());
        s.run(PEAK_CREDIT);
        assert!(
            (s.est.rate_up() - 300_000.0).abs() < 1.0,
            "credit over: the window's rate"
        );
    }

    #[test]
    fn a_returning_link_resumes_at_half_its_earlier_window_when_it_joins() {
        let mut s = Sim::connected(50 * MS);
        let first = s.run(Duration::from_secs(5));
        assert!(first.iter().any(|t| t.usable));
        assert!(
            first.iter().all(|t| t.resume.is_none()),
            "a first join has no earlier window"
        );
        s.carry_at_peak();
        s.est.on_closed(s.now);
        s.come_back(2);
        let back = s.run(Duration::from_secs(1));
        let resumes: Vec<u64> = back.iter().filter_map(|t| t.resume).collect();
        // half of 2.5 MB/s over 50 ms, once, as it joins
        assert_eq!(resumes.len(), 1, "{resumes:?}");
        assert!((60_000..=63_000).contains(&resumes[0]), "{resumes:?}");
        let joined = back.iter().position(|t| t.usable).unwrap();
        assert!(back[joined].resume.is_some());
    }

    #[test]
    fn a_link_back_after_its_peak_memory_resumes_from_scratch() {
        let mut s = Sim::connected(50 * MS);
        s.join();
        s.carry_at_peak();
        // away for six minutes: the peak is too old to resume at
        s.est.on_closed(s.now);
        s.run(PEAK_MEMORY + Duration::from_secs(60));
        s.come_back(2);
        let back = s.run(Duration::from_secs(1));
        assert!(back.iter().any(|t| t.usable), "it joins");
        assert!(back.iter().all(|t| t.resume.is_none()));
    }

    #[test]
    fn work_is_lost_when_the_path_goes_silent_and_found_again_when_it_answers() {
        let mut s = Sim::connected(30 * MS);
        s.join();
        s.answering = false;
        let ticks = s.run(Duration::from_millis(600));
        assert!(
            ticks.iter().any(|t| t.dead && !t.usable),
            "silent: its work is lost"
        );
        assert_eq!(
            ticks.iter().map(|t| t.demoted).sum::<u64>(),
            1,
            "a link that carried traffic was demoted once"
        );
        // silent far longer: the connection should be made again
        let ticks = s.run(Duration::from_secs(5));
        assert!(ticks.iter().any(|t| t.reconnect));
        // a new connection: nothing on it is lost
        s.est.on_connected(s.now, 2, 30 * MS);
        s.answering = true;
        let t = s.run(10 * MS).pop().expect("a tick");
        assert!(!t.dead);
        assert!(
            t.events.contains(&HealthEvent::Closed),
            "the old one closed"
        );
    }

    #[test]
    fn a_failed_probation_is_no_demotion() {
        let mut s = Sim::connected(30 * MS);
        // silent before it ever joined
        s.answering = false;
        let ticks = s.run(Duration::from_secs(2));
        assert!(ticks.iter().all(|t| !t.usable));
        assert_eq!(ticks.iter().map(|t| t.demoted).sum::<u64>(), 0);
    }

    #[test]
    fn a_closed_connection_is_dead_and_queues_nothing() {
        let mut s = Sim::connected(30 * MS);
        s.join();
        s.est.reserve(500_000, 0);
        s.est.carried(true, 500_000, 500_000);
        s.est.on_closed(s.now);
        s.now += 10 * MS;
        let t = s.est.tick(s.now, None);
        assert!(t.dead && !t.usable);
        assert!(t.events.contains(&HealthEvent::Closed));
        assert_eq!(t.demoted, 1, "closed while carrying traffic: a demotion");
        assert_eq!(s.est.unsent_at(0), 0);
    }

    #[test]
    fn a_collapse_reads_as_a_full_link_for_two_meter_windows() {
        let mut s = Sim::connected(20 * MS);
        s.join();
        // a thin stream: no window reads full by itself
        s.run(250 * MS);
        assert_eq!(s.est.full_rate(), None);
        s.est.on_collapse(s.now, 31_000.0);
        assert_eq!(s.est.full_rate(), Some(31_000.0));
        s.run(260 * MS);
        assert_eq!(
            s.est.full_rate(),
            Some(31_000.0),
            "held past a meter window"
        );
        s.run(500 * MS);
        assert_eq!(s.est.full_rate(), None, "not held for good");
    }
}
