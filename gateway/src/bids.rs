//! Bids and check-ins at the gateway, the shell of `ledger::Outbox` and the journal: every
//! request is journaled (on disk) before anything else happens to it, delivered at once
//! when a path can, answered `202 Accepted` with a receipt when none can within the
//! deadline, and sent again in edge-time order, one at a time, until it has an outcome.
//! Outcomes are journaled too, so a restart sends again exactly what had none.
//!
//! Every change of the outbox and its journal record happen under one lock, so the file
//! holds them in the order they happened (a compaction's snapshot included).

use crate::hygiene::records::{self, Record, RecordKind};
use crate::hygiene::report::JournalPart;
use ledger::checkin::{Refused, Register};
use ledger::outbox::{Admit, Outbox, OutboxConfig, Status, View};
use ledger::record::{Accepted, Entry, Outcome};
use ledger::token::Grant;
use ledger_io::{Journal, JournalError, Pending};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// A journal grown past this is compacted (once it is also twice its live contents).
const COMPACT_BYTES: u64 = 64 << 20;
/// How often the replay loop looks at the paths while nothing is due (or no path is up).
const PATH_LOOK: Duration = Duration::from_millis(50);

/// What a delivery attempt came to.
#[derive(Debug)]
pub(crate) enum Delivered {
    /// An outcome: answered by the origin, or refused for good.
    Done(Outcome),
    /// Not delivered (no path, or the origin was not reached): try again later.
    Undelivered(String),
}

/// A check-in admitted: its journal write, and what it leaves to do.
pub(crate) struct CheckinWrite {
    /// Resolves once the check-in (and its sync request) are on disk.
    pub(crate) written: Pending,
    /// The check-in.
    pub(crate) record: ledger::record::CheckedIn,
    /// Its sync request to send, when new.
    pub(crate) to_send: Option<Arc<Accepted>>,
}

/// The gateway's bids and check-ins.
pub(crate) struct Bids {
    /// Who is inside (check-ins). Lock order: `register`, then `outbox`.
    register: Mutex<Register>,
    outbox: Mutex<Outbox>,
    journal: Journal,
    /// Bumped whenever a request gets its outcome.
    changed: watch::Sender<u64>,
    /// Wakes the replay loop.
    wake: Notify,
    /// How long a device waits for an answer before it gets a receipt.
    pub(crate) deadline: Duration,
}

impl std::fmt::Debug for Bids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bids").finish_non_exhaustive()
    }
}

impl Bids {
    /// Opens the journal at `path` (made if missing) and restores what it holds.
    pub(crate) fn open(path: &Path, deadline: Duration) -> std::io::Result<Arc<Self>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opened = ledger_io::open(path)?;
        let mut outbox = Outbox::new(OutboxConfig::default());
        let entries = std::mem::take(&mut opened.entries);
        let n = entries.len();
        let mut register = Register::new();
        register.restore(&entries);
        register.expire(crate::clock::wall_us() / 1_000_000);
        outbox.restore(tunnel_io::clock::now(), entries);
        let s = outbox.stats();
        info!(journal = %path.display(), records = n, undelivered = s.pending,
            damaged = opened.damage.is_some(), "bids journal opened");
        if opened.undecodable > 0 {
            metrics::counter!("canopy_gateway_journal_undecodable_total")
                .increment(opened.undecodable as u64);
        }
        let journal = Journal::start(path.to_path_buf(), opened)?;
        Ok(Arc::new(Self {
            register: Mutex::new(register),
            outbox: Mutex::new(outbox),
            journal,
            changed: watch::channel(0).0,
            wake: Notify::new(),
            deadline,
        }))
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request; a new one is journaled (await the returned write before sending).
    pub(crate) fn admit(&self, request: Accepted) -> (Admit, Option<Pending>) {
        let mut o = self.outbox();
        let admit = o.admit(request);
        let pending = match &admit {
            Admit::New(r) => Some(self.journal.submit(&Entry::Accepted((**r).clone()))),
            _ => None,
        };
        (admit, pending)
    }

    /// Admits a check-in with a verified grant, and queues its record for the organizer
    /// (`sync`, when check-ins are synced): both journaled in one commit. Await the
    /// returned write before answering the device; the sync request, when new, is to be
    /// sent.
    pub(crate) fn check_in(
        &self,
        g: &Grant,
        gate: &str,
        reentry: bool,
        sync: impl FnOnce(&ledger::record::CheckedIn) -> Option<Accepted>,
    ) -> Result<CheckinWrite, Refused> {
        let mut register = self.register.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::clock::wall_us();
        register.expire(now / 1_000_000);
        let record = register.admit(g, now, gate, reentry)?;
        let mut written = self.journal.submit(&Entry::CheckedIn(record.clone()));
        let mut to_send = None;
        if let Some(req) = sync(&record) {
            let mut o = self.outbox();
            if let Admit::New(r) = o.admit(req) {
                written = self.journal.submit(&Entry::Accepted((*r).clone()));
                to_send = Some(r);
            }
        }
        metrics::gauge!("canopy_gateway_checkins_inside").set(register.inside() as f64);
        Ok(CheckinWrite {
            written,
            record,
            to_send,
        })
    }

