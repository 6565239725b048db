//! Which piece of live media goes on which path, and when: the gateway's contribution to the
//! relay, sans-IO.
//!
//! Pieces are CMAF chunks as the segmenter makes them (a frame or a few) on the **live**
//! lane, and what the live edge left behind on the **backfill** lane. The scheduler
//!
//! - sends live pieces first, oldest first, each on the path that completes it soonest,
//!   once that path has less than the live horizon queued (late binding: a piece waits at
//!   the gateway rather than in a long queue, so a path that frees up or comes back gets it
//!   at once); while it waits, a younger piece takes another path with room if that one
//!   completes it sooner than the best path could with the waiting pieces ahead of it
//!   (earliest completion first): when the stream outgrows its best path, the overflow goes
//!   on the next one, a backup path included. The queue a live piece waits behind is the
//!   live media already under way on the path beyond a round trip: media goes ahead of bulk
//!   data in the sender (stream priorities), so a path busy with an upload still has room;
//! - sends backfill below the live edge in every queue, on the path that completes it
//!   soonest with the capacity live media leaves it (the live media a path carried over
//!   the last second is subtracted from its rate: a link that live media fills makes no
//!   progress on backfill, however short its queue; a path up for less than that is taken
//!   to carry as much of the live stream as it can), once that path has less than the
//!   backfill horizon queued;
//! - re-sends a live piece that runs late on its path on another path that has room
//!   (re-injection, at most one copy; XLINK): the relay keeps the first copy. Late is past
//!   its expected completion by more than the path's answers usually are, as a
//!   retransmission timer would have it (mean lateness plus four deviations, measured per
//!   path), and copies stay within a budget (3% of the bytes, as XLINK's 2%); a piece whose
//!   path died is sent again in any case;
//! - gives a backfill piece that runs past its deadline on its path a copy on another path
//!   with room, in its turn (oldest first with the pieces waiting to go; 5% of the
//!   backfill's bytes at most), so a piece placed on a path that turned out slow does not
//!   hold the recording's completion;
//! - moves the live edge on: when a stream's oldest live piece is older than the stale
//!   limit, everything before its newest segment start becomes backfill, so after an outage
//!   the relay gets the present first, from a point a player can start at; at once when
//!   that start opens a new timeline (the program switched source: a lower level after a
//!   collapse), whose first part also goes on two paths from the start;
//! - calls off flights it no longer wants ([`Contribution::take_cancelled`]): the other
//!   flights of a piece the relay answered, flights on a path taken out of use, and
//!   flights sent live of pieces the live edge left behind, once overdue (when the edge
//!   moves or any time later). The shell resets their streams:
//!   what the sender still holds of them is dropped instead of holding the path (measured
//!   at a collapse from 14 to 0.5 Mbit/s: 230 kB of live media the edge had left behind
//!   sat in one path's sender at live priority, and the relay got no part for 6 s).
//!
//! Time comes in as `now`; the shell reports answers, failures and dead paths.

use crate::class::TrafficClass;
use crate::path::Tier;
use crate::scheduler::{PathId, PathView, Unit};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The rate an idle path is taken to have at least, bytes per second (1 Mbit/s).
const IDLE_RATE_FLOOR: f64 = 125_000.0;

/// The window over which the live media each path carries is measured.
const LIVE_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Live bytes a path that comes back from being out of use (silent, or down) may have
/// under way before it answers any (see [`Contribution::return_window`]).
const RETURN_WINDOW: u64 = 16 * 1024;
/// The longest a returned path's answers clock what it may have under way.
const RETURN_RAMP_MAX: Duration = Duration::from_secs(10);

/// A path back in use after having been out of use.
#[derive(Debug, Clone)]
struct Returned {
    since: Instant,
    /// Its answers since (any lane): (when, bytes).
    answered: VecDeque<(Instant, u64)>,
}

/// A stream (one rendition of one camera) of the contribution.
pub type StreamId = u32;

/// A piece: bytes from `offset` on of part `seq` of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceId {
    /// The stream.
    pub stream: StreamId,
    /// The part.
    pub seq: u64,
    /// Byte offset in the part.
    pub offset: u64,
}

impl PieceId {
    /// Every piece of parts `seqs` of `stream`, as a range of keys.
    pub fn of_parts(stream: StreamId, seqs: std::ops::Range<u64>) -> std::ops::Range<PieceId> {
        PieceId {
            stream,
            seq: seqs.start,
            offset: 0,
        }..PieceId {
            stream,
            seq: seqs.end,
            offset: 0,
        }
    }
}

/// Which lane a piece is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The live edge: first, on the soonest path, re-sent when late.
    Live,
    /// What the live edge left behind: spare capacity only.
    Backfill,
}

/// How a piece goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// Its first time.
    First,
    /// A copy on a second path while the first is still under way (re-injection).
    Copy,
    /// Again, after its path died or its request failed.
    Again,
}

/// A send the shell carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Send {
    /// The piece.
    pub id: PieceId,
    /// Its length.
    pub len: u64,
    /// The path.
    pub path: PathId,
    /// Its lane.
    pub lane: Lane,
    /// Why it goes.
    pub kind: SendKind,
    /// When it goes: with `path`, names this flight to [`Contribution::failed`].
    pub at: Instant,
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct ContributionConfig {
    /// A live piece goes on a path with at most this much queued.
    pub live_horizon: Duration,
    /// A backfill piece goes on a path with at most this much queued.
    pub backfill_horizon: Duration,
    /// A stream's oldest live piece older than this moves the live edge on.
    pub stale_after: Duration,
    /// The least margin past a live piece's expected completion before it counts as late
    /// (see the module docs for the rest).
    pub late_slack: Duration,
    /// The most margin.
    pub late_max: Duration,
    /// Copies of late pieces may cost at most this share of the bytes sent first (plus
    /// [`ContributionConfig::copy_allowance`]): a path whose answers swing a lot does not
    /// get its every piece sent twice.
    pub copy_budget: f64,
    /// Bytes of copies allowed whatever the budget (each budget).
    pub copy_allowance: u64,
    /// Copies of backfill pieces late at the end of a backfill may cost at most this share
    /// of the backfill's bytes (plus the allowance).
    pub backfill_copy_budget: f64,
    /// A path that has not answered a probe for this long is left as if it were down:
    /// its live pieces go again on another path, and new ones avoid it.
    pub silent_after: Duration,
}

impl Default for ContributionConfig {
    fn default() -> Self {
        Self {
            live_horizon: Duration::from_millis(150),
            // backfill goes behind live media in the sender (bulk priority): a queue of it
            // delays no live piece, and a short horizon starved it (0.5x real time)
            backfill_horizon: Duration::from_millis(300),
            stale_after: Duration::from_millis(1000),
            late_slack: Duration::from_millis(50),
            late_max: Duration::from_millis(400),
            copy_budget: 0.03,
            copy_allowance: 64 * 1024,
            backfill_copy_budget: 0.05,
            // probes answer every 10 ms: a burst of lost probes on a radio link is a few
            // tens of milliseconds of silence, the bond calls a path down after about 240
            silent_after: Duration::from_millis(100),
        }
    }
}

/// Counters, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContributionStats {
    /// Pieces' first sends.
    pub first_bytes: u64,
    /// Copies of late pieces (re-injection).
    pub copy_bytes: u64,
    /// Backfill's share of the copies.
    pub backfill_copy_bytes: u64,
    /// Sends after a dead path or a failed request.
    pub again_bytes: u64,
    /// Answered by the relay.
    pub acked_bytes: u64,
    /// Backfill's share of the first sends and sends again.
    pub backfill_bytes: u64,
    /// Pieces the shell could no longer find (their part left the spool).
    pub lost_pieces: u64,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    path: PathId,
    sent: Instant,
    /// Expected completion when sent.
    expected: Duration,
    deadline: Instant,
    /// Sent on the live lane (at live priority in the sender).
    live: bool,
}

/// How late a path's answers come, past their expected completion: a smoothed mean and
/// deviation, seconds (as a retransmission timer keeps round trips).
#[derive(Debug, Clone, Copy)]
struct Lateness {
    mean: f64,
    dev: f64,
}

