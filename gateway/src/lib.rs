//! Canopy's venue side: the bonded uplinks to the relay (one QUIC connection per uplink,
//! HTTP/3) and the venue-facing HTTP/1.1 proxy (explicit proxy, CONNECT, reverse "sites").
//! Cameras and on-site LL-HLS come from `media-io`.
#![forbid(unsafe_code)]

pub mod actions;
pub mod admin;
mod bid_path;
mod bids;
mod body_spool;
pub mod bond;
pub mod cache;
mod checkin;
pub mod clock;
pub mod config;
pub mod contribute;
pub mod devices;
pub mod event;
mod files;
pub mod history;
pub mod hygiene;
pub mod levels;
pub mod privacy;
mod probe;
mod proxy;
pub mod pull;
pub mod revocations;
pub mod sockets;
pub mod stripe;
pub mod telemetry;
mod uplink;

/// The error of a boxed body or a pulled body's stream: any error that can cross tasks.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub use bond::{Bond, PathStatus};
pub use config::GatewayConfig;
pub use media_io::LiveStreams;
pub use proxy::{DeviceDoor, EdgeCache, Gateway};
pub use uplink::{Hello, Live, Sender, Uplink, UplinkSettings, UplinkState};

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// TLS material unusable.
    #[error(transparent)]
    Tls(#[from] tunnel_io::TlsError),
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Invalid configuration.
    #[error("invalid config: {0}")]
    Config(String),
}
