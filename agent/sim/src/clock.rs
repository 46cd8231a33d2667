//! Node clocks: a fixed offset and a constant rate error against true (simulated) time.

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
}

impl Clock {
    /// Local reading at true time `t`.
    pub fn local(&self, t: Nanos) -> Nanos {
        let t = t as i128;
        (BASE + t + self.offset as i128 + t * self.drift_ppb as i128 / 1_000_000_000) as Nanos
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
            },
            Clock {
                offset: 3_000_000,
                drift_ppb: -100_000,
            },
            Clock::default(),
        ] {
            for t in [0, 1, 999, 12_345_678_901, 3_600 * SEC] {
                let g = c.global(c.local(t), 0);
                assert!(g <= t && c.local(g) == c.local(t), "{c:?} {t} {g}");
            }
        }
    }
}
