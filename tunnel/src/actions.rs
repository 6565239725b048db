//! Local actions from thresholds, sans-IO: when each of the gateway's `[[actions]]` rules
//! fires and clears.
//!
//! A rule watches one condition over the gateway's own measurements (the bonded capacity
//! for the stream class, a link's loss or state, a data cap, the spool, every uplink). The
//! shell gathers a [`Measurements`] every step and feeds it in with `now`; the engine
//! answers with the rules that fired or cleared, each with its cause.
//!
//! Every rule has hysteresis twice over:
//! - **in time:** its condition must hold for [`Rule::hold`] before it fires, and be clear
//!   for [`Rule::clear_after`] before it clears; a rule fires once per episode, however
//!   long the episode lasts;
//! - **in value:** "clear" is past a margin beyond the threshold (capacity 25% above it,
//!   loss under half of it, a data cap or the spool 5 or 10 points under it), so a reading
//!   hovering at the threshold neither fires nor clears again and again.

use crate::path::Tier;
use std::time::{Duration, Instant};

/// What a rule watches. Thresholds are plain units: bytes per second, ratios 0..=1.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// What the bond can give the stream class is below this many bytes per second (an
    /// outage counts as none).
    CapacityBelow(f64),
    /// A link's loss (or the named one's) is above this ratio.
    LossAbove {
        /// One uplink by name; None: any.
        link: Option<String>,
        /// The ratio, 0..=1.
        ratio: f64,
    },
    /// A link (or the named one) cannot carry traffic.
    LinkDown {
        /// One uplink by name; None: any.
        link: Option<String>,
    },
    /// A link's data cap (or the named one's) is used above this ratio today.
    CapAbove {
        /// One uplink by name; None: any with a cap.
        link: Option<String>,
        /// The ratio, 0..=1.
        ratio: f64,
    },
    /// The spool is fuller than this ratio.
    SpoolAbove(f64),
    /// No uplink can carry traffic.
    AllDown,
}

/// Capacity clears this far above its threshold.
const CAPACITY_CLEAR: f64 = 1.25;
/// Loss clears under this share of its threshold.
const LOSS_CLEAR: f64 = 0.5;
/// A data cap clears this far under its threshold.
const CAP_CLEAR: f64 = 0.05;
/// The spool clears this far under its threshold.
const SPOOL_CLEAR: f64 = 0.10;

/// One link as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkReading {
    /// Its name.
    pub name: String,
    /// It may carry traffic.
    pub usable: bool,
    /// Its loss estimate, 0..=1.
    pub loss: f64,
    /// The share of its data cap used today; None without a cap.
    pub cap_used: Option<f64>,
}

/// What the gateway measures at one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    /// What the bond can give the stream class, bytes per second; None in an outage.
    pub capacity: Option<f64>,
    /// Every uplink.
    pub links: Vec<LinkReading>,
    /// How full the spool is, 0..=1; None without a spool.
    pub spool: Option<f64>,
}

/// One rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// What it watches.
    pub condition: Condition,
    /// How long the condition must hold before the rule fires.
    pub hold: Duration,
    /// How long the condition must be clear before the rule clears.
    pub clear_after: Duration,
}

/// Where a reading stands against its rule.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// The condition holds; what was read.
    Met(String),
    /// Past the clear margin.
    Clear,
    /// Neither: inside the margin, or nothing to read.
    Between,
}

