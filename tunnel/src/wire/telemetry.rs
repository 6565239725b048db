//! Delta telemetry: a gateway's compact summary of itself for the relay's fleet view,
//! sent as what changed since the last summary the relay took.
//!
//! `POST https://canopy.session/telemetry`, body in lines (UTF-8):
//! - first `<epoch> <seq> <base> <every_ms>`: the sending process's random epoch (a delta
//!   applies only onto a summary of the same epoch, so two processes with one certificate
//!   never mix), this report's number, the one it changes (`0`: a whole summary), and the
//!   time to the next report (the relay's patience before calling the gateway offline);
//! - then `<key> <value>` sets a key (the first space ends the key) and `-<key>` removes one.
//!
//! The relay answers 204 when it applied the report, and 409 with `canopy-telemetry: full`
//! when it does not hold `base` (it restarted, or an answer was lost): the next report is
//! whole. A summary is a flat map of short keys ([`Summary`]); one link is one key whose
//! value is a [`LinkLine`], so a link that changes costs one line.

use std::collections::BTreeMap;

/// Path of the report (under [`super::SESSION_AUTHORITY`]).
pub const TELEMETRY_PATH: &str = "/telemetry";
/// The relay's answer header asking for a whole summary next.
pub const HDR_TELEMETRY: &str = "canopy-telemetry";
/// Its value.
pub const WANT_FULL: &str = "full";
/// Largest report body, bytes.
pub const MAX_REPORT: usize = 24 * 1024;
/// Most keys in a summary.
pub const MAX_KEYS: usize = 128;
/// Longest key, bytes.
pub const MAX_KEY: usize = 64;
/// Longest value, bytes.
pub const MAX_VALUE: usize = 120;

/// A gateway's summary: keys to values.
pub type Summary = BTreeMap<String, String>;

/// One report: the keys set and removed since summary `base` (all of them when `base` is 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The sending process's random number.
    pub epoch: u64,
    /// This report's number (from 1).
    pub seq: u64,
    /// The summary it changes; 0 for a whole one.
    pub base: u64,
    /// Keys set, with their values.
    pub set: Vec<(String, String)>,
    /// Keys removed.
    pub removed: Vec<String>,
    /// Time to the next report, ms.
    pub every_ms: u64,
}

/// Why a report body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Over [`MAX_REPORT`].
    #[error("a report is at most {MAX_REPORT} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("a report is UTF-8 text")]
    NotText,
    /// The first line is not `<epoch> <seq> <base> <every_ms>`, or seq is not past base.
    #[error("the first line must be `<epoch> <seq> <base> <every_ms>` with seq > base")]
    Header,
    /// A key that is empty, too long or not printable ASCII, or a value too long.
    #[error(
        "line {0}: a key is 1-{MAX_KEY} printable ASCII bytes, a value at most {MAX_VALUE} bytes"
    )]
    Line(usize),
    /// More keys than [`MAX_KEYS`].
    #[error("a report names at most {MAX_KEYS} keys")]
    TooManyKeys,
}

/// Whether `k` may be a key.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && !k.starts_with('-')
        && k.bytes().all(|b| b.is_ascii_graphic())
}

/// `s` as a key part: printable ASCII, anything else as `_`, cut to 40 bytes.
pub fn key_part(s: &str) -> String {
    s.chars()
        .take(40)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// `s` as a value: control characters as spaces, cut to [`MAX_VALUE`] bytes on a character
/// boundary.
pub fn clean_value(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_VALUE {
            break;
        }
        out.push(c);
    }
    out
}

impl Report {
    /// The body.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{} {} {} {}\n",
            self.epoch, self.seq, self.base, self.every_ms
        );
        for (k, v) in &self.set {
            s.push_str(k);
            s.push(' ');
            s.push_str(v);
            s.push('\n');
        }
        for k in &self.removed {
            s.push('-');
            s.push_str(k);
            s.push('\n');
        }
        s
    }

    /// Parses a body.
    pub fn decode(body: &[u8]) -> Result<Self, ReportError> {
        if body.len() > MAX_REPORT {
            return Err(ReportError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| ReportError::NotText)?;
        let mut lines = text.lines();
        let head: Vec<u64> = lines
            .next()
            .unwrap_or("")
            .split(' ')
            .map(str::parse::<u64>)
            .collect::<Result<_, _>>()
            .map_err(|_| ReportError::Header)?;
        let &[epoch, seq, base, every_ms] = head.as_slice() else {
            return Err(ReportError::Header);
        };
        if seq <= base {
            return Err(ReportError::Header);
        }
        let mut r = Report {
            epoch,
            seq,
            base,
            every_ms,
            ..Default::default()
        };
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            if let Some(k) = line.strip_prefix('-') {
                if !valid_key(k) {
                    return Err(ReportError::Line(i + 2));
                }
                r.removed.push(k.to_string());
            } else {
                let (k, v) = line.split_once(' ').unwrap_or((line, ""));
                if !valid_key(k) || v.len() > MAX_VALUE {
                    return Err(ReportError::Line(i + 2));
                }
                r.set.push((k.to_string(), v.to_string()));
            }
            if r.set.len() + r.removed.len() > MAX_KEYS {
                return Err(ReportError::TooManyKeys);
            }
        }
        Ok(r)
    }
}

