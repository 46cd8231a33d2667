//! The FITO baselines: a switch at clock time T, and two-phase commit with a cluster-wide pause.
//! Both run the same staging, leases and activation as bilateral (entente-proto with link
//! transactions off); only the link switch-over differs.

use crate::config::Protocol;
use crate::world::{Ev, World, TARGET};
use entente_proto::types::{Nanos, SEC};
use entente_proto::Rng;

/// fito-2pc messages between the coordinator (node 0) and participants.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum TwoPcMsg {
    /// Coordinator → node: stage, activate, then pause and vote.
    Prepare,
    /// Node → coordinator: paused and ready.
    Vote(u32),
    /// Coordinator → node: flip every link.
    Commit,
    /// Node → coordinator: flipped.
    Ack(u32),
    /// Coordinator → node: traffic may resume.
    Resume,
    /// Node → coordinator: resumed.
    Resumed(u32),
}

/// Baseline state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fito {
    /// fito-clock: T as a local clock reading.
    pub switch_at: Nanos,
    /// fito-clock: the node reached T but could not flip yet (down, or not activated).
    due: Vec<bool>,
    flipped: Vec<bool>,
    paused: Vec<bool>,
    prepared: Vec<bool>,
    voted: Vec<bool>,
    acked: Vec<bool>,
    resumed: Vec<bool>,
    coord_votes: Vec<bool>,
    coord_resumed: Vec<bool>,
    votes: usize,
    acks: usize,
    resumes: usize,
    stage: u8,
    /// fito-2pc: when the coordinator had every acknowledgment.
    pub acked_at: Option<Nanos>,
}

impl Fito {
    pub(crate) fn new(n: usize) -> Fito {
        Fito {
            due: vec![false; n],
            flipped: vec![false; n],
            paused: vec![false; n],
            prepared: vec![false; n],
            voted: vec![false; n],
            acked: vec![false; n],
            resumed: vec![false; n],
            coord_votes: vec![false; n],
            coord_resumed: vec![false; n],
            ..Fito::default()
        }
    }
    /// Whether a node holds its traffic (fito-2pc).
    pub(crate) fn paused(&self, n: u32) -> bool {
        self.paused[n as usize]
    }
    /// Every participant resumed (fito-2pc done).
    pub(crate) fn all_resumed(&self) -> bool {
        self.stage >= 3
    }
}

impl World {
    /// fito-clock: the coordinator announces T; each node flips at its own clock's T.
    pub(crate) fn fito_announce(&mut self) {
        let origin = self.nodes[0].clock.local(self.now);
        let t = origin + self.cfg.fito_switch_at;
        self.fito.switch_at = t;
        for n in 0..self.nodes.len() {
            let at = self.nodes[n].clock.global(t, self.now);
            self.schedule(at, Ev::FitoSwitch { node: n as u32 });
        }
    }

    pub(crate) fn fito_switch(&mut self, n: u32) {
        let sn = &self.nodes[n as usize];
        if sn.node.is_none() || !sn.dev.running.contains(TARGET) {
            self.fito.due[n as usize] = true;
        } else {
            self.flip(n);
        }
    }

    fn flip(&mut self, n: u32) {
        if self.fito.flipped[n as usize] {
            return;
        }
        self.fito.flipped[n as usize] = true;
        self.fito.due[n as usize] = false;
        let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
        for link in links {
            let side = usize::from(self.links[link as usize].ends[1] == n);
            self.set_link_epoch(link, side, TARGET);
        }
    }

    /// The node's device now runs the new firmware.
    pub(crate) fn fito_activated(&mut self, n: u32) {
        match self.cfg.protocol {
            Protocol::FitoClock if self.fito.due[n as usize] => self.flip(n),
            Protocol::Fito2pc if self.fito.prepared[n as usize] => self.vote(n),
            _ => {}
        }
    }

    pub(crate) fn fito_restarted(&mut self, n: u32) {
        if self.cfg.protocol == Protocol::FitoClock
            && self.fito.due[n as usize]
            && self.nodes[n as usize].dev.running.contains(TARGET)
        {
            self.flip(n);
        }
    }

