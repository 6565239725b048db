//! Request bodies that come without a length (chunked) and are longer than the gateway
//! keeps in memory are written to a file first, then striped from it: the stripe's head
//! needs the body's length, and a stripe is what lets a body outlive the path it went on
//! (the relay takes each chunk once and answers a head sent again). nginx buffers request
//! bodies to disk before it proxies them, by default, for the same reason. The device
//! sends at the venue network's speed; the body then goes over every uplink at once.
//!
//! Each body's file is unlinked as soon as it is open, so nothing is left behind when the
//! request ends or the gateway stops. What all spooled bodies hold on disk at once is
//! bounded (`[proxy] body_spool_bytes`): a body that finds no room is refused (507), not
//! streamed half-spooled.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::stripe::BodyReadError;

/// Files of an earlier run that were never unlinked (a crash between open and unlink).
const PREFIX: &str = "body-";
/// Bytes gathered before each write to the file.
const WRITE_BUF: usize = 256 * 1024;

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// The spool has no room left for it.
    #[error("no room for the request body: spooled bodies would take over {max} bytes on disk")]
    Full { max: u64 },
    /// Over the gateway's request body limit.
    #[error("request body over the gateway's limit of {0} bytes")]
    OverLimit(u64),
    /// The device's body could not be read.
    #[error(transparent)]
    Read(#[from] BodyReadError),
    /// The spool's folder or file failed.
    #[error("body spool {}: {source}", dir.display())]
    Disk { dir: PathBuf, source: io::Error },
}

/// Where bodies are spooled, and what they may take there at once.
#[derive(Debug)]
pub(crate) struct BodySpool {
    dir: PathBuf,
    max: u64,
    used: AtomicU64,
    next: AtomicU64,
}

impl BodySpool {
    /// A spool in `dir` (made when the first body comes) holding at most `max` bytes at
    /// once. Files an earlier run left there are removed.
    pub(crate) fn new(dir: PathBuf, max: u64) -> Arc<Self> {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(PREFIX) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Arc::new(Self {
            dir,
            max,
            used: AtomicU64::new(0),
            next: AtomicU64::new(0),
        })
    }

    /// Bytes the spooled bodies take now.
    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Shows what the spooled bodies take now.
    fn show(&self) {
        metrics::gauge!("canopy_gateway_body_spool_bytes").set(self.used() as f64);
    }

    /// Writes `read` and then the rest of `body` to a file, at most `limit` bytes in all;
    /// fails after `idle` without a byte from the device.
    pub(crate) async fn take<B>(
        self: &Arc<Self>,
        read: Bytes,
        mut body: B,
        limit: u64,
        idle: Duration,
    ) -> Result<Spooled, SpoolError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Display,
    {
        let disk = |source| SpoolError::Disk {
            dir: self.dir.clone(),
            source,
        };
        let mut lease = Lease {
            spool: self.clone(),
            bytes: 0,
        };
        let file = self.open().await.map_err(disk)?;
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUF, file);
        let mut len = 0u64;
        let mut data = read;
        loop {
            let n = data.len() as u64;
            if len.saturating_add(n) > limit {
                return Err(SpoolError::OverLimit(limit));
            }
            lease.grow(n)?;
            out.write_all(&data).await.map_err(disk)?;
            len += n;
            data = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Err(BodyReadError::Idle(idle).into()),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(BodyReadError::Broken(e.to_string()).into()),
                Ok(Some(Ok(f))) => f.into_data().unwrap_or_default(),
            };
        }
        out.flush().await.map_err(disk)?;
        let mut file = out.into_inner();
        file.rewind().await.map_err(disk)?;
        metrics::counter!("canopy_gateway_bodies_spooled_total").increment(1);
        Ok(Spooled {
            file,
            len,
            left: len,
            _lease: lease,
        })
    }

    /// A new file in the spool's folder, already unlinked.
    async fn open(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{PREFIX}{}-{n}", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        unlink(&path).await;
        Ok(file)
    }
}

async fn unlink(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(path = %path.display(), error = %e, "cannot unlink a spooled body's file");
    }
}

/// The bytes of the spool one body holds; given back when it drops.
#[derive(Debug)]
struct Lease {
    spool: Arc<BodySpool>,
    bytes: u64,
}

impl Lease {
    fn grow(&mut self, n: u64) -> Result<(), SpoolError> {
        let max = self.spool.max;
        self.spool
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= max)
            })
            .map_err(|_| SpoolError::Full { max })?;
        self.bytes += n;
        self.spool.show();
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.spool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.spool.show();
    }
}

