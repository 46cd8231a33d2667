//! Image files passed over the control socket as open descriptors (SCM_RIGHTS), so the agent
//! reads only what the caller could open itself: it never opens a path a caller names, and a
//! caller cannot make it probe files closed to them.

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one request may carry (a manifest names one image per hw-profile). With at
/// most 32 clients read at once, callers hold at most 512 of the agent's descriptors; the unit
/// sets `LimitNOFILE` well above that.
pub const MAX_FILES: usize = 16;

/// Reads from `stream` into `buf` (like `read`), keeping any descriptors that came with the
/// bytes in `files`. More than [`MAX_FILES`] in all is an error (those received are closed).
pub fn read_with_files(
    stream: &UnixStream,
    buf: &mut [u8],
    files: &mut Vec<File>,
) -> std::io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FILES]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let n = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel installed `fd` in this process for this message just now
                // (SCM_RIGHTS); nothing else in the process knows or owns it, so taking
                // ownership here is sound and it is closed exactly once, when dropped.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                files.push(File::from(owned));
            }
        }
    }
    if truncated || files.len() > MAX_FILES {
        return Err(std::io::Error::other(format!(
            "more than {MAX_FILES} files passed with one request"
        )));
    }
    Ok(n)
}

/// Checks that `file` is a regular file opened for reading (not a directory, device, pipe, or a
/// path-only descriptor), and returns its length.
pub fn readable_regular(file: &File) -> Result<u64, String> {
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| format!("cannot read its flags: {e}"))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    if flags.contains(nix::fcntl::OFlag::O_PATH) || flags.contains(nix::fcntl::OFlag::O_WRONLY) {
        return Err("it was not opened for reading".into());
    }
    Ok(meta.len())
}
