//! One end of a link: its persisted state, its connection, and the transaction table applied.

pub mod table;

use crate::msg::{AbortReason, Digest, Hello, LinkSnapshot, Pending, Txn, TxnKind};
use crate::types::{Epoch, Nanos, NodeId, Nonce, Role, Window};
#[cfg(feature = "mutants")]
use crate::Mutant;
use table::{Class, Next, Note, Rel, Reply, Stimulus};

/// The persisted state of one end of a link. The driver stores it whenever the node emits it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LinkState {
    /// Last committed epoch of the link.
    pub committed: Epoch,
    /// Open transaction for `committed + 1`.
    pub pending: Pending,
    /// Nonce of the transaction that committed `committed` (0: set by LINK_HELLO).
    pub commit_nonce: Nonce,
    /// Initiator: the responder acknowledged `committed`.
    pub acked: bool,
    /// Initiator: highest nonce proposed for `committed + 1`.
    /// Responder: highest nonce refused or aborted for `committed + 1`.
    pub last_nonce: Nonce,
    /// No state agreed yet: waiting for LINK_HELLO (a new link, or a wiped disk).
    pub fresh: bool,
}

impl LinkState {
    /// The state of a link both ends agreed on at `epoch` (deployment, or LINK_HELLO).
    pub fn established(epoch: Epoch) -> LinkState {
        LinkState {
            committed: epoch,
            pending: Pending::None,
            commit_nonce: Nonce(0),
            acked: true,
            last_nonce: Nonce(0),
            fresh: false,
        }
    }
    /// A link with no persisted state at this end.
    pub fn fresh() -> LinkState {
        LinkState {
            fresh: true,
            ..LinkState::established(Epoch(0))
        }
    }
    /// What LINK_HELLO carries of this state.
    pub fn snapshot(&self) -> Option<LinkSnapshot> {
        (!self.fresh).then_some(LinkSnapshot {
            committed: self.committed,
            pending: self.pending,
        })
    }
}

/// Protocol timers of a link end, derived from the link round-trip time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LinkTimers {
    /// First retransmission of PROPOSE / COMMIT (3 RTT), doubled on each try.
    pub retransmit: Nanos,
    /// Cap of the doubling (1 s).
    pub max_backoff: Nanos,
    /// Tries before a Tentative transaction gives up (20).
    pub max_tries: u32,
    /// Interval of the responder's QUERY while it reflects (5 RTT).
    pub query: Nanos,
}

impl LinkTimers {
    /// The defaults for a given round-trip time.
    pub fn for_rtt(rtt: Nanos) -> LinkTimers {
        LinkTimers {
            retransmit: 3 * rtt,
            max_backoff: crate::types::SEC,
            max_tries: 20,
            query: 5 * rtt,
        }
    }
}

/// What the node knows of itself that a link decision needs.
#[derive(Copy, Clone, Debug)]
pub struct LinkCtx {
    /// The node has activated `committed + 1` for this link and may move it (not halted).
    pub ready_for: Option<Epoch>,
    /// The node activated the epoch but its device said it cannot take it as a link epoch
    /// (a PROPOSE is refused with `AbortReason::DeviceRefused`).
    pub device_refused: bool,
    /// Nonces this node proposes are above this one: its incarnation in the high 32 bits
    /// (`Nonce(0)` where incarnations do not matter).
    pub nonce_floor: Nonce,
    /// Digest of the running firmware, sent in REFLECT.
    pub firmware_digest: Digest,
    /// Retransmission and query timers.
    pub timers: LinkTimers,
    /// Mutation under test.
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
}

impl LinkCtx {
    #[cfg(feature = "mutants")]
    fn is(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }
    fn ready(&self, e: Epoch) -> bool {
        self.ready_for == Some(e)
    }
}

/// What applying a stimulus did; the node turns it into outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// The persisted state changed: persist it before sending `send`.
    pub persist: bool,
    /// Message to send on this link, if its connection is up.
    pub send: Option<Txn>,
    /// The link committed this epoch now.
    pub committed: Option<Epoch>,
    /// Accounting note of the applied cell.
    pub note: Option<Note>,
    /// The stimulus concerned another epoch than the link's current or next one.
    pub out_of_range: bool,
}

