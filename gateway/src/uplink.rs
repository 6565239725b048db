//! The uplink supervisor: keeps one QUIC connection (HTTP/3) to the relay up, reconnecting
//! with exponential backoff, and hands out request senders to the proxy.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

/// A handle to open HTTP/3 requests on the current connection.
pub type Sender = h3::client::SendRequest<tunnel_io::quic::OpenStreams, Bytes>;

/// What the proxy sees of the uplink.
#[derive(Clone, Default)]
pub enum UplinkState {
    /// Not connected (yet, or again).
    #[default]
    Down,
    /// Connected: requests can be opened.
    Up(Sender, quinn::Connection),
}

/// Supervisor of the connection to the relay.
#[derive(Clone)]
pub struct Uplink {
    state: watch::Receiver<UplinkState>,
}

/// Where and how the uplink connects.
pub struct UplinkSettings {
    /// Relay address (`host:port`).
    pub relay_addr: String,
    /// Relay TLS name.
    pub server_name: String,
    /// Local bind address.
    pub bind: SocketAddr,
    /// quinn client config (TLS; the transport is set per connection).
    pub client: quinn::ClientConfig,
    /// Transport settings (a fresh config and queue signal per connection).
    pub transport: tunnel_io::TransportSettings,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Uplink {
    /// Binds the endpoint and starts the supervisor task.
    pub fn start(settings: UplinkSettings) -> std::io::Result<Self> {
        let mut endpoint = quinn::Endpoint::client(settings.bind)?;
        endpoint.set_default_client_config(settings.client.clone());
        let (tx, rx) = watch::channel(UplinkState::Down);
        let span = tracing::info_span!("uplink", relay = %settings.relay_addr);
        tokio::spawn(supervise(endpoint, Arc::new(settings), tx).instrument(span));
        Ok(Self { state: rx })
    }

    /// The current state.
    pub fn state(&self) -> UplinkState {
        self.state.borrow().clone()
    }

    /// Whether a connection to the relay is up now.
    pub fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), UplinkState::Up(..))
    }

    /// Waits until the uplink is up or `timeout` passes.
    pub async fn wait_up(&self, timeout: Duration) -> bool {
        let mut rx = self.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| matches!(s, UplinkState::Up(..))))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn supervise(
    endpoint: quinn::Endpoint,
    s: Arc<UplinkSettings>,
    tx: watch::Sender<UplinkState>,
) {
    let mut backoff = s.backoff_min;
    loop {
        match connect(&endpoint, &s).await {
            Ok((conn, sender, mut driver)) => {
                info!(rtt_ms = conn.rtt().as_millis() as u64, "uplink up");
                metrics::gauge!("canopy_gateway_uplink_up").set(1.0);
                backoff = s.backoff_min;
                let _ = tx.send(UplinkState::Up(sender, conn.clone()));
                let err = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
                let _ = tx.send(UplinkState::Down);
                metrics::gauge!("canopy_gateway_uplink_up").set(0.0);
                warn!(reason = %err, "uplink down");
            }
            Err(e) => {
                warn!(error = %e, retry_ms = backoff.as_millis() as u64, "cannot reach relay");
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(s.backoff_max);
    }
}

type Driver = h3::client::Connection<tunnel_io::quic::Connection, Bytes>;

async fn connect(
    endpoint: &quinn::Endpoint,
    s: &UplinkSettings,
) -> Result<(quinn::Connection, Sender, Driver), String> {
    // the relay's addresses of the bind address's family (localhost may resolve to ::1 first)
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host(&s.relay_addr),
    )
    .await
    .map_err(|_| format!("resolving {} timed out", s.relay_addr))?
    .map_err(|e| format!("resolve {}: {e}", s.relay_addr))?
    .filter(|a| a.is_ipv4() == s.bind.is_ipv4())
    .collect();
    let addr = *addrs.first().ok_or_else(|| {
        format!(
            "{} has no address of the uplink's family ({})",
            s.relay_addr, s.bind
        )
    })?;
    let mut client = s.client.clone();
    let (transport, signal) = s.transport.quinn_for_connection();
    client.transport_config(transport);
    let conn = endpoint
        .connect_with(client, addr, &s.server_name)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(tunnel_io::probe::run(conn.clone(), signal, true));
    let (driver, sender) = h3::client::new(tunnel_io::quic::Connection::new(
        conn.clone(),
        s.transport.small_first,
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok((conn, sender, driver))
}
