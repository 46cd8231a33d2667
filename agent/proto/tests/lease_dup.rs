//! A grantor and duplicated lease messages: a control message can be delivered twice across
//! connections, and no duplicate may end a lease an activation runs under.

mod common;

use common::{n, Sim};
use entente_proto::msg::Lease;
use entente_proto::{Epoch, Message, Output, Window};

fn grants(outs: &[Output]) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                msg: Message::Lease(Lease::Grant { seq, .. }),
                ..
            } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// The holder asked (10), let go (10), asked again (11) and activates under 11. A duplicate of
/// request 10 arriving now is not a renewal: taken as one, it would rename the grant 10, and a
/// duplicate of release 10 would then end the lease while the activation runs.
#[test]
fn duplicated_request_and_release_of_an_old_lease_leave_the_current_one() {
    let mut sim = Sim::new(&[1, 2], &[(1, 2)], Window::new(0, 0));
    sim.drive();
    let (e, holder, grantor) = (Epoch(1), n(1), n(2));
    let req = |seq| Message::Lease(Lease::Req { epoch: e, seq });
    let rel = |seq| Message::Lease(Lease::Release { epoch: e, seq });
    assert_eq!(grants(&sim.inject(holder, grantor, req(10))), [10]);
    sim.inject(holder, grantor, rel(10));
    assert_eq!(sim.node(grantor).lease_holders(sim.now), 0);
    assert_eq!(grants(&sim.inject(holder, grantor, req(11))), [11]);
    // the duplicates
    assert!(grants(&sim.inject(holder, grantor, req(10))).is_empty());
    sim.inject(holder, grantor, rel(10));
    assert_eq!(
        sim.node(grantor).lease_holders(sim.now),
        1,
        "lease 11 ended"
    );
    // and the real release of 11 ends it
    sim.inject(holder, grantor, rel(11));
    assert_eq!(sim.node(grantor).lease_holders(sim.now), 0);
    // a duplicate of request 11 after its release grants nothing either
    assert!(grants(&sim.inject(holder, grantor, req(11))).is_empty());
    assert_eq!(sim.node(grantor).lease_holders(sim.now), 0);
}
