//! Unit tests of the summary.

use super::*;
use crate::phase::{Phase, Version};
use std::collections::HashMap;

fn n(i: u64) -> NodeId {
    NodeId(i)
}

fn e(i: u64) -> Epoch {
    Epoch(i)
}

fn pe(epoch: u64, phase: Phase, incarnation: u32, counter: u32) -> PhaseEntry {
    PhaseEntry {
        epoch: Epoch(epoch),
        phase,
        version: Version {
            incarnation,
            counter,
        },
    }
}

#[test]
fn link_report_is_a_max_register() {
    let mut s = Summary::new();
    assert_eq!(s.report(n(1), n(2)), None);
    assert!(s.set_link(n(1), n(2), e(3)));
    assert_eq!(s.seq(), 1);
    assert!(!s.set_link(n(1), n(2), e(2)), "lower epoch never wins");
    assert!(!s.set_link(n(1), n(2), e(3)), "equal epoch is no change");
    assert_eq!(s.seq(), 1, "no change, no sequence");
    assert_eq!(s.report(n(1), n(2)), Some(e(3)));
    assert!(s.set_link(n(1), n(2), e(4)));
    assert_eq!(s.report(n(1), n(2)), Some(e(4)));
    assert_eq!(s.report(n(2), n(1)), None, "reports are directed");
    assert!(
        s.set_link(n(2), n(1), e(0)),
        "a first report of epoch 0 is a change"
    );
    assert_eq!(s.seq(), 3);
}

#[test]
fn phase_versions_order_entries() {
    let mut s = Summary::new();
    assert!(s.set_phase(n(1), pe(1, Phase::Activated, 0, 2)));
    assert!(
        !s.set_phase(n(1), pe(1, Phase::Staged, 0, 1)),
        "lower version never wins"
    );
    assert!(
        !s.set_phase(n(1), pe(1, Phase::Halted, 0, 2)),
        "equal version keeps existing"
    );
    assert_eq!(s.phase(n(1)), Some(pe(1, Phase::Activated, 0, 2)));
    // A rollback is a higher version carrying an earlier phase (and epoch).
    assert!(s.set_phase(n(1), pe(0, Phase::RolledBack, 0, 3)));
    assert_eq!(s.phase(n(1)), Some(pe(0, Phase::RolledBack, 0, 3)));
    // A new incarnation beats any counter of the old one.
    assert!(s.set_phase(n(1), pe(0, Phase::Idle, 1, 0)));
    assert!(!s.set_phase(n(1), pe(1, Phase::Finalized, 0, 99)));
    assert_eq!(s.phase(n(1)), Some(pe(0, Phase::Idle, 1, 0)));
    // Merging follows the same rule.
    let mut t = Summary::new();
    t.set_phase(n(1), pe(1, Phase::Finalized, 0, 99));
    assert!(t.merge(&s.to_delta()));
    assert_eq!(t.phase(n(1)), Some(pe(0, Phase::Idle, 1, 0)));
    assert!(!s.merge(&t.to_delta()));
}

#[test]
fn link_epoch_is_min_of_ends() {
    let mut s = Summary::new();
    s.set_link(n(1), n(2), e(5));
    assert_eq!(s.link_epoch(n(1), n(2)), None, "one end unknown");
    s.set_link(n(2), n(1), e(3));
    assert_eq!(s.link_epoch(n(1), n(2)), Some(e(3)));
    assert_eq!(s.link_epoch(n(2), n(1)), Some(e(3)));
    s.set_link(n(2), n(1), e(7));
    assert_eq!(s.link_epoch(n(2), n(1)), Some(e(5)));
}

#[test]
fn retire_is_unordered() {
    let mut s = Summary::new();
    assert!(s.retire(n(3), n(2), n(3)));
    assert!(!s.retire(n(2), n(3), n(2)));
    assert!(s.is_retired(n(2), n(3)) && s.is_retired(n(3), n(2)));
    assert_eq!(s.retired().collect::<Vec<_>>(), vec![(n(2), n(3))]);
    assert_eq!(s.to_delta().marks.len(), 1);
}

