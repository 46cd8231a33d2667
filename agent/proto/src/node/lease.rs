//! Neighbour leases: the disruption budget, without a global controller.
//!
//! Holder: asks its live neighbours one at a time in ascending NodeId order and keeps what it
//! holds while it waits (a total order of acquisition means waits can never form a cycle), renews
//! every lease before half its length, and activates only when every lease, measured on its own
//! clock from when it sent the request, outlasts the maximum activation plus a drift margin.
//! Its own grantor is one more resource of that order, at its own id: at that position it takes
//! its *own lease* once no neighbour holds one of its grants, and grants no new lease from then
//! until its activation is over, so that two neighbours are never disrupted at once.
//! Grantor: grants while fewer than `max_unavailable_neighbors` neighbours hold its grants, and
//! queues the other requests (first come, first served) instead of making them poll; expiry runs
//! on its own clock. After a restart it grants nothing for one lease length, since grants it gave
//! before the crash may still be running, and it grants nothing while its own lease is claimed.

use super::{Event, Gate, Node, Output, TimerKey};
use crate::link::LinkEnd;
use crate::msg::{Lease, Message};
use crate::types::{Nanos, NodeId, Rng};

/// How far behind a neighbour's newest LEASE_REQ a request's `seq` may be and still count as a
/// duplicate of an earlier one. Duplicates come from the last few messages of a previous
/// connection; a restarted holder starts its counter at a random value, which falls this close
/// behind by chance with probability 2^-22 (its request then goes unanswered until it asks
/// again on its next connection).
const DUP_WINDOW: u32 = 1 << 10;

/// The position of the node's own lease in `Holder::order` (in place of a link index).
const OWN: usize = usize::MAX;

/// A request in flight.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Asked {
    /// Link index of the grantor.
    link: usize,
    seq: u32,
    at: Nanos,
    renewal: bool,
}

/// Holder side of the lease protocol. Leases are kept per link index, so that a node with
/// hundreds of neighbours (a spine) pays O(1) per lease message and O(degree) only when a timer
/// fires.
#[derive(Clone, Debug, Default)]
pub(super) struct Holder {
    /// Link indices to acquire, in ascending peer order (links are sorted), live ones only,
    /// with [`OWN`] at this node's own id among them.
    order: Vec<usize>,
    /// Whether this node holds its own lease: it grants no new lease until the activation is
    /// over (or the acquisition gives the lease back to keep its order).
    own: bool,
    /// Position in `order` of the next lease to acquire.
    next: usize,
    /// Per link index, if a lease is held: when the request behind it was sent (a lower bound
    /// of the grant time), the grant's `seq`, and the length the grantor granted.
    held: Vec<Option<(Nanos, u32, Nanos)>>,
    /// Requests in flight (the next acquisition and renewals).
    asked: Vec<Asked>,
    /// Per link index: the `seq` of a lease given up while the connection was down; the
    /// release goes out when it comes back (an activation's reset drops every connection).
    unreleased: Vec<Option<u32>>,
    seq: u32,
    /// The counter's value when this incarnation started.
    first_seq: u32,
    /// Wait before asking again after a denial.
    retry_at: Option<Nanos>,
    /// A lower bound of the earliest renewal or expiry; the timer recomputes it exactly.
    due_at: Option<Nanos>,
    timer_at: Option<Nanos>,
}

