//! A whole node: its links, campaign phase, neighbour leases and status gossip.
//!
//! Entry points (`handle_*`, `staged`, `activation_done`, operator commands) take the current
//! time and append [`Output`]s; the driver collects them with [`Node::take_outputs`] and carries
//! them out in order.

mod campaign;
mod gossip;
mod lease;
pub mod output;
mod retire;

use crate::link::table::{Note, Stimulus};
use crate::link::{Effect, LinkCtx, LinkEnd, LinkState, LinkTimers};
use crate::msg::{Digest, Hello, Message, Txn, TxnKind};
use crate::phase::{Phase, PhaseEntry, Version};
use crate::summary::Summary;
use crate::types::{Epoch, Nanos, NodeId, Nonce, Rng, SeededRng, Window, MS, SEC};
#[cfg(feature = "mutants")]
use crate::Mutant;
pub use output::{Durable, Event, NodeRecord, Output, Record, Stats, TimerKey};

use lease::{Grantor, Holder};

/// The most incarnations a neighbour's report of this node may be ahead of its own for this
/// node to outgrow it (each lost store costs one incarnation).
pub const MAX_INCARNATION_JUMP: u32 = 1 << 16;

/// Static configuration of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Every configured neighbour (one link each).
    pub neighbours: Vec<NodeId>,
    /// Neighbours this node sends its summary deltas to (all of them, or a tree parent).
    pub gossip_peers: Vec<NodeId>,
    /// Round-trip time the link timers derive from.
    pub rtt: Nanos,
    /// Interval between gossip rounds (100 ms).
    pub gossip_interval: Nanos,
    /// Most entries of each kind in one gossip message (2000; a driver whose transport carries
    /// small messages sets fewer: 64 entries of each kind encode in under 4 KiB).
    pub gossip_chunk: usize,
    /// Lease length a grantor gives (120 s).
    pub lease: Nanos,
    /// Wait before asking a neighbour that denied a lease again (1 s, jittered).
    pub lease_retry: Nanos,
    /// Upper bound of clock-rate difference between two nodes, in parts per million.
    pub max_drift_ppm: u64,
    /// Safety margin added to the maximum activation time when checking a lease (1 s).
    pub drift_margin: Nanos,
    /// Most neighbours this node lets hold its lease at once.
    pub max_unavailable_neighbors: usize,
    /// Firmware the device runs now.
    pub firmware_window: Window,
    /// Digest of the running firmware.
    pub firmware_digest: Digest,
    /// Back-off before retrying a failed staging or activation.
    pub retry: Nanos,
    /// Interval of this node's heartbeat in the summary (`None`: no heartbeat). Other nodes
    /// tell from it how long ago they last heard of this one.
    pub heartbeat: Option<Nanos>,
    /// Incarnation used when there is no durable state (a wiped disk): must grow across wipes.
    pub incarnation_hint: u32,
    /// The link epochs the device holds, read at start: the device's link to each listed peer
    /// speaks at least that epoch (a device with one link-epoch parameter lists its value for
    /// every link; empty where the device cannot say). The device outlives the store: a
    /// persisted link state below it is a store restored from an older copy (see
    /// [`Node::new`]).
    pub device_links: Vec<(NodeId, Epoch)>,
    /// Seed of the node's jitter.
    pub seed: u64,
    /// Links move by transactions (always, in the product). Simulator baselines that switch
    /// links another way turn it off.
    pub transactions: bool,
    /// Mutation under test.
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
}

