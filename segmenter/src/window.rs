//! What viewers can fetch of one rendition: the part ring, its LL-HLS playlist, the init
//! segments, and the part being built. Fed chunk by chunk, in order (the gateway's
//! segmenter, or the relay's mirror once it has put pieces back in order); never waits and
//! never does I/O.
//!
//! The part being built is not in the playlist (a listed part must be whole); its preload
//! hint names it, and [`LiveWindow::read_part`] hands out what it has so far, so a shell
//! can answer the hinted request with a body that grows as frames arrive.

use crate::hls::{Blocking, MediaPlaylist, PartInfo, Ready, RenderOptions, SegmentInfo, Variant};
use crate::ring::PartRing;
use crate::{Chunk, Part, PartMeta};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// Window settings.
#[derive(Debug, Clone, Copy)]
pub struct WindowConfig {
    /// Part duration target, seconds (PART-TARGET; it grows if a part is longer).
    pub part_target: f64,
    /// Segment duration target, seconds (TARGETDURATION; it grows with longer segments).
    pub segment_target: f64,
    /// The ring's byte bound.
    pub ring_bytes: usize,
    /// Segments listed in the playlist.
    pub playlist_segments: usize,
    /// PART-HOLD-BACK, seconds (how far behind the live edge players stay); at least
    /// three part targets.
    pub part_hold_back: f64,
    /// TARGETDURATION is at least this, seconds, whatever the segments (0: the segment
    /// target). A relay sets it so a player's blocking-reload timeout outlasts its stall rule.
    pub min_target_duration: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            part_target: 0.2,
            segment_target: 1.0,
            ring_bytes: 32 << 20,
            playlist_segments: 7,
            part_hold_back: 0.6,
            min_target_duration: 0.0,
        }
    }
}

/// Result of looking up a whole part or segment.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Here it is.
    Ready(Bytes),
    /// Not yet produced, but it is the next one (a preload hint): wait for it.
    NotYet,
    /// Unknown, or already evicted.
    Gone,
}

/// Result of reading a part from a byte offset (the part may still be growing).
#[derive(Debug, Clone, PartialEq)]
pub enum PartRead {
    /// Bytes from the offset on (possibly none yet); `complete`: nothing follows them.
    Data {
        /// The bytes, in chunks.
        chunks: Vec<Bytes>,
        /// The part is whole.
        complete: bool,
    },
    /// Not begun, but it is the next one: wait.
    NotYet,
    /// Unknown, evicted, or a gap part.
    Gone,
}

/// Why a chunk was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The chunk is not the next one (its part, or its offset, does not follow).
    #[error("chunk out of order: part {seq} offset {offset}, expected part {want_seq} offset {want_offset}")]
    OutOfOrder {
        /// The chunk's part.
        seq: u64,
        /// The chunk's offset.
        offset: u64,
        /// The part expected.
        want_seq: u64,
        /// The offset expected.
        want_offset: u64,
    },
    /// The window was ended.
    #[error("the stream has ended")]
    Ended,
}

/// The part being built.
#[derive(Debug, Clone)]
struct Growing {
    meta: PartMeta,
    chunks: Vec<Bytes>,
    len: u64,
}

/// What the multivariant playlist says of a rendition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// RFC 6381 codecs, comma separated.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u16, u16)>,
}

/// One rendition's window.
pub struct LiveWindow {
    cfg: WindowConfig,
    ring: PartRing,
    playlist: MediaPlaylist,
    inits: VecDeque<(u32, Bytes)>,
    /// msn → sequence number of its first part, oldest first.
    firsts: VecDeque<(u64, u64)>,
    /// Complete segments: (bytes, seconds), newest last, for the bandwidth figures.
    sizes: VecDeque<(usize, f64)>,
    open_bytes: usize,
    version: u64,
    keep_evicted: bool,
    evicted: Vec<Arc<Part>>,
    growing: Option<Growing>,
    info: StreamInfo,
    /// Parts given up while growing, counted.
    abandons: u64,
    /// The latest of them: (count, msn, index). The next part takes a given-up part's
    /// place, so a reader of it must tell the two apart (see
    /// [`LiveWindow::abandoned_since`]).
    abandoned: VecDeque<(u64, u64, u32)>,
}

/// How many given-up parts a window remembers.
const ABANDONED_KEPT: usize = 32;

