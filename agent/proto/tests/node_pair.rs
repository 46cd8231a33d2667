//! Several `Node`s driven in memory with virtual time (see `common`): campaigns converge, the
//! lease budget holds, crashes at each side of a transaction still converge, operator abort /
//! resume / rollback behave as docs/protocol.md says, LINK_HELLO establishes links, and a node's
//! outputs persist state before sending anything that depends on it.

mod common;

use common::{campaign, n, Sim, DELAY, DEVICE_DELAY};
use entente_proto::link::LinkState;
use entente_proto::msg::{ControlAction, Hello};
use entente_proto::node::{Event, Record};
use entente_proto::types::{MS, SEC};
use entente_proto::{Epoch, Message, NodeId, Nonce, Output, Pending, Phase, Txn, TxnKind, Window};

/// Nodes start at firmware speaking epoch 0 only, links at epoch 0; campaign 1 moves to 1.
fn w0() -> Window {
    Window::new(0, 0)
}

fn pair() -> Sim {
    Sim::new(&[1, 2], &[(1, 2)], w0())
}

fn line() -> Sim {
    Sim::new(&[1, 2, 3], &[(1, 2), (2, 3)], w0())
}

fn link_state(sim: &Sim, a: u64, b: u64) -> LinkState {
    sim.node(n(a)).link(n(b)).unwrap().state
}

fn no_protocol_errors(sim: &Sim) {
    assert!(
        sim.protocol_errors().is_empty(),
        "{:?}",
        sim.protocol_errors()
    );
    for id in sim.ids() {
        assert_eq!(sim.node(id).stats().protocol_errors, 0, "{id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence
// ---------------------------------------------------------------------------------------------

#[test]
fn pair_converges_non_disruptive() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
    assert_eq!(sim.max_neighbours_activating, 0, "no disruptive activation");
    // exactly one transaction, one nonce
    let kinds: Vec<TxnKind> = sim.txns.iter().map(|t| t.2.kind).collect();
    assert_eq!(
        kinds,
        [
            TxnKind::Propose,
            TxnKind::Reflect,
            TxnKind::Commit,
            TxnKind::CommitAck
        ]
    );
    assert!(sim
        .txns
        .iter()
        .all(|t| t.2.nonce.0 == 1 && t.2.epoch == Epoch(1)));
    // every node's summary knows the link committed
    for id in sim.ids() {
        assert_eq!(
            sim.node(id).summary().link_epoch(n(1), n(2)),
            Some(Epoch(1)),
            "{id}"
        );
    }
}

#[test]
fn pair_converges_disruptive_with_leases() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(2), campaign(1, true, 2));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
    assert_eq!(sim.activations.iter().filter(|a| a.1).count(), 2);
    assert!(sim.max_neighbours_activating <= 1);
    for id in sim.ids() {
        assert_eq!(
            sim.node(id).lease_holders(sim.now),
            0,
            "{id}: leases released"
        );
    }
}

#[test]
fn line_of_three_converges() {
    for disruptive in [false, true] {
        let mut sim = line();
        sim.drive();
        sim.start_campaign(n(3), campaign(1, disruptive, 3));
        sim.drive();
        sim.assert_converged(1);
        no_protocol_errors(&sim);
        // the middle node's neighbours never activate disruptively at once
        assert!(
            sim.max_neighbours_activating <= 1,
            "disruptive={disruptive}"
        );
    }
}

#[test]
fn two_campaigns_in_a_row() {
    let mut sim = Sim::new(&[1, 2, 3], &[(1, 2), (2, 3)], w0());
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    sim.start_campaign(n(2), campaign(2, true, 2));
    sim.drive();
    sim.assert_converged(2);
    no_protocol_errors(&sim);
}

#[test]
fn star_respects_the_lease_budget() {
    // centre 5, leaves 1..=4: the centre lets one leaf at a time hold its lease
    let links = [(1, 5), (2, 5), (3, 5), (4, 5)];
    let mut sim = Sim::with(&[1, 2, 3, 4, 5], &links, w0(), |_| {}, true);
    sim.drive();
    sim.start_campaign(n(5), campaign(1, true, 5));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
    // the budget check runs at every activation; one leaf at a time did activate
    assert_eq!(sim.max_neighbours_activating, 1);
    // the leaves were staged at the same moment, yet activated one after another
    let leaves = [n(1), n(2), n(3), n(4)];
    assert_eq!(sim.activations.iter().filter(|a| a.1).count(), 5);
    assert!(!sim.activations_overlap(&leaves), "{:?}", sim.activations);

    // the same star with a budget of 2: the harness does see two leaves at once
    let mut sim = Sim::with(
        &[1, 2, 3, 4, 5],
        &links,
        w0(),
        |c| c.max_unavailable_neighbors = 2,
        true,
    );
    sim.drive();
    sim.start_campaign(n(5), campaign(1, true, 5));
    sim.drive();
    sim.assert_converged(1);
    assert_eq!(sim.max_neighbours_activating, 2);
    assert!(sim.activations_overlap(&leaves));
}

#[test]
fn an_activation_longer_than_the_configured_lease_gets_a_longer_grant() {
    // A GPU baseboard's reboot may take 30 minutes, far beyond the 120 s configured lease: the
    // grantor grants twice the campaign's need, and the holder measures the granted length.
    let mut sim = pair();
    sim.drive();
    let mut c = campaign(1, true, 2);
    c.max_activation_ms = 1_800_000;
    sim.start_campaign(n(2), c);
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
    assert_eq!(sim.activations.iter().filter(|a| a.1).count(), 2);
    assert!(sim.max_neighbours_activating <= 1);
}

#[test]
fn lease_held_past_half_its_length_is_renewed_without_spinning() {
    // short leases; node 2 holds node 1's lease while it waits for node 3, which is down, so
    // the lease must be renewed while the acquisition goes on
    let mut sim = Sim::with(
        &[1, 2, 3],
        &[(1, 2), (2, 3)],
        w0(),
        |c| c.lease = 4 * SEC,
        true,
    );
    sim.drive();
    sim.crash(n(3));
    let mut c = campaign(1, true, 1);
    c.max_activation_ms = 1_000;
    sim.start_campaign(n(1), c);
    sim.run_for(9 * SEC);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Staged);
    sim.restart(n(3));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn lease_forgotten_by_a_restarted_grantor_does_not_deadlock_the_ring() {
    // ring 1-2-3-4-1: nodes 2 and 4 both need the leases of 1 and 3 (asked in that order).
    // Node 2 holds 1's lease and waits for 3 (connection down); node 1 restarts and forgets
    // its grant, queueing node 4's request and then node 2's renewal. When 2 gets 3's lease
    // and 1 serves 4 first, 2 holds 3 waiting for 1 and 4 holds 1 waiting for 3, unless a
    // holder lets a lease that ran out on its clock go, with the ones acquired after it.
    let links = [(1, 2), (2, 3), (3, 4), (1, 4)];
    let mut sim = Sim::with(&[1, 2, 3, 4], &links, w0(), |_| {}, true);
    sim.drive();
    sim.set_stage_delay(n(1), 1_000 * SEC);
    sim.set_stage_delay(n(3), 1_000 * SEC);
    sim.set_stage_delay(n(4), 10 * SEC);
    sim.disconnect(n(2), n(3));
    sim.start_campaign(n(2), campaign(1, true, 2));
    sim.run_for(5 * MS);
    sim.crash(n(1));
    sim.restart(n(1));
    sim.run_for(95 * SEC);
    sim.connect(n(2), n(3));
    sim.run_for(600 * SEC);
    for id in [2, 4] {
        assert!(
            sim.activations.iter().any(|a| a.0 == n(id)),
            "node {id} never activated: {:?}",
            sim.activations
        );
    }
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn connection_break_mid_transaction_converges() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_)));
    sim.disconnect(n(1), n(2));
    sim.run_for(10 * MS);
    sim.connect(n(1), n(2));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

