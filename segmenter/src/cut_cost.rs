//! What a source's lighter cuts would cost, measured from its frames: the low-bandwidth
//! controller must know what the keyframes and audio levels need before it picks them,
//! while they are not on air. Over the last [`SPAN_S`] seconds of the source's own media
//! time: its keyframes' bytes, its audio's bytes, and its video frame rate (each frame left
//! out becomes a skipped picture of about [`SKIPPED_BYTES`]).

use crate::media::{Frame, Track};
use crate::program::STILL_EVERY;
use std::collections::VecDeque;

/// The span measured, seconds of media time.
pub const SPAN_S: f64 = 8.0;

/// What a skipped picture costs in a part: its few bytes and its sample entry.
pub const SKIPPED_BYTES: f64 = 48.0;

/// Less than this much media time measured: no figure yet.
const MIN_SPAN_S: f64 = 2.0;

/// One track's frames: (media time s, bytes, keyframe).
#[derive(Debug, Default)]
struct Window(VecDeque<(f64, usize, bool)>);

impl Window {
    fn push(&mut self, t: f64, bytes: usize, key: bool) {
        // a jump back (a new timeline) starts over
        if self.0.back().is_some_and(|(last, _, _)| t < *last) {
            self.0.clear();
        }
        self.0.push_back((t, bytes, key));
        while self
            .0
            .front()
            .is_some_and(|(first, _, _)| t - first > SPAN_S)
        {
            self.0.pop_front();
        }
    }

    /// The span covered, seconds (from the first frame's start to the last's).
    fn span(&self) -> Option<f64> {
        let (first, last) = (self.0.front()?.0, self.0.back()?.0);
        (last - first >= MIN_SPAN_S).then_some(last - first)
    }

    /// Bytes and frames over the span, keyframes only or all, without the last frame (the
    /// span ends where it starts).
    fn sum(&self, keys_only: bool) -> (f64, f64) {
        let n = self.0.len().saturating_sub(1);
        self.0
            .iter()
            .take(n)
            .filter(|(_, _, k)| *k || !keys_only)
            .fold((0.0, 0.0), |(b, c), (_, bytes, _)| {
                (b + *bytes as f64, c + 1.0)
            })
    }
}

/// A source's lighter cuts, measured.
#[derive(Debug, Default)]
pub struct CutCost {
    video: Window,
    audio: Window,
}

impl CutCost {
    /// A frame of the source, whose track is `track`.
    pub fn frame(&mut self, track: &Track, frame: &Frame) {
        let t = frame.dts as f64 / f64::from(track.timescale.max(1));
        if track.codec.is_video() {
            self.video.push(t, frame.data.len(), frame.keyframe);
        } else {
            self.audio.push(t, frame.data.len(), true);
        }
    }

    /// (keyframes bytes/s, keyframes per second, video frames per second).
    fn video(&self) -> Option<(f64, f64, f64)> {
        let span = self.video.span()?;
        let (key_bytes, keys) = self.video.sum(true);
        let (_, frames) = self.video.sum(false);
        Some((key_bytes / span, keys / span, frames / span))
    }

    /// The audio's bytes/s (0 without audio).
    fn audio(&self) -> f64 {
        self.audio
            .span()
            .map_or(0.0, |span| self.audio.sum(false).0 / span)
    }

    /// What the keyframes cut costs, bytes/s: every keyframe, the audio, and a skipped
    /// picture for every other frame.
    pub fn keyframes(&self) -> Option<f64> {
        let (key_rate, keys, frames) = self.video()?;
        Some(key_rate + self.audio() + (frames - keys).max(0.0) * SKIPPED_BYTES)
    }

    /// What the audio cut costs, bytes/s: the audio, a keyframe at most every
    /// [`STILL_EVERY`] seconds, and skipped pictures for the rest.
    pub fn audio_cut(&self) -> Option<f64> {
        let (key_rate, keys, frames) = self.video()?;
        let per_key = if keys > 0.0 { key_rate / keys } else { 0.0 };
        let stills = key_rate.min(per_key / STILL_EVERY as f64);
        Some(stills + self.audio() + frames * SKIPPED_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_media::{audio_track, video_track};
    use bytes::Bytes;

    fn frame(track: usize, dts: i64, key: bool, len: usize) -> Frame {
        Frame {
            track,
            pts: dts,
            dts,
            keyframe: key,
            data: Bytes::from(vec![0; len]),
        }
    }

    #[test]
    fn keyframes_and_audio_are_measured_over_the_last_seconds() {
        let (v, a) = (video_track(640), audio_track());
        let mut c = CutCost::default();
        // 25 fps, a 10 kB keyframe a second and 1 kB frames; 4 kB/s of audio
        for i in 0..250i64 {
            let key = i % 25 == 0;
            c.frame(
                &v,
                &frame(0, i * 3600, key, if key { 10_000 } else { 1000 }),
            );
            if i == 50 {
                assert!(c.keyframes().is_some(), "2 s measured");
            }
        }
        assert!(c.keyframes().is_some());
        for i in 0..500i64 {
            c.frame(&a, &frame(1, i * 960, true, 80));
        }
        let k = c.keyframes().unwrap();
        // 10 kB/s of keyframes + 4 kB/s of audio + 24 skipped pictures a second
        assert!(
            (k - (10_000.0 + 4000.0 + 24.0 * SKIPPED_BYTES)).abs() < 700.0,
            "{k}"
        );
        let au = c.audio_cut().unwrap();
        assert!(
            (au - (2500.0 + 4000.0 + 25.0 * SKIPPED_BYTES)).abs() < 400.0,
            "{au}"
        );
        // a new timeline starts over
        c.frame(&v, &frame(0, 0, true, 10_000));
        assert_eq!(c.keyframes(), None);
    }
}
