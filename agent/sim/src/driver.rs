//! The driver of each simulated node: carries out its outputs (persist, send, timers, staging,
//! activation, device link epochs), crashes and restarts it.

use crate::check::Invariant;
use crate::config::{DriverBug, Protocol};
use crate::world::{Ev, SimMsg, Store, World};
use entente_proto::node::{Durable, Event, Record};
use entente_proto::phase::Phase;
use entente_proto::types::{Nanos, NodeId, MS, SEC};
use entente_proto::Message;
use entente_proto::{Node, Output, Rng};

/// Deferred persistence of the send-before-persist driver.
const PERSIST_DELAY: Nanos = MS;

impl World {
    /// Runs `f` on a live node with its local time, then carries out its outputs.
    pub(crate) fn with_node(&mut self, n: u32, f: impl FnOnce(&mut Node, Nanos)) {
        if self.nodes[n as usize].node.is_none() {
            return;
        }
        let local = self.node_time(n);
        let Some(node) = self.nodes[n as usize].node.as_mut() else {
            return;
        };
        f(node, local);
        node.take_outputs(&mut self.buf);
        self.carry_out(n);
    }

    fn send_before_persist(&self) -> bool {
        #[cfg(feature = "mutants")]
        {
            self.cfg.mutant == Some(entente_proto::Mutant::SendBeforePersist)
        }
        #[cfg(not(feature = "mutants"))]
        {
            false
        }
    }

    fn carry_out(&mut self, n: u32) {
        let mut outs = std::mem::take(&mut self.buf);
        // Reused across calls: this runs once per event.
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        // The simulated device answers link-epoch work at once, after the outputs that asked.
        let mut device_answers = Vec::new();
        let mut drained = Vec::new();
        let mut rollbacks = Vec::new();
        let mut torn = false;
        for o in outs.drain(..) {
            match o {
                Output::Persist(_) if torn || self.nodes[n as usize].tear => {
                    self.nodes[n as usize].tear = false;
                    if !torn {
                        self.m.torn_writes += 1;
                    }
                    torn = true;
                    if self.cfg.driver_bug != DriverBug::TornAckedWrite {
                        // The node dies during the write: it is lost, and nothing after it
                        // is carried out.
                        break;
                    }
                    // The buggy disk acknowledged the write and carries on; the write, and
                    // every later one, is lost at the crash that ends the batch.
                    self.nodes[n as usize].persist_seq += 1;
                }
                Output::Persist(r) => {
                    if let Record::Link(peer, _) = &r {
                        if let Some((link, _)) = self.link_of(n, *peer) {
                            touched.push(link);
                        }
                    }
                    let deferred = self.send_before_persist();
                    let sn = &mut self.nodes[n as usize];
                    if let Record::Node(r) = &r {
                        if let Some(c) = r.campaign {
                            sn.manifests = true;
                            sn.manifest_window = c.window;
                        }
                    }
                    sn.persist_seq += 1;
                    if deferred {
                        let seq = sn.persist_seq;
                        sn.pending.push((seq, r));
                        let inc = sn.inc;
                        self.schedule(self.now + PERSIST_DELAY, Ev::PersistDone { node: n, inc });
                    } else {
                        sn.durable.apply(&r);
                        sn.durable_seq = sn.persist_seq;
                    }
                }
                Output::Send { to, conn, msg } => {
                    if let Message::Hello(h) = &msg {
                        self.check_hello_window(n, h.window);
                    }
                    let sn = &mut self.nodes[n as usize];
                    sn.required_seq = sn.persist_seq;
                    if let Some((link, side)) = self.link_of(n, to) {
                        // A message for a connection that is gone is dropped, like the
                        // connection's own in-flight messages.
                        if u64::from(self.links[link as usize].gen) == conn {
                            self.enqueue(link, side, SimMsg::Proto(msg));
                        }
                    }
                }
                Output::Timer { at, key } => {
                    self.arm_wall_timer(n, key, at);
                    let at = self.timer_time(n, at);
                    let inc = self.nodes[n as usize].inc;
                    self.schedule(at, Ev::Timer { node: n, inc, key });
                }
                Output::Stage(c) => self.stage(n, c),
                Output::Activate { epoch, disruptive } => {
                    self.check_abort(n, epoch);
                    self.activate(n, epoch, disruptive);
                }
                Output::SetLinkEpoch { peer, epoch } => {
                    if let Some((link, side)) = self.link_of(n, peer) {
                        if self.cfg.protocol == Protocol::Bilateral {
                            self.set_link_epoch(link, side, epoch);
                        }
                        touched.push(link);
                    }
                    device_answers.push((Some(peer), epoch));
                }
                Output::PrepareLinkEpoch { epoch } => device_answers.push((None, epoch)),
                // The simulated node drains at once (its drain has no jobs to wait for).
                Output::Drain { epoch } => drained.push(epoch),
                // The simulated device goes back to the other bank at once.
                Output::RollBack { epoch } => rollbacks.push(epoch),
                Output::Event(e) => self.on_event(n, e),
            }
        }
        self.buf = outs;
        if torn {
            self.buf.clear();
            self.touched = touched;
            return self.crash(n, Store::Kept);
        }
        if !device_answers.is_empty() || !drained.is_empty() {
            self.with_node(n, |node, now| {
                for epoch in drained {
                    node.drain_done(now, epoch, Ok(()));
                }
                for (peer, epoch) in device_answers {
                    match peer {
                        Some(peer) => node.link_epoch_applied(now, peer, epoch, Ok(())),
                        None => node.link_epoch_prepared(now, epoch, Ok(())),
                    }
                }
            });
        }
        for epoch in rollbacks {
            let previous = self.nodes[n as usize].dev.previous;
            self.firmware_changed(n, previous);
            self.with_node(n, |node, now| node.rollback_done(now, epoch, Ok(previous)));
        }
        touched.sort_unstable();
        touched.dedup();
        for &link in &touched {
            self.heat(link);
            for side in 0..2 {
                self.update_pause(link, side);
            }
        }
        self.touched = touched;
        if n == 0 && self.m.detected_at.is_none() {
            if let Some(node) = self.nodes[0].node.as_ref() {
                if node.summary().converged() {
                    self.m.detected_at = Some(self.now);
                }
            }
        }
    }

