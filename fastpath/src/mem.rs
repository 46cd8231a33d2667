//! The in-process backend: connections are pairs of bounded crossbeam channels carrying the same
//! frames as the wire (header bytes + payload), so the same decoder and session logic run.

use crate::auth::ClusterKey;
use crate::frame::{FrameHeader, HEADER_LEN};
use crate::session::{Ctx, FrameSink, Limits, Session};
use crate::transport::{
    Config, ConnId, DownReason, Event, NodeId, RefuseReason, SendError, SlotId, Stats, Transport,
    TransportError,
};
use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, Select, Sender, TryRecvError, TrySendError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest receive window the mem backend supports (its channels are sized for it).
pub const MAX_WINDOW: u32 = 1024;
const CHANNEL_CAPACITY: usize = MAX_WINDOW as usize + 4;

/// One frame in flight: header bytes as on the wire, and the payload.
type MemFrame = ([u8; HEADER_LEN], Bytes);

/// One end of an in-process connection.
struct Pipe {
    tx: Sender<MemFrame>,
    rx: Receiver<MemFrame>,
    remote: SocketAddr,
}

/// The in-process "network": where `MemTransport`s listen. Clone it to share.
#[derive(Clone, Default)]
pub struct MemNetwork {
    listeners: Arc<Mutex<HashMap<SocketAddr, Sender<Pipe>>>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    fn dial(&self, from: SocketAddr, to: SocketAddr) -> Result<Pipe, TransportError> {
        let listeners = self.listeners.lock().expect("mem network lock");
        let accept = listeners.get(&to).ok_or(TransportError::NoListener(to))?;
        let (a_tx, b_rx) = bounded(CHANNEL_CAPACITY);
        let (b_tx, a_rx) = bounded(CHANNEL_CAPACITY);
        let far = Pipe {
            tx: b_tx,
            rx: b_rx,
            remote: from,
        };
        accept
            .try_send(far)
            .map_err(|_| TransportError::NoListener(to))?;
        Ok(Pipe {
            tx: a_tx,
            rx: a_rx,
            remote: to,
        })
    }

    /// Opens an unauthenticated connection that sends raw frames, for tests of what a hostile or
    /// broken peer can do.
    pub fn raw_connect(&self, to: SocketAddr) -> Result<RawMemConn, TransportError> {
        let from: SocketAddr = "0.0.0.0:1".parse().expect("address");
        let pipe = self.dial(from, to)?;
        Ok(RawMemConn {
            tx: pipe.tx,
            rx: pipe.rx,
        })
    }
}

/// A raw, unauthenticated mem connection (tests).
pub struct RawMemConn {
    tx: Sender<MemFrame>,
    rx: Receiver<MemFrame>,
}

impl RawMemConn {
    /// Sends arbitrary header bytes (zero-padded or cut to 64) and a payload.
    pub fn send_raw(&self, header: &[u8], payload: &[u8]) {
        let mut h = [0u8; HEADER_LEN];
        let n = header.len().min(HEADER_LEN);
        h[..n].copy_from_slice(&header[..n]);
        let _ = self.tx.try_send((h, Bytes::copy_from_slice(payload)));
    }

    /// Receives one frame, waiting up to `timeout`; `None` on timeout or when the far end closed.
    pub fn recv_raw(&self, timeout: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        self.rx
            .recv_timeout(timeout)
            .ok()
            .map(|(h, p)| (h.to_vec(), p.to_vec()))
    }

    /// Whether the far end dropped the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.rx.try_recv(), Err(TryRecvError::Disconnected))
    }
}

struct MemSink<'a> {
    tx: &'a Sender<MemFrame>,
    broken: &'a mut bool,
}

impl FrameSink for MemSink<'_> {
    fn send_frame(&mut self, header: &FrameHeader, payload: &Bytes, tag: &[u8]) {
        // One copy per tagged frame: frames between threads of one process have no path to
        // forge them on, so an untagged configuration (`FrameMacs::Off`) is the fast one here.
        let payload = if tag.is_empty() {
            payload.clone()
        } else {
            Bytes::from([&payload[..], tag].concat())
        };
        match self.tx.try_send((*header.bytes(), payload)) {
            Ok(()) => {}
            // Credits bound what is in flight below the channel's capacity: full means the peer
            // is gone or broken, as does a disconnected channel.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => *self.broken = true,
        }
    }
}

struct MemConn {
    session: Session,
    tx: Sender<MemFrame>,
    rx: Receiver<MemFrame>,
    started: Instant,
    broken: bool,
}

