//! The relay's embedded auction, sans-IO: lots with close times, and every bid placed on
//! them, ordered by the time the venue received it (its edge time), not the time it
//! arrived. A bid counts when its edge time is before the lot's close, even when an outage
//! held it back past the close, as long as it arrives within the configured outage window;
//! standings are provisional until that window has passed.
//!
//! Standings walk a lot's bids in (edge time, key) order: a bid leads when its amount is
//! above every bid before it. So a bid that arrives late but was placed early takes its
//! place in the order, and may outbid bids that arrived before it.
//!
//! Lots come from the config, and are made or have their close moved while the auction
//! runs ([`Auction::set_lot`]): a close moves only while the lot is open, never to the past
//! and never before a bid already recorded (a bid taken stays taken).
//!
//! The shell journals each accepted bid (`Entry::LotBid`) and lot setting (`Entry::LotSet`)
//! before answering; a restart rebuilds the lots from the config and the journal (a lot
//! set through the API keeps its setting over the config's). Time comes in as µs since the
//! Unix epoch.
//!
//! Bounded: a lot takes at most [`AuctionConfig::max_bids_per_lot`] bids, and the lots
//! not folded hold at most [`AuctionConfig::max_bids`] together. A lot whose result is
//! final (closed, and its outage window passed) is folded ([`Auction::fold`]): its tally is
//! kept (`Entry::LotFinal`) with its leader and latest bids, the rest leave memory and,
//! with the next [`Auction::snapshot`], the journal (the shell archives them first). A
//! folded lot takes no bid and no setting. A folded lot made through the API is retired
//! once its result has been final for a while ([`Auction::retire`]): it leaves the auction
//! altogether, so lots made sale after sale never fill [`MAX_LOTS`]. Lots the config names
//! stay (a restart would make them again, empty).

use crate::record::{Entry, LotBid, LotFinal, LotSet};
use std::collections::{BTreeMap, HashMap};

/// A lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// Its id.
    pub id: String,
    /// When bidding closes, µs since the Unix epoch (relay clock).
    pub closes_at_us: u64,
}

/// Auction settings.
#[derive(Debug, Clone, Copy)]
pub struct AuctionConfig {
    /// A bid placed before a close may arrive this long after it (an outage), µs.
    pub max_outage_us: u64,
    /// An edge time this far ahead of the arrival is a gateway clock that runs ahead: the
    /// arrival time is used instead, µs.
    pub max_skew_us: u64,
    /// Bids kept per lot at most.
    pub max_bids_per_lot: usize,
    /// Bids held at once by the lots not folded, together.
    pub max_bids: usize,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        Self {
            max_outage_us: 300_000_000,
            max_skew_us: 2_000_000,
            max_bids_per_lot: 100_000,
            max_bids: 200_000,
        }
    }
}

/// Why a bid is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BidError {
    /// No such lot.
    #[error("no lot {0:?}")]
    UnknownLot(String),
    /// Placed at or after the lot's close.
    #[error("lot closed at {closes_at_us} µs; the bid was placed at {edge_us} µs")]
    Closed {
        /// The close.
        closes_at_us: u64,
        /// When the bid was placed.
        edge_us: u64,
    },
    /// Placed before the close, but arrived after the outage window.
    #[error("placed before the close but arrived {late_us} µs after it, beyond the outage window")]
    TooLate {
        /// How long after the close it arrived.
        late_us: u64,
    },
    /// The amount is not a positive whole number of minor units.
    #[error("the amount must be a positive whole number")]
    BadAmount,
    /// The lot holds its most bids.
    #[error("the lot holds its most bids")]
    Full,
    /// The open lots hold the auction's most bids (until closed lots are folded).
    #[error("the auction holds its most bids until closed lots are folded")]
    AuctionFull,
    /// The lot's result is final and its bids were folded.
    #[error("the lot's result is final")]
    Final,
    /// Placed before the lot was made through the API: a bid for an earlier lot of that
    /// id (retired since), held back by an outage.
    #[error("placed at {edge_us} µs, before the lot was made at {made_at_us} µs")]
    BeforeLot {
        /// When the lot was made.
        made_at_us: u64,
        /// When the bid was placed.
        edge_us: u64,
    },
}

/// Lots an auction holds at most.
pub const MAX_LOTS: usize = 10_000;
/// Longest lot id set through the API, bytes.
pub const MAX_LOT_ID: usize = 64;

