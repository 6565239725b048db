//! Canopy's sans-IO core, shared by the venue gateway and the cloud relay.
//!
//! Nothing here opens a socket or spawns a task: wire conventions (header names, ALPN),
//! traffic classes and the rules that assign them, the relay's egress allowlist, HTTP
//! hop-by-hop handling, and the delay-based congestion controller both ends give quinn.
//! Everything that depends on time takes `now` from the caller.
#![forbid(unsafe_code)]

pub mod actions;
pub mod allowlist;
pub mod chunk_gate;
pub mod class;
pub mod congestion;
pub mod contribution;
pub mod dedup;
pub mod hop;
pub mod owd;
pub mod pace;
pub mod path;
pub mod path_estimate;
pub mod pull;
pub mod push;
pub mod reorder;
pub mod resend_rank;
pub mod scheduler;
pub mod settle;
pub mod spread;
pub mod stream_level;
pub mod telemetry;
pub mod wire;

pub use allowlist::{Allowlist, AllowlistError, Denial};
pub use class::{ClassRule, Classifier, TrafficClass};
