//! Exhaustive model check of the link transaction (DESIGN.md §3 "Links", "The link transaction",
//! "The switch-over") with [stateright], driving the product's own state machines.
//!
//! Nothing of the protocol is re-implemented here: every decision is taken by
//! [`entente_proto::link::LinkEnd`] (`on_txn`, `on_event`, `on_timer`, `try_propose`, `rearm`,
//! `send_epoch`, `recv_epoch`, `commit_on_other_path`), and the model reproduces the node glue of
//! `agent/proto/src/node/mod.rs` around it (`apply_link`, `handle_up`, `handle_down`, the restart
//! in `Node::new`). What the model adds is the world: connections, crashes, disks, time, and the
//! ghost state the properties read. It is the Rust counterpart of `model/link.pml` (spin).
//!
//! # The world
//!
//! * A line of nodes `0 – 1 – … – n-1` (`NodeId(i + 1)`); link `l` joins node `l` (the lower id,
//!   so the initiator, side [`I`]) and node `l + 1` (the responder, side [`R`]). Two nodes give
//!   one link (checked exhaustively); three give node 1 a responder end and an initiator end,
//!   and its crash restarts both (checked to a bounded depth). Every link moves from epoch 0 to 1.
//! * A link's connection is a pair of FIFO channels of capacity [`CAP`], one per direction. A
//!   send that finds its channel full resets the connection instead (everything in flight is
//!   lost, as on a broken queue pair): the transport never drops one message and delivers the
//!   next. A reset, a connection break ([`Action::Break`], budgeted) or a crash flushes both
//!   channels and takes both ends down (`handle_down`). Each end later learns of the new
//!   connection on its own ([`Action::Up`] = `handle_up`: set `conn`, clear
//!   `commit_sent_on_conn`, learn the peer's activation as LINK_HELLO would tell it, apply
//!   `Stimulus::Reconnect`). A message waits in its channel until its receiver is up. An end
//!   that is down drops what it would send, exactly as `apply_link` does.
//! * A crash ([`Action::Crash`], budgeted per node) rebuilds every link end of the node from its
//!   disk with `LinkEnd::new` (volatile fields lost) and applies `Stimulus::Restart`. The node's
//!   own activation (its campaign phase) is durable and survives.
//! * Disks: the glue persists `LinkState` whenever an effect says `persist`, before it sends the
//!   effect's message. The driver mutant `SendBeforePersist` sends first and leaves the write
//!   pending ([`Action::Persist`] completes it); a crash in between loses it.
//! * Time is abstract: a timer that `rearm` armed may fire at any moment ([`Action::Timer`] calls
//!   `on_timer`), each firing paid from the end's send budget. Deadlines are normalised to "armed"
//!   and the retry counter to 0 after every step (with `max_tries` above every budget they only
//!   scale delays); the `max_tries`-th expiry, and the equivalent local failure, is
//!   [`Action::GiveUp`], possible whenever a proposal is open. The guard re-check timer is
//!   subsumed by [`Action::Propose`], which calls `try_propose` whenever the guard holds (as
//!   LINK_HELLO, ACTIVATED and that timer do), at most [`LinkModel::proposals`] times per link.
//! * Data-plane traffic: [`Action::Data`] sends DATA tagged with `send_epoch` when it is `Some`
//!   (paid from the same budget); the receiver interprets it under `recv_epoch`.
//! * Activation: every node has announced epoch 1 to its neighbours before the model starts
//!   (`peer_activated` is learned again on every reconnect). The first node is ready
//!   (`LinkCtx::ready_for`); the others may start not ready, like a node whose campaign was
//!   halted after it announced, which refuses PROPOSE, so the abort path is explored;
//!   [`Action::Activate`] makes them ready.
//! * The "other path": when an initiator commits, it posts a note (gossip, another link) that its
//!   responder may receive at any later time ([`Action::OtherPath`]); the responder hands it to
//!   `LinkEnd::commit_on_other_path`, which must ignore it unless the `CommitOnOtherPath` mutant
//!   is on.
//!
//! # Properties (checked in every reachable state)
//!
//! 1. [`AGREEMENT`]: a responder that committed epoch 1 committed a nonce its initiator committed.
//! 2. [`DATA_AGREEMENT`]: every DATA delivered is interpreted under the epoch its sender tagged.
//! 3. [`NO_COMMIT_ABANDONED`]: the initiator never commits a nonce the responder abandoned (left
//!    Reflecting without committing).
//! 4. [`MONOTONIC`]: an end's committed epoch never decreases, crashes included.
//! 5. [`DURABLE`]: after a crash-restart, an end's restored state is not behind the state it had
//!    sent a message about (the state changes it had announced were on disk).
//!
//! and, so that the check is not vacuous, [`BOTH_COMMITTED`] is sometimes reached. Each mutant of
//! [`Mutant`] must produce a counterexample; the unmutated protocol must produce none.
//!
//! Run with `cargo test -p entente-proto --features mutants --test model -- --nocapture` to see
//! state counts and the counterexamples found.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use entente_proto::link::table::Stimulus;
use entente_proto::link::{Effect, LinkCtx, LinkEnd, LinkState, LinkTimers};
use entente_proto::{Epoch, Mutant, NodeId, Nonce, Pending, Role, Txn, TxnKind, Window};
use stateright::{Checker, HasDiscoveries, Model, Path, Property};

