//! Fetching one image chunk by chunk from neighbours: which chunk to ask for, of whom, and what
//! to do when a neighbour answers, declines, goes away or says nothing.

use super::{Holdings, ImageId, RateLimit, Strategy, MS};
use crate::Nanos;
use std::collections::{BTreeSet, HashMap};

/// The request window and back-offs of a fetch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FetchParams {
    /// Chunk requests in flight per neighbour (each needs one of the connection's bulk slots).
    pub per_peer: usize,
    /// Chunk requests in flight in all.
    pub window: usize,
    /// Wait before asking a neighbour that had nothing again.
    pub not_yet_backoff: Nanos,
    /// Wait before asking a neighbour whose uplink was busy again.
    pub busy_backoff: Nanos,
    /// How long a request may stay unanswered before it is asked of another neighbour.
    pub deadline: Nanos,
    /// Which neighbours may be asked.
    pub strategy: Strategy,
}

impl FetchParams {
    /// The agent's values for chunks of `chunk_size` bytes under a cap of `max_mib_per_s`
    /// (0: none).
    pub fn agent(chunk_size: u32, max_mib_per_s: f64, strategy: Strategy) -> FetchParams {
        FetchParams {
            per_peer: 2,
            window: 2,
            not_yet_backoff: 150 * MS,
            busy_backoff: 15 * MS,
            deadline: request_deadline(chunk_size, max_mib_per_s),
            strategy,
        }
    }
}

/// How long a chunk request may stay unanswered before it is asked of another neighbour: ten
/// seconds, or eight chunk times at the image-traffic cap if that is longer (a source queues a
/// few requests behind its cap), at most an hour.
pub fn request_deadline(chunk_size: u32, max_mib_per_s: f64) -> Nanos {
    let floor = 10_000 * MS;
    if max_mib_per_s <= 0.0 {
        return floor;
    }
    let chunk_s = f64::from(chunk_size) / (max_mib_per_s * 1024.0 * 1024.0);
    floor.max(((8.0 * chunk_s).min(3600.0) * 1e9) as Nanos)
}

/// The size of an image and of its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageShape {
    /// The image.
    pub id: ImageId,
    /// Bytes in the image.
    pub size: u64,
    /// Bytes per chunk (the last may be shorter).
    pub chunk_size: u32,
}

impl ImageShape {
    /// Chunks in the image (at least one).
    pub fn chunk_count(&self) -> u32 {
        self.size.div_ceil(u64::from(self.chunk_size.max(1))).max(1) as u32
    }

    /// Bytes in chunk `i`.
    pub fn chunk_len(&self, i: u32) -> u32 {
        let start = u64::from(i) * u64::from(self.chunk_size);
        u64::from(self.chunk_size).min(self.size.saturating_sub(start)) as u32
    }
}

/// A chunk request to send: `index` of the image, asked of `peer` into its receive `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The neighbour asked.
    pub peer: u64,
    /// The receive slot the caller granted for it.
    pub slot: u32,
    /// The chunk.
    pub index: u32,
}

/// How a candidate request ranks: (its source announced nothing, rarity, tie break, requests
/// open with the source); lowest first.
type Rank = (bool, usize, u64, usize);

/// The chunk phase of one image fetch.
#[derive(Debug)]
pub struct ChunkFetch {
    shape: ImageShape,
    params: FetchParams,
    me: u64,
    want: BTreeSet<u32>,
    /// (peer, slot) → (chunk, when it was asked).
    inflight: HashMap<(u64, u32), (u32, Nanos)>,
    /// Neighbours not asked until the time given, and whether for a BUSY answer.
    resting: HashMap<u64, (Nanos, bool)>,
    /// Neighbours that sent a chunk that did not verify: never asked again in this fetch.
    banned: BTreeSet<u64>,
}

