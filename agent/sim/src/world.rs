//! The simulated cluster: nodes running entente-proto, links, faults, and the event loop.

use crate::check::{Checker, Invariant, Liveness};
use crate::clock::Clock;
use crate::config::{DriverBug, GossipMode, Protocol, SimConfig};
use crate::fito::{Fito, TwoPcMsg};
use crate::operator::Operator;
use crate::report::Report;
use crate::topology::Topology;
use entente_proto::link::LinkState;
use entente_proto::msg::Campaign;
use entente_proto::node::{Durable, NodeConfig, Record, TimerKey};
use entente_proto::types::{Epoch, Nanos, NodeId, SeededRng, Window, MS, SEC};
use entente_proto::{Message, Node, Output, Rng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The epoch a run's first campaign introduces (the only one of the baselines).
pub const TARGET: Epoch = Epoch(1);
/// Firmware before the first campaign.
pub const OLD_FW: Window = Window::new(0, 0);
/// Firmware of the first campaign (dual mode).
pub const NEW_FW: Window = Window::new(0, 1);

/// What a campaign of the run does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CampaignKind {
    /// A new image whose new epoch means new semantics.
    Upgrade,
    /// The image of the previous campaign again, its new epoch meaning the semantics the
    /// previous campaign replaced (docs/protocol.md, "Going back").
    SemanticsDowngrade,
    /// The image from before the upgrade that was gone back on, its window moved to the
    /// current epochs (which all mean the semantics it speaks).
    ImageSwap,
}

/// One campaign of the run's plan.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What the operator offers at the origin.
    pub campaign: Campaign,
    /// Which image it installs: 0 is the image every node runs at the start, 1 the first
    /// campaign's.
    pub image: u64,
    /// What the new epoch means (0: the semantics links speak at the start).
    pub semantics: u64,
    /// What the campaign does.
    pub kind: CampaignKind,
}

/// The digest of image `image` as the simulator models it (image 1 is the first campaign's).
pub fn image_digest(image: u64) -> [u8; 32] {
    let mut d = [7; 32];
    if image != 1 {
        d[..8].copy_from_slice(&image.to_le_bytes());
        d[8] = 0xa5;
    }
    d
}

/// The campaigns of a run, in order: campaign `k` introduces epoch `k` with an image whose
/// window is `[k - 1, k]` (dual mode, like the first). Every campaign is an upgrade (a new
/// image, new semantics), except, with `downgrade`, campaign 2 (a semantics downgrade: the
/// image of campaign 1, epoch 2 meaning the semantics of epoch 0) and campaign 3 (an image
/// swap: the image from before campaign 1, window `[2, 3]`, both meaning those semantics).
pub fn plan(cfg: &SimConfig) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(cfg.campaigns as usize);
    // Semantics of every epoch so far; the newest image and semantics.
    let mut meaning = vec![0u64];
    let (mut images, mut semantics) = (0u64, 0u64);
    for k in 1..=u64::from(cfg.campaigns) {
        let kind = match k {
            2 if cfg.downgrade => CampaignKind::SemanticsDowngrade,
            3 if cfg.downgrade => CampaignKind::ImageSwap,
            _ => CampaignKind::Upgrade,
        };
        let (image, sem) = match kind {
            CampaignKind::Upgrade => {
                images += 1;
                semantics += 1;
                (images, semantics)
            }
            // The running image; its new epoch means what the epoch before the previous
            // campaign meant.
            CampaignKind::SemanticsDowngrade => (out[0].image, meaning[0]),
            // The image before the upgrade gone back on, speaking what the current epoch means.
            CampaignKind::ImageSwap => (0, meaning[(k - 1) as usize]),
        };
        meaning.push(sem);
        out.push(Step {
            campaign: Campaign {
                epoch: Epoch(k),
                window: Window::new(k - 1, k),
                image_digest: image_digest(image),
                disruptive: true,
                max_activation_ms: (cfg.activation.1 / MS) as u32,
                origin: NodeId(0),
            },
            image,
            semantics: sem,
            kind,
        });
    }
    out
}

