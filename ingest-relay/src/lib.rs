//! Canopy's cloud side: the HTTP/3 server gateways connect to (mTLS with the event CA),
//! the egress that forwards venue traffic to allowlisted origins, and the live streams
//! gateways send, served to viewers (HTTP/1.1 and HTTP/3) and recorded.
#![forbid(unsafe_code)]

mod auction;
mod auction_api;
mod audience;
mod budget;
mod claim_log;
pub mod config;
mod egress;
mod error;
mod fleet;
mod jetstream;
mod media;
mod origin_pool;
mod probe;
mod pull;
pub mod revocation;
mod server;
mod session;
mod sink_answer;
mod stripe;
mod viewer_token;
mod viewers;

pub use media::piece_from_wire;
pub use viewer_token::{TokenError, TokenKey};

pub use config::RelayConfig;
pub use egress::{Dialing, OriginDialer, OriginIo};
pub use error::RelayError;
pub use server::Relay;
