//! Cluster status summary: a state-based CRDT gossiped as deltas.
//!
//! Every node publishes five kinds of entries, and every replica holds the join of what it has
//! heard:
//!
//! * **link reports**: per `(reporter, peer)`, the highest epoch `reporter` has committed on its
//!   link to `peer` (a max-register; committed epochs never go back). A node *declares* every
//!   configured link before it has a report for it (the register's bottom), so every replica
//!   learns the peer graph `P` ([`graph`](Summary::graph)), links that never came up included;
//! * **phases**: per node, a [`PhaseEntry`] ordered by its [`Version`](crate::Version) (phases can
//!   move back, so the highest version wins, and on equal versions the entry already held stays);
//! * **retire marks**: per unordered pair (stored lower [`NodeId`] first), the last operator
//!   action on the link, retire or restore, a [`RetireMark`] ordered by its [`RetireVersion`]
//!   (the higher version wins, so the last action wins on every replica);
//! * **heartbeats**: per node, a counter the node raises periodically (a max-register), so a
//!   replica can tell how long ago it last heard of a node even when nothing else changes.
//!
//! A link's committed epoch is the minimum of its two ends' reports, unknown while either is
//! missing. `Conv(P, e)` holds when every live (not retired) link of `P` has committed at least
//! `e`. Reports only grow, so between operator actions (retire, restore) `Conv` is stable, and a
//! replica that learns only through merges sees a sound lower bound of the truth: if its view
//! says `Conv(P, e)` and no operator acted since, it holds.
//!
//! # Deltas
//!
//! Every change (local or merged) gets the next value of the replica's change sequence
//! [`Summary::seq`] and is appended to a delta log. [`Summary::delta_since`] returns the entries
//! changed after a peer's acknowledged sequence, in time proportional to the changes since then,
//! never the whole state. The log is compacted (superseded positions dropped) whenever it grows
//! past twice the number of entries, so it costs O(entries) memory.
//!
//! # Convergence tracking
//!
//! [`Summary::watch`] registers a topology and an epoch; from then on every change adjusts a
//! count of pending links, so [`Summary::converged`] and [`Summary::pending_links`] are O(1).
//! [`Summary::conv`] is the reference check it must agree with. [`Summary::census`] and
//! [`Summary::conv_graph`] evaluate the gossiped graph instead of a given topology.

mod graph;
mod hash;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;

use crate::msg::GossipDelta;
pub use crate::msg::{RetireMark, RetireVersion};
use crate::phase::PhaseEntry;
use crate::types::{Epoch, NodeId};
pub use graph::Census;
use hash::{FastBuild, FastMap, FastSet};

/// Extra delta-log positions tolerated beyond twice the entry count before compacting.
const LOG_SLACK: usize = 32;

/// Identifies one entry of the summary in the delta log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// `(reporter, peer)` link report or declaration.
    Link(NodeId, NodeId),
    /// A node's phase.
    Phase(NodeId),
    /// A link's retire mark (lower id first).
    Mark(NodeId, NodeId),
    /// A node's heartbeat.
    Beat(NodeId),
}

/// Incremental state of `Conv(P, epoch)` for the watched topology.
#[derive(Clone, Debug, Default)]
struct Watch {
    epoch: Epoch,
    /// Watched links, lower id first, deduplicated.
    links: FastSet<(NodeId, NodeId)>,
    /// Watched links that are neither retired nor known committed at `epoch`.
    pending: usize,
}

/// The unordered pair `{a, b}`, lower id first.
#[inline]
fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// Whether a link whose ends report `x` and `y` has committed at least `e`.
#[inline]
fn reaches(x: Option<Epoch>, y: Option<Epoch>, e: Epoch) -> bool {
    matches!((x, y), (Some(x), Some(y)) if x.min(y) >= e)
}

/// The observable state of a summary, sorted: equal for replicas that hold the same entries,
/// whatever order they learned them in (sequence numbers and logs are replica-local and left out).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Canonical {
    /// `(reporter, peer, epoch)`, sorted by `(reporter, peer)`.
    pub links: Vec<(NodeId, NodeId, Epoch)>,
    /// Declared links not reported yet, sorted.
    pub declared: Vec<(NodeId, NodeId)>,
    /// `(node, phase entry)`, sorted by node.
    pub phases: Vec<(NodeId, PhaseEntry)>,
    /// `(a, b, mark)` (lower id first), sorted by pair.
    pub marks: Vec<(NodeId, NodeId, RetireMark)>,
    /// `(node, beat)`, sorted by node.
    pub beats: Vec<(NodeId, u64)>,
}

