//! The response directives the store reads itself (the rest is http-cache-semantics'):
//! whether a stale answer may be served without the origin, and whether an answer says
//! anything about its freshness at all.

use http::{header, HeaderMap, HeaderValue};
use std::time::Duration;

/// What an answer's `Cache-Control` says about serving it stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    /// `must-revalidate`, `proxy-revalidate`, `no-cache` or `s-maxage`: never stale
    /// (RFC 9111 4.2.4, 5.2.2).
    pub never_stale: bool,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    /// Reads them from an answer's headers.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for (name, value) in cache_control(headers) {
            match name.as_str() {
                "must-revalidate" | "proxy-revalidate" | "no-cache" | "s-maxage" => {
                    d.never_stale = true
                }
                "stale-if-error" => {
                    d.stale_if_error = value
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs)
                }
                _ => {}
            }
        }
        d
    }

    /// How long past its freshness the answer may be served: when the origin failed
    /// (`error`), its own `stale-if-error` if it gives one; when no uplink is up, `max`.
    /// `None`: never.
    pub fn stale_allowed(&self, max: Duration, error: bool) -> Option<Duration> {
        if self.never_stale {
            return None;
        }
        Some(match (error, self.stale_if_error) {
            (true, Some(n)) => n,
            _ => max,
        })
    }
}

/// Whether an answer says anything about how long it is fresh (so a default max-age
/// must not be put on it).
pub fn states_freshness(headers: &HeaderMap) -> bool {
    headers.contains_key(header::EXPIRES)
        || cache_control(headers).iter().any(|(n, _)| {
            matches!(
                n.as_str(),
                "max-age" | "s-maxage" | "no-cache" | "no-store" | "private" | "must-revalidate"
            )
        })
}

/// Puts `max-age=secs` on an answer that says nothing of its freshness.
pub fn with_default_max_age(headers: &mut HeaderMap, secs: u64) {
    if states_freshness(headers) {
        return;
    }
    let v = match headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    {
        Some(cc) if !cc.trim().is_empty() => format!("{cc}, max-age={secs}"),
        _ => format!("max-age={secs}"),
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        headers.insert(header::CACHE_CONTROL, v);
    }
}

/// The largest delta-seconds a cache takes (RFC 9111 1.2.2: larger ones count as this).
pub(super) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// An answer's `Age`, `max-age` and `s-maxage` held to [`MAX_DELTA_SECONDS`], so no
/// origin can make the store's time arithmetic overflow.
pub fn clamp_deltas(headers: &mut HeaderMap) {
    let too_big = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_or(v.trim().len() > 10, |n| n > MAX_DELTA_SECONDS)
    };
    if headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(too_big)
    {
        headers.insert(header::AGE, HeaderValue::from(MAX_DELTA_SECONDS));
    }
    let cc = cache_control(headers);
    if cc.iter().any(|(n, v)| {
        matches!(n.as_str(), "max-age" | "s-maxage") && v.as_deref().is_some_and(too_big)
    }) {
        let joined = cc
            .into_iter()
            .map(|(n, v)| match v {
                Some(v) if matches!(n.as_str(), "max-age" | "s-maxage") && too_big(&v) => {
                    format!("{n}={MAX_DELTA_SECONDS}")
                }
                Some(v) => format!("{n}={v}"),
                None => n,
            })
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(v) = HeaderValue::from_str(&joined) {
            headers.insert(header::CACHE_CONTROL, v);
        }
    }
}

/// `Cache-Control` as (lower-cased name, value) pairs.
fn cache_control(headers: &HeaderMap) -> Vec<(String, Option<String>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| {
            let mut kv = part.splitn(2, '=');
            let name = kv.next()?.trim().to_ascii_lowercase();
            if name.is_empty() {
                return None;
            }
            let value = kv.next().map(|v| v.trim().trim_matches('"').to_string());
            Some((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cc: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(cc).expect("value"),
        );
        m
    }

    #[test]
    fn stale_is_allowed_unless_the_answer_forbids_it() {
        let max = Duration::from_secs(3600);
        assert_eq!(
            Directives::of(&h("max-age=60")).stale_allowed(max, true),
            Some(max)
        );
        for never in [
            "must-revalidate",
            "max-age=60, proxy-revalidate",
            "no-cache",
            "s-maxage=5",
        ] {
            assert_eq!(
                Directives::of(&h(never)).stale_allowed(max, false),
                None,
                "{never}"
            );
        }
        let sie = Directives::of(&h("max-age=60, stale-if-error=30"));
        assert_eq!(sie.stale_allowed(max, true), Some(Duration::from_secs(30)));
        // no uplink at all: the venue's own bound
        assert_eq!(sie.stale_allowed(max, false), Some(max));
    }

    #[test]
    fn huge_ages_are_held_to_2_31() {
        let mut m = h("public, max-age=18446744073709551615, s-maxage=99999999999999999999");
        m.insert(
            header::AGE,
            HeaderValue::from_static("18446744073709551615"),
        );
        clamp_deltas(&mut m);
        assert_eq!(m[header::AGE], "2147483648");
        assert_eq!(
            m[header::CACHE_CONTROL],
            "public, max-age=2147483648, s-maxage=2147483648"
        );
        let mut ok = h("max-age=60");
        clamp_deltas(&mut ok);
        assert_eq!(ok[header::CACHE_CONTROL], "max-age=60");
    }

    #[test]
    fn a_default_max_age_goes_only_on_answers_that_say_nothing() {
        let mut none = HeaderMap::new();
        with_default_max_age(&mut none, 1800);
        assert_eq!(none[header::CACHE_CONTROL], "max-age=1800");
        let mut public = h("public");
        with_default_max_age(&mut public, 1800);
        assert_eq!(public[header::CACHE_CONTROL], "public, max-age=1800");
        for said in ["max-age=5", "no-store", "private", "no-cache"] {
            let mut m = h(said);
            with_default_max_age(&mut m, 1800);
            assert_eq!(m[header::CACHE_CONTROL], said);
        }
        let mut expires = HeaderMap::new();
        expires.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 2099 00:00:00 GMT"),
        );
        with_default_max_age(&mut expires, 1800);
        assert!(!expires.contains_key(header::CACHE_CONTROL));
    }
}
