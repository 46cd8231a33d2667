//! The agent's main loop: one thread drives the protocol node over the transport, carries out
//! its outputs in order (a record is durable before any later message is sent), hands slow
//! device work to the device worker, and answers the control socket.

mod acceptance;
mod activation;
mod campaign;
mod controls;
mod fetch;
mod net;
mod outputs;
mod prune;
mod serve;
mod status;
mod view;
pub mod window;

use crate::config::Config;
use crate::control::ControlServer;
use crate::db::Db;
use crate::worker::{Done, Worker};
use anyhow::{Context, Result};
use entente_api::{HistoryEvent, HistoryKind};
use entente_devices::profile::Profile;
use entente_fastpath::{ClusterKey, Config as FastConfig, Event as NetEvent, Transport};
use entente_node::fanout;
use entente_proto::node::{Output, TimerKey};
use entente_proto::{Nanos, Node, NodeConfig, NodeId, Window};
use entente_stage::{Store, TrustedKeys, Verifier};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use fetch::Fetch;
pub use net::PeerLink;

/// Longest the loop sleeps in the transport when nothing is due, while a campaign moves here.
const TICK: Duration = Duration::from_millis(40);
/// The same when this node has nothing in motion (keeps an idle agent near zero CPU).
const IDLE_TICK: Duration = Duration::from_millis(250);

/// Everything the agent runs.
pub struct Agent {
    cfg: Config,
    node: Node,
    db: Db,
    transport: Box<dyn Transport>,
    peers: BTreeMap<u64, PeerLink>,
    timers: HashMap<TimerKey, Nanos>,
    start: Instant,
    worker: Worker,
    store: Store,
    verifier: Verifier,
    profile: Profile,
    fetch: Fetch,
    /// Manifests this agent holds, by sha256: canonical bytes and signature line.
    manifests: HashMap<[u8; 32], (Vec<u8>, String)>,
    /// Images complete in the store, by sha256 (what this agent can serve).
    images: HashMap<[u8; 32], entente_stage::ProfileImage>,
    /// The newest campaign epoch whose manifest names each held image.
    image_epochs: HashMap<[u8; 32], u64>,
    /// The campaign whose convergence here last pruned the store.
    pruned_after: Option<u64>,
    /// The campaign whose firmware the device runs, as far as this life of the agent knows.
    running_campaign: Option<u64>,
    /// The campaign whose firmware ran before it (what a rollback needs: pruning keeps it).
    ran_before: Option<u64>,
    /// What neighbours announced they hold.
    holdings: fanout::Holdings,
    /// Images whose holdings here changed since the last announcement.
    announcements: fanout::Announcements,
    /// Chunk requests waiting for the upload cap, and how often each chunk went out.
    serve: fanout::ServeQueue<entente_fastpath::ConnId>,
    /// The image the last chunk was served from, open.
    reader: Option<([u8; 32], entente_stage::ImageReader)>,
    upload: fanout::RateLimit,
    download: fanout::RateLimit,
    /// The window of the firmware the device runs.
    running: Window,
    /// Window the running firmware will have once the pending activation succeeds.
    activating: Option<Window>,
    next_probe: Instant,
    probe_seq: u64,
    control: ControlServer,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    net_events: Vec<NetEvent>,
    /// Refused connections from addresses that are no configured peer's, logged as counts.
    refusals: entente_fastpath::RefusalLog,
    outs: Vec<Output>,
    buf: Vec<u8>,
    /// Last inventory reported by the device worker.
    inventory: Option<crate::worker::Report>,
    flash_percent: Option<u8>,
    last_health: Instant,
    healthy: bool,
    /// The activation whose health hook runs: the node is told once it answers.
    health_pending: Option<u64>,
    /// Why the last activation failed its health gate (cleared by a healthy one).
    unhealthy: Option<String>,
    /// Keys whose statements pause, resume or abort a campaign (`None`: none configured).
    operator_keys: Option<TrustedKeys>,
    /// The cluster's public name (from its key), which operator statements must carry.
    cluster: [u8; 8],
    /// The last operator statement applied here (what the node's last control carries on).
    statement: Option<entente_stage::SignedStatement>,
    /// When a refused statement from each neighbour was last logged.
    control_refusals: HashMap<u64, Instant>,
    /// Statements from neighbours refused (expired, another key, signed far ahead...).
    controls_refused: u64,
}

