//! Which quality each camera sends to the relay when the uplinks cannot carry them all: the
//! gateway's low-bandwidth mode, sans-IO.
//!
//! Each camera has a ladder of levels, best first: its main stream ([`Level::Full`]), its
//! second RTSP stream ([`Level::Substream`]), a low-bitrate rendition made on the gateway
//! when it has no second stream ([`Level::Transcode`]), its keyframes alone
//! ([`Level::Keyframes`]), and its audio alone ([`Level::Audio`]). The shell measures what
//! each level costs (bytes per second) and what the bond can give the stream class, and
//! feeds both in with `now`; the controller answers with level changes, each with its
//! cause.
//!
//! - **Down fast.** When the cameras' demand exceeds the capacity (with some link measured
//!   full: an estimate from congestion windows alone is no shortage), or the live media is
//!   more than [`LevelConfig::backlog_down`] behind, for [`LevelConfig::down_after`]
//!   ([`LevelConfig::backlog_after`] for a backlog):
//!   cameras step down, lowest priority first, until the demand fits within
//!   [`LevelConfig::fill`] of the capacity. A backlog with a capacity that seems to fit
//!   (the estimate lags a collapse) steps one rung. After any step down a backlog counts
//!   again only once it has cleared or after [`LevelConfig::settle`]: the queue the
//!   shortage built drains meanwhile, and another camera is not stepped down for it.
//! - **Up slowly.** The highest-priority camera whose next level fits steps up once the
//!   capacity has held that demand with [`LevelConfig::headroom`] to spare, and no
//!   backlog (a probe's own queue only puts the step off), for the up-hold, and the paths
//!   have shown it (see **Proof**), to the best level that has held so: each level's hold
//!   starts when it first fits, and is judged on the least capacity read since (one high
//!   reading after a lower level's long hold is no hold of full); the levels above keep
//!   their holds through a step, and the next step waits for the first one's
//!   [`LevelConfig::settle`]. The up-hold is
//!   [`LevelConfig::up_after`], doubled (up to [`LevelConfig::up_after_max`]) for each flap
//!   (a step down that undid a step up) in the last [`LevelConfig::flap_memory`], as a
//!   flapping link's probation grows: a marginal link whose capacity swings never holds
//!   its headroom long enough to be trusted, so the level does not oscillate with it.
//!   A flap speaks for the capacities held (for [`FLAP_HELD`]) between its step up and
//!   the step down: a capacity that has read more than [`FLAP_REACH`] times the highest
//!   of them all through the hold is the links back, not the swing, and waits the plain
//!   hold (measured: a step
//!   up on a collapsed 0.5 Mbit/s bond that failed made the return to full on 14 Mbit/s
//!   wait 20 s instead of 10).
//!   For [`LevelConfig::settle`] after a step up only a backlog steps down, not the
//!   capacity's estimate: a path's window grows to a higher demand over a few round
//!   trips, and meanwhile its full meter windows read what it carries, below the demand
//!   (measured: 4.15 Mbit/s read 1.9 s after a step up to the 4.16 Mbit/s main stream on
//!   two 7 Mbit/s links, and a step back down).
//! - **Outages hold.** While no path may carry the stream the levels stay, and after an
//!   outage of [`LevelConfig::settle`] or more, for `settle` after a path returns (the
//!   outage's queue drains, the fresh paths' windows grow). A shortage goes on counting
//!   across a shorter moment without a path (a collapsing bond's paths flicker), and a
//!   backlog that counted without a break since before the moment, or since its first
//!   [`LevelConfig::down_after`], steps down one rung when its hold is over, paths or not
//!   (a collapsed link's probes wait behind its queue, and its paths go silent just as
//!   the backlog shows the collapse). A clean cut's backlog passes its limit later in the
//!   moment, and holds; so does a capacity shortage counted before it, and a moment in
//!   the grace after a real outage (the backlog is that outage's queue). A backlog that
//!   is nearly at its limit when the paths go silent does pass it within the first
//!   `down_after`, and steps down.
//! - **Probing.** A link that carries only a thin stream shows little of what it can carry
//!   (a congestion window grows only when it is full), so after a collapse the capacity
//!   estimate stays near the low level's demand and never holds the higher one. When a
//!   camera is below the best level it may have, that level does not fit (or the paths
//!   have not shown it lately, see below), and there is no shortage, the controller asks
//!   the shell to probe ([`StreamLevels::take_probe`]):
//!   padding at the lowest priority for [`LevelConfig::probe_for`], as much as the paths
//!   take, so their windows grow to what they carry (WebRTC's congestion control probes
//!   before it steps up the same way). At most once per [`LevelConfig::probe_every`], and
//!   not within that of a step down (a collapse may still be under way).
//! - **Proof.** A window estimate is what a path may send, not what it carries: a thin
//!   stream's bursts grow windows the link never fills (measured in network namespaces: a
//!   4 Mbit/s stream on a 7 Mbit/s link with a 45 ms RTT held a 474 kB window, ten times
//!   its bandwidth-delay product, and read 84 Mbit/s; in a collapse to 0.25 Mbit/s the
//!   estimate read 144 Mbit/s and the level stepped up to full, then down again, and the
//!   flap doubled the return's hold). So a step up also needs the paths to have shown the
//!   higher demand with headroom ([`Measure::proof`]: what the paths delivered,
//!   acknowledged by the relay), in a reading taken wholly within the level's
//!   hold and no older than [`LevelConfig::proof_for`]; the controller probes for it
//!   while it is missing, as it probes for a low estimate.
//!   A probe whose readings are all in ([`READING_LAG`] after its end) without showing
//!   the level it was for starts over the hold of that level and of the camera's levels
//!   below it. A path a probe may not use ([`may_probe`]: backup links, links near their
//!   cap) counts what it delivered, not its window, and is not probed: a bond left with
//!   only such links keeps its cameras where they are until a probe may show more.
//! - **A probe's own queue.** On a collapsed link a probe's padding queues ahead of the live
//!   media (measured: backlogs of 0.4-0.5 s within a second of each probe on 0.25 Mbit/s
//!   links), so a backlog from a probe's start until [`READING_LAG`] after its end steps
//!   nothing down, nor lets anything step up; a shortage the meters measure still does,
//!   and so does a backlog in a moment without a usable path (see "Outages hold").
//!   Counted, it stepped the keyframes level back to audio inside a collapse after each
//!   step up (a flap), and when that came at the links' return it put off the next probe,
//!   and the return to full, by 5 s.
//! - **By hand.** An operator's override pins a camera's level until it is lifted (if the
//!   pinned level goes away, the camera falls back and returns to it when it comes back).
//! - **By rule.** A local action's ceiling holds a camera at a level or lower (the best
//!   level it has at or below the ceiling, else its lowest): a shortage still steps it
//!   further down, it never steps above the ceiling, an override wins, and once lifted the
//!   camera steps up as the capacity allows, after the usual hold.

use crate::path::{CapState, Tier};
use crate::scheduler::PathView;
use crate::TrafficClass;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A camera's level, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The camera's main stream.
    Full,
    /// The camera's second RTSP stream.
    Substream,
    /// A low-bitrate rendition made on the gateway.
    Transcode,
    /// The keyframes of the lowest video stream, and the audio.
    Keyframes,
    /// The audio, with a still picture refreshed every few seconds.
    Audio,
}

impl Level {
    /// Every level, best first.
    pub const ALL: [Level; 5] = [
        Level::Full,
        Level::Substream,
        Level::Transcode,
        Level::Keyframes,
        Level::Audio,
    ];

    /// Its name in config, metrics and status.
    pub fn name(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::Substream => "substream",
            Level::Transcode => "transcode",
            Level::Keyframes => "keyframes",
            Level::Audio => "audio",
        }
    }

    /// The level named `name`.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What each level of one camera costs, bytes per second; `None`: the camera has no such
/// level (no second stream, no audio) or it is not ready.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ladder(pub [Option<f64>; 5]);

impl Ladder {
    /// The cost of `level`, if the camera has it.
    pub fn cost(&self, level: Level) -> Option<f64> {
        self.0[level.index()]
    }

    /// The next level below `level` the camera has.
    fn below(&self, level: Level) -> Option<Level> {
        Level::ALL[level.index() + 1..]
            .iter()
            .copied()
            .find(|l| self.cost(*l).is_some())
    }

    /// The next level above `level` the camera has.
    fn above(&self, level: Level) -> Option<Level> {
        Level::ALL[..level.index()]
            .iter()
            .rev()
            .copied()
            .find(|l| self.cost(*l).is_some())
    }

    /// The best level the camera has no better than `ceiling`: `ceiling` itself, the next
    /// one below it, else the lowest it has above it.
    fn limit(&self, ceiling: Level) -> Option<Level> {
        if self.cost(ceiling).is_some() {
            return Some(ceiling);
        }
        self.below(ceiling).or_else(|| self.above(ceiling))
    }

    /// The cost at `level`, or at the nearest level below it the camera has (a level it
    /// lost, say a substream that went away, costs what the camera falls back to).
    fn cost_at(&self, level: Level) -> f64 {
        self.cost(level)
            .or_else(|| self.below(level).and_then(|l| self.cost(l)))
            .unwrap_or(0.0)
    }
}

/// What the paths can give the stream class, bytes per second, from each path's view and
/// the rate it measured in its last meter window if that window was queued all through (a
/// full link shows its real rate there within a quarter second, while its congestion
/// window still holds what it sent before). None while no path may carry the stream: an
/// outage, whose parts wait for the backfill, says nothing of the capacity.
pub fn capacity(paths: &[(PathView, Option<f64>)]) -> Option<f64> {
    let usable: Vec<_> = paths
        .iter()
        .filter(|(v, _)| v.allows(TrafficClass::Stream))
        .collect();
    (!usable.is_empty()).then(|| {
        usable
            .iter()
            .map(|(v, full)| full.unwrap_or(v.rate_up))
            .sum()
    })
}

/// Whether a probe may use path `v`: usable, allowed the stream, and neither a backup link
/// (whose bytes cost) nor a link near its data cap.
pub fn may_probe(v: &PathView) -> bool {
    v.allows(TrafficClass::Stream) && v.tier != Tier::Backup && v.cap == CapState::Normal
}

/// What the paths that may carry the stream have shown they carry, bytes per second, from
/// each path's view and what it delivered lately (what the relay acknowledged per second,
/// `crate::path_estimate::PathEstimate::delivered_up`; nothing while it has no reading
/// yet): their sum. A path no probe may use ([`may_probe`]) counts what it delivered too,
/// not its window: that estimate is what the proof guards against, and a backup link or
/// one near its cap is not spent on showing more. See [`Measure::proof`].
pub fn proof(paths: &[(PathView, Option<f64>)]) -> f64 {
    paths
        .iter()
        .filter(|(v, _)| v.allows(TrafficClass::Stream))
        .map(|(_, d)| d.unwrap_or(0.0))
        .sum()
}

