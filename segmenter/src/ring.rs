//! The part ring: a bounded cache of a stream's most recent parts.
//!
//! Bounded by bytes (and by a part count that follows from it); the writer never waits:
//! when a part does not fit, the oldest parts go. Readers hold a [`Cursor`] (a part
//! sequence number). A reader that fell behind the ring skips forward to the newest
//! independent part (one that starts with a keyframe), so it can decode again.

use crate::Part;
use ringbuf::traits::Observer;
use ringbuf::LocalRb;
use std::sync::Arc;

type Rb = LocalRb<ringbuf::storage::Heap<Arc<Part>>>;

/// The ring.
pub struct PartRing {
    rb: Rb,
    max_bytes: usize,
    bytes: usize,
    /// Sequence number the next pushed part gets.
    next_seq: u64,
    evicted: u64,
}

/// A reader's position: the sequence number of the next part it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub u64);

/// What a read returns.
#[derive(Debug)]
pub enum Read {
    /// The next part; the cursor moved past it.
    Part(Arc<Part>),
    /// The reader fell behind: `skipped` parts are gone. The cursor now points at the
    /// newest independent part; read again.
    Lagged {
        /// Parts the reader will never see.
        skipped: u64,
    },
    /// Nothing new yet.
    Empty,
}

impl PartRing {
    /// A ring holding at most `max_bytes` of parts and at most `max_parts` parts.
    pub fn new(max_bytes: usize, max_parts: usize) -> Self {
        Self {
            rb: Rb::new(max_parts.max(2)),
            max_bytes: max_bytes.max(1),
            bytes: 0,
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Adds a part, evicting the oldest ones as needed; returns the evicted parts, oldest first.
    pub fn push(&mut self, part: Arc<Part>) -> Vec<Arc<Part>> {
        let mut gone = Vec::new();
        let len = part.data.len();
        while !self.rb.is_empty() && (self.bytes + len > self.max_bytes || self.rb.is_full()) {
            if let Some(old) = self.rb.try_pop() {
                self.bytes -= old.data.len();
                self.evicted += 1;
                gone.push(old);
            }
        }
        self.bytes += len;
        debug_assert_eq!(part.seq, self.next_seq);
        self.next_seq = part.seq + 1;
        if let Some(old) = self.rb.push_overwrite(part) {
            // unreachable: the loop made room
            self.bytes -= old.data.len();
            gone.push(old);
        }
        gone
    }

    /// Makes an empty ring's first part `seq` (a window that continues a numbering).
    pub fn start_at(&mut self, seq: u64) {
        if self.rb.is_empty() {
            self.next_seq = seq;
        }
    }

    /// Sequence number for the next part pushed.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Parts held.
    pub fn len(&self) -> usize {
        self.rb.occupied_len()
    }

    /// Nothing held?
    pub fn is_empty(&self) -> bool {
        self.rb.is_empty()
    }

    /// Parts evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn oldest_seq(&self) -> u64 {
        self.next_seq - self.rb.occupied_len() as u64
    }

    /// The part with sequence number `seq`, if still held.
    pub fn get(&mut self, seq: u64) -> Option<Arc<Part>> {
        let first = self.oldest_seq();
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        let (a, b) = self.rb.as_slices();
        a.get(i).or_else(|| b.get(i - a.len().min(i))).cloned()
    }

    /// Parts held, oldest first.
    pub fn iter(&mut self) -> impl DoubleEndedIterator<Item = &Arc<Part>> {
        let (a, b) = self.rb.as_slices();
        a.iter().chain(b.iter())
    }

    /// A cursor at the newest independent part (where a new reader starts).
    pub fn live_cursor(&mut self) -> Cursor {
        let next = self.next_seq;
        let seq = self
            .iter()
            .filter(|p| p.independent)
            .map(|p| p.seq)
            .next_back()
            .unwrap_or(next);
        Cursor(seq)
    }

    /// Reads the part at `cursor` and advances it; never waits.
    pub fn read(&mut self, cursor: &mut Cursor) -> Read {
        if cursor.0 >= self.next_seq {
            cursor.0 = cursor.0.min(self.next_seq);
            return Read::Empty;
        }
        if cursor.0 < self.oldest_seq() {
            let to = self.live_cursor();
            let skipped = to.0 - cursor.0;
            *cursor = to;
            return Read::Lagged { skipped };
        }
        match self.get(cursor.0) {
            Some(p) => {
                cursor.0 += 1;
                Read::Part(p)
            }
            None => Read::Empty,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn part(seq: u64, len: usize, independent: bool) -> Arc<Part> {
        Arc::new(Part {
            seq,
            msn: seq / 4,
            index: (seq % 4) as u32,
            independent,
            duration: 0.2,
            data: Bytes::from(vec![0u8; len]),
            init: 0,
            capture_ms: 0,
            segment: None,
            gap: false,
        })
    }

    #[test]
    fn bounded_by_bytes_and_count() {
        let mut r = PartRing::new(1000, 8);
        for s in 0..20 {
            r.push(part(s, 300, s % 4 == 0));
            assert!(r.bytes() <= 1000);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.evicted(), 17);
        let mut r = PartRing::new(1 << 20, 4);
        for s in 0..10 {
            r.push(part(s, 10, true));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.get(6).unwrap().seq, 6);
        assert!(r.get(5).is_none());
        assert!(r.get(10).is_none());
    }

    #[test]
    fn a_slow_reader_skips_to_the_newest_independent_part() {
        let mut r = PartRing::new(1 << 20, 6);
        let mut fast = Cursor(0);
        let mut slow = Cursor(0);
        for s in 0..12 {
            r.push(part(s, 10, s % 4 == 0));
            assert!(matches!(r.read(&mut fast), Read::Part(p) if p.seq == s));
            assert!(matches!(r.read(&mut fast), Read::Empty));
        }
        // the ring holds 6..=11; the newest independent part is 8
        match r.read(&mut slow) {
            Read::Lagged { skipped } => assert_eq!(skipped, 8),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.read(&mut slow), Read::Part(p) if p.seq == 8 && p.independent));
        // a cursor from the future is pulled back rather than waiting forever
        let mut future = Cursor(100);
        assert!(matches!(r.read(&mut future), Read::Empty));
        assert_eq!(future, Cursor(12));
    }

    #[test]
    fn an_oversized_part_replaces_everything() {
        let mut r = PartRing::new(100, 8);
        r.push(part(0, 50, true));
        let gone = r.push(part(1, 500, true));
        assert_eq!(gone.len(), 1);
        assert_eq!(r.len(), 1);
    }
}
