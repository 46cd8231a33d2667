//! Laws of the status-summary CRDT (`entente_proto::summary`), checked on random operations:
//!
//! * merge is a join: commutative, associative and idempotent on the observable state;
//! * gossiping deltas with acknowledgements (even when deltas or acks are lost) reaches exactly
//!   the states that merging whole states reaches;
//! * the incremental `converged()` / `pending_links()` always agree with the reference `conv()`;
//! * a replica that learns only through merges sees a sound lower bound of the truth, and its
//!   `converged()` is stable and implies convergence in the truth.

use std::collections::HashSet;

use entente_proto::msg::GossipDelta;
use entente_proto::summary::{RetireMark, RetireVersion, Summary};
use entente_proto::{Epoch, NodeId, Phase, PhaseEntry, Version};
use proptest::collection::vec;
use proptest::prelude::*;

/// Node ids used: `0..NODES`.
const NODES: u64 = 6;
/// Replicas in the gossip world; replica `i` is node `i` (node `NODES - 1` has no replica, so
/// its reports are never known).
const REPLICAS: usize = 5;

/// The phase entry a node publishes at a version: a node never publishes two different entries
/// under one version (incarnations and counters only grow), which the "equal version keeps the
/// existing entry" rule relies on for the join to be commutative.
fn entry_for(node: u64, incarnation: u32, counter: u32) -> PhaseEntry {
    let k = node as usize * 7 + incarnation as usize * 5 + counter as usize * 3;
    PhaseEntry {
        epoch: Epoch((node + incarnation as u64 * 3 + counter as u64) % 4),
        phase: Phase::ALL[k % Phase::ALL.len()],
        version: Version {
            incarnation,
            counter,
        },
    }
}

/// An update made at one replica.
#[derive(Clone, Debug)]
enum Local {
    Link {
        reporter: u64,
        peer: u64,
        epoch: u64,
    },
    Phase {
        node: u64,
        incarnation: u32,
        counter: u32,
    },
    /// An operator's retire or restore of `{a, b}` at node `by`.
    Mark {
        a: u64,
        b: u64,
        by: u64,
        counter: u32,
    },
}

/// The mark node `by` publishes at a version: a node never publishes two different marks under
/// one version, so whether it retires is a function of the version.
fn mark_for(a: u64, b: u64, by: u64, counter: u32) -> RetireMark {
    RetireMark {
        version: RetireVersion {
            counter,
            by: NodeId(by),
        },
        retired: !(a.min(b) + a.max(b) * 3 + by * 5 + counter as u64).is_multiple_of(3),
    }
}

fn local() -> impl Strategy<Value = Local> {
    prop_oneof![
        5 => (0..NODES, 0..NODES, 0..5u64)
            .prop_map(|(reporter, peer, epoch)| Local::Link { reporter, peer, epoch }),
        2 => (0..NODES, 0..3u32, 0..4u32)
            .prop_map(|(node, incarnation, counter)| Local::Phase { node, incarnation, counter }),
        1 => (0..NODES, 0..NODES, 0..NODES, 0..4u32)
            .prop_map(|(a, b, by, counter)| Local::Mark { a, b, by, counter }),
    ]
}

fn apply(s: &mut Summary, op: &Local) -> bool {
    match *op {
        Local::Link {
            reporter,
            peer,
            epoch,
        } => s.set_link(NodeId(reporter), NodeId(peer), Epoch(epoch)),
        Local::Phase {
            node,
            incarnation,
            counter,
        } => s.set_phase(NodeId(node), entry_for(node, incarnation, counter)),
        Local::Mark { a, b, by, counter } => {
            s.set_mark(NodeId(a), NodeId(b), mark_for(a, b, by, counter))
        }
    }
}

fn build(ops: &[Local]) -> Summary {
    let mut s = Summary::new();
    for op in ops {
        apply(&mut s, op);
    }
    s
}

/// `a ⊔ b` through the public merge of a whole state.
fn join(a: &Summary, b: &Summary) -> Summary {
    let mut c = a.clone();
    c.merge(&b.to_delta());
    c
}

fn topology() -> impl Strategy<Value = Vec<(u64, u64)>> {
    vec((0..NODES, 0..NODES), 0..8)
}

