//! The chunk-level event loop of an image-distribution run.

use super::{FanoutConfig, PER_PEER, SERVE_QUOTA, WINDOW};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What the loop measured.
pub(super) struct Outcome {
    /// When the last host completed, seconds.
    pub all_hosts_s: f64,
    /// Most bytes one host sent.
    pub max_upload_bytes: u64,
    /// Chunk transfers.
    pub transfers: u64,
}

/// A chunk arriving at `host` from `from` (a retry of `host` when `chunk` is `u32::MAX`),
/// ordered by time (seconds as ordered bits: every
/// time is a non-negative float, whose bit patterns sort like the values).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    at_bits: u64,
    host: u32,
    from: u32,
    chunk: u32,
}

struct State<'a> {
    adj: &'a [Vec<u32>],
    words: usize,
    chunks: u32,
    /// Chunks each host holds (bitset, `words` per host).
    has: Vec<u64>,
    /// Chunks each host asked for and waits on.
    pending: Vec<u64>,
    /// Per host and chunk: neighbours holding it (the rarity the host sees).
    seen: Vec<u16>,
    /// Per host and neighbour position: requests in flight to that neighbour.
    inflight: Vec<Vec<u8>>,
    /// Per host: a retry is scheduled.
    retry_armed: Vec<bool>,
    /// Per host: requests in flight to all neighbours.
    outstanding: Vec<u8>,
    held: Vec<u32>,
    /// Per host and chunk: times the host sent it.
    served: Vec<u32>,
    uplink_free: Vec<f64>,
    downlink_free: Vec<f64>,
    uploaded: Vec<u64>,
    chunk_len: Vec<u64>,
    bandwidth: f64,
    latency: f64,
    /// Whether hosts hold back chunks they already forwarded (pipeline only).
    quota: bool,
    events: BinaryHeap<Reverse<Arrival>>,
    transfers: u64,
}

