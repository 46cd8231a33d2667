//! Neighbour leases: the disruption budget, without a global controller.
//!
//! Holder: asks its live neighbours one at a time in ascending NodeId order and keeps what it
//! holds while it waits (a total order of acquisition means waits can never form a cycle), renews
//! every lease before half its length, and activates only when every lease, measured on its own
//! clock from when it sent the request, outlasts the maximum activation plus a drift margin.
//! Grantor: grants while fewer than `max_unavailable_neighbors` neighbours hold its grants, and
//! queues the other requests (first come, first served) instead of making them poll; expiry runs
//! on its own clock. After a restart it grants nothing for one lease length, since grants it gave
//! before the crash may still be running, and it grants nothing while its own disruptive
//! activation runs.

use super::{Event, Gate, Node, Output, TimerKey};
use crate::link::LinkEnd;
use crate::msg::{Lease, Message};
use crate::types::{Nanos, NodeId, Rng};

/// A lease this node holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Held {
    peer: NodeId,
    /// When the request that earned it was sent (a lower bound of the grant time).
    requested_at: Nanos,
}

/// A request in flight.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Asked {
    peer: NodeId,
    seq: u32,
    at: Nanos,
    renewal: bool,
}

/// Holder side of the lease protocol.
#[derive(Clone, Debug, Default)]
pub(super) struct Holder {
    order: Vec<NodeId>,
    next: usize,
    held: Vec<Held>,
    asked: Vec<Asked>,
    seq: u32,
    retry_at: Option<Nanos>,
    timer_at: Option<Nanos>,
}

impl Holder {
    /// Begins an acquisition over the live links (ascending peer id; links are sorted).
    pub(super) fn start(&mut self, links: &[LinkEnd]) {
        let keep = std::mem::take(&mut self.held);
        *self = Holder {
            seq: self.seq,
            held: keep,
            ..Holder::default()
        };
        self.order = links
            .iter()
            .filter(|l| !l.retired)
            .map(|l| l.peer)
            .collect();
    }
    fn is_held(&self, peer: NodeId) -> bool {
        self.held.iter().any(|h| h.peer == peer)
    }
    fn is_asked(&self, peer: NodeId) -> bool {
        self.asked.iter().any(|a| a.peer == peer)
    }
}

/// Grantor side of the lease protocol.
#[derive(Clone, Debug, Default)]
pub(super) struct Grantor {
    /// Holders and the expiry of their grant, on this node's clock.
    grants: Vec<(NodeId, Nanos)>,
    /// Requests waiting for a free slot: (requester, epoch, seq), oldest first.
    queue: Vec<(NodeId, crate::types::Epoch, u32)>,
    /// No grants before this time (restart quarantine).
    quiet_until: Nanos,
    /// Armed grantor timer (next expiry or end of quarantine).
    timer_at: Option<Nanos>,
}

impl Grantor {
    /// A grantor that was running before (grants nothing for one lease length) or not.
    pub(super) fn new(now: Nanos, lease: Nanos, restarted: bool) -> Grantor {
        Grantor {
            quiet_until: if restarted { now + lease } else { 0 },
            ..Grantor::default()
        }
    }
    /// Grants not yet expired.
    pub(super) fn active(&self, now: Nanos) -> usize {
        self.grants.iter().filter(|g| g.1 > now).count()
    }
}

impl Node {
    /// How long a lease requested at `requested_at` is certainly valid on this node's clock.
    fn lease_valid_until(&self, requested_at: Nanos) -> Nanos {
        let lease = self.cfg.lease;
        let slack = (lease as u128 * self.cfg.max_drift_ppm as u128 / 1_000_000) as Nanos;
        requested_at + lease - slack
    }

    fn activation_need(&self) -> Nanos {
        let max = self
            .record
            .campaign
            .map_or(0, |c| c.max_activation_ms as Nanos);
        max * crate::types::MS + self.cfg.drift_margin
    }

    /// Advances the acquisition: ask the next neighbour, or activate when every lease is long
    /// enough, or renew the ones that are not.
    pub(super) fn lease_step(&mut self, now: Nanos) {
        if self.gate != Gate::Leasing {
            return;
        }
        self.drop_expired_leases(now);
        while self.holder.next < self.holder.order.len() {
            let peer = self.holder.order[self.holder.next];
            let link = self.link(peer).expect("lease order holds configured peers");
            if link.retired || self.holder.is_held(peer) {
                self.holder.next += 1;
                continue;
            }
            if self.holder.is_asked(peer) || self.holder.retry_at.is_some() || link.conn.is_none() {
                return self.lease_rearm(now);
            }
            self.ask(now, peer, false);
            return self.lease_rearm(now);
        }
        let need = self.activation_need();
        let short: Vec<NodeId> = self
            .holder
            .held
            .iter()
            .filter(|h| self.lease_valid_until(h.requested_at) < now + need)
            .map(|h| h.peer)
            .collect();
        if short.is_empty() {
            let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
            self.gate = Gate::Activating { since: now };
            self.emit(Output::Activate {
                epoch,
                disruptive: true,
            });
        } else {
            for peer in short {
                if !self.holder.is_asked(peer) {
                    self.ask(now, peer, true);
                }
            }
        }
        self.lease_rearm(now);
    }

