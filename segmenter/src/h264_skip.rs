//! Skipped pictures for H.264: a P picture whose every macroblock is P_Skip, so it shows
//! the picture before it again, in a few bytes. The program's keyframes and audio cuts put
//! one in place of each video frame they leave out: the video keeps its frame rate and its
//! timeline (parts keep coming at the part target, players see no hole), while the picture
//! changes only at the keyframes that pass.
//!
//! Each skipped picture is a reference picture numbered after the keyframe before it
//! (`frame_num` + 1, + 2, ...; picture order count 2 apart), one slice, one reference,
//! coded with the stream's own entropy coder: CAVLC (one `mb_skip_run`) or CABAC (one
//! `mb_skip_flag` and one `end_of_slice_flag` per macroblock, from the arithmetic coder of
//! ITU-T H.264 9.3.4). Streams it cannot follow are refused with a [`SkipError`]: field
//! coding, slice groups, no reference frames, or parameter sets that do not parse.

use crate::media::{parameter_sets, Codec, Track};
use bytes::Bytes;

/// Why a track gets no skipped pictures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipError {
    /// Not an H.264 track.
    #[error("not H.264")]
    NotH264,
    /// A parameter set or a slice header did not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A coding tool skipped pictures are not made for.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// NAL unit types: a non-IDR slice, an IDR slice, an SPS, a PPS.
const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// What of the sequence parameter set a slice header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sps {
    id: u32,
    separate_colour_plane: bool,
    chroma_array_type: u32,
    log2_max_frame_num: u32,
    poc_type: u32,
    log2_max_poc_lsb: u32,
    delta_pic_order_always_zero: bool,
    mbs: u32,
}

/// What of a picture parameter set a slice header needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pps {
    id: u32,
    sps_id: u32,
    cabac: bool,
    bottom_field_pic_order: bool,
    weighted_pred: bool,
    pic_init_qp: i32,
    deblocking_control: bool,
    redundant_pic_cnt: bool,
}

/// A track's skipped-picture coder: its parameter sets, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipCoder {
    sps: Vec<Sps>,
    pps: Vec<Pps>,
}

/// Where the skipped pictures after a keyframe start: the keyframe's parameter set,
/// `frame_num` and picture order count (its low bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pps: u32,
    frame_num: u32,
    poc_lsb: u32,
    idr: bool,
}

impl Anchor {
    /// The picture is an IDR picture (nothing after it refers to anything before it).
    pub fn is_idr(&self) -> bool {
        self.idr
    }
}

impl SkipCoder {
    /// The coder for `track`, if skipped pictures can follow its stream.
    pub fn new(track: &Track) -> Result<Self, SkipError> {
        if track.codec != Codec::H264 {
            return Err(SkipError::NotH264);
        }
        let mut sps = Vec::new();
        let mut pps = Vec::new();
        for nal in parameter_sets(track) {
            match nal.first().map(|b| b & 0x1f) {
                Some(NAL_SPS) => sps.push(parse_sps(&rbsp(&nal[1..]))?),
                Some(NAL_PPS) => pps.push(parse_pps(&rbsp(&nal[1..]))?),
                _ => {}
            }
        }
        if sps.is_empty() || pps.is_empty() {
            return Err(SkipError::Malformed("parameter sets (none in the track)"));
        }
        if pps.iter().any(|p| !sps.iter().any(|s| s.id == p.sps_id)) {
            return Err(SkipError::Malformed("picture parameter set (unknown SPS)"));
        }
        Ok(Self { sps, pps })
    }

