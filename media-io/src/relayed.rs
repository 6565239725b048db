//! The relay's side of the live streams: each gateway's renditions mirrored from the pieces
//! the gateway sends ([`segmenter::mirror`]), kept going through outages, served to
//! viewers, and recorded to disk ([`segmenter::record`]).
//!
//! Viewer URLs (`serve`):
//! - `/live/` — JSON: every stream, its state and latency figures;
//! - `/live/<gateway>/<camera>/index.m3u8` — the camera's program (cut at its
//!   low-bandwidth level; the main rendition from a gateway without one); `abr.m3u8` — all;
//! - `/live/<gateway>/<camera>/<rendition>/stream.m3u8`, `init-G.mp4`, `seg-M.m4s`,
//!   `part-M.I.m4s` (see [`crate::hls_http`]);
//! - `/live/<gateway>/<camera>/<rendition>/latency.json` — recent parts' glass-to-relay
//!   and pieces' frame-to-relay: `{"parts": [[capture ms, latency ms], ...], "frames": ...}`.
//!
//! Recordings: `<record_dir>/<gateway>/<camera>/<rendition>/<run>/` holds the init
//! segments, `seg-M.m4s` in the gateway's numbering and `index.m3u8` (EVENT while live,
//! VOD once the stream ended); `/rec/...` serves them.

use crate::hls_http::{self, full, MediaBody, PlaylistOptions, ServeError, WindowSource};
use bytes::Bytes;
use http::{header, Response};
use segmenter::hls::render_multivariant;
use segmenter::mirror::{Mirror, MirrorConfig, Piece, PieceError, State, Taken};
use segmenter::record::{Action, Recording};
use segmenter::window::StreamInfo;
use segmenter::LiveWindow;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

/// Settings of the relay's live streams.
#[derive(Debug, Clone)]
pub struct RelayedConfig {
    /// The mirrors (window, stall, hold).
    pub mirror: MirrorConfig,
    /// Where recordings go (none: not recorded).
    pub record_dir: Option<PathBuf>,
    /// A hole in a recording is listed as a gap after this long.
    pub hole_wait: Duration,
    /// Renditions one gateway may have.
    pub max_renditions_per_gateway: usize,
}

impl Default for RelayedConfig {
    fn default() -> Self {
        Self {
            mirror: MirrorConfig::default(),
            record_dir: None,
            hole_wait: Duration::from_secs(600),
            max_renditions_per_gateway: 64,
        }
    }
}

/// Why a piece or init segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    /// The piece itself.
    #[error(transparent)]
    Piece(#[from] PieceError),
    /// Too many renditions for one gateway.
    #[error("a gateway may send at most {0} renditions")]
    TooMany(usize),
}

/// Recent glass-to-relay figures of a rendition: (capture ms, latency ms) of its parts.
const LATENCY_SAMPLES: usize = 10_000;

/// An operation on a recording's directory.
#[derive(Debug)]
enum DiskOp {
    Init(u32, Bytes),
    Part(u64, Bytes),
    Join(u64, Vec<u64>),
    Drop(Vec<u64>),
    Playlist(String),
}

struct Recorder {
    run: u64,
    model: Recording,
    tx: mpsc::Sender<DiskOp>,
    dir: PathBuf,
    /// Init generations written.
    inits: Vec<u32>,
}

impl Recorder {
    fn start(dir: PathBuf, run: u64, hole_wait: Duration) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(write_loop(dir.clone(), rx));
        info!(dir = %dir.display(), "recording");
        Self {
            run,
            model: Recording::new(hole_wait),
            tx,
            dir,
            inits: Vec::new(),
        }
    }

    fn send(&self, op: DiskOp) {
        if self.tx.try_send(op).is_err() {
            metrics::counter!("canopy_relay_recording_dropped_total").increment(1);
            warn!(dir = %self.dir.display(), "recording: the disk falls behind; a write was dropped");
        }
    }

    fn apply(&self, actions: Vec<Action>, part: Option<&segmenter::Part>) {
        for a in actions {
            match a {
                Action::StorePart { seq } => {
                    if let Some(p) = part.filter(|p| p.seq == seq) {
                        self.send(DiskOp::Part(seq, p.data.clone()));
                    }
                }
                Action::JoinSegment { msn, seqs } => self.send(DiskOp::Join(msn, seqs)),
                Action::DropParts { seqs } => self.send(DiskOp::Drop(seqs)),
                Action::Playlist(text) => self.send(DiskOp::Playlist(text)),
            }
        }
    }
}

