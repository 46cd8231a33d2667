//! Campaign phases: announce, stage, activate, converge, finalize; abort, resume, rollback.

use super::{Event, Gate, Node, Output, Record, TimerKey};
use crate::link::table::Stimulus;
use crate::msg::{Campaign, Control, ControlAction, Message, Pending};
use crate::phase::{Phase, PhaseEntry};
use crate::types::{Epoch, Nanos, NodeId, Window};

impl Node {
    /// The operator starts a campaign on this node (the origin); it floods to every neighbour.
    ///
    /// Returns whether this node holds the campaign now (accepted, or already held). On
    /// acceptance the node record that holds the campaign is emitted (`Output::Persist`) ahead
    /// of the campaign sent to the neighbours: a driver carries out the outputs (the persist made durable) before it
    /// tells the operator the campaign started. After a restart the node re-announces it on
    /// every new connection. `false` (refused, see `Event::CampaignRefused`) tells the operator
    /// nothing started; an operator whose request did not reach a running agent asks again.
    pub fn start_campaign(&mut self, now: Nanos, campaign: Campaign) -> bool {
        self.on_campaign(now, None, campaign);
        self.record.campaign == Some(campaign)
    }

    /// An operator control issued on this node; it floods to every neighbour.
    pub fn control(&mut self, now: Nanos, control: Control) {
        self.on_control(now, None, control);
    }

    pub(super) fn on_campaign(&mut self, now: Nanos, from: Option<NodeId>, c: Campaign) {
        let current = self.record.campaign;
        if let Some(cur) = current {
            if cur.epoch > c.epoch || cur == c {
                return;
            }
            if cur.epoch == c.epoch {
                return self.refuse(c.epoch, "another campaign with the same epoch was accepted");
            }
        }
        if !(c.window.contains(c.epoch) && c.window.contains(c.epoch.prev())) {
            return self.refuse(
                c.epoch,
                "the image must speak both the previous and the new epoch",
            );
        }
        let phase = self.record.phase.phase;
        if !phase.is_settled() {
            return self.refuse(
                c.epoch,
                "the previous campaign has not settled on this node",
            );
        }
        if self
            .links
            .iter()
            .any(|l| !l.retired && !l.state.fresh && !c.window.contains(l.state.committed))
        {
            return self.refuse(c.epoch, "the new image does not speak a current link epoch");
        }
        self.record.campaign = Some(c);
        self.record.staged = false;
        self.record.paused = false;
        self.set_phase(now, Phase::Announced, c.epoch);
        for l in &self.links {
            if let (true, Some(conn)) = (Some(l.peer) != from, l.conn) {
                self.out.push(Output::Send {
                    to: l.peer,
                    conn,
                    msg: Message::Campaign(c),
                });
            }
        }
        // A control for this campaign that arrived before it was kept: it applies now.
        match self.record.last_control.filter(|k| k.epoch == c.epoch) {
            Some(kept) => self.apply_control(now, kept),
            None => self.emit(Output::Stage(c)),
        }
    }

    fn refuse(&mut self, epoch: Epoch, reason: &'static str) {
        self.emit(Output::Event(Event::CampaignRefused { epoch, reason }));
    }

    /// The driver finished staging `epoch` (`ok`: every chunk verified and durable).
    pub fn staged(&mut self, now: Nanos, epoch: Epoch, ok: bool) {
        let Some(c) = self.record.campaign else {
            return;
        };
        if c.epoch != epoch || self.record.phase.phase != Phase::Announced {
            return;
        }
        if !ok {
            self.emit(Output::Event(Event::StagingFailed { epoch }));
            let at = now + self.cfg.retry;
            return self.emit(Output::Timer {
                at,
                key: TimerKey::Retry,
            });
        }
        self.record.staged = true;
        self.set_phase(now, Phase::Staged, epoch);
        // Activates, or, if the device runs the campaign's firmware already (a node that lost
        // its store after it activated, and learned the campaign again from its neighbours),
        // moves straight to Activated: no drain, no leases for an activation that happened.
        self.continue_campaign(now);
    }

