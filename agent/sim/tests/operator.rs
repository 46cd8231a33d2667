//! The operator at work in the fault phase (`--operator-actions`): links retired and restored,
//! the campaign paused, resumed and aborted at random nodes; at the heal every retired link is
//! restored and the campaign resumed. Every run stays safe (no activation after an abort and
//! before the next resume included) and converges after the final resume.

mod common;

use common::{count, explain};
use entente_sim::{Budget, SimConfig, TopologyKind};

fn operator(topology: TopologyKind, seed: u64) -> SimConfig {
    SimConfig {
        nodes: 24,
        topology,
        radix: 8,
        degree: 3,
        operator_actions: 0.5,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn operator_actions_are_survived() {
    let runs: Vec<SimConfig> = (1..=3)
        .flat_map(|seed| {
            [
                TopologyKind::FatTree,
                TopologyKind::Ring,
                TopologyKind::Random,
            ]
            .map(|t| SimConfig {
                crash_rate: 0.01,
                loss: 0.01,
                max_unavailable: Budget::Count(1),
                ..operator(t, seed)
            })
        })
        .collect();
    let reports = common::par_map(&runs, |c| common::run(c.clone()));
    for r in reports {
        assert!(
            r.operator_actions > 10,
            "{} operator actions: {}",
            r.operator_actions,
            explain(&r)
        );
        assert!(r.passed(), "{}", explain(&r));
        assert_eq!(r.liveness, None);
    }
}

/// Several campaigns, each with its own operator: each converges after its final resume.
#[test]
fn every_campaign_converges_after_its_final_resume() {
    for seed in 1..=2 {
        let r = common::run(SimConfig {
            campaigns: 3,
            downgrade: true,
            ..operator(TopologyKind::Random, seed)
        });
        assert_eq!(r.campaigns_converged, 3, "{}", explain(&r));
        assert!(r.passed(), "{}", explain(&r));
    }
}

/// A link restored while one of its ends acquires its leases (it had left the retired link
/// out of its order): the end starts its acquisition over with the link, and asks that
/// neighbour before it activates. It used to activate without that lease (this run: n13
/// started without n12's lease while n11 was down under it: n12 had two neighbours down, with
/// a budget of one).
#[test]
fn a_link_restored_during_an_acquisition_is_asked() {
    let r = common::run(operator(TopologyKind::Ring, 1));
    assert_eq!(count(&r, "budget"), 0, "{}", explain(&r));
    assert!(r.passed(), "{}", explain(&r));
}
