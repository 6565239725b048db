//! Delta telemetry's two ends, sans-IO (the format is [`crate::wire::telemetry`]).
//!
//! The gateway's [`Reporter`] sends what changed since the last summary the relay *took*;
//! the relay keeps that one and the one before, so a lost report or answer costs nothing
//! but a longer next report. A whole summary goes first, when the relay asks for one, and
//! every [`FULL_EVERY`]. Each reporter has a random epoch: a delta applies only onto a
//! summary of its own epoch, so two processes with one certificate never mix.
//!
//! The relay's [`Fleet`] applies reports per gateway, knows which gateways are online
//! (a connection open, and a report within [`Fleet::offline_after`] or three of the
//! gateway's own intervals, whichever is longer), and keeps each one's last hour as
//! points every [`POINT_EVERY`]. Bounded: at most [`MAX_GATEWAYS`] gateways,
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
#[derive(Debug)]
pub struct Reporter {
    epoch: u64,
    every: Duration,
    /// The last summary the relay took, and its number.
    taken: Option<(u64, Summary)>,
    /// The report in flight: its number and the summary it makes.
    sent: Option<(u64, Summary)>,
    last_seq: u64,
    last_full: Option<Instant>,
}

impl Reporter {
    /// Nothing sent yet; `epoch` a random number of this process, `every` the time
    /// between reports.
    pub fn new(epoch: u64, every: Duration) -> Self {
        Self {
            epoch,
            every,
            taken: None,
            sent: None,
            last_seq: 0,
            last_full: None,
        }
    }

