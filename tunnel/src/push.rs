//! A striped upload body at the gateway (sans-IO): which bytes to send next, what the relay
//! has confirmed, and what goes again when a chunk's path fails or falls silent. The shell
//! (`gateway::stripe`) reads the device's body, picks the paths, sends the chunks and feeds
//! the outcomes back; this keeps the bookkeeping, the mirror of [`crate::pull`] for
//! downloads, so every overlap a byte sent twice can make is handled in one place and
//! tested without a network.
//!
//! A chunk on a slower path than the body's front takes its offset ahead of the front (by
//! what the faster path sends before it arrives: `tunnel::spread::lead`), so it arrives
//! about when the relay's in-order front reaches it instead of holding the front. The
//! bytes it skipped are read and *held* here, and go before any new bytes, on the next
//! path that takes a chunk without a lead (the primary, as a rule).
//!
//! A body the device sends without a length is pushed as it comes: its length is known
//! once the shell reads the device's last byte ([`PushedBody::ends_at`]), and the body is
//! done only then.
//!
//! A chunk whose path dies, or falls silent (no probe answered for a while: a cut link
//! looks like this long before it is called down), goes again on another path in small
//! urgent pieces, ahead of bulk. A silent path's chunk may still arrive: the relay keeps the
//! first copy of every byte, and pieces of bytes it confirmed meanwhile are not sent.

use crate::pull::Failed;
use crate::scheduler::PathId;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// Bytes that go again: a chunk, or a piece of one, whose first copy failed or is stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Where it starts in the body.
    pub offset: u64,
    /// Its bytes.
    pub data: Bytes,
    /// Paths it failed on or fell silent on (sent elsewhere if possible).
    pub excluded: Vec<PathId>,
}

/// What to send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A piece sent again: the body waits for it (lowest offset first).
    Again(Piece),
    /// Bytes read already and held for a faster path, from `offset`, at most `len` of them
    /// ([`PushedBody::start_held`]).
    Held { offset: u64, len: u64 },
    /// New bytes of the body from `offset`, at most `len` of them (the window allows it).
    New { offset: u64, len: u64 },
}

#[derive(Debug, Clone)]
struct Flight {
    offset: u64,
    data: Bytes,
    path: PathId,
    excluded: Vec<PathId>,
    /// Sent again elsewhere already (its path fell silent, or it was hurried along).
    covered: bool,
    /// A piece sent again (it goes ahead of bulk).
    urgent: bool,
}