/// Why a lot's setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LotError {
    /// Not 1 to [`MAX_LOT_ID`] letters, digits, `-`, `_` or `.`.
    #[error("a lot id is 1 to {MAX_LOT_ID} letters, digits, '-', '_' or '.'")]
    BadId,
    /// The close is before the time of the setting.
    #[error("the close ({closes_at_us} µs) is before now ({now_us} µs)")]
    InThePast {
        /// The close asked.
        closes_at_us: u64,
        /// Now.
        now_us: u64,
    },
    /// The lot has closed: its result stands.
    #[error("the lot closed at {closes_at_us} µs: its result stands")]
    Closed {
        /// Its close.
        closes_at_us: u64,
    },
    /// A bid already recorded was placed at or after the close asked.
    #[error("a bid on the lot was placed at {edge_us} µs, at or after the close asked")]
    BidAfter {
        /// The latest bid's edge time.
        edge_us: u64,
    },
    /// The auction holds [`MAX_LOTS`].
    #[error("the auction holds its most lots ({MAX_LOTS})")]
    TooMany,
}

/// What a lot's setting changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotChange {
    /// A new lot.
    Created,
    /// The lot's close moved from this.
    Moved {
        /// The close before, µs.
        from_us: u64,
    },
    /// Nothing: the lot closes then already.
    Same,
}

/// Where a lot stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Bids are taken.
    Open,
    /// Closed, but bids placed before the close may still arrive.
    Closing,
    /// Final.
    Closed,
}

/// A lot's standings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The lot.
    pub lot: Lot,
    /// Open, closing or closed at the time asked.
    pub phase: Phase,
    /// The leading bid.
    pub leader: Option<LotBid>,
    /// Bids recorded.
    pub bids: u64,
    /// Bids that led when they were placed (in edge-time order).
    pub raises: u64,
    /// Its bids were folded: only its leader and latest are kept.
    pub folded: bool,
}

/// A final lot about to be folded: everything it took, for the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folding {
    /// Its standing.
    pub standing: Standing,
    /// Every bid it took, in edge-time order.
    pub bids: Vec<LotBid>,
}

/// What became of a placed bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The bid as recorded (its edge time as used).
    pub bid: LotBid,
    /// It was recorded before (a retry): nothing new to journal.
    pub again: bool,
    /// It leads the lot now.
    pub leading: bool,
}

#[derive(Debug)]
struct LotState {
    lot: Lot,
    /// Bids by (edge time, scope, key).
    bids: BTreeMap<(u64, String, String), LotBid>,
    /// (scope, key) → edge time.
    keys: HashMap<(String, String), u64>,
    /// When its close was last set through the API (a snapshot keeps the setting).
    set_at_us: Option<u64>,
    /// When it was made through the API (none: the config names it).
    made_at_us: Option<u64>,
    /// Its tally once folded: (bids, raises) of everything it took.
    tally: Option<(u64, u64)>,
}

impl LotState {
    fn new(lot: Lot) -> Self {
        Self {
            lot,
            bids: BTreeMap::new(),
            keys: HashMap::new(),
            set_at_us: None,
            made_at_us: None,
            tally: None,
        }
    }
}

/// The auction.
#[derive(Debug)]
pub struct Auction {
    cfg: AuctionConfig,
    lots: BTreeMap<String, LotState>,
    /// Bids held by the lots not folded, together.
    held: usize,
    /// Journaled records of lots the auction no longer has (gone from the config): kept
    /// as they were, so that a snapshot loses nothing.
    orphans: Vec<Entry>,
    /// The lots the config names.
    configured: std::collections::HashSet<String>,
}

/// Why a lot was not folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// No such lot.
    #[error("no such lot")]
    UnknownLot,
    /// Its result is not final (or it was folded already).
    #[error("the lot's result is not final")]
    NotFinal,
    /// Its bids changed since they were archived.
    #[error("the lot's bids changed since they were archived")]
    Changed,
}

impl Auction {
    /// An auction of `lots`.
    pub fn new(cfg: AuctionConfig, lots: impl IntoIterator<Item = Lot>) -> Self {
        let lots: BTreeMap<String, LotState> = lots
            .into_iter()
            .map(|lot| (lot.id.clone(), LotState::new(lot)))
            .collect();
        Self {
            cfg,
            configured: lots.keys().cloned().collect(),
            lots,
            held: 0,
            orphans: Vec::new(),
        }
    }