/// One end of one link.
#[derive(Clone, Debug)]
pub struct LinkEnd {
    /// The neighbour.
    pub peer: NodeId,
    /// This end's role.
    pub role: Role,
    /// Persisted state.
    pub state: LinkState,
    /// Generation of the current connection, if up.
    pub conn: Option<u64>,
    /// COMMIT for `state.committed` was sent on the current connection.
    pub commit_sent_on_conn: bool,
    /// Highest epoch the peer said it activated (ACTIVATED or HELLO).
    pub peer_activated: Option<Epoch>,
    /// The peer's firmware window, from HELLO.
    pub peer_window: Option<Window>,
    /// Retired by an operator: ignored by convergence, no transactions.
    pub retired: bool,
    /// The last LINK_HELLO found no epoch both ends can speak that agrees with the state either
    /// end holds: no data, no probes, no transactions until the next HELLO or an operator acts.
    pub incompatible: bool,
    /// The link epoch this end's device acknowledged since the agent started (`None`: not
    /// yet): data and new-epoch probes wait for it to equal `state.committed`.
    pub device: Option<Epoch>,
    /// COMMIT (initiator) or COMMIT_ACK (responder) of the committed epoch, held until the
    /// device acknowledged that epoch: the peer learns of a commit only once this end's
    /// hardware speaks it.
    pub held: Option<Txn>,
    /// Retransmissions of the open proposal / commit so far.
    pub tries: u32,
    /// Proposals aborted since the last commit (backs off the guard re-check).
    pub aborts: u32,
    /// Deadline of the link's timer, if armed.
    pub timer_at: Option<Nanos>,
}

impl LinkEnd {
    /// A link end with persisted `state`, connection down.
    pub fn new(me: NodeId, peer: NodeId, state: LinkState) -> LinkEnd {
        LinkEnd {
            peer,
            role: Role::of(me, peer),
            state,
            conn: None,
            commit_sent_on_conn: false,
            peer_activated: None,
            peer_window: None,
            retired: false,
            incompatible: false,
            device: None,
            held: None,
            tries: 0,
            aborts: 0,
            timer_at: None,
        }
    }

    /// The epoch this end tags its outgoing data with, or `None` while it must not send data
    /// (connection down, link not agreed or incompatible, device not yet at the committed
    /// epoch, responder reflecting, initiator whose COMMIT was not yet acknowledged).
    pub fn send_epoch(&self, ctx: &LinkCtx) -> Option<Epoch> {
        let _ = ctx;
        if self.state.fresh || self.conn.is_none() || self.incompatible {
            return None;
        }
        #[cfg(feature = "mutants")]
        let (no_pause, early_data, before_device) = (
            ctx.is(Mutant::ResponderDoesNotPause),
            ctx.is(Mutant::DataBeforeCommit),
            ctx.is(Mutant::ProbeBeforeDeviceAck),
        );
        #[cfg(not(feature = "mutants"))]
        let (no_pause, early_data, before_device) = (false, false, false);
        if self.device != Some(self.state.committed) && !before_device {
            return None;
        }
        match self.state.pending {
            Pending::Reflecting(_) if !no_pause => None,
            _ if self.role == Role::Initiator && !self.state.acked && !early_data => None,
            _ => Some(self.state.committed),
        }
    }

    /// The device acknowledged link epoch `epoch`: data may resume at it, and a COMMIT or
    /// COMMIT_ACK held for it goes out.
    pub fn device_applied(&mut self, epoch: Epoch) -> Effect {
        let mut fx = Effect::default();
        if self.state.fresh || epoch != self.state.committed {
            return fx;
        }
        self.device = Some(epoch);
        fx.send = self.held.take();
        fx
    }

    /// The epoch under which this end interprets data it receives.
    pub fn recv_epoch(&self) -> Epoch {
        self.state.committed
    }

