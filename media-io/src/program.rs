//! A camera's program at the gateway: the rendition the relay gets, cut from the camera's
//! sources (`main`, `sub`, `transcode`) at the level the low-bandwidth controller chose. The
//! sources' feeds offer every frame; [`segmenter::program::Program`] decides what goes on
//! air, and this packages it into the `program` rendition.

use crate::rendition::LiveRendition;
use segmenter::cut_cost::CutCost;
use segmenter::h264_skip::SkipCoder;
use segmenter::program::{Action, Program, Selection, Source};
use segmenter::{Frame, Track};
use std::sync::{Arc, Mutex};

/// The rendition name of a camera's program.
pub const PROGRAM: &str = "program";

/// Each source and the name of the camera's rendition it is.
const SOURCES: [(Source, &str); 3] = [
    (Source::Main, "main"),
    (Source::Sub, "sub"),
    (Source::Transcode, "transcode"),
];

/// The source a rendition of a camera is, by its name.
pub fn source_of(rendition: &str) -> Option<Source> {
    SOURCES
        .iter()
        .find(|(_, n)| *n == rendition)
        .map(|(s, _)| *s)
}

/// The name of the rendition that is `source`.
pub fn rendition_of(source: Source) -> &'static str {
    SOURCES
        .iter()
        .find(|(s, _)| *s == source)
        .map_or("main", |(_, n)| n)
}

/// A camera's program: the selector and the rendition it feeds.
pub struct ProgramFeed {
    rendition: Arc<LiveRendition>,
    program: Mutex<Program>,
    /// Per source (in [`SOURCES`]' order): what its lighter cuts would cost.
    meters: Mutex<[Meter; 3]>,
}

/// A source's lighter cuts: measured, and whether its video takes skipped pictures.
#[derive(Default)]
struct Meter {
    cost: CutCost,
    /// The video track last seen, and whether skipped pictures can follow it.
    video: Option<(Track, bool)>,
}

/// What a source's keyframes and audio cuts cost, bytes/s (None: the source cannot be cut
/// so, or is not measured yet).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LightCosts {
    /// The keyframes cut.
    pub keyframes: Option<f64>,
    /// The audio cut (a still picture now and then).
    pub audio: Option<f64>,
}

impl ProgramFeed {
    /// A program into `rendition`, on the main stream.
    pub fn new(rendition: Arc<LiveRendition>) -> Self {
        let mut program = Program::new();
        program.select(Selection {
            source: Source::Main,
            cut: segmenter::program::Cut::All,
        });
        Self {
            rendition,
            program: Mutex::new(program),
            meters: Mutex::default(),
        }
    }

    /// What `source`'s keyframes and audio cuts cost now. Offered only when its video
    /// takes skipped pictures (H.264 the skipped-picture coder can follow): without them
    /// those cuts would leave holes in the video.
    pub fn light_costs(&self, source: Source) -> LightCosts {
        let meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = SOURCES
            .iter()
            .position(|(s, _)| *s == source)
            .and_then(|i| meters.get(i))
        else {
            return LightCosts::default();
        };
        if !m.video.as_ref().is_some_and(|(_, skips)| *skips) {
            return LightCosts::default();
        }
        LightCosts {
            keyframes: m.cost.keyframes(),
            audio: m.cost.audio_cut(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Program> {
        self.program.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The program's rendition.
    pub fn rendition(&self) -> &Arc<LiveRendition> {
        &self.rendition
    }

    /// Selects what goes on air (it takes over at the source's next start point).
    pub fn select(&self, selection: Selection) {
        self.lock().select(selection);
    }

    /// What is on air, and what was selected.
    pub fn state(&self) -> (Option<Selection>, Option<Selection>) {
        let p = self.lock();
        (p.on_air(), p.wanted())
    }

    /// `source`'s timeline broke (the camera reconnected).
    pub fn source_broke(&self, source: Source) {
        self.lock().source_broke(source);
    }

    /// A frame of `source` with the source's `tracks`.
    pub fn offer(&self, source: Source, tracks: &[Track], frame: Frame) {
        if let (Some(i), Some(track)) = (
            SOURCES.iter().position(|(s, _)| *s == source),
            tracks.get(frame.track),
        ) {
            let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
            let m = &mut meters[i];
            if track.codec.is_video() && m.video.as_ref().is_none_or(|(t, _)| t != track) {
                m.video = Some((track.clone(), SkipCoder::new(track).is_ok()));
            }
            m.cost.frame(track, &frame);
        }
        let mut p = self.lock();
        match p.offer(source, tracks, frame) {
            Action::Drop => {}
            Action::Pass(f) => {
                let _ = self.rendition.frame(f);
            }
            Action::Switch { tracks, frame } => {
                if let Err(e) = self.rendition.switch_source(tracks) {
                    // off air until the source's next start point, which tries again
                    tracing::warn!(rendition = PROGRAM, error = %e, "program: unusable tracks");
                    p.source_broke(source);
                    return;
                }
                // the moment a level change reaches the stream (its step waited for this
                // keyframe): the low-bandwidth bench times it
                tracing::info!(rendition = PROGRAM, ?source, "program: a new source on air");
                let _ = self.rendition.frame(frame);
            }
        }
    }
}
