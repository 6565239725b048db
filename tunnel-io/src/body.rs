//! Adapters between HTTP/3 request streams (h3) and hyper bodies and byte streams. Bodies
//! stream chunk by chunk in both directions; nothing is buffered whole.

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Errors of a streamed body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The HTTP/3 stream failed (reset, connection lost).
    #[error("HTTP/3 stream: {0}")]
    Stream(#[from] StreamError),
    /// A striped body's chunks stopped coming (the gateway gave up or went away).
    #[error("striped body: {0}")]
    Stripe(String),
    /// The body exceeded the configured limit.
    #[error("body larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// No bytes came for this long ([`crate::IdleBody`]).
    #[error("no body bytes for {0:?}")]
    Idle(std::time::Duration),
}

/// Receiving half of an HTTP/3 request stream, client or server side.
pub trait RecvData: Send + Unpin + 'static {
    /// Polls the next chunk of the body; `None` at its end.
    fn poll_recv_bytes(&mut self, cx: &mut Context<'_>)
        -> Poll<Result<Option<Bytes>, StreamError>>;
}

/// The client and server request streams of h3 have the same methods but no common trait.
macro_rules! recv_data_for {
    ($($side:ident),*) => {$(
        impl<S> RecvData for h3::$side::RequestStream<S, Bytes>
        where
            S: h3::quic::RecvStream + Send + Unpin + 'static,
        {
            fn poll_recv_bytes(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamError>> {
                self.poll_recv_data(cx).map(|r| r.map(|o| o.map(|mut b| b.copy_to_bytes(b.remaining()))))
            }
        }
    )*};
}

recv_data_for!(server, client);

/// Sending half of an HTTP/3 request stream, client or server side.
pub trait SendData: Send {
    /// Sends one chunk of the body.
    fn send_bytes(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// Ends the body.
    fn finish_body(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send;
    /// Aborts the body (the peer sees a reset, never a truncated body that looks whole).
    fn abort(&mut self);
}

macro_rules! send_data_for {
    ($($side:ident),*) => {$(
        impl<S> SendData for h3::$side::RequestStream<S, Bytes>
        where
            S: h3::quic::SendStream<Bytes> + Send,
        {
            fn abort(&mut self) {
                self.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            }
            fn send_bytes(&mut self, data: Bytes) -> impl Future<Output = Result<(), StreamError>> + Send {
                self.send_data(data)
            }
            fn finish_body(&mut self) -> impl Future<Output = Result<(), StreamError>> + Send {
                self.finish()
            }
        }
    )*};
}

send_data_for!(server, client);

/// Chunks smaller than this are merged with data already received.
const COALESCE: usize = 64 * 1024;

/// The body of an HTTP/3 request or response as a hyper body, with an optional size limit
/// and a byte counter.
pub struct H3Body<R> {
    recv: Option<R>,
    /// An error met while coalescing, returned on the next poll.
    failed: Option<StreamError>,
    /// Fired once the whole body has been received.
    done: Option<tokio::sync::oneshot::Sender<()>>,
    limit: Option<u64>,
    seen: u64,
    counter: Option<metrics::Counter>,
}

impl<R: RecvData> H3Body<R> {
    /// Wraps a receiving stream.
    pub fn new(recv: R, limit: Option<u64>, counter: Option<metrics::Counter>) -> Self {
        Self {
            recv: Some(recv),
            failed: None,
            done: None,
            limit,
            seen: 0,
            counter,
        }
    }
}

impl<R> H3Body<R> {
    /// Returns a receiver that fires when the body has been received to its end (so a
    /// response timeout can start then, not while a long upload is still arriving).
    pub fn on_done(&mut self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.done = Some(tx);
        rx
    }

    fn finished(&mut self) {
        self.recv = None;
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl<R: RecvData> Body for H3Body<R> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            this.recv = None;
            return Poll::Ready(Some(Err(e.into())));
        }
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        match recv.poll_recv_bytes(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(first))) => {
                // QUIC hands data over about a packet at a time; gather what is already
                // there (up to COALESCE bytes) so the next hop writes big chunks.
                let mut chunk = first;
                let mut ended = false;
                if chunk.len() < COALESCE {
                    let mut buf = bytes::BytesMut::new();
                    while chunk.len() + buf.len() < COALESCE {
                        match recv.poll_recv_bytes(cx) {
                            Poll::Ready(Ok(Some(more))) => {
                                if buf.is_empty() {
                                    buf.reserve(COALESCE);
                                    buf.extend_from_slice(&chunk);
                                }
                                buf.extend_from_slice(&more);
                                if buf.len() >= COALESCE {
                                    break;
                                }
                            }
                            Poll::Ready(Ok(None)) => {
                                ended = true;
                                break;
                            }
                            Poll::Ready(Err(e)) => {
                                // deliver what we have; the error comes next
                                this.failed = Some(e);
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    if !buf.is_empty() {
                        chunk = buf.freeze();
                    }
                }
                if ended {
                    this.finished();
                }
                this.seen += chunk.len() as u64;
                if let Some(c) = &this.counter {
                    c.increment(chunk.len() as u64);
                }
                if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                    this.recv = None;
                    return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Ok(None)) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.recv = None;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none()
    }
}

/// Streams a hyper body into an HTTP/3 stream and finishes it. Trailers are dropped.
/// Returns the number of body bytes sent.
pub async fn pump_body<B, S>(
    mut body: B,
    send: &mut S,
    counter: Option<&metrics::Counter>,
) -> Result<u64, PumpError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: SendData,
{
    use http_body_util::BodyExt;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                send.abort();
                return Err(PumpError::Source(e.into()));
            }
        };
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            total += data.len() as u64;
            if let Some(c) = counter {
                c.increment(data.len() as u64);
            }
            send.send_bytes(data).await?;
        }
    }
    send.finish_body().await?;
    Ok(total)
}

