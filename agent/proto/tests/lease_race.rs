//! Neighbours that ask each other for a lease at the same instant: a node does not grant a lease
//! while it is itself disrupted or about to be, so two neighbours are never in a disruptive
//! activation at once, however their requests cross (docs/protocol.md, Neighbour leases).

mod common;

use common::{campaign, n, Sim, DELAY, DEVICE_DELAY};
use entente_proto::{NodeConfig, Window};

fn w0() -> Window {
    Window::new(0, 0)
}

/// Whether two neighbours' disruptive activations overlapped in time.
fn neighbours_overlap(sim: &Sim, links: &[(u64, u64)]) -> Option<(u64, u64)> {
    links
        .iter()
        .copied()
        .find(|&(a, b)| sim.activations_overlap(&[n(a), n(b)]))
}

/// Runs a disruptive campaign from `origin` over `links` (every node staged at the same moment,
/// give or take the campaign's flooding delay) and checks that it converged with no two
/// neighbours down together.
fn run(ids: &[u64], links: &[(u64, u64)], origin: u64, tweak: impl FnMut(&mut NodeConfig)) {
    run_with(ids, links, origin, tweak, |_| {});
}

fn run_with(
    ids: &[u64],
    links: &[(u64, u64)],
    origin: u64,
    tweak: impl FnMut(&mut NodeConfig),
    setup: impl FnOnce(&mut Sim),
) {
    let mut sim = Sim::with(ids, links, w0(), tweak, true);
    setup(&mut sim);
    sim.drive();
    sim.start_campaign(n(origin), campaign(1, true, origin));
    sim.drive();
    sim.assert_converged(1);
    assert_eq!(
        sim.activations.iter().filter(|a| a.1).count(),
        ids.len(),
        "{:?}",
        sim.activations
    );
    let overlap = neighbours_overlap(&sim, links);
    assert!(
        overlap.is_none(),
        "neighbours {overlap:?} were down together: {:?}",
        sim.activations
    );
}

#[test]
fn a_pair_asking_each_other_at_once_is_not_both_granted() {
    // the campaign reaches the other node one link delay after the origin, whose drain takes
    // that much longer: both finish draining at the same instant and their LEASE_REQs cross
    for origin in [1, 2] {
        let slow = DEVICE_DELAY + DELAY;
        run_with(
            &[1, 2],
            &[(1, 2)],
            origin,
            |_| {},
            |sim| sim.set_drain_delay(n(origin), slow),
        );
    }
}

#[test]
fn a_line_asking_at_once_takes_turns() {
    for origin in 1..=3 {
        run(&[1, 2, 3], &[(1, 2), (2, 3)], origin, |_| {});
    }
}

#[test]
fn a_ring_asking_at_once_takes_turns_and_does_not_deadlock() {
    let links = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)];
    for origin in 1..=5 {
        run(&[1, 2, 3, 4, 5], &links, origin, |_| {});
        run(&[1, 2, 3, 4, 5], &links, origin, |c| {
            c.max_unavailable_neighbors = 2
        });
    }
}

#[test]
fn a_complete_graph_asking_at_once_takes_turns() {
    let links = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)];
    for origin in 1..=4 {
        run(&[1, 2, 3, 4], &links, origin, |c| {
            c.max_unavailable_neighbors = 3
        });
    }
}
