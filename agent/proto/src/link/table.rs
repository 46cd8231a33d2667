//! The link transaction as one table: (role × state × stimulus) → (next state, reply, note).
//!
//! This is the whole protocol logic of one end of a link; [`super::LinkEnd`] only computes the
//! state class and nonce relation, looks the cell up, and applies it. `docs/link-table.md` is
//! generated from [`render`] and a test keeps the two identical.

use crate::msg::TxnKind;
use crate::types::Role;

/// The state of one end of a link relative to the epoch a message or event concerns.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Committed the previous epoch, nothing open.
    Idle,
    /// Initiator: proposed, waiting for the reflection.
    Tentative,
    /// Responder: reflected, waiting for the initiator's decision.
    Reflecting,
    /// Committed this epoch (initiator: COMMIT_ACK not yet received).
    Committed,
    /// Initiator: committed and acknowledged.
    Acked,
}

impl Class {
    /// Every class, in table order.
    pub const ALL: [Class; 5] = [
        Class::Idle,
        Class::Tentative,
        Class::Reflecting,
        Class::Committed,
        Class::Acked,
    ];
}

/// How a message's nonce compares with the local one (see [`super::LinkEnd`] for which nonce).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rel {
    /// Lower than the local nonce (or, for an idle responder, not above the last one refused).
    Stale,
    /// Equal to the local nonce.
    Same,
    /// Higher than the local nonce.
    Newer,
}

impl Rel {
    /// Every relation, in table order.
    pub const ALL: [Rel; 3] = [Rel::Stale, Rel::Same, Rel::Newer];
}

/// What happened to the link end.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Stimulus {
    /// A transaction message arrived on this link's connection.
    Recv(TxnKind, Rel),
    /// Initiator guard holds: self activated the next epoch and the peer said ACTIVATED.
    Guard,
    /// The link's retransmit or query timer fired.
    Timeout,
    /// The initiator exhausted its retransmissions.
    GiveUp,
    /// A local failure (device, storage, operator halt) while a transaction is open.
    LocalFailure,
    /// The agent restarted with this persisted state.
    Restart,
    /// A new connection came up (this end sent its HELLO on it; the resends follow the HELLO).
    Reconnect,
}

impl Stimulus {
    /// Every stimulus, in table order.
    pub fn all() -> Vec<Stimulus> {
        let mut v = Vec::new();
        for k in TxnKind::ALL {
            for r in Rel::ALL {
                v.push(Stimulus::Recv(k, r));
            }
        }
        v.extend([
            Stimulus::Guard,
            Stimulus::Timeout,
            Stimulus::GiveUp,
            Stimulus::LocalFailure,
            Stimulus::Restart,
            Stimulus::Reconnect,
        ]);
        v
    }
}

/// The state after a cell is applied.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Next {
    /// Unchanged.
    Same,
    /// Back to idle at the previous epoch (the open nonce is dead).
    Idle,
    /// Initiator: open a new proposal with the next nonce.
    Tentative,
    /// Responder: reflect the message's nonce.
    Reflecting,
    /// Switch the link to the epoch.
    Committed,
    /// Initiator: the responder acknowledged the commit.
    Acked,
}

/// The message a cell sends (nonce source in the name).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// Nothing.
    None,
    /// PROPOSE with the new nonce.
    ProposeNew,
    /// PROPOSE again with the open nonce.
    ProposeAgain,
    /// REFLECT with the message's nonce.
    Reflect,
    /// COMMIT with the local (open or committed) nonce.
    Commit,
    /// COMMIT_ACK with the message's nonce.
    CommitAck,
    /// ABORT with the message's nonce.
    AbortTheirs,
    /// ABORT with the local open nonce.
    AbortOwn,
    /// QUERY with the local open nonce.
    Query,
}

/// How the driver should account for the stimulus.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// Normal protocol step.
    Ok,
    /// A stale message (lower nonce, duplicate): counted, logged at debug.
    Stale,
    /// A message a correct peer never sends in this state: counted, logged as a protocol error.
    ProtocolError,
    /// The stimulus cannot happen in this state (e.g. a responder is never Tentative).
    Impossible,
}

