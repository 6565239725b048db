//! The post-event hygiene: once the event is over and its grace period too, the gateway
//! (or the crew, `canopy purge --post-event`) invalidates the edge cache, destroys the
//! leaf keys, reduces the journal of bids and check-ins to the records reconciliation
//! needs (kept `[event] retention_days`, then deleted), removes the spooled camera parts
//! the relay has, deletes unreadable journal tails kept aside, lifts the holds the crew
//! set by hand, and writes a report of it all. What has not reached its destination yet
//! (an undelivered bid, a spooled part the relay never confirmed) is kept: the hygiene
//! never loses what was promised.
//!
//! The decisions are the event's ([`crate::event::Event::phase`], sans-IO) and the
//! records' ([`records`]); this is the shell that does the deleting.

pub mod records;
pub mod report;

use crate::actions::Actions;
use crate::admin::holds::Held;
use crate::bids::Bids;
use crate::event::{Event, Phase, PostEvent};
use crate::files::write_private;
use crate::proxy::EdgeCache;
use records::{Record, RecordKind};
use report::{CachePart, FileGone, HoldLifted, RecordsPart, Report, SpoolPart};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often the gateway looks at the event's clock.
const LOOK: Duration = Duration::from_secs(60);

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The gateway, at the end of the grace period.
    Auto,
    /// The crew (`canopy purge --post-event`, the admin API).
    Command,
}

/// Why a run was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The event is not over.
    #[error("the event {slug} is not over: it ends {ends} (a dry run shows what would go)")]
    NotOver {
        /// The event.
        slug: String,
        /// When it ends, in the venue's time zone.
        ends: String,
    },
    /// Another run is under way.
    #[error("the post-event hygiene is running already")]
    Busy,
}

/// The hygiene's hands on the gateway.
pub struct Hygiene {
    p: Parts,
    /// Where the records and reports go (the journal's folder).
    dir: PathBuf,
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Hygiene {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hygiene")
            .field("event", &self.p.event.slug)
            .finish_non_exhaustive()
    }
}

/// What [`Hygiene::new`] needs.
pub(crate) struct Parts {
    pub(crate) event: Event,
    pub(crate) bids: Arc<Bids>,
    pub(crate) cache: Option<Arc<EdgeCache>>,
    pub(crate) actions: Arc<Actions>,
    pub(crate) live: Arc<crate::LiveStreams>,
    pub(crate) keys: Vec<PathBuf>,
    pub(crate) journal: PathBuf,
    /// What the crew set by hand (when the admin API is on), and the cameras' levels.
    pub(crate) holds: Option<Arc<crate::admin::holds::HoldsFile>>,
    pub(crate) levels: Option<Arc<crate::levels::Levels>>,
}

impl Hygiene {
    pub(crate) fn new(p: Parts) -> Arc<Self> {
        let dir = p
            .journal
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        Arc::new(Self {
            p,
            dir,
            running: tokio::sync::Mutex::new(()),
        })
    }

