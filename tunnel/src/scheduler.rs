//! The bonding scheduler: which path(s) a request goes on.
//!
//! The IO layer describes each path as a [`PathView`] (health, tier, class restrictions,
//! cap, RTT, rate estimates per direction and the bytes already queued on it) and asks for a
//! [`Placement`] of each [`Unit`] (a request, or a media part). Policies are implementations
//! of [`Scheduler`]:
//! - [`MinCompletion`]: the path with the earliest expected completion,
//!   `srtt + (queued_up + up)/rate_up + (queued_down + down)/rate_down`, among those the
//!   unit's class and the cost tiers allow;
//! - [`Redundant`]: wraps another policy; bids and check-ins go on the two best paths (any
//!   tier), the relay answers the first copy and drops the other by idempotency key.

use crate::class::TrafficClass;
use crate::path::{CapState, Tier};
use std::time::Duration;

/// Index of a path in the gateway's uplink list.
pub type PathId = usize;

/// A set of traffic classes, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSet(u8);

impl ClassSet {
    /// Every class.
    pub const ALL: ClassSet = ClassSet(0b1111);

    /// The set of `classes`.
    pub fn of(classes: &[TrafficClass]) -> Self {
        Self(classes.iter().fold(0, |m, c| m | Self::bit(*c)))
    }

    /// Whether `class` is in the set.
    pub fn contains(self, class: TrafficClass) -> bool {
        self.0 & Self::bit(class) != 0
    }

    fn bit(c: TrafficClass) -> u8 {
        match c {
            TrafficClass::Bid => 1,
            TrafficClass::Checkin => 2,
            TrafficClass::Stream => 4,
            TrafficClass::Bulk => 8,
        }
    }
}

/// What the scheduler knows of one path at the time of a decision.
#[derive(Debug, Clone)]
pub struct PathView {
    /// Which path.
    pub id: PathId,
    /// Health is up (probation, down and connecting paths carry nothing).
    pub usable: bool,
    /// Cost tier.
    pub tier: Tier,
    /// Classes the path's config admits.
    pub classes: ClassSet,
    /// Daily cap state.
    pub cap: CapState,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Estimated sending rate towards the relay, bytes/s.
    pub rate_up: f64,
    /// Estimated receiving rate from the relay, bytes/s.
    pub rate_down: f64,
    /// Bytes of requests placed on this path not yet sent.
    pub queued_up: u64,
    /// Bytes of responses expected on this path not yet received.
    pub queued_down: u64,
    /// How long the path has not answered a probe (zero while it answers every few
    /// milliseconds): what was sent on it lately may be lost long before the path is
    /// called down.
    pub silent: Duration,
}

/// A regular path on probation is better than none: when no primary or secondary path is
/// usable, the regular paths `on_probation` says are connected and answering (held back
/// after flapping, not dead) become usable, ahead of a backup link. Measured in the demo:
/// with cellular cut and Wi-Fi on a flapping link's 60 s hold, the stream and an upload
/// squeezed onto a 2 Mbit/s satellite, which went silent, and the relay showed 7 s of gap.
pub fn fallback_to_probation(views: &mut [PathView], on_probation: impl Fn(PathId) -> bool) {
    if views.iter().any(|v| v.usable && v.tier != Tier::Backup) {
        return;
    }
    for v in views
        .iter_mut()
        .filter(|v| !v.usable && v.tier != Tier::Backup)
    {
        v.usable = on_probation(v.id);
    }
}

/// One path as [`take_over_from_lost`] sees it, after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossView {
    /// Usable before the tick.
    pub was_usable: bool,
    /// Usable after it.
    pub usable: bool,
    /// A backup-tier link.
    pub backup: bool,
    /// Already sending at its best measured rate
    /// ([`PathEstimate::carries_its_peak`](crate::path_estimate::PathEstimate::carries_its_peak)).
    pub at_peak: bool,
}

impl LossView {
    /// Usable before the tick and not after it.
    pub fn lost(&self) -> bool {
        self.was_usable && !self.usable
    }
}