    fn on_event(&mut self, n: u32, e: Event) {
        match e {
            Event::Phase {
                to: Phase::RolledBack,
                epoch,
                ..
            } => {
                let committed = self.topo.adj[n as usize].iter().any(|&(_, link)| {
                    let l = &self.links[link as usize];
                    l.epoch[usize::from(l.ends[1] == n)] >= epoch
                });
                if committed {
                    let (step, now) = (self.step, self.now);
                    self.check.violate(Invariant::Monotonicity, step, now, || {
                        format!("n{n} rolled back after a link committed")
                    });
                }
            }
            Event::LinkCommitted { .. }
                if self.cfg.driver_bug == DriverBug::RollbackAfterCommit =>
            {
                // A buggy driver that swaps the bank back after a link moved.
                let before = self.window_of(self.target().prev());
                self.firmware_changed(n, before);
            }
            _ => {}
        }
    }

    /// A window announced in LINK_HELLO is one the firmware the device runs speaks (a window
    /// is always what the device runs, never what a database said): a peer agrees a new or
    /// lost link's epoch from it.
    fn check_hello_window(&mut self, n: u32, w: entente_proto::Window) {
        let runs = self.nodes[n as usize].dev.running;
        if w.min < runs.min || w.max > runs.max {
            let (step, now) = (self.step, self.now);
            self.check.violate(Invariant::Compatibility, step, now, || {
                format!("n{n} announced firmware window {w:?} in LINK_HELLO but runs {runs:?}")
            });
        }
    }

    /// The node's running firmware changed: every one of its links must still be compatible.
    pub(crate) fn firmware_changed(&mut self, n: u32, w: entente_proto::Window) {
        let old = self.nodes[n as usize].dev.running;
        self.nodes[n as usize].dev.running = w;
        self.nodes[n as usize].dev.previous = old;
        if w.max < old.max {
            let moved = self.topo.adj[n as usize].iter().any(|&(_, link)| {
                let l = &self.links[link as usize];
                l.epoch[0] > w.max || l.epoch[1] > w.max
            });
            if moved {
                let (step, now) = (self.step, self.now);
                self.check.violate(Invariant::Monotonicity, step, now, || {
                    format!("n{n} went back to firmware {w:?} after a link committed")
                });
            }
        }
        let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
        for link in links {
            self.check_compat(link);
        }
    }

