//! Reading a watched file as of the version its watcher settled on (`tunnel::settle`
//! decides when; versions are [`crate::own_cert::stamp`]s).

use crate::own_cert::{stamp, Stamp};
use std::path::{Path, PathBuf};

/// The version of the file at `path` now. A watcher takes it before its first read and
/// starts from it, so that a version written in between is not missed.
pub fn version(path: &Path) -> Stamp {
    stamp(path)
}

/// Whether a read that failed with `e` may succeed with the file as it is: not when the
/// file is not UTF-8 text (its content's fault: refused, like a bad line).
pub fn may_pass(e: &std::io::Error) -> bool {
    e.kind() != std::io::ErrorKind::InvalidData
}

/// Reads the file at `path` with `load`, off the runtime (it blocks), as of its version
/// `version`: `None` when the file changed while it was read (the newer version must
/// settle first: a copy caught in the middle is not put in force, even for a moment). A
/// read that panicked is `failed`'s error.
pub async fn read_version<T, E>(
    path: &Path,
    version: Stamp,
    load: fn(&Path) -> Result<T, E>,
    failed: impl FnOnce(std::io::Error) -> E,
) -> Option<Result<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let p: PathBuf = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load(&p))
        .await
        .unwrap_or_else(|e| Err(failed(std::io::Error::other(e))));
    (stamp(path) == version).then_some(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Result<String, std::io::Error> {
        std::fs::read_to_string(path)
    }

    #[tokio::test]
    async fn a_file_that_changed_while_it_was_read_is_not_taken() {
        let dir = std::env::temp_dir().join(format!("canopy-watched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("list.txt");
        std::fs::write(&path, "one\n").expect("write");
        let v1 = stamp(&path);
        let got = read_version(&path, v1, read, |e| e).await;
        assert_eq!(got.expect("same version").expect("read"), "one\n");
        // a newer version than the one settled on
        std::fs::write(&path, "one\ntwo\n").expect("write");
        assert!(read_version(&path, v1, read, |e| e).await.is_none());
        // gone: its version is none, and reads as the loader says
        std::fs::remove_file(&path).expect("remove");
        let got = read_version(&path, None, read, |e| e).await;
        assert!(got.expect("same version").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
