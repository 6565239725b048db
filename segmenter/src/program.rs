//! A camera's program: one rendition cut from its sources at the level the low-bandwidth
//! controller chose (the main stream, the second stream, a transcode, the keyframes of one
//! of them, or the audio alone), so a player of the program keeps playing across level
//! changes.
//!
//! Every source's frames are offered with the source's tracks; the program passes those of
//! the selected source, cut as selected, with their track numbers in the program. A new
//! selection takes over at a point a player can start at: the new source's next video
//! keyframe (its next frame when it has no video; the next audio frame for audio alone).
//! Until then the old selection stays on air, so the program never has a hole a switch
//! made. The switch is a new source for the rendition ([`Action::Switch`]): new tracks (a
//! new init segment) or, with equal tracks, a discontinuity, since sources have unrelated
//! timestamps.

use crate::media::{Frame, Track};

/// Where a program's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The camera's main stream.
    Main,
    /// The camera's second RTSP stream.
    Sub,
    /// The low-bitrate rendition made on the gateway.
    Transcode,
}

/// What of a source's frames go on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cut {
    /// Every frame.
    All,
    /// The video keyframes, and every audio frame.
    Keyframes,
    /// The audio frames only.
    Audio,
}

/// What is on air: a source, cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selection {
    /// The source.
    pub source: Source,
    /// What of it.
    pub cut: Cut,
}

/// What to do with an offered frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Not on air.
    Drop,
    /// Package it (its track numbered in the program).
    Pass(Frame),
    /// A new source from this frame on: give the rendition these tracks (a discontinuity if
    /// they are the ones it has), then package the frame.
    Switch {
        /// The program's tracks from now on.
        tracks: Vec<Track>,
        /// The first frame.
        frame: Frame,
    },
}

#[derive(Debug, Clone)]
struct OnAir {
    selection: Selection,
    /// The source's tracks when it went on air (a change needs a new init segment).
    source_tracks: Vec<Track>,
    /// Source track index → program track index.
    map: Vec<Option<usize>>,
}

/// The program of one camera.
#[derive(Debug, Default)]
pub struct Program {
    want: Option<Selection>,
    on: Option<OnAir>,
    switches: u64,
}

impl Program {
    /// A program with nothing selected (every frame dropped).
    pub fn new() -> Self {
        Self::default()
    }

    /// Selects what goes on air; it takes over at the next point a player can start at.
    pub fn select(&mut self, selection: Selection) {
        self.want = Some(selection);
    }

    /// What was selected last.
    pub fn wanted(&self) -> Option<Selection> {
        self.want
    }

    /// What is on air.
    pub fn on_air(&self) -> Option<Selection> {
        self.on.as_ref().map(|o| o.selection)
    }