impl NodeConfig {
    /// A configuration with the protocol's default timers.
    pub fn new(id: NodeId, neighbours: Vec<NodeId>, rtt: Nanos) -> NodeConfig {
        NodeConfig {
            id,
            gossip_peers: neighbours.clone(),
            neighbours,
            rtt,
            gossip_interval: 100 * MS,
            gossip_chunk: gossip::GOSSIP_CHUNK,
            lease: 120 * SEC,
            lease_retry: SEC,
            max_drift_ppm: 200,
            drift_margin: SEC,
            max_unavailable_neighbors: 1,
            firmware_window: Window::new(0, 0),
            firmware_digest: [0; 32],
            retry: 5 * SEC,
            incarnation_hint: 0,
            device_links: Vec::new(),
            heartbeat: None,
            seed: id.0,
            transactions: true,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

/// Whether a persisted link state is below the epoch the device holds for that link.
fn store_behind_device(cfg: &NodeConfig, durable: &Durable) -> bool {
    durable.links.iter().any(|(peer, s)| {
        !s.fresh
            && cfg
                .device_links
                .iter()
                .any(|(p, e)| p == peer && s.committed < *e)
    })
}

/// Activation progress of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Gate {
    /// Not activating.
    Idle,
    /// The drain hook runs (before any lease is asked for: a scheduler drain may take hours).
    Draining,
    /// Acquiring neighbour leases.
    Leasing,
    /// Activation running since this time.
    Activating { since: Nanos },
}

/// The protocol state of one node.
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    timers: LinkTimers,
    rng: SeededRng,
    links: Vec<LinkEnd>,
    /// The peer of each link, in the same order: a compact array for the lookup every message
    /// needs (a node at a spine has hundreds of links).
    peers: Vec<NodeId>,
    record: NodeRecord,
    running: Window,
    gate: Gate,
    holder: Holder,
    grantor: Grantor,
    /// The most two clocks can drift apart over one lease length.
    summary: Summary,
    gossip: gossip::GossipState,
    stats: Stats,
    out: Vec<Output>,
    /// What the device answered to [`Output::PrepareLinkEpoch`] for the activated epoch: this
    /// node proposes or reflects that epoch only once its device said it can take it.
    device_ready: Option<(Epoch, bool)>,
    /// Failed tries of the device at each link's committed epoch (same order as `links`).
    device_failures: Vec<u32>,
    /// The window sent in LINK_HELLO on each link's current connection: a fresh link's epoch is
    /// agreed from the two windows exchanged, which both ends see alike, even if this node
    /// activated (and its running window changed) before the peer's HELLO arrived.
    hello_sent: Vec<(NodeId, Window)>,
    /// When this node last merged a changed entry reported by each other node.
    heard: std::collections::HashMap<NodeId, Nanos>,
    /// Whether the peer's LINK_HELLO was received since this node started (same order as
    /// `links`): a store may have been restored from an older copy, which the node cannot tell
    /// until its peer's HELLO gives back the link's epoch, so no data flows before it.
    hello_heard: Vec<bool>,
}

impl Node {
    /// A node starting from `durable` (empty on first start or after a wiped disk) at `now`.
    /// Links with no persisted state wait for LINK_HELLO; restart rules are applied at once.
    ///
    /// A store whose link state is below the epoch the device holds for that link
    /// ([`NodeConfig::device_links`]) was restored from an older copy: it is treated as lost
    /// (no link epoch of it is re-applied to the device; every link is agreed again by
    /// LINK_HELLO; the node takes an incarnation above the store's and the restart
    /// quarantine, [`Event::Reincarnated`]), and the store is rewritten to say so.
    pub fn new(mut cfg: NodeConfig, durable: &Durable, now: Nanos) -> Node {
        let lost;
        let behind = store_behind_device(&cfg, durable);
        let durable = if behind {
            let stored = durable
                .node
                .as_ref()
                .map_or(0, |r| r.phase.version.incarnation);
            cfg.incarnation_hint = cfg.incarnation_hint.max(stored.saturating_add(1));
            lost = Durable::default();
            &lost
        } else {
            durable
        };
        let mut neighbours = cfg.neighbours.clone();
        neighbours.sort_unstable();
        neighbours.dedup();
        let links: Vec<LinkEnd> = neighbours
            .iter()
            .map(|&p| {
                let state = durable
                    .links
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map_or_else(LinkState::fresh, |(_, s)| *s);
                LinkEnd::new(cfg.id, p, state)
            })
            .collect();
        let record = durable.node.clone().unwrap_or_else(|| NodeRecord {
            phase: PhaseEntry {
                version: Version {
                    incarnation: cfg.incarnation_hint,
                    counter: 0,
                },
                ..PhaseEntry::default()
            },
            ..NodeRecord::default()
        });
        let mut node = Node {
            timers: LinkTimers::for_rtt(cfg.rtt),
            rng: SeededRng::new(cfg.seed ^ now),
            running: cfg.firmware_window,
            gate: Gate::Idle,
            holder: Holder::default(),
            // a wiped disk (incarnation hint above 0) forgot the grants it gave: quiet too
            grantor: Grantor::new(
                now,
                cfg.lease,
                durable.node.is_some() || cfg.incarnation_hint > 0,
            ),
            summary: Summary::new(),
            gossip: gossip::GossipState::new(&cfg.gossip_peers),
            stats: Stats::default(),
            out: Vec::new(),
            hello_sent: Vec::new(),
            heard: std::collections::HashMap::new(),
            device_ready: None,
            device_failures: vec![0; links.len()],
            hello_heard: vec![false; links.len()],
            peers: links.iter().map(|l| l.peer).collect(),
            links,
            record,
            cfg,
        };
        let seq = node.rng.next_u64() as u32;
        node.holder.seed(seq);
        if behind {
            node.forget_store();
        }
        // A restarted grantor stays quiet as long as the longest lease it may have granted.
        node.grantor.quiet_for(now, node.grant_length());
        node.load_marks();
        for i in 0..node.links.len() {
            let ctx = node.ctx();
            let fx = node.links[i].on_event(Stimulus::Restart, &ctx);
            node.apply_link(now, i, fx);
            let (me, peer, s) = (node.cfg.id, node.links[i].peer, node.links[i].state);
            if !s.fresh {
                // The device follows the durable state: re-assert every link epoch on start.
                node.out.push(Output::SetLinkEpoch {
                    peer,
                    epoch: s.committed,
                });
                node.summary.set_link(me, peer, s.committed);
            } else {
                node.summary.declare(me, peer);
            }
        }
        node.summary.set_phase(node.cfg.id, node.record.phase);
        if node.activated_epoch().is_some() {
            let epoch = node.record.phase.epoch;
            node.out.push(Output::PrepareLinkEpoch { epoch });
        }
        node.resume_after_restart(now);
        node.start_heartbeat(now);
        node
    }