impl Holder {
    /// Begins an acquisition over the live links of node `me`, keeping leases already held.
    pub(super) fn start(&mut self, me: NodeId, links: &[LinkEnd]) {
        self.held.resize(links.len(), None);
        self.order = (0..links.len()).filter(|&i| !links[i].retired).collect();
        let at = self.order.partition_point(|&i| links[i].peer < me);
        self.order.insert(at, OWN);
        self.own = false;
        self.next = 0;
        self.retry_at = None;
    }
    /// Whether the acquisition waits at its own lease.
    fn at_own(&self) -> bool {
        !self.own && self.order.get(self.next) == Some(&OWN)
    }
    fn is_asked(&self, link: usize) -> bool {
        self.asked.iter().any(|a| a.link == link)
    }
    fn is_held(&self, link: usize) -> bool {
        self.held.get(link).is_some_and(Option::is_some)
    }
    /// Gives up the node's own lease (the caller has the grantor serve its queue).
    fn drop_own(&mut self) {
        self.own = false;
    }
    fn hold(&mut self, link: usize, requested_at: Nanos, seq: u32, len: Nanos) {
        if self.held.len() <= link {
            self.held.resize(link + 1, None);
        }
        self.held[link] = Some((requested_at, seq, len));
        let renew_at = requested_at + len / 2;
        if let Some(u) = self.unreleased.get_mut(link) {
            *u = None;
        }
        self.due_at = Some(self.due_at.map_or(renew_at, |d| d.min(renew_at)));
    }
    /// Held leases: (link index, requested at, granted length).
    fn held_links(&self) -> impl Iterator<Item = (usize, Nanos, Nanos)> + '_ {
        self.held
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|(t, _, len)| (i, t, len)))
    }
    /// Starts the request counter somewhere new, so that a restarted holder never mistakes an
    /// answer to its previous incarnation's request for one to its own.
    pub(super) fn seed(&mut self, seq: u32) {
        self.seq = seq;
        self.first_seq = seq;
    }
    /// Whether this incarnation issued request `seq` (counting from its seed).
    fn issued(&self, seq: u32) -> bool {
        let used = self.seq.wrapping_sub(self.first_seq);
        let off = seq.wrapping_sub(self.first_seq);
        off != 0 && off <= used
    }
}

/// Grantor side of the lease protocol.
#[derive(Clone, Debug, Default)]
pub(super) struct Grantor {
    /// Holders, the expiry of their grant on this node's clock, and the `seq` it answered.
    grants: Vec<(NodeId, Nanos, u32)>,
    /// Requests waiting for a free slot: (requester, epoch, seq), oldest first.
    queue: Vec<(NodeId, crate::types::Epoch, u32)>,
    /// Per link index: the `seq` of the newest LEASE_REQ received from that neighbour.
    last_req: Vec<Option<u32>>,
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
    /// Extends the quiet period of a restarted grantor to `len` from `now`.
    pub(super) fn quiet_for(&mut self, now: Nanos, len: Nanos) {
        if self.quiet_until > 0 {
            self.quiet_until = self.quiet_until.max(now + len);
        }
    }

    /// Grants nothing for `len` from `now`, whether or not it was quiet (a node that learns it
    /// lost its store: the grants of its earlier life are forgotten).
    pub(super) fn quarantine(&mut self, now: Nanos, len: Nanos) {
        self.quiet_until = self.quiet_until.max(now + len);
    }

    /// Whether a LEASE_REQ `seq` from the neighbour of link `i` is a duplicate: not newer than
    /// the newest request already received from it. A holder numbers its requests in order and
    /// never asks twice with one `seq`, so such a request was answered (or dropped) already, and
    /// its grant may have been released since. Taking it as a renewal would rewind the grant's
    /// `seq` to the released one, and a duplicated release of that one would end the lease the
    /// holder's activation runs under. Otherwise records `seq` as the newest.
    fn duplicate(&mut self, i: usize, seq: u32) -> bool {
        if self.last_req.len() <= i {
            self.last_req.resize(i + 1, None);
        }
        let dup = self.last_req[i].is_some_and(|last| last.wrapping_sub(seq) < DUP_WINDOW);
        if !dup {
            self.last_req[i] = Some(seq);
        }
        dup
    }

    /// Grants not yet expired.
    pub(super) fn active(&self, now: Nanos) -> usize {
        self.grants.iter().filter(|g| g.1 > now).count()
    }
}

impl Node {
    /// How long a lease of `len` requested at `requested_at` is certainly valid on this node's
    /// clock (the grantor's clock may run faster by the largest drift).
    fn lease_valid_until(&self, requested_at: Nanos, len: Nanos) -> Nanos {
        let slack = (len as u128 * self.cfg.max_drift_ppm as u128 / 1_000_000) as Nanos;
        requested_at + len - slack
    }

