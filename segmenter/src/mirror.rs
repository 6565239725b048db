//! The relay's copy of one rendition of a gateway's camera, rebuilt from the pieces the
//! gateway sends over its bonded uplinks. Pieces arrive out of order, twice (a late piece is
//! sent again on a faster path), or not at all (every uplink down); the mirror keeps the first
//! copy of each byte, puts parts back together, and keeps a viewer-facing [`LiveWindow`]
//! that never waits for long and never skips a number:
//!
//! - **following**: parts go into the window in order as their bytes arrive, chunk by chunk,
//!   so the hinted part can be served while it is still being built;
//! - **holding**: when no part is finished for `stall_after` (bytes trickling in over a
//!   collapsed link are no progress: a player plays whole parts), the segment is
//!   closed and filler parts keep the playlist advancing in real time for up to `hold`;
//!   then the stream is marked ended (EXT-X-ENDLIST). A filler part is a still part
//!   ([`crate::still`]: the last keyframe held, silent audio) when the stream allows one,
//!   else a gap part (GAP=YES, EXT-X-GAP);
//! - **resuming**: the newest segment start the gateway sends on its live lane resumes the
//!   window after a discontinuity (the live edge first); what was missed in between still
//!   completes here, for the recording, whenever the gateway backfills it;
//! - **switching**: when a newer timeline's first part is here (the gateway's program
//!   switched source, a lower level at a collapse, say) and the part the window waits for
//!   takes no bytes for `switch_after`, the window moves on to the new timeline at once,
//!   without filler parts: the gateway moved its live edge there and backfills the rest.
//!
//! The window has its own numbering (media sequence and part sequence): the gateway's parts
//! of an outage are not in it, but filler parts are. Every part of the gateway, live or
//! backfilled, comes out once, in the gateway's numbering, for the recording.
//!
//! Sans-IO: every call takes `now`; no clock, no I/O.

use crate::still::StillMaker;
use crate::window::{LiveWindow, StreamInfo, WindowConfig};
use crate::{Chunk, Part, PartMeta, SegmentStart};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest part accepted, bytes (the segmenter cuts parts at 16 MiB of samples).
pub const MAX_PART_BYTES: u64 = 17 << 20;
/// Longest part accepted, µs.
pub const MAX_PART_US: u64 = 60_000_000;
/// Parts remembered as done above the watermark before the watermark is forced up.
const DONE_MAX: usize = 100_000;
/// An incomplete part untouched for this long is dropped.
const ASSEMBLY_TTL: Duration = Duration::from_secs(300);
/// A piece sent as live but captured longer ago than this is taken as backfill: the window
/// never resumes on old media, whatever the sender thought.
pub const LIVE_HORIZON_MS: u64 = 5_000;

/// Mirror settings.
#[derive(Debug, Clone, Copy)]
pub struct MirrorConfig {
    /// The viewer-facing window.
    pub window: WindowConfig,
    /// No part finished for this long: filler parts begin.
    pub stall_after: Duration,
    /// No bytes for this long while a newer timeline's first part is here (sent live,
    /// opening a discontinuity: the gateway's program switched source, say to a lower
    /// level at a collapse): the window moves on to it. The gateway moved its live edge
    /// there at once and sends what is left of the old timeline as backfill.
    pub switch_after: Duration,
    /// Filler parts for this long: the stream is marked ended.
    pub hold: Duration,
    /// Bytes of incomplete or out-of-order parts held at most.
    pub max_pending_bytes: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            window: WindowConfig {
                part_hold_back: 1.0,
                playlist_segments: 20,
                ..WindowConfig::default()
            },
            stall_after: Duration::from_millis(1000),
            switch_after: Duration::from_millis(250),
            hold: Duration::from_secs(60),
            max_pending_bytes: 64 << 20,
        }
    }
}

/// The least TARGETDURATION (whole seconds) with which a player waits out the longest the
/// playlist stands still: `stall_after` without progress (then filler parts begin) plus a
/// part. hls.js gives up on a blocking playlist reload after max(3 part targets, 0.8 target
/// durations): with 1 s segments that is 800 ms, shorter than a failover's worst stall, so
/// a viewer got an error while the relay was still within its own rule. A larger target
/// duration is allowed (it bounds segment lengths from above) and changes no part.
pub fn target_duration_to_wait_out(stall_after: Duration, part_target: f64) -> f64 {
    ((stall_after.as_secs_f64() + part_target) / 0.8).ceil()
}

/// A piece of a part as it arrives.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The gateway's timeline the part belongs to (a gateway restart starts a new one).
    pub run: u64,
    /// The part, in the gateway's numbering.
    pub part: PartMeta,
    /// Byte offset in the part.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Media time of the piece's end, µs from the part's start; 0 when it does not end
    /// where a CMAF chunk does (then a part cut short may not end there).
    pub end_us: u64,
    /// The part ends with this piece.
    pub last: bool,
    /// With `last`: the part is its segment's last (the next part opens a segment).
    pub ends_segment: bool,
    /// Sent on the gateway's live lane (the live edge), not as backfill.
    pub live: bool,
    /// Capture time of the newest frame in the piece, ms (relay clock; 0 when unknown).
    pub frame_ms: u64,
}

/// Why a piece was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    /// Offsets, sizes or times out of bounds.
    #[error("piece out of bounds: {0}")]
    Bounds(&'static str),
    /// It contradicts what earlier pieces of the part said.
    #[error("piece contradicts its part: {0}")]
    Conflict(&'static str),
}

/// What became of a piece.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Bytes not seen before.
    pub new_bytes: u64,
    /// Bytes already held (a copy).
    pub duplicate_bytes: u64,
    /// The part it completed, in the gateway's numbering (for the recording).
    pub completed: Option<Arc<Part>>,
    /// The gateway's init generation the piece needs and the mirror has not got.
    pub needs_init: Option<u32>,
    /// The timeline changed with this piece (a gateway restart).
    pub new_run: bool,
}

/// Where the mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for a segment start to begin with.
    Waiting,
    /// Following the gateway's parts.
    Following,
    /// No media: filler parts keep the playlist going.
    Holding,
    /// The hold ran out: the playlist has ended.
    Ended,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorStats {
    /// Parts put together.
    pub parts: u64,
    /// Gap parts listed (filler without media).
    pub gap_parts: u64,
    /// Still parts listed (filler with the picture held and silent audio).
    pub still_parts: u64,
    /// Times the window resumed after a hold.
    pub resumes: u64,
    /// Incomplete parts dropped (never finished, or over the memory bound).
    pub parts_dropped: u64,
    /// Bytes taken, first copies.
    pub new_bytes: u64,
    /// Bytes that were copies.
    pub duplicate_bytes: u64,
}

