//! The last minutes of every uplink, one point a second: what the status page draws and
//! what `canopy status` sums up. Sans-IO: the shell hands in readings with the time they
//! were taken (several a second); a second's readings become one point (rates averaged,
//! the worst loss, the last RTT and state). Bounded: `keep` points per link.

use serde::Serialize;
use std::collections::VecDeque;

/// One reading of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Goodput towards the relay, bits/s.
    pub up_bps: f64,
    /// Goodput from the relay, bits/s.
    pub down_bps: f64,
    /// Smoothed RTT, ms.
    pub srtt_ms: f64,
    /// Loss estimate, 0..1.
    pub loss: f64,
    /// Its health (`Health::as_str`).
    pub state: &'static str,
    /// It may carry new work.
    pub usable: bool,
}

/// One second of a link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The second (Unix time).
    pub at_s: u64,
    /// Mean goodput towards the relay over the second, bits/s.
    pub up_bps: f64,
    /// Mean goodput from the relay, bits/s.
    pub down_bps: f64,
    /// The RTT at the second's end, ms.
    pub srtt_ms: f64,
    /// The worst loss estimate of the second.
    pub loss: f64,
    /// The state at the second's end.
    pub state: &'static str,
    /// Usable at the second's end.
    pub usable: bool,
}

#[derive(Debug)]
struct Open {
    at_s: u64,
    n: u32,
    up: f64,
    down: f64,
    last: Reading,
    loss: f64,
}

impl Open {
    fn new(at_s: u64, r: Reading) -> Self {
        Self {
            at_s,
            n: 1,
            up: r.up_bps,
            down: r.down_bps,
            last: r,
            loss: r.loss,
        }
    }

    fn add(&mut self, r: Reading) {
        self.n += 1;
        self.up += r.up_bps;
        self.down += r.down_bps;
        self.loss = self.loss.max(r.loss);
        self.last = r;
    }

    fn point(&self) -> Point {
        let n = f64::from(self.n);
        Point {
            at_s: self.at_s,
            up_bps: self.up / n,
            down_bps: self.down / n,
            srtt_ms: self.last.srtt_ms,
            loss: self.loss,
            state: self.last.state,
            usable: self.last.usable,
        }
    }
}

#[derive(Debug)]
struct Link {
    name: String,
    points: VecDeque<Point>,
    open: Option<Open>,
}

/// Every link's last `keep` seconds.
#[derive(Debug)]
pub struct History {
    keep: usize,
    links: Vec<Link>,
}

impl History {
    /// For links named `names` (in the bond's order), `keep` seconds each.
    pub fn new(names: impl IntoIterator<Item = String>, keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            links: names
                .into_iter()
                .map(|name| Link {
                    name,
                    points: VecDeque::new(),
                    open: None,
                })
                .collect(),
        }
    }

    /// A reading of link `i` taken at `at_ms` (Unix ms). A reading from an earlier second
    /// than the one open (the wall clock stepped back) starts that second afresh.
    pub fn observe(&mut self, i: usize, at_ms: u64, r: Reading) {
        let keep = self.keep;
        let Some(l) = self.links.get_mut(i) else {
            return;
        };
        let at_s = at_ms / 1000;
        match &mut l.open {
            Some(o) if o.at_s == at_s => o.add(r),
            open => {
                if let Some(o) = open.take() {
                    let p = o.point();
                    // a clock stepped back: what is newer than the new second goes
                    while l.points.back().is_some_and(|b| b.at_s >= p.at_s) {
                        l.points.pop_back();
                    }
                    l.points.push_back(p);
                    while l.points.len() > keep {
                        l.points.pop_front();
                    }
                }
                while l.points.back().is_some_and(|b| b.at_s >= at_s) {
                    l.points.pop_back();
                }
                *open = Some(Open::new(at_s, r));
            }
        }
    }

    /// The newest closed second of any link.
    pub fn newest(&self) -> Option<u64> {
        self.links
            .iter()
            .filter_map(|l| l.points.back().map(|p| p.at_s))
            .max()
    }

    /// Every link's closed seconds after `after_s` (Unix seconds), oldest first.
    pub fn since(&self, after_s: u64) -> Vec<(&str, Vec<Point>)> {
        self.links
            .iter()
            .map(|l| {
                let pts = l
                    .points
                    .iter()
                    .filter(|p| p.at_s > after_s)
                    .copied()
                    .collect();
                (l.name.as_str(), pts)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(up: f64, loss: f64, state: &'static str) -> Reading {
        Reading {
            up_bps: up,
            down_bps: up / 2.0,
            srtt_ms: 40.0,
            loss,
            state,
            usable: state == "up",
        }
    }

    #[test]
    fn a_seconds_readings_make_one_point() {
        let mut h = History::new(["cell".to_string(), "wifi".to_string()], 300);
        let t0 = 1_800_000_000_000;
        for (i, up) in [4e6, 6e6, 2e6, 8e6].into_iter().enumerate() {
            h.observe(0, t0 + 250 * i as u64, r(up, 0.01 * i as f64, "up"));
        }
        // the second is still open: nothing to show yet
        assert!(h.since(0)[0].1.is_empty());
        h.observe(0, t0 + 1000, r(1e6, 0.0, "down"));
        let got = h.since(0);
        assert_eq!(got[0].0, "cell");
        let p = got[0].1[0];
        assert_eq!(p.at_s, t0 / 1000);
        assert_eq!(p.up_bps, 5e6);
        assert_eq!(p.down_bps, 2.5e6);
        assert!((p.loss - 0.03).abs() < 1e-9, "the worst loss: {}", p.loss);
        assert_eq!((p.state, p.usable), ("up", true));
        assert!(got[1].1.is_empty(), "the other link saw nothing");
        // an unknown link is ignored
        h.observe(7, t0, r(1.0, 0.0, "up"));
    }

    #[test]
    fn it_keeps_only_the_last_seconds_and_answers_after_a_second() {
        let mut h = History::new(["cell".to_string()], 60);
        let t0 = 1_800_000_000_000u64;
        for s in 0..200u64 {
            h.observe(0, t0 + s * 1000, r(s as f64, 0.0, "up"));
        }
        let all = &h.since(0)[0].1;
        assert_eq!(all.len(), 60);
        assert_eq!(all[0].at_s, t0 / 1000 + 139);
        assert_eq!(all[59].at_s, t0 / 1000 + 198);
        let newer = &h.since(t0 / 1000 + 195)[0].1;
        assert_eq!(
            newer.iter().map(|p| p.up_bps).collect::<Vec<_>>(),
            [196.0, 197.0, 198.0]
        );
    }

    #[test]
    fn a_clock_that_steps_back_never_leaves_points_out_of_order() {
        let mut h = History::new(["cell".to_string()], 60);
        let t0 = 1_800_000_000_000u64;
        for s in 0..10u64 {
            h.observe(0, t0 + s * 1000, r(1.0, 0.0, "up"));
        }
        h.observe(0, t0 + 4000, r(2.0, 0.0, "up"));
        h.observe(0, t0 + 5000, r(3.0, 0.0, "up"));
        let pts = &h.since(0)[0].1;
        assert!(pts.windows(2).all(|w| w[0].at_s < w[1].at_s), "{pts:?}");
        assert_eq!(
            pts.last().map(|p| (p.at_s, p.up_bps)),
            Some((t0 / 1000 + 4, 2.0))
        );
    }
}