/// Something scheduled to happen.
#[derive(Clone, Debug)]
pub(crate) enum Ev {
    /// The campaign starts at the origin.
    Start,
    /// Head of a link direction's queue arrives.
    Deliver { link: u32, dir: u8, gen: u32 },
    /// A node timer.
    Timer { node: u32, inc: u32, key: TimerKey },
    /// Try to (re)connect a link.
    Reconnect { link: u32 },
    /// One image chunk fetched.
    Chunk { node: u32, inc: u32 },
    /// A hardware activation (of the image of campaign `epoch`) ends.
    ActivationEnd {
        node: u32,
        epoch: Epoch,
        ok: bool,
        disruptive: bool,
        real: bool,
    },
    /// A node crashes; `store` says what its restart finds of its state store.
    Crash { node: u32, store: Store },
    /// A crashed node restarts.
    Restart { node: u32 },
    /// The node crashes during its next write (`--torn-rate`).
    Tear { node: u32 },
    /// A partition begins.
    Partition,
    /// A one-way partition of `link` ends: a connection that lost messages to it breaks.
    OneWayEnd { link: u32 },
    /// The node's wall clock steps (`--clock-step-ms`).
    ClockStep { node: u32 },
    /// The operator acts (`--operator-actions`).
    Operator,
    /// After the fault phase, the operator looks whether its final actions took.
    OperatorPoll,
    /// Data on a hot link direction.
    DataTick { link: u32, dir: u8 },
    /// The fault phase ends.
    Heal,
    /// Liveness deadline.
    Liveness { deadline: Nanos },
    /// Deferred persistence completes (send-before-persist driver only).
    PersistDone { node: u32, inc: u32 },
    /// fito-clock: node's local clock reads T.
    FitoSwitch { node: u32 },
    /// fito-2pc message to `to`.
    TwoPc { to: u32, msg: TwoPcMsg },
    /// fito-2pc coordinator retransmission.
    TwoPcTick,
    /// fito-2pc participant pause timeout.
    PauseTimeout { node: u32 },
}

impl Ev {
    fn code(&self) -> (u8, u64) {
        match *self {
            Ev::Start => (0, 0),
            Ev::Deliver { link, dir, .. } => (1, ((link as u64) << 1) | dir as u64),
            Ev::Timer { node, .. } => (2, node as u64),
            Ev::Reconnect { link } => (3, link as u64),
            Ev::Chunk { node, .. } => (4, node as u64),
            Ev::ActivationEnd { node, .. } => (5, node as u64),
            Ev::Crash { node, .. } => (6, node as u64),
            Ev::Restart { node } => (7, node as u64),
            Ev::Partition => (8, 0),
            Ev::DataTick { link, dir } => (9, ((link as u64) << 1) | dir as u64),
            Ev::Heal => (10, 0),
            Ev::Liveness { .. } => (11, 0),
            Ev::PersistDone { node, .. } => (12, node as u64),
            Ev::FitoSwitch { node } => (13, node as u64),
            Ev::TwoPc { to, .. } => (14, to as u64),
            Ev::TwoPcTick => (15, 0),
            Ev::PauseTimeout { node } => (16, node as u64),
            Ev::Tear { node } => (17, node as u64),
            Ev::OneWayEnd { link } => (18, link as u64),
            Ev::ClockStep { node } => (19, node as u64),
            Ev::Operator => (20, 0),
            Ev::OperatorPoll => (21, 0),
        }
    }
}

struct Entry {
    at: Nanos,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A message on a simulated connection.
#[derive(Clone, Debug)]
pub(crate) enum SimMsg {
    /// Protocol message.
    Proto(Message),
    /// Data-plane message tagged with the sender's epoch.
    Data(Epoch),
}

/// The simulated firmware device of a node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Device {
    /// Window of the running firmware, as the manifest that installed it said.
    pub running: Window,
    /// Window of the firmware that ran before it (what a rollback runs again).
    pub previous: Window,
    /// Digest of the running image.
    pub firmware: [u8; 32],
    /// The image being fetched or fetched (digest), and the campaign that asked for it.
    pub image: Option<[u8; 32]>,
    pub image_epoch: Epoch,
    pub staged: bool,
    pub verified_chunks: u32,
    pub corrupt_image: bool,
    pub activating: bool,
}

/// What a crashed node's restart finds of its state store.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    /// Everything it persisted (a crash).
    Kept,
    /// Nothing: the store is gone (a wipe, `--wipe-rate`). The device, its staged image and
    /// the manifests stay.
    Wiped,
    /// An older copy: the store as it was when the node last started (`--restore-rate`).
    Restored,
}

