//! One TCP connection: the byte stream under a [`Session`], read into a reusable buffer that
//! payloads are split from without copying, written with `writev` straight from the payload.

use crate::admission::Slot;
use crate::frame::{FrameHeader, Kind, HEADER_LEN, TAG_LEN};
use crate::session::{Ctx, FrameSink, Session};
use crate::transport::SlotId;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Initial read buffer size; it grows to the largest frame seen and is then reused.
const READ_BUFFER: usize = 64 << 10;
/// Least free space offered to one `read`.
const MIN_READ: usize = 16 << 10;

/// A frame waiting for the socket to take it: header, payload (never copied) and tag.
struct OutFrame {
    header: [u8; HEADER_LEN],
    payload: Bytes,
    tag: [u8; TAG_LEN],
    tag_len: usize,
    written: usize,
    bulk_slot: Option<SlotId>,
}

impl OutFrame {
    fn len(&self) -> usize {
        HEADER_LEN + self.payload.len() + self.tag_len
    }

    /// What is left to write, as slices for one `writev`.
    fn unwritten(&self) -> [IoSlice<'_>; 3] {
        let parts: [&[u8]; 3] = [&self.header, &self.payload, &self.tag[..self.tag_len]];
        let mut skip = self.written;
        parts.map(|p| {
            let from = skip.min(p.len());
            skip -= from;
            IoSlice::new(&p[from..])
        })
    }
}

/// The socket side of a connection: what a [`FrameSink`] needs.
pub struct Io {
    pub(super) stream: TcpStream,
    queue: VecDeque<OutFrame>,
    /// Bulk chunks fully handed to the kernel, reported as `BulkSent`.
    pub(super) sent_slots: Vec<SlotId>,
    /// Why the socket failed, if it did.
    pub(super) broken: Option<String>,
}