impl LiveWindow {
    /// An empty window whose first part will have sequence number `first_seq`.
    pub fn new(cfg: WindowConfig, first_seq: u64) -> Self {
        // enough slots for the byte bound at very small parts
        let max_parts = (cfg.ring_bytes / 512).clamp(64, 1 << 16);
        let mut ring = PartRing::new(cfg.ring_bytes, max_parts);
        ring.start_at(first_seq);
        Self {
            cfg,
            ring,
            playlist: MediaPlaylist::new(
                cfg.part_target,
                cfg.segment_target.max(cfg.min_target_duration),
                cfg.playlist_segments,
            )
            .with_part_hold_back(cfg.part_hold_back),
            inits: VecDeque::new(),
            firsts: VecDeque::new(),
            sizes: VecDeque::new(),
            open_bytes: 0,
            version: 0,
            keep_evicted: false,
            evicted: Vec::new(),
            growing: None,
            info: StreamInfo::default(),
            abandons: 0,
            abandoned: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> WindowConfig {
        self.cfg
    }

    /// Keeps the parts the ring evicts until [`LiveWindow::take_evicted`] (for a disk spool).
    pub fn set_keep_evicted(&mut self, keep: bool) {
        self.keep_evicted = keep;
    }

    /// The parts evicted from the ring since the last call (when kept).
    pub fn take_evicted(&mut self) -> Vec<Arc<Part>> {
        std::mem::take(&mut self.evicted)
    }

    /// Sets what the multivariant playlist says of this rendition.
    pub fn set_info(&mut self, info: StreamInfo) {
        self.info = info;
    }

    /// What the multivariant playlist says of this rendition.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Adds init segment `generation`.
    pub fn add_init(&mut self, generation: u32, data: Bytes) {
        if self.inits.iter().any(|(g, _)| *g == generation) {
            return;
        }
        self.inits.push_back((generation, data));
        // init segments are small: keep enough for every generation a ring or playlist can
        // still refer to
        while self.inits.len() > 64 {
            self.inits.pop_front();
        }
        self.version += 1;
    }

    /// The init segments kept, oldest first.
    pub fn inits(&self) -> impl Iterator<Item = (u32, &Bytes)> {
        self.inits.iter().map(|(g, d)| (*g, d))
    }

    /// The newest init segment.
    pub fn latest_init(&self) -> Option<(u32, Bytes)> {
        self.inits.back().cloned()
    }

    /// Init segment `generation`.
    pub fn init(&self, generation: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, d)| d.clone())
    }

    /// The sequence number the next part gets.
    pub fn next_seq(&self) -> u64 {
        self.ring.next_seq()
    }

