//! Still parts: what the relay's window lists while a stream's media has stopped coming (a
//! collapse, every uplink down), in place of GAP parts. Players fetch a GAP part, find no
//! media, and stall at the hole or seek over it (hls.js raised a non-fatal `fragGap` error
//! hundreds of times a second at one such part, then jumped); a still part is media: the
//! picture holds, the sound is silent, and the player plays on until the stream returns
//! after a discontinuity.
//!
//! A run of still parts goes on each track's timeline from where its media stopped. Each
//! still segment begins with the last keyframe the window had (its access unit as it came,
//! parameter sets in front), each further part is one skipped picture after it
//! ([`crate::h264_skip`]: a few bytes that show that picture again), and the audio is
//! silent AAC frames. What cannot be made so (no keyframe yet, no skipped pictures for the
//! stream, audio other than mono or stereo AAC-LC) is `None`: the window lists a GAP part.
//!
//! Sans-IO: parts in, parts out.

use crate::cmaf::{self, Sample, Traf};
use crate::fmp4::{Fmp4Reader, Found};
use crate::h264_skip::{Anchor, SkipCoder};
use crate::media::{Codec, Frame, Track};
use bytes::Bytes;

/// A silent AAC-LC frame (1024 samples) for one channel: one single channel element, no
/// spectral data, then the end element.
const SILENT_AAC_MONO: &[u8] = &[0x00, 0xc8, 0x00, 0x80, 0x23, 0x80];
/// A silent AAC-LC frame for two channels: one channel pair element, then the end element.
const SILENT_AAC_STEREO: &[u8] = &[0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80];
/// Samples in an AAC-LC frame.
const AAC_FRAME: i64 = 1024;

/// Sample rates by `samplingFrequencyIndex` (ISO/IEC 14496-3, 1.6.3.4).
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// A silent frame for an AAC track, if its `AudioSpecificConfig` is AAC-LC, mono or
/// stereo, with 1024-sample frames, in a timescale of its sample rate. After the two bytes
/// of that, only the explicit "no SBR" extension is allowed (ffmpeg writes it: sync word
/// 0x2b7, SBR's object type, `sbrPresentFlag` 0); SBR would make the frames twice as long.
fn silent_frame(track: &Track) -> Option<&'static [u8]> {
    let c = &track.config;
    let (a, b) = (*c.first()?, *c.get(1)?);
    if c.len() > 2 {
        let mut bits = [0u8; 4];
        let ext = c.get(2..)?;
        if ext.len() > 4 {
            return None;
        }
        bits[..ext.len()].copy_from_slice(ext);
        let ext = u32::from_be_bytes(bits);
        // 11 bits of sync word, 5 of object type, 1 of sbrPresentFlag
        if ext >> 21 != 0x2b7 || (ext >> 16) & 0x1f != 5 || (ext >> 15) & 1 != 0 {
            return None;
        }
    }
    let object_type = a >> 3;
    let frequency_index = ((a & 0x07) << 1) | (b >> 7);
    let channels = (b >> 3) & 0x0f;
    let short_frames = (b >> 2) & 1 == 1;
    let rate = AAC_RATES.get(usize::from(frequency_index))?;
    if object_type != 2 || short_frames || *rate != track.timescale {
        return None;
    }
    match channels {
        1 => Some(SILENT_AAC_MONO),
        2 => Some(SILENT_AAC_STEREO),
        _ => None,
    }
}

/// One track of the stream, as the still parts go on with it.
#[derive(Debug, Clone)]
struct Lane {
    id: u32,
    timescale: u32,
    /// Decode time where the next sample starts.
    next_dts: Option<i64>,
    /// Video: where the pictures so far end in presentation time (a still picture's
    /// composition offset puts it there, after every picture before it).
    pts_end: Option<i64>,
    /// Audio: the silent frame; video: `None`.
    silent: Option<&'static [u8]>,
}

/// The keyframe a still segment shows, and where its skipped pictures start.
#[derive(Debug, Clone)]
struct Keyframe {
    data: Bytes,
    anchor: Anchor,
}