fn pairs(topo: &[(u64, u64)]) -> Vec<(NodeId, NodeId)> {
    topo.iter().map(|&(a, b)| (NodeId(a), NodeId(b))).collect()
}

/// Reference count of watched links neither retired nor committed at `epoch`.
fn pending_reference(s: &Summary, epoch: Epoch, topo: &[(NodeId, NodeId)]) -> usize {
    let mut seen = HashSet::new();
    topo.iter()
        .filter(|&&(a, b)| seen.insert((a.min(b), a.max(b))))
        .filter(|&&(a, b)| !s.is_retired(a, b) && s.link_epoch(a, b).is_none_or(|e| e < epoch))
        .count()
}

/// Every entry of a delta appears once and carries the sender's current value.
fn check_delta(sender: &Summary, d: &GossipDelta) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.upto, sender.seq());
    let mut links = HashSet::new();
    for &(r, p, e) in &d.links {
        prop_assert!(links.insert((r, p)), "link report twice in one delta");
        prop_assert_eq!(sender.report(r, p), Some(e));
    }
    let mut nodes = HashSet::new();
    for &(n, e) in &d.phases {
        prop_assert!(nodes.insert(n), "phase twice in one delta");
        prop_assert_eq!(sender.phase(n), Some(e));
    }
    let mut marked = HashSet::new();
    for &(a, b, m) in &d.marks {
        prop_assert!(a <= b, "marked pair not lower id first");
        prop_assert!(marked.insert((a, b)), "marked pair twice in one delta");
        prop_assert_eq!(sender.mark_of(a, b), Some(m));
    }
    Ok(())
}

/// One step of the gossip world.
#[derive(Clone, Debug)]
enum Step {
    /// A local update at replica `at`; link reports and phases are `at`'s own, retirements are an
    /// operator's and may name any link.
    Local { at: usize, op: Local },
    /// `from` sends `to` its delta since `to`'s last acknowledgement; the delta or the
    /// acknowledgement may be lost.
    Gossip {
        from: usize,
        to: usize,
        lost: bool,
        ack_lost: bool,
    },
    /// Replica `at` starts watching `Conv(topo, epoch)`.
    Watch {
        at: usize,
        epoch: u64,
        topo: Vec<(u64, u64)>,
    },
    /// Replica `at` compacts its delta log.
    Compact { at: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let own = (0..REPLICAS, local()).prop_map(|(at, op)| {
        let op = match op {
            Local::Link { peer, epoch, .. } => Local::Link {
                reporter: at as u64,
                peer,
                epoch,
            },
            Local::Phase {
                incarnation,
                counter,
                ..
            } => Local::Phase {
                node: at as u64,
                incarnation,
                counter,
            },
            Local::Mark { a, b, counter, .. } => Local::Mark {
                a,
                b,
                by: at as u64,
                counter,
            },
        };
        Step::Local { at, op }
    });
    prop_oneof![
        6 => own,
        6 => (0..REPLICAS, 0..REPLICAS, prop::bool::weighted(0.2), prop::bool::weighted(0.2))
            .prop_map(|(from, to, lost, ack_lost)| Step::Gossip { from, to, lost, ack_lost }),
        1 => (0..REPLICAS, 0..5u64, topology())
            .prop_map(|(at, epoch, topo)| Step::Watch { at, epoch, topo }),
        1 => (0..REPLICAS).prop_map(|at| Step::Compact { at }),
    ]
}

/// A replica's watch, as the checks see it.
#[derive(Clone, Debug)]
struct Watched {
    epoch: Epoch,
    topo: Vec<(NodeId, NodeId)>,
    /// The marks of the topology's links when `converged()` was last seen true, if it was
    /// true at the last check.
    seen: Option<Vec<Option<RetireMark>>>,
}

/// The replicas of the gossip world and what the checks need to know about them.
struct World {
    /// Replicas gossiping deltas with acknowledgements.
    delta: Vec<Summary>,
    /// `acked[from][to]`: the last of `from`'s sequence that `to` acknowledged.
    acked: Vec<Vec<u64>>,
    /// The same replicas merging whole states at the same moments.
    full: Vec<Summary>,
    /// The join of every local update anywhere.
    truth: Summary,
    /// Per replica: what it watches, if anything.
    watches: Vec<Option<Watched>>,
}

impl World {
    fn new() -> World {
        World {
            delta: vec![Summary::new(); REPLICAS],
            acked: vec![vec![0; REPLICAS]; REPLICAS],
            full: vec![Summary::new(); REPLICAS],
            truth: Summary::new(),
            watches: vec![None; REPLICAS],
        }
    }

