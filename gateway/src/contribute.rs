//! The contribution: every camera's program (the rendition cut at its low-bandwidth level,
//! see `media_io::program`) goes to the relay over the bond as it is made, chunk by chunk (class `stream`), so the relay can serve a part while it is still
//! being built. What to send where and when is `tunnel::contribution`'s; this is the shell:
//! it takes the segmenter's chunks, reads the bytes a send needs from the rendition (its
//! window, its ring, or its disk spool, so nothing is held twice), opens the requests, and
//! reports answers, failures and dead paths back.
//!
//! Init segments go first and again whenever the relay says it lacks one (a relay that
//! restarted). Capture times and program date times go in the relay's clock (see
//! [`crate::clock`]).

use crate::bond::{until_dead, Bond};
use bytes::{Buf, Bytes};
use http::{header, Method, Request, StatusCode};
use media_io::{LiveRendition, LiveStreams};
use segmenter::{Chunk, PartMeta};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, info, trace, warn};
use tunnel::contribution::{
    Contribution, ContributionConfig, ContributionStats, Lane, PieceId, SendKind, StreamId,
};
use tunnel::scheduler::PathId;
use tunnel::wire::{self, media};
use tunnel::TrafficClass;

/// Longest a piece's request may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the contribution has done, for status lines and benches.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContributionStatus {
    /// The scheduler's byte counters.
    pub bytes: ContributionStats,
    /// Pieces waiting for an answer: live, backfill.
    pub waiting: (usize, usize),
    /// Renditions being sent.
    pub streams: usize,
    /// Init segments sent.
    pub inits_sent: u64,
    /// How far the live media is behind (`Contribution::live_backlog`).
    pub backlog: Duration,
}

/// A handle on the running contribution.
#[derive(Default)]
pub struct Contributor {
    status: Mutex<ContributionStatus>,
    /// Per rendition sent: every part before this sequence number has reached the relay
    /// (or was given up). Updated once a second.
    delivered: Mutex<Vec<Delivered>>,
}

impl std::fmt::Debug for Contributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contributor")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Contributor {
    /// Starts sending every camera of `cameras` over `bond`.
    pub fn start(bond: Arc<Bond>, cameras: Arc<LiveStreams>) -> Arc<Self> {
        let me = Arc::new(Self::default());
        tokio::spawn(run(bond, cameras, me.clone()));
        me
    }

    /// What it has done so far.
    pub fn status(&self) -> ContributionStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each rendition sent, with the sequence number every part before which has reached
    /// the relay (or was given up), as of the last sweep (once a second).
    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A rendition sent to the relay, and how far it has arrived.
#[derive(Clone)]
pub struct Delivered {
    pub camera: String,
    pub rendition: Arc<LiveRendition>,
    /// Every part before this has reached the relay (or was given up).
    pub below: u64,
}

/// One piece's description, kept while it waits.
#[derive(Debug, Clone, Copy)]
struct PieceMeta {
    end_us: u64,
    last: bool,
    /// With `last`: the next part opens a segment.
    ends_segment: bool,
    frame_ms: u64,
}

#[derive(Debug, Default)]
struct InitState {
    /// Generation acknowledged by the relay.
    acked: Option<u32>,
    /// A send is under way.
    in_flight: bool,
    /// Don't try again before this.
    retry_at: Option<Instant>,
}

struct Stream {
    id: StreamId,
    camera: String,
    rendition: Arc<LiveRendition>,
    /// Parts with waiting pieces.
    parts: BTreeMap<u64, PartMeta>,
    pieces: BTreeMap<PieceId, PieceMeta>,
    /// The chunk expected next from the segmenter: (seq, offset).
    next: Option<(u64, u64)>,
    init: InitState,
}

impl Stream {
    /// Every part before this has reached the relay or was given up: the oldest part with
    /// pieces waiting, else the part the segmenter makes next (0 before any).
    fn delivered_below(&self) -> u64 {
        self.parts
            .keys()
            .next()
            .copied()
            .or(self.next.map(|(seq, _)| seq))
            .unwrap_or(0)
    }

