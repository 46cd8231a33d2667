//! The RDMA verbs backend (feature `rdma`): RC queue pairs set up through rdma_cm by IP address
//! (RoCE v2), one registered buffer pool per connection allocated once, SEND/RECV of control
//! frames under the same credits as every backend (so receives are always posted: no RNR),
//! inline sends for small frames, selective signalling, and RDMA WRITE WITH IMM of bulk chunks
//! into receive slots granted for one chunk.
//!
//! Protection: each connection has its own protection domain, so a slot's rkey works on that
//! peer's queue pair only; the slot region grants remote write and nothing else. Memory windows
//! (one rkey per chunk) are not used: [`device::devices`] reports `max_mw` so the lab can check
//! the device, and until they are verified on rxe a peer keeps write access to its own slots for
//! the life of its connection (the layer above verifies every chunk's digest).
//!
//! Without an RDMA device (kernels without RDMA return ENOSYS from `ibv_get_device_list`),
//! [`VerbsTransport::bind`] returns `TransportError::Unavailable` naming the cause.

mod cm;
pub mod device;
mod endpoint;
mod resources;

use crate::admission::{Admission, Slot};
use crate::auth::ClusterKey;
use crate::frame::FrameHeader;
use crate::session::{Ctx, FrameSink, Limits, RemoteGrant, Session, MIN_WINDOW};
use crate::transport::{
    Config, ConnId, DownReason, Event, NodeId, RefuseReason, SendError, SlotId, Stats, Transport,
    TransportError,
};
use bytes::{Bytes, BytesMut};
use cm::{CmId, EventChannel};
use endpoint::{Connected, Endpoint, Prepared, Shape, TAG_BULK, TAG_MASK, TAG_RECV, TAG_SEND};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use rdma_sys as ffi;
use resources::SlotLease;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest receive window (receive buffers per connection) the verbs backend accepts.
pub const MAX_WINDOW: u32 = 1024;
const CM_TOKEN: u64 = u64::MAX;
const RESOLVE_TIMEOUT_MS: i32 = 2000;
/// How long a connection we closed waits for its last frames (the CLOSE) to reach the peer
/// before it is disconnected: a disconnect flushes whatever has not been sent yet.
const LINGER: Duration = Duration::from_secs(1);
/// A busy poll reads the connection manager and the clock once in this many rounds.
const SPIN_FULL_EVERY: u32 = 32;

/// Where a connection is in its setup.
enum Link {
    /// Address or route resolution in progress (connector).
    Resolving(CmId),
    /// Resources ready, connect or accept sent, waiting for ESTABLISHED.
    Pending(Endpoint<Prepared>),
    /// Established: the session runs over it.
    Up(Endpoint<Connected>),
    /// Taken apart.
    Gone,
}

/// A physical bulk receive slot.
struct RxSlot {
    /// The grant it serves, if granted.
    granted: Option<SlotId>,
    /// Leased to the application (a delivered chunk not yet dropped).
    busy: Arc<AtomicBool>,
}

struct VerbsConn {
    link: Link,
    session: Option<Session>,
    addr: SocketAddr,
    connector: bool,
    /// The handshake must be done by then.
    deadline: Instant,
    /// The handshake slot an inbound connection holds until it is established.
    slot: Option<Slot>,
    rx_slots: Vec<RxSlot>,
    /// Bulk send buffers in use: the grant slot each one carries.
    tx_busy: Vec<Option<SlotId>>,
    /// Chunks accepted by `send_bulk` (their grant consumed) waiting for a free send buffer;
    /// bounded by the grants the peer may hold open towards us.
    tx_queue: VecDeque<(SlotId, Bytes, RemoteGrant)>,
    broken: Option<String>,
    /// Failed before or after its session: to be taken apart.
    dead: bool,
    /// We closed it: it stays until its last sends completed, or until this instant.
    linger: Option<Instant>,
}

