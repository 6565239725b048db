//! The emulator's I/O shell: one UDP socket facing clients, one upstream socket per client
//! flow, and a task per direction that feeds packets through the link model.

use super::profile::LinkProfile;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use str0m_netem::{Input, Netem, NetemConfig, Output};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// A packet of one flow.
#[derive(Clone)]
pub(super) struct Pkt {
    pub(super) flow: u32,
    pub(super) data: Vec<u8>,
    /// When it entered the emulator.
    pub(super) at: Instant,
}

impl AsRef<[u8]> for Pkt {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub(super) struct DirCounters {
    pub(super) packets_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// Sum of the time delivered packets spent in the emulator, microseconds.
    sojourn_us: AtomicU64,
}

/// Snapshot of the emulator's counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LinkStats {
    /// Packets entering, venue to relay.
    pub up_in: u64,
    /// Packets delivered, venue to relay.
    pub up_out: u64,
    /// Bytes delivered, venue to relay.
    pub up_bytes: u64,
    /// Packets dropped (loss, full queue, outage), venue to relay.
    pub up_dropped: u64,
    /// Packets entering, relay to venue.
    pub down_in: u64,
    /// Packets delivered, relay to venue.
    pub down_out: u64,
    /// Bytes delivered, relay to venue.
    pub down_bytes: u64,
    /// Packets dropped, relay to venue.
    pub down_dropped: u64,
    /// Total time delivered packets spent in the emulator (latency plus queueing), venue
    /// to relay, microseconds; divide by `up_out` for the mean.
    pub up_sojourn_us: u64,
    /// The same, relay to venue.
    pub down_sojourn_us: u64,
}

impl LinkStats {
    /// Mean one-way delay (ms) of packets delivered between two snapshots, per direction.
    pub fn mean_delay_ms_since(&self, earlier: &LinkStats) -> (f64, f64) {
        let f = |us: u64, n: u64| {
            if n == 0 {
                f64::NAN
            } else {
                us as f64 / n as f64 / 1000.0
            }
        };
        (
            f(
                self.up_sojourn_us.saturating_sub(earlier.up_sojourn_us),
                self.up_out.saturating_sub(earlier.up_out),
            ),
            f(
                self.down_sojourn_us.saturating_sub(earlier.down_sojourn_us),
                self.down_out.saturating_sub(earlier.down_out),
            ),
        )
    }
}

pub(super) struct Shared {
    outage: AtomicBool,
    pub(super) up: DirCounters,
    pub(super) down: DirCounters,
    flows: Mutex<HashMap<u32, Flow>>,
}

#[derive(Clone)]
struct Flow {
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            outage: AtomicBool::new(false),
            up: DirCounters::default(),
            down: DirCounters::default(),
            flows: Mutex::new(HashMap::new()),
        })
    }
}

