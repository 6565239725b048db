//! The journal's writer task: group commit. Appends queue up while a commit is under way;
//! the next commit writes all of them at once and syncs once, then acknowledges each. A
//! failed write or sync poisons the journal (what reached the disk is unknown): every later
//! append fails, so the gateway refuses bids rather than acknowledging what it may lose.
//!
//! The writer is a tokio task and each commit's write and sync run on the blocking pool
//! (`spawn_blocking`), one hand-off per commit, not per record. The runtime then knows a
//! commit is under way: on a paused clock (the in-process harness) time does not jump
//! ahead while the disk syncs, so a bid's journaling costs what it costs, not a timer's
//! worth of simulated time.

use crate::file::Opened;
use ledger::frame::{self, TooLarge, MAGIC};
use ledger::record::Entry;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// Bytes written by one commit at most (more appends wait for the next).
const COMMIT_MAX_BYTES: usize = 8 << 20;

/// Why an append or a rewrite failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The disk refused a write or a sync.
    #[error("the journal could not be written: {0}")]
    Io(std::io::ErrorKind),
    /// A write or sync failed earlier: nothing more is written.
    #[error("the journal failed earlier and takes no more records")]
    Poisoned,
    /// The record is over the format's limit.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The writer task is gone.
    #[error("the journal is closed")]
    Closed,
}

/// What the journal has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended (and synced).
    pub appends: u64,
    /// Commits (one sync each).
    pub commits: u64,
    /// Bytes in the file.
    pub len: u64,
    /// Rewrites (compactions).
    pub rewrites: u64,
    /// Bytes in the file when it was opened or last rewritten.
    pub base_len: u64,
}

impl JournalStats {
    /// Whether a compaction is worth it: the file is past `min` bytes and has at least
    /// doubled since it was opened or last rewritten.
    pub fn compaction_due(&self, min: u64) -> bool {
        self.len >= min && self.len >= self.base_len.saturating_mul(2)
    }
}

#[derive(Default)]
struct Counters {
    appends: AtomicU64,
    commits: AtomicU64,
    len: AtomicU64,
    rewrites: AtomicU64,
    base_len: AtomicU64,
}

enum Op {
    Append(Vec<u8>, oneshot::Sender<Result<(), JournalError>>),
    Rewrite(Vec<Entry>, oneshot::Sender<Result<(), JournalError>>),
}

/// A submitted record or rewrite: resolves once it is on disk (or failed).
#[derive(Debug)]
pub struct Pending(PendingInner);

#[derive(Debug)]
enum PendingInner {
    Waiting(oneshot::Receiver<Result<(), JournalError>>),
    Failed(JournalError),
    Taken,
}

impl Future for Pending {
    type Output = Result<(), JournalError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut self.0 {
            PendingInner::Waiting(rx) => std::pin::Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(JournalError::Closed))),
            PendingInner::Failed(_) => match std::mem::replace(&mut self.0, PendingInner::Taken) {
                PendingInner::Failed(e) => std::task::Poll::Ready(Err(e)),
                _ => std::task::Poll::Ready(Err(JournalError::Closed)),
            },
            PendingInner::Taken => std::task::Poll::Ready(Err(JournalError::Closed)),
        }
    }
}