/// A body on disk, read from its start.
#[derive(Debug)]
pub struct Spooled {
    file: tokio::fs::File,
    len: u64,
    left: u64,
    _lease: Lease,
}

impl Spooled {
    /// The body's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The next `n` bytes (fewer only at the end).
    pub async fn read(&mut self, n: u64) -> io::Result<Bytes> {
        let want = usize::try_from(n.min(self.left)).unwrap_or(usize::MAX);
        let mut buf = BytesMut::with_capacity(want);
        while buf.len() < want {
            if self.file.read_buf(&mut buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spooled body's file shorter than written",
                ));
            }
        }
        buf.truncate(want);
        self.left -= want as u64;
        Ok(buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn frames(
        parts: Vec<Bytes>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, io::Error>> + Unpin> {
        StreamBody::new(futures_util::stream::iter(
            parts.into_iter().map(|b| Ok(Frame::data(b))),
        ))
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("canopy-body-spool-{name}-{}", std::process::id()))
    }

    fn pattern(n: usize, seed: usize) -> Bytes {
        (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_body_comes_back_whole_and_its_bytes_are_given_back() {
        let d = dir("whole");
        let spool = BodySpool::new(d.clone(), 10 << 20);
        let parts: Vec<Bytes> = (0..40).map(|i| pattern(70_000 + i, i)).collect();
        let all: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let read = pattern(5_000, 99);
        let mut s = spool
            .take(
                read.clone(),
                frames(parts),
                u64::MAX,
                Duration::from_secs(5),
            )
            .await
            .expect("spooled");
        assert_eq!(s.len(), (read.len() + all.len()) as u64);
        assert_eq!(spool.used(), s.len());
        let mut back = Vec::new();
        loop {
            let b = s.read(128 * 1024).await.expect("read");
            if b.is_empty() {
                break;
            }
            back.extend_from_slice(&b);
        }
        assert_eq!(&back[..read.len()], &read[..]);
        assert_eq!(&back[read.len()..], &all[..]);
        // the file was unlinked at once: nothing in the folder
        assert_eq!(std::fs::read_dir(&d).expect("dir").count(), 0);
        drop(s);
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_full_spool_and_the_body_limit_refuse_and_hold_nothing() {
        let d = dir("full");
        let spool = BodySpool::new(d.clone(), 1 << 20);
        let first = spool
            .take(
                pattern(700_000, 1),
                frames(vec![]),
                u64::MAX,
                Duration::from_secs(5),
            )
            .await
            .expect("fits");
        let second = spool
            .take(
                Bytes::new(),
                frames(vec![pattern(200_000, 2), pattern(200_000, 3)]),
                u64::MAX,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(second, Err(SpoolError::Full { max }) if max == 1 << 20),
            "{second:?}"
        );
        assert_eq!(
            spool.used(),
            700_000,
            "the refused body gave its bytes back"
        );
        drop(first);
        let over = spool
            .take(
                Bytes::new(),
                frames(vec![pattern(300_000, 4), pattern(300_000, 5)]),
                500_000,
                Duration::from_secs(5),
            )
            .await;
        assert!(
            matches!(over, Err(SpoolError::OverLimit(500_000))),
            "{over:?}"
        );
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_device_that_stops_sending_is_cut_after_the_idle_time() {
        let d = dir("idle");
        let spool = BodySpool::new(d.clone(), 1 << 20);
        let stalled = StreamBody::new(
            futures_util::stream::iter(vec![Ok::<_, io::Error>(Frame::data(pattern(1000, 0)))])
                .chain(futures_util::stream::pending()),
        );
        let r = spool
            .take(Bytes::new(), stalled, u64::MAX, Duration::from_millis(200))
            .await;
        assert!(
            matches!(r, Err(SpoolError::Read(BodyReadError::Idle(_)))),
            "{r:?}"
        );
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn files_an_earlier_run_left_are_removed() {
        let d = dir("stale");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("body-1-0"), b"old").expect("write");
        std::fs::write(d.join("keep.txt"), b"not ours").expect("write");
        let _spool = BodySpool::new(d.clone(), 1 << 20);
        assert!(!d.join("body-1-0").exists());
        assert!(d.join("keep.txt").exists());
        let _ = std::fs::remove_dir_all(d);
    }
}
