//! Identifiers, epochs, nonces, firmware windows and time: the vocabulary of the protocol.

use core::fmt;

/// A node's stable identity in the cluster.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

/// A transition counter: epoch `e` names the semantics links speak after the `e`-th campaign.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Epoch(pub u64);

/// A per-(link, epoch) proposal counter chosen by the initiator; 0 means "none yet".
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Nonce(pub u64);

/// Simulated or real monotonic time in nanoseconds, supplied by the driver.
pub type Nanos = u64;

/// One millisecond in [`Nanos`].
pub const MS: Nanos = 1_000_000;
/// One microsecond in [`Nanos`].
pub const US: Nanos = 1_000;
/// One second in [`Nanos`].
pub const SEC: Nanos = 1_000_000_000;

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
    /// The epoch before this one (saturating at 0).
    pub fn prev(self) -> Epoch {
        Epoch(self.0.saturating_sub(1))
    }
}

impl Nonce {
    /// The nonce after this one.
    pub fn next(self) -> Nonce {
        Nonce(self.0.saturating_add(1))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}", self.0)
    }
}

/// The inclusive range `[min, max]` of epochs a firmware image can speak.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Window {
    /// Oldest semantics the firmware still speaks.
    pub min: Epoch,
    /// Newest semantics the firmware speaks.
    pub max: Epoch,
}

impl Window {
    /// A window from `min` to `max` inclusive.
    pub const fn new(min: u64, max: u64) -> Window {
        Window {
            min: Epoch(min),
            max: Epoch(max),
        }
    }
    /// Whether `e` lies inside the window.
    pub fn contains(&self, e: Epoch) -> bool {
        self.min <= e && e <= self.max
    }
    /// The epochs both windows speak, if any.
    pub fn intersect(&self, other: &Window) -> Option<Window> {
        let w = Window {
            min: self.min.max(other.min),
            max: self.max.min(other.max),
        };
        (w.min <= w.max).then_some(w)
    }
}

/// Which end of a link a node plays: the lower NodeId initiates every transaction.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Proposes and decides.
    Initiator,
    /// Reflects and waits for the initiator's decision.
    Responder,
}

impl Role {
    /// The role `me` plays on its link to `peer`.
    pub fn of(me: NodeId, peer: NodeId) -> Role {
        if me < peer {
            Role::Initiator
        } else {
            Role::Responder
        }
    }
}

/// The randomness a state machine may use; the driver owns the generator and its seed.
pub trait Rng {
    /// A uniformly distributed 64-bit value.
    fn next_u64(&mut self) -> u64;
    /// A value uniformly distributed in `[0, n)` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// A small, fast, seedable generator (SplitMix64 seeding xoshiro256**), deterministic everywhere.
#[derive(Clone, Debug)]
pub struct SeededRng {
    s: [u64; 4],
}

impl SeededRng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> SeededRng {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        SeededRng {
            s: [split(), split(), split(), split()],
        }
    }
    /// A uniformly distributed float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

impl Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_intersection() {
        assert_eq!(
            Window::new(0, 1).intersect(&Window::new(1, 2)),
            Some(Window::new(1, 1))
        );
        assert_eq!(Window::new(0, 0).intersect(&Window::new(1, 2)), None);
        assert!(Window::new(2, 3).contains(Epoch(3)));
        assert!(!Window::new(2, 3).contains(Epoch(1)));
    }

    #[test]
    fn role_is_lower_id_initiates() {
        assert_eq!(Role::of(NodeId(1), NodeId(2)), Role::Initiator);
        assert_eq!(Role::of(NodeId(2), NodeId(1)), Role::Responder);
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }
}