/// The sink that posts a session's frames as SENDs.
struct PostSink<'a> {
    ep: Option<&'a mut Endpoint<Connected>>,
    broken: &'a mut Option<String>,
}

impl FrameSink for PostSink<'_> {
    fn send_frame(&mut self, header: &FrameHeader, payload: &Bytes, tag: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        match self.ep.as_mut() {
            Some(ep) => {
                if let Err(e) = ep.post_frame(header, payload, tag) {
                    *self.broken = Some(format!("post send: {e}"));
                }
            }
            None => *self.broken = Some("send before the connection was established".into()),
        }
    }
}

impl VerbsConn {
    fn sink(&mut self) -> (PostSink<'_>, Option<&mut Session>) {
        let ep = match &mut self.link {
            Link::Up(ep) => Some(ep),
            _ => None,
        };
        (
            PostSink {
                ep,
                broken: &mut self.broken,
            },
            self.session.as_mut(),
        )
    }

    fn conn(&self) -> Option<ConnId> {
        self.session.as_ref().and_then(|s| s.conn())
    }

    fn closed(&self) -> bool {
        self.dead
            || matches!(self.link, Link::Gone)
            || self.session.as_ref().is_some_and(|s| s.is_closed())
    }

    /// Closed, and nothing of ours is still on its way out: it can be taken apart.
    fn finished(&self) -> bool {
        if !self.closed() {
            return false;
        }
        match (&self.link, self.linger) {
            (Link::Up(ep), Some(until)) if !self.dead => ep.sends_done() || Instant::now() >= until,
            _ => true,
        }
    }

    /// Still setting up (no session established yet, not failed).
    fn handshaking(&self) -> bool {
        self.conn().is_none() && !self.closed()
    }
}

/// An RDMA verbs transport endpoint.
pub struct VerbsTransport {
    local: NodeId,
    addr: SocketAddr,
    key: Arc<ClusterKey>,
    config: Config,
    channel: Arc<EventChannel>,
    admission: Admission,
    /// The listening id: kept alive, never read.
    _listener: CmId,
    epoll: Epoll,
    ready: Vec<EpollEvent>,
    /// Connections by their rdma_cm id (the pointer's address).
    conns: HashMap<usize, VerbsConn>,
    generations: HashMap<NodeId, crate::session::PeerMemory>,
    stats: Stats,
    deferred: Vec<Event>,
    wcs: Vec<ffi::ibv_wc>,
    rbuf: BytesMut,
    /// Scratch list of connection tokens (reused: no allocation per poll).
    tokens: Vec<usize>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        what: what.to_owned(),
        source,
    }
}