    /// Forgets piece `id` (answered, refused, or its bytes gone), and its part's metadata
    /// once no piece of the part waits: a part left behind would hold
    /// [`Stream::delivered_below`] back, and the purge with it.
    fn forget(&mut self, id: PieceId) {
        self.pieces.remove(&id);
        let part = PieceId::of_parts(id.stream, id.seq..id.seq + 1);
        if self.pieces.range(part).next().is_none() {
            self.parts.remove(&id.seq);
        }
    }
}

enum Done {
    Piece {
        id: PieceId,
        path: PathId,
        /// When the flight went (it names the flight to the core).
        at: Instant,
        result: Result<Answer, SendError>,
    },
    Init {
        stream: StreamId,
        generation: u32,
        ok: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    need_init: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("uplink not usable")]
    NoPath,
    #[error("the path died")]
    PathDied,
    #[error("no answer in time")]
    Timeout,
    #[error("request failed: {0}")]
    Stream(String),
    /// The relay refused it for good (a 4xx): sending it again would not help.
    #[error("refused: {status} {reason}")]
    Refused { status: StatusCode, reason: String },
    #[error("relay busy: {0}")]
    Busy(StatusCode),
    /// The scheduler called the flight off (see `Contribution::take_cancelled`).
    #[error("called off")]
    Cancelled,
}

/// A flight under way: its piece, its path and when it went (as the scheduler names it).
type FlightKey = (PieceId, PathId, Instant);

