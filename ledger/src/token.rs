//! Check-in tokens: signed by the organizer (Ed25519), verified by the gateway alone, with
//! no uplink. A token says who may enter which event, from when until when:
//!
//! ```text
//! cnp1.<payload>.<signature>      both base64url without padding
//! payload = version 1, event, attendee, token id, not-before s, expires s  (crate::codec)
//! signature = Ed25519 over "canopy-checkin-v1\0" + payload
//! ```
//!
//! Binary fields keep a token short enough for a QR code (about 150 characters).

use crate::codec::{Reader, Writer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

const PREFIX: &str = "cnp1";
const DOMAIN: &[u8] = b"canopy-checkin-v1\0";
/// Longest token accepted, characters.
pub const MAX_TOKEN: usize = 2048;
/// Longest event slug, attendee id or token id, bytes.
pub const MAX_FIELD: usize = 128;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The event's slug.
    pub event: String,
    /// Who: the attendee's id.
    pub attendee: String,
    /// This token's id (unique per issued token).
    pub id: String,
    /// Valid from, s since the Unix epoch.
    pub not_before: u64,
    /// Valid until (checkout), s since the Unix epoch.
    pub expires: u64,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token (wrong shape, bad base64, bad fields).
    #[error("not a check-in token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the organizer's key.
    #[error("the token's signature does not verify: forged or for another organizer")]
    Forged,
    /// Signed, but for another event.
    #[error("the token is for event {0:?}, not this one")]
    WrongEvent(String),
    /// Not valid yet.
    #[error("the token is not valid before {0} (Unix time)")]
    NotYetValid(u64),
    /// Expired.
    #[error("the token expired at {0} (Unix time)")]
    Expired(u64),
}

impl TokenError {
    /// A short word for metrics and answers.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Forged => "forged",
            TokenError::WrongEvent(_) => "wrong_event",
            TokenError::NotYetValid(_) => "not_yet_valid",
            TokenError::Expired(_) => "expired",
        }
    }
}

/// The organizer's signing key.
pub struct Issuer(Ed25519KeyPair);

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Issuer").field(&self.public_key()).finish()
    }
}

impl Issuer {
    /// A new key: its PKCS#8 document (to keep secret) and the issuer.
    pub fn generate() -> Result<(Vec<u8>, Self), ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)?;
        let pair =
            Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|_| ring::error::Unspecified)?;
        Ok((doc.as_ref().to_vec(), Self(pair)))
    }

    /// The issuer of a PKCS#8 document.
    pub fn from_pkcs8(doc: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        Ed25519KeyPair::from_pkcs8(doc).map(Self)
    }

    /// The public key, base64url (what gateways are configured with).
    pub fn public_key(&self) -> String {
        B64.encode(self.0.public_key().as_ref())
    }

    /// Signs a grant.
    pub fn issue(&self, g: &Grant) -> String {
        let payload = encode(g);
        let mut signed = DOMAIN.to_vec();
        signed.extend_from_slice(&payload);
        let sig = self.0.sign(&signed);
        format!(
            "{PREFIX}.{}.{}",
            B64.encode(&payload),
            B64.encode(sig.as_ref())
        )
    }
}

/// The organizer's public key, as gateways hold it.
#[derive(Clone)]
pub struct Verifier(UnparsedPublicKey<Vec<u8>>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl Verifier {
    /// A public key in base64url (32 bytes).
    pub fn from_base64(s: &str) -> Option<Self> {
        let raw = B64.decode(s.trim()).ok()?;
        (raw.len() == 32).then(|| Self(UnparsedPublicKey::new(&ED25519, raw)))
    }

    /// Checks a token: signature, event, and validity at `now_s` (with `leeway_s` for
    /// clocks that differ).
    pub fn verify(
        &self,
        token: &str,
        event: &str,
        now_s: u64,
        leeway_s: u64,
    ) -> Result<Grant, TokenError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected cnp1.<payload>.<signature>"));
        };
        let payload = B64
            .decode(p)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let sig = B64
            .decode(s)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let mut signed = DOMAIN.to_vec();
        signed.extend_from_slice(&payload);
        self.0
            .verify(&signed, &sig)
            .map_err(|_| TokenError::Forged)?;
        let g = decode(&payload).ok_or(TokenError::Malformed("fields"))?;
        if g.event != event {
            return Err(TokenError::WrongEvent(g.event));
        }
        if now_s.saturating_add(leeway_s) < g.not_before {
            return Err(TokenError::NotYetValid(g.not_before));
        }
        if now_s >= g.expires.saturating_add(leeway_s) {
            return Err(TokenError::Expired(g.expires));
        }
        Ok(g)
    }
}