async fn write_loop(dir: PathBuf, mut rx: mpsc::Receiver<DiskOp>) {
    if let Err(e) = tokio::fs::create_dir_all(dir.join("parts")).await {
        warn!(dir = %dir.display(), error = %e, "recording: cannot create the directory");
        return;
    }
    while let Some(op) = rx.recv().await {
        let d = dir.clone();
        let r = tokio::task::spawn_blocking(move || write_op(&d, op)).await;
        if let Ok(Err(e)) = r {
            metrics::counter!("canopy_relay_recording_errors_total").increment(1);
            warn!(dir = %dir.display(), error = %e, "recording: write failed");
        }
    }
}

fn write_op(dir: &Path, op: DiskOp) -> std::io::Result<()> {
    use std::io::Write;
    let part = |seq: u64| dir.join("parts").join(format!("{seq}.m4s"));
    match op {
        DiskOp::Init(g, data) => std::fs::write(dir.join(format!("init-{g}.mp4")), data),
        DiskOp::Part(seq, data) => std::fs::write(part(seq), data),
        DiskOp::Join(msn, seqs) => {
            let tmp = dir.join(format!(".seg-{msn}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            for s in &seqs {
                f.write_all(&std::fs::read(part(*s))?)?;
            }
            f.sync_data()?;
            std::fs::rename(&tmp, dir.join(format!("seg-{msn}.m4s")))?;
            for s in seqs {
                let _ = std::fs::remove_file(part(s));
            }
            Ok(())
        }
        DiskOp::Drop(seqs) => {
            for s in seqs {
                let _ = std::fs::remove_file(part(s));
            }
            Ok(())
        }
        DiskOp::Playlist(text) => {
            let tmp = dir.join(".index.m3u8.tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(tmp, dir.join("index.m3u8"))
        }
    }
}

struct Inner {
    mirror: Mirror,
    recorder: Option<Recorder>,
    latency: VecDeque<(u64, u64)>,
    frames: VecDeque<(u64, u64)>,
    last_state: State,
}

/// One rendition of a gateway's camera, mirrored.
pub struct Mirrored {
    gateway: String,
    camera: String,
    name: String,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
    poke: Notify,
    record_dir: Option<PathBuf>,
    hole_wait: Duration,
}

impl WindowSource for Mirrored {
    fn with_window<R>(&self, f: impl FnOnce(&mut LiveWindow) -> R) -> R {
        let (r, v) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let r = f(g.mirror.window());
            (r, g.mirror.window_ref().version())
        };
        self.notify(v);
        r
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

fn wall_ms() -> u64 {
    crate::wall_ms()
}

impl Mirrored {
    fn new(gateway: &str, camera: &str, name: &str, cfg: &RelayedConfig) -> Arc<Self> {
        let first_msn = wall_ms() / 1000;
        let m = Arc::new(Self {
            gateway: gateway.into(),
            camera: camera.into(),
            name: name.into(),
            inner: Mutex::new(Inner {
                mirror: Mirror::new(cfg.mirror, first_msn),
                recorder: None,
                latency: VecDeque::new(),
                frames: VecDeque::new(),
                last_state: State::Waiting,
            }),
            changed: watch::channel(0).0,
            poke: Notify::new(),
            record_dir: cfg.record_dir.clone(),
            hole_wait: cfg.hole_wait,
        });
        tokio::spawn(clock(Arc::downgrade(&m)));
        m
    }

    /// The rendition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.gateway, self.camera, self.name)
    }

    fn notify(&self, v: u64) {
        self.changed.send_if_modified(|old| {
            let m = *old != v;
            *old = v;
            m
        });
    }

    fn recorder_for(&self, g: &mut Inner, run: u64) {
        if g.recorder.as_ref().is_some_and(|r| r.run == run) {
            return;
        }
        if let Some(mut old) = g.recorder.take() {
            let acts = old.model.end(Instant::now());
            old.apply(acts, None);
        }
        if let Some(dir) = &self.record_dir {
            let started = crate::wall_ms() / 1000;
            let d = dir
                .join(&self.gateway)
                .join(&self.camera)
                .join(&self.name)
                .join(format!("{started}-{run:016x}"));
            g.recorder = Some(Recorder::start(d, run, self.hole_wait));
        }
    }

    /// An init segment from the gateway.
    pub fn init(&self, run: u64, generation: u32, data: Bytes, info: StreamInfo) {
        let v = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            g.mirror
                .handle_init(Instant::now(), run, generation, data.clone(), info);
            self.recorder_for(&mut g, run);
            if let Some(r) = g.recorder.as_mut() {
                if !r.inits.contains(&generation) {
                    r.inits.push(generation);
                    r.send(DiskOp::Init(generation, data));
                }
            }
            g.mirror.window_ref().version()
        };
        self.notify(v);
        self.poke.notify_one();
    }

    /// A piece from the gateway.
    pub fn piece(&self, piece: Piece) -> Result<Taken, IntakeError> {
        let now = Instant::now();
        let wall = wall_ms();
        let live = piece.live;
        let frame_ms = piece.frame_ms;
        let key = self.key();
        let (taken, v) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let run = piece.run;
            let taken = g.mirror.handle_piece(now, wall, piece)?;
            if taken.new_run || g.recorder.is_none() {
                self.recorder_for(&mut g, run);
            }
            if let Some(p) = &taken.completed {
                if let Some(r) = g.recorder.as_mut() {
                    let acts = r.model.add_part(now, p);
                    r.apply(acts, Some(p));
                }
                if live && p.capture_ms > 0 {
                    let ms = wall.saturating_sub(p.capture_ms);
                    metrics::histogram!("canopy_relay_glass_to_relay_seconds", "stream" => key.clone())
                        .record(ms as f64 / 1000.0);
                    g.latency.push_back((p.capture_ms, ms));
                    while g.latency.len() > LATENCY_SAMPLES {
                        g.latency.pop_front();
                    }
                }
            }
            if live && frame_ms > 0 && taken.new_bytes > 0 {
                let ms = wall.saturating_sub(frame_ms);
                metrics::histogram!("canopy_relay_frame_to_relay_seconds", "stream" => key)
                    .record(ms as f64 / 1000.0);
                g.frames.push_back((frame_ms, ms));
                while g.frames.len() > 2 * LATENCY_SAMPLES {
                    g.frames.pop_front();
                }
            }
            (taken, g.mirror.window_ref().version())
        };
        metrics::counter!("canopy_relay_media_bytes_total", "kind" => "new")
            .increment(taken.new_bytes);
        metrics::counter!("canopy_relay_media_bytes_total", "kind" => "duplicate")
            .increment(taken.duplicate_bytes);
        self.notify(v);
        self.poke.notify_one();
        Ok(taken)
    }

    /// Runs the mirror's and the recording's clocks; when the next run is due.
    fn tick(&self) -> Option<Instant> {
        let now = Instant::now();
        let (v, at) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let before = g.mirror.stats();
            let resumes = g.mirror.stats().resumes;
            let waiting = g.mirror.waiting_for();
            g.mirror.poll(now);
            if g.mirror.stats().resumes > resumes && g.mirror.state() == State::Following {
                if let Some((seq, have, total, later)) = waiting {
                    info!(stream = %self.key(), seq, have, total, later, "the part the viewers wait for stalled: the window moved on to a newer live segment start (a new timeline's, or the live edge's)");
                }
            }
            if g.mirror.state() == State::Holding && g.last_state == State::Following {
                if let Some((seq, have, total, later)) = waiting {
                    info!(stream = %self.key(), seq, have, total, later, "no progress: the part the viewers wait for did not come whole");
                }
            }
            let after = g.mirror.stats();
            let gaps = after.gap_parts - before.gap_parts;
            if gaps > 0 {
                metrics::counter!("canopy_relay_gap_parts_total", "stream" => self.key())
                    .increment(gaps);
            }
            let stills = after.still_parts - before.still_parts;
            if stills > 0 {
                metrics::counter!("canopy_relay_still_parts_total", "stream" => self.key())
                    .increment(stills);
            }
            let state = g.mirror.state();
            if state != g.last_state {
                info!(stream = %self.key(), from = ?g.last_state, to = ?state, "live stream");
                if state == State::Ended {
                    // the stream ended: its recording becomes VOD
                    if let Some(mut r) = g.recorder.take() {
                        let acts = r.model.end(now);
                        r.apply(acts, None);
                    }
                }
                g.last_state = state;
            }
            if let Some(r) = g.recorder.as_mut() {
                let acts = r.model.poll(now);
                r.apply(acts, None);
            }
            (g.mirror.window_ref().version(), g.mirror.poll_at())
        };
        self.notify(v);
        at
    }

    /// Glass-to-relay of recent parts: (capture ms, latency ms).
    pub fn latency(&self) -> Vec<(u64, u64)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.latency.iter().copied().collect()
    }

    /// Frame-to-relay of recent live pieces: (capture ms of the newest frame in the piece,
    /// latency ms until its bytes were at the relay).
    pub fn frame_latency(&self) -> Vec<(u64, u64)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.frames.iter().copied().collect()
    }

    /// The mirror's state and counters.
    pub fn state(
        &self,
    ) -> (
        State,
        segmenter::mirror::MirrorStats,
        Option<segmenter::record::RecordStats>,
    ) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (
            g.mirror.state(),
            g.mirror.stats(),
            g.recorder.as_ref().map(|r| r.model.stats()),
        )
    }
}

