//! Links: FIFO connections that break and lose what is in flight, reconnection, duplicates
//! through retransmission, and data-plane traffic on links whose epochs are in motion.

use crate::check::Invariant;
use crate::config::Protocol;
use crate::world::{Ev, SimMsg, Steady, World};
use entente_proto::types::{Epoch, Nanos, NodeId};
use entente_proto::Message;
use entente_proto::Rng;

/// Control messages kept per direction for retransmission after a reconnect.
const RECENT: usize = 4;

impl World {
    /// Link index and side (0 = lower id end) of `node`'s link to `peer`.
    pub(crate) fn link_of(&self, node: u32, peer: NodeId) -> Option<(u32, usize)> {
        let adj = &self.topo.adj[node as usize];
        let i = adj
            .binary_search_by_key(&(peer.0 as u32), |&(p, _)| p)
            .ok()?;
        let link = adj[i].1;
        let side = usize::from(self.links[link as usize].ends[1] == node);
        Some((link, side))
    }

    /// One-way delay: lognormal around the mean (σ = 0.3).
    fn delay(&mut self) -> Nanos {
        let u1 = self.rng.unit().max(1e-12);
        let u2 = self.rng.unit();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let sigma = 0.3;
        let f = (sigma * z - sigma * sigma / 2.0).exp();
        ((self.cfg.mean_delay as f64) * f).max(1.0) as Nanos
    }

    /// Sends on a link direction (sender side `dir`); a lost message breaks the connection.
    pub(crate) fn enqueue(&mut self, link: u32, dir: usize, msg: SimMsg) {
        let l = &self.links[link as usize];
        if !l.up {
            return;
        }
        self.m.messages += 1;
        if l.one_way[dir] > self.now {
            // A one-way partition: lost, the connection stays up until the partition ends.
            self.links[link as usize].dropped = true;
            return;
        }
        let cut = l.cut[dir] > self.now;
        if cut || (self.fault_active() && self.rng.chance(self.cfg.loss)) {
            return self.break_link(link);
        }
        let d = self.delay();
        let l = &mut self.links[link as usize];
        let at = (self.now + d).max(l.last_arrival[dir]);
        l.last_arrival[dir] = at;
        l.q[dir].push_back((at, msg));
        let gen = l.gen;
        self.schedule(
            at,
            Ev::Deliver {
                link,
                dir: dir as u8,
                gen,
            },
        );
    }

    pub(crate) fn deliver(&mut self, link: u32, dir: u8, gen: u32) {
        let dir = dir as usize;
        let l = &mut self.links[link as usize];
        if l.gen != gen || !l.up {
            return;
        }
        let Some((_, msg)) = l.q[dir].pop_front() else {
            return;
        };
        let (from, to) = (l.ends[dir], l.ends[1 - dir]);
        match msg {
            SimMsg::Data(tag) => {
                let interpreted = l.epoch[1 - dir];
                if tag != interpreted {
                    let (step, now) = (self.step, self.now);
                    self.check.violate(Invariant::Agreement, step, now, || {
                        format!("data n{from}→n{to} sent in {tag} interpreted under {interpreted}")
                    });
                }
            }
            SimMsg::Proto(m) => {
                if crate::world::debug::leases() && matches!(m, Message::Lease(_)) {
                    eprintln!("{:>14} LEASE n{from}->n{to} {m:?}", self.now);
                }
                if self.cfg.dup > 0.0 && is_control(&m) {
                    let r = &mut l.recent[dir];
                    if r.len() == RECENT {
                        r.pop_front();
                    }
                    r.push_back(m.clone());
                }
                if let Message::Control(c) = m {
                    self.control_reached(to, c);
                }
                let hello = matches!(m, Message::Hello(_));
                self.with_node(to, |n, now| n.handle_message(now, NodeId(from as u64), m));
                if hello {
                    // The receiver's data waits for its peer's first HELLO since it started.
                    self.update_pause(link, 1 - dir);
                }
            }
        }
    }

    /// Breaks the connection: everything in flight is lost; both ends see Down.
    pub(crate) fn break_link(&mut self, link: u32) {
        let l = &mut self.links[link as usize];
        if !l.up {
            return;
        }
        l.up = false;
        self.heat(link);
        let l = &mut self.links[link as usize];
        let gen = l.gen as u64;
        l.gen += 1;
        l.q[0].clear();
        l.q[1].clear();
        let ends = l.ends;
        for side in 0..2 {
            let (me, peer) = (ends[side], ends[1 - side]);
            self.update_pause(link, side);
            self.with_node(me, |n, now| n.handle_down(now, NodeId(peer as u64), gen));
        }
        let at = self.now + self.cfg.rtt();
        self.reconnect_later(link, at);
    }

    fn reconnect_later(&mut self, link: u32, at: Nanos) {
        let l = &mut self.links[link as usize];
        if l.reconnect_at.is_some_and(|t| t <= at) {
            return;
        }
        l.reconnect_at = Some(at);
        self.schedule(at, Ev::Reconnect { link });
    }