#[derive(Debug)]
struct Assembly {
    meta: PartMeta,
    /// offset → (bytes, end µs of the piece, last)
    pieces: BTreeMap<u64, (Bytes, u64, bool)>,
    /// Bytes held in `pieces`.
    held: u64,
    /// The part's length, once its last piece came.
    total: Option<u64>,
    /// The part's duration, once its last piece came.
    duration_us: Option<u64>,
    /// Its segment ends with it (said by its last piece).
    ends_segment: bool,
    /// Its place in the window, once its first bytes went there.
    window_meta: Option<PartMeta>,
    /// Bytes handed to the window.
    fed: u64,
    /// Media time the fed bytes reach, µs.
    fed_end_us: u64,
    /// The window has the whole part.
    fed_all: bool,
    /// A piece of it came on the live lane.
    live: bool,
    /// It went out for the recording.
    recorded: bool,
    touched: Instant,
}

impl Assembly {
    fn new(meta: PartMeta, now: Instant) -> Self {
        Self {
            meta,
            pieces: BTreeMap::new(),
            held: 0,
            total: None,
            duration_us: None,
            ends_segment: false,
            window_meta: None,
            fed: 0,
            fed_end_us: 0,
            fed_all: false,
            live: false,
            recorded: false,
            touched: now,
        }
    }

    /// Bytes from offset 0 without a hole.
    fn contiguous(&self) -> u64 {
        let mut end = 0;
        for (off, (d, _, _)) in &self.pieces {
            if *off > end {
                break;
            }
            end = end.max(off + d.len() as u64);
        }
        end
    }

    fn complete(&self) -> bool {
        self.total.is_some_and(|t| self.contiguous() >= t)
    }

    /// Sent live, opening a segment, and begun: a part the window may resume on.
    fn opens_live_segment(&self) -> bool {
        self.live && self.meta.segment.is_some() && self.contiguous() > 0
    }

    /// Takes a piece; returns the bytes it added.
    fn insert(&mut self, p: &Piece) -> Result<u64, PieceError> {
        let len = p.data.len() as u64;
        let end = p.offset + len;
        if p.last {
            match self.total {
                Some(t) if t != end => return Err(PieceError::Conflict("another length")),
                _ => {
                    self.total = Some(end);
                    self.duration_us = Some(p.end_us);
                    self.ends_segment = p.ends_segment;
                }
            }
        }
        if self.total.is_some_and(|t| end > t) {
            return Err(PieceError::Conflict("bytes beyond the part's end"));
        }
        // bytes of [offset, end) already held
        let mut covered = 0u64;
        for (off, (d, _, _)) in self.pieces.range(..end.max(p.offset + 1)) {
            let (lo, hi) = ((*off).max(p.offset), (off + d.len() as u64).min(end));
            covered += hi.saturating_sub(lo);
        }
        let new = len.saturating_sub(covered);
        let keep = match self.pieces.get(&p.offset) {
            // a longer piece at the same offset stays; an end marker is kept once
            Some((d, _, last)) => (d.len() as u64) < len || (p.last && !*last),
            None => new > 0 || p.last,
        };
        if keep {
            if let Some((old, _, _)) = self
                .pieces
                .insert(p.offset, (p.data.clone(), p.end_us, p.last))
            {
                self.held -= old.len() as u64;
            }
            self.held += len;
        }
        Ok(new)
    }

    /// The whole part's bytes.
    fn bytes(&self) -> Bytes {
        let total = self.total.unwrap_or(0);
        if let Some((d, _, _)) = self
            .pieces
            .get(&0)
            .filter(|(d, _, _)| d.len() as u64 == total)
        {
            return d.clone();
        }
        let mut out = BytesMut::with_capacity(total as usize);
        for (off, (d, _, _)) in &self.pieces {
            let have = out.len() as u64;
            let end = off + d.len() as u64;
            if *off <= have && end > have {
                out.extend_from_slice(&d[(have - off) as usize..]);
            }
        }
        out.truncate(total as usize);
        out.freeze()
    }

    /// The next bytes for the window after what it has: (bytes, end µs, last).
    fn next_feed(&self) -> Option<(Bytes, u64, bool)> {
        let at = self.fed;
        let mut best: Option<(Bytes, u64, bool)> = None;
        for (off, (d, end_us, last)) in self.pieces.range(..=at) {
            let end = off + d.len() as u64;
            let useful = end > at || (end == at && *last && self.total == Some(at));
            if useful
                && best
                    .as_ref()
                    .is_none_or(|(b, _, _)| (end - at) as usize > b.len())
            {
                best = Some((d.slice((at - off) as usize..), *end_us, *last));
            }
        }
        best
    }
}

#[derive(Debug, Clone, Copy)]
enum Live {
    /// Nothing to follow: the next live segment start begins the window (again).
    Waiting,
    Following {
        /// The gateway part the window takes next.
        next: u64,
        /// Window msn minus gateway msn.
        delta: i64,
        /// When the window last finished a part (or began following): a stall counts
        /// from here.
        last_done: Instant,
        /// When the window last took bytes of a part: a switch to a newer timeline counts
        /// from here (the old timeline's last part, cut at the switch, is on its way).
        last_bytes: Instant,
    },
    Holding {
        /// Resume only at a part after this one (the window had it, or gave up on it).
        after: Option<u64>,
        /// When the media stopped.
        since: Instant,
        /// Gap time listed so far, µs.
        listed_us: u64,
    },
    Ended,
}

/// The window's open segment.
#[derive(Debug, Clone, Copy)]
struct OpenSegment {
    msn: u64,
    parts: u32,
    /// Made of filler parts (still or gap).
    filler: bool,
}

/// The relay's mirror of one rendition.
pub struct Mirror {
    cfg: MirrorConfig,
    window: LiveWindow,
    run: Option<u64>,
    assemblies: BTreeMap<u64, Assembly>,
    pending: u64,
    done_below: u64,
    done: BTreeSet<u64>,
    live: Live,
    /// The next window segment resumes after a break (discontinuity).
    resumed: bool,
    /// The window's next segment number.
    next_msn: u64,
    open: Option<OpenSegment>,
    /// PDT at the end of the window's last part, ms.
    pdt_end_ms: u64,
    /// Init generation of the window's last part.
    last_init: u32,
    /// (run, gateway init generation) → window init generation.
    inits: HashMap<(u64, u32), u32>,
    next_init: u32,
    /// Makes the still parts of a hold from the parts the window took.
    still: StillMaker,
    stats: MirrorStats,
}

impl Mirror {
    /// A mirror whose window numbers its segments from `first_msn` (a relay starts it at
    /// the Unix time in seconds, so a restarted relay never reuses a URL a cache may hold).
    pub fn new(mut cfg: MirrorConfig, first_msn: u64) -> Self {
        cfg.window.min_target_duration =
            cfg.window
                .min_target_duration
                .max(target_duration_to_wait_out(
                    cfg.stall_after,
                    cfg.window.part_target,
                ));
        Self {
            cfg,
            window: LiveWindow::new(cfg.window, 0),
            run: None,
            assemblies: BTreeMap::new(),
            pending: 0,
            done_below: 0,
            done: BTreeSet::new(),
            live: Live::Waiting,
            resumed: false,
            next_msn: first_msn,
            open: None,
            pdt_end_ms: 0,
            last_init: 0,
            inits: HashMap::new(),
            next_init: 0,
            still: StillMaker::new(),
            stats: MirrorStats::default(),
        }
    }

