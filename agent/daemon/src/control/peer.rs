//! Who is at the other end of a control connection, as the kernel recorded it when they
//! connected: uid, pid and primary group (SO_PEERCRED) and supplementary groups
//! (SO_PEERGROUPS). Neither can change after the connect, unlike `/proc/<pid>`, which a caller
//! can make name another process by exiting.

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The caller's credentials, as of its connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCred {
    /// Its user id.
    pub uid: u32,
    /// Its process id (for the log).
    pub pid: i32,
    /// Its primary group, then its supplementary groups.
    pub groups: Vec<u32>,
}

/// Most supplementary groups read (Linux's NGROUPS_MAX is 65536).
const MAX_GROUPS: usize = 65536;

/// Reads the peer's credentials and groups from `stream`.
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
    let mut groups = vec![cred.gid()];
    groups.extend(peer_groups(stream)?);
    Ok(PeerCred {
        uid: cred.uid(),
        pid: cred.pid(),
        groups,
    })
}

/// The peer's supplementary groups (SO_PEERGROUPS, Linux 4.13 and later).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes of gid_t, which is what the kernel
        // writes for SO_PEERGROUPS; `len` is a valid in/out length for the call.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: the buffer was short; `len` says how long it must be.
        if err.raw_os_error() != Some(libc::ERANGE) || n <= groups.len() || n > MAX_GROUPS {
            return Err(err);
        }
        groups.resize(n, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_seen_with_its_own_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_cred(&a).unwrap();
        assert_eq!(cred.uid, nix::unistd::getuid().as_raw());
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.groups[0], nix::unistd::getgid().as_raw());
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut seen = cred.groups[1..].to_vec();
        mine.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, mine);
    }
}