impl Condition {
    fn judge(&self, m: &Measurements) -> Verdict {
        let mbps = |b: f64| b * 8.0 / 1e6;
        let pct = |r: f64| r * 100.0;
        match self {
            Condition::CapacityBelow(x) => {
                let c = m.capacity.unwrap_or(0.0);
                if c < *x {
                    let read = match m.capacity {
                        Some(c) => format!("{:.2} Mbit/s", mbps(c)),
                        None => "none (no uplink may carry the stream)".into(),
                    };
                    Verdict::Met(format!(
                        "bonded capacity {read} below {:.2} Mbit/s",
                        mbps(*x)
                    ))
                } else if c >= x * CAPACITY_CLEAR {
                    Verdict::Clear
                } else {
                    Verdict::Between
                }
            }
            Condition::LossAbove { link, ratio } => judge_links(
                m,
                link.as_deref(),
                |l| {
                    (l.loss > *ratio).then(|| {
                        format!(
                            "uplink {} loses {:.1}%, above {:.1}%",
                            l.name,
                            pct(l.loss),
                            pct(*ratio)
                        )
                    })
                },
                |l| l.loss < ratio * LOSS_CLEAR,
            ),
            Condition::LinkDown { link } => judge_links(
                m,
                link.as_deref(),
                |l| (!l.usable).then(|| format!("uplink {} is down", l.name)),
                |l| l.usable,
            ),
            Condition::CapAbove { link, ratio } => {
                let capped = Measurements {
                    links: m
                        .links
                        .iter()
                        .filter(|l| l.cap_used.is_some())
                        .cloned()
                        .collect(),
                    ..Measurements::default()
                };
                judge_links(
                    &capped,
                    link.as_deref(),
                    |l| {
                        let used = l.cap_used.unwrap_or(0.0);
                        (used > *ratio).then(|| {
                            format!(
                                "uplink {} used {:.0}% of its data cap, above {:.0}%",
                                l.name,
                                pct(used),
                                pct(*ratio)
                            )
                        })
                    },
                    |l| l.cap_used.unwrap_or(0.0) < clear_under(*ratio, CAP_CLEAR),
                )
            }
            Condition::SpoolAbove(x) => match m.spool {
                Some(s) if s > *x => {
                    Verdict::Met(format!("spool {:.0}% full, above {:.0}%", pct(s), pct(*x)))
                }
                Some(s) if s < clear_under(*x, SPOOL_CLEAR) => Verdict::Clear,
                Some(_) => Verdict::Between,
                None => Verdict::Clear,
            },
            Condition::AllDown => {
                if m.links.iter().any(|l| l.usable) {
                    Verdict::Clear
                } else {
                    Verdict::Met("no uplink is up".into())
                }
            }
        }
    }
}

/// Where a ratio's "clear" starts: `margin` under its threshold, and at least above half
/// of it (a threshold under the margin would otherwise never clear).
fn clear_under(threshold: f64, margin: f64) -> f64 {
    (threshold - margin).max(threshold / 2.0)
}

/// A per-link condition: met when `link` (or any link) meets `met`; clear when it (or
/// every link) is `clear`.
fn judge_links(
    m: &Measurements,
    link: Option<&str>,
    met: impl Fn(&LinkReading) -> Option<String>,
    clear: impl Fn(&LinkReading) -> bool,
) -> Verdict {
    let mut links = m.links.iter().filter(|l| link.is_none_or(|n| l.name == n));
    let mut all_clear = true;
    for l in links.by_ref() {
        if let Some(why) = met(l) {
            return Verdict::Met(why);
        }
        all_clear &= clear(l);
    }
    if all_clear {
        Verdict::Clear
    } else {
        Verdict::Between
    }
}

/// A rule fired or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The rule (its index).
    pub rule: usize,
    /// Fired (true) or cleared.
    pub fired: bool,
    /// Why, for logs and status: what was read and for how long.
    pub cause: String,
}

/// One rule's state, for status.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    /// It has fired and not cleared.
    pub active: bool,
    /// Why it last fired.
    pub cause: Option<String>,
    /// How often it has fired.
    pub firings: u64,
}

#[derive(Debug)]
struct Tracked {
    rule: Rule,
    active: bool,
    /// Since when the condition has held (idle) or been clear (active).
    since: Option<Instant>,
    cause: Option<String>,
    firings: u64,
}

/// The rules and when each fired.
#[derive(Debug)]
pub struct Actions {
    rules: Vec<Tracked>,
}

