//! Connections to peers: dialing, transport events, sending with back-pressure, probes.

use super::Agent;
use crate::config::{Config, TransportKind};
use crate::envelope::Envelope;
use anyhow::Result;
use bytes::Bytes;
use entente_api::{HistoryEvent, HistoryKind};
use entente_fastpath::{ClusterKey, ConnId, DownReason, Event as NetEvent, SendError, Transport};
use entente_proto::{Message, NodeId};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Messages queued for a peer whose credits ran out; past this the connection is cut (and the
/// protocol resynchronises on the next one) rather than a queue growing without bound.
const MAX_QUEUED: usize = 4096;
/// Interval between probes on a link while a campaign moves links.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Interval between probes when this node has nothing in motion.
const PROBE_IDLE: Duration = Duration::from_millis(500);
/// A dial in progress is not repeated before this (the transports give up a handshake after
/// 5 s and report `Refused`, which redials after the back-off): on a slow host a handshake can
/// outlast the back-off, and stacked attempts slow every handshake further.
const DIAL_PENDING: Duration = Duration::from_secs(6);
/// Connections refused from addresses that are no configured peer's are logged as one count per
/// this interval, not one line each.
pub(super) const REFUSALS_EVERY: Duration = Duration::from_secs(10);

/// One configured peer.
pub struct PeerLink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The live connection, if any.
    pub conn: Option<ConnId>,
    next_dial: Instant,
    backoff: Duration,
    queue: VecDeque<Bytes>,
}

impl PeerLink {
    /// A peer not yet connected.
    pub fn new(addr: SocketAddr) -> PeerLink {
        PeerLink {
            addr,
            conn: None,
            next_dial: Instant::now(),
            backoff: Duration::from_millis(50),
            queue: VecDeque::new(),
        }
    }
}

/// The configured transport, listening.
pub fn open_transport(
    cfg: &Config,
    key: ClusterKey,
    fast: entente_fastpath::Config,
) -> Result<Box<dyn Transport>> {
    match cfg.transport.kind {
        TransportKind::Tcp => Ok(Box::new(entente_fastpath::TcpTransport::bind(
            cfg.listen,
            cfg.node_id,
            key,
            fast,
        )?)),
        TransportKind::Verbs => open_verbs(cfg, key, fast),
    }
}

#[cfg(feature = "rdma")]
fn open_verbs(
    cfg: &Config,
    key: ClusterKey,
    fast: entente_fastpath::Config,
) -> Result<Box<dyn Transport>> {
    Ok(Box::new(entente_fastpath::VerbsTransport::bind(
        cfg.listen,
        cfg.node_id,
        key,
        fast,
    )?))
}

#[cfg(not(feature = "rdma"))]
fn open_verbs(
    _: &Config,
    _: ClusterKey,
    _: entente_fastpath::Config,
) -> Result<Box<dyn Transport>> {
    anyhow::bail!("transport.kind = \"verbs\" needs entented built with the `rdma` feature")
}

impl Agent {
    /// Dials peers this node is responsible for (the lower id of a link dials), with back-off.
    pub(super) fn dial(&mut self) {
        let me = self.cfg.node_id;
        let now = Instant::now();
        if let Some(line) = self.refusals.summary(now) {
            tracing::warn!("{line}");
        }
        for (&id, p) in self.peers.iter_mut() {
            if id < me || p.conn.is_some() || now < p.next_dial {
                continue;
            }
            p.next_dial = now + DIAL_PENDING;
            p.backoff = (p.backoff * 2).min(Duration::from_secs(2));
            if let Err(e) = self.transport.connect(p.addr) {
                tracing::debug!(peer = id, "dial {}: {e}", p.addr);
                p.next_dial = now + p.backoff;
            }
        }
    }

