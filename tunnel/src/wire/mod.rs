//! Wire conventions between gateway and relay: ALPN, header names, idempotency keys, and
//! the messages both ends encode and decode ([`media`]: live media pieces and init
//! segments; [`clock`]: the clock exchange; [`pull`]: large answers pulled in chunks;
//! [`telemetry`]: the gateway's delta telemetry).

pub mod clock;
pub mod media;
pub mod probe;
pub mod pull;
pub mod stripe;
pub mod telemetry;

/// ALPN of HTTP/3: the relay is an ordinary HTTP/3 server.
pub const ALPN_H3: &[u8] = b"h3";

/// Traffic class the gateway assigned to a request (`bid`, `checkin`, `stream`, `bulk`).
/// The relay uses it for downstream policy and strips it before egress.
pub const HDR_CLASS: &str = "canopy-class";

/// Idempotency key of a request (bids and check-ins always carry one). Devices may send the
/// standard `Idempotency-Key` header; the gateway copies it here or generates one.
pub const HDR_IDEMPOTENCY_KEY: &str = "canopy-idempotency-key";

/// The header venue devices may use for their own idempotency keys (IETF draft).
pub const HDR_DEVICE_IDEMPOTENCY_KEY: &str = "idempotency-key";

/// When the gateway received a bid or check-in: µs since the Unix epoch, in the relay's
/// clock when the gateway knew the offset. Requests sent again after an outage carry the
/// time they first arrived.
pub const HDR_EDGE_TIME: &str = "canopy-edge-time";

/// What the idempotency key stands for: SHA-256 of method, target and body (64 hex
/// digits). The relay refuses a key that comes again with another fingerprint.
pub const HDR_FINGERPRINT: &str = "canopy-fingerprint";

/// Short reason attached to synthetic error responses from gateway or relay.
pub const HDR_REASON: &str = "canopy-reason";

/// `:authority` of the session hello each gateway connection sends first
/// (`POST https://canopy.session/hello`). Not a DNS name: the relay answers it itself.
pub const SESSION_AUTHORITY: &str = "canopy.session";

/// `:authority` of a striped body's chunks (`PUT https://canopy.stripe/`), answered by the
/// relay itself. A large upload's body is cut into chunks that go on whichever path will
/// deliver them soonest; the relay puts them back in order and feeds the origin request
/// that the request's head (sent on one path, with [`HDR_STRIPE`]) opened.
pub const STRIPE_AUTHORITY: &str = "canopy.stripe";

/// Stripe id (16 hex digits) on a striped request's head and on each of its chunks.
pub const HDR_STRIPE: &str = "canopy-stripe";

/// Number of a striped request's head (1, then 2, ... as the gateway sends it again on
/// another path): the newest answers, whatever order the copies arrive in.
pub const HDR_STRIPE_HEAD: &str = "canopy-stripe-head";

/// Offset of a chunk in its striped body.
pub const HDR_STRIPE_OFFSET: &str = "canopy-stripe-offset";

/// Whole length of a striped body, on every chunk (a chunk may arrive before the head).
pub const HDR_STRIPE_TOTAL: &str = "canopy-stripe-total";

/// Bytes of one striped body in flight beyond its oldest unanswered chunk. The gateway
/// sends no further; the relay holds at most this much that the origin has not taken (a
/// chunk beyond it waits for its answer).
pub const STRIPE_WINDOW: u64 = 8 * 1024 * 1024;

/// Session id in the hello (32 hex digits, random per gateway start).
pub const HDR_SESSION: &str = "canopy-session";

/// Path id in the hello (the uplink's index at the gateway).
pub const HDR_PATH: &str = "canopy-path";

/// Uplink name in the hello (for the relay's logs and metrics).
pub const HDR_PATH_NAME: &str = "canopy-path-name";

/// Link kind in the hello (`cellular`, `wifi`, `satellite`, `ethernet`).
pub const HDR_LINK_KIND: &str = "canopy-link-kind";

/// In the hello of a returning link: the best rate (bytes per second, a whole number) the
/// link carried towards the gateway lately. The relay resumes its controller on the new
/// connection from there ([`resume_down_header`], [`resume_down_of`]).
pub const HDR_RESUME_DOWN: &str = "canopy-resume-down";

