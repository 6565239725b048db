//! Delta telemetry's two ends, sans-IO (the format is [`crate::wire::telemetry`]).
//!
//! The gateway's [`Reporter`] sends what changed since the last summary the relay *took*,
//! so a lost report or answer costs nothing but a longer next report; a whole summary
//! goes first, when the relay asks for one, and every [`FULL_EVERY`].
//!
//! The relay's [`Fleet`] applies reports per gateway, knows which gateways are online
//! (a report within [`Fleet::offline_after`], and a connection), and keeps each one's
//! last hour as points every [`POINT_EVERY`]. Bounded: at most [`MAX_GATEWAYS`] gateways,
//! each summary within the format's key limits, a gateway silent for the kept hour
//! forgotten.

use crate::wire::telemetry::{Report, Summary, MAX_KEYS};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A whole summary at least this often, whatever the relay says.
pub const FULL_EVERY: Duration = Duration::from_secs(600);
/// Time between the points of a gateway's hour.
pub const POINT_EVERY: Duration = Duration::from_secs(10);
/// How long a gateway's points, and a silent gateway, are kept.
pub const KEEP: Duration = Duration::from_secs(3600);
/// Most gateways a relay keeps.
pub const MAX_GATEWAYS: usize = 1024;

/// The gateway's end.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The last summary the relay took, and its number.
    taken: Option<(u64, Summary)>,
    /// The report in flight: its number and the summary it makes.
    sent: Option<(u64, Summary)>,
    last_seq: u64,
    last_full: Option<Instant>,
}

impl Reporter {
    /// Nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The report that brings the relay from the summary it took to `current`.
    pub fn report(&mut self, now: Instant, current: Summary) -> Report {
        self.last_seq += 1;
        let full_due = self
            .last_full
            .is_none_or(|t| now.saturating_duration_since(t) >= FULL_EVERY);
        let report = match (&self.taken, full_due) {
            (Some((base, before)), false) => Report {
                seq: self.last_seq,
                base: *base,
                set: current
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                removed: before
                    .keys()
                    .filter(|k| !current.contains_key(*k))
                    .cloned()
                    .collect(),
            },
            _ => {
                self.last_full = Some(now);
                Report {
                    seq: self.last_seq,
                    base: 0,
                    set: current
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    removed: Vec::new(),
                }
            }
        };
        self.sent = Some((self.last_seq, current));
        report
    }

    /// The relay took report `seq`.
    pub fn taken(&mut self, seq: u64) {
        if let Some((s, summary)) = self.sent.take() {
            if s == seq {
                self.taken = Some((s, summary));
            } else {
                self.sent = Some((s, summary));
            }
        }
    }

    /// The relay asked for a whole summary.
    pub fn want_full(&mut self) {
        self.taken = None;
        self.last_full = None;
    }
}

/// Why the fleet did not apply a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It changes a summary the relay does not hold: send a whole one.
    WantFull,
    /// The relay keeps [`MAX_GATEWAYS`] gateways already.
    Full,
}

/// A point of a gateway's hour.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// Unix seconds.
    pub at: u64,
    /// Goodput up, all links, kbit/s.
    pub up_kbps: f64,
    /// Goodput down, all links, kbit/s.
    pub down_kbps: f64,
    /// Links up.
    pub links_up: u32,
    /// Online then.
    pub online: bool,
}

/// One gateway, as the relay knows it.
#[derive(Debug)]
pub struct Gateway {
    /// Its summary as last reported.
    pub summary: Summary,
    seq: u64,
    /// When its last report came.
    pub last_report: Option<Instant>,
    /// Whether one of its connections is open.
    pub connected: bool,
    /// When it was last connected or reported.
    last_heard: Instant,
    /// Its hour, oldest first.
    pub points: VecDeque<Point>,
    last_point: Option<Instant>,
    /// Report bytes taken from it.
    pub bytes: u64,
    /// Reports taken from it.
    pub reports: u64,
}

impl Gateway {
    /// Online: connected, with a report within `offline_after`.
    pub fn online(&self, now: Instant, offline_after: Duration) -> bool {
        self.connected
            && self
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) <= offline_after)
    }

    /// A number in its summary (0 when missing).
    pub fn number(&self, key: &str) -> f64 {
        self.summary
            .get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|x| x.is_finite())
            .unwrap_or(0.0)
    }
}

/// Every gateway a relay hears from.
#[derive(Debug)]
pub struct Fleet {
    gateways: BTreeMap<String, Gateway>,
    /// A gateway without a report for longer is offline.
    pub offline_after: Duration,
}

impl Fleet {
    /// No gateway yet; `offline_after` is the silence that makes a gateway offline.
    pub fn new(offline_after: Duration) -> Self {
        Self {
            gateways: BTreeMap::new(),
            offline_after,
        }
    }

