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

/// Serves `/metrics` on `addr` in the background. The recorder is installed here, before
/// the caller starts what it measures: a gauge moved before it (a gateway's connection
/// counted up) would be lost, and the gauge off for good.
pub async fn spawn_metrics(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let _ = tunnel_io::metrics_http::recorder();
    tokio::spawn(tunnel_io::metrics_http::serve(listener));
    Ok(local)
}

/// Installs the metrics recorder when `/metrics` is to be served, before anything that
/// counts starts.
fn recorder_first(listen: Option<SocketAddr>) {
    if listen.is_some() {
        let _ = tunnel_io::metrics_http::recorder();
    }
}

/// A relay started in the background.
pub struct RelayHandle {
    /// Its UDP address for gateways.
    pub addr: SocketAddr,
    /// Its viewer addresses: HTTP/1.1, HTTPS, HTTP/3.
    pub viewers: (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>),
    /// The live streams.
    pub relayed: std::sync::Arc<media_io::relayed::Relayed>,
    /// The fleet view's address, with `[fleet] listen`.
    pub fleet: Option<SocketAddr>,
}

/// Starts a relay in the background.
pub async fn spawn_relay(
    cfg: &ingest_relay::RelayConfig,
    tls: &tunnel_io::TlsFiles,
    viewer_tls: Option<&tunnel_io::TlsFiles>,
    token_key: Option<&[u8]>,
) -> anyhow::Result<RelayHandle> {
    recorder_first(cfg.metrics.listen);
    let relay = ingest_relay::Relay::bind(cfg, tls, viewer_tls, token_key).await?;
    start_relay(relay, cfg).await
}

/// Starts a relay in the background whose gateways' endpoint is on `socket`, and whose
/// origin connections come from `dialer`.
pub async fn spawn_relay_on(
    cfg: &ingest_relay::RelayConfig,
    tls: &tunnel_io::TlsFiles,
    socket: std::sync::Arc<dyn quinn::AsyncUdpSocket>,
    dialer: std::sync::Arc<dyn ingest_relay::OriginDialer>,
) -> anyhow::Result<RelayHandle> {
    recorder_first(cfg.metrics.listen);
    let relay = ingest_relay::Relay::bind_with(cfg, tls, None, None, socket, Some(dialer)).await?;
    start_relay(relay, cfg).await
}

async fn start_relay(
    relay: ingest_relay::Relay,
    cfg: &ingest_relay::RelayConfig,
) -> anyhow::Result<RelayHandle> {
    let addr = relay.local_addr()?;
    let viewers = relay.viewer_addrs();
    let relayed = relay.relayed();
    let fleet = relay.fleet_addr();
    if let Some(m) = cfg.metrics.listen {
        spawn_metrics(m).await?;
    }
    tokio::spawn(relay.run());
    Ok(RelayHandle {
        addr,
        viewers,
        relayed,
        fleet,
    })
}

/// A gateway started in the background.
pub struct GatewayHandle {
    /// Its proxy address.
    pub proxy: SocketAddr,
    /// Its bonded uplinks.
    pub bond: std::sync::Arc<gateway::Bond>,
    /// Its cameras.
    pub live: std::sync::Arc<gateway::LiveStreams>,
    /// Its contribution to the relay (when `[live] contribute`).
    pub contributor: Option<std::sync::Arc<gateway::contribute::Contributor>>,
    /// Its cameras' low-bandwidth levels (when contributing).
    pub levels: Option<std::sync::Arc<gateway::levels::Levels>>,
    /// Serves device connections handed to it (besides the proxy's listener).
    pub devices: gateway::DeviceDoor,
    /// Its admin API's address, when `[admin] listen`.
    pub admin: Option<SocketAddr>,
    /// The HTTPS address of its tls sites, when `[proxy] https_listen`.
    pub https: Option<SocketAddr>,
}

/// Starts a gateway in the background.
pub async fn spawn_gateway(
    cfg: &gateway::GatewayConfig,
    tls: &tunnel_io::TlsFiles,
) -> anyhow::Result<GatewayHandle> {
    spawn_gateway_with(
        cfg,
        tls,
        std::sync::Arc::new(gateway::sockets::KernelSockets),
    )
    .await
}

/// Starts a gateway in the background whose uplinks' sockets come from `sockets`.
pub async fn spawn_gateway_with(
    cfg: &gateway::GatewayConfig,
    tls: &tunnel_io::TlsFiles,
    sockets: std::sync::Arc<dyn gateway::sockets::UplinkSockets>,
) -> anyhow::Result<GatewayHandle> {
    recorder_first(cfg.metrics.listen);
    let mut gw = gateway::Gateway::bind_with(cfg, tls, sockets).await?;
    let contributor = cfg.live.contribute.then(|| gw.contribute());
    let handle = GatewayHandle {
        proxy: gw.local_addr()?,
        bond: gw.bond(),
        live: gw.live(),
        contributor,
        levels: gw.levels(),
        devices: gw.devices(),
        admin: gw.admin_addr(),
        https: gw.https_addr(),
    };
    if let Some(m) = cfg.metrics.listen {
        spawn_metrics(m).await?;
    }
    tokio::spawn(gw.run());
    Ok(handle)
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