    /// Places a bid (`bid.at_us`: its arrival); the record to journal when new.
    pub fn place(&mut self, mut bid: LotBid) -> Result<Placed, BidError> {
        let cfg = self.cfg;
        let state = self
            .lots
            .get_mut(&bid.lot)
            .ok_or_else(|| BidError::UnknownLot(bid.lot.clone()))?;
        let id = (bid.scope.clone(), bid.key.clone());
        if let Some(edge) = state.keys.get(&id) {
            let prev = state.bids[&(*edge, id.0.clone(), id.1.clone())].clone();
            let leading = leader(state).is_some_and(|l| l.key == prev.key && l.scope == prev.scope);
            return Ok(Placed {
                bid: prev,
                again: true,
                leading,
            });
        }
        if state.tally.is_some() {
            return Err(BidError::Final);
        }
        if bid.amount == 0 {
            return Err(BidError::BadAmount);
        }
        if bid.edge_us > bid.at_us.saturating_add(cfg.max_skew_us) {
            bid.edge_us = bid.at_us;
        }
        if let Some(made_at_us) = state
            .made_at_us
            .filter(|m| bid.edge_us.saturating_add(cfg.max_skew_us) < *m)
        {
            return Err(BidError::BeforeLot {
                made_at_us,
                edge_us: bid.edge_us,
            });
        }
        let close = state.lot.closes_at_us;
        if bid.edge_us >= close {
            return Err(BidError::Closed {
                closes_at_us: close,
                edge_us: bid.edge_us,
            });
        }
        let late = bid.at_us.saturating_sub(close);
        if late > cfg.max_outage_us {
            return Err(BidError::TooLate { late_us: late });
        }
        if state.bids.len() >= cfg.max_bids_per_lot {
            return Err(BidError::Full);
        }
        if self.held >= cfg.max_bids {
            return Err(BidError::AuctionFull);
        }
        insert(state, bid.clone());
        self.held += 1;
        let leading = leader(state).is_some_and(|l| l.key == bid.key && l.scope == bid.scope);
        Ok(Placed {
            bid,
            again: false,
            leading,
        })
    }

