//! When one transfer's chunks on a path may hand their bytes to the sender. Chunks of
//! equal priority share a path round-robin, so a megabyte of chunks placed on a path at
//! once (a link coming back, credited with its earlier rate before it has ramped up) all
//! arrive at about the same time, and the receiver's in-order front waits for the last of
//! them instead of the first. A transfer's chunks on a path therefore write in offset
//! order, and only while the bytes of its earlier chunks still unanswered on that path are
//! under an allowance (the shell gives about two of the path's bandwidth-delay products,
//! and never less than two chunks, so the path never waits for an answer to have bytes to
//! send). The others wait their turn, placed but not written; the chunks written share the
//! path round-robin as before. Striped uploads gate their chunks with it.

use crate::scheduler::PathId;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

/// The bytes a transfer's earlier chunks on a path may hold while a chunk writes: two of
/// the path's bandwidth-delay products (`rate` bytes/s, `srtt`), at least two chunks of
/// `chunk` bytes. A path's estimates in slow start run ahead of it; two products leave it
/// bytes to send while an answer comes back.
pub fn allowance(rate: f64, srtt: Duration, chunk: u64) -> u64 {
    let bdp = rate.max(0.0) * srtt.as_secs_f64();
    ((2.0 * bdp) as u64).max(2 * chunk)
}

/// The chunks of one transfer under way, by path, with a key of the caller's.
#[derive(Debug)]
pub struct ChunkGate<K> {
    /// By path: (offset, key) → length.
    paths: HashMap<PathId, BTreeMap<(u64, K), u64>>,
    keys: HashMap<K, (PathId, u64)>,
}

impl<K> Default for ChunkGate<K> {
    fn default() -> Self {
        Self {
            paths: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K: Copy + Ord + Hash> ChunkGate<K> {
    /// Chunk `key`, `len` bytes at `offset`, goes on `path` now: the chunks that may write,
    /// given each path's allowance for the bytes of its earlier chunks (a key started again
    /// leaves its earlier place first).
    pub fn start(
        &mut self,
        key: K,
        path: PathId,
        offset: u64,
        len: u64,
        allowance: impl Fn(PathId) -> u64,
    ) -> Vec<K> {
        let mut open = self.end(&key, &allowance);
        self.paths
            .entry(path)
            .or_default()
            .insert((offset, key), len);
        self.keys.insert(key, (path, offset));
        open.extend(self.open(path, allowance(path)));
        open
    }

    /// The receiver has every byte below `front`: the chunks that end there leave (their
    /// bytes came another way), and the chunks that may write now, given each path's
    /// allowance.
    pub fn passed(&mut self, front: u64, allowance: impl Fn(PathId) -> u64) -> Vec<K> {
        let gone: Vec<K> = self
            .paths
            .values()
            .flat_map(|on| on.iter())
            .filter(|(&(offset, _), &len)| offset + len <= front)
            .map(|(&(_, k), _)| k)
            .collect();
        let mut open = Vec::new();
        for k in gone {
            open.extend(self.end(&k, &allowance));
        }
        open
    }

    /// Chunk `key` is answered or failed: the chunks of its path that may write, given the
    /// path's allowance.
    pub fn end(&mut self, key: &K, allowance: impl Fn(PathId) -> u64) -> Vec<K> {
        let Some((path, offset)) = self.keys.remove(key) else {
            return Vec::new();
        };
        let Some(on) = self.paths.get_mut(&path) else {
            return Vec::new();
        };
        on.remove(&(offset, *key));
        if on.is_empty() {
            self.paths.remove(&path);
            return Vec::new();
        }
        self.open(path, allowance(path))
    }

    /// The chunks of `path` whose earlier chunks hold less than `allowance` bytes.
    fn open(&self, path: PathId, allowance: u64) -> Vec<K> {
        let mut before = 0u64;
        let mut open = Vec::new();
        for (&(_, k), &len) in self.paths.get(&path).into_iter().flat_map(BTreeMap::iter) {
            if before > 0 && before >= allowance {
                break;
            }
            open.push(k);
            before += len;
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_write_in_offset_order_within_the_allowance_of_their_path() {
        let mut g = ChunkGate::default();
        // 250 bytes allowed before a chunk: 100 + 100 before the third, 300 before the fourth
        assert_eq!(g.start(1, 0, 0, 100, |_| 250), [1]);
        assert_eq!(g.start(2, 0, 100, 100, |_| 250), [1, 2]);
        assert_eq!(g.start(3, 0, 200, 100, |_| 250), [1, 2, 3]);
        assert_eq!(
            g.start(4, 0, 300, 100, |_| 250),
            [1, 2, 3],
            "4 waits its turn"
        );
        assert_eq!(g.start(9, 1, 400, 100, |_| 250), [9], "each path apart");
        // the first answered: 4 may write
        assert_eq!(g.end(&1, |_| 250), [2, 3, 4]);
        // held bytes below the others placed later go first; the last waits again (it has
        // written already: the shell lets it go on)
        assert_eq!(g.start(5, 0, 50, 100, |_| 250), [5, 2, 3]);
        // a chunk larger than the allowance still goes when it is first
        assert_eq!(g.end(&5, |_| 250), [2, 3, 4]);
        assert_eq!(g.end(&2, |_| 0), [3]);
        // the receiver has the bytes of 3 another way (sent again): it leaves, 4 goes
        assert_eq!(g.passed(300, |_| 0), [4]);
        for k in [4, 9] {
            g.end(&k, |_| 250);
        }
        assert!(g.paths.is_empty() && g.keys.is_empty());
        assert_eq!(g.end(&3, |_| 250), Vec::<i32>::new(), "once");
        // a key started again leaves its earlier place (and what waited behind it goes)
        g.start(1, 0, 0, 100, |_| 100);
        g.start(2, 0, 100, 100, |_| 100);
        assert_eq!(g.start(1, 1, 500, 100, |_| 100), [2, 1]);
    }

    #[test]
    fn the_allowance_is_two_products_and_never_under_two_chunks() {
        let ms = Duration::from_millis;
        assert_eq!(allowance(2_500_000.0, ms(50), 131_072), 250_000 + 12_144);
        assert_eq!(allowance(2_500_000.0, ms(100), 131_072), 500_000);
        assert_eq!(allowance(0.0, ms(0), 131_072), 262_144);
    }
}