impl Flight {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// One striped body.
#[derive(Debug)]
pub struct PushedBody {
    /// The body's length, once known.
    total: Option<u64>,
    window: u64,
    chunk: u64,
    piece: u64,
    /// Bytes taken from the device so far (every byte below was sent at least once, or is
    /// held).
    read: u64,
    /// Most bytes held at once.
    max_held: u64,
    /// Bytes read and not sent yet (a slower path's chunk took bytes beyond them), by
    /// offset.
    held: BTreeMap<u64, Bytes>,
    held_bytes: u64,
    /// What the relay confirmed: start -> end, disjoint and not touching.
    acked: BTreeMap<u64, u64>,
    again: BTreeMap<u64, Piece>,
    flights: HashMap<u64, Flight>,
    next_ticket: u64,
}

impl PushedBody {
    /// A body of `total` bytes (`None`: not known until [`Self::ends_at`]), sent at most `window` ahead of the first byte the relay has
    /// not confirmed, in new chunks of at most `chunk` bytes; bytes sent again go in
    /// `piece`-byte pieces; at most `max_held` bytes are read ahead and held for a faster
    /// path.
    pub fn new(total: Option<u64>, window: u64, chunk: u64, piece: u64, max_held: u64) -> Self {
        Self {
            total,
            window,
            chunk: chunk.max(1),
            piece: piece.max(1),
            read: 0,
            max_held,
            held: BTreeMap::new(),
            held_bytes: 0,
            acked: BTreeMap::new(),
            again: BTreeMap::new(),
            flights: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// Bytes taken from the device so far.
    pub fn read(&self) -> u64 {
        self.read
    }

    /// The body's length, once known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The body ends at `total` bytes: the device sent its last byte (a body of unknown
    /// length). A length already known stays.
    pub fn ends_at(&mut self, total: u64) {
        self.total.get_or_insert(total);
    }

    /// Whether the body's length is known and the relay confirmed every byte.
    pub fn done(&self) -> bool {
        self.total
            .is_some_and(|t| self.read >= t && self.confirmed(0, t))
    }

    /// Bytes of the body not read yet (unbounded while its length is unknown).
    fn unread(&self) -> u64 {
        self.total.map_or(u64::MAX, |t| t.saturating_sub(self.read))
    }

    /// The first byte the relay has not confirmed.
    pub fn in_order(&self) -> u64 {
        match self.acked.first_key_value() {
            Some((&0, &end)) => end,
            _ => 0,
        }
    }

    /// What to send next: a piece sent again first (lowest offset), else new bytes within
    /// the window.
    pub fn next_send(&mut self) -> Option<Next> {
        // pieces of bytes the relay confirmed meanwhile (a silent path's late chunk) need
        // no sending
        while let Some((&o, p)) = self.again.first_key_value() {
            if self.confirmed(o, p.data.len() as u64) {
                self.again.remove(&o);
            } else {
                return Some(Next::Again(p.clone()));
            }
        }
        if let Some((&offset, d)) = self.held.first_key_value() {
            return Some(Next::Held {
                offset,
                len: self.chunk.min(d.len() as u64),
            });
        }
        self.fresh()
    }

    /// New bytes to send, within the window (held bytes aside).
    pub fn fresh(&self) -> Option<Next> {
        let len = self.chunk.min(self.unread());
        (len > 0 && self.read + len <= self.in_order() + self.window).then_some(Next::New {
            offset: self.read,
            len,
        })
    }

    /// How many new bytes to read and hold before a new chunk of `len` bytes, so that it
    /// starts `lead` bytes beyond the bytes not sent yet (those held count), within the
    /// window, the body and the most held.
    pub fn skip_for(&self, lead: u64, len: u64) -> u64 {
        let after = self.read.saturating_add(len);
        lead.saturating_sub(self.held_bytes)
            .min(self.max_held.saturating_sub(self.held_bytes))
            .min((self.in_order() + self.window).saturating_sub(after))
            .min(self.unread().saturating_sub(len))
    }

    /// Holds the body's next bytes, `data` (read after [`Self::skip_for`]), for a faster path.
    pub fn hold(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let n = data.len() as u64;
        self.held_bytes += n;
        self.held.insert(self.read, data);
        self.read += n;
    }

    /// Up to `len` held bytes from `offset` (from [`Next::Held`]) go on `path`: the ticket
    /// their outcome comes back with, and the bytes.
    pub fn start_held(&mut self, offset: u64, len: u64, path: PathId) -> Option<(u64, Bytes)> {
        let mut d = self.held.remove(&offset)?;
        let n = usize::try_from(len).unwrap_or(usize::MAX).min(d.len());
        let data = d.split_to(n);
        if !d.is_empty() {
            self.held.insert(offset + n as u64, d);
        }
        self.held_bytes -= n as u64;
        let t = self.fly(Flight {
            offset,
            data: data.clone(),
            path,
            excluded: Vec::new(),
            covered: false,
            urgent: false,
        });
        Some((t, data))
    }

    /// `piece` (from [`Self::next_send`]) goes on `path`: the ticket its outcome comes back with.
    pub fn start_again(&mut self, piece: &Piece, path: PathId) -> u64 {
        self.again.remove(&piece.offset);
        self.fly(Flight {
            offset: piece.offset,
            data: piece.data.clone(),
            path,
            excluded: piece.excluded.clone(),
            covered: false,
            urgent: true,
        })
    }

    /// The body's next bytes, `data` (read after [`Next::New`], at most its length), go on
    /// `path`: the ticket their outcome comes back with.
    pub fn start_new(&mut self, data: Bytes, path: PathId) -> u64 {
        let offset = self.read;
        self.read += data.len() as u64;
        self.fly(Flight {
            offset,
            data,
            path,
            excluded: Vec::new(),
            covered: false,
            urgent: false,
        })
    }

    fn fly(&mut self, f: Flight) -> u64 {
        self.next_ticket += 1;
        self.flights.insert(self.next_ticket, f);
        self.next_ticket
    }

    /// The relay confirmed flight `ticket`'s bytes.
    pub fn answered(&mut self, ticket: u64) {
        if let Some(f) = self.flights.remove(&ticket) {
            self.confirm(f.offset, f.end());
        }
    }

    /// The relay has every byte below `front` (it says so in a chunk's answer). It takes a
    /// chunk's bytes as they come, so it may have the first part of a chunk still on its
    /// way, or on a path that died: those bytes are not sent again. Traced in network
    /// namespaces: at a cut the relay had 226 KB of the dead path's chunks, and the pieces
    /// sent again for them held the body 0.4-0.5 s on the slower path.
    pub fn relay_has(&mut self, front: u64) {
        // never beyond what was sent: bytes held for a faster path were read, not sent
        let sent = self
            .held
            .first_key_value()
            .map_or(self.read, |(&o, _)| o.min(self.read));
        self.confirm(0, front.min(sent));
    }

    /// Flight `ticket` failed (its path died, or the stream broke): its bytes go again
    /// elsewhere, unless another copy brings them.
    pub fn failed(&mut self, ticket: u64) -> Failed {
        let Some(f) = self.flights.remove(&ticket) else {
            return Failed::Covered;
        };
        if f.covered || self.confirmed(f.offset, f.data.len() as u64) {
            return Failed::Covered;
        }
        let mut excluded = f.excluded.clone();
        excluded.push(f.path);
        self.send_again(f.offset, &f.data, &excluded);
        Failed::Again(1 + self.hurry_below(f.end(), f.path))
    }

    /// Flight `ticket` was refused for good (sending again cannot help): the body fails,
    /// unless its bytes came by another copy.
    pub fn refused(&mut self, ticket: u64) -> Failed {
        match self.flights.remove(&ticket) {
            Some(f) if !f.covered && !self.confirmed(f.offset, f.data.len() as u64) => {
                Failed::GiveUp
            }
            // unknown, confirmed by another copy, or sent again already (that copy decides)
            _ => Failed::Covered,
        }
    }

    /// `path` fell silent: its flights not sent again yet go again elsewhere (they may still
    /// arrive; the relay keeps the first copy). The number of flights sent again.
    pub fn silent(&mut self, path: PathId) -> usize {
        let mut lost = Vec::new();
        for f in self.flights.values_mut() {
            // a flight put on this path though it had been silent or had failed it (no
            // other path could carry it) stays: sent again there it would go round for
            // as long as the path is silent
            if f.path == path && !f.covered && !f.excluded.contains(&path) {
                f.covered = true;
                let mut excluded = f.excluded.clone();
                excluded.push(path);
                lost.push((f.offset, f.data.clone(), excluded));
            }
        }
        let n = lost.len();
        let end = lost
            .iter()
            .map(|(o, d, _)| o + d.len() as u64)
            .max()
            .unwrap_or(0);
        for (o, d, ex) in lost {
            self.send_again(o, &d, &ex);
        }
        n + self.hurry_below(end, path)
    }

    /// Pieces sent again go ahead of bulk on their paths: a new chunk on another path that
    /// starts below `end` would wait behind the ones above it, and the body with it. So it
    /// goes again too, as pieces in its turn, wherever they arrive soonest (its own path
    /// included); the relay keeps the first copy. Measured on the in-process harness: such
    /// a chunk on satellite held a single upload 0.8 s at a cut. Chunks on `dead` itself
    /// fail or fall silent on their own. The number sent again.
    fn hurry_below(&mut self, end: u64, dead: PathId) -> usize {
        let mut lost = Vec::new();
        for f in self.flights.values_mut() {
            if !f.urgent && !f.covered && f.path != dead && f.offset < end {
                f.covered = true;
                lost.push((f.offset, f.data.clone(), f.excluded.clone()));
            }
        }
        let n = lost.len();
        for (o, d, ex) in lost {
            self.send_again(o, &d, &ex);
        }
        n
    }

    /// Queues `data` at `offset` to go again in pieces, avoiding `excluded`, but not the
    /// pieces the relay confirmed.
    fn send_again(&mut self, offset: u64, data: &Bytes, excluded: &[PathId]) {
        // from the first byte the relay lacks (the pieces start there)
        let mut at = usize::try_from(self.in_order().saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(data.len());
        let piece = usize::try_from(self.piece).unwrap_or(usize::MAX);
        while at < data.len() {
            let end = at.saturating_add(piece).min(data.len());
            let o = offset + at as u64;
            if !self.confirmed(o, (end - at) as u64) {
                self.again.insert(
                    o,
                    Piece {
                        offset: o,
                        data: data.slice(at..end),
                        excluded: excluded.to_vec(),
                    },
                );
            }
            at = end;
        }
    }

    /// Notes that the relay has `[start, end)`.
    fn confirm(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // merge with every range that overlaps or touches it
        let touching: Vec<(u64, u64)> = self
            .acked
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.acked.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.acked.insert(start, end);
    }

    /// Whether the relay confirmed every byte of `[offset, offset + len)`.
    fn confirmed(&self, offset: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        self.acked
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &e)| e >= offset + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(total: u64) -> PushedBody {
        PushedBody::new(Some(total), 1000, 100, 25, 0)
    }

    fn bytes(offset: u64, len: u64) -> Bytes {
        (offset..offset + len).map(|i| (i % 251) as u8).collect()
    }

    /// Sends the next new chunk of at most `len` bytes on `path`: (ticket, offset, len).
    fn send_new(b: &mut PushedBody, len: u64, path: PathId) -> (u64, u64, u64) {
        let Some(Next::New { offset, len: most }) = b.fresh() else {
            panic!("new bytes to send");
        };
        let len = len.min(most);
        (b.start_new(bytes(offset, len), path), offset, len)
    }

    /// Sends every piece queued again on `path`: (ticket, offset, len) each.
    fn send_pieces(b: &mut PushedBody, path: PathId) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        while let Some(Next::Again(p)) = b.next_send() {
            out.push((b.start_again(&p, path), p.offset, p.data.len() as u64));
        }
        out
    }

    #[test]
    fn the_body_is_done_when_every_byte_is_confirmed_in_any_order() {
        let mut b = body(250);
        let (t1, o1, _) = send_new(&mut b, 100, 0);
        let (t2, o2, _) = send_new(&mut b, 80, 1);
        let (t3, o3, l3) = send_new(&mut b, 100, 0);
        assert_eq!((o1, o2, o3, l3), (0, 100, 180, 70));
        assert_eq!(b.next_send(), None, "every byte is sent");
        b.answered(t3);
        b.answered(t1);
        assert_eq!(b.in_order(), 100);
        assert!(!b.done(), "the middle chunk is not confirmed");
        b.answered(t2);
        assert_eq!(b.in_order(), 250);
        assert!(b.done());
    }

    #[test]
    fn a_body_of_unknown_length_is_done_only_once_its_end_is_known() {
        let mut b = PushedBody::new(None, 1000, 100, 25, 0);
        assert_eq!(b.total(), None);
        let (t1, _, l1) = send_new(&mut b, 100, 0);
        let (t2, o2, l2) = send_new(&mut b, 100, 1);
        assert_eq!((l1, o2, l2), (100, 100, 100));
        b.answered(t1);
        b.answered(t2);
        assert_eq!(b.in_order(), 200);
        assert!(!b.done(), "the device may send more");
        assert!(
            matches!(
                b.fresh(),
                Some(Next::New {
                    offset: 200,
                    len: 100
                })
            ),
            "more is offered while the length is unknown"
        );
        // the device's last byte: 50 more
        let (t3, _, _) = send_new(&mut b, 50, 0);
        b.ends_at(250);
        assert_eq!(b.total(), Some(250));
        assert_eq!(b.fresh(), None, "nothing beyond the end");
        assert!(!b.done(), "the last chunk is not confirmed");
        b.answered(t3);
        assert!(b.done());
        b.ends_at(999);
        assert_eq!(b.total(), Some(250), "a known length stays");
    }

    #[test]
    fn the_window_counts_from_the_first_unconfirmed_byte() {
        let mut b = PushedBody::new(Some(10_000), 300, 100, 25, 0);
        let (t1, _, _) = send_new(&mut b, 100, 0);
        let (t2, _, _) = send_new(&mut b, 100, 0);
        send_new(&mut b, 100, 0);
        assert_eq!(b.next_send(), None, "300 bytes beyond 0");
        b.answered(t2);
        assert_eq!(
            b.next_send(),
            None,
            "the first chunk still holds the window"
        );
        b.answered(t1);
        assert_eq!(
            b.next_send(),
            Some(Next::New {
                offset: 300,
                len: 100
            })
        );
    }

    #[test]
    fn a_failed_chunk_goes_again_in_urgent_pieces_before_new_bytes() {
        let mut b = body(200);
        let (t, _, _) = send_new(&mut b, 100, 0);
        assert_eq!(b.failed(t), Failed::Again(1));
        let Some(Next::Again(p)) = b.next_send() else {
            panic!("a piece first")
        };
        assert_eq!(
            (p.offset, p.data.len(), p.excluded.clone()),
            (0, 25, vec![0])
        );
        assert_eq!(p.data, bytes(0, 25));
        let pieces = send_pieces(&mut b, 1);
        assert_eq!(pieces.len(), 4);
        assert_eq!(
            b.next_send(),
            Some(Next::New {
                offset: 100,
                len: 100
            }),
            "then the body goes on"
        );
        for (t, _, _) in pieces {
            b.answered(t);
        }
        assert_eq!(b.in_order(), 100);
    }

    #[test]
    fn what_the_relay_says_it_has_of_a_lost_chunk_is_not_sent_again() {
        let mut b = body(300);
        let (t1, _, _) = send_new(&mut b, 100, 0);
        let (t2, _, _) = send_new(&mut b, 100, 1);
        // the relay took the first chunk's bytes to 60 as they came, and said so in the
        // second chunk's answer
        b.answered(t2);
        b.relay_has(60);
        assert_eq!(b.in_order(), 60);
        assert_eq!(b.failed(t1), Failed::Again(1));
        let pieces: Vec<_> = send_pieces(&mut b, 1)
            .into_iter()
            .map(|(_, o, l)| (o, l))
            .collect();
        assert_eq!(pieces, vec![(60, 25), (85, 15)], "from the relay's front");
        b.relay_has(10_000);
        assert_eq!(b.in_order(), 200, "never beyond what was read");
    }

    #[test]
    fn the_relays_front_never_passes_bytes_held_back() {
        let mut b = PushedBody::new(Some(1000), 1000, 100, 25, 500);
        let (t, _, _) = send_new(&mut b, 100, 0);
        b.hold(bytes(100, 50));
        let (_, o, _) = send_new(&mut b, 100, 1);
        assert_eq!(o, 150, "the slower path's chunk skipped the held bytes");
        b.answered(t);
        b.relay_has(250);
        assert_eq!(b.in_order(), 100, "the held bytes were never sent");
        assert_eq!(
            b.next_send(),
            Some(Next::Held {
                offset: 100,
                len: 50
            })
        );
    }

    #[test]
    fn a_silent_paths_chunks_go_again_and_a_late_copy_ends_the_pieces() {
        let mut b = body(200);
        let (t1, _, _) = send_new(&mut b, 100, 0);
        let (t2, _, _) = send_new(&mut b, 100, 1);
        b.answered(t2);
        assert_eq!(b.silent(0), 1);
        assert_eq!(b.silent(0), 0, "sent again once");
        // a piece goes on path 1; then the silent path's chunk is confirmed after all
        let Some(Next::Again(p)) = b.next_send() else {
            panic!("a piece")
        };
        assert_eq!(p.excluded, vec![0]);
        let p1 = b.start_again(&p, 1);
        b.answered(p1);
        b.answered(t1);
        assert_eq!(
            b.next_send(),
            None,
            "the pieces still queued are not needed"
        );
        assert!(b.done());
    }

    #[test]
    fn a_silent_paths_resent_pieces_go_again_too() {
        let mut b = body(100);
        let (t, _, _) = send_new(&mut b, 100, 0);
        b.failed(t);
        let on_one = send_pieces(&mut b, 1);
        assert_eq!(on_one.len(), 4);
        assert_eq!(b.silent(1), 4, "path 1 went silent with the pieces");
        let Some(Next::Again(p)) = b.next_send() else {
            panic!("a piece")
        };
        assert_eq!(p.excluded, vec![0, 1]);
        // a silent flight that fails later changes nothing: its copy is on its way
        assert_eq!(b.failed(on_one[0].0), Failed::Covered);
    }

    #[test]
    fn a_piece_put_on_a_path_known_silent_is_not_sent_again_for_it() {
        // every other path failed the piece, so it went on the silent path knowingly: the
        // next silence check must not queue it again (the shell would loop on it)
        let mut b = body(100);
        let (t, _, _) = send_new(&mut b, 100, 0);
        assert_eq!(b.silent(0), 1);
        let Some(Next::Again(p)) = b.next_send() else {
            panic!("a piece")
        };
        assert_eq!(p.excluded, vec![0]);
        b.start_again(&p, 0);
        assert_eq!(b.silent(0), 0);
        assert!(matches!(b.next_send(), Some(Next::Again(q)) if q.offset == 25));
        assert_eq!(b.failed(t), Failed::Covered);
    }

    #[test]
    fn a_chunk_below_the_pieces_sent_again_is_hurried_along() {
        // chunks 0-100 on path 0, 100-200 on path 1, 200-300 on path 0, 300-400 on path 1:
        // path 0 falls silent. The chunk on path 1 between the silent path's two goes again
        // too (the pieces above would go ahead of it), the one above does not
        let mut b = PushedBody::new(Some(400), 1000, 100, 50, 0);
        send_new(&mut b, 100, 0);
        let (between, _, _) = send_new(&mut b, 100, 1);
        send_new(&mut b, 100, 0);
        let (above, o, _) = send_new(&mut b, 100, 1);
        assert_eq!(o, 300);
        assert_eq!(b.silent(0), 3, "two silent, one hurried");
        let mut offsets = Vec::new();
        while let Some(Next::Again(p)) = b.next_send() {
            offsets.push((p.offset, p.excluded.clone()));
            b.start_again(&p, 1);
        }
        let just: Vec<u64> = offsets.iter().map(|o| o.0).collect();
        assert_eq!(just, vec![0, 50, 100, 150, 200, 250]);
        assert_eq!(
            offsets[2].1,
            Vec::<PathId>::new(),
            "its own path may bring it"
        );
        // the hurried chunk's failure changes nothing; the one above goes again
        assert_eq!(b.failed(between), Failed::Covered);
        assert_eq!(b.failed(above), Failed::Again(1));
    }

    #[test]
    fn a_refusal_fails_the_body_unless_another_copy_brought_the_bytes() {
        let mut b = body(200);
        let (t1, _, _) = send_new(&mut b, 100, 0);
        let (t2, _, _) = send_new(&mut b, 100, 1);
        b.silent(0);
        for (t, _, _) in send_pieces(&mut b, 1) {
            b.answered(t);
        }
        assert_eq!(b.refused(t1), Failed::Covered);
        assert_eq!(b.refused(t2), Failed::GiveUp);
    }

    #[test]
    fn a_slower_paths_chunk_skips_ahead_and_the_held_bytes_go_first() {
        let mut b = PushedBody::new(Some(1000), 1000, 100, 25, 300);
        // the slow path's chunk starts 250 bytes beyond the front
        assert_eq!(b.skip_for(250, 100), 250);
        b.hold(bytes(0, 250));
        assert_eq!(b.read(), 250);
        let (slow, o, _) = send_new(&mut b, 100, 2);
        assert_eq!(o, 250);
        // the fast path sends the held bytes first, lowest first, a chunk at most
        let mut sent = Vec::new();
        while let Some(Next::Held { offset, len }) = b.next_send() {
            let (t, d) = b.start_held(offset, len, 0).expect("held");
            assert_eq!(d, bytes(offset, d.len() as u64));
            sent.push((t, offset, d.len()));
        }
        let offsets: Vec<(u64, usize)> = sent.iter().map(|s| (s.1, s.2)).collect();
        assert_eq!(offsets, vec![(0, 100), (100, 100), (200, 50)]);
        assert_eq!(
            b.next_send(),
            Some(Next::New {
                offset: 350,
                len: 100
            })
        );
        for (t, _, _) in sent {
            b.answered(t);
        }
        assert_eq!(b.in_order(), 250, "the slow chunk is still on its way");
        b.answered(slow);
        assert_eq!(b.in_order(), 350);
    }

    #[test]
    fn what_is_held_stays_within_its_bound_the_window_and_the_body() {
        let b = PushedBody::new(Some(1000), 400, 100, 25, 300);
        assert_eq!(b.skip_for(10_000, 100), 300, "the most held");
        let b = PushedBody::new(Some(1000), 250, 100, 25, 300);
        assert_eq!(b.skip_for(10_000, 100), 150, "the window");
        let b = PushedBody::new(Some(180), 1000, 100, 25, 300);
        assert_eq!(b.skip_for(10_000, 100), 80, "the body");
        let mut b = PushedBody::new(Some(1000), 1000, 100, 25, 300);
        b.hold(bytes(0, 200));
        assert_eq!(b.skip_for(250, 100), 50, "what is held counts as lead");
        assert_eq!(b.skip_for(150, 100), 0);
    }

    #[test]
    fn confirmed_ranges_merge() {
        let mut b = body(1000);
        b.confirm(100, 200);
        b.confirm(300, 400);
        assert!(!b.confirmed(150, 200));
        b.confirm(200, 300);
        assert!(b.confirmed(100, 300));
        assert_eq!(b.acked.len(), 1);
        b.confirm(0, 50);
        b.confirm(40, 120);
        assert_eq!(b.acked.into_iter().collect::<Vec<_>>(), vec![(0, 400)]);
    }

    /// The relay's side: the first copy of every byte, and the body at the end.
    struct Relay(Vec<Option<u8>>);

    impl Relay {
        fn take(&mut self, offset: u64, data: &Bytes) {
            for (i, &x) in data.iter().enumerate() {
                let slot = &mut self.0[offset as usize + i];
                assert!(slot.is_none_or(|s| s == x), "a byte changed");
                slot.get_or_insert(x);
            }
        }
    }

    #[test]
    fn copies_in_any_order_deliver_every_byte_and_end() {
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let total = 400;
            // every other body comes without a length: known once its last byte is read
            let known = seed % 2 == 0;
            let mut b = PushedBody::new(known.then_some(total), 300, 100, 25, 150);
            let mut relay = Relay(vec![None; total as usize]);
            // ticket -> (offset, data, path)
            let mut flights: Vec<(u64, u64, Bytes, PathId)> = Vec::new();
            let mut guard = 0;
            while !b.done() {
                guard += 1;
                assert!(guard < 10_000, "seed {seed}: no progress");
                while let Some(n) = b.next_send() {
                    let path = rng.usize(0..3);
                    match n {
                        Next::Again(p) => {
                            let t = b.start_again(&p, path);
                            flights.push((t, p.offset, p.data, path));
                        }
                        Next::Held { offset, len } => {
                            let (t, d) = b.start_held(offset, len, path).expect("held");
                            assert_eq!(d, bytes(offset, d.len() as u64), "seed {seed}");
                            flights.push((t, offset, d, path));
                        }
                        Next::New { len, .. } => {
                            let len = rng.u64(1..=len);
                            // a slower path's chunk now and then skips ahead (the device's
                            // body may end within what it skips)
                            if rng.bool() {
                                let skip = b.skip_for(rng.u64(0..200), len);
                                let skip = skip.min(total - b.read());
                                b.hold(bytes(b.read(), skip));
                                if b.read() == total {
                                    b.ends_at(total);
                                    continue;
                                }
                            }
                            let offset = b.read();
                            let len = len.min(total - offset);
                            let d = bytes(offset, len);
                            flights.push((b.start_new(d.clone(), path), offset, d, path));
                            if offset + len == total {
                                b.ends_at(total);
                            }
                        }
                    }
                }
                assert!(
                    !flights.is_empty(),
                    "seed {seed}: stuck with nothing in flight"
                );
                let (t, o, d, p) = flights.swap_remove(rng.usize(0..flights.len()));
                match rng.u8(0..4) {
                    0 => {
                        b.silent(p);
                        flights.push((t, o, d, p));
                    }
                    1 => {
                        b.failed(t);
                    }
                    _ => {
                        relay.take(o, &d);
                        b.answered(t);
                    }
                }
            }
            let got: Vec<u8> = relay.0.iter().map(|x| x.expect("every byte")).collect();
            assert_eq!(got, bytes(0, total).to_vec(), "seed {seed}");
        }
    }
}
