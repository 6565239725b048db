//! The segmenter state machine: frames in, CMAF init segments and parts out.
//!
//! Parts are cut on the primary track (video when there is one, else audio): a part closes
//! before the frame that would make it longer than the part target; a segment closes at the
//! first keyframe once it is at least the segment target long. Other tracks' samples go into
//! the part that covers their decode time. Each part is one CMAF chunk (moof + mdat with one
//! traf per track); a segment is its parts back to back.
//!
//! Time stays monotonic: every track's output decode times strictly increase across camera
//! reconnects ([`Segmenter::discontinuity`]) and absurd input timestamps (jumps of more than
//! [`MAX_JUMP_US`]), which start a new epoch: the next segment carries a discontinuity and the
//! output timeline continues where the last one ended.

use crate::cmaf::{self, Sample};
use crate::media::{Frame, Track};
use crate::{Chunk, PartMeta, SegmentStart};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// A jump in a track's decode time bigger than this (either way) is a discontinuity.
pub const MAX_JUMP_US: i64 = 10_000_000;

/// A part is cut early once its samples hold this many bytes.
pub const MAX_PART_BYTES: usize = 16 << 20;

/// A chunk goes out once the primary track's samples in it span this long (every frame of
/// a 25 or 30 fps camera, every second frame at 60 fps, two AAC frames of audio alone).
pub const CHUNK_MIN_US: i64 = 30_000;

/// In a spliced epoch (a switch of source), a track's first frame arriving within this of
/// the epoch's first lands at the epoch's start: the new source's audio right after its
/// keyframe starts with its picture (sound and picture then differ by under a frame).
const SPLICE_SNAP_US: i64 = 50_000;

/// A part flushed where it starts (its frames all behind its start) still lasts this long:
/// a part has a duration.
const MIN_FLUSH_US: i64 = 1_000;

/// Segmenter settings.
#[derive(Debug, Clone, Copy)]
pub struct SegmenterConfig {
    /// Part duration target (LL-HLS PART-TARGET). Default 200 ms.
    pub part_target: Duration,
    /// Segment duration target; segments are cut on the first keyframe after it. Default 1 s.
    pub segment_target: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
        }
    }
}

impl SegmenterConfig {
    /// The longest a segment grows, keyframe or not: six segment targets. A camera whose
    /// keyframes are not marked as such (or that sends none) still gets segments, so the
    /// playlist keeps a bounded target duration and its parts stay reachable.
    pub fn max_segment(&self) -> Duration {
        self.segment_target * 6
    }
}

/// What the segmenter produced.
#[derive(Debug, Clone)]
pub enum Output {
    /// A new init segment (the tracks changed); parts after it refer to `generation`.
    Init {
        /// Generation number, from 0.
        generation: u32,
        /// ftyp + moov.
        data: Bytes,
    },
    /// A piece of the open part: every frame (or few) as it comes, the last one with the
    /// part's duration.
    Chunk(Chunk),
}

/// Why a frame was not packaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No such track.
    #[error("frame for unknown track {0}")]
    UnknownTrack(usize),
    /// No usable track configuration yet (for example no SPS/PPS).
    #[error("no usable track configuration yet")]
    NoTracks,
    /// Decode time not after the previous frame's.
    #[error("decode time {dts} not after previous {last} on track {track}")]
    NotMonotonic {
        /// Track index.
        track: usize,
        /// Offending (mapped) dts.
        dts: i64,
        /// Previous dts.
        last: i64,
    },
    /// Frame before the first keyframe (after a start or a discontinuity): dropped until the
    /// stream resyncs at a keyframe.
    #[error("waiting for a keyframe")]
    WaitingForKeyframe,
    /// Empty access unit.
    #[error("empty frame")]
    Empty,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Frames packaged.
    pub frames: u64,
    /// Frames dropped (see [`FrameError`]).
    pub dropped: u64,
    /// Parts out.
    pub parts: u64,
    /// Segments opened.
    pub segments: u64,
    /// Discontinuities.
    pub discontinuities: u64,
}

struct TrackState {
    track: Track,
    /// Added to input timestamps (ticks) in the current epoch; None until the track's first
    /// frame of the epoch.
    offset: Option<i64>,
    last_dts: Option<i64>,
    /// The newest frame: its duration is known when the next one comes.
    pending: Option<Pending>,
    samples: Vec<(Sample, Bytes)>,
    /// Bytes in `samples`.
    held: usize,
    /// Decode time of the first sample in `samples`.
    base: Option<i64>,
    /// Decode time just after the last sample in `samples`.
    end: Option<i64>,
    /// Typical frame duration, ticks.
    typical: i64,
    waiting_key: bool,
}

struct Pending {
    dts: i64,
    cts: i32,
    keyframe: bool,
    data: Bytes,
    /// Arrival wall clock, ms.
    wall_ms: u64,
}

impl TrackState {
    fn new(track: Track) -> Self {
        let typical = match track.codec {
            crate::Codec::Aac => 1024,
            _ => i64::from(track.timescale) / 30,
        };
        Self {
            waiting_key: track.codec.is_video(),
            track,
            offset: None,
            last_dts: None,
            pending: None,
            samples: Vec::new(),
            held: 0,
            base: None,
            end: None,
            typical: typical.max(1),
        }
    }

