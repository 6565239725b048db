//! One uplink's supervisor: keeps a QUIC connection (HTTP/3) to the relay up over one
//! interface or source address, says hello (session and path id) on every new connection,
//! and reconnects with backoff when the connection closes. The session outlives its
//! connections: the relay joins every connection that says the same session id and shows
//! the same client certificate.

use crate::config::BindTo;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn, Instrument};
use tunnel::path::LinkKind;
use tunnel::wire;
use tunnel_io::probe::Echoes;

/// A handle to open HTTP/3 requests on a connection.
pub type Sender = h3::client::SendRequest<tunnel_io::quic::OpenStreams, Bytes>;

/// A live connection of an uplink.
pub struct Live {
    /// Opens requests.
    pub sender: Sender,
    /// The QUIC connection (statistics, close).
    pub conn: quinn::Connection,
    /// Round-trip proofs from the probe task.
    pub echoes: Arc<Echoes>,
    /// Counts connections of this uplink, from 1.
    pub generation: u64,
    /// Restarts the connection's search for the path's rate.
    pub restart: Arc<tunnel::congestion::Restart>,
    /// The collapses of the link its congestion controller found.
    pub collapse: Arc<tunnel::congestion::Collapse>,
    /// The bytes the relay acknowledged, if its congestion controller counts them.
    pub delivered: Option<Arc<tunnel::congestion::Delivered>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // the last holder gone (replaced, or a losing attempt): do not leave the connection
        // and its probe task running
        self.conn.close(0u32.into(), b"connection replaced");
    }
}

/// Closes a connection that is dropped before it was handed over (an attempt that lost or
/// was aborted).
struct CloseUnlessKept(Option<quinn::Connection>);

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.close(0u32.into(), b"attempt abandoned");
        }
    }
}

/// What the bond sees of the uplink's connection.
#[derive(Clone, Default)]
pub enum UplinkState {
    /// Not connected (yet, or again).
    #[default]
    Down,
    /// Connected and greeted: requests can be opened.
    Up(Arc<Live>),
}

/// Supervisor of one uplink's connection to the relay.
#[derive(Clone)]
pub struct Uplink {
    state: watch::Receiver<UplinkState>,
}

/// The session this gateway's connections belong to, and this uplink's place in it.
#[derive(Debug, Clone)]
pub struct Hello {
    /// Session id (random per gateway start).
    pub session: u128,
    /// Path id (the uplink's index).
    pub path: usize,
    /// Uplink name.
    pub name: String,
    /// Link kind.
    pub kind: LinkKind,
    /// The download rate the relay may resume from on a new connection, bytes per second
    /// (0: none), kept current by the bond (`PathEstimate::resume_down_rate`).
    pub resume_down: Arc<AtomicU64>,
}

/// Where and how the uplink connects.
pub struct UplinkSettings {
    /// Relay address (`host:port`).
    pub relay_addr: String,
    /// Relay TLS name.
    pub server_name: String,
    /// Interface or local address.
    pub bind: BindTo,
    /// quinn client config (TLS; the transport is set per connection).
    pub client: quinn::ClientConfig,
    /// Transport settings (a fresh config and queue signal per connection).
    pub transport: tunnel_io::TransportSettings,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Session hello.
    pub hello: Hello,
    /// Where its UDP socket comes from.
    pub sockets: Arc<dyn crate::sockets::UplinkSockets>,
}

impl Uplink {
    /// Starts the supervisor task.
    pub fn start(settings: UplinkSettings) -> Self {
        let (tx, rx) = watch::channel(UplinkState::Down);
        let span = tracing::info_span!("uplink", name = %settings.hello.name);
        tokio::spawn(supervise(Arc::new(settings), tx).instrument(span));
        Self { state: rx }
    }

    /// The current state.
    pub fn state(&self) -> UplinkState {
        self.state.borrow().clone()
    }

    /// Whether a connection to the relay is up now.
    pub fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), UplinkState::Up(..))
    }

    /// A receiver of state changes.
    pub fn watch(&self) -> watch::Receiver<UplinkState> {
        self.state.clone()
    }
}

