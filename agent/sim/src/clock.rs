//! Node clocks: a fixed offset and a constant rate error against true (simulated) time, and a
//! wall clock that steps (`--clock-step-ms`) beside the monotonic one.

use entente_proto::types::{Nanos, SEC};

/// Every local clock starts this far ahead of true time, so offsets never go below zero.
const BASE: i128 = 10 * SEC as i128;

/// One node's clock.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Offset from true time, nanoseconds.
    pub offset: i64,
    /// Rate error, parts per billion.
    pub drift_ppb: i64,
    /// Sum of the steps of the node's wall clock so far, nanoseconds: the wall clock reads the
    /// monotonic one plus this (an NTP step, an operator setting the time). The monotonic clock,
    /// which the protocol runs on, never steps.
    pub step: i64,
}

impl Clock {
    /// Local reading at true time `t`.
    pub fn local(&self, t: Nanos) -> Nanos {
        let t = t as i128;
        (BASE + t + self.offset as i128 + t * self.drift_ppb as i128 / 1_000_000_000) as Nanos
    }

    /// Wall-clock reading at true time `t` (0 if steps took it below zero).
    pub fn wall(&self, t: Nanos) -> Nanos {
        (self.local(t) as i128 + self.step as i128).max(0) as Nanos
    }

    /// The true time at which the wall clock reads `wall`, if it does not step again (never
    /// before `now`).
    pub fn wall_global(&self, wall: Nanos, now: Nanos) -> Nanos {
        if wall <= self.wall(now) {
            return now;
        }
        let local = (wall as i128 - self.step as i128).max(0) as Nanos;
        self.global(local, now)
    }

    /// The true time at which this clock reads `local` (never before `now`).
    pub fn global(&self, local: Nanos, now: Nanos) -> Nanos {
        let x = local as i128 - BASE - self.offset as i128;
        let t = x * 1_000_000_000 / (1_000_000_000 + self.drift_ppb as i128);
        let mut t = t.max(0) as Nanos;
        // Integer division may land one tick early: step until the clock has reached `local`.
        while self.local(t) < local {
            t += 1;
        }
        t.max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_inverts_local() {
        for c in [
            Clock {
                offset: -5_000_000,
                drift_ppb: 50_000,
                step: 0,
            },
            Clock {
                offset: 3_000_000,
                drift_ppb: -100_000,
                step: 0,
            },
            Clock::default(),
        ] {
            for t in [0, 1, 999, 12_345_678_901, 3_600 * SEC] {
                let g = c.global(c.local(t), 0);
                assert!(g <= t && c.local(g) == c.local(t), "{c:?} {t} {g}");
            }
        }
    }

    #[test]
    fn a_step_moves_the_wall_clock_only() {
        let mut c = Clock {
            offset: 2_000_000,
            drift_ppb: 30_000,
            step: 0,
        };
        let t = 100 * SEC;
        let (local, wall) = (c.local(t), c.wall(t));
        assert_eq!(local, wall);
        c.step = 7 * SEC as i64;
        assert_eq!((c.local(t), c.wall(t)), (local, wall + 7 * SEC));
        assert_eq!(c.wall_global(c.wall(t), 0), c.global(local, 0));
        // A step back past zero reads zero, never wraps.
        c.step = -(3600 * SEC as i64);
        assert_eq!(c.wall(t), 0);
        assert_eq!(c.wall_global(0, t), t);
    }
}
