//! An event's window: when its certificates are valid. The event's start and end, widened
//! by a margin on both sides (setup the day before, a box whose clock is off, teardown).

use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, Month, OffsetDateTime, Time};

/// The margin added before the start and after the end unless told otherwise.
pub const DEFAULT_MARGIN: Duration = Duration::hours(24);

/// How long an event lasts when only its start is given.
pub const DEFAULT_LENGTH: Duration = Duration::days(3);

/// Why a window cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// A time that does not parse.
    #[error(
        "{flag}: `{value}` is not a time (write 2026-12-05T18:00:00+01:00, or a date, 2026-12-05, \
         read as UTC)"
    )]
    BadTime {
        /// The flag or field it came from.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// The end is not after the start.
    #[error("the event ends ({end}) before it starts ({start})")]
    EndsBeforeStart {
        /// The start.
        start: String,
        /// The end.
        end: String,
    },
}

/// From when to when certificates are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Not valid before this.
    pub not_before: OffsetDateTime,
    /// Not valid after this.
    pub not_after: OffsetDateTime,
}

impl Window {
    /// The event's `[start, end]` widened by `margin` on both sides.
    pub fn event(
        start: OffsetDateTime,
        end: OffsetDateTime,
        margin: Duration,
    ) -> Result<Self, WindowError> {
        if end <= start {
            return Err(WindowError::EndsBeforeStart {
                start: show(start),
                end: show(end),
            });
        }
        Ok(Self {
            not_before: start - margin,
            not_after: end + margin,
        })
    }

    /// An event starting at `now` with the default length and margin (the demo, tests).
    pub fn from(now: OffsetDateTime) -> Self {
        Self {
            not_before: now - DEFAULT_MARGIN,
            not_after: now + DEFAULT_LENGTH + DEFAULT_MARGIN,
        }
    }

    /// Whether `t` is inside.
    pub fn contains(&self, t: OffsetDateTime) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", show(self.not_before), show(self.not_after))
    }
}

/// A time as RFC 3339, in UTC, to the second.
pub fn show(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Parses an RFC 3339 time, or a date (`2026-12-05`, UTC): its midnight, or with `end`
/// the midnight after it (an event that ends on the 7th lasts the whole day).
pub fn parse(flag: &'static str, value: &str, end: bool) -> Result<OffsetDateTime, WindowError> {
    let bad = || WindowError::BadTime {
        flag,
        value: value.to_string(),
    };
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Ok(t);
    }
    let mut it = value.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let month = Month::try_from(m).map_err(|_| bad())?;
    let date = Date::from_calendar_date(y, month, d).map_err(|_| bad())?;
    let t = date.with_time(Time::MIDNIGHT).assume_utc();
    Ok(if end { t + Duration::days(1) } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_parse_and_nonsense_does_not() {
        let t = parse("--start", "2026-12-05T18:00:00+01:00", false).expect("rfc3339");
        assert_eq!(show(t), "2026-12-05T17:00:00Z");
        let d = parse("--start", "2026-12-05", false).expect("date");
        assert_eq!(show(d), "2026-12-05T00:00:00Z");
        let e = parse("--end", "2026-12-07", true).expect("date");
        assert_eq!(show(e), "2026-12-08T00:00:00Z");
        for v in [
            "tomorrow",
            "2026-13-01",
            "2026-02-30",
            "26-12-05",
            "2026-12-05-1",
            "",
        ] {
            assert!(
                matches!(parse("--start", v, false), Err(WindowError::BadTime { .. })),
                "{v}"
            );
        }
    }

    #[test]
    fn the_window_is_the_event_widened_by_the_margin() {
        let s = parse("--start", "2026-12-05T10:00:00Z", false).expect("start");
        let e = parse("--end", "2026-12-06T22:00:00Z", false).expect("end");
        let w = Window::event(s, e, Duration::hours(6)).expect("window");
        assert_eq!(
            w.to_string(),
            "2026-12-05T04:00:00Z to 2026-12-07T04:00:00Z"
        );
        assert!(w.contains(s) && w.contains(e));
        assert!(!w.contains(s - Duration::hours(7)));
        assert!(matches!(
            Window::event(e, s, Duration::hours(6)),
            Err(WindowError::EndsBeforeStart { .. })
        ));
    }
}
