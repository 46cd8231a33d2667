//! The JSON report of a run.

use crate::check::Violation;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a run produced. Field names are a stable contract (scripts read them).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Protocol name.
    pub protocol: &'static str,
    /// Nodes, switches included.
    pub nodes: usize,
    /// Hosts.
    pub hosts: usize,
    /// Links.
    pub links: usize,
    /// Topology name.
    pub topology: &'static str,
    /// The seed.
    pub seed: u64,
    /// Every live link committed the campaign epoch.
    pub converged: bool,
    /// From the last activation to Conv(P, e) in the global view, in round trips.
    pub rounds_to_converge: Option<f64>,
    /// From campaign start until the origin node knew Conv(P, e), in milliseconds.
    pub conv_detected_ms: Option<f64>,
    /// Simulated time of the run, milliseconds.
    pub sim_time_ms: f64,
    /// Messages: simulated ones plus the data counted in steady stretches.
    pub messages: u64,
    /// Safety violations, all invariants.
    pub safety_violations: u64,
    /// Violations per invariant.
    pub violations_by_invariant: BTreeMap<&'static str, u64>,
    /// Sum over links of the time their two ends spoke different epochs, milliseconds.
    pub mixed_state_link_ms: f64,
    /// Sum over link directions of the time data was paused on an open connection, ms.
    pub blocked_ms: f64,
    /// Hash of the whole event trace (same seed and options → same hash).
    pub trace_hash: String,
    /// Events processed.
    pub events: u64,
    /// Wall-clock time of the run, milliseconds.
    pub wall_ms: f64,
    /// The first violation, if any.
    pub first_violation: Option<Violation>,
    /// Why the run failed liveness, if it did ("no convergence: ...").
    pub failure: Option<String>,
    /// The command that reproduces this run.
    pub reproduce: String,
    /// Restarts that found the node's state store lost (`--wipe-rate`).
    pub wipes: u64,
    /// Restarts that found the node's state store restored from an older copy
    /// (`--restore-rate`).
    pub restores: u64,
    /// Crashes during a write, which was lost (`--torn-rate`).
    pub torn_writes: u64,
    /// Partitions that were one-way (`--one-way-share`).
    pub one_way_partitions: u64,
    /// Steps of a node's wall clock (`--clock-step-ms`).
    pub clock_steps: u64,
    /// Operator actions carried out at a node (`--operator-actions`), the final restores and
    /// resumes of each fault phase included.
    pub operator_actions: u64,
    /// The liveness property the run broke, if any: `convergence`, or `resume` for a campaign
    /// the operator aborted and then resumed (`failure` says how).
    pub liveness: Option<&'static str>,
    /// Campaigns the run was to carry out (`--campaigns`).
    pub campaigns: u32,
    /// Campaigns that converged, one after the other (the run stops at one that does not).
    pub campaigns_converged: u32,
    /// Committed-link fraction over simulated time: (ms, fraction), downsampled.
    #[serde(skip)]
    pub progress: Vec<(f64, f64)>,
}

impl Report {
    /// Whether `--check` passes: no violation and convergence within the bound.
    pub fn passed(&self) -> bool {
        self.safety_violations == 0 && self.failure.is_none() && self.converged
    }

    /// A one-screen human summary.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} on {} ({} nodes, {} links), seed {}\n",
            self.protocol, self.topology, self.nodes, self.links, self.seed
        );
        s += &format!(
            "  converged: {}   rounds to converge: {}   detected at origin: {}\n",
            self.converged,
            self.rounds_to_converge
                .map_or("-".into(), |r| format!("{r:.2}")),
            self.conv_detected_ms
                .map_or("-".into(), |m| format!("{m:.1} ms")),
        );
        if self.campaigns > 1 {
            s += &format!(
                "  campaigns converged: {} of {}\n",
                self.campaigns_converged, self.campaigns
            );
        }
        s += &format!(
            "  safety violations: {}   mixed-state link time: {:.3} ms   blocked: {:.3} ms\n",
            self.safety_violations, self.mixed_state_link_ms, self.blocked_ms
        );
        for (k, v) in &self.violations_by_invariant {
            if *v > 0 {
                s += &format!("    {k}: {v}\n");
            }
        }
        if let Some(v) = &self.first_violation {
            s += &format!(
                "  first violation: {} at step {} ({:.3} ms): {}\n",
                v.invariant, v.step, v.time_ms, v.detail
            );
        }
        if let Some(f) = &self.failure {
            s += &format!("  FAILED: {f}\n");
        }
        s += &format!(
            "  simulated {:.1} s, {} events, {} messages, {:.0} ms wall, trace {}\n",
            self.sim_time_ms / 1000.0,
            self.events,
            self.messages,
            self.wall_ms,
            self.trace_hash
        );
        if !self.passed() {
            s += &format!("  reproduce: {}\n", self.reproduce);
        }
        s
    }
}
