//! Canopy's sans-IO media core, shared by the gateway (on-site) and the relay (viewer side):
//!
//! - [`media`]: tracks and frames (what comes in);
//! - [`segmenter`]: frames in, CMAF init segments and parts out ([`cmaf`] builds the boxes
//!   with mp4-atom);
//! - [`ring`]: the bounded part ring with reader cursors;
//! - [`hls`]: the LL-HLS playlist model and blocking reload;
//! - [`rendition`]: the three together, as a stream's rendition that shells feed and serve.
//!
//! Nothing here does I/O or reads a clock: callers pass frames and wall-clock times in.
#![forbid(unsafe_code)]

pub mod cmaf;
pub mod hls;
pub mod media;
pub mod mp4file;
pub mod rendition;
pub mod ring;
pub mod segmenter;

pub use media::{Codec, Frame, Track};
pub use rendition::{Lookup, Rendition, RenditionConfig};
pub use segmenter::{Output, Segmenter, SegmenterConfig};

use bytes::Bytes;

/// One CMAF part (a moof + mdat chunk) of a rendition.
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
    /// moof + mdat.
    pub data: Bytes,
    /// Init segment generation it needs.
    pub init: u32,
}
