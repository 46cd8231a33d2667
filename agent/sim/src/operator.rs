//! The simulated operator (`--operator-actions`): in the fault phase it retires and restores
//! links and pauses, resumes and aborts the campaign at random nodes; when the fault phase ends
//! it resumes the campaign and restores every link it retired, at each end that still holds it
//! retired, and looks again every gossip round until the campaign converged (a restore given
//! at an end that had not heard of a later retire loses to it, as the last action wins), and at
//! every restart. It also tracks which controls reached each node, for the abort checker.

use crate::check::Invariant;
use crate::world::{Ev, World};
use entente_proto::msg::{Control, ControlAction};
use entente_proto::phase::Phase;
use entente_proto::types::{Epoch, NodeId, MS, SEC};
use entente_proto::Rng;

/// What the operator did and has still to do, and what its controls did at each node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Operator {
    /// Per link: retired by the operator and not restored since.
    retired: Vec<bool>,
    /// The links the operator ever retired.
    touched: Vec<u32>,
    /// The counter of the operator's latest control (counters grow; the first is 1).
    counter: u64,
    /// The final resume of the current campaign has not been taken by a node yet.
    resume_pending: bool,
    /// The operator aborted the current campaign at some node.
    pub aborted: bool,
    /// Per node: the highest control counter that reached it, and the campaign an abort
    /// halted there (until a resume with a higher counter reaches it).
    reached: Vec<(u64, Option<Epoch>)>,
}

impl Operator {
    /// An operator that has done nothing yet, for `nodes` nodes and `links` links.
    pub(crate) fn new(nodes: usize, links: usize) -> Operator {
        Operator {
            retired: vec![false; links],
            reached: vec![(0, None); nodes],
            ..Operator::default()
        }
    }

    /// The next campaign starts: nothing of the current one is left to do.
    pub(crate) fn next_campaign(&mut self) {
        self.aborted = false;
        self.resume_pending = false;
    }
}

impl World {
    /// One random operator action: retire a link, restore one the operator retired (or
    /// retire one if none is), or pause, resume or abort the campaign at a random node.
    pub(crate) fn operator_act(&mut self) {
        match self.rng.below(5) {
            0 | 1 => {
                let retired: Vec<u32> = (0..self.links.len() as u32)
                    .filter(|&l| self.op.retired[l as usize])
                    .collect();
                let restore = self.rng.below(2) == 1 && !retired.is_empty();
                let link = if restore {
                    retired[self.rng.below(retired.len() as u64) as usize]
                } else {
                    self.rng.below(self.links.len() as u64) as u32
                };
                self.operator_mark(link, !restore);
            }
            2 => drop(self.operator_control(ControlAction::Pause)),
            3 => drop(self.operator_control(ControlAction::Resume)),
            _ => drop(self.operator_control(ControlAction::Abort)),
        }
    }

    /// The fault phase is over: the campaign is resumed and every retired link restored.
    pub(crate) fn operator_heal(&mut self) {
        if self.cfg.operator_actions > 0.0 {
            self.op.resume_pending = true;
            self.operator_poll();
        }
    }

    /// After the fault phase, until the campaign converged (for at most a minute): the final
    /// resume until an agent took it, and a restore at every running end that holds a link
    /// the operator retired as retired; then again one gossip round later.
    pub(crate) fn operator_poll(&mut self) {
        self.operator_finish();
        if self.m.conv_at.is_none() && self.now < self.fault_end + 60 * SEC {
            self.schedule(self.now + 100 * MS, Ev::OperatorPoll);
        }
    }

    /// After the fault phase, what no running agent took yet (called at the heal, every
    /// gossip round after it, and at every restart).
    pub(crate) fn operator_finish(&mut self) {
        if self.fault_active() || self.cfg.operator_actions <= 0.0 {
            return;
        }
        if self.op.resume_pending && self.operator_control(ControlAction::Resume) {
            self.op.resume_pending = false;
        }
        for link in self.op.touched.clone() {
            let ends = self.links[link as usize].ends;
            for side in 0..2 {
                let (me, peer) = (ends[side], NodeId(u64::from(ends[1 - side])));
                let end = self.nodes[me as usize].node.as_ref();
                if end.and_then(|x| x.link(peer)).is_some_and(|e| e.retired) {
                    self.operator_mark_at(link, side, false);
                }
            }
        }
    }

