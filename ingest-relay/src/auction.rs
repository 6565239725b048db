//! The relay's embedded bid sink: the shell of `ledger::auction` and its journal. Gateways
//! reach it under the name `[auction] host` (a venue site whose origin is that name):
//!
//! - `POST /lots/<lot>/bids` with `{"bidder": "...", "amount": 12000}` (minor units): the
//!   bid is recorded by its edge time (`canopy-edge-time`, set by the gateway) and
//!   journaled before the answer: `201` with the lot's standing, `200` for a retry of a
//!   recorded bid, `409` when the lot was closed when the bid was placed (or it arrived
//!   after the outage window), `404` for an unknown lot, `422` for a malformed bid;
//! - `GET /lots` and `GET /lots/<lot>`: standings (and the lot's latest bids).
//!
//! Lots are made and their closes moved on the relay's operator listener
//! (`crate::auction_api`: `PUT /api/lots/<lot>`), journaled like bids.
//!
//! Answers to bids go through the duplicate table like an origin's, so copies and replays
//! of a bid get the first answer.
//!
//! A lot whose result is final (closed, its outage window passed) is folded at start and
//! every minute: every bid it took is appended to `[auction] archive` (one JSON line per
//! lot, synced), then the lot keeps its tally, its leader and its latest 10 bids, and the
//! journal is rewritten with what the auction holds. A folded lot made through the API
//! leaves altogether `[auction] retire_after_days` after its result became final (its id
//! is then unknown, and free). So the log and the memory hold the open lots' bids and a
//! small record of each recent closed one, however many sales the relay has run.

use crate::config::AuctionSection;
use crate::server::{read_capped, Capped, Intake, Stream};
use crate::session::Publisher;
use crate::sink_answer::answer;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use ledger::auction::{
    Auction, AuctionConfig, BidError, Folding, Lot, LotChange, LotError, Phase, Standing,
};
use ledger::record::{Entry, LotBid, LotSet};
use ledger_io::Journal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tracing::{info, warn};
use tunnel::wire;

/// Largest bid body.
const MAX_BODY: u64 = 16 * 1024;
/// Bids listed with a lot's standing.
const HISTORY: usize = 50;
/// Bids a folded lot keeps beside its leader: 10,000 lots keep at most 110,000 (the
/// archive has the rest).
const FOLDED_KEEP: usize = 10;
/// How often lots whose result became final are folded.
const FOLD_EVERY: Duration = Duration::from_secs(60);

/// The embedded auction.
pub(crate) struct AuctionSink {
    host: String,
    auction: Mutex<Auction>,
    journal: Journal,
    /// Where folded lots' bids go.
    archive: PathBuf,
    /// How long a folded lot made through the API stays after its result is final, µs.
    retire_after_us: u64,
    /// One lot setting at a time, from its check to its record on disk: a setting the
    /// journal refused is taken back before the next is checked.
    settings: tokio::sync::Mutex<()>,
}

impl AuctionSink {
    /// Opens the auction of a config (its journal made if missing); `None` when off.
    pub(crate) fn open(cfg: &AuctionSection) -> std::io::Result<Option<Self>> {
        let Some(host) = &cfg.host else {
            return Ok(None);
        };
        let path: &Path = &cfg.journal;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opened = ledger_io::open(path)?;
        let entries = std::mem::take(&mut opened.entries);
        let mut auction = Auction::new(
            AuctionConfig {
                max_outage_us: cfg.max_outage_s * 1_000_000,
                max_bids: cfg.max_bids,
                ..AuctionConfig::default()
            },
            cfg.lots.iter().map(|l| Lot {
                id: l.id.clone(),
                closes_at_us: l.closes_at_unix.saturating_mul(1_000_000),
            }),
        );
        auction.restore(&entries);
        for l in &cfg.lots {
            let config_us = l.closes_at_unix.saturating_mul(1_000_000);
            let now_us = auction.closes_at(&l.id).unwrap_or(config_us);
            if now_us != config_us {
                warn!(lot = %l.id, config_us, closes_at_us = now_us,
                    "auction: the lot's close set through /api/lots stands over the config's");
            }
        }
        info!(journal = %path.display(), host, lots = auction.lot_ids().count(),
            records = entries.len(), bids_held = auction.held(), "auction opened");
        metrics::gauge!("canopy_relay_auction_bids_held").set(auction.held() as f64);
        Ok(Some(Self {
            host: host.to_ascii_lowercase(),
            auction: Mutex::new(auction),
            journal: Journal::start(path.to_path_buf(), opened)?,
            archive: cfg.archive.clone(),
            retire_after_us: cfg.retire_after_days.saturating_mul(86_400_000_000),
            settings: tokio::sync::Mutex::new(()),
        }))
    }