async fn run(bond: Arc<Bond>, cameras: Arc<LiveStreams>, handle: Arc<Contributor>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let wake = Arc::new(Notify::new());
    let mut added = cameras.added();
    let mut core = Contribution::new(ContributionConfig::default());
    let mut streams: Vec<Stream> = Vec::new();
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut last_sweep = tunnel_io::clock::now();
    let mut inits_sent = 0u64;
    let mut published = ContributionStats::default();
    // each flight's stop switch (dropping it stops the flight too)
    let mut flights: HashMap<FlightKey, oneshot::Sender<()>> = HashMap::new();
    info!("contributing the cameras to the relay");
    loop {
        // cameras added since (pushed cameras appear at any time)
        for cam in cameras.all() {
            // the relay gets a camera's program, cut at its low-bandwidth level (every
            // rendition of a camera without one)
            let sent = match cam.program() {
                Some(p) => vec![p.rendition().clone()],
                None => cam.renditions().to_vec(),
            };
            for r in &sent {
                if known.insert((cam.name().to_string(), r.name().to_string())) {
                    r.keep_chunks();
                    let w = wake.clone();
                    let mut ch = media_io::hls_http::WindowSource::changes(&**r);
                    tokio::spawn(async move {
                        while ch.changed().await.is_ok() {
                            w.notify_one();
                        }
                    });
                    streams.push(Stream {
                        id: streams.len() as StreamId,
                        camera: cam.name().to_string(),
                        rendition: r.clone(),
                        parts: BTreeMap::new(),
                        pieces: BTreeMap::new(),
                        next: None,
                        init: InitState::default(),
                    });
                }
            }
        }
        let now = tunnel_io::clock::now();
        for s in &mut streams {
            take_chunks(s, &mut core, now);
        }
        for (stream, seq) in core.demote_stale(now) {
            if let Some(s) = streams.get_mut(stream as usize) {
                merge_backfill(s, &mut core, seq);
            }
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            last_sweep = now;
            for s in &mut streams {
                // what the ring and the spool no longer hold can never be sent
                let oldest = s.rendition.oldest_seq();
                for id in core.waiting_before(s.id, oldest) {
                    core.lost(id);
                    s.pieces.remove(&id);
                }
                s.parts = s.parts.split_off(&oldest);
            }
            let delivered = streams
                .iter()
                .map(|s| Delivered {
                    camera: s.camera.clone(),
                    rendition: s.rendition.clone(),
                    below: s.delivered_below(),
                })
                .collect();
            *handle.delivered.lock().unwrap_or_else(|e| e.into_inner()) = delivered;
        }
        for s in &mut streams {
            if let Some(sent) = send_init(&bond, s, &tx, now) {
                inits_sent += u64::from(sent);
            }
        }
        loop {
            let views = bond.views();
            let Some(send) = core.poll_send(now, &views) else {
                break;
            };
            let Some(s) = streams.get(send.id.stream as usize) else {
                core.lost(send.id);
                continue;
            };
            // the path's queue counts the piece before the next placement (a burst placed
            // in one go once put 4.6 MB on a link that had just come back)
            let flow = bond.flow(send.path, TrafficClass::Stream, send.len, 0);
            match (piece_request(&bond, s, send.id, send.len, send.lane), flow) {
                (Some((req, data)), Some(flow)) => {
                    if send.kind == SendKind::Copy {
                        debug!(camera = %s.camera, seq = send.id.seq, offset = send.id.offset, path = send.path, "late piece: a copy on another path");
                    }
                    trace!(seq = send.id.seq, offset = send.id.offset, path = send.path, lane = ?send.lane, len = send.len, kind = ?send.kind, "piece sent");
                    let tx = tx.clone();
                    let (id, path, lane, at) = (send.id, send.path, send.lane, send.at);
                    let (stop, stopped) = oneshot::channel();
                    flights.insert((id, path, at), stop);
                    tokio::spawn(async move {
                        let result = send_piece(flow, req, data, lane, stopped).await;
                        let _ = tx.send(Done::Piece {
                            id,
                            path,
                            at,
                            result,
                        });
                    });
                }
                (Some(_), None) => core.failed(send.id, send.path, send.at),
                (None, _) => {
                    core.lost(send.id);
                    if let Some(s) = streams.get_mut(send.id.stream as usize) {
                        s.forget(send.id);
                    }
                }
            }
        }
        for key in core.take_cancelled() {
            if let Some(stop) = flights.remove(&key) {
                trace!(
                    seq = key.0.seq,
                    offset = key.0.offset,
                    path = key.1,
                    "flight called off"
                );
                let _ = stop.send(());
            }
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            let (live, backfill) = core.waiting();
            let views: Vec<String> = bond
                .views()
                .iter()
                .map(|v| {
                    format!(
                        "{}:{}:{:.0}ms:{:.1}Mb:q{}",
                        v.id,
                        if v.usable { "up" } else { "down" },
                        v.srtt.as_secs_f64() * 1000.0,
                        v.rate_up * 8.0 / 1e6,
                        v.queued_up
                    )
                })
                .collect();
            trace!(live, backfill, views = %views.join(" "), "contribution");
        }
        {
            let mut st = handle.status.lock().unwrap_or_else(|e| e.into_inner());
            st.bytes = core.stats();
            st.waiting = core.waiting();
            st.streams = streams.len();
            st.inits_sent = inits_sent;
            st.backlog = core.live_backlog(now);
        }
        publish_metrics(&mut published, core.stats(), core.waiting());
        let wait_until = core
            .poll_timeout(now)
            .map_or(now + Duration::from_millis(100), |t| {
                t.min(now + Duration::from_millis(100))
            });
        tokio::select! {
            _ = wake.notified() => {}
            _ = added.changed() => {}
            d = rx.recv() => {
                let Some(d) = d else { return };
                handle_done(d, &mut core, &mut streams, &mut flights);
                while let Ok(d) = rx.try_recv() {
                    handle_done(d, &mut core, &mut streams, &mut flights);
                }
            }
            _ = tokio::time::sleep_until(wait_until.into()) => {}
        }
    }
}

