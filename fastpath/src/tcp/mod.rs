//! The TCP backend: the fallback where no RDMA exists, with the same frames, handshake and
//! credits. One thread drives it: non-blocking sockets under a level-triggered epoll.

mod conn;

use crate::admission::{Admission, Slot};
use crate::auth::ClusterKey;
use crate::session::{Ctx, Limits, Session, MIN_WINDOW};
use crate::transport::{
    Config, ConnId, DownReason, Event, NodeId, RefuseReason, SendError, SlotId, Stats, Transport,
    TransportError,
};
use bytes::Bytes;
use conn::TcpConn;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest receive window the tcp backend accepts.
pub const MAX_WINDOW: u32 = 4096;
const LISTENER: u64 = u64::MAX;
const READY_EVENTS: usize = 256;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TransportError {
    let what = what.into();
    move |source| TransportError::Io { what, source }
}

fn errno(what: &str, e: nix::Error) -> TransportError {
    TransportError::Io {
        what: what.to_owned(),
        source: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// A TCP transport endpoint.
pub struct TcpTransport {
    local: NodeId,
    addr: SocketAddr,
    key: Arc<ClusterKey>,
    config: Config,
    admission: Admission,
    listener: TcpListener,
    epoll: Epoll,
    ready: Vec<EpollEvent>,
    /// Connections by token (the epoll data); `None` marks a free token.
    conns: Vec<Option<TcpConn>>,
    free: Vec<usize>,
    generations: HashMap<NodeId, crate::session::PeerMemory>,
    stats: Stats,
    /// Events produced outside `poll` (local closes), reported by the next one.
    deferred: Vec<Event>,
}

impl TcpTransport {
    /// Listens on `addr` (port 0 picks one: see [`Transport::local_addr`]) as node `local`.
    pub fn bind(
        addr: SocketAddr,
        local: NodeId,
        key: ClusterKey,
        config: Config,
    ) -> Result<TcpTransport, TransportError> {
        if config.window > MAX_WINDOW || config.window < MIN_WINDOW {
            return Err(TransportError::Unavailable(format!(
                "window {} outside {MIN_WINDOW}..={MAX_WINDOW}",
                config.window
            )));
        }
        let listener = TcpListener::bind(addr).map_err(io_err(format!("listen on {addr}")))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("set the listener non-blocking"))?;
        let addr = listener.local_addr().map_err(io_err("listener address"))?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| errno("epoll", e))?;
        epoll
            .add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))
            .map_err(|e| errno("watch the listener", e))?;
        Ok(TcpTransport {
            local,
            addr,
            key: Arc::new(key),
            admission: Admission::new(&config),
            config,
            listener,
            epoll,
            ready: vec![EpollEvent::empty(); READY_EVENTS],
            conns: Vec::new(),
            free: Vec::new(),
            generations: HashMap::new(),
            stats: Stats::default(),
            deferred: Vec::new(),
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

    fn adopt(
        &mut self,
        stream: TcpStream,
        session: Session,
        deadline: Duration,
        slot: Option<Slot>,
    ) -> Result<usize, TransportError> {
        stream
            .set_nonblocking(true)
            .map_err(io_err("set a socket non-blocking"))?;
        stream
            .set_nodelay(true)
            .map_err(io_err("set TCP_NODELAY"))?;
        let token = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self
            .epoll
            .add(&stream, EpollEvent::new(EpollFlags::EPOLLIN, token as u64))
        {
            self.free.push(token);
            return Err(errno("watch a socket", e));
        }
        self.conns[token] = Some(TcpConn::new(stream, session, deadline, slot));
        Ok(token)
    }

    fn find(&mut self, conn: ConnId) -> Result<&mut TcpConn, SendError> {
        self.conns
            .iter_mut()
            .flatten()
            .find(|c| c.session.conn() == Some(conn))
            .ok_or(SendError::NoConnection(conn))
    }

    /// The slots the inbound handshakes in progress hold.
    fn held_slots(&self) -> impl Iterator<Item = Slot> + Clone + '_ {
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.session.conn().is_none() && !c.session.is_closed())
            .filter_map(|c| c.slot)
    }

    fn accept_all(&mut self, events: &mut Vec<Event>) {
        loop {
            match self.listener.accept() {
                Ok((stream, remote)) => {
                    // A refused connection is closed at once (the stream is dropped); the
                    // established ones are never touched to make room.
                    let Some(slot) = self.admission.admit(remote, self.held_slots()) else {
                        events.push(Event::Refused {
                            addr: remote,
                            reason: RefuseReason::Busy,
                        });
                        continue;
                    };
                    let deadline = self.admission.deadline(remote.ip());
                    let s = Session::acceptor(self.local, self.key.clone(), self.limits(), remote);
                    if let Err(e) = self.adopt(stream, s, deadline, Some(slot)) {
                        events.push(Event::Refused {
                            addr: remote,
                            reason: RefuseReason::Broken(e.to_string()),
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Per-connection accept errors (ECONNABORTED, EMFILE...) must not stop the loop
                // forever; the next poll retries.
                Err(_) => return,
            }
        }
    }

    /// Time until the nearest handshake deadline, to bound the wait.
    fn next_deadline(&self) -> Option<Duration> {
        let now = Instant::now();
        self.conns
            .iter()
            .flatten()
            .filter(|c| c.session.conn().is_none())
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<usize, TransportError> {
        let timeout = match (timeout, self.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ms = match timeout {
            None => EpollTimeout::NONE,
            Some(d) if d.is_zero() => EpollTimeout::ZERO,
            // Round up so a sub-millisecond wait does not spin.
            Some(d) => {
                EpollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(EpollTimeout::MAX)
            }
        };
        if ms != EpollTimeout::ZERO && !self.config.busy_poll.is_zero() {
            // Spin briefly before sleeping: a reply that comes within the spin skips the
            // scheduler's sleep and wake-up, which dominate a round trip on loopback.
            let spin = timeout.map_or(self.config.busy_poll, |t| t.min(self.config.busy_poll));
            let until = Instant::now() + spin;
            while Instant::now() < until {
                match self.epoll.wait(&mut self.ready, EpollTimeout::ZERO) {
                    Ok(0) | Err(nix::Error::EINTR) => std::hint::spin_loop(),
                    Ok(n) => return Ok(n),
                    Err(e) => return Err(errno("epoll_wait", e)),
                }
            }
        }
        match self.epoll.wait(&mut self.ready, ms) {
            Ok(n) => Ok(n),
            Err(nix::Error::EINTR) => Ok(0),
            Err(e) => Err(errno("epoll_wait", e)),
        }
    }

    fn service(&mut self, ready: usize, events: &mut Vec<Event>) {
        for i in 0..ready {
            let token = self.ready[i].data();
            let flags = self.ready[i].events();
            if token == LISTENER {
                self.accept_all(events);
                continue;
            }
            let mut ctx = Ctx {
                events,
                stats: &mut self.stats,
                generations: &mut self.generations,
            };
            let Some(Some(c)) = self.conns.get_mut(token as usize) else {
                continue;
            };
            if flags.intersects(EpollFlags::EPOLLOUT) {
                c.io.flush();
            }
            if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                c.on_readable(&mut ctx);
            }
        }
        self.settle(events);
    }

    /// After I/O: report finished bulk sends, fail broken sockets, time out handshakes, adjust
    /// write interest, drop ended connections, and retire connections a newer one replaced.
    fn settle(&mut self, events: &mut Vec<Event>) {
        let mut ctx = Ctx {
            events,
            stats: &mut self.stats,
            generations: &mut self.generations,
        };
        for token in 0..self.conns.len() {
            let Some(c) = self.conns[token].as_mut() else {
                continue;
            };
            if let Some(conn) = c.session.conn() {
                for slot in c.io.sent_slots.drain(..) {
                    ctx.events.push(Event::BulkSent { conn, slot });
                }
            }
            if let Some(why) = c.io.broken.take() {
                c.session.broken(&why, &mut ctx);
            }
            if c.session.conn().is_none() && !c.session.is_closed() && Instant::now() >= c.deadline
            {
                c.session.timed_out(&mut ctx);
            }
            if c.session.is_closed() {
                let c = self.conns[token].take().expect("present");
                let _ = self.epoll.delete(&c.io.stream);
                self.free.push(token);
                continue;
            }
            let want = c.io.wants_write();
            if want != c.polling_out {
                let mut flags = EpollFlags::EPOLLIN;
                if want {
                    flags |= EpollFlags::EPOLLOUT;
                }
                let mut ev = EpollEvent::new(flags, token as u64);
                if self.epoll.modify(&c.io.stream, &mut ev).is_ok() {
                    c.polling_out = want;
                }
            }
        }
        self.replace_older(events);
    }

    fn replace_older(&mut self, events: &mut Vec<Event>) {
        let ups = events.iter().filter(|e| matches!(e, Event::Up(_))).count();
        if ups == 0 {
            return;
        }
        let newest: Vec<ConnId> = events
            .iter()
            .filter_map(|e| match e {
                Event::Up(c) => Some(*c),
                _ => None,
            })
            .collect();
        let mut scratch = HashMap::new();
        for up in newest {
            for slot in self.conns.iter_mut() {
                let Some(c) = slot else { continue };
                let Some(old) = c.session.conn() else {
                    continue;
                };
                if old.peer == up.peer && old.generation < up.generation {
                    let mut ctx = Ctx {
                        events,
                        stats: &mut self.stats,
                        generations: &mut scratch,
                    };
                    c.session.close(&mut c.io, &mut ctx);
                    if let Some(Event::Down(_, why)) = events.last_mut() {
                        *why = DownReason::Replaced;
                    }
                }
            }
        }
        for (token, slot) in self.conns.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|c| c.session.is_closed()) {
                let c = slot.take().expect("present");
                let _ = self.epoll.delete(&c.io.stream);
                self.free.push(token);
            }
        }
    }
}

impl Transport for TcpTransport {
    fn local_id(&self) -> NodeId {
        self.local
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn connect(&mut self, addr: SocketAddr) -> Result<(), TransportError> {
        let stream = TcpStream::connect_timeout(&addr, self.config.connect_timeout)
            .map_err(io_err(format!("connect to {addr}")))?;
        let s = Session::connector(
            self.local,
            self.key.clone(),
            self.limits(),
            addr,
            &self.generations,
        );
        let token = self.adopt(stream, s, self.config.handshake_timeout, None)?;
        let c = self.conns[token].as_mut().expect("just adopted");
        c.session.send_hello(&mut c.io);
        Ok(())
    }

    fn send(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        let c = self.find(conn)?;
        c.session.send_data(&payload, &mut c.io)
    }

    fn grant_bulk(&mut self, conn: ConnId, len: u32) -> Result<SlotId, SendError> {
        let c = self.find(conn)?;
        c.session.grant_bulk(len, 0, 0, &mut c.io)
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
        c.session.send_bulk(slot, &data, &mut c.io)?;
        Ok(())
    }

    fn credits(&self, conn: ConnId) -> Option<u32> {
        self.conns
            .iter()
            .flatten()
            .find(|c| c.session.conn() == Some(conn))
            .map(|c| c.session.credits())
    }

    fn close(&mut self, conn: ConnId) {
        let mut scratch = HashMap::new();
        for c in self.conns.iter_mut().flatten() {
            if c.session.conn() == Some(conn) {
                let mut ctx = Ctx {
                    events: &mut self.deferred,
                    stats: &mut self.stats,
                    generations: &mut scratch,
                };
                c.session.close(&mut c.io, &mut ctx);
            }
        }
    }

    fn poll(
        &mut self,
        events: &mut Vec<Event>,
        timeout: Option<Duration>,
    ) -> Result<(), TransportError> {
        let before = events.len();
        events.append(&mut self.deferred);
        // Frames queued by sends since the last poll need write interest before we sleep, and
        // closes or failures since then must be reported.
        self.settle(events);
        let timeout = if events.len() > before {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let n = self.wait(timeout)?;
        self.service(n, events);
        if n == 0 {
            self.settle(events);
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.stats
    }
}