    /// The viewer-facing window.
    pub fn window(&mut self) -> &mut LiveWindow {
        &mut self.window
    }

    /// The viewer-facing window, read only.
    pub fn window_ref(&self) -> &LiveWindow {
        &self.window
    }

    /// Where the mirror stands.
    pub fn state(&self) -> State {
        match self.live {
            Live::Waiting => State::Waiting,
            Live::Following { .. } => State::Following,
            Live::Holding { .. } => State::Holding,
            Live::Ended => State::Ended,
        }
    }

    /// Counters.
    pub fn stats(&self) -> MirrorStats {
        self.stats
    }

    /// The gateway's current timeline.
    pub fn run(&self) -> Option<u64> {
        self.run
    }

    /// Bytes of parts held while incomplete or waiting for the window.
    pub fn pending_bytes(&self) -> u64 {
        self.pending
    }

    fn window_init(&mut self, run: u64, gen: u32) -> u32 {
        let next = &mut self.next_init;
        *self.inits.entry((run, gen)).or_insert_with(|| {
            let g = *next;
            *next += 1;
            g
        })
    }

    /// An init segment of timeline `run`, with what the multivariant playlist says. The
    /// window may now take the parts that waited for it.
    pub fn handle_init(
        &mut self,
        now: Instant,
        run: u64,
        generation: u32,
        data: Bytes,
        info: StreamInfo,
    ) {
        if self.run != Some(run) {
            self.new_run(run);
        }
        let g = self.window_init(run, generation);
        if self.still.generation() == Some(g) && self.still.lacks_init() {
            // the window took its parts with an init it has since let go of, sent again
            self.still.set_init(g, Some(&data));
        }
        self.window.add_init(g, data);
        if !info.codecs.is_empty() {
            self.window.set_info(info);
        }
        self.resume_if_due(now);
        self.advance(now);
    }

    /// The init segment of the current timeline's generation `gen` is here: the window
    /// lists a part's map only once it can serve it (a player that reads the map first
    /// gets a 404 otherwise, and a new level's parts may overtake its init on the way).
    fn init_here(&self, gen: u32) -> bool {
        self.run
            .and_then(|r| self.inits.get(&(r, gen)))
            .is_some_and(|g| self.window.init(*g).is_some())
    }

    /// The window may resume (or switch) on `a`: it opens a live segment and its init
    /// segment is here.
    fn may_open(&self, a: &Assembly) -> bool {
        a.opens_live_segment() && self.init_here(a.meta.init)
    }

    fn new_run(&mut self, run: u64) {
        if self.run.is_some() {
            // the gateway restarted: what it had not finished sending is gone
            self.stats.parts_dropped +=
                self.assemblies.values().filter(|a| !a.recorded).count() as u64;
            self.assemblies.clear();
            self.pending = 0;
            match self.live {
                Live::Following { .. } => {
                    self.cut_short(None);
                    self.live = Live::Waiting;
                    self.resumed = true;
                }
                Live::Holding { .. } => self.resumed = true,
                Live::Waiting | Live::Ended => {}
            }
        }
        self.run = Some(run);
        self.done_below = 0;
        self.done.clear();
    }

    fn is_done(&self, seq: u64) -> bool {
        seq < self.done_below || self.done.contains(&seq)
    }

    fn mark_done(&mut self, seq: u64) {
        self.done.insert(seq);
        while self.done.remove(&self.done_below) {
            self.done_below += 1;
        }
        if self.done.len() > DONE_MAX {
            // holes that never filled: forget them
            if let Some(&first) = self.done.iter().next() {
                self.done_below = first;
                while self.done.remove(&self.done_below) {
                    self.done_below += 1;
                }
            }
        }
    }

    /// Takes a piece at `now` (`wall_ms`: the relay's wall clock, for how old it is).
    pub fn handle_piece(
        &mut self,
        now: Instant,
        wall_ms: u64,
        mut p: Piece,
    ) -> Result<Taken, PieceError> {
        if p.live && p.part.capture_ms > 0 && p.part.capture_ms + LIVE_HORIZON_MS < wall_ms {
            p.live = false;
        }
        let end = p
            .offset
            .checked_add(p.data.len() as u64)
            .ok_or(PieceError::Bounds("offset"))?;
        if end > MAX_PART_BYTES {
            return Err(PieceError::Bounds("part over 17 MiB"));
        }
        if p.end_us > MAX_PART_US {
            return Err(PieceError::Bounds("part over 60 s"));
        }
        if p.last && p.end_us == 0 && !p.data.is_empty() {
            return Err(PieceError::Bounds(
                "a part's last piece without its duration",
            ));
        }
        if p.part.index > 10_000 {
            return Err(PieceError::Bounds("part index"));
        }
        if (p.part.index == 0) != p.part.segment.is_some() {
            return Err(PieceError::Conflict(
                "a segment's first part, and only it, starts a segment",
            ));
        }
        let mut taken = Taken::default();
        if self.run != Some(p.run) {
            self.new_run(p.run);
            taken.new_run = true;
        }
        let seq = p.part.seq;
        let len = p.data.len() as u64;
        if self.is_done(seq) {
            self.stats.duplicate_bytes += len;
            taken.duplicate_bytes = len;
            return Ok(taken);
        }
        let a = self
            .assemblies
            .entry(seq)
            .or_insert_with(|| Assembly::new(p.part, now));
        // capture times may differ between pieces (the gateway's clock estimate moves):
        // only what places the part must agree
        let (x, y) = (&a.meta, &p.part);
        if (x.msn, x.index, x.init, x.independent, x.segment.is_some())
            != (y.msn, y.index, y.init, y.independent, y.segment.is_some())
        {
            return Err(PieceError::Conflict("another part under the same number"));
        }
        let before = a.held;
        let new = a.insert(&p)?;
        a.live |= p.live;
        a.touched = now;
        self.pending = (self.pending + a.held).saturating_sub(before);
        taken.new_bytes = new;
        taken.duplicate_bytes = len - new.min(len);
        self.stats.new_bytes += new;
        self.stats.duplicate_bytes += taken.duplicate_bytes;
        if a.complete() && !a.recorded {
            a.recorded = true;
            let mut part = Part::new(a.meta, a.duration_us.unwrap_or(0) as f64 / 1e6, a.bytes());
            part.gap = false;
            taken.completed = Some(Arc::new(part));
        }
        self.window_init(p.run, p.part.init);
        if !self.init_here(p.part.init) {
            taken.needs_init = Some(p.part.init);
        }
        self.resume_if_due(now);
        self.advance(now);
        self.tidy(seq);
        self.bound_memory();
        Ok(taken)
    }

    /// Whether the window may still take gateway part `seq`.
    fn window_may_need(&self, seq: u64, live: bool) -> bool {
        match self.live {
            Live::Following { next, .. } => seq >= next,
            Live::Holding { after, .. } => live && after.is_none_or(|a| seq > a),
            Live::Waiting | Live::Ended => live,
        }
    }