    /// The reduced records' file.
    pub fn records_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.records.jsonl", self.p.event.slug))
    }

    /// The report's file (JSON; the text beside it, `.txt`).
    pub fn report_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}.post-event.json", self.p.event.slug))
    }

    /// The gateway's own schedule: the hygiene at the end of the grace period (when
    /// `post_event = "auto"` and it has not run), the records' deletion at the end of
    /// the retention.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = crate::clock::wall_us() as i64 / 1_000_000;
            let phase = self.p.event.phase(now);
            if matches!(phase, Phase::PostEvent | Phase::Retired)
                && self.p.event.post_event == PostEvent::Auto
                && !self.report_path().exists()
            {
                match self.purge(Trigger::Auto, false, now).await {
                    Ok(r) => info!(event = %r.event, "post-event hygiene done:\n{}", r.text()),
                    Err(e) => warn!("post-event hygiene: {e}"),
                }
            }
            if phase == Phase::Retired {
                self.retire().await;
            }
            tokio::time::sleep(LOOK).await;
        }
    }

    /// Deletes the reduced records once the retention is over.
    async fn retire(&self) {
        let path = self.records_path();
        let gone = tokio::task::spawn_blocking(move || remove(&path)).await;
        if let Ok(Ok(Some(f))) = gone {
            info!(file = %f.path, bytes = f.bytes, keep_until = %self.p.event.local(self.p.event.keep_until_s()),
                "the event's retention is over: its records are deleted");
        }
    }

    /// Runs the hygiene at `now_s` (a dry run at any time; a real one once the event has
    /// ended) and writes its report (not on a dry run).
    pub async fn purge(
        &self,
        trigger: Trigger,
        dry_run: bool,
        now_s: i64,
    ) -> Result<Report, Refusal> {
        if !dry_run && matches!(self.p.event.phase(now_s), Phase::Before | Phase::During) {
            return Err(Refusal::NotOver {
                slug: self.p.event.slug.clone(),
                ends: self.p.event.local(self.p.event.end_s),
            });
        }
        let _one = self.running.try_lock().map_err(|_| Refusal::Busy)?;
        let e = &self.p.event;
        let mut rep = Report {
            event: e.slug.clone(),
            ended: e.local(e.end_s),
            ran_at: e.local(now_s),
            ran_at_s: now_s,
            trigger: match trigger {
                Trigger::Auto => "auto",
                Trigger::Command => "command",
            }
            .into(),
            dry_run,
            access_logs: report::ACCESS_LOGS.into(),
            ..Report::default()
        };
        // the edge cache
        if let Some(c) = &self.p.cache {
            let (answers, bytes) = if dry_run {
                let (n, mem, disk) = c.usage();
                (n as u64, mem + disk)
            } else {
                let p = c.purge(&crate::cache::Purge::All);
                (p.entries, p.bytes)
            };
            rep.cache = CachePart {
                enabled: true,
                answers,
                bytes,
            };
        }
        // the journal, reduced to records merged with those of an earlier run; a records
        // file that cannot be read is not replaced (what it holds may be all that is
        // left of an earlier run's journal), and the journal is left whole
        let records_path = self.records_path();
        match read_records(&records_path) {
            Ok(mut records) => {
                let path = records_path.clone();
                let save =
                    |r: &BTreeMap<(RecordKind, String), Record>| write_records(&path, r.values());
                match self
                    .p
                    .bids
                    .post_event(&self.p.journal, &mut records, dry_run, save)
                    .await
                {
                    Ok(j) => rep.journal = j,
                    Err(err) => rep.errors.push(format!(
                        "journal {} (left whole): {err}",
                        self.p.journal.display()
                    )),
                }
                rep.records = RecordsPart {
                    path: records_path.display().to_string(),
                    bids: records
                        .keys()
                        .filter(|(k, _)| *k == RecordKind::Bid)
                        .count() as u64,
                    checkins: records
                        .keys()
                        .filter(|(k, _)| *k == RecordKind::Checkin)
                        .count() as u64,
                    keep_until: e.local(e.keep_until_s()),
                };
            }
            Err(err) => rep.errors.push(format!(
                "records {}: {err}; the journal is left whole",
                records_path.display()
            )),
        }
        // the camera spool: what the relay has answered for
        rep.spool = self.spool(dry_run).await;
        rep.holds = self.lift_holds(dry_run);
        // files: leaf keys, unreadable journal tails
        let (keys, leftovers) = (self.p.keys.clone(), self.leftovers());
        let files = tokio::task::spawn_blocking(move || {
            let mut errs = Vec::new();
            let mut go = |paths: Vec<PathBuf>, key: bool| -> Vec<FileGone> {
                paths
                    .iter()
                    .filter_map(|p| {
                        let r = match (dry_run, key) {
                            (true, _) => size(p),
                            (false, true) => destroy_key(p),
                            (false, false) => remove(p),
                        };
                        r.unwrap_or_else(|err| {
                            errs.push(format!("{}: {err}", p.display()));
                            None
                        })
                    })
                    .collect()
            };
            let k = go(keys, true);
            let l = go(leftovers, false);
            (k, l, errs)
        })
        .await;
        match files {
            Ok((k, l, errs)) => {
                rep.keys = k;
                rep.leftovers = l;
                rep.errors.extend(errs);
            }
            Err(err) => rep.errors.push(format!("files: {err}")),
        }
        if !dry_run {
            if let Err(err) = self.write_report(&rep).await {
                rep.errors
                    .push(format!("report {}: {err}", self.report_path().display()));
            }
        }
        metrics::counter!("canopy_gateway_post_event_runs_total",
            "dry_run" => if dry_run { "true" } else { "false" })
        .increment(1);
        Ok(rep)
    }

    async fn spool(&self, dry_run: bool) -> SpoolPart {
        let held = || -> u64 {
            self.p
                .live
                .all()
                .iter()
                .flat_map(|s| s.renditions().to_vec())
                .filter_map(|r| r.spool_fill().map(|(b, _)| b))
                .sum()
        };
        if dry_run {
            return SpoolPart {
                parts: 0,
                bytes: 0,
                kept_bytes: held(),
            };
        }
        let p = self.p.actions.purge("post-event").await;
        SpoolPart {
            parts: p.parts,
            bytes: p.bytes,
            kept_bytes: held(),
        }
    }

    /// Lifts what the crew set by hand during the event, a camera's pinned level and an
    /// uplink held preferred or avoided: they were decisions about this venue's links, and
    /// the next event on this box starts from what its config says. Both what the holds
    /// file keeps (a camera's pin may wait there for its camera) and what the gateway
    /// holds (a hold whose save failed is there only).
    fn lift_holds(&self, dry_run: bool) -> Vec<HoldLifted> {
        use crate::actions::HandHold;
        let levels = self.p.levels.as_deref();
        let actions = &self.p.actions;
        let lift = |kept: &Held| -> Vec<HoldLifted> {
            let mut cameras = kept.levels.clone();
            for c in levels.map(|l| l.snapshot()).unwrap_or_default() {
                if let Some(level) = c.pinned {
                    cameras.insert(c.camera, level.to_owned());
                }
            }
            let mut uplinks = kept.uplinks.clone();
            for (name, prefer) in actions.held_by_hand() {
                uplinks.insert(name, HandHold::held(prefer).name().to_owned());
            }
            if !dry_run {
                for camera in cameras.keys() {
                    // a pin still waiting for its camera is lifted too
                    if let Some(l) = levels {
                        l.set_override(camera, None);
                    }
                }
                for uplink in uplinks.keys() {
                    actions.hold_uplink(uplink, HandHold::Auto);
                }
            }
            let held = |kind: &str, (name, hold): (String, String)| HoldLifted {
                kind: kind.into(),
                name,
                hold,
            };
            cameras
                .into_iter()
                .map(|c| held("camera", c))
                .chain(uplinks.into_iter().map(|u| held("uplink", u)))
                .collect()
        };
        let lifted = match (&self.p.holds, dry_run) {
            (Some(file), false) => file.lift_all(lift),
            (Some(file), true) => lift(&file.held()),
            (None, _) => lift(&Held::default()),
        };
        if !dry_run && !lifted.is_empty() {
            info!(
                holds = lifted.len(),
                "post-event: the holds set by hand are lifted"
            );
        }
        lifted
    }

    /// Unreadable journal tails kept aside (`<journal stem>.damaged-<time>`).
    fn leftovers(&self) -> Vec<PathBuf> {
        let Some(stem) = self.p.journal.file_stem().and_then(|s| s.to_str()) else {
            return Vec::new();
        };
        let prefix = format!("{stem}.damaged-");
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        v.sort();
        v
    }

    async fn write_report(&self, rep: &Report) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(rep).map_err(std::io::Error::other)?;
        let text = rep.text();
        let path = self.report_path();
        tokio::task::spawn_blocking(move || {
            write_private(&path.with_extension("txt"), text.as_bytes())?;
            // the JSON last: its presence means "done"
            write_private(&path, &json)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// The records of an earlier run (none when there was none).
fn read_records(path: &Path) -> std::io::Result<BTreeMap<(RecordKind, String), Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let mut m = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: Record = serde_json::from_str(line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {e}", i + 1),
            )
        })?;
        m.insert((r.kind, r.key.clone()), r);
    }
    Ok(m)
}