    /// A check-in's journal write failed: the register and the outbox forget it (the
    /// device was refused; its retry is a new check-in).
    pub(crate) fn check_in_failed(
        &self,
        record: &ledger::record::CheckedIn,
        sync: Option<&Accepted>,
        why: &JournalError,
    ) {
        warn!(attendee = %record.attendee, error = %why, "check-in not journaled: refused");
        let mut register = self.register.lock().unwrap_or_else(|e| e.into_inner());
        register.undo(record);
        if let Some(r) = sync {
            self.outbox().abandon(&r.key);
        }
    }

    /// The journal refused a new request: it is forgotten.
    pub(crate) fn abandon(&self, key: &str, why: &JournalError) {
        warn!(key, error = %why, "bid not journaled: refused");
        self.outbox().abandon(key);
    }

    /// Records what a delivery attempt came to.
    pub(crate) fn settle(&self, key: &str, d: Delivered) {
        match d {
            Delivered::Done(outcome) => {
                let pending = {
                    let mut o = self.outbox();
                    o.finish(tunnel_io::clock::now(), outcome.clone());
                    self.journal.submit(&Entry::Outcome(outcome))
                };
                // an outcome lost in a crash only means one more (deduplicated) try
                tokio::spawn(async move {
                    if let Err(e) = pending.await {
                        warn!(error = %e, "bid outcome not journaled");
                    }
                });
                self.changed.send_modify(|v| *v += 1);
            }
            Delivered::Undelivered(reason) => {
                tracing::debug!(key, %reason, "bid undelivered: queued");
                self.outbox().undelivered(tunnel_io::clock::now(), key);
                self.wake.notify_one();
            }
        }
        self.publish();
    }

    /// Waits until `key` has an outcome or `until` passes; its status then.
    pub(crate) async fn wait(&self, key: &str, until: tokio::time::Instant) -> Option<Status> {
        let mut rx = self.changed.subscribe();
        loop {
            let status = self.outbox().view(key)?.status;
            if matches!(status, Status::Done(_)) {
                return Some(status);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Some(status) },
                _ = tokio::time::sleep_until(until) => return Some(status),
            }
        }
    }

    /// A request's status, for `GET /bids/<key>`.
    pub(crate) fn view(&self, key: &str) -> Option<View> {
        self.outbox().view(key)
    }

    /// Sends queued requests again, in edge-time order, one at a time, for as long as the
    /// gateway runs: `deliver` makes one attempt; `usable` says whether any path is up (a
    /// path that comes back ends every wait).
    pub(crate) async fn run_replay<F, Fut>(self: Arc<Self>, deliver: F, usable: impl Fn() -> bool)
    where
        F: Fn(Arc<Accepted>) -> Fut,
        Fut: std::future::Future<Output = Delivered>,
    {
        let mut was_usable = usable();
        loop {
            // With no path up, a request already due is no reason to look again at once:
            // that woke the loop about 650 times a second for as long as an outage with a
            // queued bid lasted (and on tokio's paused clock, time never moved on).
            let next = self.outbox().poll_timeout().filter(|_| was_usable);
            let sleep = next.map_or(PATH_LOOK, |t| {
                t.saturating_duration_since(tunnel_io::clock::now())
                    .min(PATH_LOOK)
            });
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            let now_usable = usable();
            if now_usable && !was_usable {
                self.outbox().retry_now(tunnel_io::clock::now());
            }
            was_usable = now_usable;
            if !now_usable {
                continue;
            }
            loop {
                let next = self.outbox().next_replay(tunnel_io::clock::now());
                let Some(r) = next else { break };
                metrics::counter!("canopy_gateway_bids_replayed_total").increment(1);
                let key = r.key.clone();
                let d = deliver(r).await;
                self.settle(&key, d);
            }
            self.maybe_compact().await;
        }
    }

    async fn maybe_compact(&self) {
        let len = self.journal.stats().len;
        if !self.journal.stats().compaction_due(COMPACT_BYTES) {
            return;
        }
        let pending = {
            let r = self.register.lock().unwrap_or_else(|e| e.into_inner());
            let o = self.outbox();
            let mut all = r.snapshot();
            all.extend(o.snapshot());
            self.journal.submit_rewrite(all)
        };
        match pending.await {
            Ok(()) => {
                info!(
                    from = len,
                    to = self.journal.stats().len,
                    "bids journal compacted"
                );
            }
            Err(e) => warn!(error = %e, "bids journal compaction failed"),
        }
    }

    /// The event is over: reads the journal, and what the register and the outbox hold
    /// (newer, perhaps, than the file), into reduced records (`into`); then, unless
    /// `dry_run`, has `save` write them and, once it has, forgets every request that has
    /// its outcome and every check-in, and rewrites the journal with what is still to be
    /// sent (whole: it still goes). Under the locks from the reading to the forgetting, so
    /// nothing is forgotten that the saved records do not hold.
    pub(crate) async fn post_event(
        &self,
        path: &Path,
        into: &mut BTreeMap<(RecordKind, String), Record>,
        dry_run: bool,
        save: impl FnOnce(&BTreeMap<(RecordKind, String), Record>) -> std::io::Result<()>,
    ) -> std::io::Result<JournalPart> {
        let file = path.to_path_buf();
        let entries = tokio::task::spawn_blocking(move || ledger_io::read(&file))
            .await
            .map_err(std::io::Error::other)??;
        records::reduce(&entries, into);
        let before = self.journal.stats().len;
        let mut part = JournalPart {
            path: path.display().to_string(),
            bytes_before: before,
            bytes_after: before,
            ..JournalPart::default()
        };
        let rewrite = {
            let mut r = self.register.lock().unwrap_or_else(|e| e.into_inner());
            let mut o = self.outbox();
            // check-ins and outcomes whose records may not have reached the file yet
            records::reduce(&r.snapshot(), into);
            let done = o.done_outcomes();
            records::apply_outcomes(&done, into);
            part.undelivered_kept = o.stats().pending as u64;
            part.done_dropped = done.len() as u64;
            part.checkins_dropped = r.checked_in() as u64;
            if dry_run {
                return Ok(part);
            }
            // the records on disk before anything they stand for is forgotten (a short
            // blocking write, once, with bids held)
            save(into)?;
            o.forget_done();
            r.clear();
            self.journal.submit_rewrite(o.snapshot())
        };
        rewrite.await.map_err(std::io::Error::other)?;
        part.bytes_after = self.journal.stats().len;
        info!(journal = %path.display(), from = before, to = part.bytes_after,
            kept = part.undelivered_kept, "bids journal reduced after the event");
        Ok(part)
    }

    /// The outbox and the journal at a glance.
    pub(crate) fn glance(&self) -> Glance {
        let (s, oldest) = {
            let o = self.outbox();
            (o.stats(), o.oldest_pending_edge_us())
        };
        let j = self.journal.stats();
        Glance {
            accepted: s.accepted,
            queued: s.queued,
            pending: s.pending,
            pending_bytes: s.pending_bytes,
            oldest_pending_s: oldest.map_or(0.0, |e| {
                (crate::clock::wall_us().saturating_sub(e)) as f64 / 1e6
            }),
            journal_bytes: j.len,
            journal_appends: j.appends,
            journal_commits: j.commits,
        }
    }

    /// Gauges of the outbox and the journal.
    pub(crate) fn publish(&self) {
        let g = self.glance();
        metrics::gauge!("canopy_gateway_bids_pending").set(g.pending as f64);
        metrics::gauge!("canopy_gateway_bids_pending_bytes").set(g.pending_bytes as f64);
        metrics::gauge!("canopy_gateway_bids_oldest_pending_seconds").set(g.oldest_pending_s);
        metrics::gauge!("canopy_gateway_journal_bytes").set(g.journal_bytes as f64);
        metrics::counter!("canopy_gateway_journal_appends_total").absolute(g.journal_appends);
        metrics::counter!("canopy_gateway_journal_commits_total").absolute(g.journal_commits);
    }
}

