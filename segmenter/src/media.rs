//! What goes into the segmenter: tracks (codec configuration) and frames.

use bytes::Bytes;

/// A video or audio codec the segmenter packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC. Frames are length-prefixed NAL units (4-byte lengths), as in MP4.
    H264,
    /// H.265 / HEVC. Frames are length-prefixed NAL units (4-byte lengths).
    H265,
    /// AAC. Frames are raw access units (no ADTS header).
    Aac,
}

impl Codec {
    /// Video codec?
    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }
}

/// One track's configuration: what the init segment describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The codec.
    pub codec: Codec,
    /// Units of `pts`/`dts` per second (90 000 for RTP video, the sample rate for AAC).
    pub timescale: u32,
    /// The codec configuration record: `AVCDecoderConfigurationRecord` (avcC) for H.264,
    /// `HEVCDecoderConfigurationRecord` (hvcC) for H.265, `AudioSpecificConfig` for AAC.
    pub config: Bytes,
    /// Video: width in pixels.
    pub width: u16,
    /// Video: height in pixels.
    pub height: u16,
    /// Audio: channels.
    pub channels: u16,
    /// Audio: sample rate in Hz.
    pub sample_rate: u32,
}

impl Track {
    /// An H.264 track from its avcC record.
    pub fn h264(avcc: Bytes, width: u16, height: u16) -> Self {
        Self::video(Codec::H264, avcc, width, height)
    }

    /// An H.265 track from its hvcC record.
    pub fn h265(hvcc: Bytes, width: u16, height: u16) -> Self {
        Self::video(Codec::H265, hvcc, width, height)
    }

    fn video(codec: Codec, config: Bytes, width: u16, height: u16) -> Self {
        Self {
            codec,
            timescale: 90_000,
            config,
            width,
            height,
            channels: 0,
            sample_rate: 0,
        }
    }

    /// An AAC track from its AudioSpecificConfig; the timescale is the sample rate.
    pub fn aac(asc: Bytes, sample_rate: u32, channels: u16) -> Self {
        Self {
            codec: Codec::Aac,
            timescale: sample_rate.max(1),
            config: asc,
            width: 0,
            height: 0,
            channels,
            sample_rate,
        }
    }

    /// The RFC 6381 codec string for HLS `CODECS` (`avc1.64001f`, `hvc1.1.6.L93.B0`,
    /// `mp4a.40.2`); `None` when the configuration record is too short to read.
    pub fn rfc6381(&self) -> Option<String> {
        let c = &self.config;
        match self.codec {
            Codec::H264 => {
                (c.len() >= 4).then(|| format!("avc1.{:02x}{:02x}{:02x}", c[1], c[2], c[3]))
            }
            Codec::H265 => {
                if c.len() < 13 {
                    return None;
                }
                let space = c[1] >> 6;
                let tier = (c[1] >> 5) & 1;
                let profile = c[1] & 0x1f;
                let compat = u32::from_be_bytes([c[2], c[3], c[4], c[5]]).reverse_bits();
                let level = c[12];
                let space = ["", "A", "B", "C"][usize::from(space)];
                let mut s = format!(
                    "hvc1.{space}{profile}.{compat:X}.{}{level}",
                    if tier == 1 { 'H' } else { 'L' }
                );
                // constraint bytes, trailing zero bytes omitted
                let cons = &c[6..12];
                let n = cons.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                for b in &cons[..n] {
                    s.push_str(&format!(".{b:X}"));
                }
                Some(s)
            }
            Codec::Aac => {
                let object_type = c.first().map_or(2, |b| b >> 3);
                let object_type = if object_type == 0 { 2 } else { object_type };
                Some(format!("mp4a.40.{object_type}"))
            }
        }
    }

