//! The edge cache's disk tier, the shell of the store's [`DiskOp`]s: one writer task
//! carries them out in the order the store asked (body, then head: a head means a whole
//! copy), failures are reported back to the store; bodies are read back for answers whose
//! body left memory; at start the folder is read back into the store (a restarted gateway
//! still has its cache, uplink or not). A body queued but not yet written is read from
//! the queue: the store may let its memory copy go the moment it asks for the write. Files: `<name>.body` and `<name>.head`
//! ([`crate::cache::record`]), written through a temporary file and renamed.

use crate::cache::{DiskOp, Record, Store};
use crate::files::write_private;
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Bytes of bodies waiting to be written beyond which a new copy is not made (the answer
/// stays in memory only): a disk slower than the misses must not grow the queue. At least
/// one largest answer always fits.
const MAX_PENDING_BYTES: u64 = 32 << 20;

/// The disk tier's folder and writer.
pub(crate) struct DiskTier {
    dir: PathBuf,
    tx: mpsc::UnboundedSender<DiskOp>,
    pending: Arc<AtomicU64>,
    max_pending: u64,
    /// Bodies queued for writing and not yet on disk, by copy name (copy names are
    /// random and never reused).
    queued: Queued,
}

type Queued = Arc<Mutex<HashMap<String, Bytes>>>;

fn queued_lock(q: &Queued) -> std::sync::MutexGuard<'_, HashMap<String, Bytes>> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskTier").field("dir", &self.dir).finish()
    }
}

impl DiskTier {
    /// Opens `dir` (made if missing, the owner's alone), reads what it holds back into
    /// `store`, and starts the writer (on the current runtime).
    pub(crate) fn open(dir: &Path, store: &Arc<Mutex<Store>>) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let largest = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_object_bytes();
        let me = Self {
            dir: dir.to_path_buf(),
            tx,
            pending: Arc::default(),
            max_pending: MAX_PENDING_BYTES.max(largest),
            queued: Queued::default(),
        };
        let restored = {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            let n = restore(dir, &mut s)?;
            let ops = s.take_ops();
            me.submit(&mut s, ops);
            n
        };
        info!(dir = %dir.display(), answers = restored.0, bytes = restored.1,
            "edge cache: disk tier read back");
        tokio::spawn(write_loop(
            dir.to_path_buf(),
            (me.tx.clone(), rx),
            store.clone(),
            (me.pending.clone(), me.queued.clone()),
        ));
        Ok(me)
    }

    /// Queues `ops` (taken from `store` under its lock, so they keep the store's order);
    /// a copy the queue has no room for is forgotten at once.
    pub(crate) fn submit(&self, store: &mut Store, ops: Vec<DiskOp>) {
        for op in ops {
            if let DiskOp::Write { name, body, .. } = &op {
                let n = body.len() as u64;
                if self.pending.load(Ordering::Relaxed) + n > self.max_pending {
                    metrics::counter!("canopy_gateway_cache_disk_skipped_total").increment(1);
                    store.disk_lost(name);
                    // the forgetting asked for its own removal: sent next
                    let more = store.take_ops();
                    for m in more {
                        let _ = self.tx.send(m);
                    }
                    continue;
                }
                self.pending.fetch_add(n, Ordering::Relaxed);
                queued_lock(&self.queued).insert(name.clone(), body.clone());
            }
            let _ = self.tx.send(op);
        }
    }

    /// The body of copy `name` (`len` bytes): from the queue while its write is pending,
    /// else read on the blocking pool.
    pub(crate) async fn read(&self, name: &str, len: u64) -> io::Result<Bytes> {
        if let Some(b) = queued_lock(&self.queued).get(name) {
            return Ok(b.clone());
        }
        let path = self.dir.join(format!("{name}.body"));
        let b = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(io::Error::other)??;
        if b.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} bytes where {len} were written", b.len()),
            ));
        }
        Ok(Bytes::from(b))
    }
}

