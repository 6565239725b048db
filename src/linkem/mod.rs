//! The link emulator: a link model in each direction, in one of three shells: a UDP
//! forwarder (no root: the tunnel can be rehearsed over a cellular, Wi-Fi or satellite link
//! on one machine), an AF_PACKET frame bridge between two interfaces (root: the same model
//! between network namespaces, for any traffic, TCP included), or in-memory UDP sockets
//! (`in_memory`: the in-process harness, on tokio's paused clock). Changes at run time come from
//! a timeline in the profile or from the control socket (`control`).
//!
//! The model is str0m-netem (latency, jitter, random and Gilbert-Elliott loss, rate with a
//! byte-bounded drop-tail queue); this module adds the queue limit in milliseconds of the
//! link rate, an outage switch and run-time profile changes, and does the I/O. Both
//! directions are one shared bottleneck each, across all flows through the emulator.

pub mod control;
mod forwarder;
mod in_memory;
mod profile;

pub use forwarder::{LinkEmulator, LinkStats};
pub use in_memory::{LinkPort, VirtualListener, VirtualNet, VirtualSocket};
pub use profile::{DirectionProfile, GilbertElliottLoss, LinkProfile, ProfileError, TimelineEvent};