    fn us(&self, ticks: i64) -> i64 {
        (i128::from(ticks) * 1_000_000 / i128::from(self.track.timescale.max(1))) as i64
    }

    fn ticks(&self, us: i64) -> i64 {
        (i128::from(us) * i128::from(self.track.timescale) / 1_000_000) as i64
    }

    /// Moves a frame whose duration is now known into the open part; returns its arrival.
    fn push_sample(&mut self, p: Pending, duration: i64) -> u64 {
        if self.base.is_none() {
            self.base = Some(p.dts);
        }
        self.end = Some(p.dts + duration.max(1));
        let sample = Sample {
            duration: u32::try_from(duration.max(1)).unwrap_or(u32::MAX),
            size: u32::try_from(p.data.len()).unwrap_or(u32::MAX),
            keyframe: p.keyframe,
            cts: p.cts,
        };
        self.held += p.data.len();
        self.samples.push((sample, p.data));
        p.wall_ms
    }

    /// Output time just after the last sample, µs.
    fn end_us(&self) -> Option<i64> {
        if let Some(p) = &self.pending {
            return Some(self.us(p.dts + self.typical));
        }
        self.last_dts.map(|d| self.us(d + self.typical))
    }
}

/// What a cut does with the samples still waiting for their duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Those of other tracks that start before the cut go in (the primary's stays).
    No,
    /// All go in, each with its track's typical duration.
    Held,
    /// All go in, each ending at the cut (a splice: every track ends together).
    Fit,
}

#[derive(Clone, Copy)]
struct Epoch {
    /// Wall clock at the epoch's first frame.
    wall_ms: u64,
    /// Output time of the epoch's start, µs.
    out_us: i64,
}

/// The segmenter of one rendition.
pub struct Segmenter {
    cfg: SegmenterConfig,
    tracks: Vec<TrackState>,
    primary: usize,
    generation: Option<u32>,
    epoch: Option<Epoch>,
    /// Output time where the next epoch starts, µs.
    next_start_us: i64,
    /// (output µs, wall ms) for program date time.
    anchor: Option<(i64, u64)>,
    /// Open segment: msn, start µs.
    segment: Option<(u64, i64)>,
    next_msn: u64,
    part_index: u32,
    part_start_us: i64,
    next_seq: u64,
    frag_seq: u32,
    opening: Option<SegmentStart>,
    /// The open part, once its first chunk went out.
    open_part: Option<PartMeta>,
    /// Bytes of the open part so far.
    part_bytes: u64,
    /// Arrival of the open part's first frame.
    part_capture_ms: Option<u64>,
    /// Where the last chunk of the open part ended, µs.
    chunk_end_us: i64,
    /// Arrival of the newest frame since the last chunk, ms.
    chunk_frame_ms: u64,
    /// Arrival of the primary track's newest frame, ms (wall clock).
    primary_arrived_ms: u64,
    /// The next discontinuity is a splice (see [`Segmenter::splice_next`]).
    splice_next: bool,
    /// The current epoch continues the output timeline where the previous one ended.
    spliced: bool,
    discontinuity_pending: bool,
    out: VecDeque<Output>,
    stats: Stats,
    /// Wall clock (ms) at output time 0, when renditions share a timeline.
    origin_ms: Option<u64>,
}

