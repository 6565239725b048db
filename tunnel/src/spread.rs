//! Where the pieces of one transfer go: a striped body's chunks and a pulled body's chunk
//! requests. Sans-IO, over the scheduler's [`PathView`]s.
//!
//! Each transfer has a *primary* path, chosen so that transfers spread over the paths in
//! proportion to their capacity (fewest transfers per rate): a path that dies then holds up
//! only its share of them. A piece goes to the primary while it has room; any other path
//! takes pieces only when it is about to run dry, so every path stays busy without one
//! slow path holding the transfer's in-order delivery. A transfer moves to a much less
//! loaded primary (a path that came back) within a piece.

use crate::scheduler::{candidates, PathId, PathView, Unit};
use crate::TrafficClass;
use std::time::Duration;

/// The paths that may carry `unit` now with less than `horizon` (or `rtts` of the path's
/// round trips, if longer: a path in slow start doubles its window each round) queued in
/// its main direction, soonest completion first.
pub fn with_room(unit: &Unit, views: &[PathView], horizon: Duration, rtts: u32) -> Vec<PathId> {
    soonest(unit, views, |v| horizon.max(v.srtt * rtts))
}

/// The paths that may carry `unit` now with less than `horizon` queued in its main
/// direction beyond one round trip, soonest completion first: what a pulled chunk waits
/// for counts from its request, so a path needs a round trip's worth asked for ahead to
/// stay busy.
pub fn with_room_after_rtt(unit: &Unit, views: &[PathView], horizon: Duration) -> Vec<PathId> {
    soonest(unit, views, |v| horizon + v.srtt)
}

/// How many bytes of a transfer its primary path sends before a piece of `unit` placed on
/// `path` now would arrive, when `path` is another: the piece takes its offset that far
/// beyond the transfer's bytes not sent yet, so it arrives about when the relay's in-order
/// front reaches it instead of holding the front. (MPTCP's ECF and BLEST schedulers meet
/// the same problem by leaving the slow path idle; a striped body can be sent out of order
/// instead.) `share` is the part of the primary's rate the transfer gets (one over the
/// transfers it is primary for). Measured before this, in network namespaces: a single
/// upload's chunk on a 2 Mbit/s path arrived 340 ms after it was placed, the 20 Mbit/s
/// primary's within 100 ms, and the front waited 0.26-0.34 s for it without any fault.
pub fn lead(unit: &Unit, path: PathId, primary: PathId, views: &[PathView], share: f64) -> u64 {
    if path == primary {
        return 0;
    }
    let find = |id: PathId| views.iter().find(|v| v.id == id);
    let (Some(p), Some(q)) = (find(path), find(primary)) else {
        return 0;
    };
    if !q.usable {
        return 0;
    }
    let (bytes, p_rate, q_rate) = if unit.sends_mostly() {
        (unit.up_bytes, p.rate_up, q.rate_up)
    } else {
        (unit.down_bytes, p.rate_down, q.rate_down)
    };
    let arrives = p.queue_delay(unit).as_secs_f64()
        + bytes as f64 / p_rate.max(1.0)
        + p.srtt.as_secs_f64() / 2.0;
    let starts = q.queue_delay(unit).as_secs_f64() + q.srtt.as_secs_f64() / 2.0;
    let lead = q_rate.max(0.0) * share.clamp(0.0, 1.0) * (arrives - starts).max(0.0);
    if lead.is_finite() {
        lead as u64
    } else {
        0
    }
}

fn soonest(unit: &Unit, views: &[PathView], limit: impl Fn(&PathView) -> Duration) -> Vec<PathId> {
    let mut c: Vec<&PathView> = candidates(unit, views)
        .into_iter()
        .filter(|v| v.usable && v.queue_delay(unit) <= limit(v))
        .collect();
    c.sort_by_key(|v| (v.expected_completion(unit), v.id));
    c.iter().map(|v| v.id).collect()
}

/// Transfers per rate on `v` with `extra` more, `transfers(id)` being how many have it as
/// their primary now.
fn load(v: &PathView, transfers: &impl Fn(PathId) -> usize, extra: f64) -> f64 {
    (transfers(v.id) as f64 + extra) / v.rate_up.max(1.0)
}