/// One simulated node.
pub(crate) struct SimNode {
    pub node: Option<Node>,
    pub cfg: NodeConfig,
    pub durable: Durable,
    pub inc: u32,
    pub clock: Clock,
    pub dev: Device,
    /// Persist outputs emitted / made durable; highest emitted before a send.
    pub persist_seq: u64,
    pub durable_seq: u64,
    pub required_seq: u64,
    pub pending: Vec<(u64, Record)>,
    /// Neighbours in a disruptive activation right now.
    pub activating_neighbours: usize,
    /// In a disruptive activation: the neighbours it counts against (those over the links
    /// the node held live when it started).
    pub disrupts: Option<Vec<u32>>,
    /// Starts recorded in the state store (as the agent counts them in state.db).
    pub starts: u32,
    /// What the next restart finds of the store.
    pub store: Store,
    /// The node crashes during its next write, which is lost (`--torn-rate`).
    pub tear: bool,
    /// The copy of the store taken at the node's last start, with its count of starts.
    pub backup: (Durable, u32),
    /// The node accepted a campaign in some life: its manifests and image stay beside the
    /// store, so a start with an empty store is a lost store, not a first start.
    pub manifests: bool,
    /// The window of the last campaign the node accepted (its newest manifest).
    pub manifest_window: Window,
    /// The latest time the driver handed the node (the wall-clock driver never hands less).
    pub handed: Nanos,
    /// The wall-clock driver's timers: one deadline per key, on the clock it hands the node,
    /// fired once that clock reaches it (as the agent's timer table does).
    pub wall_timers: Vec<(TimerKey, Nanos)>,
}

/// One simulated link (a connection that can break, and the device link epoch at each end).
pub(crate) struct SimLink {
    pub ends: [u32; 2],
    pub up: bool,
    pub gen: u32,
    pub q: [VecDeque<(Nanos, SimMsg)>; 2],
    pub last_arrival: [Nanos; 2],
    pub cut: [Nanos; 2],
    /// Per direction: a one-way partition drops the direction's messages until then, the
    /// connection staying up.
    pub one_way: [Nanos; 2],
    /// A one-way partition dropped messages on the current connection.
    pub dropped: bool,
    pub backoff: Nanos,
    pub reconnect_at: Option<Nanos>,
    pub recent: [VecDeque<Message>; 2],
    pub epoch: [Epoch; 2],
    pub done: bool,
    pub mixed_since: Option<Nanos>,
    /// Per direction: data is simulated message by message (an end changed within the last
    /// few delays).
    pub hot: [bool; 2],
    /// Last change at either end (epoch, pause, connection).
    pub last_change: Nanos,
    /// Per direction: the steady stretch being counted instead of simulated.
    pub steady: [Option<Steady>; 2],
    pub ticking: [bool; 2],
    pub paused_since: [Option<Nanos>; 2],
}

/// A stretch in which nothing changes on a link direction: its data is counted, not simulated.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Steady {
    /// Start of the stretch.
    pub since: Nanos,
    /// The sender's tag (`None`: paused or down).
    pub tag: Option<Epoch>,
    /// The receiver's epoch.
    pub recv: Epoch,
}

/// Run-wide measurements.
#[derive(Clone, Debug, Default)]
pub(crate) struct Meters {
    pub messages: u64,
    pub mixed_ns: u128,
    pub blocked_ns: u128,
    pub steady_msgs: u64,
    pub activated: usize,
    pub last_activation: Nanos,
    pub last_restart: Nanos,
    pub conv_at: Option<Nanos>,
    pub detected_at: Option<Nanos>,
    pub done_links: usize,
    pub series: Vec<(Nanos, u32)>,
    pub liveness_deadline: Option<Nanos>,
    pub failure: Option<String>,
    /// Restarts that found the state store lost.
    pub wipes: u64,
    /// Restarts that found the state store restored from an older copy.
    pub restores: u64,
    /// Crashes during a write, which was lost.
    pub torn_writes: u64,
    /// One-way partitions.
    pub one_way_partitions: u64,
    /// Steps of a node's wall clock.
    pub clock_steps: u64,
    /// Operator actions an agent took.
    pub operator_actions: u64,
    /// The liveness property the run broke.
    pub liveness: Option<Liveness>,
    /// Campaigns that converged before the current one.
    pub campaigns_done: u32,
}

/// A deterministic simulation of one campaign on one cluster.
pub struct World {
    pub(crate) cfg: SimConfig,
    pub(crate) topo: Topology,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) links: Vec<SimLink>,
    pub(crate) rng: SeededRng,
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    pub(crate) now: Nanos,
    pub(crate) step: u64,
    pub(crate) check: Checker,
    pub(crate) m: Meters,
    pub(crate) fito: Fito,
    /// The simulated operator.
    pub(crate) op: Operator,
    /// The campaign under way (`plan[current]`).
    pub(crate) campaign: Campaign,
    pub(crate) plan: Vec<Step>,
    pub(crate) current: usize,
    /// When the operator started the current campaign.
    campaign_start: Nanos,
    /// End of the current campaign's fault phase.
    pub(crate) fault_end: Nanos,
    pub(crate) buf: Vec<Output>,
    /// Links a node's outputs touched (scratch, reused per event).
    pub(crate) touched: Vec<u32>,
    /// The operator started the campaign and the origin has not accepted it yet.
    origin_pending: bool,
    trace: u64,
    stop: bool,
}

