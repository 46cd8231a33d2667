//! Retire and restore are versioned operator actions in the gossiped summary: the last action
//! wins on every replica, whatever order the replicas learn them in; a retired link never counts
//! as committed; a node that comes back while its links are retired resumes the campaign once
//! they are restored.

mod common;

use common::{campaign, n, Sim};
use entente_proto::summary::{RetireMark, RetireVersion, Summary};
use entente_proto::types::{MS, SEC};
use entente_proto::{Epoch, Phase, Window};

fn mark(counter: u32, by: u64, retired: bool) -> RetireMark {
    RetireMark {
        version: RetireVersion { counter, by: n(by) },
        retired,
    }
}

#[test]
fn the_last_operator_action_wins() {
    let (mut a, mut b) = (Summary::new(), Summary::new());
    assert!(a.retire(n(2), n(1), n(1)));
    assert!(a.is_retired(n(1), n(2)) && a.is_retired(n(2), n(1)));
    assert_eq!(a.mark_of(n(1), n(2)), Some(mark(1, 1, true)));
    assert!(
        !a.retire(n(1), n(2), n(1)),
        "retiring a retired link changes nothing"
    );
    assert!(b.merge(&a.to_delta()));
    assert!(b.is_retired(n(1), n(2)));
    // the other end restores it: a later action, so a higher version
    assert!(b.restore(n(1), n(2), n(2)));
    assert_eq!(b.mark_of(n(2), n(1)), Some(mark(2, 2, false)));
    assert!(!b.merge(&a.to_delta()), "an older action never wins");
    assert!(!b.is_retired(n(1), n(2)));
    assert!(a.merge(&b.to_delta()));
    assert!(!a.is_retired(n(1), n(2)));
    assert!(
        !a.restore(n(1), n(2), n(1)),
        "restoring a live link changes nothing"
    );
    assert!(a.retire(n(1), n(2), n(1)));
    assert_eq!(a.mark_of(n(1), n(2)), Some(mark(3, 1, true)));
    assert!(b.merge(&a.to_delta()));
    assert!(b.is_retired(n(1), n(2)));
    assert!(
        !Summary::new().restore(n(1), n(2), n(1)),
        "nothing to restore"
    );
}

#[test]
fn concurrent_actions_order_by_counter_then_node() {
    let (mut x, mut y) = (Summary::new(), Summary::new());
    assert!(x.set_mark(n(1), n(2), mark(4, 1, true)));
    assert!(y.set_mark(n(2), n(1), mark(4, 2, false)));
    assert!(
        !y.set_mark(n(1), n(2), mark(3, 9, true)),
        "lower counter loses"
    );
    assert!(!x.merge(&x.to_delta()), "idempotent");
    let (mut xy, mut yx) = (x.clone(), y.clone());
    assert!(xy.merge(&y.to_delta()));
    assert!(!yx.merge(&x.to_delta()), "(4, node 2) beats (4, node 1)");
    assert_eq!(xy.canonical(), yx.canonical());
    assert!(!xy.is_retired(n(1), n(2)));
}

#[test]
fn merge_of_marks_is_commutative_and_idempotent() {
    let ops: [(u64, u64, RetireMark); 6] = [
        (1, 2, mark(1, 1, true)),
        (2, 1, mark(2, 2, false)),
        (1, 3, mark(1, 3, true)),
        (2, 3, mark(5, 2, false)),
        (3, 2, mark(5, 3, true)),
        (1, 2, mark(2, 1, true)),
    ];
    let replicas: Vec<Summary> = ops
        .iter()
        .map(|&(a, b, m)| {
            let mut s = Summary::new();
            s.set_mark(n(a), n(b), m);
            s
        })
        .collect();
    let mut want = None;
    // every rotation and its reverse
    for start in 0..replicas.len() {
        for rev in [false, true] {
            let mut order: Vec<usize> = (0..replicas.len())
                .map(|i| (start + i) % replicas.len())
                .collect();
            if rev {
                order.reverse();
            }
            let mut s = Summary::new();
            for &i in &order {
                s.merge(&replicas[i].to_delta());
                s.merge(&replicas[i].to_delta());
            }
            let c = s.canonical();
            assert_eq!(*want.get_or_insert_with(|| c.clone()), c, "{order:?}");
        }
    }
    let mut s = Summary::new();
    for r in &replicas {
        s.merge(&r.to_delta());
    }
    assert!(!s.is_retired(n(1), n(2)), "(2, node 2) beats (2, node 1)");
    assert!(s.is_retired(n(1), n(3)));
    assert!(s.is_retired(n(2), n(3)), "(5, node 3) beats (5, node 2)");
}

