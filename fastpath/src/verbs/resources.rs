//! Owned verbs resources. Children hold their parents (`Arc`), so destruction runs in
//! dependency order: memory regions before their protection domain, queue pairs (owned by the
//! connection) before their completion queue.

use rdma_sys as ffi;
use std::alloc::Layout;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A protection domain: one per connection, so a peer's keys are valid on its own queue pair
/// only.
pub struct Pd(*mut ffi::ibv_pd);

// SAFETY: a protection domain is a kernel object handle; verbs allow its use from any thread.
unsafe impl Send for Pd {}
// SAFETY: as above; the handle is only read.
unsafe impl Sync for Pd {}

impl Pd {
    /// Allocates a protection domain on the device context `ctx`.
    pub fn new(ctx: *mut ffi::ibv_context) -> io::Result<Arc<Pd>> {
        // SAFETY: `ctx` is the open device context of a resolved rdma_cm id.
        let pd = unsafe { ffi::ibv_alloc_pd(ctx) };
        if pd.is_null() {
            return Err(last_error("ibv_alloc_pd"));
        }
        Ok(Arc::new(Pd(pd)))
    }

    /// The raw handle (valid while `self` lives).
    pub fn raw(&self) -> *mut ffi::ibv_pd {
        self.0
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`; every child holds an Arc of us, so none is left.
        unsafe { ffi::ibv_dealloc_pd(self.0) };
    }
}

/// A completion queue with its completion channel (a pollable fd for sleeping).
pub struct Cq {
    cq: *mut ffi::ibv_cq,
    channel: *mut ffi::ibv_comp_channel,
    /// Completion events received and not yet acknowledged.
    unacked: u32,
}

// SAFETY: kernel object handles; used by one thread at a time (the transport's owner).
unsafe impl Send for Cq {}

impl Cq {
    /// Creates a completion queue of `entries` on `ctx`, with a non-blocking completion channel.
    pub fn new(ctx: *mut ffi::ibv_context, entries: i32) -> io::Result<Cq> {
        // SAFETY: `ctx` is an open device context.
        let channel = unsafe { ffi::ibv_create_comp_channel(ctx) };
        if channel.is_null() {
            return Err(last_error("ibv_create_comp_channel"));
        }
        // SAFETY: `channel` is valid; the fd belongs to it.
        let fd = unsafe { (*channel).fd };
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        // SAFETY: `ctx` and `channel` are valid.
        let cq = unsafe { ffi::ibv_create_cq(ctx, entries, std::ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = last_error("ibv_create_cq");
            // SAFETY: created above, not used by any CQ.
            unsafe { ffi::ibv_destroy_comp_channel(channel) };
            return Err(e);
        }
        Ok(Cq {
            cq,
            channel,
            unacked: 0,
        })
    }

    /// The raw handle.
    pub fn raw(&self) -> *mut ffi::ibv_cq {
        self.cq
    }

    /// The completion channel's fd (readable when a requested notification fired).
    pub fn fd(&self) -> i32 {
        // SAFETY: the channel lives as long as `self`.
        unsafe { (*self.channel).fd }
    }

    /// Polls up to `wcs.len()` completions; returns how many were written.
    pub fn poll(&mut self, wcs: &mut [ffi::ibv_wc]) -> io::Result<usize> {
        // SAFETY: `wcs` is valid for `len` entries; the CQ is live.
        let n = unsafe { ffi::ibv_poll_cq(self.cq, wcs.len() as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(io::Error::other("ibv_poll_cq failed"));
        }
        Ok(n as usize)
    }

    /// Asks for a notification on the next completion (call before sleeping, then poll again).
    pub fn arm(&mut self) -> io::Result<()> {
        // SAFETY: the CQ is live.
        let rc = unsafe { ffi::ibv_req_notify_cq(self.cq, 0) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Consumes a fired notification, if any (non-blocking).
    pub fn take_event(&mut self) {
        let mut cq = std::ptr::null_mut();
        let mut ctx = std::ptr::null_mut();
        // SAFETY: the channel is non-blocking; out-pointers are valid.
        while unsafe { ffi::ibv_get_cq_event(self.channel, &mut cq, &mut ctx) } == 0 {
            self.unacked += 1;
        }
        if self.unacked >= 64 {
            // SAFETY: acknowledging events this CQ received.
            unsafe { ffi::ibv_ack_cq_events(self.cq, self.unacked) };
            self.unacked = 0;
        }
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: the queue pair using this CQ was destroyed first (the connection owns both and
        // drops its queue pair before its CQ); events are acknowledged before destruction.
        unsafe {
            if self.unacked > 0 {
                ffi::ibv_ack_cq_events(self.cq, self.unacked);
            }
            ffi::ibv_destroy_cq(self.cq);
            ffi::ibv_destroy_comp_channel(self.channel);
        }
    }
}

/// A registered memory region that owns its page-aligned buffer.
pub struct Mr {
    mr: *mut ffi::ibv_mr,
    ptr: *mut u8,
    layout: Layout,
    _pd: Arc<Pd>,
}

// SAFETY: the buffer is owned and the region handle is a kernel object; shared use is through
// `SlotLease` (read-only views of slots no one writes while leased) and the owning connection.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    /// Allocates `len` zeroed bytes and registers them with exactly `access` (least privilege:
    /// remote write is granted only to bulk receive slots).
    pub fn new(pd: &Arc<Pd>, len: usize, access: ffi::ibv_access_flags) -> io::Result<Arc<Mr>> {
        let layout = Layout::from_size_align(len.max(4096), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer pool"));
        }
        // SAFETY: `ptr` is valid for `layout.size()` bytes and outlives the registration (it is
        // freed after deregistration in Drop).
        let mr = unsafe { ffi::ibv_reg_mr(pd.raw(), ptr.cast(), layout.size(), access.0 as i32) };
        if mr.is_null() {
            let e = last_error("ibv_reg_mr");
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(ptr, layout) };
            return Err(e);
        }
        Ok(Arc::new(Mr {
            mr,
            ptr,
            layout,
            _pd: pd.clone(),
        }))
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        // SAFETY: the region is registered while `self` lives.
        unsafe { (*self.mr).lkey }
    }

    /// Remote key (meaningful only for regions registered with remote access).
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.mr).rkey }
    }

    /// Address of byte `offset`.
    pub fn addr(&self, offset: usize) -> u64 {
        debug_assert!(offset <= self.layout.size());
        self.ptr as u64 + offset as u64
    }

    /// Copies `parts` one after the other into the buffer at `offset`.
    ///
    /// # Safety
    /// No posted work request may be reading or writing `offset..offset + total` (the caller's
    /// ring bookkeeping guarantees the slot is free), and the range must lie inside the buffer.
    pub unsafe fn write_at(&self, offset: usize, parts: &[&[u8]]) -> usize {
        let mut at = offset;
        for p in parts {
            assert!(at + p.len() <= self.layout.size(), "write past the region");
            // SAFETY: in bounds (checked); the caller guarantees no concurrent device access.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), self.ptr.add(at), p.len()) };
            at += p.len();
        }
        at - offset
    }

    /// Reads `len` bytes at `offset`.
    ///
    /// # Safety
    /// The device must have finished writing the range (its completion was polled) and must not
    /// write it again while the returned slice lives.
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.layout.size(), "read past the region");
        // SAFETY: in bounds; the caller guarantees the device is not writing it.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: deregister first, then free the memory the device could access.
        unsafe {
            ffi::ibv_dereg_mr(self.mr);
            std::alloc::dealloc(self.ptr, self.layout);
        }
    }
}

/// A received bulk chunk, read in place from its slot. While a lease lives, its slot is not
/// granted again, so the device does not write it.
pub struct SlotLease {
    mr: Arc<Mr>,
    offset: usize,
    len: usize,
    busy: Arc<AtomicBool>,
}

impl SlotLease {
    /// Leases `len` bytes of `mr` at `offset`; `busy` is cleared when the lease is dropped.
    pub fn new(mr: Arc<Mr>, offset: usize, len: usize, busy: Arc<AtomicBool>) -> SlotLease {
        SlotLease {
            mr,
            offset,
            len,
            busy,
        }
    }
}

impl AsRef<[u8]> for SlotLease {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the chunk's completion was polled before the lease was made, and the slot is
        // not granted again (so not written) until the lease is dropped.
        unsafe { self.mr.slice(self.offset, self.len) }
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}