    fn class_for(&self, epoch: Epoch) -> Result<Class, Note> {
        let s = &self.state;
        if s.fresh || self.retired || self.incompatible {
            return Err(Note::Stale);
        }
        if epoch == s.committed.next() {
            Ok(match s.pending {
                Pending::None => Class::Idle,
                Pending::Tentative(_) => Class::Tentative,
                Pending::Reflecting(_) => Class::Reflecting,
            })
        } else if epoch == s.committed && s.committed != Epoch(0) {
            Ok(if self.role == Role::Initiator && s.acked {
                Class::Acked
            } else {
                Class::Committed
            })
        } else if epoch <= s.committed {
            Err(Note::Stale)
        } else {
            Err(Note::ProtocolError)
        }
    }

    fn local_nonce(&self, class: Class) -> Nonce {
        match (class, self.state.pending) {
            (Class::Tentative, Pending::Tentative(n)) => n,
            (Class::Reflecting, Pending::Reflecting(n)) => n,
            (Class::Committed | Class::Acked, _) => self.state.commit_nonce,
            _ => self.state.last_nonce,
        }
    }

    fn rel(&self, class: Class, theirs: Nonce) -> Rel {
        let mine = self.local_nonce(class);
        // A responder that agreed its epoch by LINK_HELLO (commit nonce 0) does not know which
        // nonce committed it: the initiator's COMMIT of that epoch is a duplicate to acknowledge.
        if self.role == Role::Responder && class == Class::Committed && mine == Nonce(0) {
            return Rel::Same;
        }
        if self.role == Role::Responder && class == Class::Idle {
            return if theirs > mine {
                Rel::Newer
            } else {
                Rel::Stale
            };
        }
        match theirs.cmp(&mine) {
            core::cmp::Ordering::Less => Rel::Stale,
            core::cmp::Ordering::Equal => Rel::Same,
            core::cmp::Ordering::Greater => Rel::Newer,
        }
    }

    /// Applies a received transaction message.
    pub fn on_txn(&mut self, txn: &Txn, ctx: &LinkCtx) -> Effect {
        let class = match self.class_for(txn.epoch) {
            Ok(c) => c,
            Err(note) => {
                return Effect {
                    note: Some(note),
                    out_of_range: note == Note::ProtocolError,
                    ..Effect::default()
                }
            }
        };
        let rel = self.rel(class, txn.nonce);
        #[cfg(feature = "mutants")]
        let rel = if ctx.is(Mutant::CommitOnOtherNonce)
            && self.role == Role::Initiator
            && class == Class::Tentative
            && matches!(txn.kind, TxnKind::Reflect | TxnKind::Query)
        {
            Rel::Same
        } else {
            rel
        };
        let cell = table::cell(
            self.role,
            class,
            Stimulus::Recv(txn.kind, rel),
            ctx.ready(txn.epoch),
        );
        #[cfg(feature = "mutants")]
        let cell = if ctx.is(Mutant::AckOnHearingPeer)
            && self.role == Role::Initiator
            && class == Class::Committed
            && matches!(txn.kind, TxnKind::Reflect | TxnKind::Query)
        {
            table::Cell {
                next: Next::Acked,
                reply: Reply::None,
                note: Note::Ok,
            }
        } else {
            cell
        };
        let refused = txn.kind == TxnKind::Propose && cell.reply == Reply::AbortTheirs;
        if refused {
            // Remember the refusal (persisted with the ABORT) so a retransmitted PROPOSE of the
            // same nonce is recognised as stale.
            self.state.last_nonce = self.state.last_nonce.max(txn.nonce);
        }
        let reason = if cell.reply == Reply::AbortTheirs && txn.kind == TxnKind::Propose {
            if ctx.device_refused {
                AbortReason::DeviceRefused
            } else {
                AbortReason::NotActivated
            }
        } else {
            AbortReason::WrongNonce
        };
        let mut fx = self.apply(class, txn.epoch, cell, txn.nonce, reason, ctx);
        fx.persist |= refused;
        let refused_ours = self.role == Role::Initiator
            && class == Class::Tentative
            && txn.kind == TxnKind::Abort
            && txn.reason == AbortReason::NotActivated;
        if refused_ours {
            // The responder is not ready for the epoch (not activated yet, halted, rolled
            // back): propose again once it says it activated (ACTIVATED, or LINK_HELLO on a
            // new connection), not on a timer.
            self.peer_activated = self.peer_activated.filter(|&p| p < txn.epoch);
        }
        fx
    }

