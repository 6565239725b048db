//! The relay's duplicate table on disk: the shell of `ledger::Claims` and its journal.
//!
//! A first copy's claim is on disk before the copy goes to the origin, so a relay that
//! restarts knows every key it may already have delivered: answered keys are answered from
//! the table, keys in doubt go to the origin again with the same `Idempotency-Key`. Every
//! change of the table and its journal record happen under one lock, so the file holds
//! them in the order they happened.

use ledger::claims::{Claims, ClaimsConfig, Lookup};
use ledger::record::{Claim, Delivery, Settled};
use ledger::Fingerprint;
use ledger_io::{Journal, JournalError, Pending};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// A journal grown past this is compacted (once it is also twice its live contents).
const COMPACT_BYTES: u64 = 64 << 20;

/// The relay's claims and their journal.
pub(crate) struct ClaimLog {
    claims: Mutex<Claims>,
    journal: Journal,
    /// A compaction is under way.
    compacting: Arc<AtomicBool>,
}

impl ClaimLog {
    /// Opens the journal at `path` (made if missing) and restores what it holds.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opened = ledger_io::open(path)?;
        let entries = std::mem::take(&mut opened.entries);
        let n = entries.len();
        let mut claims = Claims::new(ClaimsConfig::default());
        claims.restore(tunnel_io::clock::now(), wall_us(), entries);
        let s = claims.stats();
        info!(journal = %path.display(), records = n, claims = s.claims, in_doubt = s.in_doubt,
            damaged = opened.damage.is_some(), "relay duplicate table opened");
        if opened.undecodable > 0 {
            metrics::counter!("canopy_relay_journal_undecodable_total")
                .increment(opened.undecodable as u64);
        }
        let journal = Journal::start(path.to_path_buf(), opened)?;
        let log = Self {
            claims: Mutex::new(claims),
            journal,
            compacting: Arc::default(),
        };
        log.publish();
        Ok(log)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a key stands.
    pub(crate) fn lookup(&self, scope: &str, key: &str, fp: Option<&Fingerprint>) -> Lookup {
        self.claims().lookup(scope, key, fp)
    }

    /// Claims a key for its first copy; resolves once the claim is on disk.
    pub(crate) async fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Option<Fingerprint>,
    ) -> Result<(), JournalError> {
        let pending = {
            let mut c = self.claims();
            let entry = c.claim(
                tunnel_io::clock::now(),
                Claim {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    fingerprint,
                    at_us: wall_us(),
                },
            );
            self.journal.submit(&entry)
        };
        self.publish();
        pending.await
    }

    /// Settles a claim with the answer later copies get; resolves once the answer is on
    /// disk, so a relay killed after answering still replays it (a test killed the relay
    /// right after an answer, before the background fsync, and the retry reached the
    /// origin again). One group-committed fsync, about a millisecond.
    pub(crate) async fn settle(&self, scope: &str, key: &str, result: Delivery) {
        let pending = {
            let mut c = self.claims();
            let entry = c.settle(
                tunnel_io::clock::now(),
                Settled {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    at_us: wall_us(),
                    result,
                },
            );
            self.journal.submit(&entry)
        };
        if let Err(e) = pending.await {
            // the key stays in doubt after a crash: the next copy goes again with its key
            warn!(error = %e, "relay duplicate table: answer not journaled");
        }
        self.after(None, "answer");
    }

    /// Gives up a claim whose copy never reached the origin.
    pub(crate) fn release(&self, scope: &str, key: &str) {
        let pending = {
            let mut c = self.claims();
            let entry = c.release(scope, key);
            self.journal.submit(&entry)
        };
        self.after(Some(pending), "release");
    }

    /// Waits for a record in the background, if one is given (a release lost in a crash
    /// leaves its key in doubt: the next copy goes again with its key), then compacts when
    /// due.
    fn after(&self, pending: Option<Pending>, what: &'static str) {
        self.publish();
        let due = self.journal.stats().compaction_due(COMPACT_BYTES)
            && !self.compacting.swap(true, Ordering::AcqRel);
        let rewrite = due.then(|| {
            let c = self.claims();
            self.journal.submit_rewrite(c.snapshot())
        });
        let journal = self.journal.clone();
        let compacting = self.compacting.clone();
        tokio::spawn(async move {
            if let Some(p) = pending {
                if let Err(e) = p.await {
                    warn!(error = %e, what, "relay duplicate table: record not journaled");
                }
            }
            if let Some(r) = rewrite {
                let from = journal.stats().len;
                match r.await {
                    Ok(()) => info!(from, to = journal.stats().len, "relay journal compacted"),
                    Err(e) => warn!(error = %e, "relay journal compaction failed"),
                }
                compacting.store(false, Ordering::Release);
            }
        });
    }

    fn publish(&self) {
        let s = self.claims().stats();
        metrics::gauge!("canopy_relay_claims").set(s.claims as f64);
        metrics::gauge!("canopy_relay_claims_in_doubt").set(s.in_doubt as f64);
        metrics::gauge!("canopy_relay_claims_answer_bytes").set(s.answer_bytes as f64);
        let j = self.journal.stats();
        metrics::gauge!("canopy_relay_journal_bytes").set(j.len as f64);
        metrics::counter!("canopy_relay_journal_appends_total").absolute(j.appends);
    }
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
