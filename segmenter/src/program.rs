//! A camera's program: one rendition cut from its sources at the level the low-bandwidth
//! controller chose (the main stream, the second stream, a transcode, the keyframes of one
//! of them, or the audio alone), so a player of the program keeps playing across level
//! changes.
//!
//! Every source's frames are offered with the source's tracks; the program passes those of
//! the selected source, cut as selected. Another source takes over at a point a player can
//! start at: its next video keyframe (its next frame when it has no video). Until then the
//! old selection stays on air, so the program never has a hole a switch made. A switch is a
//! new source for the rendition ([`Action::Switch`]): new tracks (a new init segment) or,
//! with equal tracks, a discontinuity, since sources have unrelated timestamps. A cut of
//! the same source changes in place, at its next keyframe. Below [`Cut::All`], each video
//! frame left out becomes a skipped picture of the keyframe before it
//! ([`crate::h264_skip`]): the video keeps its frame rate and timeline, so parts keep
//! coming at the part target and players see no hole (a stream skipped pictures cannot
//! follow has its frames dropped, and the gateway does not offer those cuts for it). The
//! tracks never change with the cut (audio alone keeps a still
//! picture): a player's tracks stay where they were (ffmpeg's HLS reader fed audio to the
//! video decoder when an audio-only init segment came between two with video).

use crate::h264_skip::{Anchor, SkipCoder, SkipError};
use crate::media::{with_parameter_sets, Frame, Track};

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
    /// The audio frames, and a video keyframe at most every [`STILL_EVERY`]: the picture
    /// stays (players keep a video track, and the program's tracks never change with its
    /// cut), refreshed now and then.
    Audio,
}

/// At [`Cut::Audio`], the picture is refreshed at most this often (seconds).
pub const STILL_EVERY: i64 = 4;

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
    /// Package it.
    Pass(Frame),
    /// A new source from this frame on: give the rendition these tracks (a discontinuity if
    /// they are the ones it has), then package the frame.
    Switch {
        /// The program's tracks from now on (the source's).
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
    /// The source's timeline broke: it goes on again at its next start point.
    broke: bool,
    /// At [`Cut::Audio`]: decode time of the last picture passed.
    last_still: Option<i64>,
    /// The source's video as skipped pictures can follow it (built at the first cut that
    /// leaves frames out), or why not.
    coder: Option<Result<SkipCoder, SkipError>>,
    /// Below [`Cut::All`]: where the skipped pictures standing for the frames left out
    /// start (the last keyframe passed), and how many came since.
    skip: Option<Skipping>,
}

/// Skipped pictures after a keyframe.
#[derive(Debug, Clone, Copy)]
struct Skipping {
    anchor: Anchor,
    /// Skipped pictures since the keyframe.
    count: u32,
    /// The keyframe's composition offset: the skipped pictures keep it, so presentation
    /// times rise with decode times.
    cts: i64,
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

    /// Switches of source made so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// `source`'s timeline broke (it reconnected): if it is on air, it goes on again (as a
    /// new source for the rendition) at its next start point.
    pub fn source_broke(&mut self, source: Source) {
        if let Some(on) = self.on.as_mut().filter(|o| o.selection.source == source) {
            on.broke = true;
        }
    }

