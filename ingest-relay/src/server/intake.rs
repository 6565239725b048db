//! Request bodies the relay reads whole (media pieces, chunks, bids), within a bound
//! each and within the relay's intake budget.

use super::*;

/// A request body read whole, within a bound.
pub(crate) enum Capped {
    /// The body, and the bytes of the relay's intake budget it holds (give them back by
    /// dropping the grant once the body is handed on).
    Body(Bytes, Grant),
    /// Over the bound: reading stopped (STOP_SENDING sent).
    TooLarge,
    /// The gateway's (or every gateway's) unread bodies fill the relay's intake budget:
    /// reading stopped (STOP_SENDING sent).
    NoRoom,
    /// The stream failed, or stalled longer than the idle bound.
    Failed,
}

/// Where bodies read whole take their bytes from, and how long they may stall.
#[derive(Clone, Copy)]
pub(crate) struct Intake<'a> {
    /// The relay's intake budget.
    pub budget: &'a Arc<Budget>,
    /// Whose share (the gateway's identity).
    pub gateway: u64,
    /// A body that sends nothing for this long is given up (`[egress]
    /// body_idle_timeout_ms`): a stalled body must not hold its stream and its bytes.
    pub idle: Duration,
}

/// Reads a request body of at most `max` bytes, its bytes taken from `intake` as they come:
/// many streams of one gateway, each under its bound, cannot make the relay hold more than
/// that gateway's share. A body that sends nothing for `intake.idle` is given up
/// ([`Capped::Failed`], STOP_SENDING sent).
pub(crate) async fn read_capped(stream: &mut Stream, max: u64, intake: Intake<'_>) -> Capped {
    use bytes::Buf;
    let Some(mut grant) = intake.budget.try_grant(intake.gateway, 0) else {
        return Capped::NoRoom;
    };
    let mut data = bytes::BytesMut::new();
    loop {
        let next = match tokio::time::timeout(intake.idle, stream.recv_data()).await {
            Ok(r) => r,
            Err(_) => {
                debug!(
                    idle_ms = intake.idle.as_millis() as u64,
                    "request body stalled"
                );
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                metrics::counter!("canopy_relay_bodies_stalled_total").increment(1);
                return Capped::Failed;
            }
        };
        match next {
            Ok(Some(mut b)) => {
                let n = b.remaining() as u64;
                if data.len() as u64 + n > max {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return Capped::TooLarge;
                }
                if !grant.grow(n) {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    metrics::counter!("canopy_relay_intake_refused_total").increment(1);
                    return Capped::NoRoom;
                }
                while b.has_remaining() {
                    let c = b.chunk();
                    data.extend_from_slice(c);
                    let n = c.len();
                    b.advance(n);
                }
            }
            Ok(None) => return Capped::Body(data.freeze(), grant),
            Err(e) => {
                debug!(error = %e, "request body not received");
                return Capped::Failed;
            }
        }
    }
}

/// The answer to a body the relay had no room for.
pub(crate) fn no_room() -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the relay holds as many unread request bytes of this gateway as it may",
    )
}
