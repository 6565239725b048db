//! Room for bids whatever a device does: per-device limits at the proxy (connections,
//! CONNECT tunnels, requests in flight, by source address) and a gateway-wide cap on what
//! is not a bid or check-in, below the streams each uplink connection allows, so the rest
//! of every connection's streams stay free for bids and check-ins.
//!
//! A slot is taken before the work starts and given back when its [`Held`] guard drops
//! (the connection closes, the tunnel ends, the response body is done). Bids and check-ins
//! have their own per-device slots and never count against the shared cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Per-device and gateway-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Open TCP connections per device.
    pub connections: u32,
    /// Open CONNECT tunnels per device.
    pub tunnels: u32,
    /// Requests in flight per device (not bids or check-ins).
    pub requests: u32,
    /// Bids and check-ins in flight per device.
    pub transactions: u32,
    /// Tunnels and requests in flight across all devices (the streams left of each
    /// uplink connection's allowance are kept for bids and check-ins).
    pub shared: u32,
}

/// What a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// A TCP connection.
    Connection,
    /// A CONNECT tunnel.
    Tunnel,
    /// A request (not a bid or check-in).
    Request,
    /// A bid or check-in.
    Transaction,
}

impl Slot {
    /// Its name in answers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Connection => "connections",
            Slot::Tunnel => "tunnels",
            Slot::Request => "requests",
            Slot::Transaction => "transactions",
        }
    }

    fn shared(self) -> bool {
        matches!(self, Slot::Tunnel | Slot::Request)
    }
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// This device holds its limit of this kind.
    #[error("this device already has {limit} {} open", .slot.as_str())]
    Device {
        /// The kind.
        slot: Slot,
        /// Its limit.
        limit: u32,
    },
    /// The gateway holds its shared limit (what is left is kept for bids).
    #[error("the gateway has {0} requests and tunnels open; the rest is kept for bids")]
    Shared(u32),
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts([u32; 4]);

impl Counts {
    fn get(&mut self, s: Slot) -> &mut u32 {
        &mut self.0[s as usize]
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|n| *n == 0)
    }
}

#[derive(Debug, Default)]
struct Inner {
    devices: HashMap<IpAddr, Counts>,
    shared: u32,
}

/// The counters.
#[derive(Debug)]
pub struct Devices {
    limits: DeviceLimits,
    inner: Mutex<Inner>,
}

/// A slot taken; given back on drop.
#[derive(Debug)]
pub struct Held {
    devices: Arc<Devices>,
    ip: IpAddr,
    slot: Slot,
}

impl Devices {
    /// Counters with these limits.
    pub fn new(limits: DeviceLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limit(&self, s: Slot) -> u32 {
        match s {
            Slot::Connection => self.limits.connections,
            Slot::Tunnel => self.limits.tunnels,
            Slot::Request => self.limits.requests,
            Slot::Transaction => self.limits.transactions,
        }
    }

    /// Takes a slot of kind `slot` for the device at `ip`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, slot: Slot) -> Result<Held, Refused> {
        let mut inner = self.inner();
        if slot.shared() && inner.shared >= self.limits.shared {
            return Err(Refused::Shared(self.limits.shared));
        }
        let limit = self.limit(slot);
        let n = inner.devices.entry(ip).or_default().get(slot);
        if *n >= limit {
            return Err(Refused::Device { slot, limit });
        }
        *n += 1;
        if slot.shared() {
            inner.shared += 1;
        }
        Ok(Held {
            devices: self.clone(),
            ip,
            slot,
        })
    }

    /// Devices with anything open.
    pub fn active(&self) -> usize {
        self.inner().devices.len()
    }

    fn give_back(&self, ip: IpAddr, slot: Slot) {
        let mut inner = self.inner();
        if slot.shared() {
            inner.shared = inner.shared.saturating_sub(1);
        }
        if let Some(c) = inner.devices.get_mut(&ip) {
            let n = c.get(slot);
            *n = n.saturating_sub(1);
            if c.is_empty() {
                inner.devices.remove(&ip);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.devices.give_back(self.ip, self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DeviceLimits {
        DeviceLimits {
            connections: 2,
            tunnels: 3,
            requests: 4,
            transactions: 2,
            shared: 5,
        }
    }

    #[test]
    fn one_device_cannot_take_what_others_need() {
        let d = Devices::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let held: Vec<Held> = (0..3).map(|_| d.take(a, Slot::Tunnel).unwrap()).collect();
        assert_eq!(
            d.take(a, Slot::Tunnel).unwrap_err(),
            Refused::Device {
                slot: Slot::Tunnel,
                limit: 3
            }
        );
        // requests are another kind; the shared cap counts both
        let r1 = d.take(a, Slot::Request).unwrap();
        let r2 = d.take(b, Slot::Request).unwrap();
        assert_eq!(d.take(b, Slot::Request).unwrap_err(), Refused::Shared(5));
        // bids never count against the shared cap
        let t1 = d.take(b, Slot::Transaction).unwrap();
        let t2 = d.take(b, Slot::Transaction).unwrap();
        assert!(d.take(b, Slot::Transaction).is_err());
        assert!(d.take(a, Slot::Transaction).is_ok());
        // slots come back when their guards drop
        drop(held);
        drop((r1, r2, t1, t2));
        assert!(d.take(b, Slot::Request).is_ok());
        assert_eq!(d.active(), 0, "nothing held: nothing kept");
    }

    #[test]
    fn connections_per_device() {
        let d = Devices::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        let c1 = d.take(a, Slot::Connection).unwrap();
        let _c2 = d.take(a, Slot::Connection).unwrap();
        assert!(d.take(a, Slot::Connection).is_err());
        drop(c1);
        assert!(d.take(a, Slot::Connection).is_ok());
    }
}
