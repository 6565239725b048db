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

/// Where bodies read whole take their bytes from: the relay's intake budget, and whose
/// share (the gateway's identity).
pub(crate) type Intake<'a> = (&'a Arc<Budget>, u64);

/// Reads a request body of at most `max` bytes, its bytes taken from `intake` as they come:
/// many streams of one gateway, each under its bound, cannot make the relay hold more than
/// that gateway's share. With `idle`, a body that sends nothing for that long is given up
/// ([`Capped::Failed`], STOP_SENDING sent).
pub(crate) async fn read_capped(
    stream: &mut Stream,
    max: u64,
    intake: Intake<'_>,
    idle: Option<Duration>,
) -> Capped {
    use bytes::Buf;
    let Some(mut grant) = intake.0.try_grant(intake.1, 0) else {
        return Capped::NoRoom;
    };
    let mut data = bytes::BytesMut::new();
    loop {
        let next = match idle {
            Some(d) => match tokio::time::timeout(d, stream.recv_data()).await {
                Ok(r) => r,
                Err(_) => {
                    debug!(idle_ms = d.as_millis() as u64, "request body stalled");
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return Capped::Failed;
                }
            },
            None => stream.recv_data().await,
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
