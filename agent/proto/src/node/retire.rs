//! Retire and restore (operator actions on links, versioned in the summary) and the heartbeat.

use super::{Gate, Node, Output, TimerKey};
use crate::link::table::Stimulus;
use crate::msg::{GossipDelta, Message, RetireMark, RetireVersion};
use crate::phase::Phase;
use crate::types::{Nanos, NodeId};

impl Node {
    /// Operator: retire the link to `peer` (dead hardware); convergence then ignores it, on
    /// every node, until an operator restores it. Returns false if `peer` is no neighbour.
    pub fn retire_link(&mut self, now: Nanos, peer: NodeId) -> bool {
        self.operator_mark(now, peer, true)
    }

    /// Operator: restore the retired link to `peer`: it is live again, convergence waits for it
    /// and its transactions resume. Returns false if `peer` is no neighbour.
    pub fn restore_link(&mut self, now: Nanos, peer: NodeId) -> bool {
        self.operator_mark(now, peer, false)
    }

    /// When this node last merged a changed entry reported by `node` (a phase, a link report,
    /// a heartbeat, an operator action there), on this node's clock; `None` if never since it
    /// started. This node's own is `None`.
    pub fn last_heard(&self, node: NodeId) -> Option<Nanos> {
        self.heard.get(&node).copied()
    }

    fn operator_mark(&mut self, now: Nanos, peer: NodeId, retired: bool) -> bool {
        let Some(i) = self.index(peer) else {
            return false;
        };
        let me = self.cfg.id;
        if retired {
            self.summary.retire(me, peer, me);
        } else {
            self.summary.restore(me, peer, me);
        }
        self.gossip_dirty(now);
        self.follow_mark(now, i);
        true
    }

    /// The marks persisted in the node record enter the summary; the link ends follow them.
    pub(super) fn load_marks(&mut self) {
        let me = self.cfg.id;
        if self.record.marks.is_empty() {
            // a record from before versions: its retired links, retired here at version 1
            let version = RetireVersion { counter: 1, by: me };
            let marks = self.record.retired.iter();
            self.record.marks = marks
                .map(|&p| {
                    (
                        p,
                        RetireMark {
                            version,
                            retired: true,
                        },
                    )
                })
                .collect();
        }
        for &(peer, mark) in &self.record.marks {
            self.summary.set_mark(me, peer, mark);
        }
        for l in &mut self.links {
            l.retired = self.summary.is_retired(me, l.peer);
        }
    }

    /// A merged delta may carry operator actions on this node's links: the ends follow them.
    pub(super) fn marks_merged(&mut self, now: Nanos, delta: &GossipDelta) {
        let me = self.cfg.id;
        for &(a, b, _) in &delta.marks {
            let peer = if a == me {
                b
            } else if b == me {
                a
            } else {
                continue;
            };
            if let Some(i) = self.index(peer) {
                self.follow_mark(now, i);
            }
        }
    }

    /// Link `i`'s end follows the summary's mark: persist the mark, then retire or revive it.
    fn follow_mark(&mut self, now: Nanos, i: usize) {
        let (me, peer) = (self.cfg.id, self.links[i].peer);
        let Some(mark) = self.summary.mark_of(me, peer) else {
            return;
        };
        let known = self.record.marks.iter().find(|(p, _)| *p == peer);
        if known.is_some_and(|&(_, m)| m == mark) && self.links[i].retired == mark.retired {
            return;
        }
        self.record.marks.retain(|(p, _)| *p != peer);
        self.record.marks.push((peer, mark));
        self.record.retired.retain(|&p| p != peer);
        if mark.retired {
            self.record.retired.push(peer);
        }
        self.persist_node();
        let was = self.links[i].retired;
        self.links[i].retired = mark.retired;
        if was == mark.retired {
            return;
        }
        if mark.retired {
            if self.gate == Gate::Leasing {
                self.lease_step(now);
            }
            self.check_converged(now);
        } else {
            // Live again. An acquisition under way left the link out of its order: it starts
            // over with it (keeping the leases it holds), so that the node does not activate
            // without the lease of a neighbour it is connected to again.
            if self.gate == Gate::Leasing {
                self.holder.start(me, &self.links);
                self.lease_step(now);
            }
            // A node that converged while the link was retired has not converged any more if
            // the link is behind its campaign.
            if let Some(c) = self.record.campaign {
                let behind = self.links[i].state.fresh || self.links[i].state.committed < c.epoch;
                if self.record.phase.phase == Phase::Converged && behind {
                    self.set_phase(now, Phase::Activated, c.epoch);
                }
            }
            if self.links[i].conn.is_some() {
                // Tell the peer this node activated (it may have ignored that while the link
                // was retired), resend what is pending as on a new connection, and propose.
                if let Some(epoch) = self.ctx().ready_for {
                    self.send(peer, Message::Activated { epoch });
                }
                let ctx = self.ctx();
                let fx = self.links[i].on_event(Stimulus::Reconnect, &ctx);
                self.apply_link(now, i, fx);
                self.try_propose(now, i);
            }
        }
    }

    /// Arms the first heartbeat, if this node has one.
    pub(super) fn start_heartbeat(&mut self, now: Nanos) {
        if self.cfg.heartbeat.is_some() {
            self.beat(now);
            self.arm_beat(now);
        }
    }

    pub(super) fn on_beat_timer(&mut self, now: Nanos) {
        self.beat(now);
        self.arm_beat(now);
    }

    fn arm_beat(&mut self, now: Nanos) {
        if let Some(every) = self.cfg.heartbeat {
            self.emit(Output::Timer {
                at: now.saturating_add(every),
                key: TimerKey::Beat,
            });
        }
    }

    /// Raises this node's heartbeat above every value the summary holds for it.
    pub(super) fn beat(&mut self, now: Nanos) {
        if self.cfg.heartbeat.is_none() {
            return;
        }
        let me = self.cfg.id;
        let next = self.summary.beat(me).unwrap_or(0).saturating_add(1);
        self.summary.set_beat(me, next);
        self.gossip_dirty(now);
    }
}
