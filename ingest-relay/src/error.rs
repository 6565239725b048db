//! Errors of the relay, and how those that reach a client become HTTP responses.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tunnel::wire;

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
    /// The duplicate table's journal could not be opened.
    #[error("cannot open the journal {path}: {source}")]
    Journal {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The revocation list cannot be used.
    #[error("revocation list: {0}")]
    Revocations(#[from] crate::revocation::LoadError),
    /// The config is invalid (already reported by check-config).
    #[error("invalid config: {0}")]
    Config(String),
}

/// A request the relay refuses or cannot complete: becomes a synthetic response.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
    /// The origin did not get the request as sent: its body did not arrive whole (the
    /// gateway's stream failed), or it never went out. A key it carried is released.
    pub(crate) unreached: bool,
}

impl Refusal {
    /// Headers of the synthetic response: plain text, and the reason in `canopy-reason`.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&wire::reason_header_value(&self.reason)) {
            h.insert(wire::HDR_REASON, v);
        }
        h
    }

    /// Body of the synthetic response: the reason on one line.
    pub(crate) fn body(&self) -> Bytes {
        Bytes::from(format!("{}\n", self.reason))
    }

    /// A refusal for a request the origin never got.
    pub(crate) fn unreached(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            unreached: true,
            ..Self::new(status, reason)
        }
    }

    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            unreached: false,
        }
    }
}