/// What in the data directory shows this node ran before, when its state store is new: a
/// store that was lost rather than a first start.
fn lost_store_evidence(data: &std::path::Path) -> Option<String> {
    let non_empty =
        |p: std::path::PathBuf| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some());
    let mut seen = Vec::new();
    if data.join("manifest-state.json").exists() {
        seen.push("the anti-rollback record");
    }
    if non_empty(data.join("manifests")) {
        seen.push("accepted manifests");
    }
    if non_empty(data.join("store/images")) {
        seen.push("stored images");
    }
    (!seen.is_empty()).then(|| format!("{} remain", seen.join(", ")))
}

/// Largest bulk transfer between agents: a manifest or one image chunk.
pub const BULK_SLOT: u32 = 1 << 20;

/// The transport's configuration: the configured peers' addresses keep handshake slots of their
/// own and the long handshake deadline; any other address gets the transport's short one.
fn fast_config(cfg: &Config) -> FastConfig {
    FastConfig {
        reserved_peers: cfg.peers.iter().map(|p| p.addr.ip()).collect(),
        // A dead peer must not stall the loop: connects are short and retried with back-off.
        connect_timeout: Duration::from_millis(300),
        // Two slots of one chunk each per connection: on verbs every connection registers its
        // slots once, so this is the memory each link pins (2 × 2 MiB with send buffers).
        bulk_slots: 2,
        bulk_slot_len: BULK_SLOT,
        // A handshake on a slow host (or under emulation) can take seconds: a configured peer's
        // (and our own dials) get 20 s; a stranger's keeps the transport's short deadline.
        handshake_timeout: Duration::from_secs(20),
        frame_macs: cfg.transport.frame_macs.to_transport(),
        ..FastConfig::default()
    }
}