async fn supervise(s: Arc<UplinkSettings>, tx: watch::Sender<UplinkState>) {
    let mut generation = 0u64;
    // the handshake's first retransmission comes after 3 × initial RTT: start from the
    // path's last RTT so a returning link is found quickly
    let mut last_rtt = Duration::from_millis(100);
    loop {
        let (live, mut driver) = match establish(&s, &tx, last_rtt, generation + 1).await {
            Some(c) => c,
            None => return, // nobody listens any more
        };
        generation += 1;
        last_rtt = live
            .conn
            .rtt()
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        info!(
            rtt_ms = live.conn.rtt().as_millis() as u64,
            generation, "connected to the relay"
        );
        let conn = live.conn.clone();
        let _ = tx.send(UplinkState::Up(Arc::new(live)));
        let err = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        let _ = tx.send(UplinkState::Down);
        conn.close(0u32.into(), b"h3 closed");
        warn!(reason = %err, "connection to the relay closed");
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(s.backoff_min).await;
    }
}

/// Connects, with attempts overlapping: a new attempt starts every backoff interval (100 ms
/// doubling to `backoff_max`; after a minute without success up to ten times that) while
/// earlier ones still wait for an answer (each lives a few round trips; at most three are
/// out, and none starts while one has heard from the relay, see [`next_attempt`]). A link
/// that comes back is found within one interval, not after a stale attempt's backed-off
/// retransmissions; an interface that gets its carrier back is tried at once.
async fn establish(
    s: &Arc<UplinkSettings>,
    tx: &watch::Sender<UplinkState>,
    last_rtt: Duration,
    generation: u64,
) -> Option<(Live, Driver)> {
    let started = tokio::time::Instant::now();
    let mut backoff = s.backoff_min;
    let mut attempts = tokio::task::JoinSet::new();
    let mut handles = std::collections::VecDeque::new();
    let mut last_error = String::new();
    let mut last_log = started;
    let mut had_carrier = carrier(&s.bind);
    // a handshake, the HTTP/3 setup and the hello take about three round trips
    let lifetime = (last_rtt * 8).max(Duration::from_secs(2));
    loop {
        if tx.is_closed() {
            return None;
        }
        if carrier(&s.bind) == Some(false) {
            // Nothing is sent while the interface has no carrier: each attempt would leave
            // the kernel resolving the relay's next hop (ARP retries once a second), and
            // the link's return would wait for that retry. With nothing sent, the first
            // packet after the carrier returns asks for the next hop at once.
            attempts.abort_all();
            handles.clear();
            info!("no carrier: waiting for it");
            while carrier(&s.bind) == Some(false) {
                if tx.is_closed() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            info!("carrier is back: trying now");
            had_carrier = Some(true);
            backoff = s.backoff_min;
        }
        let out: Vec<(bool, Duration)> = handles
            .iter()
            .map(|(_, a, at): &(_, Arc<AtomicBool>, tokio::time::Instant)| {
                (a.load(Ordering::Relaxed), at.elapsed())
            })
            .collect();
        if let NextAttempt::Start(gives_way) = next_attempt(&out, answer_within(last_rtt)) {
            if let Some((h, _, _)) = gives_way.and_then(|i| handles.remove(i)) {
                tokio::task::AbortHandle::abort(&h);
            }
            let s2 = s.clone();
            let answered = Arc::new(AtomicBool::new(false));
            let a2 = answered.clone();
            let h = attempts.spawn(async move {
                match tokio::time::timeout(lifetime, connect(&s2, last_rtt, generation, &a2)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer in {} ms", lifetime.as_millis())),
                }
            });
            handles.push_back((h, answered, tokio::time::Instant::now()));
        }
        let next = tokio::time::Instant::now() + backoff;
        loop {
            let poll = tokio::time::Instant::now() + Duration::from_millis(50);
            tokio::select! {
                r = attempts.join_next(), if !attempts.is_empty() => match r {
                    Some(Ok(Ok(c))) => {
                        attempts.abort_all();
                        return Some(c);
                    }
                    Some(Ok(Err(e))) if e != last_error || last_log.elapsed() > Duration::from_secs(10) => {
                        warn!(error = %e, "cannot reach the relay; retrying");
                        last_log = tokio::time::Instant::now();
                        last_error = e;
                    }
                    _ => {}
                },
                _ = tokio::time::sleep_until(next.min(poll)) => {
                    if tokio::time::Instant::now() >= next {
                        break;
                    }
                    let now_carrier = carrier(&s.bind);
                    if now_carrier == Some(true) && had_carrier == Some(false) {
                        info!("carrier is back: trying now");
                        had_carrier = now_carrier;
                        backoff = s.backoff_min;
                        break;
                    }
                    had_carrier = now_carrier;
                }
            }
        }
        handles.retain(|(h, _, _)| !h.is_finished());
        let cap = if started.elapsed() > Duration::from_secs(60) {
            s.backoff_max * 10
        } else {
            s.backoff_max
        };
        backoff = (backoff * 2).min(cap);
    }
}

/// Attempts that may be out at once.
const ATTEMPTS_OUT: usize = 3;

/// What the next interval does.
#[derive(Debug, PartialEq, Eq)]
enum NextAttempt {
    /// A new attempt starts, the one at this index (oldest first) giving way first.
    Start(Option<usize>),
    /// None starts.
    Wait,
}

/// How long an attempt is given to hear the relay's first answer before a newer one may
/// take its place: two round trips of the link, at least 200 ms.
fn answer_within(last_rtt: Duration) -> Duration {
    (last_rtt * 2).max(Duration::from_millis(200))
}

/// What the next interval does with the attempts out (oldest first: whether each has had
/// the relay's first answer, and its age). None starts while one has heard from the relay:
/// it is in its setup on a live link, and more attempts would only load the relay. Up to
/// [`ATTEMPTS_OUT`] are out; then the oldest gives way to a new one once it is
/// `answer_within` old, else none starts. Measured before: with attempts every 250 ms and
/// the oldest giving way whatever its age, a satellite's (600 ms round trips) were each
/// cut short at about 750 ms, and it stayed unconnected for the first minute.
fn next_attempt(out: &[(bool, Duration)], answer_within: Duration) -> NextAttempt {
    if out.iter().any(|(answered, _)| *answered) {
        return NextAttempt::Wait;
    }
    if out.len() < ATTEMPTS_OUT {
        return NextAttempt::Start(None);
    }
    match out.first() {
        Some((_, age)) if *age >= answer_within => NextAttempt::Start(Some(0)),
        _ => NextAttempt::Wait,
    }
}

/// Whether a bound interface has its carrier (None: bound by address, or unknown).
fn carrier(bind: &BindTo) -> Option<bool> {
    let BindTo::Device(dev) = bind else {
        return None;
    };
    std::fs::read_to_string(format!("/sys/class/net/{dev}/carrier"))
        .ok()
        .map(|c| c.trim() == "1")
}

type Driver = h3::client::Connection<tunnel_io::quic::Connection, Bytes>;

/// One attempt at a connection; `answered` is set once the relay's first flight came.
async fn connect(
    s: &UplinkSettings,
    last_rtt: Duration,
    generation: u64,
    answered: &AtomicBool,
) -> Result<(Live, Driver), String> {
    let want_v4 = match &s.bind {
        BindTo::Addr(a) => Some(a.is_ipv4()),
        BindTo::Device(_) => None,
    };
    // the relay's addresses of the bind address's family (localhost may resolve to ::1 first)
    let addr = tokio::net::lookup_host(&s.relay_addr)
        .await
        .map_err(|e| format!("resolve {}: {e}", s.relay_addr))?
        .find(|a| want_v4.is_none_or(|v4| a.is_ipv4() == v4))
        .ok_or_else(|| format!("{} has no address of the uplink's family", s.relay_addr))?;
    let sock = s
        .sockets
        .socket(&s.hello.name, &s.bind, addr)
        .map_err(|e| e.to_string())?;
    let runtime = quinn::default_runtime().ok_or("no async runtime")?;
    // packets leave one by one at the controller's rate, not in quinn's bursts of ten
    let sock = tunnel_io::PacedSocket::new(sock);
    let transport = s.transport.quinn_for_connection_with_rtt(last_rtt);
    sock.pace(addr, &transport.pace);
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        tunnel_io::transport::endpoint_config(tunnel_io::transport::GATEWAY_CID_LEN),
        None,
        sock,
        runtime,
    )
    .map_err(|e| e.to_string())?;
    let mut client = s.client.clone();
    client.transport_config(transport.config);
    let mut connecting = endpoint
        .connect_with(client, addr, &s.server_name)
        .map_err(|e| e.to_string())?;
    if connecting.handshake_data().await.is_ok() {
        answered.store(true, Ordering::Relaxed);
    }
    let conn = connecting.await.map_err(|e| e.to_string())?;
    let mut guard = CloseUnlessKept(Some(conn.clone()));
    let echoes = Arc::new(Echoes::default());
    tokio::spawn(tunnel_io::probe::run(
        conn.clone(),
        transport.signal,
        true,
        Some(echoes.clone()),
    ));
    let (driver, mut sender) = h3::client::new(tunnel_io::quic::Connection::new(
        conn.clone(),
        s.transport.small_first,
    ))
    .await
    .map_err(|e| e.to_string())?;
    hello(&mut sender, &s.hello).await?;
    guard.0 = None;
    Ok((
        Live {
            sender,
            conn,
            echoes,
            generation,
            restart: transport.restart,
            collapse: transport.collapse,
            delivered: transport.delivered,
        },
        driver,
    ))
}