/// The value of [`HDR_RESUME_DOWN`] for `rate` bytes per second.
pub fn resume_down_header(rate: f64) -> String {
    format!("{}", rate.max(0.0).round() as u64)
}

/// The rate in a [`HDR_RESUME_DOWN`] value: None when it is not a whole number above 0.
pub fn resume_down_of(value: &str) -> Option<f64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|r| *r > 0)
        .map(|r| r as f64)
}

/// Set by the relay on the answer to a redundant copy (the first copy's answer, replayed).
pub const HDR_DUPLICATE: &str = "canopy-duplicate";
/// On a replayed answer to a bid or check-in: the relay kept only the first bytes of the
/// origin's answer (it was large or slow); the status and headers are the origin's.
pub const HDR_ANSWER_TRUNCATED: &str = "canopy-answer-truncated";

/// Every Canopy-private header starts with this prefix; egress strips them all.
pub const PRIVATE_PREFIX: &str = "canopy-";

/// A reason as a header value: visible ASCII and spaces, anything else replaced by `?`.
pub fn reason_header_value(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A request's idempotency key ([`HDR_IDEMPOTENCY_KEY`]), when it carries a valid one.
pub fn idempotency_key(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(HDR_IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| valid_idempotency_key(k))
}

/// The reason of a synthetic response, if it carries one.
pub fn reason_of(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(HDR_REASON).and_then(|v| v.to_str().ok())
}

/// Checks an idempotency key: 1 to 255 visible ASCII characters, no spaces (a device's
/// own key, however short, or one the gateway made).
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Why a header of a wire message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The header is not what it should be.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// An id as 16 hex digits.
fn id_value(id: u64) -> http::HeaderValue {
    // 16 hex digits are always a valid header value
    http::HeaderValue::from_str(&format!("{id:016x}"))
        .unwrap_or(http::HeaderValue::from_static("0"))
}

/// An id of 1 to 16 hex digits.
fn read_id(h: &http::HeaderMap, name: &'static str) -> Result<u64, HeaderError> {
    let v = h.get(name).ok_or(HeaderError::Missing(name))?;
    let s = v.to_str().map_err(|_| HeaderError::Malformed(name))?;
    if s.is_empty() || s.len() > 16 {
        return Err(HeaderError::Malformed(name));
    }
    u64::from_str_radix(s, 16).map_err(|_| HeaderError::Malformed(name))
}

/// A number in decimal digits.
fn read_u64(h: &http::HeaderMap, name: &'static str) -> Result<u64, HeaderError> {
    let v = h.get(name).ok_or(HeaderError::Missing(name))?;
    v.to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(HeaderError::Malformed(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_rate_goes_through_the_hello_and_back() {
        for rate in [1.0, 2_500_000.4, 1e12] {
            let v = resume_down_header(rate);
            assert_eq!(resume_down_of(&v), Some(rate.round()));
        }
        assert_eq!(resume_down_of("0"), None);
        assert_eq!(resume_down_of("-5"), None);
        assert_eq!(resume_down_of("1.5"), None);
        assert_eq!(resume_down_of(""), None);
    }

    #[test]
    fn a_requests_key_is_read_only_when_valid() {
        let mut h = http::HeaderMap::new();
        assert_eq!(idempotency_key(&h), None);
        h.insert(HDR_IDEMPOTENCY_KEY, http::HeaderValue::from_static("k-1"));
        assert_eq!(idempotency_key(&h), Some("k-1"));
        h.insert(HDR_IDEMPOTENCY_KEY, http::HeaderValue::from_static("a b"));
        assert_eq!(idempotency_key(&h), None);
    }

    #[test]
    fn keys_of_any_usable_length_are_valid() {
        assert!(valid_idempotency_key(
            "cnp-0123456789abcdef0123456789abcdef"
        ));
        assert!(valid_idempotency_key("k-123"));
        assert!(!valid_idempotency_key(""));
        assert!(!valid_idempotency_key(&"x".repeat(256)));
        assert!(!valid_idempotency_key("has a space in it"));
    }
}
