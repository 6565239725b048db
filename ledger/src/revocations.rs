//! Check-in tokens the organizer voided after issuing them (a refund, a ticket sent again
//! to a new address, a lost phone), sans-IO: a list the gateway reads from a file and
//! checks at the door with no uplink, after the signature (a forged token is still
//! "forged") and before the register.
//!
//! One entry a line: `token <token id>` voids one token, `attendee <attendee id>` every
//! token of that attendee. The id is the rest of the line, trimmed (ids may hold spaces and
//! `#`); a `#` after a space or tab starts a comment, and so does a line's first `#`. Blank
//! lines are skipped; a byte order mark before the first line is ignored.
//!
//! ```text
//! # refunds, 2027-05-01
//! token t-00042          # one token
//! attendee A-1187        # every token of this attendee
//! ```

use crate::token::{Grant, MAX_FIELD};
use std::collections::HashSet;

/// Entries a list holds at most.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Bad lines named at most (the count of the rest follows).
pub const MAX_ERRORS: usize = 20;

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
    /// Reads a list; every bad line is named (the first [`MAX_ERRORS`], then a count).
    pub fn parse(text: &str) -> Result<Self, Vec<LineError>> {
        let mut list = Self::default();
        let mut errors = Vec::new();
        let mut more = 0;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = without_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let mut full = false;
            let what = match entry(line) {
                Ok(_) if list.len() >= MAX_ENTRIES => {
                    full = true;
                    format!("a list holds at most {MAX_ENTRIES} entries")
                }
                Ok((Voided::Token, id)) => {
                    list.tokens.insert(id.to_owned());
                    continue;
                }
                Ok((Voided::Attendee, id)) => {
                    list.attendees.insert(id.to_owned());
                    continue;
                }
                Err(what) => what,
            };
            if errors.len() < MAX_ERRORS {
                errors.push(LineError { line: i + 1, what });
            } else {
                more += 1;
            }
            if full {
                break;
            }
        }
        if more > 0 {
            errors.push(LineError {
                line: 0,
                what: format!("and {more} more bad lines"),
            });
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

/// One line's entry (a line without its comment, trimmed, not blank), or what is wrong.
fn entry(line: &str) -> Result<(Voided, &str), String> {
    let (word, id) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(w, rest)| (w, rest.trim()));
    let voided = match word {
        "token" => Voided::Token,
        "attendee" => Voided::Attendee,
        _ => {
            return Err(format!(
                "{word:?}: a line is `token <id>` or `attendee <id>` (or `# a comment`)"
            ))
        }
    };
    if id.is_empty() || id.len() > MAX_FIELD {
        return Err(format!("the {word} id must be 1 to {MAX_FIELD} bytes"));
    }
    Ok((voided, id))
}

/// `line` without its comment: from its first `#` when that starts the line (after
/// blanks) or follows a space or tab.
fn without_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let at = (0..b.len()).find(|&i| {
        b[i] == b'#'
            && (i == 0
                || b[i - 1] == b' '
                || b[i - 1] == b'\t'
                || b[..i].iter().all(u8::is_ascii_whitespace))
    });
    at.map_or(line, |i| &line[..i])
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
            "\u{feff}# refunds\n\ntoken t-42   # a refund\n  attendee   A 1187  \n\t# indented comment\r\ntoken t-#7\ttoken\t# tab\n",
        )
        .expect("parses");
        assert_eq!(list.len(), 3);
        assert_eq!(
            list.check(&grant("A-1", "t-#7\ttoken")),
            Some(Voided::Token)
        );
        assert_eq!(list.check(&grant("A-1", "t-42")), Some(Voided::Token));
        assert_eq!(list.check(&grant("A 1187", "t-1")), Some(Voided::Attendee));
        assert_eq!(list.check(&grant("A-1", "t-43")), None);
        assert!(Revocations::parse("").expect("empty").is_empty());
    }

    #[test]
    fn every_bad_line_is_named() {
        let long = format!("token {}", "x".repeat(MAX_FIELD + 1));
        let text = format!("token ok\nticket t-1\ntoken  # none\n{long}\nattendee A-1\n");
        let errors = Revocations::parse(&text).expect_err("bad lines");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4]);
        assert!(errors[0].what.contains("\"ticket\""), "{errors:?}");
        // a file of garbage is named in its first lines, and counted
        let junk = "x\n".repeat(1000);
        let errors = Revocations::parse(&junk).expect_err("junk");
        assert_eq!(errors.len(), MAX_ERRORS + 1);
        assert_eq!(errors[MAX_ERRORS].what, "and 980 more bad lines");
    }
}
