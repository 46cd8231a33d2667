//! The io_uring engine: the only module of this crate with `unsafe` code.
//!
//! An [`Engine`] owns one open file, one ring and a small pool of buffers (in huge pages where
//! the kernel allows, see [`BufPool`] for why that matters) that are registered with the ring (`IORING_REGISTER_BUFFERS`), so writes and reads are
//! `WRITE_FIXED` / `READ_FIXED` without per-I/O page pinning. Where registration is refused
//! (a low `RLIMIT_MEMLOCK` on older kernels), the same buffers are used with plain
//! `WRITE` / `READ`.
//!
//! Writes are *write-combined*: a write that continues the buffer being filled is appended to
//! it; a full buffer, or a write elsewhere in the file, submits it. Up to `buffers` writes are in
//! flight at once; the caller's next chunk is hashed and copied while they run. In direct mode
//! (`O_DIRECT`) every write starts at a multiple of [`ALIGN`] and a short tail is padded with
//! zeros to [`ALIGN`]; the caller truncates the file to its real length afterwards.
//!
//! A caller's page-aligned memory may be written in place instead ([`Engine::write_owned`]): it
//! takes a slot like any write, and the slot keeps the caller's `Bytes` until the write completes.
//!
//! Each write carries the caller's tags (chunk indices); a tag is reported by
//! [`Engine::take_done`] once all bytes of its buffer were written.
//!
//! The memory contract behind every `unsafe` block: a buffer is handed to the kernel only while
//! its slot is in flight; nothing reads or writes a buffer in flight; buffers are freed only
//! after every operation that uses them has completed (`Drop` waits, and leaks the buffers if it
//! cannot).

use io_uring::{opcode, types, IoUring};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Alignment of buffers, direct-I/O offsets and direct-I/O lengths.
pub(crate) const ALIGN: usize = 4096;

/// `user_data` of the one-off operations (fsync, fallocate, reads).
const ONE_OFF: u64 = u64::MAX;

/// Alignment of the buffer pool: the size of a transparent huge page on x86-64 and arm64 (4 KiB
/// base pages).
const HUGE: usize = 2 << 20;

/// The engine's buffers: `count` buffers of `size` bytes, back to back in one anonymous mapping
/// that starts on a [`HUGE`] boundary and is advised `MADV_HUGEPAGE`.
///
/// Why huge pages: a block device takes at most `max_segments` physically contiguous pieces per
/// request (254 on a virtio disk), so a 1 MiB write from 256 scattered 4 KiB pages is split into
/// two requests, and on a virtual disk every request has a large fixed cost. A buffer inside
/// one 2 MiB page is a single segment and reaches the disk as one request (see
/// `docs/bench/staging.md`). Where huge pages are unavailable the buffers still work, only
/// split.
struct BufPool {
    /// Start of the mapping (`map_len` bytes).
    map: NonNull<u8>,
    map_len: usize,
    /// Offset of buffer 0 in the mapping ([`HUGE`]-aligned address).
    start: usize,
    size: usize,
    count: usize,
    /// Set when operations may still use the buffers: the mapping is then never unmapped.
    leaked: bool,
}

impl BufPool {
    fn new(count: usize, size: usize) -> io::Result<BufPool> {
        assert!(count > 0 && size > 0 && size.is_multiple_of(ALIGN));
        let len = count
            .checked_mul(size)
            .and_then(|l| l.checked_add(HUGE))
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: an anonymous private mapping at an address the kernel chooses: it aliases no
        // existing memory, and the arguments are plain integers.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(raw.cast::<u8>()).expect("mmap returned a non-null address");
        let start = (map.as_ptr() as usize).next_multiple_of(HUGE) - map.as_ptr() as usize;
        // SAFETY: the range lies inside the mapping just created (`start < HUGE`, and the
        // mapping is `count * size + HUGE` long); MADV_HUGEPAGE only changes how its pages are
        // backed, never their contents. Failure (no THP support) is harmless and ignored.
        unsafe {
            libc::madvise(
                map.as_ptr().add(start).cast(),
                count * size,
                libc::MADV_HUGEPAGE,
            );
        }
        Ok(BufPool {
            map,
            map_len: len,
            start,
            size,
            count,
            leaked: false,
        })
    }