// ---------------------------------------------------------------------------------------------
// Crash and restart mid-transaction
// ---------------------------------------------------------------------------------------------

/// Runs a pair to `at`, crashes `who`, keeps it down for `down`, restarts it, and converges.
fn crash_at(who: u64, down: u64, at: impl FnMut(&Sim) -> bool) -> Sim {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(at);
    sim.crash(n(who));
    sim.run_for(down);
    sim.restart(n(who));
    sim.drive();
    sim.assert_converged(1);
    sim
}

#[test]
fn crash_initiator_while_tentative() {
    for down in [0, 5 * MS, 10 * SEC] {
        let sim = crash_at(1, down, |s| {
            matches!(link_state(s, 1, 2).pending, Pending::Tentative(_))
        });
        // the restarted initiator aborted nonce 1 and committed with a later one
        let commit = sim
            .txns
            .iter()
            .find(|t| t.2.kind == TxnKind::Commit)
            .unwrap();
        assert!(commit.2.nonce.0 >= 2, "down {down}: {commit:?}");
        no_protocol_errors(&sim);
    }
}

#[test]
fn crash_initiator_committed_before_ack() {
    for down in [0, 5 * MS, 10 * SEC] {
        let sim = crash_at(1, down, |s| {
            let l = link_state(s, 1, 2);
            l.committed == Epoch(1) && !l.acked
        });
        // the commit survived: only nonce 1 was ever committed
        assert!(sim
            .txns
            .iter()
            .filter(|t| t.2.kind == TxnKind::Commit)
            .all(|t| t.2.nonce.0 == 1));
        no_protocol_errors(&sim);
    }
}

#[test]
fn crash_responder_while_reflecting() {
    for down in [0, 5 * MS, 10 * SEC] {
        let sim = crash_at(2, down, |s| {
            matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_))
        });
        // after restart the responder asked what became of its nonce
        assert!(
            sim.txns.iter().any(|t| t.2.kind == TxnKind::Query),
            "down {down}"
        );
    }
}

#[test]
fn crash_responder_after_commit() {
    for down in [0, 5 * MS] {
        let sim = crash_at(2, down, |s| link_state(s, 2, 1).committed == Epoch(1));
        no_protocol_errors(&sim);
    }
}

#[test]
fn crash_initiator_after_responder_reflected() {
    // the REFLECT is lost with the crash; the restarted initiator aborts nonce 1 and proposes 2
    let sim = crash_at(1, 2 * MS, |s| {
        matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_))
    });
    assert!(sim.txns.iter().any(|t| t.2.kind == TxnKind::Query));
    let commit = sim
        .txns
        .iter()
        .find(|t| t.2.kind == TxnKind::Commit)
        .unwrap();
    assert_eq!(commit.2.nonce, Nonce(2));
    no_protocol_errors(&sim);
}

#[test]
fn crash_responder_while_commit_in_flight() {
    // the initiator committed; its COMMIT is lost with the responder's crash; the restarted
    // responder is still reflecting, asks, and is told COMMIT again
    let sim = crash_at(2, 2 * MS, |s| {
        link_state(s, 1, 2).committed == Epoch(1)
            && matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_))
    });
    let commits: Vec<_> = sim
        .txns
        .iter()
        .filter(|t| t.2.kind == TxnKind::Commit)
        .collect();
    assert!(commits.iter().all(|t| t.2.nonce == Nonce(1)));
    no_protocol_errors(&sim);
}

#[test]
fn wiped_responder_acknowledges_the_commit_it_adopted() {
    // the COMMIT is lost with the responder, which comes back with an empty disk: it adopts the
    // committed epoch from the initiator's HELLO, then must acknowledge the resent COMMIT
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| {
        link_state(s, 1, 2).committed == Epoch(1)
            && matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_))
    });
    sim.crash(n(2));
    sim.restart_wiped(n(2));
    sim.drive();
    sim.assert_converged(1);
    assert!(link_state(&sim, 1, 2).acked);
    no_protocol_errors(&sim);
}

#[test]
fn wiped_node_running_the_new_firmware_does_not_activate_again() {
    // node 2 activated, then lost its store before its links committed: it learns the campaign
    // again from its neighbours and stages it, but its device runs the new firmware already,
    // so it moves to Activated without a drain or leases
    let mut sim = line();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, true, 1));
    sim.run_until(|s| s.is_up(n(2)) && s.node(n(2)).phase().phase == Phase::Activated);
    let drains = sim.drains.iter().filter(|d| d.0 == n(2)).count();
    sim.crash(n(2));
    sim.restart_wiped(n(2));
    sim.drive();
    sim.assert_converged(1);
    assert_eq!(sim.drains.iter().filter(|d| d.0 == n(2)).count(), drains);
    no_protocol_errors(&sim);
}

#[test]
fn crash_during_disruptive_activation_converges() {
    let mut sim = line();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, true, 1));
    sim.run_until(|s| s.is_up(n(2)) && s.node(n(2)).is_activating());
    sim.crash(n(2));
    sim.run_for(100 * MS);
    sim.restart(n(2));
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn wiped_grantor_does_not_grant_twice() {
    // node 2 granted its only lease slot to node 3, then lost its disk: it must not hand the
    // slot to node 1 while node 3's activation may still run
    let mut sim = line();
    sim.set_stage_delay(n(1), 2 * MS);
    sim.drive();
    sim.start_campaign(n(3), campaign(1, true, 3));
    sim.run_until(|s| s.is_up(n(3)) && s.node(n(3)).is_activating());
    sim.crash(n(2));
    sim.restart_wiped(n(2));
    sim.drive(); // the harness checks the budget at every activation
    sim.assert_converged(1);
    assert!(!sim.activations_overlap(&[n(1), n(3)]));
}