    /// The anchor a keyframe's access unit (4-byte lengths) gives its skipped pictures.
    pub fn anchor(&self, access_unit: &[u8]) -> Result<Anchor, SkipError> {
        let mut rest = access_unit;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let nal = rest
                .get(4..4 + len)
                .ok_or(SkipError::Malformed("access unit"))?;
            rest = &rest[4 + len..];
            let kind = nal.first().map(|b| b & 0x1f);
            if kind == Some(NAL_SLICE) || kind == Some(NAL_IDR) {
                return self.parse_slice(&rbsp(&nal[1..]), kind == Some(NAL_IDR));
            }
        }
        Err(SkipError::Malformed("access unit (no slice)"))
    }

    fn parse_slice(&self, rbsp: &[u8], idr: bool) -> Result<Anchor, SkipError> {
        let e = || SkipError::Malformed("slice header");
        let mut r = BitReader::new(rbsp);
        r.ue().ok_or_else(e)?; // first_mb_in_slice
        r.ue().ok_or_else(e)?; // slice_type
        let pps_id = r.ue().ok_or_else(e)?;
        let (_, sps) = self.sets(pps_id)?;
        if sps.separate_colour_plane {
            r.bits(2).ok_or_else(e)?;
        }
        let frame_num = r.bits(sps.log2_max_frame_num).ok_or_else(e)?;
        if idr {
            r.ue().ok_or_else(e)?; // idr_pic_id
        }
        let poc_lsb = if sps.poc_type == 0 {
            r.bits(sps.log2_max_poc_lsb).ok_or_else(e)?
        } else {
            0
        };
        Ok(Anchor {
            pps: pps_id,
            frame_num,
            poc_lsb,
            idr,
        })
    }

    fn sets(&self, pps_id: u32) -> Result<(&Pps, &Sps), SkipError> {
        let pps = self
            .pps
            .iter()
            .find(|p| p.id == pps_id)
            .ok_or(SkipError::Malformed("slice header (unknown PPS)"))?;
        let sps = self
            .sps
            .iter()
            .find(|s| s.id == pps.sps_id)
            .ok_or(SkipError::Malformed("picture parameter set (unknown SPS)"))?;
        Ok((pps, sps))
    }

    /// The `n`th skipped picture after `anchor` (n >= 1), as an access unit with a 4-byte
    /// length.
    pub fn picture(&self, anchor: Anchor, n: u32) -> Result<Bytes, SkipError> {
        let (pps, sps) = self.sets(anchor.pps)?;
        let mut w = BitWriter::default();
        w.ue(0); // first_mb_in_slice
        w.ue(0); // slice_type: P
        w.ue(pps.id);
        if sps.separate_colour_plane {
            w.bits(0, 2);
        }
        let frame_num = anchor.frame_num.wrapping_add(n) & ((1 << sps.log2_max_frame_num) - 1);
        w.bits(frame_num, sps.log2_max_frame_num);
        if sps.poc_type == 0 {
            let lsb =
                anchor.poc_lsb.wrapping_add(n.wrapping_mul(2)) & ((1 << sps.log2_max_poc_lsb) - 1);
            w.bits(lsb, sps.log2_max_poc_lsb);
            if pps.bottom_field_pic_order {
                w.se(0);
            }
        }
        if sps.poc_type == 1 && !sps.delta_pic_order_always_zero {
            w.se(0);
            if pps.bottom_field_pic_order {
                w.se(0);
            }
        }
        if pps.redundant_pic_cnt {
            w.ue(0);
        }
        w.bit(true); // num_ref_idx_active_override_flag
        w.ue(0); // one reference: the picture before
        w.bit(false); // ref_pic_list_modification_flag_l0
        if pps.weighted_pred {
            w.ue(0); // luma_log2_weight_denom
            if sps.chroma_array_type != 0 {
                w.ue(0);
            }
            w.bit(false); // luma_weight_l0_flag
            if sps.chroma_array_type != 0 {
                w.bit(false);
            }
        }
        w.bit(false); // adaptive_ref_pic_marking_mode_flag: sliding window
        if pps.cabac {
            w.ue(0); // cabac_init_idc
        }
        w.se(0); // slice_qp_delta
        if pps.deblocking_control {
            w.ue(1); // no deblocking (nothing to filter between skipped macroblocks)
        }
        if pps.cabac {
            while !w.aligned() {
                w.bit(true); // cabac_alignment_one_bit
            }
            let mut c = Cabac::new(&mut w, pps.pic_init_qp);
            for i in 0..sps.mbs {
                c.skip_flag();
                c.end_of_slice(i + 1 == sps.mbs);
            }
            // the flush's last bit is the rbsp_stop_one_bit
            w.align_zero();
        } else {
            w.ue(sps.mbs); // mb_skip_run: every macroblock
            w.bit(true); // rbsp_stop_one_bit
            w.align_zero();
        }
        let mut nal = vec![0x40 | NAL_SLICE]; // nal_ref_idc 2: a reference picture
        escape(&w.bytes, &mut nal);
        let mut au = Vec::with_capacity(4 + nal.len());
        au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        au.extend_from_slice(&nal);
        Ok(Bytes::from(au))
    }
}

