//! The relay's recording of one rendition of one gateway timeline: every part, in the
//! gateway's numbering, whatever order the parts arrive in (the live edge first, the
//! missed span later as backfill), made into fMP4 segments and an EVENT playlist that
//! becomes VOD when the stream ends.
//!
//! Sans-IO: parts go in, [`Action`]s come out for the shell to carry out on disk: each part
//! is stored as it comes (so nothing waits in memory for a hole to fill), a segment is
//! joined from its parts once all of them are in, and the playlist is rewritten whenever it
//! lists more. A segment's part count is known once the next segment's first part has
//! arrived (sequence numbers are contiguous across segments). The playlist lists segments
//! in order and waits at a hole; a hole older than the hole wait (or any hole when the
//! stream ends) is listed as a gap, so one lost part cannot stop the recording.

use crate::hls::iso8601;
use crate::{Part, SegmentStart};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// What the shell does for the recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Store part `seq` (its bytes are the part's) until its segment is joined.
    StorePart {
        /// The part's sequence number.
        seq: u64,
    },
    /// Write segment `msn` as the stored parts `seqs`, in order, and drop them.
    JoinSegment {
        /// The segment.
        msn: u64,
        /// Its parts.
        seqs: Vec<u64>,
    },
    /// Drop stored parts that will never make a whole segment (listed as a gap).
    DropParts {
        /// The parts.
        seqs: Vec<u64>,
    },
    /// Write the playlist.
    Playlist(String),
}

#[derive(Debug, Clone, Default)]
struct Seg {
    /// Sequence number of its first part, once known.
    first_seq: Option<u64>,
    /// Parts in, by index: (seq, seconds).
    parts: BTreeMap<u32, (u64, f64)>,
    /// Its part count, once the next segment began.
    count: Option<u32>,
    start: Option<SegmentStart>,
    init: u32,
    /// When its first part came.
    since: Option<Instant>,
    joined: bool,
}

impl Seg {
    fn complete(&self) -> bool {
        self.count
            .is_some_and(|n| self.parts.len() as u32 == n && self.parts.keys().all(|i| *i < n))
    }

    fn duration(&self) -> f64 {
        self.parts.values().map(|(_, d)| d).sum()
    }
}

/// One listed playlist entry.
#[derive(Debug, Clone)]
struct Entry {
    msn: u64,
    duration: f64,
    init: u32,
    start: Option<SegmentStart>,
    gap: bool,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Parts stored.
    pub parts: u64,
    /// Segments joined.
    pub segments: u64,
    /// Segments listed as gaps (a part never came).
    pub gap_segments: u64,
    /// Parts known to be missing from the listed span.
    pub parts_missing: u64,
    /// The lowest and highest part sequence numbers stored.
    pub seq_range: Option<(u64, u64)>,
}

/// One rendition's recording.
pub struct Recording {
    segs: BTreeMap<u64, Seg>,
    /// msn → first part's sequence number, for every segment seen.
    firsts: BTreeMap<u64, u64>,
    listed: Vec<Entry>,
    /// The next msn the playlist lists.
    next_listed: Option<u64>,
    hole_wait: Duration,
    ended: bool,
    target: u64,
    stats: RecordStats,
}