    /// Starts activation when allowed: staged, not paused, not already activating.
    pub(super) fn begin_activation(&mut self, now: Nanos) {
        let Some(c) = self.record.campaign else {
            return;
        };
        if self.record.phase.phase != Phase::Staged || self.record.paused || self.gate != Gate::Idle
        {
            return;
        }
        if c.disruptive {
            // Drain first, with its own deadline; leases only once the node is drained.
            self.gate = Gate::Draining;
            self.emit(Output::Drain { epoch: c.epoch });
        } else {
            self.gate = Gate::Activating { since: now };
            self.emit(Output::Activate {
                epoch: c.epoch,
                disruptive: false,
            });
        }
    }

    /// The drain hook finished (`Ok`) or failed or overran its deadline (`Err`, the reason).
    /// Drained: the leases of the activation are asked for now. Failed: tried again after the
    /// retry interval.
    pub fn drain_done(&mut self, now: Nanos, epoch: Epoch, result: Result<(), String>) {
        let current = self.record.campaign.is_some_and(|c| c.epoch == epoch);
        if !current || self.gate != Gate::Draining {
            return;
        }
        self.gate = Gate::Idle;
        match result {
            Ok(()) if self.record.phase.phase == Phase::Staged && !self.record.paused => {
                self.emit(Output::Event(Event::LeasesAsked { epoch }));
                self.gate = Gate::Leasing;
                self.holder.start(self.cfg.id, &self.links);
                self.lease_step(now);
            }
            Ok(()) => {}
            Err(reason) => {
                self.emit(Output::Event(Event::DrainFailed { epoch, reason }));
                let at = now + self.cfg.retry;
                self.emit(Output::Timer {
                    at,
                    key: TimerKey::Retry,
                });
            }
        }
    }

    /// The driver finished the activation (`ok`: firmware running and health check passed).
    pub fn activation_done(&mut self, now: Nanos, epoch: Epoch, ok: bool) {
        let Some(c) = self.record.campaign else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        let since = match self.gate {
            Gate::Activating { since } => Some(since),
            _ => None,
        };
        // Without an activation of ours under way, the device reports one started before a
        // restart: a success still counts (the firmware runs), a failure changes nothing.
        let staged = matches!(self.record.phase.phase, Phase::Staged | Phase::Halted);
        if since.is_none() && !(ok && staged) {
            return;
        }
        self.gate = Gate::Idle;
        self.release_leases(now);
        if let Some(since) = since {
            let took = now.saturating_sub(since);
            if took > u64::from(c.max_activation_ms) * crate::types::MS {
                self.emit(Output::Event(Event::ActivationOverran { epoch, took }));
            }
        }
        if !ok {
            self.emit(Output::Event(Event::ActivationFailed { epoch }));
            let at = now + self.cfg.retry;
            return self.emit(Output::Timer {
                at,
                key: TimerKey::Retry,
            });
        }
        self.running = c.window;
        self.rehello_incompatible();
        if self.record.phase.phase == Phase::Halted {
            return;
        }
        self.set_phase(now, Phase::Activated, epoch);
        self.announce_activated(now);
    }

    /// Tells every neighbour this node activated the campaign's epoch, once its device said it
    /// can take that epoch as a link epoch (until then it could not reflect a PROPOSE).
    pub(super) fn announce_activated(&mut self, now: Nanos) {
        let Some(c) = self.record.campaign else {
            return;
        };
        if self.ctx().ready_for != Some(c.epoch) {
            return;
        }
        for i in 0..self.links.len() {
            if self.links[i].conn.is_some() {
                let to = self.links[i].peer;
                self.send(to, Message::Activated { epoch: c.epoch });
            }
            self.try_propose(now, i);
        }
        self.check_converged(now);
    }

    pub(super) fn on_retry_timer(&mut self, now: Nanos) {
        match (self.record.phase.phase, self.record.campaign) {
            (Phase::Announced, Some(c)) if !self.record.paused => self.emit(Output::Stage(c)),
            (Phase::Staged, _) => self.begin_activation(now),
            _ => {}
        }
    }

    /// Moves to Converged when every live link committed the campaign epoch.
    pub(super) fn check_converged(&mut self, now: Nanos) {
        let Some(c) = self.record.campaign else {
            return;
        };
        if self.record.phase.phase != Phase::Activated {
            return;
        }
        // Every live link committed the epoch and its device speaks it (a lagging device or an
        // incompatible link carries no data, so it has not converged).
        let all = self.links.iter().all(|l| {
            l.retired
                || (!l.state.fresh
                    && !l.incompatible
                    && l.state.committed >= c.epoch
                    && l.device == Some(l.state.committed))
        });
        if all {
            self.set_phase(now, Phase::Converged, c.epoch);
        }
    }