    /// The report that brings the relay from the summary it took to `current`.
    pub fn report(&mut self, now: Instant, current: Summary) -> Report {
        self.last_seq += 1;
        let full_due = self
            .last_full
            .is_none_or(|t| now.saturating_duration_since(t) >= FULL_EVERY);
        let (epoch, every_ms) = (self.epoch, self.every.as_millis() as u64);
        let report = match (&self.taken, full_due) {
            (Some((base, before)), false) => Report {
                epoch,
                every_ms,
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
                    epoch,
                    every_ms,
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
    /// Older than the report it holds from the same process (it arrived after a newer
    /// one, which the gateway sent when this one went unanswered): ignored.
    Stale,
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
    /// The reporting process's epoch.
    epoch: u64,
    seq: u64,
    /// The summary before (its number and keys): a report whose answer was lost leaves
    /// the gateway on it.
    before: Option<(u64, Summary)>,
    /// Its time between reports.
    every: Duration,
    /// When its last report came.
    pub last_report: Option<Instant>,
    /// Its connections open.
    pub connections: u32,
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
    /// Online: connected, with a report within `offline_after` or three of its own
    /// intervals, whichever is longer.
    pub fn online(&self, now: Instant, offline_after: Duration) -> bool {
        let patience = offline_after.max(self.every * 3);
        self.connections > 0
            && self
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) <= patience)
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
    /// Open connections of gateways not kept (the fleet was full when they connected), so
    /// one admitted later is online at once. As many entries as such connections at most.
    unkept: BTreeMap<String, u32>,
    /// A gateway without a report for longer is offline.
    pub offline_after: Duration,
}

impl Fleet {
    /// No gateway yet; `offline_after` is the silence that makes a gateway offline.
    pub fn new(offline_after: Duration) -> Self {
        Self {
            gateways: BTreeMap::new(),
            unkept: BTreeMap::new(),
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
        let same_process = report.epoch == g.epoch && g.seq != 0;
        if same_process && report.seq <= g.seq {
            return Err(Refused::Stale);
        }
        let mut next = if report.base == 0 {
            Summary::new()
        } else if report.epoch != g.epoch {
            return Err(Refused::WantFull);
        } else if report.base == g.seq {
            g.summary.clone()
        } else if let Some((_, s)) = g.before.as_ref().filter(|(b, _)| *b == report.base) {
            s.clone()
        } else {
            return Err(Refused::WantFull);
        };
        for k in &report.removed {
            next.remove(k);
        }
        for (k, v) in &report.set {
            if next.len() >= MAX_KEYS && !next.contains_key(k) {
                // a summary never grows past the format's limit
                return Err(Refused::WantFull);
            }
            next.insert(k.clone(), v.clone());
        }
        // the summary replaced stays as `before` while the gateway may still build on it
        // (its answer lost); a delta on `before` itself leaves `before` as it is
        if !same_process {
            g.before = None;
        } else if report.base == 0 || report.base == g.seq {
            g.before = Some((g.seq, std::mem::take(&mut g.summary)));
        }
        g.summary = next;
        g.epoch = report.epoch;
        g.seq = report.seq;
        g.every = Duration::from_millis(report.every_ms.min(60_000));
        g.reports += 1;
        g.last_report = Some(now);
        Ok(())
    }

    fn entry(&mut self, now: Instant, name: &str) -> &mut Gateway {
        let unkept = &mut self.unkept;
        self.gateways
            .entry(name.to_string())
            .or_insert_with(|| Gateway {
                summary: Summary::new(),
                epoch: 0,
                seq: 0,
                before: None,
                every: Duration::ZERO,
                last_report: None,
                connections: unkept.remove(name).unwrap_or(0),
                last_heard: now,
                points: VecDeque::new(),
                last_point: None,
                bytes: 0,
                reports: 0,
            })
    }

    /// A connection of gateway `name` opened (a gateway past [`MAX_GATEWAYS`] is not
    /// kept, only its connections counted until it is).
    pub fn opened(&mut self, now: Instant, name: &str) {
        if !self.gateways.contains_key(name) && self.gateways.len() >= MAX_GATEWAYS {
            *self.unkept.entry(name.to_string()).or_default() += 1;
            return;
        }
        let g = self.entry(now, name);
        g.connections += 1;
        g.last_heard = now;
    }

    /// A connection of gateway `name` closed.
    pub fn closed(&mut self, now: Instant, name: &str) {
        if let Some(g) = self.gateways.get_mut(name) {
            g.connections = g.connections.saturating_sub(1);
            g.last_heard = now;
        } else if let Some(n) = self.unkept.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.unkept.remove(name);
            }
        }
    }

    /// Adds a point to each gateway's hour when one is due (its first at once; `unix_s`:
    /// the wall clock), and forgets gateways unheard of for [`KEEP`]. Call it every second
    /// or so.
    pub fn tick(&mut self, now: Instant, unix_s: u64) {
        let offline_after = self.offline_after;
        self.gateways
            .retain(|_, g| g.connections > 0 || now.saturating_duration_since(g.last_heard) < KEEP);
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

    /// A gateway's reporter and the relay's fleet after the first (whole) summary of
    /// `pairs` was taken; the time it was sent and its number.
    fn started(pairs: &[(&str, &str)]) -> (Instant, Reporter, Fleet, u64) {
        let t0 = Instant::now();
        let mut r = Reporter::new(7, Duration::from_secs(1));
        let mut f = Fleet::new(Duration::from_secs(3));
        let first = r.report(t0, summary(pairs));
        deliver(&mut f, t0, &first).unwrap();
        r.taken(first.seq);
        (t0, r, f, first.seq)
    }

    #[test]
    fn only_what_changed_travels_and_the_relay_ends_with_the_same_summary() {
        let t0 = Instant::now();
        let mut r = Reporter::new(7, Duration::from_secs(1));
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
        // the first line alone
        assert_eq!(
            nothing.encode(),
            format!("7 {} {} 1000\n", nothing.seq, nothing.base)
        );
        assert_eq!(f.gateways().next().unwrap().1.summary, b);
    }

    #[test]
    fn a_lost_answer_costs_a_longer_report_and_a_relay_restart_a_whole_one() {
        let (t0, mut r, mut f, first) = started(&[("a", "1"), ("b", "1")]);
        // taken by the relay, but the answer is lost
        let second = r.report(t0, summary(&[("a", "2"), ("b", "1")]));
        deliver(&mut f, t0, &second).unwrap();
        // the next report is again from the last summary the gateway knows was taken, and
        // the relay still has that one
        let third = r.report(t0, summary(&[("a", "2"), ("b", "2")]));
        assert_eq!(third.base, first);
        assert_eq!(third.set.len(), 2);
        deliver(&mut f, t0, &third).unwrap();
        r.taken(third.seq);
        assert_eq!(
            f.gateways().next().unwrap().1.summary,
            summary(&[("a", "2"), ("b", "2")])
        );
        // a relay that restarted holds nothing: a delta is refused, a whole one taken
        let mut fresh = Fleet::new(Duration::from_secs(3));
        let fourth = r.report(t0, summary(&[("a", "3"), ("b", "2")]));
        assert_eq!(deliver(&mut fresh, t0, &fourth), Err(Refused::WantFull));
        r.want_full();
        let fifth = r.report(t0, summary(&[("a", "3"), ("b", "2")]));
        assert_eq!((fifth.base, fifth.set.len()), (0, 2));
        deliver(&mut fresh, t0, &fifth).unwrap();
        assert_eq!(
            fresh.gateways().next().unwrap().1.summary,
            summary(&[("a", "3"), ("b", "2")])
        );
    }

    #[test]
    fn a_report_that_arrives_after_a_newer_one_changes_nothing() {
        let (t0, mut r, mut f, _) = started(&[("a", "1")]);
        // the second goes unanswered (slow path); the third, sent after it, arrives first
        let second = r.report(t0, summary(&[("a", "2")]));
        let third = r.report(t0, summary(&[("a", "3")]));
        deliver(&mut f, t0, &third).unwrap();
        r.taken(third.seq);
        assert_eq!(deliver(&mut f, t0, &second), Err(Refused::Stale));
        assert_eq!(
            f.gateways().next().unwrap().1.summary,
            summary(&[("a", "3")])
        );
        // and the next delta still applies
        let fourth = r.report(t0, summary(&[("a", "4")]));
        deliver(&mut f, t0, &fourth).unwrap();
        assert_eq!(
            f.gateways().next().unwrap().1.summary,
            summary(&[("a", "4")])
        );
    }

    #[test]
    fn a_lost_answer_to_a_whole_summary_costs_no_second_whole_one() {
        let (t0, mut r, mut f, first) = started(&[("a", "1"), ("b", "1")]);
        // the ten minutes' whole summary is taken, its answer lost
        let whole = r.report(t0 + FULL_EVERY, summary(&[("a", "2"), ("b", "1")]));
        assert_eq!(whole.base, 0);
        deliver(&mut f, t0 + FULL_EVERY, &whole).unwrap();
        // the next is a delta on the first, which the relay still holds
        let next = r.report(t0 + FULL_EVERY, summary(&[("a", "2"), ("b", "2")]));
        assert_eq!(next.base, first);
        deliver(&mut f, t0 + FULL_EVERY, &next).unwrap();
        assert_eq!(
            f.gateways().next().unwrap().1.summary,
            summary(&[("a", "2"), ("b", "2")])
        );
    }

    #[test]
    fn two_processes_with_one_certificate_never_mix() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Duration::from_secs(3));
        let mut a = Reporter::new(1, Duration::from_secs(1));
        let mut b = Reporter::new(2, Duration::from_secs(1));
        let ra = a.report(t0, summary(&[("who", "a"), ("x", "1")]));
        deliver(&mut f, t0, &ra).unwrap();
        a.taken(ra.seq);
        let rb = b.report(t0, summary(&[("who", "b")]));
        deliver(&mut f, t0, &rb).unwrap();
        b.taken(rb.seq);
        // a's delta has the base number b's whole summary had: refused, not merged
        let next = a.report(t0, summary(&[("who", "a"), ("x", "2")]));
        assert_eq!(next.base, rb.seq);
        assert_eq!(deliver(&mut f, t0, &next), Err(Refused::WantFull));
        assert_eq!(
            f.gateways().next().unwrap().1.summary,
            summary(&[("who", "b")])
        );
    }