    /// Checks that the configuration can be packaged; the error says what is missing.
    pub fn validate(&self) -> Result<(), String> {
        match self.codec {
            Codec::H264 => {
                if self.config.len() < 7 || self.config[0] != 1 {
                    return Err("H.264 without a usable SPS/PPS (avcC record)".into());
                }
            }
            Codec::H265 => {
                if self.config.len() < 23 || self.config[0] != 1 {
                    return Err("H.265 without a usable VPS/SPS/PPS (hvcC record)".into());
                }
            }
            Codec::Aac => {
                if self.config.len() < 2 || self.sample_rate == 0 || self.channels == 0 {
                    return Err("AAC without an AudioSpecificConfig".into());
                }
            }
        }
        if self.codec.is_video() && (self.width == 0 || self.height == 0) {
            return Err("video without dimensions".into());
        }
        if self.timescale == 0 {
            return Err("timescale 0".into());
        }
        Ok(())
    }
}

/// One access unit of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Index of the track (into the track list given to the segmenter).
    pub track: usize,
    /// Presentation time in the track's timescale.
    pub pts: i64,
    /// Decode time in the track's timescale (equal to `pts` without B-frames).
    pub dts: i64,
    /// A random access point (IDR / IRAP; every AAC frame).
    pub keyframe: bool,
    /// The access unit (length-prefixed NAL units for video, a raw AAC frame for audio).
    pub data: Bytes,
}

/// Builds an avcC record from one SPS and one or more PPS (NAL units without start codes).
pub fn avcc_from_parameter_sets(sps: &[u8], pps: &[&[u8]]) -> Option<Bytes> {
    if sps.len() < 4 || pps.is_empty() {
        return None;
    }
    let mut v = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    v.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    v.extend_from_slice(sps);
    v.push(u8::try_from(pps.len()).ok()?);
    for p in pps {
        v.extend_from_slice(&u16::try_from(p.len()).ok()?.to_be_bytes());
        v.extend_from_slice(p);
    }
    Some(Bytes::from(v))
}

/// The parameter sets of a video track's configuration record: SPS and PPS of an avcC,
/// VPS, SPS and PPS of an hvcC (empty for audio or a record that does not parse).
pub fn parameter_sets(track: &Track) -> Vec<&[u8]> {
    fn take<'a>(d: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (a, b) = (d.get(..n)?, d.get(n..)?);
        *d = b;
        Some(a)
    }
    fn u16_at(d: &mut &[u8]) -> Option<usize> {
        take(d, 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    let mut d: &[u8] = &track.config;
    let mut out = Vec::new();
    let parsed = match track.codec {
        Codec::H264 => (|| {
            take(&mut d, 5)?;
            let sps = take(&mut d, 1)?[0] & 0x1f;
            for _ in 0..sps {
                let n = u16_at(&mut d)?;
                out.push(take(&mut d, n)?);
            }
            let pps = take(&mut d, 1)?[0];
            for _ in 0..pps {
                let n = u16_at(&mut d)?;
                out.push(take(&mut d, n)?);
            }
            Some(())
        })(),
        Codec::H265 => (|| {
            take(&mut d, 22)?;
            let arrays = take(&mut d, 1)?[0];
            for _ in 0..arrays {
                take(&mut d, 1)?;
                let nalus = u16_at(&mut d)?;
                for _ in 0..nalus {
                    let n = u16_at(&mut d)?;
                    out.push(take(&mut d, n)?);
                }
            }
            Some(())
        })(),
        Codec::Aac => None,
    };
    if parsed.is_none() {
        out.clear();
    }
    out
}

/// A video frame's access unit with the track's parameter sets in it (after an access
/// unit delimiter if it starts with one; 4-byte lengths, as the frames are): a decoder that
/// kept an earlier source's parameter sets (ffmpeg's HLS reader does not take a new init
/// segment's) decodes it all the same. A frame that carries a sequence parameter set
/// already, or whose NAL units do not parse, is left as it is.
pub fn with_parameter_sets(track: &Track, data: &Bytes) -> Bytes {
    let sets = parameter_sets(track);
    // NAL unit type of a NAL unit's first byte: (access unit delimiter, SPS)
    let (kind, aud, sps): (fn(u8) -> u8, u8, u8) = match track.codec {
        Codec::H264 => (|b| b & 0x1f, 9, 7),
        Codec::H265 => (|b| (b >> 1) & 0x3f, 35, 33),
        Codec::Aac => return data.clone(),
    };
    let mut nalus = Vec::new();
    let mut rest: &[u8] = data;
    while !rest.is_empty() {
        let Some(len) = rest
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return data.clone();
        };
        let Some(nalu) = rest.get(4..4 + len) else {
            return data.clone();
        };
        nalus.push(nalu);
        rest = &rest[4 + len..];
    }
    if sets.is_empty()
        || nalus
            .iter()
            .any(|n| n.first().map(|b| kind(*b)) == Some(sps))
    {
        return data.clone();
    }
    let at = match nalus.first().and_then(|n| n.first()) {
        Some(b) if kind(*b) == aud => 4 + nalus[0].len(),
        _ => 0,
    };
    let mut v = Vec::with_capacity(data.len() + sets.iter().map(|s| s.len() + 4).sum::<usize>());
    v.extend_from_slice(&data[..at]);
    for s in sets {
        v.extend_from_slice(&(s.len() as u32).to_be_bytes());
        v.extend_from_slice(s);
    }
    v.extend_from_slice(&data[at..]);
    Bytes::from(v)
}

