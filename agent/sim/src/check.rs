//! The seven safety invariants, checked incrementally as the run touches state, and the
//! liveness properties checked once the network healed.

use entente_proto::types::Nanos;
use serde::Serialize;

/// A safety invariant of the protocol.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Invariant {
    /// Every data message is interpreted under the epoch its sender used.
    Agreement,
    /// Every live link's epoch is inside the window of the firmware at both ends.
    Compatibility,
    /// Committed link epochs never decrease; no rollback after a link committed.
    Monotonicity,
    /// After a restart, a node never contradicts what it persisted and sent a message about.
    Durability,
    /// Only an image whose digest matches the signed manifest is activated.
    Integrity,
    /// No node has more than `max_unavailable` neighbours in a disruptive activation, nor is in
    /// one itself while a neighbour is.
    Budget,
    /// No activation starts at a node after an operator's abort of its campaign reached it,
    /// until a later resume reached it.
    Abort,
}

impl Invariant {
    /// Every invariant, in report order.
    pub const ALL: [Invariant; 7] = [
        Invariant::Agreement,
        Invariant::Compatibility,
        Invariant::Monotonicity,
        Invariant::Durability,
        Invariant::Integrity,
        Invariant::Budget,
        Invariant::Abort,
    ];
    /// Report key.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::Agreement => "agreement",
            Invariant::Compatibility => "compatibility",
            Invariant::Monotonicity => "monotonicity",
            Invariant::Durability => "durability",
            Invariant::Integrity => "integrity",
            Invariant::Budget => "budget",
            Invariant::Abort => "abort",
        }
    }
}

/// The first violation of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// Event number at which it happened.
    pub step: u64,
    /// Simulated time, milliseconds.
    pub time_ms: f64,
    /// What exactly.
    pub detail: String,
}

/// Counts violations per invariant and keeps the first one.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    counts: [u64; 7],
    /// The first violation seen.
    pub first: Option<Violation>,
}

impl Checker {
    /// Records a violation.
    pub fn violate(
        &mut self,
        inv: Invariant,
        step: u64,
        now: Nanos,
        detail: impl FnOnce() -> String,
    ) {
        self.counts[inv as usize] += 1;
        if self.first.is_none() {
            self.first = Some(Violation {
                invariant: inv.name(),
                step,
                time_ms: now as f64 / 1e6,
                detail: detail(),
            });
        }
    }
    /// Counts `n` more violations of `inv` (beyond the first, already recorded).
    pub fn add(&mut self, inv: Invariant, n: u64) {
        self.counts[inv as usize] += n;
    }
    /// Violations of one invariant.
    pub fn count(&self, inv: Invariant) -> u64 {
        self.counts[inv as usize]
    }
    /// All violations.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A liveness property, checked once the fault phase is over: a run that breaks it fails
/// (`Report::failure` says how, `Report::liveness` names it).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Every live link commits within 3 RTT + 1 s of the latest of the heal, the last
    /// activation and the last restart.
    Convergence,
    /// A campaign the operator aborted somewhere converges after the operator's final resume
    /// (at the heal), within the same bound.
    Resume,
}

impl Liveness {
    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Convergence => "convergence",
            Liveness::Resume => "resume",
        }
    }
}
