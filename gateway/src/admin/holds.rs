//! What the crew set by hand on the admin API, a camera's pinned level and an uplink held
//! preferred or avoided, kept in `[admin] holds_file` so that a restart of the box (a
//! power cut, an update) keeps what the crew decided. The one owner of that file's format:
//! JSON, rewritten whole (`files::write_private`: a synced temporary file renamed over it)
//! on each change.
//!
//! ```json
//! {"levels": {"stage": "audio"}, "uplinks": {"satellite": "avoid"}}
//! ```
//!
//! A file that cannot be read is logged with its reason and the gateway starts with no
//! holds (it is the crew's state, not config: a bad one must not keep the box down). A
//! held uplink the config no longer has is logged and dropped; a camera's pin waits until
//! the camera is seen (`AdminView::restore_holds`).

use crate::actions::HandHold;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tracing::warn;
use tunnel::stream_level::Level;

/// The holds in the file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Held {
    /// Camera name to the level it is pinned at.
    pub levels: BTreeMap<String, String>,
    /// Uplink name to `prefer` or `avoid`.
    pub uplinks: BTreeMap<String, String>,
}

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HoldsError {
    /// It could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not the holds' JSON.
    #[error("not the holds' JSON: {0}")]
    Format(#[from] serde_json::Error),
}

/// `[admin] holds_file`, and what it holds.
pub struct HoldsFile {
    path: PathBuf,
    held: Mutex<Held>,
}

impl HoldsFile {
    /// Reads `path` (missing: no holds; unreadable: logged, no holds).
    pub fn open(path: PathBuf) -> Self {
        let held = match read(&path) {
            Ok(h) => h,
            Err(e) => {
                warn!(file = %path.display(), error = %e, "the holds set by hand could not be read: starting without them");
                Held::default()
            }
        };
        Self {
            path,
            held: Mutex::new(held),
        }
    }

    /// What is held now.
    pub fn held(&self) -> Held {
        self.lock().clone()
    }

    /// Pins `camera` at `level` (None: lifts the pin) with `live`, and keeps it when `live`
    /// answers true. Under one lock: two crew devices changing the same camera at once
    /// leave the file saying what the gateway does.
    pub fn set_level(
        &self,
        camera: &str,
        level: Option<Level>,
        live: impl FnOnce() -> bool,
    ) -> bool {
        self.change(live, |h| match level {
            Some(l) => h.levels.insert(camera.to_owned(), l.name().to_owned()),
            None => h.levels.remove(camera),
        })
    }

    /// Holds `uplink` as `hold` (`Auto`: lifts the hold) with `live`, and keeps it when
    /// `live` answers true (as [`Self::set_level`]).
    pub fn set_uplink(&self, uplink: &str, hold: HandHold, live: impl FnOnce() -> bool) -> bool {
        self.change(live, |h| match hold {
            HandHold::Auto => h.uplinks.remove(uplink),
            _ => h.uplinks.insert(uplink.to_owned(), hold.name().into()),
        })
    }

    /// Lifts every hold: `lift` gets what the file holds and lifts what the gateway holds
    /// (under the file's lock, so a hold set meanwhile waits and is not lost in between);
    /// the file is then written empty, once.
    pub fn lift_all<R>(&self, lift: impl FnOnce(&Held) -> R) -> R {
        let mut h = self.lock();
        let r = lift(&h);
        if *h != Held::default() {
            *h = Held::default();
            if let Err(e) = write(&self.path, &h) {
                warn!(file = %self.path.display(), error = %e, "the holds lifted could not be saved: they come back at a restart");
            }
        }
        r
    }

    fn change<R>(&self, live: impl FnOnce() -> bool, f: impl FnOnce(&mut Held) -> R) -> bool {
        let mut h = self.lock();
        if !live() {
            return false;
        }
        let before = h.clone();
        f(&mut h);
        if *h != before {
            // written under the lock: the changes reach the file in the order they were made
            if let Err(e) = write(&self.path, &h) {
                warn!(file = %self.path.display(), error = %e, "the holds set by hand could not be saved: they hold until a restart");
            }
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(path: &Path) -> Result<Held, HoldsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Held::default()),
        Err(e) => Err(e.into()),
    }
}

/// The whole file through a synced temporary file, a rename and a synced folder (a power
/// cut leaves the old file or the new one). Small and rare: written in place, not on the
/// blocking pool.
fn write(path: &Path, held: &Held) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(held).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::files::write_private(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("canopy-holds-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn holds_outlive_a_restart_and_lifted_ones_are_gone() {
        let d = dir("restart");
        let path = d.join("admin.holds.json");
        let f = HoldsFile::open(path.clone());
        assert_eq!(f.held(), Held::default());
        assert!(!path.exists(), "nothing written before a change");
        let yes = || true;
        f.set_level("stage", Some(Level::Audio), yes);
        f.set_level("door", Some(Level::Keyframes), yes);
        f.set_uplink("satellite", HandHold::Avoid, yes);
        f.set_uplink("cellular", HandHold::Prefer, yes);
        f.set_level("door", None, yes);
        f.set_uplink("cellular", HandHold::Auto, yes);
        // what the gateway refused is not kept
        assert!(!f.set_uplink("nowhere", HandHold::Avoid, || false));
        let again = HoldsFile::open(path.clone());
        let h = again.held();
        assert_eq!(h.levels, BTreeMap::from([("stage".into(), "audio".into())]));
        assert_eq!(
            h.uplinks,
            BTreeMap::from([("satellite".into(), "avoid".into())])
        );
        again.set_uplink("satellite", HandHold::Auto, || true);
        assert!(HoldsFile::open(path).held().uplinks.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_that_is_not_the_holds_is_no_holds_and_is_replaced_on_a_change() {
        let d = dir("bad");
        let path = d.join("admin.holds.json");
        std::fs::write(&path, "{\"levels\": [1,").unwrap();
        assert!(matches!(read(&path), Err(HoldsError::Format(_))));
        let f = HoldsFile::open(path.clone());
        assert_eq!(f.held(), Held::default());
        f.set_uplink("wifi", HandHold::Prefer, || true);
        assert_eq!(read(&path).unwrap().uplinks["wifi"], "prefer");
        let _ = std::fs::remove_dir_all(&d);
    }
}
