//! The cameras of a gateway: each camera's renditions (main, and its substream), its state
//! for status pages, and who may push to it.

use crate::program::{source_of, ProgramFeed, PROGRAM};
use crate::rendition::LiveRendition;
use segmenter::RenditionConfig;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

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

/// One camera: its renditions (main first), and its program when it has one.
pub struct LiveStream {
    name: String,
    pub(crate) renditions: Vec<Arc<LiveRendition>>,
    program: Option<Arc<ProgramFeed>>,
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

    /// Whether encoders must present credentials to push here.
    pub fn has_push_credentials(&self) -> bool {
        self.push_credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
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
        self.renditions.iter().find(|r| r.name() == name).cloned()
    }

    /// The renditions, main first.
    pub fn renditions(&self) -> &[Arc<LiveRendition>] {
        &self.renditions
    }

    /// The main rendition.
    pub fn main(&self) -> Arc<LiveRendition> {
        self.renditions[0].clone()
    }

    /// The camera's program (the rendition the relay gets), if it has one.
    pub fn program(&self) -> Option<Arc<ProgramFeed>> {
        self.program.clone()
    }

    /// The input of `rendition` broke (its source reconnected): a discontinuity, and the
    /// program takes the source again at its next start point.
    pub fn source_broke(&self, rendition: &LiveRendition) {
        rendition.discontinuity();
        if let (Some(p), Some(src)) = (&self.program, source_of(rendition.name())) {
            p.source_broke(src);
        }
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
pub struct LiveStreams {
    streams: RwLock<BTreeMap<String, Arc<LiveStream>>>,
    spool: Option<(std::path::PathBuf, u64)>,
    /// Bumped when a camera is added.
    added: tokio::sync::watch::Sender<u64>,
}

impl Default for LiveStreams {
    fn default() -> Self {
        Self {
            streams: RwLock::default(),
            spool: None,
            added: tokio::sync::watch::channel(0).0,
        }
    }
}

impl LiveStreams {
    /// Cameras whose evicted parts go to `<dir>/<camera>/<rendition>/`, at most `bytes` each:
    /// the program's (what the relay gets), or every rendition's of a camera without one.
    pub fn with_spool(dir: std::path::PathBuf, bytes: u64) -> Self {
        Self {
            spool: Some((dir, bytes)),
            ..Self::default()
        }
    }
}

impl LiveStreams {
    /// Registers a camera with the given renditions (`["main"]`, or `["main", "sub"]`, and
    /// [`PROGRAM`] for a program cut from the others); a camera already registered under
    /// the name is returned as it is.
    pub fn add(
        &self,
        name: &str,
        renditions: &[&str],
        cfg: RenditionConfig,
        pulled: bool,
    ) -> Arc<LiveStream> {
        let origin = crate::wall_ms();
        let renditions: Vec<Arc<LiveRendition>> = renditions
                .iter()
                .map(|r| {
                    let mut lr = LiveRendition::new(r, cfg);
                    // only what goes to the relay needs its evicted parts for a backfill
                    let sent = *r == PROGRAM || !renditions.contains(&PROGRAM);
                    if let (Some((dir, bytes)), true) = (&self.spool, sent) {
                        let d = dir.join(name).join(r);
                        match crate::spool::Spool::open(&d, *bytes) {
                            Ok(s) => lr = lr.with_spool(s),
                            Err(e) => tracing::warn!(camera = name, dir = %d.display(), error = %e, "no spool"),
                        }
                    }
                    lr.with(|x| x.set_clock_origin(origin));
                    Arc::new(lr)
                })
                .collect();
        let program = renditions
            .iter()
            .find(|r| r.name() == PROGRAM)
            .map(|r| Arc::new(ProgramFeed::new(r.clone())));
        let s = Arc::new(LiveStream {
            name: name.to_string(),
            renditions,
            program,
            status: Mutex::new(CameraStatus {
                state: if pulled { "connecting" } else { "waiting" }.into(),
                ..Default::default()
            }),
            pulled,
            push_credentials: Mutex::new(None),
        });
        // the first camera stored under a name stays (two pushes racing for a new name)
        let stored = self
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_insert(s)
            .clone();
        self.added.send_modify(|n| *n += 1);
        stored
    }

    /// A receiver that changes whenever a camera is added.
    pub fn added(&self) -> tokio::sync::watch::Receiver<u64> {
        self.added.subscribe()
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