    pub(crate) fn persist_done(&mut self, n: u32, inc: u32) {
        let sn = &mut self.nodes[n as usize];
        if sn.inc != inc {
            return;
        }
        let now_seq = sn.persist_seq;
        for (seq, r) in std::mem::take(&mut sn.pending) {
            sn.durable.apply(&r);
            sn.durable_seq = seq;
        }
        debug_assert!(sn.durable_seq <= now_seq);
    }

    /// Fetches the campaign's image into the inactive bank, chunk by chunk; an image the
    /// device holds already (fetched before, or running: a semantics downgrade) is not fetched
    /// again.
    fn stage(&mut self, n: u32, c: entente_proto::msg::Campaign) {
        let chunks = self.cfg.chunks;
        let dev = &mut self.nodes[n as usize].dev;
        if dev.image != Some(c.image_digest) {
            dev.image = Some(c.image_digest);
            dev.staged = false;
            dev.corrupt_image = false;
            dev.verified_chunks = if dev.firmware == c.image_digest {
                chunks
            } else {
                0
            };
        }
        dev.image_epoch = c.epoch;
        let inc = self.nodes[n as usize].inc;
        self.schedule(self.now + self.cfg.chunk_time, Ev::Chunk { node: n, inc });
    }

    pub(crate) fn chunk(&mut self, n: u32, inc: u32) {
        let chunks = self.cfg.chunks;
        let sn = &self.nodes[n as usize];
        if sn.inc != inc || sn.node.is_none() {
            return;
        }
        if sn.dev.verified_chunks < chunks {
            let corrupt = self.fault_active() && self.rng.chance(self.cfg.corrupt);
            let sn = &mut self.nodes[n as usize];
            if corrupt && self.cfg.driver_bug != DriverBug::SkipChunkVerify {
                // Digest mismatch: the chunk is fetched again, nothing is written.
                return self.schedule(self.now + self.cfg.chunk_time, Ev::Chunk { node: n, inc });
            }
            sn.dev.verified_chunks += 1;
            sn.dev.corrupt_image |= corrupt;
            if sn.dev.verified_chunks < chunks {
                return self.schedule(self.now + self.cfg.chunk_time, Ev::Chunk { node: n, inc });
            }
        }
        let dev = &mut self.nodes[n as usize].dev;
        dev.staged = true;
        let epoch = dev.image_epoch;
        self.with_node(n, |node, now| node.staged(now, epoch, true));
    }