    /// Forgets part `seq` once it is recorded and the window does not need it.
    fn tidy(&mut self, seq: u64) {
        let Some(a) = self.assemblies.get(&seq) else {
            return;
        };
        let needed = !a.fed_all && self.window_may_need(seq, a.live);
        if a.recorded && !needed {
            if let Some(a) = self.assemblies.remove(&seq) {
                self.pending = self.pending.saturating_sub(a.held);
            }
            self.mark_done(seq);
        }
    }

    fn bound_memory(&mut self) {
        while self.pending > self.cfg.max_pending_bytes {
            let keep = match self.live {
                Live::Following { next, .. } => Some(next),
                _ => None,
            };
            // the oldest part the window does not need goes first, then the oldest at all
            let victim = self
                .assemblies
                .iter()
                .find(|(s, a)| Some(**s) != keep && !self.window_may_need(**s, a.live))
                .or_else(|| self.assemblies.iter().find(|(s, _)| Some(**s) != keep))
                .map(|(s, _)| *s);
            let Some(seq) = victim else { break };
            if let Some(a) = self.assemblies.remove(&seq) {
                self.pending = self.pending.saturating_sub(a.held);
                if a.recorded {
                    self.mark_done(seq);
                } else {
                    self.stats.parts_dropped += 1;
                }
            }
        }
    }

    /// In a hold (or before the start, or after the end), the newest live segment start
    /// beyond what the window had resumes it.
    fn resume_if_due(&mut self, now: Instant) {
        let after = match self.live {
            Live::Following { .. } => return,
            Live::Holding { after, .. } => after,
            Live::Waiting | Live::Ended => None,
        };
        let Some((seq, gw_msn)) = self.resume_start(after).map(|(s, a)| (s, a.meta.msn)) else {
            return;
        };
        match self.live {
            Live::Holding { .. } => {
                self.window.close_segment();
                self.open = None;
                self.stats.resumes += 1;
                self.resumed = true;
            }
            Live::Ended => {
                // a fresh playlist: the ended one cannot grow again
                let mut w = LiveWindow::new(self.cfg.window, self.window.next_seq());
                for (g, d) in self.window.inits() {
                    w.add_init(g, d.clone());
                }
                w.set_info(self.window.info().clone());
                self.window = w;
                self.open = None;
                self.resumed = false;
                self.stats.resumes += 1;
            }
            _ => {}
        }
        let delta = self.next_msn as i64 - gw_msn as i64;
        self.live = Live::Following {
            next: seq,
            delta,
            last_done: now,
            last_bytes: now,
        };
        // what came before the resumed part is for the recording only
        let older: Vec<u64> = self.assemblies.range(..seq).map(|(s, _)| *s).collect();
        for s in older {
            self.tidy(s);
        }
    }

    /// Feeds the window from the part it takes next, as far as the bytes go.
    fn advance(&mut self, now: Instant) {
        loop {
            let Live::Following {
                next,
                delta,
                last_done,
                ..
            } = self.live
            else {
                return;
            };
            let Some(a) = self.assemblies.get(&next) else {
                return;
            };
            if a.window_meta.is_none() && !self.init_here(a.meta.init) {
                // its init segment is on its way ([`Mirror::handle_init`] goes on)
                return;
            }
            let wmeta = match a.window_meta {
                Some(m) => m,
                None => {
                    let gw = a.meta;
                    let init = self.window_init(self.run.unwrap_or(0), gw.init);
                    let segment = gw.segment.map(|s| SegmentStart {
                        discontinuity: s.discontinuity || std::mem::take(&mut self.resumed),
                        pdt_ms: s.pdt_ms,
                    });
                    PartMeta {
                        seq: self.window.next_seq(),
                        msn: (gw.msn as i64 + delta).max(0) as u64,
                        init,
                        segment,
                        ..gw
                    }
                }
            };
            let mut progressed = false;
            let mut finished = None;
            if let Some(a) = self.assemblies.get_mut(&next) {
                a.window_meta = Some(wmeta);
                while let Some((data, end_us, last)) = a.next_feed() {
                    let last = last && a.total == Some(a.fed + data.len() as u64);
                    let chunk = Chunk {
                        part: wmeta,
                        offset: a.fed,
                        data,
                        end_us,
                        last,
                        ends_segment: last && a.ends_segment,
                        frame_ms: 0,
                    };
                    match self.window.push_chunk(&chunk) {
                        Ok(done) => {
                            a.fed += chunk.data.len() as u64;
                            a.fed_end_us = end_us;
                            progressed = true;
                            if let Some(p) = done {
                                a.fed_all = true;
                                finished = Some(p);
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "mirror: window refused a chunk");
                            return;
                        }
                    }
                }
            }
            if progressed {
                // bytes alone do not put off a stall: a player plays whole parts, and a part
                // that trickles in over a collapsed link leaves it with nothing to play
                self.live = Live::Following {
                    next,
                    delta,
                    last_done,
                    last_bytes: now,
                };
            }
            let Some(p) = finished else {
                return;
            };
            self.note_window_part(&p, false);
            self.live = Live::Following {
                next: next + 1,
                delta,
                last_done: now,
                last_bytes: now,
            };
            self.tidy(next);
        }
    }

    /// Keeps the window's segment numbering and timeline in step with a part it took
    /// (`filler`: one the mirror made for a hold), and the still parts with the media.
    fn note_window_part(&mut self, p: &Part, filler: bool) {
        if !filler {
            self.stats.parts += 1;
            if self.still.generation() != Some(p.init) {
                self.still
                    .set_init(p.init, self.window.init(p.init).as_ref());
            }
            self.still.take(&p.data);
        }
        if let Some(s) = p.segment {
            self.open = Some(OpenSegment {
                msn: p.msn,
                parts: 0,
                filler,
            });
            self.pdt_end_ms = s.pdt_ms;
            self.next_msn = self.next_msn.max(p.msn + 1);
        }
        if let Some(o) = self.open.as_mut() {
            o.parts += 1;
        }
        self.pdt_end_ms += (p.duration * 1000.0).round() as u64;
        self.last_init = p.init;
    }

    /// Ends the part the window is building (gateway part `next`) with what it has, when
    /// that ends at a chunk's end (whole chunks are still media; else, or with `next`
    /// `None`, the part is given up on), and closes the segment.
    fn cut_short(&mut self, next: Option<u64>) {
        if let Some((meta, _)) = self.window.growing() {
            let a = next.and_then(|n| self.assemblies.get(&n));
            let (offset, end_us) = a.map_or((0, 0), |a| (a.fed, a.fed_end_us));
            if end_us > 0 && offset > 0 {
                let end = Chunk {
                    part: meta,
                    offset,
                    data: Bytes::new(),
                    end_us,
                    last: true,
                    ends_segment: false,
                    frame_ms: 0,
                };
                if let Ok(Some(p)) = self.window.push_chunk(&end) {
                    self.note_window_part(&p, false);
                }
            } else {
                self.give_up_growing();
            }
        }
        self.window.close_segment();
        self.open = None;
    }