/// Takes the segmenter's new chunks as live pieces; a gap in them (the outbox overflowed)
/// becomes backfill from the ring.
fn take_chunks(s: &mut Stream, core: &mut Contribution, now: Instant) {
    let (chunks, dropped) = s.rendition.take_chunks();
    if dropped > 0 {
        warn!(camera = %s.camera, rendition = s.rendition.name(), dropped, "chunks missed: sending their parts as backfill");
    }
    for c in chunks {
        if let Some((seq, offset)) = s.next {
            if (c.part.seq, c.offset) != (seq, offset) && dropped > 0 {
                backfill_between(s, core, now, (seq, offset), (c.part.seq, c.offset));
            }
        }
        s.next = Some(if c.last {
            (c.part.seq + 1, 0)
        } else {
            (c.part.seq, c.offset + c.data.len() as u64)
        });
        push_chunk(s, core, now, &c);
    }
}

/// Largest piece: a chunk larger than this (a keyframe) goes in several, so it spreads over
/// the paths instead of waiting on one (a 150 kB keyframe takes 600 ms on a 2 Mbit/s link).
const MAX_PIECE: u64 = 32 * 1024;

/// Most of a refusal's reason kept for the log, bytes.
const REASON_MAX: usize = 256;

fn push_chunk(s: &mut Stream, core: &mut Contribution, now: Instant, c: &Chunk) {
    s.parts.insert(c.part.seq, c.part);
    let len = c.data.len() as u64;
    let mut at = 0;
    loop {
        let n = (len - at).min(MAX_PIECE);
        let end = at + n == len;
        let id = PieceId {
            stream: s.id,
            seq: c.part.seq,
            offset: c.offset + at,
        };
        s.pieces.insert(
            id,
            PieceMeta {
                // only a chunk's end is a place a part may be cut short at (0: not one)
                end_us: if end { c.end_us } else { 0 },
                last: c.last && end,
                ends_segment: c.ends_segment && end,
                frame_ms: c.frame_ms,
            },
        );
        let start = c.offset + at == 0 && c.part.segment.is_some();
        core.push(now, id, n, start, Lane::Live);
        if start && c.part.segment.is_some_and(|g| g.discontinuity) {
            // a new timeline (the program switched source): what is left of the old one
            // yields the live edge at once
            core.timeline_starts(s.id, c.part.seq);
        }
        at += n;
        if end {
            return;
        }
    }
}

/// A part whose pieces all became backfill before any went out goes as one piece (one
/// request instead of one per frame), once it is whole.
fn merge_backfill(s: &mut Stream, core: &mut Contribution, seq: u64) {
    let Some(p) = s.rendition.part(seq) else {
        return;
    };
    let len = p.data.len() as u64;
    if core.merge_part(s.id, seq, len) {
        let ids: Vec<PieceId> = s
            .pieces
            .range(PieceId::of_parts(s.id, seq..seq + 1))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            s.pieces.remove(&id);
        }
        s.pieces.insert(
            PieceId {
                stream: s.id,
                seq,
                offset: 0,
            },
            PieceMeta {
                end_us: (p.duration * 1e6).round() as u64,
                last: true,
                // backfill is behind the live edge: no hint depends on it
                ends_segment: false,
                frame_ms: p.capture_ms,
            },
        );
    }
}

/// Parts `from..to` (by (seq, offset)) that the outbox dropped, as backfill from the ring.
fn backfill_between(
    s: &mut Stream,
    core: &mut Contribution,
    now: Instant,
    from: (u64, u64),
    to: (u64, u64),
) {
    for seq in from.0..=to.0 {
        let Some(p) = s.rendition.part(seq) else {
            continue;
        };
        let start = if seq == from.0 { from.1 } else { 0 };
        let end = if seq == to.0 {
            to.1
        } else {
            p.data.len() as u64
        };
        if end <= start {
            continue;
        }
        let id = PieceId {
            stream: s.id,
            seq,
            offset: start,
        };
        s.parts.insert(seq, p.meta());
        s.pieces.insert(
            id,
            PieceMeta {
                end_us: (p.duration * 1e6) as u64,
                last: end == p.data.len() as u64,
                ends_segment: false,
                frame_ms: p.capture_ms,
            },
        );
        core.push(now, id, end - start, false, Lane::Backfill);
    }
}