/// One cell of the table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    /// State afterwards.
    pub next: Next,
    /// Message sent (after persisting `next` when it changed).
    pub reply: Reply,
    /// Accounting.
    pub note: Note,
}

const fn c(next: Next, reply: Reply, note: Note) -> Cell {
    Cell { next, reply, note }
}

const NOTHING: Cell = c(Next::Same, Reply::None, Note::Ok);
const STALE: Cell = c(Next::Same, Reply::None, Note::Stale);
const ERROR: Cell = c(Next::Same, Reply::None, Note::ProtocolError);
const IMPOSSIBLE: Cell = c(Next::Same, Reply::None, Note::Impossible);

/// The link transaction table. `ready` is the responder's "self Activated(e)" for PROPOSE.
pub fn cell(role: Role, class: Class, stimulus: Stimulus, ready: bool) -> Cell {
    use Class::*;
    use Next as N;
    use Rel::*;
    use Reply as R;
    use Role::{Initiator as I, Responder as Rs};
    use Stimulus::*;
    use TxnKind::*;
    match (role, class, stimulus) {
        // ---- impossible states: an initiator never reflects, a responder never proposes ----
        (I, Reflecting, _) | (Rs, Tentative | Acked, _) => IMPOSSIBLE,

        // ---- initiator ----
        (I, Idle, Guard) => c(N::Tentative, R::ProposeNew, Note::Ok),
        (I, Idle, Recv(Reflect | Query, _)) => c(N::Same, R::AbortTheirs, Note::Ok),
        (I, Idle, Recv(Abort, _)) => STALE,
        (I, Idle, Recv(CommitAck, _)) => STALE,
        (I, Idle, Timeout | GiveUp | LocalFailure | Restart | Reconnect) => NOTHING,

        (I, Tentative, Recv(Reflect | Query, Same)) => c(N::Committed, R::Commit, Note::Ok),
        (I, Tentative, Recv(Reflect | Query, Stale | Newer)) => {
            c(N::Same, R::AbortTheirs, Note::Ok)
        }
        (I, Tentative, Recv(Abort, Same)) => c(N::Idle, R::None, Note::Ok),
        (I, Tentative, Recv(Abort, Stale)) => STALE,
        (I, Tentative, Recv(Abort, Newer)) => ERROR,
        (I, Tentative, Recv(CommitAck, _)) => ERROR,
        (I, Tentative, Timeout | Reconnect) => c(N::Same, R::ProposeAgain, Note::Ok),
        (I, Tentative, GiveUp | LocalFailure | Restart) => c(N::Idle, R::AbortOwn, Note::Ok),

        (I, Committed | Acked, Recv(Reflect | Query, Same)) => c(N::Same, R::Commit, Note::Ok),
        (I, Committed | Acked, Recv(Reflect | Query, Stale | Newer)) => {
            c(N::Same, R::AbortTheirs, Note::Ok)
        }
        (I, Committed, Recv(CommitAck, Same)) => c(N::Acked, R::None, Note::Ok),
        (I, Acked, Recv(CommitAck, Same)) => STALE,
        (I, Committed | Acked, Recv(CommitAck, Stale)) => STALE,
        (I, Committed | Acked, Recv(CommitAck, Newer)) => ERROR,
        (I, Committed | Acked, Recv(Abort, Stale)) => STALE,
        (I, Committed | Acked, Recv(Abort, Same | Newer)) => ERROR,
        (I, Committed, Timeout | Restart | Reconnect) => c(N::Same, R::Commit, Note::Ok),
        (I, Acked, Timeout | Restart | Reconnect) => NOTHING,
        (I, Committed | Acked, Guard | GiveUp | LocalFailure) => NOTHING,
        (I, Tentative, Guard) => NOTHING,

        // an initiator is sent only REFLECT, QUERY, ABORT and COMMIT_ACK
        (I, _, Recv(Propose | Commit, _)) => ERROR,

        // ---- responder ----
        (Rs, Idle, Recv(Propose, Newer)) if ready => c(N::Reflecting, R::Reflect, Note::Ok),
        (Rs, Idle, Recv(Propose, Newer)) => c(N::Same, R::AbortTheirs, Note::Ok),
        (Rs, Idle, Recv(Propose, Stale | Same)) => STALE,
        (Rs, Idle, Recv(Abort, _)) => NOTHING,
        (Rs, Idle, Recv(Commit, _)) => ERROR,
        (Rs, Idle, Guard | Timeout | GiveUp | LocalFailure | Restart | Reconnect) => NOTHING,

        (Rs, Reflecting, Recv(Propose, Same)) => c(N::Same, R::Reflect, Note::Ok),
        // a higher nonce is a new vote: only when ready (as from Idle); the standing one stays
        (Rs, Reflecting, Recv(Propose, Newer)) if ready => c(N::Reflecting, R::Reflect, Note::Ok),
        (Rs, Reflecting, Recv(Propose, Newer)) => c(N::Same, R::AbortTheirs, Note::Ok),
        (Rs, Reflecting, Recv(Propose | Commit | Abort, Stale)) => STALE,
        (Rs, Reflecting, Recv(Commit, Same)) => c(N::Committed, R::CommitAck, Note::Ok),
        (Rs, Reflecting, Recv(Commit, Newer)) => ERROR,
        (Rs, Reflecting, Recv(Abort, Same)) => c(N::Idle, R::None, Note::Ok),
        // a higher ABORT means the initiator gave up our nonce too; the QUERY settles it
        (Rs, Reflecting, Recv(Abort, Newer)) => STALE,
        // having reflected, the responder never decides alone: it asks
        (Rs, Reflecting, Timeout | Restart | Reconnect) => c(N::Same, R::Query, Note::Ok),
        (Rs, Reflecting, Guard | GiveUp | LocalFailure) => NOTHING,

        (Rs, Committed, Recv(Commit, Same)) => c(N::Same, R::CommitAck, Note::Ok),
        (Rs, Committed, Recv(Propose, Same)) => STALE,
        (Rs, Committed, Recv(Propose | Commit | Abort, Stale)) => STALE,
        (Rs, Committed, Recv(Propose | Commit, Newer)) => ERROR,
        (Rs, Committed, Recv(Abort, Same | Newer)) => ERROR,
        (Rs, Committed, Guard | Timeout | GiveUp | LocalFailure | Restart | Reconnect) => NOTHING,

        // a responder is sent only PROPOSE, COMMIT and ABORT
        (Rs, _, Recv(Reflect | Query | CommitAck, _)) => ERROR,
    }
}

