//! Options of one simulated run, their defaults (docs/protocol.md, "Simulator") and validation.

use entente_proto::types::{Nanos, MS, SEC, US};
use std::fmt;

/// Which switch-over protocol the run uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// entente: link-by-link bilateral transactions.
    Bilateral,
    /// Baseline: every node flips all its links at its own clock's time T.
    FitoClock,
    /// Baseline: a coordinator runs two-phase commit with a cluster-wide traffic pause.
    Fito2pc,
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Bilateral, Protocol::FitoClock, Protocol::Fito2pc];
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Bilateral => "bilateral",
            Protocol::FitoClock => "fito-clock",
            Protocol::Fito2pc => "fito-2pc",
        }
    }
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Protocol, ConfigError> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                ConfigError::new(
                    "protocol",
                    format!("unknown protocol {s:?} (expected bilateral, fito-clock or fito-2pc)"),
                )
            })
    }
}

/// The shape of the peer graph.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopologyKind {
    /// Hosts in a cycle.
    Ring,
    /// Leaf-spine: hosts and switches are nodes, cables are links.
    FatTree,
    /// Random regular graph.
    Random,
}

impl TopologyKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TopologyKind::Ring => "ring",
            TopologyKind::FatTree => "fat-tree",
            TopologyKind::Random => "random",
        }
    }
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<TopologyKind, ConfigError> {
        [
            TopologyKind::Ring,
            TopologyKind::FatTree,
            TopologyKind::Random,
        ]
        .into_iter()
        .find(|t| t.name() == s)
        .ok_or_else(|| {
            ConfigError::new(
                "topology",
                format!("unknown topology {s:?} (expected fat-tree, ring or random)"),
            )
        })
    }
}

/// How summaries travel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum GossipMode {
    /// Flood for small clusters, tree above [`SimConfig::gossip_flood_max`] nodes.
    Auto,
    /// Every node gossips with every neighbour (full replicas everywhere).
    Flood,
    /// Every node gossips with its parent on a BFS tree rooted at the origin.
    Tree,
}

/// How many neighbours of a node may be in a disruptive activation at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Budget {
    /// At most this many, whatever the node's degree.
    Count(usize),
    /// At most this percentage of the node's neighbours (rounded down), and at least one.
    Percent(u32),
}

