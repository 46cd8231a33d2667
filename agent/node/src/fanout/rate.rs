//! A token bucket that caps the bytes per second a node moves for images, so that staging never
//! starves the training traffic that shares the NIC. Time is the caller's ([`Nanos`]).

use crate::Nanos;

/// Bytes per second with a burst of a tenth of a second's worth, and at least two chunks (so
/// that any chunk can pass and a request window of two stays full). A rate of 0 means no cap.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Nanos,
}

impl RateLimit {
    /// A cap of `mib_per_s` MiB/s (0: none) that lets chunks of up to `chunk` bytes through,
    /// full at time `now`.
    pub fn new(mib_per_s: f64, chunk: u64, now: Nanos) -> RateLimit {
        let rate = mib_per_s * f64::from(1 << 20);
        let burst = (rate / 10.0).max(2.0 * chunk as f64);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// No cap.
    pub fn unlimited() -> RateLimit {
        RateLimit::new(0.0, 0, 0)
    }

    fn refill(&mut self, now: Nanos) {
        let dt = now.saturating_sub(self.last) as f64 / 1e9;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `bytes` if they may go now.
    pub fn try_take(&mut self, bytes: u64, now: Nanos) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }

    /// Gives back `bytes` taken for something that did not go.
    pub fn refund(&mut self, bytes: u64) {
        if self.rate != 0.0 {
            self.tokens = (self.tokens + bytes as f64).min(self.burst);
        }
    }

    /// Whether `bytes` may go now, taking nothing (see [`RateLimit::charge`]).
    pub fn allows(&mut self, bytes: u64, now: Nanos) -> bool {
        self.rate == 0.0 || {
            self.refill(now);
            self.tokens >= bytes as f64
        }
    }

    /// Takes `bytes` that went (tokens may go below zero: the debt delays what follows).
    pub fn charge(&mut self, bytes: u64, now: Nanos) {
        if self.rate != 0.0 {
            self.refill(now);
            self.tokens -= bytes as f64;
        }
    }

    /// Nanoseconds until `bytes` may go (zero when they may go now).
    pub fn wait_for(&mut self, bytes: u64, now: Nanos) -> Nanos {
        if self.rate == 0.0 {
            return 0;
        }
        self.refill(now);
        let short = bytes as f64 - self.tokens;
        if short <= 0.0 {
            0
        } else {
            (short / self.rate * 1e9).ceil() as Nanos
        }
    }
}
