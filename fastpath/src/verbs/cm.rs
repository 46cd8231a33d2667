//! rdma_cm: connection setup by IP address (RoCE v2), one non-blocking event channel per
//! transport.

use rdma_sys as ffi;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The event channel every id of a transport reports to.
pub struct EventChannel(*mut ffi::rdma_event_channel);

// SAFETY: a kernel object handle; used by the transport's owning thread.
unsafe impl Send for EventChannel {}
// SAFETY: only read through the handle.
unsafe impl Sync for EventChannel {}

impl EventChannel {
    /// Creates a non-blocking event channel.
    pub fn new() -> io::Result<Arc<EventChannel>> {
        // SAFETY: no preconditions.
        let ch = unsafe { ffi::rdma_create_event_channel() };
        if ch.is_null() {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("rdma_create_event_channel (is /dev/infiniband/rdma_cm present?): {e}"),
            ));
        }
        let ch = Arc::new(EventChannel(ch));
        nix::fcntl::fcntl(
            ch.fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        Ok(ch)
    }

    /// The channel's fd (readable when an event waits).
    pub fn fd(&self) -> i32 {
        // SAFETY: the channel is live.
        unsafe { (*self.0).fd }
    }

    /// Takes the next event, if one waits. The event is acknowledged at once (its fields are
    /// copied), so destroying ids never blocks on unacknowledged events.
    pub fn next_event(&self) -> Option<CmEvent> {
        let mut ev = std::ptr::null_mut();
        // SAFETY: non-blocking channel; `ev` is a valid out-pointer.
        if unsafe { ffi::rdma_get_cm_event(self.0, &mut ev) } != 0 {
            return None;
        }
        // SAFETY: `ev` is a valid event until acknowledged.
        let out = unsafe {
            CmEvent {
                id: (*ev).id,
                listen_id: (*ev).listen_id,
                kind: (*ev).event,
                status: (*ev).status,
            }
        };
        // SAFETY: acknowledged exactly once.
        unsafe { ffi::rdma_ack_cm_event(ev) };
        Some(out)
    }

    fn raw(&self) -> *mut ffi::rdma_event_channel {
        self.0
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: every id holds an Arc of the channel, so none is left.
        unsafe { ffi::rdma_destroy_event_channel(self.0) };
    }
}

/// A connection manager event (already acknowledged).
#[derive(Debug, Clone, Copy)]
pub struct CmEvent {
    /// The id the event is about (for CONNECT_REQUEST: the new id).
    pub id: *mut ffi::rdma_cm_id,
    /// The listening id, for CONNECT_REQUEST.
    pub listen_id: *mut ffi::rdma_cm_id,
    /// `rdma_cm_event_type`.
    pub kind: ffi::rdma_cm_event_type::Type,
    /// Status (errno-like) of the event.
    pub status: i32,
}

/// An owned rdma_cm id; destroys its queue pair (if any) and itself on drop.
pub struct CmId {
    id: *mut ffi::rdma_cm_id,
    has_qp: bool,
    _channel: Arc<EventChannel>,
}

// SAFETY: a kernel object handle used by the transport's owning thread.
unsafe impl Send for CmId {}

fn rc(what: &str, rc: i32) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// A socket address in the C layout rdma_cm wants.
pub struct RawAddr {
    storage: libc::sockaddr_storage,
}

impl RawAddr {
    /// Converts a std address.
    pub fn new(addr: SocketAddr) -> RawAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
            }
        }
        RawAddr { storage }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }
}

/// Reads a C socket address back (IPv4 and IPv6).
///
/// # Safety
/// `sa` must point to a valid socket address of its family's size.
pub unsafe fn socket_addr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    // SAFETY: the caller guarantees `sa` is valid; the family tells the layout.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(
                    IpAddr::V6(ip),
                    u16::from_be(sin6.sin6_port),
                ))
            }
            _ => None,
        }
    }
}

impl CmId {
    /// Creates an RC (RDMA_PS_TCP) id on `channel`.
    pub fn new(channel: &Arc<EventChannel>) -> io::Result<CmId> {
        let mut id = std::ptr::null_mut();
        // SAFETY: `channel` is live; `id` is a valid out-pointer.
        let r = unsafe {
            ffi::rdma_create_id(
                channel.raw(),
                &mut id,
                std::ptr::null_mut(),
                ffi::rdma_port_space::RDMA_PS_TCP,
            )
        };
        rc("rdma_create_id", r)?;
        Ok(CmId {
            id,
            has_qp: false,
            _channel: channel.clone(),
        })
    }

