//! Canopy's cloud side: the HTTP/3 server gateways connect to (mTLS with the event CA),
//! and the egress that forwards venue traffic to allowlisted origins.
#![forbid(unsafe_code)]

pub mod config;
mod egress;
mod error;
mod server;
mod session;
mod stripe;

pub use config::RelayConfig;
pub use error::RelayError;
pub use server::Relay;