impl VerbsTransport {
    /// Listens on `addr` (an address of an RDMA-capable interface) as node `local`.
    pub fn bind(
        addr: SocketAddr,
        local: NodeId,
        key: ClusterKey,
        config: Config,
    ) -> Result<VerbsTransport, TransportError> {
        if config.window > MAX_WINDOW || config.window < MIN_WINDOW {
            return Err(TransportError::Unavailable(format!(
                "window {} outside {MIN_WINDOW}..={MAX_WINDOW}",
                config.window
            )));
        }
        device::devices().map_err(|e| TransportError::Unavailable(e.to_string()))?;
        let channel = EventChannel::new().map_err(io_err("rdma_cm event channel"))?;
        let mut listener = CmId::new(&channel).map_err(io_err("rdma_cm id"))?;
        let addr = listener
            .listen(addr, 64)
            .map_err(io_err("listen for RDMA connections"))?;
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| TransportError::Io {
                what: "epoll".into(),
                source: std::io::Error::from_raw_os_error(e as i32),
            })?;
        // SAFETY: the channel's fd lives as long as the channel, which outlives the epoll set
        // registration (both are fields of the transport; the fd is removed on drop of epoll).
        let fd = unsafe { BorrowedFd::borrow_raw(channel.fd()) };
        epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, CM_TOKEN))
            .map_err(|e| TransportError::Io {
                what: "watch the rdma_cm channel".into(),
                source: std::io::Error::from_raw_os_error(e as i32),
            })?;
        Ok(VerbsTransport {
            local,
            addr,
            key: Arc::new(key),
            admission: Admission::new(&config),
            config,
            channel,
            _listener: listener,
            epoll,
            ready: vec![EpollEvent::empty(); 64],
            conns: HashMap::new(),
            generations: HashMap::new(),
            stats: Stats::default(),
            deferred: Vec::new(),
            // SAFETY: a zeroed work completion is a valid out-parameter.
            wcs: (0..32).map(|_| unsafe { std::mem::zeroed() }).collect(),
            rbuf: BytesMut::with_capacity(64 << 10),
            tokens: Vec::new(),
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            window: self.config.window,
            bulk_slots: self.config.bulk_slots,
            bulk_slot_len: self.config.bulk_slot_len,
            bulk_in_band: false,
            max_peer_window: self.config.window,
            frame_macs: self.config.frame_macs,
        }
    }

    fn shape(&self) -> Shape {
        Shape {
            recv_slots: self.config.window + 4,
            send_slots: self.config.window + 16,
            bulk_slots: self.config.bulk_slots,
            bulk_slot_len: self.config.bulk_slot_len,
        }
    }

    fn new_conn(
        &self,
        link: Link,
        addr: SocketAddr,
        connector: bool,
        deadline: Duration,
        slot: Option<Slot>,
    ) -> VerbsConn {
        VerbsConn {
            link,
            session: None,
            addr,
            connector,
            deadline: Instant::now() + deadline,
            slot,
            rx_slots: (0..self.config.bulk_slots)
                .map(|_| RxSlot {
                    granted: None,
                    busy: Arc::new(AtomicBool::new(false)),
                })
                .collect(),
            tx_busy: vec![None; self.config.bulk_slots as usize],
            tx_queue: VecDeque::new(),
            broken: None,
            dead: false,
            linger: None,
        }
    }

    fn watch_cq(&self, token: usize, ep: &mut Endpoint<Prepared>) {
        // SAFETY: the CQ's channel fd lives until the endpoint is dropped, and it is removed
        // from the epoll set before that (`drop_conn`).
        let fd = unsafe { BorrowedFd::borrow_raw(ep.cq().fd()) };
        let _ = self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token as u64));
    }

    fn refuse(events: &mut Vec<Event>, addr: SocketAddr, why: String) {
        events.push(Event::Refused {
            addr,
            reason: RefuseReason::Broken(why),
        });
    }

    /// The connection is established: its session starts (the connector sends HELLO).
    fn establish(&mut self, c: &mut VerbsConn) {
        let Link::Pending(ep) = std::mem::replace(&mut c.link, Link::Gone) else {
            return;
        };
        let mut ep = ep.established();
        let mut session = if c.connector {
            Session::connector(
                self.local,
                self.key.clone(),
                self.limits(),
                c.addr,
                &self.generations,
            )
        } else {
            Session::acceptor(self.local, self.key.clone(), self.limits(), c.addr)
        };
        if c.connector {
            let mut sink = PostSink {
                ep: Some(&mut ep),
                broken: &mut c.broken,
            };
            session.send_hello(&mut sink);
        }
        c.session = Some(session);
        c.link = Link::Up(ep);
    }

    /// Handles connection-manager events.
    fn on_cm_events(&mut self, events: &mut Vec<Event>) {
        use ffi::rdma_cm_event_type::*;
        while let Some(ev) = self.channel.next_event() {
            if !ev.listen_id.is_null() && ev.kind == RDMA_CM_EVENT_CONNECT_REQUEST {
                self.on_connect_request(ev.id, events);
                continue;
            }
            let token = ev.id as usize;
            let Some(mut c) = self.conns.remove(&token) else {
                continue;
            };
            let link = std::mem::replace(&mut c.link, Link::Gone);
            match (ev.kind, link) {
                (RDMA_CM_EVENT_ADDR_RESOLVED, Link::Resolving(mut id)) => {
                    match id.resolve_route(RESOLVE_TIMEOUT_MS) {
                        Ok(()) => c.link = Link::Resolving(id),
                        Err(e) => {
                            Self::refuse(events, c.addr, e.to_string());
                            c.dead = true;
                        }
                    }
                }
                (RDMA_CM_EVENT_ROUTE_RESOLVED, Link::Resolving(id)) => {
                    match Endpoint::new(id, self.shape()).and_then(|ep| ep.connect()) {
                        Ok(mut ep) => {
                            self.watch_cq(token, &mut ep);
                            c.link = Link::Pending(ep);
                        }
                        Err(e) => {
                            Self::refuse(events, c.addr, format!("connect: {e}"));
                            c.dead = true;
                        }
                    }
                }
                (RDMA_CM_EVENT_ESTABLISHED, Link::Pending(ep)) => {
                    c.link = Link::Pending(ep);
                    self.establish(&mut c);
                }
                // The acceptor already took its first receive as the sign of establishment.
                (RDMA_CM_EVENT_ESTABLISHED, Link::Up(ep)) => c.link = Link::Up(ep),
                (kind, link) => {
                    // Anything else ends the connection (DISCONNECTED, REJECTED, UNREACHABLE,
                    // errors). What the peer sent before it went away is delivered first: its
                    // CLOSE, typically, completes on the queue before the disconnect is seen.
                    c.link = link;
                    self.drain_cq(&mut c, events);
                    let why = format!("rdma_cm event {kind} (status {})", ev.status);
                    match c.session.as_mut() {
                        Some(s) => {
                            let mut ctx = Ctx {
                                events,
                                stats: &mut self.stats,
                                generations: &mut self.generations,
                            };
                            s.broken(&why, &mut ctx);
                        }
                        None if !c.dead => Self::refuse(events, c.addr, why),
                        None => {}
                    }
                    c.dead = true;
                }
            }
            if c.finished() {
                self.drop_conn(c);
            } else {
                self.conns.insert(token, c);
            }
        }
    }

    fn on_connect_request(&mut self, raw: *mut ffi::rdma_cm_id, events: &mut Vec<Event>) {
        // SAFETY: a CONNECT_REQUEST's id is new and owned by no one else.
        let mut id = unsafe { CmId::adopt(raw, &self.channel) };
        // SAFETY: the new id's peer address is valid while the id lives.
        let addr = unsafe { cm::socket_addr(ffi::rdma_get_peer_addr(&*raw)) }
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let held = self
            .conns
            .values()
            .filter(|c| c.handshaking())
            .filter_map(|c| c.slot);
        let Some(slot) = self.admission.admit(addr, held) else {
            id.reject();
            events.push(Event::Refused {
                addr,
                reason: RefuseReason::Busy,
            });
            return;
        };
        let deadline = self.admission.deadline(addr.ip());
        match Endpoint::new(id, self.shape()).and_then(|ep| ep.accept()) {
            Ok(mut ep) => {
                self.watch_cq(raw as usize, &mut ep);
                let c = self.new_conn(Link::Pending(ep), addr, false, deadline, Some(slot));
                self.conns.insert(raw as usize, c);
            }
            Err(e) => Self::refuse(events, addr, format!("accept: {e}")),
        }
    }

    fn drop_conn(&mut self, mut c: VerbsConn) {
        match &mut c.link {
            Link::Up(ep) => {
                // SAFETY: the fd is live until `c` is dropped below.
                let fd = unsafe { BorrowedFd::borrow_raw(ep.cq().fd()) };
                let _ = self.epoll.delete(fd);
                ep.id().disconnect();
            }
            Link::Pending(ep) => {
                // SAFETY: as above.
                let fd = unsafe { BorrowedFd::borrow_raw(ep.cq().fd()) };
                let _ = self.epoll.delete(fd);
            }
            _ => {}
        }
        drop(c);
    }

    /// Polls every completion queue and feeds the completions to the sessions.
    fn on_completions(&mut self, events: &mut Vec<Event>) {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        tokens.extend(self.conns.keys().copied());
        for &token in &tokens {
            let Some(mut c) = self.conns.remove(&token) else {
                continue;
            };
            self.drain_cq(&mut c, events);
            if c.finished() {
                self.drop_conn(c);
            } else {
                self.conns.insert(token, c);
            }
        }
        self.tokens = tokens;
    }

    fn drain_cq(&mut self, c: &mut VerbsConn, events: &mut Vec<Event>) {
        loop {
            let n = match &mut c.link {
                Link::Up(ep) => ep.cq().poll(&mut self.wcs),
                Link::Pending(ep) => ep.cq().poll(&mut self.wcs),
                _ => return,
            };
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    c.broken = Some(e.to_string());
                    0
                }
            };
            // The passive side's queue pair is ready to receive before ESTABLISHED reaches
            // us, and the connector sends HELLO as soon as it has its own: a successful
            // completion on a pending endpoint establishes it (dropping it would lose HELLO).
            if matches!(c.link, Link::Pending(_))
                && self.wcs[..n]
                    .iter()
                    .any(|wc| wc.status == ffi::ibv_wc_status::IBV_WC_SUCCESS)
            {
                self.establish(c);
            }
            for i in 0..n {
                let wc = &self.wcs[i];
                let (wr_id, status, opcode, len) = (wc.wr_id, wc.status, wc.opcode, wc.byte_len);
                // SAFETY: reading the immediate-data member of a completion's union (valid for
                // the receive-with-immediate opcode, where it is used).
                let imm = u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data });
                if status != ffi::ibv_wc_status::IBV_WC_SUCCESS {
                    if c.broken.is_none() {
                        c.broken = Some(format!("work request failed with status {status}"));
                    }
                    continue;
                }
                self.on_completion(c, wr_id, opcode, len as usize, imm, events);
            }
            // The peer authenticated: now its bulk regions may be registered.
            if let (Link::Up(ep), Some(s)) = (&mut c.link, c.session.as_ref()) {
                if s.conn().is_some() {
                    if let Err(e) = ep.register_bulk() {
                        c.broken
                            .get_or_insert(format!("register bulk buffers: {e}"));
                    }
                }
            }
            if let Some(why) = c.broken.take() {
                let mut ctx = Ctx {
                    events,
                    stats: &mut self.stats,
                    generations: &mut self.generations,
                };
                match c.session.as_mut() {
                    Some(s) => s.broken(&why, &mut ctx),
                    None => Self::refuse(ctx.events, c.addr, why),
                }
                c.dead = true;
                return;
            }
            if n < self.wcs.len() {
                return;
            }
        }
    }

    fn on_completion(
        &mut self,
        c: &mut VerbsConn,
        wr_id: u64,
        opcode: ffi::ibv_wc_opcode::Type,
        len: usize,
        imm: u32,
        events: &mut Vec<Event>,
    ) {
        let Link::Up(ep) = &mut c.link else {
            return; // completions before ESTABLISHED: flushes only
        };
        let tag = wr_id & TAG_MASK;
        let index = wr_id & !TAG_MASK;
        let mut ctx = Ctx {
            events,
            stats: &mut self.stats,
            generations: &mut self.generations,
        };
        match tag {
            TAG_SEND => ep.send_completed(index),
            TAG_BULK => {
                let buf = index as usize;
                let conn = c.session.as_ref().and_then(Session::conn);
                if let (Some(slot), Some(conn)) = (c.tx_busy[buf].take(), conn) {
                    ctx.events.push(Event::BulkSent { conn, slot });
                }
                if let Some((slot, data, grant)) = c.tx_queue.pop_front() {
                    match ep.post_bulk(buf as u32, &data, grant.addr, grant.rkey, slot) {
                        Ok(()) => c.tx_busy[buf] = Some(slot),
                        Err(e) => c.broken = Some(format!("post bulk write: {e}")),
                    }
                }
            }
            TAG_RECV if opcode == ffi::ibv_wc_opcode::IBV_WC_RECV => {
                self.rbuf.clear();
                ep.read_recv(index as u32, len, &mut self.rbuf);
                if let Err(e) = ep.post_recv(index as u32) {
                    c.broken = Some(format!("repost receive: {e}"));
                    return;
                }
                let frame = self.rbuf.split().freeze();
                let (mut sink, session) = c.sink();
                let Some(session) = session else { return };
                let header = match FrameHeader::decode(&frame) {
                    Ok(h) => *h,
                    Err(e) => {
                        session.malformed(e, &mut ctx);
                        return;
                    }
                };
                let payload = frame.slice(crate::frame::HEADER_LEN..);
                if let Err(e) = header.verify_payload(&payload) {
                    session.malformed(e, &mut ctx);
                    return;
                }
                let _ = session.on_frame(&header, payload, &mut sink, &mut ctx);
            }
            TAG_RECV if opcode == ffi::ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM => {
                if let Err(e) = ep.post_recv(index as u32) {
                    c.broken = Some(format!("repost receive: {e}"));
                    return;
                }
                let Some((mr, slot_len)) = ep.bulk_rx().map(|(mr, l)| (mr.clone(), l)) else {
                    // No region yet: nothing was granted, so the write has no target.
                    c.broken = Some("bulk write before the handshake".into());
                    return;
                };
                let phys = c.rx_slots.iter().position(|s| s.granted == Some(imm));
                let (mut sink, session) = c.sink();
                let Some(session) = session else { return };
                // A write to a slot that was not granted is refused by the session (the
                // connection is cut), whether or not a physical slot matches.
                if let (Ok(conn), Some(phys)) =
                    (session.on_bulk_arrival(imm, len, &mut sink, &mut ctx), phys)
                {
                    let slot = &mut c.rx_slots[phys];
                    slot.granted = None;
                    slot.busy.store(true, Ordering::Release);
                    let lease = SlotLease::new(mr, phys * slot_len, len, slot.busy.clone());
                    ctx.events.push(Event::Bulk {
                        conn,
                        slot: imm,
                        data: Bytes::from_owner(lease),
                    });
                }
            }
            _ => {}
        }
    }

    fn find(&mut self, conn: ConnId) -> Result<&mut VerbsConn, SendError> {
        self.conns
            .values_mut()
            .find(|c| c.conn() == Some(conn))
            .ok_or(SendError::NoConnection(conn))
    }

    fn time_out_handshakes(&mut self, events: &mut Vec<Event>) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.handshaking() && now >= c.deadline)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(c) = self.conns.remove(&t) {
                events.push(Event::Refused {
                    addr: c.addr,
                    reason: RefuseReason::Timeout,
                });
                self.drop_conn(c);
            }
        }
    }

    fn arm_all(&mut self) {
        for c in self.conns.values_mut() {
            match &mut c.link {
                Link::Up(ep) => {
                    ep.cq().take_event();
                    let _ = ep.cq().arm();
                }
                Link::Pending(ep) => {
                    ep.cq().take_event();
                    let _ = ep.cq().arm();
                }
                _ => {}
            }
        }
    }

    /// Does pending work. `full`: the connection manager and the handshake timers too (a
    /// system call and a clock read: a busy poll does them once in `SPIN_FULL_EVERY` rounds,
    /// and polls the completion queues, in user space, every round).
    fn pump(&mut self, events: &mut Vec<Event>, full: bool) {
        let from = events.len();
        if full {
            self.on_cm_events(events);
        }
        self.on_completions(events);
        if full {
            self.time_out_handshakes(events);
        }
        self.replace_older(events, from);
    }

    /// When a peer's new connection comes up, its older ones go down as `Replaced`.
    fn replace_older(&mut self, events: &mut Vec<Event>, from: usize) {
        let ups: Vec<ConnId> = events[from..]
            .iter()
            .filter_map(|e| match e {
                Event::Up(c) => Some(*c),
                _ => None,
            })
            .collect();
        for up in ups {
            let older: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.conn()
                        .is_some_and(|o| o.peer == up.peer && o.generation < up.generation)
                })
                .map(|(t, _)| *t)
                .collect();
            for token in older {
                self.retire(token, events, DownReason::Replaced);
            }
        }
    }

    /// Ends connection `token` from our side: sends CLOSE (the peer sees `Down(Closed)`),
    /// reports `Down(conn, reason)`, and takes the queue pair down once the CLOSE has left.
    fn retire(&mut self, token: usize, events: &mut Vec<Event>, reason: DownReason) {
        let Some(mut c) = self.conns.remove(&token) else {
            return;
        };
        if let Link::Up(ep) = &mut c.link {
            ep.signal_all();
        }
        let mut ctx = Ctx {
            events,
            stats: &mut self.stats,
            generations: &mut self.generations,
        };
        let (mut sink, session) = c.sink();
        if let Some(s) = session {
            s.close(&mut sink, &mut ctx);
            if let Some(Event::Down(_, why)) = ctx.events.last_mut() {
                *why = reason;
            }
        }
        c.linger = Some(Instant::now() + LINGER);
        if c.finished() {
            self.drop_conn(c);
        } else {
            self.conns.insert(token, c);
        }
    }
}

