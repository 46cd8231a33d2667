//! Protocol messages exchanged between the two ends of a link (typed form; see `wire` for bytes).

use crate::phase::PhaseEntry;
use crate::types::{Epoch, NodeId, Nonce, Window};

/// A SHA-256 digest (firmware image or manifest).
pub type Digest = [u8; 32];

/// Every message one agent sends another over a link connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// First message on every new connection: persisted link state, firmware window, activation.
    Hello(Hello),
    /// The sender's running firmware now speaks `epoch` (sent directly to every neighbour).
    Activated {
        /// Epoch the sender activated.
        epoch: Epoch,
    },
    /// A step of the link transaction (PROPOSE, REFLECT, COMMIT, COMMIT_ACK, ABORT, QUERY).
    Txn(Txn),
    /// Neighbour leases bounding disruption.
    Lease(Lease),
    /// A campaign announcement, flooded over the peer graph.
    Campaign(Campaign),
    /// An operator's campaign control (pause, resume, abort), flooded over the peer graph.
    Control(Control),
    /// State-based CRDT delta of the status summary.
    Gossip(GossipDelta),
    /// Acknowledges every gossip delta up to `upto` of the receiver's sequence.
    GossipAck {
        /// Highest delta sequence merged.
        upto: u64,
    },
    /// Epoch-tagged stand-in for data-plane traffic, interpreted under the receiver's link epoch.
    Probe {
        /// Epoch the sender's data would be encoded in.
        epoch: Epoch,
        /// Sender's probe counter on this link.
        seq: u64,
    },
}

/// LINK_HELLO: what one end knows of the link and of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The epochs the sender's running firmware speaks.
    pub window: Window,
    /// Highest epoch the sender has activated, if any.
    pub activated: Option<Epoch>,
    /// The sender's persisted state of this link; `None` when it has none (new link, wiped disk).
    pub link: Option<LinkSnapshot>,
    /// The newest version of the receiver's own phase report the sender holds: a receiver that
    /// lost its store learns from it an incarnation to outgrow.
    pub your_version: Option<crate::phase::Version>,
}

/// The persisted state of one end of a link, as carried by HELLO.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkSnapshot {
    /// Last committed epoch.
    pub committed: Epoch,
    /// Open transaction, if any.
    pub pending: Pending,
}

/// An open link transaction at one end.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Pending {
    /// No open transaction.
    #[default]
    None,
    /// Initiator proposed `committed + 1` with this nonce.
    Tentative(Nonce),
    /// Responder reflected `committed + 1` with this nonce and waits for the outcome.
    Reflecting(Nonce),
}

/// The kinds of link-transaction messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnKind {
    /// Initiator → responder: move to `epoch` with this nonce?
    Propose,
    /// Responder → initiator: yes, reflected (carries the responder's firmware digest).
    Reflect,
    /// Initiator → responder: decided; switch on receipt.
    Commit,
    /// Responder → initiator: switched.
    CommitAck,
    /// Either way: this nonce is dead.
    Abort,
    /// Responder → initiator: what became of this nonce?
    Query,
}

impl TxnKind {
    /// Every kind, in wire order.
    pub const ALL: [TxnKind; 6] = [
        TxnKind::Propose,
        TxnKind::Reflect,
        TxnKind::Commit,
        TxnKind::CommitAck,
        TxnKind::Abort,
        TxnKind::Query,
    ];
}

/// Why an end aborted or refused a proposal.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum AbortReason {
    /// No reason given (replies to stray messages).
    #[default]
    Unspecified,
    /// The responder has not activated the proposed epoch.
    NotActivated,
    /// The nonce is not the one the initiator has open.
    WrongNonce,
    /// The initiator gave up after its retransmissions.
    GaveUp,
    /// A local failure (device, storage) at the sender.
    LocalFailure,
    /// The sender restarted while the transaction was open.
    Restarted,
    /// The campaign is halted at the sender.
    Halted,
    /// The responder's device cannot take the proposed link epoch.
    DeviceRefused,
}

/// One link-transaction message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    /// Which step.
    pub kind: TxnKind,
    /// The epoch the transaction moves the link to.
    pub epoch: Epoch,
    /// The initiator's proposal counter.
    pub nonce: Nonce,
    /// REFLECT only: digest of the responder's running firmware (zero otherwise).
    pub digest: Digest,
    /// ABORT only: why (unspecified otherwise).
    pub reason: AbortReason,
}

