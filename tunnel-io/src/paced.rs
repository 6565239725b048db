//! A UDP socket that paces each QUIC connection's packets one by one, at the rate the
//! connection's congestion controller publishes (`tunnel::pace`).
//!
//! quinn asks a connection's [`UdpPoller`] whether the socket is writable before it hands
//! the socket each transmit it has built, keeps that one transmit while the poller says
//! no, and builds the next only after the socket took it. So holding the poller back until
//! the connection's [`Bucket`] has credit paces the connection without a queue of ours: a
//! bid's frames written while bulk waits for credit wait behind the one transmit quinn
//! holds (at most [`MAX_SEGMENTS`] packets), then go. The poller does not know where its
//! connection sends; the socket learns it from the first packet quinn sends right after
//! the poller said "writable", on the same thread (quinn's connection driver does the two
//! back to back), and looks up that destination's [`PaceRate`] (registered with
//! [`PacedSocket::pace`] before the connection is made). A connection with no registered
//! rate (`congestion = "cubic"`) is paced by quinn alone. The cap on GSO batches applies
//! to every connection of the socket (the relay's viewers have an endpoint of their own).

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{ready, Context, Poll};
use tunnel::pace::{Bucket, PaceRate};

/// The most packets quinn may put in one send (GSO batch): a batch leaves at once, and two
/// full-size packets are the bucket's least depth.
const MAX_SEGMENTS: usize = 2;

/// A UDP socket whose connections are paced packet by packet.
pub struct PacedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Each peer's pacing rate, for as long as its connection's controller lives.
    rates: Mutex<HashMap<SocketAddr, Weak<PaceRate>>>,
}

impl fmt::Debug for PacedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PacedSocket {
    /// Wraps `inner`; nothing is paced until [`Self::pace`] names a peer.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            rates: Mutex::default(),
        })
    }

    /// Paces the packets of the next connection to `remote` at `rate` (its controller's).
    /// Call it before the connection is made (`connect_with`, `Incoming::accept_with`).
    pub fn pace(&self, remote: SocketAddr, rate: &Arc<PaceRate>) {
        let mut rates = lock(&self.rates);
        rates.retain(|_, r| r.strong_count() > 0);
        rates.insert(remote, Arc::downgrade(rate));
    }

    fn rate_for(&self, remote: SocketAddr) -> Weak<PaceRate> {
        lock(&self.rates).get(&remote).cloned().unwrap_or_default()
    }
}

thread_local! {
    /// The pacing state of the connection whose poller last said "writable" on this
    /// thread; quinn hands the socket that connection's packet next.
    static POLLED: RefCell<Option<Arc<Mutex<ConnectionPace>>>> = const { RefCell::new(None) };
}

/// One connection's pacing.
#[derive(Debug, Default)]
struct ConnectionPace {
    /// The connection's rate, looked up by the destination of its first packet (a
    /// connection that migrates keeps its controller, so its rate).
    rate: Option<Weak<PaceRate>>,
    bucket: Bucket,
}

impl ConnectionPace {
    fn rate(&self) -> Option<f64> {
        self.rate.as_ref()?.upgrade()?.get()
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// A connection's poller: writable when the inner socket is and the bucket has credit.
struct PacedPoller {
    inner: Pin<Box<dyn UdpPoller>>,
    pace: Arc<Mutex<ConnectionPace>>,
    /// Made on the first wait (inside the connection's task, where tokio's timer is).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl fmt::Debug for PacedPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacedPoller").finish_non_exhaustive()
    }
}

impl UdpPoller for PacedPoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let wait = {
            let mut pace = lock(&this.pace);
            match pace.rate() {
                Some(rate) => pace.bucket.ready_at(now(), rate),
                None => None,
            }
        };
        if let Some(at) = wait {
            let at = tokio::time::Instant::from_std(at);
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            sleep.as_mut().reset(at);
            ready!(sleep.as_mut().poll(cx));
        }
        ready!(this.inner.as_mut().poll_writable(cx))?;
        POLLED.with(|p| *p.borrow_mut() = Some(this.pace.clone()));
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for PacedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(PacedPoller {
            inner: self.inner.clone().create_io_poller(),
            pace: Arc::default(),
            sleep: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let polled = POLLED.with(|p| p.borrow_mut().take());
        self.inner.try_send(transmit)?;
        let Some(pace) = polled else {
            // the endpoint's own answers (no connection), or a send without a poll
            return Ok(());
        };
        let mut pace = lock(&pace);
        if pace.rate.is_none() {
            pace.rate = Some(self.rate_for(transmit.destination));
        }
        if let Some(rate) = pace.rate() {
            pace.bucket.spend(now(), transmit.contents.len(), rate);
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(MAX_SEGMENTS)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Seconds from opening a stream to the server having read all of `bytes`, sent on
    /// loopback from a client whose socket paces its connection at `rate` (bytes per
    /// second) when given. quinn's own controller (Cubic) leaves loopback unlimited.
    async fn send_secs(bytes: usize, rate: Option<f64>) -> f64 {
        let (server_config, client_config) = crate::test_tls::loopback_configs();
        let local = "127.0.0.1:0".parse().expect("addr");
        let server = quinn::Endpoint::server(server_config, local).expect("server");
        let addr = server.local_addr().expect("addr");
        let runtime = quinn::default_runtime().expect("runtime");
        let udp = std::net::UdpSocket::bind(local).expect("bind");
        let socket = PacedSocket::new(runtime.wrap_udp_socket(udp).expect("socket"));
        let pace = Arc::new(PaceRate::default());
        if let Some(rate) = rate {
            pace.set(
                (rate / tunnel::pace::PACE_GAIN) as u64,
                Duration::from_secs(1),
            );
            socket.pace(addr, &pace);
        }
        let client = quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            None,
            socket,
            runtime,
        )
        .expect("client");
        let reader = tokio::spawn(async move {
            let conn = server.accept().await?.await.ok()?;
            let mut stream = conn.accept_uni().await.ok()?;
            let n = stream.read_to_end(usize::MAX).await.ok()?.len();
            Some((n, Instant::now()))
        });
        let conn = client
            .connect_with(client_config, addr, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let start = Instant::now();
        let mut stream = conn.open_uni().await.expect("stream");
        stream.write_all(&vec![7u8; bytes]).await.expect("write");
        stream.finish().expect("finish");
        let read = tokio::time::timeout(Duration::from_secs(20), reader).await;
        let (n, end) = read.expect("in time").expect("task").expect("read");
        assert_eq!(n, bytes);
        (end - start).as_secs_f64()
    }

    #[tokio::test]
    async fn a_paced_connection_sends_at_its_rate() {
        // 400 kB at 1 MB/s: 0.4 s (less the bucket's first few kB)
        let paced = send_secs(400_000, Some(1_000_000.0)).await;
        assert!((0.35..1.5).contains(&paced), "{paced} s");
        // the same connection without a rate is quinn's alone
        let free = send_secs(400_000, None).await;
        assert!(free < 0.2, "{free} s");
    }
}
