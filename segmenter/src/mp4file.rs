//! Reads a plain (non-fragmented) MP4 file into tracks and frames, with mp4-atom: the demo
//! camera's clip and the benchmark's fixture. H.264, H.265 and AAC tracks; others are skipped.

use crate::media::{Codec, Frame, Track};
use bytes::Bytes;
use mp4_atom::{Atom, Decode, DecodeAtom, Encode, Header, Moov, StszSamples};

/// A demuxed file.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The tracks (video first).
    pub tracks: Vec<Track>,
    /// All frames, in decode-time order across tracks.
    pub frames: Vec<Frame>,
    /// Per track: the duration in its timescale.
    pub durations: Vec<i64>,
}

impl Clip {
    /// Frame `f` of this clip as played in loop `n` (from 0): its times moved on by `n`
    /// loop periods, so a looped clip's timeline keeps going. Every track moves by the same
    /// period (the longest track's), so audio and video stay in sync loop after loop; a
    /// shorter track has a short hole at the loop instead of drifting.
    pub fn looped(&self, f: &Frame, n: i64) -> Frame {
        let ts = self
            .tracks
            .get(f.track)
            .map_or(1, |t| i64::from(t.timescale.max(1)));
        let shift = n * self.duration_us() * ts / 1_000_000;
        let mut frame = f.clone();
        frame.dts += shift;
        frame.pts += shift;
        frame
    }

    /// Duration of the longest track, µs.
    pub fn duration_us(&self) -> i64 {
        self.tracks
            .iter()
            .zip(&self.durations)
            .map(|(t, d)| d * 1_000_000 / i64::from(t.timescale.max(1)))
            .max()
            .unwrap_or(0)
    }
}