/// Why pumping a body stopped.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    /// The source body failed (its own error, for a caller to tell kinds apart).
    #[error("source body: {0}")]
    Source(Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/3 stream failed.
    #[error("HTTP/3 stream: {0}")]
    Stream(#[from] StreamError),
}

/// Copies bytes both ways between a byte stream (TCP, an upgraded HTTP/1.1 connection) and
/// the two halves of an HTTP/3 stream, until both directions end or nothing moved either
/// way for `idle`. An error on one side aborts the other (a reset, never a clean end that
/// would make a cut-off stream look complete). Returns bytes (io -> h3, h3 -> io).
pub async fn copy_bidirectional<IO, S, R>(
    io: IO,
    mut send: S,
    mut recv: R,
    idle: Duration,
) -> (u64, u64)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin,
    S: SendData,
    R: RecvData,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let start = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let up = async {
        let mut buf = vec![0u8; 32 * 1024];
        let mut n_total = 0u64;
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Err(_) => {
                    send.abort();
                    return n_total;
                }
                Ok(n) => {
                    touch();
                    n_total += n as u64;
                    if send
                        .send_bytes(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return n_total;
                    }
                }
            }
        }
        let _ = send.finish_body().await;
        n_total
    };
    let down = async {
        let mut n_total = 0u64;
        loop {
            match std::future::poll_fn(|cx| recv.poll_recv_bytes(cx)).await {
                Ok(Some(chunk)) => {
                    touch();
                    n_total += chunk.len() as u64;
                    if wr.write_all(&chunk).await.is_err() {
                        return n_total;
                    }
                }
                Ok(None) => break,
                // The tunnel was reset: drop the byte stream without a clean shutdown.
                Err(_) => return n_total,
            }
        }
        let _ = wr.shutdown().await;
        n_total
    };
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
        }
    };
    let both = async { tokio::join!(up, down) };
    let result = tokio::select! {
        r = both => Some(r),
        () = watchdog => None,
    };
    result.unwrap_or_else(|| {
        // idle: reset the tunnel rather than end it cleanly
        send.abort();
        (0, 0)
    })
}