    /// Operator: the cluster converged; retire the old semantics (old bank may be overwritten).
    pub fn finalize(&mut self, now: Nanos) -> bool {
        let e = self.record.phase.epoch;
        if self.record.phase.phase != Phase::Converged {
            return false;
        }
        self.set_phase(now, Phase::Finalized, e);
        true
    }

    /// Operator: go back to the previous firmware. Allowed on a node that activated the
    /// campaign (`Activated`, or `Halted` with the campaign's firmware running) while no link
    /// reflected or committed the epoch; open proposals are aborted first, and
    /// `Output::RollBack` asks the device to run its previous firmware again.
    pub fn rollback(&mut self, now: Nanos) -> bool {
        let e = self.record.phase.epoch;
        let activated = match self.record.phase.phase {
            Phase::Activated => true,
            Phase::Halted => self.running.contains(e) && self.gate == Gate::Idle,
            _ => false,
        };
        if !activated {
            return false;
        }
        let moved = self
            .links
            .iter()
            .any(|l| l.state.committed >= e || matches!(l.state.pending, Pending::Reflecting(_)));
        if moved {
            self.emit(Output::Event(Event::RollbackRefused { epoch: e }));
            return false;
        }
        self.abort_open(now);
        self.set_phase(now, Phase::RolledBack, e);
        self.emit(Output::RollBack { epoch: e });
        true
    }

    /// The activation of `epoch` completed but the node failed its health gate (the device does
    /// not report the new version, reports itself failed, or the operator's health hook said
    /// no): the device runs the campaign's firmware, yet the node never announces it activated,
    /// so no link moves to `epoch`; it rolls back (`Output::RollBack`) and stays `RolledBack`
    /// until an operator resumes it.
    pub fn activation_unhealthy(&mut self, now: Nanos, epoch: Epoch) {
        let Some(c) = self.record.campaign else {
            return;
        };
        let staged = matches!(self.record.phase.phase, Phase::Staged | Phase::Halted);
        if c.epoch != epoch || !(matches!(self.gate, Gate::Activating { .. }) || staged) {
            return;
        }
        self.gate = Gate::Idle;
        self.release_leases(now);
        self.running = c.window;
        self.emit(Output::Event(Event::Unhealthy { epoch }));
        self.abort_open(now);
        self.set_phase(now, Phase::RolledBack, epoch);
        self.emit(Output::RollBack { epoch });
    }

    /// The driver carried out `Output::RollBack` for `epoch`: `Ok` with the window of the
    /// firmware the device runs now, or `Err` when it could not go back (it still runs the
    /// campaign's firmware; the node stays rolled back, and a resume runs the campaign on).
    pub fn rollback_done(&mut self, now: Nanos, epoch: Epoch, result: Result<Window, ()>) {
        let _ = now;
        if self.record.phase.phase != Phase::RolledBack || self.record.phase.epoch != epoch {
            return;
        }
        match result {
            Ok(window) => {
                self.running = window;
                // The campaign's image is no longer staged to run: a resume stages it again.
                self.record.staged = false;
                self.persist_node();
                self.rehello_incompatible();
                self.emit(Output::Event(Event::RolledBack { epoch }));
            }
            Err(()) => self.emit(Output::Event(Event::RollbackFailed { epoch })),
        }
    }

    /// A control, from the operator here (`from` None) or a neighbour: each is applied once
    /// (the highest counter last) and flooded on. One for a campaign this node has not heard of
    /// yet is kept, and applies when the campaign arrives; one for an older campaign only
    /// raises the counter.
    pub(super) fn on_control(&mut self, now: Nanos, from: Option<NodeId>, c: Control) {
        if c.counter <= self.record.control_counter {
            return;
        }
        self.record.control_counter = c.counter;
        self.record.last_control = Some(c);
        for l in &self.links {
            if let (true, Some(conn)) = (Some(l.peer) != from, l.conn) {
                self.out.push(Output::Send {
                    to: l.peer,
                    conn,
                    msg: Message::Control(c),
                });
            }
        }
        let epoch_matches = self.record.campaign.is_some_and(|k| k.epoch == c.epoch);
        if !epoch_matches {
            return self.persist_node();
        }
        self.apply_control(now, c);
    }