    /// The state class and epoch that timers, restarts and reconnects act on.
    fn current(&self) -> (Class, Epoch) {
        let s = &self.state;
        match s.pending {
            Pending::Tentative(_) => (Class::Tentative, s.committed.next()),
            Pending::Reflecting(_) => (Class::Reflecting, s.committed.next()),
            Pending::None if self.role == Role::Initiator && s.acked => (Class::Acked, s.committed),
            Pending::None if s.commit_nonce != Nonce(0) => (Class::Committed, s.committed),
            Pending::None => (Class::Acked, s.committed),
        }
    }

    /// Applies a local event (timer, restart, reconnect, failure) to the open transaction.
    pub fn on_event(&mut self, stimulus: Stimulus, ctx: &LinkCtx) -> Effect {
        if self.state.fresh || self.retired {
            return Effect::default();
        }
        let (class, epoch) = self.current();
        let cell = table::cell(self.role, class, stimulus, false);
        #[cfg(feature = "mutants")]
        let cell = if ctx.is(Mutant::ResponderAbortsAfterReflect)
            && class == Class::Reflecting
            && stimulus == Stimulus::Timeout
        {
            table::Cell {
                next: Next::Idle,
                reply: Reply::AbortOwn,
                note: Note::Ok,
            }
        } else {
            cell
        };
        let reason = match stimulus {
            Stimulus::Restart => AbortReason::Restarted,
            Stimulus::GiveUp => AbortReason::GaveUp,
            _ => AbortReason::LocalFailure,
        };
        self.apply(class, epoch, cell, Nonce(0), reason, ctx)
    }

    /// The link's timer fired: retransmit, give up, query, or re-check the guard after an abort.
    /// Stale timers (the deadline moved) do nothing.
    pub fn on_timer(&mut self, now: Nanos, ctx: &LinkCtx) -> Effect {
        match self.timer_at {
            Some(at) if at <= now => self.timer_at = None,
            _ => return Effect::default(),
        }
        match self.current().0 {
            Class::Tentative => {
                self.tries += 1;
                let s = if self.tries >= ctx.timers.max_tries {
                    Stimulus::GiveUp
                } else {
                    Stimulus::Timeout
                };
                self.on_event(s, ctx)
            }
            Class::Committed | Class::Reflecting => {
                self.tries = self.tries.saturating_add(1);
                self.on_event(Stimulus::Timeout, ctx)
            }
            Class::Acked | Class::Idle => self.try_propose(ctx),
        }
    }

    /// Arms the timer the current state needs (keeping an armed one), or disarms it.
    /// Returns the new deadline when one was armed now, for the driver to schedule.
    pub fn rearm(&mut self, now: Nanos, ctx: &LinkCtx, restart: bool) -> Option<Nanos> {
        let t = &ctx.timers;
        let backoff = |n: u32| {
            t.retransmit
                .saturating_mul(1 << n.min(20))
                .min(t.max_backoff)
        };
        let wanted = match self.current().0 {
            // Nothing to retransmit or ask while disconnected: the reconnect resends it all.
            _ if self.state.fresh || self.retired || self.conn.is_none() => None,
            Class::Tentative | Class::Committed if self.role == Role::Initiator => {
                Some(backoff(self.tries))
            }
            Class::Reflecting => Some(t.query),
            Class::Acked | Class::Idle
                if self.role == Role::Initiator && self.aborts > 0 && self.guard(ctx) =>
            {
                Some(backoff(self.aborts))
            }
            _ => None,
        };
        match wanted {
            None => {
                self.timer_at = None;
                None
            }
            Some(_) if self.timer_at.is_some() && !restart => None,
            Some(d) => {
                let at = now.saturating_add(d);
                self.timer_at = Some(at);
                Some(at)
            }
        }
    }

