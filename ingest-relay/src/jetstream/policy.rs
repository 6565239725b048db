//! What the JetStream bid sink decides, without I/O: the names a bid gets on the bus (its
//! message id, its key in the bucket, its subject), the record kept per key, the answer a
//! device gets, and how long a publish keeps trying through a leader election.
//!
//! The answer is made from the stream and sequence the server gave the bid only, so every
//! relay, and every copy of a bid, gets the same bytes for the same key.

use ledger::Fingerprint;
use ring::digest;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A bid's id on the bus: SHA-256 of (gateway scope, idempotency key), 64 hex digits. It is
/// the `Nats-Msg-Id` the servers deduplicate on and the bid's key in the bucket (whose keys
/// allow only `[-/_=.a-zA-Z0-9]`).
pub(crate) fn bid_id(scope: &str, key: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [scope.as_bytes(), key.as_bytes()] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    tunnel_io::tls::hex(ctx.finish().as_ref())
}

/// The subject of a gateway's bids: `<prefix>.<event>.<gateway>` from its scope
/// (`<gateway>.<event>`, the certificate's common name). Characters a subject token cannot
/// hold become `_`.
pub(crate) fn subject(prefix: &str, scope: &str) -> String {
    let (gateway, event) = scope.split_once('.').unwrap_or((scope, "-"));
    let token = |s: &str| -> String {
        let t: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if t.is_empty() {
            "_".into()
        } else {
            t
        }
    };
    format!("{prefix}.{}.{}", token(event), token(gateway))
}

/// What the bucket keeps per key: what the key stands for and where its bid is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Kept {
    /// The request's fingerprint (hex).
    pub(crate) fingerprint: String,
    /// The stream and sequence the bid was stored at.
    pub(crate) stream: String,
    pub(crate) seq: u64,
}

impl Kept {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }

    /// The answer a device gets for this key (201, JSON): the same for every copy.
    pub(crate) fn answer(&self, key: &str) -> Vec<u8> {
        let mut v = serde_json::to_vec(&serde_json::json!({
            "accepted": true,
            "key": key,
            "stream": self.stream,
            "seq": self.seq,
        }))
        .unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What a bid gets, given what the bucket holds for its key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Judged {
    /// The key was answered: the same answer again.
    Replay(Kept),
    /// The key stands for another request: refused (422), nothing published.
    Conflict,
    /// Unknown (or unreadable) key: publish, with its message id.
    Publish,
}

/// Judges a bid of `fingerprint` by the bucket's value for its key.
pub(crate) fn judge(found: Option<&[u8]>, fingerprint: &Fingerprint) -> Judged {
    match found.and_then(Kept::decode) {
        Some(k) if k.fingerprint == fingerprint.hex() => Judged::Replay(k),
        Some(_) => Judged::Conflict,
        None => Judged::Publish,
    }
}

/// Whether a stored bid (its fingerprint header, when it has one) is the bid that came:
/// a publish the servers called a duplicate stored the first copy, which must be the same
/// request.
pub(crate) fn same_request(stored: Option<&str>, fingerprint: &Fingerprint) -> bool {
    stored.is_none_or(|s| s == fingerprint.hex())
}

/// When a publish (or a bucket read) that failed tries again: soon at first, then at most
/// every `MAX_GAP`, until the deadline. During a leader election the servers answer
/// "no responders" or nothing for a few seconds.
#[derive(Debug)]
pub(crate) struct Retry {
    deadline: Instant,
    gap: Duration,
}

const FIRST_GAP: Duration = Duration::from_millis(25);
const MAX_GAP: Duration = Duration::from_millis(500);

impl Retry {
    pub(crate) fn new(now: Instant, budget: Duration) -> Self {
        Self {
            deadline: now + budget,
            gap: FIRST_GAP,
        }
    }

    /// When to try again after a failure at `now`; `None` when the budget is spent.
    pub(crate) fn next(&mut self, now: Instant) -> Option<Instant> {
        if now >= self.deadline {
            return None;
        }
        let at = (now + self.gap).min(self.deadline);
        self.gap = (self.gap * 2).min(MAX_GAP);
        Some(at)
    }

    /// Time left for one attempt at `now` (at least a little, so the last try is real).
    pub(crate) fn left(&self, now: Instant) -> Duration {
        self.deadline
            .saturating_duration_since(now)
            .max(Duration::from_millis(50))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(body: &str) -> Fingerprint {
        ledger::fingerprint("POST", "/lots/1/bids", body.as_bytes())
    }

    #[test]
    fn a_bids_id_is_its_gateway_and_key() {
        let a = bid_id("stall-1.gala", "k-1");
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, bid_id("stall-1.gala", "k-1"));
        assert_ne!(a, bid_id("stall-2.gala", "k-1"));
        assert_ne!(a, bid_id("stall-1.gala", "k-2"));
        // length-prefixed: moving a character across the boundary changes the id
        assert_ne!(bid_id("ab", "c"), bid_id("a", "bc"));
    }

    #[test]
    fn subjects_name_event_then_gateway() {
        assert_eq!(
            subject("canopy.bids", "stall-1.gala"),
            "canopy.bids.gala.stall-1"
        );
        assert_eq!(
            subject("b", "gw.spring.fair 2026"),
            "b.spring_fair_2026.gw",
            "dots and spaces of the event become one token"
        );
        assert_eq!(subject("b", "gw-0123"), "b.-.gw-0123");
        assert_eq!(subject("b", "*.>"), "b._._");
    }

    #[test]
    fn a_kept_key_replays_only_for_the_same_request() {
        let k = Kept {
            fingerprint: fp("{\"amount\":1}").hex(),
            stream: "BIDS".into(),
            seq: 7,
        };
        let b = k.encode();
        assert_eq!(
            judge(Some(&b), &fp("{\"amount\":1}")),
            Judged::Replay(k.clone())
        );
        assert_eq!(judge(Some(&b), &fp("{\"amount\":2}")), Judged::Conflict);
        assert_eq!(judge(None, &fp("x")), Judged::Publish);
        assert_eq!(judge(Some(b"not json"), &fp("x")), Judged::Publish);
        // the answer is the same bytes for every copy
        assert_eq!(k.answer("k-1"), k.answer("k-1"));
        let v: serde_json::Value = serde_json::from_slice(&k.answer("k-1")).expect("json");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["key"], "k-1");
    }

    #[test]
    fn a_duplicate_must_be_the_same_request() {
        let f = fp("a");
        assert!(same_request(Some(&f.hex()), &f));
        assert!(same_request(None, &f));
        assert!(!same_request(Some(&fp("b").hex()), &f));
    }

    #[test]
    fn retries_back_off_and_stop_at_the_deadline() {
        let t0 = Instant::now();
        let mut r = Retry::new(t0, Duration::from_secs(2));
        let mut now = t0;
        let mut gaps = Vec::new();
        while let Some(at) = r.next(now) {
            gaps.push(at - now);
            now = at;
        }
        assert_eq!(gaps[0], FIRST_GAP);
        assert!(gaps
            .windows(2)
            .all(|w| w[1] >= w[0] || now - t0 >= Duration::from_secs(2)));
        assert!(gaps.iter().all(|g| *g <= MAX_GAP));
        assert_eq!(
            now - t0,
            Duration::from_secs(2),
            "the last try is at the deadline"
        );
        assert!(r.left(now) >= Duration::from_millis(50));
    }
}
