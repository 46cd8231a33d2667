//! Seeds the wide swarm (loss, duplicates, crashes, partitions and activation failures
//! together) once found unsafe or stuck, each kept with its exact options.

mod common;

use common::explain;
use entente_sim::{Protocol, SimConfig, TopologyKind};

/// `entente sim --nodes 13 --topology random --degree 2 --protocol bilateral --seed 105139
/// --loss 0.2 --dup 0.5 --crash-rate 0.05 --partition-rate 0.02 --skew-ms 0
/// --activation-failure 0.1`: a duplicated LEASE_REQ of a released lease, delivered again on a
/// new connection, made the grantor n6 forget the lease n8 was activating under (a duplicated
/// release of that old request then ended it), and n6 granted n11 too: two neighbours of n6 in
/// a disruptive activation, with a budget of 1.
#[test]
fn budget_dup_crash_seed() {
    let r = common::run(SimConfig {
        nodes: 13,
        topology: TopologyKind::Random,
        degree: 2,
        protocol: Protocol::Bilateral,
        seed: 105_139,
        loss: 0.2,
        dup: 0.5,
        crash_rate: 0.05,
        partition_rate: 0.02,
        skew_ms: 0.0,
        activation_failure: 0.1,
        ..SimConfig::default()
    });
    assert_eq!(r.safety_violations, 0, "{}", explain(&r));
    assert!(r.passed(), "{}", explain(&r));
}

/// `entente sim --nodes 32 --topology ring --seed 133871 --crash-rate 0.05 --partition-rate
/// 0.02 --skew-ms 1 --activation-failure 0.1`: the origin n0 crashes 0.2 ms into the run, before
/// the operator starts the campaign at 1 ms. A campaign must not vanish with its origin: the
/// operator's start reaches the origin once it is back, and every node converges.
#[test]
fn campaign_survives_origin_crash_sim() {
    let r = common::run(SimConfig {
        nodes: 32,
        topology: TopologyKind::Ring,
        seed: 133_871,
        crash_rate: 0.05,
        partition_rate: 0.02,
        skew_ms: 1.0,
        activation_failure: 0.1,
        ..SimConfig::default()
    });
    assert_eq!(r.safety_violations, 0, "{}", explain(&r));
    assert!(r.converged, "{}", explain(&r));
    assert!(r.passed(), "{}", explain(&r));
}

/// `entente sim --nodes 52 --topology random --protocol bilateral --seed 1122 --loss 0.2
/// --crash-rate 0.01 --partition-rate 0.01 --drift-ppm 0 --traffic-hz 100000
/// --activation-failure 0.1 --corrupt 0.01 --radix 8 --max-unavailable 1` (swarm seed 1122):
/// n23 waited at its own lease, so it granted nothing and queued n28 and n46; then a lease
/// before its own in its order was lost and its acquisition went back there, but nothing served
/// the queue it no longer had a reason to hold. n46, holding n13's only slot, waited for n23,
/// and n7 for that slot: nodes left `Staged` for good.
#[test]
fn own_lease_given_up_serves_the_queue_seed() {
    let r = common::run(entente_sim::swarm::options(1122, 64, Protocol::Bilateral));
    assert!(r.passed(), "{}", explain(&r));
}