/// Whether some path that may carry the stream was queued all through its last meter
/// window (its rate there is what the link carries).
pub fn saturated(paths: &[(PathView, Option<f64>)]) -> bool {
    paths
        .iter()
        .any(|(v, full)| v.allows(TrafficClass::Stream) && full.is_some())
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct LevelConfig {
    /// A shortage of capacity (demand above it) must last this long before a step down.
    pub down_after: Duration,
    /// Live media waiting at the gateway longer than this is a shortage.
    pub backlog_down: Duration,
    /// A backlog's shortage must last this long before a step down: three looks in a row
    /// of the gateway's 50 ms tick (four when one comes late; measured with 150 ms, a look
    /// 149 ms after the first missed the step by a millisecond and the step waited 50 ms
    /// more). The backlog's limit is a time already: what the hold adds is that one look
    /// alone, at a piece about to be answered, is no shortage.
    pub backlog_after: Duration,
    /// A step down aims for a demand of at most this share of the capacity.
    pub fill: f64,
    /// After a step down, a backlog counts again once it has cleared or after this long;
    /// after an outage, nothing changes for capacity for this long; after a step up, only a
    /// backlog steps down for this long.
    pub settle: Duration,
    /// A step up needs capacity of the higher demand times one plus this.
    pub headroom: f64,
    /// How long the headroom must hold before the first step up.
    pub up_after: Duration,
    /// The longest up-hold, after repeated flapping.
    pub up_after_max: Duration,
    /// How long a flap (a step down that undid a step up) doubles the up-hold.
    pub flap_memory: Duration,
    /// The least time between the starts of two probes.
    pub probe_every: Duration,
    /// How long a probe lasts.
    pub probe_for: Duration,
    /// How long the paths' showing a level's demand stands as its proof: a level held
    /// longer (a flap's doubled hold) must be shown again, as the links may have collapsed
    /// meanwhile with nothing else to tell (a thin stream fills no meter window).
    pub proof_for: Duration,
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self {
            down_after: Duration::from_millis(150),
            backlog_down: Duration::from_millis(300),
            backlog_after: Duration::from_millis(100),
            fill: 0.8,
            settle: Duration::from_secs(2),
            headroom: 0.25,
            up_after: Duration::from_secs(10),
            up_after_max: Duration::from_secs(160),
            flap_memory: Duration::from_secs(600),
            probe_every: Duration::from_secs(5),
            probe_for: Duration::from_secs(1),
            proof_for: Duration::from_secs(10),
        }
    }
}

/// A flap doubles the up-hold only while the capacity reads at most this many times the
/// highest it read between the flap's step up and step down (see the module docs): a
/// marginal link's good phases read about the same each time, a return from a collapse
/// many times more.
pub const FLAP_REACH: f64 = 2.0;

/// How long after a moment every reading of what the paths delivered covers only time after
/// it: a reading spans two meter windows of 250 ms and is taken at the close of the second
/// (`crate::path_estimate::PathEstimate::delivered_up`). So the readings that cover part
/// of a probe are all in this long after its end, and one taken this long after a hold
/// began shows nothing from before it.
pub const READING_LAG: Duration = Duration::from_millis(750);

/// What a flap keeps of a reading is what the capacity held for this long (the least of
/// the readings in it): one meter window's spike is not what the links carried (traced
/// in a collapse: one 50 ms reading of 22.9 Mbit/s among readings of 3-9).
pub const FLAP_HELD: Duration = Duration::from_secs(1);

/// Drops the entries of `q` (oldest first) that are `age` old or older at `now`.
fn forget_older(q: &mut VecDeque<(Instant, f64)>, now: Instant, age: Duration) {
    while q
        .front()
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= age)
    {
        q.pop_front();
    }
}

/// A probe the shell should send (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// The capacity a step up to the best level allowed needs, bytes per second.
    pub rate: f64,
    /// How long.
    pub span: Duration,
}

/// What the controller sees at one step.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    /// What the bond can give the stream class, bytes per second (None: no path may carry
    /// it, an outage: the levels hold).
    pub capacity: Option<f64>,
    /// How long the oldest live media has waited at the gateway.
    pub backlog: Duration,
    /// Some path carrying the stream was measured full ([`saturated`]): the capacity is
    /// what the links carry, not only an estimate from their windows.
    pub saturated: bool,
    /// What the paths have shown they carry lately ([`proof`]), bytes per second: a step
    /// up needs it to reach the higher demand with headroom during the level's hold (see
    /// the module docs). None: nothing counts what the paths deliver (a congestion
    /// controller other than `LowDelay`); the capacity alone decides.
    pub proof: Option<f64>,
    /// Some path that may carry the stream may be probed ([`may_probe`]): without one no
    /// probe is asked for (none could be sent).
    pub probe_paths: bool,
}

/// Why a level changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// The cameras' demand exceeded the capacity (bytes per second).
    Shortage {
        /// Demand before the change.
        demand: f64,
        /// The capacity.
        capacity: f64,
    },
    /// Live media waited at the gateway this long.
    Backlog(Duration),
    /// The capacity held the higher demand with headroom for this long.
    Headroom {
        /// Demand after the change.
        demand: f64,
        /// The capacity.
        capacity: f64,
        /// How long it held.
        held: Duration,
        /// The most the paths showed they carry during the hold ([`Measure::proof`]), if
        /// that is measured.
        carried: Option<f64>,
    },
    /// An operator set it.
    Override,
    /// A local action holds the camera at this level or lower.
    Ceiling,
    /// The camera lost the level it was on (a second stream that went away).
    Unavailable,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mbps = |b: f64| b * 8.0 / 1e6;
        match self {
            Cause::Shortage { demand, capacity } => write!(
                f,
                "demand {:.2} Mbit/s above capacity {:.2} Mbit/s",
                mbps(*demand),
                mbps(*capacity)
            ),
            Cause::Backlog(d) => write!(f, "live media waited {} ms at the gateway", d.as_millis()),
            Cause::Headroom {
                demand,
                capacity,
                held,
                carried,
            } => {
                write!(
                    f,
                    "capacity {:.2} Mbit/s held {:.2} Mbit/s with headroom for {} s",
                    mbps(*capacity),
                    mbps(*demand),
                    held.as_secs()
                )?;
                match carried {
                    Some(d) => write!(f, ", the links carried {:.2} Mbit/s", mbps(*d)),
                    None => Ok(()),
                }
            }
            Cause::Override => f.write_str("set by an operator"),
            Cause::Ceiling => f.write_str("held down by a local action"),
            Cause::Unavailable => f.write_str("the level is not available"),
        }
    }
}

/// One camera's level change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The camera (its index).
    pub camera: usize,
    /// The level it left.
    pub from: Level,
    /// The level it is on now.
    pub to: Level,
    /// Why.
    pub cause: Cause,
}

#[derive(Debug, Clone)]
struct Camera {
    priority: i32,
    level: Level,
    pinned: Option<Level>,
    /// The best level a local action allows.
    ceiling: Option<Level>,
    ladder: Ladder,
    /// Levels that have had a cost: one without a cost now is lost, not still starting.
    seen: [bool; 5],
}

impl Camera {
    /// Where a camera above its ceiling goes (none while pinned: the override wins).
    fn over_ceiling(&self) -> Option<Level> {
        if self.pinned.is_some() {
            return None;
        }
        let limit = self.ladder.limit(self.ceiling?)?;
        (self.level < limit).then_some(limit)
    }

    /// Moves camera number `camera` (this one) to `to`.
    fn change(&mut self, camera: usize, to: Level, cause: Cause) -> Change {
        let ch = Change {
            camera,
            from: self.level,
            to,
            cause,
        };
        self.level = to;
        ch
    }
}

/// The levels of a gateway's cameras.
#[derive(Debug)]
pub struct StreamLevels {
    cfg: LevelConfig,
    cameras: Vec<Camera>,
    /// Since when the shortage has lasted.
    short_since: Option<Instant>,
    /// Since when the backlog has counted without a break (what a moment without a path
    /// may step down on; a capacity shortage may not).
    backlog_since: Option<Instant>,
    /// A backlog does not count before this (after a step down, until it clears).
    backlog_ignored_until: Option<Instant>,
    /// Since when no path may carry the stream.
    outage_since: Option<Instant>,
    /// Nothing changes for capacity before this (after an outage).
    grace_until: Option<Instant>,
    /// After a step up, the capacity's estimate does not count before this (a backlog
    /// does): the paths' windows grow to the higher demand meanwhile.
    up_settle_until: Option<Instant>,
    /// The levels above a camera's that the capacity has held with headroom: for each,
    /// since when, and the lowest capacity read since (the hold is judged on it, not on one
    /// tick's reading). Each level has its own start: a collapse's readings that held a
    /// small step are no evidence for the big one the links' return allows, and one high
    /// reading after a small step's long hold is none for a step to full.
    headroom: Option<Headroom>,
    /// If the controller's last change was a step up: the highest capacity held (for
    /// [`FLAP_HELD`]) since (what a flap that undoes it proves wrong).
    last_up: Option<f64>,
    /// The capacity readings of the last [`FLAP_HELD`].
    recent: VecDeque<(Instant, f64)>,
    /// The flaps of the last `flap_memory`: when, and the highest capacity held between
    /// their step up and step down.
    flaps: VecDeque<(Instant, f64)>,
    /// The last probe asked for.
    last_probe: Option<ProbeSent>,
    /// When the last step down happened.
    last_down: Option<Instant>,
    /// A probe asked for and not taken yet.
    probe: Option<Probe>,
    changes: u64,
}

impl StreamLevels {
    /// Cameras with these priorities (higher steps down later and up sooner), all at
    /// [`Level::Full`].
    pub fn new(cfg: LevelConfig, priorities: &[i32]) -> Self {
        let mut me = Self {
            cfg,
            cameras: Vec::new(),
            short_since: None,
            backlog_since: None,
            backlog_ignored_until: None,
            outage_since: None,
            grace_until: None,
            up_settle_until: None,
            headroom: None,
            last_up: None,
            recent: VecDeque::new(),
            flaps: VecDeque::new(),
            last_probe: None,
            last_down: None,
            probe: None,
            changes: 0,
        };
        for &p in priorities {
            me.add(p);
        }
        me
    }

    /// Adds a camera (one that appeared later: an encoder pushing to a new name) at
    /// [`Level::Full`]; returns its index.
    pub fn add(&mut self, priority: i32) -> usize {
        self.cameras.push(Camera {
            priority,
            level: Level::Full,
            pinned: None,
            ceiling: None,
            ladder: Ladder::default(),
            seen: [false; 5],
        });
        self.cameras.len() - 1
    }

    /// Camera `camera`'s level.
    pub fn level(&self, camera: usize) -> Option<Level> {
        self.cameras.get(camera).map(|c| c.level)
    }