    /// Takes the next chunk of the part being built (or of the next part); returns the part
    /// when the chunk completes it.
    pub fn push_chunk(&mut self, c: &Chunk) -> Result<Option<Arc<Part>>, WindowError> {
        if self.playlist.ended() {
            return Err(WindowError::Ended);
        }
        let (want_seq, want_offset) = match &self.growing {
            Some(g) => (g.meta.seq, g.len),
            None => (self.ring.next_seq(), 0),
        };
        if c.part.seq != want_seq || c.offset != want_offset {
            return Err(WindowError::OutOfOrder {
                seq: c.part.seq,
                offset: c.offset,
                want_seq,
                want_offset,
            });
        }
        if self.growing.is_none() {
            self.open_segment_of(&c.part, false);
        }
        let g = self.growing.get_or_insert_with(|| Growing {
            meta: c.part,
            chunks: Vec::new(),
            len: 0,
        });
        if !c.data.is_empty() {
            g.len += c.data.len() as u64;
            g.chunks.push(c.data.clone());
        }
        self.version += 1;
        if !c.last {
            return Ok(None);
        }
        let Some(g) = self.growing.take() else {
            return Ok(None);
        };
        let data = match g.chunks.len() {
            1 => g.chunks[0].clone(),
            _ => {
                let mut b = BytesMut::with_capacity(g.len as usize);
                for c in &g.chunks {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        };
        let part = Part::new(g.meta, c.end_us as f64 / 1e6, data);
        let part = self.add_part(part);
        if c.ends_segment {
            // the hint names the next segment's first part now, not a part that never comes
            self.playlist.close_segment();
        }
        Ok(Some(part))
    }

    /// Adds a whole part (a gap part, or a part that arrived whole); it must be the next.
    pub fn push_part(&mut self, part: Part) -> Result<Arc<Part>, WindowError> {
        if self.playlist.ended() {
            return Err(WindowError::Ended);
        }
        let want = self.ring.next_seq();
        if self.growing.is_some() || part.seq != want {
            return Err(WindowError::OutOfOrder {
                seq: part.seq,
                offset: 0,
                want_seq: want,
                want_offset: self.growing.as_ref().map_or(0, |g| g.len),
            });
        }
        self.version += 1;
        Ok(self.add_part(part))
    }

    /// Drops the part being built (its source broke off); returns how many bytes it had.
    pub fn abandon_growing(&mut self) -> u64 {
        let Some(g) = self.growing.take() else {
            return 0;
        };
        // a segment opened for it alone goes again: it has no part
        if g.meta.segment.is_some() && self.playlist.drop_empty_last(g.meta.msn) {
            self.firsts.pop_back();
        }
        self.abandons += 1;
        self.abandoned
            .push_back((self.abandons, g.meta.msn, g.meta.index));
        if self.abandoned.len() > ABANDONED_KEPT {
            self.abandoned.pop_front();
        }
        self.version += 1;
        g.len
    }

    /// How many parts have been given up while growing: a reader that starts on a growing
    /// part notes it, to ask [`LiveWindow::abandoned_since`] later.
    pub fn abandons(&self) -> u64 {
        self.abandons
    }

    /// Whether the part at (msn, index) was given up since the count was `since` (the
    /// part now there, if any, is another one). True also when more parts were given up
    /// since than the window remembers.
    pub fn abandoned_since(&self, since: u64, msn: u64, index: u32) -> bool {
        if self.abandons == since {
            return false;
        }
        let forgotten = self
            .abandoned
            .front()
            .is_none_or(|(n, _, _)| *n > since + 1);
        forgotten
            || self
                .abandoned
                .iter()
                .any(|&(n, m, i)| n > since && (m, i) == (msn, index))
    }

    /// The part being built, if any: its metadata and bytes so far.
    pub fn growing(&self) -> Option<(PartMeta, u64)> {
        self.growing.as_ref().map(|g| (g.meta, g.len))
    }

    /// Opens the segment a part starts (when its first chunk comes, so the playlist's hint
    /// names the part being built), unless it is open already.
    fn open_segment_of(&mut self, meta: &PartMeta, gap: bool) {
        let Some(start) = meta.segment else {
            return;
        };
        if self.firsts.back().is_some_and(|(m, _)| *m == meta.msn) {
            return;
        }
        if let Some(last) = self.playlist.segments().back() {
            if !last.complete || self.open_bytes > 0 {
                self.sizes.push_back((self.open_bytes, last.duration()));
                while self.sizes.len() > 16 {
                    self.sizes.pop_front();
                }
            }
        }
        self.open_bytes = 0;
        self.firsts.push_back((meta.msn, meta.seq));
        self.playlist.open_segment(SegmentInfo {
            msn: meta.msn,
            parts: Vec::new(),
            complete: false,
            discontinuity: start.discontinuity,
            init: meta.init,
            pdt_ms: start.pdt_ms,
            gap,
            independent: meta.independent,
        });
    }

    fn add_part(&mut self, part: Part) -> Arc<Part> {
        self.open_segment_of(&part.meta(), part.gap);
        if !part.gap {
            self.open_bytes += part.data.len();
        }
        let info = PartInfo {
            duration: part.duration,
            independent: part.independent,
            gap: part.gap,
        };
        let (msn, index) = (part.msn, part.index);
        let part = Arc::new(part);
        let gone = self.ring.push(part.clone());
        self.playlist.add_part(msn, index, info);
        if self.keep_evicted {
            self.evicted.extend(gone.iter().filter(|p| !p.gap).cloned());
        }
        if let Some(last_gone) = gone.last() {
            // a segment whose first part left the ring leaves the playlist
            let oldest_seq = last_gone.seq + 1;
            while self.firsts.front().is_some_and(|(_, s)| *s < oldest_seq) {
                self.firsts.pop_front();
            }
            match self.firsts.front() {
                Some((m, _)) => self.playlist.forget_before(*m),
                // one segment larger than the ring: only the open one is listed
                None => self.playlist.forget_before(msn),
            }
        }
        part
    }

    /// Marks the last segment complete (the stream paused, or a gap follows).
    pub fn close_segment(&mut self) {
        self.playlist.close_segment();
        self.version += 1;
    }

    /// Ends the stream: the playlist gets EXT-X-ENDLIST and takes nothing more.
    pub fn end(&mut self) {
        self.growing = None;
        self.playlist.close_segment();
        self.playlist.end();
        self.version += 1;
    }

    /// Whether the stream has ended.
    pub fn ended(&self) -> bool {
        self.playlist.ended()
    }

    /// Bumped whenever something viewers can see changes; shells wake waiting readers on it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The ring.
    pub fn ring(&mut self) -> &mut PartRing {
        &mut self.ring
    }

    /// The playlist model.
    pub fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }

    /// Whether a (blocking) playlist request can be answered now.
    pub fn ready(&self, b: Blocking) -> Ready {
        self.playlist.ready(b)
    }

    /// The media playlist text.
    pub fn render(&self, opts: &RenderOptions) -> String {
        self.playlist.render(opts)
    }

    /// The playlist's target duration (seconds).
    pub fn target_duration(&self) -> f64 {
        self.playlist.target_duration()
    }

    /// The (msn, index) of the part to come (the preload hint), once the stream has begun.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        self.playlist.next_part()
    }

