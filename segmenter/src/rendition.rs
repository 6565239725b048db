//! A camera's rendition at the gateway: the segmenter and the window it feeds, kept in
//! step. Shells feed it frames and serve from it; it never waits and never does I/O.

use crate::segmenter::{FrameError, Output, Segmenter, SegmenterConfig, Stats};
use crate::window::{LiveWindow, StreamInfo, WindowConfig};
use crate::{Chunk, Frame, Track};
use std::collections::VecDeque;

/// Rendition settings.
#[derive(Debug, Clone, Copy)]
pub struct RenditionConfig {
    /// Part and segment targets.
    pub segmenter: SegmenterConfig,
    /// The ring's byte bound.
    pub ring_bytes: usize,
    /// Segments listed in the playlist.
    pub playlist_segments: usize,
}

impl Default for RenditionConfig {
    fn default() -> Self {
        Self {
            segmenter: SegmenterConfig::default(),
            ring_bytes: 32 << 20,
            playlist_segments: 7,
        }
    }
}

impl RenditionConfig {
    /// The window's settings.
    pub fn window(&self) -> WindowConfig {
        let part = self.segmenter.part_target.as_secs_f64();
        WindowConfig {
            part_target: part,
            segment_target: self.segmenter.segment_target.as_secs_f64(),
            ring_bytes: self.ring_bytes,
            playlist_segments: self.playlist_segments,
            part_hold_back: part * 3.0,
            min_target_duration: 0.0,
        }
    }
}

/// Most chunks kept for [`Rendition::take_chunks`] between two calls: a reader that falls
/// further behind reads whole parts from the ring instead.
const OUTBOX_MAX: usize = 4096;

/// One rendition of a camera.
pub struct Rendition {
    seg: Segmenter,
    window: LiveWindow,
    /// Chunks made since the last [`Rendition::take_chunks`], when someone reads them.
    outbox: Option<VecDeque<Chunk>>,
    /// Chunks dropped from a full outbox.
    outbox_dropped: u64,
}

impl Rendition {
    /// An empty rendition.
    pub fn new(cfg: RenditionConfig) -> Self {
        Self {
            seg: Segmenter::new(cfg.segmenter),
            window: LiveWindow::new(cfg.window(), 0),
            outbox: None,
            outbox_dropped: 0,
        }
    }

    /// See [`Segmenter::set_clock_origin`].
    pub fn set_clock_origin(&mut self, origin_ms: u64) {
        self.seg.set_clock_origin(origin_ms);
    }

    /// Keeps every chunk made from now on until [`Rendition::take_chunks`] (for the
    /// contribution to the relay).
    pub fn keep_chunks(&mut self) {
        self.outbox.get_or_insert_with(VecDeque::new);
    }

    /// The chunks made since the last call (oldest first), and how many were dropped
    /// because the outbox was full.
    pub fn take_chunks(&mut self) -> (Vec<Chunk>, u64) {
        let chunks = self
            .outbox
            .as_mut()
            .map(|o| o.drain(..).collect())
            .unwrap_or_default();
        (chunks, std::mem::take(&mut self.outbox_dropped))
    }

    /// Sets the tracks (see [`Segmenter::set_tracks`]).
    pub fn set_tracks(&mut self, tracks: Vec<Track>) -> Result<(), String> {
        let r = self.seg.set_tracks(tracks);
        let codecs: Vec<String> = self.seg.tracks().filter_map(Track::rfc6381).collect();
        let resolution = self
            .seg
            .tracks()
            .find(|t| t.codec.is_video())
            .map(|t| (t.width, t.height));
        self.window.set_info(StreamInfo {
            codecs: codecs.join(","),
            resolution,
        });
        self.drain();
        r
    }

