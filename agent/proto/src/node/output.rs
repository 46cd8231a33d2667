//! What a node asks its driver to do, and what it reports.

use crate::link::LinkState;
use crate::msg::{Campaign, Message};
use crate::phase::{Phase, PhaseEntry};
use crate::types::{Epoch, Nanos, NodeId, Window};

/// One instruction to the driver. Outputs must be carried out in order; a [`Output::Persist`]
/// must be durable before any later [`Output::Send`] is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this record durable (replacing the previous record with the same key).
    Persist(Record),
    /// Send to `to` on the connection of generation `conn`, the one the node last saw come up.
    /// The driver drops the message if that connection is no longer the current one: what the
    /// node decided for one connection (COMMIT sent on it, so new-epoch data may follow) must
    /// never travel on another.
    Send {
        /// Destination neighbour.
        to: NodeId,
        /// Generation of the connection the message belongs to.
        conn: u64,
        /// The message.
        msg: Message,
    },
    /// Call [`super::Node::handle_timer`] with `key` at or after `at` (earlier deadlines for the
    /// same key may be dropped: a stale timer does nothing).
    Timer {
        /// Deadline on the node's clock.
        at: Nanos,
        /// Which timer.
        key: TimerKey,
    },
    /// Fetch, verify chunk by chunk and durably stage the campaign's image, then call
    /// [`super::Node::staged`].
    Stage(Campaign),
    /// Run the drain hook (when disruptive), activate the staged image, run the health check,
    /// then call [`super::Node::activation_done`].
    Activate {
        /// Campaign epoch.
        epoch: Epoch,
        /// Whether traffic is disrupted (leases are held for the duration).
        disruptive: bool,
    },
    /// Apply `epoch` to the device's link to `peer` (`Device::set_link_epoch`), then report
    /// the outcome with [`Node::link_epoch_applied`](crate::Node::link_epoch_applied): data on
    /// the link, and the COMMIT or COMMIT_ACK that tells the peer, wait for it.
    SetLinkEpoch {
        /// Neighbour.
        peer: NodeId,
        /// New link epoch.
        epoch: Epoch,
    },
    /// Drain the node (the drain hook, with its deadline) before the disruptive activation of
    /// `epoch`, then report with [`Node::drain_done`](crate::Node::drain_done). Leases are
    /// asked for only after the drain, so a slow drain holds no neighbour's budget.
    Drain {
        /// The campaign epoch about to be activated.
        epoch: Epoch,
    },
    /// Make the device run the firmware it ran before the activation of `epoch` again (the
    /// other bank, or the previous image), then report with
    /// [`Node::rollback_done`](crate::Node::rollback_done) and the window it runs.
    RollBack {
        /// The campaign epoch rolled back.
        epoch: Epoch,
    },
    /// Ask the device whether it can take link epoch `epoch` (before this node proposes or
    /// reflects it), then report with
    /// [`Node::link_epoch_prepared`](crate::Node::link_epoch_prepared).
    PrepareLinkEpoch {
        /// The campaign epoch this node activated.
        epoch: Epoch,
    },
    /// Something an operator should see (logged, kept in history).
    Event(Event),
}

/// The durable records of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Node-level state.
    Node(NodeRecord),
    /// One end of one link.
    Link(NodeId, LinkState),
}

/// Node-level durable state.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeRecord {
    /// Current phase, its epoch and version.
    pub phase: PhaseEntry,
    /// The campaign in progress or last completed.
    pub campaign: Option<Campaign>,
    /// The image of `campaign` is durably staged.
    pub staged: bool,
    /// Highest operator control counter applied.
    pub control_counter: u64,
    /// The last operator control applied, passed on to every neighbour that (re)connects so a
    /// node that was partitioned when it was flooded still learns it.
    pub last_control: Option<crate::msg::Control>,
    /// Operator paused the campaign.
    pub paused: bool,
    /// Links of this node retired now (kept with `marks`, which decides).
    pub retired: Vec<NodeId>,
    /// The last operator action (retire or restore) on each link of this node that had one,
    /// with its version. A record written before versions existed has none: its `retired`
    /// links are taken as retired by this node at version 1.
    #[cfg_attr(feature = "serde", serde(default))]
    pub marks: Vec<(NodeId, crate::msg::RetireMark)>,
}

/// Everything a node persisted, as the driver hands it back on restart.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Durable {
    /// Last node record, if any was ever written.
    pub node: Option<NodeRecord>,
    /// Last record of each link.
    pub links: Vec<(NodeId, LinkState)>,
}

impl Durable {
    /// Applies a persisted record (what a driver's storage does).
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Node(n) => self.node = Some(n.clone()),
            Record::Link(peer, s) => match self.links.iter_mut().find(|(p, _)| p == peer) {
                Some(slot) => slot.1 = *s,
                None => self.links.push((*peer, *s)),
            },
        }
    }
}

/// Timers a node arms.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimerKey {
    /// A link's retransmit / query / guard timer.
    Link(NodeId),
    /// Next gossip round.
    Gossip,
    /// Lease retry or renewal (holder side).
    Lease,
    /// Next lease expiry or end of quarantine (grantor side).
    Grant,
    /// Retry of a failed activation or staging.
    Retry,
    /// Retry of a link epoch the device failed to apply.
    Device(NodeId),
    /// Next heartbeat.
    Beat,
}

