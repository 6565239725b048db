//! The event's life (`[event]`): its slug, when it starts and ends in the venue's time
//! zone, and what follows the end. At the end check-in tokens stop being accepted; after a
//! grace period the post-event hygiene runs ([`crate::hygiene`]); the reduced records it
//! keeps are deleted once the retention has passed. Sans-IO: every answer takes `now`.

use serde::{Deserialize, Serialize};

/// Fewest days reduced records are kept.
pub const MIN_RETENTION_DAYS: u64 = 30;
/// Most days reduced records are kept.
pub const MAX_RETENTION_DAYS: u64 = 90;

/// `[event]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSection {
    /// The event's slug (`market-2026-12`): tokens and records carry it.
    pub slug: String,
    /// When it starts: `2026-12-05T18:00` in `timezone`, or RFC 3339 with an offset.
    pub start: String,
    /// When it ends, written like `start`.
    pub end: String,
    /// The venue's time zone (IANA name, `Europe/Berlin`); times without an offset are
    /// read in it, and the report shows times in it.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Hours after the end before the post-event hygiene runs.
    #[serde(default = "default_grace_hours")]
    pub grace_hours: u64,
    /// Days the reduced bid and check-in records are kept after the end (30 to 90).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// `auto`: the gateway runs the hygiene itself once the grace period is over;
    /// `manual`: only `canopy purge --post-event` runs it.
    #[serde(default)]
    pub post_event: PostEvent,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_grace_hours() -> u64 {
    6
}

fn default_retention_days() -> u64 {
    MIN_RETENTION_DAYS
}

/// Who starts the post-event hygiene.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostEvent {
    /// The gateway, once the grace period is over.
    #[default]
    Auto,
    /// Only the crew, with `canopy purge --post-event`.
    Manual,
}

/// The event, parsed.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its slug.
    pub slug: String,
    /// The venue's time zone.
    pub tz: jiff::tz::TimeZone,
    /// Start, s since the Unix epoch.
    pub start_s: i64,
    /// End, s since the Unix epoch.
    pub end_s: i64,
    /// Seconds after the end before the hygiene.
    pub grace_s: i64,
    /// Seconds after the end the reduced records are kept.
    pub retention_s: i64,
    /// Who starts the hygiene.
    pub post_event: PostEvent,
}

/// Where the event is at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Before,
    /// Under way.
    During,
    /// Over; the hygiene is due at `hygiene_s`.
    Ended {
        /// When the grace period ends, s since the epoch.
        hygiene_s: i64,
    },
    /// Over, and the grace period too: the hygiene is due.
    PostEvent,
    /// The retention has passed: the reduced records go too.
    Retired,
}

impl EventSection {
    /// The event, or (key, message) per problem.
    pub fn parse(&self) -> Result<Event, Vec<(String, String)>> {
        let mut errs = Vec::new();
        if self.slug.is_empty()
            || self.slug.len() > 64
            || !self
                .slug
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            errs.push((
                "event.slug".into(),
                "must be 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        // UTC needs no time zone database (a minimal system may have none)
        let utc = ["UTC", "Etc/UTC", "Z"]
            .iter()
            .any(|u| self.timezone.eq_ignore_ascii_case(u));
        let found = match utc {
            true => Ok(jiff::tz::TimeZone::UTC),
            false => jiff::tz::TimeZone::get(&self.timezone),
        };
        let tz = match found {
            Ok(tz) => Some(tz),
            Err(e) => {
                errs.push((
                    "event.timezone".into(),
                    format!(
                        "`{}` is not a time zone this machine knows (an IANA name such as \
                         Europe/Berlin, or UTC; is tzdata installed?): {e}",
                        self.timezone
                    ),
                ));
                None
            }
        };
        let at = |key: &str, v: &str, errs: &mut Vec<(String, String)>| {
            let tz = tz.as_ref()?;
            match instant(v, tz) {
                Some(s) => Some(s),
                None => {
                    errs.push((
                        format!("event.{key}"),
                        format!(
                            "`{v}` is not a time (write 2026-12-05T18:00 in the event's time \
                             zone, or 2026-12-05T18:00:00+01:00)"
                        ),
                    ));
                    None
                }
            }
        };
        let start = at("start", &self.start, &mut errs);
        let end = at("end", &self.end, &mut errs);
        if let (Some(s), Some(e)) = (start, end) {
            if e <= s {
                errs.push(("event.end".into(), "must be after event.start".into()));
            }
        }
        if self.grace_hours > 24 * 30 {
            errs.push((
                "event.grace_hours".into(),
                "must be 0 to 720 (30 days)".into(),
            ));
        }
        if !(MIN_RETENTION_DAYS..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            errs.push((
                "event.retention_days".into(),
                format!("must be {MIN_RETENTION_DAYS} to {MAX_RETENTION_DAYS}"),
            ));
        }
        match (errs.is_empty(), tz, start, end) {
            (true, Some(tz), Some(start_s), Some(end_s)) => Ok(Event {
                slug: self.slug.clone(),
                tz,
                start_s,
                end_s,
                grace_s: self.grace_hours as i64 * 3600,
                retention_s: self.retention_days as i64 * 86_400,
                post_event: self.post_event,
            }),
            _ => Err(errs),
        }
    }
}

/// `v` as s since the epoch: RFC 3339 with an offset, or a civil time (or date) in `tz`.
fn instant(v: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Some(t.as_second());
    }
    let civil = v.parse::<jiff::civil::DateTime>().ok().or_else(|| {
        v.parse::<jiff::civil::Date>()
            .ok()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    })?;
    civil
        .to_zoned(tz.clone())
        .ok()
        .map(|z| z.timestamp().as_second())
}

impl Event {
    /// Where the event is at `now_s`.
    pub fn phase(&self, now_s: i64) -> Phase {
        if now_s < self.start_s {
            Phase::Before
        } else if now_s < self.end_s {
            Phase::During
        } else if now_s >= self.end_s + self.retention_s {
            Phase::Retired
        } else if now_s >= self.hygiene_s() {
            Phase::PostEvent
        } else {
            Phase::Ended {
                hygiene_s: self.hygiene_s(),
            }
        }
    }

