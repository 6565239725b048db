//! Check-in tokens the organizer voided after issuing them (a refund, a ticket sent again
//! to a new address, a lost phone), sans-IO: a list the gateway reads from a file and
//! checks at the door with no uplink, after the signature (a forged token is still
//! "forged") and before the register.
//!
//! One entry a line: `token <token id>` voids one token, `attendee <attendee id>` every
//! token of that attendee. The id is the rest of the line, trimmed (ids may hold spaces).
//! A line whose first visible character is `#` is a comment; blank lines are skipped.
//!
//! ```text
//! # refunds, 2027-05-01
//! token t-00042
//! attendee A-1187
//! ```

use crate::token::{Grant, MAX_FIELD};
use std::collections::HashSet;

/// Entries a list holds at most.
pub const MAX_ENTRIES: usize = 1_000_000;

/// What voided a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voided {
    /// The token itself.
    Token,
    /// Every token of its attendee.
    Attendee,
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

/// The organizer's voided tokens and attendees.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Revocations {
    tokens: HashSet<String>,
    attendees: HashSet<String>,
}

impl Revocations {
    /// Reads a list; every bad line is named.
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let mut list = Self::default();
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (word, id) = line
                .split_once(char::is_whitespace)
                .map_or((line, ""), |(w, rest)| (w, rest.trim()));
            let token = match word {
                "token" => true,
                "attendee" => false,
                _ => {
                    errors.push(LineError {
                        line: i + 1,
                        what: format!(
                            "{word:?}: a line is `token <id>` or `attendee <id>` (or `# a comment`)"
                        ),
                    });
                    continue;
                }
            };
            if id.is_empty() || id.len() > MAX_FIELD {
                errors.push(LineError {
                    line: i + 1,
                    what: format!("the {word} id must be 1 to {MAX_FIELD} bytes"),
                });
                continue;
            }
            if list.len() >= MAX_ENTRIES {
                errors.push(LineError {
                    line: i + 1,
                    what: format!("a list holds at most {MAX_ENTRIES} entries"),
                });
                break;
            }
            let set = if token {
                &mut list.tokens
            } else {
                &mut list.attendees
            };
            set.insert(id.to_owned());
        }
        if errors.is_empty() {
            Ok(list)
        } else {
            Err(errors)
        }
    }

    /// Whether, and by what, `g` is voided.
    pub fn check(&self, g: &Grant) -> Option<Voided> {
        if self.tokens.contains(&g.id) {
            Some(Voided::Token)
        } else if self.attendees.contains(&g.attendee) {
            Some(Voided::Attendee)
        } else {
            None
        }
    }

    /// Entries (tokens and attendees).
    pub fn len(&self) -> usize {
        self.tokens.len() + self.attendees.len()
    }

    /// Whether it voids nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(attendee: &str, id: &str) -> Grant {
        Grant {
            event: "market".into(),
            attendee: attendee.into(),
            id: id.into(),
            not_before: 0,
            expires: 99,
        }
    }

    #[test]
    fn a_token_or_every_token_of_an_attendee() {
        let list = Revocations::parse(
            "# refunds\n\ntoken t-42\n  attendee   A 1187  \n\t# indented comment\r\ntoken t-#7\n",
        )
        .expect("parses");
        assert_eq!(list.len(), 3);
        assert_eq!(list.check(&grant("A-1", "t-42")), Some(Voided::Token));
        assert_eq!(list.check(&grant("A 1187", "t-1")), Some(Voided::Attendee));
        assert_eq!(list.check(&grant("A-1", "t-#7")), Some(Voided::Token));
        assert_eq!(list.check(&grant("A-1", "t-43")), None);
        assert!(Revocations::parse("").expect("empty").is_empty());
    }

    #[test]
    fn every_bad_line_is_named() {
        let long = format!("token {}", "x".repeat(MAX_FIELD + 1));
        let text = format!("token ok\nticket t-1\ntoken\n{long}\nattendee A-1\n");
        let errors = Revocations::parse(&text).expect_err("bad lines");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(errors[0].what.contains("\"ticket\""), "{errors:?}");
    }
}