/// Splits Annex B (start-code delimited) data into NAL units.
pub fn annexb_nalus(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && data[end - 1] == 0 {
                    end -= 1;
                }
                if end > s {
                    out.push(&data[s..end]);
                }
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        if s < data.len() {
            out.push(&data[s..]);
        }
    }
    out
}

/// Length-prefixes NAL units (4-byte big-endian lengths), the MP4 sample format.
pub fn length_prefixed<'a>(nalus: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut v = Vec::new();
    for n in nalus {
        if let Ok(len) = u32::try_from(n.len()) {
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(n);
        }
    }
    Bytes::from(v)
}

/// Whether a length-prefixed H.265 sample holds an IRAP picture (BLA, IDR or CRA: NAL unit
/// types 16 to 21), where decoding can start.
pub fn hevc_irap(sample: &[u8]) -> bool {
    nalus(sample).any(|n| {
        n.first()
            .is_some_and(|b| (16..=21).contains(&((b >> 1) & 0x3f)))
    })
}

/// Iterates over the NAL units of a length-prefixed sample; stops at the first bad length.
pub fn nalus(sample: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = sample;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_strings() {
        let sps = [0x67, 0x64, 0x00, 0x1f, 0xac];
        let avcc = avcc_from_parameter_sets(&sps, &[&[0x68, 0xee, 0x3c, 0x80]]).unwrap();
        assert_eq!(
            Track::h264(avcc, 1280, 720).rfc6381().unwrap(),
            "avc1.64001f"
        );
        let aac = Track::aac(Bytes::from_static(&[0x12, 0x10]), 44_100, 2);
        assert_eq!(aac.rfc6381().unwrap(), "mp4a.40.2");
        // hvcC: Main profile, compat 0x60000000, level 93, constraint 0xb0
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 93];
        hvcc.resize(23, 0);
        let t = Track::h265(Bytes::from(hvcc), 1920, 1080);
        assert_eq!(t.rfc6381().unwrap(), "hvc1.1.6.L93.B0");
    }

    #[test]
    fn annexb_round_trip() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let n = annexb_nalus(&data);
        assert_eq!(n, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        let lp = length_prefixed(n.iter().copied());
        assert_eq!(nalus(&lp).count(), 3);
        // a truncated length stops the iteration instead of panicking
        assert_eq!(nalus(&[0, 0, 0, 9, 1]).count(), 0);
        assert!(annexb_nalus(&[0, 0, 1]).is_empty());
    }

    #[test]
    fn parameter_sets_go_in_front_of_a_frame() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
        let pps = [0x68, 0xce, 0x38, 0x80];
        let t = Track::h264(avcc_from_parameter_sets(&sps, &[&pps]).unwrap(), 640, 360);
        assert_eq!(parameter_sets(&t), vec![&sps[..], &pps[..]]);
        let f = with_parameter_sets(&t, &Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        let mut want = vec![0, 0, 0, 10];
        want.extend_from_slice(&sps);
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(&pps);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        assert_eq!(&f[..], &want[..]);
        // after an access unit delimiter; not twice; a frame that does not parse as it is
        let aud = Bytes::from_static(&[0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 1, 0x65]);
        let f = with_parameter_sets(&t, &aud);
        assert_eq!(&f[..6], &aud[..6]);
        assert_eq!(&f[6..10], &[0, 0, 0, 10]);
        assert_eq!(&f[f.len() - 5..], &[0, 0, 0, 1, 0x65]);
        assert_eq!(with_parameter_sets(&t, &f), f);
        let broken = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
        assert_eq!(with_parameter_sets(&t, &broken), broken);
        // a record cut short: nothing in front, no panic
        let cut = Track::h264(t.config.slice(..9), 640, 360);
        assert!(parameter_sets(&cut).is_empty());
        assert_eq!(
            with_parameter_sets(&cut, &Bytes::from_static(&[1])),
            Bytes::from_static(&[1])
        );
        // hvcC: 22 bytes, one array (type 33, one 3-byte SPS)
        let mut hvcc = vec![1u8; 22];
        hvcc.extend_from_slice(&[1, 33, 0, 1, 0, 3, 0x42, 0x01, 0x01]);
        let h = Track::h265(Bytes::from(hvcc), 1920, 1080);
        assert_eq!(parameter_sets(&h), vec![&[0x42u8, 0x01, 0x01][..]]);
        assert!(
            parameter_sets(&Track::aac(Bytes::from_static(&[0x11, 0x90]), 48_000, 2)).is_empty()
        );
    }

    #[test]
    fn hevc_random_access_pictures() {
        // CRA (21) after an AUD (35): IRAP; a TRAIL_R (1) picture is not
        let cra = length_prefixed([&[35 << 1, 1, 0x50][..], &[21 << 1, 1, 0xaa][..]]);
        assert!(hevc_irap(&cra));
        assert!(!hevc_irap(&length_prefixed([&[1 << 1, 1, 0xaa][..]])));
        assert!(hevc_irap(&length_prefixed([&[19 << 1, 1][..]])));
    }

    #[test]
    fn missing_parameters_are_named() {
        let t = Track::h264(Bytes::new(), 1, 1);
        assert!(t.validate().unwrap_err().contains("SPS/PPS"));
    }
}