impl Txn {
    /// A message of `kind` without digest or reason.
    pub fn new(kind: TxnKind, epoch: Epoch, nonce: Nonce) -> Txn {
        Txn {
            kind,
            epoch,
            nonce,
            digest: [0; 32],
            reason: AbortReason::Unspecified,
        }
    }
    /// An ABORT with its reason.
    pub fn abort(epoch: Epoch, nonce: Nonce, reason: AbortReason) -> Txn {
        Txn {
            reason,
            ..Txn::new(TxnKind::Abort, epoch, nonce)
        }
    }
}

/// Why a neighbour refused a lease.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Already `max_unavailable_neighbors` of the grantor's neighbours hold its grants.
    Budget,
    /// The grantor is itself activating.
    SelfActivating,
    /// The campaign is halted or paused at the grantor.
    Halted,
}

/// Neighbour-lease messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Ask for (or renew) a lease for a disruptive activation to `epoch`; `seq` is echoed back.
    Req {
        /// Campaign epoch.
        epoch: Epoch,
        /// Requester's counter, echoed in the answer.
        seq: u32,
    },
    /// Granted for `duration_ms`, measured on the grantor's clock from when it granted.
    Grant {
        /// Campaign epoch.
        epoch: Epoch,
        /// The request answered.
        seq: u32,
        /// Lease length.
        duration_ms: u32,
    },
    /// Refused.
    Deny {
        /// Campaign epoch.
        epoch: Epoch,
        /// The request answered.
        seq: u32,
        /// Why.
        reason: DenyReason,
    },
    /// The holder is done (health check passed, or it gave up).
    Release {
        /// Campaign epoch.
        epoch: Epoch,
        /// The `seq` of the grant released: a stale (duplicated) release of an earlier grant
        /// must not end a later one.
        seq: u32,
    },
}

/// What a campaign tells every node (the signed manifest's protocol-relevant part).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Campaign {
    /// The epoch this campaign introduces.
    pub epoch: Epoch,
    /// Window of the new firmware; must contain `epoch - 1` and `epoch`.
    pub window: Window,
    /// Digest of the image (per-profile digests live in the manifest; this names the manifest).
    pub image_digest: Digest,
    /// Whether activation disrupts traffic (then it needs neighbour leases).
    pub disruptive: bool,
    /// Longest activation the profile allows, in milliseconds.
    pub max_activation_ms: u32,
    /// The node the operator started the campaign on.
    pub origin: NodeId,
}

/// Operator control of a running campaign.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ControlAction {
    /// No new staging or activation; transactions in flight complete.
    Pause,
    /// Undo a pause or a halt: re-run the same manifest.
    Resume,
    /// Halt: no new activations, open transactions aborted, committed links stay.
    Abort,
    /// Go back: a node that activated the campaign and whose links have not moved runs its
    /// previous firmware again; any other node halts as for an abort.
    Rollback,
}

/// A flooded campaign control statement.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Control {
    /// Campaign concerned.
    pub epoch: Epoch,
    /// What to do.
    pub action: ControlAction,
    /// Operator's counter: a node applies each control once, highest counter last.
    pub counter: u64,
}

/// A delta of the status summary: entries changed since the receiver last acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GossipDelta {
    /// Sender's delta sequence after these entries; the receiver acknowledges it.
    pub upto: u64,
    /// `(reporter, peer, committed epoch)`: reporter's view of its link to peer.
    pub links: Vec<(NodeId, NodeId, Epoch)>,
    /// Node phases, versioned.
    pub phases: Vec<(NodeId, PhaseEntry)>,
    /// Retire / restore registers of links (unordered pairs, lower id first).
    pub marks: Vec<(NodeId, NodeId, RetireMark)>,
    /// `(node, peer)`: a link configured at `node` that it has not reported yet (a report
    /// implies the declaration).
    pub declared: Vec<(NodeId, NodeId)>,
    /// `(node, beat)`: node's heartbeat counter.
    pub beats: Vec<(NodeId, u64)>,
}

impl GossipDelta {
    /// Entries in all lists.
    pub fn len(&self) -> usize {
        self.links.len()
            + self.phases.len()
            + self.marks.len()
            + self.declared.len()
            + self.beats.len()
    }

    /// Whether the delta carries no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Orders operator actions on one link: a counter one above the highest the acting node has
/// seen for that link (Lamport-style), then the acting node's id to order concurrent actions.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RetireVersion {
    /// Actions on this link so far, as the acting node knew them, plus one.
    pub counter: u32,
    /// The node whose operator acted.
    pub by: NodeId,
}

/// The last operator action on a link: retired (dead hardware, outside the live graph) or
/// restored (live again). The higher version wins.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct RetireMark {
    /// Order of the action.
    pub version: RetireVersion,
    /// Whether the action retired the link (false: restored it).
    pub retired: bool,
}
