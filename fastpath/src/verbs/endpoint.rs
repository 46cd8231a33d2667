//! One RC queue pair and its buffers, with typestate for setup: a [`Prepared`] endpoint has its
//! resources and posted receives but cannot send; only a [`Connected`] one posts sends.
//!
//! Buffers, each registered once:
//! - `ctrl` (local write only), when the connection is set up: `recv_slots` receive buffers, then
//!   `send_slots` send buffers, each one control frame (4 KiB);
//! - once the peer has authenticated ([`Endpoint::register_bulk`]; an unauthenticated peer makes
//!   us pin no more than the control ring):
//!   - `bulk_rx` (local + remote write): `bulk_slots` receive slots the peer writes chunks into;
//!   - `bulk_tx` (no remote access): `bulk_slots` buffers chunks are copied into before the write.

use super::cm::CmId;
use super::resources::{Cq, Mr, Pd};
use crate::frame::{FrameHeader, MAX_CONTROL_FRAME};
use rdma_sys as ffi;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

/// Typestate: resources ready, receives posted, not connected.
pub struct Prepared;
/// Typestate: the connection is established; sends may be posted.
pub struct Connected;

/// Every this-many sends one is signalled; its completion frees the send slots before it.
const SIGNAL_EVERY: u64 = 8;
/// Tag bits of a work request id: which ring it belongs to.
pub const TAG_RECV: u64 = 1 << 62;
/// Send ring work requests.
pub const TAG_SEND: u64 = 2 << 62;
/// Bulk writes.
pub const TAG_BULK: u64 = 3 << 62;
/// Mask of a work request id's tag.
pub const TAG_MASK: u64 = 3 << 62;

/// Sizes of one endpoint's rings.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Receive buffers (our window plus the handshake's).
    pub recv_slots: u32,
    /// Send buffers.
    pub send_slots: u32,
    /// Bulk slots each way.
    pub bulk_slots: u32,
    /// Bytes per bulk slot.
    pub bulk_slot_len: u32,
}

/// The resources of one connection. Field order is drop order: the id (and its QP) goes first,
/// then the queues and regions, then the protection domain.
pub struct Endpoint<S> {
    id: CmId,
    cq: Cq,
    ctrl: Arc<Mr>,
    bulk_rx: Option<Arc<Mr>>,
    bulk_tx: Option<Arc<Mr>>,
    pd: Arc<Pd>,
    shape: Shape,
    max_inline: u32,
    send_head: u64,
    send_tail: u64,
    /// Signal every send (set when closing, so the last frame's completion is seen).
    signal_all: bool,
    _state: PhantomData<S>,
}

impl Endpoint<Prepared> {
    /// Allocates the connection's protection domain, completion queue, queue pair and buffers on
    /// the id's device, and posts every receive.
    pub fn new(mut id: CmId, shape: Shape) -> io::Result<Endpoint<Prepared>> {
        let ctx = id.verbs();
        if ctx.is_null() {
            return Err(io::Error::other("the rdma_cm id has no device yet"));
        }
        let pd = Pd::new(ctx)?;
        let send_wr = shape.send_slots + shape.bulk_slots + 4;
        let cq = Cq::new(ctx, (send_wr + shape.recv_slots) as i32)?;
        // SAFETY: a zeroed init attr is valid; the fields that matter are set below.
        let mut attr: ffi::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.raw();
        attr.recv_cq = cq.raw();
        attr.qp_type = ffi::ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0; // selective signalling
        attr.cap.max_send_wr = send_wr;
        attr.cap.max_recv_wr = shape.recv_slots;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.cap.max_inline_data = 256;
        id.create_qp(pd.raw(), &mut attr)?;
        let max_inline = attr.cap.max_inline_data;
        let frame = MAX_CONTROL_FRAME;
        let ctrl_len = (shape.recv_slots + shape.send_slots) as usize * frame;
        let ctrl = Mr::new(&pd, ctrl_len, ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE)?;
        let mut ep = Endpoint {
            id,
            cq,
            ctrl,
            bulk_rx: None,
            bulk_tx: None,
            pd,
            shape,
            max_inline,
            send_head: 0,
            send_tail: 0,
            signal_all: false,
            _state: PhantomData,
        };
        for slot in 0..shape.recv_slots {
            ep.post_recv(slot)?;
        }
        Ok(ep)
    }