    /// Folds the lots whose result is final now and every [`FOLD_EVERY`], while the
    /// auction is in use.
    pub(crate) fn keep_folding(sink: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(sink);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(FOLD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(sink) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = sink.fold_final().await {
                    warn!(error = %e, "auction: final lots not folded; their bids stay in the log");
                }
            }
        });
    }

    /// Archives the bids of every lot whose result became final, folds those lots, retires
    /// the folded lots made through the API that have been final for `[auction]
    /// retire_after_days`, then rewrites the journal with what the auction holds: how many
    /// lots were folded.
    pub(crate) async fn fold_final(&self) -> Result<usize, FoldError> {
        // no lot setting in between: a setting taken back must not reach the snapshot, and
        // no lot is made with the id of one about to retire
        let _one = self.settings.lock().await;
        let mut folding = self.auction().foldable(wall_us());
        let mut not_archived = None;
        if let Err(e) = self.archive(&folding).await {
            // nothing folds; lots folded before may still retire
            folding.clear();
            not_archived = Some(FoldError::Archive(e));
        }
        let from = self.journal.stats().len;
        let (folded, archived, retiring, rewrite) = {
            let mut a = self.auction();
            let now = wall_us();
            let mut folded = 0;
            let mut archived = 0;
            for f in &folding {
                // a lot whose bids changed since they were read stays as it is: the next
                // round archives it again
                match a.fold(f, now, FOLDED_KEEP) {
                    Ok(()) => {
                        folded += 1;
                        archived += f.bids.len();
                    }
                    Err(e) => {
                        warn!(lot = %f.standing.lot.id, reason = %e, "auction: lot not folded")
                    }
                }
            }
            // lots retire once a journal without them is on disk: until then they stay
            // (folded: no bid, no setting), and a failed rewrite finds them again next round
            let retiring = a.retirable(now, self.retire_after_us);
            // under the lock: the rewrite follows every record submitted before it
            let rewrite = (folded > 0 || !retiring.is_empty())
                .then(|| self.journal.submit_rewrite(a.snapshot_without(&retiring)));
            (folded, archived, retiring, rewrite)
        };
        if let Some(rewrite) = rewrite {
            rewrite.await.map_err(FoldError::Journal)?;
            let held = {
                let mut a = self.auction();
                a.retire(&retiring);
                a.held()
            };
            metrics::counter!("canopy_relay_auction_lots_folded_total").increment(folded as u64);
            metrics::counter!("canopy_relay_auction_lots_retired_total")
                .increment(retiring.len() as u64);
            metrics::gauge!("canopy_relay_auction_bids_held").set(held as f64);
            if folded > 0 {
                info!(lots = folded, bids = archived, archive = %self.archive.display(),
                    journal_from = from, journal_to = self.journal.stats().len, bids_held = held,
                    "auction: final lots archived and folded");
            }
            if let Some(first) = retiring.first() {
                info!(lots = retiring.len(), first = %first, archive = %self.archive.display(),
                    "auction: folded lots made through /api/lots retired (their bids are in the archive)");
            }
        }
        match not_archived {
            Some(e) => Err(e),
            None => Ok(folded),
        }
    }

    /// Appends the bids of `folding`'s lots to the archive, one line per lot, synced.
    async fn archive(&self, folding: &[Folding]) -> std::io::Result<()> {
        if folding.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for f in folding {
            let line = serde_json::json!({
                "lot": standing_json(&f.standing),
                "bids": f.bids.iter().map(bid_json).collect::<Vec<_>>(),
            });
            lines.extend_from_slice(format!("{line}\n").as_bytes());
        }
        let archive = self.archive.clone();
        tokio::task::spawn_blocking(move || append_synced(&archive, &lines))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Whether a request for `host` is for the auction.
    pub(crate) fn is_for(&self, host: &str) -> bool {
        self.host.eq_ignore_ascii_case(host)
    }

    fn auction(&self) -> std::sync::MutexGuard<'_, Auction> {
        self.auction.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes lot `lot` closing at `closes_at_us` (None: the hammer now, on a lot there
    /// is), or moves its close (`ledger::auction`'s rules), journaled before it answers:
    /// the change and the lot's standing.
    pub(crate) async fn set_lot(
        &self,
        lot: &str,
        closes_at_us: Option<u64>,
    ) -> Result<(LotChange, serde_json::Value), SetLotError> {
        let _one = self.settings.lock().await;
        let at_us = wall_us();
        let (set, change, pending) = {
            let mut a = self.auction();
            let closes_at_us = match closes_at_us {
                Some(c) => c,
                None => a.hammer_at(lot, at_us).ok_or(SetLotError::UnknownLot)?,
            };
            let set = LotSet {
                lot: lot.to_owned(),
                closes_at_us,
                at_us,
            };
            let change = a.set_lot(&set).map_err(SetLotError::Refused)?;
            let pending = (change != LotChange::Same)
                .then(|| self.journal.submit(&Entry::LotSet(set.clone())));
            (set, change, pending)
        };
        if let Some(p) = pending {
            if let Err(e) = p.await {
                warn!(error = %e, lot, "auction: lot setting not journaled");
                self.auction().unset_lot(&set, change);
                return Err(SetLotError::NotRecorded(e.to_string()));
            }
        }
        let closes_at_us = set.closes_at_us;
        match change {
            LotChange::Created => info!(lot, closes_at_us, "auction: lot made"),
            LotChange::Moved { from_us } => {
                info!(lot, from_us, closes_at_us, "auction: lot's close moved")
            }
            LotChange::Same => {}
        }
        Ok((change, self.lot_json(lot).unwrap_or_default()))
    }

    /// One lot's standing now.
    pub(crate) fn lot_json(&self, lot: &str) -> Option<serde_json::Value> {
        self.auction()
            .standing(lot, wall_us())
            .map(|s| standing_json(&s))
    }

    /// Every lot's standing now.
    pub(crate) fn lots_json(&self) -> serde_json::Value {
        let now = wall_us();
        let a = self.auction();
        let lots: Vec<serde_json::Value> = a
            .lot_ids()
            .filter_map(|id| a.standing(id, now))
            .map(|s| standing_json(&s))
            .collect();
        serde_json::json!({ "lots": lots })
    }

    /// Serves one request from `gateway`.
    pub(crate) async fn serve(
        &self,
        gateway: &str,
        intake: Intake<'_>,
        req: &Request<()>,
        stream: &mut Stream,
        publisher: Option<Publisher>,
    ) -> StatusCode {
        let path = req.uri().path().trim_end_matches('/');
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let (status, body) = match (req.method(), parts.as_slice()) {
            (&Method::POST, ["lots", lot, "bids"]) => {
                match self.bid(gateway, intake, lot, req, stream).await {
                    Ok(r) => r,
                    // not recorded: dropping the publisher lets a later copy try again
                    Err(r) => return answer(stream, None, r.0, r.1, false).await,
                }
            }
            (&Method::GET, ["lots"]) => (StatusCode::OK, self.lots_json()),
            (&Method::GET, ["lots", lot]) => {
                let a = self.auction();
                match a.standing(lot, wall_us()) {
                    Some(s) => {
                        let mut v = standing_json(&s);
                        v["history"] = a.history(lot, HISTORY).iter().map(bid_json).collect();
                        (StatusCode::OK, v)
                    }
                    None => (
                        StatusCode::NOT_FOUND,
                        serde_json::json!({ "error": format!("no lot {lot:?}") }),
                    ),
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": "the auction serves POST /lots/<lot>/bids, GET /lots, GET /lots/<lot>" }),
            ),
        };
        answer(
            stream,
            publisher,
            status,
            Bytes::from(format!("{body}\n")),
            false,
        )
        .await
    }

    /// Records a bid: its answer, or (Err) an answer that must not stand for its key.
    async fn bid(
        &self,
        gateway: &str,
        intake: Intake<'_>,
        lot: &str,
        req: &Request<()>,
        stream: &mut Stream,
    ) -> Result<(StatusCode, serde_json::Value), (StatusCode, Bytes)> {
        // (a key the journal could not read back would cut the journal there)
        let Some(key) = wire::idempotency_key(req.headers()).map(str::to_owned) else {
            return Ok((
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "a bid needs its Idempotency-Key, 1 to 255 visible characters (send it as class bid)" }),
            ));
        };
        let body = match read_capped(stream, MAX_BODY, intake).await {
            Capped::Body(b, _) => b,
            Capped::NoRoom => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(
                        b"{\"error\":\"the relay has no room for the bid's body now\"}\n",
                    ),
                ))
            }
            Capped::TooLarge => {
                return Ok((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    serde_json::json!({ "error": format!("a bid is at most {MAX_BODY} bytes") }),
                ))
            }
            Capped::Failed => {
                return Err((
                    StatusCode::BAD_REQUEST,
                    Bytes::from_static(b"{\"error\":\"the bid's body did not arrive\"}\n"),
                ))
            }
        };
        let parsed: Option<(String, u64)> = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let bidder = v["bidder"].as_str()?.to_owned();
                let amount = v["amount"].as_u64()?;
                (!bidder.is_empty() && bidder.len() <= 128).then_some((bidder, amount))
            });
        let Some((bidder, amount)) = parsed else {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({ "error": "a bid is {\"bidder\": \"1 to 128 characters\", \"amount\": a whole number > 0}" }),
            ));
        };
        let at_us = wall_us();
        let edge_us = req
            .headers()
            .get(wire::HDR_EDGE_TIME)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(at_us);
        let (placed, pending, standing, held) = {
            let mut a = self.auction();
            let placed = a.place(LotBid {
                lot: lot.to_owned(),
                scope: gateway.to_owned(),
                key,
                bidder,
                amount,
                edge_us,
                at_us,
            });
            let pending = match &placed {
                Ok(p) if !p.again => Some(self.journal.submit(&Entry::LotBid(p.bid.clone()))),
                _ => None,
            };
            (placed, pending, a.standing(lot, at_us), a.held())
        };
        if let Some(p) = pending {
            if let Err(e) = p.await {
                warn!(error = %e, "auction: bid not journaled");
                if let Ok(placed) = &placed {
                    self.auction().unplace(&placed.bid);
                }
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from(format!("{{\"error\":\"the bid was not recorded: {e}\"}}\n")),
                ));
            }
        }
        let outcome = match &placed {
            Ok(_) => "recorded",
            Err(e) => refusal_code(e),
        };
        metrics::counter!("canopy_relay_auction_bids_total", "result" => outcome).increment(1);
        metrics::gauge!("canopy_relay_auction_bids_held").set(held as f64);
        Ok(match placed {
            Ok(p) => {
                let mut v = serde_json::json!({
                    "accepted": true,
                    "again": p.again,
                    "leading": p.leading,
                    "bid": bid_json(&p.bid),
                });
                if let Some(s) = standing {
                    v["lot"] = standing_json(&s);
                }
                let status = if p.again {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                (status, v)
            }
            Err(e) => {
                let status = match e {
                    BidError::UnknownLot(_) => StatusCode::NOT_FOUND,
                    BidError::BadAmount => StatusCode::UNPROCESSABLE_ENTITY,
                    BidError::Closed { .. }
                    | BidError::TooLate { .. }
                    | BidError::Full
                    | BidError::Final
                    | BidError::BeforeLot { .. } => StatusCode::CONFLICT,
                    // room comes back as closed lots are folded
                    BidError::AuctionFull => StatusCode::SERVICE_UNAVAILABLE,
                };
                (
                    status,
                    serde_json::json!({ "accepted": false, "reason": refusal_code(&e), "detail": e.to_string() }),
                )
            }
        })
    }
}