    /// Every camera's level, in order.
    pub fn levels(&self) -> Vec<Level> {
        self.cameras.iter().map(|c| c.level).collect()
    }

    /// Camera `camera`'s override, if one is set.
    pub fn pinned(&self, camera: usize) -> Option<Level> {
        self.cameras.get(camera).and_then(|c| c.pinned)
    }

    /// Level changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// How long a step up must wait on a capacity that has read at least `capacity` all
    /// through: each flap whose highest reading was at least 1/[`FLAP_REACH`] of it
    /// doubles the plain hold.
    pub fn up_hold(&self, capacity: f64) -> Duration {
        let doublings = self
            .flaps
            .iter()
            .filter(|(_, trusted)| capacity <= trusted * FLAP_REACH)
            .count()
            .min(16) as u32;
        (self.cfg.up_after * 2u32.pow(doublings)).min(self.cfg.up_after_max)
    }

    /// Pins camera `camera` at `level` (None: back to automatic, from where it is).
    pub fn set_override(&mut self, camera: usize, level: Option<Level>) -> Option<Change> {
        let c = self.cameras.get_mut(camera)?;
        c.pinned = level;
        let to = level?;
        if to == c.level {
            return None;
        }
        let ch = c.change(camera, to, Cause::Override);
        self.changes += 1;
        self.headroom = None;
        Some(ch)
    }

    /// Holds camera `camera` at `level` or lower (None: lifted; the camera steps up again
    /// as the capacity allows, not at once). An override wins over it.
    pub fn set_ceiling(&mut self, camera: usize, level: Option<Level>) -> Option<Change> {
        let c = self.cameras.get_mut(camera)?;
        c.ceiling = level;
        let to = c.over_ceiling()?;
        let ch = c.change(camera, to, Cause::Ceiling);
        self.changes += 1;
        self.headroom = None;
        Some(ch)
    }

    /// Camera `camera`'s ceiling, if an action set one.
    pub fn ceiling(&self, camera: usize) -> Option<Level> {
        self.cameras.get(camera).and_then(|c| c.ceiling)
    }

    /// The cameras' demand at their current levels, bytes per second.
    pub fn demand(&self) -> f64 {
        self.cameras.iter().map(|c| c.ladder.cost_at(c.level)).sum()
    }

    /// One step: the cost of every camera's levels (in order) and what the bond gives,
    /// at `now`. Returns the changes it made.
    pub fn update(&mut self, now: Instant, ladders: &[Ladder], m: Measure) -> Vec<Change> {
        let mut out = Vec::new();
        for (i, (c, l)) in self.cameras.iter_mut().zip(ladders).enumerate() {
            c.ladder = *l;
            for lv in Level::ALL {
                c.seen[lv.index()] |= c.ladder.cost(lv).is_some();
            }
            // a level the camera lost (its second stream went away): the next one down, or
            // up when none is below (a level not measured yet, a stream still starting, is
            // not lost); a pinned camera goes back to its pin when the level returns
            let pin = c
                .pinned
                .filter(|p| *p != c.level && c.ladder.cost(*p).is_some());
            let lost = c.ladder.cost(c.level).is_none() && c.seen[c.level.index()];
            let to = match (pin, lost) {
                (Some(p), _) => Some((p, Cause::Override)),
                (None, true) => c
                    .ladder
                    .below(c.level)
                    .or_else(|| c.ladder.above(c.level))
                    .map(|l| (l, Cause::Unavailable)),
                (None, false) => c.over_ceiling().map(|l| (l, Cause::Ceiling)),
            };
            if let Some((to, cause)) = to {
                out.push(c.change(i, to, cause));
            }
        }
        forget_older(&mut self.flaps, now, self.cfg.flap_memory);
        let Some(capacity) = m.capacity else {
            // an outage: its parts wait for the backfill and say nothing of what the links
            // carry. A moment without a usable path (both paths of a collapsing bond
            // flicker, their probes stuck behind the collapsed queues) is not one: a
            // shortage goes on counting across it; a backlog that counted before it
            // without a break, or from its first `down_after`, steps down one rung when
            // its hold is over (measured: both paths of a collapse went silent as its
            // backlog passed 300 ms, and the step waited for the next look with a path,
            // 200 ms later). A clean cut's backlog passes its limit later in the moment,
            // and a capacity shortage counted before it steps nothing here: they wait for
            // a path. Nothing counts in the grace after a real outage (its queue drains).
            let since = *self.outage_since.get_or_insert(now);
            let in_grace = self.grace_until.is_some_and(|t| now < t);
            let backlog = !in_grace && self.backlog_counts(m.backlog, now);
            if !backlog {
                self.backlog_since = None;
            } else if now.saturating_duration_since(since) < self.cfg.down_after {
                self.backlog_since.get_or_insert(now);
                self.short_since.get_or_insert(now);
            }
            if let Some(b) = self.backlog_since {
                if now.saturating_duration_since(b) >= self.cfg.backlog_after {
                    let down = self.step_down_one(Cause::Backlog(m.backlog));
                    out.extend(self.took_step(now, down));
                }
            }
            self.headroom = None;
            self.changes += out.len() as u64;
            return out;
        };
        self.recent.push_back((now, capacity));
        forget_older(&mut self.recent, now, FLAP_HELD);
        let held = self.held().unwrap_or(capacity);
        if let Some(trusted) = &mut self.last_up {
            *trusted = trusted.max(held);
        }
        if let Some(t) = self.outage_since.take() {
            if now.saturating_duration_since(t) >= self.cfg.settle {
                // after a real outage the queue drains and the fresh paths' windows grow
                // for a while before anything counts again
                self.grace_until = Some(now + self.cfg.settle);
                self.short_since = None;
                self.backlog_since = None;
                self.backlog_ignored_until = None;
            }
        }
        if self.grace_until.is_some_and(|t| now < t) {
            self.changes += out.len() as u64;
            return out;
        }
        // after a step down the queue it leaves takes a while to drain (and the old source
        // stays on air until the new one's keyframe): a backlog counts again once it has
        // cleared, or after `settle`
        if m.backlog <= self.cfg.backlog_down {
            self.backlog_ignored_until = None;
        }
        let demand = self.demand();
        // a shortage needs evidence: a link measured full, or the backlog below. A window
        // estimate alone is none: a path carrying a thin stream keeps a small window, and
        // its estimate then reads below a demand the stream shows it carries (measured:
        // 0.31 Mbit/s read for the 0.34 Mbit/s substream on links back at 7 Mbit/s, and a
        // step down)
        let over =
            demand > capacity && m.saturated && self.up_settle_until.is_none_or(|t| now >= t);
        // a backlog while a probe's queue drains is that queue: it steps nothing, down or up
        let backlog = self.backlog_counts(m.backlog, now);
        let probe_queue = backlog && self.probing(now);
        let backlog = backlog && !probe_queue;
        if backlog {
            self.backlog_since.get_or_insert(now);
        } else {
            self.backlog_since = None;
        }
        if over || backlog {
            self.headroom = None;
            let since = *self.short_since.get_or_insert(now);
            let hold = if backlog {
                self.cfg.backlog_after
            } else {
                self.cfg.down_after
            };
            if now.saturating_duration_since(since) >= hold {
                let down = if over {
                    self.step_down(
                        capacity * self.cfg.fill,
                        Cause::Shortage { demand, capacity },
                    )
                } else {
                    // the capacity seems to fit (its estimate lags a collapse): one rung
                    self.step_down_one(Cause::Backlog(m.backlog))
                };
                out.extend(self.took_step(now, down));
            }
        } else {
            self.short_since = None;
            out.extend(self.try_up(now, capacity, m.proof, !probe_queue));
            if out.is_empty() && m.probe_paths {
                self.want_probe(now, capacity);
            }
        }
        self.changes += out.len() as u64;
        out
    }

    /// A backlog of `backlog` is a shortage at `now`.
    fn backlog_counts(&self, backlog: Duration, now: Instant) -> bool {
        backlog > self.cfg.backlog_down && self.backlog_ignored_until.is_none_or(|t| now >= t)
    }

    /// Whether a probe's queue may still be draining at `now`: from its start until
    /// [`READING_LAG`] after its end (see the module docs).
    fn probing(&self, now: Instant) -> bool {
        self.last_probe
            .is_some_and(|p| now < p.read_at(self.cfg.probe_for))
    }

    /// The probe asked for since the last call, if any.
    pub fn take_probe(&mut self) -> Option<Probe> {
        self.probe.take()
    }