    /// Connects as the active side.
    pub fn connect(mut self) -> io::Result<Endpoint<Prepared>> {
        let mut p = conn_param();
        self.id.connect(&mut p)?;
        Ok(self)
    }

    /// Accepts as the passive side.
    pub fn accept(mut self) -> io::Result<Endpoint<Prepared>> {
        let mut p = conn_param();
        self.id.accept(&mut p)?;
        Ok(self)
    }

    /// The connection is established (ESTABLISHED arrived): sends may be posted.
    pub fn established(self) -> Endpoint<Connected> {
        Endpoint {
            id: self.id,
            cq: self.cq,
            ctrl: self.ctrl,
            bulk_rx: self.bulk_rx,
            bulk_tx: self.bulk_tx,
            pd: self.pd,
            shape: self.shape,
            max_inline: self.max_inline,
            send_head: self.send_head,
            send_tail: self.send_tail,
            signal_all: self.signal_all,
            _state: PhantomData,
        }
    }
}

impl Endpoint<Connected> {
    /// Registers the bulk regions (once; later calls do nothing). Called when the peer has
    /// authenticated: before that it could not be granted a slot, and the regions would only
    /// pin memory for whoever opened a connection.
    pub fn register_bulk(&mut self) -> io::Result<()> {
        if self.bulk_rx.is_some() {
            return Ok(());
        }
        let bulk_len = self.shape.bulk_slots as usize * self.shape.bulk_slot_len as usize;
        // Remote write needs local write; nothing else is granted (no remote read, no atomics).
        let bulk_rx = Mr::new(
            &self.pd,
            bulk_len,
            ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE,
        )?;
        let bulk_tx = Mr::new(&self.pd, bulk_len, ffi::ibv_access_flags(0))?;
        self.bulk_rx = Some(bulk_rx);
        self.bulk_tx = Some(bulk_tx);
        Ok(())
    }
}

fn conn_param() -> ffi::rdma_conn_param {
    // SAFETY: a zeroed parameter block is valid.
    let mut p: ffi::rdma_conn_param = unsafe { std::mem::zeroed() };
    // No RDMA READ or atomics in either direction: zero responder resources and initiator depth
    // (rdma_cm then grants the QP remote write only).
    p.responder_resources = 0;
    p.initiator_depth = 0;
    p.retry_count = 7;
    // Credits guarantee a posted receive for every send: an RNR is a bug, surfaced as an error.
    p.rnr_retry_count = 0;
    p
}

impl<S> Endpoint<S> {
    /// The completion queue.
    pub fn cq(&mut self) -> &mut Cq {
        &mut self.cq
    }

    /// The id.
    pub fn id(&mut self) -> &mut CmId {
        &mut self.id
    }

