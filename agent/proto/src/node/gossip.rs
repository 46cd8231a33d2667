//! Status gossip: summary deltas to the configured gossip peers, acknowledged, resent if lost.

use super::{Node, Output, TimerKey};
use crate::msg::{GossipDelta, Message};
use crate::types::{Nanos, NodeId};

/// Entries per gossip message: within the wire's per-list limit and its 64 KiB frame.
/// Default most entries of each kind in one gossip message.
pub(super) const GOSSIP_CHUNK: usize = 2000;
const _: () = assert!(GOSSIP_CHUNK <= crate::wire::MAX_GOSSIP_ENTRIES);

/// Per-peer delta bookkeeping.
#[derive(Clone, Debug)]
struct PeerGossip {
    peer: NodeId,
    /// Highest sequence of ours the peer merged.
    acked: u64,
    /// Highest sequence sent on the current connection.
    sent_upto: u64,
    /// When it was sent.
    sent_at: Nanos,
}

/// Gossip state of a node.
#[derive(Clone, Debug)]
pub(super) struct GossipState {
    peers: Vec<PeerGossip>,
    timer_at: Option<Nanos>,
}

impl GossipState {
    pub(super) fn new(peers: &[NodeId]) -> GossipState {
        let peers = peers
            .iter()
            .map(|&peer| PeerGossip {
                peer,
                acked: 0,
                sent_upto: 0,
                sent_at: 0,
            })
            .collect();
        GossipState {
            peers,
            timer_at: None,
        }
    }
}

impl Node {
    /// The summary changed: make sure a gossip round is scheduled.
    pub(super) fn gossip_dirty(&mut self, now: Nanos) {
        if self.gossip.timer_at.is_some() {
            return;
        }
        let seq = self.summary.seq();
        if self.gossip.peers.iter().any(|p| p.acked < seq) {
            let at = now + self.cfg.gossip_interval;
            self.gossip.timer_at = Some(at);
            self.emit(Output::Timer {
                at,
                key: TimerKey::Gossip,
            });
        }
    }

    pub(super) fn on_gossip_timer(&mut self, now: Nanos) {
        match self.gossip.timer_at {
            Some(at) if at <= now => self.gossip.timer_at = None,
            _ => return,
        }
        let seq = self.summary.seq();
        let resend_after = 5 * self.cfg.gossip_interval;
        for k in 0..self.gossip.peers.len() {
            let p = &self.gossip.peers[k];
            let up = self.link(p.peer).is_some_and(|l| l.conn.is_some());
            let fresh = seq > p.sent_upto;
            let lost = p.acked < p.sent_upto && now >= p.sent_at + resend_after;
            if !up || !(fresh || lost) {
                continue;
            }
            // What is in flight on the connection arrives (FIFO) unless the acks stopped.
            let (peer, mut from) = (
                p.peer,
                if lost {
                    p.acked
                } else {
                    p.sent_upto.max(p.acked)
                },
            );
            while from < seq {
                let mut delta = GossipDelta::default();
                self.summary.delta_chunk(
                    from,
                    self.cfg
                        .gossip_chunk
                        .clamp(1, crate::wire::MAX_GOSSIP_ENTRIES),
                    &mut delta,
                );
                if delta.upto <= from {
                    break;
                }
                from = delta.upto;
                self.send(peer, Message::Gossip(delta));
            }
            let p = &mut self.gossip.peers[k];
            p.sent_upto = seq;
            p.sent_at = now;
        }
        if self.gossip.peers.iter().any(|p| p.acked < seq) {
            let at = now + self.cfg.gossip_interval;
            self.gossip.timer_at = Some(at);
            self.emit(Output::Timer {
                at,
                key: TimerKey::Gossip,
            });
        }
    }

    pub(super) fn on_gossip(&mut self, now: Nanos, peer: NodeId, delta: &GossipDelta) {
        let me = self.cfg.id;
        let own_beat = self.summary.beat(me);
        let heard = &mut self.heard;
        let changed = self.summary.merge_with(delta, |n| {
            if n != me {
                heard.insert(n, now);
            }
        });
        self.send(peer, Message::GossipAck { upto: delta.upto });
        if changed {
            self.marks_merged(now, delta);
            if self.summary.beat(me) != own_beat {
                // an earlier life of this node beat higher: beat above it at once
                self.beat(now);
            }
            self.gossip_dirty(now);
            #[cfg(feature = "mutants")]
            self.commit_on_gossip(now);
        }
    }

    /// Mutant only: a reflecting responder commits when gossip says the initiator did.
    #[cfg(feature = "mutants")]
    fn commit_on_gossip(&mut self, now: Nanos) {
        for i in 0..self.links.len() {
            let l = &self.links[i];
            if let crate::msg::Pending::Reflecting(_) = l.state.pending {
                let e = l.state.committed.next();
                if self
                    .summary
                    .report(l.peer, self.cfg.id)
                    .is_some_and(|r| r >= e)
                {
                    let ctx = self.ctx();
                    let fx = self.links[i].commit_on_other_path(e, &ctx);
                    self.apply_link(now, i, fx);
                }
            }
        }
    }

    pub(super) fn on_gossip_ack(&mut self, peer: NodeId, upto: u64) {
        if let Some(p) = self.gossip.peers.iter_mut().find(|p| p.peer == peer) {
            p.acked = p.acked.max(upto.min(p.sent_upto));
        }
    }

    /// A new connection to `peer`: it may have lost what it merged, so start over.
    pub(super) fn gossip_reconnected(&mut self, now: Nanos, peer: NodeId) {
        if let Some(p) = self.gossip.peers.iter_mut().find(|p| p.peer == peer) {
            p.acked = 0;
            p.sent_upto = 0;
        }
        self.gossip_dirty(now);
    }
}

#[cfg(test)]
mod tests {
    use super::GOSSIP_CHUNK;
    use crate::msg::{GossipDelta, Message};
    use crate::phase::PhaseEntry;
    use crate::types::{Epoch, NodeId};
    use crate::wire::{decode, encoded, MAX_MESSAGE_LEN};

    #[test]
    fn a_full_chunk_fits_the_wire() {
        let mut d = GossipDelta {
            upto: u64::MAX,
            ..GossipDelta::default()
        };
        let big = NodeId(u64::MAX);
        d.phases = vec![(big, PhaseEntry::default()); GOSSIP_CHUNK];
        let phases = encoded(&Message::Gossip(d.clone()));
        d.phases.clear();
        d.links = vec![(big, big, Epoch(u64::MAX)); GOSSIP_CHUNK];
        let links = encoded(&Message::Gossip(d));
        for bytes in [phases, links] {
            assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
            assert!(decode(&bytes).is_ok());
        }
    }

    #[test]
    fn sixty_four_entries_of_each_kind_fit_a_4k_control_frame() {
        let big = NodeId(u64::MAX);
        let d = GossipDelta {
            upto: u64::MAX,
            phases: vec![(big, PhaseEntry::default()); 64],
            links: vec![(big, big, Epoch(u64::MAX)); 64],
            ..GossipDelta::default()
        };
        let n = encoded(&Message::Gossip(d)).len();
        // fastpath's largest control message is 4016 bytes (a frame's MAC tag takes the rest
        // of 4 KiB); the agent adds one tag byte.
        assert!(n < 4015, "{n} bytes");
    }
}
