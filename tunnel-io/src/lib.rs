//! Canopy's async transport shell, shared by the gateway and the relay: TLS and QUIC
//! endpoint configuration, adapters between HTTP/3 request streams and hyper bodies,
//! tunnelled byte streams (CONNECT), the Prometheus endpoint and the operator listeners.
#![forbid(unsafe_code)]

pub mod admin_token;
pub mod body;
pub mod clock;
pub mod idle;
pub mod listen;
pub mod metrics_http;
pub mod operator_http;
pub mod own_cert;
pub mod paced;
pub mod probe;
pub mod quic;
pub mod revoked;
#[cfg(test)]
mod test_tls;
pub mod tls;
pub mod transport;
pub mod watched;

pub use body::{copy_bidirectional, pump_body, BodyError, H3Body, PumpError, RecvData, SendData};
pub use idle::{IdleBody, IdleError, IdleSetting, WriteIdle, WriteStalled};
pub use paced::PacedSocket;
pub use revoked::{RevocationList, Revoked};
pub use tls::{TlsError, TlsFiles};
pub use transport::{CongestionChoice, TransportSettings};