impl Agent {
    /// Opens the state, the store, the device and the transport, and restores the node.
    pub fn open(cfg: Config, stop: Arc<AtomicBool>, reload: Arc<AtomicBool>) -> Result<Agent> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("create data dir {}", cfg.data_dir.display()))?;
        crate::files::make_private(&cfg.data_dir)
            .with_context(|| format!("make data dir {} private", cfg.data_dir.display()))?;
        let db = Db::open(&cfg.data_dir.join("state.db"))?;
        let durable = db.load()?;
        let starts = db.next_start()?;
        let key = ClusterKey::load(&cfg.cluster_key)?;
        let cluster = key.id();
        let keys = TrustedKeys::load_dir(&cfg.trusted_keys)
            .with_context(|| format!("trusted keys in {}", cfg.trusted_keys.display()))?;
        let verifier = Verifier::open(keys, &cfg.data_dir.join("manifest-state.json"))
            .context("manifest anti-rollback state")?;
        let store = Store::open(&cfg.data_dir.join("store")).context("image store")?;
        let operator_keys = match &cfg.trusted_operator_keys {
            Some(dir) => Some(
                TrustedKeys::load_dir(dir)
                    .with_context(|| format!("trusted operator keys in {}", dir.display()))?,
            ),
            None => None,
        };
        if operator_keys.as_ref().is_none_or(|k| k.is_empty()) {
            tracing::warn!(
                "no trusted operator key (trusted_operator_keys): this agent refuses every \
                 operator statement (pause, resume, abort, rollback) and does not pass them on"
            );
        }
        let profiles = entente_devices::profile::load_dir(&cfg.profiles).map_err(|errs| {
            anyhow::anyhow!(
                "hw-profiles in {}: {}",
                cfg.profiles.display(),
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let profile = profiles
            .into_iter()
            .find(|p| p.name == cfg.device.profile)
            .with_context(|| {
                format!(
                    "no hw-profile named {:?} in {}",
                    cfg.device.profile,
                    cfg.profiles.display()
                )
            })?;
        let device = crate::device_backend::open(&cfg, &profile)?;
        let inventory = device.inventory().map_err(|e| e.to_string());
        // What the device holds outlives the disk: a store behind it was restored from an
        // older copy, and the node treats it as lost rather than re-apply older epochs.
        let device_links = device.link_epochs();
        let running = window::running_window(
            &profile,
            inventory.as_ref().map_err(Clone::clone),
            &fetch::held_manifests(&cfg.data_dir),
            db.running_window()?,
        )
        .map_err(anyhow::Error::msg)?;
        tracing::info!(
            "the device runs {}: firmware window {:?} from {}",
            running.version.as_deref().unwrap_or("(unknown)"),
            running.window,
            running.source
        );
        let running_campaign = running.campaign;
        let lost = db
            .created()
            .then(|| lost_store_evidence(&cfg.data_dir))
            .flatten();
        if let Some(evidence) = &lost {
            tracing::warn!(
                "the state store was lost: state.db is new, but {evidence}. Links are agreed \
                 again with the neighbours, which hold their committed epochs; this node takes a \
                 new incarnation above the one they report and grants no lease during the \
                 restart quarantine"
            );
        }
        let worker = Worker::start(
            device,
            Store::open(&cfg.data_dir.join("store")).context("image store")?,
        );
        let transport = net::open_transport(&cfg, key, fast_config(&cfg))?;
        let start = Instant::now();
        let mut ncfg = NodeConfig::new(
            NodeId(cfg.node_id),
            cfg.peers.iter().map(|p| NodeId(p.id)).collect(),
            cfg.transport.rtt_ms * 1_000_000,
        );
        ncfg.max_unavailable_neighbors = cfg.policy.max_unavailable_neighbors;
        ncfg.firmware_window = running.window;
        ncfg.device_links = device_links
            .iter()
            .map(|(&peer, &epoch)| (NodeId(peer), entente_proto::Epoch(epoch)))
            .collect();
        // Starts before this one: 0 on the very first start, which therefore grants leases at
        // once; any later start is a restart (it may have granted before it stopped), and so is
        // a start whose store was lost.
        ncfg.incarnation_hint = starts.saturating_sub(1).max(u32::from(lost.is_some()));
        ncfg.gossip_chunk = 64;
        // three heartbeats in the span after which other nodes call this one stale
        ncfg.heartbeat = Some((cfg.status.stale_after_s * 1_000_000_000 / 3).max(100_000_000));
        ncfg.seed = cfg.node_id ^ (u64::from(starts) << 32);
        let node = Node::new(ncfg, &durable, 0);
        let peers = cfg
            .peers
            .iter()
            .map(|p| (p.id, PeerLink::new(p.addr)))
            .collect();
        let control = ControlServer::bind(&cfg)?;
        let mut agent = Agent {
            node,
            db,
            transport,
            peers,
            timers: HashMap::new(),
            start,
            worker,
            store,
            verifier,
            profile,
            fetch: Fetch::Idle,
            manifests: HashMap::new(),
            images: HashMap::new(),
            image_epochs: HashMap::new(),
            pruned_after: None,
            running_campaign,
            ran_before: None,
            holdings: fanout::Holdings::default(),
            announcements: fanout::Announcements::default(),
            serve: fanout::ServeQueue::new(fanout::ServeParams::agent(fanout::Strategy::Pipeline)),
            reader: None,
            upload: fanout::RateLimit::new(cfg.fanout.max_mib_per_s, u64::from(BULK_SLOT), 0),
            download: fanout::RateLimit::new(cfg.fanout.max_mib_per_s, u64::from(BULK_SLOT), 0),
            running: running.window,
            activating: None,
            next_probe: start,
            probe_seq: 0,
            control,
            stop,
            reload,
            net_events: Vec::with_capacity(256),
            refusals: entente_fastpath::RefusalLog::new(net::REFUSALS_EVERY),
            outs: Vec::with_capacity(256),
            buf: Vec::with_capacity(4096),
            inventory: None,
            flash_percent: None,
            last_health: start,
            healthy: true,
            health_pending: None,
            unhealthy: None,
            operator_keys,
            cluster,
            statement: None,
            control_refusals: HashMap::new(),
            controls_refused: 0,
            cfg,
        };
        agent.serve = fanout::ServeQueue::new(fanout::ServeParams::agent(agent.strategy()));
        agent.restore_manifests()?;
        agent.restore_statement()?;
        if let Some(epoch) = running_campaign {
            agent.history(
                HistoryEvent::new(
                    HistoryKind::RunningAtStart,
                    format!("the device runs firmware of campaign {epoch}"),
                )
                .epoch(epoch),
            );
        }
        if let Some(evidence) = lost {
            agent.history(
                HistoryEvent::new(
                    HistoryKind::StoreLost,
                    format!("state store lost ({evidence}); restart quarantine"),
                )
                .reason(evidence.clone()),
            );
        }
        agent.carry_out()?;
        Ok(agent)
    }

    /// Protocol time: nanoseconds since this agent started.
    fn now(&self) -> Nanos {
        self.start.elapsed().as_nanos() as Nanos
    }

    /// Runs until SIGTERM. `status` gets a one-line status (first when the agent serves, then
    /// every few seconds); `healthy` is called every round after the health check (the systemd
    /// watchdog is pinged from there, never from a free-running timer).
    pub fn run(
        &mut self,
        mut status: impl FnMut(&str),
        mut healthy: impl FnMut(bool),
    ) -> Result<()> {
        status(&format!(
            "node {} serving on {}",
            self.cfg.node_id,
            self.transport.local_addr()
        ));
        let mut last_status = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if self.reload.swap(false, Ordering::Relaxed) {
                self.reload_config();
            }
            self.step()?;
            healthy(self.health_check());
            if last_status.elapsed() > Duration::from_secs(2) {
                last_status = Instant::now();
                let s = self.status();
                status(&format!(
                    "epoch {} {} links {}/{} committed",
                    s.epoch, s.phase, s.links_committed, s.links_total
                ));
            }
        }
        tracing::info!("stopping");
        Ok(())
    }

    /// One round: network, device results, timers, control requests, then the outputs.
    pub fn step(&mut self) -> Result<()> {
        self.dial();
        let tick = if self.busy() { TICK } else { IDLE_TICK };
        let wait = self.next_deadline().min(tick).min(self.fanout_wait());
        let mut events = std::mem::take(&mut self.net_events);
        self.transport.poll(&mut events, Some(wait))?;
        for e in events.drain(..) {
            self.on_net(e)?;
        }
        self.net_events = events;
        while let Ok(done) = self.worker.done.try_recv() {
            self.on_device(done)?;
        }
        self.fire_timers();
        // The node's decisions go out before any probe: data tagged with a link's new epoch may
        // only follow the COMMIT that moved it (FIFO on the connection does the rest).
        self.carry_out()?;
        self.probe();
        self.fetch_step()?;
        self.serve_step();
        self.announce_step();
        self.prune_step();
        self.serve_control();
        self.carry_out()
    }

    /// Whether this node's campaign phase is at rest (no campaign, or it converged or finished).
    fn phase_settled(&self) -> bool {
        matches!(
            self.node.phase().phase,
            entente_proto::Phase::Idle
                | entente_proto::Phase::Converged
                | entente_proto::Phase::Finalized
        )
    }

    /// Whether anything is in motion here: a fetch or flash, a peer to dial, a campaign phase
    /// that is not settled.
    fn busy(&self) -> bool {
        !matches!(self.fetch, Fetch::Idle)
            || self.peers.values().any(|p| p.conn.is_none())
            || !self.phase_settled()
    }

    /// The loop is healthy when the device worker is alive and the database answers (asked at
    /// most once a second: the loop runs many rounds a second while a campaign moves).
    fn health_check(&mut self) -> bool {
        if self.last_health.elapsed() >= Duration::from_secs(1) {
            self.last_health = Instant::now();
            self.healthy = self.worker.alive() && self.db.recent_history(1).is_ok();
        }
        self.healthy
    }

    /// How long the loop may sleep with image work pending: chunks to serve or announce, or
    /// a fetch waiting for the download cap, are looked at again within a few milliseconds.
    fn fanout_wait(&self) -> Duration {
        let pending = !self.serve.is_empty()
            || self.announcements.pending()
            || matches!(self.fetch, Fetch::Chunks { .. });
        if pending {
            Duration::from_millis(2)
        } else {
            IDLE_TICK
        }
    }

    fn next_deadline(&self) -> Duration {
        let now = self.now();
        self.timers
            .values()
            .map(|&at| Duration::from_nanos(at.saturating_sub(now)))
            .min()
            .unwrap_or(TICK)
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        let due: Vec<TimerKey> = self
            .timers
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            self.timers.remove(&k);
            self.node.handle_timer(now, k);
        }
    }

    fn on_device(&mut self, done: Done) -> Result<()> {
        let now = self.now();
        match done {
            Done::Staged { epoch, error } => {
                self.flash_percent = None;
                if let Some(e) = &error {
                    tracing::warn!(epoch, "staging into the device failed: {e}");
                    self.history(
                        HistoryEvent::new(
                            HistoryKind::StagingFailed,
                            format!("staging epoch {epoch} failed: {e}"),
                        )
                        .epoch(epoch)
                        .reason(e.clone()),
                    );
                } else {
                    self.history(
                        HistoryEvent::new(
                            HistoryKind::Staged,
                            format!("epoch {epoch} staged in the device"),
                        )
                        .epoch(epoch),
                    );
                }
                self.node
                    .staged(now, entente_proto::Epoch(epoch), error.is_none());
            }
            Done::Activated {
                epoch,
                error,
                unhealthy,
            } => self.on_activated(epoch, error, unhealthy)?,
            Done::HealthChecked { epoch, result } => self.on_health_checked(epoch, result),
            Done::RolledBack { epoch, result } => self.on_rolled_back(epoch, result)?,
            Done::LinkEpochPrepared { epoch, result } => {
                self.node
                    .link_epoch_prepared(now, entente_proto::Epoch(epoch), result);
            }
            Done::LinkEpochApplied {
                peer,
                epoch,
                result,
            } => {
                self.node.link_epoch_applied(
                    now,
                    NodeId(peer),
                    entente_proto::Epoch(epoch),
                    result,
                );
            }
            Done::Drained { epoch, result } => {
                match &result {
                    Ok(out) => self.history(
                        HistoryEvent::new(
                            HistoryKind::Drained,
                            format!("drained for epoch {epoch}: {out}"),
                        )
                        .epoch(epoch),
                    ),
                    Err(e) => self.history(
                        HistoryEvent::new(
                            HistoryKind::DrainFailed,
                            format!("drain for epoch {epoch} failed: {e}"),
                        )
                        .epoch(epoch)
                        .reason(e.to_string()),
                    ),
                }
                self.node
                    .drain_done(now, entente_proto::Epoch(epoch), result.map(|_| ()));
            }
            Done::Inventory(report) => self.inventory = Some(*report),
            Done::Progress(p) => self.flash_percent = Some(p),
        }
        Ok(())
    }

    fn history(&self, event: HistoryEvent) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Err(e) = self.db.history(at, &event.to_stored()) {
            tracing::error!("history: {e}");
        }
    }

    fn reload_config(&mut self) {
        match Config::load(self.cfg.source.as_deref()) {
            Ok(new) => {
                // Policy applies at once; identity, peers and paths need a restart.
                self.cfg.policy = new.policy;
                tracing::info!(
                    "configuration reloaded (policy applied; other changes need a restart)"
                );
            }
            Err(e) => tracing::error!("configuration reload refused: {e}"),
        }
    }
}
