//! Idempotency keys and what a key stands for. A device names its bid with an
//! `Idempotency-Key` (IETF httpapi draft: a structured-field string, quoted or not); the
//! gateway takes any such key of 1 to 255 visible characters and makes one when the device
//! sent none or an unusable one. A key stands for one request: its fingerprint (method,
//! target and body) travels with it, and a key that comes again with another fingerprint
//! is refused, never answered with the first request's answer.

use crate::record::MAX_KEY;
use ring::digest;

/// SHA-256 over a request's method, target and body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex()[..16])
    }
}

impl Fingerprint {
    /// The fingerprint in hex (64 digits).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

/// The fingerprint of a request: each part length-prefixed, so no two different requests
/// share the bytes hashed.
pub fn fingerprint(method: &str, target: &str, body: &[u8]) -> Fingerprint {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [method.as_bytes(), target.as_bytes(), body] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Fingerprint(out)
}

/// A device's `Idempotency-Key` value as a key: the string inside quotes when quoted;
/// 1 to 255 visible ASCII characters. `None` when the device's value cannot be used.
pub fn device_key(value: &str) -> Option<&str> {
    let v = value.trim();
    let v = match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => v,
    };
    (!v.is_empty() && v.len() <= MAX_KEY && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        .then_some(v)
}

/// A key the gateway makes from 128 random bits (sans-IO: the caller draws them).
pub fn gateway_key(random: u128) -> String {
    format!("cnp-{random:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_quoted_device_keys_are_kept() {
        assert_eq!(device_key("k-123"), Some("k-123"));
        assert_eq!(device_key("\"8e03978e-40d5\""), Some("8e03978e-40d5"));
        assert_eq!(device_key(" 1 "), Some("1"));
        assert_eq!(device_key(""), None);
        assert_eq!(device_key("\"\""), None);
        assert_eq!(device_key("two words"), None);
        assert_eq!(device_key("\"open"), None);
        assert_eq!(device_key(&"x".repeat(256)), None);
        assert_eq!(device_key(&"x".repeat(255)).map(str::len), Some(255));
        assert!(device_key(&gateway_key(u128::MAX)).is_some());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let a = fingerprint("POST", "http://a.test/bids", b"lot=7&amount=120");
        assert_eq!(
            a,
            fingerprint("POST", "http://a.test/bids", b"lot=7&amount=120")
        );
        assert_ne!(
            a,
            fingerprint("POST", "http://a.test/bids", b"lot=7&amount=121")
        );
        assert_ne!(
            a,
            fingerprint("PUT", "http://a.test/bids", b"lot=7&amount=120")
        );
        assert_ne!(
            a,
            fingerprint("POST", "http://b.test/bids", b"lot=7&amount=120")
        );
        // moving bytes between parts changes the fingerprint
        assert_ne!(
            fingerprint("POST", "ab", b"c"),
            fingerprint("POST", "a", b"bc")
        );
        assert_eq!(Fingerprint::from_hex(&a.hex()), Some(a));
        assert_eq!(Fingerprint::from_hex("zz"), None);
    }
}