#[test]
fn crash_of_every_node_in_turn() {
    // crash each node of the line once while something is open on one of its links
    for victim in 1..=3u64 {
        let mut sim = line();
        sim.drive();
        sim.start_campaign(n(2), campaign(1, false, 2));
        sim.run_until(|s| {
            s.node(n(victim))
                .links()
                .iter()
                .any(|l| l.state.pending != Pending::None)
        });
        sim.crash(n(victim));
        sim.run_for(2 * MS);
        sim.restart(n(victim));
        sim.drive();
        sim.assert_converged(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Operator control
// ---------------------------------------------------------------------------------------------

#[test]
fn abort_halts_keeps_committed_links_and_resume_completes() {
    let mut sim = line();
    sim.set_activate_delay(n(3), 50 * MS);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| link_state(s, 2, 1).committed == Epoch(1));
    sim.control(n(2), 1, ControlAction::Abort, 1);
    sim.drive();
    assert_eq!(
        sim.phases(),
        [
            (n(1), Phase::Converged),
            (n(2), Phase::Halted),
            (n(3), Phase::Halted)
        ]
    );
    // committed links stay committed, the other link did not move, nothing is open
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(1));
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(1));
    assert_eq!(link_state(&sim, 2, 3).committed, Epoch(0));
    assert_eq!(link_state(&sim, 3, 2).committed, Epoch(0));
    for (a, b) in sim.links() {
        assert_eq!(link_state(&sim, a.0, b.0).pending, Pending::None);
        assert_eq!(link_state(&sim, b.0, a.0).pending, Pending::None);
    }
    // node 3's activation finished while halted: it runs the new firmware but stays halted
    assert!(sim.node(n(3)).running_window().contains(Epoch(1)));
    // resume from anywhere: the same manifest runs on
    sim.control(n(1), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn abort_with_an_open_transaction() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| matches!(link_state(s, 1, 2).pending, Pending::Tentative(_)));
    sim.record_batches = true;
    sim.control(n(1), 1, ControlAction::Abort, 1);
    // the initiator aborted its proposal (persisted before the ABORT went out)
    let (id, batch) = &sim.batches[0];
    assert_eq!(*id, n(1));
    let persist = batch
        .iter()
        .position(|o| {
            matches!(o, Output::Persist(Record::Link(p, s)) if *p == n(2) && s.pending == Pending::None)
        })
        .expect("aborted proposal persisted");
    let abort = batch
        .iter()
        .position(
            |o| matches!(o, Output::Send { msg: Message::Txn(t), .. } if t.kind == TxnKind::Abort),
        )
        .expect("ABORT sent");
    assert!(persist < abort);
    sim.drive();
    assert_eq!(sim.phases(), [(n(1), Phase::Halted), (n(2), Phase::Halted)]);
    for (a, b) in [(1, 2), (2, 1)] {
        let l = link_state(&sim, a, b);
        assert_eq!((l.committed, l.pending), (Epoch(0), Pending::None));
    }
    sim.control(n(2), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn abort_during_disruptive_activations_and_resume() {
    let mut sim = line();
    sim.drive();
    sim.start_campaign(n(2), campaign(1, true, 2));
    sim.run_until(|s| s.ids().iter().any(|&id| s.node(id).is_activating()));
    sim.control(n(2), 1, ControlAction::Abort, 1);
    sim.drive();
    for (id, p) in sim.phases() {
        assert_eq!(p, Phase::Halted, "{id}");
        assert_eq!(
            sim.node(id).lease_holders(sim.now),
            0,
            "{id}: leases given back"
        );
    }
    // nothing moved: no node was activated when the abort arrived everywhere
    for (a, b) in sim.links() {
        assert_eq!(link_state(&sim, a.0, b.0).committed, Epoch(0));
    }
    sim.control(n(3), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

/// An abort that reaches a node before its campaign does (the operator saw the campaign start
/// elsewhere; this node was cut off) is kept: the campaign halts here the moment it arrives,
/// and nothing is staged or activated.
#[test]
fn abort_before_campaign() {
    let mut sim = pair();
    sim.drive();
    sim.disconnect(n(1), n(2));
    sim.control(n(2), 1, ControlAction::Abort, 1);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(SEC);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Activated);
    sim.connect(n(1), n(2));
    sim.drive();
    assert_eq!(sim.phases(), [(n(1), Phase::Halted), (n(2), Phase::Halted)]);
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(0));
    sim.control(n(1), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
}

/// A pause that arrives before its campaign holds the campaign where it arrives: not even
/// staged, until a resume.
#[test]
fn pause_before_campaign() {
    let mut sim = pair();
    sim.drive();
    sim.disconnect(n(1), n(2));
    sim.control(n(2), 1, ControlAction::Pause, 1);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(SEC);
    sim.connect(n(1), n(2));
    sim.run_for(10 * SEC);
    assert_eq!(
        sim.phases(),
        [(n(1), Phase::Activated), (n(2), Phase::Announced)]
    );
    sim.control(n(2), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn halted_responder_does_not_vote_for_a_new_proposal() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_)));
    // the REFLECT is lost, and the abort reaches only the responder
    sim.disconnect(n(1), n(2));
    sim.control(n(2), 1, ControlAction::Abort, 1);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Halted);
    assert_eq!(
        link_state(&sim, 2, 1).pending,
        Pending::Reflecting(Nonce(1))
    );
    // nothing is retransmitted while the connection is down: nonce 1 stays open
    sim.run_for(10 * SEC);
    assert_eq!(link_state(&sim, 1, 2).pending, Pending::Tentative(Nonce(1)));
    // back up: the abort is passed on with the HELLO, the initiator halts and aborts nonce 1,
    // and the halted responder leaves Reflecting without voting for anything
    sim.connect(n(1), n(2));
    sim.run_for(3 * SEC);
    for (a, b) in [(1, 2), (2, 1)] {
        let l = link_state(&sim, a, b);
        assert_eq!(
            (l.committed, l.pending),
            (Epoch(0), Pending::None),
            "{a}-{b}"
        );
    }
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Halted);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Halted);
    // resume: the link commits
    sim.control(n(2), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn pause_holds_activation_and_resume_continues() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.control(n(1), 1, ControlAction::Pause, 1);
    sim.drive();
    assert!(sim.activations.is_empty());
    assert_eq!(sim.phases(), [(n(1), Phase::Staged), (n(2), Phase::Staged)]);
    sim.control(n(2), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn wiped_node_already_running_the_firmware_does_not_wait_for_leases() {
    // node 1 lost its disk after the campaign (its device still runs the new firmware); it
    // learns the campaign again and stages it. Node 2 just restarted, so it grants nothing for
    // a lease length: node 1 must not wait for its lease (nor drain) to activate what it runs,
    // but move to Activated as soon as it staged, and converge
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(2), campaign(1, true, 2));
    sim.drive();
    sim.assert_converged(1);
    sim.crash(n(2));
    sim.restart(n(2));
    sim.crash(n(1));
    sim.restart_wiped(n(1));
    let (activations, drains) = (sim.activations.len(), sim.drains.len());
    sim.run_for(10 * MS + 2 * DEVICE_DELAY);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Converged);
    // a resume of the converged node changes nothing
    sim.control(n(1), 1, ControlAction::Resume, 1);
    sim.drive();
    sim.assert_converged(1);
    assert_eq!(
        sim.activations.len(),
        activations,
        "{:?}",
        &sim.activations[activations..]
    );
    assert_eq!(sim.drains.len(), drains);
    assert_eq!(sim.node(n(2)).lease_holders(sim.now), 0);
}

