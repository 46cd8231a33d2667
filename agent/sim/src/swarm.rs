//! Swarm testing: one seed picks every option of a run. Faults reach loss 0.2, duplicates 0.5,
//! 0.05 crashes, 0.02 partitions, 0.02 wipes (crashes that lose the state store), 0.05 torn
//! writes (crashes during a write) and 0.02 restores (crashes whose store comes back as an older
//! copy) per node per second and activation failures 0.2 (most runs with half or all of their
//! partitions one-way; half the runs with wall clocks that step by up to a second or ten
//! minutes, and half with an operator who retires and restores links and pauses, resumes and
//! aborts the campaign 0.2 or 1 times a second), and one run in eight has all of them
//! at once near the top of those ranges. Half the runs carry out several campaigns (two or
//! three, half of those going back: a semantics downgrade, then with three an image swap);
//! those lose or restore no store (a known gap: a store lost while the device
//! finishes an activation of campaign 2 or later leaves the restarted node announcing the
//! window it read at its start, see `wipes_in_later_campaigns_are_survived`).

use crate::config::{Budget, Protocol, SimConfig, TopologyKind};
use crate::report::Report;
use entente_proto::types::SeededRng;
use entente_proto::Rng;

/// The fault rates of one run.
struct Faults {
    loss: f64,
    dup: f64,
    crash_rate: f64,
    partition_rate: f64,
    activation_failure: f64,
}