impl State<'_> {
    fn holds(&self, h: usize, c: u32) -> bool {
        self.has[h * self.words + (c / 64) as usize] & (1 << (c % 64)) != 0
    }

    fn waits(&self, h: usize, c: u32) -> bool {
        self.pending[h * self.words + (c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// The rarest chunk `from` offers that `host` neither holds nor waits on. A host offers a
    /// chunk it has sent fewer than [`SERVE_QUOTA`] times, and any chunk while its uplink idles.
    fn pick(&self, now: f64, host: usize, from: usize) -> Option<u32> {
        let idle = self.uplink_free[from] <= now;
        let mut best: Option<(u16, u32, u32)> = None;
        for w in 0..self.words {
            let mut cand = self.has[from * self.words + w]
                & !self.has[host * self.words + w]
                & !self.pending[host * self.words + w];
            while cand != 0 {
                let c = w as u32 * 64 + cand.trailing_zeros();
                cand &= cand - 1;
                if self.quota
                    && !idle
                    && self.served[from * self.chunks as usize + c as usize] >= SERVE_QUOTA
                {
                    continue;
                }
                let rarity = self.seen[host * self.chunks as usize + c as usize];
                // Ties go to a per-host pseudo-random order so neighbours fetch different chunks.
                let tie = (c ^ (host as u32).wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
                if best.is_none_or(|(r, t, _)| (rarity, tie) < (r, t)) {
                    best = Some((rarity, tie, c));
                }
            }
        }
        best.map(|(_, _, c)| c)
    }

    /// Fills the host's request window: each request goes to the neighbour whose uplink frees
    /// first among those holding a chunk the host lacks, for the rarest such chunk it holds.
    fn fill(&mut self, now: f64, host: usize) {
        while self.outstanding[host] < WINDOW && self.held[host] < self.chunks {
            let mut best: Option<(f64, usize, u32)> = None;
            for slot in 0..self.adj[host].len() {
                let from = self.adj[host][slot] as usize;
                if self.inflight[host][slot] >= PER_PEER {
                    continue;
                }
                let free = self.uplink_free[from].max(now);
                if best.is_some_and(|(f, _, _)| f <= free) {
                    continue;
                }
                if let Some(c) = self.pick(now, host, from) {
                    best = Some((free, slot, c));
                }
            }
            let Some((_, slot, c)) = best else {
                self.retry_when_idle(now, host);
                return;
            };
            self.request(now, host, slot, c);
        }
    }

    /// A host with nothing in flight and nothing offered to it asks again when the first
    /// neighbour's uplink idles (idle hosts offer every chunk they hold).
    fn retry_when_idle(&mut self, now: f64, host: usize) {
        if self.outstanding[host] > 0 || self.retry_armed[host] {
            return;
        }
        let at = self.adj[host]
            .iter()
            .map(|&m| self.uplink_free[m as usize])
            .filter(|&t| t > now)
            .fold(f64::INFINITY, f64::min);
        if at.is_finite() {
            self.retry_armed[host] = true;
            self.events.push(Reverse(Arrival {
                at_bits: at.to_bits(),
                host: host as u32,
                from: u32::MAX,
                chunk: u32::MAX,
            }));
        }
    }

    fn request(&mut self, now: f64, host: usize, slot: usize, c: u32) {
        let from = self.adj[host][slot] as usize;
        let len = self.chunk_len[c as usize];
        let wire = len as f64 / self.bandwidth;
        let start = (now + self.latency).max(self.uplink_free[from]);
        self.uplink_free[from] = start + wire;
        self.downlink_free[host] = self.downlink_free[host].max(start) + wire;
        let done = self.uplink_free[from].max(self.downlink_free[host]) + self.latency;
        self.pending[host * self.words + (c / 64) as usize] |= 1 << (c % 64);
        self.inflight[host][slot] += 1;
        self.outstanding[host] += 1;
        self.uploaded[from] += len;
        self.served[from * self.chunks as usize + c as usize] += 1;
        self.transfers += 1;
        self.events.push(Reverse(Arrival {
            at_bits: done.to_bits(),
            host: host as u32,
            from: from as u32,
            chunk: c,
        }));
    }

    fn arrive(&mut self, now: f64, a: &Arrival) {
        let (h, c) = (a.host as usize, a.chunk);
        let bit = 1u64 << (c % 64);
        self.pending[h * self.words + (c / 64) as usize] &= !bit;
        self.has[h * self.words + (c / 64) as usize] |= bit;
        self.held[h] += 1;
        let slot = self.adj[h]
            .binary_search(&a.from)
            .expect("a neighbour sent it");
        self.inflight[h][slot] -= 1;
        self.outstanding[h] -= 1;
        // Neighbours learn that `h` holds `c`; those with room in their window ask again.
        for i in 0..self.adj[h].len() {
            let m = self.adj[h][i] as usize;
            self.seen[m * self.chunks as usize + c as usize] += 1;
            if self.outstanding[m] < WINDOW && !self.holds(m, c) && !self.waits(m, c) {
                self.fill(now, m);
            }
        }
        self.fill(now, h);
    }
}

/// Runs the loop: host 0 holds every chunk at time 0; the others fetch until all hold them.
pub(super) fn simulate(cfg: &FanoutConfig, adj: &[Vec<u32>], chunks: u32) -> Outcome {
    let n = adj.len();
    let words = chunks.div_ceil(64) as usize;
    let chunk_len = (0..chunks)
        .map(|i| {
            let start = u64::from(i) * cfg.chunk_bytes;
            cfg.chunk_bytes
                .min(cfg.image_bytes.saturating_sub(start))
                .max(1)
        })
        .collect();
    let mut st = State {
        adj,
        words,
        chunks,
        has: vec![0; n * words],
        pending: vec![0; n * words],
        seen: vec![0; n * chunks as usize],
        inflight: adj.iter().map(|v| vec![0; v.len()]).collect(),
        outstanding: vec![0; n],
        retry_armed: vec![false; n],
        held: vec![0; n],
        served: vec![0; n * chunks as usize],
        uplink_free: vec![0.0; n],
        downlink_free: vec![0.0; n],
        uploaded: vec![0; n],
        chunk_len,
        bandwidth: cfg.bandwidth,
        latency: cfg.latency,
        quota: cfg.strategy == super::Strategy::Pipeline,
        events: BinaryHeap::new(),
        transfers: 0,
    };
    for c in 0..chunks {
        st.has[(c / 64) as usize] |= 1 << (c % 64);
    }
    st.held[0] = chunks;
    for &m in &adj[0] {
        for c in 0..chunks {
            st.seen[m as usize * chunks as usize + c as usize] += 1;
        }
    }
    for &m in &adj[0] {
        st.fill(0.0, m as usize);
    }
    let mut last = 0.0f64;
    while let Some(Reverse(a)) = st.events.pop() {
        let now = f64::from_bits(a.at_bits);
        if a.chunk == u32::MAX {
            st.retry_armed[a.host as usize] = false;
            st.fill(now, a.host as usize);
            continue;
        }
        last = last.max(now);
        st.arrive(now, &a);
    }
    let unreached = st.held.iter().any(|&h| h < chunks);
    Outcome {
        all_hosts_s: if unreached { f64::INFINITY } else { last },
        max_upload_bytes: st.uploaded.iter().copied().max().unwrap_or(0),
        transfers: st.transfers,
    }
}