    /// Makes lot `set.lot` closing at `set.closes_at_us`, or moves its close, at
    /// `set.at_us` (see the module docs); the record to journal unless [`LotChange::Same`].
    pub fn set_lot(&mut self, set: &LotSet) -> Result<LotChange, LotError> {
        let id_ok = (1..=MAX_LOT_ID).contains(&set.lot.len())
            && set
                .lot
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return Err(LotError::BadId);
        }
        let in_the_past = || LotError::InThePast {
            closes_at_us: set.closes_at_us,
            now_us: set.at_us,
        };
        let Some(state) = self.lots.get_mut(&set.lot) else {
            if set.closes_at_us < set.at_us {
                return Err(in_the_past());
            }
            if self.lots.len() >= MAX_LOTS {
                return Err(LotError::TooMany);
            }
            self.apply(set);
            return Ok(LotChange::Created);
        };
        let from_us = state.lot.closes_at_us;
        // a setting sent again (a retry) is answered as it was
        if from_us == set.closes_at_us {
            return Ok(LotChange::Same);
        }
        if set.at_us >= from_us || state.tally.is_some() {
            return Err(LotError::Closed {
                closes_at_us: from_us,
            });
        }
        if set.closes_at_us < set.at_us {
            return Err(in_the_past());
        }
        if let Some(edge_us) = latest_edge(state).filter(|e| *e >= set.closes_at_us) {
            return Err(LotError::BidAfter { edge_us });
        }
        state.lot.closes_at_us = set.closes_at_us;
        state.set_at_us = Some(set.at_us);
        Ok(LotChange::Moved { from_us })
    }

    /// The close of "the hammer now" on `lot` at `now_us`: now, or just after the latest
    /// bid taken when its edge time is ahead (a venue clock up to
    /// [`AuctionConfig::max_skew_us`] fast), so that no bid taken is undone. None: no such
    /// lot.
    pub fn hammer_at(&self, lot: &str, now_us: u64) -> Option<u64> {
        let latest = latest_edge(self.lots.get(lot)?);
        Some(latest.map_or(now_us, |e| now_us.max(e.saturating_add(1))))
    }

    /// When lot `lot` closes, µs.
    pub fn closes_at(&self, lot: &str) -> Option<u64> {
        self.lots.get(lot).map(|s| s.lot.closes_at_us)
    }

    /// Takes back a setting whose record did not reach the disk, unless something changed
    /// the lot since: a lot made is removed (unless a bid came meanwhile), a moved close
    /// goes back.
    pub fn unset_lot(&mut self, set: &LotSet, change: LotChange) {
        match change {
            LotChange::Created => {
                let untouched = self
                    .lots
                    .get(&set.lot)
                    .is_some_and(|s| s.bids.is_empty() && s.lot.closes_at_us == set.closes_at_us);
                if untouched {
                    self.lots.remove(&set.lot);
                }
            }
            LotChange::Moved { from_us } => {
                if let Some(s) = self
                    .lots
                    .get_mut(&set.lot)
                    .filter(|s| s.lot.closes_at_us == set.closes_at_us)
                {
                    s.lot.closes_at_us = from_us;
                }
            }
            LotChange::Same => {}
        }
    }

    /// A journaled setting, taken as it was. A folded lot takes no setting, so a setting
    /// of a folded lot's id read back from a journal makes a new lot of that id (the old
    /// one was retired).
    fn apply(&mut self, set: &LotSet) {
        let made = || {
            let mut s = LotState::new(Lot {
                id: set.lot.clone(),
                closes_at_us: set.closes_at_us,
            });
            s.made_at_us = Some(set.at_us);
            s
        };
        let state = self.lots.entry(set.lot.clone()).or_insert_with(made);
        if state.tally.is_some() {
            *state = made();
        }
        state.lot.closes_at_us = set.closes_at_us;
        state.set_at_us = Some(set.at_us);
    }

    /// Takes back a bid whose record did not reach the disk (its device was refused).
    pub fn unplace(&mut self, b: &LotBid) {
        if let Some(state) = self.lots.get_mut(&b.lot) {
            let id = (b.scope.clone(), b.key.clone());
            if state.tally.is_none() && state.keys.get(&id) == Some(&b.edge_us) {
                state.keys.remove(&id);
                state.bids.remove(&(b.edge_us, id.0, id.1));
                self.held -= 1;
            }
        }
    }

    /// Rebuilds the lots' settings and bids from a journal's records, in order (they were
    /// accepted when made).
    pub fn restore(&mut self, entries: &[Entry]) {
        for e in entries {
            match e {
                Entry::LotBid(b) => match self.lots.get_mut(&b.lot) {
                    Some(state) => {
                        if !state.keys.contains_key(&(b.scope.clone(), b.key.clone())) {
                            insert(state, b.clone());
                            if state.tally.is_none() {
                                self.held += 1;
                            }
                        }
                    }
                    None => self.orphans.push(e.clone()),
                },
                Entry::LotSet(set) => self.apply(set),
                Entry::LotFinal(f) => match self.lots.get_mut(&f.lot) {
                    Some(state) => {
                        if state.tally.is_none() {
                            self.held -= state.bids.len();
                        }
                        state.tally = Some((f.bids, f.raises));
                    }
                    None => self.orphans.push(e.clone()),
                },
                _ => {}
            }
        }
    }

    /// The lots whose result is final at `now_us`, not folded yet: each with everything it
    /// took, to archive before [`Auction::fold`].
    pub fn foldable(&self, now_us: u64) -> Vec<Folding> {
        self.lots
            .values()
            .filter(|s| s.tally.is_none() && self.phase(s, now_us) == Phase::Closed)
            .filter_map(|s| {
                Some(Folding {
                    standing: self.standing(&s.lot.id, now_us)?,
                    bids: s.bids.values().cloned().collect(),
                })
            })
            .collect()
    }

    /// Folds the lot of `archived` (from [`Auction::foldable`]) if its result is final at
    /// `now_us` and its bids are still the ones archived: its tally stays, with its leader
    /// and its latest `keep` bids; the others leave.
    pub fn fold(&mut self, archived: &Folding, now_us: u64, keep: usize) -> Result<(), FoldError> {
        let lot = archived.standing.lot.id.as_str();
        let state = self.lots.get(lot).ok_or(FoldError::UnknownLot)?;
        if self.phase(state, now_us) != Phase::Closed || state.tally.is_some() {
            return Err(FoldError::NotFinal);
        }
        let state = self.lots.get_mut(lot).ok_or(FoldError::UnknownLot)?;
        if !state.bids.values().eq(archived.bids.iter()) {
            return Err(FoldError::Changed);
        }
        let (bids, raises) = tally(state);
        let leader = leader(state).map(|l| (l.edge_us, l.scope.clone(), l.key.clone()));
        let skip = state.bids.len().saturating_sub(keep);
        let all = std::mem::take(&mut state.bids);
        state.keys.clear();
        for (i, (k, b)) in all.into_iter().enumerate() {
            if i >= skip || leader.as_ref() == Some(&k) {
                insert(state, b);
            }
        }
        self.held -= bids as usize;
        state.tally = Some((bids, raises));
        Ok(())
    }

    /// The folded lots made through the API whose result has been final for `after_us` at
    /// `now_us`: to leave the auction ([`Auction::retire`]) once a journal without them
    /// ([`Auction::snapshot_without`]) is on disk. Lots the config names stay (a restart
    /// would make them again, empty).
    pub fn retirable(&self, now_us: u64, after_us: u64) -> Vec<String> {
        // final `after_us` ago
        let then = now_us.saturating_sub(after_us);
        self.lots
            .values()
            .filter(|s| {
                s.tally.is_some()
                    && !self.configured.contains(&s.lot.id)
                    && self.phase(s, then) == Phase::Closed
            })
            .map(|s| s.lot.id.clone())
            .collect()
    }

    /// Removes the folded lots `ids` (from [`Auction::retirable`]; their bids are in the
    /// archive): their ids are unknown again, and free for new lots.
    pub fn retire(&mut self, ids: &[String]) {
        for id in ids {
            if self.lots.get(id).is_some_and(|s| s.tally.is_some()) {
                self.lots.remove(id);
            }
        }
    }

    /// What a compacted journal holds: the records of lots no longer known, then each
    /// lot's setting made through the API, its tally when folded, and the bids it holds.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.snapshot_without(&[])
    }

    /// [`Auction::snapshot`] without the lots `ids` (about to be retired).
    pub fn snapshot_without(&self, ids: &[String]) -> Vec<Entry> {
        // the records of lots no longer known first: a lot made later with the same id
        // must not take them on a restart
        let mut out = self.orphans.clone();
        let without: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        for s in self
            .lots
            .values()
            .filter(|s| !without.contains(s.lot.id.as_str()))
        {
            // when it was made, then its latest setting: bids placed before it was made
            // stay refused after a restart
            if let Some(made) = s.made_at_us.filter(|m| s.set_at_us != Some(*m)) {
                out.push(Entry::LotSet(LotSet {
                    lot: s.lot.id.clone(),
                    closes_at_us: s.lot.closes_at_us,
                    at_us: made,
                }));
            }
            if let Some(at_us) = s.set_at_us {
                out.push(Entry::LotSet(LotSet {
                    lot: s.lot.id.clone(),
                    closes_at_us: s.lot.closes_at_us,
                    at_us,
                }));
            }
            if let Some((bids, raises)) = s.tally {
                out.push(Entry::LotFinal(LotFinal {
                    lot: s.lot.id.clone(),
                    bids,
                    raises,
                }));
            }
            out.extend(s.bids.values().cloned().map(Entry::LotBid));
        }
        out
    }

    /// Where lot `state` stands at `now_us` (from its close alone).
    fn phase(&self, state: &LotState, now_us: u64) -> Phase {
        let close = state.lot.closes_at_us;
        if now_us < close {
            Phase::Open
        } else if now_us <= close.saturating_add(self.cfg.max_outage_us) {
            Phase::Closing
        } else {
            Phase::Closed
        }
    }

    /// Bids held by the lots not folded, together.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A lot's standings at `now_us`.
    pub fn standing(&self, lot: &str, now_us: u64) -> Option<Standing> {
        let state = self.lots.get(lot)?;
        let phase = self.phase(state, now_us);
        let (bids, raises) = state.tally.unwrap_or_else(|| tally(state));
        Some(Standing {
            lot: state.lot.clone(),
            phase,
            leader: leader(state).cloned(),
            bids,
            raises,
            folded: state.tally.is_some(),
        })
    }

    /// A lot's bids in edge-time order (the last `n`).
    pub fn history(&self, lot: &str, n: usize) -> Vec<LotBid> {
        self.lots.get(lot).map_or_else(Vec::new, |s| {
            let skip = s.bids.len().saturating_sub(n);
            s.bids.values().skip(skip).cloned().collect()
        })
    }

    /// The lots' ids.
    pub fn lot_ids(&self) -> impl Iterator<Item = &str> {
        self.lots.keys().map(String::as_str)
    }
}