/// One still part: its bytes, and whether it begins with the keyframe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillPart {
    /// moof + mdat.
    pub data: Bytes,
    /// It begins with the keyframe (INDEPENDENT=YES).
    pub independent: bool,
}

/// Makes still parts for one stream (one init segment at a time).
#[derive(Default)]
pub struct StillMaker {
    /// The init generation fed, and its reader (`None`: nothing can be made for it).
    generation: Option<u32>,
    /// Its init segment's bytes were given (they may come after its first part).
    init_given: bool,
    reader: Option<Fmp4Reader>,
    lanes: Vec<Lane>,
    video: Option<usize>,
    skip: Option<SkipCoder>,
    keyframe: Option<Keyframe>,
    /// Skipped pictures made since the last still keyframe (`None`: no still segment open).
    pictures: Option<u32>,
    /// The last picture decoded is the keyframe (the stream's own, or a still one).
    last_was_key: bool,
    sequence: u32,
}

impl StillMaker {
    /// A maker with no stream yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The init generation the maker follows.
    pub fn generation(&self) -> Option<u32> {
        self.generation
    }

    /// Follows a generation whose init segment's bytes were not there yet.
    pub fn lacks_init(&self) -> bool {
        self.generation.is_some() && !self.init_given
    }

    /// Follows init segment `generation` (`init`: its bytes, if known) from now on.
    pub fn set_init(&mut self, generation: u32, init: Option<&Bytes>) {
        *self = Self {
            generation: Some(generation),
            sequence: self.sequence,
            ..Self::default()
        };
        let Some(init) = init else { return };
        self.init_given = true;
        let mut reader = Fmp4Reader::new(crate::mirror::MAX_PART_BYTES as usize);
        reader.push(init);
        let tracks = match reader.poll() {
            Ok(Some(Found::Tracks(t))) => t,
            _ => return,
        };
        for (i, t) in tracks.iter().enumerate() {
            let Some(id) = reader.track_id(i) else { return };
            let silent = match t.codec {
                Codec::Aac => match silent_frame(t) {
                    Some(s) => Some(s),
                    None => return,
                },
                Codec::H264 | Codec::H265 => {
                    if self.video.is_some() {
                        return;
                    }
                    self.video = Some(i);
                    self.skip = SkipCoder::new(t).ok();
                    None
                }
            };
            self.lanes.push(Lane {
                id,
                timescale: t.timescale.max(1),
                next_dts: None,
                pts_end: None,
                silent,
            });
        }
        if self.video.is_some() && self.skip.is_some() {
            self.reader = Some(reader);
        }
    }

    /// Takes a part of the stream as the window lists it (moof + mdat chunks): where each
    /// track stops, and the last keyframe.
    pub fn take(&mut self, part: &Bytes) {
        self.pictures = None;
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        reader.push(part);
        let mut frames: Vec<Frame> = Vec::new();
        loop {
            match reader.poll() {
                Ok(Some(Found::Frame(f))) => frames.push(f),
                Ok(Some(Found::Tracks(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "still: a part does not read; no still parts");
                    self.reader = None;
                    return;
                }
            }
        }
        let Some(video) = self.video else { return };
        let before = self.lanes[video].next_dts;
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            if let Some(d) = reader.next_dts(i) {
                lane.next_dts = Some(d);
            }
        }
        let pictures: Vec<Frame> = frames.into_iter().filter(|f| f.track == video).collect();
        let Some(first) = pictures.first() else {
            return;
        };
        let lane = &mut self.lanes[video];
        if before != Some(first.dts) {
            // the pictures do not follow the ones before (a still run, another timeline
            // in the same init): where they end is counted from these
            lane.pts_end = None;
        }
        for (i, f) in pictures.iter().enumerate() {
            // a picture lasts until the next one's decode time
            let next = pictures.get(i + 1).map(|n| n.dts).or(lane.next_dts);
            if let Some(end) = next.and_then(|n| f.pts.checked_add(n.checked_sub(f.dts)?)) {
                lane.pts_end = Some(lane.pts_end.map_or(end, |e| e.max(end)));
            }
        }
        for f in pictures {
            self.last_was_key = false;
            if !f.keyframe {
                continue;
            }
            // only an IDR picture opens a still segment: what follows it may not refer to
            // anything before it (a sync sample by its flags may be an I picture)
            match self.skip.as_ref().map(|s| s.anchor(&f.data)) {
                Some(Ok(anchor)) if !anchor.is_idr() => {}
                Some(Ok(anchor)) => {
                    self.keyframe = Some(Keyframe {
                        data: f.data,
                        anchor,
                    });
                    self.last_was_key = true;
                }
                _ => self.keyframe = None,
            }
        }
    }