/// Progress of a run, for progress bars.
#[derive(Copy, Clone, Debug)]
pub struct Progress {
    /// Simulated time so far.
    pub sim_ms: f64,
    /// Fraction of links committed.
    pub committed: f64,
    /// Events so far.
    pub events: u64,
}

impl World {
    /// Builds the cluster the options describe. Options must be valid.
    pub fn new(cfg: SimConfig) -> World {
        let mut rng = SeededRng::new(cfg.seed);
        let topo = Topology::build(&cfg, &mut rng);
        let parents = topo.bfs_parents(0);
        let flood = match cfg.gossip {
            GossipMode::Flood => true,
            GossipMode::Tree => false,
            GossipMode::Auto => topo.nodes <= cfg.gossip_flood_max,
        };
        let mut nodes = Vec::with_capacity(topo.nodes);
        for (i, parent) in parents.iter().enumerate() {
            let neighbours: Vec<NodeId> =
                topo.adj[i].iter().map(|&(p, _)| NodeId(p as u64)).collect();
            let mut nc = NodeConfig::new(NodeId(i as u64), neighbours.clone(), cfg.rtt());
            nc.gossip_peers = if flood {
                neighbours.clone()
            } else {
                parent.map(|p| vec![NodeId(p as u64)]).unwrap_or_default()
            };
            let budget = cfg.max_unavailable.limit(neighbours.len());
            nc.max_unavailable_neighbors = match cfg.driver_bug {
                DriverBug::OverGrant => budget + 2,
                _ => budget,
            };
            nc.max_drift_ppm = (2.0 * cfg.drift_ppm).ceil() as u64 + 1;
            nc.firmware_window = OLD_FW;
            nc.seed = rng.next_u64();
            nc.transactions = cfg.protocol == Protocol::Bilateral;
            #[cfg(feature = "mutants")]
            {
                nc.mutant = cfg.mutant;
            }
            let skew = (cfg.skew_ms * 1e6) as i64;
            let drift = (cfg.drift_ppm * 1000.0) as i64;
            let clock = Clock {
                offset: if skew > 0 {
                    rng.below(2 * skew as u64 + 1) as i64 - skew
                } else {
                    0
                },
                drift_ppb: if drift > 0 {
                    rng.below(2 * drift as u64 + 1) as i64 - drift
                } else {
                    0
                },
                step: 0,
            };
            let durable = Durable {
                node: None,
                links: neighbours
                    .iter()
                    .map(|&p| (p, LinkState::established(Epoch(0))))
                    .collect(),
            };
            nodes.push(SimNode {
                node: None,
                cfg: nc,
                durable,
                inc: 0,
                clock,
                dev: Device {
                    running: OLD_FW,
                    previous: OLD_FW,
                    firmware: image_digest(0),
                    ..Device::default()
                },
                persist_seq: 0,
                durable_seq: 0,
                required_seq: 0,
                pending: Vec::new(),
                activating_neighbours: 0,
                disrupts: None,
                starts: 0,
                store: Store::Kept,
                backup: (Durable::default(), 0),
                tear: false,
                manifests: false,
                manifest_window: OLD_FW,
                handed: 0,
                wall_timers: Vec::new(),
            });
        }
        let links = topo
            .links
            .iter()
            .map(|&(a, b)| SimLink {
                ends: [a, b],
                up: false,
                gen: 0,
                q: [VecDeque::new(), VecDeque::new()],
                last_arrival: [0; 2],
                cut: [0; 2],
                one_way: [0; 2],
                dropped: false,
                backoff: cfg.rtt(),
                reconnect_at: None,
                recent: [VecDeque::new(), VecDeque::new()],
                epoch: [Epoch(0); 2],
                done: false,
                mixed_since: None,
                hot: [false; 2],
                last_change: 0,
                steady: [None; 2],
                ticking: [false; 2],
                paused_since: [None; 2],
            })
            .collect();
        let plan = plan(&cfg);
        let campaign = plan[0].campaign;
        let fito = Fito::new(topo.nodes);
        let op = Operator::new(topo.nodes, topo.links.len());
        let fault_end = cfg.fault_phase;
        World {
            cfg,
            topo,
            nodes,
            links,
            rng,
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            step: 0,
            check: Checker::default(),
            m: Meters::default(),
            fito,
            op,
            campaign,
            plan,
            current: 0,
            campaign_start: MS,
            fault_end,
            buf: Vec::new(),
            touched: Vec::new(),
            origin_pending: false,
            trace: 0xcbf2_9ce4_8422_2325,
            stop: false,
        }
    }