/// Operator-visible events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node's phase changed.
    Phase {
        /// Previous phase.
        from: Phase,
        /// New phase.
        to: Phase,
        /// Campaign epoch.
        epoch: Epoch,
    },
    /// A link committed an epoch.
    LinkCommitted {
        /// Neighbour.
        peer: NodeId,
        /// Epoch.
        epoch: Epoch,
    },
    /// A peer sent something a correct peer never sends here.
    ProtocolError {
        /// Neighbour.
        peer: NodeId,
        /// What.
        what: &'static str,
    },
    /// A message from a node that is not a configured neighbour.
    UnknownPeer(NodeId),
    /// A probe was received under another epoch than the one it was sent in.
    ProbeMismatch {
        /// Neighbour.
        peer: NodeId,
        /// Epoch the sender used.
        sent: Epoch,
        /// Epoch this end interpreted it under.
        interpreted: Epoch,
    },
    /// A campaign was refused.
    CampaignRefused {
        /// Its epoch.
        epoch: Epoch,
        /// Why.
        reason: &'static str,
    },
    /// A neighbour holds a report of this node far ahead of its own version (forged or
    /// corrupt): not followed.
    ImplausibleReport {
        /// The version the neighbour holds.
        seen: crate::phase::Version,
        /// This node's own.
        mine: crate::phase::Version,
    },
    /// LINK_HELLO agreed the link's committed epoch (a new link, or an end that lost or
    /// restored its state took the other end's).
    LinkAgreed {
        /// Neighbour.
        peer: NodeId,
        /// The committed epoch now persisted at this end.
        epoch: Epoch,
    },
    /// LINK_HELLO found that the epoch the state at one end holds is not in both windows (a
    /// store lost or restored at one end, and firmware that cannot speak the link's epoch): the
    /// link carries nothing until an operator acts.
    LinkIncompatible {
        /// Neighbour.
        peer: NodeId,
        /// The committed epoch one end holds.
        epoch: Epoch,
        /// This end's window.
        mine: Window,
        /// The peer's window.
        theirs: Window,
    },
    /// A neighbour holds a newer report of this node than this node itself (its store was lost
    /// or restored from an older copy), or the store at start was behind the link epochs the
    /// device holds (restored from an older copy, and treated as lost): this node takes a new
    /// incarnation above it and, having forgotten the leases it may have granted, grants none
    /// for `quiet_ms` (restart quarantine).
    Reincarnated {
        /// The new incarnation.
        incarnation: u32,
        /// How long the restart quarantine lasts.
        quiet_ms: u64,
    },
    /// Drained: the leases of the disruptive activation of `epoch` are asked for now.
    LeasesAsked {
        /// The campaign epoch.
        epoch: Epoch,
    },
    /// The drain before a disruptive activation failed or overran its deadline; it is tried
    /// again after the retry interval.
    DrainFailed {
        /// The campaign epoch.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// The device cannot take this epoch as a link epoch: this node proposes and reflects
    /// nothing for it.
    DeviceRefusedEpoch {
        /// The epoch.
        epoch: Epoch,
        /// The device's reason.
        reason: String,
    },
    /// The device failed to apply a committed link epoch: the commit stands, the device is
    /// asked again after `retry_ms`, and the link carries no data until it succeeds.
    DeviceLagging {
        /// Neighbour.
        peer: NodeId,
        /// The committed epoch.
        epoch: Epoch,
        /// The device's reason.
        reason: String,
        /// Wait before the next try.
        retry_ms: u64,
    },
    /// LINK_HELLO could not agree an epoch.
    HelloFailed {
        /// Neighbour.
        peer: NodeId,
        /// Windows.
        mine: Window,
        /// Peer window.
        theirs: Window,
    },
    /// Staging failed (corrupt chunk, disk); it is retried.
    StagingFailed {
        /// Campaign epoch.
        epoch: Epoch,
    },
    /// Activation or its health check failed; it is retried.
    ActivationFailed {
        /// Campaign epoch.
        epoch: Epoch,
    },
    /// An activation took longer than the profile's maximum.
    ActivationOverran {
        /// Campaign epoch.
        epoch: Epoch,
        /// How long it took.
        took: Nanos,
    },
    /// A lease was denied; the node waits and retries.
    LeaseDenied {
        /// Grantor.
        peer: NodeId,
    },
    /// Rollback refused because a link already reflected or committed the epoch.
    RollbackRefused {
        /// Campaign epoch.
        epoch: Epoch,
    },
    /// An activation completed but the node failed its health gate: it rolls back.
    Unhealthy {
        /// Campaign epoch.
        epoch: Epoch,
    },
    /// The device runs its previous firmware again.
    RolledBack {
        /// Campaign epoch rolled back.
        epoch: Epoch,
    },
    /// The device could not go back: it still runs the campaign's firmware (the node stays
    /// rolled back: no link moves to the epoch; a resume runs the campaign on).
    RollbackFailed {
        /// Campaign epoch.
        epoch: Epoch,
    },
}

/// Counters a node keeps (never reset while it runs).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Stale messages ignored.
    pub stale: u64,
    /// Protocol errors (messages a correct peer never sends).
    pub protocol_errors: u64,
    /// Probes interpreted under another epoch than the sender's.
    pub probe_mismatches: u64,
    /// Messages from unknown peers.
    pub unknown_peers: u64,
    /// Leases denied to this node.
    pub leases_denied: u64,
}