/// One link in a summary (key `l.<name>`): `<state> <kind> <up kbit/s> <down kbit/s>
/// <rtt ms> <loss %>`, numbers to two significant digits, so noise does not make a change.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkLine {
    /// `up`, `down`, `probation`, ...
    pub state: String,
    /// `cellular`, `wifi`, ...
    pub kind: String,
    /// Goodput up, kbit/s.
    pub up_kbps: f64,
    /// Goodput down, kbit/s.
    pub down_kbps: f64,
    /// Smoothed round trip, ms.
    pub rtt_ms: f64,
    /// Loss, percent.
    pub loss_pct: f64,
}

/// `x` to two significant digits (whole numbers from 10 up).
pub fn two_digits(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        return "0".into();
    }
    if x < 10.0 {
        let r = (x * 10.0).round() / 10.0;
        return format!("{r}");
    }
    let mag = 10f64.powi(x.log10().floor() as i32 - 1);
    format!("{}", ((x / mag).round() * mag) as u64)
}

impl LinkLine {
    /// The value.
    pub fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            key_part(&self.state),
            key_part(&self.kind),
            two_digits(self.up_kbps),
            two_digits(self.down_kbps),
            two_digits(self.rtt_ms),
            two_digits(self.loss_pct)
        )
    }

    /// Parses a value (None when it is not one).
    pub fn decode(v: &str) -> Option<Self> {
        let mut it = v.split(' ');
        let state = it.next()?.to_string();
        let kind = it.next()?.to_string();
        let mut num = || it.next()?.parse::<f64>().ok().filter(|x| x.is_finite());
        Some(Self {
            state,
            kind,
            up_kbps: num()?,
            down_kbps: num()?,
            rtt_ms: num()?,
            loss_pct: num()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_as_written() {
        let r = Report {
            epoch: 99,
            seq: 7,
            base: 5,
            every_ms: 1000,
            set: vec![
                ("l.cell".into(), "up cellular 12000 800 45 0.1".into()),
                ("p.0".into(), "an uplink is down: wifi".into()),
                ("empty".into(), String::new()),
            ],
            removed: vec!["c.door".into()],
        };
        assert_eq!(Report::decode(r.encode().as_bytes()), Ok(r));
    }

    #[test]
    fn bad_reports_are_refused_with_their_reason() {
        assert_eq!(Report::decode(b"9 5 5 1000\n"), Err(ReportError::Header));
        assert_eq!(Report::decode(b"9 x 0 1000\n"), Err(ReportError::Header));
        assert_eq!(Report::decode(b"9 1 0\n"), Err(ReportError::Header));
        assert_eq!(Report::decode(b"9 1 0 1000 2\n"), Err(ReportError::Header));
        assert_eq!(
            Report::decode(b"9 1 0 1000\n\xff\n"),
            Err(ReportError::NotText)
        );
        assert_eq!(
            Report::decode(format!("9 1 0 1000\n{} v\n", "k".repeat(65)).as_bytes()),
            Err(ReportError::Line(2))
        );
        assert_eq!(
            Report::decode(format!("9 1 0 1000\nk {}\n", "v".repeat(121)).as_bytes()),
            Err(ReportError::Line(2))
        );
        assert_eq!(
            Report::decode(b"9 1 0 1000\n-\n"),
            Err(ReportError::Line(2))
        );
        let many: String = (0..129).map(|i| format!("k{i} v\n")).collect();
        assert_eq!(
            Report::decode(format!("9 1 0 1000\n{many}").as_bytes()),
            Err(ReportError::TooManyKeys)
        );
        assert_eq!(
            Report::decode(&vec![b'a'; MAX_REPORT + 1]),
            Err(ReportError::TooLarge)
        );
    }

    #[test]
    fn values_and_key_parts_are_made_safe() {
        assert_eq!(key_part("Wi Fi=2"), "Wi_Fi=2");
        assert_eq!(clean_value("a\nb\tc"), "a b c");
        let long = "é".repeat(100);
        let v = clean_value(&long);
        assert!(v.len() <= MAX_VALUE && v.chars().all(|c| c == 'é'));
    }

    #[test]
    fn numbers_keep_two_significant_digits() {
        assert_eq!(two_digits(0.0), "0");
        assert_eq!(two_digits(f64::NAN), "0");
        assert_eq!(two_digits(0.04), "0");
        assert_eq!(two_digits(3.24), "3.2");
        assert_eq!(two_digits(47.4), "47");
        assert_eq!(two_digits(12_345.0), "12000");
        assert_eq!(two_digits(19_600.0), "20000");
        let l = LinkLine {
            state: "up".into(),
            kind: "cellular".into(),
            up_kbps: 12_345.0,
            down_kbps: 812.0,
            rtt_ms: 45.2,
            loss_pct: 0.12,
        };
        let back = LinkLine::decode(&l.encode()).unwrap();
        assert_eq!(back.up_kbps, 12_000.0);
        assert_eq!(back.rtt_ms, 45.0);
        assert_eq!(back.loss_pct, 0.1);
        assert!(LinkLine::decode("up cellular 1 2 3").is_none());
        assert!(LinkLine::decode("up cellular 1 2 3 NaN").is_none());
    }
}
