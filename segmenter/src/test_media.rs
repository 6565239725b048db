//! Tracks and frames for tests: an H.264 video track with a real SPS and PPS, an AAC track,
//! and frames of both.

use crate::media::{avcc_from_parameter_sets, Frame, Track};
use bytes::Bytes;

/// A 16:9 H.264 track `width` pixels wide.
pub(crate) fn video_track(width: u16) -> Track {
    let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
    let avcc = avcc_from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]]).unwrap();
    Track::h264(avcc, width, width / 16 * 9)
}

/// A 48 kHz stereo AAC track.
pub(crate) fn audio_track() -> Track {
    Track::aac(Bytes::from_static(&[0x11, 0x90]), 48_000, 2)
}

/// A video frame of track 0.
pub(crate) fn video(dts: i64, key: bool) -> Frame {
    Frame {
        track: 0,
        pts: dts,
        dts,
        keyframe: key,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
    }
}

/// An audio frame of track 1.
pub(crate) fn audio(dts: i64) -> Frame {
    Frame {
        track: 1,
        pts: dts,
        dts,
        keyframe: true,
        data: Bytes::from_static(&[0x21, 0x10]),
    }
}

/// One part of [`demo_parts`]: its metadata, bytes (moof + mdat chunks), duration in µs and
/// whether its segment ends with it.
#[derive(Debug, Clone)]
pub(crate) struct WholePart {
    pub meta: crate::PartMeta,
    pub data: Bytes,
    pub duration_us: u64,
    pub ends_segment: bool,
}

/// The demo clip's first `frames` frames (H.264 and stereo AAC at 48 kHz) through our own
/// segmenter: its init segment and its whole parts.
pub(crate) fn demo_parts(frames: usize) -> (Bytes, Vec<WholePart>) {
    use crate::{Output, Segmenter, SegmenterConfig};
    let file = Bytes::from_static(include_bytes!("../../assets/demo-camera.mp4"));
    let clip = crate::mp4file::demux(&file).unwrap();
    let mut seg = Segmenter::new(SegmenterConfig::default());
    seg.set_tracks(clip.tracks.clone()).unwrap();
    let (mut init, mut parts, mut data) = (Bytes::new(), Vec::new(), Vec::new());
    for f in clip.frames.iter().take(frames) {
        seg.handle_frame(f.clone(), 0).unwrap();
        while let Some(o) = seg.poll_output() {
            match o {
                Output::Init { data, .. } => init = data,
                Output::Chunk(c) => {
                    data.extend_from_slice(&c.data);
                    if c.last {
                        parts.push(WholePart {
                            meta: c.part,
                            data: Bytes::from(std::mem::take(&mut data)),
                            duration_us: c.end_us,
                            ends_segment: c.ends_segment,
                        });
                    }
                }
            }
        }
    }
    (init, parts)
}