    #[test]
    fn a_whole_summary_goes_every_ten_minutes() {
        let t0 = Instant::now();
        let mut r = Reporter::new(7, Duration::from_secs(1));
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
        f.opened(t0, "door");
        let mut r = Reporter::new(7, Duration::from_secs(1));
        let rep = r.report(t0, summary(&[("up", "5")]));
        deliver(&mut f, t0, &rep).unwrap();
        let g = |f: &Fleet, at: Instant| f.gateways().next().unwrap().1.online(at, f.offline_after);
        assert!(g(&f, t0 + Duration::from_secs(3)));
        assert!(!g(&f, t0 + Duration::from_millis(3001)));
        // two connections (two uplinks): one closing leaves it online
        f.opened(t0, "door");
        f.closed(t0, "door");
        assert!(g(&f, t0));
        f.closed(t0, "door");
        assert!(!g(&f, t0));
        // unknown gateways that leave are not made up
        f.closed(t0, "ghost");
        assert_eq!(f.gateways().count(), 1);
        // a gateway reporting every 5 s gets three of its intervals
        f.opened(t0, "door");
        let mut slow = Reporter::new(8, Duration::from_secs(5));
        deliver(&mut f, t0, &slow.report(t0, summary(&[("up", "5")]))).unwrap();
        assert!(g(&f, t0 + Duration::from_secs(15)));
        assert!(!g(&f, t0 + Duration::from_millis(15_001)));
    }

    #[test]
    fn the_hour_is_kept_in_points_and_a_silent_gateway_forgotten_after_it() {
        let t0 = Instant::now();
        let mut f = Fleet::new(Duration::from_secs(3));
        f.opened(t0, "door");
        let mut r = Reporter::new(7, Duration::from_secs(1));
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
        f.closed(t0 + Duration::from_secs(7200), "door");
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
            epoch: 1,
            every_ms: 1000,
            seq: 1,
            base: 0,
            set: vec![("a".into(), "1".into())],
            removed: vec![],
        };
        for i in 0..MAX_GATEWAYS {
            f.apply(t0, &format!("g{i}"), &whole, 10).unwrap();
        }
        assert_eq!(f.apply(t0, "one-more", &whole, 10), Err(Refused::Full));
        f.opened(t0, "one-more");
        f.opened(t0, "one-more");
        f.opened(t0, "gone");
        f.closed(t0, "gone");
        assert_eq!(f.gateways().count(), MAX_GATEWAYS);
        // a slot frees: the gateway admitted now counts the connections it opened meanwhile
        f.gateways.remove("g0");
        f.closed(t0, "one-more");
        f.apply(t0, "one-more", &whole, 10).unwrap();
        let (_, g) = f.gateways().find(|(n, _)| *n == "one-more").unwrap();
        assert_eq!(g.connections, 1);
        assert!(g.online(t0, f.offline_after));
        assert!(f.unkept.is_empty());
        f.apply(t0, "gone", &whole, 10).unwrap_err();
        // keys added by deltas past the limit make the relay ask for a whole summary
        let mut g = Fleet::new(Duration::from_secs(3));
        g.apply(t0, "door", &whole, 10).unwrap();
        let mut seq = 1;
        let mut refused = false;
        for i in 0..MAX_KEYS + 1 {
            let r = Report {
                epoch: 1,
                every_ms: 1000,
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
