//! The HTTP/3 transport over quinn, with small-first stream priorities.
//!
//! h3-quinn gives no handle on quinn's per-stream `set_priority`, so Canopy implements
//! h3's `quic` traits over quinn itself. The policy needs no knowledge of classes: every
//! request stream starts at high priority and drops to normal once it has sent
//! `SMALL_BYTES`. Bids, check-ins and small responses therefore go out before the
//! megabytes of bulk streams already buffered in quinn, in both directions, even when a
//! tight congestion window makes the sender wait (measured: with a small window a bid
//! otherwise waited one round trip or more for its round-robin turn). HTTP/3 control and
//! QPACK streams (unidirectional) stay at the highest priority.

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes a stream may send at high priority.
pub const SMALL_BYTES: u64 = 32 * 1024;
const PRIO_CONTROL: i32 = 200;
const PRIO_SMALL: i32 = 100;
const PRIO_MEDIA: i32 = 50;
/// Pieces sent again take the levels between bulk and media, the first one the highest.
const PRIO_RESEND_FIRST: i32 = 49;
const PRIO_BULK: i32 = 0;
const READ_CHUNK: usize = 64 * 1024;

/// A boxed future that is `Sync` (h3 holds its connection across awaits by reference);
/// the mutex is only ever reached through `get_mut`, so it never locks.
struct BoxFut<T>(std::sync::Mutex<Pin<Box<dyn Future<Output = T> + Send>>>);

impl<T> BoxFut<T> {
    fn new(f: impl Future<Output = T> + Send + 'static) -> Self {
        Self(std::sync::Mutex::new(Box::pin(f)))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        match self.0.get_mut() {
            Ok(f) => f.as_mut().poll(cx),
            Err(poisoned) => poisoned.into_inner().as_mut().poll(cx),
        }
    }
}

/// An HTTP/3 connection over a quinn connection.
pub struct Connection {
    conn: quinn::Connection,
    accepting_bi:
        Option<BoxFut<Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>>,
    accepting_uni: Option<BoxFut<Result<quinn::RecvStream, quinn::ConnectionError>>>,
    opener: OpenStreams,
    small_first: bool,
    marks: BulkMarks,
}

/// How streams the accepting side answers on start, when not small-first: an answer the
/// server knows is a piece of a bulk transfer (a pulled body's chunk) goes as bulk from its
/// first byte, so its head does not take the small-first lane that bids use; a piece the
/// transfer waits for goes in its resend rank. Marked by stream id before anything is
/// written; read once, at the stream's first write.
#[derive(Debug, Clone, Default)]
pub struct BulkMarks(Arc<std::sync::Mutex<std::collections::HashMap<u64, Start>>>);

impl BulkMarks {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Start>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stream `id` goes as bulk from its first byte (call before answering on it).
    pub fn mark(&self, id: StreamId) {
        self.mark_as(id, Start::Bulk);
    }

    /// Stream `id` starts as `start` says (call before answering on it).
    pub fn mark_as(&self, id: StreamId, start: Start) {
        self.lock().insert(id.into_inner(), start);
    }

    /// How stream `id` was marked to start (the mark is used up).
    fn take(&self, id: u64) -> Option<Start> {
        self.lock().remove(&id)
    }
}

impl Connection {
    /// Wraps an established quinn connection; `small_first` turns the priority policy on
    /// (off: every stream at one priority, quinn's plain round-robin).
    pub fn new(conn: quinn::Connection, small_first: bool) -> Self {
        Self {
            opener: OpenStreams::new(conn.clone(), small_first),
            conn,
            accepting_bi: None,
            accepting_uni: None,
            small_first,
            marks: BulkMarks::default(),
        }
    }

    /// The handle that marks accepted streams as bulk (see [`BulkMarks`]).
    pub fn bulk_marks(&self) -> BulkMarks {
        self.marks.clone()
    }
}

/// Opens streams on a connection.
pub struct OpenStreams {
    conn: quinn::Connection,
    opening_bi:
        Option<BoxFut<Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>>,
    opening_uni: Option<BoxFut<Result<quinn::SendStream, quinn::ConnectionError>>>,
    small_first: bool,
}

impl OpenStreams {
    fn new(conn: quinn::Connection, small_first: bool) -> Self {
        Self {
            conn,
            opening_bi: None,
            opening_uni: None,
            small_first,
        }
    }
}

impl Clone for OpenStreams {
    fn clone(&self) -> Self {
        Self::new(self.conn.clone(), self.small_first)
    }
}

