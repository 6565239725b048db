//! A device's request body read whole before it goes on (a bid, a check-in, a request safe
//! to send again, a body the privacy gate reads), up to a limit and never waiting on a
//! quiet device for longer than its idle time, and the answer a device gets when it
//! cannot be read.

use super::{body_limit_exceeded, synthetic, Body};
use crate::stripe::BodyReadError;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WholeBodyError {
    /// It is longer than the limit.
    #[error("request body over the limit of {0} bytes")]
    OverLimit(u64),
    /// The device went quiet or its body broke off.
    #[error(transparent)]
    Device(#[from] BodyReadError),
}

impl WholeBodyError {
    /// The status a device gets: 413 over the limit, 408 when it went quiet, 400 when
    /// its body broke off.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            WholeBodyError::OverLimit(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WholeBodyError::Device(e) => unread_status(e),
        }
    }

    /// The device's answer (see [`Self::status`]).
    pub(crate) fn answer(&self) -> Response<Body> {
        match self {
            WholeBodyError::OverLimit(limit) => body_limit_exceeded(*limit),
            WholeBodyError::Device(e) => unread_body(e),
        }
    }
}

/// The status a device gets when its body could not be read.
pub(crate) fn unread_status(e: &BodyReadError) -> StatusCode {
    match e {
        BodyReadError::Idle(_) => StatusCode::REQUEST_TIMEOUT,
        BodyReadError::Broken(_) => StatusCode::BAD_REQUEST,
    }
}

/// The device's answer when its body could not be read.
pub(crate) fn unread_body(e: &BodyReadError) -> Response<Body> {
    synthetic(unread_status(e), &e.to_string())
}

/// `body` read whole, at most `limit` bytes, failing after `idle` without a frame.
pub(crate) async fn read_whole<B>(
    body: B,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, WholeBodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let limited = Limited::new(
        tunnel_io::IdleBody::new(body, idle),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(WholeBodyError::OverLimit(limit))
        }
        Err(e) => Err(device_fault::<B::Error>(&*e)
            .unwrap_or_else(|| BodyReadError::Broken(e.to_string()))
            .into()),
    }
}

/// The device's fault in what a [`tunnel_io::IdleBody`] of its body (of error `E`) failed
/// with, however boxed: it went quiet, or its body broke off. None: another failure.
pub(crate) fn device_fault<E>(
    e: &(dyn std::error::Error + Send + Sync + 'static),
) -> Option<BodyReadError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match e.downcast_ref::<tunnel_io::IdleError<E>>()? {
        tunnel_io::IdleError::Idle(d) => Some(BodyReadError::Idle(*d)),
        tunnel_io::IdleError::Inner(inner) => Some(BodyReadError::Broken(inner.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn each_failure_is_told_apart() {
        let idle = Duration::from_secs(2);
        let whole = read_whole(Full::new(Bytes::from_static(b"bid")), 10, idle).await;
        assert_eq!(whole.ok(), Some(Bytes::from_static(b"bid")));
        let e = read_whole(Full::new(Bytes::from(vec![0u8; 11])), 10, idle)
            .await
            .expect_err("over");
        assert!(matches!(e, WholeBodyError::OverLimit(10)));
        assert_eq!(e.answer().status(), StatusCode::PAYLOAD_TOO_LARGE);
        // a frame, then nothing
        let quiet = StreamBody::new(Box::pin(futures_util::stream::unfold(0, |i| async move {
            if i > 0 {
                std::future::pending::<()>().await;
            }
            Some((
                Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from_static(b"b"))),
                i + 1,
            ))
        })));
        let e = read_whole(quiet, 10, idle).await.expect_err("idle");
        assert!(matches!(e, WholeBodyError::Device(BodyReadError::Idle(d)) if d == idle));
        assert_eq!(e.answer().status(), StatusCode::REQUEST_TIMEOUT);
        let torn = StreamBody::new(futures_util::stream::iter([Err::<
            http_body::Frame<Bytes>,
            _,
        >(
            std::io::Error::other("torn"),
        )]));
        let e = read_whole(torn, 10, idle).await.expect_err("torn");
        assert!(matches!(
            e,
            WholeBodyError::Device(BodyReadError::Broken(_))
        ));
        assert_eq!(e.answer().status(), StatusCode::BAD_REQUEST);
    }
}