    /// A frame of `source`, whose tracks are `tracks` (the frame's track indexes into them).
    pub fn offer(&mut self, source: Source, tracks: &[Track], frame: Frame) -> Action {
        let Some(track) = tracks.get(frame.track) else {
            return Action::Drop;
        };
        let video = track.codec.is_video();
        let has_video = tracks.iter().any(|t| t.codec.is_video());
        // where a player can start: a video keyframe (any frame of a source without video)
        let start = frame.keyframe && (video || !has_video);
        let fresh =
            |o: &OnAir| o.selection.source == source && !o.broke && o.source_tracks == tracks;
        if let Some(want) = self.want.filter(|w| w.source == source) {
            match self.on.as_mut() {
                // the same source and timeline, cut otherwise: in place, at a start point
                // (frames left out become skipped pictures of the keyframe before them)
                Some(on) if fresh(on) && on.selection != want && start => {
                    on.selection = want;
                    on.last_still = None;
                    on.skip = None;
                }
                Some(on) if fresh(on) => {}
                // another source, a broken timeline or new tracks: a new source for the
                // rendition, from a start point
                _ if start => {
                    self.on = Some(OnAir {
                        selection: want,
                        source_tracks: tracks.to_vec(),
                        broke: false,
                        last_still: None,
                        coder: None,
                        skip: None,
                    });
                    self.switches += 1;
                    // a start point passes every cut
                    return match self.pass(frame, track) {
                        Some(frame) => Action::Switch {
                            tracks: tracks.to_vec(),
                            frame,
                        },
                        None => Action::Drop,
                    };
                }
                _ => {}
            }
        }
        if !self.on.as_ref().is_some_and(fresh) {
            // another source, or this one broke or changed its tracks: off air until it
            // starts again
            return Action::Drop;
        }
        self.pass(frame, track).map_or(Action::Drop, Action::Pass)
    }