/// Capacity of each direction of a connection.
const CAP: usize = 2;
/// The epoch every link moves to.
const NEXT: Epoch = Epoch(1);
/// Side of a link: the initiator (lower node id).
const I: usize = 0;
/// Side of a link: the responder.
const R: usize = 1;

/// Property names.
const AGREEMENT: &str = "agreement: a committed responder's nonce was committed by the initiator";
const DATA_AGREEMENT: &str = "data agreement: DATA is interpreted under its sender's epoch";
const NO_COMMIT_ABANDONED: &str = "the initiator never commits a nonce the responder abandoned";
const MONOTONIC: &str = "monotonicity: committed epochs never decrease, across crashes";
const DURABLE: &str = "durability: a restarted end is not behind what it sent a message about";
const BOTH_COMMITTED: &str = "every link end committed epoch 1";

/// The safety properties, in the order [`LinkModel::properties`] lists them.
const SAFETY: [&str; 5] = [
    AGREEMENT,
    DATA_AGREEMENT,
    NO_COMMIT_ABANDONED,
    MONOTONIC,
    DURABLE,
];

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// What travels on a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Msg {
    /// A link-transaction message (digest and abort reason play no part in the decisions).
    Txn {
        kind: TxnKind,
        epoch: Epoch,
        nonce: Nonce,
    },
    /// Data-plane traffic tagged with the epoch its sender encoded it in.
    Data(Epoch),
}

/// One direction of a connection: a FIFO of at most [`CAP`] messages (unused slots are `None`,
/// so equal queues hash equally).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Chan([Option<Msg>; CAP]);

impl Chan {
    fn len(&self) -> usize {
        self.0.iter().take_while(|m| m.is_some()).count()
    }
    fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }
    /// Appends `m`; false (and nothing appended) when the queue is full.
    fn push(&mut self, m: Msg) -> bool {
        let n = self.len();
        if n == CAP {
            return false;
        }
        self.0[n] = Some(m);
        true
    }
    fn pop(&mut self) -> Option<Msg> {
        let head = self.0[0].take()?;
        self.0.rotate_left(1);
        Some(head)
    }
}

/// How far an end's persisted state has progressed, in the order the product moves it: committed
/// epoch, then the highest nonce proposed / reflected / refused for the next one, then whether
/// that nonce is settled (no transaction open), then the initiator's acknowledgement.
type Rank = (u64, u64, u8, u8);

fn rank(s: &LinkState) -> Rank {
    let open = match s.pending {
        Pending::None => Nonce(0),
        Pending::Tentative(n) | Pending::Reflecting(n) => n,
    };
    (
        s.committed.0,
        s.last_nonce.max(open).0,
        u8::from(s.pending == Pending::None),
        u8::from(s.acked),
    )
}

/// One end of a link: the product's [`LinkEnd`] plus its disk.
#[derive(Clone, Debug)]
struct End {
    /// The product's state machine (its `state` is the in-memory `LinkState`).
    link: LinkEnd,
    /// The `LinkState` on disk: what a restart finds.
    disk: LinkState,
    /// `SendBeforePersist` driver: a write of `link.state` was issued but is not yet durable.
    writing: bool,
}