/// A journal open for appending (cheap to clone).
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Op>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Journal {
    /// Starts the writer task on an opened file (`path` is where it lives, for rewrites),
    /// on the current tokio runtime.
    pub fn start(path: PathBuf, opened: Opened) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| std::io::Error::other(format!("the journal needs a runtime: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        counters.len.store(opened.len, Ordering::Relaxed);
        counters.base_len.store(opened.len, Ordering::Relaxed);
        let c = counters.clone();
        runtime.spawn(run(path, opened.file, rx, c));
        Ok(Self { tx, counters })
    }

    /// Queues `entry` for the next commit; the returned [`Pending`] resolves once it is on
    /// disk. Records reach the file in the order they were submitted, so a caller that
    /// submits under its own lock journals its state changes in their order.
    pub fn submit(&self, entry: &Entry) -> Pending {
        let payload = entry.encode();
        if payload.len() > frame::MAX_RECORD {
            return Pending(PendingInner::Failed(TooLarge(payload.len()).into()));
        }
        let (done, wait) = oneshot::channel();
        match self.tx.send(Op::Append(payload, done)) {
            Ok(()) => Pending(PendingInner::Waiting(wait)),
            Err(_) => Pending(PendingInner::Failed(JournalError::Closed)),
        }
    }

    /// Appends `entry`; resolves once it is on disk.
    pub async fn append(&self, entry: &Entry) -> Result<(), JournalError> {
        self.submit(entry).await
    }

    /// Queues a rewrite of the file with `entries` (a compaction): records submitted
    /// before it are written first, and `entries` must include what they hold.
    pub fn submit_rewrite(&self, entries: Vec<Entry>) -> Pending {
        let (done, wait) = oneshot::channel();
        match self.tx.send(Op::Rewrite(entries, done)) {
            Ok(()) => Pending(PendingInner::Waiting(wait)),
            Err(_) => Pending(PendingInner::Failed(JournalError::Closed)),
        }
    }

    /// Replaces the file's contents with `entries`.
    pub async fn rewrite(&self, entries: Vec<Entry>) -> Result<(), JournalError> {
        self.submit_rewrite(entries).await
    }

    /// What the journal has done.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            appends: self.counters.appends.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
            len: self.counters.len.load(Ordering::Relaxed),
            rewrites: self.counters.rewrites.load(Ordering::Relaxed),
            base_len: self.counters.base_len.load(Ordering::Relaxed),
        }
    }
}

fn io(e: &std::io::Error) -> JournalError {
    JournalError::Io(e.kind())
}

async fn run(path: PathBuf, file: File, mut rx: mpsc::UnboundedReceiver<Op>, c: Arc<Counters>) {
    let mut poisoned = false;
    let mut pending: Option<Op> = None;
    // the file travels to the blocking pool for each commit and back
    let mut file = Some(file);
    loop {
        let op = match pending.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => return,
            },
        };
        let Some(f) = file.take() else {
            return;
        };
        match op {
            Op::Append(payload, done) => {
                // gather every append already waiting: one write, one sync
                let mut buf = Vec::with_capacity(payload.len() + 8);
                let mut acks = Vec::new();
                let mut add = |payload: Vec<u8>, done: oneshot::Sender<_>, buf: &mut Vec<u8>| {
                    match frame::frame_into(&payload, buf) {
                        Ok(()) => acks.push(done),
                        Err(e) => {
                            let _ = done.send(Err(e.into()));
                        }
                    }
                };
                add(payload, done, &mut buf);
                while buf.len() < COMMIT_MAX_BYTES {
                    match rx.try_recv() {
                        Ok(Op::Append(p, d)) => add(p, d, &mut buf),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (f, result) = if poisoned {
                    (f, Err(JournalError::Poisoned))
                } else {
                    let n = buf.len() as u64;
                    let Some((f, written)) =
                        blocking(f, move |f| f.write_all(&buf).and_then(|()| f.sync_data())).await
                    else {
                        return;
                    };
                    match written {
                        Ok(()) => {
                            c.appends.fetch_add(acks.len() as u64, Ordering::Relaxed);
                            c.commits.fetch_add(1, Ordering::Relaxed);
                            c.len.fetch_add(n, Ordering::Relaxed);
                            (f, Ok(()))
                        }
                        Err(e) => {
                            error!(journal = %path.display(), error = %e, "journal: write failed; it takes no more records");
                            poisoned = true;
                            (f, Err(io(&e)))
                        }
                    }
                };
                file = Some(f);
                for a in acks {
                    let _ = a.send(result.clone());
                }
            }
            Op::Rewrite(entries, done) => {
                let result = if poisoned {
                    file = Some(f);
                    Err(JournalError::Poisoned)
                } else {
                    let p = path.clone();
                    let Some((old, rewritten)) = blocking(f, move |_| rewrite(&p, &entries)).await
                    else {
                        return;
                    };
                    match rewritten {
                        Ok((new, len)) => {
                            file = Some(new);
                            c.len.store(len, Ordering::Relaxed);
                            c.base_len.store(len, Ordering::Relaxed);
                            c.rewrites.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                        // the old file is still whole: appends go on there
                        Err(e) => {
                            file = Some(old);
                            Err(e)
                        }
                    }
                };
                let _ = done.send(result);
            }
        }
    }
}

/// Runs `work` on the file on the blocking pool; the file and the result come back (None
/// if the runtime is shutting down).
async fn blocking<T: Send + 'static>(
    mut file: File,
    work: impl FnOnce(&mut File) -> T + Send + 'static,
) -> Option<(File, T)> {
    match tokio::task::spawn_blocking(move || {
        let r = work(&mut file);
        (file, r)
    })
    .await
    {
        Ok(done) => Some(done),
        Err(e) => {
            error!(error = %e, "journal: the blocking pool is gone; it takes no more records");
            None
        }
    }
}

