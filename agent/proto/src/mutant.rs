//! Deliberate protocol bugs, compiled only with the `mutants` feature, so that tests can prove
//! the simulator's checkers and the model checker catch each of them.

/// A mutation of the protocol or its driver.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// The responder gives up (aborts) after it reflected, instead of asking.
    ResponderAbortsAfterReflect,
    /// The responder keeps sending data while it reflects.
    ResponderDoesNotPause,
    /// The initiator sends new-epoch data on a connection before COMMIT.
    DataBeforeCommit,
    /// The initiator commits on a REFLECT / QUERY carrying another nonce.
    CommitOnOtherNonce,
    /// The responder commits on evidence that arrived another way (gossip), not COMMIT.
    CommitOnOtherPath,
    /// The driver sends messages before the state they depend on is durable.
    SendBeforePersist,
    /// An end sends new-epoch data (probes) before its device acknowledged the link's epoch.
    ProbeBeforeDeviceAck,
    /// The responder reflects without checking that its device can take the epoch.
    ReflectWithoutDeviceCheck,
    /// A node about to activate keeps granting leases (no own lease in its acquisition order):
    /// two neighbours whose requests cross are both granted and go down together.
    GrantWhileLeasing,
    /// The initiator takes a REFLECT or QUERY of the epoch it committed (it hears its
    /// responder) for the COMMIT_ACK (its responder heard the COMMIT), and sends data at the
    /// new epoch: under a one-way partition the responder never got the COMMIT.
    AckOnHearingPeer,
    /// A staged node, about to activate, takes no notice of an abort from a neighbour (as if an
    /// abort stopped staging only): it neither halts nor passes the abort on, and activates
    /// once its leases come.
    ActivateAfterAbort,
    /// A node applies a resume only where the operator gave it: one from a neighbour is
    /// dropped (not applied, not passed on), so a halted campaign stays halted elsewhere.
    ResumeNotPassedOn,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 12] = [
        Mutant::ResponderAbortsAfterReflect,
        Mutant::ResponderDoesNotPause,
        Mutant::DataBeforeCommit,
        Mutant::CommitOnOtherNonce,
        Mutant::CommitOnOtherPath,
        Mutant::SendBeforePersist,
        Mutant::ProbeBeforeDeviceAck,
        Mutant::ReflectWithoutDeviceCheck,
        Mutant::GrantWhileLeasing,
        Mutant::AckOnHearingPeer,
        Mutant::ActivateAfterAbort,
        Mutant::ResumeNotPassedOn,
    ];
}
