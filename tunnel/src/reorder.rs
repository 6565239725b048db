//! Putting pieces of a byte stream back in order: pieces keyed by their offset, possibly
//! overlapping or repeated (a piece sent again), taken out once the bytes before them are
//! in. Used by the relay for striped bodies and by the gateway for pulled ones.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Takes out of `pending` what now continues the stream at `next`, in order and each byte
/// once, and moves `next` past it. Returns the new bytes and how many held bytes were
/// dropped as copies (whole pieces already handed out, and the handed-out start of a piece
/// that overlaps).
pub fn take_in_order(pending: &mut BTreeMap<u64, Bytes>, next: &mut u64) -> (Vec<Bytes>, u64) {
    let mut out = Vec::new();
    let mut dropped = 0;
    while let Some(entry) = pending.first_entry() {
        let at = *entry.key();
        if at > *next {
            break;
        }
        let data = entry.remove();
        let end = at + data.len() as u64;
        if end <= *next {
            dropped += data.len() as u64; // a later copy of what was handed out
            continue;
        }
        let skip = *next - at;
        dropped += skip;
        *next = end;
        out.push(data.slice(skip as usize..));
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_repeated_pieces_come_out_once_in_order() {
        let mut pending = BTreeMap::new();
        let mut next = 0;
        pending.insert(4, Bytes::from_static(b"efgh"));
        assert_eq!(
            take_in_order(&mut pending, &mut next),
            (vec![], 0),
            "a gap first"
        );
        pending.insert(0, Bytes::from_static(b"abcdef"));
        let (out, dropped) = take_in_order(&mut pending, &mut next);
        assert_eq!(out.concat(), b"abcdefgh");
        assert_eq!(dropped, 2, "the overlap's first two bytes");
        assert_eq!(next, 8);
        pending.insert(2, Bytes::from_static(b"cd"));
        assert_eq!(
            take_in_order(&mut pending, &mut next),
            (vec![], 2),
            "a whole copy"
        );
        assert!(pending.is_empty());
    }
}