#[test]
fn abort_of_a_converged_cluster_changes_nothing() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.control(n(1), 1, ControlAction::Abort, 1);
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn rollback_allowed_before_any_link_moved() {
    let mut sim = pair();
    sim.set_stage_delay(n(2), 100 * MS);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| s.node(n(1)).phase().phase == Phase::Activated);
    assert!(sim.with_node(n(1), |node, now| node.rollback(now)));
    assert_eq!(sim.node(n(1)).phase().phase, Phase::RolledBack);
    assert_eq!(
        sim.durable(n(1)).node.as_ref().unwrap().phase.phase,
        Phase::RolledBack
    );
    sim.drive();
    // the rolled-back node never proposes: the link stays where it was
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(0));
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(0));
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert!(sim.txns.iter().all(|t| t.2.kind != TxnKind::Commit));
}

/// A responder that rolled back (or halted) refuses proposals: its initiator proposes again
/// only once the responder says it activated again, not on a timer for ever (each refusal is a
/// persisted ABORT).
#[test]
fn halted_not_reproposed() {
    let mut sim = pair();
    sim.set_stage_delay(n(1), 100 * MS);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    // node 1 heard that node 2 activated; node 2 rolls back before node 1 activates
    sim.run_until(|s| s.node(n(1)).link(n(2)).unwrap().peer_activated.is_some());
    assert_ne!(sim.node(n(1)).phase().phase, Phase::Activated);
    assert!(sim.with_node(n(2), |node, now| node.rollback(now)));
    sim.run_for(120 * SEC);
    let proposals = sim
        .txns
        .iter()
        .filter(|t| t.0 == n(1) && t.2.kind == TxnKind::Propose)
        .count();
    assert!(
        proposals <= 2,
        "{proposals} proposals to a rolled-back responder"
    );
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(0));
}

/// A flooded rollback: a node whose device runs the campaign and whose links have not moved
/// runs its previous firmware again (its window goes back); a node with a committed link halts
/// instead (it cannot go back); a converged node stays converged.
#[test]
fn rollback_control_where_possible_halt_elsewhere() {
    let mut sim = line();
    // node 3's device votes no for epoch 1: the link 2-3 never moves
    sim.refuse_link_epoch(n(3), Epoch(1));
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| link_state(s, 2, 1).committed == Epoch(1));
    sim.run_for(SEC);
    assert_eq!(
        sim.phases(),
        [
            (n(1), Phase::Converged),
            (n(2), Phase::Activated),
            (n(3), Phase::Activated)
        ]
    );
    sim.control(n(1), 1, ControlAction::Rollback, 1);
    sim.run_for(SEC);
    assert_eq!(
        sim.phases(),
        [
            (n(1), Phase::Converged),
            (n(2), Phase::Halted),
            (n(3), Phase::RolledBack)
        ]
    );
    assert_eq!(sim.node(n(3)).running_window(), w0());
    assert!(sim.node(n(2)).running_window().contains(Epoch(1)));
    assert!(sim
        .events
        .iter()
        .any(|(_, id, e)| *id == n(3) && matches!(e, Event::RolledBack { epoch: Epoch(1) })));
    assert!(sim
        .events
        .iter()
        .any(|(_, id, e)| *id == n(2) && matches!(e, Event::RollbackRefused { .. })));
    // committed links stay; nothing moved on the rolled-back side
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(1));
    assert_eq!(link_state(&sim, 3, 2).committed, Epoch(0));
}

/// A resume after a rollback stages and activates the campaign again, and it converges.
#[test]
fn resume_after_rollback_converges() {
    let mut sim = pair();
    sim.set_stage_delay(n(1), 100 * MS);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| s.node(n(1)).link(n(2)).unwrap().peer_activated.is_some());
    sim.control(n(2), 1, ControlAction::Rollback, 1);
    sim.run_for(SEC);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::RolledBack);
    assert_eq!(sim.node(n(2)).running_window(), w0());
    sim.control(n(1), 1, ControlAction::Resume, 2);
    sim.drive();
    sim.assert_converged(1);
}

/// A node that fails its health gate after its activation never announces it activated: no
/// link moves to the epoch, it rolls back, and its device's window goes back.
#[test]
fn unhealthy_activation_rolls_back_unannounced() {
    let mut sim = pair();
    sim.set_activate_delay(n(2), 10 * SEC);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| s.node(n(2)).is_activating());
    sim.with_node(n(2), |node, now| node.activation_unhealthy(now, Epoch(1)));
    sim.run_for(30 * SEC);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::RolledBack);
    assert_eq!(sim.node(n(2)).running_window(), w0());
    assert_eq!(sim.node(n(1)).link(n(2)).unwrap().peer_activated, None);
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(0));
    assert!(sim
        .events
        .iter()
        .any(|(_, id, e)| *id == n(2) && matches!(e, Event::Unhealthy { .. })));
}

#[test]
fn rollback_aborts_an_open_proposal() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| matches!(link_state(s, 1, 2).pending, Pending::Tentative(_)));
    assert!(sim.with_node(n(1), |node, now| node.rollback(now)));
    sim.drive();
    for (a, b) in [(1, 2), (2, 1)] {
        let l = link_state(&sim, a, b);
        assert_eq!(
            (l.committed, l.pending),
            (Epoch(0), Pending::None),
            "{a}-{b}"
        );
    }
    assert!(sim.txns.iter().any(|t| t.2.kind == TxnKind::Abort));
}

#[test]
fn rollback_refused_after_reflect() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| matches!(link_state(s, 2, 1).pending, Pending::Reflecting(_)));
    assert!(!sim.with_node(n(2), |node, now| node.rollback(now)));
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert!(sim
        .events
        .iter()
        .any(|e| e.1 == n(2) && e.2 == Event::RollbackRefused { epoch: Epoch(1) }));
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn rollback_refused_after_commit() {
    // the middle node has one link committed and one not yet
    let mut sim = line();
    sim.set_activate_delay(n(3), 50 * MS);
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| link_state(s, 2, 1).committed == Epoch(1));
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert!(!sim.with_node(n(2), |node, now| node.rollback(now)));
    assert!(sim
        .events
        .iter()
        .any(|e| e.1 == n(2) && e.2 == Event::RollbackRefused { epoch: Epoch(1) }));
    // a converged node cannot roll back either
    assert!(!sim.with_node(n(1), |node, now| node.rollback(now)));
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn retiring_a_dead_link_lets_the_node_converge() {
    let mut sim = line();
    sim.drive();
    sim.crash(n(3));
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(2 * SEC);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Converged);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(1));
    assert!(sim.with_node(n(2), |node, now| node.retire_link(now, n(3))));
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Converged);
    let rec = sim.durable(n(2)).node.clone().unwrap();
    assert_eq!(rec.retired, [n(3)]);
    assert_eq!(rec.phase.phase, Phase::Converged);
    // unknown links cannot be retired
    assert!(!sim.with_node(n(2), |node, now| node.retire_link(now, n(9))));
}