    /// Length of the leases this node grants: the configured length, or twice what the
    /// campaign's longest activation needs, whichever is longer, so that a neighbour can hold a
    /// lease through a long activation (a GPU baseboard's reboot may take half an hour). The
    /// holder measures the length the grant names, never its own setting.
    pub(super) fn grant_length(&self) -> Nanos {
        self.cfg.lease.max(2 * self.activation_need())
    }

    fn activation_need(&self) -> Nanos {
        let max = self
            .record
            .campaign
            .map_or(0, |c| c.max_activation_ms as Nanos);
        max * crate::types::MS + self.cfg.drift_margin
    }

    fn epoch(&self) -> crate::types::Epoch {
        self.record.campaign.map(|c| c.epoch).unwrap_or_default()
    }

    /// Whether this node claims its own lease (holds it, or waits for it): it grants no new
    /// lease then.
    fn own_claimed(&self) -> bool {
        if self.grants_while_leasing() {
            return false;
        }
        self.holder.own || (self.gate == Gate::Leasing && self.holder.at_own())
    }

    /// The `GrantWhileLeasing` mutant: the own lease is taken at once and claims nothing.
    fn grants_while_leasing(&self) -> bool {
        #[cfg(feature = "mutants")]
        return self.cfg.mutant == Some(crate::Mutant::GrantWhileLeasing);
        #[cfg(not(feature = "mutants"))]
        false
    }

    /// Whether the node's own lease is free: no neighbour holds one of its grants and it is not
    /// quiet after a restart (grants of its earlier life may still run).
    fn own_free(&self, now: Nanos) -> bool {
        now >= self.grantor.quiet_until && self.grantor.active(now) == 0
    }

    /// Advances the acquisition: ask the next neighbour, take the own lease, or activate when
    /// every lease is long enough, or renew the ones that are not. If the node no longer claims
    /// its own lease (it gave it back, or the loss of a lease before it sent the acquisition
    /// back), the grantor serves the requests it queued meanwhile.
    pub(super) fn lease_step(&mut self, now: Nanos) {
        self.lease_advance(now);
        if !self.own_claimed() && !self.grantor.queue.is_empty() {
            self.serve_queue(now);
        }
    }

    fn lease_advance(&mut self, now: Nanos) {
        if self.gate != Gate::Leasing {
            return;
        }
        while self.holder.next < self.holder.order.len() {
            let i = self.holder.order[self.holder.next];
            if i == OWN {
                if !self.holder.own {
                    // Like any lease, with the ones after it in the order given back first.
                    self.release_beyond(self.holder.next);
                    if !self.own_free(now) && !self.grants_while_leasing() {
                        // Waits for the grants to run out or be released (the grantor timer,
                        // or a release, steps again); no new one is given meanwhile.
                        self.grantor_rearm(now);
                        return self.lease_rearm(now);
                    }
                    self.holder.own = true;
                }
                self.holder.next += 1;
                continue;
            }
            if self.links[i].retired || self.holder.is_held(i) {
                self.holder.next += 1;
                continue;
            }
            // Deadlock freedom needs the leases held while waiting to be a prefix of the
            // order: give back any held beyond the one waited for (a lease lost and asked again
            // while later ones were kept would otherwise close a cycle of waits).
            self.release_beyond(self.holder.next);
            let blocked = self.holder.is_asked(i) || self.holder.retry_at.is_some();
            if !blocked && self.links[i].conn.is_some() {
                self.ask(now, i, false);
            }
            return self.lease_rearm(now);
        }
        let need = now + self.activation_need();
        let short: Vec<usize> = self
            .holder
            .held_links()
            .filter(|&(_, at, len)| self.lease_valid_until(at, len) < need)
            .map(|(i, _, _)| i)
            .collect();
        if short.is_empty() {
            let epoch = self.epoch();
            self.gate = Gate::Activating { since: now };
            self.emit(Output::Activate {
                epoch,
                disruptive: true,
            });
        } else {
            for i in short {
                if !self.holder.is_asked(i) {
                    self.ask(now, i, true);
                }
            }
        }
        self.lease_rearm(now);
    }