/// The primary path for a new transfer of `class`: among the usable paths that may carry
/// it, the one with the fewest transfers for its rate.
pub fn primary(
    class: TrafficClass,
    views: &[PathView],
    transfers: impl Fn(PathId) -> usize,
) -> Option<PathId> {
    let unit = Unit {
        class,
        up_bytes: 1,
        down_bytes: 0,
    };
    candidates(&unit, views)
        .into_iter()
        .filter(|v| v.usable)
        .min_by(|a, b| load(a, &transfers, 1.0).total_cmp(&load(b, &transfers, 1.0)))
        .map(|v| v.id)
}

/// A much less loaded primary for a transfer whose primary is `current`: one whose load
/// after the move is under half of `current`'s.
pub fn better_primary(
    class: TrafficClass,
    views: &[PathView],
    transfers: impl Fn(PathId) -> usize,
    current: PathId,
) -> Option<PathId> {
    let best = primary(class, views, &transfers)?;
    let view = |id: PathId| views.iter().find(|v| v.id == id);
    let (Some(b), cur) = (view(best), view(current)) else {
        return None;
    };
    if best == current {
        return None;
    }
    match cur {
        // the current primary is gone from the views: any usable one is better
        None => Some(best),
        Some(c) => (load(c, &transfers, 0.0) > 2.0 * load(b, &transfers, 1.0)).then_some(best),
    }
}

/// A path that answered no probe for this long is treated as lost for the pieces it
/// carries (the bond calls it down only later), as live media does.
pub const SILENT_AFTER: Duration = Duration::from_millis(100);