    /// Lists the hold's next filler part: a still part if one can be made, else a gap part.
    fn push_filler(&mut self) {
        let part_s = self.cfg.window.part_target;
        let per_segment = (self.cfg.window.segment_target / part_s).round().max(1.0) as u32;
        let (msn, index) = match self.open {
            Some(o) if o.filler && o.parts < per_segment => (o.msn, o.parts),
            _ => {
                let m = self.next_msn;
                self.next_msn += 1;
                (m, 0)
            }
        };
        let still = self.still.part(part_s, index == 0);
        let meta = PartMeta {
            seq: self.window.next_seq(),
            msn,
            index,
            independent: still.as_ref().is_some_and(|s| s.independent),
            init: self.last_init,
            capture_ms: 0,
            segment: (index == 0).then_some(SegmentStart {
                discontinuity: false,
                pdt_ms: self.pdt_end_ms,
            }),
        };
        let is_still = still.is_some();
        let mut part = Part::new(meta, part_s, still.map(|s| s.data).unwrap_or_default());
        part.gap = !is_still;
        match self.window.push_part(part) {
            Ok(p) => {
                self.note_window_part(&p, true);
                if index + 1 >= per_segment {
                    // a full filler segment closes now: the preload hint names the next
                    // segment's first part, not a part after this segment's last (a part
                    // that never comes)
                    self.window.close_segment();
                }
                if is_still {
                    self.stats.still_parts += 1;
                } else {
                    self.stats.gap_parts += 1;
                }
            }
            Err(e) => tracing::warn!(error = %e, "mirror: filler part refused"),
        }
    }

    /// When the window stops waiting for gateway part `next`: `stall_after` after it last
    /// finished a part, or, once a newer timeline's first part is here, `switch_after`
    /// after it last took bytes of `next` (if sooner).
    fn wait_until(&self, next: u64, last_done: Instant, last_bytes: Instant) -> Instant {
        let stall = last_done + self.cfg.stall_after;
        if self.newer_timeline_after(next) {
            stall.min(last_bytes + self.cfg.switch_after)
        } else {
            stall
        }
    }

    /// The newest live segment start after gateway part `after` the window may open: a
    /// hold resumes on it at once ([`Mirror::resume_if_due`]).
    fn resume_start(&self, after: Option<u64>) -> Option<(u64, &Assembly)> {
        self.assemblies
            .iter()
            .rev()
            .find(|(s, a)| self.may_open(a) && after.is_none_or(|x| **s > x))
            .map(|(s, a)| (*s, a))
    }

    /// Drops the part the window is building. Filler parts date their segments from the
    /// window's last part: with none yet (the window began on this one), from where this
    /// one's segment began.
    fn give_up_growing(&mut self) {
        if self.pdt_end_ms == 0 {
            if let Some(s) = self.window.growing().and_then(|(m, _)| m.segment) {
                self.pdt_end_ms = s.pdt_ms;
            }
        }
        self.window.abandon_growing();
    }

    /// A newer timeline's first part is here, after gateway part `next`.
    fn newer_timeline_after(&self, next: u64) -> bool {
        self.assemblies
            .range(next + 1..)
            .any(|(_, a)| self.may_open(a) && a.meta.segment.is_some_and(|s| s.discontinuity))
    }

    /// Runs the clock: a stall begins a hold, a hold lists filler parts and ends the stream
    /// when it runs out; old incomplete parts are dropped. A stall with a newer timeline's
    /// first part here resumes on it at once (no filler parts).
    pub fn poll(&mut self, now: Instant) {
        if let Live::Following {
            next,
            last_done,
            last_bytes,
            ..
        } = self.live
        {
            if now >= self.wait_until(next, last_done, last_bytes) {
                let had = self.window.growing().is_some_and(|(m, _)| {
                    self.assemblies.get(&next).and_then(|a| a.window_meta) == Some(m)
                });
                let after = if had { Some(next) } else { next.checked_sub(1) };
                // when the window moves on at once (a switch, or a later segment start),
                // what the part under way has is still media: it is cut short. When filler
                // parts follow, it is given up (`None`) and the still parts go on from the
                // last whole part: a cut-short part reached hls.js after the still parts
                // listed with it (its request was the preload hint, open since before the
                // stall); appended late, behind them, it left Chromium's buffer taking no
                // picture after the next still keyframe: each later part "had no media",
                // 370 errors
                self.cut_short(self.resume_start(after).is_some().then_some(next));
                self.live = Live::Holding {
                    after,
                    since: last_done,
                    listed_us: 0,
                };
                let old: Vec<u64> = self.assemblies.keys().copied().collect();
                for s in old {
                    if let Some(a) = self.assemblies.get_mut(&s) {
                        a.window_meta = None;
                    }
                    self.tidy(s);
                }
                self.resume_if_due(now);
                self.advance(now);
            }
        }
        if let Live::Holding {
            after,
            since,
            mut listed_us,
        } = self.live
        {
            let held = now.saturating_duration_since(since);
            if held >= self.cfg.hold {
                self.window.end();
                self.open = None;
                self.live = Live::Ended;
            } else {
                let part_us = (self.cfg.window.part_target * 1e6) as u64;
                while listed_us + part_us <= held.as_micros() as u64 {
                    self.push_filler();
                    listed_us += part_us;
                }
                self.live = Live::Holding {
                    after,
                    since,
                    listed_us,
                };
            }
        }
        let stale: Vec<u64> = self
            .assemblies
            .iter()
            .filter(|(_, a)| now.saturating_duration_since(a.touched) > ASSEMBLY_TTL)
            .map(|(s, _)| *s)
            .collect();
        for s in stale {
            if let Some(a) = self.assemblies.remove(&s) {
                self.pending = self.pending.saturating_sub(a.held);
                if a.recorded {
                    self.mark_done(s);
                } else {
                    self.stats.parts_dropped += 1;
                }
            }
        }
    }

    /// What the window waits for while following: the gateway part, the bytes it has of
    /// it in order, its length if known, and how many later parts are here.
    pub fn waiting_for(&self) -> Option<(u64, u64, Option<u64>, usize)> {
        let Live::Following { next, .. } = self.live else {
            return None;
        };
        let a = self.assemblies.get(&next);
        Some((
            next,
            a.map_or(0, Assembly::contiguous),
            a.and_then(|a| a.total),
            self.assemblies.range(next + 1..).count(),
        ))
    }