#[test]
fn retiring_an_unreachable_neighbour_unblocks_its_lease() {
    let mut sim = line();
    sim.drive();
    sim.crash(n(3));
    sim.start_campaign(n(1), campaign(1, true, 1));
    sim.run_for(3 * SEC);
    // node 2 cannot get node 3's lease: it waits, it does not assume the budget
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Staged);
    assert!(sim.activations.iter().all(|a| a.0 != n(2)));
    assert!(sim.with_node(n(2), |node, now| node.retire_link(now, n(3))));
    sim.run_for(3 * SEC);
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Converged);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Converged);
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(1));
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(1));
}

/// One seeded run: a topology, a campaign, then faults (crashes, restarts, wiped disks, broken
/// connections, operator aborts), then a healed network and a resume. Every harness invariant
/// holds at every step, and the run converges.
fn swarm(seed: u64) {
    use entente_proto::{Rng, SeededRng};
    let mut rng = SeededRng::new(seed);
    let (ids, links): (&[u64], &[(u64, u64)]) = match rng.below(4) {
        0 => (&[1, 2], &[(1, 2)]),
        1 => (&[1, 2, 3], &[(1, 2), (2, 3)]),
        2 => (&[1, 2, 3, 4], &[(1, 4), (2, 4), (3, 4)]),
        _ => (&[1, 2, 3, 4], &[(1, 2), (2, 3), (3, 4), (1, 4)]),
    };
    // links agreed at deployment, or left to LINK_HELLO
    let established = rng.chance(0.7);
    let mut sim = Sim::with(ids, links, w0(), |_| {}, established);
    sim.drive();
    sim.trace = std::env::var("TRACE").is_ok();
    let pick = |rng: &mut SeededRng| n(ids[rng.below(ids.len() as u64) as usize]);
    let disruptive = rng.chance(0.5);
    let origin = pick(&mut rng);
    sim.start_campaign(origin, campaign(1, disruptive, origin.0));
    let mut counter = 0;
    let mut wiped = false;
    for _ in 0..30 {
        let pause = if rng.chance(0.15) { 2 * SEC } else { 8 * MS };
        sim.run_for(rng.below(pause));
        let id = pick(&mut rng);
        if std::env::var("TRACE").is_ok() {
            eprintln!("--- t={} fault on {id}", sim.now);
        }
        match rng.below(10) {
            0..=2 if sim.is_up(id) => {
                sim.crash(id);
                // one wiped disk at most: with every record gone nothing knows the campaign
                if !wiped && rng.chance(0.1) {
                    wiped = true;
                    sim.restart_wiped(id);
                }
            }
            0..=2 => sim.restart(id),
            3..=5 => {
                let (a, b) = sim.links()[rng.below(links.len() as u64) as usize];
                sim.disconnect(a, b);
            }
            6 if sim.is_up(id) => {
                counter += 1;
                sim.control(id, 1, ControlAction::Abort, counter);
            }
            _ => {
                for (a, b) in sim.links() {
                    if sim.is_up(a) && sim.is_up(b) && !sim.is_connected(a, b) {
                        sim.connect(a, b);
                    }
                }
            }
        }
    }
    // heal, then resume everywhere (a control is flooded, not re-sent on reconnect)
    for id in sim.ids() {
        if !sim.is_up(id) {
            sim.restart(id);
        }
    }
    for (a, b) in sim.links() {
        if !sim.is_connected(a, b) {
            sim.connect(a, b);
        }
    }
    if counter > 0 {
        for id in sim.ids() {
            sim.control(id, 1, ControlAction::Resume, counter + 1);
        }
    }
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

#[test]
fn random_faults_then_heal_converge() {
    // SEED=k runs one seed (TRACE=1 prints its healed phase)
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (0..60).collect(),
    };
    for seed in seeds {
        let r = std::panic::catch_unwind(|| swarm(seed));
        assert!(r.is_ok(), "seed {seed} failed: rerun with SEED={seed}");
    }
}

#[test]
fn runs_are_deterministic() {
    let run = || {
        let mut sim = line();
        sim.drive();
        sim.start_campaign(n(2), campaign(1, true, 2));
        sim.run_until(|s| {
            s.node(n(2))
                .links()
                .iter()
                .any(|l| l.state.pending != Pending::None)
        });
        sim.crash(n(2));
        sim.run_for(3 * MS);
        sim.restart(n(2));
        sim.drive();
        sim.assert_converged(1);
        format!(
            "{} {:?} {:?} {:?}",
            sim.now, sim.txns, sim.events, sim.activations
        )
    };
    assert_eq!(run(), run());
}

// ---------------------------------------------------------------------------------------------
// Peers, LINK_HELLO
// ---------------------------------------------------------------------------------------------

#[test]
fn message_from_unknown_peer_is_counted_not_applied() {
    let mut sim = pair();
    sim.drive();
    let before = link_state(&sim, 2, 1);
    let outs = sim.inject(
        n(99),
        n(2),
        Message::Txn(Txn::new(TxnKind::Propose, Epoch(1), Nonce(1))),
    );
    assert_eq!(outs, [Output::Event(Event::UnknownPeer(n(99)))]);
    assert_eq!(sim.node(n(2)).stats().unknown_peers, 1);
    assert_eq!(link_state(&sim, 2, 1), before);
    let outs = sim.inject(n(99), n(1), Message::Campaign(campaign(1, false, 99)));
    assert_eq!(outs, [Output::Event(Event::UnknownPeer(n(99)))]);
    assert_eq!(sim.node(n(1)).phase().phase, Phase::Idle);
    let outs = sim.outputs_of(n(1), |node, now| {
        node.handle_up(now, n(77), 1);
        node.handle_down(now, n(77), 1);
    });
    assert_eq!(outs, [Output::Event(Event::UnknownPeer(n(77)))]);
    assert_eq!(sim.node(n(1)).stats().unknown_peers, 2);
    sim.drive();
}

