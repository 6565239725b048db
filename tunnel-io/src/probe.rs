//! The probe task of one connection: timestamped QUIC datagrams both ways, so each end's
//! congestion controller learns the one-way queue its own data builds (see `tunnel::owd`).

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tunnel::owd::{OwdProbe, QueueSignal};

/// Probe interval.
pub const INTERVAL: Duration = Duration::from_millis(10);

/// The newest round-trip proof of a connection: when we sent the newest probe the peer
/// echoed. The gateway's path monitor reads it for the path's health.
#[derive(Debug, Default)]
pub struct Echoes {
    latest: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Echoes {
    /// Send time of the newest echoed probe.
    pub fn latest(&self) -> Option<std::time::Instant> {
        self.latest.lock().ok().and_then(|g| *g)
    }

    fn record(&self, sent_at: std::time::Instant) {
        if let Ok(mut g) = self.latest.lock() {
            if g.is_none_or(|t| sent_at > t) {
                *g = Some(sent_at);
            }
        }
    }
}

/// Runs until the connection closes. The gateway `initiate`s; the relay answers only peers
/// that probe, so ordinary HTTP/3 clients never receive datagrams they did not ask for.
pub async fn run(
    conn: quinn::Connection,
    signal: Arc<QueueSignal>,
    initiate: bool,
    echoes: Option<Arc<Echoes>>,
) {
    let mut probe = OwdProbe::new(crate::clock::now());
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if (initiate || probe.heard_peer()) && conn.max_datagram_size().is_some() {
                    let p = probe.make_probe(crate::clock::now());
                    let _ = conn.send_datagram(Bytes::copy_from_slice(&p));
                }
            }
            d = conn.read_datagram() => match d {
                Ok(data) => {
                    let now = crate::clock::now();
                    if let Some(r) = probe.on_probe(now, &data) {
                        tracing::trace!(initiate, queue_us = r.queue.as_micros() as u64, "probe");
                        signal.report(now, r.queue);
                        if let (Some(e), Some(t)) = (&echoes, r.echoed_sent_at) {
                            e.record(t);
                        }
                    }
                }
                Err(_) => return,
            },
        }
    }
}
