//! A tiny deterministic in-memory driver for several `Node`s (quinn-proto style).
//!
//! * virtual time; one FIFO queue of in-flight messages per direction, fixed one-way delay;
//! * a connection per link with a generation; breaking it loses what is in flight both ways;
//! * durable storage per node, applying every `Output::Persist` with `Durable::apply`;
//! * timers, staging and activation in one `BinaryHeap`; Stage / Activate complete after a fixed
//!   delay by calling `staged` / `activation_done`;
//! * crash (drop the node, break its connections) and restart (`Node::new` from its `Durable`);
//! * checks after every output: a transaction message is sent only once the state it depends on
//!   is durable; persisted link epochs never go back; the disruption budget holds; and probes
//!   (epoch-tagged stand-ins for data) sent while a link moves are never misinterpreted.
//!
//! `drive()` runs until nothing is left to do and panics past a step bound (livelock).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};

use entente_proto::link::LinkState;
use entente_proto::msg::{Campaign, Control, ControlAction};
use entente_proto::node::{Durable, Event, Record, TimerKey};
use entente_proto::{
    Epoch, Message, Nanos, Node, NodeConfig, NodeId, Output, Pending, Phase, Role, Txn, TxnKind,
    Window,
};

/// One-way link delay.
pub const DELAY: Nanos = 10_000;
/// Staging takes this long.
pub const STAGE: Nanos = 1_000_000;
/// Activation takes this long.
pub const ACTIVATE: Nanos = 5_000_000;

/// A campaign moving every link from `epoch - 1` to `epoch`.
pub fn campaign(epoch: u64, disruptive: bool, origin: u64) -> Campaign {
    Campaign {
        epoch: Epoch(epoch),
        window: Window::new(epoch - 1, epoch),
        image_digest: [epoch as u8; 32],
        disruptive,
        max_activation_ms: 30_000,
        origin: NodeId(origin),
    }
}

pub fn n(id: u64) -> NodeId {
    NodeId(id)
}

struct Slot {
    cfg: NodeConfig,
    node: Option<Node>,
    durable: Durable,
    /// Firmware the device runs (survives crashes).
    device: Window,
    /// Firmware it ran before (what a rollback runs again).
    previous: Window,
    /// Campaign last handed to the device for staging.
    staging: Option<Campaign>,
    /// Bumped on every crash: timers and device work of older lives are dropped.
    life: u64,
    /// Link epochs the device was told to speak.
    device_links: BTreeMap<NodeId, Epoch>,
    /// Per-node delay override for activation.
    activate_delay: Nanos,
    /// Per-node delay override for staging.
    stage_delay: Nanos,
    /// The device cannot take this link epoch (it votes no).
    refuse_link_epoch: Option<Epoch>,
    /// Applying a link epoch fails this many more times.
    link_epoch_failures: u32,
    /// How long a drain before a disruptive activation takes.
    drain_delay: Nanos,
}

/// How long the simulated device takes to answer link-epoch work.
pub const DEVICE_DELAY: Nanos = 20_000;

#[derive(Debug)]
enum Job {
    Timer {
        node: NodeId,
        life: u64,
        key: TimerKey,
    },
    Staged {
        node: NodeId,
        life: u64,
        epoch: Epoch,
    },
    Activated {
        node: NodeId,
        life: u64,
        epoch: Epoch,
        disruptive: bool,
    },
    /// The drain before a disruptive activation finished.
    Drained {
        node: NodeId,
        life: u64,
        epoch: Epoch,
    },
    /// The device answers link-epoch work: applied (`peer` set) or prepared.
    Device {
        node: NodeId,
        life: u64,
        peer: Option<NodeId>,
        epoch: Epoch,
    },
}

struct InFlight {
    at: Nanos,
    generation: u64,
    msg: Message,
}

#[derive(Copy, Clone, Debug, Default)]
struct Conn {
    generation: u64,
    up: bool,
}