    /// When the grace period ends.
    pub fn hygiene_s(&self) -> i64 {
        self.end_s + self.grace_s
    }

    /// Until when the reduced records are kept.
    pub fn keep_until_s(&self) -> i64 {
        self.end_s + self.retention_s
    }

    /// Whether check-in tokens are still accepted at `now_s` (not after the end).
    pub fn admits_at(&self, now_s: i64) -> bool {
        now_s < self.end_s
    }

    /// `s` in the venue's time zone, for people (`2026-12-05 23:00 CET`).
    pub fn local(&self, s: i64) -> String {
        match jiff::Timestamp::from_second(s) {
            Ok(t) => t
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string(),
            Err(_) => s.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(start: &str, end: &str, tz: &str) -> EventSection {
        EventSection {
            slug: "market-2026".into(),
            start: start.into(),
            end: end.into(),
            timezone: tz.into(),
            grace_hours: 6,
            retention_days: 30,
            post_event: PostEvent::Auto,
        }
    }

    #[test]
    fn civil_times_are_read_in_the_event_time_zone() {
        let e = section("2026-12-05T18:00", "2026-12-06T02:00:00Z", "UTC")
            .parse()
            .unwrap();
        assert_eq!(e.start_s, 1_796_493_600);
        assert_eq!(e.end_s, 1_796_522_400);
        // a date alone is midnight there
        let d = section("2026-12-05", "2026-12-06", "UTC").parse().unwrap();
        assert_eq!(d.end_s - d.start_s, 86_400);
        assert_eq!(e.local(e.start_s), "2026-12-05 18:00 UTC");
    }

    #[test]
    fn the_phases_follow_the_clock() {
        let e = section("2026-12-05T18:00Z", "2026-12-05T23:00Z", "UTC")
            .parse()
            .unwrap();
        let (start, end) = (e.start_s, e.end_s);
        assert_eq!(e.phase(start - 1), Phase::Before);
        assert_eq!(e.phase(start), Phase::During);
        assert!(e.admits_at(end - 1));
        assert!(!e.admits_at(end));
        assert_eq!(
            e.phase(end),
            Phase::Ended {
                hygiene_s: end + 6 * 3600
            }
        );
        assert_eq!(e.phase(end + 6 * 3600), Phase::PostEvent);
        assert_eq!(e.phase(end + 30 * 86_400 - 1), Phase::PostEvent);
        assert_eq!(e.phase(end + 30 * 86_400), Phase::Retired);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut s = section("soon", "2026-12-05T23:00Z", "Mars/Olympus");
        s.retention_days = 120;
        s.slug = "a b".into();
        let keys: Vec<String> = s.parse().unwrap_err().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["event.slug", "event.timezone", "event.retention_days"]
        );
        let s = section("soon", "2026-12-05T23:00Z", "UTC");
        let keys: Vec<String> = s.parse().unwrap_err().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["event.start"]);
        let s = section("2026-12-06T00:00Z", "2026-12-05T23:00Z", "UTC");
        let keys: Vec<String> = s.parse().unwrap_err().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["event.end"]);
        let mut s = section("2026-12-05T18:00Z", "2026-12-05T23:00Z", "UTC");
        s.retention_days = 29;
        assert!(s.parse().is_err());
        s.retention_days = 90;
        assert!(s.parse().is_ok());
    }
}