    /// The store was found behind the device: rewrite it as a lost store (a fresh state for
    /// every link, the node record at its new incarnation), so that a later start finds it
    /// lost too rather than behind, and report the new incarnation.
    fn forget_store(&mut self) {
        for i in 0..self.links.len() {
            let peer = self.links[i].peer;
            self.emit(Output::Persist(Record::Link(peer, LinkState::fresh())));
        }
        self.persist_node();
        self.emit(Output::Event(Event::Reincarnated {
            incarnation: self.record.phase.version.incarnation,
            quiet_ms: self.grant_length() / MS,
        }));
    }

    /// The campaign epoch this node activated, if its phase says it runs one.
    fn activated_epoch(&self) -> Option<Epoch> {
        let phase = self.record.phase;
        (self.cfg.transactions
            && matches!(
                phase.phase,
                Phase::Activated | Phase::Converged | Phase::Finalized
            ))
        .then_some(phase.epoch)
    }

    /// The device's answer to [`Output::PrepareLinkEpoch`]: whether it can take `epoch` as a
    /// link epoch. A refusal keeps this node from proposing or reflecting it (PROPOSEs are
    /// aborted with `AbortReason::DeviceRefused`).
    pub fn link_epoch_prepared(&mut self, now: Nanos, epoch: Epoch, result: Result<(), String>) {
        if self.activated_epoch() != Some(epoch) {
            return;
        }
        self.device_ready = Some((epoch, result.is_ok()));
        match result {
            // Announced whatever the phase reached meanwhile: a node whose live links were all
            // retired may have converged before its device answered, and its neighbours still
            // need to hear it activated once a link is restored.
            Ok(()) => self.announce_activated(now),
            Err(reason) => self.emit(Output::Event(Event::DeviceRefusedEpoch { epoch, reason })),
        }
    }