    pub(crate) fn schedule(&mut self, at: Nanos, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    /// The current campaign's fault phase is under way.
    pub(crate) fn fault_active(&self) -> bool {
        self.now < self.fault_end
    }

    /// The epoch the current campaign introduces.
    pub(crate) fn target(&self) -> Epoch {
        self.campaign.epoch
    }

    /// The window of the image campaign `epoch` installs (epoch 0: the image at the start).
    pub(crate) fn window_of(&self, epoch: Epoch) -> Window {
        match epoch.0 {
            0 => OLD_FW,
            e => self.plan[(e - 1) as usize].campaign.window,
        }
    }

    /// Runs to the end and reports.
    pub fn run(self) -> Report {
        self.run_with(&mut |_| {})
    }

    /// Runs to the end, calling `progress` now and then, and reports.
    pub fn run_with(mut self, progress: &mut dyn FnMut(Progress)) -> Report {
        let wall = std::time::Instant::now();
        self.boot();
        loop {
            let Some(Reverse(e)) = self.heap.pop() else {
                // Nothing left to happen: the next campaign starts if this one converged.
                if self.m.conv_at.is_some() && self.current + 1 < self.plan.len() && !self.stop {
                    self.next_campaign();
                    continue;
                }
                break;
            };
            self.now = e.at;
            self.step += 1;
            let (code, id) = e.ev.code();
            for x in [e.at, code as u64, id] {
                self.trace = (self.trace ^ x).wrapping_mul(0x0100_0000_01b3);
            }
            if debug::events() {
                eprintln!("{:>14} {:?}", e.at, e.ev);
            }
            self.dispatch(e.ev);
            if self.step & 0xffff == 0 {
                progress(Progress {
                    sim_ms: self.now as f64 / 1e6,
                    committed: self.m.done_links as f64 / self.links.len().max(1) as f64,
                    events: self.step,
                });
            }
            if self.stop || self.now > self.cfg.time_limit {
                break;
            }
            if self.finished() {
                if self.current + 1 == self.plan.len() {
                    break;
                }
                self.next_campaign();
            }
        }
        self.finish(wall.elapsed())
    }

    /// The current campaign converged: the operator starts the next one at the origin. It gets
    /// a fault phase of its own, from now, and the liveness bound applies to it afresh.
    fn next_campaign(&mut self) {
        self.m.campaigns_done += 1;
        self.current += 1;
        self.campaign = self.plan[self.current].campaign;
        let target = self.target();
        self.campaign_start = self.now;
        self.m.activated = 0;
        self.m.conv_at = None;
        self.m.detected_at = None;
        self.m.liveness_deadline = None;
        self.op.next_campaign();
        for l in &mut self.links {
            // Every link is at the previous epoch: none has the new one.
            debug_assert!(l.epoch[0] < target && l.epoch[1] < target);
            l.done = false;
        }
        self.m.done_links = 0;
        self.m.series.push((self.now, 0));
        let start = self.now;
        self.fault_end = start + self.cfg.fault_phase;
        self.schedule_faults(start, self.fault_end);
        self.schedule(self.fault_end, Ev::Heal);
        self.watch_at_origin();
        self.origin_pending = true;
        self.offer_campaign();
    }

    /// The origin tracks convergence of the current campaign in its summary.
    pub(crate) fn watch_at_origin(&mut self) {
        let target = self.target();
        let links: Vec<(NodeId, NodeId)> = self
            .topo
            .links
            .iter()
            .map(|&(a, b)| (NodeId(a as u64), NodeId(b as u64)))
            .collect();
        if let Some(origin) = self.nodes[0].node.as_mut() {
            origin.watch_convergence(target, &links);
        }
    }

    fn finished(&self) -> bool {
        let Some(conv) = self.m.conv_at else {
            return false;
        };
        let settled = match self.cfg.protocol {
            Protocol::Bilateral => self.m.detected_at.is_some() || self.now > conv + 60 * SEC,
            Protocol::FitoClock => true,
            Protocol::Fito2pc => self.fito.all_resumed() || self.now > conv + 600 * SEC,
        };
        settled && self.now >= self.fault_end
    }

    fn boot(&mut self) {
        for n in 0..self.nodes.len() {
            self.start_node(n as u32);
        }
        for l in 0..self.links.len() {
            self.try_connect(l as u32);
        }
        self.schedule(MS, Ev::Start);
        self.schedule(self.fault_end, Ev::Heal);
        self.schedule_faults(0, self.fault_end);
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Start => self.start_campaign(),
            Ev::Deliver { link, dir, gen } => self.deliver(link, dir, gen),
            Ev::Timer { node, inc, key } => self.timer(node, inc, key),
            Ev::Reconnect { link } => {
                self.links[link as usize].reconnect_at = None;
                self.try_connect(link);
            }
            Ev::Chunk { node, inc } => self.chunk(node, inc),
            Ev::ActivationEnd {
                node,
                epoch,
                ok,
                disruptive,
                real,
            } => self.activation_end(node, epoch, ok, disruptive, real),
            Ev::Crash { node, store } => self.crash(node, store),
            Ev::Restart { node } => self.restart(node),
            Ev::Tear { node } => self.tear(node),
            Ev::Partition => self.partition(),
            Ev::OneWayEnd { link } => self.one_way_end(link),
            Ev::ClockStep { node } => self.clock_step(node),
            Ev::Operator => self.operator_act(),
            Ev::OperatorPoll => self.operator_poll(),
            Ev::DataTick { link, dir } => self.data_tick(link, dir),
            Ev::Heal => self.heal(),
            Ev::Liveness { deadline } => self.liveness(deadline),
            Ev::PersistDone { node, inc } => self.persist_done(node, inc),
            Ev::FitoSwitch { node } => self.fito_switch(node),
            Ev::TwoPc { to, msg } => self.two_pc(to, msg),
            Ev::TwoPcTick => self.two_pc_tick(),
            Ev::PauseTimeout { node } => self.pause_timeout(node),
        }
    }

