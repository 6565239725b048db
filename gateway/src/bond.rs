//! The bond: every uplink at once. Holds one [`Uplink`] per configured uplink, feeds each
//! path's connection events, quinn's statistics and the bytes requests move into the
//! sans-IO estimate (`tunnel::path_estimate`: health, rates, queues, lost work), counts its
//! bytes against its cap, and places each request with the sans-IO scheduler
//! (`tunnel::scheduler`). What the estimate finds goes to logs, metrics and the path's
//! signal here.

use crate::config::{GatewayConfig, UplinkConfig};
use crate::uplink::{Hello, Live, Uplink, UplinkSettings, UplinkState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};
use tunnel::path::{CapState, DataCap, Health, HealthEvent, LinkKind, Tier};
use tunnel::path_estimate::{PathEstimate, SharedTrouble, TransportStats, TroubleWatch};
use tunnel::scheduler::{self, ClassSet, LossView, PathId, PathView, Placement, Scheduler, Unit};
use tunnel::spread;
use tunnel::stream_level::Measure;
use tunnel::TrafficClass;

/// How often each path's monitor runs.
const TICK: Duration = Duration::from_millis(10);
/// Bulk is held at the gateway until some path has less than this queued (late binding).
pub const PLACEMENT_HORIZON: Duration = Duration::from_millis(500);

/// What in-flight requests watch on their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathSignal {
    /// The path may carry new work.
    pub usable: bool,
    /// Work on the path is lost (silent or closed): abandon and re-send elsewhere.
    pub dead: bool,
}

/// One uplink inside the bond.
pub struct Path {
    /// Index in the bond.
    pub id: PathId,
    /// Configured name.
    pub name: String,
    /// Link kind.
    pub kind: LinkKind,
    /// Cost tier as configured.
    pub configured_tier: Tier,
    /// The tier a local action puts it in instead (`crate::actions`).
    tier_override: Mutex<Option<Tier>>,
    classes: ClassSet,
    uplink: Uplink,
    st: Mutex<PathState>,
    signal: watch::Sender<PathSignal>,
    /// Striped bodies whose primary path this is (see `crate::stripe`).
    pub stripes: std::sync::atomic::AtomicUsize,
    /// Bytes sent and received (goodput, all classes).
    pub bytes_up: AtomicU64,
    /// Bytes received.
    pub bytes_down: AtomicU64,
    /// What its next hello offers the relay to resume downloads from (see `Hello`).
    resume_down: Arc<AtomicU64>,
}

struct PathState {
    est: PathEstimate,
    cap: DataCap,
    cap_state: CapState,
    live: Option<Arc<Live>>,
}

/// UDP bytes a connection has sent and not declared lost.
fn tx_kept(s: &quinn::ConnectionStats) -> u64 {
    s.udp_tx.bytes.saturating_sub(s.path.lost_bytes)
}

impl PathState {
    /// UDP bytes the connection has sent so far and not declared lost
    /// (`TransportStats::tx_kept`).
    fn tx_kept(&self) -> u64 {
        self.live.as_ref().map_or(0, |l| tx_kept(&l.conn.stats()))
    }

    /// Body bytes handed to quinn and not sent yet.
    fn unsent(&self) -> u64 {
        self.est.unsent_at(self.tx_kept())
    }
}

/// A snapshot of one path for status lines.
#[derive(Debug, Clone)]
pub struct PathStatus {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: LinkKind,
    /// Tier.
    pub tier: Tier,
    /// Health.
    pub health: Health,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// Loss estimate.
    pub loss: f64,
    /// Goodput towards the relay, bits/s (last 250 ms).
    pub up_bps: f64,
    /// Goodput from the relay, bits/s.
    pub down_bps: f64,
    /// Demotions since start.
    pub demotions: u64,
    /// Cap state.
    pub cap: CapState,
    /// Cap use today, bytes.
    pub cap_used: u64,
    /// The daily cap, bytes; None without one.
    pub cap_bytes: Option<u64>,
    /// It may carry new work.
    pub usable: bool,
}