    /// When [`Mirror::poll`] has something to do next.
    pub fn poll_at(&self) -> Option<Instant> {
        match self.live {
            Live::Following {
                next,
                last_done,
                last_bytes,
                ..
            } => Some(self.wait_until(next, last_done, last_bytes)),
            Live::Holding {
                since, listed_us, ..
            } => {
                let part = Duration::from_secs_f64(self.cfg.window.part_target);
                Some((since + Duration::from_micros(listed_us) + part).min(since + self.cfg.hold))
            }
            Live::Waiting | Live::Ended => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::RenderOptions;
    use crate::window::PartRead;

    const RUN: u64 = 7;

    /// Gateway part `seq` (5 parts a segment, 200 ms each, 3 chunks of 2 bytes).
    fn meta(seq: u64) -> PartMeta {
        let index = (seq % 5) as u32;
        PartMeta {
            seq,
            msn: seq / 5,
            index,
            independent: index == 0,
            init: 0,
            capture_ms: 1_795_000_000_000 + seq * 200,
            segment: (index == 0).then_some(SegmentStart {
                discontinuity: false,
                pdt_ms: 1_795_000_000_000 + seq * 200,
            }),
        }
    }

    fn piece(seq: u64, k: u64, live: bool) -> Piece {
        Piece {
            run: RUN,
            part: meta(seq),
            offset: k * 2,
            data: Bytes::from(vec![seq as u8, k as u8]),
            end_us: (k + 1) * 66_000 + if k == 2 { 2_000 } else { 0 },
            last: k == 2,
            ends_segment: k == 2 && seq % 5 == 4,
            live,
            frame_ms: 0,
        }
    }

    fn whole(seq: u64) -> Piece {
        Piece {
            run: RUN,
            part: meta(seq),
            offset: 0,
            data: Bytes::from(vec![seq as u8, 0, seq as u8, 1, seq as u8, 2]),
            end_us: 200_000,
            last: true,
            ends_segment: seq % 5 == 4,
            live: false,
            frame_ms: 0,
        }
    }

    /// Parts `seqs` whole, live, each piece at its part's time (200 ms a part from `t0`).
    fn live_parts(m: &mut Mirror, t0: Instant, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            for k in 0..3 {
                let at = t0 + Duration::from_millis(seq * 200);
                m.handle_piece(at, 0, piece(seq, k, true)).unwrap();
            }
        }
    }

    /// Piece `k` of part `seq`, live, opening a new timeline (a discontinuity).
    fn opening(seq: u64, k: u64) -> Piece {
        let mut p = piece(seq, k, true);
        p.part.segment = Some(SegmentStart {
            discontinuity: true,
            pdt_ms: 1_795_000_000_000 + seq * 200,
        });
        p
    }

    fn mirror() -> Mirror {
        let mut m = Mirror::new(MirrorConfig::default(), 1000);
        m.handle_init(
            Instant::now(),
            RUN,
            0,
            Bytes::from_static(b"init"),
            StreamInfo {
                codecs: "avc1.42c01e".into(),
                resolution: Some((640, 360)),
            },
        );
        m
    }

    fn text(m: &Mirror) -> String {
        m.window_ref().render(&RenderOptions::default())
    }

    #[test]
    fn the_target_duration_outlasts_the_stall_rule() {
        // 1 s without progress plus a 200 ms part: 1.5 s, so 2 (hls.js waits 1.6 s)
        assert_eq!(
            target_duration_to_wait_out(Duration::from_millis(1000), 0.2),
            2.0
        );
        assert_eq!(
            target_duration_to_wait_out(Duration::from_millis(400), 0.2),
            1.0
        );
        let t0 = Instant::now();
        let mut m = mirror();
        for k in 0..3 {
            m.handle_piece(t0, 0, piece(0, k, true)).unwrap();
        }
        // the segments are 1 s; the target duration is an upper bound, and says 2
        assert!(
            text(&m).contains("#EXT-X-TARGETDURATION:2\n"),
            "{}",
            text(&m)
        );
    }

    #[test]
    fn a_segments_last_part_hints_the_next_segment() {
        let t0 = Instant::now();
        let mut m = mirror();
        for seq in 0..4 {
            for k in 0..3 {
                m.handle_piece(t0, 0, piece(seq, k, true)).unwrap();
            }
        }
        assert_eq!(m.window().next_part(), Some((1000, 4)));
        for k in 0..3 {
            m.handle_piece(t0, 0, piece(4, k, true)).unwrap();
        }
        // said by the gateway: the next part opens a segment, so the hint names it
        assert_eq!(m.window().next_part(), Some((1001, 0)));
        assert!(text(&m)
            .contains("seg-1000.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1001.0.m4s\""));
        m.handle_piece(t0, 0, piece(5, 0, true)).unwrap();
        assert_eq!(m.window().next_part(), Some((1001, 0)));
        assert!(matches!(
            m.window().read_part(1001, 0, 0),
            PartRead::Data {
                complete: false,
                ..
            }
        ));
    }

    #[test]
    fn parts_follow_in_order_whatever_order_pieces_arrive_in() {
        let t0 = Instant::now();
        let mut m = mirror();
        let mut recorded = Vec::new();
        // part 0 in order, part 1 before part 0 is done, a copy of a piece
        for (seq, k) in [(0, 0), (1, 0), (1, 1), (0, 1), (1, 2), (0, 1), (0, 2)] {
            let t = m.handle_piece(t0, 0, piece(seq, k, true)).unwrap();
            if let Some(p) = t.completed {
                recorded.push(p.seq);
            }
        }
        assert_eq!(recorded, vec![1, 0]);
        assert_eq!(m.stats().duplicate_bytes, 2);
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(t.contains("#EXT-X-MEDIA-SEQUENCE:1000\n"), "{t}");
        assert!(t.contains("URI=\"part-1000.0.m4s\",INDEPENDENT=YES\n"));
        assert!(t.contains("URI=\"part-1000.1.m4s\"\n"));
        assert_eq!(
            m.window().part(1000, 1),
            crate::window::Lookup::Ready(Bytes::from_static(&[1, 0, 1, 1, 1, 2]))
        );
        // the next part grows in the window piece by piece
        m.handle_piece(t0, 0, piece(2, 0, true)).unwrap();
        assert_eq!(
            m.window().read_part(1000, 2, 0),
            PartRead::Data {
                chunks: vec![Bytes::from_static(&[2, 0])],
                complete: false
            }
        );
        // every piece again: all duplicates, nothing recorded twice
        for seq in 0..2 {
            for k in 0..3 {
                let t = m.handle_piece(t0, 0, piece(seq, k, true)).unwrap();
                assert!(t.completed.is_none() && t.new_bytes == 0);
            }
        }
    }

    #[test]
    fn an_outage_lists_gaps_then_the_live_edge_resumes_and_backfill_is_recorded() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..5);
        // part 5 starts, then every uplink goes down: a second after part 4 was whole
        m.handle_piece(ms(1000), 0, piece(5, 0, true)).unwrap();
        m.poll(ms(1700));
        assert_eq!(m.state(), State::Following);
        m.poll(ms(1800));
        assert_eq!(m.state(), State::Holding);
        // the part being built was given up; a second of gaps so far, from the last
        // whole part on, under the URIs viewers were told to wait for
        let t = text(&m);
        assert!(!t.contains("DURATION=0.06600"), "{t}");
        assert!(t.contains("URI=\"part-1001.0.m4s\",GAP=YES"), "{t}");
        assert!(t.contains("URI=\"part-1001.4.m4s\",GAP=YES"), "{t}");
        // a full filler segment is closed: the hint names the next segment's first part
        assert!(
            t.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1002.0.m4s\"\n"),
            "{t}"
        );
        for n in 1..=40 {
            m.poll(ms(1800 + n * 100));
        }
        // 5 s without media: 25 gap parts in 5 gap segments, one per 200 ms
        assert_eq!(m.stats().gap_parts, 25);
        assert!(text(&m).contains("#EXT-X-GAP\n#EXTINF:1.00000,\nseg-1005.m4s"));
        // the links return: the gateway sends its live edge (part 35, a segment start) first
        for k in 0..3 {
            m.handle_piece(ms(6100), 0, piece(35, k, true)).unwrap();
        }
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(
            t.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:"),
            "{t}"
        );
        assert!(t.contains("URI=\"part-1006.0.m4s\",INDEPENDENT=YES"), "{t}");
        // then the backfill: every missed part completes for the recording, none in the window
        let mut recorded = 0;
        for seq in 5..35 {
            if m.handle_piece(ms(6200), 0, whole(seq))
                .unwrap()
                .completed
                .is_some()
            {
                recorded += 1;
            }
        }
        assert_eq!(recorded, 30);
        assert!(!text(&m).contains("part-1007.0"));
        assert_eq!(m.pending_bytes(), 0, "backfilled parts are not kept");
        // the live edge goes on: one discontinuity only, before the resumed segment
        for seq in 36..46 {
            for k in 0..3 {
                m.handle_piece(ms(6100 + (seq - 35) * 200), 0, piece(seq, k, true))
                    .unwrap();
            }
        }
        assert_eq!(
            text(&m).matches("#EXT-X-DISCONTINUITY\n").count(),
            1,
            "{}",
            text(&m)
        );
        // the window never skipped a number
        let segs = m.window_ref().playlist().segments();
        for w in segs.iter().collect::<Vec<_>>().windows(2) {
            assert_eq!(w[1].msn, w[0].msn + 1);
        }
    }

    /// The demo clip's first ten parts sent live, the init after `init_after` of them;
    /// then a hold of 3 s. The mirror, and when the parts ended.
    fn hold_of_real_media(init_after: usize) -> Mirror {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let (init, parts) = crate::test_media::demo_parts(150);
        let mut m = Mirror::new(MirrorConfig::default(), 1000);
        let info = StreamInfo {
            codecs: "avc1.4d401f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
        };
        let base = 1_795_000_000_000;
        let mut at = 0;
        for (n, p) in parts.iter().take(10).enumerate() {
            if n == init_after {
                // parts before their init wait for it
                assert_eq!(m.state(), State::Waiting);
                m.handle_init(ms(at), RUN, 0, init.clone(), info.clone());
                assert_eq!(m.stats().parts, n as u64);
            }
            let mut meta = p.meta;
            meta.capture_ms = base + at;
            if let Some(s) = meta.segment.as_mut() {
                s.pdt_ms = base + at;
            }
            let piece = Piece {
                run: RUN,
                part: meta,
                offset: 0,
                data: p.data.clone(),
                end_us: p.duration_us,
                last: true,
                ends_segment: p.ends_segment,
                live: true,
                frame_ms: 0,
            };
            m.handle_piece(ms(at), base + at, piece).unwrap();
            at += p.duration_us / 1000;
        }
        assert_eq!(m.stats().parts, 10);
        // every uplink goes down: a second on, the hold lists still parts in real time
        for n in 1..=30 {
            m.poll(ms(at + n * 100));
        }
        m
    }

    #[test]
    fn a_hold_of_real_media_lists_still_parts_not_gaps() {
        let mut m = hold_of_real_media(0);
        assert_eq!(m.state(), State::Holding);
        let st = m.stats();
        assert_eq!(st.gap_parts, 0, "{st:?}");
        assert!(st.still_parts >= 10, "{st:?}");
        let t = text(&m);
        assert!(!t.contains("GAP"), "{t}");
        // a still segment opens with its keyframe, and each still part is served as media
        let segs = m.window_ref().playlist().segments();
        let still = segs.iter().rev().find(|s| s.complete).unwrap();
        assert_eq!(still.parts.len(), 5, "{t}");
        assert!(still.parts[0].independent, "{t}");
        assert!(!still.parts[1].independent, "{t}");
        let msn = still.msn;
        let size = |m: &mut Mirror, index| match m.window().read_part(msn, index, 0) {
            PartRead::Data { chunks, complete } => {
                assert!(complete);
                chunks.iter().map(|c| c.len()).sum::<usize>()
            }
            other => panic!("still part {index}: {other:?}"),
        };
        // the keyframe, then a skipped picture and silent audio
        assert!(size(&mut m, 0) > 1000);
        let one = size(&mut m, 1);
        assert!(one < 600, "{one} bytes");
    }

    #[test]
    fn an_init_after_its_first_parts_still_gives_still_parts() {
        // a relay that restarted gets parts first and asks for their init: they wait for
        // it, and the still parts are made from them
        let m = hold_of_real_media(3);
        assert_eq!(m.state(), State::Holding);
        let st = m.stats();
        assert_eq!(st.gap_parts, 0, "{st:?}");
        assert!(st.still_parts >= 10, "{st:?}");
    }

    #[test]
    fn a_new_timeline_takes_the_window_once_the_old_one_stalls() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..7);
        // part 7 stalls at the collapse; the gateway's program switches to the substream,
        // whose first part (10, a segment start) opens a new timeline
        m.handle_piece(ms(1400), 0, piece(7, 0, true)).unwrap();
        m.handle_piece(ms(1500), 0, opening(10, 0)).unwrap();
        assert_eq!(m.poll_at(), Some(ms(1650)));
        m.poll(ms(1600));
        assert_eq!(m.state(), State::Following);
        assert!(!text(&m).contains("part-1002.0"), "{}", text(&m));
        m.poll(ms(1650));
        // the window moved on: part 7 cut short at its chunk, a discontinuity, part 10
        // under way, and no gap part in between
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(t.contains("part-1001.2.m4s\"\n#EXTINF:0.38600,"), "{t}");
        assert!(t.contains("#EXT-X-DISCONTINUITY\n"), "{t}");
        assert!(!t.contains("GAP=YES"), "{t}");
        for k in 1..3 {
            m.handle_piece(ms(1700), 0, opening(10, k)).unwrap();
        }
        let t = text(&m);
        assert!(t.contains("URI=\"part-1002.0.m4s\",INDEPENDENT=YES"), "{t}");
        assert_eq!(m.stats().gap_parts, 0);
        // what is left of the old timeline still completes, for the recording only
        for seq in 7..10 {
            assert!(m
                .handle_piece(ms(1800), 0, whole(seq))
                .unwrap()
                .completed
                .is_some());
        }
        assert!(
            !text(&m).contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-1002.1"),
            "{}",
            text(&m)
        );
    }

    #[test]
    fn a_new_level_waits_for_its_init_segment() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..7);
        // the substream's first part overtakes its init segment (init 1) on the way
        m.handle_piece(ms(1400), 0, piece(7, 0, true)).unwrap();
        let mut first = opening(10, 0);
        first.part.init = 1;
        assert_eq!(
            m.handle_piece(ms(1500), 0, first).unwrap().needs_init,
            Some(1)
        );
        // no switch to a level whose map the relay cannot serve: the old level's part
        // keeps its full second
        assert_eq!(m.poll_at(), Some(ms(2200)));
        m.poll(ms(1650));
        assert!(!text(&m).contains("init-1"), "{}", text(&m));
        let info = StreamInfo {
            codecs: "avc1.42c01e".into(),
            resolution: Some((320, 180)),
        };
        m.handle_init(ms(1700), RUN, 1, Bytes::from_static(b"init1"), info);
        assert_eq!(m.poll_at(), Some(ms(1650)));
        m.poll(ms(1700));
        let t = text(&m);
        assert!(
            t.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""),
            "{t}"
        );
        assert_eq!(m.stats().gap_parts, 0);
        // the map it lists is served
        assert_eq!(m.window().init(1).as_deref(), Some(&b"init1"[..]));
    }

    #[test]
    fn the_part_after_the_last_whole_one_waits_for_its_init() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..5);
        // the old level's last part is whole; the next, the new level's first, came
        // before its init segment
        for k in 0..3 {
            let mut p = opening(5, k);
            p.part.init = 1;
            m.handle_piece(ms(1000), 0, p).unwrap();
        }
        assert_eq!(m.waiting_for().map(|w| w.0), Some(5));
        assert!(!text(&m).contains("init-1"), "{}", text(&m));
        let info = StreamInfo::default();
        m.handle_init(ms(1100), RUN, 1, Bytes::from_static(b"init1"), info);
        assert_eq!(m.waiting_for().map(|w| w.0), Some(6));
        let t = text(&m);
        assert!(t.contains("#EXT-X-MAP:URI=\"init-1.mp4\""), "{t}");
        assert_eq!(m.window().init(1).as_deref(), Some(&b"init1"[..]));
    }

    #[test]
    fn parts_before_the_first_init_wait_for_it() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = Mirror::new(MirrorConfig::default(), 1000);
        live_parts(&mut m, t0, 0..3);
        assert_eq!(m.state(), State::Waiting);
        assert!(!text(&m).contains("EXT-X-MAP"), "{}", text(&m));
        m.handle_init(
            ms(600),
            RUN,
            0,
            Bytes::from_static(b"init"),
            StreamInfo::default(),
        );
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(t.contains("#EXT-X-MAP:URI=\"init-0.mp4\""), "{t}");
        assert!(t.contains("part-1000.2.m4s"), "{t}");
    }

    #[test]
    fn a_newer_segment_of_the_same_timeline_waits_out_the_stall() {
        // only a new timeline moves the window early: a later segment start of the same
        // one (the live edge after a lost part) waits for `stall_after` after the last
        // part the window finished (part 6, at 1.2 s)
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..7);
        m.handle_piece(ms(1400), 0, piece(7, 0, true)).unwrap();
        m.handle_piece(ms(1500), 0, piece(10, 0, true)).unwrap();
        assert_eq!(m.poll_at(), Some(ms(2200)));
        m.poll(ms(2100));
        assert_eq!(m.state(), State::Following);
        // then the window moves on to part 10 at once: part 7 cut short at its whole
        // chunk (no filler follows it, so it is still media), no filler part
        m.poll(ms(2200));
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(
            t.contains("#EXT-X-PART:DURATION=0.06600,URI=\"part-1001.2.m4s\""),
            "{t}"
        );
        assert!(t.contains("#EXT-X-DISCONTINUITY\n"), "{t}");
        assert_eq!(m.stats().gap_parts + m.stats().still_parts, 0, "{t}");
    }

    #[test]
    fn a_hold_before_any_whole_part_is_dated_from_its_segment() {
        // the window begins on a part that never completes (a relay that started during
        // a collapse): the filler parts carry that segment's date, not 1970
        let t0 = Instant::now();
        let mut m = mirror();
        m.handle_piece(t0, 0, piece(0, 0, true)).unwrap();
        m.poll(t0 + Duration::from_millis(1000));
        assert_eq!(m.state(), State::Holding);
        let t = text(&m);
        assert!(!t.contains("1970-"), "{t}");
        assert!(
            t.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-18T11:06:40.000Z\n#EXT-X-PART:DURATION=0.20000,URI=\"part-1000.0.m4s\",GAP=YES"),
            "{t}"
        );
    }

    #[test]
    fn a_part_that_trickles_in_does_not_put_off_the_hold() {
        // over a collapsed link the next part's bytes come slowly: a player has nothing
        // new to play, so the hold begins a second after the last whole part, not a
        // second after the last bytes (the player ran dry 0.2 s before the still parts)
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut m = mirror();
        live_parts(&mut m, t0, 0..5);
        m.handle_piece(ms(1000), 0, piece(5, 0, true)).unwrap();
        m.handle_piece(ms(1600), 0, piece(5, 1, true)).unwrap();
        assert_eq!(m.poll_at(), Some(ms(1800)));
        m.poll(ms(1799));
        assert_eq!(m.state(), State::Following);
        m.poll(ms(1800));
        assert_eq!(m.state(), State::Holding);
        // part 5 given up (not listed late, behind the filler), and the second since
        // part 4 in filler parts
        let t = text(&m);
        assert!(t.contains("URI=\"part-1001.0.m4s\",GAP=YES"), "{t}");
        assert_eq!(m.stats().gap_parts, 5, "{t}");
        // the last bytes come after the hold began: for the recording only
        m.handle_piece(ms(1900), 0, piece(5, 2, true)).unwrap();
        assert_eq!(m.state(), State::Holding);
    }

    #[test]
    fn a_hold_runs_out_then_a_new_playlist_begins() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut m = mirror();
        for k in 0..3 {
            m.handle_piece(t0, 0, piece(0, k, true)).unwrap();
        }
        m.poll(s(30));
        assert_eq!(m.state(), State::Holding);
        m.poll(s(62));
        assert_eq!(m.state(), State::Ended);
        assert!(text(&m).ends_with("#EXT-X-ENDLIST\n"));
        for k in 0..3 {
            m.handle_piece(s(70), 0, piece(50, k, true)).unwrap();
        }
        assert_eq!(m.state(), State::Following);
        let t = text(&m);
        assert!(!t.contains("ENDLIST") && !t.contains("GAP"), "{t}");
        assert!(m.window_ref().init(0).is_some());
    }

    #[test]
    fn bad_and_conflicting_pieces_are_refused() {
        let t0 = Instant::now();
        let mut m = mirror();
        let mut p = piece(0, 0, true);
        p.offset = MAX_PART_BYTES;
        assert!(m.handle_piece(t0, 0, p).is_err());
        let mut p = piece(1, 0, true);
        p.part.segment = None;
        p.part.index = 0;
        assert!(m.handle_piece(t0, 0, p).is_err());
        m.handle_piece(t0, 0, piece(0, 2, true)).unwrap();
        let mut p = piece(0, 2, true);
        p.data = Bytes::from_static(&[1, 2, 3]);
        assert!(matches!(
            m.handle_piece(t0, 0, p),
            Err(PieceError::Conflict(_))
        ));
        // a gateway restart: a new run starts over
        let mut p = piece(0, 0, true);
        p.run = RUN + 1;
        assert!(m.handle_piece(t0, 0, p).unwrap().new_run);
        let mut p = piece(3, 0, true);
        p.run = RUN + 1;
        assert_eq!(m.handle_piece(t0, 0, p).unwrap().needs_init, Some(0));
    }
}
