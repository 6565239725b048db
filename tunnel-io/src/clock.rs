//! The shells' clock: tokio's, as a `std::time::Instant` for the sans-IO cores.
//!
//! Outside a paused runtime it is the monotonic clock itself. Under tokio's paused clock
//! (the in-process harness: `tokio::time::pause`) it is the runtime's virtual time, the
//! same time quinn and every timer see, so estimators and deadlines in the shells follow
//! the simulation instead of the few real microseconds it takes.

/// Now, on tokio's clock.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Time since `earlier` (taken with [`now`]), on the same clock.
pub fn since(earlier: std::time::Instant) -> std::time::Duration {
    now().saturating_duration_since(earlier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_the_shells_clock() {
        let before = now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(now() - before >= Duration::from_secs(3600));
    }
}