    fn first_seq(&self, msn: u64) -> Option<u64> {
        self.firsts.iter().find(|(m, _)| *m == msn).map(|(_, s)| *s)
    }

    fn find(&mut self, msn: u64, index: u32) -> Option<Arc<Part>> {
        if let Some(first) = self.first_seq(msn) {
            return self
                .ring
                .get(first + u64::from(index))
                .filter(|p| p.msn == msn && p.index == index);
        }
        // the segment's first part is gone (a segment larger than the ring): search
        self.ring
            .iter()
            .find(|p| p.msn == msn && p.index == index)
            .cloned()
    }

    /// Whether (msn, index) is the hinted part or the one after it (a request may wait).
    fn is_next(&self, msn: u64, index: u32) -> bool {
        self.next_part()
            .is_some_and(|(m, i)| (msn, index) == (m, i) || (msn, index) == (m + 1, 0))
            && !self.ended()
    }

    /// Part `index` of segment `msn`, whole.
    pub fn part(&mut self, msn: u64, index: u32) -> Lookup {
        if let Some(p) = self.find(msn, index) {
            return Lookup::Ready(p.data.clone());
        }
        if self.is_next(msn, index) {
            Lookup::NotYet
        } else {
            Lookup::Gone
        }
    }

    /// Part `index` of segment `msn` from byte `offset` on: what there is so far, growing
    /// until complete. A gap part is gone: it has no media.
    pub fn read_part(&mut self, msn: u64, index: u32, offset: u64) -> PartRead {
        if let Some(p) = self.find(msn, index) {
            if p.gap {
                return PartRead::Gone;
            }
            let from = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(p.data.len());
            return PartRead::Data {
                chunks: vec![p.data.slice(from..)],
                complete: true,
            };
        }
        if let Some(g) = &self.growing {
            if (g.meta.msn, g.meta.index) == (msn, index) {
                let mut chunks = Vec::new();
                let mut at = 0u64;
                for c in &g.chunks {
                    let end = at + c.len() as u64;
                    if end > offset {
                        let skip = offset.saturating_sub(at) as usize;
                        chunks.push(c.slice(skip..));
                    }
                    at = end;
                }
                return PartRead::Data {
                    chunks,
                    complete: false,
                };
            }
        }
        if self.is_next(msn, index) {
            PartRead::NotYet
        } else {
            PartRead::Gone
        }
    }

    /// Whole segment `msn` (its parts back to back), once complete. A gap segment is gone.
    pub fn segment(&mut self, msn: u64) -> Lookup {
        let Some(seg) = self.playlist.segments().iter().find(|s| s.msn == msn) else {
            let ahead = self
                .next_part()
                .is_some_and(|(m, _)| msn == m || msn == m + 1)
                && !self.ended();
            return if ahead { Lookup::NotYet } else { Lookup::Gone };
        };
        if seg.gap {
            return Lookup::Gone;
        }
        if !seg.complete {
            return Lookup::NotYet;
        }
        let n = seg.parts.len() as u64;
        let Some(first) = self.first_seq(msn) else {
            return Lookup::Gone;
        };
        let mut out = BytesMut::new();
        for s in first..first + n {
            match self.ring.get(s) {
                Some(p) if p.msn == msn => out.extend_from_slice(&p.data),
                _ => return Lookup::Gone,
            }
        }
        Lookup::Ready(out.freeze())
    }

    /// The part with sequence number `seq`, if still in the ring.
    pub fn part_by_seq(&mut self, seq: u64) -> Option<Arc<Part>> {
        self.ring.get(seq)
    }