    fn start_campaign(&mut self) {
        match self.cfg.protocol {
            Protocol::Bilateral => {}
            Protocol::FitoClock => self.fito_announce(),
            Protocol::Fito2pc => self.two_pc_start(),
        }
        self.origin_pending = true;
        self.offer_campaign();
    }

    /// The operator's start reaches the origin if its agent runs; the operator asks again
    /// until the origin has accepted it (a start sent to a crashed agent gets no answer).
    pub(crate) fn offer_campaign(&mut self) {
        if !self.origin_pending || self.nodes[0].node.is_none() {
            return;
        }
        let c = self.campaign;
        let mut accepted = false;
        self.with_node(0, |n, now| accepted = n.start_campaign(now, c));
        // An agent that crashed while it wrote the campaign gave no answer: asked again.
        self.origin_pending = !(accepted && self.nodes[0].node.is_some());
    }

    fn heal(&mut self) {
        for l in 0..self.links.len() {
            let link = &mut self.links[l];
            link.cut = [0; 2];
            link.one_way = [0; 2];
            if link.up && link.dropped {
                self.break_link(l as u32);
            }
            let link = &mut self.links[l];
            if !link.up && link.reconnect_at.is_none_or(|t| t > self.now) {
                self.try_connect(l as u32);
            }
        }
        self.operator_heal();
        self.arm_liveness();
    }

    /// Schedules the liveness deadline once every node activated, the network healed and the
    /// last restart happened: 3 RTT + the maximum retransmit backoff after the latest of these.
    pub(crate) fn arm_liveness(&mut self) {
        // The bound is the bilateral protocol's; the baselines switch when their clock or
        // coordinator says so.
        if self.cfg.protocol != Protocol::Bilateral
            || self.m.activated < self.nodes.len()
            || self.now < self.fault_end
            || self.m.conv_at.is_some()
        {
            return;
        }
        let start = self
            .fault_end
            .max(self.m.last_activation)
            .max(self.m.last_restart);
        let deadline = start + 3 * self.cfg.rtt() + SEC;
        if self.m.liveness_deadline.is_none_or(|d| d < deadline) {
            self.m.liveness_deadline = Some(deadline);
            self.schedule(deadline, Ev::Liveness { deadline });
        }
    }

