//! Reads a fragmented MP4 stream as it arrives (an encoder's output on a pipe: the
//! gateway's transcoder), sans-IO: bytes in, tracks and frames out. The `moov` gives the
//! tracks (H.264, H.265, AAC; others are skipped) and each `moof` + `mdat` pair its
//! frames, with the times, sizes and sync flags of `tfdt`, `trun`, `tfhd` and `trex`.
//! Anything else (`ftyp`, `styp`, `sidx`, `free`, ...) is skipped; a box over the size
//! bound is an error, so a broken stream cannot grow the buffer without bound.

use crate::media::{Frame, Track};
use bytes::{Buf, Bytes, BytesMut};
use mp4_atom::{Atom, Decode, DecodeAtom, Header, Moof, Moov};
use std::collections::VecDeque;

/// What the reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The stream's tracks (from its `moov`): frames that follow index into them.
    Tracks(Vec<Track>),
    /// One frame.
    Frame(Frame),
}

/// Why the stream cannot be read on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Fmp4Error {
    /// A box larger than the bound.
    #[error("a {kind} box of {size} bytes is over the bound of {max}")]
    TooLarge {
        /// Its type.
        kind: String,
        /// Its size.
        size: usize,
        /// The bound.
        max: usize,
    },
    /// A box that does not decode.
    #[error("a {kind} box does not decode: {why}")]
    Malformed {
        /// Its type.
        kind: String,
        /// Why.
        why: String,
    },
    /// A sample outside its `mdat`, or a time beyond the timeline.
    #[error("a sample lies outside its mdat or its time overflows")]
    OutOfRange,
}

/// One track as the fragments need it.
#[derive(Debug, Clone, Copy)]
struct TrackIds {
    /// `tkhd` track id.
    id: u32,
    /// `trex` defaults: duration, size, flags.
    defaults: (u32, u32, u32),
    /// Decode time where the next frame starts: the end of the last frame read.
    next_dts: Option<i64>,
}

/// Samples a fragment may declare beyond one per byte of its payload (empty samples).
const MAX_EMPTY_SAMPLES: usize = 1024;

/// `sample_is_non_sync_sample` in sample flags.
const NON_SYNC: u32 = 0x0001_0000;

/// The streaming reader.
#[derive(Debug)]
pub struct Fmp4Reader {
    buf: BytesMut,
    max_box: usize,
    ids: Vec<TrackIds>,
    /// The last `moof`, and its size, waiting for its `mdat`.
    moof: Option<(Moof, usize)>,
    out: VecDeque<Found>,
}

