//! Several campaigns in one run (`--campaigns N`): campaign k+1 starts at the origin once
//! campaign k converged, and the checkers hold across campaigns: link epochs only grow,
//! every link speaks an epoch inside the window of the firmware each end runs (the window
//! its campaign's manifest gave it), and the last campaign converges within the bound.

mod common;

use common::explain;
use entente_proto::types::{Epoch, Window, SEC};
use entente_sim::world::{image_digest, plan, CampaignKind};
use entente_sim::{SimConfig, TopologyKind};

fn faulty(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 16,
        radix: 8,
        loss: 0.01,
        crash_rate: 0.01,
        campaigns: 3,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn three_campaigns_converge_under_loss_and_crashes() {
    for seed in 1..=4 {
        let r = common::run(faulty(seed));
        assert!(r.passed(), "{}", explain(&r));
        assert_eq!(r.safety_violations, 0, "{}", explain(&r));
        assert_eq!(
            (r.campaigns, r.campaigns_converged),
            (3, 3),
            "{}",
            explain(&r)
        );
        assert!(r.converged, "{}", explain(&r));
    }
}

/// Going back takes two campaigns (docs/protocol.md): a semantics downgrade with the same
/// image, then an image swap to the image from before; both dual mode like any campaign.
#[test]
fn a_downgrade_and_an_image_swap_converge() {
    for (seed, topology) in [
        (1, TopologyKind::FatTree),
        (2, TopologyKind::Ring),
        (3, TopologyKind::Random),
    ] {
        let r = common::run(SimConfig {
            topology,
            nodes: 20,
            partition_rate: 0.005,
            activation_failure: 0.1,
            downgrade: true,
            campaigns: 4,
            ..faulty(seed)
        });
        assert!(r.passed(), "{}", explain(&r));
        assert_eq!(r.campaigns_converged, 4, "{}", explain(&r));
    }
}

#[test]
fn the_plan_of_a_run_that_goes_back() {
    let p = plan(&SimConfig {
        campaigns: 4,
        downgrade: true,
        ..SimConfig::default()
    });
    let kinds: Vec<CampaignKind> = p.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            CampaignKind::Upgrade,
            CampaignKind::SemanticsDowngrade,
            CampaignKind::ImageSwap,
            CampaignKind::Upgrade
        ]
    );
    for (k, s) in p.iter().enumerate() {
        let k = k as u64 + 1;
        assert_eq!(s.campaign.epoch, Epoch(k));
        assert_eq!(s.campaign.window, Window::new(k - 1, k), "dual mode");
        assert_eq!(s.campaign.image_digest, image_digest(s.image));
    }
    // Epoch 1 means new semantics; epoch 2 those of epoch 0 again, with campaign 1's image;
    // epoch 3 the same, with the image from before campaign 1; epoch 4 new ones, a new image.
    let sem: Vec<u64> = p.iter().map(|s| s.semantics).collect();
    assert_eq!(sem, [1, 0, 0, 2]);
    let images: Vec<u64> = p.iter().map(|s| s.image).collect();
    assert_eq!(images, [1, 1, 0, 2]);
    // One campaign is the run the simulator always made: epoch 1, window [0, 1].
    let one = plan(&SimConfig::default());
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].campaign.window, entente_sim::world::NEW_FW);
    assert_eq!(one[0].campaign.image_digest, [7; 32]);
}

#[test]
fn one_campaign_is_the_default_run() {
    let a = common::run(SimConfig {
        campaigns: 1,
        ..faulty(5)
    });
    assert_eq!((a.campaigns, a.campaigns_converged), (1, 1));
    let three = common::run(faulty(5));
    // The first campaign of a longer run is the same run until it converged.
    assert_ne!(a.trace_hash, three.trace_hash);
    assert!(three.sim_time_ms > a.sim_time_ms);
}

/// A run stopped during its second campaign converged one campaign, and reports why the last
/// did not.
#[test]
fn a_run_stopped_in_its_second_campaign_counts_one() {
    let one = common::run(SimConfig {
        campaigns: 1,
        ..faulty(6)
    });
    let stop = (one.sim_time_ms * 1e6) as u64 + 20 * SEC;
    let r = common::run(SimConfig {
        campaigns: 2,
        time_limit: stop,
        ..faulty(6)
    });
    assert_eq!(r.campaigns_converged, 1, "{}", explain(&r));
    assert!(!r.converged);
    assert!(
        r.failure
            .as_deref()
            .is_some_and(|f| f.starts_with("no convergence")),
        "{}",
        explain(&r)
    );
    assert_eq!(r.safety_violations, 0, "{}", explain(&r));
}

/// A state store lost while the device is in a disruptive activation of campaign 2 or later:
/// the restarted agent reads the window the device still runs (campaign k - 1's), the device
/// then finishes the activation, and the node, which holds no campaign any more, ignores the
/// report; until it learns the campaign again and activates (at once: the device runs it), it
/// announces in LINK_HELLO the older window, with an epoch its firmware no longer speaks. With
/// one campaign the older window [0, 0] lies inside [0, 1], so nothing shows. Not in the swarm.
#[test]
#[ignore = "known gap: a wipe during a later campaign's activation leaves a stale window"]
fn wipes_in_later_campaigns_are_survived() {
    for seed in 1..=10 {
        let r = common::run(SimConfig {
            nodes: 40,
            radix: 8,
            loss: 0.05,
            dup: 0.5,
            crash_rate: 0.02,
            partition_rate: 0.01,
            wipe_rate: 0.01,
            torn_rate: 0.02,
            skew_ms: 5.0,
            activation_failure: 0.1,
            corrupt: 0.05,
            campaigns: 3,
            seed,
            ..SimConfig::default()
        });
        assert!(r.passed(), "{}", explain(&r));
    }
}