/// Where an audio track's presentation starts in its media, in its timescale: the first
/// edit's media time (empty edits skipped), else 0.
fn audio_skip(trak: &mp4_atom::Trak) -> i64 {
    trak.edts
        .as_ref()
        .and_then(|e| e.elst.as_ref())
        .and_then(|l| l.entries.iter().find_map(|e| e.media_time))
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Config record bytes (box body) of an avcC / hvcC box.
fn body_of<T: Encode>(b: &T) -> Result<Bytes, String> {
    let mut v = Vec::new();
    b.encode(&mut v).map_err(err)?;
    // skip the 8-byte header (records are small: no 64-bit sizes)
    Ok(Bytes::from(v).slice(8..))
}

/// The track `trak` describes, if it is H.264, H.265 or AAC.
pub(crate) fn track_of(trak: &mp4_atom::Trak) -> Result<Option<Track>, String> {
    let timescale = trak.mdia.mdhd.timescale;
    let Some(entry) = trak.mdia.minf.stbl.stsd.codecs.first() else {
        return Ok(None);
    };
    let mut track = match entry {
        mp4_atom::Codec::Avc1(a) => Track::h264(body_of(&a.avcc)?, a.visual.width, a.visual.height),
        mp4_atom::Codec::Hvc1(h) => Track::h265(body_of(&h.hvcc)?, h.visual.width, h.visual.height),
        mp4_atom::Codec::Hev1(h) => Track::h265(body_of(&h.hvcc)?, h.visual.width, h.visual.height),
        mp4_atom::Codec::Mp4a(m) => {
            let asc = m
                .esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .map(|d| Bytes::from(d.raw.clone()))
                .unwrap_or_default();
            Track::aac(
                asc,
                u32::from(m.audio.sample_rate.integer()),
                m.audio.channel_count,
            )
        }
        _ => return Ok(None),
    };
    track.timescale = timescale;
    if track.codec == Codec::Aac {
        track.sample_rate = timescale;
    }
    Ok(Some(track))
}

/// Demuxes `file`.
pub fn demux(file: &Bytes) -> Result<Clip, String> {
    let mut buf: &[u8] = file;
    let mut moov = None;
    while !buf.is_empty() {
        let h = Header::decode(&mut buf).map_err(err)?;
        let size = h.size.unwrap_or(buf.len()).min(buf.len());
        if h.kind == Moov::KIND {
            let mut body = &buf[..size];
            moov = Some(Moov::decode_atom(&h, &mut body).map_err(err)?);
        }
        buf = &buf[size..];
    }
    let moov = moov.ok_or("no moov box")?;
    let mut tracks = Vec::new();
    let mut per_track: Vec<Vec<Frame>> = Vec::new();
    let mut durations = Vec::new();
    let mut traks: Vec<_> = moov.trak.iter().collect();
    traks.sort_by_key(|t| t.mdia.hdlr.handler != b"vide".into());
    for trak in traks {
        let stbl = &trak.mdia.minf.stbl;
        let Some(track) = track_of(trak)? else {
            continue;
        };
        let sizes: Vec<u32> = match &stbl.stsz.samples {
            StszSamples::Identical { count, size } => vec![*size; *count as usize],
            StszSamples::Different { sizes } => sizes.clone(),
        };
        let chunks: Vec<u64> = match (&stbl.co64, &stbl.stco) {
            (Some(c), _) => c.entries.clone(),
            (None, Some(s)) => s.entries.iter().map(|o| u64::from(*o)).collect(),
            _ => return Err("no chunk offsets".into()),
        };
        // sample → file offset, walking stsc
        let mut offsets = Vec::with_capacity(sizes.len());
        let stsc = &stbl.stsc.entries;
        let mut sample = 0usize;
        for (ci, chunk_off) in chunks.iter().enumerate() {
            let chunk_no = ci as u32 + 1;
            let per = stsc
                .iter()
                .rev()
                .find(|e| e.first_chunk <= chunk_no)
                .map_or(0, |e| e.samples_per_chunk);
            let mut off = *chunk_off;
            for _ in 0..per {
                let Some(sz) = sizes.get(sample) else { break };
                offsets.push(off);
                off += u64::from(*sz);
                sample += 1;
            }
        }
        let mut deltas = Vec::with_capacity(sizes.len());
        for e in &stbl.stts.entries {
            deltas.extend(std::iter::repeat_n(
                i64::from(e.sample_delta),
                e.sample_count as usize,
            ));
        }
        let mut ctts = Vec::new();
        if let Some(c) = &stbl.ctts {
            for e in &c.entries {
                ctts.extend(std::iter::repeat_n(
                    e.sample_offset,
                    e.sample_count as usize,
                ));
            }
        }
        let sync: Option<std::collections::HashSet<u32>> = stbl
            .stss
            .as_ref()
            .map(|s| s.entries.iter().copied().collect());
        // An audio edit list that starts the presentation later (AAC's encoder delay, 1024
        // samples from ffmpeg) moves the track back by that much, and the priming frames
        // before the start go: without this the audio runs those samples longer than the
        // video and a looped clip drifts out of sync by as much each loop. (Video edit lists,
        // a B-frame delay, are left alone: their frames are all shown.)
        let skip = if track.codec == Codec::Aac {
            audio_skip(trak)
        } else {
            0
        };
        let idx = tracks.len();
        let mut frames = Vec::with_capacity(sizes.len());
        let mut dts = -skip;
        for (i, (&size, &off)) in sizes.iter().zip(&offsets).enumerate() {
            let start = usize::try_from(off).map_err(err)?;
            let end = start + size as usize;
            if end > file.len() {
                return Err(format!("sample {i} lies outside the file"));
            }
            let keyframe = !track.codec.is_video()
                || sync.as_ref().is_none_or(|s| s.contains(&(i as u32 + 1)));
            let at = dts;
            dts += deltas.get(i).copied().unwrap_or(1);
            if at < 0 {
                continue;
            }
            frames.push(Frame {
                track: idx,
                pts: at + ctts.get(i).copied().unwrap_or(0),
                dts: at,
                keyframe,
                data: file.slice(start..end),
            });
        }
        durations.push(dts);
        tracks.push(track);
        per_track.push(frames);
    }
    if tracks.is_empty() {
        return Err("no H.264, H.265 or AAC track".into());
    }
    // merge by decode time in µs
    let us = |f: &Frame| f.dts * 1_000_000 / i64::from(tracks[f.track].timescale.max(1));
    let mut frames: Vec<Frame> = per_track.into_iter().flatten().collect();
    frames.sort_by_key(|f| (us(f), f.track));
    Ok(Clip {
        tracks,
        frames,
        durations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Output, Segmenter, SegmenterConfig};

    #[test]
    fn the_demo_clip_demuxes_and_segments() {
        let file = Bytes::from_static(include_bytes!("../../assets/demo-camera.mp4"));
        let clip = demux(&file).unwrap();
        assert_eq!(clip.tracks.len(), 2);
        assert_eq!(clip.tracks[0].codec, Codec::H264);
        assert_eq!((clip.tracks[0].width, clip.tracks[0].height), (640, 360));
        assert_eq!(clip.tracks[1].codec, Codec::Aac);
        assert_eq!(clip.frames.iter().filter(|f| f.track == 0).count(), 250);
        assert!((clip.duration_us() - 10_000_000).abs() < 50_000);
        let mut s = Segmenter::new(SegmenterConfig::default());
        s.set_tracks(clip.tracks.clone()).unwrap();
        for f in clip.frames {
            s.handle_frame(f, 0).unwrap_or_default();
        }
        let parts = std::iter::from_fn(|| s.poll_output())
            .filter(|o| matches!(o, Output::Chunk(c) if c.last))
            .count();
        assert!(parts >= 45, "{parts}");
        assert!(demux(&Bytes::from_static(b"\0\0\0\x08free")).is_err());
        assert!(demux(&Bytes::from_static(b"garbage!")).is_err());
    }

    #[test]
    fn audio_priming_is_cut_and_loops_keep_audio_and_video_in_sync() {
        let file = Bytes::from_static(include_bytes!("../../assets/demo-camera.mp4"));
        let clip = demux(&file).unwrap();
        // ffmpeg's AAC starts 1024 samples early (edit list): the track is 10 s exactly once
        // those are cut, like the video; before, it ran 21 ms longer
        assert_eq!(clip.durations, vec![128_000, 480_000]);
        let first_audio = clip.frames.iter().find(|f| f.track == 1).unwrap();
        assert_eq!(first_audio.dts, 0);
        assert_eq!(clip.frames.iter().filter(|f| f.track == 1).count(), 469);
        // loop 7 starts both tracks at 70 s
        let v = clip.looped(&clip.frames[0], 7);
        let a = clip.looped(first_audio, 7);
        assert_eq!(v.dts * 1_000_000 / 12_800, 70_000_000);
        assert_eq!(a.dts * 1_000_000 / 48_000, 70_000_000);
    }
}