/// Decode times for video whose source gives only presentation times (RTP carries no DTS).
///
/// Without B-frames presentation order is decode order and `dts = pts`. Once a frame's pts
/// goes backwards the stream has B-frames: from then on frames are held `depth` frames
/// back, and each frame's dts is the smallest pts not yet used, minus a fixed shift of two
/// frame durations, kept strictly increasing. That is exact for a reorder depth up to the
/// shift (x264's default B-pyramid needs two).
#[derive(Debug, Default)]
pub struct DtsFromPts {
    active: bool,
    buf: std::collections::VecDeque<Frame>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<i64>>,
    last_pts: Option<i64>,
    last_dts: Option<i64>,
    duration: i64,
}

impl DtsFromPts {
    /// Frames held back before their dts is known.
    pub const DEPTH: usize = 3;

    /// Takes a frame in decode (arrival) order; returns the frames whose dts is now set.
    pub fn push(&mut self, mut f: Frame) -> Vec<Frame> {
        let mut out = Vec::new();
        if let Some(last) = self.last_pts {
            // far back (a source that restarted its clock): not reordering; start over
            if f.pts < last && last - f.pts > 32 * self.duration.max(1) {
                out = self.flush();
            }
        }
        if let Some(last) = self.last_pts {
            // the frame duration: the smallest step between presentation times seen,
            // ignoring steps far below it (timestamp jitter)
            let step = (f.pts - last).abs();
            if step > 0
                && (self.duration == 0 || (step < self.duration && step * 4 >= self.duration))
            {
                self.duration = step;
            }
            if f.pts < last {
                self.active = true;
            }
        }
        self.last_pts = Some(f.pts);
        if !self.active {
            f.dts = self.monotonic(f.pts);
            out.push(f);
            return out;
        }
        self.heap.push(std::cmp::Reverse(f.pts));
        self.buf.push_back(f);
        while self.buf.len() > Self::DEPTH {
            out.push(self.release());
        }
        out
    }