    /// Connects the link if both ends are up and it is not cut; otherwise retries later
    /// (a restart retries at once; a cut retries when it ends).
    pub(crate) fn try_connect(&mut self, link: u32) {
        let l = &self.links[link as usize];
        if l.up {
            return;
        }
        let ends = l.ends;
        if ends.iter().any(|&e| self.nodes[e as usize].node.is_none()) {
            return;
        }
        let cut_until = l.cut[0].max(l.cut[1]);
        if cut_until > self.now {
            return self.reconnect_later(link, cut_until);
        }
        let rtt = self.cfg.rtt();
        self.heat(link);
        let l = &mut self.links[link as usize];
        l.up = true;
        l.dropped = false;
        l.backoff = rtt;
        l.gen += 1;
        let gen = l.gen as u64;
        if self.cfg.dup > 0.0 {
            for dir in 0..2 {
                let recent: Vec<Message> =
                    self.links[link as usize].recent[dir].drain(..).collect();
                for m in recent {
                    if self.rng.chance(self.cfg.dup) {
                        self.enqueue(link, dir, SimMsg::Proto(m));
                    }
                }
            }
        }
        for side in 0..2 {
            let (me, peer) = (ends[side], ends[1 - side]);
            if !self.links[link as usize].up {
                break;
            }
            self.with_node(me, |n, now| n.handle_up(now, NodeId(peer as u64), gen));
        }
        for side in 0..2 {
            self.update_pause(link, side);
        }
    }

    /// The epoch `side` tags its data with on `link`, `None` while paused.
    pub(crate) fn sender_tag(&self, link: u32, side: usize) -> Option<Epoch> {
        let l = &self.links[link as usize];
        let me = l.ends[side];
        match self.cfg.protocol {
            Protocol::Bilateral => {
                let node = self.nodes[me as usize].node.as_ref()?;
                node.send_epoch(NodeId(l.ends[1 - side] as u64))
            }
            _ => (!self.fito.paused(me)).then_some(l.epoch[side]),
        }
    }

    /// Pause accounting of one link direction (data paused on an open connection).
    pub(crate) fn update_pause(&mut self, link: u32, side: usize) {
        let up = self.links[link as usize].up;
        let paused = up && self.sender_tag(link, side).is_none();
        let now = self.now;
        let l = &mut self.links[link as usize];
        let changed = match (paused, l.paused_since[side]) {
            (true, None) => {
                l.paused_since[side] = Some(now);
                true
            }
            (false, Some(t)) => {
                self.m.blocked_ns += (now - t) as u128;
                l.paused_since[side] = None;
                true
            }
            _ => false,
        };
        if changed {
            self.heat(link);
        }
    }

    /// Counts the steady stretches of both directions up to now: every data message in a
    /// stretch is interpreted the same way, so it is counted (and, if its tag differs from the
    /// receiver's epoch, counted as an agreement violation) instead of simulated.
    pub(crate) fn settle(&mut self, link: u32) {
        let hz = self.cfg.traffic_hz;
        for dir in 0..2 {
            let Some(st) = self.links[link as usize].steady[dir].take() else {
                continue;
            };
            let Some(tag) = st.tag else { continue };
            // Expected messages in the stretch; the fraction is rounded stochastically so a
            // stretch shorter than the traffic period holds one message with the right odds.
            let x = (self.now - st.since) as f64 / 1e9 * hz;
            let n = x as u64 + u64::from(self.rng.unit() < x.fract());
            self.m.steady_msgs += n;
            if tag != st.recv && n > 0 {
                let (from, to) = (
                    self.links[link as usize].ends[dir],
                    self.links[link as usize].ends[1 - dir],
                );
                let (step, now, since) = (self.step, self.now, st.since);
                self.check.violate(Invariant::Agreement, step, now, || {
                    format!(
                        "{n} data messages n{from}→n{to} sent in {tag} interpreted under {} (steady since {:.3} ms)",
                        st.recv,
                        since as f64 / 1e6
                    )
                });
                self.check.add(Invariant::Agreement, n - 1);
            }
        }
    }

    /// Something changed at an end of `link` (epoch, pause, connection): close the steady
    /// stretches and simulate data message by message, in each direction, until nothing has
    /// changed for a few link delays.
    pub(crate) fn heat(&mut self, link: u32) {
        self.settle(link);
        let now = self.now;
        self.links[link as usize].last_change = now;
        if self.cfg.traffic_hz <= 0.0 {
            return;
        }
        let period = (1e9 / self.cfg.traffic_hz).max(1.0) as Nanos;
        for dir in 0..2 {
            let l = &mut self.links[link as usize];
            l.hot[dir] = true;
            if !l.ticking[dir] {
                l.ticking[dir] = true;
                let first = self.now + self.rng.below(period);
                self.schedule(
                    first,
                    Ev::DataTick {
                        link,
                        dir: dir as u8,
                    },
                );
            }
        }
    }

    /// One data message on a hot direction; the direction cools (its data is counted from now
    /// on) once nothing has changed on the link for a few link delays.
    pub(crate) fn data_tick(&mut self, link: u32, dir: u8) {
        let dir = dir as usize;
        if !self.links[link as usize].hot[dir] {
            self.links[link as usize].ticking[dir] = false;
            return;
        }
        let tag = self.sender_tag(link, dir);
        if let Some(tag) = tag {
            self.enqueue(link, dir, SimMsg::Data(tag));
        }
        let linger = 4 * self.cfg.mean_delay;
        let l = &mut self.links[link as usize];
        if self.now - l.last_change >= linger {
            let tag = if l.up { tag } else { None };
            let recv = l.epoch[1 - dir];
            l.steady[dir] = Some(Steady {
                since: self.now,
                tag,
                recv,
            });
            l.hot[dir] = false;
            l.ticking[dir] = false;
            return;
        }
        let period = (1e9 / self.cfg.traffic_hz).max(1.0) as Nanos;
        self.schedule(
            self.now + period,
            Ev::DataTick {
                link,
                dir: dir as u8,
            },
        );
    }
}

/// Link-transaction and lease messages: what a transport retransmits after a reconnect.
fn is_control(m: &Message) -> bool {
    matches!(
        m,
        Message::Txn(_) | Message::Lease(_) | Message::Activated { .. }
    )
}
