//! Byte budgets of the relay's memory: what a gateway's streams may make the relay hold.
//! Each holder takes its bytes from two budgets before it holds them: one per gateway and
//! one for all gateways, and gives them back when it lets go. Striped bodies' windows and
//! pulled answers share one pair (a holder without room waits: the gateway's flow
//! control); request bodies read (media pieces, chunks waiting for a window, auction bids) and kept
//! answers of striped requests have theirs. So the relay's memory stays bounded whatever
//! gateways send, and an honest gateway with much under way at once only queues.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The budgets, and who holds what.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The gauge of the bytes held in all.
    gauge: &'static str,
    per_gateway: u64,
    global: u64,
    held: Mutex<Held>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct Held {
    all: u64,
    by_gateway: HashMap<u64, u64>,
}

/// Bytes granted to one holder; given back when dropped.
#[derive(Debug)]
pub(crate) struct Grant {
    budget: Arc<Budget>,
    gateway: u64,
    pub(crate) bytes: u64,
}

impl Budget {
    /// Budgets of `per_gateway` and `global` bytes, the total held shown as `gauge`.
    pub(crate) fn new(gauge: &'static str, per_gateway: u64, global: u64) -> Arc<Self> {
        Arc::new(Self {
            gauge,
            per_gateway,
            global,
            held: Mutex::default(),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` for `gateway`, all or nothing, if both budgets have room now.
    fn take(&self, gateway: u64, bytes: u64) -> bool {
        let mut h = self.lock();
        let mine = h.by_gateway.get(&gateway).copied().unwrap_or(0);
        if mine + bytes > self.per_gateway || h.all + bytes > self.global {
            return false;
        }
        h.all += bytes;
        *h.by_gateway.entry(gateway).or_insert(0) += bytes;
        metrics::gauge!(self.gauge).set(h.all as f64);
        true
    }

    /// `bytes` for `gateway`, all or nothing, if both budgets have room now.
    pub(crate) fn try_grant(self: &Arc<Self>, gateway: u64, bytes: u64) -> Option<Grant> {
        self.take(gateway, bytes).then(|| Grant {
            budget: self.clone(),
            gateway,
            bytes,
        })
    }

    /// As [`Self::try_grant`], waiting up to `wait` for holders to give bytes back.
    pub(crate) async fn grant(
        self: &Arc<Self>,
        gateway: u64,
        bytes: u64,
        wait: Duration,
    ) -> Option<Grant> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(g) = self.try_grant(gateway, bytes) {
                return Some(g);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_grant(gateway, bytes);
            }
        }
    }

    /// Bytes held in all, and by `gateway`.
    #[cfg(test)]
    pub(crate) fn held(&self, gateway: u64) -> (u64, u64) {
        let h = self.lock();
        (h.all, h.by_gateway.get(&gateway).copied().unwrap_or(0))
    }
}

impl Grant {
    /// `more` bytes on top, all or nothing, if both budgets have room now.
    pub(crate) fn grow(&mut self, more: u64) -> bool {
        let took = self.budget.take(self.gateway, more);
        if took {
            self.bytes += more;
        }
        took
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        {
            let mut h = self.budget.lock();
            h.all = h.all.saturating_sub(self.bytes);
            if let Some(m) = h.by_gateway.get_mut(&self.gateway) {
                *m = m.saturating_sub(self.bytes);
                if *m == 0 {
                    h.by_gateway.remove(&self.gateway);
                }
            }
            metrics::gauge!(self.budget.gauge).set(h.all as f64);
        }
        self.budget.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grants_stay_within_both_budgets_and_come_back() {
        let b = Budget::new("test_bytes", 100, 150);
        let a1 = b.try_grant(1, 60).expect("room");
        assert!(b.try_grant(1, 60).is_none(), "gateway 1 over its budget");
        let c = b.try_grant(2, 80).expect("gateway 2 has its own");
        assert!(b.try_grant(3, 20).is_none(), "over the global budget");
        assert_eq!(b.held(1), (140, 60));
        // a waiter gets its grant when a stripe gives its bytes back
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.grant(1, 60, Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        drop(a1);
        let g = waiter
            .await
            .expect("join")
            .expect("granted after the release");
        assert_eq!(g.bytes, 60);
        // and gives up after its wait
        assert!(b.grant(1, 60, Duration::from_millis(10)).await.is_none());
        drop((g, c));
        assert_eq!(b.held(1), (0, 0));
    }

    #[test]
    fn a_grant_grows_within_both_budgets_and_gives_all_back() {
        let b = Budget::new("test_bytes", 100, 150);
        let mut g = b.try_grant(1, 0).expect("an empty grant");
        assert!(g.grow(60));
        assert!(!g.grow(50), "gateway 1 over its budget");
        assert_eq!(g.bytes, 60, "a refused growth takes nothing");
        let other = b.try_grant(2, 80).expect("gateway 2 has its own");
        assert!(!g.grow(20), "over the global budget");
        assert!(g.grow(10));
        assert_eq!(b.held(1), (150, 70));
        drop((g, other));
        assert_eq!(b.held(1), (0, 0));
    }
}
