//! Image distribution: how long until every host holds a firmware image, for the strategy the
//! agents use (a pipelined swarm over the peer overlay) and for the usual baseline (every host
//! pulls the image from one server).
//!
//! Each simulated host runs the agent's own fan-out policy (`entente_node::fanout`: rarest
//! chunk first, of the neighbour with the fewest requests open, two per neighbour and two in
//! all, each chunk forwarded about once while the uplink has a queue, BUSY otherwise) over
//! links of a given bandwidth and latency ([`hosts`]).

mod hosts;

use crate::topology::random_regular;
use entente_proto::types::SeededRng;
use serde::Serialize;

/// How the image travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Every host fetches chunks from any neighbour that holds them and serves what it holds.
    Pipeline,
    /// Every host fetches the whole image from the seed, which alone serves.
    PullOne,
}

impl Strategy {
    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pipeline => "pipeline",
            Strategy::PullOne => "pull-one",
        }
    }

    /// Parses `pipeline` or `pull-one`.
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "pipeline" => Some(Strategy::Pipeline),
            "pull-one" => Some(Strategy::PullOne),
            _ => None,
        }
    }
}

/// One image-distribution run.
#[derive(Clone, Debug, PartialEq)]
pub struct FanoutConfig {
    /// Hosts, the seed included.
    pub hosts: usize,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Chunk size in bytes (the manifest's).
    pub chunk_bytes: u64,
    /// Per-host bandwidth, each direction, bytes per second.
    pub bandwidth: f64,
    /// One-way latency of a transfer, seconds.
    pub latency: f64,
    /// The strategy.
    pub strategy: Strategy,
    /// Neighbours per host in the overlay (pipeline).
    pub degree: usize,
    /// Seed of the overlay and of tie breaks.
    pub seed: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    /// The strategy.
    pub strategy: Strategy,
    /// Hosts.
    pub hosts: usize,
    /// Image size, MiB.
    pub image_mb: f64,
    /// Chunks per image.
    pub chunks: u32,
    /// Time until every host holds the whole image, milliseconds.
    pub image_all_hosts_ms: f64,
    /// Hops from the seed to the farthest host over the overlay used.
    pub depth: u32,
    /// S/B + depth × (chunk/B + latency): no strategy over this overlay can be faster.
    pub lower_bound_ms: f64,
    /// `image_all_hosts_ms / lower_bound_ms`.
    pub ratio_to_bound: f64,
    /// Most bytes one host sent, as a multiple of the image size.
    pub max_upload_images: f64,
    /// Chunk transfers simulated.
    pub transfers: u64,
}

/// Runs one distribution. Host 0 is the seed and holds the image at time 0.
pub fn run(cfg: &FanoutConfig) -> FanoutReport {
    let chunks = cfg.image_bytes.div_ceil(cfg.chunk_bytes).max(1) as u32;
    let adj = overlay(cfg);
    let depth = eccentricity(&adj, 0);
    let out = hosts::simulate(cfg, &adj, chunks);
    let b = cfg.bandwidth;
    let bound = cfg.image_bytes as f64 / b
        + f64::from(depth) * (cfg.chunk_bytes.min(cfg.image_bytes) as f64 / b + cfg.latency);
    let ms = out.all_hosts_s * 1e3;
    FanoutReport {
        strategy: cfg.strategy,
        hosts: cfg.hosts,
        image_mb: cfg.image_bytes as f64 / f64::from(1 << 20),
        chunks,
        image_all_hosts_ms: ms,
        depth,
        lower_bound_ms: bound * 1e3,
        ratio_to_bound: ms / (bound * 1e3),
        max_upload_images: out.max_upload_bytes as f64 / cfg.image_bytes as f64,
        transfers: out.transfers,
    }
}

/// The graph the image travels over: a random regular overlay of hosts (pipeline) or a star
/// around the seed (pull-one). Neighbour lists are sorted.
fn overlay(cfg: &FanoutConfig) -> Vec<Vec<u32>> {
    let n = cfg.hosts;
    let mut adj = vec![Vec::new(); n];
    let edges: Vec<(u32, u32)> = match cfg.strategy {
        Strategy::PullOne => (1..n as u32).map(|h| (0, h)).collect(),
        Strategy::Pipeline if n <= cfg.degree + 1 => (0..n as u32)
            .flat_map(|a| (a + 1..n as u32).map(move |b| (a, b)))
            .collect(),
        Strategy::Pipeline => {
            let mut rng = SeededRng::new(cfg.seed ^ 0xfa17_0000);
            random_regular(n, cfg.degree, &mut rng)
        }
    };
    for (a, b) in edges {
        if a != b {
            adj[a as usize].push(b);
            adj[b as usize].push(a);
        }
    }
    for v in &mut adj {
        v.sort_unstable();
        v.dedup();
    }
    adj
}

/// Hops from `root` to the farthest reachable host.
fn eccentricity(adj: &[Vec<u32>], root: usize) -> u32 {
    let mut dist = vec![u32::MAX; adj.len()];
    dist[root] = 0;
    let mut queue = std::collections::VecDeque::from([root]);
    let mut far = 0;
    while let Some(v) = queue.pop_front() {
        far = far.max(dist[v]);
        for &w in &adj[v] {
            if dist[w as usize] == u32::MAX {
                dist[w as usize] = dist[v] + 1;
                queue.push_back(w as usize);
            }
        }
    }
    far
}

#[cfg(test)]
mod tests;
