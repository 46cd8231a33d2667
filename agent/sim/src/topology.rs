//! Peer graphs: ring, leaf-spine fat-tree, random regular.

use crate::config::{SimConfig, TopologyKind};
use entente_proto::types::SeededRng;
use entente_proto::Rng;

/// A built peer graph. Node indices are `0..nodes`; hosts come first.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Nodes, switches included.
    pub nodes: usize,
    /// Hosts (the first `hosts` indices).
    pub hosts: usize,
    /// Links as (lower index, higher index), sorted, no duplicates.
    pub links: Vec<(u32, u32)>,
    /// Per node: (neighbour, link index), sorted by neighbour.
    pub adj: Vec<Vec<(u32, u32)>>,
}

impl Topology {
    /// Builds the graph the options describe (random graphs draw from `rng`).
    pub fn build(cfg: &SimConfig, rng: &mut SeededRng) -> Topology {
        let (nodes, edges) = match cfg.topology {
            TopologyKind::Ring => (cfg.nodes, ring(cfg.nodes)),
            TopologyKind::FatTree => fat_tree(cfg.nodes, cfg.radix),
            TopologyKind::Random => (cfg.nodes, random_regular(cfg.nodes, cfg.degree, rng)),
        };
        Topology::from_edges(nodes, cfg.nodes, edges)
    }

    /// A graph from an edge list (normalised, deduplicated).
    pub fn from_edges(nodes: usize, hosts: usize, edges: Vec<(u32, u32)>) -> Topology {
        let mut links: Vec<(u32, u32)> = edges
            .into_iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect();
        links.sort_unstable();
        links.dedup();
        let mut adj = vec![Vec::new(); nodes];
        for (i, &(a, b)) in links.iter().enumerate() {
            adj[a as usize].push((b, i as u32));
            adj[b as usize].push((a, i as u32));
        }
        for v in &mut adj {
            v.sort_unstable();
        }
        Topology {
            nodes,
            hosts,
            links,
            adj,
        }
    }

    /// Parent of every node on a breadth-first tree rooted at `root` (`None` for the root and
    /// for nodes it cannot reach).
    pub fn bfs_parents(&self, root: usize) -> Vec<Option<u32>> {
        let mut parent = vec![None; self.nodes];
        let mut seen = vec![false; self.nodes];
        let mut queue = std::collections::VecDeque::from([root]);
        seen[root] = true;
        while let Some(v) = queue.pop_front() {
            for &(w, _) in &self.adj[v] {
                if !seen[w as usize] {
                    seen[w as usize] = true;
                    parent[w as usize] = Some(v as u32);
                    queue.push_back(w as usize);
                }
            }
        }
        parent
    }
}

fn ring(n: usize) -> Vec<(u32, u32)> {
    (0..n).map(|i| (i as u32, ((i + 1) % n) as u32)).collect()
}

/// Leaf-spine: `radix / 2` hosts per leaf; every leaf connects to every spine; `radix / 2`
/// spines (fewer when there are fewer leaves; none for a single leaf).
fn fat_tree(hosts: usize, radix: usize) -> (usize, Vec<(u32, u32)>) {
    let per_leaf = (radix / 2).max(1);
    let leaves = hosts.div_ceil(per_leaf);
    let spines = if leaves <= 1 {
        0
    } else {
        (radix / 2).min(leaves.max(2))
    };
    let mut edges = Vec::with_capacity(hosts + leaves * spines);
    for h in 0..hosts {
        edges.push((h as u32, (hosts + h / per_leaf) as u32));
    }
    for l in 0..leaves {
        for s in 0..spines {
            edges.push(((hosts + l) as u32, (hosts + leaves + s) as u32));
        }
    }
    (hosts + leaves + spines, edges)
}

