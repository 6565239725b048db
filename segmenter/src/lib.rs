//! Canopy's sans-IO media core, shared by the gateway (on-site) and the relay (viewer side):
//!
//! - [`media`]: tracks and frames (what comes in);
//! - [`segmenter`]: frames in, CMAF init segments and parts out ([`cmaf`] builds the boxes
//!   with mp4-atom);
//! - [`ring`]: the bounded part ring with reader cursors;
//! - [`hls`]: the LL-HLS playlist model and blocking reload;
//! - [`window`]: what viewers can fetch of a stream: the ring, the playlist, the init
//!   segments and the part being built, fed chunk by chunk;
//! - [`rendition`]: the segmenter and its window, as a camera's rendition at the gateway;
//! - [`program`]: a camera's program, cut from its sources at the low-bandwidth level;
//! - [`mirror`]: the relay's copy of a gateway's rendition, fed by pieces that arrive out of
//!   order, twice, or not at all (its own numbering, gap parts through outages);
//! - [`record`]: the relay's recording of a rendition (every part, in the gateway's
//!   numbering, whatever order the pieces came in).
//!
//! Nothing here does I/O or reads a clock: callers pass frames and wall-clock times in.
#![forbid(unsafe_code)]

pub mod cmaf;
pub mod cut_cost;
pub mod fmp4;
pub mod h264_skip;
pub mod hls;
pub mod media;
pub mod mirror;
pub mod mp4file;
pub mod program;
pub mod record;
pub mod rendition;
pub mod ring;
pub mod segmenter;
pub mod still;
#[cfg(test)]
mod test_media;
pub mod window;

pub use media::{Codec, Frame, Track};
pub use rendition::{Rendition, RenditionConfig};
pub use segmenter::{Output, Segmenter, SegmenterConfig};
pub use window::{LiveWindow, Lookup, WindowConfig};

use bytes::Bytes;

/// What a segment's first part carries about the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStart {
    /// A discontinuity comes before the segment.
    pub discontinuity: bool,
    /// Wall clock of its first frame, ms since the Unix epoch (EXT-X-PROGRAM-DATE-TIME).
    pub pdt_ms: u64,
}

/// What is known of a part from its first byte on: where it belongs and what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartMeta {
    /// Sequence number in the rendition, from 0, across segments.
    pub seq: u64,
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Index in its segment, from 0.
    pub index: u32,
    /// Starts with a keyframe (or audio only).
    pub independent: bool,
    /// Init segment generation it needs.
    pub init: u32,
    /// Wall clock when its first frame was captured (arrived at the gateway), ms since the
    /// Unix epoch; 0 when unknown.
    pub capture_ms: u64,
    /// Set on the first part of a segment.
    pub segment: Option<SegmentStart>,
}

/// One CMAF part (one or more moof + mdat chunks) of a rendition.
#[derive(Debug, Clone)]
pub struct Part {
    /// Sequence number in the rendition, from 0, across segments.
    pub seq: u64,
    /// Media sequence number of its segment.
    pub msn: u64,
    /// Index in its segment, from 0.
    pub index: u32,
    /// Starts with a keyframe (or audio only).
    pub independent: bool,
    /// Seconds.
    pub duration: f64,
    /// moof + mdat chunks.
    pub data: Bytes,
    /// Init segment generation it needs.
    pub init: u32,
    /// See [`PartMeta::capture_ms`].
    pub capture_ms: u64,
    /// Set on the first part of a segment.
    pub segment: Option<SegmentStart>,
    /// A placeholder for media that never arrived (EXT-X-PART GAP=YES): `data` is filler.
    pub gap: bool,
}

impl Part {
    /// A part from its metadata, duration and bytes.
    pub fn new(meta: PartMeta, duration: f64, data: Bytes) -> Self {
        Self {
            seq: meta.seq,
            msn: meta.msn,
            index: meta.index,
            independent: meta.independent,
            duration,
            data,
            init: meta.init,
            capture_ms: meta.capture_ms,
            segment: meta.segment,
            gap: false,
        }
    }

    /// Its metadata.
    pub fn meta(&self) -> PartMeta {
        PartMeta {
            seq: self.seq,
            msn: self.msn,
            index: self.index,
            independent: self.independent,
            init: self.init,
            capture_ms: self.capture_ms,
            segment: self.segment,
        }
    }
}

/// A piece of a part as the segmenter makes it: whole CMAF chunks (a frame or a few), so a
/// part can be sent, and served, while it is still being built.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// The part it belongs to.
    pub part: PartMeta,
    /// Byte offset in the part.
    pub offset: u64,
    /// moof + mdat (empty for a bare end marker).
    pub data: Bytes,
    /// Media time of its end, µs from the part's start.
    pub end_us: u64,
    /// The part ends with this chunk; `end_us` is then the part's duration.
    pub last: bool,
    /// With `last`: the part is its segment's last, the next part opens a segment. A
    /// playlist's preload hint names that next part at once, not a part that never comes.
    pub ends_segment: bool,
    /// Capture (arrival) wall clock of its newest frame, ms since the Unix epoch.
    pub frame_ms: u64,
}