impl ChunkFetch {
    /// A fetch by node `me` of the chunks `missing` of the image `shape`.
    pub fn new(
        shape: ImageShape,
        missing: impl IntoIterator<Item = u32>,
        me: u64,
        params: FetchParams,
    ) -> ChunkFetch {
        ChunkFetch {
            shape,
            params,
            me,
            want: missing.into_iter().collect(),
            inflight: HashMap::new(),
            resting: HashMap::new(),
            banned: BTreeSet::new(),
        }
    }

    /// The image.
    pub fn shape(&self) -> &ImageShape {
        &self.shape
    }

    /// Whether every chunk arrived.
    pub fn done(&self) -> bool {
        self.want.is_empty() && self.inflight.is_empty()
    }

    /// Chunks not yet here (wanted or in flight).
    pub fn missing(&self) -> usize {
        self.want.len() + self.inflight.len()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Neighbours dropped as sources.
    pub fn banned(&self) -> impl Iterator<Item = u64> + '_ {
        self.banned.iter().copied()
    }

    /// When this fetch next needs the caller: a resting neighbour wakes or a request times out.
    pub fn next_wakeup(&self) -> Option<Nanos> {
        let rest = self.resting.values().map(|&(t, _)| t).min();
        let late = self
            .inflight
            .values()
            .map(|&(_, at)| at + self.params.deadline)
            .min();
        rest.into_iter().chain(late).min()
    }

    /// Requests unanswered past their deadline, withdrawn so their chunks are asked elsewhere
    /// (the caller revokes the slots). Each neighbour that let one lapse rests a while.
    pub fn expire(&mut self, now: Nanos) -> Vec<Ask> {
        let deadline = self.params.deadline;
        let late: Vec<(u64, u32)> = self
            .inflight
            .iter()
            .filter(|(_, &(_, asked))| now.saturating_sub(asked) >= deadline)
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::with_capacity(late.len());
        for (peer, slot) in late {
            if let Some((index, _)) = self.inflight.remove(&(peer, slot)) {
                self.want.insert(index);
                self.resting
                    .insert(peer, (now + self.params.not_yet_backoff, false));
                out.push(Ask { peer, slot, index });
            }
        }
        out
    }

    /// Fills the request window from `sources` (connected neighbours), within the download
    /// cap. `grant(peer, len)` asks the caller for a receive slot on that neighbour's
    /// connection; `None` means none is free now (the neighbour rests briefly). Returns the
    /// requests to send.
    pub fn fill(
        &mut self,
        now: Nanos,
        sources: &[u64],
        holdings: &Holdings,
        download: &mut RateLimit,
        mut grant: impl FnMut(u64, u32) -> Option<u32>,
    ) -> Vec<Ask> {
        self.resting.retain(|_, (until, _)| now < *until);
        let mut asks = Vec::new();
        // Bounded: a caller that grants a slot already in flight cannot keep this turning.
        let mut tries = 4 * self.params.window;
        while self.inflight.len() < self.params.window && tries > 0 {
            tries -= 1;
            let Some((peer, index)) = self.choose(sources, holdings) else {
                break;
            };
            let len = self.shape.chunk_len(index);
            // Charged when the chunk arrives: a declined request costs nothing.
            if !download.allows(u64::from(len), now) {
                break;
            }
            match grant(peer, len) {
                Some(slot) => {
                    self.want.remove(&index);
                    // A slot number a new connection reuses while the old one's request is
                    // still recorded: that chunk is wanted again, never forgotten.
                    if let Some((lost, _)) = self.inflight.insert((peer, slot), (index, now)) {
                        self.want.insert(lost);
                    }
                    asks.push(Ask { peer, slot, index });
                }
                None => {
                    self.resting
                        .insert(peer, (now + self.params.busy_backoff, true));
                }
            }
        }
        asks
    }

