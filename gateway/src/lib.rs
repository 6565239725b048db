//! Canopy's venue side: the bonded uplinks to the relay (one QUIC connection per uplink,
//! HTTP/3) and the venue-facing HTTP/1.1 proxy (explicit proxy, CONNECT, reverse "sites").
#![forbid(unsafe_code)]

pub mod bond;
pub mod camera;
pub mod config;
pub mod live;
mod proxy;
pub mod rtsp_push;
pub mod spool;
pub mod stripe;
mod uplink;

pub use bond::{Bond, PathStatus};
pub use config::GatewayConfig;
pub use live::LiveStreams;
pub use proxy::Gateway;
pub use uplink::{Hello, Live, Sender, Uplink, UplinkSettings, UplinkState};

/// The next TCP connection on `listener`, with Nagle off. Accept errors (out of file
/// descriptors, a connection reset before it was taken) are logged and retried after 50 ms.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

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