impl Segmenter {
    /// A segmenter with no tracks yet.
    pub fn new(cfg: SegmenterConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            primary: 0,
            generation: None,
            epoch: None,
            next_start_us: 0,
            anchor: None,
            segment: None,
            next_msn: 0,
            part_index: 0,
            part_start_us: 0,
            next_seq: 0,
            frag_seq: 0,
            opening: None,
            open_part: None,
            part_bytes: 0,
            part_capture_ms: None,
            chunk_end_us: 0,
            chunk_frame_ms: 0,
            primary_arrived_ms: 0,
            splice_next: false,
            spliced: false,
            discontinuity_pending: false,
            out: VecDeque::new(),
            stats: Stats::default(),
            origin_ms: None,
        }
    }

    /// Ties the output timeline to the wall clock: an epoch (the start, or the first frame
    /// after a discontinuity) starts at the wall-clock time since `origin_ms`, never before
    /// the previous epoch's end. Renditions of one camera given the same origin stay aligned
    /// even though they come from separate RTSP sessions, and an outage shows as a gap of its
    /// real length.
    pub fn set_clock_origin(&mut self, origin_ms: u64) {
        self.origin_ms = Some(origin_ms);
    }

    /// The settings.
    pub fn config(&self) -> SegmenterConfig {
        self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The current tracks.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().map(|t| &t.track)
    }

    /// Sets the tracks (at start, and whenever the camera's parameters change). Same tracks:
    /// nothing happens. Different ones: the open part is flushed, a new init segment comes out
    /// and the next segment starts with a discontinuity. Errors name the unusable track; the
    /// old tracks stay in place.
    pub fn set_tracks(&mut self, tracks: Vec<Track>) -> Result<(), String> {
        if tracks.is_empty() {
            return Err("no tracks".into());
        }
        for (i, t) in tracks.iter().enumerate() {
            t.validate().map_err(|e| format!("track {i}: {e}"))?;
        }
        if self.tracks.iter().map(|t| &t.track).eq(tracks.iter()) {
            return Ok(());
        }
        let data = cmaf::init_segment(&tracks).map_err(|e| format!("init segment: {e}"))?;
        if self.generation.is_some() {
            self.discontinuity();
        }
        let last: Vec<Option<(i64, u32)>> = self
            .tracks
            .iter()
            .map(|t| t.last_dts.map(|d| (d, t.track.timescale)))
            .collect();
        self.tracks = tracks.into_iter().map(TrackState::new).collect();
        // keep each track's last decode time so a changed camera can never go backwards
        for (t, l) in self.tracks.iter_mut().zip(last) {
            if let Some((d, ts)) = l {
                if ts == t.track.timescale {
                    t.last_dts = Some(d);
                }
            }
        }
        self.primary = self
            .tracks
            .iter()
            .position(|t| t.track.codec.is_video())
            .unwrap_or(0);
        let generation = self.generation.map_or(0, |g| g + 1);
        self.generation = Some(generation);
        self.out.push_back(Output::Init { generation, data });
        Ok(())
    }

    /// The input's timeline broke (camera reconnected, stream restarted): flushes the open
    /// part, ends the segment, and continues the output timeline after the last frame. The
    /// next segment carries a discontinuity and starts at a keyframe.
    pub fn discontinuity(&mut self) {
        let splice = std::mem::take(&mut self.splice_next);
        let end = if splice {
            self.splice_point()
        } else {
            self.tracks.iter().filter_map(TrackState::end_us).max()
        };
        self.spliced = splice && end.is_some();
        if let Some(end) = end {
            if self.segment.is_some() {
                let flush = if splice { Flush::Fit } else { Flush::Held };
                self.cut(end, flush, true);
            }
            // (a flush may end the part a little after `end`)
            self.next_start_us = self.next_start_us.max(end).max(self.part_start_us);
        }
        self.segment = None;
        self.epoch = None;
        self.anchor = None;
        for t in &mut self.tracks {
            t.offset = None;
            t.pending = None;
            t.waiting_key = t.track.codec.is_video();
        }
        if self.generation.is_some() && end.is_some() {
            self.discontinuity_pending = true;
            self.stats.discontinuities += 1;
        }
    }

    /// Makes the next discontinuity a splice: another source continues this one (a
    /// program's switch, see [`crate::program`]). Every track ends where the picture ends
    /// (the other tracks' last frames stretched or shortened to it), and the new epoch
    /// starts there, not at the wall clock, with each of the new source's tracks whose
    /// first frame comes within 50 ms of the epoch's first at its very start. hls.js places
    /// the media after a discontinuity where the playlist says; a track ending before the
    /// part did left a hole of 20-45 ms at each switch, and Chrome stalled on it. (Ending
    /// every track at the earliest track end instead gave ffmpeg two video frames within
    /// one frame's time.)
    /// (`false` takes it back.)
    pub fn splice_next(&mut self, splice: bool) {
        self.splice_next = splice;
    }

    /// Where a splice joins the sources: where the primary track (the picture) ends, but
    /// after every track's last frame starts.
    fn splice_point(&self) -> Option<i64> {
        // (a track's last decode time is its newest frame's, held or not)
        let last_start = self
            .tracks
            .iter()
            .filter_map(|t| t.last_dts.map(|d| t.us(d)))
            .max()?;
        let end = self
            .tracks
            .get(self.primary)
            .and_then(TrackState::end_us)
            .unwrap_or(last_start);
        Some(end.max(last_start + MIN_FLUSH_US))
    }

    /// Flushes the open part (end of stream).
    pub fn finish(&mut self) {
        if let Some(end) = self.tracks.iter().filter_map(TrackState::end_us).max() {
            if self.segment.is_some() {
                self.cut(end, Flush::Held, true);
            }
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Takes one frame. `wall_ms` is the wall clock at arrival (ms since the Unix epoch),
    /// used for EXT-X-PROGRAM-DATE-TIME.
    pub fn handle_frame(&mut self, frame: Frame, wall_ms: u64) -> Result<(), FrameError> {
        let r = self.frame(frame, wall_ms, true);
        if r.is_err() {
            self.stats.dropped += 1;
        } else {
            self.stats.frames += 1;
        }
        r
    }

    fn frame(&mut self, frame: Frame, wall_ms: u64, retry: bool) -> Result<(), FrameError> {
        if self.generation.is_none() {
            return Err(FrameError::NoTracks);
        }
        let ti = frame.track;
        if ti >= self.tracks.len() {
            return Err(FrameError::UnknownTrack(ti));
        }
        if frame.data.is_empty() {
            return Err(FrameError::Empty);
        }
        let is_primary = ti == self.primary;
        let wall_us = self.origin_ms.map_or(0, |o| {
            (wall_ms.saturating_sub(o) as i64).saturating_mul(1000)
        });
        let spliced = self.spliced;
        let epoch = *self.epoch.get_or_insert(Epoch {
            wall_ms,
            out_us: if spliced {
                self.next_start_us
            } else {
                self.next_start_us.max(wall_us)
            },
        });
        let t = &mut self.tracks[ti];
        // Each track's first frame of an epoch lands at the epoch's start plus the wall time
        // since the epoch began: the tracks' RTP clocks have unrelated origins, so arrival
        // time is what lines them up.
        let fresh = t.offset.is_none();
        let offset = match t.offset {
            Some(o) => o,
            None => {
                let mut since_us =
                    (wall_ms.saturating_sub(epoch.wall_ms) as i64).saturating_mul(1000);
                if spliced && since_us < SPLICE_SNAP_US {
                    since_us = 0;
                }
                let start = t.ticks(epoch.out_us.saturating_add(since_us));
                let o = start.saturating_sub(frame.dts);
                t.offset = Some(o);
                o
            }
        };
        let (Some(mut dts), Some(pts)) =
            (frame.dts.checked_add(offset), frame.pts.checked_add(offset))
        else {
            return self.jump(frame, wall_ms, retry);
        };
        if let Some(last) = t.last_dts {
            let step_us = t.us(dts) - t.us(last);
            if !fresh && (step_us.abs() > MAX_JUMP_US || (pts - dts).abs() > t.ticks(MAX_JUMP_US)) {
                return self.jump(frame, wall_ms, retry);
            }
            if dts <= last {
                if fresh {
                    // first frame of an epoch landing on or before the previous epoch's end:
                    // move this track's epoch forward instead of dropping
                    let shift = last + 1 - dts;
                    t.offset = Some(offset + shift);
                    dts += shift;
                } else {
                    return Err(FrameError::NotMonotonic {
                        track: ti,
                        dts,
                        last,
                    });
                }
            }
        } else if dts < 0 {
            t.offset = Some(offset - dts);
            dts = 0;
        }
        let pts = pts + (dts - frame.dts - offset);
        if t.track.codec.is_video() && t.waiting_key {
            if !frame.keyframe {
                return Err(FrameError::WaitingForKeyframe);
            }
            if is_primary || self.segment.is_some() {
                t.waiting_key = false;
            }
        }
        if !is_primary && self.segment.is_none() {
            // nothing before the primary track's first keyframe
            return Err(FrameError::WaitingForKeyframe);
        }
        if let Some(p) = t.pending.take() {
            let d = dts - p.dts;
            t.typical = d.max(1);
            let arrived = t.push_sample(p, d);
            self.part_capture_ms.get_or_insert(arrived);
            self.chunk_frame_ms = self.chunk_frame_ms.max(arrived);
        }
        let t = &mut self.tracks[ti];
        let cts = i32::try_from(pts - dts).unwrap_or(0);
        t.pending = Some(Pending {
            dts,
            cts,
            keyframe: frame.keyframe,
            data: frame.data,
            wall_ms,
        });
        t.last_dts = Some(dts);
        let now_us = t.us(dts);
        let typical_us = t.us(t.typical);
        let mut cut = false;
        if is_primary {
            self.primary_arrived_ms = wall_ms;
            let cfg = self.cfg;
            match self.segment {
                None => {
                    self.anchor.get_or_insert((now_us, wall_ms));
                    self.open_segment(now_us);
                }
                Some((_, seg_start)) => {
                    let part_us = cfg.part_target.as_micros() as i64;
                    let seg_us = cfg.segment_target.as_micros() as i64;
                    let seg_len = now_us - seg_start + typical_us / 2;
                    if (frame.keyframe && seg_len >= seg_us)
                        || seg_len >= cfg.max_segment().as_micros() as i64
                    {
                        // (a frame behind the open part's start, after audio went on
                        // alone, opens nothing: the next keyframe will)
                        if self.cut(now_us, Flush::No, true) {
                            self.open_segment(now_us);
                            cut = true;
                        }
                    } else if now_us - self.part_start_us + typical_us > part_us {
                        cut = self.cut(now_us, Flush::No, false);
                    }
                }
            }
        } else if self.segment.is_some() {
            // the primary track stalled (a camera that stops sending video, video dropped
            // until a keyframe): the other tracks still come out, part by part. Stalled
            // means no primary frame came for two parts' time, not merely that its frames
            // are behind: a busy encoder's video comes late, and then in a burst.
            let part_us = self.cfg.part_target.as_micros() as i64;
            let silent_ms = wall_ms.saturating_sub(self.primary_arrived_ms);
            if now_us - self.part_start_us > 2 * part_us && silent_ms as i64 * 1000 > 2 * part_us {
                cut = self.cut(now_us, Flush::No, false);
            }
        }
        let held: usize = self.tracks.iter().map(|t| t.held).sum();
        if !cut && held > MAX_PART_BYTES && self.segment.is_some() {
            cut = self.cut(now_us, Flush::No, false);
        }
        if !cut && is_primary {
            // what the part holds so far goes out now, a frame (or a few) at a time
            let end = self.tracks[ti].end.map(|e| self.tracks[ti].us(e));
            if end.is_some_and(|e| e - self.chunk_end_us >= CHUNK_MIN_US) {
                self.chunk(None, false);
            }
        }
        Ok(())
    }

    /// An absurd timestamp: a new epoch, then the frame again (once).
    fn jump(&mut self, frame: Frame, wall_ms: u64, retry: bool) -> Result<(), FrameError> {
        let track = frame.track;
        tracing::debug!(track, dts = frame.dts, "timestamp jump: discontinuity");
        self.discontinuity();
        if retry {
            self.frame(frame, wall_ms, false)
        } else {
            Err(FrameError::NotMonotonic {
                track,
                dts: frame.dts,
                last: -1,
            })
        }
    }

    fn open_segment(&mut self, start_us: i64) {
        let msn = self.next_msn;
        self.next_msn += 1;
        self.segment = Some((msn, start_us));
        self.part_index = 0;
        self.part_start_us = start_us;
        self.chunk_end_us = start_us;
        let pdt_ms = self.anchor.map_or(0, |(us, wall)| {
            wall.saturating_add_signed((start_us - us) / 1000)
        });
        self.opening = Some(SegmentStart {
            discontinuity: std::mem::take(&mut self.discontinuity_pending),
            pdt_ms,
        });
        self.stats.segments += 1;
    }

    /// Sends what the open part holds so far as a chunk; `end_us`: the part ends here (its
    /// duration), and a bare end marker goes out even when nothing is left; `ends_segment`:
    /// so does its segment.
    fn chunk(&mut self, end_us: Option<i64>, ends_segment: bool) {
        let Some((msn, _)) = self.segment else {
            return;
        };
        let primary = self.primary;
        let mut trafs = Vec::new();
        let mut keyframe_first = None;
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if t.samples.is_empty() {
                continue;
            }
            let samples = std::mem::take(&mut t.samples);
            t.held = 0;
            let base = t.base.take().unwrap_or(0);
            if i == primary {
                keyframe_first = samples.first().map(|(s, _)| s.keyframe);
            }
            trafs.push(cmaf::Traf {
                track_id: i as u32 + 1,
                base_dts: u64::try_from(base).unwrap_or(0),
                samples,
            });
        }
        if trafs.is_empty() && (end_us.is_none() || self.open_part.is_none()) {
            return;
        }
        let data = if trafs.is_empty() {
            Bytes::new()
        } else {
            self.frag_seq = self.frag_seq.wrapping_add(1);
            cmaf::fragment(self.frag_seq, &trafs)
        };
        let video = self.tracks[primary].track.codec.is_video();
        let meta = *self.open_part.get_or_insert_with(|| PartMeta {
            seq: self.next_seq,
            msn,
            index: self.part_index,
            // audio alone: every part starts where a decoder can
            independent: !video || keyframe_first.unwrap_or(false),
            init: self.generation.unwrap_or(0),
            capture_ms: self.part_capture_ms.unwrap_or(0),
            segment: self.opening.take(),
        });
        let p = &self.tracks[primary];
        let end = match end_us {
            Some(e) => e,
            None => p.end.map_or(self.chunk_end_us, |e| p.us(e)),
        };
        self.chunk_end_us = end;
        let offset = self.part_bytes;
        self.part_bytes += data.len() as u64;
        self.out.push_back(Output::Chunk(Chunk {
            part: meta,
            offset,
            data,
            end_us: (end - self.part_start_us).max(0) as u64,
            last: end_us.is_some(),
            ends_segment: end_us.is_some() && ends_segment,
            frame_ms: std::mem::take(&mut self.chunk_frame_ms),
        }));
    }

    /// Closes the open part at output time `cut_us` (µs); `ends_segment`: the segment ends
    /// with it. Returns whether it did: a part never ends where it starts. After audio went
    /// on alone past a stalled video track, the video's late frames are behind the open
    /// part's start; they join that part, which ends at a later frame (a flush ends it just
    /// after its start).
    fn cut(&mut self, cut_us: i64, flush: Flush, ends_segment: bool) -> bool {
        if self.segment.is_none() {
            return false;
        }
        let all = flush != Flush::No;
        let cut_us = if all {
            cut_us.max(self.part_start_us + MIN_FLUSH_US)
        } else if cut_us <= self.part_start_us {
            return false;
        } else {
            cut_us
        };
        let primary = self.primary;
        for (i, t) in self.tracks.iter_mut().enumerate() {
            // samples still waiting for their duration belong here when they start before the cut
            let due = match &t.pending {
                Some(p) => all || (i != primary && t.us(p.dts) < cut_us),
                None => false,
            };
            if due {
                if let Some(p) = t.pending.take() {
                    let d = match flush {
                        Flush::Fit => (t.ticks(cut_us) - p.dts).max(1),
                        Flush::No | Flush::Held => t.typical,
                    };
                    let arrived = t.push_sample(p, d);
                    self.part_capture_ms.get_or_insert(arrived);
                    self.chunk_frame_ms = self.chunk_frame_ms.max(arrived);
                }
            }
        }
        let has_samples = self.tracks.iter().any(|t| !t.samples.is_empty());
        if self.open_part.is_none() && !has_samples {
            return false;
        }
        self.chunk(Some(cut_us), ends_segment);
        self.open_part = None;
        self.part_bytes = 0;
        self.part_capture_ms = None;
        self.next_seq += 1;
        self.part_index += 1;
        self.part_start_us = cut_us;
        self.chunk_end_us = cut_us;
        self.stats.parts += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Part;
    use mp4_atom::{Any, Decode};

    use crate::test_media::{audio, audio_track, video, video_track};

    fn tracks(audio: bool) -> Vec<Track> {
        let mut t = vec![video_track(640)];
        if audio {
            t.push(audio_track());
        }
        t
    }

    /// Feeds `secs` of 25 fps video (keyframe every `gop` frames) and 48 kHz AAC from input
    /// time `start` (ticks of 90 kHz); returns the outputs.
    fn feed(s: &mut Segmenter, start: i64, secs: i64, gop: i64) -> Vec<Output> {
        let mut a = start * 48_000 / 90_000;
        for i in 0..secs * 25 {
            let v = start + i * 3600;
            // arrival: 1 ms per 90 ticks since the feed began
            let wall = |ticks: i64| 1_795_000_000_000 + ((ticks - start) / 90).max(0) as u64;
            while a * 90_000 / 48_000 <= v {
                let _ = s.handle_frame(audio(a), wall(a * 90_000 / 48_000));
                a += 1024;
            }
            if let Err(e) = s.handle_frame(video(v, i % gop == 0), wall(v)) {
                panic!("frame {i} at {v}: {e:?}");
            }
        }
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    /// The parts the chunks make, with the segment each opens.
    fn parts(out: &[Output]) -> Vec<(Part, Option<SegmentStart>)> {
        let mut parts: Vec<(Part, Option<SegmentStart>)> = Vec::new();
        let mut open: Option<(crate::PartMeta, Vec<u8>)> = None;
        for o in out {
            let Output::Chunk(c) = o else { continue };
            if open.is_none() && c.offset > 0 {
                continue; // the rest of a part begun in an earlier batch
            }
            let (meta, data) = open.get_or_insert_with(|| (c.part, Vec::new()));
            assert_eq!(*meta, c.part, "chunks of one part carry one meta");
            assert_eq!(c.offset, data.len() as u64, "chunks are contiguous");
            data.extend_from_slice(&c.data);
            if c.last {
                let (meta, data) = open.take().unwrap();
                let p = Part::new(meta, c.end_us as f64 / 1e6, Bytes::from(data));
                parts.push((p, meta.segment));
            }
        }
        parts
    }

    /// (track id, base dts, sample count) of each traf of each chunk of a part.
    fn trafs(p: &Part) -> Vec<(u32, u64, usize)> {
        let mut out = Vec::new();
        let mut buf = &p.data[..];
        while !buf.is_empty() {
            if let Any::Moof(m) = Any::decode(&mut buf).unwrap() {
                for t in &m.traf {
                    out.push((
                        t.tfhd.track_id,
                        t.tfdt.as_ref().unwrap().base_media_decode_time,
                        t.trun[0].samples.iter().count(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn parts_and_segments_follow_the_targets() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(true)).unwrap();
        let out = feed(&mut s, 0, 6, 25);
        assert!(matches!(out[0], Output::Init { generation: 0, .. }));
        let ps = parts(&out);
        // 40 ms frames: 5 per 200 ms part, 5 parts per 1 s segment
        assert!(ps.len() >= 25, "{}", ps.len());
        for (p, _) in &ps {
            assert!(
                p.duration <= 0.2 + 1e-9 && p.duration > 0.15,
                "{}",
                p.duration
            );
        }
        let opens: Vec<_> = ps
            .iter()
            .filter_map(|(p, s)| s.as_ref().map(|_| (p.index, p.msn, p.independent)))
            .collect();
        assert_eq!(opens[..3], [(0, 0, true), (0, 1, true), (0, 2, true)]);
        assert_eq!(ps.iter().filter(|(p, _)| p.msn == 1).count(), 5);
        // a segment's last part says so as it ends (before the next part's first frame), and
        // no other chunk does
        let lasts: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Chunk(c) if c.ends_segment => Some((c.part.msn, c.part.index, c.last)),
                _ => None,
            })
            .collect();
        assert_eq!(lasts[..3], [(0, 4, true), (1, 4, true), (2, 4, true)]);
        // audio rides in the same parts, and each track's decode times continue part to part
        let mut next = [None, None];
        for (p, _) in &ps {
            for (id, base, n) in trafs(p) {
                let i = id as usize - 1;
                if let Some(want) = next[i] {
                    let want: u64 = want;
                    assert!(base.abs_diff(want) <= 1, "track {id}: {base} vs {want}");
                }
                next[i] = Some(base + n as u64 * if id == 1 { 3600 } else { 1024 });
            }
        }
        assert_eq!(s.stats().dropped, 1, "audio before the first keyframe");
    }

    #[test]
    fn audio_keeps_coming_out_when_video_stalls() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(true)).unwrap();
        let before = parts(&feed(&mut s, 0, 2, 25)).len();
        // 3 s of audio alone (cut once no video came for two parts' time)
        let wall = 1_795_000_000_000 + 2000;
        for k in 0..141 {
            let _ = s.handle_frame(audio(96_000 + k * 1024), wall + k as u64 * 21);
        }
        let during = parts(&std::iter::from_fn(|| s.poll_output()).collect::<Vec<_>>());
        assert!(during.len() >= 5, "{before} then {}", during.len());
        assert!(during.iter().all(|(p, _)| p.duration <= 0.45));
    }

    #[test]
    fn video_late_behind_audio_makes_no_part_without_duration() {
        // a camera whose video encoder falls 600 ms behind its audio (a busy CPU): the audio
        // goes on alone, then the late video comes in a burst, a segment's keyframe first
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(true)).unwrap();
        let mut out = feed(&mut s, 0, 2, 25);
        let wall = |ticks: i64| 1_795_000_000_000 + (ticks / 90) as u64;
        let mut a = 2 * 48_000 / 1024 * 1024 + 1024;
        while a * 90_000 / 48_000 < 234_000 {
            let _ = s.handle_frame(audio(a), wall(a * 90_000 / 48_000));
            a += 1024;
        }
        for i in 50..65 {
            s.handle_frame(video(i * 3600, i % 25 == 0), wall(234_000))
                .unwrap();
        }
        for i in 65..100 {
            let v = i * 3600;
            while a * 90_000 / 48_000 <= v {
                let _ = s.handle_frame(audio(a), wall(a * 90_000 / 48_000));
                a += 1024;
            }
            s.handle_frame(video(v, i % 25 == 0), wall(v)).unwrap();
        }
        out.extend(std::iter::from_fn(|| s.poll_output()));
        let ps = parts(&out);
        assert!(ps.len() > 15, "{}", ps.len());
        for (p, _) in &ps {
            assert!(
                p.data.is_empty() || p.duration > 0.0,
                "part {} ({} bytes) has no duration",
                p.seq,
                p.data.len()
            );
        }
    }

    #[test]
    fn a_switch_of_source_leaves_no_hole_in_any_track() {
        // a program switching to another source (other tracks, unrelated clocks): its
        // keyframe comes 30 ms after the old source's last frame
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_clock_origin(1_795_000_000_000);
        s.set_tracks(tracks(true)).unwrap();
        let mut out = feed(&mut s, 0, 2, 25);
        s.splice_next(true);
        s.set_tracks(vec![video_track(320), audio_track()]).unwrap();
        let wall = |i: i64| 1_795_000_000_000 + 1990 + (i * 40) as u64;
        let mut a = 5_000_000;
        for i in 0..50 {
            let v = 9_000_000 + i * 3600;
            s.handle_frame(video(v, i % 25 == 0), wall(i)).unwrap();
            for _ in 0..2 {
                let _ = s.handle_frame(audio(a), wall(i) + 1);
                a += 1024;
            }
        }
        out.extend(std::iter::from_fn(|| s.poll_output()));
        // every traf of a track starts where the track's previous one ended
        let mut end: std::collections::HashMap<u32, u64> = Default::default();
        let mut checked = 0;
        // and the new source's tracks start together (µs), where the old ones all end
        let mut switched = false;
        let mut first_after: std::collections::HashMap<u32, u64> = Default::default();
        for o in &out {
            let Output::Chunk(c) = o else { continue };
            switched |= c.part.segment.is_some_and(|st| st.discontinuity);
            let mut buf = &c.data[..];
            while !buf.is_empty() {
                let Any::Moof(m) = Any::decode(&mut buf).unwrap() else {
                    continue;
                };
                for t in &m.traf {
                    let base = t.tfdt.as_ref().unwrap().base_media_decode_time;
                    let d: Vec<u32> = t.trun[0]
                        .samples
                        .iter()
                        .map(|e| e.duration.unwrap())
                        .collect();
                    if t.tfhd.track_id == 1 {
                        // no video frame cut short (ffmpeg's decoders then see two frames
                        // within one frame's time)
                        assert!(d.iter().all(|d| *d >= 1800), "{d:?}");
                    }
                    let len: u64 = d.iter().map(|d| u64::from(*d)).sum();
                    if switched {
                        let rate = if t.tfhd.track_id == 1 { 90_000 } else { 48_000 };
                        first_after
                            .entry(t.tfhd.track_id)
                            .or_insert(base * 1_000_000 / rate);
                    }
                    if let Some(prev) = end.insert(t.tfhd.track_id, base + len) {
                        assert_eq!(
                            base, prev,
                            "track {} has a hole or an overlap",
                            t.tfhd.track_id
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "{checked}");
        assert!(s.stats().discontinuities >= 1);
        let (v, a) = (first_after[&1], first_after[&2]);
        assert!(
            v.abs_diff(a) <= 21,
            "the new video starts at {v} µs, its audio at {a}"
        );
    }

    #[test]
    fn a_long_gop_makes_long_segments_of_short_parts() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(false)).unwrap();
        let ps = parts(&feed(&mut s, 0, 8, 75)); // a keyframe every 3 s
        let opens = ps.iter().filter(|(_, s)| s.is_some()).count();
        assert_eq!(opens, 3);
        assert!(ps.iter().filter(|(p, _)| p.independent).count() == 3);
        assert!(ps.iter().all(|(p, _)| p.duration <= 0.2 + 1e-9));
    }

    #[test]
    fn no_segment_grows_past_its_bound_without_keyframes() {
        // a camera whose keyframes are not marked (one at the start, then none for 20 s)
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(false)).unwrap();
        let ps = parts(&feed(&mut s, 0, 20, 1_000_000));
        let starts: Vec<_> = ps.iter().filter(|(_, s)| s.is_some()).collect();
        // cut every 6 s (six targets): segments at 0, 6, 12, 18 s
        assert_eq!(starts.len(), 4, "{}", starts.len());
        let per_segment = ps.iter().filter(|(p, _)| p.msn == 1).count();
        assert!((29..=31).contains(&per_segment), "{per_segment}");
        assert!(starts[1].0.msn == 1 && !starts[1].0.independent);
    }

    #[test]
    fn reconnects_keep_time_monotonic_and_mark_a_discontinuity() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(true)).unwrap();
        let before = parts(&feed(&mut s, 5_000_000, 3, 25));
        s.discontinuity();
        let flushed = parts(&std::iter::from_fn(|| s.poll_output()).collect::<Vec<_>>());
        // the camera comes back with its clock restarted near zero
        let after = parts(&feed(&mut s, 1000, 3, 25));
        let all: Vec<_> = before.iter().chain(&flushed).chain(&after).collect();
        let mut last = [0u64; 2];
        for (p, _) in &all {
            for (id, base, _) in trafs(p) {
                let i = id as usize - 1;
                assert!(
                    base >= last[i],
                    "track {id} went back: {base} < {}",
                    last[i]
                );
                last[i] = base + 1;
            }
        }
        let (first_after, start) = after.iter().find(|(_, s)| s.is_some()).unwrap();
        assert!(start.unwrap().discontinuity);
        assert!(after[0].0.independent);
        assert_eq!(s.stats().discontinuities, 1);
        // msn keeps counting
        assert_eq!(
            first_after.msn,
            before.iter().filter(|(_, s)| s.is_some()).count() as u64
        );
    }

    #[test]
    fn absurd_timestamps_do_not_break_the_timeline() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(tracks(false)).unwrap();
        let mut ok = 0;
        let mut dts = 0i64;
        for i in 0..600 {
            let j = match i {
                _ if i % 100 == 50 => i64::MAX / 2,
                _ if i % 100 == 80 => i64::MIN / 2,
                _ if i % 7 == 3 => -3600,
                _ if i % 11 == 5 => 0,
                _ => 3600,
            };
            dts = dts.wrapping_add(j);
            if s.handle_frame(video(dts, i % 25 == 0), 0).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 300, "{ok}");
        let ps = parts(&std::iter::from_fn(|| s.poll_output()).collect::<Vec<_>>());
        let mut last = None;
        for (p, _) in &ps {
            let (_, base, n) = trafs(p)[0];
            if let Some(l) = last {
                assert!(base >= l, "{base} < {l}");
            }
            last = Some(base + n as u64);
        }
    }

    #[test]
    fn nothing_before_tracks_and_keyframes() {
        let mut s = Segmenter::new(SegmenterConfig::default());
        assert_eq!(s.handle_frame(video(0, true), 0), Err(FrameError::NoTracks));
        assert!(s
            .set_tracks(vec![Track::h264(Bytes::new(), 640, 360)])
            .is_err());
        s.set_tracks(tracks(false)).unwrap();
        assert_eq!(
            s.handle_frame(video(0, false), 0),
            Err(FrameError::WaitingForKeyframe)
        );
        assert_eq!(
            s.handle_frame(
                Frame {
                    track: 3,
                    ..video(1, true)
                },
                0
            ),
            Err(FrameError::UnknownTrack(3))
        );
        s.handle_frame(video(3600, true), 0).unwrap();
        assert!(matches!(
            s.handle_frame(video(3600, false), 0),
            Err(FrameError::NotMonotonic { .. })
        ));
        // same tracks again: no new init
        s.set_tracks(tracks(false)).unwrap();
        assert!(matches!(
            s.poll_output(),
            Some(Output::Init { generation: 0, .. })
        ));
        assert!(s.poll_output().is_none());
        s.set_tracks(tracks(true)).unwrap();
        assert!(matches!(s.poll_output(), Some(Output::Chunk(c)) if c.last));
        assert!(matches!(
            s.poll_output(),
            Some(Output::Init { generation: 1, .. })
        ));
    }
}
