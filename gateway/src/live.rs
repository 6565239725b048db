//! Live streams at the gateway: each camera's renditions (segmenter + part ring + playlist)
//! and their on-site LL-HLS at `/live/<camera>/...` on the proxy listener, for venue screens.
//!
//! URLs:
//! - `/live/` — JSON: cameras and their state;
//! - `/live/<camera>/index.m3u8` — multivariant playlist of the main rendition (what venue
//!   screens play);
//! - `/live/<camera>/abr.m3u8` — multivariant playlist of every rendition (main and the
//!   camera's substream), for players that switch. The renditions share a wall-clock-based
//!   timeline. (ffmpeg's HLS reader mixes streams of different variants, so index.m3u8
//!   lists one.)
//! - `/live/<camera>/<rendition>/stream.m3u8` — media playlist; blocking reload with
//!   `_HLS_msn` / `_HLS_part`;
//! - `/live/<camera>/<rendition>/init-<gen>.mp4`, `seg-<msn>.m4s`, `part-<msn>.<i>.m4s`;
//!   a request for the hinted part waits for it.

use bytes::Bytes;
use segmenter::hls::{render_multivariant, Blocking, Ready};
use segmenter::{Frame, Lookup, Rendition, RenditionConfig, Track};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// One rendition of a camera, shared by its feeder and the HTTP readers.
pub struct LiveRendition {
    name: String,
    inner: Mutex<Rendition>,
    changed: watch::Sender<u64>,
    cfg: RenditionConfig,
    spool: Option<Mutex<crate::spool::Spool>>,
}

impl LiveRendition {
    /// A rendition not registered anywhere (tests, fuzzing).
    pub fn standalone(name: &str, cfg: RenditionConfig) -> Self {
        Self::new(name, cfg)
    }

    fn new(name: &str, cfg: RenditionConfig) -> Self {
        Self {
            name: name.to_string(),
            inner: Mutex::new(Rendition::new(cfg)),
            changed: watch::channel(0).0,
            cfg,
            spool: None,
        }
    }

    fn with_spool(mut self, spool: crate::spool::Spool) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .set_keep_evicted(true);
        self.spool = Some(Mutex::new(spool));
        self
    }

    /// Part `seq` from the ring, else from the disk spool.
    pub fn part_by_seq(&self, seq: u64) -> Option<Bytes> {
        if let Some(p) = self.with(|r| r.ring().get(seq)) {
            return Some(p.data.clone());
        }
        let spool = self.spool.as_ref()?;
        let s = spool.lock().unwrap_or_else(|e| e.into_inner());
        s.get(seq).ok().flatten()
    }

    /// Rendition name (`main`, `sub`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the rendition and wakes readers if the playlist changed.
    pub fn with<R>(&self, f: impl FnOnce(&mut Rendition) -> R) -> R {
        let (r, v, evicted) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let r = f(&mut g);
            let evicted = if self.spool.is_some() {
                g.take_evicted()
            } else {
                Vec::new()
            };
            (r, g.version(), evicted)
        };
        if let (Some(spool), false) = (&self.spool, evicted.is_empty()) {
            let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
            for p in evicted {
                if let Err(e) = s.put(&p) {
                    tracing::warn!(rendition = %self.name, error = %e, "spool write failed");
                }
            }
        }
        self.changed.send_if_modified(|old| {
            let m = *old != v;
            *old = v;
            m
        });
        r
    }

    /// Sets the tracks (see [`Rendition::set_tracks`]).
    pub fn set_tracks(&self, tracks: Vec<Track>) -> Result<(), String> {
        let (res, init) = self.with(|r| {
            let res = r.set_tracks(tracks);
            (res, r.latest_init())
        });
        if let (Some(spool), Some((g, data))) = (&self.spool, init) {
            let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = s.put_init(g, &data) {
                tracing::warn!(rendition = %self.name, error = %e, "spool write failed");
            }
        }
        res
    }

    /// Packages one frame.
    pub fn frame(&self, frame: Frame) -> Result<usize, segmenter::segmenter::FrameError> {
        let wall = wall_ms();
        self.with(|r| r.handle_frame(frame, wall))
    }

    /// The input broke: discontinuity.
    pub fn discontinuity(&self) {
        self.with(|r| r.discontinuity());
    }

    /// Waits until `ready` holds or `limit` passes; true if it holds.
    async fn wait_for(
        &self,
        limit: Duration,
        mut ready: impl FnMut(&mut Rendition) -> bool,
    ) -> bool {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.with(&mut ready) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.with(&mut ready),
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A camera's state, for `/live/` and the status line.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CameraStatus {
    /// `connecting`, `live`, `reconnecting`, `waiting` (push camera with no encoder).
    pub state: String,
    /// Last problem, if any.
    pub last_error: Option<String>,
    /// Times the source (re)connected.
    pub connects: u64,
}