fn shift(ms: u64, offset_ms: i64) -> u64 {
    if ms == 0 {
        0
    } else {
        ms.saturating_add_signed(offset_ms)
    }
}

/// The request and bytes for a piece (None: its bytes are gone).
fn piece_request(
    bond: &Bond,
    s: &Stream,
    id: PieceId,
    len: u64,
    lane: Lane,
) -> Option<(Request<()>, Bytes)> {
    let meta = s.parts.get(&id.seq)?;
    let pm = s.pieces.get(&id)?;
    let data = s.rendition.bytes(id.seq, id.offset, len)?;
    let off = bond.clock.offset_ms();
    let h = media::PieceHeader {
        run: s.rendition.run(),
        seq: meta.seq,
        msn: meta.msn,
        index: meta.index,
        independent: meta.independent,
        init: meta.init,
        capture_ms: shift(meta.capture_ms, off),
        frame_ms: shift(pm.frame_ms, off),
        segment: meta
            .segment
            .map(|st| (st.discontinuity, shift(st.pdt_ms, off))),
        offset: id.offset,
        end_us: pm.end_us,
        last: pm.last,
        ends_segment: pm.ends_segment,
        live: lane == Lane::Live,
    };
    let path = media::MediaPath {
        camera: s.camera.clone(),
        rendition: s.rendition.name().to_string(),
        init: false,
    };
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!(
            "https://{}{}",
            media::MEDIA_AUTHORITY,
            path.encode()
        ))
        .header(wire::HDR_CLASS, TrafficClass::Stream.as_str())
        .header(media::HDR_MEDIA, h.encode())
        .header(header::CONTENT_LENGTH, data.len())
        .body(())
        .ok()?;
    Some((req, data))
}

/// Sends the rendition's newest init segment when the relay has not acknowledged it.
fn send_init(
    bond: &Arc<Bond>,
    s: &mut Stream,
    tx: &mpsc::UnboundedSender<Done>,
    now: Instant,
) -> Option<bool> {
    if s.init.in_flight || s.init.retry_at.is_some_and(|t| now < t) {
        return None;
    }
    let (generation, data, info) = s.rendition.init()?;
    if s.init.acked == Some(generation) {
        return None;
    }
    let h = media::InitHeader {
        run: s.rendition.run(),
        generation,
        codecs: info.codecs,
        resolution: info.resolution,
    };
    let path = media::MediaPath {
        camera: s.camera.clone(),
        rendition: s.rendition.name().to_string(),
        init: true,
    };
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!(
            "https://{}{}",
            media::MEDIA_AUTHORITY,
            path.encode()
        ))
        .header(wire::HDR_CLASS, TrafficClass::Stream.as_str())
        .header(media::HDR_MEDIA_INIT, h.encode())
        .header(header::CONTENT_LENGTH, data.len())
        .body(())
        .ok()?;
    // the soonest usable path; every path is tried in turn on failure
    let views = bond.views();
    let path_id = views
        .iter()
        .filter(|v| v.usable)
        .min_by_key(|v| v.srtt)
        .map(|v| v.id)?;
    let flow = bond.flow(path_id, TrafficClass::Stream, data.len() as u64, 0)?;
    s.init.in_flight = true;
    let (tx, stream) = (tx.clone(), s.id);
    tokio::spawn(async move {
        // an init is never called off: its stop switch lives as long as the request
        let (_keep, stop) = oneshot::channel();
        let ok = send_piece(flow, req, data, Lane::Live, stop).await.is_ok();
        let _ = tx.send(Done::Init {
            stream,
            generation,
            ok,
        });
    });
    Some(true)
}

