//! Cluster status summary: a state-based CRDT gossiped as deltas.
//!
//! Every node publishes three kinds of entries, and every replica holds the join of what it has
//! heard:
//!
//! * **link reports**: per `(reporter, peer)`, the highest epoch `reporter` has committed on its
//!   link to `peer` (a max-register; committed epochs never go back);
//! * **phases**: per node, a [`PhaseEntry`] ordered by its [`Version`](crate::Version) (phases can
//!   move back, so the highest version wins, and on equal versions the entry already held stays);
//! * **retired links**: a grow-only set of unordered pairs, stored lower [`NodeId`] first.
//!
//! A link's committed epoch is the minimum of its two ends' reports, unknown while either is
//! missing. `Conv(P, e)` holds when every live (not retired) link of the topology `P` has
//! committed at least `e`. Reports only grow and the retired set only grows, so `Conv` is stable,
//! and a replica that learns only through merges sees a sound lower bound of the truth: if its
//! view says `Conv(P, e)`, it holds.
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
//! [`Summary::conv`] is the reference check it must agree with.

use core::hash::{BuildHasherDefault, Hasher};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::msg::GossipDelta;
use crate::phase::PhaseEntry;
use crate::types::{Epoch, NodeId};

/// A small multiplicative hasher in the style of FxHash (rustc-hash 2): fast on the integer keys
/// used here; not resistant to adversarial keys, which node ids are not.
#[derive(Clone, Copy, Debug, Default)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(Self::K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply mixes upwards; rotate the well-mixed high bits down to where the table
        // takes its bucket index.
        self.hash.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

type FastBuild = BuildHasherDefault<FastHasher>;
type FastMap<K, V> = HashMap<K, V, FastBuild>;
type FastSet<K> = HashSet<K, FastBuild>;

/// Extra delta-log positions tolerated beyond twice the entry count before compacting.
const LOG_SLACK: usize = 32;

/// Identifies one entry of the summary in the delta log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// `(reporter, peer)` link report.
    Link(NodeId, NodeId),
    /// A node's phase.
    Phase(NodeId),
    /// A retired pair (lower id first).
    Retired(NodeId, NodeId),
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
    /// `(node, phase entry)`, sorted by node.
    pub phases: Vec<(NodeId, PhaseEntry)>,
    /// Retired pairs (lower id first), sorted.
    pub retired: Vec<(NodeId, NodeId)>,
}