/// When a path stopped being usable, the paths (indices into `paths`) whose congestion
/// controllers should search for their rate again to take over its load: their windows may
/// be small from carrying little (the delay rule holds a lightly used path's window near
/// what it carried), so the stream and the bids the lost path carried find room within a
/// few round trips. Not the lost paths themselves; backup links only when no regular path
/// is left to take the load (a 2 Mbit/s satellite restarted beside Wi-Fi grew a window
/// that drew the stream's overflow into a 600 ms queue: 5 gap parts in the browser test);
/// and not a path already full at its best rate (a busy 2 Mbit/s path that searched again
/// at a cut doubled its window, and its RTT went from 50 to 115 ms while a single upload's
/// pieces waited there). None when no path was lost.
pub fn take_over_from_lost(paths: &[LossView]) -> Vec<usize> {
    if !paths.iter().any(LossView::lost) {
        return Vec::new();
    }
    let regular_left = paths.iter().any(|p| p.usable && !p.backup);
    paths
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.lost())
        .filter(|(_, p)| !(regular_left && p.backup))
        .filter(|(_, p)| !p.at_peak)
        .map(|(i, _)| i)
        .collect()
}

impl PathView {
    /// Whether this path may carry `class` now (health, config, cap).
    pub fn allows(&self, class: TrafficClass) -> bool {
        self.usable
            && self.classes.contains(class)
            && (self.cap != CapState::Exhausted || class.is_transactional())
    }

    /// Whether less than one round trip of data is queued in `unit`'s main direction: the
    /// path would run dry before more work reaches it.
    pub fn would_idle(&self, unit: &Unit) -> bool {
        let (queued, rate) = if unit.sends_mostly() {
            (self.queued_up, self.rate_up)
        } else {
            (self.queued_down, self.rate_down)
        };
        (queued as f64) < rate * self.srtt.as_secs_f64()
    }

    /// How long `unit` would wait behind what is already queued on this path in its main
    /// direction.
    pub fn queue_delay(&self, unit: &Unit) -> Duration {
        let (queued, rate) = if unit.sends_mostly() {
            (self.queued_up, self.rate_up)
        } else {
            (self.queued_down, self.rate_down)
        };
        Duration::from_secs_f64((queued as f64 / rate.max(1.0)).min(1e6))
    }

    /// Expected time for `unit` to complete on this path, tier penalty included.
    ///
    /// A unit waits behind the path's queue only in its main direction, and only if it is
    /// bulk or media: small requests and answers go ahead of queued bulk data (small-first
    /// stream priorities) and the bottleneck queue itself is kept short.
    pub fn expected_completion(&self, unit: &Unit) -> Duration {
        let queues = !unit.class.is_transactional();
        let (qu, qd) = match (queues, unit.sends_mostly()) {
            (false, _) => (0, 0),
            (true, true) => (self.queued_up, 0),
            (true, false) => (0, self.queued_down),
        };
        let up = qu.saturating_add(unit.up_bytes) as f64 / self.rate_up.max(1.0);
        let down = qd.saturating_add(unit.down_bytes) as f64 / self.rate_down.max(1.0);
        let t = self.srtt.as_secs_f64() + up + down;
        let t = if self.tier == Tier::Secondary {
            t * 1.5
        } else {
            t
        };
        Duration::from_secs_f64(t.min(1e6))
    }
}

/// A unit of work to place.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Its class.
    pub class: TrafficClass,
    /// Bytes it sends towards the relay (request body, or an estimate).
    pub up_bytes: u64,
    /// Bytes it expects back (response body, or an estimate).
    pub down_bytes: u64,
}

impl Unit {
    /// Whether the unit's main direction is towards the relay (an upload).
    pub fn sends_mostly(&self) -> bool {
        self.up_bytes > self.down_bytes
    }
}

/// Where a unit goes: the first path is the primary; further paths carry redundant copies.
/// Empty when no path may carry it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Paths, best first.
    pub paths: Vec<PathId>,
}

impl Placement {
    /// The primary path.
    pub fn primary(&self) -> Option<PathId> {
        self.paths.first().copied()
    }
}

/// A placement policy.
pub trait Scheduler: Send + Sync {
    /// Places `unit` given the current `paths`.
    fn place(&self, unit: &Unit, paths: &[PathView]) -> Placement;