    fn send_2pc(&mut self, to: u32, msg: TwoPcMsg) {
        if self.fault_active() && self.rng.chance(self.cfg.loss) {
            return;
        }
        let at = self.now + 2 * self.cfg.mean_delay + self.rng.below(2 * self.cfg.mean_delay);
        self.m.messages += 1;
        self.schedule(at, Ev::TwoPc { to, msg });
    }

    pub(crate) fn two_pc_start(&mut self) {
        for n in 0..self.nodes.len() as u32 {
            self.send_2pc(n, TwoPcMsg::Prepare);
        }
        self.schedule(self.now + SEC, Ev::TwoPcTick);
    }

    fn set_paused(&mut self, n: u32, paused: bool) {
        if self.fito.paused[n as usize] == paused {
            return;
        }
        self.fito.paused[n as usize] = paused;
        let links: Vec<u32> = self.topo.adj[n as usize].iter().map(|&(_, l)| l).collect();
        for link in links {
            let side = usize::from(self.links[link as usize].ends[1] == n);
            self.update_pause(link, side);
        }
    }

    fn vote(&mut self, n: u32) {
        if !self.fito.voted[n as usize] {
            self.fito.voted[n as usize] = true;
            self.set_paused(n, true);
            self.schedule(
                self.now + self.cfg.pause_timeout,
                Ev::PauseTimeout { node: n },
            );
        }
        self.send_2pc(0, TwoPcMsg::Vote(n));
    }

    pub(crate) fn pause_timeout(&mut self, n: u32) {
        if !self.fito.resumed[n as usize] {
            // The participant gives up waiting and resumes traffic on its own.
            self.set_paused(n, false);
        }
    }

    pub(crate) fn two_pc(&mut self, to: u32, msg: TwoPcMsg) {
        if self.nodes[to as usize].node.is_none() {
            return;
        }
        let all = self.nodes.len();
        match msg {
            TwoPcMsg::Prepare => {
                self.fito.prepared[to as usize] = true;
                if self.nodes[to as usize].dev.running.contains(TARGET) {
                    self.vote(to);
                }
            }
            TwoPcMsg::Vote(from) => {
                if self.fito.stage == 0 && !self.fito.coord_votes[from as usize] {
                    self.fito.coord_votes[from as usize] = true;
                    self.fito.votes += 1;
                    if self.fito.votes == all {
                        self.fito.stage = 1;
                        for n in 0..all as u32 {
                            self.send_2pc(n, TwoPcMsg::Commit);
                        }
                    }
                }
            }
            TwoPcMsg::Commit => {
                self.flip(to);
                self.send_2pc(0, TwoPcMsg::Ack(to));
            }
            TwoPcMsg::Ack(from) => {
                if self.fito.stage == 1 && !self.fito.acked[from as usize] {
                    self.fito.acked[from as usize] = true;
                    self.fito.acks += 1;
                    if self.fito.acks == all {
                        self.fito.stage = 2;
                        self.fito.acked_at = Some(self.now);
                        for n in 0..all as u32 {
                            self.send_2pc(n, TwoPcMsg::Resume);
                        }
                    }
                }
            }
            TwoPcMsg::Resume => {
                self.fito.resumed[to as usize] = true;
                self.set_paused(to, false);
                self.send_2pc(0, TwoPcMsg::Resumed(to));
            }
            TwoPcMsg::Resumed(from) => {
                if self.fito.stage == 2 && !self.fito.coord_resumed[from as usize] {
                    self.fito.coord_resumed[from as usize] = true;
                    self.fito.resumes += 1;
                    if self.fito.resumes == all {
                        self.fito.stage = 3;
                    }
                }
            }
        }
    }

    /// Coordinator retransmission: every second, to whoever has not answered the current stage.
    pub(crate) fn two_pc_tick(&mut self) {
        if self.fito.stage >= 3 {
            return;
        }
        if self.nodes[0].node.is_some() {
            for n in 0..self.nodes.len() as u32 {
                let i = n as usize;
                match self.fito.stage {
                    0 if !self.fito.coord_votes[i] => self.send_2pc(n, TwoPcMsg::Prepare),
                    1 if !self.fito.acked[i] => self.send_2pc(n, TwoPcMsg::Commit),
                    2 if !self.fito.coord_resumed[i] => self.send_2pc(n, TwoPcMsg::Resume),
                    _ => {}
                }
            }
        }
        self.schedule(self.now + SEC, Ev::TwoPcTick);
    }
}
