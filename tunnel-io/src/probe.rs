//! The probe task of one connection: timestamped QUIC datagrams both ways, so each end's
//! congestion controller learns the one-way queue its own data builds (see `tunnel::owd`).

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tunnel::owd::{OwdProbe, QueueSignal};

/// Probe interval.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// Runs until the connection closes. The gateway `initiate`s; the relay answers only peers
/// that probe, so ordinary HTTP/3 clients never receive datagrams they did not ask for.
pub async fn run(conn: quinn::Connection, signal: Arc<QueueSignal>, initiate: bool) {
    let mut probe = OwdProbe::new(std::time::Instant::now());
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if (initiate || probe.heard_peer()) && conn.max_datagram_size().is_some() {
                    let p = probe.make_probe(std::time::Instant::now());
                    let _ = conn.send_datagram(Bytes::copy_from_slice(&p));
                }
            }
            d = conn.read_datagram() => match d {
                Ok(data) => {
                    let now = std::time::Instant::now();
                    if let Some(q) = probe.on_probe(now, &data) {
                        tracing::trace!(initiate, queue_us = q.as_micros() as u64, "probe");
                        signal.report(now, q);
                    }
                }
                Err(_) => return,
            },
        }
    }
}