#[test]
fn a_retired_link_never_counts_as_committed() {
    let mut s = Summary::new();
    s.set_link(n(1), n(2), Epoch(1));
    s.set_link(n(2), n(1), Epoch(1));
    s.set_link(n(1), n(3), Epoch(0));
    let c = s.census(Epoch(1));
    assert_eq!((c.links, c.committed, c.retired), (2, 1, 0));
    s.retire(n(1), n(2), n(1));
    s.retire(n(1), n(3), n(1));
    let c = s.census(Epoch(1));
    assert_eq!((c.links, c.committed, c.retired), (2, 0, 2));
    assert!(
        s.conv_graph(Epoch(1)),
        "retired links are outside the live graph"
    );
    s.restore(n(1), n(3), n(1));
    assert!(!s.conv_graph(Epoch(1)));
}

#[test]
fn a_node_that_comes_back_resumes_the_campaign_once_restored() {
    let mut sim = Sim::new(&[1, 2, 3], &[(1, 2), (2, 3), (1, 3)], Window::new(0, 0));
    sim.drive();
    sim.crash(n(3));
    sim.start_campaign(n(1), campaign(1, false, 1));
    // nodes 1 and 2 wait for their links to node 3 until they are retired (gossip to the dead
    // node stays unacknowledged: run for a while, not until idle)
    sim.run_for(10 * SEC);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Activated);
    assert!(sim.with_node(n(1), |node, now| node.retire_link(now, n(3))));
    assert!(sim.with_node(n(2), |node, now| node.retire_link(now, n(3))));
    sim.run_for(10 * SEC);
    for id in [1, 2] {
        let node = sim.node(n(id));
        assert_eq!(node.phase().phase, Phase::Converged, "{id}");
        let c = node.summary().census(Epoch(1));
        assert_eq!((c.links, c.committed, c.retired), (3, 1, 2), "{id}");
        assert!(node.summary().conv_graph(Epoch(1)), "{id}");
    }
    // node 3 comes back: it learns that its links are retired and the campaign
    sim.restart(n(3));
    sim.drive();
    let three = sim.node(n(3));
    assert!(three.link(n(1)).unwrap().retired && three.link(n(2)).unwrap().retired);
    assert_eq!(three.record().campaign.map(|c| c.epoch), Some(Epoch(1)));
    // the operator restores both links (from either end): the links move, all converge
    assert!(sim.with_node(n(1), |node, now| node.restore_link(now, n(3))));
    assert!(sim.with_node(n(3), |node, now| node.restore_link(now, n(2))));
    sim.drive();
    sim.assert_converged(1);
    let c = sim.node(n(1)).summary().census(Epoch(1));
    assert_eq!((c.links, c.committed, c.retired), (3, 3, 0));
    // the restore survives a restart (persisted with its version)
    sim.crash(n(2));
    sim.restart(n(2));
    sim.drive();
    assert!(!sim.node(n(2)).link(n(3)).unwrap().retired);
}

#[test]
fn heartbeats_tell_when_a_node_was_last_heard_of() {
    let mut sim = Sim::with(
        &[1, 2, 3],
        &[(1, 2), (2, 3)],
        Window::new(0, 0),
        |c| c.heartbeat = Some(100 * MS),
        true,
    );
    sim.run_for(SEC);
    let now = sim.now;
    for id in [2, 3] {
        let heard = sim.node(n(1)).last_heard(n(id)).expect("heard of");
        assert!(
            heard + 400 * MS >= now,
            "node {id} heard at {heard}, now {now}"
        );
    }
    sim.crash(n(3));
    let crashed = sim.now;
    sim.run_for(2 * SEC);
    let heard = sim.node(n(1)).last_heard(n(3)).unwrap();
    assert!(heard <= crashed + 100 * MS, "{heard} > {crashed}");
    assert!(sim.node(n(1)).last_heard(n(2)).unwrap() + 400 * MS >= sim.now);
    // it comes back: heard of again, although it restarted its beat count
    sim.restart(n(3));
    sim.run_for(2 * SEC);
    assert!(sim.node(n(1)).last_heard(n(3)).unwrap() + 400 * MS >= sim.now);
}

#[test]
fn a_node_that_converged_on_retired_links_moves_them_once_restored() {
    // node 3 dies before its links were ever agreed; the operator retires them, node 3 comes
    // back, learns the campaign and converges with its links retired; then both links are
    // restored from the surviving ends: they must move to the campaign's epoch
    let links = [(1, 2), (2, 3), (1, 3)];
    let mut sim = Sim::with(&[1, 2, 3], &links, Window::new(0, 0), |_| {}, false);
    sim.crash(n(3));
    sim.run_for(SEC);
    assert!(sim.node(n(1)).link(n(3)).unwrap().state.fresh);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(10 * SEC);
    assert!(sim.with_node(n(1), |node, now| node.retire_link(now, n(3))));
    assert!(sim.with_node(n(2), |node, now| node.retire_link(now, n(3))));
    sim.run_for(10 * SEC);
    sim.restart_lost_store(n(3));
    sim.run_for(10 * SEC);
    assert_eq!(sim.node(n(3)).phase().phase, Phase::Converged);
    assert!(sim.with_node(n(1), |node, now| node.restore_link(now, n(3))));
    assert!(sim.with_node(n(2), |node, now| node.restore_link(now, n(3))));
    sim.run_for(30 * SEC);
    sim.assert_converged(1);
}
