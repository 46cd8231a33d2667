//! The FITO baselines run through the same checkers as bilateral, and the checkers do fail
//! them: a switch at clock time T mismatches data for as long as the clocks disagree, and
//! two-phase commit either mismatches (a participant that stops waiting) or blocks traffic
//! cluster-wide. Bilateral, on the same clusters, neither mismatches nor blocks.

mod common;

use common::{count, explain};
use entente_proto::types::SEC;
use entente_sim::{Protocol, Report, SimConfig};

/// 64 hosts on the default fat-tree (4 leaves, 4 spines), no faults.
fn cluster(protocol: Protocol, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 64,
        seed,
        protocol,
        ..SimConfig::default()
    }
}

const SEEDS: [u64; 2] = [1, 2];

fn bilateral(seed: u64) -> Report {
    let r = common::run(cluster(Protocol::Bilateral, seed));
    assert!(r.passed(), "bilateral: {}", explain(&r));
    assert_eq!(r.safety_violations, 0, "{}", explain(&r));
    r
}

#[test]
fn bilateral_is_safe_and_barely_blocks() {
    for seed in SEEDS {
        for skew_ms in [0.0, 5.0, 50.0] {
            let r = common::run(SimConfig {
                skew_ms,
                traffic_hz: 100_000.0,
                ..cluster(Protocol::Bilateral, seed)
            });
            assert!(r.passed(), "skew {skew_ms} ms: {}", explain(&r));
            // Data pauses only while a responder reflects: about a round trip per link.
            assert!(
                r.blocked_ms < 100.0,
                "blocked {} ms: {}",
                r.blocked_ms,
                explain(&r)
            );
            assert!(r.conv_detected_ms.is_some(), "{}", explain(&r));
        }
    }
}

#[test]
fn fito_clock_with_5ms_skew_mismatches_data() {
    for seed in SEEDS {
        let b = bilateral(seed);
        let r = common::run(SimConfig {
            skew_ms: 5.0,
            ..cluster(Protocol::FitoClock, seed)
        });
        assert!(r.converged, "{}", explain(&r));
        assert!(count(&r, "agreement") > 0, "{}", explain(&r));
        assert_eq!(
            r.first_violation.as_ref().map(|v| v.invariant),
            Some("agreement"),
            "{}",
            explain(&r)
        );
        assert!(!r.passed());
        assert!(
            r.mixed_state_link_ms > 100.0 * b.mixed_state_link_ms.max(1.0),
            "fito-clock mixed {} ms, bilateral {} ms",
            r.mixed_state_link_ms,
            b.mixed_state_link_ms
        );
    }
}

/// The mixed-state time of a clock switch grows with the skew between the clocks.
#[test]
fn fito_clock_mixed_state_grows_with_skew() {
    let mixed = |skew_ms: f64| -> f64 {
        SEEDS
            .iter()
            .map(|&seed| {
                common::run(SimConfig {
                    skew_ms,
                    drift_ppm: 0.0,
                    ..cluster(Protocol::FitoClock, seed)
                })
                .mixed_state_link_ms
            })
            .sum()
    };
    let (small, large) = (mixed(0.5), mixed(5.0));
    assert!(
        large > 3.0 * small && small > 0.0,
        "mixed-state link time: {small} ms at 0.5 ms skew, {large} ms at 5 ms"
    );
}

/// A participant that resumes traffic after a short pause timeout (1 s, while activations take
/// up to 30 s) sends old-epoch data across the flip.
#[test]
fn fito_2pc_with_a_short_pause_timeout_mismatches_data() {
    for seed in SEEDS {
        let b = bilateral(seed);
        let r = common::run(SimConfig {
            pause_timeout: SEC,
            traffic_hz: 100_000.0,
            ..cluster(Protocol::Fito2pc, seed)
        });
        assert!(r.converged, "{}", explain(&r));
        assert!(count(&r, "agreement") > 0, "{}", explain(&r));
        assert!(!r.passed());
        assert!(
            r.blocked_ms > 10_000.0 && r.blocked_ms > 1000.0 * b.blocked_ms.max(1.0),
            "fito-2pc blocked {} ms, bilateral {} ms",
            r.blocked_ms,
            b.blocked_ms
        );
    }
}

/// With participants that wait as long as it takes and no faults, two-phase commit is safe, at
/// the price of traffic held on every link from a node's vote until the coordinator resumes it.
#[test]
fn fito_2pc_that_waits_is_safe_but_blocks_the_cluster() {
    for seed in SEEDS {
        let b = bilateral(seed);
        let r = common::run(SimConfig {
            pause_timeout: 1_000_000 * SEC,
            ..cluster(Protocol::Fito2pc, seed)
        });
        assert!(r.converged, "{}", explain(&r));
        assert_eq!(r.safety_violations, 0, "{}", explain(&r));
        assert!(r.conv_detected_ms.is_some(), "{}", explain(&r));
        assert!(
            r.blocked_ms > 1_000_000.0 && r.blocked_ms > 10_000.0 * b.blocked_ms.max(1.0),
            "fito-2pc blocked {} ms, bilateral {} ms",
            r.blocked_ms,
            b.blocked_ms
        );
    }
}