    fn ptr(&self, id: usize) -> *mut u8 {
        assert!(id < self.count);
        // SAFETY: `start + id * size + size <= map_len` for `id < count` (see `new`), so the
        // pointer stays inside the mapping.
        unsafe { self.map.as_ptr().add(self.start + id * self.size) }
    }

    fn get(&self, id: usize) -> &[u8] {
        // SAFETY: buffer `id` is `size` bytes inside the mapping, initialised (anonymous memory
        // is zero-filled) and owned by `self`; the shared borrow of `self` prevents a concurrent
        // `get_mut`, and callers only borrow buffers that are not in flight.
        unsafe { std::slice::from_raw_parts(self.ptr(id), self.size) }
    }

    fn get_mut(&mut self, id: usize) -> &mut [u8] {
        // SAFETY: as in `get`; the exclusive borrow of `self` makes this the only reference, and
        // buffers never overlap.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(id), self.size) }
    }

    fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|id| libc::iovec {
                iov_base: self.ptr(id).cast(),
                iov_len: self.size,
            })
            .collect()
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `map`/`map_len` are exactly the mapping created in `new`, unmapped once, and
        // no operation uses it any more (otherwise `leaked` is set).
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}

/// What a buffer holds and how much of it the kernel has written.
#[derive(Default)]
struct Slot {
    file_off: u64,
    /// Bytes of data in the buffer.
    len: usize,
    /// Bytes to write (`len` padded to [`ALIGN`] in direct mode).
    io_len: usize,
    /// Bytes the kernel has written so far.
    done: usize,
    tags: Vec<u32>,
    /// A caller's buffer written in place of the slot's own (no copy), kept alive until the
    /// write completes.
    owned: Option<bytes::Bytes>,
}

/// An io_uring engine over one file (see the module docs).
pub(crate) struct Engine {
    // Declared first: dropped (ring closed) before the buffers are freed.
    ring: IoUring,
    file: File,
    bufs: BufPool,
    slots: Vec<Slot>,
    free: Vec<usize>,
    filling: Option<usize>,
    inflight: usize,
    fixed: bool,
    direct: bool,
    done_tags: Vec<u32>,
    error: Option<io::Error>,
}

impl Engine {
    /// An engine over `file` with `count` buffers of `size` bytes (`size` a multiple of
    /// [`ALIGN`]). `direct` says the file was opened with `O_DIRECT`.
    pub(crate) fn new(file: File, direct: bool, count: usize, size: usize) -> io::Result<Engine> {
        assert!(count > 0 && size > 0 && size.is_multiple_of(ALIGN));
        let ring = IoUring::new((count as u32 + 2).next_power_of_two())?;
        let bufs = BufPool::new(count, size)?;
        let iovecs = bufs.iovecs();
        // SAFETY: every iovec describes a live buffer owned by `bufs`, which the engine keeps
        // until after the ring is closed (`ring` is dropped first, and `Drop` leaks the buffers
        // if operations might still be running).
        let fixed = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        Ok(Engine {
            ring,
            file,
            bufs,
            slots: (0..count).map(|_| Slot::default()).collect(),
            free: (0..count).rev().collect(),
            filling: None,
            inflight: 0,
            fixed,
            direct,
            done_tags: Vec::new(),
            error: None,
        })
    }

    /// The file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Whether the file is written with `O_DIRECT`.
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether the buffers are registered with the ring.
    pub(crate) fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Size of one buffer: the longest single write.
    pub(crate) fn buf_size(&self) -> usize {
        self.bufs.size
    }