/// Drives a mirror's clock: gap parts in a hold, the end of a hold, recording holes.
async fn clock(m: std::sync::Weak<Mirrored>) {
    loop {
        let Some(me) = m.upgrade() else { return };
        let at = me
            .tick()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        let poke = async {
            me.poke.notified().await;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = poke => {}
        }
    }
}

/// A camera of a gateway, as the relay has it.
pub struct RelayedCamera {
    gateway: String,
    camera: String,
    renditions: RwLock<BTreeMap<String, Arc<Mirrored>>>,
}

impl RelayedCamera {
    fn renditions(&self) -> Vec<Arc<Mirrored>> {
        let r = self.renditions.read().unwrap_or_else(|e| e.into_inner());
        // the program first (what viewers get), then main
        let mut v: Vec<_> = r.values().cloned().collect();
        v.sort_by_key(|m| {
            (
                m.name != crate::program::PROGRAM,
                m.name != "main",
                m.name.clone(),
            )
        });
        v
    }
}

/// Every gateway's streams at the relay.
pub struct Relayed {
    cfg: RelayedConfig,
    cameras: RwLock<BTreeMap<(String, String), Arc<RelayedCamera>>>,
}

impl Relayed {
    /// No streams yet.
    pub fn new(cfg: RelayedConfig) -> Self {
        Self {
            cfg,
            cameras: RwLock::default(),
        }
    }