impl Transport for VerbsTransport {
    fn local_id(&self) -> NodeId {
        self.local
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn connect(&mut self, addr: SocketAddr) -> Result<(), TransportError> {
        let mut id = CmId::new(&self.channel).map_err(io_err("rdma_cm id"))?;
        id.resolve_addr(addr, RESOLVE_TIMEOUT_MS)
            .map_err(io_err("resolve the peer's address"))?;
        let token = id.raw() as usize;
        let c = self.new_conn(
            Link::Resolving(id),
            addr,
            true,
            self.config.handshake_timeout,
            None,
        );
        self.conns.insert(token, c);
        Ok(())
    }

    fn send(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        let c = self.find(conn)?;
        let (mut sink, session) = c.sink();
        let session = session.ok_or(SendError::NoConnection(conn))?;
        session.send_data(&payload, &mut sink)
    }

    fn grant_bulk(&mut self, conn: ConnId, len: u32) -> Result<SlotId, SendError> {
        let c = self.find(conn)?;
        let phys = c
            .rx_slots
            .iter()
            .position(|s| s.granted.is_none() && !s.busy.load(Ordering::Acquire))
            .ok_or(SendError::NoSlot(conn))?;
        let Link::Up(ep) = &c.link else {
            return Err(SendError::NoConnection(conn));
        };
        let (mr, slot_len) = ep.bulk_rx().ok_or(SendError::NoConnection(conn))?;
        let (addr, rkey) = (mr.addr(phys * slot_len), mr.rkey());
        let (mut sink, session) = c.sink();
        let session = session.ok_or(SendError::NoConnection(conn))?;
        let slot = session.grant_bulk(len, addr, rkey, &mut sink)?;
        c.rx_slots[phys].granted = Some(slot);
        Ok(slot)
    }

    fn revoke_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        let Ok(c) = self.find(conn) else {
            return false;
        };
        if !c.session.as_mut().is_some_and(|s| s.revoke_grant(slot)) {
            return false;
        }
        // The physical slot can be granted again. A peer that writes into it afterwards is cut
        // (the session no longer knows the slot id); its rkey stays valid on this connection
        // (no memory windows), and the layer above verifies every chunk's digest.
        if let Some(p) = c.rx_slots.iter_mut().find(|p| p.granted == Some(slot)) {
            p.granted = None;
        }
        true
    }