/// Bids and check-ins at a glance (the admin API's status).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Glance {
    /// Admitted as new since start.
    pub accepted: u64,
    /// Gone to the queue (a failed try) since start.
    pub queued: u64,
    /// Undelivered now (sending or queued).
    pub pending: usize,
    /// Their bytes.
    pub pending_bytes: usize,
    /// The oldest undelivered one's age, s (0 with none).
    pub oldest_pending_s: f64,
    /// The journal's size.
    pub journal_bytes: u64,
    /// Records appended since start.
    pub journal_appends: u64,
    /// Group commits (fsyncs) since start.
    pub journal_commits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger::record::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// With no path up, a request already due for its next try does not make the replay
    /// loop look again at once (it looked 653 times in this second before).
    #[tokio::test]
    async fn the_replay_loop_rests_while_no_path_is_up() {
        let dir = std::env::temp_dir().join(format!("canopy-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bids = Bids::open(&dir.join("bids.journal"), Duration::from_secs(2)).expect("open");
        let body = b"{\"amount\":1}".to_vec();
        let key = "replay-key-1";
        let request = Accepted {
            key: key.into(),
            kind: Kind::Bid,
            edge_us: 1,
            clock_known: true,
            fingerprint: ledger::fingerprint("POST", "http://a.test/bids", &body),
            method: "POST".into(),
            target: "http://a.test/bids".into(),
            headers: Vec::new(),
            body,
        };
        let (_, written) = bids.admit(request);
        written.expect("new").await.expect("journaled");
        // queued, due again after the outbox's least wait (250 ms)
        bids.settle(key, Delivered::Undelivered("no path".into()));
        let looks = Arc::new(AtomicUsize::new(0));
        let counted = looks.clone();
        let replay = bids.clone().run_replay(
            |_| async { Delivered::Undelivered("no path".into()) },
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                false
            },
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), replay).await;
        let n = looks.load(Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&dir);
        // one look per PATH_LOOK (50 ms) and the first: about 21
        assert!(n <= 40, "looked at the paths {n} times in 1 s");
    }
}
