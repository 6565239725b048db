//! QUIC transport settings shared by both ends of the tunnel.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tunnel::congestion::{Collapse, Delivered, LowDelayConfig, Restart};
use tunnel::owd::QueueSignal;
use tunnel::pace::PaceRate;

/// Length of the connection IDs the relay issues. Every packet the gateway sends carries
/// one: quinn's default of 8 bytes is room for a load balancer's routing data, which a
/// relay does not need, and 4 random bytes name 4 billion connections. Measured on the
/// bonding bench: 4 bytes fewer per 1514-byte packet is 0.26% more bonded goodput.
pub const RELAY_CID_LEN: usize = 4;

/// Length of the connection IDs a gateway uplink issues: none. Each uplink connection has a
/// socket of its own, so the relay's packets need no ID to find it (a gateway behind a NAT
/// that rebinds still works: the relay follows the gateway's new address by the relay's
/// own IDs).
pub const GATEWAY_CID_LEN: usize = 0;

/// An endpoint config whose connection IDs are `cid_len` random bytes.
pub fn endpoint_config(cid_len: usize) -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.cid_generator(move || Box::new(quinn_proto::RandomConnectionIdGenerator::new(cid_len)));
    c
}

/// Congestion control of the tunnel's QUIC connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CongestionChoice {
    /// Delay-based, keeps the bottleneck queue near `queue_target_ms` so bids never wait
    /// behind bulk data (the default; see `tunnel::congestion`).
    #[default]
    LowDelay,
    /// quinn's default loss-based Cubic: fills drop-tail queues; bids wait behind them.
    Cubic,
}

/// Transport knobs; both ends read them from their `[tunnel]` config section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSettings {
    /// Congestion controller: `low-delay` (default) or `cubic`.
    pub congestion: CongestionChoice,
    /// Standing-queue target of `low-delay`, in milliseconds.
    pub queue_target_ms: u64,
    /// Keep-alive (QUIC PING) interval in milliseconds.
    pub keep_alive_ms: u64,
    /// The connection is closed after this long without any packet from the peer.
    pub idle_timeout_ms: u64,
    /// Small-first stream priorities: every request stream is sent ahead of bulk streams
    /// until it has sent 32 KiB (see `tunnel_io::quic`). Off: quinn's plain round-robin.
    pub small_first: bool,
    /// Per-stream receive window in bytes.
    pub stream_window: u32,
    /// Per-connection receive window in bytes.
    pub connection_window: u32,
    /// Largest UDP payload MTU discovery tries, bytes: 1472 fills a 1500-byte IPv4 path
    /// (quinn's default, 1452, is the IPv6 figure; discovery stops lower where a path needs).
    pub max_udp_payload: u16,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            congestion: CongestionChoice::LowDelay,
            queue_target_ms: 6,
            keep_alive_ms: 1000,
            idle_timeout_ms: 10_000,
            small_first: true,
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_udp_payload: 1472,
        }
    }
}

impl TransportSettings {
    /// The quinn transport config these settings describe.
    pub fn quinn(&self) -> Arc<quinn::TransportConfig> {
        self.connection().config
    }

    /// A transport config for one connection, and the handles its shell keeps.
    pub fn connection(&self) -> ConnectionTransport {
        self.build(None)
    }

    /// As [`Self::connection`], with the RTT assumed before the first sample
    /// (quinn's default is 333 ms; the handshake's first retransmission comes after three
    /// times this), and the handle that restarts its controller's search for the rate.
    pub fn quinn_for_connection_with_rtt(&self, initial_rtt: Duration) -> ConnectionTransport {
        self.build(Some(initial_rtt))
    }

    fn build(&self, initial_rtt: Option<Duration>) -> ConnectionTransport {
        let signal = Arc::new(QueueSignal::default());
        let restart = Arc::new(Restart::default());
        let collapse = Arc::new(Collapse::default());
        let pace = Arc::new(PaceRate::default());
        let low_delay = self.congestion == CongestionChoice::LowDelay;
        let delivered = low_delay.then(|| Arc::new(Delivered::default()));
        let mut t = quinn::TransportConfig::default();
        if let Some(rtt) = initial_rtt {
            t.initial_rtt(rtt);
        }
        t.keep_alive_interval(Some(Duration::from_millis(self.keep_alive_ms.max(10))));
        if let Ok(idle) =
            quinn::IdleTimeout::try_from(Duration::from_millis(self.idle_timeout_ms.max(100)))
        {
            t.max_idle_timeout(Some(idle));
        }
        t.stream_receive_window(self.stream_window.into());
        t.receive_window(self.connection_window.into());
        t.send_window(u64::from(self.connection_window));
        t.max_concurrent_bidi_streams(16_384u32.into());
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload.clamp(1200, 1472));
        t.mtu_discovery_config(Some(mtu));
        if low_delay {
            t.congestion_controller_factory(Arc::new(LowDelayConfig {
                target: Duration::from_millis(self.queue_target_ms.max(1)),
                signal: Some(signal.clone()),
                restart: Some(restart.clone()),
                collapse: Some(collapse.clone()),
                pace: Some(pace.clone()),
                delivered: delivered.clone(),
                ..LowDelayConfig::default()
            }));
        }
        ConnectionTransport {
            config: Arc::new(t),
            signal,
            restart,
            collapse,
            pace,
            delivered,
        }
    }
}

/// One connection's transport config and the handles its shell keeps.
pub struct ConnectionTransport {
    /// The quinn config.
    pub config: Arc<quinn::TransportConfig>,
    /// The queue signal its `low-delay` controller reads (feed it with
    /// [`crate::probe::run`]).
    pub signal: Arc<QueueSignal>,
    /// Asks its `low-delay` controller to search for the path's rate again.
    pub restart: Arc<Restart>,
    /// Where its `low-delay` controller reports a collapse of the link.
    pub collapse: Arc<Collapse>,
    /// The rate its `low-delay` controller paces at: give it to the endpoint's
    /// [`crate::paced::PacedSocket`] with the peer's address before connecting.
    pub pace: Arc<PaceRate>,
    /// The bytes the peer acknowledged, counted by its `low-delay` controller (none with
    /// another controller).
    pub delivered: Option<Arc<Delivered>>,
}
