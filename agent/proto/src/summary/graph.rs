//! `Conv(P, e)` over the peer graph the nodes gossip (their declared and reported links).

use std::collections::BTreeSet;

use super::{pair, reaches, Summary};
use crate::types::{Epoch, NodeId};

/// How the links of the gossiped graph stand at an epoch.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Census {
    /// Links of the graph (unordered pairs), retired ones included.
    pub links: usize,
    /// Live links whose two ends both report the epoch or later. A retired link is never
    /// counted here, whatever its ends report.
    pub committed: usize,
    /// Retired links (outside the live graph).
    pub retired: usize,
}

impl Census {
    /// `Conv(P, e)`: every link of the graph is committed or retired.
    pub fn converged(&self) -> bool {
        self.committed + self.retired == self.links
    }
}

impl Summary {
    /// The peer graph `P` as this replica knows it: every link some node declared or reported,
    /// as unordered pairs (lower id first), sorted. O(entries).
    pub fn graph(&self) -> Vec<(NodeId, NodeId)> {
        let set: BTreeSet<(NodeId, NodeId)> =
            self.reports.keys().map(|&(a, b)| pair(a, b)).collect();
        set.into_iter().collect()
    }

    /// Nodes with at least one live (not retired) link in the gossiped graph, sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        let set: BTreeSet<NodeId> = self
            .graph()
            .into_iter()
            .filter(|&(a, b)| !self.is_retired(a, b))
            .flat_map(|(a, b)| [a, b])
            .collect();
        set.into_iter().collect()
    }

    /// How the gossiped graph's links stand at `epoch`. O(entries).
    pub fn census(&self, epoch: Epoch) -> Census {
        let mut c = Census::default();
        for (a, b) in self.graph() {
            c.links += 1;
            if self.is_retired(a, b) {
                c.retired += 1;
            } else if reaches(self.report(a, b), self.report(b, a), epoch) {
                c.committed += 1;
            }
        }
        c
    }

    /// `Conv(P, epoch)` over the gossiped graph `P`: every link committed `epoch` or retired.
    pub fn conv_graph(&self, epoch: Epoch) -> bool {
        self.census(epoch).converged()
    }
}