    /// Asks for a probe when a camera below the best level it may have cannot step up on
    /// `capacity`, or the paths have not shown that level's demand during its hold lately
    /// (see the module docs): for the demand of the highest-priority such camera at that
    /// best level, with headroom.
    fn want_probe(&mut self, now: Instant, capacity: f64) {
        // not while a collapse may still be under way (the last step down is recent)
        let recent = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.probe_every)
        };
        if recent(self.last_probe.map(|p| p.start)) || recent(self.last_down) {
            return;
        }
        let total = self.demand();
        let want = self.by_priority().into_iter().rev().find_map(|i| {
            let c = &self.cameras[i];
            let best = match c.ceiling {
                Some(ce) => c.ladder.limit(ce)?,
                None => Level::ALL
                    .into_iter()
                    .find(|l| c.ladder.cost(*l).is_some())?,
            };
            (best < c.level).then(|| {
                let rate = (total - c.ladder.cost_at(c.level) + c.ladder.cost_at(best))
                    * (1.0 + self.cfg.headroom);
                (i, best, rate)
            })
        });
        let Some((camera, level, rate)) = want else {
            return;
        };
        if rate > capacity || !self.shown(camera, level, now) {
            self.last_probe = Some(ProbeSent {
                start: now,
                camera,
                level,
            });
            self.probe = Some(Probe {
                rate,
                span: self.cfg.probe_for,
            });
        }
    }

    /// Whether the paths have shown `level`'s demand for camera `camera` with headroom during
    /// its hold, within [`LevelConfig::proof_for`] of `now`.
    fn shown(&self, camera: usize, level: Level, now: Instant) -> bool {
        self.headroom.as_ref().is_some_and(|h| {
            h.camera == camera
                && h.levels
                    .iter()
                    .any(|l| l.level == level && l.shown_within(now, self.cfg.proof_for))
        })
    }

    /// The cameras that may change by themselves, lowest priority first.
    fn by_priority(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.cameras.len())
            .filter(|&i| self.cameras[i].pinned.is_none())
            .collect();
        order.sort_by_key(|&i| (self.cameras[i].priority, std::cmp::Reverse(i)));
        order
    }

    /// Steps cameras down, lowest priority first, until the demand is at most `target`.
    fn step_down(&mut self, target: f64, cause: Cause) -> Vec<Change> {
        let mut out = Vec::new();
        for i in self.by_priority() {
            while self.demand() > target {
                let c = &mut self.cameras[i];
                let Some(to) = c.ladder.below(c.level) else {
                    break;
                };
                out.push(c.change(i, to, cause));
            }
        }
        merge(out)
    }

    /// The least capacity read in the last [`FLAP_HELD`]: what it held.
    fn held(&self) -> Option<f64> {
        self.recent.iter().map(|(_, c)| *c).reduce(f64::min)
    }

    /// Steps the lowest-priority camera that can go lower down one rung.
    fn step_down_one(&mut self, cause: Cause) -> Vec<Change> {
        for i in self.by_priority() {
            let c = &mut self.cameras[i];
            if let Some(to) = c.ladder.below(c.level) {
                return vec![c.change(i, to, cause)];
            }
        }
        Vec::new()
    }

    /// A shortage's hold is over and `down` is the step it took (none if nothing could
    /// go lower): the shortage starts over. Returns `down`.
    fn took_step(&mut self, now: Instant, down: Vec<Change>) -> Vec<Change> {
        if !down.is_empty() {
            self.on_down(now);
        }
        self.short_since = None;
        self.backlog_since = None;
        down
    }

    fn on_down(&mut self, now: Instant) {
        self.last_down = Some(now);
        if let Some(trusted) = self.last_up.take() {
            self.flaps.push_back((now, trusted));
        }
        self.headroom = None;
        self.backlog_ignored_until = Some(now + self.cfg.settle);
    }

    /// Steps a camera up once the capacity has held a higher demand with headroom for the
    /// up-hold and the paths have shown it (`proof`, see the module docs): the
    /// highest-priority camera whose next level fits, to the highest level whose hold is
    /// over and shown (each level's hold starts when it first fits). `step`: false, the
    /// holds go on but nothing steps (a probe's queue holds the live media back).
    fn try_up(
        &mut self,
        now: Instant,
        capacity: f64,
        proof: Option<f64>,
        step: bool,
    ) -> Option<Change> {
        let total = self.demand();
        let headroom = 1.0 + self.cfg.headroom;
        // (camera, demand of the others, the levels above its own that fit, nearest first)
        // of the first camera, highest priority first, with a higher level that fits
        let pick = self.by_priority().into_iter().rev().find_map(|i| {
            let c = &self.cameras[i];
            let others = total - c.ladder.cost_at(c.level);
            let fits = |l: Level| capacity >= (others + c.ladder.cost_at(l)) * headroom;
            let allowed = |u: Level| c.ceiling.is_none_or(|ce| Some(u) >= c.ladder.limit(ce));
            let mut fitting = Vec::new();
            let mut l = c.level;
            while let Some(up) = c.ladder.above(l).filter(|u| fits(*u) && allowed(*u)) {
                fitting.push(up);
                l = up;
            }
            (!fitting.is_empty()).then_some((i, others, fitting))
        });
        let Some((i, others, fitting)) = pick else {
            self.headroom = None;
            return None;
        };
        let before = match self.headroom.take() {
            Some(h) if h.camera == i => h.levels,
            _ => Vec::new(),
        };
        let ladder = self.cameras[i].ladder;
        // a probe for this camera whose readings are all in
        let failed_probe = self
            .last_probe
            .filter(|p| p.camera == i && now >= p.read_at(self.cfg.probe_for));
        let levels: Vec<HeldLevel> = fitting
            .into_iter()
            .map(|level| {
                let mut h = match before.iter().find(|h| h.level == level) {
                    Some(h) => HeldLevel {
                        low: h.low.min(capacity),
                        ..*h
                    },
                    None => HeldLevel::new(level, now, capacity),
                };
                // a probe that covered this level's hold, was for it or a level above, and
                // did not show it: the estimate is wrong there, and the hold starts over
                if let Some(p) = failed_probe {
                    // its first reading within the hold came before the probe's end
                    let covered = h.since + READING_LAG <= p.start + self.cfg.probe_for;
                    if covered && level >= p.level && h.shown.is_none_or(|t| t < p.start) {
                        h = HeldLevel::new(level, now, capacity);
                    }
                }
                match proof {
                    // nothing counts what the paths deliver: the estimate is all there is
                    None => h.shown = Some(now),
                    // a reading wholly within the hold: the paths carried this much then
                    Some(p) if now >= h.since + READING_LAG => {
                        if p >= (others + ladder.cost_at(level)) * headroom {
                            h.shown = Some(now);
                        }
                        h.carried = Some(h.carried.map_or(p, |c| c.max(p)));
                    }
                    Some(_) => {}
                }
                h
            })
            .collect();
        // the best level whose hold is over and shown lately; none while the last step up
        // settles
        let settled = step && self.up_settle_until.is_none_or(|t| now >= t);
        let ready = settled
            .then(|| {
                levels.iter().rev().find(|h| {
                    h.shown_within(now, self.cfg.proof_for)
                        && now.saturating_duration_since(h.since) >= self.up_hold(h.low)
                })
            })
            .flatten()
            .copied();
        let Some(ready) = ready else {
            self.headroom = Some(Headroom { camera: i, levels });
            return None;
        };
        let cause = Cause::Headroom {
            demand: others + self.cameras[i].ladder.cost_at(ready.level),
            capacity,
            held: now.saturating_duration_since(ready.since),
            carried: ready.carried,
        };
        let ch = self.cameras[i].change(i, ready.level, cause);
        self.last_up = Some(self.held().unwrap_or(capacity));
        self.up_settle_until = Some(now + self.cfg.settle);
        // the levels above keep their holds: a return whose first reading allowed a small
        // step and a later one full steps to full on the later one's hold
        let higher: Vec<HeldLevel> = levels
            .into_iter()
            .filter(|h| h.level < ready.level)
            .collect();
        self.headroom = (!higher.is_empty()).then_some(Headroom {
            camera: i,
            levels: higher,
        });
        Some(ch)
    }
}

/// The levels above one camera's that the capacity holds with headroom, nearest first.
#[derive(Debug)]
struct Headroom {
    camera: usize,
    levels: Vec<HeldLevel>,
}

/// A level the capacity has held with headroom since `since`, at least `low`; when the
/// paths last showed its demand with headroom in a reading within the hold (with nothing
/// to count what they deliver: at every look), and the most they showed in one.
#[derive(Debug, Clone, Copy)]
struct HeldLevel {
    level: Level,
    since: Instant,
    low: f64,
    shown: Option<Instant>,
    carried: Option<f64>,
}

impl HeldLevel {
    /// A hold of `level` from `now`, at `capacity`, not shown yet.
    fn new(level: Level, now: Instant, capacity: f64) -> Self {
        Self {
            level,
            since: now,
            low: capacity,
            shown: None,
            carried: None,
        }
    }

    /// Whether the paths showed the level within `age` of `now`.
    fn shown_within(&self, now: Instant, age: Duration) -> bool {
        self.shown
            .is_some_and(|t| now.saturating_duration_since(t) <= age)
    }
}

/// A probe the controller asked for: when, and for which camera's level.
#[derive(Debug, Clone, Copy)]
struct ProbeSent {
    start: Instant,
    camera: usize,
    level: Level,
}

impl ProbeSent {
    /// When every reading that covers part of a probe lasting `span` is in, and its queue
    /// has drained ([`READING_LAG`] after its end).
    fn read_at(&self, span: Duration) -> Instant {
        self.start + span + READING_LAG
    }
}

