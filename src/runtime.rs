//! Starting the pieces in-process: logging, relay, gateway, metrics endpoints. Shared by
//! the CLI, the demo, the benches and the tests.

use std::net::SocketAddr;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once. `RUST_LOG` overrides `default`; quinn and h3 are
/// quiet unless asked for.
pub fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},quinn=warn,quinn_proto=warn,h3=warn,hyper=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Serves `/metrics` on `addr` in the background (the recorder is installed on first use).
pub async fn spawn_metrics(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(tunnel_io::metrics_http::serve(listener));
    Ok(local)
}

/// Starts a relay in the background; returns its UDP address.
pub async fn spawn_relay(
    cfg: &ingest_relay::RelayConfig,
    tls: &tunnel_io::TlsFiles,
) -> anyhow::Result<SocketAddr> {
    let relay = ingest_relay::Relay::bind(cfg, tls)?;
    let addr = relay.local_addr()?;
    if let Some(m) = cfg.metrics.listen {
        spawn_metrics(m).await?;
    }
    tokio::spawn(relay.run());
    Ok(addr)
}

/// Starts a gateway in the background; returns its proxy address and its bond.
pub async fn spawn_gateway(
    cfg: &gateway::GatewayConfig,
    tls: &tunnel_io::TlsFiles,
) -> anyhow::Result<(
    SocketAddr,
    std::sync::Arc<gateway::Bond>,
    std::sync::Arc<gateway::LiveStreams>,
)> {
    let gw = gateway::Gateway::bind(cfg, tls).await?;
    let addr = gw.local_addr()?;
    let uplink = gw.bond();
    let live = gw.live();
    if let Some(m) = cfg.metrics.listen {
        spawn_metrics(m).await?;
    }
    tokio::spawn(gw.run());
    Ok((addr, uplink, live))
}

/// Ticks once a second until Ctrl-C, for commands that print a status line per second.
pub struct SecondTicker {
    tick: tokio::time::Interval,
    ctrl_c: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl SecondTicker {
    /// Starts ticking; the first tick is immediate.
    pub fn new() -> Self {
        Self {
            tick: tokio::time::interval(std::time::Duration::from_secs(1)),
            ctrl_c: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    /// Waits for the next second; false once Ctrl-C was pressed.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.tick.tick() => true,
            _ = &mut self.ctrl_c => false,
        }
    }
}

impl Default for SecondTicker {
    fn default() -> Self {
        Self::new()
    }
}