impl Io {
    /// Whether frames wait for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Writes queued frames until the socket would block.
    pub fn flush(&mut self) {
        while let Some(f) = self.queue.front_mut() {
            let res = self.stream.write_vectored(&f.unwritten());
            match res {
                Ok(0) => {
                    self.broken = Some("socket accepted no bytes".into());
                    return;
                }
                Ok(n) => {
                    f.written += n;
                    if f.written == f.len() {
                        if let Some(slot) = f.bulk_slot {
                            self.sent_slots.push(slot);
                        }
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.broken = Some(format!("write failed: {e}"));
                    return;
                }
            }
        }
    }
}

impl FrameSink for Io {
    fn send_frame(&mut self, header: &FrameHeader, payload: &Bytes, tag: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        let bulk_slot = (header.kind() == Kind::BulkData).then(|| header.aux() as SlotId);
        let mut t = [0u8; TAG_LEN];
        let tag_len = tag.len().min(TAG_LEN);
        t[..tag_len].copy_from_slice(&tag[..tag_len]);
        self.queue.push_back(OutFrame {
            header: *header.bytes(),
            payload: payload.clone(),
            tag: t,
            tag_len,
            written: 0,
            bulk_slot,
        });
        if self.queue.len() == 1 {
            self.flush();
        }
    }
}

/// What the next bytes from the socket are.
enum Rx {
    /// Frames, read into the connection's read buffer.
    Frames,
    /// The rest of a bulk chunk, read straight into a chunk buffer.
    Bulk { header: FrameHeader, buf: BytesMut },
}

/// One TCP connection and its session.
pub struct TcpConn {
    pub(super) io: Io,
    pub(super) session: Session,
    rbuf: BytesMut,
    rx: Rx,
    /// Chunk buffers, used in turn; a buffer whose chunk the application dropped is reused.
    chunk_buffers: VecDeque<BytesMut>,
    /// The handshake must be done by then.
    pub(super) deadline: Instant,
    /// The handshake slot an inbound connection holds until it is established.
    pub(super) slot: Option<Slot>,
    /// Whether EPOLLOUT is registered.
    pub(super) polling_out: bool,
}

/// Chunk buffers kept per connection (one more than the slots a peer can fill at once).
const CHUNK_BUFFERS: usize = 5;

/// Reads from `stream` into the spare capacity of `buf`, at most `max` bytes.
fn read_into(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is writable memory owned by `buf`, valid for at least `want` bytes; `read(2)`
    // writes at most `want` bytes there and reads none. No reference to the uninitialised bytes
    // is created.
    let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: `read` initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

impl TcpConn {
    /// Wraps a connected, non-blocking stream whose handshake must be done within `deadline`.
    pub fn new(
        stream: TcpStream,
        session: Session,
        deadline: Duration,
        slot: Option<Slot>,
    ) -> TcpConn {
        TcpConn {
            io: Io {
                stream,
                queue: VecDeque::with_capacity(128),
                sent_slots: Vec::with_capacity(8),
                broken: None,
            },
            session,
            rbuf: BytesMut::with_capacity(READ_BUFFER),
            rx: Rx::Frames,
            chunk_buffers: VecDeque::with_capacity(CHUNK_BUFFERS),
            deadline: Instant::now() + deadline,
            slot,
            polling_out: false,
        }
    }

    /// Reads what the socket has and feeds whole frames to the session.
    pub fn on_readable(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            if self.session.is_closed() {
                return;
            }
            let (res, want) = match &mut self.rx {
                Rx::Frames => {
                    if self.rbuf.capacity() - self.rbuf.len() < MIN_READ {
                        self.rbuf.reserve(MIN_READ);
                    }
                    let want = self.rbuf.capacity() - self.rbuf.len();
                    (read_into(&self.io.stream, &mut self.rbuf, want), want)
                }
                Rx::Bulk { header, buf } => {
                    let want = header.len() - buf.len();
                    (read_into(&self.io.stream, buf, want), want)
                }
            };
            let n = match res {
                Ok(0) => {
                    self.session.broken("the peer closed the connection", ctx);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.session.broken(&format!("read failed: {e}"), ctx);
                    return;
                }
            };
            self.parse(ctx);
            if n < want {
                return; // drained: level-triggered epoll reports the rest
            }
        }
    }

    /// A buffer for a chunk of `len` bytes: the oldest one, reused in place if the application
    /// has dropped what it held.
    fn chunk_buffer(&mut self, len: usize) -> BytesMut {
        let mut buf = if self.chunk_buffers.len() < CHUNK_BUFFERS {
            BytesMut::with_capacity(len)
        } else {
            self.chunk_buffers.pop_front().expect("non-empty")
        };
        buf.clear();
        buf.reserve(len);
        buf
    }

    fn parse(&mut self, ctx: &mut Ctx<'_>) {
        if let Rx::Bulk { header, buf } = &mut self.rx {
            if buf.len() < header.len() {
                return;
            }
            let header = *header;
            let payload = buf.split().freeze();
            let Rx::Bulk { buf, .. } = std::mem::replace(&mut self.rx, Rx::Frames) else {
                unreachable!()
            };
            self.chunk_buffers.push_back(buf);
            if self.deliver(&header, payload, ctx).is_err() {
                return;
            }
        }
        while self.rbuf.len() >= HEADER_LEN && !self.session.is_closed() {
            let header = match FrameHeader::decode(&self.rbuf) {
                Ok(h) => *h,
                Err(e) => {
                    self.session.malformed(e, ctx);
                    return;
                }
            };
            // Nothing is buffered for a frame the session would refuse: before the handshake
            // is done, a frame is at most the handshake's size, and a bulk chunk is taken only
            // into a slot this side granted.
            if self.session.admit_header(&header, ctx).is_err() {
                return;
            }
            let total = HEADER_LEN + header.len();
            if self.rbuf.len() < total {
                if header.kind() == Kind::BulkData {
                    // Read the rest of the chunk straight into its own buffer.
                    self.rbuf.advance(HEADER_LEN);
                    let mut buf = self.chunk_buffer(header.len());
                    buf.extend_from_slice(&self.rbuf);
                    self.rbuf.clear();
                    self.rx = Rx::Bulk { header, buf };
                } else {
                    self.rbuf.reserve(total - self.rbuf.len());
                }
                return;
            }
            self.rbuf.advance(HEADER_LEN);
            let payload = self.rbuf.split_to(header.len()).freeze();
            if self.deliver(&header, payload, ctx).is_err() {
                return;
            }
        }
    }

    fn deliver(
        &mut self,
        header: &FrameHeader,
        payload: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), crate::session::Ended> {
        if let Err(e) = header.verify_payload(&payload) {
            return Err(self.session.malformed(e, ctx));
        }
        self.session.on_frame(header, payload, &mut self.io, ctx)
    }
}