/// One change per camera: a camera stepped down several rungs at once is one change, from
/// its first level to its last.
fn merge(changes: Vec<Change>) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for ch in changes {
        match out.iter_mut().find(|c| c.camera == ch.camera) {
            Some(c) => c.to = ch.to,
            None => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const MBIT: f64 = 125_000.0;

    /// A 4 Mbit/s camera with a 0.8 Mbit/s second stream, 0.3 Mbit/s of keyframes and
    /// 0.1 Mbit/s of audio.
    fn with_sub() -> Ladder {
        Ladder([
            Some(4.0 * MBIT),
            Some(0.8 * MBIT),
            None,
            Some(0.3 * MBIT),
            Some(0.1 * MBIT),
        ])
    }

    /// The same camera without a second stream, transcoded to 0.6 Mbit/s.
    fn transcoded() -> Ladder {
        Ladder([
            Some(4.0 * MBIT),
            None,
            Some(0.6 * MBIT),
            Some(0.3 * MBIT),
            Some(0.1 * MBIT),
        ])
    }

    struct Sim {
        levels: StreamLevels,
        ladders: Vec<Ladder>,
        now: Instant,
        changes: Vec<(Duration, Change)>,
        start: Instant,
    }

    impl Sim {
        fn new(ladders: Vec<Ladder>, priorities: &[i32]) -> Self {
            let now = Instant::now();
            Self {
                levels: StreamLevels::new(LevelConfig::default(), priorities),
                ladders,
                now,
                changes: Vec::new(),
                start: now,
            }
        }

        /// Runs for `d` in 50 ms steps with the capacity and backlog `f` gives at each
        /// (from the time and the cameras' demand).
        /// Runs `d` of links back at 14 Mbit/s; the first change must be to full: how long
        /// after `since` (from the start) it came.
        fn back_to_full_after(&mut self, d: Duration, since: Duration) -> Duration {
            self.changes.clear();
            self.run(d, |_, _| (14.0 * MBIT, Duration::ZERO));
            let (at, ch) = *self.changes.first().expect("a change");
            assert_eq!(ch.to, Level::Full, "{:?}", self.changes);
            at - since
        }

        /// A camera without a second stream after a collapse to 0.12 Mbit/s at 1 s: 0.45
        /// Mbit/s holds the keyframes (0.3 x 1.25), and a dip to 0.25 for a second at 15 s
        /// undoes that step up (a flap at 0.45).
        fn flapped_at_045() -> Self {
            let mut s = Sim::new(vec![transcoded()], &[0]);
            s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
            s.run(Duration::from_secs(1), |_, _| (0.12 * MBIT, Duration::ZERO));
            s.run(Duration::from_secs(13), |_, _| {
                (0.45 * MBIT, Duration::ZERO)
            });
            s.run(Duration::from_secs(1), |_, _| (0.25 * MBIT, Duration::ZERO));
            s
        }

        /// One look 50 ms on: the changes it made.
        fn look(
            &mut self,
            capacity: Option<f64>,
            backlog: Duration,
            saturated: bool,
        ) -> Vec<Change> {
            self.now += 50 * MS;
            let m = Measure {
                capacity,
                backlog,
                saturated,
                proof: None,
                probe_paths: true,
            };
            self.levels.update(self.now, &self.ladders, m)
        }

        fn run(&mut self, d: Duration, f: impl Fn(Duration, f64) -> (f64, Duration)) {
            let end = self.now + d;
            while self.now < end {
                let at = self.now + 50 * MS - self.start;
                let (capacity, backlog) = f(at, self.levels.demand());
                for c in self.look(Some(capacity), backlog, true) {
                    self.changes.push((at, c));
                }
            }
        }
    }

    #[test]
    fn a_collapse_steps_down_within_half_a_second_and_returns_after_the_hold() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(5), |_, _| (14.0 * MBIT, Duration::ZERO));
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        // 14 -> 0.5 Mbit/s: the substream (0.8) does not fit 0.4, keyframes (0.3) do
        s.run(Duration::from_secs(20), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        let (at, ch) = s.changes[0];
        assert!(
            at - Duration::from_secs(5) <= 500 * MS,
            "engaged after {at:?}"
        );
        assert_eq!((ch.from, ch.to), (Level::Full, Level::Keyframes));
        assert!(matches!(ch.cause, Cause::Shortage { .. }));
        // capacity back: after the hold, to the highest level it holds with headroom
        s.changes.clear();
        s.run(Duration::from_secs(30), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| (c.from, c.to)).collect();
        assert_eq!(steps, vec![(Level::Keyframes, Level::Full)]);
        let first = s.changes[0].0 - Duration::from_secs(25);
        assert!(first >= Duration::from_secs(10) && first <= Duration::from_millis(10_100));
        assert_eq!(s.levels.level(0), Some(Level::Full));
    }

    #[test]
    fn a_thin_stream_probes_for_the_best_level_and_returns_to_it() {
        // the estimate of links carrying a thin stream reads a little above the demand
        // until a probe fills them; then it reads what they carry (14 Mbit/s, or 0.5
        // while collapsed)
        let mut levels = StreamLevels::new(LevelConfig::default(), &[0]);
        let ladders = vec![with_sub()];
        let t0 = Instant::now();
        let mut probes = Vec::new();
        let mut probed_until: Option<Instant> = None;
        let mut filled = false;
        let mut ups = Vec::new();
        for step in 1..=1200u64 {
            let now = t0 + 50 * MS * step as u32;
            let link = if step * 50 < 20_000 { 0.5 } else { 14.0 } * MBIT;
            let probing = probed_until.is_some_and(|t| now < t);
            filled |= probing && link > 1.0 * MBIT;
            let capacity = if probing || filled {
                link
            } else {
                (levels.demand() * 1.3).min(link)
            };
            let m = Measure {
                capacity: Some(capacity),
                backlog: Duration::ZERO,
                saturated: probing || link < 1.0 * MBIT,
                proof: None,
                probe_paths: true,
            };
            for c in levels.update(now, &ladders, m) {
                if c.to < c.from {
                    ups.push((now - t0, c.to));
                }
            }
            if let Some(p) = levels.take_probe() {
                assert_eq!(
                    p.rate,
                    4.0 * MBIT * 1.25,
                    "for the main stream, with headroom"
                );
                probes.push(now - t0);
                probed_until = Some(now + p.span);
            }
        }
        // collapsed for 20 s: the first probe 5 s after the step down, then 5 s apart, none
        // finding room; back: the next probe (within 5 s) finds it, and the level is full
        // after the up-hold
        assert!(probes[0] >= Duration::from_secs(5), "{probes:?}");
        assert!(probes.len() >= 4, "{probes:?}");
        assert!(probes
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_secs(5)));
        assert_eq!(ups.last().map(|u| u.1), Some(Level::Full), "{ups:?}");
        assert!(ups.last().unwrap().0 <= Duration::from_secs(36), "{ups:?}");
        // nothing to probe for at the best level
        let probes_at_full = probes
            .iter()
            .filter(|t| **t > ups.last().unwrap().0)
            .count();
        assert_eq!(probes_at_full, 0);
    }

    #[test]
    fn after_a_step_up_the_windows_have_time_to_grow_but_a_backlog_counts() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(11), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.level(0), Some(Level::Full), "{:?}", s.changes);
        let n = s.changes.len();
        // the paths' full windows read what they carry while their windows grow: 3.5
        // Mbit/s for most of a second, then the link's rate
        s.run(800 * MS, |_, _| (3.5 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        assert_eq!(s.changes.len(), n, "{:?}", &s.changes[n..]);
        // the same just after another step up, with the live media falling behind: the
        // backlog steps down one rung
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        while s.levels.level(0) != Some(Level::Full) {
            s.run(50 * MS, |_, _| (14.0 * MBIT, Duration::ZERO));
        }
        let n = s.changes.len();
        s.run(Duration::from_secs(1), |_, _| (3.5 * MBIT, 500 * MS));
        let steps: Vec<_> = s.changes[n..]
            .iter()
            .map(|(_, c)| (c.to, c.cause))
            .collect();
        assert_eq!(
            steps,
            vec![(Level::Substream, Cause::Backlog(500 * MS))],
            "{:?}",
            &s.changes[n..]
        );
    }

    /// A camera with a second stream, its main stream's cost drifting by up to 3% (a
    /// camera's bitrate is never flat), on links whose window estimate reads 144 Mbit/s
    /// whatever they carry (windows grown idle by a thin stream's bursts: seen in the
    /// network namespaces), for `secs` in 50 ms looks. `link(at)`: what the links carry
    /// then, Mbit/s; in the first second after it dropped they read full at that rate.
    /// The paths show what the links carry in the readings that cover a probe (from a
    /// quarter second into it to half a second after it, as two-window readings do), else
    /// the stream; `measured`: false, nothing counts it. The changes and the probes'
    /// starts.
    fn under_an_idle_estimate(
        cfg: LevelConfig,
        measured: bool,
        secs: u32,
        link: impl Fn(Duration) -> f64,
    ) -> (Vec<(Duration, Change)>, Vec<Duration>) {
        let mut levels = StreamLevels::new(cfg, &[0]);
        let t0 = Instant::now();
        let mut probes: Vec<(Duration, Duration)> = Vec::new();
        let mut changes = Vec::new();
        for step in 1..=secs * 20 {
            let now = t0 + 50 * MS * step;
            let at = now - t0;
            let mut ladder = with_sub();
            ladder.0[0] = Some(4.0 * MBIT * (1.0 + 0.03 * (f64::from(step) * 0.37).sin()));
            let carry = link(at) * MBIT;
            let second = Duration::from_secs(1);
            let dropped = at >= second && carry < link(at - second) * MBIT;
            let probing = probes
                .iter()
                .any(|(t, span)| at >= *t + 250 * MS && at <= *t + *span + 500 * MS);
            let shown = if probing {
                carry
            } else {
                levels.demand().min(carry)
            };
            let m = Measure {
                capacity: Some(if dropped { carry } else { 144.0 * MBIT }),
                backlog: Duration::ZERO,
                saturated: dropped,
                proof: measured.then_some(shown),
                probe_paths: true,
            };
            for c in levels.update(now, &[ladder], m) {
                changes.push((at, c));
            }
            if let Some(p) = levels.take_probe() {
                probes.push((at, p.span));
            }
        }
        (changes, probes.into_iter().map(|(t, _)| t).collect())
    }

    #[test]
    fn an_estimate_the_paths_never_carried_steps_nothing_up() {
        let secs = Duration::from_secs;
        // 14 Mbit/s, 0.5 from 1 s to 31 s, then 14 again
        let collapse = |at: Duration| {
            if at >= secs(1) && at < secs(31) {
                0.5
            } else {
                14.0
            }
        };
        // the estimate alone: a step up inside the collapse (the defect this guards)
        let (changes, _) = under_an_idle_estimate(LevelConfig::default(), false, 60, collapse);
        assert!(
            changes
                .iter()
                .any(|(at, c)| c.to < c.from && *at < secs(31)),
            "{changes:?}"
        );
        // with what the paths showed: down once at the collapse, up once after the
        // return, to full
        let (changes, probes) = under_an_idle_estimate(LevelConfig::default(), true, 60, collapse);
        let steps: Vec<_> = changes.iter().map(|(_, c)| (c.from, c.to)).collect();
        assert_eq!(
            steps,
            vec![
                (Level::Full, Level::Keyframes),
                (Level::Keyframes, Level::Full)
            ],
            "{changes:?}"
        );
        assert!(changes[0].0 <= secs(1) + 500 * MS, "{changes:?}");
        // the probes in the collapse showed nothing: each started the hold over (whatever
        // the camera's cost did meanwhile), and the step up came a plain hold after the
        // last one's readings were in, shown by the one after the return
        let in_collapse: Vec<_> = probes.iter().filter(|t| **t < secs(31)).collect();
        assert!(in_collapse.len() >= 4, "{probes:?}");
        assert!(
            probes.windows(2).all(|w| w[1] - w[0] >= secs(5)),
            "{probes:?}"
        );
        let last_failed = **in_collapse.last().unwrap() + secs(1) + READING_LAG;
        let (up_at, up) = changes[1];
        assert!(up_at >= last_failed + secs(10), "{up_at:?} {probes:?}");
        assert!(up_at <= secs(31) + secs(11), "{up_at:?} {probes:?}");
        match up.cause {
            Cause::Headroom { carried, .. } => {
                assert!(carried.is_some_and(|d| d >= 4.0 * MBIT * 1.25), "{up:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_probes_own_queue_steps_nothing_down() {
        // collapsed to 0.5 Mbit/s from 1 s: keyframes; then each probe's padding queues
        // ahead of the live media for a while (a backlog of 450 ms), and at 19 s the same
        // backlog comes with no probe
        let mut levels = StreamLevels::new(LevelConfig::default(), &[0]);
        let ladders = vec![with_sub()];
        let t0 = Instant::now();
        let mut probes: Vec<Duration> = Vec::new();
        let mut changes = Vec::new();
        for step in 1..=500u32 {
            let now = t0 + 50 * MS * step;
            let at = now - t0;
            let onset = at >= Duration::from_secs(1) && at < Duration::from_millis(1300);
            let after_probe = probes.iter().any(|t| at > *t && at < *t + 1500 * MS);
            let stray = at >= Duration::from_secs(19) && at < Duration::from_millis(19_500);
            let m = Measure {
                capacity: Some(
                    if at < Duration::from_secs(1) {
                        14.0
                    } else {
                        0.5
                    } * MBIT,
                ),
                backlog: if after_probe || stray {
                    450 * MS
                } else {
                    Duration::ZERO
                },
                saturated: onset,
                proof: Some(levels.demand()),
                probe_paths: true,
            };
            for c in levels.update(now, &ladders, m) {
                changes.push((at, c.to, c.cause));
            }
            if levels.take_probe().is_some() {
                probes.push(at);
            }
        }
        assert!(probes.len() >= 4, "{probes:?}");
        assert!(
            probes
                .iter()
                .all(|t| *t + 1500 * MS < Duration::from_secs(19)
                    || *t > Duration::from_millis(19_500)),
            "{probes:?}"
        );
        let downs: Vec<_> = changes.iter().map(|(at, to, _)| (*at, *to)).collect();
        assert_eq!(downs.len(), 2, "{changes:?}");
        assert_eq!(downs[0].1, Level::Keyframes);
        assert_eq!(downs[1].1, Level::Audio);
        assert!(
            downs[1].0 >= Duration::from_secs(19) && downs[1].0 < Duration::from_millis(19_500),
            "{changes:?}"
        );
    }

    /// A camera stepped down to keyframes by a collapse at 1 s, then an estimate that fits
    /// full (144 Mbit/s) with the paths showing the stream; each probe's readings show 14
    /// Mbit/s, and its queue holds the live media 450 ms from 0.2 s into it until 1.5 s;
    /// `silent`: 0.2 s into the first probe the paths go silent for a second, the backlog
    /// at 400 ms. The changes, and when the first probe started.
    fn probe_window(cfg: LevelConfig, silent: bool) -> (Vec<(Duration, Change)>, Duration) {
        let mut levels = StreamLevels::new(cfg, &[0]);
        let ladders = vec![with_sub()];
        let t0 = Instant::now();
        let mut first: Option<Duration> = None;
        let mut changes = Vec::new();
        for step in 1..=400u32 {
            let now = t0 + 50 * MS * step;
            let at = now - t0;
            let onset = at >= Duration::from_secs(1) && at < Duration::from_millis(1300);
            let into = first.map(|p| at.saturating_sub(p));
            let inside = |a: u32, b: u32| into.is_some_and(|d| d >= a * MS && d < b * MS);
            let quiet = silent && inside(200, 1200);
            let m = Measure {
                capacity: if quiet {
                    None
                } else if onset {
                    Some(0.5 * MBIT)
                } else {
                    Some(144.0 * MBIT)
                },
                backlog: if quiet {
                    400 * MS
                } else if inside(200, 1500) {
                    450 * MS
                } else {
                    Duration::ZERO
                },
                saturated: onset,
                proof: Some(if inside(250, 1500) {
                    14.0 * MBIT
                } else {
                    levels.demand()
                }),
                probe_paths: true,
            };
            for c in levels.update(now, &ladders, m) {
                changes.push((at, c));
            }
            if levels.take_probe().is_some() {
                first = first.or(Some(at));
            }
        }
        (changes, first.expect("a probe"))
    }

    #[test]
    fn a_probes_queue_puts_a_step_up_off_and_a_silent_collapse_still_steps_down() {
        // a short hold, over before the probe shows full: the step up waits for the
        // probe's queue to drain, not into it
        let short = LevelConfig {
            up_after: Duration::from_secs(3),
            ..LevelConfig::default()
        };
        let (changes, probe) = probe_window(short, false);
        let ups: Vec<_> = changes.iter().filter(|(_, c)| c.to < c.from).collect();
        assert_eq!(ups.len(), 1, "{changes:?}");
        assert_eq!(ups[0].1.to, Level::Full);
        // (the queue held the live media back until 1.5 s into the probe)
        let drained = probe + Duration::from_millis(1500);
        assert!(
            ups[0].0 >= drained && ups[0].0 <= drained + 100 * MS,
            "{changes:?} {probe:?}"
        );
        // the paths go silent in the probe's window with the live media behind: a
        // collapse, stepped down a rung at once
        let (changes, probe) = probe_window(LevelConfig::default(), true);
        let downs: Vec<_> = changes
            .iter()
            .filter(|(at, c)| c.to > c.from && *at > probe)
            .collect();
        assert_eq!(downs.len(), 1, "{changes:?}");
        assert_eq!(downs[0].1.to, Level::Audio);
        assert!(downs[0].0 <= probe + 500 * MS, "{changes:?} {probe:?}");
    }

    /// A camera stepped down to keyframes by a collapse at 1 s, then 40 s of an estimate of
    /// 144 Mbit/s with no probe (the next would come a minute after the step down) and no
    /// backlog, the paths carrying 14 Mbit/s over `busy` (other traffic) and the keyframes
    /// otherwise. The step up's time, if any.
    fn held_without_probes(cfg: LevelConfig, busy: std::ops::Range<Duration>) -> Option<Duration> {
        let cfg = LevelConfig {
            probe_every: Duration::from_secs(60),
            ..cfg
        };
        let mut levels = StreamLevels::new(cfg, &[0]);
        let ladders = vec![with_sub()];
        let t0 = Instant::now();
        let mut up = None;
        for step in 1..=800u32 {
            let now = t0 + 50 * MS * step;
            let at = now - t0;
            let collapsed = at >= Duration::from_secs(1) && at < Duration::from_millis(1250);
            let m = Measure {
                capacity: Some(if collapsed { 0.5 * MBIT } else { 144.0 * MBIT }),
                backlog: Duration::ZERO,
                saturated: collapsed,
                proof: Some(if busy.contains(&at) {
                    14.0 * MBIT
                } else {
                    levels.demand()
                }),
                probe_paths: true,
            };
            for c in levels.update(now, &ladders, m) {
                if c.to < c.from {
                    up = up.or(Some(at));
                }
            }
            assert!(levels.take_probe().is_none());
        }
        up
    }

    #[test]
    fn a_proof_counts_only_from_within_the_hold_and_for_a_while() {
        let ms = |n| Duration::from_millis(n);
        // the hold of full starts at the first look after the step down (1.25 s)
        let long = LevelConfig {
            proof_for: Duration::from_secs(60),
            ..LevelConfig::default()
        };
        // 14 Mbit/s carried just before the hold and at its start: those readings hold
        // time from before it, and show nothing
        assert_eq!(held_without_probes(long, ms(1000)..ms(1500)), None);
        // the same a second later, wholly within the hold: full after the plain hold
        let up = held_without_probes(long, ms(2000)..ms(2500)).expect("a step up");
        assert!(up >= ms(11_200) && up <= ms(11_400), "{up:?}");
        // a proof stands for `proof_for`: a hold of 30 s shown only at its start waits
        // for another showing
        let slow = LevelConfig {
            up_after: Duration::from_secs(30),
            ..LevelConfig::default()
        };
        assert_eq!(held_without_probes(slow, ms(2000)..ms(2500)), None);
        let up = held_without_probes(
            LevelConfig {
                proof_for: Duration::from_secs(60),
                ..slow
            },
            ms(2000)..ms(2500),
        )
        .expect("a step up");
        assert!(up >= ms(31_200) && up <= ms(31_400), "{up:?}");
    }

    #[test]
    fn a_window_estimate_alone_is_no_shortage() {
        // a thin stream's paths keep small windows: their estimate reads below the demand
        // while nothing is queued anywhere; only a full link or a backlog is a shortage
        let mut levels = StreamLevels::new(LevelConfig::default(), &[0]);
        let ladders = vec![with_sub()];
        let t0 = Instant::now();
        let m = |backlog, saturated| Measure {
            capacity: Some(3.0 * MBIT),
            backlog,
            saturated,
            proof: None,
            probe_paths: true,
        };
        for step in 1..=40u32 {
            assert!(levels
                .update(t0 + 50 * MS * step, &ladders, m(Duration::ZERO, false))
                .is_empty());
        }
        let mut at = None;
        for step in 41..=60u32 {
            let now = t0 + 50 * MS * step;
            if !levels
                .update(now, &ladders, m(Duration::ZERO, true))
                .is_empty()
            {
                at.get_or_insert(now - t0);
            }
        }
        assert_eq!(levels.level(0), Some(Level::Substream));
        assert!(at.is_some_and(|t| t <= 2300 * MS), "{at:?}");
    }

    #[test]
    fn a_partial_return_steps_up_as_far_as_it_holds() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Keyframes));
        // 2 Mbit/s holds the substream (0.8 x 1.25) but not the main stream
        s.run(Duration::from_secs(30), |_, _| (2.0 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| c.to).collect();
        assert_eq!(steps, vec![Level::Keyframes, Level::Substream]);
    }

    #[test]
    fn a_camera_without_a_second_stream_steps_to_its_transcode() {
        let mut s = Sim::new(vec![transcoded()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (1.0 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| (c.from, c.to)).collect();
        assert_eq!(steps, vec![(Level::Full, Level::Transcode)]);
    }

    #[test]
    fn a_short_dip_changes_nothing() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(10), |at, _| {
            // 150 ms of shortage every 2 s
            let dip = at.as_millis() % 2000 < 150;
            (if dip { 0.5 } else { 14.0 } * MBIT, Duration::ZERO)
        });
        assert!(s.changes.is_empty(), "{:?}", s.changes);
    }

    #[test]
    fn a_backlog_steps_down_one_rung_at_a_time_and_lets_it_drain() {
        // the capacity estimate says 14 Mbit/s, but media waits: the estimate lags
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_millis(2500), |_, _| (14.0 * MBIT, 600 * MS));
        let steps: Vec<_> = s.changes.iter().map(|(at, c)| (*at, c.to)).collect();
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[0].1, Level::Substream);
        assert!(steps[0].0 <= 300 * MS);
        assert_eq!(steps[1].1, Level::Keyframes);
        assert!(
            steps[1].0 - steps[0].0 >= LevelConfig::default().settle,
            "{steps:?}"
        );
        assert!(matches!(s.changes[0].1.cause, Cause::Backlog(_)));
    }

    #[test]
    fn the_queue_a_shortage_leaves_does_not_step_another_camera_down() {
        // stage (priority 10) and crowd (priority 1) on 6.5 Mbit/s: the crowd steps down;
        // the queue built meanwhile takes 1.5 s to drain
        let mut s = Sim::new(vec![with_sub(), with_sub()], &[10, 1]);
        let cut = std::cell::Cell::new(None);
        s.run(Duration::from_secs(5), |at, demand| {
            if demand < 8.0 * MBIT && cut.get().is_none() {
                cut.set(Some(at));
            }
            let draining = cut
                .get()
                .is_none_or(|c| at < c + Duration::from_millis(1500));
            (6.5 * MBIT, if draining { 600 * MS } else { Duration::ZERO })
        });
        assert_eq!(
            s.levels.levels(),
            vec![Level::Full, Level::Substream],
            "{:?}",
            s.changes
        );
    }

    #[test]
    fn an_outage_holds_the_levels_and_its_queue_counts_for_nothing() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        let step = |s: &mut Sim, d: Duration, capacity: Option<f64>, backlog: Duration| {
            let end = s.now + d;
            while s.now < end {
                let ch = s.look(capacity, backlog, true);
                s.changes
                    .extend(ch.into_iter().map(|c| (Duration::ZERO, c)));
            }
        };
        // the paths go silent with the backlog under its limit (a clean cut), and the
        // outage's queue grows past it after the moment's first `down_after`
        step(&mut s, 150 * MS, None, 250 * MS);
        step(&mut s, Duration::from_secs(5), None, 3000 * MS);
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        // a path back: its queue drains, its window grows
        step(
            &mut s,
            Duration::from_millis(1500),
            Some(1.0 * MBIT),
            2000 * MS,
        );
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        step(
            &mut s,
            Duration::from_secs(2),
            Some(14.0 * MBIT),
            Duration::ZERO,
        );
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        // a real shortage afterwards still counts
        step(
            &mut s,
            Duration::from_secs(1),
            Some(1.2 * MBIT),
            Duration::ZERO,
        );
        assert_eq!(s.levels.level(0), Some(Level::Substream));
    }

    #[test]
    fn a_collapse_whose_paths_flicker_still_steps_down() {
        // seen in network namespaces: both paths of a collapsing bond were unusable for a
        // moment every second; each moment restarted the shortage and the step waited 8 s
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        let start = s.now;
        let mut at = None;
        while s.now < start + Duration::from_secs(3) && at.is_none() {
            s.now += 50 * MS;
            let flicker = (s.now - start).as_millis() % 500 < 150;
            let m = Measure {
                capacity: (!flicker).then_some(0.3 * MBIT),
                backlog: 900 * MS,
                saturated: true,
                proof: None,
                probe_paths: true,
            };
            if !s.levels.update(s.now, &s.ladders, m).is_empty() {
                at = Some(s.now - start);
            }
        }
        assert!(at.is_some_and(|t| t <= Duration::from_secs(1)), "{at:?}");
    }

    #[test]
    fn a_backlog_seen_while_the_paths_are_silent_counts_at_once() {
        // seen in network namespaces: both paths of a collapse went silent (their probes
        // stuck behind the collapsed links' queues) just as the backlog passed 300 ms; the
        // shortage began to count only at the next look with a path
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        let start = s.now;
        let mut at = None;
        while s.now < start + Duration::from_secs(2) && at.is_none() {
            s.now += 50 * MS;
            let t = s.now - start;
            // the oldest piece is due at 50 ms and never answered; the estimate still
            // reads the old capacity (it lags)
            let silent = t > 350 * MS && t < 600 * MS;
            let m = Measure {
                capacity: (!silent).then_some(14.0 * MBIT),
                backlog: t.saturating_sub(50 * MS),
                saturated: false,
                proof: None,
                probe_paths: true,
            };
            if !s.levels.update(s.now, &s.ladders, m).is_empty() {
                at = Some(t);
            }
        }
        // counted from 400 ms (350 ms behind), the step comes when the hold is over, the
        // paths still silent
        assert_eq!(at, Some(500 * MS));
    }

    #[test]
    fn a_capacity_shortage_before_a_cut_steps_nothing_in_the_outage() {
        // a dying path's last meter window read full at a trickle, then the cut: the
        // outage's own backlog passes its limit after the moment's first 150 ms
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        let mut changes = s.look(Some(0.3 * MBIT), Duration::ZERO, true);
        for i in 0..60u32 {
            changes.extend(s.look(None, (100 + 50 * i) * MS, false));
        }
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_silent_moment_in_the_grace_after_an_outage_steps_nothing() {
        // a 3 s outage, a path back for half a second with the outage's queue, and the
        // rejoined path silent again for a moment: the queue is the outage's, not a
        // collapse's
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        let mut changes = Vec::new();
        for i in 0..60u32 {
            changes.extend(s.look(None, (100 + 50 * i) * MS, false));
        }
        for _ in 0..10 {
            changes.extend(s.look(Some(14.0 * MBIT), 2000 * MS, false));
        }
        for _ in 0..10 {
            changes.extend(s.look(None, 2000 * MS, false));
        }
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn an_outage_that_begins_without_a_backlog_starts_no_count() {
        // a clean cut: the backlog passes its limit only after the outage's first moments
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        let start = s.now;
        let mut changes = Vec::new();
        while s.now < start + Duration::from_millis(1500) {
            s.now += 50 * MS;
            let t = s.now - start;
            let cut = t < 1000 * MS;
            let m = Measure {
                capacity: (!cut).then_some(14.0 * MBIT),
                backlog: if cut { t } else { 400 * MS },
                saturated: false,
                proof: None,
                probe_paths: true,
            };
            changes.extend(
                s.levels
                    .update(s.now, &s.ladders, m)
                    .into_iter()
                    .map(|c| (t, c)),
            );
        }
        // back at 1 s with the outage's queue: counted from there, not from the cut
        let first = changes.first().map(|c| c.0);
        assert_eq!(first, Some(1100 * MS), "{changes:?}");
    }

    #[test]
    fn a_lower_priority_camera_that_fits_steps_up_when_a_higher_one_cannot() {
        // stage 8 Mbit/s main, crowd 4 Mbit/s main; 3 Mbit/s, then 7.5 Mbit/s
        let mut stage = with_sub();
        stage.0[Level::Full.index()] = Some(8.0 * MBIT);
        let mut s = Sim::new(vec![stage, with_sub()], &[10, 1]);
        s.run(Duration::from_secs(1), |_, _| (3.0 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.levels(), vec![Level::Substream, Level::Audio]);
        // the stage's 8 never fits 7.5 / 1.25; the crowd's 4 + 0.8 does
        s.run(Duration::from_secs(12), |_, _| (7.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.levels(), vec![Level::Substream, Level::Full]);
    }

    #[test]
    fn a_pinned_camera_falls_back_while_its_level_is_gone_and_returns_to_it() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_millis(100), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        s.levels.set_override(0, Some(Level::Substream));
        s.ladders[0].0[Level::Substream.index()] = None;
        s.run(Duration::from_millis(100), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.level(0), Some(Level::Keyframes));
        s.ladders[0] = with_sub();
        s.run(Duration::from_millis(100), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.level(0), Some(Level::Substream));
        assert_eq!(s.changes.last().map(|c| c.1.cause), Some(Cause::Override));
    }

    #[test]
    fn the_lowest_priority_camera_steps_down_first() {
        // stage (priority 10) and crowd (priority 1), 4 Mbit/s each, on 6 Mbit/s
        let mut s = Sim::new(vec![with_sub(), with_sub()], &[10, 1]);
        s.run(Duration::from_secs(1), |_, _| (6.5 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| (c.camera, c.to)).collect();
        assert_eq!(steps, vec![(1, Level::Substream)], "4 + 0.8 fits 0.8 x 6.5");
        assert_eq!(s.levels.levels(), vec![Level::Full, Level::Substream]);
        // deeper: the crowd goes to its floor before the stage moves
        s.changes.clear();
        s.run(Duration::from_secs(1), |_, _| (1.0 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.levels(), vec![Level::Keyframes, Level::Audio]);
        // back: the stage goes up first
        s.changes.clear();
        s.run(Duration::from_secs(12), |_, _| {
            (20.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert_eq!(s.changes[0].1.camera, 0);
    }

    #[test]
    fn a_marginal_link_does_not_make_the_level_oscillate() {
        // a link whose capacity reads 14 Mbit/s at 100 ms RTT and a twelfth of it at
        // 1200 ms, swinging every 3 s for a minute, then steady
        let mut s = Sim::new(vec![with_sub()], &[0]);
        // (media waits at the gateway while the demand is above what the link carries)
        let marginal = |at: Duration, demand: f64| {
            let slow = (at.as_secs() / 3) % 2 == 1;
            let capacity = if slow { 14.0 / 12.0 } else { 14.0 } * MBIT;
            let backlog = if demand > capacity {
                400 * MS
            } else {
                Duration::ZERO
            };
            (capacity, backlog)
        };
        s.run(Duration::from_secs(60), marginal);
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert_eq!(s.changes[0].1.to, Level::Substream);
        // steady again: back to full, one rung after the hold
        s.run(Duration::from_secs(20), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.changes.len(), 2, "{:?}", s.changes);
        assert_eq!(s.levels.level(0), Some(Level::Full));
    }

    #[test]
    fn flapping_capacity_doubles_the_up_hold() {
        // 19 s of plenty, then 1 s of collapse, over and over: a step down that undoes
        // a step up makes the next one wait twice as long (20 s: never, here)
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(300), |at, _| {
            let collapse = at.as_millis() % 20_000 >= 19_000;
            (if collapse { 0.5 } else { 14.0 } * MBIT, Duration::ZERO)
        });
        let ups = s
            .changes
            .iter()
            .filter(|(_, c)| matches!(c.cause, Cause::Headroom { .. }))
            .count();
        let downs = s.changes.len() - ups;
        assert_eq!(
            downs, 2,
            "the first collapse, and the one that undid the step up"
        );
        assert_eq!(ups, 1, "{:?}", s.changes);
        assert_eq!(
            s.levels.up_hold(14.0 * MBIT),
            2 * LevelConfig::default().up_after
        );
        // the flap forgotten after ten minutes: the hold is back to its start
        s.run(Duration::from_secs(400), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(
            s.levels.up_hold(14.0 * MBIT),
            LevelConfig::default().up_after
        );
        assert_eq!(s.levels.level(0), Some(Level::Full));
    }

    #[test]
    fn a_flap_on_a_collapsed_bond_does_not_slow_the_return_of_the_links() {
        // collapsed to 0.3 Mbit/s (audio) for 8 s, then 0.9 Mbit/s: after the hold a step
        // up to the 0.6 Mbit/s transcode that the bond cannot keep (0.5 Mbit/s once it has)
        let mut s = Sim::new(vec![transcoded()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(24), |at, _| {
            let c = if at < Duration::from_secs(10) {
                0.3
            } else {
                0.9
            };
            (c * MBIT, Duration::ZERO)
        });
        s.run(Duration::from_secs(4), |_, _| (0.5 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| (c.from, c.to)).collect();
        assert_eq!(
            steps,
            vec![
                (Level::Full, Level::Audio),
                (Level::Audio, Level::Transcode),
                (Level::Transcode, Level::Keyframes)
            ]
        );
        // that flap doubles the hold at what it trusted, not on links back at 14 Mbit/s
        assert_eq!(s.levels.up_hold(0.9 * MBIT), 20 * Duration::from_secs(1));
        assert_eq!(s.levels.up_hold(14.0 * MBIT), Duration::from_secs(10));
        let after = s.back_to_full_after(Duration::from_secs(15), Duration::from_secs(30));
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert!(
            after <= Duration::from_millis(10_100),
            "back to full after {after:?}"
        );
    }

    #[test]
    fn one_high_reading_between_a_flaps_steps_does_not_slow_the_return() {
        // as above, with one 50 ms reading of 25 Mbit/s between the step up to the
        // transcode and the step down that undoes it (a meter window's spike)
        let mut s = Sim::new(vec![transcoded()], &[0]);
        s.run(Duration::from_secs(2), |_, _| (14.0 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(24), |at, _| {
            let c = if at < Duration::from_secs(10) {
                0.3
            } else if (24_000..24_050).contains(&at.as_millis()) {
                25.0
            } else {
                0.9
            };
            (c * MBIT, Duration::ZERO)
        });
        s.run(Duration::from_secs(4), |_, _| (0.5 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| c.to).collect();
        assert_eq!(
            steps,
            vec![Level::Audio, Level::Transcode, Level::Keyframes],
            "the spike came between the step up and the step down"
        );
        assert_eq!(s.levels.up_hold(14.0 * MBIT), Duration::from_secs(10));
        let after = s.back_to_full_after(Duration::from_secs(15), Duration::from_secs(30));
        assert!(
            after <= Duration::from_millis(10_100),
            "back to full after {after:?}"
        );
    }

    #[test]
    fn a_hold_begun_in_a_collapse_is_judged_on_the_return_when_it_allows_more() {
        // 0.45 Mbit/s holds the keyframes (0.3 x 1.25); a dip to 0.25 undoes that step
        // up (a flap at 0.45), and the keyframes' hold begins again at 0.45
        let mut s = Sim::flapped_at_045();
        s.run(Duration::from_secs(5), |_, _| (0.45 * MBIT, Duration::ZERO));
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| c.to).collect();
        assert_eq!(steps, vec![Level::Audio, Level::Keyframes, Level::Audio]);
        // the links return: the step to full waits the plain hold, not the flap's double
        let after = s.back_to_full_after(Duration::from_secs(25), Duration::from_secs(21));
        assert!(
            after <= Duration::from_millis(10_100),
            "back to full after {after:?}"
        );
    }

    #[test]
    fn one_high_reading_in_a_long_hold_does_not_step_to_full() {
        // as above: after the flap at 0.45 Mbit/s the keyframes' hold is doubled (20 s);
        // 12 s into it one reading of 14 Mbit/s (a probe's) must not count as 12 s of it
        let mut s = Sim::flapped_at_045();
        let spike = s.now - s.start + Duration::from_secs(12);
        s.run(Duration::from_secs(15), |at, _| {
            let c = if at == spike { 14.0 } else { 0.45 };
            (c * MBIT, Duration::ZERO)
        });
        let steps: Vec<_> = s.changes.iter().map(|(_, c)| c.to).collect();
        assert_eq!(steps, vec![Level::Audio, Level::Keyframes, Level::Audio]);
    }

    /// A camera without a second stream collapsed to audio at 1 s; the links return at 3 s
    /// reading 1 Mbit/s (the transcode fits), and 14 from `full_from`: the steps up, each
    /// at its time in 100 ms.
    fn steps_up_after_a_return(full_from: Duration) -> Vec<(u128, Level)> {
        let mut s = Sim::new(vec![transcoded()], &[0]);
        s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(2), |_, _| (0.12 * MBIT, Duration::ZERO));
        s.changes.clear();
        s.run(Duration::from_secs(30), |at, _| {
            let c = if at < full_from { 1.0 } else { 14.0 };
            (c * MBIT, Duration::ZERO)
        });
        s.changes
            .iter()
            .map(|(at, c)| (at.as_millis() / 100, c.to))
            .collect()
    }

    #[test]
    fn a_second_step_up_waits_for_the_first_to_settle() {
        // full's hold is over 1 s after the transcode's, and waits for the transcode's
        // step to settle
        let settle = LevelConfig::default().settle.as_millis() / 100;
        assert_eq!(
            steps_up_after_a_return(Duration::from_secs(4)),
            vec![(130, Level::Transcode), (130 + settle, Level::Full)]
        );
    }

    #[test]
    fn a_return_read_low_at_first_steps_to_full_on_its_own_hold() {
        // the transcode after its hold, and full after its own, counted from the reading
        // that allowed it, not from the first
        assert_eq!(
            steps_up_after_a_return(Duration::from_secs(7)),
            vec![(130, Level::Transcode), (170, Level::Full)]
        );
    }

    #[test]
    fn a_flap_counts_for_the_highest_capacity_read_before_it() {
        // the step up to full trusts 5.5 Mbit/s (a thin stream's window), the links then
        // read 14 before a collapse undoes it: the next 14 is no reason to trust them
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(13), |_, _| (5.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Full), "{:?}", s.changes);
        s.run(Duration::from_secs(5), |_, _| (14.0 * MBIT, Duration::ZERO));
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_ne!(s.levels.level(0), Some(Level::Full));
        assert_eq!(s.levels.up_hold(14.0 * MBIT), Duration::from_secs(20));
        // and one tick's high reading does not cut the hold short: 11 s at 14, then one
        // reading of 40, keeps the camera where it is
        let before = s.changes.len();
        s.run(Duration::from_secs(12), |at, _| {
            let spike = (32_000..32_050).contains(&at.as_millis());
            (if spike { 40.0 } else { 14.0 } * MBIT, Duration::ZERO)
        });
        assert_eq!(s.changes.len(), before, "{:?}", &s.changes[before..]);
    }

    #[test]
    fn an_override_pins_a_camera_until_lifted() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        let ch = s.levels.set_override(0, Some(Level::Audio)).unwrap();
        assert_eq!((ch.to, ch.cause), (Level::Audio, Cause::Override));
        s.run(Duration::from_secs(20), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert!(s.changes.is_empty(), "pinned: {:?}", s.changes);
        // pinned at full through a collapse too
        s.levels.set_override(0, Some(Level::Full));
        s.run(Duration::from_secs(2), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Full));
        // lifted: the controller takes over from where it is
        assert!(s.levels.set_override(0, None).is_none());
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Keyframes));
    }

    #[test]
    fn a_ceiling_holds_a_camera_down_until_lifted_and_an_override_wins() {
        let mut s = Sim::new(vec![with_sub(), with_sub()], &[0, 0]);
        s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
        let ch = s.levels.set_ceiling(0, Some(Level::Substream)).unwrap();
        assert_eq!(
            (ch.from, ch.to, ch.cause),
            (Level::Full, Level::Substream, Cause::Ceiling)
        );
        // plenty of capacity for a minute: camera 0 stays under its ceiling
        s.run(Duration::from_secs(60), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.levels(), vec![Level::Substream, Level::Full]);
        // a collapse still steps it lower
        s.run(Duration::from_secs(1), |_, _| (0.5 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Keyframes));
        // back up: to its ceiling, not above
        s.run(Duration::from_secs(120), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.levels(), vec![Level::Substream, Level::Full]);
        // lifted: up after the hold, not at once
        assert!(s.levels.set_ceiling(0, None).is_none());
        let lifted = s.now - s.start;
        s.changes.clear();
        s.run(Duration::from_secs(60), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.level(0), Some(Level::Full));
        let after = s.changes[0].0 - lifted;
        assert!(
            after >= LevelConfig::default().up_after,
            "up {after:?} after the lift"
        );
        // an override wins over a ceiling
        s.levels.set_override(1, Some(Level::Full));
        assert!(s.levels.set_ceiling(1, Some(Level::Audio)).is_none());
        s.run(Duration::from_secs(5), |_, _| (14.0 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(1), Some(Level::Full));
    }

    #[test]
    fn a_ceiling_below_every_level_a_camera_has_takes_its_lowest() {
        // only full and substream measured: a keyframes ceiling means the substream
        let mut s = Sim::new(
            vec![Ladder([
                Some(4.0 * MBIT),
                Some(0.8 * MBIT),
                None,
                None,
                None,
            ])],
            &[0],
        );
        s.levels.set_ceiling(0, Some(Level::Keyframes));
        s.run(Duration::from_secs(60), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.levels.level(0), Some(Level::Substream));
        assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
        assert_eq!(s.changes[0].1.cause, Cause::Ceiling);
    }

    #[test]
    fn a_lost_level_falls_to_the_next_one_down() {
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.run(Duration::from_secs(1), |_, _| (1.0 * MBIT, Duration::ZERO));
        assert_eq!(s.levels.level(0), Some(Level::Substream));
        // the second stream went away
        s.ladders[0].0[Level::Substream.index()] = None;
        s.changes.clear();
        s.run(Duration::from_millis(100), |_, _| {
            (1.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.changes[0].1.to, Level::Keyframes);
        assert_eq!(s.changes[0].1.cause, Cause::Unavailable);
    }

    #[test]
    fn a_level_not_measured_yet_is_not_lost() {
        // the substream is measured before the main stream has made a second of parts
        let mut s = Sim::new(vec![with_sub()], &[0]);
        s.ladders[0].0[Level::Full.index()] = None;
        s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        s.ladders[0] = with_sub();
        s.run(Duration::from_secs(1), |_, _| (14.0 * MBIT, Duration::ZERO));
        assert!(s.changes.is_empty(), "{:?}", s.changes);
        // measured, then gone: the main stream broke; the substream stands in
        s.ladders[0].0[Level::Full.index()] = None;
        s.run(Duration::from_millis(100), |_, _| {
            (14.0 * MBIT, Duration::ZERO)
        });
        assert_eq!(s.changes[0].1.to, Level::Substream);
        assert_eq!(s.changes[0].1.cause, Cause::Unavailable);
    }

    /// A usable primary path for every class, its window reading `mbit` Mbit/s.
    fn view(id: usize, mbit: f64) -> PathView {
        use crate::scheduler::ClassSet;
        PathView {
            id,
            usable: true,
            tier: Tier::Primary,
            classes: ClassSet::ALL,
            cap: CapState::Normal,
            srtt: Duration::from_millis(40),
            rate_up: mbit * MBIT,
            rate_down: mbit * MBIT,
            queued_up: 0,
            queued_down: 0,
            silent: Duration::ZERO,
        }
    }

    #[test]
    fn capacity_takes_a_full_paths_measured_rate() {
        let mut paths = vec![(view(0, 7.0), None), (view(1, 7.0), Some(0.25 * MBIT))];
        assert_eq!(capacity(&paths), Some(7.25 * MBIT));
        paths[0].0.usable = false;
        assert_eq!(capacity(&paths), Some(0.25 * MBIT));
        paths[1].0.usable = false;
        assert_eq!(capacity(&paths), None, "an outage is no capacity reading");
    }

    #[test]
    fn the_proof_is_what_the_paths_delivered_whatever_their_windows_read() {
        // a primary whose window reads 90 Mbit/s and that delivered 3
        let mut paths = vec![(view(0, 90.0), Some(3.0 * MBIT))];
        assert!(may_probe(&paths[0].0));
        assert_eq!(proof(&paths), 3.0 * MBIT);
        // no reading yet (a fresh connection): it has shown nothing
        paths[0].1 = None;
        assert_eq!(proof(&paths), 0.0);
        // a backup link no probe may use counts what it delivered, not its 10 Mbit/s window
        let mut backup = view(1, 10.0);
        backup.tier = Tier::Backup;
        assert!(!may_probe(&backup));
        paths[0].1 = Some(3.0 * MBIT);
        paths.push((backup, Some(0.1 * MBIT)));
        assert_eq!(proof(&paths), 3.1 * MBIT);
        // a link near its cap is not probed either; a path that may not carry the stream
        // counts nothing
        paths[1].0.tier = Tier::Primary;
        paths[1].0.cap = CapState::Warn;
        assert!(!may_probe(&paths[1].0));
        paths[1].0.usable = false;
        assert_eq!(proof(&paths), 3.0 * MBIT);
    }

    #[test]
    fn names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
        }
        assert_eq!(Level::from_name("ultra"), None);
    }
}
