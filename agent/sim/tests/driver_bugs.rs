//! The checkers catch a buggy driver: each deliberate driver bug shows as a violation of the
//! invariant it breaks, and the same options with the correct driver stay safe.

mod common;

use common::{count, explain};
use entente_sim::{Budget, DriverBug, SimConfig, TopologyKind};

/// 32 hosts on one leaf switch (radix 64: 32 hosts per leaf, so no spines): the leaf has 32
/// neighbours, each of which wants its lease.
fn star(bug: DriverBug, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 32,
        topology: TopologyKind::FatTree,
        radix: 64,
        driver_bug: bug,
        seed,
        ..SimConfig::default()
    }
}

/// Seeds to try; the first that shows the violation is enough.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=3;

fn caught(bug: DriverBug, cfg: impl Fn(u64) -> SimConfig, invariant: &str) {
    let mut tried = Vec::new();
    for seed in SEEDS {
        let r = common::run(cfg(seed));
        if count(&r, invariant) > 0 {
            assert!(!r.passed(), "{}", explain(&r));
            // The correct driver, same options: safe.
            let ok = common::run(SimConfig {
                driver_bug: DriverBug::None,
                ..cfg(seed)
            });
            assert_eq!(ok.safety_violations, 0, "correct driver: {}", explain(&ok));
            assert!(ok.passed(), "correct driver: {}", explain(&ok));
            return;
        }
        tried.push(explain(&r));
    }
    panic!(
        "{bug:?}: no {invariant} violation on seeds {SEEDS:?}:\n{}",
        tried.join("\n")
    );
}

/// Chunks written without checking their digest: a corrupt image gets activated.
#[test]
fn skipping_chunk_verification_breaks_integrity() {
    caught(
        DriverBug::SkipChunkVerify,
        |seed| SimConfig {
            corrupt: 0.05,
            ..star(DriverBug::SkipChunkVerify, seed)
        },
        "integrity",
    );
}

/// With verification, the same corrupt chunks are fetched again and never activated.
#[test]
fn corrupt_chunks_are_refetched_by_the_correct_driver() {
    for seed in SEEDS {
        let r = common::run(SimConfig {
            corrupt: 0.3,
            ..star(DriverBug::None, seed)
        });
        assert!(r.passed(), "{}", explain(&r));
        assert_eq!(count(&r, "integrity"), 0);
    }
}

/// Nodes that grant two more leases than the budget: a leaf with 32 hosts and a budget of one
/// ends up with several hosts resetting at once.
#[test]
fn over_granting_breaks_the_budget() {
    caught(
        DriverBug::OverGrant,
        |seed| SimConfig {
            max_unavailable: Budget::Count(1),
            ..star(DriverBug::OverGrant, seed)
        },
        "budget",
    );
}

/// The same on a fat-tree with spines, as a percentage budget.
#[test]
fn over_granting_breaks_a_percentage_budget() {
    caught(
        DriverBug::OverGrant,
        |seed| SimConfig {
            nodes: 48,
            topology: TopologyKind::FatTree,
            radix: 16,
            max_unavailable: Budget::Percent(10),
            driver_bug: DriverBug::OverGrant,
            seed,
            ..SimConfig::default()
        },
        "budget",
    );
}

/// Swapping the bank back after a link committed: the link now speaks an epoch the running
/// firmware does not, and the node went back on a committed link.
#[test]
fn rolling_back_after_a_commit_breaks_monotonicity_and_compatibility() {
    let cfg = |seed| star(DriverBug::RollbackAfterCommit, seed);
    caught(DriverBug::RollbackAfterCommit, cfg, "monotonicity");
    caught(DriverBug::RollbackAfterCommit, cfg, "compatibility");
}

/// After a wipe, a driver that takes the node's firmware window from the manifest it holds
/// instead of from the device announces in LINK_HELLO a window its firmware does not speak
/// (peers agree lost links from it). The correct driver reads what the device runs.
#[test]
fn planted_wipe_keeps_window() {
    caught(
        DriverBug::WipeKeepsWindow,
        |seed| SimConfig {
            wipe_rate: 0.02,
            ..star(DriverBug::WipeKeepsWindow, seed)
        },
        "compatibility",
    );
}

/// Lost stores, many of them: every wiped node agrees its links again from its neighbours,
/// takes a new incarnation, and the cluster converges with no violation.
#[test]
fn wiped_stores_are_survived() {
    for (seed, topology) in [
        (1, TopologyKind::FatTree),
        (2, TopologyKind::Ring),
        (3, TopologyKind::Random),
    ] {
        let r = common::run(SimConfig {
            nodes: 24,
            topology,
            degree: 3,
            wipe_rate: 0.05,
            loss: 0.01,
            seed,
            ..SimConfig::default()
        });
        assert!(r.wipes > 10, "{} wipes: {}", r.wipes, explain(&r));
        assert!(r.passed(), "{}", explain(&r));
    }
}

