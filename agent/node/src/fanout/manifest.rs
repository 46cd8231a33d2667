//! Getting a campaign's manifest: one neighbour asked at a time, each once a round, a request
//! unanswered past its deadline given up, and a new round after a pause when none had it.

use super::MS;
use crate::Nanos;
use std::collections::BTreeSet;

/// Pause between two rounds of asking every neighbour.
pub const MANIFEST_RETRY: Nanos = 150 * MS;
/// How long a manifest request may stay unanswered before another neighbour is asked.
pub const MANIFEST_DEADLINE: Nanos = 10_000 * MS;

/// The manifest phase of a fetch.
#[derive(Debug, Default)]
pub struct ManifestFetch {
    /// The open request: (neighbour, slot, when asked).
    pending: Option<(u64, u32, Nanos)>,
    /// Neighbours asked this round.
    tried: BTreeSet<u64>,
    /// When the next round may start.
    retry_at: Nanos,
}

impl ManifestFetch {
    /// A fetch that may ask at once.
    pub fn new() -> ManifestFetch {
        ManifestFetch::default()
    }

    /// Whom to ask now, of the connected `sources`, if anyone: nobody while a request is open
    /// or the round's pause runs. The caller grants a slot and reports [`ManifestFetch::asked`]
    /// or [`ManifestFetch::no_slot`].
    pub fn next(&mut self, now: Nanos, sources: &[u64]) -> Option<u64> {
        if let Some((_, _, asked)) = self.pending {
            if now.saturating_sub(asked) < MANIFEST_DEADLINE {
                return None;
            }
            // Unanswered past the deadline: that neighbour counts as tried.
            let (peer, _, _) = self.pending.take()?;
            self.tried.insert(peer);
        }
        if now < self.retry_at {
            return None;
        }
        match sources.iter().find(|p| !self.tried.contains(p)) {
            Some(&p) => Some(p),
            None => {
                self.tried.clear();
                self.retry_at = now + MANIFEST_RETRY;
                None
            }
        }
    }

    /// The lapsed request's slot, if the open request ran past its deadline (the caller
    /// revokes it); checked before [`ManifestFetch::next`].
    pub fn lapsed(&self, now: Nanos) -> Option<(u64, u32)> {
        self.pending
            .filter(|&(_, _, asked)| now.saturating_sub(asked) >= MANIFEST_DEADLINE)
            .map(|(p, s, _)| (p, s))
    }

    /// `peer` was asked into `slot`.
    pub fn asked(&mut self, peer: u64, slot: u32, now: Nanos) {
        self.pending = Some((peer, slot, now));
    }

    /// No slot was free on `peer`'s connection: another neighbour is asked.
    pub fn no_slot(&mut self, peer: u64) {
        self.tried.insert(peer);
    }

    /// Whether a bulk transfer from `peer` into `slot` is the answer; it closes the request.
    pub fn answered(&mut self, peer: u64, slot: u32) -> bool {
        let ours = self.pending.is_some_and(|(p, s, _)| (p, s) == (peer, slot));
        if ours {
            self.pending = None;
        }
        ours
    }

    /// `peer` had nothing for `slot`: another neighbour is asked.
    pub fn declined(&mut self, peer: u64, slot: u32) {
        if self.answered(peer, slot) {
            self.tried.insert(peer);
        }
    }

    /// `peer` sent something other than the campaign's signed manifest.
    pub fn refused(&mut self, peer: u64) {
        self.tried.insert(peer);
    }

    /// `peer` went away: its open request is forgotten.
    pub fn peer_down(&mut self, peer: u64) {
        if self.pending.is_some_and(|(p, _, _)| p == peer) {
            self.pending = None;
        }
    }
}