/// Writes the records as JSON lines, oldest edge time first.
fn write_records<'a>(
    path: &Path,
    records: impl Iterator<Item = &'a Record>,
) -> std::io::Result<()> {
    let mut v: Vec<&Record> = records.collect();
    v.sort_by(|a, b| (a.edge_us, &a.key).cmp(&(b.edge_us, &b.key)));
    let mut out = Vec::new();
    for r in v {
        serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    write_private(path, &out)
}

/// A file's size, when it exists.
fn size(path: &Path) -> std::io::Result<Option<FileGone>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileGone {
            path: path.display().to_string(),
            bytes: m.len(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file, when it exists.
fn remove(path: &Path) -> std::io::Result<Option<FileGone>> {
    let Some(f) = size(path)? else {
        return Ok(None);
    };
    std::fs::remove_file(path)?;
    Ok(Some(f))
}

/// Overwrites a key file with zeros (synced), then removes it.
fn destroy_key(path: &Path) -> std::io::Result<Option<FileGone>> {
    use std::io::Write;
    let Some(f) = size(path)? else {
        return Ok(None);
    };
    let mut w = std::fs::OpenOptions::new().write(true).open(path)?;
    w.write_all(&vec![0u8; f.bytes as usize])?;
    w.sync_all()?;
    drop(w);
    std::fs::remove_file(path)?;
    Ok(Some(f))
}