    fn activate(&mut self, n: u32, epoch: entente_proto::Epoch, disruptive: bool) {
        let dev = &self.nodes[n as usize].dev;
        if dev.running.contains(epoch) {
            // Already running it (activated while the agent was down): report at once.
            let ev = Ev::ActivationEnd {
                node: n,
                epoch,
                ok: true,
                disruptive: false,
                real: false,
            };
            return self.schedule(self.now + MS, ev);
        }
        if dev.activating {
            return;
        }
        if dev.corrupt_image {
            let (step, now) = (self.step, self.now);
            self.check.violate(Invariant::Integrity, step, now, || {
                format!("n{n} activated an image whose chunks do not match the manifest")
            });
        }
        self.nodes[n as usize].dev.activating = true;
        // The neighbours over the links the node holds live: a retired link is outside the live
        // graph (its ends ask each other for no lease), until its end hears of the restore.
        let nbrs: Vec<u32> = if disruptive {
            self.live_neighbours(n)
        } else {
            Vec::new()
        };
        let down: Vec<u32> = nbrs
            .iter()
            .copied()
            .filter(|&p| self.nodes[p as usize].disrupts.is_some())
            .collect();
        if !down.is_empty() {
            // A node grants no lease while it is disrupted or about to be: two neighbours are
            // never in a disruptive activation at once, whatever the budget.
            let (step, now) = (self.step, self.now);
            self.check.violate(Invariant::Budget, step, now, || {
                format!(
                    "n{n} starts a disruptive activation while its neighbours {down:?} are in one"
                )
            });
        }
        if disruptive {
            self.nodes[n as usize].disrupts = Some(nbrs.clone());
            for m in nbrs {
                let c = &mut self.nodes[m as usize].activating_neighbours;
                *c += 1;
                let count = *c;
                let max = self
                    .cfg
                    .max_unavailable
                    .limit(self.topo.adj[m as usize].len());
                if count > max {
                    if crate::world::debug::budget() {
                        let acts: Vec<u32> = self.topo.adj[m as usize]
                            .iter()
                            .map(|&(p, _)| p)
                            .filter(|&p| self.nodes[p as usize].dev.activating)
                            .collect();
                        let g = self.nodes[m as usize]
                            .node
                            .as_ref()
                            .map(|x| x.lease_holders(self.nodes[m as usize].clock.local(self.now)));
                        eprintln!("BUDGET at {} grantor n{m} (alive {}) holders={g:?} activating={acts:?} starting=n{n}", self.now, self.nodes[m as usize].node.is_some());
                    }
                    let (step, now) = (self.step, self.now);
                    self.check.violate(Invariant::Budget, step, now, || {
                        format!(
                            "n{m} has {count} neighbours in a disruptive activation (max {max})"
                        )
                    });
                }
            }
        }
        let (lo, hi) = self.cfg.activation;
        let took = lo + self.rng.below(hi - lo + 1);
        let ok = !(self.fault_active() && self.rng.chance(self.cfg.activation_failure));
        let ev = Ev::ActivationEnd {
            node: n,
            epoch,
            ok,
            disruptive,
            real: true,
        };
        self.schedule(self.now + took, ev);
    }

    pub(crate) fn activation_end(
        &mut self,
        n: u32,
        epoch: entente_proto::Epoch,
        ok: bool,
        disruptive: bool,
        real: bool,
    ) {
        if real {
            self.nodes[n as usize].dev.activating = false;
        }
        if disruptive {
            let nbrs = self.nodes[n as usize].disrupts.take().unwrap_or_default();
            for m in nbrs {
                self.nodes[m as usize].activating_neighbours -= 1;
            }
        }
        if ok && !self.nodes[n as usize].dev.running.contains(epoch) {
            // The staged image runs now, with the window its campaign's manifest gave it.
            let dev = &mut self.nodes[n as usize].dev;
            if let Some(image) = dev.image {
                dev.firmware = image;
            }
            self.firmware_changed(n, self.window_of(epoch));
            if epoch == self.target() {
                self.m.activated += 1;
                self.m.last_activation = self.now;
            }
            self.fito_activated(n);
            self.arm_liveness();
        }
        if disruptive {
            // The reset drops every connection of the node.
            let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
            for link in links {
                self.break_link(link);
            }
        }
        self.with_node(n, |node, now| node.activation_done(now, epoch, ok));
    }

    /// Schedules the crashes and partitions of a fault phase `[start, end)` (Poisson,
    /// whole-cluster rate).
    pub(crate) fn schedule_faults(&mut self, start: Nanos, end: Nanos) {
        let n = self.nodes.len() as f64;
        for t in self.poisson(self.cfg.crash_rate * n, start, end) {
            let node = self.rng.below(n as u64) as u32;
            let store = Store::Kept;
            self.schedule(t, Ev::Crash { node, store });
        }
        for t in self.poisson(self.cfg.partition_rate * n, start, end) {
            self.schedule(t, Ev::Partition);
        }
        for t in self.poisson(self.cfg.wipe_rate * n, start, end) {
            let node = self.rng.below(n as u64) as u32;
            let store = Store::Wiped;
            self.schedule(t, Ev::Crash { node, store });
        }
        for t in self.poisson(self.cfg.torn_rate * n, start, end) {
            let node = self.rng.below(n as u64) as u32;
            self.schedule(t, Ev::Tear { node });
        }
        for t in self.poisson(self.cfg.operator_actions, start, end) {
            self.schedule(t, Ev::Operator);
        }
        for t in self.poisson(self.cfg.restore_rate * n, start, end) {
            let node = self.rng.below(n as u64) as u32;
            let store = Store::Restored;
            self.schedule(t, Ev::Crash { node, store });
        }
        if self.cfg.clock_step_ms > 0.0 {
            for t in self.poisson(crate::config::CLOCK_STEP_RATE * n, start, end) {
                let node = self.rng.below(n as u64) as u32;
                self.schedule(t, Ev::ClockStep { node });
            }
        }
    }