/// Writes `entries` to a new file beside `path` and puts it in its place.
fn rewrite(path: &std::path::Path, entries: &[Entry]) -> Result<(File, u64), JournalError> {
    let tmp = path.with_extension("rewrite");
    let mut buf = MAGIC.to_vec();
    for e in entries {
        frame::frame_into(&e.encode(), &mut buf)?;
    }
    let write = || -> std::io::Result<File> {
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(f)
    };
    match write() {
        Ok(f) => Ok((f, buf.len() as u64)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::record::{Delivery, Outcome};

    fn outcome(i: u64) -> Entry {
        Entry::Outcome(Outcome {
            key: format!("key-{i}"),
            at_us: i,
            result: Delivery::Refused {
                status: 403,
                reason: "no".into(),
            },
        })
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "canopy-journal-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_are_grouped_and_read_back() {
        let dir = tmpdir("group");
        let path = dir.join("bids.journal");
        let j = Journal::start(path.clone(), crate::open(&path).unwrap()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..500 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move { j.append(&outcome(i)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let s = j.stats();
        assert_eq!(s.appends, 500);
        assert!(s.commits < 500, "no grouping: {s:?}");
        drop(j);
        let o = crate::open(&path).unwrap();
        assert_eq!(o.entries.len(), 500);
        assert!(o.damage.is_none());
        let mut keys: Vec<u64> = o
            .entries
            .iter()
            .map(|e| match e {
                Entry::Outcome(o) => o.at_us,
                other => panic!("not written: {other:?}"),
            })
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..500).collect::<Vec<_>>());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_and_kept_aside() {
        let dir = tmpdir("torn");
        let path = dir.join("bids.journal");
        let j = Journal::start(path.clone(), crate::open(&path).unwrap()).unwrap();
        for i in 0..3 {
            j.append(&outcome(i)).await.unwrap();
        }
        drop(j);
        // a crash in the middle of an append
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let o = crate::open(&path).unwrap();
        assert_eq!(o.entries.len(), 2);
        let (damage, aside) = o.damage.clone().unwrap();
        assert_eq!(damage, ledger::frame::Damage::ShortPayload);
        assert!(aside.exists());
        // appends go on after the cut
        let j = Journal::start(path.clone(), o).unwrap();
        j.append(&outcome(9)).await.unwrap();
        drop(j);
        let o = crate::open(&path).unwrap();
        assert_eq!(o.entries.len(), 3);
        assert!(o.damage.is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rewrite_replaces_the_contents() {
        let dir = tmpdir("rewrite");
        let path = dir.join("bids.journal");
        let j = Journal::start(path.clone(), crate::open(&path).unwrap()).unwrap();
        for i in 0..10 {
            j.append(&outcome(i)).await.unwrap();
        }
        let before = j.stats().len;
        j.rewrite(vec![outcome(3)]).await.unwrap();
        assert!(j.stats().len < before);
        j.append(&outcome(11)).await.unwrap();
        drop(j);
        let o = crate::open(&path).unwrap();
        assert_eq!(o.entries, vec![outcome(3), outcome(11)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_kept_aside() {
        let dir = tmpdir("foreign");
        let path = dir.join("bids.journal");
        std::fs::write(&path, b"hello, I am a text file").unwrap();
        let o = crate::open(&path).unwrap();
        assert!(o.entries.is_empty());
        assert_eq!(
            o.damage.as_ref().unwrap().0,
            ledger::frame::Damage::NotAJournal
        );
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
