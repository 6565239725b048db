//! The LL-HLS model: which segments and parts a stream has, rendered as a media playlist,
//! and the rules of blocking playlist reload (`_HLS_msn` / `_HLS_part`).

use std::collections::VecDeque;
use std::fmt::Write;

/// A part as the playlist knows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartInfo {
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
    /// No media (GAP=YES).
    pub gap: bool,
}

/// A segment as the playlist knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInfo {
    /// Media sequence number.
    pub msn: u64,
    /// Its parts so far.
    pub parts: Vec<PartInfo>,
    /// All parts are in.
    pub complete: bool,
    /// A discontinuity comes before this segment.
    pub discontinuity: bool,
    /// Init segment generation that decodes it.
    pub init: u32,
    /// Wall clock of its first frame, ms since the Unix epoch.
    pub pdt_ms: u64,
    /// A gap segment (EXT-X-GAP): no media, it only keeps the playlist going.
    pub gap: bool,
    /// Starts with a keyframe.
    pub independent: bool,
}

impl SegmentInfo {
    /// Seconds.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }
}

/// How much shorter than its media a segment's EXTINF is written when the next segment opens
/// a new timeline or map: more than an audio frame (AAC at 16 kHz: 64 ms), the most its
/// audio can end before its video. See [`extinf`].
pub const NEW_TIMELINE_LEAD: f64 = 0.08;

/// Seconds in 10 us steps (the playlist's), rounded down; a little slack, as 0.6 s is
/// 59999.99999999999 steps in binary.
fn steps(seconds: f64) -> f64 {
    (seconds * 1e5 + 1e-6).floor().max(0.0)
}

/// The EXTINF of a segment from `start` to `end` on its timeline (seconds), as written
/// with five decimals:
/// the 10 us steps between the two rounded down, so the EXTINFs of a timeline add up to
/// within a step of its media however many there are; and, when the next segment opens a
/// new timeline or needs another map (`before_new_timeline`), [`NEW_TIMELINE_LEAD`]
/// shorter (half the segment at most).
///
/// Players place each segment at the floating-point sum of the EXTINFs before it (hls.js
/// does while it loads parts, without looking at the media's times), and look up the
/// segment to load next by where their buffer ends. Where the next segment needs another
/// map, its start must be strictly before the end of what the player buffered, which ends
/// with the track that ends first (the audio, a few ms before the video). Otherwise hls.js
/// 1.6.19 looks up the old segment, takes the new one's first part as the old one's next
/// and parses it without its map ("Found no media", then a GAP error for each part after).
/// Seen: buffered to 22.4 against 21.8 + 0.6 = 22.400000000000002, and to 19.391999
/// against 19.39399 (the audio ended 2 ms before the video). The new timeline's first
/// frames then take the place of the old one's last [`NEW_TIMELINE_LEAD`] in the player's
/// buffer.
pub fn extinf(start: f64, end: f64, before_new_timeline: bool) -> f64 {
    let mut n = steps(end) - steps(start);
    if before_new_timeline {
        let d = end - start;
        n = n.min(steps((d - NEW_TIMELINE_LEAD).max(d / 2.0)));
    }
    n.max(0.0) / 1e5
}

/// What a playlist request asked for, from `_HLS_msn`, `_HLS_part` and `_HLS_skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blocking {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u32>,
    /// `_HLS_skip=YES` (or `v2`): a delta update.
    pub skip: bool,
}

/// Why a playlist request's directives are refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDirective {
    /// Not a number.
    #[error("bad {0} {1:?}")]
    Malformed(&'static str, String),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
}

/// How a blocking request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Answer now.
    Now,
    /// Wait for more media.
    Wait,
    /// The request is invalid (400): an msn or part too far ahead.
    BadRequest,
}

impl Blocking {
    /// Parses the query string; unknown parameters are ignored, malformed ones are an error.
    pub fn parse(query: Option<&str>) -> Result<Self, BadDirective> {
        let mut b = Blocking::default();
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let bad = |name| BadDirective::Malformed(name, v.chars().take(40).collect());
            match k {
                "_HLS_msn" => b.msn = Some(v.parse().map_err(|_| bad("_HLS_msn"))?),
                "_HLS_part" => b.part = Some(v.parse().map_err(|_| bad("_HLS_part"))?),
                "_HLS_skip" => match v {
                    "YES" | "v2" => b.skip = true,
                    _ => return Err(bad("_HLS_skip")),
                },
                _ => {}
            }
        }
        if b.part.is_some() && b.msn.is_none() {
            return Err(BadDirective::PartWithoutMsn);
        }
        Ok(b)
    }
}