/// An in-process transport endpoint.
pub struct MemTransport {
    net: MemNetwork,
    local: NodeId,
    addr: SocketAddr,
    key: Arc<ClusterKey>,
    config: Config,
    accept: Receiver<Pipe>,
    conns: Vec<MemConn>,
    generations: HashMap<NodeId, crate::session::PeerMemory>,
    stats: Stats,
    /// Chunks handed to the channel, reported as `BulkSent` by the next poll.
    pending_sent: Vec<(ConnId, SlotId)>,
    /// `Down` events of local closes, reported by the next poll.
    closed_events: Vec<Event>,
}

impl MemTransport {
    /// Listens at `addr` on `net` as node `local`.
    pub fn bind(
        net: &MemNetwork,
        addr: SocketAddr,
        local: NodeId,
        key: ClusterKey,
        config: Config,
    ) -> Result<MemTransport, TransportError> {
        if config.window > MAX_WINDOW || config.window < crate::session::MIN_WINDOW {
            return Err(TransportError::Unavailable(format!(
                "window {} outside {}..={MAX_WINDOW}",
                config.window,
                crate::session::MIN_WINDOW
            )));
        }
        let (tx, rx) = bounded(config.max_pending_handshakes.max(1));
        let mut listeners = net.listeners.lock().expect("mem network lock");
        if listeners.contains_key(&addr) {
            return Err(TransportError::Io {
                what: format!("listen on mem {addr}"),
                source: std::io::ErrorKind::AddrInUse.into(),
            });
        }
        listeners.insert(addr, tx);
        drop(listeners);
        Ok(MemTransport {
            net: net.clone(),
            local,
            addr,
            key: Arc::new(key),
            config,
            accept: rx,
            conns: Vec::new(),
            generations: HashMap::new(),
            stats: Stats::default(),
            pending_sent: Vec::with_capacity(64),
            closed_events: Vec::new(),
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            window: self.config.window,
            bulk_slots: self.config.bulk_slots,
            bulk_slot_len: self.config.bulk_slot_len,
            bulk_in_band: true,
            max_peer_window: u32::MAX,
            frame_macs: self.config.frame_macs,
        }
    }

    fn find(&mut self, conn: ConnId) -> Result<&mut MemConn, SendError> {
        self.conns
            .iter_mut()
            .find(|c| c.session.conn() == Some(conn))
            .ok_or(SendError::NoConnection(conn))
    }

    fn adopt(&mut self, pipe: Pipe, session: Session) {
        self.conns.push(MemConn {
            session,
            tx: pipe.tx,
            rx: pipe.rx,
            started: Instant::now(),
            broken: false,
        });
    }

    /// Moves frames: accepts, receives, times out handshakes, drops ended connections.
    fn pump(&mut self, events: &mut Vec<Event>) {
        while let Ok(pipe) = self.accept.try_recv() {
            let pending = self
                .conns
                .iter()
                .filter(|c| c.session.conn().is_none())
                .count();
            if pending >= self.config.max_pending_handshakes {
                events.push(Event::Refused {
                    addr: pipe.remote,
                    reason: RefuseReason::Busy,
                });
                continue;
            }
            let s = Session::acceptor(self.local, self.key.clone(), self.limits(), pipe.remote);
            self.adopt(pipe, s);
        }
        let mut ctx = Ctx {
            events,
            stats: &mut self.stats,
            generations: &mut self.generations,
        };
        for c in &mut self.conns {
            let mut sink = MemSink {
                tx: &c.tx,
                broken: &mut c.broken,
            };
            loop {
                if c.session.is_closed() {
                    break;
                }
                match c.rx.try_recv() {
                    Ok((h, payload)) => {
                        let header = match FrameHeader::decode(&h)
                            .and_then(|hd| hd.verify_payload(&payload).map(|_| hd))
                        {
                            Ok(hd) => hd,
                            Err(e) => {
                                c.session.malformed(e, &mut ctx);
                                break;
                            }
                        };
                        if c.session
                            .on_frame(header, payload, &mut sink, &mut ctx)
                            .is_err()
                        {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        c.session.broken("peer went away", &mut ctx);
                        break;
                    }
                }
            }
            if *sink.broken && !c.session.is_closed() {
                c.session.broken("peer stopped reading", &mut ctx);
            }
            if c.session.conn().is_none()
                && !c.session.is_closed()
                && c.started.elapsed() > self.config.handshake_timeout
            {
                c.session.timed_out(&mut ctx);
            }
        }
        self.conns.retain(|c| !c.session.is_closed());
        replace_older(&mut self.conns, events, &mut self.stats);
    }

    fn wait(&self, timeout: Option<Duration>) {
        let mut sel = Select::new();
        sel.recv(&self.accept);
        for c in &self.conns {
            sel.recv(&c.rx);
        }
        let _ = match timeout {
            Some(t) => sel.ready_timeout(t).ok(),
            None => Some(sel.ready()),
        };
    }
}

/// When a peer's new connection comes up, its older ones go down as `Replaced`.
fn replace_older(conns: &mut Vec<MemConn>, events: &mut Vec<Event>, stats: &mut Stats) {
    let newest: Vec<ConnId> = events
        .iter()
        .filter_map(|e| match e {
            Event::Up(c) => Some(*c),
            _ => None,
        })
        .collect();
    if newest.is_empty() {
        return;
    }
    let mut scratch = HashMap::new();
    for up in newest {
        for c in conns.iter_mut() {
            if let Some(old) = c.session.conn() {
                if old.peer == up.peer && old.generation < up.generation {
                    let mut sink = MemSink {
                        tx: &c.tx,
                        broken: &mut c.broken,
                    };
                    let mut ctx = Ctx {
                        events,
                        stats,
                        generations: &mut scratch,
                    };
                    c.session.close(&mut sink, &mut ctx);
                    if let Some(Event::Down(_, why)) = events.last_mut() {
                        *why = DownReason::Replaced;
                    }
                }
            }
        }
    }
    conns.retain(|c| !c.session.is_closed());
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        if let Ok(mut l) = self.net.listeners.lock() {
            l.remove(&self.addr);
        }
    }
}

impl Transport for MemTransport {
    fn local_id(&self) -> NodeId {
        self.local
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn connect(&mut self, addr: SocketAddr) -> Result<(), TransportError> {
        let pipe = self.net.dial(self.addr, addr)?;
        let mut broken = false;
        let mut sink = MemSink {
            tx: &pipe.tx,
            broken: &mut broken,
        };
        let mut s = Session::connector(
            self.local,
            self.key.clone(),
            self.limits(),
            addr,
            &self.generations,
        );
        s.send_hello(&mut sink);
        self.adopt(pipe, s);
        Ok(())
    }

    fn send(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        let c = self.find(conn)?;
        let mut sink = MemSink {
            tx: &c.tx,
            broken: &mut c.broken,
        };
        c.session.send_data(&payload, &mut sink)
    }

    fn grant_bulk(&mut self, conn: ConnId, len: u32) -> Result<SlotId, SendError> {
        let c = self.find(conn)?;
        let mut sink = MemSink {
            tx: &c.tx,
            broken: &mut c.broken,
        };
        c.session.grant_bulk(len, 0, 0, &mut sink)
    }

    fn decline_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        self.find(conn)
            .map(|c| c.session.decline_grant(slot))
            .unwrap_or(false)
    }

