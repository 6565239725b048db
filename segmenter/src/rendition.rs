//! A rendition: the segmenter, its part ring and its playlist, kept in step. Shells feed it
//! frames and serve from it; it never waits and never does I/O.

use crate::hls::{Blocking, MediaPlaylist, PartInfo, Ready, Variant};
use crate::ring::PartRing;
use crate::segmenter::{FrameError, Output, Segmenter, SegmenterConfig, Stats};
use crate::{Frame, Part, Track};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// Rendition settings.
#[derive(Debug, Clone, Copy)]
pub struct RenditionConfig {
    /// Part and segment targets.
    pub segmenter: SegmenterConfig,
    /// The ring's byte bound.
    pub ring_bytes: usize,
    /// Segments listed in the playlist.
    pub playlist_segments: usize,
}

impl Default for RenditionConfig {
    fn default() -> Self {
        Self {
            segmenter: SegmenterConfig::default(),
            ring_bytes: 32 << 20,
            playlist_segments: 7,
        }
    }
}

/// Result of looking up a part or segment.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// Here it is.
    Ready(Bytes),
    /// Not yet produced, but it is the next one (a preload hint): wait for it.
    NotYet,
    /// Unknown, or already evicted.
    Gone,
}

/// One rendition of a stream.
pub struct Rendition {
    seg: Segmenter,
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
}

impl Rendition {
    /// An empty rendition.
    pub fn new(cfg: RenditionConfig) -> Self {
        let part_s = cfg.segmenter.part_target.as_secs_f64();
        // enough slots for the byte bound at very small parts
        let max_parts = (cfg.ring_bytes / 512).clamp(64, 1 << 16);
        Self {
            seg: Segmenter::new(cfg.segmenter),
            ring: PartRing::new(cfg.ring_bytes, max_parts),
            playlist: MediaPlaylist::new(
                part_s,
                cfg.segmenter.segment_target.as_secs_f64(),
                cfg.playlist_segments,
            ),
            inits: VecDeque::new(),
            firsts: VecDeque::new(),
            sizes: VecDeque::new(),
            open_bytes: 0,
            version: 0,
            keep_evicted: false,
            evicted: Vec::new(),
        }
    }

    /// Keeps the parts the ring evicts until [`Rendition::take_evicted`] (for a disk spool).
    pub fn set_keep_evicted(&mut self, keep: bool) {
        self.keep_evicted = keep;
    }

    /// The parts evicted from the ring since the last call (when kept).
    pub fn take_evicted(&mut self) -> Vec<Arc<Part>> {
        std::mem::take(&mut self.evicted)
    }

    /// The newest init segment.
    pub fn latest_init(&self) -> Option<(u32, Bytes)> {
        self.inits.back().cloned()
    }

    /// See [`Segmenter::set_clock_origin`].
    pub fn set_clock_origin(&mut self, origin_ms: u64) {
        self.seg.set_clock_origin(origin_ms);
    }

    /// Sets the tracks (see [`Segmenter::set_tracks`]).
    pub fn set_tracks(&mut self, tracks: Vec<Track>) -> Result<(), String> {
        let r = self.seg.set_tracks(tracks);
        self.drain();
        r
    }

    /// Takes a frame; returns how many parts it completed.
    pub fn handle_frame(&mut self, frame: Frame, wall_ms: u64) -> Result<usize, FrameError> {
        self.seg.handle_frame(frame, wall_ms)?;
        Ok(self.drain())
    }

    /// The input broke (see [`Segmenter::discontinuity`]).
    pub fn discontinuity(&mut self) {
        self.seg.discontinuity();
        self.drain();
        self.playlist.close_segment();
        self.version += 1;
    }

    /// End of input: flushes the open part.
    pub fn finish(&mut self) {
        self.seg.finish();
        self.drain();
        self.playlist.close_segment();
        self.version += 1;
    }