    /// Takes ownership of an id the channel created (a CONNECT_REQUEST's new id).
    ///
    /// # Safety
    /// `id` must be a live id of `channel` that nothing else owns.
    pub unsafe fn adopt(id: *mut ffi::rdma_cm_id, channel: &Arc<EventChannel>) -> CmId {
        CmId {
            id,
            has_qp: false,
            _channel: channel.clone(),
        }
    }

    /// The raw id (valid while `self` lives).
    pub fn raw(&self) -> *mut ffi::rdma_cm_id {
        self.id
    }

    /// The device context the id is bound to (null before address resolution).
    pub fn verbs(&self) -> *mut ffi::ibv_context {
        // SAFETY: the id is live.
        unsafe { (*self.id).verbs }
    }

    /// The queue pair created on this id.
    pub fn qp(&self) -> *mut ffi::ibv_qp {
        // SAFETY: the id is live.
        unsafe { (*self.id).qp }
    }

    /// Binds to a local address and listens.
    pub fn listen(&mut self, addr: SocketAddr, backlog: i32) -> io::Result<SocketAddr> {
        let mut raw = RawAddr::new(addr);
        // SAFETY: id live, address valid for the call.
        rc("rdma_bind_addr", unsafe {
            ffi::rdma_bind_addr(self.id, raw.as_mut_ptr())
        })?;
        // SAFETY: id bound.
        rc("rdma_listen", unsafe { ffi::rdma_listen(self.id, backlog) })?;
        // SAFETY: the bound id's local address is valid while the id lives.
        let local = unsafe { socket_addr(ffi::rdma_get_local_addr(&*self.id)) };
        Ok(local.unwrap_or(addr))
    }

    /// Starts resolving `dst` (ADDR_RESOLVED follows).
    pub fn resolve_addr(&mut self, dst: SocketAddr, timeout_ms: i32) -> io::Result<()> {
        let mut raw = RawAddr::new(dst);
        // SAFETY: id live; the address is copied by the call.
        let r = unsafe {
            ffi::rdma_resolve_addr(self.id, std::ptr::null_mut(), raw.as_mut_ptr(), timeout_ms)
        };
        rc("rdma_resolve_addr", r)
    }

    /// Starts resolving the route (ROUTE_RESOLVED follows).
    pub fn resolve_route(&mut self, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: id live with a resolved address.
        rc("rdma_resolve_route", unsafe {
            ffi::rdma_resolve_route(self.id, timeout_ms)
        })
    }

    /// Creates the RC queue pair of this id.
    pub fn create_qp(
        &mut self,
        pd: *mut ffi::ibv_pd,
        attr: &mut ffi::ibv_qp_init_attr,
    ) -> io::Result<()> {
        // SAFETY: id live with a device; `pd` and the CQs in `attr` are live and outlive the QP
        // (the connection destroys the QP, through this id, before them).
        rc("rdma_create_qp", unsafe {
            ffi::rdma_create_qp(self.id, pd, attr)
        })?;
        self.has_qp = true;
        Ok(())
    }

    /// Connects (ESTABLISHED follows).
    pub fn connect(&mut self, param: &mut ffi::rdma_conn_param) -> io::Result<()> {
        // SAFETY: id live with a QP.
        rc("rdma_connect", unsafe { ffi::rdma_connect(self.id, param) })
    }

    /// Accepts a connection request (ESTABLISHED follows).
    pub fn accept(&mut self, param: &mut ffi::rdma_conn_param) -> io::Result<()> {
        // SAFETY: id live with a QP.
        rc("rdma_accept", unsafe { ffi::rdma_accept(self.id, param) })
    }

    /// Rejects a connection request.
    pub fn reject(&mut self) {
        // SAFETY: id live; no private data.
        unsafe { ffi::rdma_reject(self.id, std::ptr::null(), 0) };
    }

    /// Disconnects (the peer gets DISCONNECTED; outstanding work requests are flushed).
    pub fn disconnect(&mut self) {
        // SAFETY: id live.
        unsafe { ffi::rdma_disconnect(self.id) };
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: the QP (if any) is destroyed before the id; all events were acknowledged when
        // read, so rdma_destroy_id does not block.
        unsafe {
            if self.has_qp {
                ffi::rdma_destroy_qp(self.id);
            }
            ffi::rdma_destroy_id(self.id);
        }
    }
}
