//! A campaign accepted by its origin survives the origin's crash: the node record that holds
//! it is persisted before the campaign goes to anyone, and a restarted origin announces it again
//! on every new connection.

mod common;

use common::{campaign, n, Sim};
use entente_proto::node::Record;
use entente_proto::{Message, Output, Phase, Window};

#[test]
fn campaign_persisted_before_sent_and_reannounced_after_an_origin_crash() {
    let mut sim = Sim::new(&[1, 2, 3], &[(1, 2), (2, 3)], Window::new(0, 0));
    sim.drive();
    let c = campaign(1, true, 2);
    let mut accepted = false;
    let outs = sim.outputs_of(n(2), |node, now| accepted = node.start_campaign(now, c));
    assert!(accepted, "{outs:?}");
    let persisted = outs
        .iter()
        .position(|o| matches!(o, Output::Persist(Record::Node(r)) if r.campaign == Some(c)));
    let sent = outs.iter().position(|o| {
        matches!(
            o,
            Output::Send {
                msg: Message::Campaign(_),
                ..
            }
        )
    });
    assert!(persisted.is_some() && persisted < sent, "{outs:?}");
    // the origin crashes before its announcements arrive: nobody else knows the campaign
    sim.crash(n(2));
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Idle);
    assert_eq!(sim.node(n(3)).phase().phase, Phase::Idle);
    assert_eq!(sim.durable(n(2)).node.as_ref().unwrap().campaign, Some(c));
    sim.restart(n(2));
    sim.drive();
    sim.assert_converged(1);
    // asking again is harmless: the origin already holds it
    let mut again = false;
    sim.outputs_of(n(2), |node, now| again = node.start_campaign(now, c));
    assert!(again);
}

#[test]
fn start_refused_by_the_origin_says_so() {
    let mut sim = Sim::new(&[1, 2], &[(1, 2)], Window::new(0, 0));
    sim.drive();
    let mut bad = campaign(1, false, 1);
    bad.window = Window::new(1, 1); // does not speak epoch 0
    let mut accepted = true;
    sim.outputs_of(n(1), |node, now| accepted = node.start_campaign(now, bad));
    assert!(!accepted);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Idle);
}
