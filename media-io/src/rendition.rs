//! One live rendition of a camera, shared by its feeder (a camera task) and its readers
//! (the on-site LL-HLS server, the contribution to the relay): the sans-IO
//! [`segmenter::Rendition`] behind a mutex, a watch that wakes readers when it changes, and
//! the optional disk spool for parts leaving its ring.

use bytes::Bytes;
use segmenter::{Frame, Rendition, RenditionConfig, Track};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// One rendition of a camera, shared by its feeder and the HTTP readers.
pub struct LiveRendition {
    name: String,
    inner: Mutex<Rendition>,
    changed: watch::Sender<u64>,
    pub(crate) cfg: RenditionConfig,
    spool: Option<Mutex<crate::spool::Spool>>,
}

impl LiveRendition {
    /// A rendition not registered anywhere (tests, fuzzing).
    pub fn standalone(name: &str, cfg: RenditionConfig) -> Self {
        Self::new(name, cfg)
    }

    pub(crate) fn new(name: &str, cfg: RenditionConfig) -> Self {
        Self {
            name: name.to_string(),
            inner: Mutex::new(Rendition::new(cfg)),
            changed: watch::channel(0).0,
            cfg,
            spool: None,
        }
    }

    pub(crate) fn with_spool(mut self, spool: crate::spool::Spool) -> Self {
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
        let wall = crate::wall_ms();
        self.with(|r| r.handle_frame(frame, wall))
    }

    /// The input broke: discontinuity.
    pub fn discontinuity(&self) {
        self.with(|r| r.discontinuity());
    }

    /// Waits until `ready` holds or `limit` passes; true if it holds.
    pub async fn wait_for(
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
