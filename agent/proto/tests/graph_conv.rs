//! `Conv(P, e)` over the graph the nodes gossip: every node declares its configured links, so a
//! link whose far end never reported keeps every view from converging.

mod common;

use common::{campaign, n, Sim};
use entente_proto::msg::GossipDelta;
use entente_proto::summary::Summary;
use entente_proto::types::SEC;
use entente_proto::{Epoch, Window};

#[test]
fn conv_over_declared_links() {
    let mut s = Summary::new();
    assert!(s.declare(n(1), n(2)));
    assert!(s.declare(n(1), n(3)));
    assert!(s.declare(n(2), n(1)));
    assert!(!s.declare(n(2), n(1)), "declared once");
    assert_eq!(s.graph(), vec![(n(1), n(2)), (n(1), n(3))]);
    assert_eq!(s.report(n(1), n(2)), None, "a declaration is no report");
    s.set_link(n(1), n(2), Epoch(1));
    s.set_link(n(2), n(1), Epoch(1));
    assert!(!s.declare(n(1), n(2)), "a report implies the declaration");
    let c = s.census(Epoch(1));
    assert_eq!((c.links, c.committed, c.retired), (2, 1, 0));
    assert!(!s.conv_graph(Epoch(1)), "3 never reported its end of 1–3");
    s.set_link(n(1), n(3), Epoch(1));
    assert!(!s.conv_graph(Epoch(1)));
    s.set_link(n(3), n(1), Epoch(1));
    assert!(s.conv_graph(Epoch(1)));
    assert_eq!(s.census(Epoch(1)).committed, 2);
}

#[test]
fn declarations_travel_and_reports_supersede_them() {
    let mut a = Summary::new();
    a.declare(n(1), n(2));
    let mut d = GossipDelta::default();
    a.delta_since(0, &mut d);
    assert_eq!(d.declared, vec![(n(1), n(2))]);
    assert!(d.links.is_empty());
    let mut b = Summary::new();
    assert!(b.merge(&d));
    assert_eq!(b.graph(), vec![(n(1), n(2))]);
    let acked = d.upto;
    a.set_link(n(1), n(2), Epoch(0));
    a.delta_since(acked, &mut d);
    assert_eq!(d.links, vec![(n(1), n(2), Epoch(0))]);
    assert!(d.declared.is_empty());
    assert!(b.merge(&d));
    assert!(!b.merge(&a.to_delta()), "idempotent");
    // a stale declaration never takes a report back
    let mut old = GossipDelta::default();
    old.declared.push((n(1), n(2)));
    assert!(!b.merge(&old));
    assert_eq!(b.report(n(1), n(2)), Some(Epoch(0)));
    assert_eq!(a.canonical(), b.canonical());
}

#[test]
fn a_node_that_never_reported_keeps_the_cluster_unconverged() {
    // links agreed by LINK_HELLO: node 3 goes down before it ever connected
    let mut sim = Sim::with(
        &[1, 2, 3],
        &[(1, 2), (2, 3), (1, 3)],
        Window::new(0, 0),
        |_| {},
        false,
    );
    sim.crash(n(3));
    // gossip to the dead node stays unacknowledged: run for a while, not until idle
    sim.run_for(SEC);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(10 * SEC);
    for id in [1, 2] {
        let s = sim.node(n(id)).summary();
        assert_eq!(s.graph(), vec![(n(1), n(2)), (n(1), n(3)), (n(2), n(3))]);
        assert!(!s.conv_graph(Epoch(1)), "node {id}");
        let c = s.census(Epoch(1));
        assert_eq!((c.links, c.committed, c.retired), (3, 1, 0), "node {id}");
        assert_eq!(s.phase(n(3)), None, "node 3 never reported");
    }
    sim.restart(n(3));
    sim.drive();
    sim.assert_converged(1);
    assert!(sim.node(n(2)).summary().conv_graph(Epoch(1)));
}