    /// Places `unit` avoiding `exclude` (for re-sending a request whose path died).
    fn place_again(&self, unit: &Unit, paths: &[PathView], exclude: &[PathId]) -> Placement {
        let rest: Vec<PathView> = paths
            .iter()
            .filter(|p| !exclude.contains(&p.id))
            .cloned()
            .collect();
        self.place(unit, &rest)
    }
}

/// The paths allowed for `unit`, cost tiers applied: backup paths only when no primary or
/// secondary path may carry the unit, except for bids and check-ins, which may always use
/// them.
pub fn candidates<'a>(unit: &Unit, paths: &'a [PathView]) -> Vec<&'a PathView> {
    let allowed: Vec<&PathView> = paths.iter().filter(|p| p.allows(unit.class)).collect();
    if unit.class.is_transactional() {
        return allowed;
    }
    let regular: Vec<&PathView> = allowed
        .iter()
        .copied()
        .filter(|p| p.tier != Tier::Backup)
        .collect();
    if regular.is_empty() {
        allowed
    } else {
        regular
    }
}

/// Late binding for bulk: a bulk unit is placed only when some path it may use has less
/// than `horizon` of work queued ahead of it; otherwise the caller holds it and asks again.
/// Paths then never hold more than the horizon plus one unit, so a path that comes back (or
/// speeds up) gets the held work at once instead of watching slow paths drain long queues.
/// With no path at all there is nothing to wait for: the caller fails fast.
pub fn has_room(unit: &Unit, paths: &[PathView], horizon: Duration) -> bool {
    if unit.class != TrafficClass::Bulk {
        return true;
    }
    let c = candidates(unit, paths);
    c.is_empty() || c.iter().any(|p| p.queue_delay(unit) <= horizon)
}

/// Earliest expected completion.
#[derive(Debug, Default, Clone, Copy)]
pub struct MinCompletion;

impl MinCompletion {
    /// The candidates for `unit`, by expected completion, best first.
    pub fn ranked<'a>(unit: &Unit, paths: &'a [PathView]) -> Vec<&'a PathView> {
        let mut c = candidates(unit, paths);
        c.sort_by_key(|p| (p.expected_completion(unit), p.id));
        c
    }
}

impl Scheduler for MinCompletion {
    fn place(&self, unit: &Unit, paths: &[PathView]) -> Placement {
        let ranked = Self::ranked(unit, paths);
        let Some(best) = ranked.first() else {
            return Placement::default();
        };
        let mut pick = best;
        // Bulk keeps every path busy: a path with less than one round of data queued in the
        // unit's main direction would idle, so it takes the unit if it finishes within twice
        // the best time (the unit waits a little longer; the aggregate goes up).
        if unit.class == TrafficClass::Bulk {
            let limit = best.expected_completion(unit) * 2;
            if let Some(idle) = ranked
                .iter()
                .find(|p| p.would_idle(unit) && p.expected_completion(unit) <= limit)
            {
                pick = idle;
            }
        }
        Placement {
            paths: vec![pick.id],
        }
    }
}

/// Redundancy for transactional classes: bids and check-ins go on the `copies` best
/// paths; everything else as the inner policy places it.
#[derive(Debug, Clone, Copy)]
pub struct Redundant<S> {
    inner: S,
    copies: usize,
}

impl<S> Redundant<S> {
    /// Wraps `inner`; transactional units get `copies` paths (2 in the gateway).
    pub fn new(inner: S, copies: usize) -> Self {
        Self {
            inner,
            copies: copies.max(1),
        }
    }
}

impl<S: Scheduler> Scheduler for Redundant<S> {
    fn place(&self, unit: &Unit, paths: &[PathView]) -> Placement {
        if !unit.class.is_transactional() {
            return self.inner.place(unit, paths);
        }
        Placement {
            paths: MinCompletion::ranked(unit, paths)
                .iter()
                .take(self.copies)
                .map(|p| p.id)
                .collect(),
        }
    }
}

