//! The emulator's in-memory shell: a network of UDP sockets inside the process, for the
//! in-process harness. Sockets bound on an emulated link reach every other socket through
//! that link's model (up towards the relay, down back); the others (the relay's) reach
//! each other directly. Every delay comes from the model on tokio's clock, so a test on a
//! paused runtime runs the whole tunnel (quinn, probes, bond, relay) in simulated time:
//! seconds of link cuts in milliseconds, no root, no kernel.

use super::forwarder::{spawn_model, LinkEmulator, Pkt, Shared};
use super::profile::LinkProfile;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use tokio::sync::mpsc;

/// The first port a socket bound to port 0 gets.
const FIRST_PORT: u16 = 40000;

/// Datagrams a socket holds unread before it drops new ones (a kernel's receive buffer).
const INBOX: usize = 4096;

/// A network of in-memory UDP sockets and emulated links.
#[derive(Clone, Default)]
pub struct VirtualNet(Arc<Net>);

#[derive(Default)]
struct Net {
    sockets: Mutex<HashMap<SocketAddr, Weak<VirtualSocket>>>,
    /// Stream listeners (the relay's origins), by address.
    listeners: Mutex<HashMap<SocketAddr, mpsc::Sender<tokio::io::DuplexStream>>>,
    /// The next port a socket bound to port 0 tries (ports are not reused at once, as a
    /// kernel's ephemeral ports are not: a reconnecting uplink must not get datagrams
    /// still on their way to its last connection).
    next_port: std::sync::atomic::AtomicU16,
}

/// Bytes an in-memory stream buffers each way (a socket's buffers).
const STREAM_BUFFER: usize = 256 * 1024;

/// Streams dialed to an address of a [`VirtualNet`] (see [`VirtualNet::listen`]).
pub struct VirtualListener(mpsc::Receiver<tokio::io::DuplexStream>);

impl VirtualListener {
    /// The next stream dialed to this listener (None once every handle of the network is
    /// gone).
    pub async fn accept(&mut self) -> Option<tokio::io::DuplexStream> {
        self.0.recv().await
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Net {
    /// Hands `data` from `from` to the socket at `to`, if there is one (else it is lost,
    /// as a datagram to a closed port is).
    fn deliver(&self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let socket = lock(&self.sockets).get(&to).and_then(Weak::upgrade);
        if let Some(s) = socket {
            s.receive(from, data);
        }
    }

    fn socket(&self, addr: SocketAddr) -> Option<Arc<VirtualSocket>> {
        lock(&self.sockets).get(&addr).and_then(Weak::upgrade)
    }
}

/// Where sockets bind on one emulated link of a [`VirtualNet`] (see [`VirtualNet::link`]).
#[derive(Clone)]
pub struct LinkPort(Arc<Route>);

/// The flows through one link, both ways, by the id their packets carry in the model.
struct Route {
    up: mpsc::Sender<Pkt>,
    down: mpsc::Sender<Pkt>,
    shared: Arc<Shared>,
    flows: Mutex<Flows>,
}

#[derive(Default)]
struct Flows {
    ids: HashMap<(SocketAddr, SocketAddr), u32>,
    ends: Vec<(SocketAddr, SocketAddr)>,
}

impl Route {
    fn flow(&self, from: SocketAddr, to: SocketAddr) -> u32 {
        let mut f = lock(&self.flows);
        if let Some(id) = f.ids.get(&(from, to)) {
            return *id;
        }
        let id = f.ends.len() as u32;
        f.ends.push((from, to));
        f.ids.insert((from, to), id);
        id
    }

    fn ends(&self, id: u32) -> Option<(SocketAddr, SocketAddr)> {
        lock(&self.flows).ends.get(id as usize).copied()
    }

    /// Sends `data` into the model, `up` (from a socket on the link) or down (to one).
    fn send(&self, up: bool, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let counters = if up {
            &self.shared.up
        } else {
            &self.shared.down
        };
        counters.packets_in.fetch_add(1, Ordering::Relaxed);
        let pkt = Pkt {
            flow: self.flow(from, to),
            data,
            at: tunnel_io::clock::now(),
        };
        let tx = if up { &self.up } else { &self.down };
        if tx.try_send(pkt).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl VirtualNet {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new emulated link with `profile`: its controls and counters (outage, profile,
    /// stats, as for the other shells), and the port sockets bind on.
    pub fn link(&self, profile: LinkProfile) -> (LinkEmulator, LinkPort) {
        let shared = Shared::new();
        // the model's output reaches the flow's far end
        let route_slot: Arc<Mutex<Weak<Route>>> = Arc::default();
        let out = |net: Arc<Net>, slot: Arc<Mutex<Weak<Route>>>| {
            move |p: Pkt| {
                let route = lock(&slot).upgrade();
                if let Some((from, to)) = route.and_then(|r| r.ends(p.flow)) {
                    net.deliver(from, to, p.data);
                }
            }
        };
        let (profile_tx, up, down, tasks) = spawn_model(
            &shared,
            profile,
            out(self.0.clone(), route_slot.clone()),
            out(self.0.clone(), route_slot.clone()),
        );
        let route = Arc::new(Route {
            up,
            down,
            shared: shared.clone(),
            flows: Mutex::default(),
        });
        *lock(&route_slot) = Arc::downgrade(&route);
        let emulator = LinkEmulator {
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            shared,
            profile: profile_tx,
            tasks,
        };
        (emulator, LinkPort(route))
    }

    /// Listens for streams at `addr` (an origin beside the relay: no link between).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<VirtualListener> {
        let mut listeners = lock(&self.0.listeners);
        listeners.retain(|_, tx| !tx.is_closed());
        if listeners.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, addr.to_string()));
        }
        let (tx, rx) = mpsc::channel(64);
        listeners.insert(addr, tx);
        Ok(VirtualListener(rx))
    }

    /// A stream to the listener at `addr`.
    pub async fn dial(&self, addr: SocketAddr) -> io::Result<tokio::io::DuplexStream> {
        let tx = lock(&self.0.listeners).get(&addr).cloned();
        let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, addr.to_string());
        let tx = tx.ok_or_else(refused)?;
        let (near, far) = tokio::io::duplex(STREAM_BUFFER);
        tx.send(far).await.map_err(|_| refused())?;
        Ok(near)
    }