/// Why a lot's setting did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetLotError {
    /// The auction's rules refuse it.
    #[error(transparent)]
    Refused(LotError),
    /// The journal did not take it (nothing changed).
    #[error("the setting was not recorded: {0}")]
    NotRecorded(String),
    /// The hammer on a lot there is not.
    #[error("no such lot")]
    UnknownLot,
}

fn refusal_code(e: &BidError) -> &'static str {
    match e {
        BidError::UnknownLot(_) => "unknown_lot",
        BidError::Closed { .. } => "closed",
        BidError::TooLate { .. } => "too_late",
        BidError::BadAmount => "bad_amount",
        BidError::Full => "full",
        BidError::AuctionFull => "auction_full",
        BidError::Final => "final",
        BidError::BeforeLot { .. } => "before_lot",
    }
}

fn bid_json(b: &LotBid) -> serde_json::Value {
    serde_json::json!({
        "bidder": b.bidder,
        "amount": b.amount,
        "edge_us": b.edge_us,
        "at_us": b.at_us,
        "gateway": b.scope,
        "key": b.key,
    })
}

fn standing_json(s: &Standing) -> serde_json::Value {
    serde_json::json!({
        "id": s.lot.id,
        "closes_at_us": s.lot.closes_at_us,
        "phase": match s.phase {
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        },
        "leader": s.leader.as_ref().map(bid_json),
        "bids": s.bids,
        "raises": s.raises,
        "folded": s.folded,
    })
}

