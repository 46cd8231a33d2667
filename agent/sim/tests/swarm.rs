//! Swarm testing: hundreds of seeds, each drawing every option of its run (topology, size,
//! loss, duplicates, crashes, lost stores, torn writes, restored stores, partitions, skew,
//! drift, wall-clock steps, operator actions, traffic, activation failures, corrupt chunks, budget) with faults on. Every run must stay safe and
//! converge within the bound.

mod common;

use entente_sim::{swarm, Budget, Protocol, TopologyKind};

/// The seeds of the swarm. `tests/acceptance.rs` runs seeds 1..=200 with the same options, so
/// these are others: together they cover 440 seeds.
const SEEDS: std::ops::RangeInclusive<u64> = 201..=440;

/// Largest cluster of the swarm, in hosts.
const MAX_NODES: usize = 64;

#[test]
fn bilateral_swarm_is_safe_and_converges() {
    let seeds: Vec<u64> = SEEDS.collect();
    let failures: Vec<String> = common::par_map(&seeds, |&seed| {
        let r = common::run(swarm::options(seed, MAX_NODES, Protocol::Bilateral));
        (!r.passed()).then(|| format!("seed {seed}: {}", common::explain(&r)))
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        failures.is_empty(),
        "{} of {} swarm runs failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

/// The swarm is only as good as the options it draws: every topology, every fault and every
/// kind of budget must come up, and every drawn configuration must be valid.
#[test]
fn swarm_draws_every_fault_and_shape() {
    let cfgs: Vec<_> = SEEDS
        .map(|s| swarm::options(s, MAX_NODES, Protocol::Bilateral))
        .collect();
    for c in &cfgs {
        c.validate()
            .unwrap_or_else(|e| panic!("seed {}: {e}: {}", c.seed, c.command()));
        assert_eq!(c.protocol, Protocol::Bilateral);
    }
    let some = |what: &str, f: &dyn Fn(&entente_sim::SimConfig) -> bool| {
        let n = cfgs.iter().filter(|c| f(c)).count();
        assert!(
            n * 20 >= cfgs.len(),
            "only {n} of {} swarm runs have {what}",
            cfgs.len()
        );
    };
    for t in [
        TopologyKind::Ring,
        TopologyKind::FatTree,
        TopologyKind::Random,
    ] {
        some(t.name(), &|c| c.topology == t);
    }
    some("loss", &|c| c.loss > 0.0);
    some("duplicates", &|c| c.dup > 0.0);
    some("crashes", &|c| c.crash_rate > 0.0);
    some("wipes", &|c| c.wipe_rate > 0.0);
    some("torn writes", &|c| c.torn_rate > 0.0);
    some("restored stores", &|c| c.restore_rate > 0.0);
    some("one-way partitions", &|c| {
        c.partition_rate > 0.0 && c.one_way_share > 0.0
    });
    some("partitions", &|c| c.partition_rate > 0.0);
    some("wall-clock steps", &|c| c.clock_step_ms > 0.0);
    some("operator actions", &|c| c.operator_actions > 0.0);
    some("clock skew", &|c| c.skew_ms > 0.0);
    some("clock drift", &|c| c.drift_ppm > 0.0);
    some("activation failures", &|c| c.activation_failure > 0.0);
    some("corrupt chunks", &|c| c.corrupt > 0.0);
    some("several campaigns", &|c| c.campaigns > 1);
    some("three campaigns", &|c| c.campaigns == 3);
    some("a downgrade and an image swap", &|c| {
        c.downgrade && c.campaigns == 3
    });
    some("one campaign", &|c| c.campaigns == 1);
    some("sub-RTT data (100 kHz)", &|c| c.traffic_hz >= 100_000.0);
    some("a count budget of 1", &|c| {
        c.max_unavailable == Budget::Count(1)
    });
    some("a percentage budget", &|c| {
        matches!(c.max_unavailable, Budget::Percent(_))
    });
    some("more than 32 hosts", &|c| c.nodes > 32);
    some("at most 8 hosts", &|c| c.nodes <= 8);
    some("every fault at once", &|c| {
        c.loss > 0.0 && c.dup > 0.0 && c.crash_rate > 0.0 && c.partition_rate > 0.0
    });
    some("loss 0.2", &|c| c.loss >= 0.2);
    some("duplicates 0.5", &|c| c.dup >= 0.5);
    some("crashes 0.05", &|c| c.crash_rate >= 0.05);
    some("partitions 0.02", &|c| c.partition_rate >= 0.02);
    some("wipes 0.02", &|c| c.wipe_rate >= 0.02);
    some("torn writes 0.05", &|c| c.torn_rate >= 0.05);
    some("restores 0.02", &|c| c.restore_rate >= 0.02);
    some("activation failures 0.2", &|c| c.activation_failure >= 0.2);
    some("every fault at once, near the top of its range", &|c| {
        c.loss >= 0.05
            && c.dup >= 0.1
            && c.crash_rate >= 0.01
            && c.partition_rate >= 0.01
            && c.activation_failure >= 0.1
            && c.wipe_rate >= 0.01
            && c.torn_rate >= 0.01
            && c.restore_rate >= 0.005
    });
}

#[test]
fn swarm_options_are_a_function_of_the_seed() {
    for seed in [0, 1, 201, u64::MAX] {
        assert_eq!(
            swarm::options(seed, MAX_NODES, Protocol::Bilateral),
            swarm::options(seed, MAX_NODES, Protocol::Bilateral)
        );
    }
    // The protocol is the caller's; the rest is the seed's, except that the baselines run one
    // campaign (and a run of several campaigns loses no store).
    for seed in 1..=40 {
        let b = swarm::options(seed, MAX_NODES, Protocol::Bilateral);
        let f = swarm::options(seed, MAX_NODES, Protocol::FitoClock);
        assert_eq!(f.protocol, Protocol::FitoClock);
        assert_eq!((f.campaigns, f.downgrade), (1, false));
        f.validate().unwrap();
        assert_eq!(
            entente_sim::SimConfig {
                protocol: Protocol::Bilateral,
                campaigns: b.campaigns,
                downgrade: b.downgrade,
                wipe_rate: if b.campaigns > 1 { 0.0 } else { f.wipe_rate },
                restore_rate: if b.campaigns > 1 { 0.0 } else { f.restore_rate },
                ..f
            },
            b
        );
    }
}

#[test]
fn swarm_stays_within_64_hosts() {
    for seed in SEEDS {
        let c = swarm::options(seed, MAX_NODES, Protocol::Bilateral);
        assert!(
            (3..=MAX_NODES).contains(&c.nodes),
            "seed {seed}: {} hosts",
            c.nodes
        );
    }
}

/// `options` promises clusters of at most `max_nodes` hosts, and `entente sim --swarm` passes
/// `--nodes` as that bound; a random graph can exceed it (see the message).
#[test]
fn swarm_respects_any_node_bound() {
    for max in [4, 5, 9, 17, 33] {
        for seed in 0..200 {
            let c = swarm::options(seed, max, Protocol::Bilateral);
            assert!(
                c.nodes <= max,
                "max {max}, seed {seed}: {} hosts ({} degree {})",
                c.nodes,
                c.topology.name(),
                c.degree
            );
        }
    }
}