    /// The frame if the cut on air keeps it. A video keyframe gets its track's parameter
    /// sets in front: a decoder that kept an earlier source's (ffmpeg's HLS reader does
    /// not take a new init segment's, and cameras' streams carry them out of band) decodes
    /// it all the same, and so does one that lost the switch's first part.
    fn pass(&mut self, mut frame: Frame, track: &Track) -> Option<Frame> {
        let on = self.on.as_mut()?;
        if !track.codec.is_video() {
            return Some(frame);
        }
        let keep = match on.selection.cut {
            Cut::All => true,
            Cut::Keyframes => frame.keyframe,
            Cut::Audio => {
                let every = STILL_EVERY * i64::from(track.timescale.max(1));
                let due = on
                    .last_still
                    .is_none_or(|t| frame.dts.saturating_sub(t) >= every);
                if frame.keyframe && due {
                    on.last_still = Some(frame.dts);
                }
                frame.keyframe && due
            }
        };
        if on.selection.cut == Cut::All {
            on.skip = None;
        } else if keep && frame.keyframe {
            let coder = on.coder.get_or_insert_with(|| SkipCoder::new(track));
            on.skip = coder
                .as_ref()
                .ok()
                .and_then(|c| c.anchor(&frame.data).ok())
                .map(|anchor| Skipping {
                    anchor,
                    count: 0,
                    cts: frame.pts.saturating_sub(frame.dts),
                });
        } else if !keep {
            // a skipped picture in its place, when the stream allows one
            let (Some(Ok(coder)), Some(skip)) = (on.coder.as_ref(), on.skip.as_mut()) else {
                return None;
            };
            skip.count = skip.count.checked_add(1)?;
            let data = coder.picture(skip.anchor, skip.count).ok()?;
            return Some(Frame {
                track: frame.track,
                pts: frame.dts.saturating_add(skip.cts),
                dts: frame.dts,
                keyframe: false,
                data,
            });
        }
        if keep && frame.keyframe {
            frame.data = with_parameter_sets(track, &frame.data);
        }
        keep.then_some(frame)
    }
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
        // a keyframe carries its parameter sets in front
        let mut key = v(2, true);
        key.data = with_parameter_sets(&sub_tracks()[0], &key.data);
        assert_eq!(
            p.offer(Source::Sub, &sub_tracks(), v(2, true)),
            Action::Pass(key)
        );
    }

    #[test]
    fn frames_left_out_become_skipped_pictures_of_the_keyframe_before() {
        let clip = crate::mp4file::demux(&bytes::Bytes::from_static(include_bytes!(
            "../../assets/demo-camera.mp4"
        )))
        .unwrap();
        let v = clip.tracks.iter().position(|t| t.codec.is_video()).unwrap();
        assert!(SkipCoder::new(&clip.tracks[v]).is_ok());
        let mut p = Program::new();
        p.select(Selection {
            source: Source::Main,
            cut: Cut::Keyframes,
        });
        let (mut keys, mut skipped, mut audio) = (0, 0, 0);
        let mut key_cts = None;
        for f in &clip.frames {
            let (dts, key, track) = (f.dts, f.keyframe, f.track);
            match p.offer(Source::Main, &clip.tracks, f.clone()) {
                Action::Switch { frame, .. } | Action::Pass(frame) if frame.keyframe => {
                    assert!(key && frame.dts == dts);
                    if track == v {
                        keys += 1;
                        key_cts = Some(frame.pts - frame.dts);
                    } else {
                        audio += 1;
                    }
                }
                Action::Pass(frame) => {
                    // a skipped picture at the frame's time, a few bytes long
                    assert!(track == v && !key && frame.dts == dts, "{frame:?}");
                    assert_eq!(Some(frame.pts - frame.dts), key_cts);
                    assert!(frame.data.len() < 100, "{} bytes", frame.data.len());
                    skipped += 1;
                }
                Action::Switch { .. } => panic!("a switch on a frame that is not a keyframe"),
                Action::Drop => assert!(keys == 0, "a frame dropped after the first keyframe"),
            }
        }
        let video = clip.frames.iter().filter(|f| f.track == v).count();
        assert!(
            keys >= 2 && audio > 0,
            "{keys} keyframes, {audio} audio frames"
        );
        assert!(skipped + keys + 30 >= video, "{skipped} skipped of {video}");
    }

    #[test]
    fn audio_keeps_the_picture_refreshed_every_few_seconds() {
        let mut p = Program::new();
        p.select(MAIN_ALL);
        p.offer(Source::Main, &main_tracks(), v(0, true));
        p.select(Selection {
            source: Source::Main,
            cut: Cut::Audio,
        });
        // at the next keyframe (the skipped pictures need one before them): until then
        // every frame, and the tracks stay
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(3600, false)),
            Action::Pass(v(3600, false))
        );
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), a(3)),
            Action::Pass(a(3))
        );
        let second = 90_000;
        assert!(
            matches!(
                p.offer(Source::Main, &main_tracks(), v(second, true)),
                Action::Pass(f) if f.dts == second
            ),
            "the first keyframe is a picture"
        );
        for s in 2..STILL_EVERY + 1 {
            assert_eq!(
                p.offer(Source::Main, &main_tracks(), v(s * second, true)),
                Action::Drop,
                "{s} s"
            );
        }
        assert!(matches!(
            p.offer(
                Source::Main,
                &main_tracks(),
                v((STILL_EVERY + 1) * second, true)
            ),
            Action::Pass(_)
        ));
        // back to all frames: at the next keyframe
        p.select(MAIN_ALL);
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(6 * second, false)),
            Action::Drop
        );
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(7 * second, true)),
            Action::Pass(_)
        ));
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(7 * second + 3600, false)),
            Action::Pass(_)
        ));
        assert_eq!(p.switches(), 1, "one source all along");
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
    fn a_source_that_broke_goes_on_again_as_a_new_source_at_its_keyframe() {
        let mut p = Program::new();
        p.select(MAIN_ALL);
        p.offer(Source::Main, &main_tracks(), v(0, true));
        p.source_broke(Source::Sub);
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(1, false)),
            Action::Pass(_)
        ));
        p.source_broke(Source::Main);
        assert_eq!(
            p.offer(Source::Main, &main_tracks(), v(2, false)),
            Action::Drop
        );
        assert_eq!(p.offer(Source::Main, &main_tracks(), a(2)), Action::Drop);
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(3, true)),
            Action::Switch { .. }
        ));
        assert!(matches!(
            p.offer(Source::Main, &main_tracks(), v(4, false)),
            Action::Pass(_)
        ));
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
