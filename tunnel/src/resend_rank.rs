//! The order of a transfer's pieces sent again after a cut: each piece's rank is how many
//! of the transfer's pieces still on their way start below it, so the lowest offset goes
//! first on its path (`tunnel_io::quic::Start::Resend`). Striped uploads and pulled
//! downloads rank their pieces with it.

use std::collections::BTreeMap;

/// The pieces of one transfer sent again and on their way, by a key of the caller's.
#[derive(Debug)]
pub struct ResendRanks<K> {
    flying: BTreeMap<K, u64>,
}

impl<K> Default for ResendRanks<K> {
    fn default() -> Self {
        Self {
            flying: BTreeMap::new(),
        }
    }
}

impl<K: Ord> ResendRanks<K> {
    /// Piece `key` at `offset` goes now: its rank (0 first; ranks past 255 share 255).
    pub fn start(&mut self, key: K, offset: u64) -> u8 {
        let below = self.flying.values().filter(|&&o| o < offset).count();
        self.flying.insert(key, offset);
        u8::try_from(below).unwrap_or(u8::MAX)
    }

    /// Piece `key` is answered or failed.
    pub fn end(&mut self, key: &K) {
        self.flying.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_ranks_after_the_lower_offsets_still_on_their_way() {
        let mut r = ResendRanks::default();
        assert_eq!(r.start(1, 64), 0);
        assert_eq!(r.start(2, 32), 0, "nothing below it");
        assert_eq!(r.start(3, 96), 2);
        r.end(&2);
        assert_eq!(r.start(4, 128), 2, "the answered one no longer counts");
        for k in 10..400 {
            r.start(k, 1_000 + k);
        }
        assert_eq!(
            r.start(999, 1 << 40),
            u8::MAX,
            "ranks past 255 share the last"
        );
    }
}
