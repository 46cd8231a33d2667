//! The offline history checker: replays the histories of every agent of a cluster and reports
//! what contradicts the safety invariants (DESIGN.md §3), as far as histories can show it.
//!
//! It reads the typed events ([`HistoryKind`]): `link_committed` and `link_agreed` (peer,
//! epoch), `staged`, `activated`, `running_at_start` (epoch) and `probe_mismatch`.

use crate::{HistoryEntry, HistoryKind};
use std::collections::BTreeMap;

enum Fact {
    Committed {
        peer: u64,
        epoch: u64,
    },
    Staged(u64),
    Activated(u64),
    /// Found running at start (staged and activated by an earlier life of the agent).
    Running(u64),
    Safety(String),
}

fn fact(e: &HistoryEntry) -> Option<Fact> {
    let ev = &e.event;
    match ev.kind {
        HistoryKind::LinkCommitted | HistoryKind::LinkAgreed => Some(Fact::Committed {
            peer: ev.peer?,
            epoch: ev.epoch?,
        }),
        HistoryKind::Staged => Some(Fact::Staged(ev.epoch?)),
        HistoryKind::Activated => Some(Fact::Activated(ev.epoch?)),
        HistoryKind::RunningAtStart => Some(Fact::Running(ev.epoch?)),
        HistoryKind::ProbeMismatch => Some(Fact::Safety(ev.text.clone())),
        _ => None,
    }
}

/// Checks the histories of a cluster's agents (`(node, entries oldest first)`); returns one line
/// per violation, empty when the histories are consistent:
/// - monotonicity: a link's committed epoch never goes down at either end;
/// - agreement: both ends of a link end at the same committed epoch (unless `partial`, when
///   some agents' histories are missing);
/// - compatibility and integrity: a node commits a link to epoch `e > 0` only after it activated
///   firmware of campaign `e` or later, and activates a campaign only after staging it;
/// - probes: no probe was read under another epoch than its sender's.
pub fn check_histories(histories: &[(u64, Vec<HistoryEntry>)], partial: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut last: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for (node, entries) in histories {
        let mut staged = 0u64;
        let mut activated = 0u64;
        for e in entries {
            match fact(e) {
                Some(Fact::Committed { peer, epoch }) => {
                    let prev = last.entry((*node, peer)).or_insert(0);
                    if epoch < *prev {
                        out.push(format!(
                            "node {node}: link to {peer} went back from epoch {prev} to {epoch}"
                        ));
                    }
                    *prev = (*prev).max(epoch);
                    if epoch > activated {
                        out.push(format!(
                            "node {node}: link to {peer} committed epoch {epoch} while running firmware of campaign {activated}"
                        ));
                    }
                }
                Some(Fact::Staged(e)) => staged = staged.max(e),
                Some(Fact::Activated(e)) => {
                    if e > staged {
                        out.push(format!(
                            "node {node}: activated campaign {e} without staging it"
                        ));
                    }
                    activated = activated.max(e);
                }
                Some(Fact::Running(e)) => {
                    staged = staged.max(e);
                    activated = activated.max(e);
                }
                Some(Fact::Safety(what)) => out.push(format!("node {node}: {what}")),
                None => {}
            }
        }
    }
    if !partial {
        for (&(a, b), &e) in &last {
            let other = last.get(&(b, a)).copied().unwrap_or(0);
            if a < b && other != e {
                out.push(format!(
                    "link {a}-{b}: {a} committed epoch {e}, {b} committed epoch {other}"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::HistoryEvent;
    use HistoryKind::*;

    /// Entries from (kind, epoch, peer).
    fn h(events: &[(HistoryKind, u64, Option<u64>)]) -> Vec<HistoryEntry> {
        events
            .iter()
            .enumerate()
            .map(|(i, &(kind, epoch, peer))| {
                let mut e = HistoryEvent::new(kind, format!("{kind:?}")).epoch(epoch);
                e.peer = peer;
                HistoryEntry::new(i as u64, e)
            })
            .collect()
    }

    #[test]
    fn a_clean_campaign_passes() {
        let a = h(&[
            (Staged, 1, None),
            (Activated, 1, None),
            (LinkCommitted, 1, Some(2)),
        ]);
        let b = h(&[
            (Staged, 1, None),
            (Activated, 1, None),
            (LinkAgreed, 1, Some(1)),
        ]);
        assert!(check_histories(&[(1, a), (2, b)], false).is_empty());
    }

    #[test]
    fn each_violation_is_found() {
        let back = h(&[
            (Staged, 2, None),
            (Activated, 2, None),
            (LinkCommitted, 2, Some(2)),
            (LinkCommitted, 1, Some(2)),
        ]);
        let early = h(&[(LinkCommitted, 1, Some(1))]);
        let unstaged = h(&[(Activated, 1, None)]);
        let mut probe = h(&[(ProbeMismatch, 1, Some(4))]);
        probe[0].event.text = "SAFETY: probe from 4 sent under epoch 1 read under 0".into();
        let old_line = h(&[(Note, 9, None)]);
        let v = check_histories(
            &[
                (1, back),
                (2, early),
                (3, unstaged),
                (4, probe),
                (5, old_line),
            ],
            false,
        );
        let all = v.join("\n");
        assert!(all.contains("went back"), "{all}");
        assert!(
            all.contains("while running firmware of campaign 0"),
            "{all}"
        );
        assert!(all.contains("without staging"), "{all}");
        assert!(all.contains("probe from 4"), "{all}");
        assert!(all.contains("link 1-2"), "{all}");
    }
}
