//! The link emulator: a UDP forwarder with a link model in each direction, so the tunnel
//! can be rehearsed over a cellular, Wi-Fi or satellite link without root or netem.
//!
//! The model is str0m-netem (latency, jitter, random and Gilbert-Elliott loss, rate with a
//! byte-bounded drop-tail queue); this module adds the queue limit in milliseconds of the
//! link rate, an outage switch and run-time profile changes, and does the I/O. Both
//! directions are one shared bottleneck each, across all flows through the emulator.

mod forwarder;
mod profile;

pub use forwarder::{LinkEmulator, LinkStats};
pub use profile::{DirectionProfile, GilbertElliottLoss, LinkProfile, ProfileError};