/// Another rendition's live edge, reported in a playlist (EXT-X-RENDITION-REPORT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// URI of its media playlist, relative to this one.
    pub uri: String,
    /// Its last media sequence number.
    pub last_msn: u64,
    /// Its last part in that segment.
    pub last_part: u32,
}

/// How to render a media playlist.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// A delta update: segments older than CAN-SKIP-UNTIL become one EXT-X-SKIP.
    pub skip: bool,
    /// Other renditions' live edges.
    pub reports: Vec<RenditionReport>,
    /// Appended to every URI (e.g. `?token=...` for signed viewer URLs, which relative URIs
    /// do not inherit).
    pub uri_suffix: String,
}

/// A rendition's media playlist.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    segments: VecDeque<SegmentInfo>,
    part_target: f64,
    target_duration: f64,
    part_hold_back: f64,
    discontinuity_sequence: u64,
    /// Where the first listed segment starts on its timeline, seconds (EXTINFs are rounded
    /// from there, see [`extinf`]).
    first_at: f64,
    /// How many segments from the end list their parts.
    parts_window: usize,
    /// Segments kept in the playlist at most (older ones stay in the ring).
    max_segments: usize,
    ended: bool,
    /// Every segment so far started with a keyframe.
    independent_segments: bool,
}

impl MediaPlaylist {
    /// A playlist with the given part target and segment target (seconds).
    pub fn new(part_target: f64, segment_target: f64, max_segments: usize) -> Self {
        Self {
            segments: VecDeque::new(),
            part_target,
            target_duration: segment_target,
            part_hold_back: part_target * 3.0,
            discontinuity_sequence: 0,
            first_at: 0.0,
            parts_window: 3,
            max_segments: max_segments.max(3),
            ended: false,
            independent_segments: true,
        }
    }

    /// Sets PART-HOLD-BACK (at least three part targets, as RFC 8216bis recommends).
    pub fn with_part_hold_back(mut self, seconds: f64) -> Self {
        self.part_hold_back = seconds.max(self.part_target * 3.0);
        self
    }

    /// Opens segment `seg` (closing the previous one).
    pub fn open_segment(&mut self, seg: SegmentInfo) {
        if let Some(last) = self.segments.back_mut() {
            last.complete = true;
        }
        if !seg.independent && !seg.gap {
            self.independent_segments = false;
        }
        self.segments.push_back(seg);
        while self.segments.len() > self.max_segments {
            self.drop_oldest();
        }
    }

    /// Records a new part of the open segment.
    pub fn add_part(&mut self, msn: u64, index: u32, part: PartInfo) {
        if let Some(last) = self.segments.back_mut() {
            if last.msn == msn && last.parts.len() == index as usize && !last.complete {
                // a frame longer than the target (a camera under 5 fps) makes a longer part;
                // the advertised target follows, so it stays an upper bound
                self.part_target = self.part_target.max(part.duration);
                self.part_hold_back = self.part_hold_back.max(self.part_target * 3.0);
                last.parts.push(part);
                self.target_duration = self.target_duration.max(last.duration());
            }
        }
    }

    /// Drops the last segment if it is `msn` and has no parts (its first part was given
    /// up on before it was whole); true if it did.
    pub fn drop_empty_last(&mut self, msn: u64) -> bool {
        if self
            .segments
            .back()
            .is_some_and(|s| s.msn == msn && s.parts.is_empty())
        {
            self.segments.pop_back();
            if self.segments.is_empty() {
                self.first_at = 0.0;
            }
            return true;
        }
        false
    }

    /// Marks the last segment complete (the stream paused or ended).
    pub fn close_segment(&mut self) {
        if let Some(last) = self.segments.back_mut() {
            last.complete = true;
        }
    }

    /// Ends the playlist (EXT-X-ENDLIST).
    pub fn end(&mut self) {
        self.close_segment();
        self.ended = true;
    }

    /// Whether the playlist has ended.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Every segment so far started with a keyframe.
    pub fn independent_segments(&self) -> bool {
        self.independent_segments
    }