    /// Switches made so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// A frame of `source`, whose tracks are `tracks` (the frame's track indexes into them).
    pub fn offer(&mut self, source: Source, tracks: &[Track], frame: Frame) -> Action {
        let Some(track) = tracks.get(frame.track) else {
            return Action::Drop;
        };
        let video = track.codec.is_video();
        let has_video = tracks.iter().any(|t| t.codec.is_video());
        let stale = self
            .on
            .as_ref()
            .is_none_or(|o| o.selection.source == source && o.source_tracks != tracks);
        let pending = self
            .want
            .filter(|w| w.source == source)
            .filter(|w| stale || self.on.as_ref().is_none_or(|o| o.selection != *w));
        if let Some(want) = pending {
            let start = match want.cut {
                Cut::Audio => !video,
                Cut::All | Cut::Keyframes => frame.keyframe && (video || !has_video),
            };
            if let Some(on) = self.on.as_mut().filter(|o| {
                start
                    && o.selection.source == source
                    && o.source_tracks == tracks
                    && (o.selection.cut == Cut::Audio) == (want.cut == Cut::Audio)
            }) {
                // the same source, tracks and timeline, cut otherwise (all frames or
                // keyframes): no new source for the rendition, from this keyframe on
                on.selection = want;
                return Action::Pass(remap(on, frame));
            }
            let kept: Vec<usize> = (0..tracks.len())
                .filter(|&i| want.cut != Cut::Audio || !tracks[i].codec.is_video())
                .collect();
            if start && !kept.is_empty() {
                let mut map = vec![None; tracks.len()];
                for (n, &i) in kept.iter().enumerate() {
                    map[i] = Some(n);
                }
                let on = OnAir {
                    selection: want,
                    source_tracks: tracks.to_vec(),
                    map,
                };
                let frame = remap(&on, frame);
                self.on = Some(on);
                self.switches += 1;
                return Action::Switch {
                    tracks: kept.iter().map(|&i| tracks[i].clone()).collect(),
                    frame,
                };
            }
        }
        let Some(on) = self.on.as_ref() else {
            return Action::Drop;
        };
        if on.selection.source != source || on.source_tracks != tracks {
            // another source, or this one changed its tracks: off air until it starts again
            return Action::Drop;
        }
        if on.map.get(frame.track).copied().flatten().is_none() {
            return Action::Drop;
        }
        if on.selection.cut == Cut::Keyframes && video && !frame.keyframe {
            return Action::Drop;
        }
        Action::Pass(remap(on, frame))
    }
}