fn encode(g: &Grant) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(1)
        .str(&g.event)
        .str(&g.attendee)
        .str(&g.id)
        .u64(g.not_before)
        .u64(g.expires);
    w.finish()
}

fn decode(b: &[u8]) -> Option<Grant> {
    let mut r = Reader::new(b);
    if r.u8().ok()? != 1 {
        return None;
    }
    let field = |r: &mut Reader<'_>| -> Option<String> {
        let s = r.str().ok()?;
        (!s.is_empty() && s.len() <= MAX_FIELD).then(|| s.to_owned())
    };
    let g = Grant {
        event: field(&mut r)?,
        attendee: field(&mut r)?,
        id: field(&mut r)?,
        not_before: r.u64().ok()?,
        expires: r.u64().ok()?,
    };
    r.end().ok()?;
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            event: "market-2026".into(),
            attendee: "A-0042".into(),
            id: "t-9f1c".into(),
            not_before: 1_000,
            expires: 2_000,
        }
    }

    #[test]
    fn a_token_verifies_only_as_issued() {
        let (_, issuer) = Issuer::generate().unwrap();
        let v = Verifier::from_base64(&issuer.public_key()).unwrap();
        let t = issuer.issue(&grant());
        assert!(t.len() < 200, "{}", t.len());
        assert_eq!(v.verify(&t, "market-2026", 1_500, 0), Ok(grant()));
        assert_eq!(
            v.verify(&t, "other", 1_500, 0),
            Err(TokenError::WrongEvent("market-2026".into()))
        );
        assert_eq!(
            v.verify(&t, "market-2026", 999, 0),
            Err(TokenError::NotYetValid(1_000))
        );
        assert_eq!(
            v.verify(&t, "market-2026", 2_000, 0),
            Err(TokenError::Expired(2_000))
        );
        // leeway for a gateway clock a little behind or ahead
        assert!(v.verify(&t, "market-2026", 990, 30).is_ok());
        assert!(v.verify(&t, "market-2026", 2_010, 30).is_ok());

        // another organizer's key, or a changed payload: forged
        let (_, other) = Issuer::generate().unwrap();
        let forged = other.issue(&grant());
        assert_eq!(
            v.verify(&forged, "market-2026", 1_500, 0),
            Err(TokenError::Forged)
        );
        let mut g = grant();
        g.attendee = "A-0043".into();
        let (_, p2, _) = split(&issuer.issue(&g));
        let (_, _, s1) = split(&t);
        assert_eq!(
            v.verify(&format!("cnp1.{p2}.{s1}"), "market-2026", 1_500, 0),
            Err(TokenError::Forged)
        );
    }

    fn split(t: &str) -> (String, String, String) {
        let mut p = t.split('.').map(str::to_owned);
        (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let (_, issuer) = Issuer::generate().unwrap();
        let v = Verifier::from_base64(&issuer.public_key()).unwrap();
        for t in ["", "cnp1", "cnp1..", "cnp1.a.b", "cnp2.AA.AA", "x.y.z.w"] {
            assert!(
                matches!(
                    v.verify(t, "e", 0, 0),
                    Err(TokenError::Malformed(_) | TokenError::Forged)
                ),
                "{t}"
            );
        }
        let good = issuer.issue(&grant());
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..2000 {
            let mut b = good.clone().into_bytes();
            let i = rng.usize(0..b.len());
            b[i] = rng.u8(33..127);
            if let Ok(s) = String::from_utf8(b) {
                if s != good {
                    assert!(v.verify(&s, "market-2026", 1_500, 0).is_err(), "{s}");
                }
            }
        }
        assert!(Verifier::from_base64("short").is_none());
    }
}