    fn liveness(&mut self, deadline: Nanos) {
        if self.m.liveness_deadline != Some(deadline) || self.m.conv_at.is_some() {
            return;
        }
        if self.nodes.iter().any(|n| n.node.is_none()) {
            return; // a node is still down: the deadline moves when it restarts
        }
        let pending = self.links.len() - self.m.done_links;
        let (kind, after) = self.stalled();
        self.m.liveness = Some(kind);
        self.m.failure = Some(format!(
            "no convergence{after}: {pending} of {} links not committed {:.3} ms after the network healed and the last node activated (bound 3 RTT + 1 s){}",
            self.links.len(),
            (deadline - self.fault_end.max(self.m.last_activation).max(self.m.last_restart)) as f64 / 1e6,
            self.stuck_links()
        ));
        self.stop = true;
    }

    /// Marks a link end's device epoch change: monotonicity, compatibility, convergence,
    /// mixed state, data window.
    pub(crate) fn set_link_epoch(&mut self, link: u32, side: usize, epoch: Epoch) {
        let l = &self.links[link as usize];
        let old = l.epoch[side];
        let (me, peer) = (l.ends[side], l.ends[1 - side]);
        if epoch < old {
            let (step, now) = (self.step, self.now);
            self.check.violate(Invariant::Monotonicity, step, now, || {
                format!("link n{me}-n{peer}: n{me} went back from {old} to {epoch}")
            });
        }
        if epoch == old {
            return;
        }
        self.links[link as usize].epoch[side] = epoch;
        self.check_compat(link);
        self.link_changed(link);
        self.heat(link);
    }

    /// Both ends of `link` speak epochs inside both firmware windows.
    pub(crate) fn check_compat(&mut self, link: u32) {
        let l = &self.links[link as usize];
        for side in 0..2 {
            let e = l.epoch[side];
            for end in l.ends {
                let w = self.nodes[end as usize].dev.running;
                if !w.contains(e) {
                    let (a, b) = (l.ends[0], l.ends[1]);
                    let (step, now) = (self.step, self.now);
                    self.check.violate(Invariant::Compatibility, step, now, || {
                        format!("link n{a}-n{b} speaks {e} but n{end} runs firmware {w:?}")
                    });
                }
            }
        }
    }

    /// Convergence and mixed-state accounting after an end's epoch changed.
    fn link_changed(&mut self, link: u32) {
        let now = self.now;
        let l = &mut self.links[link as usize];
        let target = self.campaign.epoch;
        let done = l.epoch[0] >= target && l.epoch[1] >= target;
        if done != l.done {
            l.done = done;
            if done {
                self.m.done_links += 1;
            } else {
                self.m.done_links -= 1;
            }
            self.m.series.push((now, self.m.done_links as u32));
        }
        let mixed = l.epoch[0] != l.epoch[1];
        match (mixed, l.mixed_since) {
            (true, None) => l.mixed_since = Some(now),
            (false, Some(t)) => {
                self.m.mixed_ns += (now - t) as u128;
                l.mixed_since = None;
            }
            _ => {}
        }
        if self.m.done_links == self.links.len() && self.m.conv_at.is_none() {
            self.m.conv_at = Some(now);
        }
    }

    fn finish(mut self, wall: std::time::Duration) -> Report {
        let now = self.now;
        if let Ok(list) = std::env::var("ENTENTE_DEBUG_NODES") {
            for n in list.split(',').filter_map(|x| x.parse::<usize>().ok()) {
                if let Some(node) = self.nodes.get(n).and_then(|x| x.node.as_ref()) {
                    eprintln!(
                        "n{n} local {} {}",
                        self.nodes[n].clock.local(now),
                        node.lease_debug()
                    );
                }
            }
        }
        for link in 0..self.links.len() as u32 {
            self.settle(link);
        }
        for l in &mut self.links {
            if let Some(t) = l.mixed_since.take() {
                self.m.mixed_ns += (now - t) as u128;
            }
            for p in &mut l.paused_since {
                if let Some(t) = p.take() {
                    self.m.blocked_ns += (now - t) as u128;
                }
            }
        }
        let converged = self.m.conv_at.is_some();
        if !converged && self.m.failure.is_none() {
            let (kind, after) = self.stalled();
            self.m.liveness = Some(kind);
            self.m.failure = Some(format!(
                "no convergence{after}: {} of {} links not committed when the run stopped at {:.1} s{}",
                self.links.len() - self.m.done_links,
                self.links.len(),
                now as f64 / 1e9,
                self.stuck_links()
            ));
        }
        let rtt = self.cfg.rtt() as f64;
        let rounds = self
            .m
            .conv_at
            .map(|c| c.saturating_sub(self.m.last_activation) as f64 / rtt);
        let detected = match self.cfg.protocol {
            Protocol::Bilateral => self.m.detected_at,
            Protocol::Fito2pc => self.fito.acked_at,
            Protocol::FitoClock => None,
        };
        let by = crate::check::Invariant::ALL
            .iter()
            .map(|&i| (i.name(), self.check.count(i)))
            .collect();
        let total = self.links.len().max(1) as f64;
        Report {
            protocol: self.cfg.protocol.name(),
            nodes: self.topo.nodes,
            hosts: self.topo.hosts,
            links: self.links.len(),
            topology: self.cfg.topology.name(),
            seed: self.cfg.seed,
            converged,
            rounds_to_converge: rounds,
            conv_detected_ms: detected.map(|d| d.saturating_sub(self.campaign_start) as f64 / 1e6),
            sim_time_ms: now as f64 / 1e6,
            messages: self.m.messages + self.m.steady_msgs,
            safety_violations: self.check.total(),
            violations_by_invariant: by,
            mixed_state_link_ms: self.m.mixed_ns as f64 / 1e6,
            blocked_ms: self.m.blocked_ns as f64 / 1e6,
            trace_hash: format!("{:016x}", self.trace),
            events: self.step,
            wall_ms: wall.as_secs_f64() * 1e3,
            first_violation: self.check.first.clone(),
            failure: self.m.failure.clone(),
            reproduce: self.cfg.command(),
            wipes: self.m.wipes,
            restores: self.m.restores,
            torn_writes: self.m.torn_writes,
            one_way_partitions: self.m.one_way_partitions,
            clock_steps: self.m.clock_steps,
            operator_actions: self.m.operator_actions,
            liveness: self.m.liveness.map(Liveness::name),
            campaigns: self.plan.len() as u32,
            campaigns_converged: self.m.campaigns_done + u32::from(converged),
            progress: downsample(&self.m.series, total, now),
        }
    }
}