/// Why final lots were not folded (nothing changed, or the journal kept its records).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FoldError {
    /// The archive did not take their bids: nothing was folded.
    #[error("the archive did not take the bids: {0}")]
    Archive(std::io::Error),
    /// The journal's rewrite failed: its records stay as they were.
    #[error("the journal was not rewritten: {0}")]
    Journal(ledger_io::JournalError),
}

/// Appends `bytes` to `path` (made if missing) and syncs it.
fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LotSection;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "canopy-auction-{tag}-{}-{}",
            std::process::id(),
            wall_us()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// `n` bids on `lot` in the second before `close_us`, journaled.
    async fn append_bids(j: &Journal, lot: &str, close_us: u64, n: u64) {
        for i in 0..n {
            let at = close_us - 1_000_000 + i;
            j.append(&Entry::LotBid(LotBid {
                lot: lot.into(),
                scope: "stall-1".into(),
                key: format!("k-{i}"),
                bidder: format!("paddle-{i}"),
                amount: 100 + i,
                edge_us: at,
                at_us: at,
            }))
            .await
            .expect("append");
        }
    }

    #[tokio::test]
    async fn a_final_lot_is_archived_before_it_is_folded() {
        let dir = temp_dir("fold");
        let close_s = wall_us() / 1_000_000 - 10;
        let journal = dir.join("auction.journal");
        // a lot that closed 10 s ago with 80 bids in the log
        {
            let j = Journal::start(journal.clone(), ledger_io::open(&journal).expect("open"))
                .expect("journal");
            append_bids(&j, "7", close_s * 1_000_000, 80).await;
        }
        let cfg = AuctionSection {
            host: Some("auction.test".into()),
            journal: journal.clone(),
            archive: dir.join("no such folder").join("archive.jsonl"),
            max_outage_s: 1,
            lots: vec![LotSection {
                id: "7".into(),
                closes_at_unix: close_s,
            }],
            ..AuctionSection::default()
        };
        let mut sink = AuctionSink::open(&cfg).expect("open").expect("on");
        let before = sink.lot_json("7").expect("lot 7");
        assert_eq!(before["bids"], 80);
        // the archive cannot take the bids: nothing is folded, the log keeps them
        assert!(matches!(
            sink.fold_final().await,
            Err(FoldError::Archive(_))
        ));
        assert_eq!(sink.auction().held(), 80);
        assert_eq!(sink.lot_json("7"), Some(before.clone()));
        sink.archive = dir.join("archive.jsonl");
        let len = std::fs::metadata(&journal).expect("journal").len();
        assert_eq!(sink.fold_final().await.expect("folded"), 1);
        assert_eq!(sink.fold_final().await.expect("nothing more"), 0);
        // what a folded lot keeps is not held against the open lots
        assert_eq!(sink.auction().held(), 0);
        let after = sink.lot_json("7").expect("lot 7");
        assert_eq!(after["folded"], true);
        for k in ["bids", "raises", "leader", "closes_at_us", "phase"] {
            assert_eq!(after[k], before[k], "{k}");
        }
        let archived = std::fs::read_to_string(&sink.archive).expect("archive");
        let line: serde_json::Value = serde_json::from_str(archived.trim()).expect("a line");
        assert_eq!(line["bids"].as_array().map(Vec::len), Some(80));
        assert!(std::fs::metadata(&journal).expect("journal").len() < len);
        drop(sink);
        // read back from the rewritten log
        let again = AuctionSink::open(&cfg).expect("open").expect("on");
        assert_eq!(again.lot_json("7"), Some(after));
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_lot_made_through_the_api_retires_after_it_is_folded() {
        let dir = temp_dir("retire");
        let close_us = (wall_us() / 1_000_000 - 10) * 1_000_000;
        let journal = dir.join("auction.journal");
        {
            let j = Journal::start(journal.clone(), ledger_io::open(&journal).expect("open"))
                .expect("journal");
            j.append(&Entry::LotSet(LotSet {
                lot: "12".into(),
                closes_at_us: close_us,
                at_us: close_us - 60_000_000,
            }))
            .await
            .expect("append");
            append_bids(&j, "12", close_us, 3).await;
        }
        let mut cfg = AuctionSection {
            host: Some("auction.test".into()),
            journal: journal.clone(),
            archive: dir.join("archive.jsonl"),
            max_outage_s: 1,
            ..AuctionSection::default()
        };
        // kept while its retirement is days away
        let sink = AuctionSink::open(&cfg).expect("open").expect("on");
        assert_eq!(sink.fold_final().await.expect("folded"), 1);
        assert_eq!(sink.lot_json("12").expect("lot 12")["folded"], true);
        drop(sink);
        cfg.retire_after_days = 0;
        let sink = AuctionSink::open(&cfg).expect("open").expect("on");
        assert_eq!(sink.fold_final().await.expect("nothing to fold"), 0);
        assert!(sink.lot_json("12").is_none(), "retired");
        let archived = std::fs::read_to_string(&cfg.archive).expect("archive");
        assert_eq!(archived.lines().count(), 1);
        drop(sink);
        // gone from the log too
        let again = AuctionSink::open(&cfg).expect("open").expect("on");
        assert!(again.lot_json("12").is_none());
        assert_eq!(again.auction().lot_ids().count(), 0);
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
