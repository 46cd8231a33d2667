//! Liveness: once the network heals, every link commits within the bound (3 RTT + 1 s after
//! the latest of the heal, the last activation and the last restart), and a run that does not
//! converge says so.

mod common;

use common::explain;
use entente_proto::types::SEC;
use entente_sim::{Budget, Protocol, SimConfig, TopologyKind};

fn heavy(topology: TopologyKind, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 48,
        topology,
        radix: 8,
        degree: 3,
        loss: 0.02,
        dup: 0.2,
        crash_rate: 0.01,
        partition_rate: 0.005,
        skew_ms: 5.0,
        drift_ppm: 200.0,
        traffic_hz: 10_000.0,
        activation_failure: 0.1,
        corrupt: 0.05,
        max_unavailable: Budget::Count(2),
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn heavy_faults_heal_and_converge_within_the_bound() {
    let cfgs: Vec<SimConfig> = [
        TopologyKind::Ring,
        TopologyKind::FatTree,
        TopologyKind::Random,
    ]
    .into_iter()
    .flat_map(|t| (1..=3).map(move |seed| heavy(t, seed)))
    .collect();
    let reports = common::par_map(&cfgs, |c| common::run(c.clone()));
    for r in &reports {
        assert!(r.passed(), "{}", explain(r));
        assert_eq!(r.failure, None);
        assert!(r.converged);
        // The run went through the whole fault phase and then converged.
        assert!(r.sim_time_ms >= 60_000.0, "{}", explain(r));
        let rounds = r.rounds_to_converge.expect("converged runs count rounds");
        assert!(rounds.is_finite() && rounds >= 0.0, "{rounds}");
        assert_eq!(r.progress.last().map(|p| p.1), Some(1.0), "{}", explain(r));
    }
}

/// The origin learns of convergence through gossip, whatever the faults on the way.
#[test]
fn the_origin_detects_convergence() {
    for t in [
        TopologyKind::Ring,
        TopologyKind::FatTree,
        TopologyKind::Random,
    ] {
        for seed in 1..=2 {
            let cfg = SimConfig {
                crash_rate: 0.0,
                ..heavy(t, seed)
            };
            let r = common::run(cfg);
            assert!(r.passed(), "{}", explain(&r));
            let detected = r.conv_detected_ms.unwrap_or_else(|| {
                panic!("the origin never learned of convergence: {}", explain(&r))
            });
            assert!(detected > 0.0 && detected <= r.sim_time_ms, "{detected}");
        }
    }
}

/// The origin watches Conv(P, e) in its summary. The simulator registers that watch once, at
/// boot; a restarted origin is a new `Node` without it, so it never reports convergence and the
/// run idles 60 s before it stops (`conv_detected_ms` stays empty).
#[test]
fn a_restarted_origin_still_detects_convergence() {
    // Node 0 crashes at 8.1 s and restarts at 9.5 s in this run.
    let r = common::run(SimConfig {
        nodes: 48,
        topology: TopologyKind::Ring,
        crash_rate: 0.01,
        seed: 1,
        ..SimConfig::default()
    });
    assert!(r.passed(), "{}", explain(&r));
    assert!(
        r.conv_detected_ms.is_some(),
        "the origin never learned of convergence: {}",
        explain(&r)
    );
}

/// Partitions of every kind (a link, one direction, an isolated node, a split) for the whole
/// fault phase: they end with it, and the campaign completes.
#[test]
fn partitions_end_and_the_campaign_completes() {
    for seed in 1..=3 {
        let r = common::run(SimConfig {
            nodes: 32,
            topology: TopologyKind::Ring,
            partition_rate: 0.05,
            seed,
            ..SimConfig::default()
        });
        assert!(r.passed(), "{}", explain(&r));
    }
}

/// A longer fault phase with crashes throughout: convergence still follows the heal.
#[test]
fn crashes_through_a_long_fault_phase() {
    for seed in 1..=2 {
        let r = common::run(SimConfig {
            nodes: 24,
            topology: TopologyKind::Random,
            degree: 4,
            crash_rate: 0.01,
            dup: 0.5,
            fault_phase: 300 * SEC,
            seed,
            ..SimConfig::default()
        });
        assert!(r.passed(), "{}", explain(&r));
        assert!(r.sim_time_ms >= 300_000.0, "{}", explain(&r));
    }
}

#[test]
fn a_run_stopped_before_convergence_reports_no_convergence() {
    for protocol in Protocol::ALL {
        // Activations alone take a second or more: 2 s is far too short for 64 hosts.
        let r = common::run(SimConfig {
            nodes: 64,
            time_limit: 2 * SEC,
            protocol,
            ..SimConfig::default()
        });
        assert!(!r.converged, "{}", explain(&r));
        assert!(!r.passed());
        assert_eq!(r.rounds_to_converge, None);
        let failure = r.failure.as_deref().unwrap_or_default();
        assert!(
            failure.starts_with("no convergence"),
            "{}: {failure:?}",
            protocol.name()
        );
        assert!(
            failure.contains("links not committed when the run stopped"),
            "{failure}"
        );
        // It stops at the first event past the limit.
        assert!(r.sim_time_ms < 10_000.0, "ran to {} ms", r.sim_time_ms);
        assert_eq!(r.safety_violations, 0, "{}", explain(&r));
        // The report says how to reproduce it.
        assert!(r.reproduce.starts_with("entente sim "), "{}", r.reproduce);
        assert!(r.text().contains("FAILED: no convergence"), "{}", r.text());
    }
}

/// Mid-campaign: some links committed, not all (the ring converges at about 67 s: neighbours
/// never reboot together).
#[test]
fn a_run_stopped_mid_campaign_counts_the_links_left() {
    let r = common::run(SimConfig {
        nodes: 16,
        topology: TopologyKind::Ring,
        time_limit: 40 * SEC,
        activation: (SEC, 10 * SEC),
        ..SimConfig::default()
    });
    assert!(!r.converged);
    let done = r.progress.last().map_or(0.0, |p| p.1);
    assert!(
        done > 0.0 && done < 1.0,
        "committed fraction {done} at the stop: {}",
        explain(&r)
    );
    let failure = r.failure.expect("a failure");
    let expected_tail = format!(" of {} links not committed", r.links);
    assert!(failure.contains(&expected_tail), "{failure}");
}