fn conn_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose {
                error_code: close.error_code.into_inner(),
            }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_conn_error(e: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: conn_error(e),
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(e) => stream_conn_error(e),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn read_error(e: std::io::Error) -> StreamErrorIncoming {
    match e.downcast::<quinn::ReadError>() {
        Ok(quinn::ReadError::Reset(code)) => StreamErrorIncoming::StreamTerminated {
            error_code: code.into_inner(),
        },
        Ok(quinn::ReadError::ConnectionLost(e)) => stream_conn_error(e),
        Ok(other) => StreamErrorIncoming::Unknown(Box::new(other)),
        Err(e) => StreamErrorIncoming::Unknown(Box::new(e)),
    }
}

/// Polls the future in `slot`, creating it with `make` first; empties the slot when done.
fn poll_slot<T>(
    slot: &mut Option<BoxFut<T>>,
    cx: &mut Context<'_>,
    make: impl FnOnce() -> BoxFut<T>,
) -> Poll<T> {
    let r = std::task::ready!(slot.get_or_insert_with(make).poll(cx));
    *slot = None;
    Poll::Ready(r)
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    // quinn's ids are QUIC varints (< 2^62), exactly what h3 accepts
    #[allow(clippy::expect_used)]
    StreamId::try_from(u64::from(id)).expect("a QUIC stream id is a 62-bit varint")
}

impl quic::Connection<Bytes> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = OpenStreams;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let conn = self.conn.clone();
        let r = std::task::ready!(poll_slot(&mut self.accepting_uni, cx, || {
            BoxFut::new(async move { conn.accept_uni().await })
        }));
        Poll::Ready(r.map(RecvStream::new).map_err(conn_error))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        let conn = self.conn.clone();
        let r = std::task::ready!(poll_slot(&mut self.accepting_bi, cx, || {
            BoxFut::new(async move { conn.accept_bi().await })
        }));
        let small_first = self.small_first;
        let marks = self.marks.clone();
        Poll::Ready(
            r.map(|(s, r)| {
                let mut b = BidiStream::new(s, r, small_first);
                if small_first {
                    b.send.marks = Some(marks);
                }
                b
            })
            .map_err(conn_error),
        )
    }

    fn opener(&self) -> OpenStreams {
        self.opener.clone()
    }
}

impl quic::OpenStreams<Bytes> for Connection {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        self.opener.poll_open_bidi(cx)
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        self.opener.poll_open_send(cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.opener.close(code, reason)
    }
}

impl quic::OpenStreams<Bytes> for OpenStreams {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let conn = self.conn.clone();
        let r = std::task::ready!(poll_slot(&mut self.opening_bi, cx, || {
            BoxFut::new(async move { conn.open_bi().await })
        }));
        let small_first = self.small_first;
        Poll::Ready(
            r.map(|(s, r)| BidiStream::new(s, r, small_first))
                .map_err(stream_conn_error),
        )
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        let conn = self.conn.clone();
        let r = std::task::ready!(poll_slot(&mut self.opening_uni, cx, || {
            BoxFut::new(async move { conn.open_uni().await })
        }));
        Poll::Ready(
            r.map(|s| {
                if self.small_first {
                    let _ = s.set_priority(PRIO_CONTROL);
                }
                SendStream::new(s, false)
            })
            .map_err(stream_conn_error),
        )
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        let code = quinn::VarInt::from_u64(code.value()).unwrap_or(quinn::VarInt::MAX);
        self.conn.close(code, reason);
    }
}

/// A bidirectional request stream.
pub struct BidiStream {
    send: SendStream,
    recv: RecvStream,
}

impl BidiStream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream, small_first: bool) -> Self {
        Self {
            send: SendStream::new(send, small_first),
            recv: RecvStream::new(recv),
        }
    }
}

impl quic::BidiStream<Bytes> for BidiStream {
    type SendStream = SendStream;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

impl quic::SendStream<Bytes> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        self.send.send_id()
    }
}

/// How a stream opened in a scope starts (see [`opening_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// High priority for its first `SMALL_BYTES` (the default).
    SmallFirst,
    /// Normal priority from its first byte: a piece of a bulk transfer the sender knows is
    /// bulk (a striped body's chunk), so its head does not compete with bids.
    Bulk,
    /// Live media: below bids and small requests, above bulk (and backfill, which goes as
    /// bulk), from its first byte to its last.
    Media,
    /// A piece of a transfer sent again after its path died, which the transfer waits for:
    /// below live media, above bulk, from its first byte to its last. Its rank orders the
    /// pieces of one transfer (rank 0 goes first): pieces of equal priority share the path
    /// round-robin, so twenty pieces sent again at once would otherwise all arrive at the
    /// end, and the transfer would wait for the last of them instead of the first.
    Resend(u8),
}

