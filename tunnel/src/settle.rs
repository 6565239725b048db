//! When a watched file's new version is read, sans-IO: the shell looks at the file's
//! version (its modification time, length and inode) every so often and asks [`Settle`]
//! whether to read it now.
//!
//! - A version that differs from the one in force is read once it has stayed the same for
//!   one more look and at least `quiet`: a list caught half copied must not be put in force,
//!   even for a moment (it would lift revocations).
//! - A version read and put in force, or read and refused (it did not parse: the one in
//!   force stays), is not read again until the file changes.
//! - A version that could not be read (a permission, a disk error) is tried again at every
//!   look; only its first failure is news.
//!
//! The shell takes the version in force *before* it reads the file at start, so that a
//! version written between the two is still seen as new.

use std::time::{Duration, Instant};

/// What became of a version that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It is in force now.
    Taken,
    /// It was read but not taken (it does not parse): the one in force stays.
    Refused,
    /// It could not be read: tried again at the next look.
    Unreadable,
}

/// The watch of one file; `V` is its version.
#[derive(Debug)]
pub struct Settle<V> {
    quiet: Duration,
    /// The version last read (taken or refused).
    seen: V,
    /// A newer version and when it was first seen.
    pending: Option<(V, Instant)>,
    /// A version that could not be read, already reported.
    unreadable: Option<V>,
}

impl<V: PartialEq> Settle<V> {
    /// A watch whose version in force is `seen`; a new version is read once it has stayed
    /// the same for one more look and `quiet`.
    pub fn new(seen: V, quiet: Duration) -> Self {
        Self {
            quiet,
            seen,
            pending: None,
            unreadable: None,
        }
    }

    /// A look at `now`, the file's version being `version`: whether to read it now.
    pub fn look(&mut self, now: Instant, version: V) -> bool {
        if version == self.seen {
            self.pending = None;
            return false;
        }
        match &self.pending {
            Some((v, since)) if *v == version => {
                now.saturating_duration_since(*since) >= self.quiet
            }
            _ => {
                self.pending = Some((version, now));
                false
            }
        }
    }

    /// What reading `version` gave; true when this is news (a failure already reported
    /// for this version is not).
    pub fn read(&mut self, version: V, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Unreadable => {
                let news = self.unreadable.as_ref() != Some(&version);
                self.unreadable = Some(version);
                news
            }
            Outcome::Taken | Outcome::Refused => {
                self.seen = version;
                self.pending = None;
                self.unreadable = None;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOK: Duration = Duration::from_millis(500);

    #[test]
    fn a_new_version_is_read_once_it_stayed_the_same_long_enough() {
        let t = Instant::now();
        let at = |n: u32| t + LOOK * n;
        let mut s = Settle::new(1, Duration::from_secs(2));
        assert!(!s.look(at(0), 1), "the version in force");
        // a copy in progress: each look sees another version
        assert!(!s.look(at(1), 2));
        assert!(!s.look(at(2), 3));
        // the same for 1.5 s: not yet; for 2 s: read
        assert!(!s.look(at(3), 4));
        assert!(!s.look(at(6), 4));
        assert!(s.look(at(7), 4));
        assert!(s.read(4, Outcome::Taken));
        assert!(!s.look(at(8), 4), "read once");
        // back to the version in force before it settled: nothing to read
        assert!(!s.look(at(9), 5));
        assert!(!s.look(at(10), 4));
        assert!(!s.look(at(20), 4));
    }

    #[test]
    fn with_no_quiet_time_a_version_is_read_at_the_next_look() {
        let t = Instant::now();
        let mut s = Settle::new(None, Duration::ZERO);
        assert!(!s.look(t, Some(1)), "first seen");
        assert!(s.look(t + LOOK, Some(1)));
        // a list that does not parse is not read again until it changes
        s.read(Some(1), Outcome::Refused);
        assert!(!s.look(t + LOOK * 2, Some(1)));
        // deleted: a new version (none) like any other
        assert!(!s.look(t + LOOK * 3, None));
        assert!(s.look(t + LOOK * 4, None));
    }

    #[test]
    fn an_unreadable_version_is_tried_again_and_reported_once() {
        let t = Instant::now();
        let mut s = Settle::new(1, Duration::ZERO);
        assert!(!s.look(t, 2));
        assert!(s.look(t + LOOK, 2));
        assert!(s.read(2, Outcome::Unreadable), "news");
        assert!(s.look(t + LOOK * 2, 2), "tried again");
        assert!(!s.read(2, Outcome::Unreadable), "reported already");
        assert!(s.look(t + LOOK * 3, 2));
        assert!(s.read(2, Outcome::Taken));
        assert!(!s.look(t + LOOK * 4, 2));
    }
}