    /// Applies `report` from gateway `name` (`bytes`: its body's size).
    pub fn apply(
        &mut self,
        now: Instant,
        name: &str,
        report: &Report,
        bytes: usize,
    ) -> Result<(), Refused> {
        if !self.gateways.contains_key(name) && self.gateways.len() >= MAX_GATEWAYS {
            return Err(Refused::Full);
        }
        let g = self.entry(now, name);
        g.bytes += bytes as u64;
        g.last_heard = now;
        if report.base == 0 {
            g.summary.clear();
        } else if report.base != g.seq {
            return Err(Refused::WantFull);
        }
        for k in &report.removed {
            g.summary.remove(k);
        }
        for (k, v) in &report.set {
            if g.summary.len() >= MAX_KEYS && !g.summary.contains_key(k) {
                // a summary never grows past the format's limit
                g.summary.clear();
                g.seq = 0;
                return Err(Refused::WantFull);
            }
            g.summary.insert(k.clone(), v.clone());
        }
        g.seq = report.seq;
        g.reports += 1;
        g.last_report = Some(now);
        Ok(())
    }

    fn entry(&mut self, now: Instant, name: &str) -> &mut Gateway {
        self.gateways
            .entry(name.to_string())
            .or_insert_with(|| Gateway {
                summary: Summary::new(),
                seq: 0,
                last_report: None,
                connected: false,
                last_heard: now,
                points: VecDeque::new(),
                last_point: None,
                bytes: 0,
                reports: 0,
            })
    }

    /// Whether gateway `name` has a connection open (known gateways only, or ones that may
    /// still join).
    pub fn connected(&mut self, now: Instant, name: &str, connected: bool) {
        if !self.gateways.contains_key(name) && (!connected || self.gateways.len() >= MAX_GATEWAYS)
        {
            return;
        }
        let g = self.entry(now, name);
        g.connected = connected;
        g.last_heard = now;
    }

    /// Adds a point to each gateway's hour when one is due (its first at once; `unix_s`:
    /// the wall clock), and forgets gateways unheard of for [`KEEP`]. Call it every second
    /// or so.
    pub fn tick(&mut self, now: Instant, unix_s: u64) {
        let offline_after = self.offline_after;
        self.gateways
            .retain(|_, g| g.connected || now.saturating_duration_since(g.last_heard) < KEEP);
        let keep = (KEEP.as_secs() / POINT_EVERY.as_secs()) as usize;
        for g in self.gateways.values_mut() {
            if g.last_point
                .is_some_and(|t| now.saturating_duration_since(t) < POINT_EVERY)
            {
                continue;
            }
            g.last_point = Some(now);
            let p = Point {
                at: unix_s,
                up_kbps: g.number("up"),
                down_kbps: g.number("down"),
                links_up: g.number("links_up") as u32,
                online: g.online(now, offline_after),
            };
            if g.points.len() >= keep {
                g.points.pop_front();
            }
            g.points.push_back(p);
        }
    }

