//! A generic netlink socket to the kernel's devlink family: resolves the family and its `config`
//! multicast group, sends a request and collects its replies up to the kernel's ack; a connection
//! that joined the group (a monitor) hands over the notifications it received. Every wait is
//! bounded.
//!
//! The kernel carries out a devlink command inside the `send` that delivers it, so a flash's
//! progress notifications arrive while the requesting thread is still blocked there: they are
//! read by another thread on another socket, never the requesting one (whose buffer they would
//! fill, making the kernel drop the ack).
//!
//! The socket work is `netlink-sys`'s; messages are framed by `netlink-packet-core` and
//! `netlink-packet-generic`; waiting uses `poll(2)` through `nix`.

use super::error::NetlinkError;
use super::message::DevlinkMessage;
use super::uapi::{FAMILY_NAME, MCGRP_CONFIG};
use netlink_packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_ACK,
    NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::{GenlCtrlAttrs, McastGrpAttrs};
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt::Debug;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// `ENOENT`: what the controller answers for a family the kernel does not have.
const ENOENT: i32 = 2;
/// `ENOBUFS`: the socket dropped messages (notifications came faster than they were read).
const ENOBUFS: i32 = 105;
/// Receive buffer asked for a monitor (the kernel caps it at `net.core.rmem_max`).
const MONITOR_BUFFER: usize = 4 << 20;

/// An open socket with the devlink family resolved.
pub struct Connection {
    socket: Socket,
    family: u16,
    config_group: Option<u32>,
    seq: u32,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { what, source }
}

impl Connection {
    /// Opens a socket and resolves the devlink family within `timeout`.
    pub fn open(timeout: Duration) -> Result<Connection, NetlinkError> {
        let mut socket =
            Socket::new(NETLINK_GENERIC).map_err(io("opening a generic netlink socket"))?;
        socket
            .bind_auto()
            .map_err(io("binding the generic netlink socket"))?;
        // Extended acks carry the driver's message; capped acks keep error replies small.
        // Kernels without them still answer, only without the message.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        socket
            .set_non_blocking(true)
            .map_err(io("making the netlink socket non-blocking"))?;
        let mut c = Connection {
            socket,
            family: 0,
            config_group: None,
            seq: 0,
        };
        c.resolve(timeout)?;
        Ok(c)
    }

    /// Asks the generic netlink controller for devlink's family id and multicast groups.
    fn resolve(&mut self, timeout: Duration) -> Result<(), NetlinkError> {
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY_NAME.into())],
        });
        let replies = match self.transact(request, timeout) {
            Err(NetlinkError::Kernel { errno: ENOENT, .. }) => return Err(NetlinkError::NoFamily),
            other => other?,
        };
        for reply in replies {
            for nla in reply.nlas {
                match nla {
                    GenlCtrlAttrs::FamilyId(id) => self.family = id,
                    GenlCtrlAttrs::McastGroups(groups) => {
                        for g in groups {
                            let named = g
                                .iter()
                                .any(|a| matches!(a, McastGrpAttrs::Name(n) if n == MCGRP_CONFIG));
                            let id = g.iter().find_map(|a| match a {
                                McastGrpAttrs::Id(id) => Some(*id),
                                _ => None,
                            });
                            if named {
                                self.config_group = id;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if self.family == 0 {
            return Err(NetlinkError::NoFamily);
        }
        Ok(())
    }

    /// Joins devlink's `config` multicast group, which carries flash progress. A connection that
    /// joined it is a monitor: requests go through another one, whose answers it cannot crowd out.
    pub fn subscribe_config(&self) -> Result<(), NetlinkError> {
        let group = self.config_group.ok_or_else(|| {
            NetlinkError::Decode(format!(
                "the devlink family has no {MCGRP_CONFIG:?} multicast group"
            ))
        })?;
        // Progress comes fast; losing some is harmless, an error on the socket is not.
        let _ = self.socket.set_no_enobufs(true);
        let _ = self.socket.set_rx_buf_sz(MONITOR_BUFFER);
        self.socket
            .add_membership(group)
            .map_err(io("joining devlink's config multicast group"))
    }

    /// Sends `msg` and returns the replies that came before the kernel's ack. Fails when the
    /// kernel refuses (with its message) or when nothing ends the exchange within `timeout`.
    pub fn request(
        &mut self,
        msg: DevlinkMessage,
        timeout: Duration,
    ) -> Result<Vec<DevlinkMessage>, NetlinkError> {
        let mut m = GenlMessage::from_payload(msg);
        m.set_resolved_family_id(self.family);
        self.transact(m, timeout)
    }

    /// Waits up to `wait` for notifications on this connection (one that joined the `config`
    /// group), then hands every one already received to `on_notification`.
    pub fn drain(
        &self,
        wait: Duration,
        on_notification: &mut dyn FnMut(DevlinkMessage),
    ) -> Result<(), NetlinkError> {
        let Some(first) = self.recv(Instant::now() + wait) else {
            return Ok(());
        };
        let mut datagram = first?;
        loop {
            for m in split::<DevlinkMessage>(&datagram)? {
                if let NetlinkPayload::InnerMessage(m) = m.payload {
                    on_notification(m.payload);
                }
            }
            datagram = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => continue,
                Err(e) => return Err(io("reading from the netlink socket")(e)),
            };
        }
    }

    fn transact<F>(
        &mut self,
        msg: GenlMessage<F>,
        timeout: Duration,
    ) -> Result<Vec<F>, NetlinkError>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        request.finalize();
        let mut buf = vec![0u8; request.buffer_len()];
        request.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(io("sending a devlink request"))?;

        let deadline = Instant::now() + timeout;
        let mut replies = Vec::new();
        loop {
            let datagram = self
                .recv(deadline)
                .ok_or(NetlinkError::Timeout(timeout))??;
            for m in split::<F>(&datagram)? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner.payload),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(NetlinkError::from_kernel(&m.header, &e)),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    _ => {}
                }
            }
        }
    }

    /// Waits for one datagram and reads it; `None` when the deadline passed first.
    fn recv(&self, deadline: Instant) -> Option<Result<Vec<u8>, NetlinkError>> {
        Some(loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let wait = PollTimeout::try_from(left.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    break Err(NetlinkError::Io {
                        what: "waiting on the netlink socket",
                        source: e.into(),
                    })
                }
            }
            match self.socket.recv_from_full() {
                Ok((data, _)) => break Ok(data),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => continue,
                Err(e) => break Err(io("reading from the netlink socket")(e)),
            }
        })
    }
}

/// The netlink messages of one datagram.
fn split<F>(datagram: &[u8]) -> Result<Vec<NetlinkMessage<GenlMessage<F>>>, NetlinkError>
where
    F: ParseableParametrized<[u8], GenlHeader> + Debug,
{
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= datagram.len() {
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len < 16 || at + len > datagram.len() {
            return Err(NetlinkError::Decode(format!(
                "a netlink message of {len} bytes at offset {at} of {}",
                datagram.len()
            )));
        }
        out.push(
            NetlinkMessage::<GenlMessage<F>>::deserialize(&datagram[at..at + len])
                .map_err(|e| NetlinkError::Decode(e.to_string()))?,
        );
        at += (len + 3) & !3;
    }
    Ok(out)
}