/// A random `d`-regular graph: a ring lattice, then many degree-preserving double-edge swaps.
pub(crate) fn random_regular(n: usize, d: usize, rng: &mut SeededRng) -> Vec<(u32, u32)> {
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(n * d / 2);
    for i in 0..n {
        for k in 1..=d / 2 {
            edges.push((i as u32, ((i + k) % n) as u32));
        }
        if d % 2 == 1 && i < n / 2 {
            edges.push((i as u32, (i + n / 2) as u32));
        }
    }
    let norm = |a: u32, b: u32| (a.min(b), a.max(b));
    let mut set: std::collections::HashSet<(u32, u32)> =
        edges.iter().map(|&(a, b)| norm(a, b)).collect();
    let swaps = edges.len() * 10;
    for _ in 0..swaps {
        let i = rng.below(edges.len() as u64) as usize;
        let j = rng.below(edges.len() as u64) as usize;
        let ((a, b), (c, e)) = (edges[i], edges[j]);
        if i == j || a == c || a == e || b == c || b == e {
            continue;
        }
        if set.contains(&norm(a, e)) || set.contains(&norm(c, b)) {
            continue;
        }
        set.remove(&norm(a, b));
        set.remove(&norm(c, e));
        set.insert(norm(a, e));
        set.insert(norm(c, b));
        edges[i] = (a, e);
        edges[j] = (c, b);
    }
    connect_components(n, &mut edges, rng);
    edges
}

/// Component label of every node.
fn components(n: usize, edges: &[(u32, u32)]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for &(a, b) in edges {
        let (ra, rb) = (find(&mut parent, a as usize), find(&mut parent, b as usize));
        parent[ra] = rb;
    }
    (0..n).map(|x| find(&mut parent, x)).collect()
}

/// Joins the components of a regular graph with degree-preserving swaps: an edge (a, b) of one
/// component and (c, d) of another become (a, c) and (b, d). A campaign must reach every node.
fn connect_components(n: usize, edges: &mut [(u32, u32)], rng: &mut SeededRng) {
    for _ in 0..10 * n + 100 {
        let comp = components(n, edges);
        let root = comp[0];
        let Some(j) = (0..edges.len()).find(|&j| comp[edges[j].0 as usize] != root) else {
            return;
        };
        let in_root: Vec<usize> = (0..edges.len())
            .filter(|&i| comp[edges[i].0 as usize] == root)
            .collect();
        if in_root.is_empty() {
            return;
        }
        let i = in_root[rng.below(in_root.len() as u64) as usize];
        let ((a, b), (c, d)) = (edges[i], edges[j]);
        edges[i] = (a, c);
        edges[j] = (b, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: TopologyKind, n: usize) -> SimConfig {
        SimConfig {
            topology: kind,
            nodes: n,
            ..SimConfig::default()
        }
    }

    #[test]
    fn ring_has_n_links() {
        let t = Topology::build(&cfg(TopologyKind::Ring, 5), &mut SeededRng::new(1));
        assert_eq!(t.links.len(), 5);
        assert!(t.adj.iter().all(|a| a.len() == 2));
    }

    #[test]
    fn fat_tree_counts() {
        let t = Topology::build(&cfg(TopologyKind::FatTree, 10_000), &mut SeededRng::new(1));
        // 16 hosts per leaf: 625 leaves, 16 spines.
        assert_eq!(t.nodes, 10_000 + 625 + 16);
        assert_eq!(t.links.len(), 10_000 + 625 * 16);
        let single = Topology::build(&cfg(TopologyKind::FatTree, 8), &mut SeededRng::new(1));
        assert_eq!((single.nodes, single.links.len()), (9, 8));
    }

    #[test]
    fn random_is_regular_and_simple() {
        let mut c = cfg(TopologyKind::Random, 50);
        c.degree = 5;
        let t = Topology::build(&c, &mut SeededRng::new(3));
        assert_eq!(t.links.len(), 125);
        assert!(t.adj.iter().all(|a| a.len() == 5));
    }

    #[test]
    fn random_graphs_are_connected() {
        for seed in 0..50 {
            let mut c = cfg(TopologyKind::Random, 40);
            c.degree = 2;
            let t = Topology::build(&c, &mut SeededRng::new(seed));
            assert!(t.adj.iter().all(|a| a.len() == 2), "seed {seed}");
            assert!(
                t.bfs_parents(0)[1..].iter().all(Option::is_some),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn bfs_reaches_everyone() {
        let t = Topology::build(&cfg(TopologyKind::FatTree, 100), &mut SeededRng::new(1));
        let p = t.bfs_parents(0);
        assert!(p[0].is_none());
        assert!(p[1..].iter().all(Option::is_some));
    }
}
