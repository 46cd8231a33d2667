//! The `Transport` trait every backend implements, and the types it speaks.

use crate::auth::FrameMacs;
use crate::frame::FrameError;
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A node's identity on the wire (the protocol's `NodeId`).
pub type NodeId = u64;

/// One connection to a peer: the peer and the connection's generation. Generations of a peer
/// only grow; anything addressed to an older generation is refused, never delivered to a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The authenticated peer.
    pub peer: NodeId,
    /// The connection's generation.
    pub generation: u64,
}

/// A bulk receive slot granted by a receiver, valid for one chunk on one connection.
pub type SlotId = u32;

/// Something that happened, returned by [`Transport::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection finished its authenticated handshake.
    Up(ConnId),
    /// A connection broke or was closed; whatever was in flight on it is lost.
    Down(ConnId, DownReason),
    /// A control message, in order, exactly once per connection.
    Message(ConnId, Bytes),
    /// The peer granted us a bulk slot of up to `len` bytes.
    BulkGrant {
        /// The connection the grant belongs to.
        conn: ConnId,
        /// The slot to write into.
        slot: SlotId,
        /// Largest chunk the slot takes.
        len: u32,
    },
    /// A bulk chunk arrived in a slot we granted.
    Bulk {
        /// The connection it arrived on.
        conn: ConnId,
        /// The slot it filled.
        slot: SlotId,
        /// The chunk.
        data: Bytes,
    },
    /// A bulk chunk we sent has left (its buffer is ours again).
    BulkSent {
        /// The connection it was sent on.
        conn: ConnId,
        /// The slot it was written to.
        slot: SlotId,
    },
    /// Credits came back after sends had been refused for lack of them.
    Writable(ConnId),
    /// A connection attempt or inbound connection was refused before it came up.
    Refused {
        /// The remote address.
        addr: SocketAddr,
        /// Why.
        reason: RefuseReason,
    },
}

/// Why a connection went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The peer closed it in order.
    Closed,
    /// We closed it ([`Transport::close`]).
    Local,
    /// The byte stream or queue pair broke.
    Broken(String),
    /// The peer violated the framing (bad frame, sequence, credit or slot): the connection is cut.
    Protocol(String),
    /// A newer connection to the same peer replaced it.
    Replaced,
}

/// Why a connection never came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// The peer's proof did not verify: it does not hold the cluster key.
    Authentication,
    /// The peer sent something other than the expected handshake frame.
    Handshake(String),
    /// The handshake did not finish in time.
    Timeout,
    /// The peer's frames were malformed.
    Malformed(FrameError),
    /// The connection broke during the handshake.
    Broken(String),
    /// Too many handshakes were already in progress.
    Busy,
}

/// Why a send was refused. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No live connection with that id (it went down, or a newer generation replaced it).
    #[error("no live connection {0:?}")]
    NoConnection(ConnId),
    /// The peer has no receive buffer free for us: wait for [`Event::Writable`].
    #[error("no credits on {0:?}: the peer has not freed receive buffers yet")]
    NoCredits(ConnId),
    /// The payload exceeds the limit of its frame kind.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Every bulk slot of this connection is already granted.
    #[error("every bulk slot of {0:?} is in use")]
    NoSlot(ConnId),
    /// The slot was not granted to us, or was already used.
    #[error("slot {slot} of {conn:?} is not granted to us (or was already used)")]
    NotGranted {
        /// The connection.
        conn: ConnId,
        /// The slot.
        slot: SlotId,
    },
}

/// Errors of the transport itself (not of one send).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Nothing listens at that address (mem backend) or it refused the connection.
    #[error("cannot connect to {0}: nothing listens there")]
    NoListener(SocketAddr),
    /// The backend cannot run on this machine.
    #[error("{0}")]
    Unavailable(String),
}