/// The whole table as Markdown, one row per reachable cell (`docs/link-table.md`).
pub fn render() -> String {
    let mut out = String::from(
        "<!-- generated by entente_proto::link::table::render(); a test keeps it current -->\n\
         # Link transaction table\n\n\
         Every (role, state, stimulus) cell of `agent/proto/src/link/table.rs`. `ready` is the \
         responder's own Activated(e); nonce relations compare the message's nonce with the \
         local one. Cells that cannot occur (a responder is never Tentative) are omitted.\n\n\
         | role | state | stimulus | next | sends | note |\n|---|---|---|---|---|---|\n",
    );
    for role in [Role::Initiator, Role::Responder] {
        for class in Class::ALL {
            for s in Stimulus::all() {
                let readies: &[bool] = match (role, s) {
                    (Role::Responder, Stimulus::Recv(TxnKind::Propose, _)) => &[true, false],
                    _ => &[true],
                };
                for &ready in readies {
                    let cell = cell(role, class, s, ready);
                    if cell.note == Note::Impossible {
                        continue;
                    }
                    let stim = match s {
                        Stimulus::Recv(k, r) if readies.len() > 1 => {
                            format!(
                                "{k:?}({r:?}){}",
                                if ready { " ready" } else { " not ready" }
                            )
                        }
                        Stimulus::Recv(k, r) => format!("{k:?}({r:?})"),
                        other => format!("{other:?}"),
                    };
                    out.push_str(&format!(
                        "| {role:?} | {class:?} | {stim} | {:?} | {:?} | {:?} |\n",
                        cell.next, cell.reply, cell.note
                    ));
                }
            }
        }
    }
    out
}