    /// Queues `data` for writing at `offset`, tagged `tag`. Returns the first error of an
    /// earlier write, if one failed since the last call.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8], tag: u32) -> io::Result<()> {
        assert!(data.len() <= self.buf_size());
        self.check()?;
        if let Some(id) = self.filling {
            let s = &self.slots[id];
            if s.file_off + s.len as u64 == offset && s.len + data.len() <= self.buf_size() {
                self.append(id, data, tag);
                return Ok(());
            }
            self.filling = None;
            self.submit(id)?;
        }
        if self.direct {
            assert!(
                offset.is_multiple_of(ALIGN as u64),
                "direct writes start aligned"
            );
        }
        let id = self.take_free()?;
        self.slots[id].file_off = offset;
        self.slots[id].len = 0;
        self.slots[id].tags.clear();
        self.filling = Some(id);
        self.append(id, data, tag);
        Ok(())
    }

    /// Queues `data` for writing at `offset` straight from its memory, without copying it into
    /// a buffer of the pool: the engine keeps `data` until the write completes. In direct mode
    /// that needs `data` to start on an [`ALIGN`] boundary and to be a multiple of [`ALIGN`]
    /// long; otherwise `data` comes back and the caller copies it with [`Engine::write`].
    pub(crate) fn write_owned(
        &mut self,
        offset: u64,
        data: bytes::Bytes,
        tag: u32,
    ) -> io::Result<Result<(), bytes::Bytes>> {
        let aligned = (data.as_ptr() as usize).is_multiple_of(ALIGN)
            && data.len().is_multiple_of(ALIGN)
            && offset.is_multiple_of(ALIGN as u64);
        if data.is_empty() || (self.direct && !aligned) {
            return Ok(Err(data));
        }
        self.check()?;
        if let Some(id) = self.filling.take() {
            self.submit(id)?;
        }
        let id = self.take_free()?;
        let s = &mut self.slots[id];
        s.file_off = offset;
        s.len = data.len();
        s.io_len = data.len();
        s.done = 0;
        s.tags.clear();
        s.tags.push(tag);
        s.owned = Some(data);
        self.inflight += 1;
        self.push_write(id)?;
        Ok(Ok(()))
    }

    fn append(&mut self, id: usize, data: &[u8], tag: u32) {
        let s = &mut self.slots[id];
        self.bufs.get_mut(id)[s.len..s.len + data.len()].copy_from_slice(data);
        s.len += data.len();
        s.tags.push(tag);
        if s.len == self.bufs.size {
            self.filling = None;
            // An error here is kept and reported by the next call.
            if let Err(e) = self.submit(id) {
                self.error.get_or_insert(e);
            }
        }
    }

    fn check(&mut self) -> io::Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn take_free(&mut self) -> io::Result<usize> {
        while self.free.is_empty() {
            self.reap(1)?;
            self.check()?;
        }
        Ok(self.free.pop().expect("a free buffer"))
    }

    fn submit(&mut self, id: usize) -> io::Result<()> {
        let s = &mut self.slots[id];
        s.io_len = if self.direct {
            s.len.next_multiple_of(ALIGN)
        } else {
            s.len
        };
        s.done = 0;
        let (len, io_len) = (s.len, s.io_len);
        self.bufs.get_mut(id)[len..io_len].fill(0);
        self.inflight += 1;
        self.push_write(id)
    }

    /// Pushes the SQE for the rest of slot `id`'s write and submits it.
    fn push_write(&mut self, id: usize) -> io::Result<()> {
        let s = &self.slots[id];
        let fd = types::Fd(self.file.as_raw_fd());
        let len = (s.io_len - s.done) as u32;
        let off = s.file_off + s.done as u64;
        if let Some(data) = &s.owned {
            let ptr = data[s.done..].as_ptr();
            let sqe = opcode::Write::new(fd, ptr, len)
                .offset(off)
                .build()
                .user_data(id as u64);
            // SAFETY: the SQE points into `data`, which the slot owns until the completion is
            // reaped (`finish_slot` drops it then; `Drop` leaks it if it cannot wait). `Bytes`
            // are immutable, so nothing writes that memory meanwhile. `fd` is `self.file`.
            return unsafe { self.push(&sqe) };
        }
        let ptr = self.bufs.get(id)[s.done..].as_ptr();
        let sqe = if self.fixed {
            opcode::WriteFixed::new(fd, ptr, len, id as u16)
                .offset(off)
                .build()
        } else {
            opcode::Write::new(fd, ptr, len).offset(off).build()
        }
        .user_data(id as u64);
        // SAFETY: the SQE points into buffer `id` (registered as index `id` when `fixed`), whose
        // slot is now in flight: nothing touches the buffer until its completion is reaped, and
        // the buffer outlives the operation (see the module docs). `fd` is `self.file`, open for
        // the engine's lifetime.
        unsafe { self.push(&sqe) }
    }

    /// # Safety
    /// Every pointer in `sqe` must stay valid, and its memory untouched by Rust code, until the
    /// operation's completion is reaped.
    unsafe fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller guarantees the SQE's memory contract.
            let pushed = unsafe { self.ring.submission().push(sqe) }.is_ok();
            if pushed {
                break;
            }
            // The submission queue is full: hand it to the kernel and retry.
            self.enter(0)?;
        }
        self.enter(0)
    }

    fn enter(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && want == 0 => {
                    // The completion queue is full: reap before submitting more.
                    self.reap_ready();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for at least `want` completions, then processes every ready one.
    fn reap(&mut self, want: usize) -> io::Result<()> {
        self.enter(want)?;
        self.reap_ready();
        Ok(())
    }

    fn reap_ready(&mut self) {
        let ready: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (id, res) in ready {
            if id == ONE_OFF {
                continue;
            }
            let id = id as usize;
            if res < 0 {
                self.error.get_or_insert(io::Error::from_raw_os_error(-res));
                self.finish_slot(id, false);
            } else if res == 0 {
                self.error
                    .get_or_insert(io::Error::from(io::ErrorKind::WriteZero));
                self.finish_slot(id, false);
            } else {
                self.slots[id].done += res as usize;
                if self.slots[id].done < self.slots[id].io_len {
                    // A short write: continue with the rest.
                    if let Err(e) = self.push_write(id) {
                        self.error.get_or_insert(e);
                        self.finish_slot(id, false);
                    }
                } else {
                    self.finish_slot(id, true);
                }
            }
        }
    }

    fn finish_slot(&mut self, id: usize, ok: bool) {
        self.inflight -= 1;
        // The kernel is done with a caller's buffer: it may go.
        self.slots[id].owned = None;
        if ok {
            self.done_tags.append(&mut self.slots[id].tags);
        } else {
            self.slots[id].tags.clear();
        }
        self.free.push(id);
    }

    /// Submits the buffer being filled and waits for every write in flight. Returns the first
    /// write error since the last check.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(id) = self.filling.take() {
            if let Err(e) = self.submit(id) {
                self.error.get_or_insert(e);
            }
        }
        while self.inflight > 0 {
            if let Err(e) = self.reap(1) {
                // The ring itself failed; nothing more can be waited for.
                self.error.get_or_insert(e);
                break;
            }
        }
        self.check()
    }

    /// Submits the buffer being filled without waiting, and collects the writes that have
    /// completed. Returns the first write error since the last check.
    pub(crate) fn start_writes(&mut self) -> io::Result<()> {
        if let Some(id) = self.filling.take() {
            if let Err(e) = self.submit(id) {
                self.error.get_or_insert(e);
            }
        }
        self.reap_ready();
        self.check()
    }

    /// Moves the tags of completed writes to `out`.
    pub(crate) fn take_done(&mut self, out: &mut Vec<u32>) {
        out.append(&mut self.done_tags);
    }

    /// Runs one operation with nothing else in flight and returns its result.
    ///
    /// # Safety
    /// As [`Engine::push`]: the operation's memory must stay valid until it completes, which
    /// this function waits for.
    unsafe fn one_off(&mut self, sqe: io_uring::squeue::Entry) -> io::Result<i32> {
        self.flush()?;
        // SAFETY: forwarded from the caller.
        unsafe { self.push(&sqe.user_data(ONE_OFF)) }?;
        loop {
            self.enter(1)?;
            let cqe = self.ring.completion().next();
            if let Some(c) = cqe {
                debug_assert_eq!(c.user_data(), ONE_OFF);
                if c.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-c.result()));
                }
                return Ok(c.result());
            }
        }
    }

    /// Writes out every queued write, then `fdatasync`s the file through the ring.
    pub(crate) fn fdatasync(&mut self) -> io::Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let sqe = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: the operation refers to no memory, and `fd` is open for the engine's life.
        unsafe { self.one_off(sqe) }.map(drop)
    }

    /// Reads up to `len` bytes at `offset` (aligned to [`ALIGN`] in direct mode; `len` at most
    /// one buffer) after finishing every write. Returns fewer bytes only at the end of the file.
    pub(crate) fn read_at(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        assert!(len <= self.buf_size());
        self.flush()?;
        let id = self.free.pop().expect("no write in flight after flush");
        let io_len = if self.direct {
            len.next_multiple_of(ALIGN)
        } else {
            len
        };
        let mut got = 0;
        let result = loop {
            if got >= len {
                break Ok(());
            }
            let fd = types::Fd(self.file.as_raw_fd());
            let ptr = self.bufs.get_mut(id)[got..].as_mut_ptr();
            let n = (io_len - got) as u32;
            let off = offset + got as u64;
            let sqe = if self.fixed {
                opcode::ReadFixed::new(fd, ptr, n, id as u16)
                    .offset(off)
                    .build()
            } else {
                opcode::Read::new(fd, ptr, n).offset(off).build()
            };
            // SAFETY: the SQE points into buffer `id`, taken off the free list so nothing else
            // uses it, and `one_off` returns only after the read completed.
            match unsafe { self.one_off(sqe) } {
                Ok(0) => break Ok(()),
                Ok(k) => got += k as usize,
                Err(e) => break Err(e),
            }
        };
        self.free.push(id);
        result?;
        Ok(&self.bufs.get(id)[..got.min(len)])
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A buffer being filled was never submitted: nothing to wait for.
        self.filling = None;
        while self.inflight > 0 {
            if self.reap(1).is_err() {
                // Operations may still use the buffers: leak them rather than free memory the
                // kernel could write to (or read from, for a caller's buffer).
                self.bufs.leaked = true;
                for s in &mut self.slots {
                    std::mem::forget(s.owned.take());
                }
                return;
            }
        }
    }
}

/// Bytes available to an unprivileged user on the filesystem holding `path` (`statvfs`).
pub(crate) fn available_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a writable `statvfs`, both alive for the
    // call; the kernel writes only into `st`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Takes an exclusive advisory lock on `file` without waiting; `Ok(false)` if another open
/// file description holds it. Released when the file is closed (or its process dies).
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: `flock` only reads its two integer arguments; the descriptor is owned by `file`,
    // which is borrowed for the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_start_on_a_huge_page_boundary_and_do_not_overlap() {
        for (count, size) in [(4, 1 << 20), (3, 64 << 10), (1, 3 << 20)] {
            let mut pool = BufPool::new(count, size).unwrap();
            assert_eq!(pool.ptr(0) as usize % HUGE, 0);
            for id in 0..count {
                assert_eq!(pool.ptr(id) as usize - pool.ptr(0) as usize, id * size);
                assert!(pool.get(id).iter().all(|&b| b == 0));
                pool.get_mut(id).fill(id as u8 + 1);
            }
            for id in 0..count {
                assert!(pool.get(id).iter().all(|&b| b == id as u8 + 1));
            }
        }
    }
}