    fn ask(&mut self, now: Nanos, i: usize, renewal: bool) {
        if self.links[i].conn.is_none() {
            return;
        }
        self.holder.seq = self.holder.seq.wrapping_add(1);
        let seq = self.holder.seq;
        self.holder.asked.retain(|a| a.link != i);
        self.holder.asked.push(Asked {
            link: i,
            seq,
            at: now,
            renewal,
        });
        let (peer, epoch) = (self.links[i].peer, self.epoch());
        self.send(peer, Message::Lease(Lease::Req { epoch, seq }));
    }

    /// Arms the lease timer at the earliest retry or renewal (never in the past).
    fn lease_rearm(&mut self, now: Nanos) {
        let at = match (self.holder.retry_at, self.holder.due_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            let at = if at <= now {
                now + self.cfg.rtt.max(1)
            } else {
                at
            };
            if self.holder.timer_at.is_none_or(|t| t <= now || t > at) {
                self.holder.timer_at = Some(at);
                self.emit(Output::Timer {
                    at,
                    key: TimerKey::Lease,
                });
            }
        }
    }

    /// The lease timer: leases that ran out are lost, those past half their length are renewed,
    /// a denied request is asked again; then the next deadline is computed exactly.
    pub(super) fn on_lease_timer(&mut self, now: Nanos) {
        match self.holder.timer_at {
            Some(at) if at <= now => self.holder.timer_at = None,
            _ => return,
        }
        if self.holder.retry_at.is_some_and(|r| r <= now) {
            self.holder.retry_at = None;
        }
        self.drop_expired_leases(now);
        let due: Vec<usize> = self
            .holder
            .held_links()
            .filter(|&(i, at, len)| at + len / 2 <= now && !self.holder.is_asked(i))
            .map(|(i, _, _)| i)
            .collect();
        for i in due {
            self.ask(now, i, true);
        }
        // Exact next deadline: renewal at half-life, or expiry for a renewal awaiting its answer;
        // a lease whose link is down is renewed when the link comes back (`lease_reconnected`).
        self.holder.due_at = self
            .holder
            .held_links()
            .filter(|&(i, _, _)| self.links[i].conn.is_some())
            .map(|(i, at, len)| {
                if self.holder.is_asked(i) {
                    self.lease_valid_until(at, len)
                } else {
                    at + len / 2
                }
            })
            .min();
        if self.gate == Gate::Leasing {
            self.lease_step(now);
        } else {
            self.lease_rearm(now);
        }
    }

    pub(super) fn lease_reconnected(&mut self, now: Nanos, i: usize) {
        if let Some(seq) = self.holder.unreleased.get_mut(i).and_then(Option::take) {
            self.hand_back(self.links[i].peer, seq);
        }
        if let Some(a) = self.holder.asked.iter().find(|a| a.link == i).copied() {
            self.ask(now, i, a.renewal);
        } else if let Some((at, _, len)) = self.holder.held.get(i).copied().flatten() {
            let renew = at + len / 2;
            self.holder.due_at = Some(self.holder.due_at.map_or(renew, |d| d.min(renew)));
        }
        if self.gate == Gate::Leasing {
            self.lease_step(now);
        }
        self.lease_rearm(now);
    }

    /// Lets go of every lease held (activation over, or given up), its own included: the
    /// grantor serves its queue again.
    pub(super) fn release_leases(&mut self, now: Nanos) {
        self.holder.drop_own();
        self.release_held();
        self.serve_queue(now);
    }

    fn release_held(&mut self) {
        let epoch = self.epoch();
        let held: Vec<usize> = self.holder.held_links().map(|(i, _, _)| i).collect();
        self.holder.unreleased.resize(self.links.len(), None);
        for i in held {
            let Some((_, seq, _)) = self.holder.held[i].take() else {
                continue;
            };
            if self.links[i].conn.is_some() {
                let peer = self.links[i].peer;
                self.send(peer, Message::Lease(Lease::Release { epoch, seq }));
            } else {
                self.holder.unreleased[i] = Some(seq);
            }
        }
        self.holder.asked.clear();
        self.holder.retry_at = None;
        self.holder.due_at = None;
    }

