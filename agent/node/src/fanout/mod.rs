//! Image fan-out: the pipelined swarm agents move firmware images with (docs/decisions.md,
//! "Image fan-out").
//!
//! Neighbours announce the chunks they hold ([`Holdings`]), including those of an image they
//! are still receiving; a node asks for the chunk its neighbourhood holds least often, of the
//! neighbour it has the fewest requests open with, at most [`FetchParams::per_peer`] per
//! neighbour and [`FetchParams::window`] in all, within the download cap ([`ChunkFetch`]). A
//! node serves requests in turn within the upload cap and forwards each chunk about once while
//! its uplink has a queue, answering BUSY otherwise ([`ServeQueue`]). Every request has a
//! deadline, after which it is asked of another neighbour; a request that cannot be sent for
//! want of credits stays queued. So no fetch waits forever on one neighbour.

mod announce;
mod chunks;
mod fetch;
mod manifest;
mod rate;
mod retention;
mod serve;

pub use announce::{on_connect, Announcements, HAVE_INTERVAL, MAX_ANNOUNCED_ON_CONNECT};
pub use chunks::{ChunkSet, Holdings, ImageId};
pub use fetch::{request_deadline, Ask, ChunkFetch, FetchParams, ImageShape};
pub use manifest::{ManifestFetch, MANIFEST_DEADLINE, MANIFEST_RETRY};
pub use rate::RateLimit;
pub use retention::to_prune;
pub use serve::{Admit, ChunkSender, ServeOutcome, ServeParams, ServeQueue, ServeReq};

/// Nanoseconds in a millisecond.
pub const MS: crate::Nanos = 1_000_000;

/// Which neighbours a node fetches from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Any neighbour that holds a chunk; every node serves what it holds.
    Pipeline,
    /// Only the one source (the baseline: every node pulls from one server).
    PullOne {
        /// The node every other pulls from.
        source: u64,
    },
}

impl Strategy {
    /// Whether a node following this strategy fetches from `peer`.
    pub fn may_fetch_from(self, peer: u64) -> bool {
        match self {
            Strategy::Pipeline => true,
            Strategy::PullOne { source } => source == peer,
        }
    }

    /// Whether serving nodes hold back chunks already forwarded while their uplink is busy.
    pub fn forwards_once(self) -> bool {
        self == Strategy::Pipeline
    }
}

#[cfg(test)]
mod tests;