impl End {
    /// Every field of the end, so that states that differ in anything are distinct. The
    /// destructuring is exhaustive on purpose: a field added to `LinkEnd` fails to compile here.
    #[allow(clippy::type_complexity)]
    fn key(
        &self,
    ) -> (
        (NodeId, Role, LinkState, Option<u64>, bool, Option<Epoch>),
        (bool, u32, u32, Option<u64>, Option<Window>),
        (LinkState, bool),
    ) {
        let LinkEnd {
            peer,
            role,
            state,
            conn,
            commit_sent_on_conn,
            peer_activated,
            peer_window,
            retired,
            tries,
            aborts,
            timer_at,
        } = &self.link;
        (
            (
                *peer,
                *role,
                *state,
                *conn,
                *commit_sent_on_conn,
                *peer_activated,
            ),
            (*retired, *tries, *aborts, *timer_at, *peer_window),
            (self.disk, self.writing),
        )
    }
}

impl PartialEq for End {
    fn eq(&self, other: &End) -> bool {
        self.key() == other.key()
    }
}
impl Eq for End {}
impl Hash for End {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.key().hash(h)
    }
}

/// What the properties read: history the product does not keep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Ghost {
    /// Bit `n`: the initiator committed nonce `n`.
    i_committed: u8,
    /// Bit `n`: the responder left Reflecting(`n`) without committing.
    r_abandoned: u8,
    /// Highest committed epoch each end ever had.
    max_committed: [Epoch; 2],
    /// Highest [`rank`] of a state each end sent a message about.
    promised: [Rank; 2],
    /// A DATA message was interpreted under another epoch than its tag.
    data_mismatch: bool,
    /// An end's committed epoch went down.
    regressed: bool,
    /// A restarted end found a disk behind what it had sent a message about.
    forgot: bool,
}

fn bit(n: Nonce) -> u8 {
    1u8.checked_shl(n.0 as u32).unwrap_or(0)
}

/// One link: its two ends, its connection, its budgets and its ghost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Link {
    /// `ends[I]` and `ends[R]`.
    ends: [End; 2],
    /// `chans[s]`: messages sent by side `s`, in flight to the other side.
    chans: [Chan; 2],
    /// DATA sends and timer expiries left to each side.
    budget: [u8; 2],
    /// `try_propose` calls left.
    proposals: u8,
    /// Connection breaks left.
    breaks: u8,
    /// The initiator's commit note on the other path, once posted.
    other_path: Option<Epoch>,
    ghost: Ghost,
}

impl Link {
    /// The connection resets: both directions lose what is in flight, both ends go down
    /// (`Node::handle_down` of the current generation).
    fn reset(&mut self) {
        self.chans = [Chan::default(); 2];
        for e in &mut self.ends {
            e.link.conn = None;
            e.link.commit_sent_on_conn = false;
        }
    }
}

/// The whole world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    /// Link `l` joins node `l` (initiator) and node `l + 1` (responder).
    links: Vec<Link>,
    /// Per node: activated epoch 1 and not halted (`LinkCtx::ready_for`).
    ready: Vec<bool>,
    /// Per node: crashes left.
    crashes: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Bounds and switches of a check.
#[derive(Clone, Debug)]
struct LinkModel {
    /// Nodes in the line (links: `nodes - 1`).
    nodes: usize,
    /// The mutation under test.
    mutant: Option<Mutant>,
    /// DATA sends plus timer expiries per link end.
    budget: u8,
    /// Proposals per link.
    proposals: u8,
    /// Connection breaks per link.
    breaks: u8,
    /// Crash-restarts per node.
    crashes: u8,
    /// Whether nodes other than the first start ready.
    others_ready: bool,
}

impl LinkModel {
    /// Two nodes, one link: the exhaustive configuration (bounds as in `model/link.pml`).
    fn two_nodes(mutant: Option<Mutant>) -> LinkModel {
        LinkModel {
            nodes: 2,
            mutant,
            budget: 3,
            proposals: 2,
            breaks: 1,
            crashes: 1,
            others_ready: false,
        }
    }