/// A disk whose write cache acknowledges a write and loses it at the crash that follows: the
/// node sent messages that depend on it, and restarts behind them.
#[test]
fn planted_torn_write() {
    caught(
        DriverBug::TornAckedWrite,
        |seed| SimConfig {
            torn_rate: 0.2,
            ..star(DriverBug::TornAckedWrite, seed)
        },
        "durability",
    );
}

/// Crashes during a write: the write is lost with nothing that depended on it sent (outputs
/// are carried out in order, each persist durable before the sends after it), so every run
/// stays safe and converges.
#[test]
fn torn_writes_are_survived() {
    for (seed, topology) in [
        (1, TopologyKind::FatTree),
        (2, TopologyKind::Ring),
        (3, TopologyKind::Random),
    ] {
        let r = common::run(SimConfig {
            nodes: 24,
            topology,
            degree: 3,
            torn_rate: 0.2,
            loss: 0.01,
            seed,
            ..SimConfig::default()
        });
        assert!(
            r.torn_writes > 10,
            "{} torn writes: {}",
            r.torn_writes,
            explain(&r)
        );
        assert!(r.passed(), "{}", explain(&r));
    }
}

/// A store restored from an older copy (the one taken at the node's last start), on several
/// seeds and topologies: the device is the authority that outlives the disk, so a store behind
/// the link epochs the device holds is treated as lost (new incarnation, every link agreed
/// again by LINK_HELLO), and a restarted node sends no data on a link before its peer's first
/// LINK_HELLO (a store behind the peer on a link its device never moved). Every run converges
/// with no violation.
#[test]
fn restored_stores_are_survived() {
    let runs: Vec<(u64, TopologyKind)> = (1..=10)
        .map(|seed| (seed, TopologyKind::Random))
        .chain([
            (51, TopologyKind::Random),
            (1, TopologyKind::FatTree),
            (2, TopologyKind::Ring),
        ])
        .collect();
    let reports = common::par_map(&runs, |&(seed, topology)| {
        common::run(SimConfig {
            nodes: 24,
            topology,
            degree: 3,
            restore_rate: 0.02,
            seed,
            ..SimConfig::default()
        })
    });
    for r in reports {
        assert!(r.restores > 0, "no restore: {}", explain(&r));
        assert!(r.passed(), "{}", explain(&r));
    }
}

/// A driver that starts the node without the link epochs its device holds, so that the node
/// trusts a store restored from an older copy and re-applies its older link epochs to the
/// device (the behaviour before the device became the authority on restart): a link the node
/// had committed goes back on its device.
#[test]
fn planted_rollback_disk() {
    caught(
        DriverBug::TrustRestoredStore,
        |seed| SimConfig {
            nodes: 24,
            topology: TopologyKind::Random,
            degree: 3,
            // rare enough that a node's copy is often older than a commit it made since
            restore_rate: 0.005,
            driver_bug: DriverBug::TrustRestoredStore,
            seed,
            ..SimConfig::default()
        },
        "monotonicity",
    );
}

/// A driver that hands the node the wall clock instead of the monotonic one (and fires its
/// timers by it, as the agent's timer table would): a switch whose wall clock steps forward
/// past the grants it gave takes them as expired and grants the next neighbour while the
/// first still reboots (budget of one), or takes its own lease and reboots beside it. The wall
/// clock the buggy driver hands never goes back (it stands still through a step back), so the
/// bug shows as a violation, not as a crash on time going backwards. The correct driver runs
/// on the monotonic clock, which does not step.
#[test]
fn planted_clock_step() {
    caught(
        DriverBug::WallClock,
        |seed| SimConfig {
            nodes: 64,
            topology: TopologyKind::FatTree,
            radix: 8,
            max_unavailable: Budget::Count(1),
            clock_step_ms: 600_000.0,
            driver_bug: DriverBug::WallClock,
            seed,
            ..SimConfig::default()
        },
        "budget",
    );
}

/// Wall-clock steps of up to ten minutes either way, on several topologies and with the other
/// faults: the protocol runs on the monotonic clock, so every run converges with no violation.
#[test]
fn clock_steps_are_survived() {
    let runs: Vec<(u64, TopologyKind)> = vec![
        (1, TopologyKind::FatTree),
        (2, TopologyKind::Ring),
        (3, TopologyKind::Random),
    ];
    let reports = common::par_map(&runs, |&(seed, topology)| {
        common::run(SimConfig {
            nodes: 24,
            topology,
            degree: 3,
            clock_step_ms: 600_000.0,
            crash_rate: 0.01,
            loss: 0.01,
            seed,
            ..SimConfig::default()
        })
    });
    for r in reports {
        assert!(
            r.clock_steps > 10,
            "{} clock steps: {}",
            r.clock_steps,
            explain(&r)
        );
        assert!(r.passed(), "{}", explain(&r));
    }
}