    /// The device's answer to [`Output::SetLinkEpoch`]. Applied: data resumes on the link at
    /// that epoch and the held COMMIT / COMMIT_ACK goes out. Failed: the commit stands; the
    /// device is asked again with back-off, and the link is reported lagging.
    pub fn link_epoch_applied(
        &mut self,
        now: Nanos,
        peer: NodeId,
        epoch: Epoch,
        result: Result<(), String>,
    ) {
        let Some(i) = self.index(peer) else { return };
        if self.links[i].state.committed != epoch {
            return;
        }
        match result {
            Ok(()) => {
                self.device_failures[i] = 0;
                let fx = self.links[i].device_applied(epoch);
                self.apply_link(now, i, fx);
                if self.summary.set_link(self.cfg.id, peer, epoch) {
                    self.gossip_dirty(now);
                }
                self.check_converged(now);
            }
            Err(reason) => {
                let n = self.device_failures[i];
                self.device_failures[i] = n.saturating_add(1);
                let retry = (100 * MS).saturating_mul(1 << n.min(8)).min(30 * SEC);
                self.emit(Output::Event(Event::DeviceLagging {
                    peer,
                    epoch,
                    reason,
                    retry_ms: retry / MS,
                }));
                self.emit(Output::Timer {
                    at: now.saturating_add(retry),
                    key: TimerKey::Device(peer),
                });
            }
        }
    }