fn parse_sps(rbsp: &[u8]) -> Result<Sps, SkipError> {
    let e = || SkipError::Malformed("sequence parameter set");
    let mut r = BitReader::new(rbsp);
    let profile = r.bits(8).ok_or_else(e)?;
    r.bits(16).ok_or_else(e)?; // constraint flags, level
    let id = r.ue().ok_or_else(e)?;
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue().ok_or_else(e)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit().ok_or_else(e)?;
        }
        r.ue().ok_or_else(e)?; // bit_depth_luma_minus8
        r.ue().ok_or_else(e)?; // bit_depth_chroma_minus8
        r.bit().ok_or_else(e)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit().ok_or_else(e)? {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit().ok_or_else(e)? {
                    scaling_list(&mut r, if i < 6 { 16 } else { 64 }).ok_or_else(e)?;
                }
            }
        }
    }
    let log2_max_frame_num = r.ue().ok_or_else(e)?.saturating_add(4);
    let poc_type = r.ue().ok_or_else(e)?;
    let mut log2_max_poc_lsb = 0;
    let mut delta_pic_order_always_zero = false;
    match poc_type {
        0 => log2_max_poc_lsb = r.ue().ok_or_else(e)?.saturating_add(4),
        1 => {
            delta_pic_order_always_zero = r.bit().ok_or_else(e)?;
            r.se().ok_or_else(e)?;
            r.se().ok_or_else(e)?;
            let cycle = r.ue().ok_or_else(e)?;
            if cycle > 255 {
                return Err(e());
            }
            for _ in 0..cycle {
                r.se().ok_or_else(e)?;
            }
        }
        2 => {}
        _ => return Err(e()),
    }
    let max_num_ref_frames = r.ue().ok_or_else(e)?;
    r.bit().ok_or_else(e)?; // gaps_in_frame_num_value_allowed_flag
    let width = r.ue().ok_or_else(e)?.saturating_add(1);
    let height = r.ue().ok_or_else(e)?.saturating_add(1);
    let frame_mbs_only = r.bit().ok_or_else(e)?;
    if log2_max_frame_num > 16 || log2_max_poc_lsb > 16 || width > 1024 || height > 1024 {
        return Err(e());
    }
    if !frame_mbs_only {
        return Err(SkipError::Unsupported(
            "field coding (frame_mbs_only_flag 0)",
        ));
    }
    if max_num_ref_frames == 0 {
        return Err(SkipError::Unsupported("intra only (no reference frames)"));
    }
    Ok(Sps {
        id,
        separate_colour_plane,
        chroma_array_type: if separate_colour_plane {
            0
        } else {
            chroma_format_idc
        },
        log2_max_frame_num,
        poc_type,
        log2_max_poc_lsb,
        delta_pic_order_always_zero,
        mbs: width * height,
    })
}

fn scaling_list(r: &mut BitReader, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

fn parse_pps(rbsp: &[u8]) -> Result<Pps, SkipError> {
    let e = || SkipError::Malformed("picture parameter set");
    let mut r = BitReader::new(rbsp);
    let id = r.ue().ok_or_else(e)?;
    let sps_id = r.ue().ok_or_else(e)?;
    let cabac = r.bit().ok_or_else(e)?;
    let bottom_field_pic_order = r.bit().ok_or_else(e)?;
    if r.ue().ok_or_else(e)? != 0 {
        return Err(SkipError::Unsupported("slice groups"));
    }
    r.ue().ok_or_else(e)?; // num_ref_idx_l0_default_active_minus1
    r.ue().ok_or_else(e)?; // num_ref_idx_l1_default_active_minus1
    let weighted_pred = r.bit().ok_or_else(e)?;
    r.bits(2).ok_or_else(e)?; // weighted_bipred_idc
    let pic_init_qp = r.se().ok_or_else(e)?.saturating_add(26);
    r.se().ok_or_else(e)?; // pic_init_qs_minus26
    r.se().ok_or_else(e)?; // chroma_qp_index_offset
    let deblocking_control = r.bit().ok_or_else(e)?;
    r.bit().ok_or_else(e)?; // constrained_intra_pred_flag
    let redundant_pic_cnt = r.bit().ok_or_else(e)?;
    Ok(Pps {
        id,
        sps_id,
        cabac,
        bottom_field_pic_order,
        weighted_pred,
        pic_init_qp,
        deblocking_control,
        redundant_pic_cnt,
    })
}

/// A NAL unit's payload without its emulation prevention bytes.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// `rbsp` with emulation prevention bytes, appended to `out`.
fn escape(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let b = self.data.get(self.pos / 8)?;
        let v = (b >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(v == 1)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Some(v)
    }

    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        i32::try_from(v).ok()
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0: none, or no byte yet).
    used: u32,
}