#[test]
fn retire_makes_converged_ignore_the_link() {
    let topo = [(n(1), n(2)), (n(2), n(3))];
    let mut s = Summary::new();
    s.watch(e(1), &topo);
    assert!(!s.converged());
    assert_eq!(s.pending_links(), 2);
    s.set_link(n(1), n(2), e(1));
    assert_eq!(s.pending_links(), 2);
    s.set_link(n(2), n(1), e(2));
    assert_eq!(s.pending_links(), 1);
    s.set_link(n(3), n(2), e(1)); // only one end of 2-3
    assert!(!s.converged());
    assert!(!s.conv(e(1), &topo));
    assert!(s.retire(n(3), n(2), n(3)));
    assert!(s.converged());
    assert!(s.conv(e(1), &topo));
    assert_eq!(s.pending_links(), 0);
    // Retiring a link already committed changes no count.
    assert!(s.retire(n(1), n(2), n(1)));
    assert_eq!(s.pending_links(), 0);
    assert!(s.converged());
}

#[test]
fn converged_agrees_with_conv_in_examples() {
    let mut s = Summary::new();
    assert!(!s.converged(), "nothing watched");
    assert_eq!(s.pending_links(), 0);
    s.watch(e(2), &[]);
    assert!(s.converged(), "empty topology is vacuously converged");
    assert!(s.conv(e(2), &[]));

    // Duplicates and both orientations count once; a self-link is its own both ends.
    let topo = [
        (n(1), n(2)),
        (n(2), n(1)),
        (n(1), n(2)),
        (n(4), n(4)),
        (n(2), n(3)),
    ];
    s.set_link(n(1), n(2), e(2)); // before watch
    s.watch(e(2), &topo);
    assert_eq!(s.pending_links(), 3);
    let steps: &[(u64, u64, u64)] = &[
        (2, 1, 1),
        (2, 1, 2),
        (4, 4, 1),
        (2, 3, 9),
        (4, 4, 2),
        (3, 2, 1),
        (3, 2, 2),
    ];
    for &(r, p, ep) in steps {
        assert!(!s.converged());
        s.set_link(n(r), n(p), e(ep));
        assert_eq!(s.converged(), s.conv(e(2), &topo));
    }
    assert!(s.converged());
    assert_eq!(s.pending_links(), 0);
    // Watching a higher epoch starts over from the current view.
    s.watch(e(3), &topo);
    assert_eq!(s.pending_links(), 3);
    assert!(!s.conv(e(3), &topo));
    // Watching after the facts counts them at once.
    let mut t = Summary::new();
    t.merge(&s.to_delta());
    t.watch(e(2), &topo);
    assert!(t.converged());
    t.unwatch();
    assert!(!t.converged());
    assert_eq!(t.watched_epoch(), None);
}

#[test]
fn converged_by_merge() {
    let topo = [(n(1), n(2))];
    let mut a = Summary::new();
    let mut b = Summary::new();
    a.set_link(n(1), n(2), e(1));
    b.set_link(n(2), n(1), e(1));
    b.watch(e(1), &topo);
    assert!(!b.converged());
    assert!(b.merge(&a.to_delta()));
    assert!(b.converged());
}