/// The edge time of a lot's latest bid.
fn latest_edge(state: &LotState) -> Option<u64> {
    state.bids.last_key_value().map(|((edge, _, _), _)| *edge)
}

fn insert(state: &mut LotState, b: LotBid) {
    state
        .keys
        .insert((b.scope.clone(), b.key.clone()), b.edge_us);
    state
        .bids
        .insert((b.edge_us, b.scope.clone(), b.key.clone()), b);
}

/// (bids, raises) of the bids a lot holds: a raise is a bid above every bid before it.
fn tally(state: &LotState) -> (u64, u64) {
    let mut raises = 0;
    let mut high = 0;
    for b in state.bids.values() {
        if b.amount > high {
            high = b.amount;
            raises += 1;
        }
    }
    (state.bids.len() as u64, raises)
}

/// The first bid with the highest amount, in edge-time order.
fn leader(state: &LotState) -> Option<&LotBid> {
    let mut best: Option<&LotBid> = None;
    for b in state.bids.values() {
        if best.is_none_or(|l| b.amount > l.amount) {
            best = Some(b);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSE: u64 = 1_000_000_000;

    fn auction() -> Auction {
        Auction::new(
            AuctionConfig {
                max_outage_us: 60_000_000,
                ..AuctionConfig::default()
            },
            [Lot {
                id: "7".into(),
                closes_at_us: CLOSE,
            }],
        )
    }

    fn bid(key: &str, amount: u64, edge_us: u64, at_us: u64) -> LotBid {
        LotBid {
            lot: "7".into(),
            scope: "stall-1".into(),
            key: key.into(),
            bidder: format!("bidder-{key}"),
            amount,
            edge_us,
            at_us,
        }
    }

    fn set(lot: &str, closes_at_us: u64, at_us: u64) -> LotSet {
        LotSet {
            lot: lot.into(),
            closes_at_us,
            at_us,
        }
    }

    #[test]
    fn a_lot_made_while_running_takes_bids_and_survives_a_restart() {
        let mut a = auction();
        let t = CLOSE - 30_000_000;
        let made = set("9", CLOSE + 60_000_000, t);
        assert_eq!(a.set_lot(&made), Ok(LotChange::Created));
        let mut b = bid("a", 100, t + 1, t + 1);
        b.lot = "9".into();
        assert!(a.place(b.clone()).unwrap().leading);
        // the journal, replayed over the config's lots
        let mut again = auction();
        again.restore(&[Entry::LotSet(made), Entry::LotBid(b)]);
        let s = again.standing("9", t + 2).expect("lot 9");
        assert_eq!(s.lot.closes_at_us, CLOSE + 60_000_000);
        assert_eq!(s.bids, 1);
    }

    #[test]
    fn a_close_moves_while_open_never_to_the_past_nor_before_a_bid() {
        let mut a = auction();
        let t = CLOSE - 30_000_000;
        a.place(bid("a", 100, t, t)).unwrap();
        // extended: a bid placed after the old close now counts
        assert_eq!(
            a.set_lot(&set("7", CLOSE + 10_000_000, t + 1)),
            Ok(LotChange::Moved { from_us: CLOSE })
        );
        assert!(a.place(bid("b", 150, CLOSE + 5, CLOSE + 5)).is_ok());
        assert_eq!(
            a.set_lot(&set("7", CLOSE + 10_000_000, t + 2)),
            Ok(LotChange::Same)
        );
        // not before a bid taken, not to the past
        assert_eq!(
            a.set_lot(&set("7", CLOSE, CLOSE + 6)),
            Err(LotError::InThePast {
                closes_at_us: CLOSE,
                now_us: CLOSE + 6
            })
        );
        assert_eq!(
            a.set_lot(&set("7", CLOSE + 5, CLOSE + 4)),
            Err(LotError::BidAfter { edge_us: CLOSE + 5 })
        );
        // a retry of a setting is answered as it was, even once its close has passed
        assert_eq!(
            a.set_lot(&set("7", CLOSE + 10_000_000, CLOSE + 20_000_000)),
            Ok(LotChange::Same)
        );
        // the hammer: now, unless a bid taken is ahead of it (a fast venue clock)
        assert_eq!(a.hammer_at("7", CLOSE + 3), Some(CLOSE + 6));
        assert_eq!(a.hammer_at("8", CLOSE + 3), None);
        let now = CLOSE + 7;
        assert_eq!(a.hammer_at("7", now), Some(now));
        assert!(a.set_lot(&set("7", now, now)).is_ok());
        assert!(matches!(
            a.place(bid("c", 200, now, now)),
            Err(BidError::Closed { .. })
        ));
        // once closed, its result stands
        assert_eq!(
            a.set_lot(&set("7", now + 60_000_000, now + 1)),
            Err(LotError::Closed { closes_at_us: now })
        );
        // a setting the journal did not take goes back
        let mut fresh = auction();
        let moved = set("7", CLOSE + 1, t);
        let change = fresh.set_lot(&moved).unwrap();
        fresh.unset_lot(&moved, change);
        assert_eq!(fresh.standing("7", t).unwrap().lot.closes_at_us, CLOSE);
    }

    #[test]
    fn a_lot_id_is_short_and_plain() {
        let mut a = auction();
        for bad in ["", "a/b", "lot 9", &"x".repeat(MAX_LOT_ID + 1)] {
            assert_eq!(
                a.set_lot(&set(bad, CLOSE, 0)),
                Err(LotError::BadId),
                "{bad:?}"
            );
        }
        assert!(a.set_lot(&set("spring-2027.lot_12", CLOSE, 0)).is_ok());
    }

    #[test]
    fn bids_count_by_edge_time_through_an_outage() {
        let mut a = auction();
        let t = CLOSE - 30_000_000;
        assert!(a.place(bid("a", 100, t, t)).unwrap().leading);
        assert!(a.place(bid("b", 150, t + 5, t + 5)).unwrap().leading);
        // placed before b during an outage, arrives after the close: counts, in its place
        let late = a.place(bid("c", 200, t + 1, CLOSE + 20_000_000)).unwrap();
        assert!(late.leading);
        // placed after the close: refused, however it arrives
        assert_eq!(
            a.place(bid("d", 900, CLOSE, CLOSE + 1)),
            Err(BidError::Closed {
                closes_at_us: CLOSE,
                edge_us: CLOSE
            })
        );
        // placed before the close but held back beyond the outage window
        assert_eq!(
            a.place(bid("e", 900, t + 2, CLOSE + 61_000_000)),
            Err(BidError::TooLate {
                late_us: 61_000_000
            })
        );
        let s = a.standing("7", CLOSE + 1).unwrap();
        assert_eq!(s.phase, Phase::Closing);
        assert_eq!(s.leader.unwrap().key, "c");
        // in edge-time order: a 100, c 200, b 150 (b never led once c took its place)
        assert_eq!((s.bids, s.raises), (3, 2));
        // c (edge t+1) came before b (edge t+5): history is in edge-time order
        let keys: Vec<String> = a.history("7", 10).into_iter().map(|b| b.key).collect();
        assert_eq!(keys, ["a", "c", "b"]);
        assert_eq!(
            a.standing("7", CLOSE + 60_000_001).unwrap().phase,
            Phase::Closed
        );
    }

    #[test]
    fn a_retry_is_the_same_bid_and_ties_go_to_the_earlier() {
        let mut a = auction();
        a.place(bid("a", 100, 10, 10)).unwrap();
        let again = a.place(bid("a", 100, 99, 99)).unwrap();
        assert!(again.again);
        assert_eq!(again.bid.edge_us, 10);
        // an equal amount later does not lead
        assert!(!a.place(bid("b", 100, 20, 20)).unwrap().leading);
        // a clock far ahead is replaced by the arrival time
        let ahead = a.place(bid("f", 50, 90_000_000, 30)).unwrap();
        assert_eq!(ahead.bid.edge_us, 30);
        assert_eq!(a.place(bid("z", 0, 40, 40)), Err(BidError::BadAmount));
        assert!(matches!(
            a.place(LotBid {
                lot: "nope".into(),
                ..bid("y", 5, 1, 1)
            }),
            Err(BidError::UnknownLot(_))
        ));
        // a restart rebuilds the same standings
        let entries: Vec<Entry> = a.history("7", 100).into_iter().map(Entry::LotBid).collect();
        let mut b = auction();
        b.restore(&entries);
        assert_eq!(b.standing("7", 50), a.standing("7", 50));
        // a bid whose record failed is taken back: its retry is new again
        let p = a.place(bid("g", 500, 45, 45)).unwrap();
        a.unplace(&p.bid);
        assert!(!a.place(bid("g", 500, 46, 46)).unwrap().again);
    }

    #[test]
    fn a_final_lot_folds_to_its_tally_leader_and_latest_and_a_snapshot_keeps_it() {
        let cfg = AuctionConfig {
            max_outage_us: 60_000_000,
            max_bids: 30,
            ..AuctionConfig::default()
        };
        let lots = || {
            [
                Lot {
                    id: "7".into(),
                    closes_at_us: CLOSE,
                },
                Lot {
                    id: "8".into(),
                    closes_at_us: CLOSE * 2,
                },
            ]
        };
        let mut a = Auction::new(cfg, lots());
        let t = CLOSE - 30_000_000;
        // the leader early (900), then 19 lower bids
        a.place(bid("lead", 900, t, t)).unwrap();
        for i in 0..19u64 {
            a.place(bid(&format!("b{i}"), 100 + i, t + 1 + i, t + 1 + i))
                .unwrap();
        }
        let mut other = bid("o1", 5, t, t);
        other.lot = "8".into();
        a.place(other).unwrap();
        // a lot made through the API, and a journaled lot the config no longer has
        assert!(a.set_lot(&set("9", CLOSE * 3, t)).is_ok());
        let mut gone = bid("g1", 5, t, t);
        gone.lot = "gone".into();
        a.restore(&[Entry::LotBid(gone.clone())]);
        assert_eq!(a.held(), 21);
        // full: the auction's bound, then room again once the lot folds
        for i in 0..9u64 {
            let mut b = bid(&format!("f{i}"), 1, t, t);
            b.lot = "8".into();
            a.place(b).unwrap();
        }
        let mut one_more = bid("f9", 1, t, t);
        one_more.lot = "8".into();
        assert_eq!(a.place(one_more.clone()), Err(BidError::AuctionFull));
        // open, then in its outage window: not final, nothing to fold
        let closing = CLOSE + 1;
        assert!(a.foldable(t + 100).is_empty());
        assert!(a.foldable(closing).is_empty());
        let after = CLOSE + 60_000_001;
        let before = a.standing("7", after).unwrap();
        let f = a.foldable(after);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].bids.len(), 20);
        assert_eq!(f[0].standing, before);
        assert_eq!(a.fold(&f[0], closing, 5), Err(FoldError::NotFinal));
        // a bid that came in after the archive was read: not folded (archived again later)
        let mut changed = Auction::new(cfg, lots());
        changed.restore(&a.snapshot());
        changed.restore(&[Entry::LotBid(bid("late", 1, t + 50, CLOSE + 5))]);
        assert_eq!(changed.fold(&f[0], after, 5), Err(FoldError::Changed));
        assert_eq!(a.fold(&f[0], after, 5), Ok(()));
        assert_eq!(a.fold(&f[0], after, 5), Err(FoldError::NotFinal), "once");
        assert!(a.foldable(after).is_empty());
        // a folded lot takes no bid and no setting, whatever the clock says
        assert_eq!(
            a.place(bid("new", 5_000, t + 2, t + 2)),
            Err(BidError::Final)
        );
        assert!(a.set_lot(&set("7", CLOSE * 5, t + 3)).is_err());
        let s = a.standing("7", after).unwrap();
        assert!(s.folded);
        assert_eq!((s.bids, s.raises, &s.leader), (20, 1, &before.leader));
        // the leader and the latest five
        let keys: Vec<String> = a.history("7", 100).into_iter().map(|b| b.key).collect();
        assert_eq!(keys, ["lead", "b14", "b15", "b16", "b17", "b18"]);
        // what a folded lot keeps is not held against the open lots
        assert_eq!(a.held(), 30 - 20);
        assert!(a.place(one_more).is_ok());
        // a retry of a kept bid is still the same bid
        assert!(a.place(bid("b18", 118, t + 19, after)).unwrap().again);
        // the snapshot restores the same auction
        let snap = a.snapshot();
        assert!(snap.contains(&Entry::LotBid(gone)));
        assert_eq!(
            snap.iter()
                .filter(|e| matches!(e, Entry::LotSet(_)))
                .count(),
            1,
            "only the lot set through the API"
        );
        let mut b = Auction::new(cfg, lots());
        b.restore(&snap);
        for lot in ["7", "8", "9"] {
            assert_eq!(b.standing(lot, after), a.standing(lot, after), "{lot}");
            assert_eq!(b.history(lot, 100), a.history(lot, 100), "{lot}");
        }
        assert_eq!(b.held(), a.held());
        assert_eq!(b.snapshot(), snap);
    }

    #[test]
    fn a_folded_lot_made_through_the_api_retires_and_its_id_is_free_again() {
        let day = 86_400_000_000;
        let mut a = auction();
        let t = CLOSE - 30_000_000;
        assert!(a.set_lot(&set("9", CLOSE, t)).is_ok());
        for lot in ["7", "9"] {
            let mut b = bid("a", 100, t + 1, t + 1);
            b.lot = lot.into();
            a.place(b).unwrap();
        }
        let after = CLOSE + 60_000_001;
        // not folded yet: nothing retires, however late
        assert!(a.retirable(after + 10 * day, day).is_empty());
        let old = a.snapshot();
        for f in a.foldable(after) {
            a.fold(&f, after, 10).unwrap();
        }
        // folded, but final for less than a day
        assert!(a.retirable(after + day - 2, day).is_empty());
        // the lot the config names stays; the one made through the API goes
        let ids = a.retirable(after + day, day);
        assert_eq!(ids, ["9"]);
        let snap = a.snapshot_without(&ids);
        a.retire(&ids);
        assert_eq!(snap, a.snapshot());
        assert!(a.standing("9", after + day).is_none());
        assert!(a.standing("7", after + day).unwrap().folded);
        assert!(snap
            .iter()
            .all(|e| !matches!(e, Entry::LotSet(s) if s.lot == "9")));
        assert!(snap
            .iter()
            .all(|e| !matches!(e, Entry::LotBid(b) if b.lot == "9")));
        let mut b = auction();
        b.restore(&snap);
        assert!(b.standing("9", after + day).is_none());
        // its id makes a new lot, made an hour after the old one retired
        let now = after + day + 3_600_000_000;
        let made = set("9", now + 600_000_000, now);
        assert_eq!(a.set_lot(&made), Ok(LotChange::Created));
        assert_eq!(a.standing("9", now).unwrap().bids, 0);
        // a bid for the old lot, held back all this time, is not taken into the new one
        let mut stale = bid("s", 500, t + 5, now + 1);
        stale.lot = "9".into();
        assert!(matches!(
            a.place(stale.clone()),
            Err(BidError::BeforeLot { .. })
        ));
        let mut fresh = bid("f", 50, now + 10, now + 10);
        fresh.lot = "9".into();
        assert!(a.place(fresh.clone()).is_ok());
        let moved = set("9", now + 900_000_000, now + 20);
        assert!(matches!(a.set_lot(&moved), Ok(LotChange::Moved { .. })));
        // should a journal still hold the retired lot's records before the new lot's (the
        // shell retires a lot only once a journal without it is on disk), the new lot's
        // setting starts it afresh
        let mut c = auction();
        c.restore(&old);
        for f in c.foldable(after) {
            c.fold(&f, after, 10).unwrap();
        }
        let mut log = c.snapshot();
        log.extend([
            Entry::LotSet(made),
            Entry::LotBid(fresh),
            Entry::LotSet(moved),
        ]);
        let mut d = auction();
        d.restore(&log);
        assert_eq!(d.standing("9", now + 30), a.standing("9", now + 30));
        assert_eq!(d.history("9", 100), a.history("9", 100));
        assert_eq!(d.held(), a.held());
        // and a snapshot keeps when the lot was made, though its close moved since
        let mut e = auction();
        e.restore(&a.snapshot());
        assert!(matches!(e.place(stale), Err(BidError::BeforeLot { .. })));
        assert_eq!(e.snapshot(), a.snapshot());
    }
}