#[test]
fn no_durable_state_hello_establishes_links() {
    // every node starts with an empty disk: links are agreed by LINK_HELLO at the highest
    // epoch both windows speak, persisted before any data
    let mut sim = Sim::with(
        &[1, 2, 3],
        &[(1, 2), (2, 3)],
        Window::new(0, 2),
        |_| {},
        false,
    );
    sim.drive();
    for (a, b) in sim.links() {
        for (x, y) in [(a, b), (b, a)] {
            let l = sim.node(x).link(y).unwrap();
            assert_eq!(l.state, LinkState::established(Epoch(2)), "{x}-{y}");
            assert_eq!(sim.durable_link(x, y), Some(l.state));
            assert_eq!(sim.device_link(x, y), Some(Epoch(2)));
            assert_eq!(sim.node(x).send_epoch(y), Some(Epoch(2)));
        }
    }
    // and a campaign then moves them
    sim.start_campaign(n(1), campaign(3, false, 1));
    sim.drive();
    sim.assert_converged(3);
    no_protocol_errors(&sim);
}

#[test]
fn wiped_node_adopts_committed_epochs_by_hello() {
    let mut sim = line();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    sim.crash(n(2));
    sim.restart_wiped(n(2));
    sim.drive();
    for p in [1, 3] {
        assert_eq!(link_state(&sim, 2, p), LinkState::established(Epoch(1)));
        assert_eq!(sim.durable_link(n(2), n(p)).unwrap().committed, Epoch(1));
    }
    // the wiped node lost its campaign record but not its firmware
    assert_eq!(sim.node(n(2)).phase().version.incarnation, 1);
    assert!(sim.node(n(2)).running_window().contains(Epoch(1)));
    no_protocol_errors(&sim);
}

#[test]
fn wiped_node_converges_when_its_last_link_is_agreed_by_hello() {
    let mut sim = line();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    // node 2 loses its disk; its connection to 3 breaks before the HELLOs cross
    sim.crash(n(2));
    sim.restart_wiped(n(2));
    sim.disconnect(n(2), n(3));
    sim.run_for(SEC);
    // it re-learned the campaign from 1 and runs the new firmware, link 2-3 still unknown
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert!(link_state(&sim, 2, 3).fresh);
    // the HELLO agrees the link at the epoch node 3 committed: nothing is left to move
    sim.connect(n(2), n(3));
    sim.drive();
    assert_eq!(link_state(&sim, 2, 3), LinkState::established(Epoch(1)));
    sim.assert_converged(1);
}

#[test]
fn hello_crossing_an_activation_agrees_one_epoch() {
    // node 3 is a spare with no state and newer firmware; it comes up just before node 2's
    // activation finishes, so node 2's HELLO carries its old window and its answer is read
    // with the new one
    let mut sim = line();
    sim.drive();
    // the link 2-3 is new: no state at either end
    sim.crash(n(3));
    sim.crash(n(2));
    sim.forget_link(n(2), n(3));
    sim.restart(n(2));
    sim.set_device_window(n(3), Window::new(0, 1));
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| s.activation_due(n(2)).is_some());
    let due = sim.activation_due(n(2)).unwrap();
    sim.run_for(due - sim.now - DELAY / 2);
    sim.restart_wiped(n(3));
    sim.run_for(SEC);
    let (a, b) = (link_state(&sim, 2, 3), link_state(&sim, 3, 2));
    assert_eq!(a.committed, b.committed, "{a:?} vs {b:?}");
    sim.check_probes();
    // the link then moves by a transaction like any other
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn hello_without_common_epoch_reports_and_keeps_link_fresh() {
    let mut sim = Sim::with(
        &[1, 2],
        &[(1, 2)],
        Window::new(0, 1),
        |c| {
            if c.id == NodeId(2) {
                c.firmware_window = Window::new(3, 4);
            }
        },
        false,
    );
    sim.drive();
    let failed = sim
        .events
        .iter()
        .filter(|e| matches!(e.2, Event::HelloFailed { .. }))
        .count();
    assert_eq!(failed, 2, "reported at both ends");
    for (a, b) in [(1, 2), (2, 1)] {
        assert!(link_state(&sim, a, b).fresh);
        assert_eq!(sim.node(n(a)).send_epoch(n(b)), None);
        assert_eq!(sim.durable_link(n(a), n(b)), None);
    }
}

// ---------------------------------------------------------------------------------------------
// Output order
// ---------------------------------------------------------------------------------------------

fn is_link_persist(o: &Output, peer: NodeId, pred: impl Fn(&LinkState) -> bool) -> bool {
    matches!(o, Output::Persist(Record::Link(p, s)) if *p == peer && pred(s))
}

fn txn_sent(o: &Output, kind: TxnKind) -> bool {
    matches!(o, Output::Send { msg: Message::Txn(t), .. } if t.kind == kind)
}

#[test]
fn persist_comes_before_the_send_that_depends_on_it() {
    let mut sim = pair();
    sim.drive();
    sim.record_batches = true;
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);

    let batch_with = |who: u64, kind: TxnKind| {
        sim.batches
            .iter()
            .find(|(id, b)| *id == n(who) && b.iter().any(|o| txn_sent(o, kind)))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no batch of {who} sends {kind:?}"))
    };

    // PROPOSE (initiator, guard): Tentative persisted first
    let b = batch_with(1, TxnKind::Propose);
    let p = b
        .iter()
        .position(|o| is_link_persist(o, n(2), |s| s.pending == Pending::Tentative(Nonce(1))))
        .expect("tentative persisted");
    assert!(
        p < b
            .iter()
            .position(|o| txn_sent(o, TxnKind::Propose))
            .unwrap()
    );

    // REFLECT (responder): Reflecting persisted first; data paused
    let b = batch_with(2, TxnKind::Reflect);
    let p = b
        .iter()
        .position(|o| is_link_persist(o, n(1), |s| matches!(s.pending, Pending::Reflecting(_))))
        .expect("reflecting persisted");
    let s = b
        .iter()
        .position(|o| txn_sent(o, TxnKind::Reflect))
        .unwrap();
    assert!(p < s, "{b:#?}");

    // COMMIT (initiator): committed persisted, the device asked to switch; COMMIT goes out in
    // a later batch, once the device acknowledged (the device is a participant of the commit)
    let index_of = |who: u64, pred: &dyn Fn(&Output) -> bool| {
        sim.batches
            .iter()
            .position(|(id, b)| *id == n(who) && b.iter().any(pred))
            .unwrap_or_else(|| panic!("no such batch of {who}"))
    };
    let committed = index_of(1, &|o| {
        is_link_persist(o, n(2), |s| s.committed == Epoch(1) && !s.acked)
    });
    let b = &sim.batches[committed].1;
    let p = b
        .iter()
        .position(|o| is_link_persist(o, n(2), |s| s.committed == Epoch(1) && !s.acked))
        .unwrap();
    let d = b
        .iter()
        .position(|o| matches!(o, Output::SetLinkEpoch { peer, epoch } if *peer == n(2) && *epoch == Epoch(1)))
        .expect("device asked in the commit's batch");
    assert!(p < d, "{b:#?}");
    assert!(!b.iter().any(|o| txn_sent(o, TxnKind::Commit)), "{b:#?}");
    assert!(index_of(1, &|o| txn_sent(o, TxnKind::Commit)) > committed);

    // COMMIT_ACK (responder): committed persisted and the device asked first; the ack goes out
    // once the device acknowledged
    let committed = index_of(2, &|o| {
        is_link_persist(o, n(1), |s| s.committed == Epoch(1))
    });
    let b = &sim.batches[committed].1;
    assert!(!b.iter().any(|o| txn_sent(o, TxnKind::CommitAck)), "{b:#?}");
    assert!(b.iter().any(
        |o| matches!(o, Output::SetLinkEpoch { peer, epoch } if *peer == n(1) && *epoch == Epoch(1))
    ));
    assert!(index_of(2, &|o| txn_sent(o, TxnKind::CommitAck)) > committed);

    // the node reached Converged (persisted) once its link committed and its device took it
    let converged = index_of(
        2,
        &|o| matches!(o, Output::Persist(Record::Node(r)) if r.phase.phase == Phase::Converged),
    );
    assert!(converged > committed);

    // ACTIVATED goes out only after the Activated phase is durable (and once the device said
    // it can take the epoch: a batch after the phase's, or the same one after its record)
    let sends_activated = |o: &Output| {
        matches!(
            o,
            Output::Send {
                msg: Message::Activated { .. },
                ..
            }
        )
    };
    for who in [1u64, 2] {
        let persisted = index_of(
            who,
            &|o| matches!(o, Output::Persist(Record::Node(r)) if r.phase.phase == Phase::Activated),
        );
        let sent = index_of(who, &sends_activated);
        assert!(persisted <= sent);
        if persisted == sent {
            let b = &sim.batches[sent].1;
            let p = b
                .iter()
                .position(|o| matches!(o, Output::Persist(Record::Node(r)) if r.phase.phase == Phase::Activated))
                .unwrap();
            assert!(p < b.iter().position(sends_activated).unwrap());
        }
    }
}