impl Actions {
    /// The rules, none fired.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .map(|rule| Tracked {
                    rule,
                    active: false,
                    since: None,
                    cause: None,
                    firings: 0,
                })
                .collect(),
        }
    }

    /// One step at `now` with what the gateway measures: the rules that fired or cleared.
    pub fn update(&mut self, now: Instant, m: &Measurements) -> Vec<Event> {
        let mut out = Vec::new();
        for (i, t) in self.rules.iter_mut().enumerate() {
            let verdict = t.rule.condition.judge(m);
            if !t.active {
                let Verdict::Met(why) = verdict else {
                    t.since = None;
                    continue;
                };
                let since = *t.since.get_or_insert(now);
                let held = now.saturating_duration_since(since);
                if held >= t.rule.hold {
                    let cause = format!("{why} for {}", seconds(held));
                    t.active = true;
                    t.since = None;
                    t.firings += 1;
                    t.cause = Some(cause.clone());
                    out.push(Event {
                        rule: i,
                        fired: true,
                        cause,
                    });
                }
            } else {
                if verdict != Verdict::Clear {
                    t.since = None;
                    continue;
                }
                let since = *t.since.get_or_insert(now);
                let held = now.saturating_duration_since(since);
                if held >= t.rule.clear_after {
                    t.active = false;
                    t.since = None;
                    out.push(Event {
                        rule: i,
                        fired: false,
                        cause: format!("clear for {}", seconds(held)),
                    });
                }
            }
        }
        out
    }

    /// Every rule's state, in order.
    pub fn states(&self) -> Vec<RuleState> {
        self.rules
            .iter()
            .map(|t| RuleState {
                active: t.active,
                cause: t.cause.clone(),
                firings: t.firings,
            })
            .collect()
    }
}