    /// Whether the device of the link to `peer` lags behind the link's committed epoch.
    pub fn device_lagging(&self, peer: NodeId) -> bool {
        self.index(peer).is_some_and(|i| {
            let l = &self.links[i];
            !l.state.fresh && self.device_failures[i] > 0 && l.device != Some(l.state.committed)
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// Current phase report.
    pub fn phase(&self) -> PhaseEntry {
        self.record.phase
    }
    /// Node-level durable state as last emitted.
    pub fn record(&self) -> &NodeRecord {
        &self.record
    }
    /// Window of the running firmware.
    pub fn running_window(&self) -> Window {
        self.running
    }
    /// Every link end, ordered by peer id.
    pub fn links(&self) -> &[LinkEnd] {
        &self.links
    }
    /// The link to `peer`, if configured.
    pub fn link(&self, peer: NodeId) -> Option<&LinkEnd> {
        self.index(peer).map(|i| &self.links[i])
    }
    /// This node's view of the cluster.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
    /// Tracks Conv(P, `epoch`) over `links` in this node's summary (see
    /// [`Summary::converged`]); the campaign's origin does this to detect convergence.
    pub fn watch_convergence(&mut self, epoch: Epoch, links: &[(NodeId, NodeId)]) {
        self.summary.watch(epoch, links);
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// What the activation gate is doing: `idle`, `draining` (the drain hook runs),
    /// `leasing` (asking neighbours for leases) or `activating`.
    pub fn activity(&self) -> &'static str {
        match self.gate {
            Gate::Idle => "idle",
            Gate::Draining => "draining",
            Gate::Leasing => "leasing",
            Gate::Activating { .. } => "activating",
        }
    }
    /// Whether a disruptive activation is running.
    pub fn is_activating(&self) -> bool {
        matches!(self.gate, Gate::Activating { .. })
    }
    /// Lease state for debugging: holder side and grantor side.
    pub fn lease_debug(&self) -> String {
        format!(
            "gate={:?} holder={:?} grantor={:?}",
            self.gate, self.holder, self.grantor
        )
    }
    /// Neighbours currently holding this node's lease.
    pub fn lease_holders(&self, now: Nanos) -> usize {
        self.grantor.active(now)
    }

    /// Epoch to tag data sent to `peer` with; `None` while data must pause (and until the
    /// peer's first LINK_HELLO since this node started).
    pub fn send_epoch(&self, peer: NodeId) -> Option<Epoch> {
        let ctx = self.ctx();
        let i = self.index(peer)?;
        self.hello_heard[i]
            .then(|| self.links[i].send_epoch(&ctx))
            .flatten()
    }
    /// Epoch under which data from `peer` is interpreted.
    pub fn recv_epoch(&self, peer: NodeId) -> Option<Epoch> {
        self.link(peer).map(LinkEnd::recv_epoch)
    }

    /// Moves the outputs produced so far into `buf` (appending).
    pub fn take_outputs(&mut self, buf: &mut Vec<Output>) {
        buf.append(&mut self.out);
    }

    fn index(&self, peer: NodeId) -> Option<usize> {
        self.peers.binary_search(&peer).ok()
    }

    /// The control mutants: a control from a neighbour that the mutated node drops.
    fn drops_control(&self, c: crate::msg::Control) -> bool {
        #[cfg(feature = "mutants")]
        {
            use crate::msg::ControlAction;
            let staged = self.record.phase.phase == Phase::Staged;
            match self.cfg.mutant {
                Some(Mutant::ActivateAfterAbort) => c.action == ControlAction::Abort && staged,
                Some(Mutant::ResumeNotPassedOn) => c.action == ControlAction::Resume,
                _ => false,
            }
        }
        #[cfg(not(feature = "mutants"))]
        {
            let _ = c;
            false
        }
    }

    fn ctx(&self) -> LinkCtx {
        let activated = self.activated_epoch();
        #[cfg(feature = "mutants")]
        let unchecked = self.cfg.mutant == Some(Mutant::ReflectWithoutDeviceCheck);
        #[cfg(not(feature = "mutants"))]
        let unchecked = false;
        let device_takes = |e: Epoch| unchecked || self.device_ready == Some((e, true));
        LinkCtx {
            ready_for: activated.filter(|&e| device_takes(e)),
            device_refused: activated.is_some_and(|e| self.device_ready == Some((e, false))),
            nonce_floor: Nonce(u64::from(self.record.phase.version.incarnation) << 32),
            firmware_digest: self.cfg.firmware_digest,
            timers: self.timers,
            #[cfg(feature = "mutants")]
            mutant: self.cfg.mutant,
        }
    }

    fn emit(&mut self, o: Output) {
        self.out.push(o);
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        // Only on an open connection, and tagged with it.
        if let Some(conn) = self.index(to).and_then(|i| self.links[i].conn) {
            self.out.push(Output::Send { to, conn, msg });
        }
    }

    /// A connection to `peer` came up with this generation: HELLO, then what must be resent.
    pub fn handle_up(&mut self, now: Nanos, peer: NodeId, generation: u64) {
        let Some(i) = self.index(peer) else {
            self.stats.unknown_peers += 1;
            return self.emit(Output::Event(Event::UnknownPeer(peer)));
        };
        let link = &mut self.links[i];
        link.conn = Some(generation);
        link.commit_sent_on_conn = false;
        self.send_hello(i);
        if let Some(c) = self.record.campaign {
            if self.record.phase.phase != Phase::Idle {
                self.send(peer, Message::Campaign(c));
            }
        }
        if let Some(c) = self.record.last_control {
            self.send(peer, Message::Control(c));
        }
        let ctx = self.ctx();
        let fx = self.links[i].on_event(Stimulus::Reconnect, &ctx);
        self.apply_link(now, i, fx);
        self.gossip_reconnected(now, peer);
        self.lease_reconnected(now, i);
    }

    /// Sends LINK_HELLO on link `i`'s connection: this node's window, activation and state of
    /// the link, and the version of the peer's own report it holds.
    fn send_hello(&mut self, i: usize) {
        let peer = self.links[i].peer;
        let hello = Hello {
            window: self.running,
            activated: self.ctx().ready_for,
            link: self.links[i].state.snapshot(),
            your_version: self.summary.phase(peer).map(|p| p.version),
        };
        self.hello_sent.retain(|(p, _)| *p != peer);
        self.hello_sent.push((peer, hello.window));
        self.send(peer, Message::Hello(hello));
    }

    /// The running firmware's window changed (an activation): links that found no epoch both
    /// ends can speak exchange LINK_HELLO again. Only those: a fresh link that has not heard its
    /// peer's HELLO yet must be decided from the window its first HELLO carried, which the
    /// peer may already have decided from.
    pub(super) fn rehello_incompatible(&mut self) {
        for i in 0..self.links.len() {
            let l = &self.links[i];
            if l.conn.is_some() && !l.retired && l.incompatible {
                self.send_hello(i);
            }
        }
    }

    /// The connection to `peer` with this generation broke; what was in flight is lost.
    pub fn handle_down(&mut self, _now: Nanos, peer: NodeId, generation: u64) {
        if let Some(i) = self.index(peer) {
            if self.links[i].conn == Some(generation) {
                self.links[i].conn = None;
                self.links[i].commit_sent_on_conn = false;
            }
        }
    }

    /// A message arrived from `peer` on its link's current connection.
    pub fn handle_message(&mut self, now: Nanos, peer: NodeId, msg: Message) {
        let Some(i) = self.index(peer) else {
            self.stats.unknown_peers += 1;
            return self.emit(Output::Event(Event::UnknownPeer(peer)));
        };
        match msg {
            Message::Txn(t) => self.on_txn(now, i, t),
            Message::Hello(h) => self.on_hello(now, i, &h),
            Message::Activated { epoch } => {
                let l = &mut self.links[i];
                l.peer_activated = Some(l.peer_activated.map_or(epoch, |p| p.max(epoch)));
                self.try_propose(now, i);
            }
            Message::Lease(l) => self.on_lease(now, i, l),
            Message::Campaign(c) => self.on_campaign(now, Some(peer), c),
            Message::Control(c) if !self.drops_control(c) => self.on_control(now, Some(peer), c),
            Message::Control(_) => {}
            Message::Gossip(d) => self.on_gossip(now, peer, &d),
            Message::GossipAck { upto } => self.on_gossip_ack(peer, upto),
            Message::Probe { epoch, .. } => {
                let interpreted = self.links[i].recv_epoch();
                if interpreted != epoch {
                    self.stats.probe_mismatches += 1;
                    self.emit(Output::Event(Event::ProbeMismatch {
                        peer,
                        sent: epoch,
                        interpreted,
                    }));
                }
            }
        }
    }

    /// A timer armed through [`Output::Timer`] fired.
    pub fn handle_timer(&mut self, now: Nanos, key: TimerKey) {
        match key {
            TimerKey::Link(peer) => {
                if let Some(i) = self.index(peer) {
                    let ctx = self.ctx();
                    let fx = self.links[i].on_timer(now, &ctx);
                    self.apply_link(now, i, fx);
                }
            }
            TimerKey::Gossip => self.on_gossip_timer(now),
            TimerKey::Lease => self.on_lease_timer(now),
            TimerKey::Grant => self.on_grant_timer(now),
            TimerKey::Retry => self.on_retry_timer(now),
            TimerKey::Beat => self.on_beat_timer(now),
            TimerKey::Device(peer) => {
                if let Some(l) = self.link(peer) {
                    if !l.state.fresh && l.device != Some(l.state.committed) {
                        let epoch = l.state.committed;
                        self.emit(Output::SetLinkEpoch { peer, epoch });
                    }
                }
            }
        }
    }

    fn on_txn(&mut self, now: Nanos, i: usize, t: Txn) {
        let ctx = self.ctx();
        let fx = self.links[i].on_txn(&t, &ctx);
        if fx.note == Some(Note::ProtocolError) {
            let what = match t.kind {
                TxnKind::Propose => "unexpected PROPOSE",
                TxnKind::Reflect => "unexpected REFLECT",
                TxnKind::Commit => "unexpected COMMIT",
                TxnKind::CommitAck => "unexpected COMMIT_ACK",
                TxnKind::Abort => "unexpected ABORT",
                TxnKind::Query => "unexpected QUERY",
            };
            let peer = self.links[i].peer;
            self.emit(Output::Event(Event::ProtocolError { peer, what }));
        }
        self.apply_link(now, i, fx);
    }

    fn on_hello(&mut self, now: Nanos, i: usize, h: &Hello) {
        self.hello_heard[i] = true;
        if let Some(v) = h.your_version {
            self.outgrow(now, v);
        }
        let peer = self.links[i].peer;
        // A peer whose window changed since its last HELLO (it activated while the link was
        // incompatible) gets this end's HELLO again, so both decide from the same pair.
        let known = self.links[i].peer_window;
        if self.links[i].incompatible && known.is_some_and(|w| w != h.window) {
            self.send_hello(i);
        }
        let sent = self.hello_sent.iter().find(|(p, _)| *p == peer);
        let mine = sent.map_or(self.running, |&(_, w)| w);
        match self.links[i].on_hello(h, &mine) {
            Ok(changed) => {
                if changed {
                    let (peer, s) = (self.links[i].peer, self.links[i].state);
                    self.emit(Output::Persist(Record::Link(peer, s)));
                    self.emit(Output::SetLinkEpoch {
                        peer,
                        epoch: s.committed,
                    });
                    self.emit(Output::Event(Event::LinkAgreed {
                        peer,
                        epoch: s.committed,
                    }));
                }
                self.try_propose(now, i);
            }
            Err(crate::link::HelloError::NoCommonEpoch { mine, theirs }) => {
                let peer = self.links[i].peer;
                self.emit(Output::Event(Event::HelloFailed { peer, mine, theirs }));
            }
            Err(crate::link::HelloError::Incompatible {
                epoch,
                mine,
                theirs,
            }) => {
                let peer = self.links[i].peer;
                self.emit(Output::Event(Event::LinkIncompatible {
                    peer,
                    epoch,
                    mine,
                    theirs,
                }));
            }
        }
    }

    /// A neighbour holds version `seen` of this node's own phase report. A version above this
    /// node's current one was written by an earlier life whose store is gone (or was restored
    /// from an older copy): take an incarnation above it, so this node's reports win again, and
    /// wait out the restart quarantine, since the grants it gave then are forgotten.
    fn outgrow(&mut self, now: Nanos, seen: Version) {
        let mine = self.record.phase.version;
        if seen <= mine {
            return;
        }
        // A report of this node far ahead of anything it wrote is forged or corrupt (a node
        // takes one incarnation per lost store): reported, never followed, so that nobody can
        // push it to the end of the incarnation space or keep it in quarantine.
        let plausible = seen.incarnation - mine.incarnation <= MAX_INCARNATION_JUMP;
        let Some(incarnation) = seen.incarnation.checked_add(1).filter(|_| plausible) else {
            return self.emit(Output::Event(Event::ImplausibleReport { seen, mine }));
        };
        self.record.phase.version = Version {
            incarnation,
            counter: 0,
        };
        self.emit(Output::Persist(Record::Node(self.record.clone())));
        self.summary.set_phase(self.cfg.id, self.record.phase);
        let quiet = self.grant_length();
        self.grantor.quarantine(now, quiet);
        self.own_void(now);
        self.emit(Output::Event(Event::Reincarnated {
            incarnation,
            quiet_ms: quiet / MS,
        }));
        self.gossip_dirty(now);
    }

    fn try_propose(&mut self, now: Nanos, i: usize) {
        let ctx = self.ctx();
        let fx = self.links[i].try_propose(&ctx);
        self.apply_link(now, i, fx);
    }

    /// Turns a link effect into outputs: persist, device switch, send, timer.
    fn apply_link(&mut self, now: Nanos, i: usize, fx: Effect) {
        match fx.note {
            Some(Note::Stale) => self.stats.stale += 1,
            Some(Note::ProtocolError) => self.stats.protocol_errors += 1,
            _ => {}
        }
        let peer = self.links[i].peer;
        if fx.persist {
            self.emit(Output::Persist(Record::Link(peer, self.links[i].state)));
        }
        if let Some(epoch) = fx.committed {
            // The summary reports the link once the device speaks the epoch
            // (`link_epoch_applied`): a link whose device lags carries no data yet.
            self.emit(Output::SetLinkEpoch { peer, epoch });
            self.emit(Output::Event(Event::LinkCommitted { peer, epoch }));
        }
        if let Some(txn) = fx.send {
            if self.links[i].conn.is_some() {
                if txn.kind == TxnKind::Commit {
                    self.links[i].commit_sent_on_conn = true;
                }
                self.send(peer, Message::Txn(txn));
            }
        }
        let ctx = self.ctx();
        if let Some(at) = self.links[i].rearm(now, &ctx, fx.persist) {
            self.emit(Output::Timer {
                at,
                key: TimerKey::Link(peer),
            });
        }
    }
}