/// The options seed `seed` chooses, for clusters of at most `max_nodes` hosts.
pub fn options(seed: u64, max_nodes: usize, protocol: Protocol) -> SimConfig {
    let mut r = SeededRng::new(seed ^ 0x5157_4a52_4d00_0000);
    let topology = match r.below(3) {
        0 => TopologyKind::Ring,
        1 => TopologyKind::FatTree,
        _ => TopologyKind::Random,
    };
    let max = max_nodes.max(4) as u64;
    let mut nodes = 3 + r.below(max - 2) as usize;
    let degree = (2 + r.below(3) as usize).min(max as usize - 2);
    if topology == TopologyKind::Random {
        // A d-regular graph needs more than d nodes and an even nodes × degree.
        nodes = nodes.max(degree + 2).min(max as usize);
        if !(nodes * degree).is_multiple_of(2) {
            nodes -= 1;
        }
    }
    let pick = |r: &mut SeededRng, choices: &[f64]| choices[r.below(choices.len() as u64) as usize];
    let mut faults = Faults {
        loss: pick(&mut r, &[0.0, 0.001, 0.01, 0.05, 0.2]),
        dup: pick(&mut r, &[0.0, 0.1, 0.5]),
        crash_rate: pick(&mut r, &[0.0, 0.001, 0.01, 0.05]),
        partition_rate: pick(&mut r, &[0.0, 0.001, 0.01, 0.02]),
        activation_failure: pick(&mut r, &[0.0, 0.05, 0.1, 0.2]),
    };
    // One run in eight is a storm: every fault at once, near the top of its range (the
    // combination that found a grantor over its budget under duplicates and crashes).
    let storm = r.below(8) == 0;
    if storm {
        faults = Faults {
            loss: pick(&mut r, &[0.05, 0.2]),
            dup: pick(&mut r, &[0.1, 0.5]),
            crash_rate: pick(&mut r, &[0.01, 0.05]),
            partition_rate: pick(&mut r, &[0.01, 0.02]),
            activation_failure: pick(&mut r, &[0.1, 0.2]),
        };
    }
    let mut cfg = SimConfig {
        nodes,
        topology,
        radix: [4, 8, 16][r.below(3) as usize],
        degree,
        loss: faults.loss,
        dup: faults.dup,
        crash_rate: faults.crash_rate,
        partition_rate: faults.partition_rate,
        activation_failure: faults.activation_failure,
        skew_ms: pick(&mut r, &[0.0, 1.0, 5.0, 50.0]),
        drift_ppm: pick(&mut r, &[0.0, 50.0, 200.0]),
        traffic_hz: pick(&mut r, &[100.0, 1000.0, 100_000.0]),
        corrupt: pick(&mut r, &[0.0, 0.01, 0.1]),
        max_unavailable: [
            Budget::Count(1),
            Budget::Count(2),
            Budget::Percent(25),
            Budget::Percent(50),
        ][r.below(4) as usize],
        activation: (
            entente_proto::types::SEC,
            (1 + r.below(30)) * entente_proto::types::SEC,
        ),
        seed,
        protocol,
        ..SimConfig::default()
    };
    // Drawn after every older option, so that a seed keeps the options it drew before.
    cfg.wipe_rate = if storm {
        pick(&mut r, &[0.01, 0.02])
    } else {
        pick(&mut r, &[0.0, 0.001, 0.01, 0.02])
    };
    cfg.torn_rate = if storm {
        pick(&mut r, &[0.01, 0.05])
    } else {
        pick(&mut r, &[0.0, 0.001, 0.01, 0.05])
    };
    let campaigns = [1, 1, 2, 3][r.below(4) as usize];
    let downgrade = r.below(2) == 0;
    cfg.restore_rate = if storm {
        pick(&mut r, &[0.005, 0.02])
    } else {
        pick(&mut r, &[0.0, 0.001, 0.005, 0.02])
    };
    // Half the partitions one-way in most runs: messages flow one way only.
    cfg.one_way_share = pick(&mut r, &[0.0, 0.5, 0.5, 1.0]);
    // Wall clocks that step by up to a second or ten minutes in half the runs (every storm).
    cfg.clock_step_ms = if storm {
        pick(&mut r, &[1000.0, 600_000.0])
    } else {
        pick(&mut r, &[0.0, 0.0, 1000.0, 600_000.0])
    };
    // An operator at work in half the runs (every storm): retires and restores, pauses,
    // resumes and aborts, then restores and resumes everything at the heal.
    cfg.operator_actions = if storm {
        pick(&mut r, &[0.2, 1.0])
    } else {
        pick(&mut r, &[0.0, 0.0, 0.2, 1.0])
    };
    // The baselines simulate one campaign.
    if protocol == Protocol::Bilateral && campaigns > 1 {
        cfg.campaigns = campaigns;
        cfg.downgrade = downgrade;
        cfg.wipe_rate = 0.0;
        cfg.restore_rate = 0.0;
    }
    cfg
}

/// The fault classes a run exercised: the ones its options turn on, and for the store faults
/// the ones that happened (a wipe rate with no wipe in the run does not count, nor a clock-step
/// size with no step, nor an operator who took no action); `campaigns`
/// (more than one campaign) and `downgrade` (campaigns that go back) count too. The swarm
/// reports, per class, how many seeds exercised it.
pub fn exercised(cfg: &SimConfig, r: &Report) -> Vec<&'static str> {
    let on = [
        ("loss", cfg.loss > 0.0),
        ("dup", cfg.dup > 0.0),
        ("crash", cfg.crash_rate > 0.0),
        ("partition", cfg.partition_rate > 0.0),
        ("skew", cfg.skew_ms > 0.0),
        ("drift", cfg.drift_ppm > 0.0),
        ("activation_failure", cfg.activation_failure > 0.0),
        ("corrupt", cfg.corrupt > 0.0),
        ("wipe", r.wipes > 0),
        ("torn_write", r.torn_writes > 0),
        ("restore", r.restores > 0),
        ("one_way_partition", r.one_way_partitions > 0),
        ("clock_step", r.clock_steps > 0),
        ("operator", r.operator_actions > 0),
        ("campaigns", cfg.campaigns > 1),
        ("downgrade", cfg.downgrade),
    ];
    on.into_iter().filter(|c| c.1).map(|c| c.0).collect()
}