impl BitWriter {
    fn bit(&mut self, b: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if b {
            *self.bytes.last_mut().expect("pushed above") |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) % 8;
    }

    fn bits(&mut self, v: u32, n: u32) {
        for i in (0..n).rev() {
            self.bit((v >> i) & 1 == 1);
        }
    }

    fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        for _ in 1..len {
            self.bit(false);
        }
        for i in (0..len).rev() {
            self.bit((x >> i) & 1 == 1);
        }
    }

    fn se(&mut self, v: i32) {
        let k = if v > 0 {
            2 * v as i64 - 1
        } else {
            -2 * v as i64
        };
        self.ue(k as u32);
    }

    fn aligned(&self) -> bool {
        self.used == 0
    }

    fn align_zero(&mut self) {
        while !self.aligned() {
            self.bit(false);
        }
    }
}

/// Table 9-44: the LPS range by probability state and quarter of the range.
const RANGE_LPS: [[u8; 4]; 64] = [
    [128, 176, 208, 240],
    [128, 167, 197, 227],
    [128, 158, 187, 216],
    [123, 150, 178, 205],
    [116, 142, 169, 195],
    [111, 135, 160, 185],
    [105, 128, 152, 175],
    [100, 122, 144, 166],
    [95, 116, 137, 158],
    [90, 110, 130, 150],
    [85, 104, 123, 142],
    [81, 99, 117, 135],
    [77, 94, 111, 128],
    [73, 89, 105, 122],
    [69, 85, 100, 116],
    [66, 80, 95, 110],
    [62, 76, 90, 104],
    [59, 72, 86, 99],
    [56, 69, 81, 94],
    [53, 65, 77, 89],
    [51, 62, 73, 85],
    [48, 59, 69, 80],
    [46, 56, 66, 76],
    [43, 53, 63, 72],
    [41, 50, 59, 69],
    [39, 48, 56, 65],
    [37, 45, 54, 62],
    [35, 43, 51, 59],
    [33, 41, 48, 56],
    [32, 39, 46, 53],
    [30, 37, 43, 50],
    [29, 35, 41, 48],
    [27, 33, 39, 45],
    [26, 31, 37, 43],
    [24, 30, 35, 41],
    [23, 28, 33, 39],
    [22, 27, 32, 37],
    [21, 26, 30, 35],
    [20, 24, 29, 33],
    [19, 23, 27, 31],
    [18, 22, 26, 30],
    [17, 21, 25, 28],
    [16, 20, 23, 27],
    [15, 19, 22, 25],
    [14, 18, 21, 24],
    [14, 17, 20, 23],
    [13, 16, 19, 22],
    [12, 15, 18, 21],
    [12, 14, 17, 20],
    [11, 14, 16, 19],
    [11, 13, 15, 18],
    [10, 12, 15, 17],
    [10, 12, 14, 16],
    [9, 11, 13, 15],
    [9, 11, 12, 14],
    [8, 10, 12, 14],
    [8, 9, 11, 13],
    [7, 9, 11, 12],
    [7, 9, 10, 12],
    [7, 8, 10, 11],
    [6, 8, 9, 11],
    [6, 7, 9, 10],
    [6, 7, 8, 9],
    [2, 2, 2, 2],
];

/// Table 9-45: the next probability state after a least probable symbol.
const TRANS_LPS: [u8; 64] = [
    0, 0, 1, 2, 2, 4, 4, 5, 6, 7, 8, 9, 9, 11, 11, 12, 13, 13, 15, 15, 16, 16, 18, 18, 19, 19, 21,
    21, 22, 22, 23, 24, 24, 25, 26, 26, 27, 27, 28, 29, 29, 30, 30, 30, 31, 32, 32, 33, 33, 33, 34,
    34, 35, 35, 35, 36, 36, 36, 37, 37, 37, 38, 38, 63,
];

/// Table 9-13, cabac_init_idc 0: (m, n) of ctxIdx 11, `mb_skip_flag` of a P slice whose
/// neighbours are skipped too (ctxIdxInc 0).
const SKIP_FLAG_INIT: (i32, i32) = (23, 33);

