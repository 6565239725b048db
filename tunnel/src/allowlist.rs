//! The relay's egress allowlist: which origins venue traffic may reach.
//!
//! Patterns are `host[:port]`. `host` is `*`, `*.example.com`, an exact name, an IPv4
//! literal or a bracketed IPv6 literal; `port` is a number or `*`; a pattern without a port
//! allows 80 and 443. Loopback, private, link-local, CGNAT and other non-public addresses
//! are refused unless the matching pattern names the address itself (an IP literal, or
//! `localhost`): `10.0.0.5:8080` allows that origin; `*` and `api.example.com` never reach
//! into the relay's own network, whatever their DNS says.

use crate::class::host_matches;
use std::fmt;
use std::net::IpAddr;

/// Why a pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowlistError {
    /// The pattern is empty.
    #[error("empty allowlist pattern")]
    Empty,
    /// The port is neither a number nor `*`.
    #[error("bad port in allowlist pattern {0:?} (expected a number or *)")]
    BadPort(String),
    /// A wildcard anywhere but as the whole host or its first label.
    #[error("bad wildcard in allowlist pattern {0:?} (use * or *.example.com)")]
    BadWildcard(String),
}

/// Why the relay refuses a destination. Its Display is the reason sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No pattern matches host and port.
    NotAllowlisted {
        /// Requested host.
        host: String,
        /// Requested port.
        port: u16,
    },
    /// The host resolved to a non-public address that no pattern names explicitly.
    PrivateAddress {
        /// Requested host.
        host: String,
        /// The address it resolved to.
        addr: IpAddr,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NotAllowlisted { host, port } => {
                write!(f, "destination {host}:{port} is not on the relay's egress allowlist")
            }
            Denial::PrivateAddress { host, addr } => write!(
                f,
                "destination {host} resolves to non-public address {addr}; the allowlist must name it explicitly"
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Web,
    Any,
    Exact(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: String,
    port: PortRule,
}

impl Pattern {
    /// Whether the pattern names an address itself (an IP literal or `localhost`): only
    /// such patterns reach non-public addresses. An exact DNS name does not, since whoever
    /// controls its DNS could point it into the relay's own network.
    fn names_address(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok()
    }
}

/// A granted destination: whether the matching pattern named the host without wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// True when a pattern naming an IP literal (or `localhost`) matched, which also
    /// allows non-public addresses.
    pub explicit: bool,
}

/// A parsed allowlist.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
}

impl Allowlist {
    /// Parses every pattern; the first bad one is returned as an error with its index.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, (usize, AllowlistError)> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| parse_pattern(p.as_ref()).map_err(|e| (i, e)))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Checks a destination host and port against the patterns.
    pub fn check(&self, host: &str, port: u16) -> Result<Grant, Denial> {
        let host = normalize_host(host);
        let mut grant: Option<Grant> = None;
        for p in &self.patterns {
            let port_ok = match p.port {
                PortRule::Web => port == 80 || port == 443,
                PortRule::Any => true,
                PortRule::Exact(n) => n == port,
            };
            if port_ok && host_matches(&p.host, host) {
                let explicit = p.names_address();
                if explicit {
                    return Ok(Grant { explicit });
                }
                grant = Some(Grant { explicit });
            }
        }
        grant.ok_or_else(|| Denial::NotAllowlisted {
            host: host.to_string(),
            port,
        })
    }

    /// Checks one resolved address of a granted host.
    pub fn check_addr(grant: Grant, host: &str, addr: IpAddr) -> Result<(), Denial> {
        if !grant.explicit && !is_public(addr) {
            return Err(Denial::PrivateAddress {
                host: normalize_host(host).to_string(),
                addr,
            });
        }
        Ok(())
    }
}

fn normalize_host(host: &str) -> &str {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
}

