//! The offline history checker: replays the histories of every agent of a cluster and reports
//! what contradicts the safety invariants (DESIGN.md §3), as far as histories can show it.
//!
//! History lines the agent writes in a fixed form (the stable part of the history):
//! `link to <peer> committed epoch <e>` (by a transaction), `link to <peer> agreed at epoch <e>
//! by LINK_HELLO`,
//! `epoch <e> staged in the device`, `epoch <e> activated`, `the device runs firmware of campaign
//! <e>` (read from the device at start: what an earlier life activated), and `SAFETY: ...` for a
//! probe read under another epoch than its sender's.

use crate::HistoryEntry;
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

fn parse(event: &str) -> Option<Fact> {
    if let Some(rest) = event.strip_prefix("SAFETY: ") {
        return Some(Fact::Safety(rest.to_owned()));
    }
    let w: Vec<&str> = event.split_whitespace().collect();
    match w.as_slice() {
        ["link", "to", peer, "committed", "epoch", e]
        | ["link", "to", peer, "agreed", "at", "epoch", e, "by", "LINK_HELLO"] => {
            Some(Fact::Committed {
                peer: peer.parse().ok()?,
                epoch: e.parse().ok()?,
            })
        }
        ["epoch", e, "staged", "in", "the", "device"] => Some(Fact::Staged(e.parse().ok()?)),
        ["epoch", e, "activated"] => Some(Fact::Activated(e.parse().ok()?)),
        ["the", "device", "runs", "firmware", "of", "campaign", e] => {
            Some(Fact::Running(e.parse().ok()?))
        }
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
            match parse(&e.event) {
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

    fn h(events: &[&str]) -> Vec<HistoryEntry> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| HistoryEntry {
                at_ms: i as u64,
                event: e.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_clean_campaign_passes() {
        let a = h(&[
            "epoch 1 staged in the device",
            "epoch 1 activated",
            "link to 2 committed epoch 1",
        ]);
        let b = h(&[
            "epoch 1 staged in the device",
            "epoch 1 activated",
            "link to 1 committed epoch 1",
        ]);
        assert!(check_histories(&[(1, a), (2, b)], false).is_empty());
    }

    #[test]
    fn each_violation_is_found() {
        let back = h(&[
            "epoch 2 staged in the device",
            "epoch 2 activated",
            "link to 2 committed epoch 2",
            "link to 2 committed epoch 1",
        ]);
        let early = h(&["link to 1 committed epoch 1"]);
        let unstaged = h(&["epoch 1 activated"]);
        let probe = h(&["SAFETY: probe from 4 sent under epoch 1 read under 0"]);
        let v = check_histories(&[(1, back), (2, early), (3, unstaged), (4, probe)], false);
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