/// One camera: its renditions (main first).
pub struct LiveStream {
    name: String,
    renditions: Vec<Arc<LiveRendition>>,
    status: Mutex<CameraStatus>,
    pulled: bool,
    push_credentials: Mutex<Option<(String, String)>>,
}

impl LiveStream {
    /// Camera name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pulled from a URL (not pushed).
    pub fn pulled(&self) -> bool {
        self.pulled
    }

    /// Requires encoders pushing to this camera to authenticate (RTSP Basic).
    pub fn set_push_credentials(&self, user: String, password: String) {
        *self
            .push_credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((user, password));
    }

    /// Whether an RTSP `Authorization` header value lets an encoder push here.
    pub fn push_allowed(&self, authorization: Option<&str>) -> bool {
        use base64::Engine as _;
        let creds = self
            .push_credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some((user, password)) = creds.as_ref() else {
            return true;
        };
        let Some(b64) = authorization.and_then(|a| {
            let (scheme, rest) = a.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return false;
        };
        let expected = format!("{user}:{password}");
        // compare all bytes whatever the first mismatch
        raw.len() == expected.len()
            && raw
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Rendition by name.
    pub fn rendition(&self, name: &str) -> Option<Arc<LiveRendition>> {
        self.renditions.iter().find(|r| r.name == name).cloned()
    }

    /// The main rendition.
    pub fn main(&self) -> Arc<LiveRendition> {
        self.renditions[0].clone()
    }

    /// Updates the status.
    pub fn set_status(&self, f: impl FnOnce(&mut CameraStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The source (re)connected: live, one more connect.
    pub fn connected(&self) {
        self.set_status(|s| {
            s.state = "live".into();
            s.connects += 1;
        });
    }

    /// Current status.
    pub fn status(&self) -> CameraStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// All cameras of the gateway.
#[derive(Default)]
pub struct LiveStreams {
    streams: RwLock<BTreeMap<String, Arc<LiveStream>>>,
    spool: Option<(std::path::PathBuf, u64)>,
}

impl LiveStreams {
    /// Cameras whose evicted parts go to `<dir>/<camera>/<rendition>/`, at most `bytes` each.
    pub fn with_spool(dir: std::path::PathBuf, bytes: u64) -> Self {
        Self {
            streams: RwLock::default(),
            spool: Some((dir, bytes)),
        }
    }
}

impl LiveStreams {
    /// Registers a camera with the given renditions (`["main"]`, or `["main", "sub"]`); a
    /// camera already registered under the name is returned as it is.
    pub fn add(
        &self,
        name: &str,
        renditions: &[&str],
        cfg: RenditionConfig,
        pulled: bool,
    ) -> Arc<LiveStream> {
        let origin = wall_ms();
        let s = Arc::new(LiveStream {
            name: name.to_string(),
            renditions: renditions
                .iter()
                .map(|r| {
                    let mut lr = LiveRendition::new(r, cfg);
                    if let Some((dir, bytes)) = &self.spool {
                        let d = dir.join(name).join(r);
                        match crate::spool::Spool::open(&d, *bytes) {
                            Ok(s) => lr = lr.with_spool(s),
                            Err(e) => tracing::warn!(camera = name, dir = %d.display(), error = %e, "no spool"),
                        }
                    }
                    lr.with(|x| x.set_clock_origin(origin));
                    Arc::new(lr)
                })
                .collect(),
            status: Mutex::new(CameraStatus {
                state: if pulled { "connecting" } else { "waiting" }.into(),
                ..Default::default()
            }),
            pulled,
            push_credentials: Mutex::new(None),
        });
        // the first camera stored under a name stays (two pushes racing for a new name)
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert(s)
            .clone()
    }

    /// The camera `name`, added (pushed, not pulled) if missing and fewer than `max`
    /// cameras exist; one lookup under the write lock, so two encoders racing for a new
    /// name get the same camera.
    pub fn get_or_add(
        &self,
        name: &str,
        renditions: &[&str],
        cfg: RenditionConfig,
        max: usize,
    ) -> Option<Arc<LiveStream>> {
        let map = self.streams.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(name) {
            return Some(s.clone());
        }
        if map.len() >= max {
            return None;
        }
        drop(map);
        // a racing add of the same name may win between the locks; add returns the stored one
        Some(self.add(name, renditions, cfg, false))
    }

    /// A camera by name.
    pub fn get(&self, name: &str) -> Option<Arc<LiveStream>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// All cameras.
    pub fn all(&self) -> Vec<Arc<LiveStream>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// An HTTP answer from the live module: status, content type, cache policy, body.
pub struct Answer {
    /// Status code.
    pub status: http::StatusCode,
    /// Content-Type.
    pub content_type: &'static str,
    /// Cache-Control.
    pub cache: &'static str,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    fn ok(content_type: &'static str, cache: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status: http::StatusCode::OK,
            content_type,
            cache,
            body: body.into(),
        }
    }

    fn error(status: http::StatusCode, msg: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            cache: "no-store",
            body: Bytes::from(format!("{msg}\n")),
        }
    }
}

const M3U8: &str = "application/vnd.apple.mpegurl";
const MP4: &str = "video/mp4";
const M4S: &str = "video/iso.segment";
const NO_CACHE: &str = "no-cache";
const IMMUTABLE: &str = "public, max-age=60, immutable";

impl LiveStreams {
    /// Serves `GET /live/...`; `path` starts after `/live/`.
    pub async fn serve(&self, path: &str, query: Option<&str>) -> Answer {
        use http::StatusCode as S;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            [""] => self.index(),
            [cam, file @ ("index.m3u8" | "abr.m3u8")] => {
                let Some(s) = self.get(cam) else {
                    return Answer::error(S::NOT_FOUND, "no such camera");
                };
                self.multivariant(&s, *file == "abr.m3u8").await
            }
            [cam, rend, file] => {
                let Some(r) = self.get(cam).and_then(|s| s.rendition(rend)) else {
                    return Answer::error(S::NOT_FOUND, "no such camera or rendition");
                };
                serve_file(&r, file, query).await
            }
            _ => Answer::error(S::NOT_FOUND, "not found"),
        }
    }

    fn index(&self) -> Answer {
        let mut v = Vec::new();
        for s in self.all() {
            let rends: Vec<_> = s
                .renditions
                .iter()
                .map(|r| {
                    let (st, ring_bytes, ring_parts) =
                        r.with(|x| (x.stats(), x.ring().bytes(), x.ring().len()));
                    serde_json::json!({
                        "name": r.name,
                        "playlist": format!("/live/{}/{}/stream.m3u8", s.name, r.name),
                        "frames": st.frames, "dropped": st.dropped, "parts": st.parts,
                        "segments": st.segments, "discontinuities": st.discontinuities,
                        "ring_bytes": ring_bytes, "ring_parts": ring_parts,
                    })
                })
                .collect();
            v.push(serde_json::json!({
                "name": s.name,
                "url": format!("/live/{}/index.m3u8", s.name),
                "status": s.status(),
                "renditions": rends,
            }));
        }
        Answer::ok(
            "application/json",
            NO_CACHE,
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )
    }

    async fn multivariant(&self, s: &LiveStream, all: bool) -> Answer {
        // a player that asks before the first segment is complete waits a little
        let main = s.main();
        let limit = main.cfg.segmenter.segment_target * 4;
        main.wait_for(limit, |r| {
            r.variant(String::new()).is_some_and(|v| v.bandwidth > 0)
        })
        .await;
        let variants: Vec<_> = s
            .renditions
            .iter()
            .take(if all { usize::MAX } else { 1 })
            .filter_map(|r| r.with(|x| x.variant(format!("{}/stream.m3u8", r.name))))
            .collect();
        if variants.is_empty() {
            return Answer::error(http::StatusCode::SERVICE_UNAVAILABLE, "camera not live yet");
        }
        Answer::ok(M3U8, NO_CACHE, render_multivariant(&variants))
    }
}

async fn serve_file(r: &LiveRendition, file: &str, query: Option<&str>) -> Answer {
    use http::StatusCode as S;
    let part_target = r.cfg.segmenter.part_target;
    // the target duration grows with long GOPs; blocking waits follow it
    let target = r.cfg.segmenter.segment_target.max(Duration::from_secs_f64(
        r.with(|x| x.target_duration()).min(60.0),
    ));
    if file == "stream.m3u8" {
        let b = match Blocking::parse(query) {
            Ok(b) => b,
            Err(e) => return Answer::error(S::BAD_REQUEST, &e),
        };
        // RFC 8216bis: a blocking request that cannot be met within three target durations
        // gets 503
        let limit = if b.msn.is_some() {
            target * 3
        } else {
            target * 4
        };
        let mut bad = false;
        let ok = r
            .wait_for(limit, |x| match x.ready(b) {
                Ready::Now => true,
                Ready::BadRequest => {
                    bad = true;
                    true
                }
                Ready::Wait => false,
            })
            .await;
        if bad {
            return Answer::error(S::BAD_REQUEST, "_HLS_msn is more than two segments ahead");
        }
        if !ok {
            return Answer::error(S::SERVICE_UNAVAILABLE, "no media yet");
        }
        return Answer::ok(M3U8, NO_CACHE, r.with(|x| x.render()));
    }
    if let Some(g) = file
        .strip_prefix("init-")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let Ok(g) = g.parse::<u32>() else {
            return Answer::error(S::BAD_REQUEST, "bad init segment name");
        };
        return match r.with(|x| x.init(g)) {
            Some(d) => Answer::ok(MP4, IMMUTABLE, d),
            None => Answer::error(S::NOT_FOUND, "no such init segment"),
        };
    }
    let lookup: Box<dyn Fn(&mut Rendition) -> Lookup + Send + Sync> = if let Some(m) = file
        .strip_prefix("seg-")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let Ok(msn) = m.parse::<u64>() else {
            return Answer::error(S::BAD_REQUEST, "bad segment name");
        };
        Box::new(move |x| x.segment(msn))
    } else if let Some(p) = file
        .strip_prefix("part-")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let parsed = p
            .split_once('.')
            .and_then(|(m, i)| Some((m.parse::<u64>().ok()?, i.parse::<u32>().ok()?)));
        let Some((msn, idx)) = parsed else {
            return Answer::error(S::BAD_REQUEST, "bad part name");
        };
        Box::new(move |x| x.part(msn, idx))
    } else {
        return Answer::error(S::NOT_FOUND, "not found");
    };
    let mut found = None;
    let limit = (part_target * 4).max(target * 2);
    r.wait_for(limit, |x| match lookup(x) {
        Lookup::NotYet => false,
        other => {
            found = Some(other);
            true
        }
    })
    .await;
    match found {
        Some(Lookup::Ready(d)) => Answer::ok(M4S, IMMUTABLE, d),
        Some(Lookup::Gone) => Answer::error(S::NOT_FOUND, "no longer (or never) in the ring"),
        _ => Answer::error(S::SERVICE_UNAVAILABLE, "not produced in time"),
    }
}