    fn revoke_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        self.find(conn)
            .map(|c| c.session.revoke_grant(slot))
            .unwrap_or(false)
    }

    fn send_bulk(&mut self, conn: ConnId, slot: SlotId, data: Bytes) -> Result<(), SendError> {
        let c = self.find(conn)?;
        let mut sink = MemSink {
            tx: &c.tx,
            broken: &mut c.broken,
        };
        c.session.send_bulk(slot, &data, &mut sink)?;
        // The channel took the chunk: its buffer is shared, nothing more to wait for.
        self.pending_sent.push((conn, slot));
        Ok(())
    }

    fn credits(&self, conn: ConnId) -> Option<u32> {
        self.conns
            .iter()
            .find(|c| c.session.conn() == Some(conn))
            .map(|c| c.session.credits())
    }

    fn close(&mut self, conn: ConnId) {
        let mut scratch = HashMap::new();
        if let Some(c) = self
            .conns
            .iter_mut()
            .find(|c| c.session.conn() == Some(conn))
        {
            let mut sink = MemSink {
                tx: &c.tx,
                broken: &mut c.broken,
            };
            let mut ctx = Ctx {
                events: &mut self.closed_events,
                stats: &mut self.stats,
                generations: &mut scratch,
            };
            c.session.close(&mut sink, &mut ctx);
        }
        self.conns.retain(|c| !c.session.is_closed());
    }

    fn poll(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let before = events.len();
        events.append(&mut self.closed_events);
        for (conn, slot) in self.pending_sent.drain(..) {
            events.push(Event::BulkSent { conn, slot });
        }
        self.pump(events);
        if events.len() == before && timeout != Some(Duration::ZERO) {
            self.wait(timeout);
            self.pump(events);
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.stats
    }
}
