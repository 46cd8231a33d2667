//! The simulator's acceptance properties, driven through the library entry point `run`:
//! a fault swarm stays safe and converges, runs are deterministic, the FITO baselines are caught
//! by the same checkers, and deliberately buggy drivers are caught too.

use entente_sim::{run, swarm, Budget, DriverBug, Protocol, Report, SimConfig, TopologyKind};

fn explain(r: &Report) -> String {
    format!(
        "{}\n  first violation: {:?}\n  failure: {:?}",
        r.reproduce, r.first_violation, r.failure
    )
}

/// ≥ 200 seeds, each drawing every option (topology, N ≤ 64, loss, duplicates, crashes,
/// partitions, skew, drift, activation failures, corrupt chunks, budget) from its seed.
#[test]
fn swarm_of_200_seeds_is_safe_and_converges() {
    let seeds: Vec<u64> = (1..=200).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(100)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|&seed| {
                            let r = run(swarm::options(seed, 64, Protocol::Bilateral)).unwrap();
                            (!r.passed()).then(|| explain(&r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn faulty(protocol: Protocol, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 48,
        topology: TopologyKind::FatTree,
        radix: 8,
        loss: 0.01,
        dup: 0.1,
        crash_rate: 0.005,
        partition_rate: 0.002,
        seed,
        protocol,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_same_trace_for_every_protocol() {
    for p in Protocol::ALL {
        let a = run(faulty(p, 11)).unwrap();
        let b = run(faulty(p, 11)).unwrap();
        assert_eq!(
            (&a.trace_hash, a.events, a.messages),
            (&b.trace_hash, b.events, b.messages),
            "{}",
            p.name()
        );
        let c = run(faulty(p, 12)).unwrap();
        assert_ne!(a.trace_hash, c.trace_hash, "{}: seeds 11 and 12", p.name());
    }
}

#[test]
fn bilateral_is_safe_where_the_fito_baselines_are_not() {
    let base = SimConfig {
        nodes: 64,
        skew_ms: 5.0,
        seed: 3,
        ..SimConfig::default()
    };
    let bilateral = run(base.clone()).unwrap();
    assert!(bilateral.passed(), "{}", explain(&bilateral));
    let clock = run(SimConfig {
        protocol: Protocol::FitoClock,
        ..base.clone()
    })
    .unwrap();
    assert!(clock.converged);
    assert!(
        clock.violations_by_invariant["agreement"] > 0,
        "fito-clock with 5 ms skew found no mismatch: {}",
        explain(&clock)
    );
    // Two-phase commit: safe while nobody gives up waiting, at the price of a cluster-wide pause.
    let patient = SimConfig {
        protocol: Protocol::Fito2pc,
        pause_timeout: 100_000 * entente_proto::types::SEC,
        ..base.clone()
    };
    let tpc = run(patient).unwrap();
    assert_eq!(tpc.safety_violations, 0, "{}", explain(&tpc));
    assert!(
        tpc.blocked_ms > 1000.0 * bilateral.blocked_ms,
        "2pc blocked {} ms, bilateral {} ms",
        tpc.blocked_ms,
        bilateral.blocked_ms
    );
    // A participant that resumes on a timeout brings mismatches.
    let impatient = SimConfig {
        protocol: Protocol::Fito2pc,
        pause_timeout: entente_proto::types::SEC,
        traffic_hz: 100_000.0,
        ..base
    };
    let tpc = run(impatient).unwrap();
    assert!(
        tpc.violations_by_invariant["agreement"] > 0,
        "{}",
        explain(&tpc)
    );
}

fn caught(cfg: SimConfig, invariant: &str, seeds: std::ops::Range<u64>) {
    for seed in seeds.clone() {
        let r = run(SimConfig {
            seed,
            ..cfg.clone()
        })
        .unwrap();
        if r.violations_by_invariant[invariant] > 0 {
            return;
        }
    }
    panic!(
        "no {invariant} violation for seeds {seeds:?} of {}",
        cfg.command()
    );
}

#[test]
fn checkers_catch_buggy_drivers() {
    let base = SimConfig {
        nodes: 32,
        topology: TopologyKind::FatTree,
        radix: 16,
        ..SimConfig::default()
    };
    // Writing chunks without verifying them activates corrupt images.
    caught(
        SimConfig {
            driver_bug: DriverBug::SkipChunkVerify,
            corrupt: 0.2,
            ..base.clone()
        },
        "integrity",
        1..4,
    );
    // Granting beyond the budget the checker enforces.
    caught(
        SimConfig {
            driver_bug: DriverBug::OverGrant,
            max_unavailable: Budget::Count(1),
            ..base.clone()
        },
        "budget",
        1..4,
    );
    // Swapping the bank back after a link moved.
    caught(
        SimConfig {
            driver_bug: DriverBug::RollbackAfterCommit,
            ..base
        },
        "compatibility",
        1..4,
    );
}

#[test]
fn a_run_cut_short_reports_no_convergence() {
    let r = run(SimConfig {
        nodes: 16,
        time_limit: entente_proto::types::SEC,
        ..SimConfig::default()
    })
    .unwrap();
    assert!(!r.converged && !r.passed());
    assert!(
        r.failure
            .as_deref()
            .unwrap_or("")
            .starts_with("no convergence"),
        "{:?}",
        r.failure
    );
}