    /// The input comes from another source from now on (see
    /// [`crate::program::Action::Switch`]): its tracks, with a new init segment when they
    /// differ, and a discontinuity in any case (sources have unrelated timestamps).
    /// The new source continues the output timeline where the old one ends
    /// ([`Segmenter::splice_next`]): a player sees no hole at a switch.
    pub fn switch_source(&mut self, tracks: Vec<Track>) -> Result<(), String> {
        self.seg.splice_next(true);
        if self.seg.tracks().eq(tracks.iter()) {
            self.discontinuity();
            Ok(())
        } else {
            let r = self.set_tracks(tracks);
            if r.is_err() {
                self.seg.splice_next(false);
            }
            r
        }
    }

    /// Takes a frame; returns how many parts it completed.
    pub fn handle_frame(&mut self, frame: Frame, wall_ms: u64) -> Result<usize, FrameError> {
        self.seg.handle_frame(frame, wall_ms)?;
        Ok(self.drain())
    }

    /// The input broke (see [`Segmenter::discontinuity`]).
    pub fn discontinuity(&mut self) {
        self.seg.discontinuity();
        self.drain();
        self.window.close_segment();
    }

    /// End of input: flushes the open part.
    pub fn finish(&mut self) {
        self.seg.finish();
        self.drain();
        self.window.close_segment();
    }

    fn drain(&mut self) -> usize {
        let mut parts = 0;
        while let Some(o) = self.seg.poll_output() {
            match o {
                Output::Init { generation, data } => self.window.add_init(generation, data),
                Output::Chunk(c) => {
                    match self.window.push_chunk(&c) {
                        Ok(Some(_)) => parts += 1,
                        Ok(None) => {}
                        // the segmenter makes chunks in order: this cannot happen
                        Err(e) => tracing::error!(error = %e, "segmenter chunk refused"),
                    }
                    if let Some(o) = self.outbox.as_mut() {
                        if o.len() >= OUTBOX_MAX {
                            o.pop_front();
                            self.outbox_dropped += 1;
                        }
                        o.push_back(c);
                    }
                }
            }
        }
        parts
    }

    /// Segmenter counters.
    pub fn stats(&self) -> Stats {
        self.seg.stats()
    }

    /// The current tracks.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.seg.tracks()
    }

    /// What viewers can fetch.
    pub fn window(&mut self) -> &mut LiveWindow {
        &mut self.window
    }

    /// What viewers can fetch, read only.
    pub fn window_ref(&self) -> &LiveWindow {
        &self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avcc_from_parameter_sets;
    use crate::window::Lookup;
    use bytes::Bytes;

    #[test]
    fn frames_become_parts_in_the_window_and_chunks_for_readers() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
        let avcc = avcc_from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]]).unwrap();
        let mut r = Rendition::new(RenditionConfig::default());
        r.keep_chunks();
        r.set_tracks(vec![Track::h264(avcc, 640, 360)]).unwrap();
        let mut parts = 0;
        for i in 0..100i64 {
            let f = Frame {
                track: 0,
                pts: i * 3600,
                dts: i * 3600,
                keyframe: i % 25 == 0,
                data: Bytes::from(vec![0u8, 0, 0, 1, 0x65]),
            };
            parts += r
                .handle_frame(f, 1_795_000_000_000 + i as u64 * 40)
                .unwrap();
        }
        assert!(parts >= 18, "{parts}");
        let (chunks, dropped) = r.take_chunks();
        assert_eq!(dropped, 0);
        // a chunk per frame, the parts' last chunks carry their durations
        assert!(chunks.len() >= 95, "{}", chunks.len());
        let lasts: Vec<_> = chunks.iter().filter(|c| c.last).collect();
        assert_eq!(lasts.len(), parts);
        assert!(lasts.iter().all(|c| c.end_us == 200_000), "{lasts:?}");
        assert!(chunks[0].part.segment.is_some() && chunks[0].part.independent);
        assert_eq!(chunks[0].part.capture_ms, 1_795_000_000_000);
        let text = r.window().render(&Default::default());
        assert!(
            text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-3.0.m4s\",INDEPENDENT=YES"),
            "{text}"
        );
        assert!(matches!(r.window().part(0, 0), Lookup::Ready(_)));
        assert!(r
            .window()
            .variant("main/stream.m3u8".into())
            .is_some_and(|v| v.codecs == "avc1.42c01e"));
    }
}
