//! The cluster view `entente status` reports: `Conv(P, e)` over the gossiped peer graph, and
//! how long ago each node was last heard of.

use super::Agent;
use entente_api::NodeStatus;
use entente_proto::{Epoch, NodeId};
use std::collections::BTreeMap;

/// What this node knows of the cluster at one epoch.
pub(super) struct View {
    /// `Conv(P, epoch)` holds as far as this node knows (see [`entente_api::Status`]).
    pub converged: bool,
    /// Live links of `P` committed at the epoch.
    pub committed: u64,
    /// Links of `P`, retired included.
    pub total: u64,
    /// Retired links of `P`.
    pub retired: u64,
    /// The oldest report the view relies on, in milliseconds.
    pub age_ms: u64,
    /// Every node heard of, sorted.
    pub nodes: Vec<NodeStatus>,
}

impl Agent {
    /// The cluster view at `epoch`; `incompatible`: a live link of this node is unusable.
    pub(super) fn view(&self, epoch: Epoch, incompatible: bool) -> View {
        let summary = self.node.summary();
        let me = NodeId(self.cfg.node_id);
        let now = self.now();
        let stale_ms = self.cfg.status.stale_after_s.saturating_mul(1000);
        let census = summary.census(epoch);
        let live = summary.live_nodes();
        let mut nodes: BTreeMap<u64, NodeStatus> = BTreeMap::new();
        let known = summary
            .phases()
            .map(|(n, _)| n)
            .chain(summary.graph().into_iter().flat_map(|(a, b)| [a, b]))
            .chain(std::iter::once(me));
        for n in known {
            let seen_ms = if n == me {
                0
            } else {
                now.saturating_sub(self.node.last_heard(n).unwrap_or(0)) / 1_000_000
            };
            let p = summary.phase(n);
            nodes.entry(n.0).or_insert(NodeStatus {
                node: n.0,
                epoch: p.map_or(0, |p| p.epoch.0),
                phase: p.map_or_else(|| "unknown".into(), |p| p.phase.name().to_owned()),
                incarnation: p.map_or(0, |p| p.version.incarnation),
                last_seen_ms: seen_ms,
                stale: seen_ms > stale_ms,
            });
        }
        let relied: Vec<&NodeStatus> = live.iter().filter_map(|n| nodes.get(&n.0)).collect();
        let age_ms = relied.iter().map(|n| n.last_seen_ms).max().unwrap_or(0);
        let stale = relied.iter().any(|n| n.stale);
        let reported = summary.phases().count() as u64;
        let enough = self.cfg.status.expected_nodes.is_none_or(|e| reported >= e);
        View {
            converged: epoch.0 > 0
                && census.links > 0
                && census.converged()
                && !incompatible
                && !stale
                && enough,
            committed: census.committed as u64,
            total: census.links as u64,
            retired: census.retired as u64,
            age_ms,
            nodes: nodes.into_values().collect(),
        }
    }
}