    pub(super) fn on_net(&mut self, e: NetEvent) -> Result<()> {
        let now = self.now();
        match e {
            NetEvent::Up(conn) => {
                let Some(p) = self.peers.get_mut(&conn.peer) else {
                    tracing::warn!(
                        peer = conn.peer,
                        "an authenticated node that is not a configured peer connected: closed"
                    );
                    self.history(
                        HistoryEvent::new(
                            HistoryKind::Peer,
                            format!("refused unknown peer {}", conn.peer),
                        )
                        .peer(conn.peer)
                        .reason("not a configured peer"),
                    );
                    self.transport.close(conn);
                    return Ok(());
                };
                // A newer connection replaces one whose end was not seen yet: everything owed on
                // the old one (requests, slots, the node's link session) ends with it first.
                let replaced = p.conn.replace(conn).filter(|old| *old != conn);
                p.backoff = Duration::from_millis(50);
                p.queue.clear();
                if let Some(old) = replaced {
                    tracing::info!(peer = conn.peer, "connection replaced by a newer one");
                    self.node.handle_down(now, NodeId(old.peer), old.generation);
                    self.fetch_peer_down(old.peer);
                }
                tracing::info!(peer = conn.peer, generation = conn.generation, "connected");
                self.node.handle_up(now, NodeId(conn.peer), conn.generation);
                self.announce_all(conn);
            }
            NetEvent::Down(conn, why) => {
                if let Some(p) = self.peers.get_mut(&conn.peer) {
                    if p.conn == Some(conn) {
                        p.conn = None;
                        p.queue.clear();
                        p.next_dial = Instant::now() + Duration::from_millis(20);
                        match &why {
                            DownReason::Protocol(what) => {
                                tracing::warn!(peer = conn.peer, "connection cut: {what}")
                            }
                            _ => tracing::info!(peer = conn.peer, "disconnected: {why:?}"),
                        }
                        self.node
                            .handle_down(now, NodeId(conn.peer), conn.generation);
                        self.fetch_peer_down(conn.peer);
                    }
                }
            }
            NetEvent::Message(conn, payload) => {
                if self.peers.get(&conn.peer).and_then(|p| p.conn) != Some(conn) {
                    return Ok(()); // a replaced connection's leftovers
                }
                match Envelope::decode(&payload) {
                    Ok(Envelope::Proto(Message::Control(_))) => self.unsigned_control(conn.peer),
                    Ok(Envelope::Statement(line)) => self.peer_statement(conn.peer, &line)?,
                    Ok(Envelope::Proto(m)) => {
                        if matches!(m, Message::Txn(_) | Message::Hello(_)) {
                            tracing::debug!(peer = conn.peer, "recv {m:?}");
                        }
                        self.node.handle_message(now, NodeId(conn.peer), m)
                    }
                    Ok(Envelope::ManifestReq { digest, slot }) => {
                        self.serve_manifest(conn, digest, slot)
                    }
                    Ok(Envelope::ChunkReq { image, index, slot }) => {
                        self.queue_chunk(conn, image, index, slot)
                    }
                    Ok(Envelope::Have {
                        image,
                        chunks,
                        bitmap,
                    }) => self.on_have(conn, image, chunks, bitmap),
                    Ok(Envelope::NotYet { slot }) => self.fetch_not_yet(conn, slot, false),
                    Ok(Envelope::Busy { slot }) => self.fetch_not_yet(conn, slot, true),
                    Err(e) => {
                        tracing::warn!(peer = conn.peer, "{e}: connection closed");
                        self.history(
                            HistoryEvent::new(
                                HistoryKind::Peer,
                                format!("peer {} sent a malformed message: {e}", conn.peer),
                            )
                            .peer(conn.peer)
                            .reason(e.to_string()),
                        );
                        self.transport.close(conn);
                    }
                }
            }
            NetEvent::Bulk { conn, slot, data } => self.fetch_bulk(conn, slot, data)?,
            NetEvent::Writable(conn) => self.flush(conn),
            NetEvent::Refused { addr, reason } => {
                // A configured peer's refusal is worth its own line; anyone else's are counted
                // (a flood of them must not flood the log).
                if self.peers.values().any(|p| p.addr.ip() == addr.ip()) {
                    tracing::warn!("connection with {addr} refused: {reason:?}");
                } else {
                    tracing::debug!("connection with {addr} refused: {reason:?}");
                    self.refusals.record(addr, &reason);
                }
                let now = Instant::now();
                for p in self
                    .peers
                    .values_mut()
                    .filter(|p| p.addr == addr && p.conn.is_none())
                {
                    p.next_dial = p.next_dial.min(now + p.backoff);
                }
            }
            NetEvent::BulkSent { conn, slot } => self.serve.left(conn.peer, slot),
            NetEvent::BulkGrant { .. } => {}
        }
        Ok(())
    }

