//! Canopy's media shell around the sans-IO `segmenter`, as `tunnel-io` is around `tunnel`:
//!
//! - [`rendition`], [`streams`]: live renditions shared by their feeder and their readers,
//!   and the cameras they belong to;
//! - [`hls_http`]: LL-HLS over HTTP for any window (blocking reload, growing parts,
//!   delta updates); [`serve`]: the gateway's on-site `/live/`;
//! - [`program`]: a camera's program, the rendition the relay gets, cut from its sources
//!   at the low-bandwidth level;
//! - [`spool`]: parts leaving a rendition's ring, on disk, for the backfill after an outage;
//! - [`relayed`]: the relay's side: gateways' renditions mirrored, served to viewers,
//!   recorded;
//! - with the `cameras` feature: camera ingest, pulled with retina ([`pull`], [`feed`]) or
//!   pushed by encoders ([`rtsp`]), a clip played as a camera ([`clip`]), and the
//!   transcode level made by an ffmpeg child ([`transcode`]).
#![forbid(unsafe_code)]

pub mod hls_http;
pub mod program;
pub mod relayed;
pub mod rendition;
pub mod serve;
pub mod spool;
pub mod streams;

#[cfg(feature = "cameras")]
pub mod clip;
#[cfg(feature = "cameras")]
pub mod feed;
#[cfg(feature = "cameras")]
pub mod pull;
#[cfg(feature = "cameras")]
pub mod rtsp;
#[cfg(feature = "cameras")]
pub mod transcode;

pub use rendition::LiveRendition;
pub use streams::{CameraStatus, LiveStream, LiveStreams};

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