/// The usable paths silent for [`SILENT_AFTER`] or longer, whose pieces go again elsewhere
/// and which take no new ones. None while no usable path answers: every path silent at
/// once is the relay or this box pausing, not a cut link, and sending again would only
/// move the pieces from one silent path to another. If it was only a lost burst of probes,
/// the first copy of each byte wins.
pub fn silent_paths(views: &[PathView]) -> Vec<PathId> {
    let some_answer = views.iter().any(|v| v.usable && v.silent < SILENT_AFTER);
    if !some_answer {
        return Vec::new();
    }
    views
        .iter()
        .filter(|v| v.usable && v.silent >= SILENT_AFTER)
        .map(|v| v.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{CapState, Tier};
    use crate::scheduler::ClassSet;

    fn view(id: PathId, mbps: f64, rtt_ms: u64, queued_ms: u64) -> PathView {
        let rate = mbps * 1e6 / 8.0;
        PathView {
            id,
            usable: true,
            tier: Tier::Primary,
            classes: ClassSet::ALL,
            cap: CapState::Normal,
            srtt: Duration::from_millis(rtt_ms),
            rate_up: rate,
            rate_down: rate,
            queued_up: (rate * queued_ms as f64 / 1000.0) as u64,
            queued_down: (rate * queued_ms as f64 / 1000.0) as u64,
            silent: Duration::ZERO,
        }
    }

    fn chunk(up: bool) -> Unit {
        Unit {
            class: TrafficClass::Bulk,
            up_bytes: if up { 128 * 1024 } else { 0 },
            down_bytes: if up { 0 } else { 128 * 1024 },
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn silent_paths_are_those_gone_quiet_while_another_answers() {
        let mut v = vec![
            view(0, 20.0, 50, 0),
            view(1, 5.0, 16, 0),
            view(2, 2.0, 40, 0),
        ];
        assert!(silent_paths(&v).is_empty(), "all answering");
        v[0].silent = SILENT_AFTER;
        v[1].silent = SILENT_AFTER - MS;
        assert_eq!(silent_paths(&v), vec![0]);
        v[2].usable = false;
        v[2].silent = 10 * SILENT_AFTER;
        assert_eq!(
            silent_paths(&v),
            vec![0],
            "an unusable path is none of its business"
        );
        v[1].silent = SILENT_AFTER;
        assert!(
            silent_paths(&v).is_empty(),
            "every usable path silent at once: a pause, not a cut"
        );
    }

    #[test]
    fn a_slow_paths_piece_leads_by_what_the_primary_sends_before_it_arrives() {
        // primary 20 Mbit/s, 50 ms RTT, 40 ms queued: its next bytes arrive after 65 ms;
        // 2 Mbit/s, 40 ms RTT, 160 ms queued: a 40 kB piece arrives after 160 + 160 + 20
        let v = vec![view(0, 20.0, 50, 40), view(2, 2.0, 40, 160)];
        let piece = Unit {
            class: TrafficClass::Bulk,
            up_bytes: 40_000,
            down_bytes: 0,
        };
        let lead = super::lead(&piece, 2, 0, &v, 1.0);
        // 2.5 MB/s over 275 ms
        assert!((685_000..=690_000).contains(&lead), "{lead}");
        let half = super::lead(&piece, 2, 0, &v, 0.5);
        assert!(half.abs_diff(lead / 2) <= 1, "a shared primary: {half}");
        assert_eq!(super::lead(&piece, 0, 0, &v, 1.0), 0, "the primary itself");
        assert_eq!(super::lead(&piece, 2, 7, &v, 1.0), 0, "no such primary");
        let mut gone = v.clone();
        gone[0].usable = false;
        assert_eq!(
            super::lead(&piece, 2, 0, &gone, 1.0),
            0,
            "a primary not usable"
        );
    }

    #[test]
    fn room_is_the_horizon_or_a_few_round_trips_soonest_first() {
        // 20 Mbit/s with 80 ms queued, 5 Mbit/s with 20 ms, 2 Mbit/s with 300 ms
        let v = vec![
            view(0, 20.0, 50, 80),
            view(1, 5.0, 16, 20),
            view(2, 2.0, 40, 300),
        ];
        assert_eq!(with_room(&chunk(true), &v, 100 * MS, 0), vec![0, 1]);
        // a path about to run dry: only the Wi-Fi one
        assert_eq!(with_room(&chunk(true), &v, 40 * MS, 0), vec![1]);
        // two round trips of the cellular path (100 ms) make room for it too
        assert_eq!(with_room(&chunk(true), &v, 40 * MS, 2), vec![0, 1]);
        // a down path has no room
        let mut down = v.clone();
        down[1].usable = false;
        assert_eq!(with_room(&chunk(true), &down, 100 * MS, 0), vec![0]);
    }

    #[test]
    fn a_pull_counts_room_beyond_one_round_trip() {
        // 120 ms asked for on a 50 ms path: 70 ms beyond its round trip
        let v = vec![view(0, 20.0, 50, 120), view(1, 5.0, 16, 200)];
        assert_eq!(with_room_after_rtt(&chunk(false), &v, 100 * MS), vec![0]);
        assert!(with_room_after_rtt(&chunk(false), &v, 60 * MS).is_empty());
    }

    #[test]
    fn transfers_spread_over_the_paths_by_capacity() {
        // 20 and 5 Mbit/s: eight new transfers in a row go 4:1 or so
        let v = vec![view(0, 20.0, 50, 0), view(1, 5.0, 16, 0)];
        let mut on = [0usize; 2];
        for _ in 0..10 {
            let p = primary(TrafficClass::Bulk, &v, |id| on[id]).expect("a primary");
            on[p] += 1;
        }
        assert_eq!(on, [8, 2]);
        // a backup-tier path is no primary while a regular one is up
        let mut b = v.clone();
        b.push(PathView {
            tier: Tier::Backup,
            ..view(2, 50.0, 10, 0)
        });
        assert_ne!(primary(TrafficClass::Bulk, &b, |_| 0), Some(2));
    }

    #[test]
    fn a_transfer_moves_only_to_a_much_less_loaded_path() {
        let v = vec![view(0, 20.0, 50, 0), view(1, 20.0, 50, 0)];
        // 3 on path 0, 2 on path 1: not worth a move
        let counts = [3usize, 2];
        assert_eq!(
            better_primary(TrafficClass::Bulk, &v, |id| counts[id], 0),
            None
        );
        // path 1 came back empty: 3 against 0+1 moves
        let counts = [3usize, 0];
        assert_eq!(
            better_primary(TrafficClass::Bulk, &v, |id| counts[id], 0),
            Some(1)
        );
        // the current primary is not among the paths any more: any usable one
        assert_eq!(
            better_primary(TrafficClass::Bulk, &v[1..], |_| 1, 0),
            Some(1)
        );
    }
}