    /// Delta gossip from `from` to `to` in the delta world; whether `to` changed.
    fn gossip(
        &mut self,
        from: usize,
        to: usize,
        lost: bool,
        ack_lost: bool,
    ) -> Result<bool, TestCaseError> {
        let mut d = GossipDelta::default();
        self.delta[from].delta_since(self.acked[from][to], &mut d);
        check_delta(&self.delta[from], &d)?;
        if lost {
            return Ok(false);
        }
        let before = self.delta[to].canonical();
        let changed = self.delta[to].merge(&d);
        prop_assert_eq!(
            changed,
            self.delta[to].canonical() != before,
            "merge's return value"
        );
        prop_assert!(
            !self.delta[to].merge(&d),
            "merging the same delta twice changes nothing"
        );
        if !ack_lost {
            self.acked[from][to] = d.upto;
        }
        Ok(changed)
    }

    /// Gossip from `from` to `to` in both worlds; whether the delta world's `to` changed.
    fn exchange(
        &mut self,
        from: usize,
        to: usize,
        lost: bool,
        ack_lost: bool,
    ) -> Result<bool, TestCaseError> {
        if from == to {
            return Ok(false);
        }
        let changed = self.gossip(from, to, lost, ack_lost)?;
        if !lost {
            let whole = self.full[from].to_delta();
            self.full[to].merge(&whole);
        }
        Ok(changed)
    }