impl Fmp4Reader {
    /// A reader refusing boxes over `max_box` bytes.
    pub fn new(max_box: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_box,
            ids: Vec::new(),
            moof: None,
            out: VecDeque::new(),
        }
    }

    /// Takes more of the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The `tkhd` id of track `index` (indexes as [`Found::Tracks`] gave them).
    pub fn track_id(&self, index: usize) -> Option<u32> {
        self.ids.get(index).map(|t| t.id)
    }

    /// Where track `index`'s next frame would start: the end of the last frame read, in
    /// the track's timescale (`None` before its first fragment).
    pub fn next_dts(&self, index: usize) -> Option<i64> {
        self.ids.get(index).and_then(|t| t.next_dts)
    }

    /// The next thing found, if the bytes so far hold one.
    pub fn poll(&mut self) -> Result<Option<Found>, Fmp4Error> {
        loop {
            if let Some(f) = self.out.pop_front() {
                return Ok(Some(f));
            }
            let Some((header, head_len, size)) = self.next_box()? else {
                return Ok(None);
            };
            let whole = self.buf.split_to(size).freeze();
            let mut body = &whole[head_len..];
            let kind = header.kind;
            let malformed = |e: mp4_atom::Error| Fmp4Error::Malformed {
                kind: kind.to_string(),
                why: e.to_string(),
            };
            if kind == Moov::KIND {
                let moov = Moov::decode_atom(&header, &mut body).map_err(malformed)?;
                self.on_moov(&moov)?;
            } else if kind == Moof::KIND {
                let moof = Moof::decode_atom(&header, &mut body).map_err(malformed)?;
                self.moof = Some((moof, size));
            } else if kind == mp4_atom::Mdat::KIND {
                if let Some((moof, moof_size)) = self.moof.take() {
                    self.on_fragment(&moof, moof_size, head_len, &whole.slice(head_len..))?;
                }
            }
        }
    }

    /// The next whole box in the buffer: its header, header length and total size.
    fn next_box(&self) -> Result<Option<(Header, usize, usize)>, Fmp4Error> {
        let mut b: &[u8] = &self.buf;
        let before = b.remaining();
        let header = match Header::decode(&mut b) {
            Ok(h) => h,
            Err(mp4_atom::Error::OutOfBounds | mp4_atom::Error::ShortRead) => return Ok(None),
            Err(e) => {
                return Err(Fmp4Error::Malformed {
                    kind: "box header".into(),
                    why: e.to_string(),
                })
            }
        };
        let head_len = before - b.remaining();
        let Some(body) = header.size else {
            // a box to the end of the stream: a live stream has no end
            return Err(Fmp4Error::TooLarge {
                kind: header.kind.to_string(),
                size: usize::MAX,
                max: self.max_box,
            });
        };
        let size = head_len + body;
        if size > self.max_box {
            return Err(Fmp4Error::TooLarge {
                kind: header.kind.to_string(),
                size,
                max: self.max_box,
            });
        }
        Ok((self.buf.len() >= size).then_some((header, head_len, size)))
    }

    fn on_moov(&mut self, moov: &Moov) -> Result<(), Fmp4Error> {
        let mut tracks = Vec::new();
        self.ids.clear();
        let mut traks: Vec<_> = moov.trak.iter().collect();
        traks.sort_by_key(|t| t.mdia.hdlr.handler != b"vide".into());
        for trak in traks {
            let track = crate::mp4file::track_of(trak).map_err(|why| Fmp4Error::Malformed {
                kind: "trak".into(),
                why,
            })?;
            let Some(track) = track else { continue };
            let id = trak.tkhd.track_id;
            let defaults = moov
                .mvex
                .as_ref()
                .and_then(|m| m.trex.iter().find(|t| t.track_id == id))
                .map_or((0, 0, 0), |t| {
                    (
                        t.default_sample_duration,
                        t.default_sample_size,
                        t.default_sample_flags,
                    )
                });
            self.ids.push(TrackIds {
                id,
                defaults,
                next_dts: None,
            });
            tracks.push(track);
        }
        self.out.push_back(Found::Tracks(tracks));
        Ok(())
    }

    /// The frames of `moof` (of `moof_size` bytes) in the payload of the `mdat` after it
    /// (whose header is `mdat_head` bytes).
    fn on_fragment(
        &mut self,
        moof: &Moof,
        moof_size: usize,
        mdat_head: usize,
        payload: &Bytes,
    ) -> Result<(), Fmp4Error> {
        // offsets count from the moof's first byte (default-base-is-moof, as CMAF asks);
        // without a data offset a run follows the previous one
        let payload_start = (moof_size + mdat_head) as i64;
        // a run may declare samples by count alone (sizes from the defaults, which may be
        // 0): more samples than payload bytes plus a bound is no stream, only work
        let declared: usize = moof
            .traf
            .iter()
            .flat_map(|t| t.trun.iter())
            .map(|r| r.samples.len())
            .fold(0, usize::saturating_add);
        if declared > payload.len().saturating_add(MAX_EMPTY_SAMPLES) {
            return Err(Fmp4Error::OutOfRange);
        }
        let mut frames = Vec::new();
        for traf in &moof.traf {
            let Some(track) = self.ids.iter().position(|t| t.id == traf.tfhd.track_id) else {
                continue;
            };
            let d = self.ids[track].defaults;
            let tf = &traf.tfhd;
            if tf.base_data_offset.is_some() {
                // offsets from a point in the whole stream: not kept here
                return Err(Fmp4Error::Malformed {
                    kind: "tfhd".into(),
                    why: "an explicit base data offset is not supported".into(),
                });
            }
            let mut dts = traf
                .tfdt
                .as_ref()
                .map_or(Some(0), |t| i64::try_from(t.base_media_decode_time).ok())
                .ok_or(Fmp4Error::OutOfRange)?;
            // a run without a data offset follows the previous one (the first: the mdat's
            // payload, where every writer we read puts it)
            let mut next = payload_start;
            for trun in &traf.trun {
                if let Some(o) = trun.data_offset {
                    next = i64::from(o);
                }
                for e in trun.samples.iter() {
                    let duration = e.duration.or(tf.default_sample_duration).unwrap_or(d.0);
                    let size = e.size.or(tf.default_sample_size).unwrap_or(d.1);
                    let flags = e.flags.or(tf.default_sample_flags).unwrap_or(d.2);
                    let start =
                        usize::try_from(next - payload_start).map_err(|_| Fmp4Error::OutOfRange)?;
                    let end = start
                        .checked_add(size as usize)
                        .filter(|e| *e <= payload.len())
                        .ok_or(Fmp4Error::OutOfRange)?;
                    let pts = dts
                        .checked_add(e.cts.unwrap_or(0))
                        .ok_or(Fmp4Error::OutOfRange)?;
                    frames.push(Frame {
                        track,
                        dts,
                        pts,
                        keyframe: flags & NON_SYNC == 0,
                        data: payload.slice(start..end),
                    });
                    dts = dts
                        .checked_add(i64::from(duration))
                        .ok_or(Fmp4Error::OutOfRange)?;
                    next += i64::from(size);
                }
            }
            self.ids[track].next_dts = Some(dts);
        }
        self.out.extend(frames.into_iter().map(Found::Frame));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Output, Segmenter, SegmenterConfig};

    /// The demo clip segmented by our own segmenter: its init and parts, back to back.
    fn cmaf_stream() -> (Vec<Track>, Vec<Frame>, Vec<u8>) {
        let file = Bytes::from_static(include_bytes!("../../assets/demo-camera.mp4"));
        let clip = crate::mp4file::demux(&file).unwrap();
        let mut seg = Segmenter::new(SegmenterConfig::default());
        seg.set_tracks(clip.tracks.clone()).unwrap();
        let mut stream = Vec::new();
        let frames: Vec<Frame> = clip.frames.iter().take(300).cloned().collect();
        for f in &frames {
            seg.handle_frame(f.clone(), 0).unwrap();
            while let Some(o) = seg.poll_output() {
                match o {
                    Output::Init { data, .. } => stream.extend_from_slice(&data),
                    Output::Chunk(c) => stream.extend_from_slice(&c.data),
                }
            }
        }
        (clip.tracks, frames, stream)
    }

    #[test]
    fn reads_a_cmaf_stream_back_whatever_the_pieces() {
        let (tracks, frames, stream) = cmaf_stream();
        for piece in [stream.len(), 4096, 7, 1] {
            let mut r = Fmp4Reader::new(4 << 20);
            let mut found = Vec::new();
            for c in stream.chunks(piece) {
                r.push(c);
                while let Some(f) = r.poll().unwrap() {
                    found.push(f);
                }
            }
            let Some(Found::Tracks(t)) = found.first() else {
                panic!("no tracks first");
            };
            assert_eq!(t, &tracks);
            let got: Vec<&Frame> = found
                .iter()
                .filter_map(|f| match f {
                    Found::Frame(f) => Some(f),
                    Found::Tracks(_) => None,
                })
                .collect();
            // every frame the segmenter put in a finished chunk, in order per track
            assert!(got.len() > 250, "{} frames", got.len());
            for track in 0..tracks.len() {
                let want: Vec<&Frame> = frames.iter().filter(|f| f.track == track).collect();
                let have: Vec<&&Frame> = got.iter().filter(|f| f.track == track).collect();
                for (w, h) in want.iter().zip(&have) {
                    assert_eq!((w.dts, w.pts, w.keyframe), (h.dts, h.pts, h.keyframe));
                    assert_eq!(w.data, h.data);
                }
            }
        }
    }

    #[test]
    fn a_run_of_countless_empty_samples_is_an_error_not_work() {
        let (_, _, stream) = cmaf_stream();
        let mut r = Fmp4Reader::new(4 << 20);
        r.push(&stream);
        let mut tracks = None;
        while let Some(f) = r.poll().unwrap() {
            if let Found::Tracks(t) = f {
                tracks = Some(t);
            }
        }
        assert!(tracks.is_some());
        // a moof whose run declares 4 billion samples of the default size (0), and an
        // empty mdat
        let moof = Moof {
            mfhd: mp4_atom::Mfhd { sequence_number: 1 },
            traf: vec![mp4_atom::Traf {
                tfhd: mp4_atom::Tfhd {
                    track_id: r.track_id(0).unwrap(),
                    default_base_is_moof: true,
                    default_sample_size: Some(0),
                    ..Default::default()
                },
                trun: vec![mp4_atom::Trun {
                    data_offset: None,
                    samples: mp4_atom::TrunSamples::Inherited {
                        count: u32::MAX,
                        first_flags: None,
                    },
                }],
                ..Default::default()
            }],
        };
        let mut bytes = Vec::new();
        mp4_atom::Encode::encode(&moof, &mut bytes).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
        r.push(&bytes);
        assert_eq!(r.poll(), Err(Fmp4Error::OutOfRange));
    }

    #[test]
    fn a_box_over_the_bound_is_an_error_not_a_buffer() {
        let mut r = Fmp4Reader::new(1024);
        // an mdat header announcing 1 GB
        r.push(&[0x40, 0, 0, 0, b'm', b'd', b'a', b't']);
        assert!(matches!(r.poll(), Err(Fmp4Error::TooLarge { .. })));
        let mut r = Fmp4Reader::new(1024);
        r.push(&[0, 0]);
        assert_eq!(r.poll(), Ok(None));
    }
}