#[test]
fn hello_persists_before_data() {
    let mut sim = Sim::with(&[1, 2], &[(1, 2)], Window::new(0, 1), |_| {}, false);
    sim.record_batches = true;
    sim.drive();
    // each node's batch handling the peer's HELLO persists the link and switches the device
    for (who, peer) in [(1, 2), (2, 1)] {
        let b = sim
            .batches
            .iter()
            .find(|(id, b)| {
                *id == n(who) && b.iter().any(|o| is_link_persist(o, n(peer), |s| !s.fresh))
            })
            .map(|(_, b)| b)
            .unwrap();
        assert!(matches!(b[0], Output::Persist(Record::Link(..))), "{b:#?}");
        assert!(matches!(
            b[1],
            Output::SetLinkEpoch {
                epoch: Epoch(1),
                ..
            }
        ));
    }
    assert_eq!(sim.node(n(1)).send_epoch(n(2)), Some(Epoch(1)));
}

#[test]
fn duplicate_hello_and_stale_messages_are_harmless() {
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    // a second HELLO, a duplicate COMMIT and an old PROPOSE change nothing
    let hello = Hello {
        window: Window::new(0, 1),
        activated: Some(Epoch(1)),
        link: Some(entente_proto::msg::LinkSnapshot {
            committed: Epoch(1),
            pending: Pending::None,
        }),
        your_version: None,
    };
    sim.inject(n(1), n(2), Message::Hello(hello));
    let outs = sim.inject(
        n(1),
        n(2),
        Message::Txn(Txn::new(TxnKind::Commit, Epoch(1), Nonce(1))),
    );
    assert!(outs.iter().any(|o| txn_sent(o, TxnKind::CommitAck)));
    sim.inject(
        n(1),
        n(2),
        Message::Txn(Txn::new(TxnKind::Propose, Epoch(1), Nonce(1))),
    );
    assert_eq!(sim.node(n(2)).stats().stale, 1);
    sim.drive();
    sim.assert_converged(1);
    no_protocol_errors(&sim);
}

// ---------------------------------------------------------------------------------------------
// The harness's own checkers catch what they are meant to
// ---------------------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "durable state")]
fn harness_catches_a_driver_that_sends_before_it_persists() {
    let mut sim = pair();
    sim.drive();
    sim.send_before_persist = true;
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
}

#[cfg(feature = "mutants")]
#[test]
#[should_panic(expected = "ProbeMismatch")]
fn harness_catches_a_responder_that_does_not_pause() {
    let mut sim = Sim::with(
        &[1, 2],
        &[(1, 2)],
        w0(),
        |c| c.mutant = Some(entente_proto::Mutant::ResponderDoesNotPause),
        true,
    );
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
}

// ---------------------------------------------------------------------------------------------
// The device as a participant of the link's commit
// ---------------------------------------------------------------------------------------------

#[test]
fn device_refuses_link_epoch() {
    // node 2's device cannot take epoch 1: node 2 votes no (ABORT, reason DeviceRefused) and
    // never reflects; the link stays at epoch 0, safe, and the refusal is reported
    let mut sim = pair();
    sim.drive();
    sim.refuse_link_epoch(n(2), Epoch(1));
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(20 * SEC);
    assert!(
        !sim.txns
            .iter()
            .any(|t| t.0 == n(2) && t.2.kind == TxnKind::Reflect),
        "reflected an epoch its device refused"
    );
    assert_eq!(link_state(&sim, 1, 2).committed, Epoch(0));
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(0));
    assert!(sim
        .events
        .iter()
        .any(|(_, id, e)| *id == n(2) && matches!(e, Event::DeviceRefusedEpoch { .. })));
    sim.check_probes();
    no_protocol_errors(&sim);
}

#[test]
fn device_refusal_aborts_a_propose_before_reflect() {
    // node 2 activated but its device said no: a PROPOSE that reaches it is aborted with the
    // device's reason, never reflected
    let mut sim = pair();
    sim.drive();
    sim.refuse_link_epoch(n(2), Epoch(1));
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(20 * SEC);
    let outs = sim.inject(
        n(1),
        n(2),
        Message::Txn(Txn::new(TxnKind::Propose, Epoch(1), Nonce(9))),
    );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Send { msg: Message::Txn(t), .. }
            if t.kind == TxnKind::Abort
                && t.reason == entente_proto::msg::AbortReason::DeviceRefused
    )));
    assert!(!outs.iter().any(
        |o| matches!(o, Output::Send { msg: Message::Txn(t), .. } if t.kind == TxnKind::Reflect)
    ));
}