/// The gateway's default policy: earliest completion, with bids and check-ins on two paths.
pub fn default_policy() -> Redundant<MinCompletion> {
    Redundant::new(MinCompletion, 2)
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    fn view(id: PathId, usable: bool, tier: Tier) -> PathView {
        PathView {
            id,
            usable,
            tier,
            classes: ClassSet::ALL,
            cap: CapState::Normal,
            srtt: Duration::from_millis(50),
            rate_up: 1e6,
            rate_down: 1e6,
            queued_up: 0,
            queued_down: 0,
            silent: Duration::ZERO,
        }
    }

    fn loss(was_usable: bool, usable: bool, backup: bool, at_peak: bool) -> LossView {
        LossView {
            was_usable,
            usable,
            backup,
            at_peak,
        }
    }

    #[test]
    fn a_lost_path_restarts_the_others_except_backups_and_full_paths() {
        let up = loss(true, true, false, false);
        let lost = loss(true, false, false, false);
        let full = loss(true, true, false, true);
        let backup = loss(true, true, true, false);
        assert!(
            take_over_from_lost(&[up, up, backup]).is_empty(),
            "nothing lost"
        );
        assert_eq!(take_over_from_lost(&[lost, up, backup]), vec![1]);
        assert_eq!(
            take_over_from_lost(&[lost, full, up]),
            vec![2],
            "a path at its best rate gains nothing from searching again"
        );
        assert_eq!(
            take_over_from_lost(&[lost, loss(true, false, false, false), backup]),
            vec![2],
            "no regular path left: the backup takes the load"
        );
    }

    #[test]
    fn probation_stands_in_only_when_no_regular_path_is_up() {
        // cellular cut, Wi-Fi on probation, satellite (backup) up: Wi-Fi carries
        let mut v = vec![
            view(0, false, Tier::Primary),
            view(1, false, Tier::Primary),
            view(2, true, Tier::Backup),
        ];
        fallback_to_probation(&mut v, |id| id == 1);
        assert_eq!(
            v.iter().map(|v| v.usable).collect::<Vec<_>>(),
            [false, true, true]
        );
        // with a regular path up, probation keeps waiting
        let mut v = vec![
            view(0, true, Tier::Primary),
            view(1, false, Tier::Primary),
            view(2, true, Tier::Backup),
        ];
        fallback_to_probation(&mut v, |_| true);
        assert_eq!(
            v.iter().map(|v| v.usable).collect::<Vec<_>>(),
            [true, false, true]
        );
        // a backup on probation is not promoted; a dead path is not either
        let mut v = vec![view(0, false, Tier::Primary), view(1, false, Tier::Backup)];
        fallback_to_probation(&mut v, |id| id == 1);
        assert_eq!(
            v.iter().map(|v| v.usable).collect::<Vec<_>>(),
            [false, false]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{HealthEvent, PathHealth};
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn view(id: PathId, mbps: f64, rtt_ms: u64, tier: Tier) -> PathView {
        PathView {
            id,
            usable: true,
            tier,
            classes: ClassSet::ALL,
            cap: CapState::Normal,
            srtt: Duration::from_millis(rtt_ms),
            rate_up: mbps * 125_000.0,
            rate_down: mbps * 125_000.0,
            queued_up: 0,
            queued_down: 0,
            silent: Duration::ZERO,
        }
    }

    fn upload(bytes: u64) -> Unit {
        Unit {
            class: TrafficClass::Bulk,
            up_bytes: bytes,
            down_bytes: 200,
        }
    }

    /// A fluid simulation of uploads over links: `parallel` transfers of `size` bytes are
    /// kept outstanding; each path drains its queue at its capacity; the scheduler's rate
    /// estimate is the capacity seen through `estimate` (noise). Returns bytes per path.
    struct Sim {
        cap_bps: Vec<f64>,
        paths: Vec<PathView>,
        /// Outstanding transfers: (path, bytes left).
        transfers: Vec<(PathId, f64)>,
        delivered: Vec<f64>,
        now: Duration,
    }

    impl Sim {
        fn new(paths: Vec<PathView>) -> Self {
            let cap_bps = paths.iter().map(|p| p.rate_up).collect();
            let n = paths.len();
            Self {
                cap_bps,
                paths,
                transfers: vec![],
                delivered: vec![0.0; n],
                now: Duration::ZERO,
            }
        }

        fn refresh_queues(&mut self) {
            for p in &mut self.paths {
                p.queued_up = self
                    .transfers
                    .iter()
                    .filter(|(id, _)| *id == p.id)
                    .map(|(_, b)| *b as u64)
                    .sum();
            }
        }

        fn run(
            &mut self,
            sched: &dyn Scheduler,
            parallel: usize,
            size: u64,
            until: Duration,
            mut each_tick: impl FnMut(&mut Sim),
        ) {
            let dt = MS;
            while self.now < until {
                each_tick(self);
                while self.transfers.len() < parallel {
                    self.refresh_queues();
                    let Some(p) = sched.place(&upload(size), &self.paths).primary() else {
                        break;
                    };
                    self.transfers.push((p, size as f64));
                }
                // each path serves its transfers in parallel, sharing its capacity
                for (i, cap) in self.cap_bps.clone().into_iter().enumerate() {
                    let n = self.transfers.iter().filter(|(p, _)| *p == i).count();
                    if n == 0 {
                        continue;
                    }
                    let share = cap * dt.as_secs_f64() / n as f64;
                    for t in self.transfers.iter_mut().filter(|(p, _)| *p == i) {
                        let d = share.min(t.1);
                        t.1 -= d;
                        self.delivered[i] += d;
                    }
                }
                self.transfers.retain(|(_, b)| *b > 0.5);
                self.now += dt;
            }
        }
    }

    #[test]
    fn uploads_split_in_proportion_to_capacity() {
        // 20 / 5 / 2 Mbit/s, as in the bonding bench
        let paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Primary),
            view(2, 2.0, 40, Tier::Primary),
        ];
        let mut sim = Sim::new(paths);
        sim.run(
            &default_policy(),
            12,
            256 * 1024,
            Duration::from_secs(30),
            |_| {},
        );
        let total: f64 = sim.delivered.iter().sum();
        let nominal = 27.0 * 125_000.0 * 30.0;
        assert!(total / nominal > 0.97, "{total} of {nominal}");
        for (i, share) in [20.0 / 27.0, 5.0 / 27.0, 2.0 / 27.0].iter().enumerate() {
            let got = sim.delivered[i] / total;
            assert!((got - share).abs() < 0.03, "path {i}: {got} vs {share}");
        }
    }

    #[test]
    fn a_dead_path_is_avoided_within_the_detection_bound() {
        let t0 = Instant::now();
        let paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Primary),
        ];
        let mut healths = vec![PathHealth::new(), PathHealth::new()];
        for h in &mut healths {
            h.on_connected(t0, 50 * MS);
        }
        let cut = Duration::from_secs(5);
        let mut last_placed_on_dead: Option<Duration> = None;
        let mut sim = Sim::new(paths);
        let mut down_at = None;
        sim.run(
            &default_policy(),
            12,
            64 * 1024,
            Duration::from_secs(10),
            |s| {
                let now = t0 + s.now;
                for (i, h) in healths.iter_mut().enumerate() {
                    // echoes of probes sent one RTT ago; path 0 silent after the cut
                    let alive = i != 0 || s.now < cut + 50 * MS;
                    if alive && s.now >= 50 * MS {
                        h.on_echo(now, now - 50 * MS);
                    }
                    h.on_stats(now, 50 * MS, 5 * MS, 10, 0);
                    if let Some(HealthEvent::Silent { .. }) = h.poll(now) {
                        down_at = Some(s.now);
                    }
                    s.paths[i].usable = h.is_usable();
                }
                if s.paths[0].usable && s.now >= cut {
                    last_placed_on_dead = Some(s.now);
                }
                // the dead link delivers nothing
                if s.now >= cut {
                    s.cap_bps[0] = 0.0;
                }
            },
        );
        let down_at = down_at.expect("path 0 declared down");
        assert!(down_at - cut <= 300 * MS, "down after {:?}", down_at - cut);
        assert!(last_placed_on_dead.is_none_or(|t| t < down_at));
        // after detection only path 1 received new work: it delivered ~5 s at 5 Mbit/s
        assert!(sim.delivered[1] > 4.0 * 5.0 * 125_000.0);
    }

    #[test]
    fn the_backup_tier_stays_unused_while_primaries_have_room() {
        let paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Secondary),
            view(2, 50.0, 10, Tier::Backup),
        ];
        let mut sim = Sim::new(paths);
        sim.run(
            &default_policy(),
            12,
            64 * 1024,
            Duration::from_secs(10),
            |_| {},
        );
        assert_eq!(sim.delivered[2], 0.0);
        assert!(
            sim.delivered[1] > 0.0,
            "secondary carries some: {:?}",
            sim.delivered
        );
        // when the primary and secondary go away, the backup takes the traffic
        let mut sim = Sim::new(vec![
            PathView {
                usable: false,
                ..view(0, 20.0, 50, Tier::Primary)
            },
            view(1, 2.0, 300, Tier::Backup),
        ]);
        sim.cap_bps = vec![0.0, 2.0 * 125_000.0];
        sim.run(
            &default_policy(),
            4,
            64 * 1024,
            Duration::from_secs(5),
            |_| {},
        );
        assert!(sim.delivered[1] > 0.0);
    }

    #[test]
    fn bids_go_on_the_two_best_paths_including_backup() {
        let mut paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Primary),
            view(2, 2.0, 600, Tier::Backup),
        ];
        let bid = Unit {
            class: TrafficClass::Bid,
            up_bytes: 300,
            down_bytes: 300,
        };
        assert_eq!(default_policy().place(&bid, &paths).paths, vec![1, 0]);
        // bids go ahead of queued bulk data: a full queue does not move them
        paths[1].queued_up = 2_000_000;
        assert_eq!(default_policy().place(&bid, &paths).paths, vec![1, 0]);
        // a path down moves them to the others, the backup included
        paths[1].usable = false;
        assert_eq!(default_policy().place(&bid, &paths).paths, vec![0, 2]);
        paths[1].usable = true;
        // the backup carries bids when it is the only path left
        paths[0].usable = false;
        paths[1].usable = false;
        assert_eq!(default_policy().place(&bid, &paths).paths, vec![2]);
        // bulk uses the backup then too; nothing usable: no placement
        assert_eq!(default_policy().place(&upload(10), &paths).paths, vec![2]);
        paths[2].usable = false;
        assert!(default_policy().place(&bid, &paths).paths.is_empty());
    }

    #[test]
    fn caps_and_class_restrictions_are_honoured() {
        let mut paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Primary),
        ];
        paths[0].cap = CapState::Exhausted;
        paths[1].classes = ClassSet::of(&[TrafficClass::Bid, TrafficClass::Checkin]);
        assert!(default_policy().place(&upload(10), &paths).paths.is_empty());
        let checkin = Unit {
            class: TrafficClass::Checkin,
            up_bytes: 100,
            down_bytes: 100,
        };
        assert_eq!(default_policy().place(&checkin, &paths).paths, vec![1, 0]);
        paths[0].cap = CapState::Warn;
        assert_eq!(default_policy().place(&upload(10), &paths).paths, vec![0]);
    }

    #[test]
    fn bulk_waits_for_room_and_bids_never_do() {
        let mut paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 2.0, 40, Tier::Primary),
        ];
        let h = Duration::from_millis(500);
        assert!(has_room(&upload(1_000_000), &paths, h));
        // 2 s of data queued on the fast path, 4 s on the slow one: hold bulk
        paths[0].queued_up = 5_000_000;
        paths[1].queued_up = 1_000_000;
        assert!(!has_room(&upload(1_000_000), &paths, h));
        let bid = Unit {
            class: TrafficClass::Bid,
            up_bytes: 300,
            down_bytes: 300,
        };
        assert!(has_room(&bid, &paths, h));
        // the fast path drains below the horizon: room again
        paths[0].queued_up = 1_000_000;
        assert!(has_room(&upload(1_000_000), &paths, h));
        // no path at all: nothing to wait for
        paths[0].usable = false;
        paths[1].usable = false;
        assert!(has_room(&upload(1_000_000), &paths, h));
    }

    #[test]
    fn place_again_avoids_the_dead_path() {
        let paths = vec![
            view(0, 20.0, 50, Tier::Primary),
            view(1, 5.0, 16, Tier::Primary),
        ];
        let p = MinCompletion.place_again(&upload(1_000_000), &paths, &[0]);
        assert_eq!(p.paths, vec![1]);
    }
}