    /// The rendition, made when new (within the per-gateway limit).
    pub fn rendition(
        &self,
        gateway: &str,
        camera: &str,
        rendition: &str,
    ) -> Result<Arc<Mirrored>, IntakeError> {
        if let Some(m) = self.get(gateway, camera, rendition) {
            return Ok(m);
        }
        let mut cams = self.cameras.write().unwrap_or_else(|e| e.into_inner());
        let count: usize = cams
            .iter()
            .filter(|((g, _), _)| g == gateway)
            .map(|(_, c)| c.renditions.read().map_or(0, |r| r.len()))
            .sum();
        let cam = cams
            .entry((gateway.to_string(), camera.to_string()))
            .or_insert_with(|| {
                Arc::new(RelayedCamera {
                    gateway: gateway.into(),
                    camera: camera.into(),
                    renditions: RwLock::default(),
                })
            })
            .clone();
        drop(cams);
        let mut r = cam.renditions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = r.get(rendition) {
            return Ok(m.clone());
        }
        if count >= self.cfg.max_renditions_per_gateway {
            return Err(IntakeError::TooMany(self.cfg.max_renditions_per_gateway));
        }
        info!(gateway, camera, rendition, "new live stream");
        let m = Mirrored::new(gateway, camera, rendition, &self.cfg);
        r.insert(rendition.to_string(), m.clone());
        Ok(m)
    }

