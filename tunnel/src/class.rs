//! Traffic classes and the config rules that assign them to requests.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a request is for; decides its priority on every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TrafficClass {
    /// Auction bids: tiny, urgent, never lost.
    Bid,
    /// Ticket check-ins: tiny, urgent.
    Checkin,
    /// Live media parts.
    Stream,
    /// Everything else (downloads, uploads, browsing). The default.
    Bulk,
}

impl TrafficClass {
    /// All classes, most urgent first.
    pub const ALL: [TrafficClass; 4] = [Self::Bid, Self::Checkin, Self::Stream, Self::Bulk];

    /// Name used in headers, config and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bid => "bid",
            Self::Checkin => "checkin",
            Self::Stream => "stream",
            Self::Bulk => "bulk",
        }
    }

    /// Parses a class name as written in headers and config.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Small, urgent transactions (bid, check-in): carry idempotency keys, may use any path.
    pub fn is_transactional(self) -> bool {
        matches!(self, Self::Bid | Self::Checkin)
    }
}

impl fmt::Display for TrafficClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One classification rule from config. Every field that is set must match; the first
/// matching rule wins; requests matching no rule are `bulk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRule {
    /// Class assigned when the rule matches.
    pub class: TrafficClass,
    /// Host pattern: exact (`bids.example.com`) or a leading wildcard (`*.example.com`).
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, e.g. `/api/bid`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// HTTP method, e.g. `POST`.
    #[serde(default)]
    pub method: Option<String>,
}

impl ClassRule {
    fn matches(&self, method: &str, host: &str, path: &str) -> bool {
        self.host.as_deref().is_none_or(|p| host_matches(p, host))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Matches a host against a pattern: `*` matches any host, `*.example.com` matches any
/// subdomain of example.com (not example.com itself), anything else matches exactly
/// (ASCII case-insensitive).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Assigns traffic classes by the configured rules.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    rules: Vec<ClassRule>,
}

impl Classifier {
    /// A classifier over rules in config order.
    pub fn new(rules: Vec<ClassRule>) -> Self {
        Self { rules }
    }

    /// The class of a request: first matching rule, else `bulk`.
    pub fn classify(&self, method: &str, host: &str, path: &str) -> TrafficClass {
        self.rules
            .iter()
            .find(|r| r.matches(method, host, path))
            .map_or(TrafficClass::Bulk, |r| r.class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        class: TrafficClass,
        host: Option<&str>,
        path: Option<&str>,
        method: Option<&str>,
    ) -> ClassRule {
        ClassRule {
            class,
            host: host.map(Into::into),
            path_prefix: path.map(Into::into),
            method: method.map(Into::into),
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_is_bulk() {
        let c = Classifier::new(vec![
            rule(TrafficClass::Bid, None, Some("/bid"), Some("POST")),
            rule(TrafficClass::Checkin, Some("*.tickets.example"), None, None),
            rule(TrafficClass::Stream, None, Some("/live/"), None),
        ]);
        assert_eq!(
            c.classify("POST", "a.example", "/bid/42"),
            TrafficClass::Bid
        );
        assert_eq!(
            c.classify("GET", "a.example", "/bid/42"),
            TrafficClass::Bulk
        );
        assert_eq!(
            c.classify("get", "Gate.Tickets.Example", "/x"),
            TrafficClass::Checkin
        );
        assert_eq!(
            c.classify("GET", "tickets.example", "/x"),
            TrafficClass::Bulk
        );
        assert_eq!(
            c.classify("GET", "cdn", "/live/cam1/part.m4s"),
            TrafficClass::Stream
        );
        assert_eq!(c.classify("GET", "cdn", "/assets/big"), TrafficClass::Bulk);
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("*", "anything"));
        assert!(host_matches("*.a.com", "b.a.com"));
        assert!(host_matches("*.a.com", "c.b.a.com"));
        assert!(!host_matches("*.a.com", "a.com"));
        assert!(!host_matches("*.a.com", "xa.com"));
        assert!(host_matches("A.com", "a.COM."));
    }

    #[test]
    fn class_names_round_trip() {
        for c in TrafficClass::ALL {
            assert_eq!(TrafficClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(TrafficClass::parse("video"), None);
    }
}