    fn drain(&mut self) -> usize {
        let mut parts = 0;
        while let Some(o) = self.seg.poll_output() {
            match o {
                Output::Init { generation, data } => {
                    self.inits.push_back((generation, data));
                    // init segments are small: keep enough for every generation a ring or
                    // playlist can still refer to
                    while self.inits.len() > 64 {
                        self.inits.pop_front();
                    }
                }
                Output::Part { part, segment } => {
                    parts += 1;
                    self.add_part(part, segment);
                }
            }
        }
        if parts > 0 {
            self.version += 1;
        }
        parts
    }

    fn add_part(&mut self, part: Part, segment: Option<crate::hls::SegmentInfo>) {
        if segment.is_some() {
            if let Some(last) = self.playlist.segments().back() {
                if !last.complete || self.open_bytes > 0 {
                    self.sizes.push_back((self.open_bytes, last.duration()));
                    while self.sizes.len() > 16 {
                        self.sizes.pop_front();
                    }
                }
            }
            self.open_bytes = 0;
            self.firsts.push_back((part.msn, part.seq));
        }
        self.open_bytes += part.data.len();
        let info = PartInfo {
            duration: part.duration,
            independent: part.independent,
        };
        let (msn, index) = (part.msn, part.index);
        let gone = self.ring.push(Arc::new(part));
        self.playlist.add_part(msn, index, info, segment);
        if self.keep_evicted {
            self.evicted.extend(gone.iter().cloned());
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
    }

    /// Bumped whenever the playlist changes; shells wake waiting readers on it.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Segmenter counters.
    pub fn stats(&self) -> Stats {
        self.seg.stats()
    }

    /// The ring, for readers that forward parts.
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
    pub fn render(&self) -> String {
        self.playlist.render()
    }

    /// Init segment `generation`.
    pub fn init(&self, generation: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, d)| d.clone())
    }

    fn first_seq(&self, msn: u64) -> Option<u64> {
        self.firsts.iter().find(|(m, _)| *m == msn).map(|(_, s)| *s)
    }

    /// Part `index` of segment `msn`.
    pub fn part(&mut self, msn: u64, index: u32) -> Lookup {
        if let Some((next_msn, next_idx)) = self.next_part() {
            if (msn, index) == (next_msn, next_idx) || (msn, index) == (next_msn + 1, 0) {
                return Lookup::NotYet;
            }
        }
        if let Some(first) = self.first_seq(msn) {
            return match self.ring.get(first + u64::from(index)) {
                Some(p) if p.msn == msn && p.index == index => Lookup::Ready(p.data.clone()),
                _ => Lookup::Gone,
            };
        }
        // the segment's first part is gone (a segment larger than the ring): search
        match self.ring.iter().find(|p| p.msn == msn && p.index == index) {
            Some(p) => Lookup::Ready(p.data.clone()),
            None => Lookup::Gone,
        }
    }

    /// The playlist's target duration (seconds).
    pub fn target_duration(&self) -> f64 {
        self.playlist.target_duration()
    }

    /// The (msn, index) of the part to come (the preload hint), once the stream has begun.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        let last = self.playlist.segments().back()?;
        Some(if last.complete {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len() as u32)
        })
    }

    /// Whole segment `msn` (its parts back to back), once complete.
    pub fn segment(&mut self, msn: u64) -> Lookup {
        let Some(seg) = self.playlist.segments().iter().find(|s| s.msn == msn) else {
            let ahead = self
                .next_part()
                .is_some_and(|(m, _)| msn == m || msn == m + 1);
            return if ahead { Lookup::NotYet } else { Lookup::Gone };
        };
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

    /// This rendition as a multivariant playlist entry (`uri` given by the caller); `None`
    /// before the first segment completes.
    pub fn variant(&self, uri: String) -> Option<Variant> {
        let codecs: Vec<String> = self.seg.tracks().filter_map(Track::rfc6381).collect();
        if codecs.is_empty() {
            return None;
        }
        let resolution = self
            .seg
            .tracks()
            .find(|t| t.codec.is_video())
            .map(|t| (t.width, t.height));
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
            codecs: codecs.join(","),
            resolution,
        })
    }
}