impl Path {
    fn new(
        id: PathId,
        cfg: &UplinkConfig,
        uplink: Uplink,
        cap: Option<u64>,
        resume_down: Arc<AtomicU64>,
    ) -> Self {
        let now = tunnel_io::clock::now();
        let (signal, _) = watch::channel(PathSignal {
            usable: false,
            dead: true,
        });
        Self {
            id,
            name: cfg.name.clone(),
            kind: cfg.kind,
            configured_tier: cfg.tier,
            tier_override: Mutex::new(None),
            classes: cfg.classes.as_deref().map_or(ClassSet::ALL, ClassSet::of),
            uplink,
            st: Mutex::new(PathState {
                est: PathEstimate::new(now),
                cap: DataCap::new(now, cap),
                cap_state: CapState::Normal,
                live: None,
            }),
            signal,
            stripes: std::sync::atomic::AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            resume_down,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PathState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its cost tier now: as configured, or as a local action set it.
    pub fn tier(&self) -> Tier {
        self.tier_override
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(self.configured_tier)
    }

    /// Puts the path in `tier` (None: back to its configured tier); true if that changed
    /// its tier.
    pub fn set_tier(&self, tier: Option<Tier>) -> bool {
        let before = self.tier();
        *self.tier_override.lock().unwrap_or_else(|p| p.into_inner()) = tier;
        self.tier() != before
    }

    /// The connection, if the path is usable.
    pub fn live(&self) -> Option<Arc<Live>> {
        let st = self.lock();
        st.est
            .health()
            .is_usable()
            .then(|| st.live.clone())
            .flatten()
    }

    /// The connection, whatever the health (for redundant copies of bids as a last resort).
    pub fn connected(&self) -> Option<Arc<Live>> {
        self.lock().live.clone()
    }

    /// A receiver of the path's signal.
    pub fn watch(&self) -> watch::Receiver<PathSignal> {
        self.signal.subscribe()
    }

    /// Whether the path may carry new work.
    pub fn is_usable(&self) -> bool {
        self.signal.borrow().usable
    }

    /// Whether work on the path is lost (silent or closed; see [`PathSignal`]).
    pub fn is_dead(&self) -> bool {
        self.signal.borrow().dead
    }

    /// The path's smoothed RTT.
    pub(crate) fn srtt(&self) -> Duration {
        self.lock().est.health().srtt()
    }

    fn view(&self) -> PathView {
        let mut st = self.lock();
        let now = tunnel_io::clock::now();
        let cap = st.cap.state(now);
        let tx_kept = st.tx_kept();
        PathView {
            id: self.id,
            usable: st.est.is_usable(),
            tier: self.tier(),
            classes: self.classes,
            cap,
            srtt: st.est.health().srtt(),
            rate_up: st.est.rate_up(),
            rate_down: st.est.rate_down(),
            queued_up: st.est.queued_up_at(tx_kept),
            queued_down: st.est.queued_down(),
            silent: st.est.health().excess_silence(now).unwrap_or_default(),
        }
    }

    /// Estimated rate towards the relay, bytes per second (congestion window over RTT).
    pub fn rate_up(&self) -> f64 {
        self.lock().est.rate_up()
    }

    /// Estimated rate from the relay, bytes per second (busy windows' goodput).
    pub fn rate_down(&self) -> f64 {
        self.lock().est.rate_down()
    }

    /// How long what is queued towards the relay on this path takes to leave: a request
    /// body handed to quinn is not sent yet, so response timeouts start after this.
    pub fn drain_time(&self) -> Duration {
        let (unsent, rate) = {
            let st = self.lock();
            (st.unsent(), st.est.rate_up())
        };
        Duration::from_secs_f64((unsent as f64 / rate.max(1.0)).min(600.0))
    }

    /// Status snapshot.
    pub fn status(&self) -> PathStatus {
        let mut st = self.lock();
        let now = tunnel_io::clock::now();
        PathStatus {
            name: self.name.clone(),
            kind: self.kind,
            tier: self.tier(),
            health: st.est.health().health(),
            srtt: st.est.health().srtt(),
            loss: st.est.health().loss(),
            up_bps: st.est.goodput().up * 8.0,
            down_bps: st.est.goodput().down * 8.0,
            demotions: st.est.health().demotions(),
            cap: st.cap.state(now),
            cap_used: st.cap.used(now),
            cap_bytes: st.cap.cap(),
            usable: self.is_usable(),
        }
    }

    /// Counts body bytes carried (for caps, goodput, queues).
    fn carried(&self, up: bool, bytes: u64, reserved: u64) {
        let now = tunnel_io::clock::now();
        let mut st = self.lock();
        st.est.carried(up, bytes, reserved);
        if up {
            self.bytes_up.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.bytes_down.fetch_add(bytes, Ordering::Relaxed);
        }
        let (state, changed) = st.cap.add(now, bytes);
        if changed {
            st.cap_state = state;
            match state {
                CapState::Warn => warn!(uplink = %self.name, "data cap: 75% used today"),
                CapState::Exhausted => warn!(
                    uplink = %self.name,
                    "data cap reached: only bids and check-ins use this uplink until the day rolls over"
                ),
                CapState::Normal => {}
            }
        }
    }

    /// Reserves declared bytes; the connection generation they go on.
    fn reserve(&self, up: u64, down: u64) -> u64 {
        self.lock().est.reserve(up, down)
    }

    /// A flow of connection `generation` that wrote `written` body bytes ended.
    fn retire(&self, generation: u64, written: u64) {
        self.lock().est.retire(generation, written);
    }

    fn release(&self, up: u64, down: u64) {
        self.lock().est.release(up, down);
    }

    /// One monitor step: the uplink's state and its connection's statistics into the
    /// estimate, with the best RTT another usable path offers (see
    /// `PathHealth::set_best_other`); what it found to logs, metrics and the path's signal.
    fn tick(&self, now: Instant, best_other: Option<Duration>) {
        let state = self.uplink.state();
        let mut st = self.lock();
        st.est.health_mut().set_best_other(best_other);
        match &state {
            UplinkState::Up(live) if live.generation != st.est.generation() => {
                st.est.on_connected(now, live.generation, live.conn.rtt());
                st.live = Some(live.clone());
                info!(uplink = %self.name, rtt_ms = live.conn.rtt().as_millis() as u64, "on probation");
            }
            UplinkState::Down if st.live.is_some() => {
                st.live = None;
                st.est.on_closed(now);
            }
            _ => {}
        }
        if let Some(rate) = st.live.as_ref().and_then(|l| l.collapse.take()) {
            debug!(uplink = %self.name, rate_mbps = rate * 8.0 / 1e6, "the link collapsed");
            st.est.on_collapse(now, rate);
        }
        let stats = st.live.as_ref().map(|live| {
            let s = live.conn.stats();
            TransportStats {
                tx_kept: tx_kept(&s),
                cwnd: s.path.cwnd,
                rtt: s.path.rtt,
                sent_packets: s.path.sent_packets,
                lost_packets: s.path.lost_packets,
                latest_echo: live.echoes.latest(),
                delivered: live.delivered.as_ref().map(|d| d.total()),
            }
        });
        if let Some(s) = &stats {
            tracing::trace!(uplink = %self.name, cwnd = s.cwnd, rtt_us = s.rtt.as_micros() as u64, lost = s.lost_packets, tx = s.tx_kept, unsent = st.est.unsent_at(s.tx_kept), queued = st.est.queued_up_at(s.tx_kept), "path stats");
        }
        let t = st.est.tick(now, stats.as_ref());
        let down = st.est.resume_down_rate(now).map_or(0, |r| r as u64);
        self.resume_down.store(down, Ordering::Relaxed);
        let live = st.live.clone();
        let close_after = st.est.health().close_after();
        if t.goodput.is_some() {
            let l = self.name.clone();
            let g = st.est.goodput();
            let h = st.est.health();
            metrics::gauge!("canopy_gateway_link_goodput_bits_per_second", "link" => l.clone(), "direction" => "up").set(g.up * 8.0);
            metrics::gauge!("canopy_gateway_link_goodput_bits_per_second", "link" => l.clone(), "direction" => "down").set(g.down * 8.0);
            metrics::gauge!("canopy_gateway_link_srtt_seconds", "link" => l.clone())
                .set(h.srtt().as_secs_f64());
            metrics::gauge!("canopy_gateway_link_loss_ratio", "link" => l.clone()).set(h.loss());
            metrics::gauge!("canopy_gateway_link_state", "link" => l.clone())
                .set(h.health().gauge());
            let used = st.cap.used(now);
            metrics::gauge!("canopy_gateway_link_cap_used_bytes", "link" => l.clone())
                .set(used as f64);
            if let Some(cap) = st.cap.cap() {
                metrics::gauge!("canopy_gateway_link_cap_bytes", "link" => l).set(cap as f64);
            }
        }
        drop(st);
        if let (Some(window), Some(live)) = (t.resume, &live) {
            // careful resume: the returning link's window starts near what it carried
            live.restart.resume(window);
            info!(uplink = %self.name, window, "resuming at half the link's earlier window");
        }
        for e in &t.events {
            match e {
                HealthEvent::Joined => info!(uplink = %self.name, "up: carrying traffic"),
                HealthEvent::Silent { silent_for } => {
                    warn!(uplink = %self.name, silent_ms = silent_for.as_millis() as u64, "down: no probe answer")
                }
                HealthEvent::Degraded { srtt } => {
                    warn!(uplink = %self.name, srtt_ms = srtt.as_millis() as u64, "demoted: RTT far above its minimum")
                }
                HealthEvent::Recovering { hold } => {
                    info!(uplink = %self.name, hold_ms = hold.as_millis() as u64, "answering again: on probation")
                }
                HealthEvent::Closed => warn!(uplink = %self.name, "connection closed"),
            }
        }
        if t.demoted > 0 {
            metrics::counter!("canopy_gateway_link_demotions_total", "link" => self.name.clone())
                .increment(t.demoted);
        }
        if t.reconnect {
            // a connection silent this long has its packets stuck behind QUIC's backed-off
            // timers: start afresh, so a returning link is found within the reconnect backoff
            if let Some(live) = &live {
                warn!(uplink = %self.name, "no answer for {} ms: reconnecting", close_after.as_millis());
                live.conn.close(0u32.into(), b"path silent");
            }
        }
        let sig = PathSignal {
            usable: t.usable,
            dead: t.dead,
        };
        self.signal.send_if_modified(|s| {
            let changed = *s != sig;
            *s = sig;
            changed
        });
    }
}

/// Resolves when the path's in-flight work is lost.
pub async fn until_dead(watch: &mut watch::Receiver<PathSignal>) {
    let _ = watch.wait_for(|s| s.dead).await;
}

/// Every uplink, bonded.
pub struct Bond {
    paths: Vec<Arc<Path>>,
    /// Moving average of bulk response sizes: what a download of unknown size reserves.
    typical_download: AtomicU64,
    policy: scheduler::Redundant<scheduler::MinCompletion>,
    /// This gateway run's session id.
    pub session: u128,
    /// The relay's wall clock as measured over the paths.
    pub clock: Arc<crate::clock::RelayClock>,
    /// Outages and collapses of every path, whose demotions are not flaps.
    trouble: Mutex<TroubleWatch>,
}

impl Bond {
    /// Starts one uplink per configured uplink (or the single default one) and their
    /// monitors; each uplink's sockets come from `sockets`.
    pub fn start(
        cfg: &GatewayConfig,
        client: quinn::ClientConfig,
        sockets: Arc<dyn crate::sockets::UplinkSockets>,
    ) -> Result<Arc<Self>, String> {
        let session = fastrand::u128(..);
        let mut paths = Vec::new();
        for (id, u) in cfg.effective_uplinks().iter().enumerate() {
            let bind = u.bind_to()?;
            let resume_down = Arc::new(AtomicU64::new(0));
            let uplink = Uplink::start(UplinkSettings {
                relay_addr: u.relay.clone().unwrap_or_else(|| cfg.relay.addr.clone()),
                server_name: cfg.relay.tls_name(),
                bind,
                client: client.clone(),
                transport: cfg.tunnel.clone(),
                backoff_min: Duration::from_millis(cfg.relay.reconnect_min_ms),
                backoff_max: Duration::from_millis(cfg.relay.reconnect_max_ms),
                hello: Hello {
                    session,
                    path: id,
                    name: u.name.clone(),
                    kind: u.kind,
                    resume_down: resume_down.clone(),
                },
                sockets: sockets.clone(),
            });
            paths.push(Arc::new(Path::new(
                id,
                u,
                uplink,
                u.cap_bytes_per_day,
                resume_down,
            )));
        }
        let bond = Arc::new(Self {
            paths,
            typical_download: AtomicU64::new(256 * 1024),
            policy: scheduler::default_policy(),
            session,
            clock: Arc::default(),
            trouble: Mutex::default(),
        });
        tokio::spawn(crate::clock::run(Arc::downgrade(&bond), bond.clock.clone()));
        let b = Arc::downgrade(&bond);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(b) = b.upgrade() else { return };
                let now = tunnel_io::clock::now();
                let was_usable: Vec<bool> = b.paths.iter().map(|p| p.is_usable()).collect();
                let srtts: Vec<Duration> = b.paths.iter().map(|p| p.srtt()).collect();
                for (i, p) in b.paths.iter().enumerate() {
                    let best = (0..b.paths.len())
                        .filter(|j| *j != i && was_usable[*j])
                        .map(|j| srtts[j])
                        .min();
                    p.tick(now, best);
                }
                b.take_over_from_lost(&was_usable);
                b.forgive_shared_trouble(now);
            }
        });
        Ok(bond)
    }

    /// A path that stopped being usable leaves its load to the others: those
    /// `tunnel::scheduler::take_over_from_lost` names search for their rate again.
    fn take_over_from_lost(&self, was_usable: &[bool]) {
        let usable: Vec<bool> = self.paths.iter().map(|p| p.is_usable()).collect();
        let was = |i: usize| was_usable.get(i) == Some(&true);
        // nothing lost (every tick): no path's state is locked
        if !usable.iter().enumerate().any(|(i, u)| was(i) && !u) {
            return;
        }
        let views: Vec<LossView> = self
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| LossView {
                was_usable: was(i),
                usable: usable[i],
                backup: p.tier() == Tier::Backup,
                at_peak: p.lock().est.carries_its_peak(),
            })
            .collect();
        for i in tunnel::scheduler::take_over_from_lost(&views) {
            if let Some(live) = &self.paths[i].lock().live {
                live.restart.request();
            }
        }
    }

    /// The demotions of an outage or a collapse of every uplink are not counted as links
    /// flapping (`tunnel::path_estimate::TroubleWatch`).
    /// Backup-tier paths are left out (unless there are only such): an idle satellite is
    /// never short of its peak, and the backoff is about the paths that carry the venue.
    fn forgive_shared_trouble(&self, now: Instant) {
        let mut regular: Vec<&Arc<Path>> = self
            .paths
            .iter()
            .filter(|p| p.tier() != Tier::Backup)
            .collect();
        if regular.is_empty() {
            regular = self.paths.iter().collect();
        }
        let mut guards: Vec<_> = regular.iter().map(|p| p.lock()).collect();
        let mut ests: Vec<&mut PathEstimate> = guards.iter_mut().map(|g| &mut g.est).collect();
        let watched = self
            .trouble
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .after_tick(&mut ests, now);
        let Some((trouble, forgiven)) = watched else {
            return;
        };
        drop(guards);
        for i in forgiven {
            let uplink = &regular[i].name;
            match trouble {
                SharedTrouble::Outage => info!(
                    %uplink,
                    "every uplink (backups aside) is down: not counted as this link flapping"
                ),
                SharedTrouble::Collapse => info!(
                    %uplink,
                    "every uplink (backups aside) was short of its capacity: not counted as this link flapping"
                ),
            }
        }
    }

    /// The paths.
    pub fn paths(&self) -> &[Arc<Path>] {
        &self.paths
    }

    /// What a download of unknown size is expected to bring (moving average of bulk
    /// response sizes), so downloads that start together spread over the paths.
    pub fn typical_download(&self) -> u64 {
        self.typical_download.load(Ordering::Relaxed)
    }

    /// Records a bulk response size.
    pub fn note_download(&self, n: u64) {
        let _ = self
            .typical_download
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some((v * 7 + n.min(64 << 20)) / 8)
            });
    }

    /// Whether any path carries traffic.
    pub fn any_usable(&self) -> bool {
        self.paths.iter().any(|p| p.is_usable())
    }

    /// Waits until every primary and secondary path carries traffic (backup paths are not
    /// waited for), or `timeout` passes; true if they all did.
    pub async fn wait_all_usable(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || {
            self.paths
                .iter()
                .filter(|p| p.configured_tier != Tier::Backup)
                .all(|p| p.is_usable())
        })
        .await
    }

    /// Waits until some path carries traffic, or `timeout` passes.
    pub async fn wait_usable(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || self.any_usable()).await
    }

    /// Checks `ready` every monitor tick until it holds (true) or `timeout` passes (false).
    async fn wait_until(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Where `unit` goes now (excluding `exclude`).
    pub fn place(&self, unit: &Unit, exclude: &[PathId]) -> Placement {
        let mut views = self.views();
        let placed = self.policy.place_again(unit, &views, exclude);
        if tracing::enabled!(tracing::Level::TRACE) {
            for v in &views {
                tracing::trace!(
                    path = v.id,
                    usable = v.usable,
                    srtt_ms = v.srtt.as_millis() as u64,
                    rate_up = v.rate_up as u64,
                    rate_down = v.rate_down as u64,
                    queued_up = v.queued_up,
                    queued_down = v.queued_down,
                    eta_ms = v.expected_completion(unit).as_millis() as u64,
                    "view"
                );
            }
            tracing::trace!(class = %unit.class, up = unit.up_bytes, paths = ?placed.paths, "placed");
        }
        if !placed.paths.is_empty() || views.iter().any(|v| v.usable) {
            return placed;
        }
        // nothing is up: a connected path still on probation is better than no path
        for (v, p) in views.iter_mut().zip(&self.paths) {
            v.usable = p.lock().live.is_some() && !p.signal.borrow().dead;
        }
        self.policy.place_again(unit, &views, exclude)
    }

    /// The paths with a connection that may carry `class`, whatever their health, but
    /// `exclude`.
    pub fn connected_for(&self, class: TrafficClass, exclude: &[PathId]) -> Vec<PathId> {
        self.paths
            .iter()
            .filter(|p| !exclude.contains(&p.id) && p.classes.contains(class))
            .filter(|p| p.connected().is_some())
            .map(|p| p.id)
            .collect()
    }

    /// Whether a bulk unit may be placed now (some path has less than the horizon of work
    /// queued); other classes always may.
    pub fn has_room(&self, unit: &Unit, exclude: &[PathId]) -> bool {
        scheduler::has_room(unit, &self.views_except(exclude), PLACEMENT_HORIZON)
    }

    /// How far ahead of a striped body's front a chunk of `unit` on `path` goes, the body's
    /// primary being `primary` (`tunnel::spread::lead`; the primary's rate shared by the
    /// bodies it is primary for), `exclude` aside.
    pub fn lead(&self, unit: &Unit, path: PathId, primary: PathId, exclude: &[PathId]) -> u64 {
        let share = 1.0 / self.stripes_on(primary).max(1) as f64;
        spread::lead(unit, path, primary, &self.views_except(exclude), share)
    }

    /// What the scheduler knows of every path now.
    pub fn views(&self) -> Vec<PathView> {
        self.views_except(&[])
    }

    /// What the paths can give the stream class (`tunnel::stream_level::capacity`), bytes
    /// per second; None while no path may carry it.
    pub fn stream_capacity(&self) -> Option<f64> {
        tunnel::stream_level::capacity(&self.stream_paths())
    }

    /// What the controller of the levels sees of the paths, from one look at them: the
    /// capacity ([`Bond::stream_capacity`]), whether some path that may carry the stream
    /// was measured full in its last meter window (`tunnel::stream_level::saturated`),
    /// what they have shown they carry (`tunnel::stream_level::proof`; none if their
    /// congestion controller counts no deliveries) and whether a probe may use one, with
    /// the live media's `backlog`.
    pub fn stream_measure(&self, backlog: Duration) -> Measure {
        let paths = self.stream_paths();
        let mut counted = false;
        let delivered: Vec<(PathView, Option<f64>)> = paths
            .iter()
            .map(|(v, _)| {
                let d = self.paths.get(v.id).and_then(|p| {
                    let st = p.lock();
                    counted |= st.live.as_ref().is_some_and(|l| l.delivered.is_some());
                    st.est.delivered_up()
                });
                (v.clone(), d)
            })
            .collect();
        Measure {
            capacity: tunnel::stream_level::capacity(&paths),
            backlog,
            saturated: tunnel::stream_level::saturated(&paths),
            proof: counted.then(|| tunnel::stream_level::proof(&delivered)),
            probe_paths: paths
                .iter()
                .any(|(v, _)| tunnel::stream_level::may_probe(v)),
        }
    }

    /// Each path's view with the rate its last meter window measured full, if it did.
    fn stream_paths(&self) -> Vec<(PathView, Option<f64>)> {
        self.views()
            .into_iter()
            .map(|v| {
                let full = self.paths.get(v.id).and_then(|p| p.lock().est.full_rate());
                (v, full)
            })
            .collect()
    }

    /// The views of every path but `exclude`.
    fn views_except(&self, exclude: &[PathId]) -> Vec<PathView> {
        self.with_fallback(
            self.paths
                .iter()
                .filter(|p| !exclude.contains(&p.id))
                .map(|p| p.view())
                .collect(),
        )
    }

    /// The views with `scheduler::fallback_to_probation` applied: connected paths still on
    /// probation stand in when no regular path is up.
    fn with_fallback(&self, mut views: Vec<PathView>) -> Vec<PathView> {
        scheduler::fallback_to_probation(&mut views, |id| {
            self.paths
                .get(id)
                .is_some_and(|p| p.lock().est.on_probation() && !p.signal.borrow().dead)
        });
        views
    }

    /// The paths that may carry `unit` now with room (`tunnel::spread::with_room`).
    pub fn with_room(
        &self,
        unit: &Unit,
        exclude: &[PathId],
        horizon: Duration,
        rtts: u32,
    ) -> Vec<PathId> {
        spread::with_room(unit, &self.views_except(exclude), horizon, rtts)
    }

    /// The paths that may carry `unit` now with room beyond a round trip
    /// (`tunnel::spread::with_room_after_rtt`).
    pub fn with_room_after_rtt(
        &self,
        unit: &Unit,
        exclude: &[PathId],
        horizon: Duration,
    ) -> Vec<PathId> {
        spread::with_room_after_rtt(unit, &self.views_except(exclude), horizon)
    }

    /// The primary path for a new striped body of class `class` (`tunnel::spread::primary`).
    pub fn stripe_primary(&self, class: TrafficClass) -> Option<PathId> {
        spread::primary(class, &self.views(), |id| self.stripes_on(id))
    }

    /// A much less loaded primary for a striped body whose primary is `current`
    /// (`tunnel::spread::better_primary`).
    pub fn better_primary(&self, class: TrafficClass, current: PathId) -> Option<PathId> {
        spread::better_primary(class, &self.views(), |id| self.stripes_on(id), current)
    }

    /// Striped bodies whose primary is path `id`.
    fn stripes_on(&self, id: PathId) -> usize {
        self.paths
            .get(id)
            .map_or(0, |p| p.stripes.load(Ordering::Relaxed))
    }

    /// Why nothing can carry `class` now (for the 503's reason).
    pub fn why_not(&self, class: TrafficClass) -> String {
        let views: Vec<PathView> = self.paths.iter().map(|p| p.view()).collect();
        if !views.iter().any(|v| v.usable) {
            let states: Vec<String> = self
                .paths
                .iter()
                .map(|p| format!("{} {}", p.name, p.status().health))
                .collect();
            format!("no uplink to the relay is up ({})", states.join(", "))
        } else if views
            .iter()
            .any(|v| v.usable && v.cap == CapState::Exhausted)
        {
            format!(
                "every uplink that may carry {class} traffic has reached its data cap or is down"
            )
        } else {
            format!("no uplink is configured to carry {class} traffic")
        }
    }

    /// A flow of one request copy on path `id`: it reserves the declared bytes and counts
    /// what moves.
    pub fn flow(&self, id: PathId, class: TrafficClass, up: u64, down: u64) -> Option<Arc<Flow>> {
        let path = self.paths.get(id)?.clone();
        let generation = path.reserve(up, down);
        Some(Arc::new(Flow {
            path,
            class,
            up_left: AtomicU64::new(up),
            down_left: AtomicU64::new(down),
            generation,
            written: AtomicU64::new(0),
        }))
    }
}