fn parse_pattern(raw: &str) -> Result<Pattern, AllowlistError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(AllowlistError::Empty);
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| AllowlistError::BadPort(raw.into()))?;
        if !tail.is_empty() && !tail.starts_with(':') {
            return Err(AllowlistError::BadPort(raw.into()));
        }
        (h, tail.strip_prefix(':'))
    } else if raw.matches(':').count() > 1 {
        (raw, None) // bare IPv6 literal
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        None => PortRule::Web,
        Some("*") => PortRule::Any,
        Some(p) => PortRule::Exact(p.parse().map_err(|_| AllowlistError::BadPort(raw.into()))?),
    };
    let wildcard_ok = host == "*" || (host.starts_with("*.") && !host[2..].contains('*'));
    if host.contains('*') && !wildcard_ok {
        return Err(AllowlistError::BadWildcard(raw.into()));
    }
    if host.is_empty() {
        return Err(AllowlistError::Empty);
    }
    Ok(Pattern {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// True for addresses on the public internet; false for loopback, private (RFC 1918, ULA),
/// link-local, CGNAT, benchmarking, multicast, reserved, unspecified and broadcast
/// addresses, and for IPv6 forms that embed such an IPv4 address (mapped, compatible,
/// NAT64, 6to4).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4() {
                // ::a.b.c.d and ::ffff:a.b.c.d
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                IpAddr::V4(std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32))
            };
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public(embedded(s[6], s[7])); // NAT64 64:ff9b::/96
            }
            if s[0] == 0x2002 {
                return is_public(embedded(s[1], s[2])); // 6to4
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> Allowlist {
        Allowlist::parse(p).expect("valid patterns")
    }

    #[test]
    fn ports_default_to_web() {
        let a = list(&["example.com"]);
        assert!(a.check("example.com", 443).is_ok());
        assert!(a.check("example.com", 80).is_ok());
        assert!(a.check("example.com", 8080).is_err());
        assert!(list(&["example.com:*"]).check("example.com", 8080).is_ok());
        assert!(list(&["example.com:8080"])
            .check("EXAMPLE.com", 8080)
            .is_ok());
    }

    #[test]
    fn wildcards_never_reach_private_addresses() {
        let a = list(&["*:*"]);
        let g = a.check("localhost", 9000).expect("wildcard matches");
        assert!(!g.explicit);
        assert!(Allowlist::check_addr(g, "localhost", "127.0.0.1".parse().unwrap()).is_err());
        assert!(Allowlist::check_addr(g, "x", "10.1.2.3".parse().unwrap()).is_err());
        assert!(Allowlist::check_addr(g, "x", "::1".parse().unwrap()).is_err());
        assert!(Allowlist::check_addr(g, "x", "::ffff:192.168.1.1".parse().unwrap()).is_err());
        assert!(Allowlist::check_addr(g, "x", "100.64.0.1".parse().unwrap()).is_err());
        assert!(Allowlist::check_addr(g, "x", "93.184.216.34".parse().unwrap()).is_ok());
        for embedded in [
            "::127.0.0.1",
            "64:ff9b::a00:5",
            "2002:c0a8:101::1",
            "ff02::1",
            "64:ff9b:1::1",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(
                Allowlist::check_addr(g, "x", embedded.parse().unwrap()).is_err(),
                "{embedded}"
            );
        }
        assert!(
            Allowlist::check_addr(g, "x", "64:ff9b::5db8:d822".parse().unwrap()).is_ok(),
            "NAT64 of a public address"
        );
    }

    #[test]
    fn explicit_patterns_allow_named_private_origins() {
        let a = list(&[
            "*.example.com",
            "127.0.0.1:9000",
            "[::1]:9001",
            "partner.example.org",
        ]);
        // an exact DNS name is not an address: it never reaches private ranges
        assert!(
            !a.check("partner.example.org", 443)
                .expect("listed")
                .explicit
        );
        let g = a.check("127.0.0.1", 9000).expect("explicit");
        assert!(g.explicit);
        assert!(Allowlist::check_addr(g, "127.0.0.1", "127.0.0.1".parse().unwrap()).is_ok());
        assert!(a.check("[::1]", 9001).expect("v6").explicit);
        assert!(a.check("127.0.0.1", 9002).is_err());
        assert!(a.check("www.example.com", 443).is_ok());
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert_eq!(Allowlist::parse(&["ok.com", "a.*.com"]).unwrap_err().0, 1);
        assert!(Allowlist::parse(&["a.com:http"]).is_err());
        assert!(Allowlist::parse(&[""]).is_err());
        assert!(Allowlist::parse(&["[::1]8080"]).is_err());
    }
}