    pub(super) fn on_lease(&mut self, now: Nanos, i: usize, msg: Lease) {
        let peer = self.links[i].peer;
        match msg {
            Lease::Req { epoch, seq } => {
                if self.grantor.duplicate(i, seq) {
                    self.stats.stale += 1;
                    return;
                }
                let g = &mut self.grantor;
                g.queue.retain(|q| q.0 != peer);
                g.queue.push((peer, epoch, seq));
                self.serve_queue(now);
            }
            Lease::Release { seq, .. } => {
                // Only the grant it names: a duplicated release of an earlier grant is stale.
                self.grantor.grants.retain(|g| !(g.0 == peer && g.2 == seq));
                self.serve_queue(now);
            }
            Lease::Grant {
                seq, duration_ms, ..
            } => {
                let pos = self
                    .holder
                    .asked
                    .iter()
                    .position(|a| a.link == i && a.seq == seq);
                let Some(pos) = pos else {
                    // Answer to a request this incarnation superseded: unless it renews a lease
                    // we hold or wait for, hand it back so the slot frees. A grant to a previous
                    // incarnation is kept until it expires: the activation it covers may still be
                    // running in the device.
                    if self.holder.issued(seq)
                        && !self.holder.is_held(i)
                        && !self.holder.is_asked(i)
                    {
                        self.hand_back(peer, seq);
                    }
                    return;
                };
                let asked = self.holder.asked.remove(pos);
                let beyond = self.gate == Gate::Leasing
                    && !asked.renewal
                    && self.holder.order.get(self.holder.next) != Some(&i);
                if self.gate == Gate::Idle || beyond {
                    return self.hand_back(peer, seq);
                }
                let len = Nanos::from(duration_ms) * crate::types::MS;
                self.holder.hold(i, asked.at, seq, len);
                self.lease_step(now);
                self.lease_rearm(now);
            }
            Lease::Deny { seq, .. } => {
                let pos = self
                    .holder
                    .asked
                    .iter()
                    .position(|a| a.link == i && a.seq == seq);
                let Some(pos) = pos else { return };
                let asked = self.holder.asked.remove(pos);
                self.stats.leases_denied += 1;
                self.emit(Output::Event(Event::LeaseDenied { peer }));
                if asked.renewal {
                    self.lost_lease(i);
                }
                let jitter = self.rng.below(self.cfg.lease_retry.max(1));
                self.holder.retry_at = Some(now + self.cfg.lease_retry + jitter);
                self.lease_step(now);
                self.lease_rearm(now);
            }
        }
    }

    /// The node learned it forgot the grants of an earlier life (quarantine): an own lease taken
    /// before is void, and is taken again, with the leases after it, once the quarantine is over.
    pub(super) fn own_void(&mut self, now: Nanos) {
        if self.gate != Gate::Leasing || !self.holder.own {
            return;
        }
        let Some(pos) = self.holder.order.iter().position(|&k| k == OWN) else {
            return;
        };
        self.holder.own = false;
        self.release_beyond(pos);
        self.holder.next = self.holder.next.min(pos);
        self.lease_step(now);
    }

    /// Gives back every lease held at a position of the acquisition order after `pos`.
    fn release_beyond(&mut self, pos: usize) {
        let epoch = self.epoch();
        for k in pos + 1..self.holder.order.len() {
            let j = self.holder.order[k];
            if j == OWN {
                self.holder.drop_own();
                continue;
            }
            if let Some((_, seq, _)) = self.holder.held[j].take() {
                self.holder.asked.retain(|a| a.link != j);
                if self.links[j].conn.is_some() {
                    let peer = self.links[j].peer;
                    self.send(peer, Message::Lease(Lease::Release { epoch, seq }));
                } else {
                    self.holder.unreleased.resize(self.links.len(), None);
                    self.holder.unreleased[j] = Some(seq);
                }
            }
        }
    }

    /// The grantor no longer counts us for the lease of link `i`. To keep acquisition ordered,
    /// give back every lease from that neighbour on (answers to their renewals, no longer
    /// awaited, are handed back when they come) and ask again from there.
    fn lost_lease(&mut self, i: usize) {
        if self.gate != Gate::Leasing {
            self.holder.held[i] = None;
            self.holder.asked.retain(|a| a.link != i);
            return;
        }
        let Some(idx) = self.holder.order.iter().position(|&k| k == i) else {
            self.holder.held[i] = None;
            return;
        };
        let epoch = self.epoch();
        for k in idx..self.holder.order.len() {
            let j = self.holder.order[k];
            if j == OWN {
                self.holder.drop_own();
                continue;
            }
            if let Some((_, seq, _)) = self.holder.held[j].take() {
                self.holder.asked.retain(|a| a.link != j);
                if j != i && self.links[j].conn.is_some() {
                    let peer = self.links[j].peer;
                    self.send(peer, Message::Lease(Lease::Release { epoch, seq }));
                }
            }
        }
        self.holder.next = self.holder.next.min(idx);
    }