/// The arithmetic coder of 9.3.4.2, with the one context a skipped picture uses.
struct Cabac<'a> {
    w: &'a mut BitWriter,
    low: u32,
    range: u32,
    outstanding: u32,
    first: bool,
    state: usize,
    mps: bool,
}

impl<'a> Cabac<'a> {
    fn new(w: &'a mut BitWriter, slice_qp: i32) -> Self {
        let (m, n) = SKIP_FLAG_INIT;
        let pre = (((m * slice_qp.clamp(0, 51)) >> 4) + n).clamp(1, 126);
        let (state, mps) = if pre <= 63 {
            (63 - pre, false)
        } else {
            (pre - 64, true)
        };
        Self {
            w,
            low: 0,
            range: 510,
            outstanding: 0,
            first: true,
            state: state as usize,
            mps,
        }
    }

    /// `mb_skip_flag` = 1.
    fn skip_flag(&mut self) {
        let lps = u32::from(RANGE_LPS[self.state][((self.range >> 6) & 3) as usize]);
        self.range -= lps;
        if !self.mps {
            self.low += self.range;
            self.range = lps;
            if self.state == 0 {
                self.mps = !self.mps;
            }
            self.state = usize::from(TRANS_LPS[self.state]);
        } else {
            self.state = (self.state + 1).min(62);
        }
        self.renorm();
    }

    /// `end_of_slice_flag`, coded as a terminating bin; the last one flushes the coder.
    fn end_of_slice(&mut self, end: bool) {
        self.range -= 2;
        if end {
            self.low += self.range;
            self.range = 2;
            self.renorm();
            self.put((self.low >> 9) & 1 == 1);
            self.w.bits(((self.low >> 7) & 3) | 1, 2);
        } else {
            self.renorm();
        }
    }

    fn renorm(&mut self) {
        while self.range < 256 {
            if self.low < 256 {
                self.put(false);
            } else if self.low >= 512 {
                self.low -= 512;
                self.put(true);
            } else {
                self.low -= 256;
                self.outstanding += 1;
            }
            self.range <<= 1;
            self.low <<= 1;
        }
    }

    fn put(&mut self, b: bool) {
        if self.first {
            self.first = false;
        } else {
            self.w.bit(b);
        }
        while self.outstanding > 0 {
            self.w.bit(!b);
            self.outstanding -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_round_trips() {
        let mut w = BitWriter::default();
        for v in [0u32, 1, 2, 3, 7, 8, 255, 1 << 20] {
            w.ue(v);
        }
        for v in [0i32, 1, -1, 2, -2, 100, -100] {
            w.se(v);
        }
        w.align_zero();
        let mut r = BitReader::new(&w.bytes);
        for v in [0u32, 1, 2, 3, 7, 8, 255, 1 << 20] {
            assert_eq!(r.ue(), Some(v));
        }
        for v in [0i32, 1, -1, 2, -2, 100, -100] {
            assert_eq!(r.se(), Some(v));
        }
    }

    #[test]
    fn emulation_prevention_round_trips() {
        let raw = [0u8, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 5];
        let mut escaped = Vec::new();
        escape(&raw, &mut escaped);
        assert!(!escaped
            .windows(3)
            .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2));
        assert_eq!(rbsp(&escaped), raw);
    }

    #[test]
    fn no_input_makes_it_panic() {
        // parameter sets, slices and anchors of arbitrary bytes (a camera's stream is
        // network input): refused or coded, never a panic
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let t = crate::test_media::video_track(640);
        let good = SkipCoder::new(&t).unwrap();
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = parse_sps(&b);
            let _ = parse_pps(&b);
            b.insert(0, 0x65);
            let mut au = (b.len() as u32).to_be_bytes().to_vec();
            au.extend_from_slice(&b);
            if let Ok(a) = good.anchor(&au) {
                let _ = good.picture(a, next() as u32);
            }
        }
    }

    #[test]
    fn other_codecs_and_garbage_are_refused() {
        let aac = crate::test_media::audio_track();
        assert_eq!(SkipCoder::new(&aac), Err(SkipError::NotH264));
        let mut t = crate::test_media::video_track(640);
        t.config = Bytes::from_static(&[1, 100, 0, 30, 0xff, 0xe1, 0, 2, 0x67, 0xff]);
        assert!(matches!(SkipCoder::new(&t), Err(SkipError::Malformed(_))));
    }
}
