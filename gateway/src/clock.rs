//! How far the relay's wall clock is from the gateway's: an NTP-style exchange on every
//! usable uplink every few seconds (`tunnel::wire::clock`), the shortest round trip of the
//! last two minutes winning. Capture times the gateway sends are moved to the relay's
//! clock with it, so the relay's program date times and latency figures need no clock of
//! the gateway's.

use crate::bond::Bond;
use http::{Method, Request};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tunnel::wire::{self, clock};

/// Time between exchanges on one path.
const EVERY: Duration = Duration::from_secs(5);

/// Microseconds since the Unix epoch.
pub fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The relay's clock as measured.
#[derive(Debug, Default)]
pub struct RelayClock {
    offset: Mutex<clock::ClockOffset>,
}

impl RelayClock {
    /// Relay clock minus gateway clock, ms (0 until measured).
    pub fn offset_ms(&self) -> i64 {
        self.offset
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offset_us()
            .map_or(0, |us| us / 1000)
    }

    /// Whether an exchange has succeeded.
    pub fn known(&self) -> bool {
        self.offset
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .offset_us()
            .is_some()
    }

    fn add(&self, now_us: u64, offset_us: i64, rtt_us: u64) {
        self.offset
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(now_us, offset_us, rtt_us);
    }
}

/// Exchanges on every usable path until the bond is gone.
pub async fn run(bond: Weak<Bond>, clock: Arc<RelayClock>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last: Vec<Option<(u64, tokio::time::Instant)>> = Vec::new();
    loop {
        tick.tick().await;
        let Some(bond) = bond.upgrade() else { return };
        last.resize(bond.paths().len(), None);
        for (i, p) in bond.paths().iter().enumerate() {
            let Some(live) = p.live() else { continue };
            // a new connection is measured at once, then every few seconds
            let due = match last[i] {
                Some((generation, at)) => generation != live.generation || at.elapsed() >= EVERY,
                None => true,
            };
            if !due {
                continue;
            }
            last[i] = Some((live.generation, tokio::time::Instant::now()));
            let clock = clock.clone();
            let mut sender = live.sender.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), exchange(&mut sender, &clock))
                    .await;
            });
        }
    }
}

async fn exchange(sender: &mut crate::uplink::Sender, c: &RelayClock) -> Option<()> {
    let t1 = wall_us();
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!(
            "https://{}{}",
            wire::SESSION_AUTHORITY,
            clock::CLOCK_PATH
        ))
        .header(clock::HDR_CLOCK, t1.to_string())
        .body(())
        .ok()?;
    let mut stream = sender.send_request(req).await.ok()?;
    stream.finish().await.ok()?;
    let resp = stream.recv_response().await.ok()?;
    let t4 = wall_us();
    while let Ok(Some(_)) = stream.recv_data().await {}
    let answer = resp
        .headers()
        .get(clock::HDR_CLOCK)
        .and_then(|v| v.to_str().ok())
        .and_then(clock::ClockAnswer::decode)
        .filter(|a| a.t1 == t1)?;
    let (offset, rtt) = answer.offset_and_rtt(t4);
    tracing::trace!(offset_us = offset, rtt_us = rtt, "relay clock");
    c.add(t4, offset, rtt);
    Some(())
}