    fn ask(&mut self, now: Nanos, peer: NodeId, renewal: bool) {
        let connected = self.link(peer).is_some_and(|l| l.conn.is_some());
        if !connected {
            return;
        }
        self.holder.seq = self.holder.seq.wrapping_add(1);
        let seq = self.holder.seq;
        self.holder.asked.retain(|a| a.peer != peer);
        self.holder.asked.push(Asked {
            peer,
            seq,
            at: now,
            renewal,
        });
        let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
        self.send(peer, Message::Lease(Lease::Req { epoch, seq }));
    }

    /// Arms the lease timer at the earliest retry or renewal.
    fn lease_rearm(&mut self, now: Nanos) {
        let half = self.cfg.lease / 2;
        // a renewal already asked waits for its answer until the lease runs out (re-arming at
        // its past renewal time would fire again at once, forever)
        let renew = self
            .holder
            .held
            .iter()
            .filter(|h| self.link(h.peer).is_some_and(|l| l.conn.is_some()))
            .map(|h| {
                if self.holder.is_asked(h.peer) {
                    self.lease_valid_until(h.requested_at)
                } else {
                    h.requested_at + half
                }
            })
            .min();
        // (a lease whose link is down is renewed when the link comes back: `lease_reconnected`)
        let at = match (self.holder.retry_at, renew) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            // never re-arm in the past: a due renewal that could not be sent waits a round trip
            let at = if at <= now { now + self.cfg.rtt.max(1) } else { at };
            if self.holder.timer_at != Some(at) {
                self.holder.timer_at = Some(at);
                self.emit(Output::Timer {
                    at,
                    key: TimerKey::Lease,
                });
            }
        }
    }

    pub(super) fn on_lease_timer(&mut self, now: Nanos) {
        match self.holder.timer_at {
            Some(at) if at <= now => self.holder.timer_at = None,
            _ => return,
        }
        if self.holder.retry_at.is_some_and(|r| r <= now) {
            self.holder.retry_at = None;
        }
        self.drop_expired_leases(now);
        let half = self.cfg.lease / 2;
        let due: Vec<NodeId> = self
            .holder
            .held
            .iter()
            .filter(|h| h.requested_at + half <= now)
            .map(|h| h.peer)
            .collect();
        for peer in due {
            if !self.holder.is_asked(peer) {
                self.ask(now, peer, true);
            }
        }
        if self.gate == Gate::Leasing {
            self.lease_step(now);
        } else {
            self.lease_rearm(now);
        }
    }

    pub(super) fn lease_reconnected(&mut self, now: Nanos, peer: NodeId) {
        if let Some(a) = self.holder.asked.iter().find(|a| a.peer == peer).copied() {
            self.ask(now, peer, a.renewal);
        }
        if self.gate == Gate::Leasing {
            self.lease_step(now);
        }
        self.lease_rearm(now);
    }

    /// Lets go of every lease held (activation over, or given up).
    pub(super) fn release_leases(&mut self) {
        let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
        let held = std::mem::take(&mut self.holder.held);
        for h in held {
            if self.link(h.peer).is_some_and(|l| l.conn.is_some()) {
                self.send(h.peer, Message::Lease(Lease::Release { epoch }));
            }
        }
        self.holder.asked.clear();
        self.holder.retry_at = None;
    }

    pub(super) fn on_lease(&mut self, now: Nanos, i: usize, msg: Lease) {
        let peer = self.links[i].peer;
        match msg {
            Lease::Req { epoch, seq } => {
                let g = &mut self.grantor;
                g.queue.retain(|q| q.0 != peer);
                g.queue.push((peer, epoch, seq));
                self.serve_queue(now);
            }
            Lease::Release { .. } => {
                self.grantor.grants.retain(|g| g.0 != peer);
                self.serve_queue(now);
            }
            Lease::Grant { seq, .. } => {
                let Some(pos) = self
                    .holder
                    .asked
                    .iter()
                    .position(|a| a.peer == peer && a.seq == seq)
                else {
                    // Answer to a request we no longer have (restarted, superseded): unless it
                    // renews a lease we hold or wait for, hand it back so the slot frees.
                    if !self.holder.is_held(peer) && !self.holder.is_asked(peer) {
                        self.hand_back(peer);
                    }
                    return;
                };
                let asked = self.holder.asked.remove(pos);
                if self.gate == Gate::Idle {
                    return self.hand_back(peer);
                }
                self.holder.held.retain(|h| h.peer != peer);
                self.holder.held.push(Held {
                    peer,
                    requested_at: asked.at,
                });
                self.lease_step(now);
                self.lease_rearm(now);
            }
            Lease::Deny { seq, .. } => {
                let Some(pos) = self
                    .holder
                    .asked
                    .iter()
                    .position(|a| a.peer == peer && a.seq == seq)
                else {
                    return;
                };
                let asked = self.holder.asked.remove(pos);
                self.stats.leases_denied += 1;
                self.emit(Output::Event(Event::LeaseDenied { peer }));
                if asked.renewal {
                    self.lost_lease(peer);
                }
                let jitter = self.rng.below(self.cfg.lease_retry.max(1));
                self.holder.retry_at = Some(now + self.cfg.lease_retry + jitter);
                self.lease_step(now);
                self.lease_rearm(now);
            }
        }
    }

    /// A renewal was denied: the grantor no longer counts us. To keep acquisition ordered, give
    /// back every lease from that neighbour on and ask again from there.
    fn lost_lease(&mut self, peer: NodeId) {
        if self.gate != Gate::Leasing {
            self.holder.held.retain(|h| h.peer != peer);
            return;
        }
        let Some(idx) = self.holder.order.iter().position(|&p| p == peer) else {
            return;
        };
        let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
        let later: Vec<NodeId> = self.holder.order[idx..].to_vec();
        let mut released = Vec::new();
        self.holder.held.retain(|h| {
            let drop = later.contains(&h.peer);
            if drop {
                released.push(h.peer);
            }
            !drop
        });
        for p in released {
            if p != peer && self.link(p).is_some_and(|l| l.conn.is_some()) {
                self.send(p, Message::Lease(Lease::Release { epoch }));
            }
        }
        self.holder.next = self.holder.next.min(idx);
    }

    /// A lease that ran out on this node's clock is lost, renewal asked or not: its grantor may
    /// have restarted and forgotten it, and then queues the renewal like any new request. Holding
    /// on to the leases acquired after it would break the acquisition order (two holders could
    /// each hold what the other waits for), so they go back too (see `lost_lease`); answers to
    /// their renewals, no longer awaited, are handed back when they come.
    fn drop_expired_leases(&mut self, now: Nanos) {
        let expired: Vec<NodeId> = self
            .holder
            .held
            .iter()
            .filter(|h| self.lease_valid_until(h.requested_at) <= now)
            .map(|h| h.peer)
            .collect();
        for peer in expired {
            if !self.holder.is_held(peer) {
                continue;
            }
            let before: Vec<NodeId> = self.holder.held.iter().map(|h| h.peer).collect();
            self.lost_lease(peer);
            let h = &mut self.holder;
            let given_back: Vec<NodeId> = before
                .into_iter()
                .filter(|&p| p != peer && !h.held.iter().any(|x| x.peer == p))
                .collect();
            h.asked.retain(|a| !given_back.contains(&a.peer));
        }
    }

    fn hand_back(&mut self, peer: NodeId) {
        let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
        self.send(peer, Message::Lease(Lease::Release { epoch }));
    }

    /// Grants queued requests while the budget allows: renewals at once, new holders while
    /// fewer than `max_unavailable_neighbors` hold a grant and this node is not quarantined or
    /// in its own disruptive activation. Requesters whose connection is down are dropped (they
    /// ask again on reconnect).
    pub(super) fn serve_queue(&mut self, now: Nanos) {
        let lease = self.cfg.lease;
        let duration_ms = (lease / crate::types::MS) as u32;
        self.grantor.grants.retain(|x| x.1 > now);
        let self_busy = matches!(self.gate, Gate::Activating { .. })
            && self.record.campaign.is_some_and(|c| c.disruptive);
        let mut k = 0;
        while k < self.grantor.queue.len() {
            let (peer, epoch, seq) = self.grantor.queue[k];
            if !self.link(peer).is_some_and(|l| l.conn.is_some()) {
                self.grantor.queue.remove(k);
                continue;
            }
            let g = &mut self.grantor;
            let renewal = g.grants.iter().position(|x| x.0 == peer);
            let free = now >= g.quiet_until
                && !self_busy
                && g.grants.len() < self.cfg.max_unavailable_neighbors;
            match renewal {
                Some(r) => g.grants[r].1 = now + lease,
                None if free => g.grants.push((peer, now + lease)),
                None => {
                    k += 1;
                    continue;
                }
            }
            g.queue.remove(k);
            self.send(peer, Message::Lease(Lease::Grant { epoch, seq, duration_ms }));
        }
        self.grantor_rearm(now);
    }

    /// Arms the grantor timer at the next moment a queued request could be served.
    fn grantor_rearm(&mut self, now: Nanos) {
        let g = &self.grantor;
        if g.queue.is_empty() {
            return;
        }
        let expiry = g.grants.iter().map(|x| x.1).min();
        let at = if now < g.quiet_until { Some(g.quiet_until) } else { expiry };
        if let Some(at) = at {
            if g.timer_at.is_none_or(|t| t <= now || t > at) {
                self.grantor.timer_at = Some(at);
                self.emit(Output::Timer { at, key: TimerKey::Grant });
            }
        }
    }

    pub(super) fn on_grant_timer(&mut self, now: Nanos) {
        if self.grantor.timer_at.is_some_and(|t| t <= now) {
            self.grantor.timer_at = None;
        }
        self.serve_queue(now);
    }
}
