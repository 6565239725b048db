//! A body that fails when no bytes come for a while: a stalled upload or a stalled answer
//! ends instead of holding its stream (and its device's slot) for ever.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why an [`IdleBody`] failed.
#[derive(Debug, thiserror::Error)]
pub enum IdleError<E> {
    /// No bytes for this long.
    #[error("no body bytes for {0:?}")]
    Idle(Duration),
    /// The inner body failed.
    #[error(transparent)]
    Inner(E),
}

/// `B`, failing with [`IdleError::Idle`] after `idle` without a frame.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = IdleError<B::Error>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => {
                let idle = this.idle;
                this.sleep.as_mut().reset(Instant::now() + idle);
                Poll::Ready(f.map(|r| r.map_err(IdleError::Inner)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(IdleError::Idle(this.idle)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body fed through a channel.
    struct Rx(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Rx {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_slow_one_does_not() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let idle = Duration::from_millis(300);
        let mut body = IdleBody::new(Rx(rx), idle);
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(Bytes::from_static(b"x")).await;
            }
            // then stall with the sender alive
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            let f = body.frame().await.expect("frame").expect("data");
            assert_eq!(f.into_data().ok(), Some(Bytes::from_static(b"x")));
        }
        let t = Instant::now();
        let e = body.frame().await.expect("an error").expect_err("idle");
        assert!(matches!(e, IdleError::Idle(_)));
        assert!(t.elapsed() >= idle && t.elapsed() < Duration::from_secs(5));
        feeder.abort();
    }
}