fn handle_done(
    d: Done,
    core: &mut Contribution,
    streams: &mut [Stream],
    flights: &mut HashMap<FlightKey, oneshot::Sender<()>>,
) {
    match d {
        Done::Piece {
            id,
            path,
            at,
            result,
        } => {
            flights.remove(&(id, path, at));
            let Some(s) = streams.get_mut(id.stream as usize) else {
                return;
            };
            match result {
                Ok(a) => {
                    trace!(
                        seq = id.seq,
                        offset = id.offset,
                        path,
                        ms = tunnel_io::clock::since(at).as_millis() as u64,
                        "piece acked"
                    );
                    core.acked(tunnel_io::clock::now(), id, path);
                    s.forget(id);
                    // the piece's other flights carry nothing the relay lacks now, those
                    // the scheduler had already let go of (a quiet path's) included
                    let others: Vec<FlightKey> =
                        flights.keys().filter(|k| k.0 == id).copied().collect();
                    for key in others {
                        if let Some(stop) = flights.remove(&key) {
                            let _ = stop.send(());
                        }
                    }
                    if let Some(g) = a.need_init {
                        // the relay lacks this init (it restarted): send it again
                        if s.init.acked == Some(g) || s.init.acked.is_none() {
                            s.init.acked = None;
                        }
                    }
                }
                Err(SendError::Refused { status, reason }) => {
                    warn!(camera = %s.camera, seq = id.seq, %status, %reason, "the relay refused a piece: dropped");
                    core.lost(id);
                    s.forget(id);
                }
                // the scheduler dropped the flight already
                Err(SendError::Cancelled) => {}
                Err(e) => {
                    debug!(camera = %s.camera, seq = id.seq, path, error = %e, "piece not delivered: it goes again");
                    core.failed(id, path, at);
                }
            }
        }
        Done::Init {
            stream,
            generation,
            ok,
        } => {
            if let Some(s) = streams.get_mut(stream as usize) {
                s.init.in_flight = false;
                if ok {
                    s.init.acked = Some(generation);
                    s.init.retry_at = None;
                } else {
                    s.init.retry_at = Some(tunnel_io::clock::now() + Duration::from_millis(200));
                }
            }
        }
    }
}