/// One replica of the cluster status summary (see the [module documentation](self)).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Change sequence: the number of changes so far; the last change has this number.
    seq: u64,
    /// `(reporter, peer) -> (epoch, sequence of its last change)`.
    reports: FastMap<(NodeId, NodeId), (Epoch, u64)>,
    /// `node -> (entry, sequence of its last change)`.
    phases: FastMap<NodeId, (PhaseEntry, u64)>,
    /// Retired pair (lower id first) `->` sequence of its insertion.
    retired: FastMap<(NodeId, NodeId), u64>,
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
                if old >= epoch {
                    return false;
                }
                *o.get_mut() = (epoch, seq);
                Some(old)
            }
            Entry::Vacant(v) => {
                v.insert((epoch, seq));
                None
            }
        };
        self.record(seq, Key::Link(reporter, peer));
        if let Some(w) = &mut self.watch {
            let p = pair(reporter, peer);
            if w.links.contains(&p) && !self.retired.contains_key(&p) {
                // The other end's report; for a self-link it is this very report.
                let (other_old, other_new) = if reporter == peer {
                    (old, Some(epoch))
                } else {
                    let o = self.reports.get(&(peer, reporter)).map(|&(e, _)| e);
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

    /// Retire the link `{a, b}` (either order) for good. Returns true if it was not retired yet.
    pub fn retire(&mut self, a: NodeId, b: NodeId) -> bool {
        let p = pair(a, b);
        let seq = self.seq + 1;
        match self.retired.entry(p) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(v) => {
                v.insert(seq);
            }
        }
        self.record(seq, Key::Retired(p.0, p.1));
        if let Some(w) = &mut self.watch {
            if w.links.contains(&p) {
                let ab = self.reports.get(&(a, b)).map(|&(e, _)| e);
                let ba = self.reports.get(&(b, a)).map(|&(e, _)| e);
                if !reaches(ab, ba, w.epoch) {
                    // It was pending; retired links no longer count.
                    w.pending -= 1;
                }
            }
        }
        true
    }

    /// Join a delta received from a peer; returns true if anything changed (changes enter this
    /// summary's own delta log so they are forwarded).
    pub fn merge(&mut self, delta: &GossipDelta) -> bool {
        let mut changed = false;
        for &(reporter, peer, epoch) in &delta.links {
            changed |= self.set_link(reporter, peer, epoch);
        }
        for &(node, entry) in &delta.phases {
            changed |= self.set_phase(node, entry);
        }
        for &(a, b) in &delta.retired {
            changed |= self.retire(a, b);
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
        out.retired.clear();
        out.upto = self.seq;
        let acked = if acked > self.seq { 0 } else { acked };
        let start = self.log.partition_point(|&(s, _)| s <= acked);
        for &(s, key) in &self.log[start..] {
            if out.links.len() + out.phases.len() + out.retired.len() >= max_entries.max(1) {
                // Everything changed at positions before `s` is in; `s` starts the next chunk.
                out.upto = s - 1;
                return;
            }
            match key {
                Key::Link(r, p) => {
                    if let Some(&(e, last)) = self.reports.get(&(r, p)) {
                        if last == s {
                            out.links.push((r, p, e));
                        }
                    }
                }
                Key::Phase(n) => {
                    if let Some(&(entry, last)) = self.phases.get(&n) {
                        if last == s {
                            out.phases.push((n, entry));
                        }
                    }
                }
                Key::Retired(a, b) => {
                    // A retired pair never changes again: its only position is current.
                    out.retired.push((a, b));
                }
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
        self.reports.get(&(reporter, peer)).map(|&(e, _)| e)
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

    /// Whether link `{a, b}` (either order) is retired.
    pub fn is_retired(&self, a: NodeId, b: NodeId) -> bool {
        self.retired.contains_key(&pair(a, b))
    }

    /// Start incremental tracking of Conv(P, epoch) over the given topology links (unordered
    /// pairs; duplicates ignored). Replaces any earlier watch. O(links).
    pub fn watch(&mut self, epoch: Epoch, links: &[(NodeId, NodeId)]) {
        let mut set = FastSet::with_capacity_and_hasher(links.len(), FastBuild::default());
        let mut pending = 0;
        for &(a, b) in links {
            let p = pair(a, b);
            if set.insert(p)
                && !self.retired.contains_key(&p)
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

    /// Every known link report `(reporter, peer, epoch)`, in no particular order.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, NodeId, Epoch)> + '_ {
        self.reports.iter().map(|(&(r, p), &(e, _))| (r, p, e))
    }

    /// Every retired pair (lower id first), in no particular order.
    pub fn retired(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.retired.keys().copied()
    }

    /// Number of entries held (link reports + phases + retired pairs).
    pub fn len(&self) -> usize {
        self.reports.len() + self.phases.len() + self.retired.len()
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
        let mut phases: Vec<_> = self.phases().collect();
        phases.sort_unstable_by_key(|&(n, _)| n);
        let mut retired: Vec<_> = self.retired().collect();
        retired.sort_unstable();
        Canonical {
            links,
            phases,
            retired,
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
            Key::Retired(a, b) => self.retired.get(&(a, b)).copied(),
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

#[cfg(test)]
mod chunk_tests {
    use super::*;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::{Phase, Version};

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
    fn retire_is_unordered_and_grow_only() {
        let mut s = Summary::new();
        assert!(s.retire(n(3), n(2)));
        assert!(!s.retire(n(2), n(3)));
        assert!(s.is_retired(n(2), n(3)) && s.is_retired(n(3), n(2)));
        assert_eq!(s.retired().collect::<Vec<_>>(), vec![(n(2), n(3))]);
        assert_eq!(s.to_delta().retired, vec![(n(2), n(3))]);
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
        assert!(s.retire(n(3), n(2)));
        assert!(s.converged());
        assert!(s.conv(e(1), &topo));
        assert_eq!(s.pending_links(), 0);
        // Retiring a link already committed changes no count.
        assert!(s.retire(n(1), n(2)));
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
                    (s.retire(a, b), Key::Retired(p.0, p.1))
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
                .chain(out.retired.iter().map(|&(a, b)| Key::Retired(a, b)))
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
        assert_eq!(
            out.links.len() + out.phases.len() + out.retired.len(),
            s.len()
        );
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
        assert!(d.phases.is_empty() && d.retired.is_empty());
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
}