impl Recording {
    /// A recording that lists a hole as a gap after `hole_wait`.
    pub fn new(hole_wait: Duration) -> Self {
        Self {
            segs: BTreeMap::new(),
            firsts: BTreeMap::new(),
            listed: Vec::new(),
            next_listed: None,
            hole_wait,
            ended: false,
            // an EVENT playlist may not change its target duration: the segmenter's
            // longest segment (six targets of 1 s)
            target: 6,
            stats: RecordStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    /// Segments listed so far.
    pub fn listed(&self) -> usize {
        self.listed.len()
    }

    /// A part arrived (each part once).
    pub fn add_part(&mut self, now: Instant, p: &Part) -> Vec<Action> {
        let mut out = Vec::new();
        if self.ended || self.next_listed.is_some_and(|n| p.msn < n) {
            return out; // already listed as a gap, or the recording is closed
        }
        self.stats.parts += 1;
        self.stats.seq_range = Some(match self.stats.seq_range {
            Some((a, b)) => (a.min(p.seq), b.max(p.seq)),
            None => (p.seq, p.seq),
        });
        out.push(Action::StorePart { seq: p.seq });
        let first = p.seq.saturating_sub(u64::from(p.index));
        self.firsts.insert(p.msn, first);
        let seg = self.segs.entry(p.msn).or_default();
        seg.first_seq = Some(first);
        seg.parts.insert(p.index, (p.seq, p.duration));
        seg.since.get_or_insert(now);
        if p.index == 0 {
            seg.start = p.segment;
        }
        seg.init = p.init;
        // counts follow from the neighbours' first parts
        for m in [p.msn.wrapping_sub(1), p.msn] {
            let next_first = self.firsts.get(&(m.wrapping_add(1))).copied();
            if let (Some(s), Some(nf)) = (self.segs.get_mut(&m), next_first) {
                if let Some(f) = s.first_seq {
                    s.count = Some(u32::try_from(nf.saturating_sub(f)).unwrap_or(u32::MAX));
                }
            }
        }
        if self.next_listed.is_none() {
            self.next_listed = Some(p.msn);
        }
        for m in [p.msn.wrapping_sub(1), p.msn] {
            if let Some(s) = self.segs.get_mut(&m) {
                if s.complete() && !s.joined {
                    s.joined = true;
                    self.stats.segments += 1;
                    out.push(Action::JoinSegment {
                        msn: m,
                        seqs: s.parts.values().map(|(q, _)| *q).collect(),
                    });
                }
            }
        }
        self.list(now, &mut out);
        out
    }

    /// Time passes: holes older than the hole wait are listed as gaps.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.list(now, &mut out);
        out
    }

    /// The stream ended: whatever is in is listed, holes as gaps, and the playlist becomes
    /// VOD.
    pub fn end(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // the last segment's count: its parts so far
        if let Some((&msn, s)) = self.segs.iter_mut().next_back() {
            if s.count.is_none() {
                s.count = s.parts.keys().max().map(|i| i + 1);
            }
            if s.complete() && !s.joined {
                s.joined = true;
                self.stats.segments += 1;
                out.push(Action::JoinSegment {
                    msn,
                    seqs: s.parts.values().map(|(q, _)| *q).collect(),
                });
            }
        }
        self.ended = true;
        self.list(now, &mut out);
        out.push(Action::Playlist(self.render()));
        out
    }

    fn list(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(mut next) = self.next_listed else {
            return;
        };
        let before = self.listed.len();
        let last_msn = self.segs.keys().next_back().copied().unwrap_or(next);
        while next <= last_msn {
            let later = self.segs.range(next + 1..).next().is_some();
            let entry = match self.segs.get(&next) {
                Some(s) if s.joined => Some(Entry {
                    msn: next,
                    duration: s.duration(),
                    init: s.init,
                    start: s.start,
                    gap: false,
                }),
                // a hole (missing parts, or a segment never seen) with later segments in:
                // wait for it a while, then list it as a gap
                s => {
                    let since = s.and_then(|s| s.since).or_else(|| {
                        self.segs
                            .range(next + 1..)
                            .next()
                            .and_then(|(_, s)| s.since)
                    });
                    let waited =
                        since.is_some_and(|t| now.saturating_duration_since(t) >= self.hole_wait);
                    if later && (self.ended || waited) {
                        let missing = s.map_or(0, |s| {
                            s.count
                                .map_or(0, |n| n.saturating_sub(s.parts.len() as u32))
                        });
                        self.stats.parts_missing += u64::from(missing.max(1));
                        self.stats.gap_segments += 1;
                        if let Some(s) = s {
                            out.push(Action::DropParts {
                                seqs: s.parts.values().map(|(q, _)| *q).collect(),
                            });
                        }
                        Some(Entry {
                            msn: next,
                            duration: s.map_or(1.0, |s| s.duration().max(0.2)),
                            // a segment never seen decodes with the map before it
                            init: s.map_or_else(
                                || self.listed.last().map_or(0, |e| e.init),
                                |s| s.init,
                            ),
                            start: s.and_then(|s| s.start),
                            gap: true,
                        })
                    } else {
                        None
                    }
                }
            };
            let Some(e) = entry else { break };
            self.segs.remove(&next);
            self.listed.push(e);
            next += 1;
        }
        self.next_listed = Some(next);
        // segment numbers far behind the listed edge no longer need their first part
        while self.firsts.len() > 2 && self.firsts.keys().next().is_some_and(|m| *m + 1 < next) {
            self.firsts.pop_first();
        }
        if self.listed.len() != before && !self.ended {
            out.push(Action::Playlist(self.render()));
        }
    }

    /// The playlist: EVENT while the stream goes on, VOD once ended.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(64 + self.listed.len() * 48);
        let target = self
            .listed
            .iter()
            .map(|e| e.duration.ceil() as u64)
            .max()
            .unwrap_or(1)
            .max(self.target);
        let _ = writeln!(
            s,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}"
        );
        let kind = if self.ended { "VOD" } else { "EVENT" };
        let _ = writeln!(s, "#EXT-X-PLAYLIST-TYPE:{kind}");
        let first = self.listed.first().map_or(0, |e| e.msn);
        let _ = writeln!(s, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let mut init = None;
        for (i, e) in self.listed.iter().enumerate() {
            if i > 0 && e.start.is_some_and(|st| st.discontinuity) {
                s.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if init != Some(e.init) {
                let _ = writeln!(s, "#EXT-X-MAP:URI=\"init-{}.mp4\"", e.init);
                init = Some(e.init);
            }
            if let Some(st) = e.start {
                let _ = writeln!(s, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(st.pdt_ms));
            }
            if e.gap {
                s.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(s, "#EXTINF:{:.5},\nseg-{}.m4s", e.duration, e.msn);
        }
        if self.ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn part(seq: u64) -> Part {
        let index = (seq % 5) as u32;
        Part {
            seq,
            msn: seq / 5,
            index,
            independent: index == 0,
            duration: 0.2,
            data: Bytes::from(vec![seq as u8]),
            init: 0,
            capture_ms: 0,
            segment: (index == 0).then_some(SegmentStart {
                discontinuity: false,
                pdt_ms: 1_795_000_000_000 + seq * 200,
            }),
            gap: false,
        }
    }

    fn joined(actions: &[Action]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::JoinSegment { msn, .. } => Some(*msn),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parts_in_any_order_make_every_segment_and_a_vod_at_the_end() {
        let t0 = Instant::now();
        let mut r = Recording::new(Duration::from_secs(120));
        let mut all = Vec::new();
        // the live edge (segments 0 and 6..8) first, the span between as backfill later
        let order: Vec<u64> = (0..5).chain(30..45).chain(5..30).collect();
        for seq in order {
            all.extend(r.add_part(t0, &part(seq)));
        }
        let mut j = joined(&all);
        j.sort();
        // the last segment's count is only known at the end
        assert_eq!(j, (0..8).collect::<Vec<_>>());
        let end = r.end(t0);
        assert_eq!(joined(&end), vec![8]);
        let Some(Action::Playlist(text)) = end.last() else {
            panic!()
        };
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        assert!(text.ends_with("seg-8.m4s\n#EXT-X-ENDLIST\n"));
        assert_eq!(text.matches("#EXTINF:1.00000,").count(), 9);
        assert!(!text.contains("GAP"));
        assert_eq!(r.stats().parts_missing, 0);
    }

    #[test]
    fn the_playlist_waits_at_a_hole_then_lists_it_as_a_gap() {
        let t0 = Instant::now();
        let mut r = Recording::new(Duration::from_secs(10));
        for seq in (0..20).filter(|s| *s != 7) {
            r.add_part(t0, &part(seq));
        }
        r.add_part(t0, &part(20));
        // segment 1 misses part 7: the playlist stops before it
        assert_eq!(r.listed(), 1);
        let later = r.poll(t0 + Duration::from_secs(11));
        let Some(Action::Playlist(text)) = later.last() else {
            panic!("{later:?}")
        };
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT"));
        assert!(
            text.contains("#EXT-X-GAP\n#EXTINF:0.80000,\nseg-1.m4s"),
            "{text}"
        );
        assert!(later
            .iter()
            .any(|a| matches!(a, Action::DropParts { seqs } if seqs.len() == 4)));
        assert_eq!(r.listed(), 4);
        assert_eq!(r.stats().parts_missing, 1);
        // a part of a segment already listed as a gap is not stored
        assert!(r.add_part(t0, &part(7)).is_empty());
    }

    #[test]
    fn a_segment_never_seen_is_a_gap_under_the_map_before_it() {
        let t0 = Instant::now();
        let mut r = Recording::new(Duration::from_secs(10));
        // init generation 2 throughout; segment 1 (parts 5-9) never comes
        for seq in (0..20).filter(|s| !(5..10).contains(s)) {
            r.add_part(
                t0,
                &Part {
                    init: 2,
                    ..part(seq)
                },
            );
        }
        let later = r.poll(t0 + Duration::from_secs(11));
        let Some(Action::Playlist(text)) = later.last() else {
            panic!("{later:?}")
        };
        assert!(
            text.contains("#EXT-X-GAP\n#EXTINF:1.00000,\nseg-1.m4s"),
            "{text}"
        );
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1, "{text}");
        assert!(!text.contains("init-0.mp4"), "{text}");
    }
}