/// Tunables shared by every backend.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receive buffers per connection, i.e. frames a peer may have in flight to us.
    pub window: u32,
    /// Bulk slots per connection (chunks we may have granted at once).
    pub bulk_slots: u32,
    /// Largest bulk chunk we grant.
    pub bulk_slot_len: u32,
    /// Inbound handshakes that may be in progress at once outside the reserved slots (the shared
    /// pool); more are refused ([`RefuseReason::Busy`]). Default 64.
    pub max_pending_handshakes: usize,
    /// Of the shared pool, the most one source address may hold. Default 4.
    pub max_pending_per_source: usize,
    /// The configured peers' addresses: each has handshake slots of its own that strangers cannot
    /// take, and the full [`Config::handshake_timeout`]. An address listed n times (n peers
    /// behind it) has n times the slots. Default: none.
    pub reserved_peers: Vec<IpAddr>,
    /// Reserved handshake slots per entry of [`Config::reserved_peers`]. Default 4.
    pub reserved_handshakes_per_peer: usize,
    /// A handshake we opened, or one from a configured peer's address, not finished in this
    /// time is refused. Default 5 s.
    pub handshake_timeout: Duration,
    /// An inbound handshake from any other address not finished in this time is refused.
    /// Default 2 s.
    pub stranger_handshake_timeout: Duration,
    /// How long `connect` waits for the remote to answer.
    pub connect_timeout: Duration,
    /// How long `poll` spins before sleeping (tcp, verbs; zero, the default: sleep at once). A
    /// spin lowers round trips on an idle machine, but it takes CPU from whatever else runs, and
    /// on a busy node (the GPU jobs the agent shares it with) it makes things worse: opt in only
    /// where a core is reserved for the agent.
    pub busy_poll: Duration,
    /// Whether frames after the handshake carry MAC tags, and whether peers that do not tag
    /// theirs are refused. Default [`FrameMacs::Prefer`].
    pub frame_macs: FrameMacs,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window: 64,
            bulk_slots: 4,
            bulk_slot_len: 4 << 20,
            max_pending_handshakes: 64,
            max_pending_per_source: 4,
            reserved_peers: Vec::new(),
            reserved_handshakes_per_peer: 4,
            handshake_timeout: Duration::from_secs(5),
            stranger_handshake_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            busy_poll: Duration::ZERO,
            frame_macs: FrameMacs::default(),
        }
    }
}

/// Counters a transport keeps (for `entente status` and the conformance suite).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections that came up.
    pub connections_up: u64,
    /// Of those, connections whose frames carry no MAC tag (a peer or this node without frame
    /// MACs: [`crate::auth::FrameMacs`]).
    pub connections_untagged: u64,
    /// Handshakes refused because the peer failed to prove the cluster key, and connections cut
    /// because a frame failed its MAC or lacked it.
    pub auth_failures: u64,
    /// Connections cut because of a malformed frame or a framing violation.
    pub protocol_errors: u64,
    /// Control messages delivered.
    pub messages_received: u64,
    /// Bulk chunks delivered.
    pub bulk_received: u64,
}

/// A messaging backend. Single-threaded: one owner drives it with [`Transport::poll`].
pub trait Transport {
    /// Our node id.
    fn local_id(&self) -> NodeId;
    /// The address we accept connections on.
    fn local_addr(&self) -> SocketAddr;
    /// Starts a connection to `addr`; [`Event::Up`] or [`Event::Refused`] follows from `poll`.
    fn connect(&mut self, addr: SocketAddr) -> Result<(), TransportError>;
    /// Sends a control message (≤ [`crate::frame::MAX_CONTROL_PAYLOAD`] bytes) on `conn`.
    fn send(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError>;
    /// Grants the peer one bulk slot of up to `len` bytes; returns the slot id.
    fn grant_bulk(&mut self, conn: ConnId, len: u32) -> Result<SlotId, SendError>;
    /// Withdraws a grant the peer declined to use (it said it has nothing to send into it), so
    /// the slot can be granted again. Returns whether the grant was open. A chunk written into
    /// a withdrawn slot afterwards is a protocol violation.
    fn revoke_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        let _ = (conn, slot);
        false
    }
    /// Gives up a grant the peer made us, without writing into it (we have nothing to send);
    /// the peer learns it from the layer above and revokes its side. Returns whether the grant
    /// was held.
    fn decline_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        let _ = (conn, slot);
        false
    }
    /// Writes one chunk into a slot the peer granted us.
    fn send_bulk(&mut self, conn: ConnId, slot: SlotId, data: Bytes) -> Result<(), SendError>;
    /// Frames we may still send on `conn` before the peer frees buffers (None: no such connection).
    fn credits(&self, conn: ConnId) -> Option<u32>;
    /// Closes a connection; a `Down(.., Local)` event follows.
    fn close(&mut self, conn: ConnId);
    /// Does pending I/O and appends what happened to `events`, waiting up to `timeout` when there
    /// is nothing to report (`None`: wait until something happens).
    fn poll(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError>;
    /// The counters.
    fn stats(&self) -> Stats;
}