    /// Three nodes in a line, two links sharing the middle node.
    fn three_nodes() -> LinkModel {
        LinkModel {
            nodes: 3,
            mutant: None,
            budget: 2,
            proposals: 2,
            breaks: 1,
            crashes: 1,
            others_ready: true,
        }
    }

    fn node_of(l: usize, side: usize) -> usize {
        l + side
    }

    fn id(node: usize) -> NodeId {
        NodeId(node as u64 + 1)
    }

    /// What the node knows of itself (`Node::ctx`).
    fn ctx(&self, w: &World, node: usize) -> LinkCtx {
        LinkCtx {
            ready_for: w.ready[node].then_some(NEXT),
            firmware_digest: [0; 32],
            timers: LinkTimers::for_rtt(1_000),
            mutant: self.mutant,
        }
    }

    fn sends_before_persist(&self) -> bool {
        self.mutant == Some(Mutant::SendBeforePersist)
    }

    /// `Node::apply_link`: persist, then send if the connection is up (noting a COMMIT sent on
    /// it), then re-arm the timer. A send into a full channel resets the connection afterwards.
    fn apply(&self, w: &mut World, l: usize, side: usize, fx: Effect) {
        let ctx = self.ctx(w, Self::node_of(l, side));
        let link = &mut w.links[l];
        let end = &mut link.ends[side];
        if fx.persist {
            if self.sends_before_persist() {
                end.writing = true;
            } else {
                end.disk = end.link.state;
            }
        }
        if fx.committed.is_some() && side == I {
            link.ghost.i_committed |= bit(end.link.state.commit_nonce);
            link.other_path = fx.committed;
        }
        let mut overflow = false;
        if let Some(txn) = fx.send {
            if end.link.conn.is_some() {
                if txn.kind == TxnKind::Commit {
                    end.link.commit_sent_on_conn = true;
                }
                if fx.persist {
                    let r = rank(&end.link.state);
                    link.ghost.promised[side] = link.ghost.promised[side].max(r);
                }
                overflow = !link.chans[side].push(Msg::Txn {
                    kind: txn.kind,
                    epoch: txn.epoch,
                    nonce: txn.nonce,
                });
            }
        }
        let end = &mut link.ends[side].link;
        end.rearm(0, &ctx, fx.persist);
        abstract_time(end);
        if overflow {
            link.reset();
        }
    }

    /// Ghost bookkeeping after a step from `before` to `after`.
    fn observe(before: &World, after: &mut World) {
        for (b, a) in before.links.iter().zip(after.links.iter_mut()) {
            for side in [I, R] {
                let (old, new) = (b.ends[side].link.state, a.ends[side].link.state);
                let g = &mut a.ghost;
                if new.committed < g.max_committed[side] {
                    g.regressed = true;
                }
                g.max_committed[side] = g.max_committed[side].max(new.committed);
                if let (R, Pending::Reflecting(n)) = (side, old.pending) {
                    if new.pending != old.pending && new.committed == old.committed {
                        g.r_abandoned |= bit(n);
                    }
                }
            }
        }
    }

    /// Link `l` at the start: established at epoch 0, connected, both ends knowing the other
    /// announced epoch 1.
    fn initial_link(&self, l: usize) -> Link {
        let end = |side: usize| {
            let me = Self::id(l + side);
            let peer = Self::id(l + 1 - side);
            let mut link = LinkEnd::new(me, peer, LinkState::established(Epoch(0)));
            link.conn = Some(0);
            link.peer_activated = Some(NEXT);
            End {
                disk: link.state,
                link,
                writing: false,
            }
        };
        let ghost = Ghost {
            promised: [rank(&LinkState::established(Epoch(0))); 2],
            ..Ghost::default()
        };
        Link {
            ends: [end(I), end(R)],
            chans: [Chan::default(); 2],
            budget: [self.budget; 2],
            proposals: self.proposals,
            breaks: self.breaks,
            other_path: None,
            ghost,
        }
    }
}

/// Time abstraction: a deadline only says "armed", and the retry count only scales delays.
fn abstract_time(end: &mut LinkEnd) {
    end.tries = 0;
    if end.timer_at.is_some() {
        end.timer_at = Some(0);
    }
}