    fn run(&mut self, s: &Step) -> Result<(), TestCaseError> {
        match s {
            Step::Local { at, op } => {
                let a = apply(&mut self.delta[*at], op);
                let b = apply(&mut self.full[*at], op);
                prop_assert_eq!(a, b);
                apply(&mut self.truth, op);
            }
            &Step::Gossip {
                from,
                to,
                lost,
                ack_lost,
            } => {
                self.exchange(from, to, lost, ack_lost)?;
            }
            Step::Watch { at, epoch, topo } => {
                let topo = pairs(topo);
                self.delta[*at].watch(Epoch(*epoch), &topo);
                self.watches[*at] = Some(Watched {
                    epoch: Epoch(*epoch),
                    topo,
                    seen: None,
                });
            }
            Step::Compact { at } => self.delta[*at].compact(),
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        for i in 0..REPLICAS {
            let view = &self.delta[i];
            prop_assert_eq!(view.canonical(), self.full[i].canonical(), "replica {}", i);
            prop_assert!(
                view.log_len() <= 2 * view.len() + 33,
                "delta log not compacted"
            );
            // Incremental convergence agrees with the reference, is stable, and is sound.
            match &mut self.watches[i] {
                None => {
                    prop_assert!(!view.converged());
                    prop_assert_eq!(view.pending_links(), 0);
                }
                Some(Watched { epoch, topo, seen }) => {
                    prop_assert_eq!(view.converged(), view.conv(*epoch, topo));
                    prop_assert_eq!(view.pending_links(), pending_reference(view, *epoch, topo));
                    // Between operator actions (the marks of the topology's links as the view
                    // holds them), Conv is stable and sound.
                    let marks: Vec<_> = topo.iter().map(|&(a, b)| view.mark_of(a, b)).collect();
                    let acted = seen.as_ref().is_some_and(|m| *m != marks);
                    prop_assert!(
                        seen.is_none() || acted || view.converged(),
                        "Conv is stable"
                    );
                    let current = topo
                        .iter()
                        .all(|&(a, b)| view.mark_of(a, b) == self.truth.mark_of(a, b));
                    if view.converged() {
                        prop_assert!(
                            !current || self.truth.conv(*epoch, topo),
                            "view's Conv is sound"
                        );
                        *seen = Some(marks);
                    } else {
                        *seen = None;
                    }
                }
            }
            // Sound lower bound of the truth.
            for (r, p, e) in view.links() {
                prop_assert!(self.truth.report(r, p).is_some_and(|t| e <= t));
            }
            for a in 0..NODES {
                for b in 0..NODES {
                    let (a, b) = (NodeId(a), NodeId(b));
                    prop_assert!(view.link_epoch(a, b) <= self.truth.link_epoch(a, b));
                    let v = view.mark_of(a, b).map(|m| m.version);
                    prop_assert!(v <= self.truth.mark_of(a, b).map(|m| m.version));
                }
            }
            for (n, e) in view.phases() {
                prop_assert!(self.truth.phase(n).is_some_and(|t| e.version <= t.version));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Merge is commutative, associative and idempotent, and the join of two replicas is what one
    /// replica holds after both update sequences.
    #[test]
    fn merge_is_a_join(
        a in vec(local(), 0..30),
        b in vec(local(), 0..30),
        c in vec(local(), 0..30),
    ) {
        let (sa, sb, sc) = (build(&a), build(&b), build(&c));
        let ab = join(&sa, &sb);
        prop_assert_eq!(ab.canonical(), join(&sb, &sa).canonical(), "commutative");
        prop_assert_eq!(
            join(&ab, &sc).canonical(),
            join(&sa, &join(&sb, &sc)).canonical(),
            "associative"
        );
        prop_assert_eq!(join(&sa, &sa).canonical(), sa.canonical(), "idempotent");
        prop_assert_eq!(join(&ab, &sb).canonical(), ab.canonical(), "absorbs what it holds");
        let both: Vec<Local> = a.iter().chain(&b).cloned().collect();
        prop_assert_eq!(build(&both).canonical(), ab.canonical(), "join = all updates");
        let mut x = sa.clone();
        let changed = x.merge(&sb.to_delta());
        prop_assert_eq!(changed, x.canonical() != sa.canonical());
        prop_assert!(!x.merge(&sb.to_delta()));
    }

    /// Gossiping deltas with acknowledgements reaches the states that merging whole states
    /// reaches, step by step; `converged()` agrees with `conv()`; views are sound lower bounds.
    /// After the random steps, gossip without loss until quiet: all replicas hold the truth.
    #[test]
    fn delta_gossip_matches_full_state_merge(steps in vec(step(), 0..120)) {
        let mut w = World::new();
        for s in &steps {
            w.run(s)?;
        }
        loop {
            let mut changed = false;
            for from in 0..REPLICAS {
                for to in 0..REPLICAS {
                    changed |= w.exchange(from, to, false, false)?;
                }
            }
            if !changed {
                break;
            }
        }
        w.check()?;
        let truth = w.truth.canonical();
        for i in 0..REPLICAS {
            prop_assert_eq!(&w.delta[i].canonical(), &truth, "replica {} after quiet gossip", i);
        }
        // Everything acknowledged: nothing left to send.
        for from in 0..REPLICAS {
            for to in 0..REPLICAS {
                if from != to {
                    let mut d = GossipDelta::default();
                    w.delta[from].delta_since(w.acked[from][to], &mut d);
                    prop_assert!(d.is_empty());
                }
            }
        }
    }

    /// `converged()` equals `conv()` on a single replica under arbitrary updates, merges of other
    /// replicas' states, retirements and re-watches.
    #[test]
    fn converged_equals_conv(
        epoch in 0..5u64,
        topo in topology(),
        ops in vec((local(), prop::option::weighted(0.2, vec(local(), 0..10))), 0..60),
    ) {
        let topo = pairs(&topo);
        let epoch = Epoch(epoch);
        let mut s = Summary::new();
        s.watch(epoch, &topo);
        for (op, other) in &ops {
            apply(&mut s, op);
            if let Some(other) = other {
                s.merge(&build(other).to_delta());
            }
            prop_assert_eq!(s.converged(), s.conv(epoch, &topo));
            prop_assert_eq!(s.pending_links(), pending_reference(&s, epoch, &topo));
        }
        // A fresh watch over the final state agrees with the incremental one.
        let mut t = s.clone();
        t.watch(epoch, &topo);
        prop_assert_eq!(t.pending_links(), s.pending_links());
    }
}