#[test]
fn device_fails_after_commit() {
    // node 2's device fails to apply epoch 1 three times after the link committed: the commit
    // stands, the device is asked again with back-off, the link is reported lagging, and no
    // probe of the new epoch leaves either end before its device took it (checked on every
    // probe by the harness)
    let mut sim = pair();
    sim.drive();
    sim.fail_link_epochs(n(2), 3);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| link_state(s, 2, 1).committed == Epoch(1));
    sim.run_for(50 * MS);
    assert!(sim.node(n(2)).device_lagging(n(1)));
    assert_eq!(
        link_state(&sim, 2, 1).committed,
        Epoch(1),
        "the commit stands"
    );
    assert!(
        !sim.txns
            .iter()
            .any(|t| t.0 == n(2) && t.2.kind == TxnKind::CommitAck),
        "acknowledged a commit its device has not taken"
    );
    assert_eq!(
        sim.node(n(2)).send_epoch(n(1)),
        None,
        "no data while lagging"
    );
    sim.drive();
    sim.assert_converged(1);
    let lagging = sim
        .events
        .iter()
        .filter(|(_, id, e)| *id == n(2) && matches!(e, Event::DeviceLagging { .. }))
        .count();
    assert_eq!(lagging, 3, "one report per failed try");
    assert!(!sim.node(n(2)).device_lagging(n(1)));
    sim.check_probes();
    no_protocol_errors(&sim);
}

#[test]
fn wiped_node_outgrows_its_old_incarnation() {
    // node 2 lost its store after the campaign: node 1 still holds node 2's old reports; the
    // HELLO tells node 2, which takes a higher incarnation so its new reports win
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    let old = sim.node(n(2)).phase().version;
    sim.crash(n(2));
    sim.restart_lost_store(n(2));
    sim.run_for(SEC);
    let new = sim.node(n(2)).phase().version;
    assert!(new > old, "{new:?} <= {old:?}");
    assert!(sim
        .events
        .iter()
        .any(|(_, id, e)| *id == n(2) && matches!(e, Event::Reincarnated { .. })));
    assert_eq!(
        sim.node(n(1)).summary().phase(n(2)),
        Some(sim.node(n(2)).phase()),
        "node 1 sees node 2's current report"
    );
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(1));
    sim.check_probes();
}

#[test]
fn drain_then_lease() {
    // a disruptive activation drains first (here for 40 s, longer than a lease would cover
    // were it asked for first), and asks for leases only once drained: the drain eats nobody's
    // budget, and the lease covers the activation alone
    let mut sim = pair();
    sim.drive();
    sim.set_drain_delay(n(1), 40 * SEC);
    sim.set_drain_delay(n(2), 40 * SEC);
    sim.start_campaign(n(1), campaign(1, true, 1));
    sim.drive();
    sim.assert_converged(1);
    for id in [n(1), n(2)] {
        let drained_at = sim
            .drains
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, t)| t + 40 * SEC)
            .expect("drained");
        let first_req = sim
            .lease_reqs
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, t)| *t)
            .expect("asked for a lease");
        assert!(
            first_req >= drained_at,
            "{id}: lease asked during the drain"
        );
    }
}

#[test]
fn a_report_of_this_node_far_ahead_of_its_own_is_not_followed() {
    // a HELLO (or gossip) claiming this node's report is at the end of the incarnation space:
    // reported, never followed, no quarantine
    let mut sim = pair();
    sim.drive();
    let before = sim.node(n(2)).phase().version;
    for _ in 0..3 {
        let hello = Hello {
            window: Window::new(0, 0),
            activated: None,
            link: Some(entente_proto::msg::LinkSnapshot {
                committed: Epoch(0),
                pending: Pending::None,
            }),
            your_version: Some(entente_proto::Version {
                incarnation: u32::MAX,
                counter: u32::MAX,
            }),
        };
        sim.inject(n(1), n(2), Message::Hello(hello));
    }
    assert_eq!(sim.node(n(2)).phase().version, before);
    let events = |f: fn(&Event) -> bool| {
        sim.events
            .iter()
            .filter(|(_, id, e)| *id == n(2) && f(e))
            .count()
    };
    assert_eq!(events(|e| matches!(e, Event::Reincarnated { .. })), 0);
    assert_eq!(events(|e| matches!(e, Event::ImplausibleReport { .. })), 3);
}

#[test]
fn a_lagging_device_keeps_its_node_from_converging() {
    // node 2's device fails for a while after the commit: node 2 is not Converged (its link
    // carries no data) until the device took the epoch
    let mut sim = pair();
    sim.drive();
    sim.fail_link_epochs(n(2), 6);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_until(|s| link_state(s, 2, 1).committed == Epoch(1));
    sim.run_for(3 * SEC);
    assert!(sim.node(n(2)).device_lagging(n(1)));
    assert_eq!(sim.node(n(2)).phase().phase, Phase::Activated);
    assert_eq!(sim.node(n(2)).summary().report(n(2), n(1)), Some(Epoch(0)));
    sim.drive();
    sim.assert_converged(1);
}

#[test]
fn an_incompatible_link_agrees_once_the_node_activates_firmware_that_speaks_its_epoch() {
    // node 2 lost its store and starts from firmware that speaks epoch 0 only, while node 1
    // holds the link at epoch 1: incompatible. Node 2 learns the campaign again, activates its
    // firmware (window [0, 1]) and says so in a new HELLO: the link agrees at epoch 1.
    let mut sim = pair();
    sim.drive();
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.drive();
    sim.assert_converged(1);
    sim.crash(n(2));
    sim.set_device_window(n(2), Window::new(0, 0));
    sim.restart_lost_store(n(2));
    sim.run_until(|s| {
        s.node(n(2)).link(n(1)).unwrap().incompatible
            && s.node(n(1)).link(n(2)).unwrap().incompatible
    });
    sim.drive();
    assert!(!sim.node(n(2)).link(n(1)).unwrap().incompatible);
    assert!(!sim.node(n(1)).link(n(2)).unwrap().incompatible);
    assert_eq!(link_state(&sim, 2, 1).committed, Epoch(1));
    sim.assert_converged(1);
    sim.check_probes();
}

#[test]
fn nonces_carry_the_incarnation() {
    // node 1 (initiator) loses its store while its proposal is open: its next proposals carry
    // its new incarnation, above every nonce of its earlier life
    let mut sim = pair();
    sim.drive();
    sim.set_activate_delay(n(2), 60 * SEC);
    sim.start_campaign(n(1), campaign(1, false, 1));
    sim.run_for(10 * SEC);
    let before: Vec<u64> = sim
        .txns
        .iter()
        .filter(|t| t.0 == n(1) && t.2.kind == TxnKind::Propose)
        .map(|t| t.2.nonce.0)
        .collect();
    sim.crash(n(1));
    sim.restart_wiped(n(1));
    sim.drive();
    sim.assert_converged(1);
    let inc = u64::from(sim.node(n(1)).phase().version.incarnation);
    assert!(inc >= 1);
    let after: Vec<u64> = sim
        .txns
        .iter()
        .filter(|t| t.0 == n(1) && t.2.kind == TxnKind::Propose)
        .map(|t| t.2.nonce.0)
        .skip(before.len())
        .collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|&a| a >> 32 >= inc && before.iter().all(|&b| a > b)),
        "before {before:?}, after {after:?}"
    );
}