    /// Arrival times of a Poisson process of `rate` per second over `[start, end)`.
    fn poisson(&mut self, rate: f64, start: Nanos, end: Nanos) -> Vec<Nanos> {
        let mut out = Vec::new();
        if rate <= 0.0 {
            return out;
        }
        let mut t = start as f64;
        loop {
            t += -(self.rng.unit().max(1e-12)).ln() / rate * 1e9;
            if t >= end as f64 {
                return out;
            }
            out.push(t as Nanos);
        }
    }

    /// The node's next write is torn: it crashes during it (armed in the fault phase, it fires at
    /// the next write, whenever that is).
    pub(crate) fn tear(&mut self, n: u32) {
        let sn = &mut self.nodes[n as usize];
        if sn.node.is_some() {
            sn.tear = true;
        }
    }

    pub(crate) fn crash(&mut self, n: u32, store: Store) {
        let sn = &mut self.nodes[n as usize];
        sn.tear = false;
        if sn.node.is_none() {
            return;
        }
        sn.node = None;
        sn.store = store;
        sn.inc += 1;
        sn.pending.clear();
        sn.wall_timers.clear();
        let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
        for link in links {
            self.break_link(link);
            // The crashed agent's transport, and what it would have retransmitted, are gone.
            let side = usize::from(self.links[link as usize].ends[1] == n);
            self.links[link as usize].recent[side].clear();
            for side in 0..2 {
                self.update_pause(link, side);
            }
        }
        let down = SEC / 2 + self.rng.below(9 * SEC / 2);
        self.schedule(self.now + down, Ev::Restart { node: n });
    }

    pub(crate) fn restart(&mut self, n: u32) {
        let sn = &mut self.nodes[n as usize];
        if sn.store == Store::Wiped {
            // The store is gone; the device (its firmware, its link epochs, the staged image)
            // and the manifests stay. Durability is then what the peers hold (LINK_HELLO).
            sn.durable = Durable::default();
            sn.starts = 0;
            sn.durable_seq = sn.persist_seq;
            sn.required_seq = sn.persist_seq;
            self.m.wipes += 1;
        }
        if sn.store == Store::Restored {
            // The copy taken at the last start: whatever was written since is gone. The node
            // tells from the link epochs its device holds (`start_node`), or by LINK_HELLO.
            (sn.durable, sn.starts) = sn.backup.clone();
            sn.durable_seq = sn.persist_seq;
            sn.required_seq = sn.persist_seq;
            self.m.restores += 1;
        }
        let sn = &mut self.nodes[n as usize];
        if sn.durable_seq < sn.required_seq {
            let (lost, step, now) = (sn.required_seq - sn.durable_seq, self.step, self.now);
            self.check.violate(Invariant::Durability, step, now, || {
                format!("n{n} restarted {lost} persisted record(s) behind the messages it had sent")
            });
        }
        sn.persist_seq = sn.durable_seq;
        sn.required_seq = sn.durable_seq;
        self.m.last_restart = self.now;
        self.controls_restarted(n);
        self.start_node(n);
        if n == 0 {
            self.offer_campaign();
        }
        let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
        for link in links {
            self.try_connect(link);
        }
        self.fito_restarted(n);
        self.operator_finish();
        self.arm_liveness();
    }

