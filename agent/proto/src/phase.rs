//! Node phases of a campaign and their versions.

use crate::types::Epoch;

/// Where a node stands in the campaign for one epoch (docs/protocol.md, "Node phases").
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Phase {
    /// No campaign known.
    #[default]
    Idle,
    /// Campaign known; image not yet staged.
    Announced,
    /// Image fetched, verified chunk by chunk, durable in the inactive bank.
    Staged,
    /// Running firmware speaks the campaign epoch (and the one before).
    Activated,
    /// Every live link of the node committed the epoch.
    Converged,
    /// Old semantics retired; the old bank may be overwritten.
    Finalized,
    /// Unstaged before activation.
    Aborted,
    /// Went back to the previous bank before any link moved.
    RolledBack,
    /// Operator abort: no new activations, committed links stay.
    Halted,
}

impl Phase {
    /// Every phase, in wire order.
    pub const ALL: [Phase; 9] = [
        Phase::Idle,
        Phase::Announced,
        Phase::Staged,
        Phase::Activated,
        Phase::Converged,
        Phase::Finalized,
        Phase::Aborted,
        Phase::RolledBack,
        Phase::Halted,
    ];

    /// Lower-case name used in status output.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Announced => "announced",
            Phase::Staged => "staged",
            Phase::Activated => "activated",
            Phase::Converged => "converged",
            Phase::Finalized => "finalized",
            Phase::Aborted => "aborted",
            Phase::RolledBack => "rolled-back",
            Phase::Halted => "halted",
        }
    }

    /// Whether a campaign in this phase is at rest, so that a newer campaign may follow.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Phase::Idle
                | Phase::Converged
                | Phase::Finalized
                | Phase::Halted
                | Phase::Aborted
                | Phase::RolledBack
        )
    }

    /// Whether the running firmware speaks the campaign epoch in this phase.
    pub fn is_activated(self) -> bool {
        matches!(self, Phase::Activated | Phase::Converged | Phase::Finalized)
    }
}

/// Orders a node's phase reports: phases can move back, so each carries a version.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Version {
    /// Bumped on every start of the agent whose disk state was lost.
    pub incarnation: u32,
    /// Bumped on every phase change within an incarnation.
    pub counter: u32,
}

/// A phase report: the phase, the campaign epoch it refers to, and its version.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PhaseEntry {
    /// Campaign epoch.
    pub epoch: Epoch,
    /// The phase.
    pub phase: Phase,
    /// Version; the highest wins in a merge.
    pub version: Version,
}