/// One request copy on one path: its reservation in the path's queue estimate, and the byte
/// counters its bodies feed (class, link, cap).
pub struct Flow {
    /// The path.
    pub path: Arc<Path>,
    class: TrafficClass,
    up_left: AtomicU64,
    down_left: AtomicU64,
    /// The connection generation it went on.
    generation: u64,
    /// Request-body bytes it handed to quinn.
    written: AtomicU64,
}

impl Flow {
    /// The class of the request it carries.
    pub fn class(&self) -> TrafficClass {
        self.class
    }

    /// The response announced `n` body bytes: they replace the estimate reserved so far.
    pub fn expect_down(&self, n: u64) {
        let old = self.down_left.swap(n, Ordering::Relaxed);
        self.path.release(0, old);
        self.path.reserve(0, n);
    }

    /// A counter for request-body bytes.
    pub fn up_counter(self: &Arc<Self>) -> metrics::Counter {
        self.counter(true)
    }

    /// A counter for response-body bytes.
    pub fn down_counter(self: &Arc<Self>) -> metrics::Counter {
        self.counter(false)
    }

    fn counter(self: &Arc<Self>, up: bool) -> metrics::Counter {
        let (c, dir) = (self.class.as_str(), if up { "up" } else { "down" });
        metrics::Counter::from_arc(Arc::new(FlowCounter {
            flow: self.clone(),
            up,
            class: metrics::counter!("canopy_gateway_bytes_total", "class" => c, "direction" => dir),
            link: metrics::counter!("canopy_gateway_link_bytes_total", "link" => self.path.name.clone(), "class" => c, "direction" => dir),
        }))
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.path.release(
            self.up_left.load(Ordering::Relaxed),
            self.down_left.load(Ordering::Relaxed),
        );
        self.path
            .retire(self.generation, self.written.load(Ordering::Relaxed));
    }
}

struct FlowCounter {
    flow: Arc<Flow>,
    up: bool,
    class: metrics::Counter,
    link: metrics::Counter,
}

fn sub_sat(a: &AtomicU64, n: u64) -> u64 {
    let mut taken = 0;
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        taken = v.min(n);
        Some(v - taken)
    });
    taken
}

impl metrics::CounterFn for FlowCounter {
    fn increment(&self, value: u64) {
        self.class.increment(value);
        self.link.increment(value);
        // the path's pending counters drop by what this flow had reserved
        let left = if self.up {
            &self.flow.up_left
        } else {
            &self.flow.down_left
        };
        if self.up {
            self.flow.written.fetch_add(value, Ordering::Relaxed);
        }
        let reserved = sub_sat(left, value);
        self.flow.path.carried(self.up, value, reserved);
    }

    fn absolute(&self, _value: u64) {}
}