/// A step of the world.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    /// The head of the channel sent by `from` on `link` reaches the other side.
    Deliver { link: usize, from: usize },
    /// The initiator's guard is re-checked (`try_propose`).
    Propose { link: usize },
    /// The end's armed timer fires (`on_timer`): retransmit, resend COMMIT, QUERY.
    Timer { link: usize, side: usize },
    /// The initiator gives its open proposal up (last retry, or a local failure).
    GiveUp { link: usize },
    /// The end sends DATA tagged with `send_epoch`.
    Data { link: usize, side: usize },
    /// The connection breaks.
    Break { link: usize },
    /// The end learns of the new connection (`handle_up`).
    Up { link: usize, side: usize },
    /// The node crashes and restarts from its disk.
    Crash { node: usize },
    /// `SendBeforePersist` only: the pending write of the end's state becomes durable.
    Persist { link: usize, side: usize },
    /// The responder receives the initiator's commit note from another path.
    OtherPath { link: usize },
    /// The node becomes ready for epoch 1.
    Activate { node: usize },
}

impl Model for LinkModel {
    type State = World;
    type Action = Action;

    fn init_states(&self) -> Vec<World> {
        let links = (0..self.nodes - 1).map(|l| self.initial_link(l)).collect();
        let ready = (0..self.nodes)
            .map(|n| n == 0 || self.others_ready)
            .collect();
        vec![World {
            links,
            ready,
            crashes: vec![self.crashes; self.nodes],
        }]
    }

    fn actions(&self, w: &World, out: &mut Vec<Action>) {
        for (l, link) in w.links.iter().enumerate() {
            for from in [I, R] {
                if !link.chans[from].is_empty() && link.ends[1 - from].link.conn.is_some() {
                    out.push(Action::Deliver { link: l, from });
                }
            }
            let ctx_i = self.ctx(w, Self::node_of(l, I));
            let init = &link.ends[I].link;
            if link.proposals > 0 && init.guard(&ctx_i) {
                out.push(Action::Propose { link: l });
            }
            if matches!(init.state.pending, Pending::Tentative(_)) {
                out.push(Action::GiveUp { link: l });
            }
            for side in [I, R] {
                let end = &link.ends[side].link;
                let ctx = self.ctx(w, Self::node_of(l, side));
                let guard_recheck = side == I && end.state.pending == Pending::None && end.state.acked;
                if link.budget[side] > 0 && end.timer_at.is_some() && !guard_recheck {
                    out.push(Action::Timer { link: l, side });
                }
                if link.budget[side] > 0 && end.send_epoch(&ctx).is_some() {
                    out.push(Action::Data { link: l, side });
                }
                if end.conn.is_none() {
                    out.push(Action::Up { link: l, side });
                }
                if link.ends[side].writing {
                    out.push(Action::Persist { link: l, side });
                }
            }
            let up = link.ends.iter().any(|e| e.link.conn.is_some());
            if link.breaks > 0 && up {
                out.push(Action::Break { link: l });
            }
            if link.other_path.is_some() {
                out.push(Action::OtherPath { link: l });
            }
        }
        for node in 0..self.nodes {
            if w.crashes[node] > 0 {
                out.push(Action::Crash { node });
            }
            if !w.ready[node] {
                out.push(Action::Activate { node });
            }
        }
    }