    /// A socket at `addr`, reached directly (the relay's side of every link). Port 0
    /// picks a free one.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<Arc<VirtualSocket>> {
        self.bind_with(addr, None)
    }

    /// A socket at `addr` whose datagrams go through `link` both ways (an uplink's).
    pub fn bind_on(&self, link: &LinkPort, addr: SocketAddr) -> io::Result<Arc<VirtualSocket>> {
        self.bind_with(addr, Some(link.0.clone()))
    }

    fn bind_with(
        &self,
        addr: SocketAddr,
        link: Option<Arc<Route>>,
    ) -> io::Result<Arc<VirtualSocket>> {
        let mut sockets = lock(&self.0.sockets);
        sockets.retain(|_, s| s.strong_count() > 0);
        let addr = if addr.port() == 0 {
            (0..=u16::MAX - FIRST_PORT)
                .map(|_| {
                    let n = self.0.next_port.fetch_add(1, Ordering::Relaxed);
                    SocketAddr::new(addr.ip(), FIRST_PORT + n % (u16::MAX - FIRST_PORT))
                })
                .find(|a| !sockets.contains_key(a))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free port"))?
        } else if sockets.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, addr.to_string()));
        } else {
            addr
        };
        let socket = Arc::new(VirtualSocket {
            addr,
            net: self.0.clone(),
            link,
            inbox: Mutex::default(),
        });
        sockets.insert(addr, Arc::downgrade(&socket));
        Ok(socket)
    }
}

impl ingest_relay::OriginDialer for VirtualNet {
    fn dial(&self, addr: SocketAddr) -> ingest_relay::Dialing<'_> {
        Box::pin(async move {
            let s = VirtualNet::dial(self, addr).await?;
            Ok(Box::new(s) as Box<dyn ingest_relay::OriginIo>)
        })
    }
}

/// A UDP socket of a [`VirtualNet`], for quinn (`Endpoint::new_with_abstract_socket`).
pub struct VirtualSocket {
    addr: SocketAddr,
    net: Arc<Net>,
    /// The link its datagrams cross, if it is bound on one.
    link: Option<Arc<Route>>,
    inbox: Mutex<Inbox>,
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

impl fmt::Debug for VirtualSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualSocket")
            .field("addr", &self.addr)
            .field("on_link", &self.link.is_some())
            .finish()
    }
}

impl VirtualSocket {
    fn receive(&self, from: SocketAddr, data: Vec<u8>) {
        let mut inbox = lock(&self.inbox);
        if inbox.queue.len() >= INBOX {
            return;
        }
        inbox.queue.push_back((from, data));
        if let Some(w) = inbox.waker.take() {
            w.wake();
        }
    }

