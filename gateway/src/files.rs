//! Files the gateway writes whole: through `<path>.tmp`, the owner's alone from its
//! creation, synced, renamed into place, the folder synced, so a reader (or a restart)
//! sees the old file or the new one, never a part.

use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` whole (see the module).
pub(crate) fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
