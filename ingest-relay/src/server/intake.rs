//! Request bodies the relay reads (media pieces and bids whole, striped chunks piece by
//! piece), within a bound each and within the relay's intake budget.

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

/// Why reading a request body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Over the bound (STOP_SENDING sent).
    TooLarge,
    /// The intake budget had no room for a piece read (STOP_SENDING sent).
    NoRoom,
    /// The stream failed, or stalled longer than the idle bound.
    Failed,
    /// The sender called the request off (reset its stream with H3_REQUEST_CANCELLED): a
    /// gateway drops a piece sent again once the relay has its bytes by another way.
    CalledOff,
}

/// Reads a request body piece by piece as it arrives, each piece's bytes taken from the
/// intake budget onto the grant the caller holds: at most `max` bytes in all. A body that
/// sends nothing for `intake.idle` is given up (STOP_SENDING sent).
pub(crate) struct Pieces<'a> {
    intake: Intake<'a>,
    max: u64,
    /// Bytes read so far.
    pub read: u64,
}

impl<'a> Pieces<'a> {
    pub(crate) fn new(intake: Intake<'a>, max: u64) -> Self {
        Self {
            intake,
            max,
            read: 0,
        }
    }

    /// A grant of nothing yet from the intake budget, for the next pieces' bytes (None:
    /// the budget is full already).
    pub(crate) fn grant(&self) -> Option<Grant> {
        self.intake.budget.try_grant(self.intake.gateway, 0)
    }

    /// The next piece, its bytes on a grant of their own from the intake budget; None at
    /// the body's end. A body that ends at once (an empty chunk: a question) takes nothing
    /// from the budget, so a full budget does not refuse it.
    pub(crate) async fn next_granted(
        &mut self,
        stream: &mut Stream,
    ) -> Result<Option<(Bytes, Grant)>, Stopped> {
        let Some(mut grant) = self.grant() else {
            // full already: a body that ends at once still gets its answer
            return match self.recv(stream).await? {
                None => Ok(None),
                Some(_) => Err(no_room_for(stream)),
            };
        };
        Ok(self.next(stream, &mut grant).await?.map(|b| (b, grant)))
    }

    /// The next piece as it came (within the bound, not on any grant); None at the end.
    async fn recv(&mut self, stream: &mut Stream) -> Result<Option<Bytes>, Stopped> {
        use bytes::Buf;
        let next = match tokio::time::timeout(self.intake.idle, stream.recv_data()).await {
            Ok(r) => r,
            Err(_) => {
                debug!(
                    idle_ms = self.intake.idle.as_millis() as u64,
                    "request body stalled"
                );
                stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                metrics::counter!("canopy_relay_bodies_stalled_total").increment(1);
                return Err(Stopped::Failed);
            }
        };
        match next {
            Ok(Some(mut b)) => {
                let n = b.remaining() as u64;
                if self.read + n > self.max {
                    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
                    return Err(Stopped::TooLarge);
                }
                self.read += n;
                Ok(Some(b.copy_to_bytes(n as usize)))
            }
            Ok(None) => Ok(None),
            Err(h3::error::StreamError::RemoteTerminate { code, .. })
                if code == h3::error::Code::H3_REQUEST_CANCELLED =>
            {
                Err(Stopped::CalledOff)
            }
            Err(e) => {
                debug!(error = %e, "request body not received");
                Err(Stopped::Failed)
            }
        }
    }

    /// The next piece, its bytes grown onto `grant`; None at the body's end.
    pub(crate) async fn next(
        &mut self,
        stream: &mut Stream,
        grant: &mut Grant,
    ) -> Result<Option<Bytes>, Stopped> {
        let Some(b) = self.recv(stream).await? else {
            return Ok(None);
        };
        if !grant.grow(b.len() as u64) {
            return Err(no_room_for(stream));
        }
        Ok(Some(b))
    }
}

/// A piece the intake budget has no room for: reading stops (STOP_SENDING), counted.
fn no_room_for(stream: &mut Stream) -> Stopped {
    stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    metrics::counter!("canopy_relay_intake_refused_total").increment(1);
    Stopped::NoRoom
}

/// Reads a request body of at most `max` bytes, its bytes taken from `intake` as they come:
/// many streams of one gateway, each under its bound, cannot make the relay hold more than
/// that gateway's share. A body that sends nothing for `intake.idle` is given up
/// ([`Capped::Failed`], STOP_SENDING sent).
pub(crate) async fn read_capped(stream: &mut Stream, max: u64, intake: Intake<'_>) -> Capped {
    let mut pieces = Pieces::new(intake, max);
    let Some(mut grant) = pieces.grant() else {
        return Capped::NoRoom;
    };
    let mut data = bytes::BytesMut::new();
    loop {
        match pieces.next(stream, &mut grant).await {
            Ok(Some(b)) => data.extend_from_slice(&b),
            Ok(None) => return Capped::Body(data.freeze(), grant),
            Err(Stopped::TooLarge) => return Capped::TooLarge,
            Err(Stopped::NoRoom) => return Capped::NoRoom,
            Err(Stopped::Failed | Stopped::CalledOff) => return Capped::Failed,
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
