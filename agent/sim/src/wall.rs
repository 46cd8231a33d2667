//! Wall-clock steps (`--clock-step-ms`) and the time the driver hands each node: its monotonic
//! clock, which never steps, or, for the wall-clock driver bug, its wall clock.

use crate::config::DriverBug;
use crate::world::{Ev, World};
use entente_proto::node::TimerKey;
use entente_proto::types::Nanos;
use entente_proto::Rng;

impl World {
    fn wall_driver(&self) -> bool {
        self.cfg.driver_bug == DriverBug::WallClock
    }

    /// The time the driver hands node `n` now. The correct driver hands its monotonic clock.
    /// The wall-clock driver hands its wall clock, held at the latest value it handed while a
    /// step back is caught up (so the node sees time stand still, never go back).
    pub(crate) fn node_time(&mut self, n: u32) -> Nanos {
        let wall = self.wall_driver();
        let sn = &mut self.nodes[n as usize];
        let t = if wall {
            sn.clock.wall(self.now).max(sn.handed)
        } else {
            sn.clock.local(self.now)
        };
        sn.handed = t;
        t
    }

    /// The true time at which node `n`'s timer for `at` (on the clock the driver hands it)
    /// fires, if the clock does not step before; never before now.
    pub(crate) fn timer_time(&self, n: u32, at: Nanos) -> Nanos {
        let clock = &self.nodes[n as usize].clock;
        if self.wall_driver() {
            clock.wall_global(at, self.now)
        } else {
            clock.global(at, self.now)
        }
    }

    /// The wall-clock driver keeps the deadline of each timer key (a later one replaces it).
    pub(crate) fn arm_wall_timer(&mut self, n: u32, key: TimerKey, at: Nanos) {
        if !self.wall_driver() {
            return;
        }
        let timers = &mut self.nodes[n as usize].wall_timers;
        timers.retain(|&(k, _)| k != key);
        timers.push((key, at));
    }

    /// A timer event of node `n`'s life `inc`. The correct driver fires it. The wall-clock
    /// driver fires the key's deadline if its wall clock reached it (a step forward fires it
    /// early), waits again if not (a step back delays it), and drops an event whose deadline
    /// fired already.
    pub(crate) fn timer(&mut self, n: u32, inc: u32, key: TimerKey) {
        if self.nodes[n as usize].inc != inc {
            return;
        }
        if self.wall_driver() {
            let t = self.node_time(n);
            let timers = &mut self.nodes[n as usize].wall_timers;
            let Some(i) = timers.iter().position(|&(k, _)| k == key) else {
                return;
            };
            let at = timers[i].1;
            if at > t {
                let when = self.timer_time(n, at);
                return self.schedule(when, Ev::Timer { node: n, inc, key });
            }
            timers.swap_remove(i);
        }
        self.with_node(n, |node, now| node.handle_timer(now, key));
    }

    /// Node `n`'s wall clock steps forward or back by up to `--clock-step-ms`, whether or not
    /// its agent runs; its monotonic clock does not. The wall-clock driver's timers move with it.
    pub(crate) fn clock_step(&mut self, n: u32) {
        let max = (self.cfg.clock_step_ms * 1e6) as u64;
        if max == 0 {
            return;
        }
        let step = self.rng.below(2 * max + 1) as i64 - max as i64;
        let clock = &mut self.nodes[n as usize].clock;
        clock.step = clock.step.saturating_add(step);
        self.m.clock_steps += 1;
        let inc = self.nodes[n as usize].inc;
        let timers = self.nodes[n as usize].wall_timers.clone();
        for (key, at) in timers {
            let when = self.timer_time(n, at);
            self.schedule(when, Ev::Timer { node: n, inc, key });
        }
    }
}