impl Default for Lateness {
    fn default() -> Self {
        Self {
            mean: 0.0,
            dev: 0.05,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    len: u64,
    lane: Lane,
    segment_start: bool,
    created: Instant,
    /// Its first flight's expected completion, from when that flight went.
    first_expected: Option<Duration>,
    flights: Vec<Flight>,
    sent_before: bool,
}

/// The contribution's scheduler.
#[derive(Debug, Default)]
pub struct Contribution {
    cfg: ContributionConfig,
    entries: BTreeMap<PieceId, Entry>,
    lateness: BTreeMap<PathId, Lateness>,
    /// Live sends per path over the last [`LIVE_RATE_WINDOW`]: (when, bytes).
    live_sent: BTreeMap<PathId, VecDeque<(Instant, u64)>>,
    /// Live pieces made over the last [`LIVE_RATE_WINDOW`]: (when, bytes).
    live_made: VecDeque<(Instant, u64)>,
    /// Since when each usable path has been usable.
    up_since: BTreeMap<PathId, Instant>,
    /// Paths out of use after having been usable.
    out_of_use: std::collections::BTreeSet<PathId>,
    /// Paths back from being out of use, while their answers clock them.
    returned: BTreeMap<PathId, Returned>,
    /// Flights called off, for the shell to stop: (piece, path, sent at).
    cancelled: Vec<(PieceId, PathId, Instant)>,
    /// Each stream's newest part that opens a new timeline.
    timelines: BTreeMap<StreamId, u64>,
    stats: ContributionStats,
}

fn unit(len: u64) -> Unit {
    Unit {
        class: TrafficClass::Stream,
        up_bytes: len.max(1),
        down_bytes: 0,
    }
}

impl Contribution {
    /// A scheduler with `cfg`.
    pub fn new(cfg: ContributionConfig) -> Self {
        Self {
            cfg,
            entries: BTreeMap::new(),
            lateness: BTreeMap::new(),
            live_sent: BTreeMap::new(),
            live_made: VecDeque::new(),
            up_since: BTreeMap::new(),
            out_of_use: Default::default(),
            returned: BTreeMap::new(),
            cancelled: Vec::new(),
            timelines: BTreeMap::new(),
            stats: ContributionStats::default(),
        }
    }

    /// Flights called off since the last call, (piece, path, sent at): the shell stops
    /// them (a stream reset), so the path no longer carries what nobody waits for.
    pub fn take_cancelled(&mut self) -> Vec<(PieceId, PathId, Instant)> {
        std::mem::take(&mut self.cancelled)
    }

    /// Counters.
    pub fn stats(&self) -> ContributionStats {
        self.stats
    }

    /// Pieces waiting (unanswered) on each lane: (live, backfill) counts.
    pub fn waiting(&self) -> (usize, usize) {
        let live = self
            .entries
            .values()
            .filter(|e| e.lane == Lane::Live)
            .count();
        (live, self.entries.len() - live)
    }

    /// How far the live media is behind: the longest time since a live piece would have
    /// reached the relay had it gone the moment it was made (its first flight's expected
    /// completion, counted from its making), or its age while it waits at the gateway (late
    /// binding keeps pieces here while every path has its live horizon queued). Neither a
    /// wait before the first flight nor a copy or a second flight sets it back: counted from
    /// the flight in the air, a collapse's backlog fell to nothing each time a late piece
    /// went again on a path that had just come back (links collapsing from 7 to 0.25
    /// Mbit/s read as behind by 0.3-0.9 s and on time by turns for 2 s). The stream
    /// outgrowing its paths shows here first.
    pub fn live_backlog(&self, now: Instant) -> Duration {
        self.entries
            .values()
            .filter(|e| e.lane == Lane::Live)
            .map(|e| {
                now.saturating_duration_since(e.created + e.first_expected.unwrap_or_default())
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Bytes waiting for an answer, both lanes.
    pub fn waiting_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.len).sum()
    }

    /// A new piece. `segment_start`: the first bytes of a segment's first part (where a
    /// player can start).
    pub fn push(&mut self, now: Instant, id: PieceId, len: u64, segment_start: bool, lane: Lane) {
        if lane == Lane::Live && !self.entries.contains_key(&id) {
            record(&mut self.live_made, now, len);
        }
        self.entries.entry(id).or_insert(Entry {
            len,
            lane,
            segment_start,
            created: now,
            first_expected: None,
            flights: Vec::new(),
            sent_before: false,
        });
    }

    /// The relay answered the piece at `now`, over `path`.
    pub fn acked(&mut self, now: Instant, id: PieceId, path: PathId) -> bool {
        let Some(e) = self.entries.remove(&id) else {
            return false;
        };
        self.stats.acked_bytes += e.len;
        // the other copies carry nothing the relay lacks now
        for f in e.flights.iter().filter(|f| f.path != path) {
            self.cancelled.push((id, f.path, f.sent));
        }
        if let Some(r) = self.returned.get_mut(&path) {
            record(&mut r.answered, now, e.len);
        }
        // the timer is the live lane's: backfill waits behind live media and bulk data, and
        // its answers would teach the path a lateness live pieces never have
        let flight = e.flights.iter().find(|f| f.path == path);
        if let Some(f) = flight.filter(|_| e.lane == Lane::Live) {
            // how late past its expected completion, as the path's timer learns it
            let late =
                now.saturating_duration_since(f.sent).as_secs_f64() - f.expected.as_secs_f64();
            let l = self.lateness.entry(path).or_default();
            l.dev = 0.75 * l.dev + 0.25 * (late - l.mean).abs();
            l.mean = 0.875 * l.mean + 0.125 * late;
        }
        true
    }

    /// The piece's request on `path` sent `at` failed: it may go again. (A newer flight of
    /// the piece on the same path, sent after this one was given up, stays.)
    pub fn failed(&mut self, id: PieceId, path: PathId, at: Instant) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.flights.retain(|f| f.path != path || f.sent != at);
        }
    }

    /// `path` died: every piece under way on it may go again.
    pub fn path_dead(&mut self, path: PathId) {
        self.abandon(|f| f.path == path);
    }

    /// Drops (and calls off) the flights `which` picks.
    fn abandon(&mut self, which: impl Fn(&Flight) -> bool) {
        for (id, e) in self.entries.iter_mut() {
            call_off(*id, &mut e.flights, &mut self.cancelled, &which);
        }
    }

    /// The piece can no longer be sent (its part is gone at the gateway).
    pub fn lost(&mut self, id: PieceId) {
        if self.entries.remove(&id).is_some() {
            self.stats.lost_pieces += 1;
        }
    }

    /// Pieces of `stream` before part `seq` that still wait (for a shell that drops what
    /// its spool no longer holds).
    pub fn waiting_before(&self, stream: StreamId, seq: u64) -> Vec<PieceId> {
        self.entries
            .range(PieceId::of_parts(stream, 0..seq))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Part `seq` of `stream` opens a new timeline (a discontinuity: the program switched
    /// source, a lower level after a collapse, say): the live media before it is of the
    /// timeline it replaces, and the live edge moves on to it at once
    /// ([`Contribution::demote_stale`]) instead of after the stale limit. Measured at a
    /// collapse from 14 to 0.5 Mbit/s: the substream's first part waited a second behind
    /// the main stream's last 70 kB on its path, went stale itself, and the relay got no
    /// part for 2.7 s.
    pub fn timeline_starts(&mut self, stream: StreamId, seq: u64) {
        self.timelines.insert(stream, seq);
    }

    /// Part `seq` of `stream` opens its newest timeline.
    fn opens_timeline(&self, stream: StreamId, seq: u64) -> bool {
        self.timelines.get(&stream) == Some(&seq)
    }

    /// Moves each stream's live edge on (see the module docs): to its newest segment start
    /// when its oldest live piece is older than the stale limit, or when that start opens a
    /// new timeline ([`Contribution::timeline_starts`]). Returns the parts whose pieces
    /// became backfill.
    pub fn demote_stale(&mut self, now: Instant) -> Vec<(StreamId, u64)> {
        let mut streams: BTreeMap<StreamId, (bool, Option<u64>)> = BTreeMap::new();
        for (id, e) in &self.entries {
            if e.lane != Lane::Live {
                continue;
            }
            let s = streams.entry(id.stream).or_insert((false, None));
            s.0 |= now.saturating_duration_since(e.created) > self.cfg.stale_after;
            if e.segment_start {
                s.1 = Some(s.1.map_or(id.seq, |x: u64| x.max(id.seq)));
            }
        }
        let mut parts = Vec::new();
        for (stream, (stale, start)) in streams {
            let Some(start) = start else {
                continue;
            };
            if !stale && !self.opens_timeline(stream, start) {
                continue;
            }
            for id in self.waiting_before(stream, start) {
                if let Some(e) = self.entries.get_mut(&id) {
                    if e.lane == Lane::Live {
                        e.lane = Lane::Backfill;
                        if parts.last() != Some(&(stream, id.seq)) {
                            parts.push((stream, id.seq));
                        }
                    }
                }
            }
        }
        // a left-behind piece's overdue flight sent live is behind newer live media on its
        // path, at live priority: it goes again as backfill instead (one still on time is
        // nearly there, and stays until it is overdue too). Measured at a collapse from 14
        // to 0.5 Mbit/s, checked only when the edge moved: the main stream's last 73 kB,
        // placed on a path back from silence with its old window, were on time then, took
        // 2.3 s of the link, and the substream's first part waited behind them.
        for (id, e) in self.entries.iter_mut() {
            if e.lane == Lane::Backfill {
                call_off(*id, &mut e.flights, &mut self.cancelled, |f| {
                    f.live && now >= f.deadline
                });
            }
        }
        parts
    }

    /// Makes the backfill pieces of part `seq` of `stream` one piece of `len` bytes (the
    /// whole part: one request instead of one per frame), when none of them has gone out
    /// yet; true if it did.
    pub fn merge_part(&mut self, stream: StreamId, seq: u64, len: u64) -> bool {
        let ids: Vec<PieceId> = self
            .entries
            .range(PieceId::of_parts(stream, seq..seq + 1))
            .map(|(id, _)| *id)
            .collect();
        let mergeable = ids.first().is_some_and(|id| id.offset == 0)
            && ids.iter().all(|id| {
                let e = &self.entries[id];
                e.lane == Lane::Backfill && !e.sent_before && e.flights.is_empty()
            });
        if !mergeable || ids.len() < 2 {
            return false;
        }
        let (created, segment_start) = {
            let e = &self.entries[&ids[0]];
            (e.created, e.segment_start)
        };
        for id in &ids {
            self.entries.remove(id);
        }
        self.entries.insert(
            ids[0],
            Entry {
                len,
                lane: Lane::Backfill,
                segment_start,
                created,
                first_expected: None,
                flights: Vec::new(),
                sent_before: false,
            },
        );
        true
    }

    /// When a live piece under way will next count as late (call
    /// [`Contribution::poll_send`] then), or a flight sent live of a piece the live edge
    /// left behind comes due (call [`Contribution::demote_stale`] then). Only deadlines
    /// after `now`: a piece already late that could not be copied (no room, no budget) is
    /// looked at again on the next event (an answer frees room), and a past deadline
    /// returned here would make the shell spin (measured: 27,000 wake-ups in the second
    /// after an outage).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let live = self
            .entries
            .values()
            .filter(|e| e.lane == Lane::Live && !e.flights.is_empty() && e.flights.len() < 2)
            .filter_map(|e| e.flights.iter().map(|f| f.deadline).max());
        let left_behind = self
            .entries
            .values()
            .filter(|e| e.lane == Lane::Backfill)
            .flat_map(|e| e.flights.iter().filter(|f| f.live).map(|f| f.deadline));
        live.chain(left_behind).filter(|d| *d > now).min()
    }

    /// Live bytes under way on `path` (sent, not answered).
    fn live_in_flight(&self, path: PathId) -> u64 {
        self.entries
            .values()
            .filter(|e| e.lane == Lane::Live && e.flights.iter().any(|f| f.path == path))
            .map(|e| e.len)
            .sum()
    }

    /// The live media `path` carries, bytes per second: what it carried over the last
    /// [`LIVE_RATE_WINDOW`]; a path up for less than that is taken to carry as much of the
    /// live stream (as made over that window) as its `rate` allows.
    fn live_rate(&self, now: Instant, path: PathId, rate: f64) -> f64 {
        let sent = rate_over(self.live_sent.get(&path), now);
        let new = self
            .up_since
            .get(&path)
            .is_none_or(|t| now.saturating_duration_since(*t) < LIVE_RATE_WINDOW);
        if new {
            sent.max(rate_over(Some(&self.live_made), now).min(rate))
        } else {
            sent
        }
    }

    /// `p` as a backfill piece sees it: the rate live media leaves it (an idle path counts
    /// at least [`IDLE_RATE_FLOOR`], as for live media).
    fn backfill_view(&self, now: Instant, p: &PathView) -> PathView {
        let rate_up = self.send_rate(now, p);
        PathView {
            rate_up: (rate_up - self.live_rate(now, p.id, rate_up)).max(0.0),
            ..p.clone()
        }
    }

    /// `p` as a live piece sees it: only live media queued ahead of it (bulk waits behind).
    /// What is under way includes a round trip of bytes on the wire and answers on their
    /// way back: the queue is what is beyond that (on a 600 ms satellite path a round trip
    /// of media is under way at any time, and counting it as queue starved the path).
    /// The path counts at [`Contribution::send_rate`].
    fn live_view(&self, now: Instant, p: &PathView) -> PathView {
        let in_flight = self.live_in_flight(p.id);
        let rate_up = self.send_rate(now, p);
        let on_the_wire = (rate_up * p.srtt.as_secs_f64()) as u64;
        PathView {
            queued_up: in_flight.saturating_sub(on_the_wire),
            rate_up,
            ..p.clone()
        }
    }

    /// The rate a piece counts `p` at: a path with nothing waiting in its sender shows
    /// little of what it can carry in its window (it grows only when fed), and a link under
    /// [`IDLE_RATE_FLOOR`] is not what a venue uplink is (an optimistic guess corrects
    /// itself: what the link cannot carry waits in the sender, and the window's rate counts
    /// again); a path back from being out of use counts at most its
    /// [`Contribution::return_window`] over its RTT.
    fn send_rate(&self, now: Instant, p: &PathView) -> f64 {
        let rate = if p.queued_up == 0 {
            p.rate_up.max(IDLE_RATE_FLOOR)
        } else {
            p.rate_up
        };
        match self.return_window(now, p) {
            Some(w) => rate.min(w as f64 / p.srtt.max(Duration::from_millis(1)).as_secs_f64()),
            None => rate,
        }
    }

    /// What a path back from being out of use may have under way, bytes, while its answers
    /// clock it: [`RETURN_WINDOW`] plus twice what it answered over its last round trip (as
    /// slow start grows, at the rate the relay's answers show), for at most
    /// [`RETURN_RAMP_MAX`] and only while that is under its congestion window. None: not
    /// held. Its congestion window is the one it had before it went quiet, and says nothing
    /// of the link now. Measured at a collapse from 14 to 0.5 Mbit/s: a path back from
    /// silence on probation read 46 Mbit/s (its window over its RTT), took 300 kB of live
    /// media in one go, 10 s of the collapsed link, and the substream's first part waited
    /// behind them.
    fn return_window(&self, now: Instant, p: &PathView) -> Option<u64> {
        let r = self.returned.get(&p.id)?;
        let up_for = now.saturating_duration_since(r.since);
        if up_for >= RETURN_RAMP_MAX {
            return None;
        }
        let srtt = p.srtt.max(Duration::from_millis(10));
        // the answers' rate over the last second, or since the return (a round trip at least)
        let span = up_for.clamp(srtt, LIVE_RATE_WINDOW.max(srtt));
        let rate = bytes_within(Some(&r.answered), now, span) as f64 / span.as_secs_f64();
        let window = RETURN_WINDOW + (2.0 * rate * srtt.as_secs_f64()) as u64;
        let cwnd = (p.rate_up * p.srtt.as_secs_f64()) as u64;
        (window < cwnd).then_some(window)
    }

    /// Whether a live piece of `len` bytes fits what path `id` may have under way
    /// ([`Contribution::return_window`]; a path with nothing under way takes one piece
    /// whatever its size).
    fn return_room(&self, now: Instant, paths: &[PathView], id: PathId, len: u64) -> bool {
        let Some(w) = paths
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| self.return_window(now, p))
        else {
            return true;
        };
        let in_flight = self.live_in_flight(id);
        in_flight == 0 || in_flight + len <= w
    }

    /// The path for a piece of `len` bytes on `lane`, avoiding `exclude`.
    /// The path for a new live piece of `len` bytes with `backlog` bytes of older live
    /// pieces waiting here (earliest completion first, ECF): the path that completes it
    /// soonest takes it once it has room; while it has none, a piece goes on another path
    /// that has room if that completes it before the soonest path could, with the backlog
    /// ahead of it (so when the stream outgrows its best path, the overflow takes the next,
    /// a backup path included, instead of a queue growing here without bound).
    fn choose_live(
        &self,
        now: Instant,
        paths: &[PathView],
        len: u64,
        backlog: u64,
    ) -> Option<PathId> {
        let u = unit(len);
        let views: Vec<PathView> = paths.iter().map(|p| self.live_view(now, p)).collect();
        let allowed: Vec<&PathView> = views.iter().filter(|p| p.allows(u.class)).collect();
        let ec = |p: &PathView| p.expected_completion(&u);
        // the best path is a regular one while there is one: a backup path only ever takes
        // the overflow
        let regular = allowed.iter().filter(|p| p.tier != Tier::Backup);
        let best = regular
            .min_by_key(|p| (ec(p), p.id))
            .or_else(|| allowed.iter().min_by_key(|p| (ec(p), p.id)))?;
        let room = |p: &PathView| {
            p.queue_delay(&u) <= self.cfg.live_horizon && self.return_room(now, paths, p.id, len)
        };
        if backlog == 0 && room(best) {
            return Some(best.id);
        }
        let via_best =
            ec(best) + Duration::from_secs_f64((backlog as f64 / best.rate_up.max(1.0)).min(1e6));
        allowed
            .iter()
            .filter(|p| p.id != best.id && room(p))
            .map(|p| (ec(p), p.id))
            .filter(|(t, _)| *t < via_best)
            .min()
            .map(|(_, id)| id)
    }

    fn choose(
        &self,
        now: Instant,
        paths: &[PathView],
        len: u64,
        lane: Lane,
        exclude: &[PathId],
    ) -> Option<PathId> {
        let u = unit(len);
        match lane {
            Lane::Live => {
                // the path that completes it soonest, counting what waits ahead of it; a
                // backup path counts half as slow again (it costs), so it wins only when the
                // others are jammed. When that path has no room, the piece waits here for it
                // (a worse path now would complete it later than the best one soon).
                let views: Vec<PathView> = paths.iter().map(|p| self.live_view(now, p)).collect();
                let best = views
                    .iter()
                    .filter(|p| p.allows(u.class) && !exclude.contains(&p.id))
                    .min_by_key(|p| {
                        let ec = p.expected_completion(&u);
                        let ec = if p.tier == Tier::Backup {
                            ec.mul_f64(1.5)
                        } else {
                            ec
                        };
                        (ec, p.id)
                    })?;
                (best.queue_delay(&u) <= self.cfg.live_horizon
                    && self.return_room(now, paths, best.id, len))
                .then_some(best.id)
            }
            Lane::Backfill => {
                // the regular paths; backup paths only when no other path is up at all
                // (backfill can wait, and backup links cost), the excluded ones counted: a
                // copy of a piece on the only regular path up does not go on a backup link.
                // Earliest completion with what live media leaves each path: when the
                // soonest path has no room, the piece waits for it unless another with room
                // completes it sooner still.
                let regular_up = paths
                    .iter()
                    .any(|p| p.allows(u.class) && p.tier != Tier::Backup);
                let views: Vec<PathView> = paths
                    .iter()
                    .filter(|p| p.allows(u.class) && !exclude.contains(&p.id))
                    .map(|p| self.backfill_view(now, p))
                    .collect();
                let allowed: Vec<&PathView> = views
                    .iter()
                    .filter(|p| !regular_up || p.tier != Tier::Backup)
                    .collect();
                let ec = |p: &PathView| p.expected_completion(&u);
                let room = |p: &PathView| p.queue_delay(&u) <= self.cfg.backfill_horizon;
                let best = allowed.iter().min_by_key(|p| (ec(p), p.id))?;
                if room(best) {
                    return Some(best.id);
                }
                allowed
                    .iter()
                    .filter(|p| room(p) && ec(p) < ec(best))
                    .min_by_key(|p| (ec(p), p.id))
                    .map(|p| p.id)
            }
        }
    }

    /// (expected completion, deadline) of a piece of `len` on `lane` sent on `path` now.
    fn deadline(
        &self,
        now: Instant,
        paths: &[PathView],
        path: PathId,
        len: u64,
        lane: Lane,
    ) -> (Duration, Instant) {
        let ec = paths
            .iter()
            .find(|p| p.id == path)
            .map_or(Duration::from_secs(1), |p| {
                let view = match lane {
                    Lane::Live => self.live_view(now, p),
                    Lane::Backfill => self.backfill_view(now, p),
                };
                view.expected_completion(&unit(len))
            });
        let l = self.lateness.get(&path).copied().unwrap_or_default();
        let margin = Duration::from_secs_f64((l.mean + 4.0 * l.dev).max(0.0))
            .max(self.cfg.late_slack)
            .max(ec / 2)
            .min(self.cfg.late_max);
        (ec, now + ec + margin)
    }

    fn send(
        &mut self,
        now: Instant,
        paths: &[PathView],
        id: PieceId,
        path: PathId,
        kind: SendKind,
    ) -> Option<Send> {
        let (expected, deadline) = {
            let e = self.entries.get(&id)?;
            self.deadline(now, paths, path, e.len, e.lane)
        };
        let e = self.entries.get_mut(&id)?;
        e.first_expected.get_or_insert(expected);
        let live = e.lane == Lane::Live;
        e.flights.push(Flight {
            path,
            sent: now,
            expected,
            deadline,
            live,
        });
        e.sent_before = true;
        match kind {
            SendKind::First => self.stats.first_bytes += e.len,
            SendKind::Copy => self.stats.copy_bytes += e.len,
            SendKind::Again => self.stats.again_bytes += e.len,
        }
        match (e.lane, kind) {
            (Lane::Backfill, SendKind::Copy) => self.stats.backfill_copy_bytes += e.len,
            (Lane::Backfill, _) => self.stats.backfill_bytes += e.len,
            (Lane::Live, _) => {}
        }
        let send = Send {
            id,
            len: e.len,
            path,
            lane: e.lane,
            kind,
            at: now,
        };
        if send.lane == Lane::Live {
            record(self.live_sent.entry(path).or_default(), now, send.len);
        }
        Some(send)
    }

    /// The next send, if any piece may go now on `paths` (call until `None`, with fresh
    /// views: each send fills a path's queue).
    pub fn poll_send(&mut self, now: Instant, paths: &[PathView]) -> Option<Send> {
        let original = paths;
        // A path silent for `silent_after` has most likely lost what was sent on it lately
        // (a cut link), though the bond calls it down only later: waiting for that cost a
        // live piece 240 ms at the demo's cut, and hls.js's 800 ms blocking reload ran out.
        // Its pieces go again now and new ones avoid it; if it was only a lost burst of
        // probes, the relay keeps whichever copy comes first.
        let quiet: Vec<PathView>;
        let paths = if paths
            .iter()
            .any(|p| p.usable && p.silent >= self.cfg.silent_after)
        {
            quiet = paths
                .iter()
                .map(|p| PathView {
                    usable: p.usable && p.silent < self.cfg.silent_after,
                    ..p.clone()
                })
                .collect();
            &quiet[..]
        } else {
            paths
        };
        for p in paths {
            if p.usable {
                self.up_since.entry(p.id).or_insert(now);
                if self.out_of_use.remove(&p.id) {
                    self.returned.insert(
                        p.id,
                        Returned {
                            since: now,
                            answered: VecDeque::new(),
                        },
                    );
                }
            } else {
                if self.up_since.remove(&p.id).is_some() {
                    self.out_of_use.insert(p.id);
                }
                self.returned.remove(&p.id);
            }
        }
        // a returned path's hold ends for good once its answers reach its window, or after
        // the longest ramp
        let lifted: Vec<PathId> = paths
            .iter()
            .filter(|p| self.returned.contains_key(&p.id) && self.return_window(now, p).is_none())
            .map(|p| p.id)
            .collect();
        for id in lifted {
            self.returned.remove(&id);
        }
        // A path the bond took out of use (down: its probes went unanswered) holds its
        // pieces until its connection closes, seconds later: they go again now, outside
        // the copy budget, as after a dead path. Seen in the netns live test: a keyframe
        // piece on a cut Wi-Fi link waited 2 s for the connection to close, its copy held
        // back by the budget, and the relay's viewers got gap parts.
        // Flights on a path the bond took out of use are called off (its sender would
        // carry them when it comes back, ahead of newer media); those on a path only silent
        // for a moment go on, and the relay keeps whichever copy comes first.
        let down: Vec<PathId> = original
            .iter()
            .filter(|p| !p.usable)
            .map(|p| p.id)
            .collect();
        if !down.is_empty() {
            self.abandon(|f| down.contains(&f.path));
        }
        let quiet_now: Vec<PathId> = paths.iter().filter(|p| !p.usable).map(|p| p.id).collect();
        if !quiet_now.is_empty() {
            for e in self.entries.values_mut() {
                e.flights.retain(|f| !quiet_now.contains(&f.path));
            }
        }
        // live, oldest first: new pieces and late ones
        let mut live: Vec<(Instant, PieceId)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.lane == Lane::Live)
            .map(|(id, e)| (e.created, *id))
            .collect();
        live.sort();
        // bytes of older live pieces waiting here for their path
        let mut backlog = 0u64;
        for (_, id) in live {
            let e = &self.entries[&id];
            if e.flights.is_empty() {
                let kind = if e.sent_before {
                    SendKind::Again
                } else {
                    SendKind::First
                };
                match self.choose_live(now, paths, e.len, backlog) {
                    Some(path) => return self.send(now, paths, id, path, kind),
                    None => {
                        backlog += e.len;
                        continue;
                    }
                }
            }
            // the first part of a new timeline is copied at once, not only when late: after
            // a collapse it is what the relay's viewers wait for (measured: the substream's
            // first keyframe piece, 3 kB, took a second on a collapsed path, and its copy
            // on the other path 82 ms once it ran late)
            let opening = self.opens_timeline(id.stream, id.seq);
            let late = e.flights.len() < 2
                && (opening || e.flights.iter().all(|f| now >= f.deadline))
                && self
                    .stats
                    .copy_bytes
                    .saturating_sub(self.stats.backfill_copy_bytes)
                    + e.len
                    <= budget(self.stats.first_bytes, self.cfg.copy_budget, &self.cfg);
            if late {
                let on: Vec<PathId> = e.flights.iter().map(|f| f.path).collect();
                if let Some(path) = self.choose(now, paths, e.len, Lane::Live, &on) {
                    return self.send(now, paths, id, path, SendKind::Copy);
                }
            }
        }
        if backlog > 0 {
            return None; // live media waits: backfill does not go ahead of it
        }
        // backfill, oldest first, only on nearly idle paths: pieces waiting to go, and pieces
        // past their deadline on their path (a copy elsewhere, within the budget)
        let room = budget(
            self.stats.backfill_bytes,
            self.cfg.backfill_copy_budget,
            &self.cfg,
        )
        .saturating_sub(self.stats.backfill_copy_bytes);
        // (A piece whose copy failed or whose copy's path died has one flight again, and
        // may get another copy once late: within the same budget.)
        let mut pick = None;
        for (id, e) in self
            .entries
            .iter()
            .filter(|(_, e)| e.lane == Lane::Backfill)
        {
            let on = match e.flights.as_slice() {
                [] => None,
                [f] if now >= f.deadline && e.len <= room => Some(f.path),
                _ => continue,
            };
            let exclude: Vec<PathId> = on.into_iter().collect();
            match self.choose(now, paths, e.len, Lane::Backfill, &exclude) {
                Some(path) => {
                    let kind = match (on, e.sent_before) {
                        (Some(_), _) => SendKind::Copy,
                        (None, true) => SendKind::Again,
                        (None, false) => SendKind::First,
                    };
                    pick = Some((*id, path, kind));
                    break;
                }
                // the oldest waiting piece has no path yet: the rest wait too
                None if on.is_none() => break,
                None => {}
            }
        }
        let (id, path, kind) = pick?;
        self.send(now, paths, id, path, kind)
    }
}

