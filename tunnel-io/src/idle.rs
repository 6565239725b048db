//! Idle timeouts: a body that fails when no bytes come for a while (a stalled upload or a
//! stalled answer), and a connection whose writes fail when the peer takes no bytes for a
//! while (a device that stopped reading its answer). Either ends instead of holding its
//! stream (and its device's slot) for ever.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// Why a [`WriteIdle`] failed a write (inside an `io::Error` of kind `TimedOut`).
#[derive(Debug, thiserror::Error)]
#[error("the peer took no bytes for {0:?}")]
pub struct WriteStalled(pub Duration);

/// A [`WriteIdle`]'s bound, shared: whoever holds it may change it (a device connection
/// that becomes a CONNECT tunnel takes the tunnel's). A change applies from the next wait.
#[derive(Debug, Clone)]
pub struct IdleSetting(Arc<AtomicU64>);

impl IdleSetting {
    fn new(idle: Duration) -> Self {
        Self(Arc::new(AtomicU64::new(millis(idle))))
    }

    /// Sets the bound.
    pub fn set(&self, idle: Duration) {
        self.0.store(millis(idle), Ordering::Relaxed);
    }

    /// The bound.
    pub fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A connection `IO` whose writes, flushes and shutdown fail with [`WriteStalled`] once one
/// has waited its bound without the peer taking a byte. Only a write that waits counts: a
/// connection with nothing to send is never idle here. A wait counts from the first poll
/// that found no room until one makes progress: a write given up (its future dropped) and
/// tried again later goes on counting the same wait (hyper and the copy loops never give
/// up a write).
pub struct WriteIdle<IO> {
    inner: IO,
    idle: IdleSetting,
    sleep: Pin<Box<Sleep>>,
    /// A write is waiting, and `sleep` runs out when it has waited the bound.
    waiting: bool,
}

impl<IO> WriteIdle<IO> {
    /// Wraps `inner`, with the bound `idle`.
    pub fn new(inner: IO, idle: Duration) -> Self {
        Self {
            inner,
            idle: IdleSetting::new(idle),
            sleep: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }

    /// The bound, to change it.
    pub fn setting(&self) -> IdleSetting {
        self.idle.clone()
    }

    /// What the inner write returned: progress clears the wait, a wait starts or goes on.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        p: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if p.is_ready() {
            self.waiting = false;
            return p;
        }
        if !self.waiting {
            self.waiting = true;
            let idle = self.idle.get();
            self.sleep.as_mut().reset(Instant::now() + idle);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                // the wait is over with its error: a later one has its own bound (a
                // lingering close's shutdown after a stalled answer)
                self.waiting = false;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    WriteStalled(self.idle.get()),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteIdle<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteIdle<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, p)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, p)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, p)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_and_a_slow_one_does_not() {
        let (near, mut far) = tokio::io::duplex(1024);
        let idle = Duration::from_secs(30);
        let mut w = WriteIdle::new(near, idle);
        // the peer reads 1 kB every 20 s: slow, never idle for 30 s
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                far.read_exact(&mut buf).await.expect("read");
            }
            // then it stops reading, with the connection open
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(far);
        });
        let block = [7u8; 1024];
        let t = Instant::now();
        for _ in 0..6 {
            w.write_all(&block).await.expect("a slow peer takes it");
        }
        assert!(t.elapsed() >= Duration::from_secs(100));
        let stalled = Instant::now();
        let e = w.write_all(&block).await.expect_err("a stalled peer");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.get_ref().is_some_and(|e| e.is::<WriteStalled>()));
        assert_eq!(stalled.elapsed(), idle);
        // a write after the error waits a bound of its own, not none
        let again = Instant::now();
        let e = w.write_all(&block).await.expect_err("still stalled");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(again.elapsed(), idle);
        reader.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_bound_raised_applies_from_the_next_wait() {
        let (near, _far) = tokio::io::duplex(16);
        let mut w = WriteIdle::new(near, Duration::from_secs(30));
        w.setting().set(Duration::from_secs(300));
        let t = Instant::now();
        let e = w.write_all(&[0u8; 64]).await.expect_err("never read");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(t.elapsed(), Duration::from_secs(300));
    }
}