    fn release(&mut self) -> Frame {
        let mut f = self.buf.pop_front().expect("caller checked");
        let smallest = self.heap.pop().map_or(f.pts, |r| r.0);
        f.dts = self.monotonic(smallest - 2 * self.duration.max(1));
        f
    }

    fn monotonic(&mut self, dts: i64) -> i64 {
        let dts = match self.last_dts {
            Some(l) if dts <= l => l + 1,
            _ => dts,
        };
        self.last_dts = Some(dts);
        dts
    }

    /// Releases the held frames (end of input) and starts over.
    pub fn flush(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while !self.buf.is_empty() {
            out.push(self.release());
        }
        *self = Self::default();
        out
    }
}

#[cfg(test)]
mod dts_tests {
    use super::*;

    #[test]
    fn b_frames_get_increasing_decode_times_before_their_presentation() {
        let mut d = DtsFromPts::default();
        // decode order of IPBB with 40 ms frames (3600 ticks): I0 P3 B1 B2 P6 B4 B5 ...
        let order = [0i64, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11];
        let mut out = Vec::new();
        for p in order {
            out.extend(d.push(Frame {
                track: 0,
                pts: p * 3600,
                dts: 0,
                keyframe: p == 0,
                data: Bytes::new(),
            }));
        }
        out.extend(d.flush());
        assert_eq!(out.len(), order.len());
        let mut last = i64::MIN;
        for (i, f) in out.iter().enumerate() {
            assert!(f.dts > last, "{} after {last}", f.dts);
            // the first frames, passed before the reordering showed, may decode late
            if i >= 4 {
                assert!(f.dts <= f.pts, "frame {i}: dts {} > pts {}", f.dts, f.pts);
            }
            last = f.dts;
        }
        // the source restarts its clock far back: held frames come out, then passthrough
        let mut d2 = DtsFromPts::default();
        for p in order {
            d2.push(Frame {
                track: 0,
                pts: 1_000_000 + p * 3600,
                dts: 0,
                keyframe: false,
                data: Bytes::new(),
            });
        }
        let out = d2.push(Frame {
            track: 0,
            pts: 0,
            dts: 0,
            keyframe: true,
            data: Bytes::new(),
        });
        assert_eq!(out.len(), DtsFromPts::DEPTH + 1);
        assert_eq!(out.last().map(|f| (f.pts, f.dts)), Some((0, 0)));
        assert_eq!(
            d2.push(Frame {
                track: 0,
                pts: 3600,
                dts: 0,
                keyframe: false,
                data: Bytes::new()
            })
            .len(),
            1
        );
        // without B-frames nothing is held back
        let mut d = DtsFromPts::default();
        for p in 0..5 {
            let f = d.push(Frame {
                track: 0,
                pts: p * 3600,
                dts: 0,
                keyframe: false,
                data: Bytes::new(),
            });
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].dts, p * 3600);
        }
    }
}
