//! Request bodies that come without a length (chunked) and are longer than the gateway
//! keeps in memory are written to a file first, then striped from it: the stripe's head
//! needs the body's length, and a stripe is what lets a body outlive the path it went on
//! (the relay takes each chunk once and answers a head sent again). nginx buffers request
//! bodies to disk before it proxies them, by default, for the same reason. The device
//! sends at the venue network's speed; the body then goes over every uplink at once.
//!
//! Each body's file is unlinked as soon as it is open, so nothing is left behind when the
//! request ends or the gateway stops. What all spooled bodies hold on disk at once is
//! bounded (`[proxy] body_spool_bytes`), and one body takes at most a quarter of it; a
//! body is held at most `[proxy] chunked_hold_ms`. A body that outgrows its room, finds
//! none, or is still coming when its time is up is not refused: it goes on as a stripe of
//! unknown length, what is on disk first, then the rest as the device sends it (so a body
//! with no end, a live audio push, goes on after that time, and catches up); the origin
//! then gets it without a length, as the device sent it, and it still survives the loss of
//! its path.

use bytes::Bytes;
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
/// One body takes at most this share of the spool.
const ONE_BODY_SHARE: u64 = 4;

/// Why a body could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    /// Over the gateway's request body limit.
    #[error("request body over the gateway's limit of {0} bytes")]
    OverLimit(u64),
    /// The device's body could not be read.
    #[error(transparent)]
    Read(#[from] BodyReadError),
    /// Writing or reading the spool's file failed.
    #[error("body spool {}: {source}", dir.display())]
    Disk { dir: PathBuf, source: io::Error },
}

/// What became of a body.
pub(crate) enum Taken<B> {
    /// All of it is on disk.
    Whole(Spooled),
    /// It did not fit, was still coming when its hold was up, or the spool's file could not
    /// be opened: what is on disk (if any), the bytes read after it, and the rest of the
    /// device's body, to go on as it comes (striped, its length unknown).
    Streams {
        spooled: Option<Spooled>,
        next: Bytes,
        rest: B,
    },
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
    /// A spool in `dir` holding at most `max` bytes at once. Makes the folder, checks that a
    /// file can be made there, and removes files an earlier run left.
    pub(crate) fn new(dir: PathBuf, max: u64) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                match std::fs::remove_file(e.path()) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => {
                        tracing::warn!(path = %e.path().display(), error = %err, "cannot remove an old spooled body's file");
                    }
                    _ => {}
                }
            }
        }
        let probe = dir.join(format!("{PREFIX}probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)?;
        Ok(Arc::new(Self {
            dir,
            max,
            used: AtomicU64::new(0),
            next: AtomicU64::new(0),
        }))
    }

    /// Writes `read` and then the rest of `body` to a file, at most `limit` bytes in all
    /// (413 beyond), until the body ends or `until` (then it streams on); fails after
    /// `idle` without a byte from the device.
    pub(crate) async fn take<B>(
        self: &Arc<Self>,
        read: Bytes,
        mut body: B,
        limit: u64,
        idle: Duration,
        until: tokio::time::Instant,
    ) -> Result<Taken<B>, SpoolError>
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
        // held long enough already (in memory), or no file: it streams on as it is
        let opened = match tokio::time::Instant::now() < until {
            true => self.open().await.inspect_err(|e| {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot open a file in the body spool; the body streams on");
            }).ok(),
            false => None,
        };
        let Some(file) = opened else {
            metrics::counter!("canopy_gateway_bodies_unspooled_total").increment(1);
            return Ok(Taken::Streams {
                spooled: None,
                next: read,
                rest: body,
            });
        };
        let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUF, file);
        let mut len = 0u64;
        let mut data = read;
        let (fits, next) = loop {
            let n = data.len() as u64;
            if len.saturating_add(n) > limit {
                return Err(SpoolError::OverLimit(limit));
            }
            if !lease.grow(n) {
                break (false, data);
            }
            out.write_all(&data).await.map_err(disk)?;
            len += n;
            data = tokio::select! {
                f = tokio::time::timeout(idle, body.frame()) => match f {
                    Err(_) => return Err(BodyReadError::Idle(idle).into()),
                    Ok(None) => break (true, Bytes::new()),
                    Ok(Some(Err(e))) => return Err(BodyReadError::Broken(e.to_string()).into()),
                    Ok(Some(Ok(f))) => f.into_data().unwrap_or_default(),
                },
                _ = tokio::time::sleep_until(until) => break (false, Bytes::new()),
            };
        };
        out.flush().await.map_err(disk)?;
        let mut file = out.into_inner();
        file.rewind().await.map_err(disk)?;
        let spooled = Spooled {
            file,
            len,
            left: len,
            _lease: lease,
        };
        Ok(if fits {
            metrics::counter!("canopy_gateway_bodies_spooled_total").increment(1);
            Taken::Whole(spooled)
        } else {
            metrics::counter!("canopy_gateway_bodies_unspooled_total").increment(1);
            Taken::Streams {
                spooled: Some(spooled),
                next,
                rest: body,
            }
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
    /// Takes `n` more bytes, if the body's share and the spool have room.
    fn grow(&mut self, n: u64) -> bool {
        let max = self.spool.max;
        if self.bytes.saturating_add(n) > max / ONE_BODY_SHARE {
            return false;
        }
        let taken = self
            .spool
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= max)
            })
            .is_ok();
        if taken {
            self.bytes += n;
            metrics::gauge!("canopy_gateway_body_spool_bytes").increment(n as f64);
        }
        taken
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.spool.used.fetch_sub(self.bytes, Ordering::AcqRel);
        metrics::gauge!("canopy_gateway_body_spool_bytes").decrement(self.bytes as f64);
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

    /// Bytes not read yet.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next `n` bytes (fewer only at the end).
    pub async fn read(&mut self, n: u64) -> io::Result<Bytes> {
        let want = usize::try_from(n.min(self.left)).unwrap_or(usize::MAX);
        let mut buf = vec![0u8; want];
        self.file.read_exact(&mut buf).await?;
        self.left -= want as u64;
        Ok(buf.into())
    }
}