    fn drop_oldest(&mut self) {
        if let Some(s) = self.segments.pop_front() {
            // a discontinuity tag that leaves the playlist advances the sequence
            if s.discontinuity {
                self.discontinuity_sequence += 1;
            }
            self.first_at = match self.segments.front() {
                Some(next) if !next.discontinuity => self.first_at + s.duration(),
                _ => 0.0,
            };
        }
    }

    /// Forgets segments older than `msn` (their parts left the ring).
    pub fn forget_before(&mut self, msn: u64) {
        while self.segments.front().is_some_and(|s| s.msn < msn) && self.segments.len() > 1 {
            self.drop_oldest();
        }
    }

    /// The target duration, seconds (the largest segment so far, at least the configured one).
    pub fn target_duration(&self) -> f64 {
        self.target_duration
    }

    /// The part target, seconds.
    pub fn part_target(&self) -> f64 {
        self.part_target
    }

    /// Segments listed, oldest first.
    pub fn segments(&self) -> &VecDeque<SegmentInfo> {
        &self.segments
    }

    /// The (msn, part index) the next part will get, if known.
    pub fn next_part(&self) -> Option<(u64, u32)> {
        let last = self.segments.back()?;
        Some(if last.complete {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len() as u32)
        })
    }

    /// The last part listed: (msn, index).
    pub fn last_part(&self) -> Option<(u64, u32)> {
        let last = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((last.msn, last.parts.len() as u32 - 1))
    }

    /// Whether segment `msn` part `part` exists (`part` None: the whole segment is complete).
    pub fn has(&self, msn: u64, part: Option<u32>) -> bool {
        let Some(last) = self.segments.back() else {
            return false;
        };
        match part {
            None => msn < last.msn || (msn == last.msn && last.complete),
            Some(p) => msn < last.msn || (msn == last.msn && (p as usize) < last.parts.len()),
        }
    }

    /// Parts a request may ask for ahead of the last one (RFC 8216bis: the Advance Part
    /// Limit, three seconds of parts).
    fn advance_part_limit(&self) -> u64 {
        (3.0 / self.part_target.max(0.01)).ceil() as u64
    }

    /// Whether a blocking request can be answered now. Per RFC 8216bis §6.2.5.2 the server
    /// waits until the playlist holds the requested part (or segment), and refuses an msn
    /// more than two segments ahead of the last one, or a part more than the Advance Part
    /// Limit ahead. An ended playlist answers at once.
    pub fn ready(&self, b: Blocking) -> Ready {
        let Some(msn) = b.msn else {
            return if self.segments.is_empty() {
                Ready::Wait
            } else {
                Ready::Now
            };
        };
        let Some(last) = self.segments.back() else {
            return if msn > 2 {
                Ready::BadRequest
            } else {
                Ready::Wait
            };
        };
        if msn > last.msn + 2 {
            return Ready::BadRequest;
        }
        if let Some(p) = b.part {
            // parts ahead of the last one listed (a part past a complete segment's last is
            // the next segment's first, answerable now: hls.js asks so after a long segment)
            let have = last.parts.len() as u64;
            let ahead = match msn.checked_sub(last.msn) {
                Some(0) => u64::from(p).saturating_sub(have),
                Some(d) => {
                    u64::from(p)
                        + 1
                        + (d - 1) * (self.target_duration / self.part_target.max(0.01)) as u64
                }
                None => 0,
            };
            if ahead > self.advance_part_limit() {
                return Ready::BadRequest;
            }
        }
        if self.ended {
            return Ready::Now;
        }
        let ok = match b.part {
            None => self.has(msn, None),
            // part index past the end of a segment means "first part of the next one"
            Some(p) => {
                self.has(msn, Some(p))
                    || self
                        .segments
                        .iter()
                        .find(|s| s.msn == msn)
                        .is_some_and(|s| s.complete && p as usize >= s.parts.len())
            }
        };
        if ok {
            Ready::Now
        } else {
            Ready::Wait
        }
    }

    /// CAN-SKIP-UNTIL: six target durations, as RFC 8216bis requires at least.
    fn skip_until(&self) -> f64 {
        6.0 * self.target_duration.ceil().max(1.0)
    }

    /// Renders the media playlist. Files: init segments `init-{gen}.mp4`, segments
    /// `seg-{msn}.m4s`, parts `part-{msn}.{index}.m4s`, each with `opts.uri_suffix`.
    pub fn render(&self, opts: &RenderOptions) -> String {
        let mut s = String::with_capacity(2048);
        let q = &opts.uri_suffix;
        let td = self.target_duration.ceil().max(1.0) as u64;
        let _ = writeln!(s, "#EXTM3U");
        let _ = writeln!(s, "#EXT-X-VERSION:9");
        let _ = writeln!(s, "#EXT-X-TARGETDURATION:{td}");
        let _ = writeln!(
            s,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
            self.skip_until(),
            self.part_hold_back
        );
        let _ = writeln!(s, "#EXT-X-PART-INF:PART-TARGET={:.3}", self.part_target);
        let first = self.segments.front().map_or(0, |x| x.msn);
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                s,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        // a delta update skips the segments older than CAN-SKIP-UNTIL before the live edge
        let n = self.segments.len();
        let mut skipped = 0;
        if opts.skip {
            let total: f64 = self.segments.iter().map(SegmentInfo::duration).sum();
            let mut t = 0.0;
            for seg in &self.segments {
                if !seg.complete || total - t - seg.duration() < self.skip_until() {
                    break;
                }
                t += seg.duration();
                skipped += 1;
            }
            if skipped > 0 {
                let _ = writeln!(s, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
            }
        }
        // the MAP in force is repeated after a skip, so a delta update decodes on its own
        let mut init = None;
        // where each segment starts on its timeline, seconds
        let mut at = self.first_at;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.discontinuity && i > 0 {
                at = 0.0;
            }
            let start = at;
            at += seg.duration();
            if i < skipped {
                continue;
            }
            if seg.discontinuity {
                let _ = writeln!(s, "#EXT-X-DISCONTINUITY");
            }
            if init != Some(seg.init) {
                let _ = writeln!(s, "#EXT-X-MAP:URI=\"init-{}.mp4{q}\"", seg.init);
                init = Some(seg.init);
            }
            let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(seg.pdt_ms));
            let with_parts = i + self.parts_window >= n;
            if with_parts {
                for (k, p) in seg.parts.iter().enumerate() {
                    let _ = write!(
                        s,
                        "#EXT-X-PART:DURATION={:.5},URI=\"part-{}.{}.m4s{q}\"",
                        p.duration, seg.msn, k
                    );
                    if p.independent {
                        s.push_str(",INDEPENDENT=YES");
                    }
                    if p.gap {
                        s.push_str(",GAP=YES");
                    }
                    s.push('\n');
                }
            }
            if seg.complete {
                if seg.gap {
                    let _ = writeln!(s, "#EXT-X-GAP");
                }
                let next = self.segments.get(i + 1);
                let before_new = next.is_some_and(|n| n.discontinuity || n.init != seg.init);
                let _ = writeln!(s, "#EXTINF:{:.5},", extinf(start, at, before_new));
                let _ = writeln!(s, "seg-{}.m4s{q}", seg.msn);
            }
        }
        if self.ended {
            s.push_str("#EXT-X-ENDLIST\n");
            return s;
        }
        if let Some((msn, idx)) = self.next_part() {
            let _ = writeln!(
                s,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}.{idx}.m4s{q}\""
            );
        }
        for r in &opts.reports {
            let _ = writeln!(
                s,
                "#EXT-X-RENDITION-REPORT:URI=\"{}{q}\",LAST-MSN={},LAST-PART={}",
                r.uri, r.last_msn, r.last_part
            );
        }
        s
    }
}

