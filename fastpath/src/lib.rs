//! entente-fastpath: the messaging layer between agents.
//!
//! It carries opaque frames (it knows nothing of the protocol) over one of three backends behind
//! the [`Transport`] trait: [`mem`] (in-process), [`tcp`] (the fallback where there is no RDMA) and
//! `verbs` (RDMA RC queue pairs through rdma_cm, behind the `rdma` feature). Connections are
//! authenticated with an HMAC-SHA256 challenge over the cluster key, have a generation, and report
//! `Up` / `Down`; they never resend across connections (the protocol above does).
//!
//! Control messages are ≤ 4 KiB frames; anything larger goes as a bulk chunk into a receive slot
//! the receiver granted for that one chunk. Flow control is by credits, the same on every backend
//! ([`credit`]), so back-pressure is visible (`SendError::NoCredits`) and no queue is unbounded.
//!
//! `unsafe` is allowed in this crate only where a system interface needs it (the tcp read into
//! uninitialised buffer space and the verbs backend); each block carries its SAFETY comment.

#![deny(missing_docs)]

mod admission;
pub mod auth;
pub mod credit;
pub mod frame;
pub mod mem;
pub mod session;
pub mod tcp;
pub mod transport;
#[cfg(feature = "rdma")]
pub mod verbs;

pub use admission::RefusalLog;
pub use auth::{ClusterKey, FrameMacs, KeyError};
pub use frame::{FrameError, FrameHeader, Kind, HEADER_LEN, MAX_CONTROL_PAYLOAD};
pub use mem::{MemNetwork, MemTransport};
pub use tcp::TcpTransport;
pub use transport::{
    Config, ConnId, DownReason, Event, NodeId, RefuseReason, SendError, SlotId, Stats, Transport,
    TransportError,
};
#[cfg(feature = "rdma")]
pub use verbs::VerbsTransport;