    /// The next request: the rarest wanted chunk (fewest neighbours announced it) that some
    /// source with a free slot holds, asked of the source with the fewest requests open. A
    /// source that announced nothing may hold anything; it is asked only for chunks no
    /// announcing source offers.
    fn choose(&self, sources: &[u64], holdings: &Holdings) -> Option<(u64, u32)> {
        let open = |peer: u64| self.inflight.keys().filter(|(p, _)| *p == peer).count();
        let usable: Vec<u64> = sources
            .iter()
            .copied()
            .filter(|p| !self.banned.contains(p) && self.params.strategy.may_fetch_from(*p))
            .collect();
        let sets: Vec<_> = usable
            .iter()
            .map(|&p| holdings.of(p, &self.shape.id))
            .collect();
        let free: Vec<(u64, usize, Option<&super::ChunkSet>)> = usable
            .iter()
            .zip(&sets)
            .filter(|(p, _)| !self.resting.contains_key(p))
            .map(|(&p, s)| (p, open(p), *s))
            .filter(|&(_, n, _)| n < self.params.per_peer)
            .collect();
        if free.is_empty() {
            return None;
        }
        // (unannounced, rarity, tie, requests open) ranks a candidate; lowest wins.
        let mut best: Option<(Rank, u64, u32)> = None;
        for &index in &self.want {
            let rarity = sets
                .iter()
                .filter(|s| s.is_some_and(|s| s.contains(index)))
                .count();
            // Ties between equally rare chunks differ from node to node, so neighbours fetch
            // different chunks and can then trade them.
            let tie = (u64::from(index) ^ self.me).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for &(peer, n, set) in &free {
                let unknown = match set.map(|s| s.contains(index)) {
                    Some(false) => continue,
                    Some(true) => false,
                    None => true,
                };
                let key = (unknown, rarity, tie, n);
                if best.as_ref().is_none_or(|b| key < b.0) {
                    best = Some((key, peer, index));
                }
            }
        }
        best.map(|(_, peer, index)| (peer, index))
    }

    /// The chunk asked of `peer` into `slot` arrived: its index, if this fetch asked for it.
    /// The caller verifies and writes it, then calls [`ChunkFetch::refused`] if it did not
    /// verify. It is charged to the download cap here.
    pub fn arrived(
        &mut self,
        peer: u64,
        slot: u32,
        len: usize,
        now: Nanos,
        download: &mut RateLimit,
    ) -> Option<u32> {
        let (index, _) = self.inflight.remove(&(peer, slot))?;
        download.charge(len as u64, now);
        Some(index)
    }

    /// Chunk `index` from `peer` did not match the manifest: it is asked again elsewhere and
    /// `peer` is dropped as a source. Returns whether `peer` was dropped only now.
    pub fn refused(&mut self, peer: u64, index: u32) -> bool {
        self.want.insert(index);
        self.banned.insert(peer)
    }

    /// `peer` had nothing for the request in `slot` (or, `busy`, no uplink to spare): the chunk
    /// is wanted again and the neighbour rests. Returns whether the request was this fetch's.
    pub fn declined(&mut self, peer: u64, slot: u32, busy: bool, now: Nanos) -> bool {
        let Some((index, _)) = self.inflight.remove(&(peer, slot)) else {
            return false;
        };
        self.want.insert(index);
        let backoff = if busy {
            self.params.busy_backoff
        } else {
            self.params.not_yet_backoff
        };
        self.resting.insert(peer, (now + backoff, busy));
        true
    }

    /// `peer` announced what it holds: if it rests because it had nothing, it may be asked
    /// again at once (one resting because its uplink was busy keeps resting: it announces
    /// often while it receives).
    pub fn heard_from(&mut self, peer: u64) {
        if self.resting.get(&peer).is_some_and(|&(_, busy)| !busy) {
            self.resting.remove(&peer);
        }
    }

    /// `peer` went away: what it owed is asked of others.
    pub fn peer_down(&mut self, peer: u64) {
        let lost: Vec<(u64, u32)> = self
            .inflight
            .keys()
            .filter(|(p, _)| *p == peer)
            .copied()
            .collect();
        for k in lost {
            if let Some((i, _)) = self.inflight.remove(&k) {
                self.want.insert(i);
            }
        }
    }
}