    /// A lease that ran out on this node's clock is lost, renewal asked or not: its grantor may
    /// have restarted and forgotten it, and then queues the renewal like any new request. Holding
    /// on to the leases acquired after it would break the acquisition order (two holders could
    /// each hold what the other waits for), so they go back too.
    fn drop_expired_leases(&mut self, now: Nanos) {
        let expired: Vec<usize> = self
            .holder
            .held_links()
            .filter(|&(_, at, len)| self.lease_valid_until(at, len) <= now)
            .map(|(i, _, _)| i)
            .collect();
        for i in expired {
            if self.holder.is_held(i) {
                self.lost_lease(i);
            }
        }
    }

    fn hand_back(&mut self, peer: NodeId, seq: u32) {
        let epoch = self.record.campaign.map(|c| c.epoch).unwrap_or_default();
        self.send(peer, Message::Lease(Lease::Release { epoch, seq }));
    }

    /// Grants queued requests while the budget allows: renewals at once, new holders while
    /// fewer than `max_unavailable_neighbors` hold a grant and this node is not quarantined or
    /// claiming its own lease (so not in its own disruptive activation either). Requesters whose
    /// connection is down are dropped (they ask again on reconnect).
    pub(super) fn serve_queue(&mut self, now: Nanos) {
        let lease = self.grant_length();
        let duration_ms = u32::try_from(lease / crate::types::MS).unwrap_or(u32::MAX);
        let lease = Nanos::from(duration_ms) * crate::types::MS;
        self.grantor.grants.retain(|x| x.1 > now);
        let self_busy = self.own_claimed()
            || (matches!(self.gate, Gate::Activating { .. })
                && self.record.campaign.is_some_and(|c| c.disruptive));
        let mut k = 0;
        while k < self.grantor.queue.len() {
            let (peer, epoch, seq) = self.grantor.queue[k];
            if self.link(peer).is_none_or(|l| l.conn.is_none()) {
                self.grantor.queue.remove(k);
                continue;
            }
            let g = &mut self.grantor;
            let renewal = g.grants.iter().position(|x| x.0 == peer);
            let free = now >= g.quiet_until
                && !self_busy
                && g.grants.len() < self.cfg.max_unavailable_neighbors;
            match renewal {
                Some(r) => g.grants[r] = (peer, now + lease, seq),
                None if free => g.grants.push((peer, now + lease, seq)),
                None => {
                    k += 1;
                    continue;
                }
            }
            g.queue.remove(k);
            self.send(
                peer,
                Message::Lease(Lease::Grant {
                    epoch,
                    seq,
                    duration_ms,
                }),
            );
        }
        if self.gate == Gate::Leasing && self.holder.at_own() && self.own_free(now) {
            // The last grant ended: the acquisition waiting for its own lease goes on.
            self.lease_step(now);
        }
        self.grantor_rearm(now);
    }

    /// Arms the grantor timer at the next moment a queued request could be served, or the
    /// node's own lease could be taken.
    fn grantor_rearm(&mut self, now: Nanos) {
        let waits = self.gate == Gate::Leasing && self.holder.at_own();
        let g = &self.grantor;
        if g.queue.is_empty() && !waits {
            return;
        }
        let expiry = g.grants.iter().map(|x| x.1).min();
        let at = if now < g.quiet_until {
            Some(g.quiet_until)
        } else {
            expiry
        };
        if let Some(at) = at {
            if g.timer_at.is_none_or(|t| t <= now || t > at) {
                self.grantor.timer_at = Some(at);
                self.emit(Output::Timer {
                    at,
                    key: TimerKey::Grant,
                });
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