    /// Initiator guard: opens a transaction for `committed + 1` when both ends activated it.
    pub fn try_propose(&mut self, ctx: &LinkCtx) -> Effect {
        if !self.guard(ctx) {
            return Effect::default();
        }
        let e = self.state.committed.next();
        let cell = table::cell(self.role, Class::Idle, Stimulus::Guard, false);
        self.apply(
            Class::Idle,
            e,
            cell,
            Nonce(0),
            AbortReason::Unspecified,
            ctx,
        )
    }

    /// Whether the initiator guard holds: idle, acknowledged, connected, both ends activated.
    pub fn guard(&self, ctx: &LinkCtx) -> bool {
        let e = self.state.committed.next();
        self.role == Role::Initiator
            && !self.state.fresh
            && !self.retired
            && !self.incompatible
            && self.conn.is_some()
            && self.state.pending == Pending::None
            && self.state.acked
            && ctx.ready(e)
            && self.peer_activated.is_some_and(|p| p >= e)
    }

    /// Responder: commit on evidence from another path (only ever as a mutant).
    #[cfg(feature = "mutants")]
    pub fn commit_on_other_path(&mut self, epoch: Epoch, ctx: &LinkCtx) -> Effect {
        if !ctx.is(Mutant::CommitOnOtherPath) || self.class_for(epoch) != Ok(Class::Reflecting) {
            return Effect::default();
        }
        let n = self.local_nonce(Class::Reflecting);
        let cell = table::cell(
            self.role,
            Class::Reflecting,
            Stimulus::Recv(TxnKind::Commit, Rel::Same),
            true,
        );
        self.apply(
            Class::Reflecting,
            epoch,
            cell,
            n,
            AbortReason::Unspecified,
            ctx,
        )
    }

    fn apply(
        &mut self,
        class: Class,
        epoch: Epoch,
        cell: table::Cell,
        theirs: Nonce,
        reason: AbortReason,
        ctx: &LinkCtx,
    ) -> Effect {
        let own = self.local_nonce(class);
        let mut fx = Effect {
            note: Some(cell.note),
            ..Effect::default()
        };
        let s = &mut self.state;
        match cell.next {
            Next::Same => {}
            Next::Idle => {
                match s.pending {
                    Pending::Reflecting(n) => s.last_nonce = s.last_nonce.max(n),
                    Pending::Tentative(_) => self.aborts = self.aborts.saturating_add(1),
                    Pending::None => {}
                }
                s.pending = Pending::None;
                fx.persist = true;
            }
            Next::Tentative => {
                // Nonces are (incarnation, counter): a node that lost its store (and with it
                // the counter) still proposes above every nonce of its earlier lives.
                s.last_nonce = s.last_nonce.next().max(ctx.nonce_floor.next());
                s.pending = Pending::Tentative(s.last_nonce);
                self.tries = 0;
                fx.persist = true;
            }
            Next::Reflecting => {
                s.pending = Pending::Reflecting(theirs);
                fx.persist = true;
            }
            Next::Committed => {
                s.commit_nonce = if self.role == Role::Initiator {
                    own
                } else {
                    theirs
                };
                s.committed = epoch;
                s.pending = Pending::None;
                s.last_nonce = Nonce(0);
                s.acked = false;
                self.tries = 0;
                self.aborts = 0;
                fx.persist = true;
                fx.committed = Some(epoch);
            }
            Next::Acked => {
                s.acked = true;
                fx.persist = true;
            }
        }
        let txn = |kind, nonce| Txn::new(kind, epoch, nonce);
        fx.send = match cell.reply {
            Reply::None => None,
            Reply::ProposeNew | Reply::ProposeAgain => {
                let n = match self.state.pending {
                    Pending::Tentative(n) => n,
                    _ => own,
                };
                Some(txn(TxnKind::Propose, n))
            }
            Reply::Reflect => Some(Txn {
                digest: ctx.firmware_digest,
                ..txn(TxnKind::Reflect, theirs)
            }),
            Reply::Commit => Some(txn(TxnKind::Commit, self.state.commit_nonce)),
            Reply::CommitAck => Some(txn(TxnKind::CommitAck, theirs)),
            Reply::AbortTheirs => Some(Txn::abort(epoch, theirs, reason)),
            Reply::AbortOwn => Some(Txn::abort(epoch, own, reason)),
            Reply::Query => Some(txn(TxnKind::Query, own)),
        };
        self.hold_for_device(&mut fx);
        fx
    }