    /// The next still part, `seconds` long: `first` opens a still segment (with the
    /// keyframe, unless the keyframe is the last picture already: two IDR pictures in a
    /// row must differ in `idr_pic_id`, so then a skipped picture), else a skipped picture
    /// after it. `None` when none can be made.
    pub fn part(&mut self, seconds: f64, first: bool) -> Option<StillPart> {
        let made = self.make(seconds, first);
        if made.is_none() {
            // a still segment goes on only from a picture made
            self.pictures = None;
        }
        made
    }

    fn make(&mut self, seconds: f64, first: bool) -> Option<StillPart> {
        self.reader.as_ref()?;
        let video = self.video?;
        let key = self.keyframe.clone()?;
        let (picture, keyframe, n) = if first && !self.last_was_key {
            (key.data, true, 0)
        } else {
            let n = match self.pictures {
                Some(n) => n + 1,
                None if self.last_was_key => 1,
                None => return None,
            };
            let skip = self.skip.as_ref()?;
            (skip.picture(key.anchor, n).ok()?, false, n)
        };
        let v = &self.lanes[video];
        let v_start = v.next_dts?;
        let v_len = (seconds * f64::from(v.timescale)).round() as i64;
        let v_end = v_start.checked_add(v_len)?;
        let end_s = v_end as f64 / f64::from(v.timescale);
        let cts = v.pts_end.map_or(0, |e| e.saturating_sub(v_start).max(0));
        let mut trafs = Vec::with_capacity(self.lanes.len());
        let mut ends = Vec::with_capacity(self.lanes.len());
        for (i, lane) in self.lanes.iter().enumerate() {
            let start = lane.next_dts?;
            if i == video {
                let sample = Sample {
                    duration: u32::try_from(v_len).ok()?,
                    size: u32::try_from(picture.len()).ok()?,
                    keyframe,
                    cts: i32::try_from(cts).ok()?,
                };
                trafs.push(Traf {
                    track_id: lane.id,
                    base_dts: u64::try_from(start).ok()?,
                    samples: vec![(sample, picture.clone())],
                });
                ends.push(v_end);
                continue;
            }
            // silent frames until the audio reaches the picture's end (a track more than a
            // second behind the picture is not one to hold: a GAP part instead)
            let silent = Bytes::from_static(lane.silent?);
            let ts = f64::from(lane.timescale);
            let behind_s = end_s - start as f64 / ts;
            if behind_s > seconds + 1.0 {
                return None;
            }
            let target = (end_s * ts).ceil() as i64;
            // at least one frame: audio ahead of the picture gets one a part until the
            // picture catches up (a part without audio is one hls.js may find no media in
            // when it times the stream by its audio)
            let frames = ((target.saturating_sub(start).max(0) + AAC_FRAME - 1) / AAC_FRAME).max(1);
            let end = start.checked_add(frames.checked_mul(AAC_FRAME)?)?;
            ends.push(end);
            let sample = Sample {
                duration: AAC_FRAME as u32,
                size: silent.len() as u32,
                keyframe: true,
                cts: 0,
            };
            trafs.push(Traf {
                track_id: lane.id,
                base_dts: u64::try_from(start).ok()?,
                samples: vec![(sample, silent); frames as usize],
            });
        }
        for (lane, end) in self.lanes.iter_mut().zip(ends) {
            lane.next_dts = Some(end);
        }
        self.lanes[video].pts_end = Some(v_end.saturating_add(cts));
        self.pictures = Some(n);
        self.last_was_key = keyframe;
        self.sequence = self.sequence.wrapping_add(1);
        Some(StillPart {
            data: cmaf::fragment(self.sequence, &trafs),
            independent: keyframe,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo clip's first `n` frames through our own segmenter: its init and parts.
    fn stream(n: usize) -> (Bytes, Vec<Bytes>) {
        let (init, parts) = crate::test_media::demo_parts(n);
        (init, parts.into_iter().map(|p| p.data).collect())
    }

    fn frames(init: &Bytes, parts: &[Bytes]) -> Vec<Frame> {
        let mut r = Fmp4Reader::new(64 << 20);
        r.push(init);
        for p in parts {
            r.push(p);
        }
        let mut out = Vec::new();
        while let Some(f) = r.poll().unwrap() {
            if let Found::Frame(f) = f {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn still_parts_go_on_from_where_the_media_stopped() {
        let (init, parts) = stream(200);
        assert!(parts.len() > 5);
        let mut m = StillMaker::new();
        m.set_init(0, Some(&init));
        for p in &parts {
            m.take(p);
        }
        let before = frames(&init, &parts);
        let mut stills = Vec::new();
        for i in 0..10 {
            stills.push(m.part(0.2, i % 5 == 0).expect("a still part").data);
        }
        let after = frames(&init, &[parts.clone(), stills.clone()].concat());
        let added = &after[before.len()..];
        // per 200 ms: one picture, and 0.2 s of silent audio within a frame
        let video: Vec<&Frame> = added.iter().filter(|f| f.track == 0).collect();
        let audio: Vec<&Frame> = added.iter().filter(|f| f.track == 1).collect();
        assert_eq!(video.len(), 10);
        assert!(video[0].keyframe && video[5].keyframe);
        assert!(video
            .iter()
            .enumerate()
            .all(|(i, f)| f.keyframe == (i % 5 == 0)));
        assert!(video[1].data.len() < 100, "{} bytes", video[1].data.len());
        // the keyframe shown is the last one the stream had
        let last_key = before
            .iter()
            .rev()
            .find(|f| f.track == 0 && f.keyframe)
            .unwrap();
        assert_eq!(video[0].data, last_key.data);
        // each track goes on where it stopped
        for track in [0, 1] {
            let last = before.iter().rev().find(|f| f.track == track).unwrap();
            let first = added.iter().find(|f| f.track == track).unwrap();
            let gap = first.dts - last.dts;
            assert!(gap > 0 && gap <= 3000, "track {track}: {gap} ticks on");
        }
        let rate = f64::from(48_000);
        let audio_s = audio.len() as f64 * 1024.0 / rate;
        assert!((audio_s - 2.0).abs() < 0.03, "{audio_s} s of audio");
        assert!(audio.iter().all(|f| f.data.as_ref() == SILENT_AAC_STEREO));
    }

    #[test]
    fn nothing_is_made_without_a_keyframe_or_a_readable_stream() {
        let (init, parts) = stream(200);
        let mut m = StillMaker::new();
        assert!(m.part(0.2, true).is_none());
        m.set_init(0, Some(&init));
        assert!(m.part(0.2, true).is_none(), "no part taken yet");
        m.take(&parts[0]);
        // a skipped picture needs its keyframe first
        assert!(m.part(0.2, false).is_none());
        assert!(m.part(0.2, true).is_some());
        assert!(m.part(0.2, false).is_some());
        // a new part of the stream ends the still segment
        m.take(&parts[1]);
        assert!(m.part(0.2, false).is_none());
        // bytes that do not read: nothing more for this init
        m.take(&Bytes::from_static(&[
            0, 0, 0, 9, b'm', b'o', b'o', b'f', 0,
        ]));
        m.take(&Bytes::from_static(&[0xff; 64]));
        assert!(m.part(0.2, true).is_none());
        // no init bytes: nothing
        m.set_init(1, None);
        m.take(&parts[2]);
        assert!(m.part(0.2, true).is_none());
    }

    #[test]
    fn tracks_far_apart_get_no_still_part() {
        // the audio's times a minute behind the video's: not a stream to hold
        let (init, parts) = stream(200);
        let mut m = StillMaker::new();
        m.set_init(0, Some(&init));
        m.take(&parts[0]);
        let (video, audio) = (
            i64::from(m.lanes[0].timescale),
            i64::from(m.lanes[1].timescale),
        );
        m.lanes[1].next_dts = Some(0);
        m.lanes[0].next_dts = Some(video * 60);
        assert!(m.part(0.2, true).is_none());
        // half a second apart: held
        m.lanes[0].next_dts = Some(video);
        m.lanes[1].next_dts = Some(audio / 2);
        assert!(m.part(0.2, true).is_some());
    }

    #[test]
    fn only_an_idr_picture_opens_a_still_segment() {
        let (init, parts) = stream(200);
        let video = frames(&init, &parts);
        let mut m = StillMaker::new();
        m.set_init(0, Some(&init));
        let skip = m.skip.clone().unwrap();
        let key = video.iter().find(|f| f.track == 0 && f.keyframe).unwrap();
        let other = video.iter().find(|f| f.track == 0 && !f.keyframe).unwrap();
        assert!(skip.anchor(&key.data).unwrap().is_idr());
        assert!(!skip.anchor(&other.data).unwrap().is_idr());
        m.take(&parts[0]);
        assert_eq!(m.keyframe.clone().unwrap().data, key.data);
    }

    #[test]
    fn the_keyframe_is_not_repeated_right_after_itself() {
        let (init, parts) = stream(200);
        let mut m = StillMaker::new();
        m.set_init(0, Some(&init));
        m.take(&parts[0]);
        assert!(!m.last_was_key, "the part has pictures after its keyframe");
        let independent = |p: Option<StillPart>| p.expect("a still part").independent;
        // as if the stream had stopped right after its keyframe: a skipped picture first
        m.last_was_key = true;
        assert!(!independent(m.part(0.2, true)));
        // then the keyframe may come again, and after it a skipped picture, even where a
        // still segment opens (one part a segment)
        assert!(independent(m.part(0.2, true)));
        assert!(!independent(m.part(0.2, true)));
        assert!(independent(m.part(0.2, true)));
        // a part of the stream without pictures does not make the keyframe the last one
        m.last_was_key = false;
        m.take(&Bytes::new());
        assert!(independent(m.part(0.2, true)));
    }

    #[test]
    fn silent_frames_only_for_aac_lc_mono_and_stereo() {
        let t = |asc: &'static [u8]| Track::aac(Bytes::from_static(asc), 48_000, 2);
        assert_eq!(silent_frame(&t(&[0x11, 0x90])), Some(SILENT_AAC_STEREO));
        assert_eq!(silent_frame(&t(&[0x11, 0x88])), Some(SILENT_AAC_MONO));
        // HE-AAC, six channels, 960-sample frames, an explicit frequency
        assert_eq!(silent_frame(&t(&[0x29, 0x90])), None);
        assert_eq!(silent_frame(&t(&[0x11, 0xb0])), None);
        assert_eq!(silent_frame(&t(&[0x11, 0x94])), None);
        assert_eq!(silent_frame(&t(&[0x17, 0x80, 0, 0, 0x10])), None);
        assert_eq!(silent_frame(&t(&[0x11])), None);
        // ffmpeg's explicit "no SBR" extension; SBR present; another timescale
        let lc = &[0x11, 0x90, 0x56, 0xe5, 0x00];
        assert_eq!(silent_frame(&t(lc)), Some(SILENT_AAC_STEREO));
        assert_eq!(silent_frame(&t(&[0x11, 0x90, 0x56, 0xe5, 0x80])), None);
        let at_90k = Track {
            timescale: 90_000,
            ..t(&[0x11, 0x90])
        };
        assert_eq!(silent_frame(&at_90k), None);
    }
}