    /// Posts receive buffer `slot` (again).
    pub fn post_recv(&mut self, slot: u32) -> io::Result<()> {
        let frame = MAX_CONTROL_FRAME;
        let mut sge = ffi::ibv_sge {
            addr: self.ctrl.addr(slot as usize * frame),
            length: frame as u32,
            lkey: self.ctrl.lkey(),
        };
        // SAFETY: a zeroed work request is valid; fields set below.
        let mut wr: ffi::ibv_recv_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = TAG_RECV | slot as u64;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        let mut bad = std::ptr::null_mut();
        // SAFETY: the buffer lies inside `ctrl`, which is registered with local write and lives
        // as long as the QP; nothing else reads or writes this slot until its completion is
        // polled. `wr` and `sge` are copied by the provider during the call.
        let rc = unsafe { ffi::ibv_post_recv(self.id.qp(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }

    /// Copies a completed receive out of slot `slot` (`len` bytes) into `out`.
    pub fn read_recv(&self, slot: u32, len: usize, out: &mut bytes::BytesMut) {
        let at = slot as usize * MAX_CONTROL_FRAME;
        // SAFETY: the receive's completion was polled, so the device is done writing the slot,
        // and it is not reposted until after this copy.
        out.extend_from_slice(unsafe { self.ctrl.slice(at, len.min(MAX_CONTROL_FRAME)) });
    }

    /// The bulk receive region and its slot size (`None` before [`Endpoint::register_bulk`]).
    pub fn bulk_rx(&self) -> Option<(&Arc<Mr>, usize)> {
        let slot_len = self.shape.bulk_slot_len as usize;
        self.bulk_rx.as_ref().map(|mr| (mr, slot_len))
    }

    /// A send completion for ring position `seq` frees every slot up to it.
    pub fn send_completed(&mut self, seq: u64) {
        self.send_tail = self.send_tail.max(seq + 1);
    }

    /// Signals every send from now on (before the last frames of a connection: their completion
    /// tells when they have reached the peer, so the connection can be taken down after them).
    pub fn signal_all(&mut self) {
        self.signal_all = true;
    }

    /// Whether every posted send has completed (exact once `signal_all` was set before them).
    pub fn sends_done(&self) -> bool {
        self.send_tail >= self.send_head
    }
}

impl Endpoint<Connected> {
    /// Copies a frame into the next send slot and posts it. Fails if the ring is full (which
    /// credits prevent) or the post fails.
    pub fn post_frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        tag: &[u8],
    ) -> io::Result<()> {
        let slots = self.shape.send_slots as u64;
        if self.send_head - self.send_tail >= slots {
            return Err(io::Error::other("send ring overrun"));
        }
        let seq = self.send_head;
        let slot = self.shape.recv_slots as u64 + seq % slots;
        let at = slot as usize * MAX_CONTROL_FRAME;
        // SAFETY: the slot is free: every send before `send_tail` has completed and this one
        // is past them (checked above); it lies inside `ctrl`.
        let len = unsafe { self.ctrl.write_at(at, &[header.bytes(), payload, tag]) };
        let mut sge = ffi::ibv_sge {
            addr: self.ctrl.addr(at),
            length: len as u32,
            lkey: self.ctrl.lkey(),
        };
        let free = slots - (self.send_head - self.send_tail) - 1;
        let mut send_flags = 0;
        if self.signal_all || seq % SIGNAL_EVERY == SIGNAL_EVERY - 1 || free < SIGNAL_EVERY * 2 {
            send_flags |= ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if len as u32 <= self.max_inline {
            send_flags |= ffi::ibv_send_flags::IBV_SEND_INLINE.0;
        }
        // SAFETY: zeroed is valid for a send work request.
        let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = TAG_SEND | seq;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = ffi::ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = send_flags;
        self.post_send(&mut wr)?;
        self.send_head += 1;
        Ok(())
    }

    /// Copies `data` into bulk send buffer `buf` and writes it to the peer's slot at
    /// `remote_addr` / `rkey`, with `imm` (the grant's slot id) as immediate data.
    pub fn post_bulk(
        &mut self,
        buf: u32,
        data: &[u8],
        remote_addr: u64,
        rkey: u32,
        imm: u32,
    ) -> io::Result<()> {
        let slot_len = self.shape.bulk_slot_len as usize;
        if data.len() > slot_len {
            return Err(io::Error::other("chunk larger than a bulk send buffer"));
        }
        let Some(bulk_tx) = &self.bulk_tx else {
            return Err(io::Error::other("bulk buffers not registered"));
        };
        let at = buf as usize * slot_len;
        // SAFETY: buffer `buf` is free (the caller reuses it only after its write completed).
        unsafe { bulk_tx.write_at(at, &[data]) };
        let mut sge = ffi::ibv_sge {
            addr: bulk_tx.addr(at),
            length: data.len() as u32,
            lkey: bulk_tx.lkey(),
        };
        // SAFETY: zeroed is valid for a send work request.
        let mut wr: ffi::ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = TAG_BULK | buf as u64;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM;
        wr.send_flags = ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
        wr.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        wr.wr.rdma = ffi::rdma_t { remote_addr, rkey };
        self.post_send(&mut wr)
    }

    fn post_send(&mut self, wr: &mut ffi::ibv_send_wr) -> io::Result<()> {
        let mut bad = std::ptr::null_mut();
        // SAFETY: the QP is connected; the work request's buffers lie in regions registered on
        // this QP's protection domain and stay untouched until their completion (send slots are
        // reused only after a later signalled completion; bulk buffers only after their own).
        // The provider copies `wr` and its scatter list during the call.
        let rc = unsafe { ffi::ibv_post_send(self.id.qp(), wr, &mut bad) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }
}