/// The simulated cluster.
pub struct Sim {
    pub now: Nanos,
    slots: BTreeMap<NodeId, Slot>,
    queues: BTreeMap<(NodeId, NodeId), VecDeque<InFlight>>,
    conns: BTreeMap<(NodeId, NodeId), Conn>,
    heap: BinaryHeap<Reverse<(Nanos, u64)>>,
    jobs: HashMap<u64, Job>,
    seq: u64,
    /// Steps taken so far.
    pub steps: u64,
    /// `drive()` panics after this many steps.
    pub max_steps: u64,
    /// Nodes in a disruptive activation now.
    activating: BTreeSet<NodeId>,
    /// Most neighbours of one node in a disruptive activation at once, over the run.
    pub max_neighbours_activating: usize,
    /// Every event reported, with its node and time.
    pub events: Vec<(Nanos, NodeId, Event)>,
    /// Every output batch taken, per node (kept when `record_batches` is set).
    pub batches: Vec<(NodeId, Vec<Output>)>,
    pub record_batches: bool,
    /// Send probes on links that are moving.
    pub probes: bool,
    probe_seq: u64,
    /// Transaction messages delivered, in order: (from, to, txn).
    pub txns: Vec<(NodeId, NodeId, Txn)>,
    /// Drains started: (node, time).
    pub drains: Vec<(NodeId, Nanos)>,
    /// LEASE_REQs sent: (node, time).
    pub lease_reqs: Vec<(NodeId, Nanos)>,
    /// Every activation handed to a device: (node, disruptive, start, end if it finished).
    pub activations: Vec<(NodeId, bool, Nanos, Option<Nanos>)>,
    /// A broken driver that sends before it persists (to prove the durability check works).
    pub send_before_persist: bool,
    /// Print every delivery and job (debugging).
    pub trace: bool,
}

fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// Nodes with these ids and links (every link both ways), all starting at `window` with
    /// links established at `window.max`, connections down.
    pub fn new(ids: &[u64], links: &[(u64, u64)], window: Window) -> Sim {
        Sim::with(ids, links, window, |_| {}, true)
    }

    /// Like [`Sim::new`]; `tweak` adjusts each configuration; `established`: links start agreed
    /// at `window.max` (otherwise with no durable state at all, to be agreed by LINK_HELLO).
    pub fn with(
        ids: &[u64],
        links: &[(u64, u64)],
        window: Window,
        mut tweak: impl FnMut(&mut NodeConfig),
        established: bool,
    ) -> Sim {
        let mut sim = Sim {
            now: 0,
            slots: BTreeMap::new(),
            queues: BTreeMap::new(),
            conns: BTreeMap::new(),
            heap: BinaryHeap::new(),
            jobs: HashMap::new(),
            seq: 0,
            steps: 0,
            max_steps: 500_000,
            activating: BTreeSet::new(),
            max_neighbours_activating: 0,
            events: Vec::new(),
            batches: Vec::new(),
            record_batches: false,
            probes: true,
            probe_seq: 0,
            txns: Vec::new(),
            drains: Vec::new(),
            lease_reqs: Vec::new(),
            trace: false,
            send_before_persist: false,
            activations: Vec::new(),
        };
        for &id in ids {
            let neighbours: Vec<NodeId> = links
                .iter()
                .filter_map(|&(a, b)| {
                    (a == id)
                        .then_some(b)
                        .or((b == id).then_some(a))
                        .map(NodeId)
                })
                .collect();
            let mut cfg = NodeConfig::new(NodeId(id), neighbours.clone(), 2 * DELAY);
            cfg.firmware_window = window;
            tweak(&mut cfg);
            let mut durable = Durable::default();
            if established {
                for &p in &neighbours {
                    durable.links.push((p, LinkState::established(window.max)));
                }
            }
            sim.slots.insert(
                NodeId(id),
                Slot {
                    device: cfg.firmware_window,
                    previous: cfg.firmware_window,
                    cfg,
                    node: None,
                    durable,
                    staging: None,
                    life: 0,
                    device_links: BTreeMap::new(),
                    activate_delay: ACTIVATE,
                    stage_delay: STAGE,
                    refuse_link_epoch: None,
                    link_epoch_failures: 0,
                    drain_delay: DEVICE_DELAY,
                },
            );
        }
        for &(a, b) in links {
            let (a, b) = (NodeId(a), NodeId(b));
            sim.conns.insert(key(a, b), Conn::default());
            sim.queues.insert((a, b), VecDeque::new());
            sim.queues.insert((b, a), VecDeque::new());
        }
        for id in sim.ids() {
            sim.boot(id);
        }
        sim
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.slots.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.slots[&id].node.as_ref().expect("node is up")
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.slots
            .get_mut(&id)
            .unwrap()
            .node
            .as_mut()
            .expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.slots[&id].node.is_some()
    }

    pub fn durable(&self, id: NodeId) -> &Durable {
        &self.slots[&id].durable
    }

    pub fn durable_link(&self, id: NodeId, peer: NodeId) -> Option<LinkState> {
        self.slots[&id]
            .durable
            .links
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|x| x.1)
    }

    pub fn device_link(&self, id: NodeId, peer: NodeId) -> Option<Epoch> {
        self.slots[&id].device_links.get(&peer).copied()
    }

    /// When the device activation running on `id` finishes, if one runs.
    pub fn activation_due(&self, id: NodeId) -> Option<Nanos> {
        let life = self.slots[&id].life;
        self.heap
            .iter()
            .filter_map(|Reverse((at, seq))| match self.jobs.get(seq) {
                Some(Job::Activated { node, life: l, .. }) if *node == id && *l == life => {
                    Some(*at)
                }
                _ => None,
            })
            .min()
    }

    /// Drops what a stopped node persisted about one link (a link configured while it was down).
    pub fn forget_link(&mut self, id: NodeId, peer: NodeId) {
        assert!(!self.is_up(id));
        self.slots
            .get_mut(&id)
            .unwrap()
            .durable
            .links
            .retain(|(p, _)| *p != peer);
    }

    /// Replaces the firmware the device of `id` runs (e.g. a spare shipped with newer firmware).
    pub fn set_device_window(&mut self, id: NodeId, w: Window) {
        self.slots.get_mut(&id).unwrap().device = w;
    }

    /// Node `id`'s drains take `d`.
    pub fn set_drain_delay(&mut self, id: NodeId, d: Nanos) {
        self.slots.get_mut(&id).unwrap().drain_delay = d;
    }

    /// Node `id`'s device refuses link epoch `e` (votes no before a REFLECT).
    pub fn refuse_link_epoch(&mut self, id: NodeId, e: Epoch) {
        self.slots.get_mut(&id).unwrap().refuse_link_epoch = Some(e);
    }

    /// Node `id`'s device fails to apply the next `n` link epochs.
    pub fn fail_link_epochs(&mut self, id: NodeId, n: u32) {
        self.slots.get_mut(&id).unwrap().link_epoch_failures = n;
    }

    /// The link epochs node `id`'s device was told, by peer.
    pub fn device_links(&self, id: NodeId) -> &BTreeMap<NodeId, Epoch> {
        &self.slots[&id].device_links
    }

    pub fn set_activate_delay(&mut self, id: NodeId, d: Nanos) {
        self.slots.get_mut(&id).unwrap().activate_delay = d;
    }

    pub fn set_stage_delay(&mut self, id: NodeId, d: Nanos) {
        self.slots.get_mut(&id).unwrap().stage_delay = d;
    }

    /// Links as (lower, higher) pairs.
    pub fn links(&self) -> Vec<(NodeId, NodeId)> {
        self.conns.keys().copied().collect()
    }

    /// Neighbours of `id` in the configured graph.
    pub fn neighbours(&self, id: NodeId) -> Vec<NodeId> {
        self.slots[&id].cfg.neighbours.clone()
    }

    fn schedule(&mut self, at: Nanos, job: Job) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.jobs.insert(self.seq, job);
    }

    /// Builds (or rebuilds) the node from its durable state, then connects its links.
    fn boot(&mut self, id: NodeId) {
        let now = self.now;
        let slot = self.slots.get_mut(&id).unwrap();
        assert!(slot.node.is_none());
        let mut cfg = slot.cfg.clone();
        cfg.firmware_window = slot.device;
        slot.node = Some(Node::new(cfg, &slot.durable, now));
        self.flush(id);
        for p in self.neighbours(id) {
            if self.is_up(p) {
                self.connect(id, p);
            }
        }
    }

    /// Whether the link's connection is up.
    pub fn is_connected(&self, a: NodeId, b: NodeId) -> bool {
        self.conns[&key(a, b)].up
    }

    /// Opens a new connection between two live neighbours.
    pub fn connect(&mut self, a: NodeId, b: NodeId) {
        let c = self.conns.get_mut(&key(a, b)).expect("configured link");
        assert!(!c.up, "already connected");
        c.generation += 1;
        c.up = true;
        let g = c.generation;
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            self.node_mut(x).handle_up(now, y, g);
            self.flush(x);
        }
    }

    /// Breaks the connection: what is in flight either way is lost.
    pub fn disconnect(&mut self, a: NodeId, b: NodeId) {
        let c = self.conns.get_mut(&key(a, b)).expect("configured link");
        if !c.up {
            return;
        }
        c.up = false;
        let g = c.generation;
        self.queues.get_mut(&(a, b)).unwrap().clear();
        self.queues.get_mut(&(b, a)).unwrap().clear();
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            if self.is_up(x) {
                self.node_mut(x).handle_down(now, y, g);
                self.flush(x);
            }
        }
    }

    /// The node stops: connections break, its timers and device work are lost.
    pub fn crash(&mut self, id: NodeId) {
        if self.trace {
            eprintln!("{} CRASH {id}", self.now);
        }
        for p in self.neighbours(id) {
            self.disconnect(id, p);
        }
        let slot = self.slots.get_mut(&id).unwrap();
        slot.node = None;
        slot.life += 1;
        self.activating.remove(&id);
        let now = self.now;
        for a in self
            .activations
            .iter_mut()
            .filter(|a| a.0 == id && a.3.is_none())
        {
            a.3 = Some(now);
        }
    }

    /// The node starts again from what it persisted.
    pub fn restart(&mut self, id: NodeId) {
        if self.trace {
            eprintln!("{} RESTART {id}", self.now);
        }
        self.boot(id);
    }

    /// The node starts again with its disk wiped (no durable state), a higher incarnation.
    pub fn restart_wiped(&mut self, id: NodeId) {
        if self.trace {
            eprintln!("{} WIPED RESTART {id}", self.now);
        }
        let slot = self.slots.get_mut(&id).unwrap();
        slot.durable = Durable::default();
        slot.cfg.incarnation_hint += 1;
        self.boot(id);
    }

    /// The node starts again with its store lost and nothing else telling it its history (the
    /// start counter lived in the lost store too): same incarnation hint as before.
    pub fn restart_lost_store(&mut self, id: NodeId) {
        if self.trace {
            eprintln!("{} LOST-STORE RESTART {id}", self.now);
        }
        self.slots.get_mut(&id).unwrap().durable = Durable::default();
        self.boot(id);
    }

    /// Operator: start a campaign on `origin`.
    pub fn start_campaign(&mut self, origin: NodeId, c: Campaign) {
        let now = self.now;
        self.node_mut(origin).start_campaign(now, c);
        self.flush(origin);
    }

    /// Operator: a campaign control on `at`.
    pub fn control(&mut self, at: NodeId, epoch: u64, action: ControlAction, counter: u64) {
        let now = self.now;
        self.node_mut(at).control(
            now,
            Control {
                epoch: Epoch(epoch),
                action,
                counter,
            },
        );
        self.flush(at);
    }

    /// Runs `f` on a node at the current time and carries out its outputs; returns them.
    pub fn with_node<T>(&mut self, id: NodeId, f: impl FnOnce(&mut Node, Nanos) -> T) -> T {
        let now = self.now;
        let r = f(self.node_mut(id), now);
        self.flush(id);
        r
    }

    /// Runs `f` on a node at the current time; returns the outputs it produced (carried out).
    pub fn outputs_of(&mut self, id: NodeId, f: impl FnOnce(&mut Node, Nanos)) -> Vec<Output> {
        let now = self.now;
        f(self.node_mut(id), now);
        self.flush(id)
    }

    /// Injects a message as if `from` sent it on the current connection (no delay).
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: Message) -> Vec<Output> {
        let now = self.now;
        self.node_mut(to).handle_message(now, from, msg);
        self.flush(to)
    }

    /// Carries out every output the node produced so far, in order. Returns them.
    fn flush(&mut self, id: NodeId) -> Vec<Output> {
        let mut outs = Vec::new();
        self.slots
            .get_mut(&id)
            .unwrap()
            .node
            .as_mut()
            .unwrap()
            .take_outputs(&mut outs);
        let mut order = outs.clone();
        if self.send_before_persist {
            order.sort_by_key(|o| !matches!(o, Output::Send { .. }));
        }
        for o in order {
            if self.trace && !matches!(o, Output::Timer { .. }) {
                eprintln!("    {id} out: {o:?}");
            }
            self.carry_out(id, o);
        }
        if self.record_batches && !outs.is_empty() {
            self.batches.push((id, outs.clone()));
        }
        outs
    }

    fn carry_out(&mut self, id: NodeId, o: Output) {
        let now = self.now;
        match o {
            Output::Persist(rec) => {
                if let Record::Link(peer, s) = &rec {
                    if let Some(old) = self.durable_link(id, *peer) {
                        assert!(
                            s.fresh || old.fresh || s.committed >= old.committed,
                            "{id}: persisted link to {peer} went back: {old:?} -> {s:?}"
                        );
                    }
                }
                self.slots.get_mut(&id).unwrap().durable.apply(&rec);
            }
            Output::Send { to, msg, .. } => {
                if let Message::Txn(t) = &msg {
                    self.check_durable_before_send(id, to, t);
                }
                self.send(id, to, msg);
            }
            Output::Timer { at, key } => {
                assert!(at >= now, "{id}: timer {key:?} in the past");
                let life = self.slots[&id].life;
                self.schedule(
                    at,
                    Job::Timer {
                        node: id,
                        life,
                        key,
                    },
                );
            }
            Output::Stage(c) => {
                let slot = self.slots.get_mut(&id).unwrap();
                slot.staging = Some(c);
                let (life, d) = (slot.life, slot.stage_delay);
                self.schedule(
                    now + d,
                    Job::Staged {
                        node: id,
                        life,
                        epoch: c.epoch,
                    },
                );
            }
            Output::Activate { epoch, disruptive } => {
                let slot = &self.slots[&id];
                assert_eq!(
                    slot.staging.map(|c| c.epoch),
                    Some(epoch),
                    "{id}: activating what was not staged"
                );
                let (life, d) = (slot.life, slot.activate_delay);
                self.activations.push((id, disruptive, now, None));
                if disruptive {
                    self.activating.insert(id);
                    self.check_budget();
                }
                self.schedule(
                    now + d,
                    Job::Activated {
                        node: id,
                        life,
                        epoch,
                        disruptive,
                    },
                );
            }
            Output::SetLinkEpoch { peer, epoch } => {
                let slot = self.slots.get_mut(&id).unwrap();
                assert!(
                    slot.device.contains(epoch),
                    "{id}: link to {peer} set to {epoch} outside running window {:?}",
                    slot.device
                );
                let life = slot.life;
                self.schedule(
                    now + DEVICE_DELAY,
                    Job::Device {
                        node: id,
                        life,
                        peer: Some(peer),
                        epoch,
                    },
                );
            }
            Output::Drain { epoch } => {
                let (life, d) = (self.slots[&id].life, self.slots[&id].drain_delay);
                self.drains.push((id, now));
                self.schedule(
                    now + d,
                    Job::Drained {
                        node: id,
                        life,
                        epoch,
                    },
                );
            }
            Output::PrepareLinkEpoch { epoch } => {
                let life = self.slots[&id].life;
                self.schedule(
                    now + DEVICE_DELAY,
                    Job::Device {
                        node: id,
                        life,
                        peer: None,
                        epoch,
                    },
                );
            }
            Output::RollBack { epoch } => {
                // The device goes back to its other bank at once.
                let slot = self.slots.get_mut(&id).unwrap();
                slot.device = slot.previous;
                let w = slot.device;
                self.node_mut(id).rollback_done(now, epoch, Ok(w));
            }
            Output::Event(e) => self.events.push((now, id, e)),
        }
    }

    /// Invariant: every transaction message is sent only after the state it states is durable.
    fn check_durable_before_send(&self, id: NodeId, to: NodeId, t: &Txn) {
        let s = self
            .durable_link(id, to)
            .unwrap_or_else(|| panic!("{id}: sends {t:?} to {to} with no durable link state"));
        let role = Role::of(id, to);
        let ok = match (role, t.kind) {
            (Role::Initiator, TxnKind::Propose) => {
                s.committed.next() == t.epoch && s.pending == Pending::Tentative(t.nonce)
            }
            (Role::Initiator, TxnKind::Commit) => {
                s.committed > t.epoch || (s.committed == t.epoch && s.commit_nonce == t.nonce)
            }
            // the initiator never aborts a nonce it has open or committed
            (Role::Initiator, TxnKind::Abort) => {
                s.pending != Pending::Tentative(t.nonce)
                    && !(s.committed == t.epoch && s.commit_nonce == t.nonce)
            }
            (Role::Responder, TxnKind::Reflect | TxnKind::Query) => {
                s.committed.next() == t.epoch && s.pending == Pending::Reflecting(t.nonce)
            }
            (Role::Responder, TxnKind::CommitAck) => s.committed >= t.epoch,
            // a refusal: the responder does not stand by that nonce
            (Role::Responder, TxnKind::Abort) => {
                s.pending != Pending::Reflecting(t.nonce) && s.committed < t.epoch
            }
            _ => false,
        };
        assert!(
            ok,
            "{id} sends {t:?} to {to} but its durable state is {s:?} (role {role:?})"
        );
    }

    fn check_budget(&mut self) {
        for (id, slot) in &self.slots {
            let busy = slot
                .cfg
                .neighbours
                .iter()
                .filter(|p| self.activating.contains(p))
                .count();
            self.max_neighbours_activating = self.max_neighbours_activating.max(busy);
            assert!(
                busy <= slot.cfg.max_unavailable_neighbors,
                "budget: {busy} neighbours of {id} activating at once ({:?})",
                self.activating
            );
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        let c = self.conns[&key(from, to)];
        if !c.up {
            return;
        }
        if matches!(msg, Message::Lease(entente_proto::msg::Lease::Req { .. })) {
            self.lease_reqs.push((from, self.now));
        }
        let at = self.now + DELAY;
        self.queues
            .get_mut(&(from, to))
            .unwrap()
            .push_back(InFlight {
                at,
                generation: c.generation,
                msg,
            });
    }

    /// Whether both ends of the link agree and nothing is open (no probes needed).
    fn settled(&self, a: NodeId, b: NodeId) -> bool {
        let (Some(x), Some(y)) = (&self.slots[&a].node, &self.slots[&b].node) else {
            return true;
        };
        let (Some(la), Some(lb)) = (x.link(b), y.link(a)) else {
            return true;
        };
        let (sa, sb) = (la.state, lb.state);
        let initiator_acked = if la.role == Role::Initiator {
            sa.acked
        } else {
            sb.acked
        };
        !sa.fresh
            && !sb.fresh
            && sa.committed == sb.committed
            && sa.pending == Pending::None
            && sb.pending == Pending::None
            && initiator_acked
    }

    /// After a protocol step of `id`: a probe on every link that is moving, tagged with the
    /// epoch the node would send data in.
    fn send_probes(&mut self, id: NodeId) {
        if !self.probes || !self.is_up(id) {
            return;
        }
        for p in self.neighbours(id) {
            if self.settled(id, p) {
                continue;
            }
            if let Some(epoch) = self.node(id).send_epoch(p) {
                let durable = self.durable_link(id, p).map(|s| s.committed);
                assert_eq!(
                    durable,
                    Some(epoch),
                    "{id}: data to {p} in a non-durable epoch"
                );
                assert_eq!(
                    self.device_link(id, p),
                    Some(epoch),
                    "{id}: data to {p} in an epoch its device has not acknowledged"
                );
                self.probe_seq += 1;
                let seq = self.probe_seq;
                self.send(id, p, Message::Probe { epoch, seq });
            }
        }
    }

    /// The time of the next thing to happen, if any.
    pub fn next_time(&self) -> Option<Nanos> {
        let m = self
            .queues
            .values()
            .filter_map(|q| q.front().map(|f| f.at))
            .min();
        let j = self.heap.peek().map(|Reverse((at, _))| *at);
        match (m, j) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does the next thing (a delivery, a timer, a finished staging or activation).
    /// Returns false when nothing is left.
    pub fn step(&mut self) -> bool {
        let msg = self
            .queues
            .iter()
            .filter_map(|(k, q)| q.front().map(|f| (f.at, *k)))
            .min();
        let job = self.heap.peek().map(|Reverse(x)| *x);
        self.steps += 1;
        match (msg, job) {
            (None, None) => false,
            (Some((at, k)), j) if j.is_none_or(|(jt, _)| at <= jt) => {
                let f = self.queues.get_mut(&k).unwrap().pop_front().unwrap();
                self.now = at;
                let c = self.conns[&key(k.0, k.1)];
                assert!(c.up && c.generation == f.generation, "delivered late");
                let probe = matches!(f.msg, Message::Probe { .. });
                if self.trace
                    && !probe
                    && !matches!(f.msg, Message::Gossip(_) | Message::GossipAck { .. })
                {
                    eprintln!("{at} {} -> {}: {:?}", k.0, k.1, f.msg);
                }
                if let Message::Txn(t) = &f.msg {
                    self.txns.push((k.0, k.1, *t));
                }
                let now = self.now;
                self.node_mut(k.1).handle_message(now, k.0, f.msg);
                self.flush(k.1);
                if !probe {
                    self.send_probes(k.1);
                }
                true
            }
            (_, Some((at, seq))) => {
                self.heap.pop();
                self.now = at;
                let job = self.jobs.remove(&seq).unwrap();
                self.run_job(job);
                true
            }
            (_, None) => unreachable!(),
        }
    }

    fn run_job(&mut self, job: Job) {
        let now = self.now;
        let (id, life) = match job {
            Job::Timer { node, life, .. }
            | Job::Staged { node, life, .. }
            | Job::Activated { node, life, .. }
            | Job::Device { node, life, .. }
            | Job::Drained { node, life, .. } => (node, life),
        };
        if self.slots[&id].life != life || !self.is_up(id) {
            return;
        }
        if self.trace
            && !matches!(
                job,
                Job::Timer {
                    key: TimerKey::Gossip,
                    ..
                }
            )
        {
            eprintln!("{now} {id}: {job:?}");
        }
        match job {
            Job::Timer { key, .. } => self.node_mut(id).handle_timer(now, key),
            Job::Staged { epoch, .. } => self.node_mut(id).staged(now, epoch, true),
            Job::Activated {
                epoch, disruptive, ..
            } => {
                let slot = self.slots.get_mut(&id).unwrap();
                let c = slot.staging.expect("staged");
                assert_eq!(c.epoch, epoch);
                slot.previous = slot.device;
                slot.device = c.window;
                if disruptive {
                    self.activating.remove(&id);
                }
                if let Some(a) = self
                    .activations
                    .iter_mut()
                    .rev()
                    .find(|a| a.0 == id && a.3.is_none())
                {
                    a.3 = Some(now);
                }
                self.node_mut(id).activation_done(now, epoch, true);
            }
            Job::Drained { epoch, .. } => self.node_mut(id).drain_done(now, epoch, Ok(())),
            Job::Device { peer, epoch, .. } => {
                let slot = self.slots.get_mut(&id).unwrap();
                let refused = slot.refuse_link_epoch == Some(epoch);
                match peer {
                    None => {
                        let r = if refused {
                            Err("refused".into())
                        } else {
                            Ok(())
                        };
                        self.node_mut(id).link_epoch_prepared(now, epoch, r);
                    }
                    Some(peer) => {
                        let r = if refused || slot.link_epoch_failures > 0 {
                            slot.link_epoch_failures = slot.link_epoch_failures.saturating_sub(1);
                            Err("failed".to_owned())
                        } else {
                            slot.device_links.insert(peer, epoch);
                            Ok(())
                        };
                        self.node_mut(id).link_epoch_applied(now, peer, epoch, r);
                    }
                }
            }
        }
        self.flush(id);
        self.send_probes(id);
    }

    /// Steps until nothing is left. Panics past `max_steps` (livelock).
    pub fn drive(&mut self) {
        while self.step() {
            assert!(
                self.steps < self.max_steps,
                "livelock: {} steps, t = {} ns",
                self.steps,
                self.now
            );
        }
        self.check_probes();
    }

    /// Steps until `pred` holds (checked before each step). Panics if everything went idle or
    /// the step bound passed first.
    pub fn run_until(&mut self, mut pred: impl FnMut(&Sim) -> bool) {
        while !pred(self) {
            assert!(self.step(), "went idle before the condition held");
            assert!(
                self.steps < self.max_steps,
                "livelock before the condition held"
            );
        }
    }

    /// Steps through everything due in the next `d` nanoseconds, then moves the clock there.
    pub fn run_for(&mut self, d: Nanos) {
        let end = self.now + d;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
            assert!(self.steps < self.max_steps, "livelock within run_for");
        }
        self.now = end;
    }

    /// No probe was ever interpreted under another epoch than its sender's.
    pub fn check_probes(&self) {
        for (t, id, e) in &self.events {
            assert!(
                !matches!(e, Event::ProbeMismatch { .. }),
                "at {t}: {id}: {e:?}"
            );
        }
        for id in self.ids() {
            if let Some(node) = &self.slots[&id].node {
                assert_eq!(node.stats().probe_mismatches, 0, "{id}");
            }
        }
    }

    /// Every link committed `e` at both ends (memory, durable, device) and every node converged.
    pub fn assert_converged(&self, e: u64) {
        let e = Epoch(e);
        for (a, b) in self.links() {
            for (x, y) in [(a, b), (b, a)] {
                let l = self.node(x).link(y).unwrap();
                assert_eq!(l.state.committed, e, "{x}–{y}: {:?}", l.state);
                assert_eq!(l.state.pending, Pending::None, "{x}–{y}");
                assert!(l.state.acked || l.role == Role::Responder, "{x}–{y}");
                assert_eq!(self.durable_link(x, y), Some(l.state), "{x}–{y} durable");
                assert_eq!(self.device_link(x, y), Some(e), "{x}–{y} device");
                assert_eq!(self.node(x).send_epoch(y), Some(e), "{x}–{y} data");
                assert_eq!(self.node(x).recv_epoch(y), Some(e), "{x}–{y} data");
            }
        }
        for id in self.ids() {
            let p = self.node(id).phase();
            assert_eq!((p.phase, p.epoch), (Phase::Converged, e), "{id}");
            assert_eq!(self.durable(id).node.as_ref().unwrap().phase, p, "{id}");
            assert!(!self.node(id).is_activating());
        }
    }

    /// Whether the disruptive activations of any two of `nodes` overlapped in time.
    pub fn activations_overlap(&self, nodes: &[NodeId]) -> bool {
        let v: Vec<_> = self
            .activations
            .iter()
            .filter(|a| a.1 && nodes.contains(&a.0))
            .map(|a| (a.0, a.2, a.3.expect("activation finished")))
            .collect();
        v.iter().enumerate().any(|(i, x)| {
            v[i + 1..]
                .iter()
                .any(|y| x.0 != y.0 && x.1 < y.2 && y.1 < x.2)
        })
    }

    /// Phase of every node.
    pub fn phases(&self) -> Vec<(NodeId, Phase)> {
        self.ids()
            .into_iter()
            .map(|id| (id, self.node(id).phase().phase))
            .collect()
    }

    /// Protocol errors reported so far.
    pub fn protocol_errors(&self) -> Vec<&(Nanos, NodeId, Event)> {
        self.events
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::ProtocolError { .. }))
            .collect()
    }
}