fn remap(on: &OnAir, mut frame: Frame) -> Frame {
    frame.track = on.map[frame.track].unwrap_or(frame.track);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendition::{Rendition, RenditionConfig};
    use crate::test_media::{audio as a, audio_track, video as v, video_track};

    fn main_tracks() -> Vec<Track> {
        vec![video_track(1280), audio_track()]
    }

    fn sub_tracks() -> Vec<Track> {
        vec![video_track(640), audio_track()]
    }

    const MAIN_ALL: Selection = Selection {
        source: Source::Main,
        cut: Cut::All,
    };
    const SUB_ALL: Selection = Selection {
        source: Source::Sub,
        cut: Cut::All,
    };

    #[test]
    fn nothing_goes_on_air_before_a_selection_and_a_keyframe() {
        let mut p = Program::new();
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(0, true)),
            Action::Drop
        );
        p.select(MAIN_ALL);
        assert_eq!(p.offer(Source::Main, &main_tracks(), a(0)), Action::Drop);
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(0, false)),
            Action::Drop
        );
        let Action::Switch { tracks, frame } = p.offer(Source::Main, &main_tracks(), v(1, true))
        else {
            panic!("a keyframe starts the program");
        };
        assert_eq!(tracks, main_tracks());
        assert_eq!(frame.track, 0);
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), a(5)),
            Action::Pass(a(5))
        );
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), v(5, true)),
            Action::Drop
        );
        assert_eq!(p.on_air(), Some(MAIN_ALL));
    }

    #[test]
    fn a_new_source_takes_over_at_its_keyframe_and_the_old_stays_until_then() {
        let mut p = Program::new();
        p.select(MAIN_ALL);
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(0, true)),
            Action::Switch { .. }
        ));
        p.select(SUB_ALL);
        // the substream's frames before its keyframe: not yet; main stays on air
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), v(10, false)),
            Action::Drop
        );
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(20, false)),
            Action::Pass(v(20, false))
        );
        let Action::Switch { tracks, .. } = p.offer(Source::Sub, &sub_tracks(), v(30, true)) else {
            panic!("the substream's keyframe switches");
        };
        assert_eq!(tracks, sub_tracks());
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(40, true)),
            Action::Drop
        );
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), a(40)),
            Action::Pass(a(40))
        );
        assert_eq!(p.switches(), 2);
    }

    #[test]
    fn keyframes_alone_pass_the_keyframes_and_the_audio() {
        let mut p = Program::new();
        p.select(Selection {
            source: Source::Sub,
            cut: Cut::Keyframes,
        });
        assert!(matches!(
            p.offer(Source::Sub, &sub_tracks(), v(0, true)),
            Action::Switch { .. }
        ));
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), v(1, false)),
            Action::Drop
        );
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), a(1)),
            Action::Pass(a(1))
        );
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), v(2, true)),
            Action::Pass(v(2, true))
        );
    }

    #[test]
    fn audio_alone_is_an_audio_program_from_the_next_audio_frame() {
        let mut p = Program::new();
        p.select(MAIN_ALL);
        p.offer(Source::Main, &main_tracks(), v(0, true));
        p.select(Selection {
            source: Source::Main,
            cut: Cut::Audio,
        });
        let Action::Switch { tracks, frame } = p.offer(Source::Main, &main_tracks(), a(3)) else {
            panic!("audio switches at once");
        };
        assert_eq!(tracks, vec![audio_track()]);
        assert_eq!(frame.track, 0, "the audio is the program's only track");
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(4, true)),
            Action::Drop
        );
        let Action::Pass(f) = p.offer(Source::Main, &main_tracks(), a(5)) else {
            panic!("audio passes");
        };
        assert_eq!(f.track, 0);
    }

    #[test]
    fn a_source_that_changes_its_tracks_goes_on_again_at_its_next_keyframe() {
        let mut p = Program::new();
        p.select(MAIN_ALL);
        p.offer(Source::Main, &main_tracks(), v(0, true));
        // the camera reconnected at another resolution
        let changed = vec![video_track(1920), audio_track()];
        assert_eq!(p.offer(Source::Main, &changed, a(1)), Action::Drop);
        let Action::Switch { tracks, .. } = p.offer(Source::Main, &changed, v(2, true)) else {
            panic!("new tracks, new init");
        };
        assert_eq!(tracks, changed);
    }

    #[test]
    fn no_audio_no_audio_program() {
        let mut p = Program::new();
        p.select(Selection {
            source: Source::Main,
            cut: Cut::Audio,
        });
        let video_only = vec![video_track(1280)];
        assert_eq!(p.offer(Source::Main, &video_only, v(0, true)), Action::Drop);
        assert_eq!(p.on_air(), None);
    }

    #[test]
    fn a_rendition_fed_by_the_program_plays_across_a_switch() {
        // main at 25 fps, the substream at 25 fps with other timestamps, both with 1 s
        // GOPs; the program switches from main to the substream to its keyframes
        let mut r = Rendition::new(RenditionConfig::default());
        let mut p = Program::new();
        p.select(MAIN_ALL);
        let wall0 = 1_795_000_000_000u64;
        let apply = |r: &mut Rendition, act: Action, wall: u64| match act {
            Action::Drop => {}
            Action::Pass(f) => {
                r.handle_frame(f, wall).unwrap();
            }
            Action::Switch { tracks, frame } => {
                r.switch_source(tracks).unwrap();
                r.handle_frame(frame, wall).unwrap();
            }
        };
        for i in 0..300i64 {
            let wall = wall0 + i as u64 * 40;
            if i == 100 {
                p.select(SUB_ALL);
            }
            if i == 200 {
                p.select(Selection {
                    source: Source::Sub,
                    cut: Cut::Keyframes,
                });
            }
            let key = i % 25 == 0;
            let m = p.offer(Source::Main, &main_tracks(), v(i * 3600, key));
            apply(&mut r, m, wall);
            let s = p.offer(
                Source::Sub,
                &sub_tracks(),
                v(777_000 + i * 3600, (i + 5) % 25 == 0),
            );
            apply(&mut r, s, wall);
        }
        assert_eq!(
            p.switches(),
            2,
            "main, then the substream (keyframes keep its tracks)"
        );
        assert_eq!(p.on_air().map(|s| s.cut), Some(Cut::Keyframes));
        let text = r.window().render(&Default::default());
        assert!(text.contains("#EXT-X-DISCONTINUITY"), "{text}");
        assert!(
            text.contains("init-1.mp4"),
            "the substream's tracks are a new init segment: {text}"
        );
        assert_eq!(r.window_ref().info().resolution, Some((640, 360)));
    }
}