impl Budget {
    /// The limit for a node with `degree` neighbours.
    pub fn limit(self, degree: usize) -> usize {
        match self {
            Budget::Count(n) => n,
            Budget::Percent(p) => (degree * p as usize / 100).max(1),
        }
    }
    /// Parses `4` or `25%`.
    pub fn parse(s: &str) -> Result<Budget, ConfigError> {
        let bad = || {
            ConfigError::new(
                "max-unavailable",
                format!("{s:?} is neither a count (4) nor a percentage (25%)"),
            )
        };
        let b = match s.strip_suffix('%') {
            Some(p) => Budget::Percent(p.trim().parse().map_err(|_| bad())?),
            None => Budget::Count(s.trim().parse().map_err(|_| bad())?),
        };
        match b {
            Budget::Count(0) | Budget::Percent(0) => Err(ConfigError::new(
                "max-unavailable",
                "0 would forbid every disruptive activation".into(),
            )),
            Budget::Percent(p) if p > 100 => Err(ConfigError::new(
                "max-unavailable",
                format!("{p}% is more than every neighbour"),
            )),
            b => Ok(b),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Count(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Deliberate bugs in the simulated driver, to prove the checkers work.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum DriverBug {
    /// None: the correct driver.
    #[default]
    None,
    /// Chunks are written without verifying their digest.
    SkipChunkVerify,
    /// Nodes grant more leases than the budget the checker enforces.
    OverGrant,
    /// Rollback to the previous bank after links committed.
    RollbackAfterCommit,
    /// After a wipe, the node is started with the firmware window of the campaign it had
    /// accepted (as a driver that reads the window from the manifests it holds, not from the
    /// device, would) instead of the window the device runs.
    WipeKeepsWindow,
    /// A write the disk acknowledged is lost at the crash that follows it (a write cache that
    /// lies): the node carries on, sends, and restarts behind what it sent.
    TornAckedWrite,
    /// The node is started without the link epochs its device holds (as a driver that trusts
    /// its store would): after a restore from an older copy it re-applies the store's older
    /// link epochs to the device.
    TrustRestoredStore,
    /// The node is handed the wall clock, which steps (`--clock-step-ms`), instead of the
    /// monotonic one (never below what it was handed before, so that time does not go back):
    /// a grantor whose clock jumps forward sees its grants expire early and grants again.
    WallClock,
}

/// Every option of a run. One seed determines everything else that is random.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Hosts (fat-tree adds switches).
    pub nodes: usize,
    /// Graph shape.
    pub topology: TopologyKind,
    /// Fat-tree switch radix (hosts per leaf and spines are half of it).
    pub radix: usize,
    /// Random graph degree.
    pub degree: usize,
    /// Probability that a message breaks its connection.
    pub loss: f64,
    /// Probability that a control message delivered before a break is delivered again.
    pub dup: f64,
    /// Crashes per node per simulated second.
    pub crash_rate: f64,
    /// Partitions per node per simulated second.
    pub partition_rate: f64,
    /// Share of the partitions that are one-way: messages flow one way and are dropped the
    /// other way while the connection stays up (it breaks when the partition ends).
    pub one_way_share: f64,
    /// Crashes whose restart has lost the state store, per node per simulated second.
    pub wipe_rate: f64,
    /// Crashes whose restart finds the state store restored from an older copy (the one taken
    /// at the node's previous start), per node per simulated second.
    pub restore_rate: f64,
    /// Crashes during a write (the write is lost, and nothing after it in the batch is carried
    /// out), per node per simulated second.
    pub torn_rate: f64,
    /// Largest step of a node's wall clock, forward or back, in milliseconds: steps arrive at
    /// [`CLOCK_STEP_RATE`] per node per simulated second in the fault phase; the monotonic
    /// clock the protocol runs on does not step. 0: no steps.
    pub clock_step_ms: f64,
    /// Operator actions per simulated second across the cluster, in the fault phase: retire or
    /// restore a link, or pause, resume or abort the campaign at a node. At the end of each fault
    /// phase the operator restores every link it retired and resumes the campaign.
    pub operator_actions: f64,
    /// Largest clock offset between a node and true time, in milliseconds.
    pub skew_ms: f64,
    /// Largest clock rate error, parts per million.
    pub drift_ppm: f64,
    /// Data messages per second per link direction.
    pub traffic_hz: f64,
    /// The seed.
    pub seed: u64,
    /// Switch-over protocol.
    pub protocol: Protocol,
    /// Mean one-way link delay.
    pub mean_delay: Nanos,
    /// Length of the fault phase; afterwards the network heals.
    pub fault_phase: Nanos,
    /// Probability that an activation (or its health check) fails, during the fault phase.
    pub activation_failure: f64,
    /// Probability that a fetched chunk is corrupt, during the fault phase.
    pub corrupt: f64,
    /// Chunks per image.
    pub chunks: u32,
    /// Time to fetch one chunk.
    pub chunk_time: Nanos,
    /// Shortest and longest activation (flash + reset).
    pub activation: (Nanos, Nanos),
    /// Most neighbours of a node in a disruptive activation at once.
    pub max_unavailable: Budget,
    /// fito-clock: the switch time T after the campaign starts.
    pub fito_switch_at: Nanos,
    /// fito-2pc: a paused participant resumes traffic on its own after this long.
    pub pause_timeout: Nanos,
    /// Gossip topology.
    pub gossip: GossipMode,
    /// Largest cluster that floods gossip under [`GossipMode::Auto`].
    pub gossip_flood_max: usize,
    /// Simulated-time limit of a run.
    pub time_limit: Nanos,
    /// Driver bug under test.
    pub driver_bug: DriverBug,
    /// Campaigns run one after the other: campaign `k + 1` starts at the origin once campaign
    /// `k` converged, and each has its own fault phase.
    pub campaigns: u32,
    /// The second and third campaigns go back: a semantics downgrade (epoch 2, the firmware of
    /// campaign 1, meaning the semantics of epoch 0 again), then an image swap (epoch 3, the
    /// firmware from before campaign 1). Needs at least 2 campaigns.
    pub downgrade: bool,
    /// Protocol mutation under test.
    #[cfg(feature = "mutants")]
    pub mutant: Option<entente_proto::Mutant>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            nodes: 16,
            topology: TopologyKind::FatTree,
            radix: 32,
            degree: 4,
            loss: 0.0,
            dup: 0.0,
            crash_rate: 0.0,
            partition_rate: 0.0,
            one_way_share: 0.0,
            wipe_rate: 0.0,
            restore_rate: 0.0,
            torn_rate: 0.0,
            clock_step_ms: 0.0,
            operator_actions: 0.0,
            skew_ms: 1.0,
            drift_ppm: 50.0,
            traffic_hz: 1000.0,
            seed: 1,
            protocol: Protocol::Bilateral,
            mean_delay: 10 * US,
            fault_phase: 60 * SEC,
            activation_failure: 0.0,
            corrupt: 0.0,
            chunks: 16,
            chunk_time: 5 * MS,
            activation: (SEC, 30 * SEC),
            max_unavailable: Budget::Percent(25),
            fito_switch_at: 3600 * SEC,
            pause_timeout: 30 * SEC,
            gossip: GossipMode::Auto,
            gossip_flood_max: 300,
            time_limit: 6 * 3600 * SEC,
            driver_bug: DriverBug::None,
            campaigns: 1,
            downgrade: false,
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

/// An invalid option, naming the option and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The option.
    pub option: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(option: &'static str, problem: String) -> ConfigError {
        ConfigError { option, problem }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}: {}", self.option, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn probability(option: &'static str, p: f64) -> Result<(), ConfigError> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(ConfigError::new(
            option,
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

fn non_negative(option: &'static str, x: f64) -> Result<(), ConfigError> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            option,
            format!("{x} must be a finite number ≥ 0"),
        ))
    }
}

/// Largest cluster a run accepts.
pub const MAX_NODES: usize = 1_000_000;

/// Most campaigns in one run.
pub const MAX_CAMPAIGNS: u32 = 1000;

/// Steps of a node's wall clock per simulated second in the fault phase, with
/// `--clock-step-ms` (about one per node per fault phase).
pub const CLOCK_STEP_RATE: f64 = 0.02;

/// Largest wall-clock step, milliseconds (a day).
pub const MAX_CLOCK_STEP_MS: f64 = 86_400_000.0;

impl SimConfig {
    /// Checks every option; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 {
            return Err(ConfigError::new(
                "nodes",
                "a cluster needs at least 1 node".into(),
            ));
        }
        if self.nodes > MAX_NODES {
            return Err(ConfigError::new(
                "nodes",
                format!("{} is more than the {MAX_NODES} supported", self.nodes),
            ));
        }
        match self.topology {
            TopologyKind::Ring if self.nodes < 2 => {
                return Err(ConfigError::new(
                    "nodes",
                    "a ring needs at least 2 nodes".into(),
                ))
            }
            TopologyKind::FatTree if self.radix < 2 || !self.radix.is_multiple_of(2) => {
                return Err(ConfigError::new(
                    "radix",
                    format!("{} must be an even number ≥ 2", self.radix),
                ))
            }
            TopologyKind::Random => {
                if self.degree == 0 || self.degree >= self.nodes {
                    return Err(ConfigError::new(
                        "degree",
                        format!(
                            "{} must be between 1 and nodes - 1 ({})",
                            self.degree,
                            self.nodes.saturating_sub(1)
                        ),
                    ));
                }
                if !(self.degree * self.nodes).is_multiple_of(2) {
                    return Err(ConfigError::new("degree", format!("a {}-regular graph on {} nodes does not exist (degree × nodes must be even)", self.degree, self.nodes)));
                }
            }
            _ => {}
        }
        probability("loss", self.loss)?;
        probability("dup", self.dup)?;
        probability("activation-failure", self.activation_failure)?;
        probability("corrupt", self.corrupt)?;
        probability("one-way-share", self.one_way_share)?;
        if self.loss >= 1.0 {
            return Err(ConfigError::new(
                "loss",
                "1 breaks every connection on its first message: nothing could ever converge"
                    .into(),
            ));
        }
        if self.activation_failure >= 1.0 {
            return Err(ConfigError::new(
                "activation-failure",
                "1 means no activation ever succeeds".into(),
            ));
        }
        if self.corrupt >= 1.0 {
            return Err(ConfigError::new(
                "corrupt",
                "1 means no chunk ever verifies".into(),
            ));
        }
        non_negative("crash-rate", self.crash_rate)?;
        non_negative("partition-rate", self.partition_rate)?;
        non_negative("wipe-rate", self.wipe_rate)?;
        non_negative("restore-rate", self.restore_rate)?;
        non_negative("torn-rate", self.torn_rate)?;
        non_negative("clock-step-ms", self.clock_step_ms)?;
        non_negative("operator-actions", self.operator_actions)?;
        if self.clock_step_ms > MAX_CLOCK_STEP_MS {
            return Err(ConfigError::new(
                "clock-step-ms",
                format!(
                    "{} is more than a day ({MAX_CLOCK_STEP_MS} ms)",
                    self.clock_step_ms
                ),
            ));
        }
        non_negative("skew-ms", self.skew_ms)?;
        non_negative("drift-ppm", self.drift_ppm)?;
        non_negative("traffic-hz", self.traffic_hz)?;
        if self.drift_ppm > 1000.0 {
            return Err(ConfigError::new(
                "drift-ppm",
                format!(
                    "{} is beyond any real oscillator (max 1000)",
                    self.drift_ppm
                ),
            ));
        }
        if self.traffic_hz > 1e7 {
            return Err(ConfigError::new(
                "traffic-hz",
                format!(
                    "{} is more than 10^7 messages per second per direction",
                    self.traffic_hz
                ),
            ));
        }
        if self.mean_delay == 0 {
            return Err(ConfigError::new(
                "delay",
                "the mean link delay must be positive".into(),
            ));
        }
        if matches!(self.max_unavailable, Budget::Count(0) | Budget::Percent(0)) {
            return Err(ConfigError::new(
                "max-unavailable",
                "0 would forbid every disruptive activation".into(),
            ));
        }
        if self.chunks == 0 {
            return Err(ConfigError::new(
                "chunks",
                "an image has at least one chunk".into(),
            ));
        }
        if self.campaigns == 0 || self.campaigns > MAX_CAMPAIGNS {
            return Err(ConfigError::new(
                "campaigns",
                format!("{} is not between 1 and {MAX_CAMPAIGNS}", self.campaigns),
            ));
        }
        if self.campaigns > 1 && self.protocol != Protocol::Bilateral {
            return Err(ConfigError::new(
                "campaigns",
                format!(
                    "the {} baseline simulates one campaign only",
                    self.protocol.name()
                ),
            ));
        }
        if self.downgrade && self.campaigns < 2 {
            return Err(ConfigError::new(
                "downgrade",
                "going back needs at least 2 campaigns (the upgrade, then the downgrade)".into(),
            ));
        }
        if self.activation.0 > self.activation.1 {
            return Err(ConfigError::new(
                "activation",
                "shortest activation exceeds the longest".into(),
            ));
        }
        Ok(())
    }

    /// Round-trip time: twice the mean one-way delay.
    pub fn rtt(&self) -> Nanos {
        2 * self.mean_delay
    }

    /// The command line that reproduces this run (options that differ from the defaults).
    pub fn command(&self) -> String {
        let d = SimConfig::default();
        let mut s = format!(
            "entente sim --nodes {} --topology {} --protocol {} --seed {}",
            self.nodes,
            self.topology.name(),
            self.protocol.name(),
            self.seed
        );
        let mut opt = |name: &str, v: f64, dv: f64| {
            if v != dv {
                s.push_str(&format!(" --{name} {v}"));
            }
        };
        opt("loss", self.loss, d.loss);
        opt("dup", self.dup, d.dup);
        opt("crash-rate", self.crash_rate, d.crash_rate);
        opt("partition-rate", self.partition_rate, d.partition_rate);
        opt("one-way-share", self.one_way_share, d.one_way_share);
        opt("wipe-rate", self.wipe_rate, d.wipe_rate);
        opt("restore-rate", self.restore_rate, d.restore_rate);
        opt("torn-rate", self.torn_rate, d.torn_rate);
        opt("clock-step-ms", self.clock_step_ms, d.clock_step_ms);
        opt(
            "operator-actions",
            self.operator_actions,
            d.operator_actions,
        );
        opt("skew-ms", self.skew_ms, d.skew_ms);
        opt("drift-ppm", self.drift_ppm, d.drift_ppm);
        opt("traffic-hz", self.traffic_hz, d.traffic_hz);
        opt(
            "activation-failure",
            self.activation_failure,
            d.activation_failure,
        );
        opt("corrupt", self.corrupt, d.corrupt);
        opt("radix", self.radix as f64, d.radix as f64);
        opt("degree", self.degree as f64, d.degree as f64);
        if self.max_unavailable != d.max_unavailable {
            s.push_str(&format!(" --max-unavailable {}", self.max_unavailable));
        }
        if self.campaigns != d.campaigns {
            s.push_str(&format!(" --campaigns {}", self.campaigns));
        }
        if self.downgrade {
            s.push_str(" --downgrade");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SimConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_options_name_themselves() {
        let bad = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::default();
            f(&mut c);
            c.validate().unwrap_err().option
        };
        assert_eq!(bad(|c| c.nodes = 0), "nodes");
        assert_eq!(bad(|c| c.loss = 1.5), "loss");
        assert_eq!(bad(|c| c.dup = -0.1), "dup");
        assert_eq!(bad(|c| c.loss = f64::NAN), "loss");
        assert_eq!(bad(|c| c.crash_rate = -1.0), "crash-rate");
        assert_eq!(bad(|c| c.wipe_rate = f64::INFINITY), "wipe-rate");
        assert_eq!(bad(|c| c.radix = 3), "radix");
        assert_eq!(bad(|c| c.one_way_share = -0.5), "one-way-share");
        assert_eq!(bad(|c| c.clock_step_ms = -1.0), "clock-step-ms");
        assert_eq!(bad(|c| c.clock_step_ms = f64::NAN), "clock-step-ms");
        assert_eq!(bad(|c| c.clock_step_ms = 1e12), "clock-step-ms");
        assert_eq!(bad(|c| c.operator_actions = -0.1), "operator-actions");
        assert_eq!(bad(|c| c.operator_actions = f64::NAN), "operator-actions");
        assert_eq!(bad(|c| c.campaigns = 0), "campaigns");
        assert_eq!(
            bad(|c| {
                c.campaigns = 2;
                c.protocol = Protocol::Fito2pc;
            }),
            "campaigns"
        );
        assert_eq!(bad(|c| c.downgrade = true), "downgrade");
        assert_eq!(
            bad(|c| {
                c.topology = TopologyKind::Random;
                c.nodes = 5;
                c.degree = 3;
            }),
            "degree"
        );
        assert!(Protocol::parse("paxos").is_err());
        assert!(TopologyKind::parse("torus")
            .unwrap_err()
            .problem
            .contains("torus"));
    }
}