/// One replica of the cluster status summary (see the [module documentation](self)).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Change sequence: the number of changes so far; the last change has this number.
    seq: u64,
    /// `(reporter, peer) -> (epoch, sequence of its last change)`; `None`: declared only.
    reports: FastMap<(NodeId, NodeId), (Option<Epoch>, u64)>,
    /// `node -> (entry, sequence of its last change)`.
    phases: FastMap<NodeId, (PhaseEntry, u64)>,
    /// Pair (lower id first) `->` (last operator action, sequence of its last change).
    marks: FastMap<(NodeId, NodeId), (RetireMark, u64)>,
    /// `node -> (beat, sequence of its last change)`.
    beats: FastMap<NodeId, (u64, u64)>,
    /// `(sequence, key)` of changes, strictly increasing in sequence; a position is current when
    /// its sequence equals its entry's last change, superseded otherwise.
    log: Vec<(u64, Key)>,
    /// The topology and epoch whose convergence is tracked, if any.
    watch: Option<Watch>,
}

impl Summary {
    /// An empty summary: no entries, sequence 0, nothing watched.
    pub fn new() -> Summary {
        Summary::default()
    }

    /// Local or merged update of reporter's view of its link to peer (max). Returns true if it
    /// changed.
    pub fn set_link(&mut self, reporter: NodeId, peer: NodeId, epoch: Epoch) -> bool {
        let seq = self.seq + 1;
        let old = match self.reports.entry((reporter, peer)) {
            Entry::Occupied(mut o) => {
                let (old, _) = *o.get();
                if old >= Some(epoch) {
                    return false;
                }
                *o.get_mut() = (Some(epoch), seq);
                old
            }
            Entry::Vacant(v) => {
                v.insert((Some(epoch), seq));
                None
            }
        };
        self.record(seq, Key::Link(reporter, peer));
        let p = pair(reporter, peer);
        let retired = self.is_retired(reporter, peer);
        if let Some(w) = &mut self.watch {
            if w.links.contains(&p) && !retired {
                // The other end's report; for a self-link it is this very report.
                let (other_old, other_new) = if reporter == peer {
                    (old, Some(epoch))
                } else {
                    let o = self.reports.get(&(peer, reporter)).and_then(|&(e, _)| e);
                    (o, o)
                };
                // Reports only grow, so the link can only become committed, never stop being.
                if !reaches(old, other_old, w.epoch) && reaches(Some(epoch), other_new, w.epoch) {
                    w.pending -= 1;
                }
            }
        }
        true
    }

