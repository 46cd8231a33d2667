//! Which chunks each neighbour holds, from the `Have` bitmaps neighbours announce, and the
//! bitmap a node announces of its own.

use std::collections::HashMap;

/// An image, by the sha256 of its bytes.
pub type ImageId = [u8; 32];

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

    /// From an announced bitmap; `None` when its length does not fit `chunks`.
    pub fn from_bitmap(chunks: u32, bits: Vec<u8>) -> Option<ChunkSet> {
        (bits.len() == chunks.div_ceil(8) as usize).then_some(ChunkSet { chunks, bits })
    }

    /// Adds chunk `i` (ignored past the end).
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

/// Images whose announcements are kept per neighbour (a node fetches one image at a time; a
/// neighbour holds at most two campaigns' images and the one it fetches).
pub const IMAGES_PER_PEER: usize = 4;

/// What each neighbour announced it holds, per image.
#[derive(Debug, Default)]
pub struct Holdings {
    by_peer: HashMap<u64, HashMap<ImageId, ChunkSet>>,
}

impl Holdings {
    /// Records an announcement (it replaces the previous one of that peer for that image). A
    /// peer's announcements of at most [`IMAGES_PER_PEER`] images are kept: one more evicts
    /// another, so a neighbour cannot make this node hold what it likes.
    pub fn record(&mut self, peer: u64, image: ImageId, set: ChunkSet) {
        let images = self.by_peer.entry(peer).or_default();
        if !images.contains_key(&image) && images.len() >= IMAGES_PER_PEER {
            if let Some(&other) = images.keys().next() {
                images.remove(&other);
            }
        }
        images.insert(image, set);
    }

    /// Adds one chunk to what `peer` is known to hold of `image` (an image of `chunks` chunks).
    pub fn add(&mut self, peer: u64, image: ImageId, chunks: u32, i: u32) {
        self.by_peer
            .entry(peer)
            .or_default()
            .entry(image)
            .or_insert_with(|| ChunkSet::empty(chunks))
            .insert(i);
    }

    /// Forgets a peer that went away (it announces again when it comes back).
    pub fn forget(&mut self, peer: u64) {
        self.by_peer.remove(&peer);
    }

    /// What `peer` announced of `image`, if anything.
    pub fn of(&self, peer: u64, image: &ImageId) -> Option<&ChunkSet> {
        self.by_peer.get(&peer).and_then(|m| m.get(image))
    }

    /// Whether `peer` holds chunk `i` of `image`: `None` when it announced nothing for it.
    pub fn holds(&self, peer: u64, image: &ImageId, i: u32) -> Option<bool> {
        self.of(peer, image).map(|s| s.contains(i))
    }

    /// How many of `peers` announced chunk `i` of `image` (fewer: rarer).
    pub fn count(&self, peers: &[u64], image: &ImageId, i: u32) -> usize {
        peers
            .iter()
            .filter(|p| self.holds(**p, image, i) == Some(true))
            .count()
    }
}
