//! Errors of the relay, and how those that reach a client become HTTP responses.

use http::StatusCode;

/// Errors starting the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
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
    /// The config is invalid (already reported by check-config).
    #[error("invalid config: {0}")]
    Config(String),
}

/// A request the relay refuses or cannot complete: becomes a synthetic response.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
    /// The request body did not arrive whole (the gateway's stream failed).
    pub(crate) body_lost: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            body_lost: false,
        }
    }
}
