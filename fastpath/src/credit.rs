//! Credit-based flow control, identical on every backend.
//!
//! A receiver has `window` receive buffers per connection (on verbs: posted RECV work requests).
//! Every frame after the handshake uses one. Each frame header carries `freed`, the receiver's
//! cumulative count of our frames whose buffers it has freed, so the sender knows how many are
//! free: `available = window - (sent - peer_freed)` (wrapping counters).
//!
//! Deadlock freedom: data frames need two credits, so the last one stays reserved for a `Credit`
//! frame, which returns credits when nothing else would carry them. A receiver sends a `Credit`
//! frame once half its window is unreported; `Credit` frames never trigger one another, so they
//! cannot ping-pong. Together these mean a sender out of credits always has a returning `Credit`
//! frame on the way (docs/decisions.md, "Credits on every backend").

/// Credit state of one connection, both directions.
#[derive(Debug, Clone)]
pub struct Credits {
    /// The peer's receive window.
    peer_window: u32,
    /// Our receive window (what the peer may have outstanding towards us).
    window: u32,
    /// Frames we have sent (wrapping).
    sent: u32,
    /// The peer's latest `freed`: how many of our frames it has freed.
    peer_freed: u32,
    /// Frames we have received (wrapping).
    received: u32,
    /// Frames we have freed.
    freed: u32,
    /// The `freed` value we last sent.
    reported: u32,
    /// A send was refused for lack of credits: announce when they return.
    starved: bool,
}

/// Why a peer's credit accounting was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// The peer claims to have freed frames we never sent.
    #[error("peer reports {claimed} frames freed, only {sent} were sent")]
    FreedTooMany {
        /// The peer's `freed`.
        claimed: u32,
        /// Our count of frames sent.
        sent: u32,
    },
    /// The peer sent beyond the window we granted.
    #[error("peer exceeded our receive window of {window} frames")]
    WindowExceeded {
        /// Our window.
        window: u32,
    },
}

impl Credits {
    /// Fresh counters for a connection whose windows are `ours` and `peers`.
    pub fn new(ours: u32, peers: u32) -> Credits {
        Credits {
            peer_window: peers,
            window: ours,
            sent: 0,
            peer_freed: 0,
            received: 0,
            freed: 0,
            reported: 0,
            starved: false,
        }
    }

    /// Frames the peer can still take from us.
    pub fn available(&self) -> u32 {
        self.peer_window
            .saturating_sub(self.sent.wrapping_sub(self.peer_freed))
    }

    /// Credits available to data-bearing frames (one stays reserved for a `Credit` frame).
    pub fn available_for_data(&self) -> u32 {
        self.available().saturating_sub(1)
    }

    /// The peer's latest report of our frames it freed.
    pub fn peer_freed(&self) -> u32 {
        self.peer_freed
    }

    /// Takes a credit for a data-bearing frame, or records that the sender starved.
    pub fn take_for_data(&mut self) -> bool {
        if self.available() >= 2 {
            self.sent = self.sent.wrapping_add(1);
            true
        } else {
            self.starved = true;
            false
        }
    }

    /// Takes the reserved credit for a `Credit` or `Close` frame.
    pub fn take_for_control(&mut self) -> bool {
        if self.available() >= 1 {
            self.sent = self.sent.wrapping_add(1);
            true
        } else {
            false
        }
    }

    /// The `freed` value to put in an outgoing header (and remember as reported).
    pub fn report(&mut self) -> u32 {
        self.reported = self.freed;
        self.freed
    }

    /// Accounts for one received frame whose header says the peer freed `freed` of ours.
    /// Returns true when credits came back to a starved sender.
    pub fn on_receive(&mut self, freed: u32) -> Result<bool, CreditError> {
        let newly = freed.wrapping_sub(self.peer_freed);
        let outstanding = self.sent.wrapping_sub(self.peer_freed);
        if newly > outstanding {
            return Err(CreditError::FreedTooMany {
                claimed: freed,
                sent: self.sent,
            });
        }
        self.received = self.received.wrapping_add(1);
        if self.received.wrapping_sub(self.reported) > self.window {
            return Err(CreditError::WindowExceeded {
                window: self.window,
            });
        }
        self.peer_freed = freed;
        let woke = self.starved && self.available() >= 2;
        if woke {
            self.starved = false;
        }
        Ok(woke)
    }

    /// Marks one received frame's buffer free.
    pub fn free_one(&mut self) {
        self.freed = self.freed.wrapping_add(1);
    }

    /// Whether enough is unreported that a `Credit` frame should carry it back now.
    pub fn should_return(&self) -> bool {
        let unreported = self.freed.wrapping_sub(self.reported);
        unreported > 0 && unreported >= (self.window / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_credit_stays_reserved() {
        let mut c = Credits::new(4, 4);
        assert!(c.take_for_data());
        assert!(c.take_for_data());
        assert!(c.take_for_data());
        assert!(!c.take_for_data(), "the last credit is reserved");
        assert!(c.take_for_control());
        assert!(!c.take_for_control());
        assert!(
            c.on_receive(4).unwrap(),
            "credits back wake a starved sender"
        );
        assert_eq!(c.available(), 4);
    }

    #[test]
    fn lying_peers_are_caught() {
        let mut c = Credits::new(2, 4);
        assert!(c.take_for_data());
        assert_eq!(
            c.on_receive(2),
            Err(CreditError::FreedTooMany {
                claimed: 2,
                sent: 1
            })
        );
        let mut c = Credits::new(2, 4);
        c.on_receive(0).unwrap();
        c.on_receive(0).unwrap();
        assert_eq!(
            c.on_receive(0),
            Err(CreditError::WindowExceeded { window: 2 })
        );
    }

    #[test]
    fn returns_at_half_window() {
        let mut c = Credits::new(8, 8);
        for _ in 0..3 {
            c.on_receive(0).unwrap();
            c.free_one();
        }
        assert!(!c.should_return());
        c.on_receive(0).unwrap();
        c.free_one();
        assert!(c.should_return());
        c.report();
        assert!(!c.should_return());
    }
}
