//! Writing the files `canopy certs` and `canopy tokens` make: whole or not at all, keys
//! readable by their owner only from the moment they exist, nothing replaced by accident.
//!
//! Each file is written to a temporary name beside it (created with its final mode),
//! synced, then put in place: by a hard link when it must not replace anything (the link
//! fails if the name is taken, so two runs cannot both win), by a rename when it may.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Its owner only (0600): keys.
    Owner,
    /// Everyone may read (0644): certificates.
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Owner => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// What may happen to a file that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the default for keys).
    Keep,
    /// Replace it, atomically.
    Replace,
}

/// Why a file was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The name is taken and replacing was not allowed.
    #[error("{0} exists")]
    Exists(PathBuf),
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` with `access`, whole or not at all.
pub fn write(
    path: &Path,
    bytes: &[u8],
    access: Access,
    existing: Existing,
) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
    let put = || -> std::io::Result<()> {
        let mut f = open_new(&tmp, access.mode())?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match existing {
            Existing::Keep => std::fs::hard_link(&tmp, path),
            Existing::Replace => std::fs::rename(&tmp, path),
        }
    };
    let r = put();
    // after a rename the temporary name is gone already; after a link or a failure it
    // must go
    let _ = std::fs::remove_file(&tmp);
    match r {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(WriteError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(io(e)),
    }
}

/// Creates `dir` (and its parents) if missing; a directory it creates is its owner's
/// only (0700), since keys go in it.
pub fn private_dir(dir: &Path) -> Result<(), WriteError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| WriteError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(unix)]
fn open_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn open_new(path: &Path, _mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("canopy-files-{:016x}", fastrand::u64(..)));
        private_dir(&d).expect("dir");
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn a_key_is_its_owners_only_and_never_replaced_by_default() {
        let d = tempdir();
        let p = d.join("a.key");
        write(&p, b"one", Access::Owner, Existing::Keep).expect("first");
        assert_eq!(mode(&p), 0o600);
        match write(&p, b"two", Access::Owner, Existing::Keep) {
            Err(WriteError::Exists(e)) => assert_eq!(e, p),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(std::fs::read(&p).expect("read"), b"one");
        write(&p, b"three", Access::Owner, Existing::Replace).expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"three");
        assert_eq!(mode(&p), 0o600);
        // no temporary file is left behind
        let names: Vec<_> = std::fs::read_dir(&d)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.key")]);
        std::fs::remove_dir_all(&d).expect("clean");
    }

    #[test]
    fn a_replaced_world_readable_file_becomes_owner_only() {
        let d = tempdir();
        let p = d.join("b.key");
        std::fs::write(&p, b"old").expect("old");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write(&p, b"new", Access::Owner, Existing::Replace).expect("replace");
        assert_eq!(mode(&p), 0o600);
        write(&d.join("c.pem"), b"cert", Access::Public, Existing::Keep).expect("pem");
        // 0644, less what the umask takes: its owner reads and writes, nobody else writes
        let m = mode(&d.join("c.pem"));
        assert_eq!((m & 0o600, m & 0o133), (0o600, 0), "{m:o}");
        assert_eq!(mode(&d), 0o700);
        std::fs::remove_dir_all(&d).expect("clean");
    }
}