/// Drives many changes to few entries so that the log compacts, then checks `delta_since`
/// against a brute-force record for every `acked`.
#[test]
fn delta_since_after_compaction_is_complete() {
    let mut s = Summary::new();
    let mut last: HashMap<Key, u64> = HashMap::new();
    let mut compactions = 0;
    let mut rng = crate::types::SeededRng::new(42);
    use crate::types::Rng;
    for step in 0..2000u64 {
        let before = s.log_len();
        let a = n(rng.below(4));
        let b = n(rng.below(4));
        let (changed, key) = match rng.below(10) {
            0 => {
                let v = Version {
                    incarnation: 0,
                    counter: step as u32,
                };
                let entry = PhaseEntry {
                    epoch: e(step % 3),
                    phase: Phase::Staged,
                    version: v,
                };
                (s.set_phase(a, entry), Key::Phase(a))
            }
            1 if step % 50 == 0 => {
                let p = pair(a, b);
                (s.retire(a, b, a), Key::Mark(p.0, p.1))
            }
            _ => (
                s.set_link(a, b, e(step / 4 + rng.below(3))),
                Key::Link(a, b),
            ),
        };
        if changed {
            last.insert(key, s.seq());
            if s.log_len() < before + 1 {
                compactions += 1;
            }
        }
        assert!(s.log_len() <= 2 * s.len() + LOG_SLACK + 1);
    }
    assert!(compactions > 10, "the log compacted ({compactions} times)");
    let mut out = GossipDelta::default();
    for acked in 0..=s.seq() {
        s.delta_since(acked, &mut out);
        assert_eq!(out.upto, s.seq());
        let mut got: Vec<Key> = out
            .links
            .iter()
            .map(|&(r, p, ep)| {
                assert_eq!(s.report(r, p), Some(ep), "current value");
                Key::Link(r, p)
            })
            .chain(out.phases.iter().map(|&(nd, pe)| {
                assert_eq!(s.phase(nd), Some(pe), "current value");
                Key::Phase(nd)
            }))
            .chain(out.marks.iter().map(|&(a, b, _)| Key::Mark(a, b)))
            .collect();
        let count = got.len();
        got.sort_unstable_by_key(|k| format!("{k:?}"));
        got.dedup();
        assert_eq!(got.len(), count, "each entry at most once");
        let mut want: Vec<Key> = last
            .iter()
            .filter(|&(_, &s)| s > acked)
            .map(|(&k, _)| k)
            .collect();
        want.sort_unstable_by_key(|k| format!("{k:?}"));
        assert_eq!(got, want, "acked = {acked}");
    }
    // An explicit compaction leaves one position per entry and the same answers.
    let full = s.to_delta();
    s.compact();
    assert_eq!(s.log_len(), s.len());
    assert_eq!(s.to_delta().links.len(), full.links.len());
    // A stale acknowledgement beyond seq() gets the whole state.
    s.delta_since(s.seq() + 5, &mut out);
    assert_eq!(out.len(), s.len());
}

#[test]
fn delta_since_acked_sends_only_news() {
    let mut a = Summary::new();
    let mut b = Summary::new();
    a.set_link(n(1), n(2), e(1));
    a.set_link(n(1), n(3), e(1));
    let mut d = GossipDelta::default();
    a.delta_since(0, &mut d);
    assert_eq!(d.links.len(), 2);
    assert!(b.merge(&d));
    let acked = d.upto;
    a.set_link(n(1), n(2), e(2));
    a.set_link(n(1), n(2), e(3));
    a.delta_since(acked, &mut d);
    assert_eq!(d.links, vec![(n(1), n(2), e(3))]);
    assert!(d.phases.is_empty() && d.marks.is_empty());
    assert!(b.merge(&d));
    assert!(!b.merge(&d), "idempotent");
    assert_eq!(a.canonical(), b.canonical());
    a.delta_since(a.seq(), &mut d);
    assert!(d.links.is_empty());
    // Merged changes are forwarded: b's own log carries them.
    b.delta_since(0, &mut d);
    assert_eq!(d.links.len(), 2);
}

#[test]
fn hasher_spreads_sequential_keys() {
    use core::hash::BuildHasher;
    let build = FastBuild::default();
    let mut buckets = [0u32; 64];
    for i in 0..6400u64 {
        buckets[(build.hash_one((NodeId(i), NodeId(i + 1))) % 64) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&c| (50..=150).contains(&c)),
        "{buckets:?}"
    );
}

#[test]
fn chunks_transfer_the_same_state_as_one_delta() {
    let mut a = Summary::new();
    for i in 0..50u64 {
        a.set_link(NodeId(i), NodeId(i + 1), Epoch(i % 3));
        a.set_link(NodeId(i), NodeId(i + 1), Epoch(i % 3 + 1));
    }
    let mut whole = Summary::new();
    whole.merge(&a.to_delta());
    let mut chunked = Summary::new();
    let (mut from, mut out, mut chunks) = (0, GossipDelta::default(), 0);
    while from < a.seq() {
        a.delta_chunk(from, 7, &mut out);
        assert!(out.links.len() <= 7 && out.upto > from);
        chunked.merge(&out);
        from = out.upto;
        chunks += 1;
    }
    assert!(chunks >= 50 / 7);
    assert_eq!(chunked.canonical(), whole.canonical());
}