    /// A COMMIT or COMMIT_ACK of the committed epoch waits for the device to acknowledge that
    /// epoch (the device is a participant of the commit: the peer may act on the new epoch as
    /// soon as it hears of it).
    fn hold_for_device(&mut self, fx: &mut Effect) {
        let Some(t) = fx.send else { return };
        let confirms = matches!(t.kind, TxnKind::Commit | TxnKind::CommitAck)
            && t.epoch == self.state.committed;
        if confirms && self.device != Some(self.state.committed) {
            self.held = fx.send.take();
        }
    }

    /// LINK_HELLO received: learn the peer's window and activation, and agree the link's epoch
    /// from the two windows and the two ends' states (both ends see the same pair, so both
    /// decide alike):
    /// - neither end has state: the highest epoch both windows hold;
    /// - one end has state (the other lost its store): that end's committed epoch;
    /// - both have state but one is behind (a store restored from an older copy): the higher
    ///   committed epoch — except a responder one epoch behind that reflected, which waits for
    ///   the COMMIT its initiator re-sends;
    /// - the epoch so chosen is not in both windows: the link is incompatible.
    ///
    /// Returns true when this end's persisted state changed (persist before sending data).
    pub fn on_hello(&mut self, hello: &Hello, my_window: &Window) -> Result<bool, HelloError> {
        self.peer_window = Some(hello.window);
        if let Some(a) = hello.activated {
            self.peer_activated = Some(self.peer_activated.map_or(a, |p| p.max(a)));
        }
        let common = my_window.intersect(&hello.window);
        let mine = (!self.state.fresh).then_some(self.state.committed);
        let theirs = hello.link.map(|l| l.committed);
        if mine.is_some() && mine == theirs {
            // Agreed already (a repeated HELLO): nothing to decide.
            self.incompatible = false;
            return Ok(false);
        }
        let target = match (mine, theirs) {
            (None, None) => common.map(|c| c.max),
            (None, Some(t)) => Some(t),
            (Some(m), None) => Some(m),
            (Some(m), Some(t)) => Some(m.max(t)),
        };
        let Some(epoch) = target.filter(|&e| common.is_some_and(|c| c.contains(e))) else {
            self.incompatible = true;
            return Err(match (common, target) {
                (Some(_), Some(epoch)) => HelloError::Incompatible {
                    epoch,
                    mine: *my_window,
                    theirs: hello.window,
                },
                _ => HelloError::NoCommonEpoch {
                    mine: *my_window,
                    theirs: hello.window,
                },
            });
        };
        self.incompatible = false;
        if mine == Some(epoch) {
            return Ok(false);
        }
        let reflected_one_behind = matches!(self.state.pending, Pending::Reflecting(_))
            && mine.map(Epoch::next) == Some(epoch);
        if reflected_one_behind {
            return Ok(false);
        }
        self.state = LinkState::established(epoch);
        // An initiator never proposes again a nonce its responder still reflects: it may be one
        // this end proposed in a life whose store is gone, and an incarnation does not always
        // grow across two lost stores (the start counter was in them), so the responder's
        // QUERY about that old proposal would commit the new one. Its next proposal is above.
        if let Some(Pending::Reflecting(n)) = hello.link.map(|l| l.pending) {
            self.state.last_nonce = n;
        }
        Ok(true)
    }
}

/// Why a LINK_HELLO could not establish a link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The two firmware windows share no epoch: the link cannot carry traffic.
    #[error("firmware windows {mine:?} and {theirs:?} share no epoch")]
    NoCommonEpoch {
        /// This end's window.
        mine: Window,
        /// The peer's window.
        theirs: Window,
    },
    /// The epoch one end holds (the other lost or restored its store) is outside a window.
    #[error(
        "the link holds epoch {epoch:?}, which windows {mine:?} and {theirs:?} do not both speak"
    )]
    Incompatible {
        /// The committed epoch the state at either end holds.
        epoch: Epoch,
        /// This end's window.
        mine: Window,
        /// The peer's window.
        theirs: Window,
    },
}