impl World {
    /// Which liveness property a campaign that did not converge broke, and the words that say
    /// so after "no convergence".
    fn stalled(&self) -> (Liveness, &'static str) {
        if self.op.aborted {
            (Liveness::Resume, " after the operator's final resume")
        } else {
            (Liveness::Convergence, "")
        }
    }

    /// A description of the first few links that did not commit, for failure reports.
    fn stuck_links(&self) -> String {
        let mut out = String::new();
        for l in self.links.iter().filter(|l| !l.done).take(3) {
            out.push_str(&format!(
                "; n{}-n{} {}",
                l.ends[0],
                l.ends[1],
                if l.up { "up" } else { "down" }
            ));
            for side in 0..2 {
                let (me, peer) = (l.ends[side], l.ends[1 - side]);
                let sn = &self.nodes[me as usize];
                match sn.node.as_ref() {
                    None => out.push_str(&format!(" [n{me} crashed]")),
                    Some(node) => {
                        let st = node
                            .link(NodeId(peer as u64))
                            .map(|e| (e.state.committed, e.state.pending));
                        out.push_str(&format!(
                            " [n{me} {:?} fw {:?} link {:?}]",
                            node.phase().phase,
                            sn.dev.running,
                            st
                        ));
                    }
                }
            }
        }
        out
    }
}

/// At most ~1000 (ms, fraction) points of a step series.
fn downsample(series: &[(Nanos, u32)], total: f64, end: Nanos) -> Vec<(f64, f64)> {
    let mut out = vec![(0.0, 0.0)];
    let stride = (series.len() / 1000).max(1);
    for (i, &(t, c)) in series.iter().enumerate() {
        if i % stride == 0 || i + 1 == series.len() {
            out.push((t as f64 / 1e6, c as f64 / total));
        }
    }
    let last = out.last().map_or(0.0, |p| p.1);
    out.push((end as f64 / 1e6, last));
    out
}

/// Debugging aids, read once from the environment: `ENTENTE_SIM_TRACE` prints every event,
/// `ENTENTE_DEBUG_LEASE` every lease message, `ENTENTE_DEBUG_BUDGET` the state behind a budget
/// violation, `ENTENTE_DEBUG_NODES=3,7` the lease state of those nodes at the end of the run.
pub(crate) mod debug {
    use std::sync::OnceLock;

    fn flag(cell: &OnceLock<bool>, name: &str) -> bool {
        *cell.get_or_init(|| std::env::var_os(name).is_some())
    }
    /// Print every event.
    pub fn events() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        flag(&ON, "ENTENTE_SIM_TRACE")
    }
    /// Print every lease message.
    pub fn leases() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        flag(&ON, "ENTENTE_DEBUG_LEASE")
    }
    /// Print the state behind a budget violation.
    pub fn budget() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        flag(&ON, "ENTENTE_DEBUG_BUDGET")
    }
}