    /// Declares `node`'s configured link to `peer` (known to exist, not reported yet): the
    /// bottom of the link's report register. Returns true if the link was unknown.
    pub fn declare(&mut self, node: NodeId, peer: NodeId) -> bool {
        let seq = self.seq + 1;
        match self.reports.entry((node, peer)) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(v) => {
                v.insert((None, seq));
            }
        }
        self.record(seq, Key::Link(node, peer));
        true
    }

    /// Local or merged update of node's phase: the entry with the higher version wins; on equal
    /// versions the entry already held stays. Returns true if it changed.
    pub fn set_phase(&mut self, node: NodeId, entry: PhaseEntry) -> bool {
        let seq = self.seq + 1;
        match self.phases.entry(node) {
            Entry::Occupied(mut o) => {
                if entry.version <= o.get().0.version {
                    return false;
                }
                *o.get_mut() = (entry, seq);
            }
            Entry::Vacant(v) => {
                v.insert((entry, seq));
            }
        }
        self.record(seq, Key::Phase(node));
        true
    }

    /// Local or merged update of the retire mark of `{a, b}` (either order): the mark with the
    /// higher version wins; on equal versions the mark already held stays. Returns true if it
    /// changed.
    pub fn set_mark(&mut self, a: NodeId, b: NodeId, mark: RetireMark) -> bool {
        let p = pair(a, b);
        let was = self.is_retired(a, b);
        let seq = self.seq + 1;
        match self.marks.entry(p) {
            Entry::Occupied(mut o) => {
                if mark.version <= o.get().0.version {
                    return false;
                }
                *o.get_mut() = (mark, seq);
            }
            Entry::Vacant(v) => {
                v.insert((mark, seq));
            }
        }
        self.record(seq, Key::Mark(p.0, p.1));
        if was != mark.retired {
            if let Some(e) = self.watched_epoch() {
                let reached = reaches(self.report(p.0, p.1), self.report(p.1, p.0), e);
                let w = self.watch.as_mut().expect("watched");
                if w.links.contains(&p) && !reached {
                    // A pending link leaves the count when retired and enters it when restored.
                    if mark.retired {
                        w.pending -= 1;
                    } else {
                        w.pending += 1;
                    }
                }
            }
        }
        true
    }

    /// Operator action at `by`: retire the link `{a, b}` (either order), with a version above
    /// every action on it this replica knows. Returns false if it is retired already.
    pub fn retire(&mut self, a: NodeId, b: NodeId, by: NodeId) -> bool {
        self.act(a, b, by, true)
    }

    /// Operator action at `by`: restore the retired link `{a, b}`, so it is live again. Returns
    /// false if it is not retired.
    pub fn restore(&mut self, a: NodeId, b: NodeId, by: NodeId) -> bool {
        self.act(a, b, by, false)
    }

    fn act(&mut self, a: NodeId, b: NodeId, by: NodeId, retired: bool) -> bool {
        if self.is_retired(a, b) == retired {
            return false;
        }
        let counter = self
            .mark_of(a, b)
            .map_or(0, |m| m.version.counter)
            .saturating_add(1);
        let version = RetireVersion { counter, by };
        self.set_mark(a, b, RetireMark { version, retired })
    }

    /// Local or merged update of node's heartbeat (max). Returns true if it changed.
    pub fn set_beat(&mut self, node: NodeId, beat: u64) -> bool {
        let seq = self.seq + 1;
        match self.beats.entry(node) {
            Entry::Occupied(mut o) => {
                if beat <= o.get().0 {
                    return false;
                }
                *o.get_mut() = (beat, seq);
            }
            Entry::Vacant(v) => {
                v.insert((beat, seq));
            }
        }
        self.record(seq, Key::Beat(node));
        true
    }

    /// Join a delta received from a peer; returns true if anything changed (changes enter this
    /// summary's own delta log so they are forwarded).
    pub fn merge(&mut self, delta: &GossipDelta) -> bool {
        self.merge_with(delta, |_| {})
    }

    /// Like [`merge`](Self::merge), calling `heard(node)` for every entry that changed, with the
    /// node it is a report of (a link's reporter, the node whose operator acted on a link).
    pub fn merge_with(&mut self, delta: &GossipDelta, mut heard: impl FnMut(NodeId)) -> bool {
        let mut changed = false;
        let mut note = |c: bool, node: NodeId| {
            if c {
                heard(node);
            }
            changed |= c;
        };
        for &(reporter, peer, epoch) in &delta.links {
            note(self.set_link(reporter, peer, epoch), reporter);
        }
        for &(node, peer) in &delta.declared {
            note(self.declare(node, peer), node);
        }
        for &(node, entry) in &delta.phases {
            note(self.set_phase(node, entry), node);
        }
        for &(a, b, mark) in &delta.marks {
            note(self.set_mark(a, b, mark), mark.version.by);
        }
        for &(node, beat) in &delta.beats {
            note(self.set_beat(node, beat), node);
        }
        changed
    }

    /// This summary's change sequence (increments on every change).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Fill `out` (cleared first) with every entry changed after sequence `acked` (each entry at
    /// most once, its current value), and `out.upto = seq()`. Costs O(changes since `acked`),
    /// bounded by O(entries) thanks to compaction, not O(all entries) per call.
    ///
    /// An `acked` above [`seq`](Self::seq) cannot come from this replica's history (a stale
    /// acknowledgement from before a restart): then the whole state is sent, which is always safe.
    pub fn delta_since(&self, acked: u64, out: &mut GossipDelta) {
        self.delta_chunk(acked, usize::MAX, out);
    }

    /// Like [`delta_since`](Self::delta_since), but with at most `max_entries` entries: the
    /// changes up to `out.upto` (below [`seq`](Self::seq) when the delta was cut short). Sending
    /// chunks from `acked`, then from each chunk's `upto`, until `upto == seq()` transfers the
    /// same state as one delta, in messages that fit the wire's limits.
    pub fn delta_chunk(&self, acked: u64, max_entries: usize, out: &mut GossipDelta) {
        out.links.clear();
        out.phases.clear();
        out.marks.clear();
        out.declared.clear();
        out.beats.clear();
        out.upto = self.seq;
        let acked = if acked > self.seq { 0 } else { acked };
        let start = self.log.partition_point(|&(s, _)| s <= acked);
        for &(s, key) in &self.log[start..] {
            if out.len() >= max_entries.max(1) {
                // Everything changed at positions before `s` is in; `s` starts the next chunk.
                out.upto = s - 1;
                return;
            }
            if self.last_change(key) != Some(s) {
                continue;
            }
            match key {
                Key::Link(r, p) => match self.reports[&(r, p)].0 {
                    Some(e) => out.links.push((r, p, e)),
                    None => out.declared.push((r, p)),
                },
                Key::Phase(n) => out.phases.push((n, self.phases[&n].0)),
                Key::Mark(a, b) => out.marks.push((a, b, self.marks[&(a, b)].0)),
                Key::Beat(n) => out.beats.push((n, self.beats[&n].0)),
            }
        }
    }

    /// The whole state as one delta (what [`delta_since`](Self::delta_since)`(0, ..)` gives).
    pub fn to_delta(&self) -> GossipDelta {
        let mut out = GossipDelta::default();
        self.delta_since(0, &mut out);
        out
    }

    /// The epoch `reporter` reports committed on its link to `peer`, if known.
    pub fn report(&self, reporter: NodeId, peer: NodeId) -> Option<Epoch> {
        self.reports.get(&(reporter, peer)).and_then(|&(e, _)| e)
    }

    /// The committed epoch of link `{a, b}`: min of both ends' reports (`None` while either end's
    /// report is unknown).
    pub fn link_epoch(&self, a: NodeId, b: NodeId) -> Option<Epoch> {
        Some(self.report(a, b)?.min(self.report(b, a)?))
    }

    /// The phase entry of `node`, if known.
    pub fn phase(&self, node: NodeId) -> Option<PhaseEntry> {
        self.phases.get(&node).map(|&(e, _)| e)
    }

    /// The heartbeat of `node`, if known.
    pub fn beat(&self, node: NodeId) -> Option<u64> {
        self.beats.get(&node).map(|&(b, _)| b)
    }

    /// The last operator action on link `{a, b}` (either order), if any.
    pub fn mark_of(&self, a: NodeId, b: NodeId) -> Option<RetireMark> {
        self.marks.get(&pair(a, b)).map(|&(m, _)| m)
    }

    /// Whether link `{a, b}` (either order) is retired: its last operator action retired it.
    pub fn is_retired(&self, a: NodeId, b: NodeId) -> bool {
        self.mark_of(a, b).is_some_and(|m| m.retired)
    }

    /// Start incremental tracking of Conv(P, epoch) over the given topology links (unordered
    /// pairs; duplicates ignored). Replaces any earlier watch. O(links).
    pub fn watch(&mut self, epoch: Epoch, links: &[(NodeId, NodeId)]) {
        let mut set = FastSet::with_capacity_and_hasher(links.len(), FastBuild::default());
        let mut pending = 0;
        for &(a, b) in links {
            let p = pair(a, b);
            if set.insert(p)
                && !self.is_retired(a, b)
                && !reaches(self.report(a, b), self.report(b, a), epoch)
            {
                pending += 1;
            }
        }
        self.watch = Some(Watch {
            epoch,
            links: set,
            pending,
        });
    }

    /// Stop tracking convergence ([`converged`](Self::converged) is false again).
    pub fn unwatch(&mut self) {
        self.watch = None;
    }

    /// The epoch being watched, if any.
    pub fn watched_epoch(&self) -> Option<Epoch> {
        self.watch.as_ref().map(|w| w.epoch)
    }

    /// Conv(P, watched epoch) from this view, O(1): every watched, non-retired link has min report
    /// ≥ epoch. False when nothing is watched.
    pub fn converged(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.pending == 0)
    }

    /// Watched links not yet known committed (for progress display), O(1). Retired links are not
    /// counted; 0 when nothing is watched.
    pub fn pending_links(&self) -> usize {
        self.watch.as_ref().map_or(0, |w| w.pending)
    }

    /// Reference (non-incremental) check: Conv(P, epoch) over `links`. O(links).
    pub fn conv(&self, epoch: Epoch, links: &[(NodeId, NodeId)]) -> bool {
        links.iter().all(|&(a, b)| {
            self.is_retired(a, b) || reaches(self.report(a, b), self.report(b, a), epoch)
        })
    }

    /// Every known phase entry, in no particular order.
    pub fn phases(&self) -> impl Iterator<Item = (NodeId, PhaseEntry)> + '_ {
        self.phases.iter().map(|(&n, &(e, _))| (n, e))
    }

    /// Every known link report `(reporter, peer, epoch)`, in no particular order (declared links
    /// without a report are left out).
    pub fn links(&self) -> impl Iterator<Item = (NodeId, NodeId, Epoch)> + '_ {
        self.reports
            .iter()
            .filter_map(|(&(r, p), &(e, _))| Some((r, p, e?)))
    }

    /// Every declared link `(node, peer)` without a report yet, in no particular order.
    pub fn declared(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.reports
            .iter()
            .filter(|(_, &(e, _))| e.is_none())
            .map(|(&k, _)| k)
    }

    /// Every retired pair (lower id first), in no particular order.
    pub fn retired(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.marks
            .iter()
            .filter(|(_, &(m, _))| m.retired)
            .map(|(&p, _)| p)
    }

    /// Every retire mark `(a, b, mark)` (lower id first), in no particular order.
    pub fn marks(&self) -> impl Iterator<Item = (NodeId, NodeId, RetireMark)> + '_ {
        self.marks.iter().map(|(&(a, b), &(m, _))| (a, b, m))
    }

    /// Every known heartbeat `(node, beat)`, in no particular order.
    pub fn beats(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.beats.iter().map(|(&n, &(b, _))| (n, b))
    }

    /// Number of entries held (link reports and declarations, phases, marks, heartbeats).
    pub fn len(&self) -> usize {
        self.reports.len() + self.phases.len() + self.marks.len() + self.beats.len()
    }

    /// Whether the summary holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Current length of the delta log (diagnostics); at most `2 * len() + 32` after any change.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// The observable state, sorted, for comparing replicas.
    pub fn canonical(&self) -> Canonical {
        let mut links: Vec<_> = self.links().collect();
        links.sort_unstable_by_key(|&(r, p, _)| (r, p));
        let mut declared: Vec<_> = self.declared().collect();
        declared.sort_unstable();
        let mut phases: Vec<_> = self.phases().collect();
        phases.sort_unstable_by_key(|&(n, _)| n);
        let mut marks: Vec<_> = self.marks().collect();
        marks.sort_unstable_by_key(|&(a, b, _)| (a, b));
        let mut beats: Vec<_> = self.beats().collect();
        beats.sort_unstable();
        Canonical {
            links,
            declared,
            phases,
            marks,
            beats,
        }
    }

    /// Drop superseded positions from the delta log (done automatically when it grows past twice
    /// the entry count). [`delta_since`](Self::delta_since) answers the same for every `acked`.
    /// O(log length).
    pub fn compact(&mut self) {
        let mut log = core::mem::take(&mut self.log);
        log.retain(|&(s, key)| self.last_change(key) == Some(s));
        self.log = log;
    }

    /// Sequence of the last change of `key`'s entry.
    fn last_change(&self, key: Key) -> Option<u64> {
        match key {
            Key::Link(r, p) => self.reports.get(&(r, p)).map(|&(_, s)| s),
            Key::Phase(n) => self.phases.get(&n).map(|&(_, s)| s),
            Key::Mark(a, b) => self.marks.get(&(a, b)).map(|&(_, s)| s),
            Key::Beat(n) => self.beats.get(&n).map(|&(_, s)| s),
        }
    }

    /// Account for a change with sequence `seq` (`self.seq + 1`) to `key`'s entry, whose last
    /// change is already set to `seq`.
    fn record(&mut self, seq: u64, key: Key) {
        debug_assert_eq!(seq, self.seq + 1);
        self.seq = seq;
        self.log.push((seq, key));
        if self.log.len() > 2 * self.len() + LOG_SLACK {
            self.compact();
        }
    }
}
