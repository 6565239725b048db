//! The optional disk spool: parts that leave a rendition's ring go to files, bounded by
//! bytes, so a later reader (the outage backfill) can still fetch them by sequence number.
//!
//! One directory per rendition; one file per part, named `<seq>-<msn>.<index>.m4s`, plus
//! the init segments (`init-<gen>.mp4`); what else the backfill needs of a part (its
//! duration, segment start, capture time) is kept in memory. On open, files from an earlier
//! run are removed: sequence numbers restart with the process.

use bytes::Bytes;
use segmenter::{Part, PartMeta};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

/// A part on disk.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    path: PathBuf,
    len: u64,
    meta: PartMeta,
    duration: f64,
}

/// One rendition's spool.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Spool {
    /// Opens (creates, empties) `dir`, keeping at most `max_bytes` of parts.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "m4s" || x == "mp4") {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: VecDeque::new(),
            bytes: 0,
        })
    }

    /// Stores init segment `generation`.
    pub fn put_init(&mut self, generation: u32, data: &[u8]) -> io::Result<()> {
        std::fs::write(self.dir.join(format!("init-{generation}.mp4")), data)
    }

    /// Stores a part, removing the oldest ones beyond the byte bound.
    pub fn put(&mut self, part: &Part) -> io::Result<()> {
        if self.entries.back().is_some_and(|e| e.seq >= part.seq) {
            return Ok(()); // already here
        }
        let path = self
            .dir
            .join(format!("{}-{}.{}.m4s", part.seq, part.msn, part.index));
        std::fs::write(&path, &part.data)?;
        let len = part.data.len() as u64;
        self.entries.push_back(Entry {
            seq: part.seq,
            path,
            len,
            meta: part.meta(),
            duration: part.duration,
        });
        self.bytes += len;
        while self.bytes > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.len;
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(())
    }

    /// Init segment `generation`, if spooled.
    pub fn get_init(&self, generation: u32) -> io::Result<Option<Bytes>> {
        match std::fs::read(self.dir.join(format!("init-{generation}.mp4"))) {
            Ok(d) => Ok(Some(Bytes::from(d))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The part with sequence number `seq`, if spooled.
    pub fn get(&self, seq: u64) -> io::Result<Option<Part>> {
        let first = match self.entries.front() {
            Some(e) => e.seq,
            None => return Ok(None),
        };
        // sequence numbers are contiguous unless the spool was behind; search from the guess
        let guess = usize::try_from(seq.saturating_sub(first)).unwrap_or(usize::MAX);
        let e = self
            .entries
            .get(guess)
            .filter(|e| e.seq == seq)
            .or_else(|| self.entries.iter().find(|e| e.seq == seq));
        match e {
            Some(e) => {
                let data = Bytes::from(std::fs::read(&e.path)?);
                Ok(Some(Part::new(e.meta, e.duration, data)))
            }
            None => Ok(None),
        }
    }

    /// Oldest and newest spooled sequence numbers.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.entries.front()?.seq, self.entries.back()?.seq))
    }

    /// Bytes on disk (parts).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The most bytes of parts it keeps.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Forgets the parts before `seq`: their files (for the caller to remove, outside any
    /// lock) and their bytes.
    pub fn take_before(&mut self, seq: u64) -> (Vec<PathBuf>, u64) {
        let (mut files, mut bytes) = (Vec::new(), 0);
        while let Some(old) = self.entries.pop_front() {
            if old.seq >= seq {
                self.entries.push_front(old);
                break;
            }
            bytes += old.len;
            self.bytes -= old.len;
            files.push(old.path);
        }
        (files, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(seq: u64) -> Part {
        Part {
            seq,
            msn: seq / 5,
            index: (seq % 5) as u32,
            independent: seq.is_multiple_of(5),
            duration: 0.2,
            data: Bytes::from(vec![seq as u8; 1000]),
            init: 0,
            capture_ms: 0,
            segment: None,
            gap: false,
        }
    }

    #[test]
    fn keeps_the_newest_parts_within_its_bound() {
        let dir = std::env::temp_dir().join(format!("canopy-spool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("99-1.1.m4s"), b"stale").unwrap();
        let mut s = Spool::open(&dir, 10_000).unwrap();
        assert!(!dir.join("99-1.1.m4s").exists());
        s.put_init(0, b"init").unwrap();
        for seq in 0..25 {
            s.put(&part(seq)).unwrap();
        }
        assert_eq!(s.range(), Some((15, 24)));
        assert!(s.bytes() <= 10_000);
        let p = s.get(20).unwrap().unwrap();
        assert_eq!(p.data, Bytes::from(vec![20u8; 1000]));
        assert_eq!((p.msn, p.index, p.duration), (4, 0, 0.2));
        assert_eq!(s.get_init(0).unwrap().unwrap(), Bytes::from_static(b"init"));
        assert!(s.get(3).unwrap().is_none());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 11); // 10 parts + init
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_purge_removes_only_the_parts_before_its_bound() {
        let dir = std::env::temp_dir().join(format!("canopy-spool-purge-{}", std::process::id()));
        let mut s = Spool::open(&dir, 100_000).unwrap();
        for seq in 0..10 {
            s.put(&part(seq)).unwrap();
        }
        let (files, bytes) = s.take_before(6);
        assert_eq!((files.len(), bytes), (6, 6000));
        for f in &files {
            std::fs::remove_file(f).unwrap();
        }
        assert_eq!(s.range(), Some((6, 9)));
        assert_eq!(s.bytes(), 4000);
        assert!(s.get(5).unwrap().is_none());
        assert!(s.get(6).unwrap().is_some());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
        assert_eq!(s.take_before(3), (Vec::new(), 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