pub(super) type ModelHandles = (
    watch::Sender<LinkProfile>,
    mpsc::Sender<Pkt>,
    mpsc::Sender<Pkt>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// The link model of both directions, whatever the shell: packets sent into the returned
/// up/down senders leave through `up_out`/`down_out` after the model. Returns the profile
/// switch, the two senders and the two tasks.
pub(super) fn spawn_model<U, D>(
    shared: &Arc<Shared>,
    profile: LinkProfile,
    up_out: U,
    down_out: D,
) -> ModelHandles
where
    U: FnMut(Pkt) + Send + 'static,
    D: FnMut(Pkt) + Send + 'static,
{
    let (profile_tx, profile_rx) = watch::channel(profile);
    let (up_tx, up_rx) = mpsc::channel::<Pkt>(8192);
    let (down_tx, down_rx) = mpsc::channel::<Pkt>(8192);
    let tasks = vec![
        tokio::spawn(pipe(
            up_rx,
            profile_rx.clone(),
            true,
            shared.clone(),
            up_out,
        )),
        tokio::spawn(pipe(down_rx, profile_rx, false, shared.clone(), down_out)),
    ];
    (profile_tx, up_tx, down_tx, tasks)
}

/// A running emulated link. Dropping it stops forwarding.
pub struct LinkEmulator {
    pub(super) local: SocketAddr,
    pub(super) shared: Arc<Shared>,
    pub(super) profile: watch::Sender<LinkProfile>,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LinkEmulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LinkEmulator {
    /// Listens on `listen` and forwards every client flow to `target` through `profile`.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        profile: LinkProfile,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let local = socket.local_addr()?;
        let shared = Shared::new();
        let (s_up, s_down, out) = (shared.clone(), shared.clone(), socket.clone());
        let (profile_tx, up_tx, down_tx, mut tasks) = spawn_model(
            &shared,
            profile,
            // venue -> relay
            move |p: Pkt| {
                let flow = s_up.flows.lock().ok().and_then(|f| f.get(&p.flow).cloned());
                if let Some(flow) = flow {
                    let _ = flow.upstream.try_send(&p.data);
                }
            },
            // relay -> venue
            move |p: Pkt| {
                let flow = s_down
                    .flows
                    .lock()
                    .ok()
                    .and_then(|f| f.get(&p.flow).cloned());
                if let Some(flow) = flow {
                    let _ = out.try_send_to(&p.data, flow.client);
                }
            },
        );
        // clients -> flows
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut by_client: HashMap<SocketAddr, u32> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let flow = match by_client.get(&from) {
                    Some(f) => *f,
                    None => {
                        let id = by_client.len() as u32;
                        let bind: SocketAddr = if target.is_ipv4() {
                            "0.0.0.0:0"
                        } else {
                            "[::]:0"
                        }
                        .parse()
                        .unwrap_or(target);
                        let Ok(upstream) = UdpSocket::bind(bind).await else {
                            continue;
                        };
                        if upstream.connect(target).await.is_err() {
                            continue;
                        }
                        let upstream = Arc::new(upstream);
                        if let Ok(mut f) = s.flows.lock() {
                            f.insert(
                                id,
                                Flow {
                                    client: from,
                                    upstream: upstream.clone(),
                                },
                            );
                        }
                        tokio::spawn(read_upstream(upstream, id, down_tx.clone(), s.clone()));
                        by_client.insert(from, id);
                        id
                    }
                };
                s.up.packets_in.fetch_add(1, Ordering::Relaxed);
                if up_tx
                    .try_send(Pkt {
                        flow,
                        data: buf[..n].to_vec(),
                        at: tunnel_io::clock::now(),
                    })
                    .is_err()
                {
                    s.up.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        Ok(Self {
            local,
            shared,
            profile: profile_tx,
            tasks,
        })
    }

    /// A frame bridge between two interfaces (root only): every ethernet frame that
    /// arrives on `venue` goes out of `relay` through the link's `up` direction, and back
    /// through `down`. Used between network namespaces, where the kernel shapes rates
    /// (tc) and this adds latency, jitter, loss and outages. `local_addr` is unspecified.
    pub async fn start_bridge(
        venue: &str,
        relay: &str,
        profile: LinkProfile,
    ) -> std::io::Result<Self> {
        let a = Arc::new(rawlink::FrameSocket::open(venue)?);
        let b = Arc::new(rawlink::FrameSocket::open(relay)?);
        let shared = Shared::new();
        let (out_a, out_b) = (a.clone(), b.clone());
        let (profile_tx, up_tx, down_tx, mut tasks) = spawn_model(
            &shared,
            profile,
            move |p: Pkt| {
                let _ = out_b.try_send(&p.data);
            },
            move |p: Pkt| {
                let _ = out_a.try_send(&p.data);
            },
        );
        for (sock, other, tx, up) in [(a.clone(), b.clone(), up_tx, true), (b, a, down_tx, false)] {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                let counters = if up { &s.up } else { &s.down };
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match sock.recv(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(interface = sock.ifname(), error = %e, "frame socket failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    // ARP is the venue's own LAN, not the uplink: it passes a blackhole, so a
                    // link that comes back is not held up by neighbour resolution
                    if n >= 14 && buf[12..14] == [0x08, 0x06] {
                        let _ = other.try_send(&buf[..n]);
                        continue;
                    }
                    counters.packets_in.fetch_add(1, Ordering::Relaxed);
                    let pkt = Pkt {
                        flow: 0,
                        data: buf[..n].to_vec(),
                        at: tunnel_io::clock::now(),
                    };
                    if tx.try_send(pkt).is_err() {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        Ok(Self {
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            shared,
            profile: profile_tx,
            tasks,
        })
    }

    /// The current profile.
    pub fn profile(&self) -> LinkProfile {
        self.profile.borrow().clone()
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Cuts the link (every packet is dropped, also those in flight) or restores it.
    pub fn set_outage(&self, down: bool) {
        self.shared.outage.store(down, Ordering::Relaxed);
    }

    /// Whether the link is cut.
    pub fn outage(&self) -> bool {
        self.shared.outage.load(Ordering::Relaxed)
    }

    /// Changes the link model at run time; packets already queued keep their schedule.
    pub fn set_profile(&self, profile: LinkProfile) {
        let _ = self.profile.send(profile);
    }

    /// Current counters.
    pub fn stats(&self) -> LinkStats {
        let (u, d) = (&self.shared.up, &self.shared.down);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LinkStats {
            up_in: r(&u.packets_in),
            up_out: r(&u.packets_out),
            up_bytes: r(&u.bytes_out),
            up_dropped: r(&u.dropped),
            down_in: r(&d.packets_in),
            down_out: r(&d.packets_out),
            down_bytes: r(&d.bytes_out),
            down_dropped: r(&d.dropped),
            up_sojourn_us: r(&u.sojourn_us),
            down_sojourn_us: r(&d.sojourn_us),
        }
    }
}

async fn read_upstream(
    upstream: Arc<UdpSocket>,
    flow: u32,
    tx: mpsc::Sender<Pkt>,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(n) = upstream.recv(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        shared.down.packets_in.fetch_add(1, Ordering::Relaxed);
        if tx.is_closed() {
            return; // the emulator is gone
        }
        if tx
            .try_send(Pkt {
                flow,
                data: buf[..n].to_vec(),
                at: tunnel_io::clock::now(),
            })
            .is_err()
        {
            shared.down.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn config_of(profile: &LinkProfile, up: bool) -> NetemConfig {
    let seed = if up { 0x5eed_0001 } else { 0x5eed_0002 };
    if up {
        profile.up.netem(seed)
    } else {
        profile.down.netem(seed)
    }
}

/// Drives one direction: packets in from `rx`, through the model, out via `send`.
async fn pipe<F: FnMut(Pkt)>(
    mut rx: mpsc::Receiver<Pkt>,
    mut profile: watch::Receiver<LinkProfile>,
    up: bool,
    shared: Arc<Shared>,
    mut send: F,
) {
    let counters = if up { &shared.up } else { &shared.down };
    let mut netem: Netem<Pkt> = Netem::new(config_of(&profile.borrow_and_update(), up));
    loop {
        let deadline = netem
            .poll_timeout()
            .min(tunnel_io::clock::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            changed = profile.changed() => {
                if changed.is_err() { return; }
                netem.set_config(config_of(&profile.borrow_and_update(), up));
            }
            pkt = rx.recv() => {
                let Some(pkt) = pkt else { return };
                if shared.outage.load(Ordering::Relaxed) {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                } else {
                    let before = netem.queue_len();
                    netem.handle_input(Input::Packet(tunnel_io::clock::now(), pkt));
                    if netem.queue_len() == before {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                netem.handle_input(Input::Timeout(tunnel_io::clock::now()));
            }
        }
        let outage = shared.outage.load(Ordering::Relaxed);
        while let Some(out) = netem.poll_output() {
            if let Output::Packet(p) = out {
                if outage {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.packets_out.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_out
                    .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                counters.sojourn_us.fetch_add(
                    tunnel_io::clock::since(p.at).as_micros() as u64,
                    Ordering::Relaxed,
                );
                send(p);
            }
        }
    }
}