impl Start {
    /// The quinn priority a stream starts at (with small-first priorities on).
    fn priority(self) -> i32 {
        match self {
            Start::SmallFirst => PRIO_SMALL,
            Start::Bulk => PRIO_BULK,
            Start::Media => PRIO_MEDIA,
            Start::Resend(rank) => {
                (PRIO_RESEND_FIRST - i32::from(rank)).clamp(PRIO_BULK + 1, PRIO_RESEND_FIRST)
            }
        }
    }
}

tokio::task_local! {
    static OPEN_AS: Start;
}

/// Runs `f`; streams it opens start as `start` says.
pub async fn opening_as<F: Future>(start: Start, f: F) -> F::Output {
    OPEN_AS.scope(start, f).await
}

/// The sending half of a stream.
pub struct SendStream {
    stream: quinn::SendStream,
    writing: Option<WriteBuf<Bytes>>,
    sent: u64,
    /// Whether this stream starts small-first and is demoted after `SMALL_BYTES`.
    small_first: bool,
    /// An accepted stream: it may have been marked bulk before its first write.
    marks: Option<BulkMarks>,
}

impl SendStream {
    fn new(stream: quinn::SendStream, small_first: bool) -> Self {
        let start = OPEN_AS.try_with(|s| *s).unwrap_or(Start::SmallFirst);
        if small_first {
            let _ = stream.set_priority(start.priority());
        }
        let small_first = small_first && start == Start::SmallFirst;
        Self {
            stream,
            writing: None,
            sent: 0,
            small_first,
            marks: None,
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        // a mark never read (nothing was written) goes with the stream
        if let Some(marks) = self.marks.take() {
            marks.take(u64::from(self.stream.id()));
        }
        // Dropped in the middle of a frame (its writer was cancelled: a timeout, a device
        // gone, a path dead): quinn would finish the stream, and the peer would read a
        // frame cut short by the stream's end. h3 0.0.8 reads that as the body's end
        // (tested below: a 4 MiB frame cut after 64 KiB read as a whole body), so a cut
        // upload would reach the origin as if whole; RFC 9114 makes it a frame error,
        // which closes the connection and every request on it. A reset fails this
        // request alone, as what it is.
        if self.writing.as_ref().is_some_and(|d| d.has_remaining()) {
            quic::SendStream::reset(self, h3::error::Code::H3_REQUEST_CANCELLED.value());
        }
    }
}

impl quic::SendStream<Bytes> for SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        if let Some(marks) = self.marks.take() {
            if self.writing.is_some() {
                if let Some(start) = marks.take(u64::from(self.stream.id())) {
                    let _ = self.stream.set_priority(start.priority());
                    self.small_first = false;
                }
            } else {
                self.marks = Some(marks);
            }
        }
        while let Some(data) = self.writing.as_mut() {
            if !data.has_remaining() {
                self.writing = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, data.chunk()))
                .map_err(write_error)?;
            data.advance(n);
            let before = self.sent;
            self.sent += n as u64;
            if self.small_first && before < SMALL_BYTES && self.sent >= SMALL_BYTES {
                let _ = self.stream.set_priority(PRIO_BULK);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.writing.is_some() {
            return Err(StreamErrorIncoming::Unknown(Box::new(
                std::io::Error::other("send_data before poll_ready finished"),
            )));
        }
        self.writing = Some(data.into());
        Ok(())
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        Poll::Ready(
            self.stream
                .finish()
                .map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))),
        )
    }

    fn reset(&mut self, reset_code: u64) {
        let _ = self
            .stream
            .reset(quinn::VarInt::from_u64(reset_code).unwrap_or(quinn::VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// The receiving half of a stream.
pub struct RecvStream {
    stream: quinn::RecvStream,
    scratch: Box<[u8]>,
}

impl RecvStream {
    fn new(stream: quinn::RecvStream) -> Self {
        Self {
            stream,
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let mut rb = ReadBuf::new(&mut self.scratch);
        std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, &mut rb)).map_err(read_error)?;
        if rb.filled().is_empty() {
            return Poll::Ready(Ok(None));
        }
        Poll::Ready(Ok(Some(Bytes::copy_from_slice(rb.filled()))))
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self
            .stream
            .stop(quinn::VarInt::from_u64(error_code).unwrap_or(quinn::VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A quinn connection on loopback: the client's connection, and the server's.
    async fn loopback() -> (
        quinn::Endpoint,
        quinn::Endpoint,
        quinn::Connection,
        quinn::Connection,
    ) {
        let (mut server_config, client_config) = crate::test_tls::loopback_configs();
        // a small stream window, so a large frame cannot be written at once
        let mut transport = quinn::TransportConfig::default();
        transport.stream_receive_window(quinn::VarInt::from_u32(64 * 1024));
        server_config.transport_config(Arc::new(transport));
        let local = "127.0.0.1:0".parse().expect("addr");
        let server = quinn::Endpoint::server(server_config, local).expect("server");
        let addr = server.local_addr().expect("addr");
        let mut client = quinn::Endpoint::client(local).expect("client");
        client.set_default_client_config(client_config);
        let accept = {
            let server = server.clone();
            tokio::spawn(async move { server.accept().await?.await.ok() })
        };
        let conn = client
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let peer = accept.await.expect("task").expect("accepted");
        (client, server, conn, peer)
    }

    #[tokio::test]
    async fn a_request_dropped_in_the_middle_of_a_frame_fails_alone() {
        let (_c, _s, conn, peer) = loopback().await;
        // the server reads each request's body to its end (or its error), answers the
        // whole ones, and says how each ended; the first's only once its writer is gone
        // (till then the stream's window holds the writer back)
        let (dropped, mut until_dropped) = tokio::sync::oneshot::channel::<()>();
        // (and it keeps the connection until the client has its answers)
        let (done, until_done) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let mut h3s = h3::server::builder()
                .build::<_, Bytes>(Connection::new(peer, false))
                .await
                .expect("h3 server");
            let mut ended = Vec::new();
            while ended.len() < 2 {
                let resolver = match h3s.accept().await {
                    Ok(Some(r)) => r,
                    other => {
                        ended.push((format!("connection closed: {:?}", other.err()), false));
                        break;
                    }
                };
                let Ok((req, mut stream)) = resolver.resolve_request().await else {
                    continue;
                };
                if ended.is_empty() {
                    let _ = (&mut until_dropped).await;
                }
                let whole = loop {
                    match stream.recv_data().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break true,
                        Err(_) => break false,
                    }
                };
                if whole {
                    let _ = stream.send_response(http::Response::new(())).await;
                    let _ = stream.finish().await;
                }
                ended.push((req.uri().path().to_string(), whole));
            }
            let _ = until_done.await;
            ended
        });
        let (mut driver, mut sender) = h3::client::new(Connection::new(conn, false))
            .await
            .expect("h3 client");
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let post = |path: &str| {
            http::Request::post(format!("https://localhost{path}"))
                .body(())
                .expect("request")
        };
        let mut first = sender.send_request(post("/first")).await.expect("first");
        // one frame larger than the server's stream window: its writer is cancelled
        // while part of it is still unwritten
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            first.send_data(Bytes::from(vec![7u8; 4 << 20])),
        )
        .await;
        assert!(cut.is_err(), "the whole frame went at once");
        drop(first);
        let _ = dropped.send(());
        let mut second = sender
            .send_request(post("/second"))
            .await
            .expect("the connection is still up");
        second.finish().await.expect("finish");
        let resp = tokio::time::timeout(Duration::from_secs(5), second.recv_response())
            .await
            .expect("in time");
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let _ = done.send(());
                panic!("the second request: {e}; the server saw {:?}", server.await)
            }
        };
        let _ = done.send(());
        assert_eq!(resp.status(), http::StatusCode::OK);
        let ended = server.await.expect("server");
        assert_eq!(
            ended,
            [("/first".to_string(), false), ("/second".to_string(), true)],
            "the cut request failed (not read as whole), and alone"
        );
    }

    #[test]
    fn pieces_sent_again_sit_between_bulk_and_media_first_ranked_first() {
        let p = |s: Start| s.priority();
        assert!(p(Start::SmallFirst) > p(Start::Media));
        assert!(p(Start::Media) > p(Start::Resend(0)));
        assert!(p(Start::Resend(0)) > p(Start::Resend(1)));
        assert!(p(Start::Resend(1)) > p(Start::Resend(47)));
        // past the levels there are, later pieces share the lowest, still above bulk
        assert_eq!(p(Start::Resend(48)), p(Start::Resend(255)));
        assert!(p(Start::Resend(255)) > p(Start::Bulk));
    }
}
