//! The post-event report: what the hygiene purged, kept and could not do. Written next to
//! the journal as JSON (for the organizer's records) and as text (for the crew); a dry run
//! writes neither and only answers it.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A file the hygiene removed (or, on a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileGone {
    /// Where it was.
    pub path: String,
    /// Its bytes.
    pub bytes: u64,
}

/// The edge cache's part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CachePart {
    /// Whether the gateway has an edge cache.
    pub enabled: bool,
    /// Answers removed.
    pub answers: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The journal's part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalPart {
    /// The journal file.
    pub path: String,
    /// Its bytes before.
    pub bytes_before: u64,
    /// Its bytes after (a dry run: unchanged).
    pub bytes_after: u64,
    /// Requests with an outcome whose headers and bodies were dropped.
    pub done_dropped: u64,
    /// Check-ins dropped from the register.
    pub checkins_dropped: u64,
    /// Requests not delivered yet: kept whole, still sent when a path returns.
    pub undelivered_kept: u64,
}

/// The reduced records' part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordsPart {
    /// The records file.
    pub path: String,
    /// Bids in it.
    pub bids: u64,
    /// Check-ins (and their syncs) in it.
    pub checkins: u64,
    /// When it is deleted, in the venue's time zone.
    pub keep_until: String,
}

/// The spool's part.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpoolPart {
    /// Spooled parts removed (the relay has them).
    pub parts: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes still spooled (the relay has not answered for them), kept.
    pub kept_bytes: u64,
}

/// A hold the crew set by hand during the event, lifted (or, on a dry run, to be lifted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLifted {
    /// `camera` or `uplink`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The level it was pinned at, or `prefer` / `avoid`.
    pub hold: String,
}

/// What one run of the hygiene did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// The event's slug.
    pub event: String,
    /// When it ended, in the venue's time zone.
    pub ended: String,
    /// When this ran, in the venue's time zone.
    pub ran_at: String,
    /// When this ran, s since the Unix epoch.
    pub ran_at_s: i64,
    /// Who started it: `auto` or `command`.
    pub trigger: String,
    /// Nothing was deleted: this is what a run would do.
    pub dry_run: bool,
    /// The edge cache.
    pub cache: CachePart,
    /// Leaf keys destroyed (overwritten, then removed).
    pub keys: Vec<FileGone>,
    /// The journal of bids and check-ins.
    pub journal: JournalPart,
    /// The reduced records kept.
    pub records: RecordsPart,
    /// The camera spool.
    pub spool: SpoolPart,
    /// Unreadable journal tails kept aside earlier, deleted.
    pub leftovers: Vec<FileGone>,
    /// Holds set by hand, lifted.
    #[serde(default)]
    pub holds: Vec<HoldLifted>,
    /// Access logs.
    pub access_logs: String,
    /// Steps that failed (the others ran).
    pub errors: Vec<String>,
}

/// What the gateway says about access logs in every report.
pub const ACCESS_LOGS: &str = "none kept: the gateway writes no access log; its own log goes to \
     stderr (the service manager's journal), with no request bodies, cookies or client \
     addresses";

impl Report {
    /// The report for people.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let would = if self.dry_run { "would be " } else { "" };
        let _ = writeln!(
            t,
            "post-event hygiene of {} (ended {}), {} ({}){}",
            self.event,
            self.ended,
            self.ran_at,
            self.trigger,
            if self.dry_run {
                ": DRY RUN, nothing deleted"
            } else {
                ""
            }
        );
        if self.cache.enabled {
            let _ = writeln!(
                t,
                "  edge cache: {} answers, {} bytes {would}purged",
                self.cache.answers, self.cache.bytes
            );
        } else {
            let _ = writeln!(t, "  edge cache: off");
        }
        if self.keys.is_empty() {
            let _ = writeln!(t, "  leaf keys: none left to destroy");
        }
        for k in &self.keys {
            let _ = writeln!(
                t,
                "  leaf key {would}destroyed: {} ({} bytes)",
                k.path, k.bytes
            );
        }
        let j = &self.journal;
        let _ =
            writeln!(
            t,
            "  journal {}: {} answered requests and {} check-ins {would}reduced to records; {} \
             undelivered kept whole; {} -> {} bytes",
            j.path, j.done_dropped, j.checkins_dropped, j.undelivered_kept, j.bytes_before,
            j.bytes_after
        );
        let r = &self.records;
        let _ = writeln!(
            t,
            "  records {}: {} bids, {} check-ins (key, edge time, lot, amount, outcome), kept \
             until {}",
            r.path, r.bids, r.checkins, r.keep_until
        );
        let s = &self.spool;
        let _ = writeln!(
            t,
            "  camera spool: {} parts, {} bytes {would}removed; {} bytes the relay has not \
             confirmed kept",
            s.parts, s.bytes, s.kept_bytes
        );
        for l in &self.leftovers {
            let _ = writeln!(
                t,
                "  unreadable journal tail {would}deleted: {} ({} bytes)",
                l.path, l.bytes
            );
        }
        for h in &self.holds {
            let _ = writeln!(
                t,
                "  {} {} held by hand at {}: hold {would}lifted",
                h.kind, h.name, h.hold
            );
        }
        let _ = writeln!(t, "  access logs: {}", self.access_logs);
        for e in &self.errors {
            let _ = writeln!(t, "  FAILED: {e}");
        }
        t
    }
}
