//! Opening a journal file: read, scan, cut a torn tail, decode.

use ledger::frame::{self, Damage, MAGIC};
use ledger::record::Entry;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tracing::warn;

/// A journal file opened for appending, and what it held.
#[derive(Debug)]
pub struct Opened {
    /// The file, positioned at its end.
    pub file: File,
    /// Its records, in order.
    pub entries: Vec<Entry>,
    /// Bytes in the file.
    pub len: u64,
    /// Where the readable part ended before the end of the file, if it did (the rest was
    /// moved to `damaged`).
    pub damage: Option<(Damage, PathBuf)>,
    /// Whole records that did not decode (from a newer version, or damage that kept its
    /// checksum): skipped, counted.
    pub undecodable: usize,
}

/// Opens (or creates) the journal at `path`.
pub fn open(path: &Path) -> std::io::Result<Opened> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let scan = frame::scan(&buf);
    let mut damage = None;
    if let Some(d) = scan.damage {
        // keep the unreadable bytes for a human, never replay them
        let aside = path.with_extension(format!(
            "damaged-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        std::fs::write(&aside, &buf[scan.valid_len..])?;
        warn!(journal = %path.display(), at = scan.valid_len, damage = ?d, kept = %aside.display(),
            "journal: the end of the file is unreadable; it is cut there and kept aside");
        damage = Some((d, aside));
    }
    let mut len = scan.valid_len as u64;
    if len == 0 {
        // a new file, or one that was not a journal (kept aside above)
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(MAGIC)?;
        len = MAGIC.len() as u64;
    } else {
        file.set_len(len)?;
    }
    file.sync_all()?;
    file.seek(SeekFrom::Start(len))?;
    let (entries, undecodable) = decode(path, &buf, scan.records);
    Ok(Opened {
        file,
        entries,
        len,
        damage,
        undecodable,
    })
}

/// The records of the journal at `path` as they stand, without opening it for writing
/// (nothing is cut or set aside): for a reader beside the writer. A torn tail is not read.
pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let buf = std::fs::read(path)?;
    let scan = frame::scan(&buf);
    Ok(decode(path, &buf, scan.records).0)
}

/// Decodes whole records; those that do not decode are skipped and counted.
fn decode(path: &Path, buf: &[u8], records: Vec<std::ops::Range<usize>>) -> (Vec<Entry>, usize) {
    let mut entries = Vec::with_capacity(records.len());
    let mut undecodable = 0;
    for r in records {
        match Entry::decode(&buf[r]) {
            Ok(e) => entries.push(e),
            Err(e) => {
                undecodable += 1;
                warn!(journal = %path.display(), error = %e, "journal: a record did not decode; skipped");
            }
        }
    }
    (entries, undecodable)
}