/// What a fired rule asks of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkHold<'a> {
    /// Put traffic on this uplink first.
    Prefer(&'a str),
    /// Use this uplink only when the others cannot.
    Avoid(&'a str),
}

/// The tier each of `uplinks` (name, configured tier) is held in by the fired rules'
/// `holds`, in order (None: its configured tier). Whatever the rules' order: an uplink a
/// rule avoids is a backup (of two rules that disagree, the safer wins); one a rule
/// prefers is primary; while any rule prefers an uplink, the other primary uplinks count
/// as secondary.
pub fn held_tiers(uplinks: &[(&str, Tier)], holds: &[UplinkHold<'_>]) -> Vec<Option<Tier>> {
    let avoided = |n: &str| holds.contains(&UplinkHold::Avoid(n));
    let preferred = |n: &str| holds.contains(&UplinkHold::Prefer(n));
    let any_preferred = holds.iter().any(|h| matches!(h, UplinkHold::Prefer(_)));
    uplinks
        .iter()
        .map(|&(name, configured)| {
            if avoided(name) {
                Some(Tier::Backup)
            } else if preferred(name) {
                Some(Tier::Primary)
            } else if any_preferred && configured == Tier::Primary {
                Some(Tier::Secondary)
            } else {
                None
            }
        })
        .collect()
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBIT: f64 = 125_000.0;
    const S: Duration = Duration::from_secs(1);

    fn rule(condition: Condition) -> Rule {
        Rule {
            condition,
            hold: 5 * S,
            clear_after: 10 * S,
        }
    }

    fn links(usable: &[bool]) -> Vec<LinkReading> {
        usable
            .iter()
            .enumerate()
            .map(|(i, &usable)| LinkReading {
                name: format!("l{i}"),
                usable,
                loss: 0.0,
                cap_used: None,
            })
            .collect()
    }

    /// Runs `a` for `d` in 100 ms steps with `m` at each (from the time since the start):
    /// the events with the time they happened at.
    fn run(
        a: &mut Actions,
        start: Instant,
        d: Duration,
        m: impl Fn(Duration) -> Measurements,
    ) -> Vec<(Duration, Event)> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < d {
            t += Duration::from_millis(100);
            for e in a.update(start + t, &m(t)) {
                out.push((t, e));
            }
        }
        out
    }

    fn capacity(mbps: f64) -> Measurements {
        Measurements {
            capacity: Some(mbps * MBIT),
            links: links(&[true]),
            spool: None,
        }
    }

    #[test]
    fn fires_once_after_its_hold_and_clears_after_its_own() {
        let mut a = Actions::new(vec![rule(Condition::CapacityBelow(2.0 * MBIT))]);
        // 14 Mbit/s, then 0.5 for 30 s, then 14 again
        let ev = run(&mut a, Instant::now(), 60 * S, |t| {
            capacity(if (10 * S..40 * S).contains(&t) {
                0.5
            } else {
                14.0
            })
        });
        assert_eq!(ev.len(), 2, "{ev:?}");
        let (t, fire) = &ev[0];
        assert!(fire.fired);
        assert_eq!(*t, 15 * S, "the hold counts from the first reading");
        assert!(
            fire.cause
                .contains("0.50 Mbit/s below 2.00 Mbit/s for 5.0 s"),
            "{}",
            fire.cause
        );
        let (t, clear) = &ev[1];
        assert!(!clear.fired);
        assert_eq!(*t, 50 * S);
        assert_eq!(a.states()[0].firings, 1);
        assert!(!a.states()[0].active);
    }

    #[test]
    fn a_condition_shorter_than_its_hold_never_fires() {
        let mut a = Actions::new(vec![rule(Condition::CapacityBelow(2.0 * MBIT))]);
        // dips of 4 s every 8 s
        let ev = run(&mut a, Instant::now(), 60 * S, |t| {
            capacity(if t.as_secs() % 8 < 4 { 0.5 } else { 14.0 })
        });
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn a_reading_at_the_threshold_does_not_fire_and_clear_again_and_again() {
        let mut a = Actions::new(vec![rule(Condition::CapacityBelow(2.0 * MBIT))]);
        // a marginal link: 1.8 <-> 2.2 Mbit/s every 3 s, for 5 minutes
        let ev = run(&mut a, Instant::now(), 300 * S, |t| {
            capacity(if t.as_secs() % 6 < 3 { 1.8 } else { 2.2 })
        });
        // the dips are 3 s, shorter than the hold: nothing fires
        assert!(ev.is_empty(), "{ev:?}");
        // with a hold of 1 s it fires once and never clears: 2.2 is inside the margin
        let mut a = Actions::new(vec![Rule {
            hold: S,
            ..rule(Condition::CapacityBelow(2.0 * MBIT))
        }]);
        let ev = run(&mut a, Instant::now(), 300 * S, |t| {
            capacity(if t.as_secs() % 6 < 3 { 1.8 } else { 2.2 })
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(ev[0].1.fired);
    }

    #[test]
    fn clearing_needs_the_whole_clear_time_in_one_piece() {
        let mut a = Actions::new(vec![rule(Condition::AllDown)]);
        let start = Instant::now();
        // down 6 s; then up 8 s, down 1 s, up 20 s
        let ev = run(&mut a, start, 35 * S, |t| Measurements {
            links: links(&[!(t < 6 * S || (14 * S..15 * S).contains(&t))]),
            ..Measurements::default()
        });
        let fired: Vec<_> = ev.iter().filter(|(_, e)| e.fired).collect();
        let cleared: Vec<_> = ev.iter().filter(|(_, e)| !e.fired).collect();
        assert_eq!(fired.len(), 1, "once per episode: {ev:?}");
        assert_eq!(cleared.len(), 1, "{ev:?}");
        assert_eq!(cleared[0].0, 25 * S, "{ev:?}");
        assert_eq!(fired[0].1.cause, "no uplink is up for 5.0 s");
    }

    #[test]
    fn link_rules_name_the_link_and_watch_only_theirs_when_named() {
        let reading = |loss: [f64; 2]| Measurements {
            links: loss
                .iter()
                .enumerate()
                .map(|(i, &loss)| LinkReading {
                    name: ["cellular", "wifi"][i].into(),
                    usable: true,
                    loss,
                    cap_used: None,
                })
                .collect(),
            ..Measurements::default()
        };
        let mut a = Actions::new(vec![
            rule(Condition::LossAbove {
                link: None,
                ratio: 0.05,
            }),
            rule(Condition::LossAbove {
                link: Some("cellular".into()),
                ratio: 0.05,
            }),
        ]);
        let ev = run(&mut a, Instant::now(), 10 * S, |_| reading([0.0, 0.12]));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].1.rule, 0);
        assert!(
            ev[0]
                .1
                .cause
                .starts_with("uplink wifi loses 12.0%, above 5.0%"),
            "{}",
            ev[0].1.cause
        );
        // 4% is inside the margin (clear under 2.5%): still active
        let ev = run(&mut a, Instant::now(), 30 * S, |_| reading([0.0, 0.04]));
        assert!(ev.is_empty(), "{ev:?}");
        assert!(a.states()[0].active);
    }

    #[test]
    fn caps_and_the_spool_fire_and_clear_past_their_margins() {
        let mut a = Actions::new(vec![
            rule(Condition::CapAbove {
                link: None,
                ratio: 0.9,
            }),
            rule(Condition::SpoolAbove(0.8)),
        ]);
        let m = |cap: f64, spool: f64| Measurements {
            links: vec![
                LinkReading {
                    name: "uncapped".into(),
                    usable: true,
                    loss: 0.0,
                    cap_used: None,
                },
                LinkReading {
                    name: "cellular".into(),
                    usable: true,
                    loss: 0.0,
                    cap_used: Some(cap),
                },
            ],
            capacity: None,
            spool: Some(spool),
        };
        let ev = run(&mut a, Instant::now(), 10 * S, |_| m(0.93, 0.85));
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert!(
            ev[0].1.cause.contains("cellular used 93% of its data cap"),
            "{ev:?}"
        );
        assert!(ev[1].1.cause.contains("spool 85% full"), "{ev:?}");
        // inside the margins: nothing clears
        assert!(run(&mut a, Instant::now(), 30 * S, |_| m(0.88, 0.75)).is_empty());
        // past them: both clear
        let ev = run(&mut a, Instant::now(), 30 * S, |_| m(0.1, 0.5));
        assert_eq!(ev.iter().filter(|(_, e)| !e.fired).count(), 2, "{ev:?}");
    }

    #[test]
    fn uplink_holds_do_not_depend_on_the_rules_order() {
        use UplinkHold::*;
        let uplinks = [
            ("cellular", Tier::Primary),
            ("wifi", Tier::Primary),
            ("satellite", Tier::Backup),
        ];
        assert_eq!(held_tiers(&uplinks, &[]), vec![None, None, None]);
        let both = [Avoid("wifi"), Prefer("cellular")];
        let reversed = [Prefer("cellular"), Avoid("wifi")];
        let want = vec![Some(Tier::Primary), Some(Tier::Backup), None];
        assert_eq!(held_tiers(&uplinks, &both), want);
        assert_eq!(held_tiers(&uplinks, &reversed), want);
        // preferring the backup: it is primary, the primaries secondary
        assert_eq!(
            held_tiers(&uplinks, &[Prefer("satellite")]),
            vec![
                Some(Tier::Secondary),
                Some(Tier::Secondary),
                Some(Tier::Primary)
            ]
        );
        // two rules on one uplink that disagree: the safer
        assert_eq!(
            held_tiers(&uplinks, &[Prefer("wifi"), Avoid("wifi")])[1],
            Some(Tier::Backup)
        );
    }

    #[test]
    fn a_threshold_under_its_margin_still_clears() {
        // a spool rule at 5% (its margin is 10 points): clear under 2.5%
        let mut a = Actions::new(vec![rule(Condition::SpoolAbove(0.05))]);
        let m = |spool: f64| Measurements {
            spool: Some(spool),
            ..Measurements::default()
        };
        let ev = run(&mut a, Instant::now(), 10 * S, |_| m(0.06));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(run(&mut a, Instant::now(), 20 * S, |_| m(0.03)).is_empty());
        let ev = run(&mut a, Instant::now(), 20 * S, |_| m(0.01));
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(!ev[0].1.fired);
    }

    #[test]
    fn an_outage_is_no_capacity() {
        let mut a = Actions::new(vec![rule(Condition::CapacityBelow(2.0 * MBIT))]);
        let ev = run(&mut a, Instant::now(), 10 * S, |_| Measurements {
            capacity: None,
            links: links(&[false, false]),
            spool: None,
        });
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert!(
            ev[0]
                .1
                .cause
                .starts_with("bonded capacity none (no uplink may carry the stream) below 2.00"),
            "{}",
            ev[0].1.cause
        );
    }
}
