//! One seed determines the whole run: the same options give the same report (wall-clock time
//! aside), whichever thread runs it and however often; another seed gives another run.

mod common;

use entente_proto::types::MS;
use entente_sim::{swarm, GossipMode, Protocol, Report, SimConfig, TopologyKind, World};

/// A run with every kind of fault, small enough to run several times.
fn faulty(protocol: Protocol, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 40,
        topology: TopologyKind::Random,
        degree: 3,
        loss: 0.01,
        dup: 0.2,
        crash_rate: 0.01,
        partition_rate: 0.005,
        skew_ms: 5.0,
        drift_ppm: 100.0,
        traffic_hz: 20_000.0,
        activation_failure: 0.1,
        corrupt: 0.05,
        seed,
        protocol,
        ..SimConfig::default()
    }
}

/// The whole report as JSON, less the one field that measures the host (`wall_ms`).
fn fingerprint(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("report serialises");
    v.as_object_mut()
        .expect("report is an object")
        .remove("wall_ms");
    v
}

#[test]
fn same_options_same_report_for_every_protocol() {
    for p in Protocol::ALL {
        let a = common::run(faulty(p, 7));
        let b = common::run(faulty(p, 7));
        assert_eq!(
            (&a.trace_hash, a.events, a.messages),
            (&b.trace_hash, b.events, b.messages),
            "{}: {}",
            p.name(),
            a.reproduce
        );
        assert_eq!(fingerprint(&a), fingerprint(&b), "{}", p.name());
        assert_eq!(a.progress, b.progress, "{}", p.name());
        assert!(a.events > 1000, "{}: only {} events", p.name(), a.events);
    }
}

#[test]
fn different_seeds_different_runs_for_every_protocol() {
    for p in Protocol::ALL {
        let hashes: Vec<String> = (1..=4)
            .map(|seed| common::run(faulty(p, seed)).trace_hash)
            .collect();
        let mut distinct = hashes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            hashes.len(),
            "{}: seeds 1..=4 gave hashes {hashes:?}",
            p.name()
        );
    }
}

/// An option that changes what happens changes the trace, even with the same seed.
#[test]
fn the_trace_covers_the_options() {
    let base = faulty(Protocol::Bilateral, 3);
    let h = common::run(base.clone()).trace_hash;
    for (what, cfg) in [
        (
            "mean delay",
            SimConfig {
                mean_delay: base.mean_delay * 2,
                ..base.clone()
            },
        ),
        (
            "gossip mode",
            SimConfig {
                gossip: GossipMode::Tree,
                ..base.clone()
            },
        ),
        (
            "chunk time",
            SimConfig {
                chunk_time: 7 * MS,
                ..base.clone()
            },
        ),
    ] {
        assert_ne!(
            common::run(cfg).trace_hash,
            h,
            "{what} left the trace alone"
        );
    }
}

/// No hidden shared state: runs on several threads at once give the reports a lone run gives.
#[test]
fn concurrent_runs_match_sequential_ones() {
    let cfgs: Vec<SimConfig> = (1..=4)
        .flat_map(|seed| Protocol::ALL.map(|p| faulty(p, seed)))
        .collect();
    let sequential: Vec<serde_json::Value> = cfgs
        .iter()
        .map(|c| fingerprint(&common::run(c.clone())))
        .collect();
    let concurrent = common::par_map(&cfgs, |c| fingerprint(&common::run(c.clone())));
    assert_eq!(sequential, concurrent);
}

/// Swarm runs (faults drawn from the seed) replay exactly too.
#[test]
fn swarm_runs_replay() {
    for seed in [5, 17, 42] {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        let a = common::run(cfg.clone());
        let b = common::run(cfg);
        assert_eq!(fingerprint(&a), fingerprint(&b), "seed {seed}");
    }
}

/// Watching a run does not change it, and what it reports moves forward.
#[test]
fn progress_callback_is_an_observer() {
    let cfg = SimConfig {
        nodes: 64,
        traffic_hz: 100_000.0,
        loss: 0.01,
        seed: 9,
        ..SimConfig::default()
    };
    let plain = World::new(cfg.clone()).run();
    let mut seen = Vec::new();
    let watched = World::new(cfg.clone()).run_with(&mut |p| seen.push(p));
    let lib = common::run(cfg);
    assert_eq!(fingerprint(&plain), fingerprint(&watched));
    assert_eq!(fingerprint(&plain), fingerprint(&lib));
    assert!(
        plain.events < 2 * 65_536 || seen.len() >= 2,
        "{} events but {} progress calls",
        plain.events,
        seen.len()
    );
    for w in seen.windows(2) {
        assert!(w[0].events < w[1].events && w[0].sim_ms <= w[1].sim_ms);
    }
    for p in &seen {
        assert!((0.0..=1.0).contains(&p.committed), "{p:?}");
    }
}