    /// Applies a control to the campaign it names, which this node holds.
    fn apply_control(&mut self, now: Nanos, c: Control) {
        match c.action {
            ControlAction::Pause => {
                self.record.paused = true;
                self.persist_node();
            }
            ControlAction::Abort => self.halt(now, c.epoch),
            ControlAction::Rollback => {
                // Roll back where the device runs the campaign's firmware and no link moved;
                // anywhere else (not activated yet, or a link committed) halt as for an abort.
                if !self.rollback(now) {
                    self.halt(now, c.epoch);
                }
            }
            ControlAction::Resume => {
                self.record.paused = false;
                if matches!(self.record.phase.phase, Phase::Halted | Phase::RolledBack) {
                    self.resume_phase(now);
                } else {
                    self.persist_node();
                    self.continue_campaign(now);
                }
            }
        }
    }

    /// Halted(`epoch`): open proposals aborted, a drain or lease acquisition under way
    /// abandoned, no new activation. A node converged, finalized or halted already stays.
    fn halt(&mut self, now: Nanos, epoch: Epoch) {
        let p = self.record.phase.phase;
        if matches!(p, Phase::Converged | Phase::Finalized | Phase::Halted) {
            return self.persist_node();
        }
        self.abort_open(now);
        if self.gate == Gate::Draining {
            self.gate = Gate::Idle;
        }
        if self.gate == Gate::Leasing {
            self.gate = Gate::Idle;
            self.release_leases(now);
        }
        self.set_phase(now, Phase::Halted, epoch);
    }

    /// Aborts every open proposal of this node (initiator side).
    fn abort_open(&mut self, now: Nanos) {
        for i in 0..self.links.len() {
            if matches!(self.links[i].state.pending, Pending::Tentative(_)) {
                let ctx = self.ctx();
                let fx = self.links[i].on_event(Stimulus::LocalFailure, &ctx);
                self.apply_link(now, i, fx);
            }
        }
    }

    /// Halted → the phase the device state supports, then continue.
    fn resume_phase(&mut self, now: Nanos) {
        let Some(c) = self.record.campaign else {
            return;
        };
        let phase = if self.running.contains(c.epoch) {
            Phase::Activated
        } else if self.record.staged {
            Phase::Staged
        } else {
            Phase::Announced
        };
        self.set_phase(now, phase, c.epoch);
        self.continue_campaign(now);
    }

    /// Re-issues whatever the current phase waits for (after restart, resume, unpause).
    fn continue_campaign(&mut self, now: Nanos) {
        let Some(c) = self.record.campaign else {
            return;
        };
        match self.record.phase.phase {
            Phase::Announced if !self.record.paused => self.emit(Output::Stage(c)),
            Phase::Staged => {
                if self.running.contains(c.epoch) {
                    // Activation finished while the agent was down. An acquisition under way
                    // (a resume of a node that re-learned the campaign) is not needed any more.
                    if self.gate == Gate::Draining {
                        self.gate = Gate::Idle;
                    }
                    if self.gate == Gate::Leasing {
                        self.gate = Gate::Idle;
                        self.release_leases(now);
                    }
                    self.set_phase(now, Phase::Activated, c.epoch);
                    self.announce_activated(now);
                } else {
                    self.begin_activation(now);
                }
            }
            Phase::Activated => self.announce_activated(now),
            _ => {}
        }
    }

    pub(super) fn resume_after_restart(&mut self, now: Nanos) {
        self.continue_campaign(now);
    }

    pub(super) fn set_phase(&mut self, now: Nanos, to: Phase, epoch: Epoch) {
        let from = self.record.phase.phase;
        let mut version = self.record.phase.version;
        version.counter += 1;
        self.record.phase = PhaseEntry {
            epoch,
            phase: to,
            version,
        };
        self.persist_node();
        self.summary.set_phase(self.cfg.id, self.record.phase);
        self.gossip_dirty(now);
        self.emit(Output::Event(Event::Phase { from, to, epoch }));
        if to == Phase::Activated && self.device_ready.is_none_or(|(e, _)| e != epoch) {
            self.device_ready = None;
            self.emit(Output::PrepareLinkEpoch { epoch });
        }
    }

    pub(super) fn persist_node(&mut self) {
        self.emit(Output::Persist(Record::Node(self.record.clone())));
    }
}