    fn decline_bulk(&mut self, conn: ConnId, slot: SlotId) -> bool {
        // The peer's slot stays its own: it revokes the grant when the layer above tells it.
        self.find(conn)
            .ok()
            .and_then(|c| c.session.as_mut())
            .is_some_and(|s| s.decline_grant(slot))
    }

    fn send_bulk(&mut self, conn: ConnId, slot: SlotId, data: Bytes) -> Result<(), SendError> {
        let max = self.config.bulk_slot_len as usize;
        let c = self.find(conn)?;
        if data.len() > max {
            return Err(SendError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let (mut sink, session) = c.sink();
        let session = session.ok_or(SendError::NoConnection(conn))?;
        let grant = session.send_bulk(slot, &data, &mut sink)?;
        let Link::Up(ep) = &mut c.link else {
            return Err(SendError::NoConnection(conn));
        };
        // Every send buffer busy: the chunk waits (its grant is consumed, so the queue holds
        // at most the peer's open grants) and goes out when a write completes.
        let Some(buf) = c.tx_busy.iter().position(Option::is_none) else {
            c.tx_queue.push_back((slot, data, grant));
            return Ok(());
        };
        match ep.post_bulk(buf as u32, &data, grant.addr, grant.rkey, slot) {
            Ok(()) => c.tx_busy[buf] = Some(slot),
            Err(e) => c.broken = Some(format!("post bulk write: {e}")),
        }
        Ok(())
    }

    fn credits(&self, conn: ConnId) -> Option<u32> {
        self.conns
            .values()
            .find(|c| c.conn() == Some(conn))
            .and_then(|c| c.session.as_ref().map(|s| s.credits()))
    }

    fn close(&mut self, conn: ConnId) {
        let token = self
            .conns
            .iter()
            .find(|(_, c)| c.conn() == Some(conn))
            .map(|(t, _)| *t);
        if let Some(token) = token {
            let mut events = std::mem::take(&mut self.deferred);
            self.retire(token, &mut events, DownReason::Local);
            self.deferred = events;
        }
    }

    fn poll(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let before = events.len();
        events.append(&mut self.deferred);
        let spin = timeout.map_or(self.config.busy_poll, |t| t.min(self.config.busy_poll));
        // About to spin: the spin reads the connection manager soon enough.
        self.pump(events, spin.is_zero());
        if events.len() > before || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        if !spin.is_zero() {
            // The clock is read on full rounds only (it may be a system call: HPET).
            let mut spin_until = None;
            let mut round = 0u32;
            while events.len() == before {
                round = round.wrapping_add(1);
                let full = round.is_multiple_of(SPIN_FULL_EVERY);
                if full {
                    let now = Instant::now();
                    if now >= *spin_until.get_or_insert(now + spin) {
                        break;
                    }
                }
                self.pump(events, full);
            }
            if events.len() > before {
                return Ok(());
            }
        }
        self.arm_all();
        self.pump(events, true); // completions that raced the arming
        if events.len() > before {
            return Ok(());
        }
        let ms = match timeout {
            None => EpollTimeout::NONE,
            Some(d) => {
                EpollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(EpollTimeout::MAX)
            }
        };
        let _ = self.epoll.wait(&mut self.ready, ms);
        self.pump(events, true);
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.stats
    }
}

impl Drop for VerbsTransport {
    fn drop(&mut self) {
        // Connections closed just before (`close` then drop) get their CLOSE out first.
        let until = Instant::now() + LINGER;
        let mut scratch = Vec::new();
        while Instant::now() < until && self.conns.values().any(|c| c.linger.is_some()) {
            self.on_completions(&mut scratch);
            scratch.clear();
            std::thread::sleep(Duration::from_micros(200));
        }
        let conns: Vec<VerbsConn> = self.conns.drain().map(|(_, c)| c).collect();
        for c in conns {
            self.drop_conn(c);
        }
    }
}