/// Joins the connection to the gateway's session at the relay.
async fn hello(sender: &mut Sender, h: &Hello) -> Result<(), String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{}/hello", wire::SESSION_AUTHORITY))
        .header(wire::HDR_SESSION, format!("{:032x}", h.session))
        .header(wire::HDR_PATH, h.path.to_string())
        .header(wire::HDR_PATH_NAME, h.name.as_str())
        .header(wire::HDR_LINK_KIND, h.kind.as_str());
    let req = match h.resume_down.load(Ordering::Relaxed) {
        0 => req,
        rate => req.header(wire::HDR_RESUME_DOWN, wire::resume_down_header(rate as f64)),
    }
    .body(())
    .map_err(|e| e.to_string())?;
    let mut stream = sender
        .send_request(req)
        .await
        .map_err(|e| format!("hello: {e}"))?;
    stream.finish().await.map_err(|e| format!("hello: {e}"))?;
    let resp = stream
        .recv_response()
        .await
        .map_err(|e| format!("hello: {e}"))?;
    while let Ok(Some(_)) = stream.recv_data().await {}
    if resp.status() != StatusCode::OK {
        let reason = wire::reason_of(resp.headers()).unwrap_or("").to_string();
        return Err(format!(
            "the relay refused the session: {} {reason}",
            resp.status()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_give_way_only_unanswered_and_after_two_round_trips() {
        let ms = Duration::from_millis;
        let within = answer_within(ms(55));
        assert_eq!(within, ms(200), "the floor");
        assert_eq!(next_attempt(&[], within), NextAttempt::Start(None));
        let young = (false, ms(100));
        let old = (false, ms(750));
        assert_eq!(
            next_attempt(&[old, young], within),
            NextAttempt::Start(None)
        );
        // three out: the oldest gives way once it had its time to hear an answer
        assert_eq!(
            next_attempt(&[old, young, young], within),
            NextAttempt::Start(Some(0))
        );
        assert_eq!(
            next_attempt(&[young, young, young], within),
            NextAttempt::Wait
        );
        // a satellite: 600 ms round trips give each attempt 1.2 s
        let sat = answer_within(ms(600));
        assert_eq!(next_attempt(&[old, young, young], sat), NextAttempt::Wait);
        // one in its setup on a live link: none starts, none gives way
        let answered = (true, ms(900));
        assert_eq!(next_attempt(&[answered], within), NextAttempt::Wait);
        assert_eq!(
            next_attempt(&[old, answered, young], within),
            NextAttempt::Wait
        );
    }
}