    /// The rendition, if it exists.
    pub fn get(&self, gateway: &str, camera: &str, rendition: &str) -> Option<Arc<Mirrored>> {
        let cams = self.cameras.read().unwrap_or_else(|e| e.into_inner());
        let cam = cams.get(&(gateway.to_string(), camera.to_string()))?;
        let r = cam.renditions.read().unwrap_or_else(|e| e.into_inner());
        r.get(rendition).cloned()
    }

    fn camera(&self, gateway: &str, camera: &str) -> Option<Arc<RelayedCamera>> {
        self.cameras
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(gateway.to_string(), camera.to_string()))
            .cloned()
    }

    /// Every stream, for status pages: (gateway, camera, rendition).
    pub fn all(&self) -> Vec<Arc<Mirrored>> {
        let cams: Vec<_> = self
            .cameras
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        cams.iter().flat_map(|c| c.renditions()).collect()
    }

    /// Serves `GET /live/...`; `path` starts after `/live/`. `uri_suffix` (a viewer token)
    /// goes after every URI the playlists name.
    pub async fn serve(
        &self,
        path: &str,
        query: Option<&str>,
        uri_suffix: &str,
    ) -> Result<Response<MediaBody>, ServeError> {
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [""] => Ok(self.index()),
            [gw, cam, file @ ("index.m3u8" | "abr.m3u8")] => {
                let c = self
                    .camera(gw, cam)
                    .ok_or(ServeError::NotFound("no such stream"))?;
                multivariant(&c, *file == "abr.m3u8", uri_suffix).await
            }
            [gw, cam, rend, "latency.json"] => {
                let m = self
                    .get(gw, cam, rend)
                    .ok_or(ServeError::NotFound("no such stream"))?;
                let body = serde_json::to_vec(&serde_json::json!({
                    "parts": m.latency(),
                    "frames": m.frame_latency(),
                }))
                .unwrap_or_default();
                let mut r = Response::new(full(body));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r.headers_mut().insert(
                    header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                Ok(r)
            }
            [gw, cam, rend, file] => {
                let c = self
                    .camera(gw, cam)
                    .ok_or(ServeError::NotFound("no such stream"))?;
                let m = self
                    .get(gw, cam, rend)
                    .ok_or(ServeError::NotFound("no such stream"))?;
                let reports = c
                    .renditions()
                    .into_iter()
                    .filter(|o| o.name != m.name)
                    .map(|o| {
                        let uri = format!("../{}/stream.m3u8", o.name);
                        let f: hls_http::EdgeFn =
                            Arc::new(move || o.with_window(|w| hls_http::live_edge(w)));
                        (uri, f)
                    })
                    .collect();
                let opts = PlaylistOptions {
                    reports,
                    uri_suffix: uri_suffix.to_string(),
                };
                hls_http::serve_file(m, file, query, &opts).await
            }
            _ => Err(ServeError::NotFound("not found")),
        }
    }

    fn index(&self) -> Response<MediaBody> {
        let mut v = Vec::new();
        for m in self.all() {
            let (state, st, rec) = m.state();
            let mut lat: Vec<u64> = m
                .latency()
                .iter()
                .rev()
                .take(1000)
                .map(|(_, l)| *l)
                .collect();
            lat.sort_unstable();
            let q = |f: f64| {
                lat.get(((lat.len() as f64 - 1.0) * f).round() as usize)
                    .copied()
            };
            v.push(serde_json::json!({
                "gateway": m.gateway, "camera": m.camera, "rendition": m.name,
                "url": format!("/live/{}/{}/index.m3u8", m.gateway, m.camera),
                "state": format!("{state:?}").to_lowercase(),
                "parts": st.parts, "gap_parts": st.gap_parts,
                "still_parts": st.still_parts, "resumes": st.resumes,
                "parts_dropped": st.parts_dropped,
                "new_bytes": st.new_bytes, "duplicate_bytes": st.duplicate_bytes,
                "glass_to_relay_p50_ms": q(0.5), "glass_to_relay_p95_ms": q(0.95),
                "recording": rec.map(|r| serde_json::json!({
                    "parts": r.parts, "segments": r.segments, "gap_segments": r.gap_segments,
                    "parts_missing": r.parts_missing,
                    "first_seq": r.seq_range.map(|x| x.0), "last_seq": r.seq_range.map(|x| x.1),
                    // parts between the first and the last stored that are not (yet) here
                    "holes": r.seq_range.map_or(0, |(a, b)| (b - a + 1).saturating_sub(r.parts)),
                })),
            }));
        }
        let mut r = Response::new(full(serde_json::to_vec_pretty(&v).unwrap_or_default()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        r
    }

    /// Serves a recording's file: `path` after `/rec/` is
    /// `<gateway>/<camera>/<rendition>/<run>/<file>`.
    pub async fn serve_recording(&self, path: &str) -> Result<Response<MediaBody>, ServeError> {
        let dir = self
            .cfg
            .record_dir
            .as_ref()
            .ok_or(ServeError::NotFound("recordings are off"))?;
        let parts: Vec<&str> = path.split('/').collect();
        let ok = |s: &&str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if parts.len() != 5 || !parts.iter().all(ok) {
            return Err(ServeError::NotFound("no such recording file"));
        }
        let file = parts[4];
        let ct = if file.ends_with(".m3u8") {
            hls_http::M3U8
        } else if file.ends_with(".mp4") {
            "video/mp4"
        } else if file.ends_with(".m4s") {
            "video/iso.segment"
        } else {
            return Err(ServeError::NotFound("no such recording file"));
        };
        let p = parts.iter().fold(dir.clone(), |d, s| d.join(s));
        let data = tokio::fs::read(&p)
            .await
            .map_err(|_| ServeError::NotFound("no such recording file"))?;
        let mut r = Response::new(full(data));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
        let cache = if ct == hls_http::M3U8 {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        };
        r.headers_mut()
            .insert(header::CACHE_CONTROL, http::HeaderValue::from_static(cache));
        Ok(r)
    }
}

async fn multivariant(
    c: &RelayedCamera,
    all: bool,
    uri_suffix: &str,
) -> Result<Response<MediaBody>, ServeError> {
    let rends = c.renditions();
    let main = rends
        .first()
        .cloned()
        .ok_or(ServeError::NotFound("no such stream"))?;
    // a viewer that asks before the first segment is complete waits a little
    hls_http::wait_for(&*main, Duration::from_secs(4), |w| {
        w.variant(String::new()).is_some_and(|v| v.bandwidth > 0)
    })
    .await;
    let variants: Vec<_> = rends
        .iter()
        .take(if all { usize::MAX } else { 1 })
        .filter_map(|r| r.with_window(|w| w.variant(format!("{}/stream.m3u8", r.name))))
        .collect();
    if variants.is_empty() {
        return Err(ServeError::Unavailable("stream not live yet"));
    }
    let _ = (&c.gateway, &c.camera);
    let mut r = Response::new(full(render_multivariant(&variants, uri_suffix)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(hls_http::M3U8),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=1"),
    );
    Ok(r)
}