    /// Builds the node from its durable state and the device's running firmware, as the agent
    /// does: a start with an empty store beside manifests it accepted is a lost store, and takes
    /// an incarnation above 0 (and the restart quarantine).
    pub(crate) fn start_node(&mut self, n: u32) {
        let bug = self.cfg.driver_bug;
        let sn = &mut self.nodes[n as usize];
        let wiped = sn.store == Store::Wiped;
        sn.store = Store::Kept;
        sn.cfg.firmware_window = sn.dev.running;
        if wiped && bug == DriverBug::WipeKeepsWindow && sn.manifests {
            // The buggy driver: the window of the manifest it holds, whatever the device runs.
            sn.cfg.firmware_window = sn.manifest_window;
        }
        // The link epochs the device holds: a store behind them was restored from an older
        // copy (the node treats it as lost). The buggy driver does not say.
        sn.cfg.device_links.clear();
        if bug != DriverBug::TrustRestoredStore {
            for &(peer, link) in &self.topo.adj[n as usize] {
                let l = &self.links[link as usize];
                let epoch = l.epoch[usize::from(l.ends[1] == n)];
                sn.cfg.device_links.push((NodeId(u64::from(peer)), epoch));
            }
        }
        let lost = sn.durable.node.is_none() && sn.manifests;
        sn.starts += 1;
        sn.cfg.incarnation_hint = (sn.starts - 1).max(u32::from(lost));
        let local = self.node_time(n);
        let sn = &mut self.nodes[n as usize];
        sn.node = Some(Node::new(sn.cfg.clone(), &sn.durable, local));
        if n == 0 {
            // The campaign's origin watches for convergence, after every start.
            self.watch_at_origin();
        }
        self.with_node(n, |_, _| {});
        let sn = &mut self.nodes[n as usize];
        sn.backup = (sn.durable.clone(), sn.starts);
    }

    /// A partition: one link both ways, one direction, one node isolated, or a split.
    pub(crate) fn partition(&mut self) {
        let dur = SEC + self.rng.below(9 * SEC);
        let until = (self.now + dur).min(self.fault_end);
        if self.cfg.one_way_share > 0.0 && self.rng.chance(self.cfg.one_way_share) {
            return self.one_way_partition(until);
        }
        let kind = self.rng.below(4);
        let nlinks = self.links.len() as u64;
        let cut = |w: &mut World, link: u32, dirs: &[usize]| {
            for &d in dirs {
                let c = &mut w.links[link as usize].cut[d];
                *c = (*c).max(until);
            }
            if dirs.len() == 2 {
                w.break_link(link);
            }
        };
        match kind {
            0 => {
                let link = self.rng.below(nlinks) as u32;
                cut(self, link, &[0, 1]);
            }
            1 => {
                let link = self.rng.below(nlinks) as u32;
                let d = self.rng.below(2) as usize;
                cut(self, link, &[d]);
            }
            2 => {
                let node = self.rng.below(self.nodes.len() as u64) as usize;
                let links: Vec<u32> = self.topo.adj[node].iter().map(|&(_, l)| l).collect();
                for l in links {
                    cut(self, l, &[0, 1]);
                }
            }
            _ => {
                let split = 1 + self.rng.below(self.nodes.len().max(2) as u64 - 1) as u32;
                for l in 0..self.links.len() {
                    let [a, b] = self.links[l].ends;
                    if (a < split) != (b < split) {
                        cut(self, l as u32, &[0, 1]);
                    }
                }
            }
        }
    }

    /// A one-way partition until `until`: one link, or every link of one node (which then
    /// hears but is not heard, or the reverse), loses its messages in one direction while its
    /// connection stays up.
    fn one_way_partition(&mut self, until: Nanos) {
        self.m.one_way_partitions += 1;
        let cut: Vec<(u32, usize)> = if self.rng.below(2) == 0 {
            let link = self.rng.below(self.links.len() as u64) as u32;
            vec![(link, self.rng.below(2) as usize)]
        } else {
            let node = self.rng.below(self.nodes.len() as u64) as u32;
            let deaf = self.rng.below(2) == 0;
            self.topo.adj[node as usize]
                .iter()
                .map(|&(_, link)| {
                    let side = usize::from(self.links[link as usize].ends[1] == node);
                    (link, if deaf { 1 - side } else { side })
                })
                .collect()
        };
        for (link, dir) in cut {
            let t = &mut self.links[link as usize].one_way[dir];
            *t = (*t).max(until);
            self.schedule(until, Ev::OneWayEnd { link });
        }
    }

    /// A one-way partition of `link` ended: a connection that lost messages to it breaks (as a
    /// transport that found its peer silent does), so the protocol resends on a new one.
    pub(crate) fn one_way_end(&mut self, link: u32) {
        let l = &self.links[link as usize];
        if l.dropped && l.one_way.iter().all(|&t| t <= self.now) {
            self.break_link(link);
        }
    }
}