/// Drops the flights of piece `id` that `which` picks, adding each to `cancelled`.
fn call_off(
    id: PieceId,
    flights: &mut Vec<Flight>,
    cancelled: &mut Vec<(PieceId, PathId, Instant)>,
    which: impl Fn(&Flight) -> bool,
) {
    flights.retain(|f| {
        let drop = which(f);
        if drop {
            cancelled.push((id, f.path, f.sent));
        }
        !drop
    });
}

/// Bytes of copies a budget of `share` of `bytes` allows (with the allowance).
fn budget(bytes: u64, share: f64, cfg: &ContributionConfig) -> u64 {
    (bytes as f64 * share) as u64 + cfg.copy_allowance
}

/// Adds `bytes` sent or made at `now` to a window's record, dropping what left the window.
fn record(q: &mut VecDeque<(Instant, u64)>, now: Instant, bytes: u64) {
    q.push_back((now, bytes));
    while q
        .front()
        .is_some_and(|(t, _)| now.saturating_duration_since(*t) > LIVE_RATE_WINDOW)
    {
        q.pop_front();
    }
}

/// Bytes per second of a window's record at `now`.
fn rate_over(q: Option<&VecDeque<(Instant, u64)>>, now: Instant) -> f64 {
    bytes_within(q, now, LIVE_RATE_WINDOW) as f64 / LIVE_RATE_WINDOW.as_secs_f64()
}