    /// Bytes `offset..offset + len` of part `seq`: from the ring, or from the part being
    /// built.
    pub fn bytes(&mut self, seq: u64, offset: u64, len: u64) -> Option<Bytes> {
        let end = offset.checked_add(len)?;
        if let Some(p) = self.ring.get(seq) {
            let (a, b) = (usize::try_from(offset).ok()?, usize::try_from(end).ok()?);
            return (b <= p.data.len()).then(|| p.data.slice(a..b));
        }
        let g = self.growing.as_ref().filter(|g| g.meta.seq == seq)?;
        if end > g.len {
            return None;
        }
        let mut out = BytesMut::with_capacity(len as usize);
        let mut at = 0u64;
        for c in &g.chunks {
            let c_end = at + c.len() as u64;
            if c_end > offset && at < end {
                let a = offset.saturating_sub(at) as usize;
                let b = (end.min(c_end) - at) as usize;
                out.extend_from_slice(&c[a..b]);
            }
            at = c_end;
        }
        Some(out.freeze())
    }

    /// This rendition as a multivariant playlist entry (`uri` given by the caller); `None`
    /// before the first segment completes or without codec information.
    pub fn variant(&self, uri: String) -> Option<Variant> {
        if self.info.codecs.is_empty() {
            return None;
        }
        let rate = |(b, d): &(usize, f64)| {
            if *d > 0.0 {
                (*b as f64 * 8.0 / d) as u64
            } else {
                0
            }
        };
        let peak = self.sizes.iter().map(rate).max().unwrap_or(0);
        let (bytes, secs) = self
            .sizes
            .iter()
            .fold((0usize, 0f64), |(b, s), (bb, dd)| (b + bb, s + dd));
        let avg = if secs > 0.0 {
            (bytes as f64 * 8.0 / secs) as u64
        } else {
            0
        };
        Some(Variant {
            uri,
            bandwidth: peak.max(avg),
            average_bandwidth: avg,
            codecs: self.info.codecs.clone(),
            resolution: self.info.resolution,
            independent_segments: self.playlist.independent_segments(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentStart;

    fn meta(seq: u64, msn: u64, index: u32) -> PartMeta {
        PartMeta {
            seq,
            msn,
            index,
            independent: index == 0,
            init: 0,
            capture_ms: 0,
            segment: (index == 0).then_some(SegmentStart {
                discontinuity: false,
                pdt_ms: 1_795_000_000_000 + msn * 1000,
            }),
        }
    }

    fn chunk(m: PartMeta, offset: u64, data: &'static [u8], last: bool) -> Chunk {
        Chunk {
            part: m,
            offset,
            data: Bytes::from_static(data),
            end_us: if last { 200_000 } else { 40_000 },
            last,
            ends_segment: false,
            frame_ms: 0,
        }
    }

    #[test]
    fn a_segments_last_part_moves_the_hint_to_the_next_segment_at_once() {
        let mut w = LiveWindow::new(WindowConfig::default(), 0);
        w.add_init(0, Bytes::from_static(b"init"));
        w.push_chunk(&chunk(meta(0, 0, 0), 0, b"ab", true)).unwrap();
        // the next part may still be in this segment: the hint names it
        assert_eq!(w.next_part(), Some((0, 1)));
        let mut last = chunk(meta(1, 0, 1), 0, b"cd", true);
        last.ends_segment = true;
        w.push_chunk(&last).unwrap();
        // the segment is over before the next part's first frame: a request for the hinted
        // part waits for a part that will come
        assert_eq!(w.next_part(), Some((1, 0)));
        assert!(w.render(&RenderOptions::default()).contains(
            "#EXTINF:0.40000,\nseg-0.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1.0.m4s\""
        ));
        assert_eq!(w.read_part(1, 0, 0), PartRead::NotYet);
        assert_eq!(w.read_part(0, 2, 0), PartRead::Gone);
        // meta() gives a segment's first part its segment start
        w.push_chunk(&chunk(meta(2, 1, 0), 0, b"k", false)).unwrap();
        assert_eq!(w.next_part(), Some((1, 0)));
        assert_eq!(w.playlist().segments().len(), 2);
        assert!(matches!(
            w.read_part(1, 0, 0),
            PartRead::Data {
                complete: false,
                ..
            }
        ));
    }

    #[test]
    fn a_given_up_part_is_told_apart_from_the_one_in_its_place() {
        let mut w = LiveWindow::new(WindowConfig::default(), 0);
        w.add_init(0, Bytes::from_static(b"init"));
        w.push_chunk(&chunk(meta(0, 0, 0), 0, b"ab", true)).unwrap();
        w.push_chunk(&chunk(meta(1, 0, 1), 0, b"c", false)).unwrap();
        let since = w.abandons();
        assert!(!w.abandoned_since(since, 0, 1));
        w.abandon_growing();
        // the next part takes its place: same segment, index and sequence number
        w.push_chunk(&chunk(meta(1, 0, 1), 0, b"x", false)).unwrap();
        assert!(w.abandoned_since(since, 0, 1));
        assert!(!w.abandoned_since(since, 0, 2), "another place");
        assert!(
            !w.abandoned_since(w.abandons(), 0, 1),
            "a reader that began later"
        );
        // more given up since than the window remembers: assume the worst
        for _ in 0..ABANDONED_KEPT + 1 {
            w.abandon_growing();
            w.push_chunk(&chunk(meta(1, 0, 1), 0, b"x", false)).unwrap();
        }
        assert!(w.abandoned_since(since, 0, 7));
    }

    #[test]
    fn a_part_grows_chunk_by_chunk_then_joins_the_playlist() {
        let mut w = LiveWindow::new(WindowConfig::default(), 0);
        w.add_init(0, Bytes::from_static(b"init"));
        let m = meta(0, 0, 0);
        assert_eq!(w.read_part(0, 0, 0), PartRead::Gone); // nothing begun, no hint yet
        assert!(w.push_chunk(&chunk(m, 0, b"ab", false)).unwrap().is_none());
        assert_eq!(
            w.read_part(0, 0, 1),
            PartRead::Data {
                chunks: vec![Bytes::from_static(b"b")],
                complete: false
            }
        );
        assert_eq!(w.bytes(0, 1, 1).unwrap(), Bytes::from_static(b"b"));
        // out of order is refused
        assert!(matches!(
            w.push_chunk(&chunk(m, 5, b"x", false)),
            Err(WindowError::OutOfOrder { .. })
        ));
        let p = w.push_chunk(&chunk(m, 2, b"cd", true)).unwrap().unwrap();
        assert_eq!(&p.data[..], b"abcd");
        assert!((p.duration - 0.2).abs() < 1e-9);
        assert_eq!(w.part(0, 0), Lookup::Ready(Bytes::from_static(b"abcd")));
        assert_eq!(w.next_part(), Some((0, 1)));
        assert_eq!(w.part(0, 1), Lookup::NotYet);
        // the first chunk of the next segment's first part: the hint names it at once
        // meta() gives a segment's first part its segment start
        w.push_chunk(&chunk(meta(1, 1, 0), 0, b"k", false)).unwrap();
        assert_eq!(w.next_part(), Some((1, 0)));
        assert!(w
            .render(&RenderOptions::default())
            .contains("PRELOAD-HINT:TYPE=PART,URI=\"part-1.0.m4s\""));
        assert!(w
            .render(&RenderOptions::default())
            .contains("#EXTINF:0.20000,\nseg-0.m4s"));
        // given up on: the empty segment goes again
        w.abandon_growing();
        assert_eq!(w.next_part(), Some((1, 0)));
        assert_eq!(w.playlist().segments().len(), 1);
        assert_eq!(w.read_part(1, 0, 0), PartRead::NotYet);
        let text = w.render(&RenderOptions::default());
        assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-0.0.m4s\",INDEPENDENT=YES"));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-1.0.m4s\""));
        w.end();
        assert!(w
            .render(&RenderOptions::default())
            .ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(w.part(0, 1), Lookup::Gone);
        assert!(matches!(
            w.push_chunk(&chunk(meta(1, 0, 1), 0, b"x", true)),
            Err(WindowError::Ended)
        ));
    }

    #[test]
    fn gap_parts_are_listed_but_have_no_media() {
        let mut w = LiveWindow::new(WindowConfig::default(), 10);
        let m = meta(10, 3, 0);
        w.push_chunk(&chunk(m, 0, b"media", true)).unwrap();
        w.close_segment();
        let mut g = Part::new(meta(11, 4, 0), 0.2, Bytes::new());
        g.gap = true;
        g.independent = false;
        w.push_part(g).unwrap();
        let text = w.render(&RenderOptions::default());
        assert!(text.contains("URI=\"part-4.0.m4s\",GAP=YES"), "{text}");
        assert_eq!(w.read_part(4, 0, 0), PartRead::Gone);
        assert_eq!(w.segment(3), Lookup::Ready(Bytes::from_static(b"media")));
    }
}