/// Carries out the ops in order; a failed write is reported to the store, and the
/// removal that asks for goes in the queue behind what is already there (a head rewrite
/// queued for the same copy is undone by it, not left behind).
async fn write_loop(
    dir: PathBuf,
    (tx, mut rx): (
        mpsc::UnboundedSender<DiskOp>,
        mpsc::UnboundedReceiver<DiskOp>,
    ),
    store: Arc<Mutex<Store>>,
    (pending, queued): (Arc<AtomicU64>, Queued),
) {
    while let Some(op) = rx.recv().await {
        let d = dir.clone();
        let written = match &op {
            DiskOp::Write { body, .. } => Some(body.len() as u64),
            _ => None,
        };
        let name = match &op {
            DiskOp::Write { name, .. } | DiskOp::WriteHead { name, .. } => Some(name.clone()),
            DiskOp::Delete { .. } => None,
        };
        let r = tokio::task::spawn_blocking(move || apply(&d, op))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        if let (Some(n), Some(name)) = (written, &name) {
            pending.fetch_sub(n, Ordering::Relaxed);
            queued_lock(&queued).remove(name);
        }
        if let (Err(e), Some(name)) = (r, name) {
            warn!(dir = %dir.display(), error = %e, "edge cache: a disk copy was not written; the answer stays in memory only");
            metrics::counter!("canopy_gateway_cache_disk_errors_total").increment(1);
            let ops = {
                let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
                s.disk_lost(&name);
                s.take_ops()
            };
            for op in ops {
                let _ = tx.send(op);
            }
        }
    }
}

fn apply(dir: &Path, op: DiskOp) -> io::Result<()> {
    match op {
        DiskOp::Write { name, head, body } => {
            write_private(&dir.join(format!("{name}.body")), &body)?;
            write_private(&dir.join(format!("{name}.head")), &head)
        }
        DiskOp::WriteHead { name, head } => write_private(&dir.join(format!("{name}.head")), &head),
        DiskOp::Delete { name } => {
            // the head first: a body without its head is never read back
            for ext in ["head", "body"] {
                match std::fs::remove_file(dir.join(format!("{name}.{ext}"))) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// Reads the folder back into the store, oldest answers first (so the least recently
/// stored go first when it is over its bound); removes what cannot be served: (answers,
/// bytes) restored.
fn restore(dir: &Path, store: &mut Store) -> io::Result<(u64, u64)> {
    let mut heads = Vec::new();
    let mut others = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("head") => heads.push(p),
            _ => others.push(p),
        }
    }
    let mut found: Vec<(String, Record)> = Vec::new();
    for h in heads {
        let name = h
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let body = dir.join(format!("{name}.body"));
        let rec = std::fs::read(&h)
            .ok()
            .and_then(|b| Record::decode(&b).ok())
            .filter(|r| std::fs::metadata(&body).is_ok_and(|m| m.len() == r.body_len));
        match rec {
            Some(r) => found.push((name, r)),
            None => {
                warn!(file = %h.display(), "edge cache: an unreadable disk copy removed");
                let _ = apply(dir, DiskOp::Delete { name });
            }
        }
    }
    found.sort_by_key(|(_, r)| r.at);
    let now = SystemTime::now();
    let kept: std::collections::HashSet<String> = found.iter().map(|(n, _)| n.clone()).collect();
    let mut out = (0, 0);
    for (name, rec) in found {
        let len = rec.body_len;
        match store.restore(&name, rec, now) {
            Ok(_) => {
                out.0 += 1;
                out.1 += len;
            }
            Err(_) => {
                let _ = apply(dir, DiskOp::Delete { name });
            }
        }
    }
    // bodies without a head, and temporary files of a write cut short
    for p in others {
        let stem = p
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split('.').next())
            .unwrap_or_default()
            .to_owned();
        let tmp = p.extension().is_some_and(|x| x == "tmp");
        if tmp || !kept.contains(&stem) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::StoreConfig;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_queued_for_writing_is_read_from_the_queue_then_from_disk() {
        let dir = std::env::temp_dir().join(format!(
            "canopy-disk-tier-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = Arc::new(Mutex::new(Store::new(StoreConfig {
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            max_object_bytes: 1 << 20,
            stale_max: Duration::from_secs(60),
        })));
        let tier = DiskTier::open(&dir, &store).expect("open");
        let body = Bytes::from_static(b"a body the writer has not reached");
        let op = DiskOp::Write {
            name: "00000000000000aa".into(),
            head: b"{}".to_vec(),
            body: body.clone(),
        };
        tier.submit(&mut store.lock().expect("store"), vec![op]);
        // the writer task has not run yet: the file is not there, the queue answers
        assert!(!dir.join("00000000000000aa.body").exists());
        let got = tier.read("00000000000000aa", body.len() as u64).await;
        assert_eq!(got.expect("queued body"), body);
        for _ in 0..200 {
            if queued_lock(&tier.queued).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            queued_lock(&tier.queued).is_empty(),
            "forgotten once written"
        );
        assert_eq!(tier.pending.load(Ordering::Relaxed), 0);
        let got = tier.read("00000000000000aa", body.len() as u64).await;
        assert_eq!(got.expect("body on disk"), body);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