/// Bytes of a window's record from the last `span` before `now`.
fn bytes_within(q: Option<&VecDeque<(Instant, u64)>>, now: Instant, span: Duration) -> u64 {
    let since = now.checked_sub(span);
    q.map_or(0, |q| {
        q.iter()
            .filter(|(t, _)| since.is_none_or(|s| *t > s))
            .map(|(_, b)| b)
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::CapState;
    use crate::scheduler::ClassSet;

    /// Path `id`: `mbit` Mbit/s, `rtt` ms, `queued` bytes, tier.
    fn path(id: PathId, mbit: f64, rtt: u64, queued: u64, tier: Tier) -> PathView {
        PathView {
            id,
            usable: true,
            tier,
            classes: ClassSet::ALL,
            cap: CapState::Normal,
            srtt: Duration::from_millis(rtt),
            rate_up: mbit * 125_000.0,
            rate_down: mbit * 125_000.0,
            queued_up: queued,
            queued_down: 0,
            silent: Duration::ZERO,
        }
    }

    fn id(seq: u64, offset: u64) -> PieceId {
        PieceId {
            stream: 0,
            seq,
            offset,
        }
    }

    #[test]
    fn live_goes_first_on_the_soonest_path_and_backfill_waits_for_an_idle_one() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        c.push(t0, id(1, 0), 5_000, false, Lane::Backfill);
        c.push(t0, id(9, 0), 20_000, true, Lane::Live);
        // cellular 8 Mbit/s 100 ms, Wi-Fi 4 Mbit/s 40 ms: 20 kB completes sooner on Wi-Fi
        let mut paths = vec![
            path(0, 8.0, 100, 0, Tier::Primary),
            path(1, 4.0, 40, 0, Tier::Primary),
        ];
        let s = c.poll_send(t0, &paths).unwrap();
        assert_eq!(
            (s.id, s.path, s.kind, s.lane),
            (id(9, 0), 1, SendKind::First, Lane::Live)
        );
        // both paths busy beyond the backfill horizon (300 ms): backfill waits
        paths[0].queued_up = 400_000;
        paths[1].queued_up = 200_000;
        assert_eq!(c.poll_send(t0, &paths), None);
        paths[0].queued_up = 0;
        let s = c.poll_send(t0, &paths).unwrap();
        assert_eq!((s.id, s.path, s.lane), (id(1, 0), 0, Lane::Backfill));
        assert!(c.acked(t0, id(9, 0), 1));
        assert!(!c.acked(t0, id(9, 0), 1));
        assert_eq!(c.stats().first_bytes, 25_000);
    }

    #[test]
    fn the_backlog_is_how_far_live_media_is_behind() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Contribution::default();
        assert_eq!(c.live_backlog(t0), Duration::ZERO);
        c.push(t0, id(1, 0), 5_000, false, Lane::Backfill);
        c.push(t0 + 10 * ms, id(2, 0), 5_000, true, Lane::Live);
        c.push(t0 + 50 * ms, id(3, 0), 5_000, false, Lane::Live);
        assert_eq!(
            c.live_backlog(t0 + 100 * ms),
            90 * ms,
            "backfill is not counted"
        );
        // no path: nothing goes, the backlog grows
        let mut down = vec![path(0, 8.0, 40, 0, Tier::Primary)];
        down[0].usable = false;
        assert_eq!(c.poll_send(t0 + 100 * ms, &down), None);
        assert_eq!(c.live_backlog(t0 + 300 * ms), 290 * ms);
        // room: the oldest goes, the next is the backlog
        let idle = vec![path(0, 8.0, 40, 0, Tier::Primary)];
        let s = c.poll_send(t0 + 300 * ms, &idle).unwrap();
        assert_eq!(s.id, id(2, 0));
        assert_eq!(c.live_backlog(t0 + 300 * ms), 250 * ms);
        let s = c.poll_send(t0 + 300 * ms, &idle).unwrap();
        assert_eq!(s.id, id(3, 0));
        // both on their way, 290 ms late: behind by that, less the expected completion (a
        // round trip of 40 ms and its bytes)
        let behind = c.live_backlog(t0 + 300 * ms);
        assert!(behind > 190 * ms && behind < 250 * ms, "{behind:?}");
        // a copy in the air does not set it back
        let mut other = vec![
            path(0, 8.0, 40, 5_000, Tier::Primary),
            path(1, 8.0, 40, 0, Tier::Primary),
        ];
        other[0].usable = false;
        c.path_dead(0);
        let again = c.poll_send(t0 + 310 * ms, &other).unwrap();
        assert_eq!(again.path, 1);
        assert!(c.live_backlog(t0 + 310 * ms) >= behind + 10 * ms);
        // unanswered 2 s on: behind by that much more
        let late = c.live_backlog(t0 + 2300 * ms);
        assert!(late > 2190 * ms && late < 2250 * ms, "{late:?}");
    }

    #[test]
    fn a_piece_on_a_path_taken_out_of_use_goes_again_at_once() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let mut paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        // a keyframe piece far over the copy budget
        c.push(t0, id(1, 0), 400_000, true, Lane::Live);
        let first = c.poll_send(t0, &paths).unwrap();
        assert_eq!(c.poll_send(t0 + Duration::from_millis(10), &paths), None);
        // its path goes down (probes unanswered); the connection is not closed yet
        paths[first.path].usable = false;
        let again = c
            .poll_send(t0 + Duration::from_millis(170), &paths)
            .unwrap();
        assert_eq!(again.kind, SendKind::Again);
        assert_ne!(again.path, first.path);
        assert_eq!(c.stats().copy_bytes, 0);
        // the first request's failure, reported late, leaves the new flight alone
        c.failed(first.id, first.path, first.at);
        c.failed(again.id, again.path, first.at);
        assert_eq!(c.poll_send(t0 + Duration::from_millis(180), &paths), None);
        // its own failure sends it again
        c.failed(again.id, again.path, again.at);
        assert!(c
            .poll_send(t0 + Duration::from_millis(190), &paths)
            .is_some());
    }

    #[test]
    fn a_silent_path_is_left_before_it_is_called_down() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let mut paths = vec![
            path(0, 8.0, 100, 0, Tier::Primary),
            path(1, 4.0, 40, 0, Tier::Primary),
        ];
        // Wi-Fi on probation: the keyframe piece goes on cellular; then Wi-Fi is back
        paths[1].usable = false;
        c.push(t0, id(1, 0), 30_000, true, Lane::Live);
        let first = c.poll_send(t0, &paths).unwrap();
        assert_eq!(first.path, 0);
        paths[1].usable = true;
        // a burst of lost probes is no reason to send again
        paths[0].silent = Duration::from_millis(40);
        assert_eq!(c.poll_send(t0 + Duration::from_millis(40), &paths), None);
        // 100 ms without an answer (the bond calls it down only at about 240): the piece
        // goes again on Wi-Fi, outside the copy budget, and a new piece avoids cellular
        paths[0].silent = Duration::from_millis(100);
        let at = t0 + Duration::from_millis(100);
        let again = c.poll_send(at, &paths).unwrap();
        assert_eq!(
            (again.id, again.path, again.kind),
            (id(1, 0), 1, SendKind::Again)
        );
        c.push(at, id(1, 30_000), 2_000, false, Lane::Live);
        let next = c.poll_send(at, &paths).unwrap();
        assert_eq!((next.id, next.path), (id(1, 30_000), 1));
        assert_eq!(c.stats().copy_bytes, 0);
    }

    #[test]
    fn a_late_piece_gets_one_copy_and_a_dead_path_sends_again() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        c.push(t0, id(1, 0), 10_000, false, Lane::Live);
        let s = c.poll_send(t0, &paths).unwrap();
        let first = s.path;
        // expected ~40-60 ms, and a path not measured yet gets 200 ms more: by 400 ms it is
        // late
        assert!(c.poll_timeout(t0).unwrap() < t0 + Duration::from_millis(400));
        assert_eq!(c.poll_send(t0 + Duration::from_millis(100), &paths), None);
        let copy = c
            .poll_send(t0 + Duration::from_millis(400), &paths)
            .unwrap();
        assert_eq!(copy.kind, SendKind::Copy);
        assert_ne!(copy.path, first);
        assert_eq!(
            c.poll_send(t0 + Duration::from_secs(5), &paths),
            None,
            "one copy only"
        );
        c.path_dead(0);
        c.path_dead(1);
        let again = c.poll_send(t0 + Duration::from_secs(5), &paths).unwrap();
        assert_eq!(again.kind, SendKind::Again);
        assert_eq!(c.stats().copy_bytes, 10_000);
        assert_eq!(c.stats().again_bytes, 10_000);
    }

    #[test]
    fn copies_stay_within_their_budget() {
        let t0 = Instant::now();
        let mut c = Contribution::new(ContributionConfig {
            copy_allowance: 0,
            ..ContributionConfig::default()
        });
        let paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 8.0, 50, 0, Tier::Primary),
        ];
        // 1 MB sent first: 30 kB of copies allowed; pieces of 10 kB that all run late
        c.push(t0, id(0, 0), 1_000_000, false, Lane::Live);
        c.poll_send(t0, &paths).unwrap();
        c.acked(t0, id(0, 0), 0);
        for seq in 1..=6 {
            c.push(t0, id(seq, 0), 10_000, false, Lane::Live);
        }
        let firsts = std::iter::from_fn(|| c.poll_send(t0, &paths)).count();
        let later = t0 + Duration::from_secs(5);
        let copies = std::iter::from_fn(|| c.poll_send(later, &paths)).count();
        assert_eq!((firsts, copies), (6, 3));
    }

    #[test]
    fn a_path_whose_answers_vary_gets_more_time_before_a_copy() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 8.0, 50, 0, Tier::Primary),
        ];
        // answers on path 0 come 0 to 200 ms after their expected completion
        let mut t = t0;
        for i in 0..40u64 {
            c.push(t, id(i, 0), 1_000, false, Lane::Live);
            let s = c.poll_send(t, &paths).unwrap();
            let late = Duration::from_millis(if i % 2 == 0 { 0 } else { 200 });
            c.acked(t + Duration::from_millis(60) + late, s.id, s.path);
            t += Duration::from_secs(1);
        }
        c.push(t, id(99, 0), 1_000, false, Lane::Live);
        let s = c.poll_send(t, &paths).unwrap();
        // 250 ms late is within what the path does: no copy yet
        assert_eq!(c.poll_send(t + Duration::from_millis(300), &paths), None);
        assert_eq!(
            c.poll_send(t + Duration::from_millis(1200), &paths)
                .map(|x| x.kind),
            Some(SendKind::Copy)
        );
        assert_eq!(s.path, 0);
    }

    #[test]
    fn backup_only_when_the_others_are_full_of_live_media() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // a slow primary (1 Mbit/s) and a faster backup (2 Mbit/s, 100 ms)
        let paths = vec![
            path(0, 1.0, 40, 0, Tier::Primary),
            path(1, 2.0, 100, 0, Tier::Backup),
        ];
        for seq in 0..3 {
            c.push(t0, id(seq, 0), 30_000, false, Lane::Live);
        }
        // the first on the primary (a backup takes only the overflow); the second would
        // wait behind it there (480 ms): the backup completes it in 220 ms
        let on: Vec<PathId> = (0..2)
            .map(|_| c.poll_send(t0, &paths).unwrap().path)
            .collect();
        assert_eq!(on, vec![0, 1]);
    }

    #[test]
    fn a_piece_waits_for_the_best_path_rather_than_taking_a_worse_one() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // Wi-Fi 4 Mbit/s with 200 ms of live media queued; a satellite backup that is idle
        // but 600 ms away: the piece waits for Wi-Fi
        let paths = vec![
            path(0, 4.0, 40, 0, Tier::Primary),
            path(1, 2.0, 600, 0, Tier::Backup),
        ];
        for seq in 0..5 {
            c.push(t0, id(seq, 0), 30_000, false, Lane::Live);
        }
        let on: Vec<PathId> =
            std::iter::from_fn(|| c.poll_send(t0, &paths).map(|s| s.path)).collect();
        assert_eq!(on, vec![0, 0, 0, 0]);
    }

    #[test]
    fn a_long_path_carries_a_round_trip_of_live_media_and_more() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // satellite alone: 2 Mbit/s, 600 ms; 1 Mbit/s of media in 20 kB pieces (6 a second)
        let paths = vec![path(0, 2.0, 600, 0, Tier::Backup)];
        for seq in 0..6 {
            c.push(t0, id(seq, 0), 20_000, false, Lane::Live);
        }
        // 600 ms of it under way (150 kB) is the round trip, not a queue: all six go
        let sent = (0..6).filter(|_| c.poll_send(t0, &paths).is_some()).count();
        assert_eq!(sent, 6);
    }

    #[test]
    fn when_the_stream_outgrows_its_best_path_the_overflow_takes_the_next() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // Wi-Fi 4 Mbit/s and a satellite backup; 600 kB of live media at once
        let paths = vec![
            path(0, 4.0, 40, 0, Tier::Primary),
            path(1, 2.0, 600, 0, Tier::Backup),
        ];
        for seq in 0..20 {
            c.push(t0, id(seq, 0), 30_000, false, Lane::Live);
        }
        let on: Vec<PathId> =
            std::iter::from_fn(|| c.poll_send(t0, &paths).map(|s| s.path)).collect();
        // Wi-Fi fills first; once the wait for it is longer than the satellite's trip, the
        // younger pieces go there; the oldest wait for Wi-Fi
        assert_eq!(&on[..4], &[0, 0, 0, 0]);
        assert!(on[4..].iter().all(|p| *p == 1) && on.len() > 4, "{on:?}");
        let (live, _) = c.waiting();
        assert_eq!(live, 20);
    }

    /// Wi-Fi (path 1) came back first and got backfill part 1 at `t0`; the cellular (path
    /// 0) is back a moment later, Wi-Fi's queue still holding the part. Backfill copies may
    /// cost `budget` of the backfill's bytes, with no allowance.
    fn backfill_sent_on_wifi_alone(t0: Instant, budget: f64) -> (Contribution, Vec<PathView>) {
        let mut c = Contribution::new(ContributionConfig {
            backfill_copy_budget: budget,
            copy_allowance: 0,
            ..ContributionConfig::default()
        });
        let mut paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        paths[0].usable = false;
        c.push(t0, id(1, 0), 100_000, false, Lane::Backfill);
        let s = c.poll_send(t0, &paths).unwrap();
        assert_eq!((s.path, s.kind), (1, SendKind::First));
        paths[0].usable = true;
        paths[1].queued_up = 100_000;
        (c, paths)
    }

    #[test]
    fn a_late_piece_that_cannot_be_copied_sets_no_past_timeout() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let paths = vec![path(0, 4.0, 20, 0, Tier::Primary)];
        c.push(t0, id(1, 0), 10_000, false, Lane::Live);
        assert_eq!(c.poll_send(t0, &paths).map(|s| s.path), Some(0));
        let deadline = c.poll_timeout(t0).unwrap();
        // late, and no other path for a copy: the shell must not be woken at once again
        let later = deadline + Duration::from_millis(10);
        assert_eq!(c.poll_send(later, &paths), None);
        assert_eq!(c.poll_timeout(later), None);
    }

    #[test]
    fn a_backfill_piece_stuck_on_a_slow_path_gets_a_copy() {
        let t0 = Instant::now();
        let (mut c, paths) = backfill_sent_on_wifi_alone(t0, 1.0);
        // expected in about 220 ms on Wi-Fi: not late yet
        assert_eq!(c.poll_send(t0 + Duration::from_millis(100), &paths), None);
        // still there after two seconds (the live stream took Wi-Fi): one copy on the
        // cellular, which has room and nothing else to send
        let at = t0 + Duration::from_secs(2);
        let copy = c.poll_send(at, &paths).unwrap();
        assert_eq!(
            (copy.id, copy.path, copy.kind, copy.lane),
            (id(1, 0), 0, SendKind::Copy, Lane::Backfill)
        );
        assert_eq!(c.poll_send(at, &paths), None, "one copy only");
        assert_eq!(c.stats().backfill_copy_bytes, 100_000);
        assert_eq!(c.stats().backfill_bytes, 100_000);
        assert!(c.acked(at + Duration::from_millis(150), id(1, 0), 0));
        // without budget for it, no copy
        let (mut c, paths) = backfill_sent_on_wifi_alone(t0, 0.0);
        assert_eq!(c.poll_send(at, &paths), None);
    }

    #[test]
    fn a_late_backfill_piece_on_the_only_regular_path_is_not_copied_to_a_backup() {
        let t0 = Instant::now();
        let mut c = Contribution::new(ContributionConfig {
            backfill_copy_budget: 1.0,
            ..ContributionConfig::default()
        });
        let mut paths = vec![
            path(0, 4.0, 20, 0, Tier::Primary),
            path(1, 2.0, 600, 0, Tier::Backup),
        ];
        c.push(t0, id(1, 0), 100_000, false, Lane::Backfill);
        assert_eq!(c.poll_send(t0, &paths).map(|s| s.path), Some(0));
        paths[0].queued_up = 100_000;
        assert_eq!(c.poll_send(t0 + Duration::from_secs(2), &paths), None);
    }

    #[test]
    fn a_late_backfill_piece_gets_its_copy_in_its_turn() {
        let t0 = Instant::now();
        let at = t0 + Duration::from_secs(2);
        let run = |budget: f64| {
            let (mut c, paths) = backfill_sent_on_wifi_alone(t0, budget);
            c.push(t0, id(2, 0), 100_000, false, Lane::Backfill);
            let mut sends = Vec::new();
            while let Some(s) = c.poll_send(at, &paths) {
                sends.push((s.id.seq, s.path, s.kind));
            }
            sends
        };
        // the late piece is the older: its copy goes first, then the piece waiting to go
        assert_eq!(
            run(1.0),
            vec![(1, 0, SendKind::Copy), (2, 0, SendKind::First)]
        );
        // without budget for copies, only the piece waiting to go
        assert_eq!(run(0.0), vec![(2, 0, SendKind::First)]);
    }

    #[test]
    fn bulk_queued_on_a_path_does_not_keep_live_media_off_it() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // an upload has 400 ms queued on the primary: live media still goes there (it goes
        // first in the sender), backfill does not, nor on the backup while the primary is up
        let mut paths = vec![
            path(0, 4.0, 40, 200_000, Tier::Primary),
            path(1, 2.0, 600, 0, Tier::Backup),
        ];
        c.push(t0, id(1, 0), 10_000, false, Lane::Live);
        assert_eq!(c.poll_send(t0, &paths).unwrap().path, 0);
        c.push(t0, id(0, 0), 10_000, false, Lane::Backfill);
        assert_eq!(c.poll_send(t0, &paths), None);
        paths[0].usable = false;
        assert_eq!(c.poll_send(t0, &paths).map(|s| s.path), Some(1));
    }

    #[test]
    fn backfill_goes_where_live_media_leaves_room() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // Wi-Fi 4 Mbit/s 20 ms carries the live stream (4 Mbit/s, in 20 kB pieces), the
        // cellular 8 Mbit/s 50 ms has 100 kB of backfill queued: Wi-Fi's queue is shorter
        // but the live media leaves it nothing, so backfill goes on the cellular
        let mut paths = vec![
            path(0, 8.0, 50, 100_000, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        let mut t = t0;
        for seq in 0..25u64 {
            c.push(t, id(seq, 0), 20_000, false, Lane::Live);
            assert_eq!(c.poll_send(t, &[paths[1].clone()]).unwrap().path, 1);
            c.acked(t + Duration::from_millis(30), id(seq, 0), 1);
            t += Duration::from_millis(40);
        }
        paths[1].queued_up = 10_000;
        c.push(t, id(100, 0), 100_000, false, Lane::Backfill);
        assert_eq!(c.poll_send(t, &paths).map(|s| s.path), Some(0));
        // a second later, with no live media on Wi-Fi, its queue is the shorter again
        c.push(t, id(101, 0), 100_000, false, Lane::Backfill);
        paths[0].queued_up = 200_000;
        let later = t + Duration::from_secs(2);
        assert_eq!(c.poll_send(later, &paths).map(|s| s.path), Some(1));
    }

    #[test]
    fn a_path_just_back_is_taken_to_carry_the_live_stream() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // every uplink was down; the camera made 4 Mbit/s (500 kB/s) all along
        for seq in 0..25u64 {
            let at = t0 + Duration::from_millis(seq * 40);
            c.push(at, id(seq, 0), 20_000, false, Lane::Live);
        }
        let back = t0 + Duration::from_millis(1000);
        let demoted = c.demote_stale(back + Duration::from_millis(100));
        assert!(demoted.is_empty(), "no segment start: all stays live");
        for seq in 0..25u64 {
            c.lost(id(seq, 0));
        }
        c.push(back, id(50, 0), 20_000, false, Lane::Backfill);
        // Wi-Fi 4 Mbit/s 20 ms and cellular 8 Mbit/s 50 ms come back at once: the live
        // stream will fill Wi-Fi, so the backfill goes on the cellular (though Wi-Fi alone
        // would complete it sooner)
        let paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        assert_eq!(c.poll_send(back, &paths).map(|s| s.path), Some(0));
    }

    #[test]
    fn a_stale_live_edge_moves_to_the_newest_segment_start() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        // every uplink down for 10 s: 50 parts of 3 pieces queued, a segment every 5 parts
        for seq in 0..50u64 {
            for k in 0..3 {
                let at = t0 + Duration::from_millis(seq * 200 + k * 66);
                c.push(
                    at,
                    id(seq, k * 1000),
                    1000,
                    seq % 5 == 0 && k == 0,
                    Lane::Live,
                );
            }
        }
        let now = t0 + Duration::from_millis(10_000);
        let demoted = c.demote_stale(now);
        assert_eq!(demoted.len(), 45);
        assert_eq!(c.waiting(), (15, 135));
        // a part's pieces that never went out become one
        assert!(c.merge_part(0, 3, 3000));
        assert_eq!(c.waiting(), (15, 133));
        assert!(!c.merge_part(0, 46, 3000), "live pieces stay as they are");
        // the links return: the live edge (part 45, a segment start) goes first
        let paths = vec![path(0, 8.0, 50, 0, Tier::Primary)];
        assert_eq!(c.poll_send(now, &paths).unwrap().id, id(45, 0));
        // nothing is stale while the newest segment start is the oldest live piece
        assert!(c.demote_stale(now + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn a_new_timeline_moves_the_live_edge_at_once() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Contribution::default();
        // the main stream's part 7 went on a path still estimated at 8 Mbit/s, which then
        // collapsed: overdue at 300 ms; part 8 waits behind it
        let estimated = vec![path(0, 8.0, 50, 0, Tier::Primary)];
        c.push(t0, id(7, 0), 20_000, true, Lane::Live);
        assert_eq!(c.poll_send(t0, &estimated).unwrap().id, id(7, 0));
        c.push(t0 + 100 * ms, id(8, 0), 20_000, false, Lane::Live);
        // the substream's first part, a segment start on a new timeline
        let now = t0 + 300 * ms;
        c.push(now, id(9, 0), 5_000, true, Lane::Live);
        assert!(c.demote_stale(now).is_empty(), "young, and no new timeline");
        c.timeline_starts(0, 9);
        assert_eq!(c.demote_stale(now), vec![(0, 7), (0, 8)]);
        let off: Vec<PieceId> = c.take_cancelled().iter().map(|(id, _, _)| *id).collect();
        assert_eq!(off, vec![id(7, 0)], "the overdue flight is called off");
        // the new timeline goes first, and its first part on a second path at once
        let slow = vec![
            path(0, 0.25, 50, 0, Tier::Primary),
            path(1, 0.25, 60, 0, Tier::Primary),
        ];
        let first = c.poll_send(now, &slow).unwrap();
        assert_eq!((first.id, first.kind), (id(9, 0), SendKind::First));
        let copy = c.poll_send(now, &slow).unwrap();
        assert_eq!((copy.id, copy.kind), (id(9, 0), SendKind::Copy));
        assert_ne!(copy.path, first.path);
    }

    #[test]
    fn a_left_behind_flight_is_called_off_once_overdue_not_only_when_the_edge_moves() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut c = Contribution::default();
        // the main stream's last part goes on a path back from silence, estimated at its
        // old 8 Mbit/s: on time when the substream's timeline starts 50 ms later
        let estimated = vec![path(0, 8.0, 50, 0, Tier::Primary)];
        c.push(t0, id(7, 0), 70_000, true, Lane::Live);
        let sent = c.poll_send(t0, &estimated).unwrap();
        assert_eq!(sent.id, id(7, 0));
        let now = t0 + 50 * ms;
        c.push(now, id(8, 0), 2_000, true, Lane::Live);
        c.timeline_starts(0, 8);
        assert_eq!(c.demote_stale(now), vec![(0, 7)]);
        assert!(c.take_cancelled().is_empty(), "on time: it stays");
        // the link carries 0.25 Mbit/s: the flight comes due and is called off
        let deadline = c.poll_timeout(now).unwrap();
        assert!(c.demote_stale(deadline - ms).is_empty());
        assert!(c.take_cancelled().is_empty(), "not due yet");
        assert!(c.demote_stale(deadline).is_empty(), "no part moves again");
        assert_eq!(c.take_cancelled(), vec![(id(7, 0), 0, t0)]);
        // a backfill flight past its deadline is no live media's obstacle: it stays
        let idle = vec![path(0, 8.0, 50, 0, Tier::Primary)];
        let later = deadline + 10 * ms;
        let sends: Vec<Send> = std::iter::from_fn(|| c.poll_send(later, &idle)).collect();
        let again = sends.iter().find(|s| s.id == id(7, 0)).expect("sent again");
        assert_eq!((again.lane, again.kind), (Lane::Backfill, SendKind::Again));
        c.demote_stale(later + Duration::from_secs(5));
        assert!(
            c.take_cancelled().is_empty(),
            "sent as backfill: not called off"
        );
    }

    #[test]
    fn a_path_back_from_silence_gets_what_its_answers_clock_not_its_old_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        // a short round trip: the horizon's worth at a capped rate would be several
        // windows, so only a limit on what is under way holds the path
        for rtt in [120, 20] {
            let mut c = Contribution::default();
            // a path that was carrying the stream: its window over its RTT reads 46 Mbit/s
            let up = vec![path(0, 46.0, rtt, 0, Tier::Primary)];
            c.push(t0, id(0, 0), 1_000, true, Lane::Live);
            assert!(c.poll_send(t0, &up).is_some());
            c.acked(t0 + 50 * ms, id(0, 0), 0);
            // it goes down; twenty pieces of 10 kB wait
            let down = vec![PathView {
                usable: false,
                ..up[0].clone()
            }];
            let t1 = t0 + 100 * ms;
            assert!(c.poll_send(t1, &down).is_none());
            for k in 0..20u64 {
                c.push(t1, id(1 + k, 0), 10_000, k == 0, Lane::Live);
            }
            // it answers again: what goes on it at once is its return window, not 200 kB
            let t2 = t1 + 200 * ms;
            let sent: Vec<Send> = std::iter::from_fn(|| c.poll_send(t2, &up)).collect();
            let bytes: u64 = sent.iter().map(|s| s.len).sum();
            assert!((1..=RETURN_WINDOW).contains(&bytes), "{rtt} ms: {bytes}");
            // its answers open it up, as slow start would
            let t3 = t2 + Duration::from_millis(rtt);
            for s in &sent {
                c.acked(t3, s.id, 0);
            }
            let more: u64 = std::iter::from_fn(|| c.poll_send(t3, &up))
                .map(|s| s.len)
                .sum();
            assert!(more > bytes, "{rtt} ms: {more} after {bytes}");
            // and after the longest ramp it is held no more
            let t4 = t2 + RETURN_RAMP_MAX;
            let rest = std::iter::from_fn(|| c.poll_send(t4, &up)).count();
            assert!(rest as u64 * 10_000 > RETURN_WINDOW * 4, "{rtt} ms: {rest}");
        }
        // a path that never went out of use is not held: all of it goes at once
        let up = vec![path(0, 46.0, 120, 0, Tier::Primary)];
        let mut fresh = Contribution::default();
        for k in 0..10u64 {
            fresh.push(t0, id(k, 0), 30_000, k == 0, Lane::Live);
        }
        assert_eq!(std::iter::from_fn(|| fresh.poll_send(t0, &up)).count(), 10);
    }

    #[test]
    fn flights_nobody_waits_for_are_called_off() {
        let t0 = Instant::now();
        let mut c = Contribution::default();
        let paths = vec![
            path(0, 8.0, 50, 0, Tier::Primary),
            path(1, 4.0, 20, 0, Tier::Primary),
        ];
        // a late piece's copy answers first: its first flight is called off
        c.push(t0, id(1, 0), 10_000, false, Lane::Live);
        let first = c.poll_send(t0, &paths).unwrap();
        let late = t0 + Duration::from_millis(400);
        let copy = c.poll_send(late, &paths).unwrap();
        assert!(c.take_cancelled().is_empty(), "both copies are wanted");
        c.acked(late, id(1, 0), copy.path);
        assert_eq!(c.take_cancelled(), vec![(id(1, 0), first.path, t0)]);
        // a piece on a path the bond took out of use: called off, and it goes again
        c.push(late, id(2, 0), 1_000, false, Lane::Live);
        let s = c.poll_send(late, &paths).unwrap();
        let down: Vec<PathView> = paths
            .iter()
            .map(|p| PathView {
                usable: p.id != s.path,
                ..p.clone()
            })
            .collect();
        let again = c.poll_send(late, &down).unwrap();
        assert_eq!((again.id, again.kind), (id(2, 0), SendKind::Again));
        assert_eq!(c.take_cancelled(), vec![(id(2, 0), s.path, late)]);
        // only silent for a moment: the piece goes again elsewhere, its flight goes on
        c.acked(late, id(2, 0), again.path);
        c.take_cancelled();
        c.push(late, id(3, 0), 1_000, false, Lane::Live);
        let s = c.poll_send(late, &paths).unwrap();
        let quiet: Vec<PathView> = paths
            .iter()
            .map(|p| PathView {
                silent: if p.id == s.path {
                    Duration::from_millis(150)
                } else {
                    Duration::ZERO
                },
                ..p.clone()
            })
            .collect();
        assert_eq!(c.poll_send(late, &quiet).unwrap().kind, SendKind::Again);
        assert!(c.take_cancelled().is_empty());
    }

    #[test]
    fn overdue_flights_the_live_edge_left_behind_are_called_off() {
        let t0 = Instant::now();
        let mut c = Contribution::new(ContributionConfig {
            copy_budget: 0.0,
            copy_allowance: 0,
            ..ContributionConfig::default()
        });
        let paths = vec![path(0, 8.0, 50, 0, Tier::Primary)];
        // two pieces of a segment sent; the second one late, so on time still at the end
        c.push(t0, id(0, 0), 1_000, true, Lane::Live);
        c.poll_send(t0, &paths).unwrap();
        let t1 = t0 + Duration::from_millis(1_050);
        c.push(t1, id(1, 0), 1_000, false, Lane::Live);
        c.poll_send(t1, &paths).unwrap();
        c.push(t1, id(5, 0), 1_000, true, Lane::Live);
        // the first piece is stale and overdue, the second on time: only the first stops
        let demoted = c.demote_stale(t1 + Duration::from_millis(10));
        assert_eq!(demoted, vec![(0, 0), (0, 1)]);
        assert_eq!(c.take_cancelled(), vec![(id(0, 0), 0, t0)]);
        assert_eq!(c.waiting(), (1, 2));
        // the called-off piece goes again, as backfill, once the live piece is out
        let next: Vec<Send> =
            std::iter::from_fn(|| c.poll_send(t1 + Duration::from_millis(20), &paths)).collect();
        assert!(next
            .iter()
            .any(|s| s.id == id(0, 0) && s.lane == Lane::Backfill && s.kind == SendKind::Again));
    }
}