/// A rendition in a multivariant playlist.
#[derive(Debug, Clone)]
pub struct Variant {
    /// URI of its media playlist, relative to the multivariant one.
    pub uri: String,
    /// Peak bits per second.
    pub bandwidth: u64,
    /// Average bits per second.
    pub average_bandwidth: u64,
    /// RFC 6381 codecs, comma separated.
    pub codecs: String,
    /// Video size.
    pub resolution: Option<(u16, u16)>,
    /// Every segment starts with a keyframe.
    pub independent_segments: bool,
}

/// Renders a multivariant playlist, best rendition first; `uri_suffix` goes after every
/// URI.
pub fn render_multivariant(variants: &[Variant], uri_suffix: &str) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:9\n");
    if variants.iter().all(|v| v.independent_segments) {
        s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    for v in variants {
        let _ = write!(
            s,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            v.bandwidth.max(1),
            v.average_bandwidth.max(1),
            v.codecs
        );
        if let Some((w, h)) = v.resolution {
            let _ = write!(s, ",RESOLUTION={w}x{h}");
        }
        let _ = writeln!(s, "\n{}{uri_suffix}", v.uri);
    }
    s
}

/// `2026-11-26T17:02:20.123Z`
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(msn: u64, disc: bool) -> SegmentInfo {
        SegmentInfo {
            msn,
            parts: Vec::new(),
            complete: false,
            discontinuity: disc,
            init: u32::from(disc),
            pdt_ms: 1_795_000_000_000 + msn * 1000,
            gap: false,
            independent: true,
        }
    }

    fn filled(parts_per_seg: u32, segs: u64, max: usize) -> MediaPlaylist {
        let mut p = MediaPlaylist::new(0.2, 1.0, max);
        for m in 0..segs {
            p.open_segment(seg(m, m == 3));
            for i in 0..parts_per_seg {
                p.add_part(
                    m,
                    i,
                    PartInfo {
                        duration: 0.2,
                        independent: i == 0,
                        gap: false,
                    },
                );
            }
        }
        p
    }

    #[test]
    fn renders_a_valid_ll_hls_playlist() {
        let p = filled(5, 5, 6);
        let text = p.render(&RenderOptions::default());
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:1\n"));
        assert!(text.contains(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.600"
        ));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""));
        assert!(text.contains("#EXTINF:1.00000,\nseg-1.m4s"));
        // shorter before a new map (see `extinf`)
        assert!(text.contains("#EXTINF:0.92000,\nseg-2.m4s"));
        // the open segment has parts but no EXTINF, and a hint for its next part
        assert!(!text.contains("seg-4.m4s"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.20000,URI=\"part-4.4.m4s\"\n"));
        assert!(text.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-4.5.m4s\"\n"));
        // parts only for the last three segments
        assert!(!text.contains("part-1.0.m4s"));
        assert!(text.contains("part-2.0.m4s\",INDEPENDENT=YES"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-18T"));
    }

    /// Segment starts as hls.js places them: the EXTINFs parsed and added one after another
    /// to the time it started from.
    fn player_starts(text: &str, from: f64) -> Vec<f64> {
        let mut t = from;
        let mut starts = vec![t];
        for l in text.lines() {
            if let Some(v) = l.strip_prefix("#EXTINF:") {
                t += v.trim_end_matches(',').parse::<f64>().unwrap();
                starts.push(t);
            }
        }
        starts
    }

    #[test]
    fn extinf_rounds_the_timeline_down_and_leads_a_new_map() {
        let written = |a, b, before| format!("{:.5}", extinf(a, b, before));
        assert_eq!(written(0.0, 0.6, false), "0.60000");
        assert_eq!(written(21.8, 22.4, false), "0.60000");
        assert_eq!(written(0.0, 0.6, true), "0.52000");
        assert_eq!(written(0.0, 0.04, true), "0.02000");
        assert_eq!(written(0.0, 0.0, true), "0.00000");
        // the steps between the rounded ends: a second rounded down makes up for the first
        let (a, b) = (89_999.0 / 90_000.0, 179_998.0 / 90_000.0);
        assert_eq!(written(0.0, a, false), "0.99998");
        assert_eq!(written(a, b, false), "0.99999");
    }

    #[test]
    fn the_extinfs_of_a_long_timeline_add_up_to_its_media() {
        // four hours of 1 s segments one 90 kHz tick long each: rounded one by one, the
        // sum would fall 16 ms behind the media
        let mut p = MediaPlaylist::new(0.2, 1.0, 20_000);
        for m in 0..14_400u64 {
            p.open_segment(seg(m, false));
            p.add_part(
                m,
                0,
                PartInfo {
                    duration: 90_001.0 / 90_000.0,
                    independent: true,
                    gap: false,
                },
            );
        }
        p.close_segment();
        let text = p.render(&RenderOptions::default());
        let sum = *player_starts(&text, 0.0).last().unwrap();
        let media = 14_400.0 * 90_001.0 / 90_000.0;
        assert!((media - sum).abs() <= 1.1e-5, "{sum} against {media}");
        // a delta update writes the same EXTINFs for what it lists, and the segments that
        // left the playlist leave their time behind
        let delta = p.render(&RenderOptions {
            skip: true,
            ..Default::default()
        });
        let of = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("#EXTINF:"))
                .map(String::from)
                .collect()
        };
        let (full, part) = (of(&text), of(&delta));
        assert!(part.len() < full.len());
        assert_eq!(full[full.len() - part.len()..], part[..]);
        p.forget_before(14_000);
        assert_eq!(of(&p.render(&RenderOptions::default()))[..], full[14_000..]);
    }

    #[test]
    fn a_new_map_starts_before_the_end_of_the_media_before_it() {
        // media in 90 kHz ticks (as a player's buffer has it), segments of whole or cut
        // parts and of a camera whose frame times are not round; the last segment needs
        // another map. The run that failed: hls.js from 11.0, ..., 21.8 + 0.6.
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let choices = [
            3_600u64, 18_000, 18_018, 17_982, 36_000, 54_000, 72_000, 90_000, 90_001,
        ];
        for round in 0..400 {
            let n = 2 + (next() % 40) as usize;
            let ticks: Vec<u64> = (0..n)
                .map(|_| choices[(next() % choices.len() as u64) as usize])
                .collect();
            let mut p = MediaPlaylist::new(0.2, 1.0, 64);
            for (m, t) in ticks.iter().enumerate() {
                p.open_segment(seg(m as u64, false));
                p.add_part(
                    m as u64,
                    0,
                    PartInfo {
                        duration: *t as f64 / 90_000.0,
                        independent: true,
                        gap: false,
                    },
                );
            }
            let mut opening = seg(n as u64, true);
            opening.init = 1;
            p.open_segment(opening);
            let text = p.render(&RenderOptions::default());
            let total: u64 = ticks.iter().sum();
            let last = ticks[n - 1] as f64 / 90_000.0;
            // what the player may have buffered: up to an audio frame short of the video
            let lead = NEW_TIMELINE_LEAD.min(last / 2.0);
            for from in [0.0, 11.0, 12.0, f64::from(round % 50) * 0.2] {
                let starts = player_starts(&text, from);
                let new_map_at = starts[n];
                let media_end = from + total as f64 / 90_000.0;
                assert!(
                    new_map_at < media_end - lead + 2e-5,
                    "{ticks:?} from {from}: the new map at {new_map_at}, media to {media_end}"
                );
                assert!(new_map_at < media_end, "{ticks:?} from {from}");
                // and not far before it: the lead, and 10 us a segment at most
                assert!(
                    media_end - new_map_at <= lead + 1e-5 * (n as f64 + 1.0),
                    "{ticks:?}"
                );
            }
        }
    }

    #[test]
    fn uris_carry_the_suffix_and_reports_follow() {
        let p = filled(5, 4, 6);
        let text = p.render(&RenderOptions {
            uri_suffix: "?token=1-ab".into(),
            reports: vec![RenditionReport {
                uri: "../sub/stream.m3u8".into(),
                last_msn: 3,
                last_part: 4,
            }],
            ..Default::default()
        });
        assert!(text.contains("URI=\"init-0.mp4?token=1-ab\""));
        assert!(text.contains("seg-1.m4s?token=1-ab\n"));
        assert!(text.contains("URI=\"part-3.2.m4s?token=1-ab\""));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-3.5.m4s?token=1-ab\""));
        assert!(text.ends_with(
            "#EXT-X-RENDITION-REPORT:URI=\"../sub/stream.m3u8?token=1-ab\",LAST-MSN=3,LAST-PART=4\n"
        ));
    }

    #[test]
    fn delta_updates_skip_what_is_older_than_can_skip_until() {
        let p = filled(5, 20, 20); // 20 s listed
        let full = p.render(&RenderOptions::default());
        let delta = p.render(&RenderOptions {
            skip: true,
            ..Default::default()
        });
        // everything at least 6 s before the end: 14 complete segments of 1 s
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=14\n"),
            "{delta}"
        );
        assert!(!delta.contains("seg-13.m4s"));
        assert!(delta.contains("seg-14.m4s"));
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(delta.len() < full.len());
        // a short playlist has nothing to skip
        let short = filled(5, 4, 6).render(&RenderOptions {
            skip: true,
            ..Default::default()
        });
        assert!(!short.contains("EXT-X-SKIP"));
    }

    #[test]
    fn gaps_and_the_end() {
        let mut p = filled(5, 2, 6);
        let mut g = seg(2, false);
        g.gap = true;
        g.independent = false;
        p.open_segment(g);
        for i in 0..5 {
            p.add_part(
                2,
                i,
                PartInfo {
                    duration: 0.2,
                    independent: false,
                    gap: true,
                },
            );
        }
        p.end();
        let text = p.render(&RenderOptions::default());
        assert!(text.contains("URI=\"part-2.4.m4s\",GAP=YES\n#EXT-X-GAP\n#EXTINF:1.00000,\nseg-2.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(!text.contains("PRELOAD-HINT"));
        assert!(p.independent_segments());
        // an ended playlist answers blocking requests at once
        let b = Blocking {
            msn: Some(3),
            part: Some(0),
            skip: false,
        };
        assert_eq!(p.ready(b), Ready::Now);
    }

    #[test]
    fn the_window_slides_and_counts_discontinuities() {
        let p = filled(2, 12, 6);
        let text = p.render(&RenderOptions::default());
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:6\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn blocking_reload_rules() {
        let p = filled(5, 3, 6); // last segment 2 has parts 0..=4, open
        assert_eq!(p.ready(Blocking::default()), Ready::Now);
        let b = |msn, part| Blocking {
            msn: Some(msn),
            part,
            skip: false,
        };
        assert_eq!(p.ready(b(2, Some(4))), Ready::Now);
        assert_eq!(p.ready(b(2, Some(5))), Ready::Wait);
        assert_eq!(p.ready(b(2, None)), Ready::Wait);
        assert_eq!(p.ready(b(1, None)), Ready::Now);
        assert_eq!(p.ready(b(3, Some(0))), Ready::Wait);
        assert_eq!(p.ready(b(4, None)), Ready::Wait);
        assert_eq!(p.ready(b(5, None)), Ready::BadRequest);
        // the Advance Part Limit: three seconds of parts
        assert_eq!(p.ready(b(2, Some(19))), Ready::Wait);
        assert_eq!(p.ready(b(2, Some(21))), Ready::BadRequest);
        assert_eq!(p.ready(b(3, Some(1000))), Ready::BadRequest);
        // past the last part of a complete segment of 20 parts (4 s): the next one's first
        let mut long = filled(20, 3, 6);
        long.segments.back_mut().unwrap().complete = true;
        assert_eq!(long.ready(b(2, Some(20))), Ready::Now);
        assert_eq!(long.ready(b(2, Some(19))), Ready::Now);
        assert_eq!(long.ready(b(2, Some(40))), Ready::BadRequest);
        assert_eq!(
            MediaPlaylist::new(0.2, 1.0, 6).ready(Blocking::default()),
            Ready::Wait
        );
        assert_eq!(
            Blocking::parse(Some("_HLS_msn=3&_HLS_part=1")).unwrap(),
            b(3, Some(1))
        );
        assert!(
            Blocking::parse(Some("_HLS_msn=3&_HLS_skip=YES"))
                .unwrap()
                .skip
        );
        assert!(Blocking::parse(Some("_HLS_skip=no")).is_err());
        assert_eq!(
            Blocking::parse(Some("_HLS_part=1")),
            Err(BadDirective::PartWithoutMsn)
        );
        assert!(Blocking::parse(Some("_HLS_msn=x")).is_err());
        assert!(Blocking::parse(Some("_HLS_msn=99999999999999999999999")).is_err());
        assert_eq!(
            Blocking::parse(Some("foo=bar")).unwrap(),
            Blocking::default()
        );
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_712_540_123), "2026-11-26T17:02:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn multivariant() {
        let v = Variant {
            uri: "main/stream.m3u8".into(),
            bandwidth: 4_000_000,
            average_bandwidth: 3_000_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            independent_segments: true,
        };
        let m = render_multivariant(std::slice::from_ref(&v), "?token=x");
        assert!(m.contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
        assert!(m.contains("#EXT-X-STREAM-INF:BANDWIDTH=4000000,AVERAGE-BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\nmain/stream.m3u8?token=x\n"));
        let m = render_multivariant(
            &[Variant {
                independent_segments: false,
                ..v
            }],
            "",
        );
        assert!(!m.contains("INDEPENDENT-SEGMENTS"));
    }
}
