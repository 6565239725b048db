//! Who is inside, sans-IO: the gateway's register of check-ins, kept in its journal so a
//! restart forgets no one. A token is used once (a second use is a replay: a screenshot
//! passed on); an attendee enters once (a second token for someone already inside is a
//! double entry). With re-entry allowed, both come in again and are marked as re-entries.

use crate::record::{CheckedIn, Entry};
use crate::revocations::Voided;
use crate::token::{Grant, TokenError};
use std::collections::HashMap;

/// Entries kept at most (tokens are signed by the organizer, so this bounds a mistake, not
/// an attack).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Entries are kept this long after their token expired, s.
const KEEP_AFTER_EXPIRY_S: u64 = 3600;

/// Why a check-in is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The token itself.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// This token was used already.
    #[error("this token was already used (at {at_us} µs since the epoch)")]
    Replayed {
        /// When it was first used.
        at_us: u64,
    },
    /// The attendee is inside already (came in with another token).
    #[error("this attendee is already checked in (at {at_us} µs since the epoch)")]
    AlreadyInside {
        /// When they came in.
        at_us: u64,
    },
    /// The organizer voided the token (`crate::revocations`).
    #[error("{}", match .0 {
        Voided::Token => "the organizer revoked this token",
        Voided::Attendee => "the organizer revoked this attendee's tokens",
    })]
    Revoked(Voided),
    /// The register is full.
    #[error("the check-in register is full")]
    Full,
}

impl Refused {
    /// A short word for metrics and answers.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Token(t) => t.code(),
            Refused::Replayed { .. } => "replayed",
            Refused::AlreadyInside { .. } => "double_entry",
            Refused::Revoked(_) => "revoked",
            Refused::Full => "full",
        }
    }
}

/// The register.
#[derive(Debug, Default)]
pub struct Register {
    /// Token id → its latest check-in.
    tokens: HashMap<String, CheckedIn>,
    /// Attendee → when they came in.
    inside: HashMap<String, u64>,
}

impl Register {
    /// An empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides a check-in with a verified grant at `now_us` through `gate`; the check-in
    /// to journal (the register holds it already). The shell undoes nothing: a check-in whose
    /// record fails to reach the disk is refused to the device, and the next restart
    /// rebuilds the register from what is on disk.
    pub fn admit(
        &mut self,
        g: &Grant,
        now_us: u64,
        gate: &str,
        reentry: bool,
    ) -> Result<CheckedIn, Refused> {
        let mut again = false;
        if let Some(prev) = self.tokens.get(&g.id) {
            if !reentry {
                return Err(Refused::Replayed { at_us: prev.at_us });
            }
            again = true;
        } else if let Some(at_us) = self.inside.get(&g.attendee) {
            if !reentry {
                return Err(Refused::AlreadyInside { at_us: *at_us });
            }
            again = true;
        }
        if !again && self.tokens.len() >= MAX_ENTRIES {
            return Err(Refused::Full);
        }
        let c = CheckedIn {
            event: g.event.clone(),
            attendee: g.attendee.clone(),
            token_id: g.id.clone(),
            expires: g.expires,
            at_us: now_us,
            gate: gate.to_owned(),
            reentry: again,
        };
        self.apply(c.clone());
        Ok(c)
    }

    /// Takes back a check-in whose record did not reach the disk (its device was refused,
    /// so its retry must not be a replay). A re-entry is left as it was (they were in).
    pub fn undo(&mut self, c: &CheckedIn) {
        if c.reentry {
            return;
        }
        if self
            .tokens
            .get(&c.token_id)
            .is_some_and(|t| t.at_us == c.at_us)
        {
            self.tokens.remove(&c.token_id);
            if self.inside.get(&c.attendee) == Some(&c.at_us) {
                self.inside.remove(&c.attendee);
            }
        }
    }

    fn apply(&mut self, c: CheckedIn) {
        self.inside.entry(c.attendee.clone()).or_insert(c.at_us);
        self.tokens.insert(c.token_id.clone(), c);
    }

    /// Rebuilds the register from a journal's records, in file order.
    pub fn restore(&mut self, entries: &[Entry]) {
        for e in entries {
            if let Entry::CheckedIn(c) = e {
                self.apply(c.clone());
            }
        }
    }

    /// Forgets entries whose token expired more than an hour before `now_s`.
    pub fn expire(&mut self, now_s: u64) {
        let gone = |c: &CheckedIn| c.expires.saturating_add(KEEP_AFTER_EXPIRY_S) < now_s;
        let before = self.tokens.len();
        self.tokens.retain(|_, c| !gone(c));
        if self.tokens.len() != before {
            let live: std::collections::HashSet<&str> =
                self.tokens.values().map(|c| c.attendee.as_str()).collect();
            self.inside.retain(|a, _| live.contains(a.as_str()));
        }
    }

    /// What a compacted journal holds: each token's latest check-in.
    pub fn snapshot(&self) -> Vec<Entry> {
        let mut v: Vec<&CheckedIn> = self.tokens.values().collect();
        v.sort_by_key(|c| (c.at_us, c.token_id.as_str()));
        v.into_iter().map(|c| Entry::CheckedIn(c.clone())).collect()
    }

    /// Tokens the register holds a check-in for.
    pub fn checked_in(&self) -> usize {
        self.tokens.len()
    }

    /// Forgets every check-in (the event is over); how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.tokens.len();
        self.tokens.clear();
        self.inside.clear();
        n
    }

    /// Attendees inside.
    pub fn inside(&self) -> usize {
        self.inside.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(attendee: &str, id: &str) -> Grant {
        Grant {
            event: "e".into(),
            attendee: attendee.into(),
            id: id.into(),
            not_before: 0,
            expires: 10_000,
        }
    }

    #[test]
    fn a_token_enters_once_and_an_attendee_once() {
        let mut r = Register::new();
        let first = r.admit(&grant("A-1", "t1"), 5, "north", false).unwrap();
        assert_eq!(
            r.admit(&grant("A-1", "t1"), 6, "south", false),
            Err(Refused::Replayed { at_us: 5 })
        );
        // a second token for someone inside
        assert_eq!(
            r.admit(&grant("A-1", "t2"), 7, "south", false),
            Err(Refused::AlreadyInside { at_us: 5 })
        );
        r.admit(&grant("A-2", "t3"), 8, "north", false).unwrap();
        assert_eq!(r.inside(), 2);
        // re-entry allowed: both come in again, marked
        let c = r.admit(&grant("A-1", "t1"), 9, "north", true).unwrap();
        assert!(c.reentry);

        // a restart: the journal's records rebuild the same register
        let mut d = Register::new();
        d.restore(&[Entry::CheckedIn(first)]);
        assert_eq!(
            d.admit(&grant("A-1", "t1"), 10, "x", false),
            Err(Refused::Replayed { at_us: 5 })
        );
        let mut e = Register::new();
        e.restore(&r.snapshot());
        assert_eq!(e.inside(), 2);
        assert!(e.admit(&grant("A-2", "t3"), 11, "x", false).is_err());

        // a check-in that did not reach the disk is taken back
        let x = e.admit(&grant("A-3", "t9"), 12, "x", false).unwrap();
        e.undo(&x);
        assert!(e.admit(&grant("A-3", "t9"), 13, "x", false).is_ok());

        // an hour after the tokens expired they are forgotten
        e.expire(10_000 + 3601);
        assert_eq!(e.inside(), 0);
        assert!(e.snapshot().is_empty());
    }
}
