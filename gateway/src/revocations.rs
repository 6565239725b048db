//! The organizer's voided check-in tokens on disk (`[checkin] revoked`, the shell of
//! `ledger::revocations`): read at start (a bad line stops the start, naming the file and
//! the line), then looked at every [`POLL`] and put in force once a new version has stayed
//! the same for [`SETTLE`]. A list that stops parsing is logged with its lines and the one
//! in force stays; one that cannot be read is tried again at every look; a missing file
//! voids nothing. The crew copies a new list onto the box (or the organizer's system
//! pushes it there); it works with no uplink. The safe way to copy is to write another
//! file and rename it over the list (`mv`, `rsync`, `install`): a copy written in place
//! that stalls longer than [`SETTLE`] is read as it stands then, a shorter list.

use ledger::revocations::Revocations;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::{info, warn};
use tunnel::settle::{Outcome, Settle};
use tunnel_io::own_cert::{stamp, Stamp};
use tunnel_io::watched::read_version;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_millis(500);
/// A new version is read once it has stayed the same this long.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Largest list read, bytes (a million entries of the longest ids).
const MAX_FILE: u64 = 160 << 20;

/// Why a list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Over [`MAX_FILE`] bytes.
    #[error("{path}: {len} bytes, over the {MAX_FILE} a list may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Lines that do not parse.
    #[error("{}", .errors.iter().map(|e| if e.line > 0 {
        format!("{}:{}: {}", .path.display(), e.line, e.what)
    } else {
        format!("{}: {}", .path.display(), e.what)
    }).collect::<Vec<_>>().join("\n"))]
    Lines {
        /// The file.
        path: PathBuf,
        /// Each bad line.
        errors: Vec<ledger::revocations::LineError>,
    },
}

impl LoadError {
    /// Whether reading again may succeed with the file as it is (not its content's fault:
    /// a file that is not UTF-8 text stays so).
    fn may_pass(&self) -> bool {
        matches!(self, Self::Read { source, .. } if tunnel_io::watched::may_pass(source))
    }
}

/// Reads the list at `path`; a missing file is an empty list.
pub fn load(path: &Path) -> Result<Revocations, LoadError> {
    if let Some(len) = std::fs::metadata(path)
        .ok()
        .map(|m| m.len())
        .filter(|l| *l > MAX_FILE)
    {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Revocations::parse(&text).map_err(|errors| LoadError::Lines {
            path: path.to_path_buf(),
            errors,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Revocations::default()),
        Err(source) => Err(LoadError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The list in force.
#[derive(Debug, Default)]
pub struct InForce(RwLock<Arc<Revocations>>);

impl InForce {
    /// In force from now: `list`.
    pub fn new(list: Revocations) -> Self {
        publish(&list);
        Self(RwLock::new(Arc::new(list)))
    }

    /// The list in force now.
    pub fn get(&self) -> Arc<Revocations> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, list: Revocations) {
        publish(&list);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
    }
}

fn publish(list: &Revocations) {
    metrics::gauge!("canopy_gateway_checkin_revoked").set(list.len() as f64);
}

/// Watches `path` (its version `seen` in force) and puts each new version in force, while
/// `list` is in use.
pub async fn watch(path: PathBuf, seen: Stamp, list: std::sync::Weak<InForce>) {
    let mut settle = Settle::new(seen, SETTLE);
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if list.strong_count() == 0 {
            return;
        }
        let version = stamp(&path);
        if !settle.look(tunnel_io::clock::now(), version) {
            continue;
        }
        let failed = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        let Some(loaded) = read_version(&path, version, load, failed).await else {
            continue; // changed while it was read: that version settles first
        };
        let Some(in_force) = list.upgrade() else {
            return;
        };
        match loaded {
            Ok(l) => {
                info!(file = %path.display(), entries = l.len(), "check-in revocation list loaded");
                in_force.set(l);
                settle.read(version, Outcome::Taken);
            }
            Err(e) if e.may_pass() => {
                if settle.read(version, Outcome::Unreadable) {
                    warn!(
                        "check-in revocation list not read, the one in force stays (tried again): {e}"
                    );
                }
            }
            Err(e) => {
                warn!("check-in revocation list not changed, the one in force stays: {e}");
                settle.read(version, Outcome::Refused);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_list_names_its_file_and_lines_and_a_missing_one_voids_nothing() {
        let dir = std::env::temp_dir().join(format!("canopy-revoked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("revoked.txt");
        assert!(load(&path).expect("missing").is_empty());
        std::fs::write(&path, "token t-1\nticket t-2\nattendee\n").expect("write");
        let text = load(&path).expect_err("bad lines").to_string();
        let p = path.display();
        assert!(text.contains(&format!("{p}:2: \"ticket\"")), "{text}");
        assert!(text.contains(&format!("{p}:3: the attendee id")), "{text}");
        std::fs::write(&path, "token t-1\nattendee A-1\n").expect("write");
        assert_eq!(load(&path).expect("list").len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