/// One request on the path of `flow` (which holds its place in the path's queue): the
/// piece (or init segment) and the relay's answer. A request given up (no answer in time,
/// the path died, or `stop` called it off) is reset: what the sender still holds of it is
/// dropped rather than sent (a dropped stream would be finished, and sent in full).
async fn send_piece(
    flow: Arc<crate::bond::Flow>,
    req: Request<()>,
    data: Bytes,
    lane: Lane,
    mut stop: oneshot::Receiver<()>,
) -> Result<Answer, SendError> {
    let p = flow.path.clone();
    // the scheduler chose it from the bond's views: a path on probation may be chosen when
    // no regular path is up
    let live = p
        .live()
        .or_else(|| p.connected())
        .ok_or(SendError::NoPath)?;
    let len = data.len() as u64;
    let mut watch = p.watch();
    let start = match lane {
        Lane::Live => tunnel_io::quic::Start::Media,
        Lane::Backfill => tunnel_io::quic::Start::Bulk,
    };
    let mut sender = live.sender.clone();
    let mut opened = None;
    let outcome = {
        let work = async {
            let stream = opened.insert(
                tunnel_io::quic::opening_as(start, sender.send_request(req))
                    .await
                    .map_err(|e| SendError::Stream(e.to_string()))?,
            );
            if !data.is_empty() {
                stream
                    .send_data(data)
                    .await
                    .map_err(|e| SendError::Stream(e.to_string()))?;
            }
            flow.up_counter().increment(len);
            stream
                .finish()
                .await
                .map_err(|e| SendError::Stream(e.to_string()))?;
            let resp = stream
                .recv_response()
                .await
                .map_err(|e| SendError::Stream(e.to_string()))?;
            // the relay says why it refused a piece (kept for the log, bounded)
            let mut why = Vec::new();
            while let Ok(Some(mut b)) = stream.recv_data().await {
                let n = b.remaining().min(REASON_MAX - why.len());
                why.extend_from_slice(&b.copy_to_bytes(n));
            }
            Ok::<_, SendError>((resp, why))
        };
        tokio::select! {
            r = tokio::time::timeout(SEND_TIMEOUT, work) => r.unwrap_or(Err(SendError::Timeout)),
            _ = until_dead(&mut watch) => Err(SendError::PathDied),
            _ = &mut stop => Err(SendError::Cancelled),
        }
    };
    let (resp, why) = match outcome {
        Ok(r) => r,
        Err(e) => {
            if let Some(stream) = opened.as_mut() {
                stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                stream.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
            }
            return Err(e);
        }
    };
    let status = resp.status();
    if status.is_success() {
        let need_init = resp
            .headers()
            .get(media::HDR_MEDIA_NEED_INIT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        return Ok(Answer { need_init });
    }
    if status.is_client_error() {
        Err(SendError::Refused {
            status,
            reason: String::from_utf8_lossy(&why).trim().to_string(),
        })
    } else {
        Err(SendError::Busy(status))
    }
}

fn publish_metrics(last: &mut ContributionStats, now: ContributionStats, waiting: (usize, usize)) {
    let inc = |name: &'static str, kind: &'static str, a: u64, b: u64| {
        if b > a {
            metrics::counter!(name, "kind" => kind).increment(b - a);
        }
    };
    inc(
        "canopy_gateway_media_bytes_total",
        "first",
        last.first_bytes,
        now.first_bytes,
    );
    inc(
        "canopy_gateway_media_bytes_total",
        "copy",
        last.copy_bytes,
        now.copy_bytes,
    );
    inc(
        "canopy_gateway_media_bytes_total",
        "again",
        last.again_bytes,
        now.again_bytes,
    );
    inc(
        "canopy_gateway_media_bytes_total",
        "backfill",
        last.backfill_bytes,
        now.backfill_bytes,
    );
    if now.lost_pieces > last.lost_pieces {
        metrics::counter!("canopy_gateway_media_lost_pieces_total")
            .increment(now.lost_pieces - last.lost_pieces);
    }
    metrics::gauge!("canopy_gateway_media_waiting_pieces", "lane" => "live").set(waiting.0 as f64);
    metrics::gauge!("canopy_gateway_media_waiting_pieces", "lane" => "backfill")
        .set(waiting.1 as f64);
    *last = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(seq: u64) -> PartMeta {
        PartMeta {
            seq,
            msn: seq / 5,
            index: (seq % 5) as u32,
            independent: false,
            init: 0,
            capture_ms: 0,
            segment: None,
        }
    }

    fn piece(seq: u64, offset: u64) -> PieceId {
        PieceId {
            stream: 0,
            seq,
            offset,
        }
    }

    #[test]
    fn a_part_is_delivered_once_its_last_waiting_piece_is_forgotten() {
        let mut s = Stream {
            id: 0,
            camera: "cam".into(),
            rendition: Arc::new(LiveRendition::standalone("main", Default::default())),
            parts: BTreeMap::new(),
            pieces: BTreeMap::new(),
            next: Some((7, 0)),
            init: InitState::default(),
        };
        let meta = PieceMeta {
            end_us: 0,
            last: false,
            ends_segment: false,
            frame_ms: 0,
        };
        for (seq, offset) in [(5, 0), (5, 32768), (6, 0)] {
            s.parts.insert(seq, part(seq));
            s.pieces.insert(piece(seq, offset), meta);
        }
        s.forget(piece(5, 32768));
        assert_eq!(s.delivered_below(), 5, "part 5 still has a piece waiting");
        // a piece whose bytes are gone counts as given up, as an answered one does
        s.forget(piece(5, 0));
        assert_eq!(s.delivered_below(), 6);
        s.forget(piece(6, 0));
        assert_eq!(
            s.delivered_below(),
            7,
            "nothing waits: the next part to come"
        );
    }
}
