//! One live rendition of a camera, shared by its feeder (a camera task) and its readers
//! (the on-site LL-HLS server, the contribution to the relay): the sans-IO
//! [`segmenter::Rendition`] behind a mutex, a watch that wakes readers when it changes, and
//! the optional disk spool for parts leaving its ring.

use crate::hls_http::WindowSource;
use bytes::Bytes;
use segmenter::window::StreamInfo;
use segmenter::{Chunk, Frame, LiveWindow, Part, Rendition, RenditionConfig, Track};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One rendition of a camera, shared by its feeder and its readers.
pub struct LiveRendition {
    name: String,
    inner: Mutex<Rendition>,
    changed: watch::Sender<u64>,
    pub(crate) cfg: RenditionConfig,
    spool: Option<Mutex<crate::spool::Spool>>,
    /// This rendition's timeline (random per gateway start): the relay tells a restarted
    /// gateway's parts, numbered from 0 again, from the earlier ones.
    run: u64,
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
            run: fastrand::u64(1..),
        }
    }

    pub(crate) fn with_spool(mut self, spool: crate::spool::Spool) -> Self {
        self.inner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .window()
            .set_keep_evicted(true);
        self.spool = Some(Mutex::new(spool));
        self
    }

    /// Rendition name (`main`, `sub`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The timeline id.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The settings.
    pub fn config(&self) -> RenditionConfig {
        self.cfg
    }

    /// Runs `f` on the rendition and wakes readers if anything they see changed.
    pub fn with<R>(&self, f: impl FnOnce(&mut Rendition) -> R) -> R {
        let (r, v, evicted) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let r = f(&mut g);
            let evicted = if self.spool.is_some() {
                g.window().take_evicted()
            } else {
                Vec::new()
            };
            (r, g.window_ref().version(), evicted)
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

    /// What the rendition's newest parts cost, bytes per second over up to `span` of them
    /// (None: less than a second of parts, or none captured in the last 1.5 s: not live).
    pub fn recent_rate(&self, span: std::time::Duration) -> Option<f64> {
        let now = crate::wall_ms();
        self.with(|r| {
            let (mut bytes, mut secs, mut newest) = (0usize, 0.0, 0);
            for p in r.window().ring().iter().rev().filter(|p| !p.gap) {
                newest = newest.max(p.capture_ms);
                bytes += p.data.len();
                secs += p.duration;
                if secs >= span.as_secs_f64() {
                    break;
                }
            }
            // a source that stopped is noticed within a second and a half, not after `span`
            let live = now.saturating_sub(newest) <= 1500;
            (secs >= 1.0 && live).then(|| bytes as f64 / secs)
        })
    }

    /// Sets the tracks (see [`Rendition::set_tracks`]).
    pub fn set_tracks(&self, tracks: Vec<Track>) -> Result<(), String> {
        let (res, init) = self.with(|r| {
            let res = r.set_tracks(tracks);
            (res, r.window().latest_init())
        });
        self.spool_init(init);
        res
    }

    fn spool_init(&self, init: Option<(u32, Bytes)>) {
        if let (Some(spool), Some((g, data))) = (&self.spool, init) {
            let mut s = spool.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = s.put_init(g, &data) {
                tracing::warn!(rendition = %self.name, error = %e, "spool write failed");
            }
        }
    }

    /// The input comes from another source from now on (see
    /// [`segmenter::Rendition::switch_source`]).
    pub fn switch_source(&self, tracks: Vec<Track>) -> Result<(), String> {
        let (res, init) = self.with(|r| {
            let res = r.switch_source(tracks);
            (res, r.window().latest_init())
        });
        self.spool_init(init);
        res
    }

    /// Packages one frame that arrived now.
    pub fn frame(&self, frame: Frame) -> Result<usize, segmenter::segmenter::FrameError> {
        let wall = crate::wall_ms();
        self.with(|r| r.handle_frame(frame, wall))
    }

    /// The input broke: discontinuity.
    pub fn discontinuity(&self) {
        self.with(|r| r.discontinuity());
    }

    /// Keeps the chunks made from now on for [`LiveRendition::take_chunks`].
    pub fn keep_chunks(&self) {
        self.with(|r| r.keep_chunks());
    }

    /// The chunks made since the last call, and how many were dropped meanwhile.
    pub fn take_chunks(&self) -> (Vec<Chunk>, u64) {
        self.with(|r| r.take_chunks())
    }

    /// The newest init segment and what the multivariant playlist says of the rendition.
    pub fn init(&self) -> Option<(u32, Bytes, StreamInfo)> {
        self.with(|r| {
            let w = r.window();
            let (g, d) = w.latest_init()?;
            Some((g, d, w.info().clone()))
        })
    }

    /// Init segment `generation`, from the window or the spool.
    pub fn init_generation(&self, generation: u32) -> Option<Bytes> {
        if let Some(d) = self.with(|r| r.window().init(generation)) {
            return Some(d);
        }
        let spool = self.spool.as_ref()?;
        let s = spool.lock().unwrap_or_else(|e| e.into_inner());
        s.get_init(generation).ok().flatten()
    }

    /// Part `seq`, whole: from the ring, else from the disk spool.
    pub fn part(&self, seq: u64) -> Option<Arc<Part>> {
        if let Some(p) = self.with(|r| r.window().part_by_seq(seq)) {
            return Some(p);
        }
        let spool = self.spool.as_ref()?;
        let s = spool.lock().unwrap_or_else(|e| e.into_inner());
        s.get(seq).ok().flatten().map(Arc::new)
    }

    /// Bytes `offset..offset + len` of part `seq` (which may still be growing).
    pub fn bytes(&self, seq: u64, offset: u64, len: u64) -> Option<Bytes> {
        if let Some(b) = self.with(|r| r.window().bytes(seq, offset, len)) {
            return Some(b);
        }
        let p = self.part(seq)?;
        let (a, b) = (
            usize::try_from(offset).ok()?,
            usize::try_from(offset + len).ok()?,
        );
        (b <= p.data.len()).then(|| p.data.slice(a..b))
    }

    /// How full its spool is: (bytes, most bytes); None without a spool.
    pub fn spool_fill(&self) -> Option<(u64, u64)> {
        let s = self
            .spool
            .as_ref()?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some((s.bytes(), s.max_bytes()))
    }

    /// Removes the spooled parts before `seq`: (parts, bytes) removed. The files go after
    /// the spool's lock is released; this blocks on the disk (call it off the runtime).
    pub fn purge_spool_before(&self, seq: u64) -> (u64, u64) {
        let Some(spool) = &self.spool else {
            return (0, 0);
        };
        let (files, bytes) = spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_before(seq);
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        (files.len() as u64, bytes)
    }

    /// The oldest part still held (ring or spool).
    pub fn oldest_seq(&self) -> u64 {
        let ring = self.with(|r| {
            let w = r.window();
            w.next_seq() - w.ring().len() as u64
        });
        let spooled = self.spool.as_ref().and_then(|s| {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .range()
                .map(|(a, _)| a)
        });
        spooled.map_or(ring, |s| s.min(ring))
    }
}

impl WindowSource for LiveRendition {
    fn with_window<R>(&self, f: impl FnOnce(&mut LiveWindow) -> R) -> R {
        self.with(|r| f(r.window()))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