    fn next_state(&self, before: &World, action: Action) -> Option<World> {
        let mut w = before.clone();
        match action {
            Action::Deliver { link: l, from } => {
                let to = 1 - from;
                let msg = w.links[l].chans[from].pop()?;
                match msg {
                    Msg::Data(tag) => {
                        if tag != w.links[l].ends[to].link.recv_epoch() {
                            w.links[l].ghost.data_mismatch = true;
                        }
                    }
                    Msg::Txn { kind, epoch, nonce } => {
                        let ctx = self.ctx(&w, Self::node_of(l, to));
                        let txn = Txn::new(kind, epoch, nonce);
                        let fx = w.links[l].ends[to].link.on_txn(&txn, &ctx);
                        self.apply(&mut w, l, to, fx);
                    }
                }
            }
            Action::Propose { link: l } => {
                w.links[l].proposals -= 1;
                let ctx = self.ctx(&w, Self::node_of(l, I));
                let fx = w.links[l].ends[I].link.try_propose(&ctx);
                self.apply(&mut w, l, I, fx);
            }
            Action::Timer { link: l, side } => {
                w.links[l].budget[side] -= 1;
                let ctx = self.ctx(&w, Self::node_of(l, side));
                let fx = w.links[l].ends[side].link.on_timer(0, &ctx);
                self.apply(&mut w, l, side, fx);
            }
            Action::GiveUp { link: l } => {
                let ctx = self.ctx(&w, Self::node_of(l, I));
                let fx = w.links[l].ends[I].link.on_event(Stimulus::GiveUp, &ctx);
                self.apply(&mut w, l, I, fx);
            }
            Action::Data { link: l, side } => {
                let ctx = self.ctx(&w, Self::node_of(l, side));
                let link = &mut w.links[l];
                link.budget[side] -= 1;
                let tag = link.ends[side].link.send_epoch(&ctx)?;
                let p = &mut link.ghost.promised[side];
                *p = (*p).max((tag.0, 0, 0, 0));
                if !link.chans[side].push(Msg::Data(tag)) {
                    link.reset();
                }
            }
            Action::Break { link: l } => {
                w.links[l].breaks -= 1;
                w.links[l].reset();
            }
            Action::Up { link: l, side } => {
                let ctx = self.ctx(&w, Self::node_of(l, side));
                let end = &mut w.links[l].ends[side].link;
                end.conn = Some(0);
                end.commit_sent_on_conn = false;
                end.peer_activated = Some(NEXT);
                let fx = end.on_event(Stimulus::Reconnect, &ctx);
                self.apply(&mut w, l, side, fx);
            }
            Action::Crash { node } => {
                w.crashes[node] -= 1;
                for (l, side) in [(node.wrapping_sub(1), R), (node, I)] {
                    if l >= w.links.len() {
                        continue;
                    }
                    let ctx = self.ctx(&w, node);
                    let link = &mut w.links[l];
                    link.reset();
                    let end = &mut link.ends[side];
                    if rank(&end.disk) < link.ghost.promised[side] {
                        link.ghost.forgot = true;
                    }
                    end.link = LinkEnd::new(Self::id(node), end.link.peer, end.disk);
                    end.writing = false;
                    let fx = end.link.on_event(Stimulus::Restart, &ctx);
                    self.apply(&mut w, l, side, fx);
                }
            }
            Action::Persist { link: l, side } => {
                let end = &mut w.links[l].ends[side];
                end.disk = end.link.state;
                end.writing = false;
            }
            Action::OtherPath { link: l } => {
                let epoch = w.links[l].other_path?;
                let ctx = self.ctx(&w, Self::node_of(l, R));
                let fx = w.links[l].ends[R].link.commit_on_other_path(epoch, &ctx);
                if fx == Effect::default() {
                    return None;
                }
                self.apply(&mut w, l, R, fx);
            }
            Action::Activate { node } => w.ready[node] = true,
        }
        Self::observe(before, &mut w);
        Some(w)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AGREEMENT, |_, w: &World| {
                w.links.iter().all(|l| {
                    let r = &l.ends[R].link.state;
                    r.committed < NEXT || l.ghost.i_committed & bit(r.commit_nonce) != 0
                })
            }),
            Property::always(DATA_AGREEMENT, |_, w: &World| {
                w.links.iter().all(|l| !l.ghost.data_mismatch)
            }),
            Property::always(NO_COMMIT_ABANDONED, |_, w: &World| {
                w.links
                    .iter()
                    .all(|l| l.ghost.i_committed & l.ghost.r_abandoned == 0)
            }),
            Property::always(MONOTONIC, |_, w: &World| {
                w.links.iter().all(|l| !l.ghost.regressed)
            }),
            Property::always(DURABLE, |_, w: &World| {
                w.links.iter().all(|l| !l.ghost.forgot)
            }),
            Property::sometimes(BOTH_COMMITTED, |_, w: &World| {
                w.links
                    .iter()
                    .all(|l| l.ends.iter().all(|e| e.link.state.committed == NEXT))
            }),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Prints a counterexample: its steps and the ghost of the last state.
fn show(name: &str, path: Path<World, Action>) {
    let last = path.last_state().clone();
    let actions = path.into_actions();
    println!("  counterexample to \"{name}\" ({} steps):", actions.len());
    for a in &actions {
        println!("    {a:?}");
    }
    for (l, link) in last.links.iter().enumerate() {
        println!(
            "    link {l}: I {:?} / R {:?}; {:?}",
            link.ends[I].link.state, link.ends[R].link.state, link.ghost
        );
    }
}

/// Checks the unmutated protocol exhaustively on two nodes.
#[test]
fn protocol_holds_on_two_nodes() {
    let start = Instant::now();
    let mut m = LinkModel::two_nodes(None);
    let env = |k: &str, d: u8| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    m.budget = env("MB", m.budget);
    m.breaks = env("MBR", m.breaks);
    m.crashes = env("MC", m.crashes);
    m.proposals = env("MP", m.proposals);
    let limit = env("MLIM", 0) as usize * 100_000;
    let mut b = m.checker();
    if limit > 0 { b = b.target_state_count(limit); }
    let checker = b.spawn_bfs().join();
    println!(
        "two nodes, correct protocol: {} unique states ({} generated), depth {}, {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    for (name, path) in checker.discoveries() {
        if SAFETY.contains(&name) {
            show(name, path);
        }
    }
    checker.assert_properties();
    assert!(
        checker.unique_state_count() > 10_000,
        "the state space shrank: a bound or an action is missing"
    );
}

/// Checks the unmutated protocol on three nodes in a line, to a bounded depth.
#[test]
fn protocol_holds_on_three_nodes_bounded() {
    let start = Instant::now();
    let checker = LinkModel::three_nodes()
        .checker()
        .target_max_depth(18)
        .spawn_bfs()
        .join();
    println!(
        "three nodes, correct protocol: {} unique states ({} generated), depth {}, {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    for name in SAFETY {
        if let Some(path) = checker.discovery(name) {
            show(name, path);
            panic!("counterexample to \"{name}\" on three nodes");
        }
    }
}

/// Checks a mutant until the property it must break has a counterexample; returns the safety
/// properties broken by then (the first found, and any found in the same breadth-first layer).
fn catch(mutant: Mutant, expected: &'static str) -> Vec<&'static str> {
    let start = Instant::now();
    let checker = LinkModel::two_nodes(Some(mutant))
        .checker()
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([expected])))
        .spawn_bfs()
        .join();
    println!(
        "{mutant:?}: {} unique states, {:.2?}",
        checker.unique_state_count(),
        start.elapsed()
    );
    let path = checker
        .discovery(expected)
        .unwrap_or_else(|| panic!("{mutant:?} was not caught by \"{expected}\""));
    // The path replays: the counterexample is a real run of the model.
    checker.assert_discovery(expected, path.clone().into_actions());
    show(expected, path);
    let broken: Vec<_> = SAFETY
        .into_iter()
        .filter(|n| checker.discovery(n).is_some())
        .collect();
    println!("  broken so far: {broken:?}");
    broken
}

#[test]
fn mutant_responder_aborts_after_reflect_is_caught() {
    catch(Mutant::ResponderAbortsAfterReflect, NO_COMMIT_ABANDONED);
}

#[test]
fn mutant_responder_does_not_pause_is_caught() {
    catch(Mutant::ResponderDoesNotPause, DATA_AGREEMENT);
}

#[test]
fn mutant_data_before_commit_is_caught() {
    catch(Mutant::DataBeforeCommit, DATA_AGREEMENT);
}

#[test]
fn mutant_commit_on_other_nonce_is_caught() {
    catch(Mutant::CommitOnOtherNonce, DATA_AGREEMENT);
}

#[test]
fn mutant_commit_on_other_path_is_caught() {
    catch(Mutant::CommitOnOtherPath, DATA_AGREEMENT);
}

#[test]
fn mutant_send_before_persist_is_caught() {
    catch(Mutant::SendBeforePersist, DURABLE);
}