    /// Every gateway, by name.
    pub fn gateways(&self) -> impl Iterator<Item = (&String, &Gateway)> {
        self.gateways.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::telemetry::Report;

    fn summary(pairs: &[(&str, &str)]) -> Summary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Sends through the wire format, as the two ends do.
    fn deliver(f: &mut Fleet, now: Instant, r: &Report) -> Result<(), Refused> {
        let body = r.encode();
        let back = Report::decode(body.as_bytes()).unwrap();
        f.apply(now, "door", &back, body.len())
    }

    #[test]
    fn only_what_changed_travels_and_the_relay_ends_with_the_same_summary() {
        let t0 = Instant::now();
        let mut r = Reporter::new();
        let mut f = Fleet::new(Duration::from_secs(3));
        let a = summary(&[
            ("up", "1200"),
            ("l.cell", "up cellular 1200 80 45 0"),
            ("c.cam", "full"),
        ]);
        let first = r.report(t0, a.clone());
        assert_eq!((first.base, first.set.len()), (0, 3));
        deliver(&mut f, t0, &first).unwrap();
        r.taken(first.seq);
        let b = summary(&[("up", "1300"), ("l.cell", "up cellular 1200 80 45 0")]);
        let second = r.report(t0 + Duration::from_secs(1), b.clone());
        assert_eq!(second.base, first.seq);
        assert_eq!(second.set, vec![("up".to_string(), "1300".to_string())]);
        assert_eq!(second.removed, vec!["c.cam".to_string()]);
        deliver(&mut f, t0 + Duration::from_secs(1), &second).unwrap();
        r.taken(second.seq);
        let nothing = r.report(t0 + Duration::from_secs(2), b.clone());
        assert!(nothing.set.is_empty() && nothing.removed.is_empty());
        assert!(nothing.encode().len() < 10);
        assert_eq!(f.gateways().next().unwrap().1.summary, b);
    }

    #[test]
    fn a_lost_answer_costs_a_longer_report_and_a_relay_restart_a_whole_one() {
        let t0 = Instant::now();
        let mut r = Reporter::new();
        let mut f = Fleet::new(Duration::from_secs(3));
        let first = r.report(t0, summary(&[("a", "1"), ("b", "1")]));
        deliver(&mut f, t0, &first).unwrap();
        r.taken(first.seq);
        // taken by the relay, but the answer is lost
        let second = r.report(t0, summary(&[("a", "2"), ("b", "1")]));
        deliver(&mut f, t0, &second).unwrap();
        // the next report is again from the last summary the gateway knows was taken
        let third = r.report(t0, summary(&[("a", "2"), ("b", "2")]));
        assert_eq!(third.base, first.seq);
        assert_eq!(deliver(&mut f, t0, &third), Err(Refused::WantFull));
        r.want_full();
        let fourth = r.report(t0, summary(&[("a", "2"), ("b", "2")]));
        assert_eq!((fourth.base, fourth.set.len()), (0, 2));
        deliver(&mut f, t0, &fourth).unwrap();
        r.taken(fourth.seq);
        // a relay that restarted holds nothing: a delta is refused, a whole one taken
        let mut fresh = Fleet::new(Duration::from_secs(3));
        let fifth = r.report(t0, summary(&[("a", "3"), ("b", "2")]));
        assert_eq!(deliver(&mut fresh, t0, &fifth), Err(Refused::WantFull));
        r.want_full();
        let sixth = r.report(t0, summary(&[("a", "3"), ("b", "2")]));
        deliver(&mut fresh, t0, &sixth).unwrap();
        assert_eq!(
            fresh.gateways().next().unwrap().1.summary,
            summary(&[("a", "3"), ("b", "2")])
        );
    }

    #[test]
    fn a_whole_summary_goes_every_ten_minutes() {
        let t0 = Instant::now();
        let mut r = Reporter::new();
        let s = summary(&[("a", "1")]);
        let first = r.report(t0, s.clone());
        r.taken(first.seq);
        assert_ne!(r.report(t0 + FULL_EVERY / 2, s.clone()).base, 0);
        assert_eq!(r.report(t0 + FULL_EVERY, s).base, 0);
    }

    #[test]
    fn a_gateway_is_offline_when_its_reports_stop_or_its_connections_close() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Duration::from_secs(3));
        f.connected(t0, "door", true);
        let mut r = Reporter::new();
        let rep = r.report(t0, summary(&[("up", "5")]));
        deliver(&mut f, t0, &rep).unwrap();
        let g = |f: &Fleet, at: Instant| f.gateways().next().unwrap().1.online(at, f.offline_after);
        assert!(g(&f, t0 + Duration::from_secs(3)));
        assert!(!g(&f, t0 + Duration::from_millis(3001)));
        f.connected(t0, "door", false);
        assert!(!g(&f, t0));
        // unknown gateways that leave are not made up
        f.connected(t0, "ghost", false);
        assert_eq!(f.gateways().count(), 1);
    }

    #[test]
    fn the_hour_is_kept_in_points_and_a_silent_gateway_forgotten_after_it() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Duration::from_secs(3));
        f.connected(t0, "door", true);
        let mut r = Reporter::new();
        deliver(
            &mut f,
            t0,
            &r.report(t0, summary(&[("up", "5"), ("links_up", "2")])),
        )
        .unwrap();
        for s in 0..2 * 3600 {
            f.tick(t0 + Duration::from_secs(s), s);
        }
        let g = f.gateways().next().unwrap().1;
        assert_eq!(g.points.len(), 360);
        assert_eq!(
            g.points.back().map(|p| (p.up_kbps, p.links_up)),
            Some((5.0, 2))
        );
        // connected, it stays; gone and unheard of for an hour, it goes
        f.connected(t0 + Duration::from_secs(7200), "door", false);
        f.tick(t0 + Duration::from_secs(7210), 7210);
        assert_eq!(f.gateways().count(), 1);
        f.tick(t0 + Duration::from_secs(7200 + 3600), 10_800);
        assert_eq!(f.gateways().count(), 0);
    }

    #[test]
    fn the_relay_keeps_at_most_so_many_gateways_and_keys() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Duration::from_secs(3));
        let whole = Report {
            seq: 1,
            base: 0,
            set: vec![("a".into(), "1".into())],
            removed: vec![],
        };
        for i in 0..MAX_GATEWAYS {
            f.apply(t0, &format!("g{i}"), &whole, 10).unwrap();
        }
        assert_eq!(f.apply(t0, "one-more", &whole, 10), Err(Refused::Full));
        f.connected(t0, "one-more", true);
        assert_eq!(f.gateways().count(), MAX_GATEWAYS);
        // keys added by deltas past the limit make the relay ask for a whole summary
        let mut g = Fleet::new(Duration::from_secs(3));
        g.apply(t0, "door", &whole, 10).unwrap();
        let mut seq = 1;
        let mut refused = false;
        for i in 0..MAX_KEYS + 1 {
            let r = Report {
                seq: seq + 1,
                base: seq,
                set: vec![(format!("k{i}"), "v".into())],
                removed: vec![],
            };
            match g.apply(t0, "door", &r, 10) {
                Ok(()) => seq += 1,
                Err(e) => {
                    assert_eq!(e, Refused::WantFull);
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        assert!(g.gateways().next().unwrap().1.summary.len() <= MAX_KEYS);
    }
}