    /// Sends one datagram to `to`, through whichever link lies between.
    fn send_to(&self, to: SocketAddr, data: Vec<u8>) {
        if let Some(link) = &self.link {
            return link.send(true, self.addr, to, data);
        }
        match self.net.socket(to).and_then(|s| s.link.clone()) {
            Some(link) => link.send(false, self.addr, to, data),
            None => self.net.deliver(self.addr, to, data),
        }
    }
}

/// Always writable: a full link queue drops, as a bottleneck does.
#[derive(Debug)]
struct Writable;

impl quinn::UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl quinn::AsyncUdpSocket for VirtualSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable)
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        match transmit.segment_size {
            Some(size) if size > 0 => {
                for d in transmit.contents.chunks(size) {
                    self.send_to(transmit.destination, d.to_vec());
                }
            }
            _ => self.send_to(transmit.destination, transmit.contents.to_vec()),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = lock(&self.inbox);
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = inbox.queue.pop_front() else {
                break;
            };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            meta[n] = quinn::udp::RecvMeta {
                addr: from,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(self.addr.ip()),
            };
            n += 1;
        }
        if n > 0 {
            return Poll::Ready(Ok(n));
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

impl Drop for VirtualSocket {
    fn drop(&mut self) {
        let mut sockets = lock(&self.net.sockets);
        if sockets
            .get(&self.addr)
            .is_some_and(|w| w.strong_count() == 0)
        {
            sockets.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::AsyncUdpSocket;
    use std::time::Duration;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    async fn recv(s: &VirtualSocket) -> (SocketAddr, Vec<u8>) {
        std::future::poll_fn(|cx| {
            let mut buf = [0u8; 2048];
            let mut bufs = [IoSliceMut::new(&mut buf)];
            let mut meta = [quinn::udp::RecvMeta::default()];
            match s.poll_recv(cx, &mut bufs, &mut meta) {
                Poll::Ready(Ok(_)) => Poll::Ready((meta[0].addr, buf[..meta[0].len].to_vec())),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn send(s: &VirtualSocket, to: SocketAddr, data: &[u8]) {
        let t = quinn::udp::Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip: None,
        };
        s.try_send(&t).expect("send");
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_delays_both_ways_and_an_outage_drops() {
        let net = VirtualNet::new();
        let (link, port) = net.link(LinkProfile::symmetric("l", 0, 25, 100));
        let relay = net.bind(addr("10.200.100.1:4433")).expect("relay");
        let venue = net.bind_on(&port, addr("10.200.1.2:0")).expect("venue");
        let t0 = tokio::time::Instant::now();
        send(&venue, relay.local_addr().expect("addr"), b"ping");
        let (from, data) = recv(&relay).await;
        assert_eq!(
            (from, data.as_slice()),
            (venue.local_addr().expect("addr"), &b"ping"[..])
        );
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(25),
            "one way, on the model's clock"
        );
        send(&relay, from, b"pong");
        assert_eq!(recv(&venue).await.1, b"pong");
        assert_eq!(t0.elapsed(), Duration::from_millis(50));

        link.set_outage(true);
        send(&venue, relay.local_addr().expect("addr"), b"lost");
        let got = tokio::time::timeout(Duration::from_secs(1), recv(&relay)).await;
        assert!(got.is_err(), "nothing crosses a link in an outage");
        assert_eq!(link.stats().up_dropped, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sockets_off_links_talk_directly_and_ports_are_not_shared() {
        let net = VirtualNet::new();
        let a = net.bind(addr("127.0.0.1:5000")).expect("a");
        assert!(net.bind(addr("127.0.0.1:5000")).is_err(), "port taken");
        let b = net.bind(addr("127.0.0.1:0")).expect("b");
        let t0 = tokio::time::Instant::now();
        send(&b, a.local_addr().expect("addr"), b"hi");
        assert_eq!(recv(&a).await.1, b"hi");
        assert_eq!(t0.elapsed(), Duration::ZERO);
        drop(a);
        assert!(
            net.bind(addr("127.0.0.1:5000")).is_ok(),
            "freed when dropped"
        );
        let port = b.local_addr().expect("addr").port();
        drop(b);
        let c = net.bind(addr("127.0.0.1:0")).expect("c");
        assert_ne!(
            c.local_addr().expect("addr").port(),
            port,
            "not reused at once"
        );
    }
}