    /// Retires (or restores) `link` at one of its ends whose agent runs; whether an agent
    /// took it.
    fn operator_mark(&mut self, link: u32, retire: bool) -> bool {
        let ends = self.links[link as usize].ends;
        let first = self.rng.below(2) as usize;
        let Some(side) = [first, 1 - first]
            .into_iter()
            .find(|&s| self.nodes[ends[s] as usize].node.is_some())
        else {
            return false;
        };
        self.operator_mark_at(link, side, retire)
    }

    /// Retires (or restores) `link` at its end `side`; whether the agent there took it (ran,
    /// knew the peer, and did not crash while it wrote the mark).
    fn operator_mark_at(&mut self, link: u32, side: usize, retire: bool) -> bool {
        let ends = self.links[link as usize].ends;
        let (me, peer) = (ends[side], NodeId(u64::from(ends[1 - side])));
        let mut took = false;
        self.with_node(me, |node, now| {
            took = if retire {
                node.retire_link(now, peer)
            } else {
                node.restore_link(now, peer)
            };
        });
        if !took || self.nodes[me as usize].node.is_none() {
            return false;
        }
        self.op.retired[link as usize] = retire;
        if retire && !self.op.touched.contains(&link) {
            self.op.touched.push(link);
        }
        self.m.operator_actions += 1;
        true
    }

    /// Gives a control of the current campaign, with the next counter, at a random node whose
    /// agent runs; whether the agent took it (it did not crash while it wrote it).
    fn operator_control(&mut self, action: ControlAction) -> bool {
        let nodes = self.nodes.len() as u32;
        let start = self.rng.below(u64::from(nodes)) as u32;
        let Some(n) = (0..nodes)
            .map(|k| (start + k) % nodes)
            .find(|&n| self.nodes[n as usize].node.is_some())
        else {
            return false;
        };
        self.op.counter += 1;
        let c = Control {
            epoch: self.target(),
            action,
            counter: self.op.counter,
        };
        self.control_reached(n, c);
        self.with_node(n, |node, now| node.control(now, c));
        if self.nodes[n as usize].node.is_none() {
            return false;
        }
        self.op.aborted |= action == ControlAction::Abort;
        self.m.operator_actions += 1;
        true
    }

    /// Control `c` reached node `n` (from the operator, or from a neighbour): a node applies
    /// each control once, the highest counter last.
    pub(crate) fn control_reached(&mut self, n: u32, c: Control) {
        let r = &mut self.op.reached[n as usize];
        if c.counter <= r.0 {
            return;
        }
        r.0 = c.counter;
        match c.action {
            // A rollback halts or rolls back: no activation starts after it either.
            ControlAction::Abort | ControlAction::Rollback => r.1 = Some(c.epoch),
            ControlAction::Resume => r.1 = None,
            ControlAction::Pause => {}
        }
    }

    /// Node `n` restarts from its store: the controls that reached it are those the store
    /// holds (a lost or older store forgot the later ones; a write torn by the crash was
    /// lost before anything that depended on it was sent). A halted node stays halted.
    pub(crate) fn controls_restarted(&mut self, n: u32) {
        self.op.reached[n as usize] = match &self.nodes[n as usize].durable.node {
            None => (0, None),
            Some(r) => {
                let kept = r
                    .last_control
                    .filter(|c| matches!(c.action, ControlAction::Abort | ControlAction::Rollback));
                let halted = matches!(r.phase.phase, Phase::Halted | Phase::RolledBack)
                    .then_some(r.phase.epoch);
                (r.control_counter, halted.or(kept.map(|c| c.epoch)))
            }
        };
    }

    /// The neighbours of node `n` over the links it holds live (not retired).
    pub(crate) fn live_neighbours(&self, n: u32) -> Vec<u32> {
        let node = self.nodes[n as usize].node.as_ref();
        self.topo.adj[n as usize]
            .iter()
            .map(|&(p, _)| p)
            .filter(|&p| {
                let end = node.and_then(|x| x.link(NodeId(u64::from(p))));
                !end.is_some_and(|e| e.retired)
            })
            .collect()
    }

    /// Node `n` starts an activation of `epoch`: no abort of that campaign may have reached
    /// it since the last resume did.
    pub(crate) fn check_abort(&mut self, n: u32, epoch: Epoch) {
        let (counter, aborted) = self.op.reached[n as usize];
        if aborted == Some(epoch) {
            let (step, now) = (self.step, self.now);
            self.check.violate(Invariant::Abort, step, now, || {
                format!("n{n} starts activating {epoch} after an abort reached it, and no resume since (latest control {counter})")
            });
        }
    }
}
