//! A lingering close of a device's connection (nginx's `lingering_close`). hyper ends a
//! connection whose request body it did not read to the end (an early answer: 413, 408,
//! a refusal) by closing it, and a socket closed with bytes unread makes the kernel reset
//! the connection: the device's next send fails, and the reset can destroy the answer
//! before the device has read it. So hyper gets the connection through a [`HandBack`],
//! which returns it when hyper lets go, and [`drain`] shuts its write side and reads and
//! drops what the device still sends until it closes, goes quiet for [`LINGER_IDLE`], or
//! [`LINGER_MAX`] has passed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

/// Longest a closed connection is read for (nginx: 30 s; a device's body after an early
/// answer comes at the venue's speed).
pub(crate) const LINGER_MAX: Duration = Duration::from_secs(5);
/// A device that sends nothing for this long is closed on (nginx: 5 s).
pub(crate) const LINGER_IDLE: Duration = Duration::from_secs(1);

/// A connection that is sent back through a channel when dropped (by hyper, at the end of
/// the connection), so the caller can [`drain`] it. A connection taken over by an upgrade
/// (a CONNECT tunnel) goes back only when the tunnel ends, to a caller no longer waiting.
pub(crate) struct HandBack<IO> {
    io: Option<IO>,
    back: Option<oneshot::Sender<IO>>,
}

impl<IO> HandBack<IO> {
    /// Wraps `io`; the receiver gets it back when the wrapper is dropped.
    pub(crate) fn new(io: IO) -> (Self, oneshot::Receiver<IO>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                io: Some(io),
                back: Some(tx),
            },
            rx,
        )
    }

    /// `f` on the connection (always there until the drop that hands it back).
    fn on_io<T>(
        &mut self,
        f: impl FnOnce(Pin<&mut IO>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>>
    where
        IO: Unpin,
    {
        match self.io.as_mut() {
            Some(io) => f(Pin::new(io)),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<IO> Drop for HandBack<IO> {
    fn drop(&mut self) {
        if let (Some(io), Some(back)) = (self.io.take(), self.back.take()) {
            // no one waiting (an upgraded connection's end): the connection just closes
            let _ = back.send(io);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for HandBack<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.on_io(|io| io.poll_read(cx, buf))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for HandBack<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.on_io(|io| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.on_io(|io| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.on_io(|io| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.on_io(|io| io.poll_shutdown(cx))
    }
}

/// Closes the connection `back` returns once hyper is done with it, with [`drain`]; at
/// once when it is not back (an upgrade has it: a CONNECT tunnel).
pub(crate) async fn close<IO: AsyncRead + AsyncWrite + Unpin>(mut back: oneshot::Receiver<IO>) {
    if let Ok(io) = back.try_recv() {
        drain(io).await;
    }
}

/// Shuts `io`'s write side (the device reads the end of its answer) and reads and drops
/// what the device still sends, until it closes, fails, goes quiet for [`LINGER_IDLE`] or
/// [`LINGER_MAX`] has passed; then `io` is dropped. A device that closed first costs one
/// read.
pub(crate) async fn drain<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    let _ = tokio::time::timeout(LINGER_MAX, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 8 * 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(LINGER_IDLE, io.read(&mut buf)).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_connection_comes_back_when_dropped() {
        let (a, mut b) = tokio::io::duplex(64);
        let (wrapped, back) = HandBack::new(a);
        drop(wrapped);
        let mut a = back.await.expect("handed back");
        b.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        a.read_exact(&mut one).await.expect("the same connection");
        assert_eq!(&one, b"x");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_shuts_its_side_at_once_and_reads_to_the_device_s_end() {
        let (a, mut b) = tokio::io::duplex(64);
        let drained = tokio::spawn(drain(a));
        // the device reads the end of its answer while the connection still lingers
        let mut one = [0u8; 1];
        assert_eq!(b.read(&mut one).await.expect("a clean end"), 0);
        assert!(!drained.is_finished());
        // it goes on sending after the answer (not reset), then closes
        for _ in 0..10 {
            b.write_all(&[1u8; 100]).await.expect("not reset");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(!drained.is_finished(), "read on for 3 s");
        let t = tokio::time::Instant::now();
        drop(b);
        drained.await.expect("drained");
        assert!(t.elapsed() < LINGER_IDLE, "the device's close ends it");
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_not_drained() {
        let (a, _b) = tokio::io::duplex(64);
        let (wrapped, back) = HandBack::new(a);
        // the tunnel still has it: close returns at once
        tokio::time::timeout(Duration::from_millis(100), close(back))
            .await
            .expect("at once");
        drop(wrapped);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_on_a_quiet_device_and_at_its_bound() {
        let (a, _quiet) = tokio::io::duplex(64);
        let t = tokio::time::Instant::now();
        drain(a).await;
        assert_eq!(t.elapsed(), LINGER_IDLE);
        let (a, mut b) = tokio::io::duplex(64);
        let t = tokio::time::Instant::now();
        let drained = tokio::spawn(drain(a));
        // a device that never stops
        let sender = tokio::spawn(async move {
            while b.write_all(&[1u8; 10]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        drained.await.expect("drained");
        assert_eq!(t.elapsed(), LINGER_MAX);
        sender
            .await
            .expect("the device's writes end once the connection is gone");
    }
}
