//! Which chunks each neighbour holds, from the `Have` bitmaps neighbours announce, and the
//! bitmap this node announces of its own.

use std::collections::HashMap;

/// A set of chunks of one image, one bit per chunk (chunk 0 in the lowest bit of byte 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkSet {
    chunks: u32,
    bits: Vec<u8>,
}

impl ChunkSet {
    /// No chunk of an image of `chunks` chunks.
    pub fn empty(chunks: u32) -> ChunkSet {
        ChunkSet {
            chunks,
            bits: vec![0; chunks.div_ceil(8) as usize],
        }
    }

    /// Every chunk.
    pub fn full(chunks: u32) -> ChunkSet {
        let mut s = ChunkSet::empty(chunks);
        (0..chunks).for_each(|i| s.insert(i));
        s
    }

    /// From an announced bitmap (its length was checked when it was decoded).
    pub fn from_bitmap(chunks: u32, bits: Vec<u8>) -> ChunkSet {
        ChunkSet { chunks, bits }
    }

    /// Adds chunk `i`.
    pub fn insert(&mut self, i: u32) {
        if i < self.chunks {
            self.bits[(i / 8) as usize] |= 1 << (i % 8);
        }
    }

    /// Whether chunk `i` is in the set.
    pub fn contains(&self, i: u32) -> bool {
        i < self.chunks && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Chunks in the image.
    pub fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The bitmap, as announced.
    pub fn bitmap(&self) -> &[u8] {
        &self.bits
    }
}

/// What each neighbour announced it holds, per image.
#[derive(Debug, Default)]
pub struct Holdings {
    by_peer: HashMap<u64, HashMap<[u8; 32], ChunkSet>>,
}

impl Holdings {
    /// Records an announcement (it replaces the previous one of that peer for that image).
    pub fn record(&mut self, peer: u64, image: [u8; 32], set: ChunkSet) {
        self.by_peer.entry(peer).or_default().insert(image, set);
    }

    /// Forgets a peer that went away (it announces again when it comes back).
    pub fn forget(&mut self, peer: u64) {
        self.by_peer.remove(&peer);
    }

    /// Whether `peer` holds chunk `i` of `image`: `None` when it announced nothing for it.
    pub fn holds(&self, peer: u64, image: &[u8; 32], i: u32) -> Option<bool> {
        self.by_peer
            .get(&peer)
            .and_then(|m| m.get(image))
            .map(|s| s.contains(i))
    }

    /// How many of `peers` announced chunk `i` of `image` (fewer: rarer).
    pub fn count(&self, peers: &[u64], image: &[u8; 32], i: u32) -> usize {
        peers
            .iter()
            .filter(|p| self.holds(**p, image, i) == Some(true))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_announcements() {
        let mut s = ChunkSet::empty(10);
        s.insert(0);
        s.insert(9);
        s.insert(10); // past the end: ignored
        assert_eq!(s.bitmap(), &[0x01, 0x02]);
        assert!(s.contains(9) && !s.contains(1) && !s.contains(10));
        assert_eq!(ChunkSet::full(10).bitmap(), &[0xff, 0x03]);
        let mut h = Holdings::default();
        let img = [1; 32];
        assert_eq!(h.holds(2, &img, 0), None);
        h.record(2, img, s.clone());
        h.record(3, img, ChunkSet::full(10));
        assert_eq!(h.holds(2, &img, 9), Some(true));
        assert_eq!(h.holds(2, &img, 5), Some(false));
        assert_eq!(h.count(&[2, 3, 4], &img, 9), 2);
        assert_eq!(h.count(&[2, 3, 4], &img, 5), 1);
        h.forget(2);
        assert_eq!(h.holds(2, &img, 9), None);
    }
}
