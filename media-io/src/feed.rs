//! From retina's frames and parameters to the segmenter's tracks and frames, for one
//! rendition: shared by pulled cameras and the RTSP push listener.

use crate::program::{source_of, ProgramFeed};
use crate::rendition::LiveRendition;
use retina::codec::{CodecItem, ParametersRef};
use segmenter::program::Source;
use segmenter::segmenter::FrameError;
use segmenter::{Frame, Track};
use std::sync::Arc;
use tracing::{debug, warn};

/// A segmenter track from retina's parameters; `clock_rate` is the RTP clock of the stream.
pub fn track_from(params: ParametersRef<'_>, clock_rate: u32) -> Option<Track> {
    match params {
        ParametersRef::Video(p) => {
            let (w, h) = p.pixel_dimensions();
            let (w, h) = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
            let config = bytes::Bytes::copy_from_slice(p.extra_data());
            let codec = p.rfc6381_codec();
            let mut t = if codec.starts_with("avc1") {
                Track::h264(config, w, h)
            } else if codec.starts_with("hvc1") || codec.starts_with("hev1") {
                Track::h265(config, w, h)
            } else {
                return None;
            };
            t.timescale = clock_rate;
            Some(t)
        }
        ParametersRef::Audio(p) => {
            if !p.rfc6381_codec().is_some_and(|c| c.starts_with("mp4a")) {
                return None;
            }
            let mut t = Track::aac(
                bytes::Bytes::copy_from_slice(p.extra_data()),
                p.clock_rate(),
                p.channels().get(),
            );
            t.timescale = clock_rate;
            Some(t)
        }
        _ => None,
    }
}

/// Feeds one rendition from retina items: keeps the track list in step with the source's
/// parameters, drops video after packet loss until the next keyframe, and logs problems
/// once per kind with the camera's name.
pub struct Feed {
    camera: String,
    rendition: Arc<LiveRendition>,
    /// retina stream id → (our track index, RTP clock rate)
    map: Vec<(usize, usize, u32)>,
    tracks: Vec<Option<Track>>,
    applied: bool,
    resync: bool,
    last_error: Option<String>,
    dts: segmenter::media::DtsFromPts,
    /// The camera's program and what this rendition is to it, if it has one.
    program: Option<(Arc<ProgramFeed>, Source)>,
    /// The tracks applied, for the program.
    applied_tracks: Vec<Track>,
    /// Frames packaged.
    pub frames: u64,
}

impl Feed {
    /// `streams`: (retina stream id, is video, RTP clock rate) of the streams set up, video first.
    pub fn new(
        camera: &str,
        rendition: Arc<LiveRendition>,
        streams: &[(usize, bool, u32)],
    ) -> Self {
        let map = streams
            .iter()
            .enumerate()
            .map(|(i, (id, _, clock))| (*id, i, *clock))
            .collect();
        if !streams.iter().any(|(_, v, _)| *v) {
            warn!(camera, "the camera sends no video: packaging audio only");
        }
        Self {
            camera: camera.to_string(),
            rendition,
            map,
            tracks: vec![None; streams.len()],
            applied: false,
            resync: false,
            last_error: None,
            dts: Default::default(),
            program: None,
            applied_tracks: Vec::new(),
            frames: 0,
        }
    }

    /// Offers every frame to the camera's program too (if it has one, and this rendition
    /// is one of its sources).
    pub fn on_air(mut self, program: Option<Arc<ProgramFeed>>) -> Self {
        self.program = program.zip(source_of(self.rendition.name()));
        self
    }

    fn note(&mut self, e: String) {
        if self.last_error.as_deref() != Some(e.as_str()) {
            warn!(camera = %self.camera, rendition = self.rendition.name(), "{e}");
            self.last_error = Some(e);
        }
    }

    /// Updates a stream's parameters (at start, and when a frame says they changed).
    pub fn parameters(&mut self, stream_id: usize, params: Option<ParametersRef<'_>>) {
        let Some(&(_, idx, clock)) = self.map.iter().find(|(id, _, _)| *id == stream_id) else {
            return;
        };
        let t = params.and_then(|p| track_from(p, clock));
        if t.is_some() && self.tracks[idx] != t {
            self.tracks[idx] = t;
            self.applied = false;
        }
    }

    fn apply(&mut self) -> bool {
        if self.applied {
            return true;
        }
        // every stream set up needs its parameters before the init segment can be written
        if self.tracks.iter().any(Option::is_none) {
            return false;
        }
        let tracks: Vec<Track> = self.tracks.iter().flatten().cloned().collect();
        match self.rendition.set_tracks(tracks.clone()) {
            Ok(()) => {
                self.applied = true;
                self.applied_tracks = tracks;
                true
            }
            Err(e) => {
                self.note(format!("unusable stream parameters: {e}"));
                false
            }
        }
    }

    /// One item from the source.
    pub fn item(&mut self, item: CodecItem) {
        let (stream_id, frame_ts, key, loss, data, video) = match item {
            CodecItem::VideoFrame(f) => {
                let key = f.is_random_access_point();
                (
                    f.stream_id(),
                    f.timestamp().timestamp(),
                    key,
                    f.loss(),
                    f.into_data(),
                    true,
                )
            }
            CodecItem::AudioFrame(f) => (
                f.stream_id(),
                f.timestamp().timestamp(),
                true,
                f.loss(),
                f.data().to_vec(),
                false,
            ),
            _ => return,
        };
        let Some(&(_, idx, _)) = self.map.iter().find(|(id, _, _)| *id == stream_id) else {
            return;
        };
        // retina marks only IDR pictures of H.265 as random access points; a CRA or BLA
        // picture (x265's default open GOP sends IDR only at the start) starts a decodable
        // stream just as well, and segments must be able to start there
        let key = key
            || (video
                && self.tracks[idx]
                    .as_ref()
                    .is_some_and(|t| t.codec == segmenter::Codec::H265)
                && segmenter::media::hevc_irap(&data));
        if video && loss > 0 {
            debug!(camera = %self.camera, loss, "video packets lost: waiting for a keyframe");
            self.resync = true;
        }
        if video && self.resync {
            if !key {
                return;
            }
            self.resync = false;
        }
        if !self.apply() {
            if self.tracks[idx].is_none() && video {
                self.note("no SPS/PPS from the camera yet: waiting for them".into());
            }
            return;
        }
        let frame = Frame {
            track: idx,
            pts: frame_ts,
            dts: frame_ts,
            keyframe: key,
            data: data.into(),
        };
        let frames = if video {
            self.dts.push(frame)
        } else {
            vec![frame]
        };
        for frame in frames {
            if let Some((program, source)) = &self.program {
                program.offer(*source, &self.applied_tracks, frame.clone());
            }
            match self.rendition.frame(frame) {
                Ok(_) => {
                    self.frames += 1;
                    self.last_error = None;
                }
                Err(FrameError::WaitingForKeyframe) => {}
                Err(e) => self.note(format!("frame dropped: {e}")),
            }
        }
    }
}
