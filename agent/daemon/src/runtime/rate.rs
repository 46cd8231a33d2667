//! A token bucket that caps the bytes per second an agent moves for images, so that staging
//! never starves the training traffic that shares the NIC.

use std::time::{Duration, Instant};

/// Bytes per second with a burst of a tenth of a second's worth, and at least two chunks (so
/// that any chunk can pass and a request window of two stays full). A rate of 0 means no cap.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A cap of `mib_per_s` MiB/s (0: none) that lets chunks of up to `chunk` bytes through.
    pub fn new(mib_per_s: f64, chunk: u64) -> RateLimit {
        let rate = mib_per_s * f64::from(1 << 20);
        let burst = (rate / 10.0).max(2.0 * chunk as f64);
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `bytes` if they may go now.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> bool {
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

    /// Whether `bytes` may go now, taking nothing (see [`RateLimit::charge`]).
    pub fn allows(&mut self, bytes: u64, now: Instant) -> bool {
        self.rate == 0.0 || {
            self.refill(now);
            self.tokens >= bytes as f64
        }
    }

    /// Takes `bytes` that went (tokens may go below zero: the debt delays what follows).
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        if self.rate != 0.0 {
            self.refill(now);
            self.tokens -= bytes as f64;
        }
    }

    /// How long until `bytes` may go (zero when they may go now).
    pub fn wait_for(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        self.refill(now);
        let short = bytes as f64 - self.tokens;
        if short <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(short / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_the_rate_and_refills_with_time() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100.0, 1 << 20);
        assert!(
            r.try_take(10 << 20, t0),
            "a tenth of a second's worth passes"
        );
        assert!(!r.try_take(1, t0));
        assert!(r.wait_for(5 << 20, t0) >= Duration::from_millis(49));
        assert!(!r.try_take(5 << 20, t0 + Duration::from_millis(40)));
        assert!(r.try_take(5 << 20, t0 + Duration::from_millis(60)));
    }

    #[test]
    fn charges_after_the_fact_make_a_debt() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 1 << 20);
        assert!(
            r.allows(2 << 20, t0) && r.allows(2 << 20, t0),
            "allows takes nothing"
        );
        r.charge(3 << 20, t0);
        assert!(!r.allows(1, t0));
        assert!(!r.allows(1, t0 + Duration::from_millis(90)));
        assert!(r.allows(1 << 20, t0 + Duration::from_millis(210)));
    }

    #[test]
    fn zero_means_no_cap() {
        let mut r = RateLimit::new(0.0, 1 << 20);
        let t = Instant::now();
        assert!((0..1000).all(|_| r.try_take(1 << 30, t)));
        assert_eq!(r.wait_for(1 << 30, t), Duration::ZERO);
    }

    #[test]
    fn a_slow_cap_still_passes_two_chunks_at_once() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0.5, 1 << 20);
        assert!(r.try_take(1 << 20, t0) && r.try_take(1 << 20, t0));
        assert!(!r.try_take(1 << 20, t0 + Duration::from_secs(1)));
        assert!(r.try_take(1 << 20, t0 + Duration::from_secs(2)));
    }
}