#[cfg(test)]
impl BodySpool {
    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;

    type Frames =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, io::Error>>>>;

    fn frames(parts: Vec<Bytes>) -> Frames {
        StreamBody::new(futures_util::stream::iter(
            parts
                .into_iter()
                .map(|b| Ok(Frame::data(b)))
                .collect::<Vec<_>>(),
        ))
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("canopy-body-spool-{name}-{}", std::process::id()))
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    /// `spool.take` of `read` then `parts`, with no body limit and time enough.
    async fn take_all(
        spool: &Arc<BodySpool>,
        read: Bytes,
        parts: Vec<Bytes>,
    ) -> Result<Taken<Frames>, SpoolError> {
        spool
            .take(read, frames(parts), u64::MAX, Duration::from_secs(5), far())
            .await
    }

    fn pattern(n: usize, seed: usize) -> Bytes {
        (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    }

    async fn read_all(s: &mut Spooled) -> Vec<u8> {
        let mut back = Vec::new();
        loop {
            let b = s.read(128 * 1024).await.expect("read");
            if b.is_empty() {
                return back;
            }
            back.extend_from_slice(&b);
        }
    }

    /// What a body that streams on carries: the spooled bytes, the next, then the rest.
    async fn streamed(t: Taken<Frames>) -> Vec<u8> {
        let Taken::Streams {
            spooled,
            next,
            rest,
        } = t
        else {
            panic!("expected the body to stream on");
        };
        let mut out = match spooled {
            Some(mut s) => read_all(&mut s).await,
            None => Vec::new(),
        };
        out.extend_from_slice(&next);
        out.extend_from_slice(&BodyExt::collect(rest).await.expect("rest").to_bytes());
        out
    }

    #[tokio::test]
    async fn a_body_comes_back_whole_and_its_bytes_are_given_back() {
        let d = dir("whole");
        let spool = BodySpool::new(d.clone(), 40 << 20).expect("spool");
        let parts: Vec<Bytes> = (0..40).map(|i| pattern(70_000 + i, i)).collect();
        let all: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let read = pattern(5_000, 99);
        let Ok(Taken::Whole(mut s)) = take_all(&spool, read.clone(), parts).await else {
            panic!("spooled whole");
        };
        assert_eq!(s.len(), (read.len() + all.len()) as u64);
        assert_eq!(spool.used(), s.len());
        let back = read_all(&mut s).await;
        assert_eq!(&back[..read.len()], &read[..]);
        assert_eq!(&back[read.len()..], &all[..]);
        // the file was unlinked at once: nothing in the folder
        assert_eq!(std::fs::read_dir(&d).expect("dir").count(), 0);
        drop(s);
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_body_without_room_streams_on_whole_and_the_limit_refuses() {
        let d = dir("full");
        // one body may take 256 KiB of this spool
        let spool = BodySpool::new(d.clone(), 1 << 20).expect("spool");
        let big: Vec<Bytes> = (0..8).map(|i| pattern(100_000, i)).collect();
        let want: Vec<u8> = big.iter().flat_map(|b| b.iter().copied()).collect();
        let t = take_all(&spool, Bytes::new(), big.clone())
            .await
            .expect("taken");
        assert_eq!(
            streamed(t).await,
            want,
            "over its share: streams on, every byte in order"
        );
        assert_eq!(spool.used(), 0);
        // the spool full with others' bodies: the next streams on as well
        let mut held = Vec::new();
        for i in 0..4 {
            match take_all(&spool, pattern(250_000, i), vec![]).await {
                Ok(Taken::Whole(s)) => held.push(s),
                _ => panic!("a body within its share fits"),
            }
        }
        let t = take_all(&spool, pattern(2_000, 7), vec![pattern(100_000, 8)])
            .await
            .expect("taken");
        let mut want = pattern(2_000, 7).to_vec();
        want.extend_from_slice(&pattern(100_000, 8));
        assert_eq!(streamed(t).await, want);
        assert_eq!(spool.used(), 1_000_000);
        drop(held);
        let over = spool
            .take(
                Bytes::new(),
                frames(vec![pattern(100_000, 4), pattern(100_000, 5)]),
                150_000,
                Duration::from_secs(5),
                far(),
            )
            .await;
        assert!(matches!(over, Err(SpoolError::OverLimit(150_000))));
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_device_that_stops_sending_is_cut_after_the_idle_time() {
        let d = dir("idle");
        let spool = BodySpool::new(d.clone(), 1 << 20).expect("spool");
        let stalled = StreamBody::new(
            futures_util::stream::iter(vec![Ok::<_, io::Error>(Frame::data(pattern(1000, 0)))])
                .chain(futures_util::stream::pending()),
        );
        let r = spool
            .take(
                Bytes::new(),
                stalled,
                u64::MAX,
                Duration::from_millis(200),
                far(),
            )
            .await;
        assert!(matches!(r, Err(SpoolError::Read(BodyReadError::Idle(_)))));
        assert_eq!(spool.used(), 0);
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn a_body_still_coming_when_its_time_is_up_streams_on() {
        let d = dir("late");
        let spool = BodySpool::new(d.clone(), 1 << 20).expect("spool");
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        tx.send(Ok(Frame::data(pattern(3_000, 1))))
            .await
            .expect("send");
        let until = tokio::time::Instant::now() + Duration::from_millis(200);
        let t = spool
            .take(
                pattern(1_000, 0),
                body,
                u64::MAX,
                Duration::from_secs(5),
                until,
            )
            .await
            .expect("taken");
        let Taken::Streams {
            spooled: Some(mut s),
            next,
            rest,
        } = t
        else {
            panic!("a body still coming streams on");
        };
        assert_eq!(s.len(), 4_000);
        assert!(next.is_empty());
        let mut got = read_all(&mut s).await;
        tx.send(Ok(Frame::data(pattern(500, 2))))
            .await
            .expect("send");
        drop(tx);
        got.extend_from_slice(&BodyExt::collect(rest).await.expect("rest").to_bytes());
        let mut want = pattern(1_000, 0).to_vec();
        want.extend_from_slice(&pattern(3_000, 1));
        want.extend_from_slice(&pattern(500, 2));
        assert_eq!(got, want);
        // held long enough already: nothing is spooled
        let t = spool
            .take(
                pattern(10, 3),
                frames(vec![]),
                u64::MAX,
                Duration::from_secs(5),
                tokio::time::Instant::now(),
            )
            .await
            .expect("taken");
        assert!(matches!(t, Taken::Streams { spooled: None, .. }));
        let _ = std::fs::remove_dir_all(d);
    }

    /// A stream of a channel's items.
    fn tokio_stream_from<T>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|v| (v, rx))
        }))
    }

    #[test]
    fn files_an_earlier_run_left_are_removed_and_a_bad_folder_is_refused() {
        let d = dir("stale");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("body-1-0"), b"old").expect("write");
        std::fs::write(d.join("keep.txt"), b"not ours").expect("write");
        let _spool = BodySpool::new(d.clone(), 1 << 20).expect("spool");
        assert!(!d.join("body-1-0").exists());
        assert!(d.join("keep.txt").exists());
        // a folder under a file cannot be made
        assert!(BodySpool::new(d.join("keep.txt").join("spool"), 1 << 20).is_err());
        let _ = std::fs::remove_dir_all(d);
    }
}
