//! The relay's revocation list on disk (`[tls] revoked`): read at start, then looked at
//! every [`POLL`] and put in force when it has changed and stayed so for one more look
//! (`tunnel::settle`). A list that stops parsing is logged with its lines and the one in
//! force stays (a typo must not let a stolen box back in); one that cannot be read is
//! tried again at every look; a missing file revokes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use tunnel::settle::{Outcome, Settle};
use tunnel_io::own_cert::{stamp, Stamp};
use tunnel_io::revoked::ListError;
use tunnel_io::watched::read_version;
use tunnel_io::{RevocationList, Revoked};

/// How often the file is looked at: a revoked gateway is cut off within two of these and
/// a connection's close.
pub const POLL: Duration = Duration::from_millis(250);

/// Why a list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Lines that do not parse.
    #[error("{}", .errors.iter().map(|e| format!("{}:{}: {}", .path.display(), e.line, e.what)).collect::<Vec<_>>().join("\n"))]
    Lines {
        /// The file.
        path: PathBuf,
        /// Each bad line.
        errors: Vec<ListError>,
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
pub fn load(path: &Path) -> Result<RevocationList, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => RevocationList::parse(&text).map_err(|errors| LoadError::Lines {
            path: path.to_path_buf(),
            errors,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RevocationList::default()),
        Err(source) => Err(LoadError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Watches `path` (its version `seen` in force) and puts each new version in force, until
/// the process ends.
pub async fn watch(path: PathBuf, seen: Stamp, revoked: Arc<Revoked>) {
    // a new version is read once it has stayed the same for one more look: a list caught
    // half copied must not lift revocations, even for a moment
    let mut settle = Settle::new(seen, Duration::ZERO);
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
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
        match loaded {
            Ok(list) => {
                info!(file = %path.display(), certificates = list.len(), "revocation list loaded");
                revoked.set(list);
                settle.read(version, Outcome::Taken);
            }
            Err(e) if e.may_pass() => {
                if settle.read(version, Outcome::Unreadable) {
                    warn!("revocation list not read, the one in force stays (tried again): {e}");
                }
            }
            Err(e) => {
                warn!("revocation list not changed, the one in force stays: {e}");
                settle.read(version, Outcome::Refused);
            }
        }
    }
}