    /// Sends a protocol message on the connection of generation `generation`, or drops it if
    /// that connection is gone (what the node decided for one connection never travels on
    /// another).
    pub(super) fn send_proto(&mut self, to: u64, generation: u64, msg: Message) {
        let Some(conn) = self.peers.get(&to).and_then(|p| p.conn) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        if matches!(msg, Message::Txn(_) | Message::Hello(_)) {
            tracing::debug!(peer = to, generation, "send {msg:?}");
        } else {
            tracing::trace!(peer = to, generation, "send {msg:?}");
        }
        let envelope = match msg {
            // A control travels as the operator's signed statement, which the neighbour checks.
            Message::Control(c) => match self.statement_for(&c) {
                Some(line) => Envelope::Statement(line),
                None => return,
            },
            msg => Envelope::Proto(msg),
        };
        envelope.encode(&mut self.buf);
        let payload = Bytes::copy_from_slice(&self.buf);
        self.send_on(conn, payload);
    }

    /// Sends `payload` on `conn`, queueing it behind earlier ones while credits are out.
    pub(super) fn send_on(&mut self, conn: ConnId, payload: Bytes) {
        let Some(p) = self.peers.get_mut(&conn.peer) else {
            return;
        };
        if p.queue.is_empty() {
            match self.transport.send(conn, payload.clone()) {
                Ok(()) => return,
                Err(SendError::NoCredits(_)) => {}
                Err(e) => {
                    tracing::error!(peer = conn.peer, "send: {e}: connection closed");
                    self.transport.close(conn);
                    return;
                }
            }
        }
        if p.queue.len() >= MAX_QUEUED {
            tracing::warn!(peer = conn.peer, "peer is not reading: connection closed");
            self.transport.close(conn);
            return;
        }
        p.queue.push_back(payload);
    }

    fn flush(&mut self, conn: ConnId) {
        let Some(p) = self.peers.get_mut(&conn.peer) else {
            return;
        };
        while let Some(m) = p.queue.front() {
            match self.transport.send(conn, m.clone()) {
                Ok(()) => {
                    p.queue.pop_front();
                }
                Err(SendError::NoCredits(_)) => return,
                Err(_) => {
                    p.queue.clear();
                    return;
                }
            }
        }
    }

    /// Probes every link whose data may flow: the receiver checks them against its link epoch.
    pub(super) fn probe(&mut self) {
        if Instant::now() < self.next_probe {
            return;
        }
        let settled = self.phase_settled()
            && self
                .node
                .links()
                .iter()
                .all(|l| l.state.pending == entente_proto::Pending::None);
        self.next_probe = Instant::now() + if settled { PROBE_IDLE } else { PROBE_EVERY };
        let targets: Vec<(u64, ConnId)> = self
            .peers
            .iter()
            .filter_map(|(&id, p)| p.conn.map(|c| (id, c)))
            .collect();
        for (id, conn) in targets {
            if let Some(epoch) = self.node.send_epoch(NodeId(id)) {
                self.probe_seq += 1;
                let msg = Message::Probe {
                    epoch,
                    seq: self.probe_seq,
                };
                self.send_proto(id, conn.generation, msg);
            }
        }
    }
}
