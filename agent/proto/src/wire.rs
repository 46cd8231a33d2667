//! Versioned wire encoding of [`crate::Message`].
//!
//! Layout: byte 0 is [`WIRE_VERSION`], byte 1 the message tag, then the message's fields in
//! declaration order, fixed width and little-endian. `Option` and `bool` are a flag byte (0 or 1),
//! enums a `u8` code from the tables below, lists a `u32` count followed by the entries.
//!
//! | tag | message     | body                                                                 |
//! |-----|-------------|----------------------------------------------------------------------|
//! | 1   | `Hello`     | window, activated (flag, epoch), link (flag, committed, pending), your version (flag, incarnation, counter) |
//! | 2   | `Activated` | epoch                                                                |
//! | 3   | `Txn`       | kind u8, epoch, nonce, digest (32 bytes), reason u8                  |
//! | 4   | `Lease`     | kind u8 (0 req, 1 grant, 2 deny, 3 release), then that kind's fields |
//! | 5   | `Campaign`  | epoch, window, digest (32), disruptive flag, max ms u32, origin      |
//! | 6   | `Control`   | epoch, action u8, counter u64                                        |
//! | 7   | `Gossip`    | upto u64, then the lists links, phases, marks, declared, beats       |
//! | 8   | `GossipAck` | upto u64                                                             |
//! | 9   | `Probe`     | epoch, seq u64                                                       |
//!
//! Gossip entries: link `(reporter, peer, epoch)`; phase `(node, epoch, phase u8, incarnation
//! u32, counter u32)`; mark `(a, b, counter u32, by, retired flag)`, a link's last retire or
//! restore; declared `(node, peer)`, a configured link not reported yet; beat `(node, beat u64)`.
//!
//! Version history: 1, the first; 2, gossip's retired pairs became versioned marks, and the
//! declared and beats lists were added (a version-1 peer is refused with
//! [`WireError::UnsupportedVersion`], so agents of one cluster are upgraded together).
//!
//! An option's value follows its flag only when the flag is 1.
//! Epochs, nonces and node ids are `u64`; a window is `min, max`; a pending transaction is a
//! code (0 none, 1 tentative, 2 reflecting) followed by the nonce when it has one. The encoding
//! is canonical: [`decode`] accepts exactly the bytes [`encode`] produces, and rejects the rest
//! without panicking and without allocating more than the input can fill.

use crate::msg::{
    AbortReason, Campaign, Control, ControlAction, DenyReason, Digest, GossipDelta, Hello, Lease,
    LinkSnapshot, Message, Pending, RetireMark, RetireVersion, Txn, TxnKind,
};
use crate::phase::{Phase, PhaseEntry, Version};
use crate::types::{Epoch, NodeId, Nonce, Window};

/// Version of the encoding, carried in byte 0 of every message.
/// 2: HELLO carries `your_version`, ABORT may carry the reason `DeviceRefused`, gossip carries
/// versioned retire/restore marks, declared links and heartbeats.
pub const WIRE_VERSION: u8 = 2;

/// Longest encoded message [`decode`] accepts, in bytes (control frames are far shorter).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// Most entries [`decode`] accepts in each list of a gossip delta.
pub const MAX_GOSSIP_ENTRIES: usize = 2048;

/// Why a byte string is not a valid encoded [`Message`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended early: a field of `needed` bytes at offset `at` runs past its end.
    #[error("truncated: {needed} bytes needed at offset {at}")]
    Truncated {
        /// Bytes the next field needed.
        needed: usize,
        /// Offset of that field.
        at: usize,
    },
    /// Byte 0 names a version this decoder does not speak.
    #[error("unsupported wire version {0} (this decoder speaks {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// Byte 1 is no known message tag.
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    /// An enum field holds a code outside its table.
    #[error("bad {field} code {value}")]
    BadEnum {
        /// Which enum.
        field: &'static str,
        /// The code found.
        value: u8,
    },
    /// An option or boolean flag byte is neither 0 nor 1.
    #[error("bad flag byte {0} (expected 0 or 1)")]
    BadFlag(u8),
    /// The input is longer than [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list count exceeds its bound.
    #[error("{count} entries in {field} exceed the limit of {max}")]
    TooManyEntries {
        /// Which list.
        field: &'static str,
        /// The count found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes remain after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A window's `min` exceeds its `max`.
    #[error("window min exceeds max")]
    InvalidWindow,
}

const TAG_HELLO: u8 = 1;
const TAG_ACTIVATED: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_LEASE: u8 = 4;
const TAG_CAMPAIGN: u8 = 5;
const TAG_CONTROL: u8 = 6;
const TAG_GOSSIP: u8 = 7;
const TAG_GOSSIP_ACK: u8 = 8;
const TAG_PROBE: u8 = 9;

const LEASE_REQ: u8 = 0;
const LEASE_GRANT: u8 = 1;
const LEASE_DENY: u8 = 2;
const LEASE_RELEASE: u8 = 3;

const PENDING_NONE: u8 = 0;
const PENDING_TENTATIVE: u8 = 1;
const PENDING_REFLECTING: u8 = 2;

/// Encoded sizes of one gossip entry: link `(u64, u64, u64)`, phase `(u64, u64, u8, u32, u32)`,
/// mark `(u64, u64, u32, u64, u8)`, declared `(u64, u64)`, beat `(u64, u64)`.
const LINK_LEN: usize = 24;
const PHASE_LEN: usize = 25;
const MARK_LEN: usize = 29;
const DECLARED_LEN: usize = 16;
const BEAT_LEN: usize = 16;

/// Defines an enum's code table once, as an exhaustive encoder and its decoder.
macro_rules! code_table {
    ($enc:ident, $dec:ident, $ty:ty, $field:literal, { $($variant:path = $code:literal,)* }) => {
        fn $enc(v: $ty) -> u8 {
            match v {
                $($variant => $code,)*
            }
        }
        fn $dec(code: u8) -> Result<$ty, WireError> {
            match code {
                $($code => Ok($variant),)*
                value => Err(WireError::BadEnum { field: $field, value }),
            }
        }
    };
}

code_table!(txn_kind_code, txn_kind_from, TxnKind, "txn kind", {
    TxnKind::Propose = 0,
    TxnKind::Reflect = 1,
    TxnKind::Commit = 2,
    TxnKind::CommitAck = 3,
    TxnKind::Abort = 4,
    TxnKind::Query = 5,
});

code_table!(abort_reason_code, abort_reason_from, AbortReason, "abort reason", {
    AbortReason::Unspecified = 0,
    AbortReason::NotActivated = 1,
    AbortReason::WrongNonce = 2,
    AbortReason::GaveUp = 3,
    AbortReason::LocalFailure = 4,
    AbortReason::Restarted = 5,
    AbortReason::Halted = 6,
    AbortReason::DeviceRefused = 7,
});

code_table!(deny_reason_code, deny_reason_from, DenyReason, "deny reason", {
    DenyReason::Budget = 0,
    DenyReason::SelfActivating = 1,
    DenyReason::Halted = 2,
});

code_table!(control_action_code, control_action_from, ControlAction, "control action", {
    ControlAction::Pause = 0,
    ControlAction::Resume = 1,
    ControlAction::Abort = 2,
    ControlAction::Rollback = 3,
});

code_table!(phase_code, phase_from, Phase, "phase", {
    Phase::Idle = 0,
    Phase::Announced = 1,
    Phase::Staged = 2,
    Phase::Activated = 3,
    Phase::Converged = 4,
    Phase::Finalized = 5,
    Phase::Aborted = 6,
    Phase::RolledBack = 7,
    Phase::Halted = 8,
});

/// Appends the encoding of `msg` to `out`.
///
/// Never fails; a gossip delta beyond [`MAX_GOSSIP_ENTRIES`] or [`MAX_MESSAGE_LEN`] encodes but
/// will not decode, so senders split deltas using [`encoded_len`].
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    out.reserve(encoded_len(msg));
    put_u8(out, WIRE_VERSION);
    match msg {
        Message::Hello(h) => {
            put_u8(out, TAG_HELLO);
            put_window(out, h.window);
            put_u8(out, h.activated.is_some().into());
            if let Some(e) = h.activated {
                put_u64(out, e.0);
            }
            put_u8(out, h.link.is_some().into());
            if let Some(link) = h.link {
                put_u64(out, link.committed.0);
                match link.pending {
                    Pending::None => put_u8(out, PENDING_NONE),
                    Pending::Tentative(n) => {
                        put_u8(out, PENDING_TENTATIVE);
                        put_u64(out, n.0);
                    }
                    Pending::Reflecting(n) => {
                        put_u8(out, PENDING_REFLECTING);
                        put_u64(out, n.0);
                    }
                }
            }
            put_u8(out, h.your_version.is_some().into());
            if let Some(v) = h.your_version {
                put_u32(out, v.incarnation);
                put_u32(out, v.counter);
            }
        }
        Message::Activated { epoch } => {
            put_u8(out, TAG_ACTIVATED);
            put_u64(out, epoch.0);
        }
        Message::Txn(t) => {
            put_u8(out, TAG_TXN);
            put_u8(out, txn_kind_code(t.kind));
            put_u64(out, t.epoch.0);
            put_u64(out, t.nonce.0);
            out.extend_from_slice(&t.digest);
            put_u8(out, abort_reason_code(t.reason));
        }
        Message::Lease(l) => {
            put_u8(out, TAG_LEASE);
            match *l {
                Lease::Req { epoch, seq } => {
                    put_u8(out, LEASE_REQ);
                    put_u64(out, epoch.0);
                    put_u32(out, seq);
                }
                Lease::Grant {
                    epoch,
                    seq,
                    duration_ms,
                } => {
                    put_u8(out, LEASE_GRANT);
                    put_u64(out, epoch.0);
                    put_u32(out, seq);
                    put_u32(out, duration_ms);
                }
                Lease::Deny { epoch, seq, reason } => {
                    put_u8(out, LEASE_DENY);
                    put_u64(out, epoch.0);
                    put_u32(out, seq);
                    put_u8(out, deny_reason_code(reason));
                }
                Lease::Release { epoch, seq } => {
                    put_u8(out, LEASE_RELEASE);
                    put_u64(out, epoch.0);
                    put_u32(out, seq);
                }
            }
        }
        Message::Campaign(c) => {
            put_u8(out, TAG_CAMPAIGN);
            put_u64(out, c.epoch.0);
            put_window(out, c.window);
            out.extend_from_slice(&c.image_digest);
            put_u8(out, c.disruptive.into());
            put_u32(out, c.max_activation_ms);
            put_u64(out, c.origin.0);
        }
        Message::Control(c) => {
            put_u8(out, TAG_CONTROL);
            put_u64(out, c.epoch.0);
            put_u8(out, control_action_code(c.action));
            put_u64(out, c.counter);
        }
        Message::Gossip(g) => {
            put_u8(out, TAG_GOSSIP);
            put_u64(out, g.upto);
            put_count(out, g.links.len());
            for (reporter, peer, epoch) in &g.links {
                put_u64(out, reporter.0);
                put_u64(out, peer.0);
                put_u64(out, epoch.0);
            }
            put_count(out, g.phases.len());
            for (node, entry) in &g.phases {
                put_u64(out, node.0);
                put_u64(out, entry.epoch.0);
                put_u8(out, phase_code(entry.phase));
                put_u32(out, entry.version.incarnation);
                put_u32(out, entry.version.counter);
            }
            put_count(out, g.marks.len());
            for (a, b, m) in &g.marks {
                put_u64(out, a.0);
                put_u64(out, b.0);
                put_u32(out, m.version.counter);
                put_u64(out, m.version.by.0);
                put_u8(out, m.retired.into());
            }
            put_count(out, g.declared.len());
            for (node, peer) in &g.declared {
                put_u64(out, node.0);
                put_u64(out, peer.0);
            }
            put_count(out, g.beats.len());
            for (node, beat) in &g.beats {
                put_u64(out, node.0);
                put_u64(out, *beat);
            }
        }
        Message::GossipAck { upto } => {
            put_u8(out, TAG_GOSSIP_ACK);
            put_u64(out, *upto);
        }
        Message::Probe { epoch, seq } => {
            put_u8(out, TAG_PROBE);
            put_u64(out, epoch.0);
            put_u64(out, *seq);
        }
    }
}

/// The encoding of `msg` in a new vector.
pub fn encoded(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

/// Length in bytes of the encoding of `msg`, computed without encoding it.
pub fn encoded_len(msg: &Message) -> usize {
    let body = match msg {
        Message::Hello(h) => {
            let link = h.link.map_or(0, |l| match l.pending {
                Pending::None => 8 + 1,
                Pending::Tentative(_) | Pending::Reflecting(_) => 8 + 1 + 8,
            });
            16 + 1
                + if h.activated.is_some() { 8 } else { 0 }
                + 1
                + link
                + 1
                + if h.your_version.is_some() { 8 } else { 0 }
        }
        Message::Activated { .. } | Message::GossipAck { .. } => 8,
        Message::Txn(_) => 1 + 8 + 8 + 32 + 1,
        Message::Lease(l) => match l {
            Lease::Req { .. } => 1 + 8 + 4,
            Lease::Grant { .. } => 1 + 8 + 4 + 4,
            Lease::Deny { .. } => 1 + 8 + 4 + 1,
            Lease::Release { .. } => 1 + 8 + 4,
        },
        Message::Campaign(_) => 8 + 16 + 32 + 1 + 4 + 8,
        Message::Control(_) => 8 + 1 + 8,
        Message::Gossip(g) => {
            8 + 20
                + g.links.len() * LINK_LEN
                + g.phases.len() * PHASE_LEN
                + g.marks.len() * MARK_LEN
                + g.declared.len() * DECLARED_LEN
                + g.beats.len() * BEAT_LEN
        }
        Message::Probe { .. } => 8 + 8,
    };
    2 + body
}

/// Decodes one message occupying all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(WireError::TooLong {
            len: bytes.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let msg = match r.u8()? {
        TAG_HELLO => {
            let window = r.window()?;
            let activated = if r.flag()? { Some(r.epoch()?) } else { None };
            let link = if r.flag()? {
                let committed = r.epoch()?;
                let pending = match r.u8()? {
                    PENDING_NONE => Pending::None,
                    PENDING_TENTATIVE => Pending::Tentative(Nonce(r.u64()?)),
                    PENDING_REFLECTING => Pending::Reflecting(Nonce(r.u64()?)),
                    value => {
                        return Err(WireError::BadEnum {
                            field: "pending",
                            value,
                        })
                    }
                };
                Some(LinkSnapshot { committed, pending })
            } else {
                None
            };
            let your_version = if r.flag()? {
                Some(crate::phase::Version {
                    incarnation: r.u32()?,
                    counter: r.u32()?,
                })
            } else {
                None
            };
            Message::Hello(Hello {
                window,
                activated,
                link,
                your_version,
            })
        }
        TAG_ACTIVATED => Message::Activated { epoch: r.epoch()? },
        TAG_TXN => Message::Txn(Txn {
            kind: txn_kind_from(r.u8()?)?,
            epoch: r.epoch()?,
            nonce: Nonce(r.u64()?),
            digest: r.bytes32()?,
            reason: abort_reason_from(r.u8()?)?,
        }),
        TAG_LEASE => Message::Lease(match r.u8()? {
            LEASE_REQ => Lease::Req {
                epoch: r.epoch()?,
                seq: r.u32()?,
            },
            LEASE_GRANT => Lease::Grant {
                epoch: r.epoch()?,
                seq: r.u32()?,
                duration_ms: r.u32()?,
            },
            LEASE_DENY => Lease::Deny {
                epoch: r.epoch()?,
                seq: r.u32()?,
                reason: deny_reason_from(r.u8()?)?,
            },
            LEASE_RELEASE => Lease::Release {
                epoch: r.epoch()?,
                seq: r.u32()?,
            },
            value => {
                return Err(WireError::BadEnum {
                    field: "lease kind",
                    value,
                })
            }
        }),
        TAG_CAMPAIGN => Message::Campaign(Campaign {
            epoch: r.epoch()?,
            window: r.window()?,
            image_digest: r.bytes32()?,
            disruptive: r.flag()?,
            max_activation_ms: r.u32()?,
            origin: NodeId(r.u64()?),
        }),
        TAG_CONTROL => Message::Control(Control {
            epoch: r.epoch()?,
            action: control_action_from(r.u8()?)?,
            counter: r.u64()?,
        }),
        TAG_GOSSIP => {
            let upto = r.u64()?;
            let n = r.count("links", LINK_LEN)?;
            let mut links = Vec::with_capacity(n);
            for _ in 0..n {
                links.push((NodeId(r.u64()?), NodeId(r.u64()?), r.epoch()?));
            }
            let n = r.count("phases", PHASE_LEN)?;
            let mut phases = Vec::with_capacity(n);
            for _ in 0..n {
                let node = NodeId(r.u64()?);
                let epoch = r.epoch()?;
                let phase = phase_from(r.u8()?)?;
                let version = Version {
                    incarnation: r.u32()?,
                    counter: r.u32()?,
                };
                phases.push((
                    node,
                    PhaseEntry {
                        epoch,
                        phase,
                        version,
                    },
                ));
            }
            let n = r.count("marks", MARK_LEN)?;
            let mut marks = Vec::with_capacity(n);
            for _ in 0..n {
                let (a, b) = (NodeId(r.u64()?), NodeId(r.u64()?));
                let version = RetireVersion {
                    counter: r.u32()?,
                    by: NodeId(r.u64()?),
                };
                let retired = r.flag()?;
                marks.push((a, b, RetireMark { version, retired }));
            }
            let n = r.count("declared", DECLARED_LEN)?;
            let mut declared = Vec::with_capacity(n);
            for _ in 0..n {
                declared.push((NodeId(r.u64()?), NodeId(r.u64()?)));
            }
            let n = r.count("beats", BEAT_LEN)?;
            let mut beats = Vec::with_capacity(n);
            for _ in 0..n {
                beats.push((NodeId(r.u64()?), r.u64()?));
            }
            Message::Gossip(GossipDelta {
                upto,
                links,
                phases,
                marks,
                declared,
                beats,
            })
        }
        TAG_GOSSIP_ACK => Message::GossipAck { upto: r.u64()? },
        TAG_PROBE => Message::Probe {
            epoch: r.epoch()?,
            seq: r.u64()?,
        },
        tag => return Err(WireError::UnknownTag(tag)),
    };
    match bytes.len() - r.pos {
        0 => Ok(msg),
        extra => Err(WireError::TrailingBytes(extra)),
    }
}

/// A cursor over the input; every read checks the remaining length first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let truncated = WireError::Truncated {
            needed: N,
            at: self.pos,
        };
        let rest = self.buf.get(self.pos..).ok_or(truncated)?;
        let field = rest.first_chunk::<N>().ok_or(truncated)?;
        self.pos += N;
        Ok(*field)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.take().map(u64::from_le_bytes)
    }
    fn bytes32(&mut self) -> Result<Digest, WireError> {
        self.take()
    }
    fn epoch(&mut self) -> Result<Epoch, WireError> {
        self.u64().map(Epoch)
    }
    fn flag(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(WireError::BadFlag(other)),
        }
    }
    fn window(&mut self) -> Result<Window, WireError> {
        let (min, max) = (self.epoch()?, self.epoch()?);
        if min > max {
            return Err(WireError::InvalidWindow);
        }
        Ok(Window { min, max })
    }
    /// A list count, checked against its bound and against the bytes left for its entries.
    fn count(&mut self, field: &'static str, entry_len: usize) -> Result<usize, WireError> {
        let count = self.u32()? as usize;
        if count > MAX_GOSSIP_ENTRIES {
            return Err(WireError::TooManyEntries {
                field,
                count,
                max: MAX_GOSSIP_ENTRIES,
            });
        }
        let needed = count * entry_len;
        if needed > self.buf.len() - self.pos {
            return Err(WireError::Truncated {
                needed,
                at: self.pos,
            });
        }
        Ok(count)
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_window(out: &mut Vec<u8>, w: Window) {
    put_u64(out, w.min.0);
    put_u64(out, w.max.0);
}

/// A list count; saturates (and then fails to decode) rather than wrapping on absurd lengths.
fn put_count(out: &mut Vec<u8>, len: usize) {
    put_u32(out, u32::try_from(len).unwrap_or(u32::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_of_each() -> Vec<Message> {
        let phase = |epoch, phase, counter| PhaseEntry {
            epoch: Epoch(epoch),
            phase,
            version: Version {
                incarnation: 2,
                counter,
            },
        };
        vec![
            Message::Hello(Hello {
                window: Window::new(0, 1),
                activated: None,
                link: None,
                your_version: None,
            }),
            Message::Hello(Hello {
                window: Window::new(3, 4),
                activated: Some(Epoch(4)),
                link: Some(LinkSnapshot {
                    committed: Epoch(3),
                    pending: Pending::Tentative(Nonce(7)),
                }),
                your_version: Some(Version {
                    incarnation: 3,
                    counter: 9,
                }),
            }),
            Message::Hello(Hello {
                window: Window::new(3, 4),
                activated: Some(Epoch(4)),
                link: Some(LinkSnapshot {
                    committed: Epoch(3),
                    pending: Pending::Reflecting(Nonce(8)),
                }),
                your_version: Some(Version {
                    incarnation: 3,
                    counter: 9,
                }),
            }),
            Message::Hello(Hello {
                window: Window::new(5, 5),
                activated: None,
                link: Some(LinkSnapshot {
                    committed: Epoch(5),
                    pending: Pending::None,
                }),
                your_version: Some(Version {
                    incarnation: 3,
                    counter: 9,
                }),
            }),
            Message::Activated { epoch: Epoch(9) },
            Message::Txn(Txn::new(TxnKind::Propose, Epoch(1), Nonce(1))),
            Message::Txn(Txn {
                digest: [0xab; 32],
                ..Txn::new(TxnKind::Reflect, Epoch(1), Nonce(1))
            }),
            Message::Txn(Txn::abort(
                Epoch(2),
                Nonce(u64::MAX),
                AbortReason::Restarted,
            )),
            Message::Lease(Lease::Req {
                epoch: Epoch(1),
                seq: 3,
            }),
            Message::Lease(Lease::Grant {
                epoch: Epoch(1),
                seq: 3,
                duration_ms: 30_000,
            }),
            Message::Lease(Lease::Deny {
                epoch: Epoch(1),
                seq: 4,
                reason: DenyReason::Budget,
            }),
            Message::Lease(Lease::Release {
                epoch: Epoch(1),
                seq: 3,
            }),
            Message::Campaign(Campaign {
                epoch: Epoch(2),
                window: Window::new(1, 2),
                image_digest: [7; 32],
                disruptive: true,
                max_activation_ms: 90_000,
                origin: NodeId(42),
            }),
            Message::Control(Control {
                epoch: Epoch(2),
                action: ControlAction::Pause,
                counter: 5,
            }),
            Message::Gossip(GossipDelta::default()),
            Message::Gossip(GossipDelta {
                upto: 17,
                links: vec![
                    (NodeId(1), NodeId(2), Epoch(3)),
                    (NodeId(2), NodeId(1), Epoch(2)),
                ],
                phases: vec![
                    (NodeId(1), phase(3, Phase::Converged, 9)),
                    (NodeId(2), phase(3, Phase::RolledBack, 1)),
                ],
                marks: vec![(
                    NodeId(1),
                    NodeId(5),
                    RetireMark {
                        version: RetireVersion {
                            counter: 7,
                            by: NodeId(5),
                        },
                        retired: true,
                    },
                )],
                declared: vec![(NodeId(3), NodeId(1))],
                beats: vec![(NodeId(3), 99)],
            }),
            Message::GossipAck { upto: 17 },
            Message::Probe {
                epoch: Epoch(3),
                seq: 1 << 40,
            },
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for msg in one_of_each() {
            let bytes = encoded(&msg);
            assert_eq!(bytes.len(), encoded_len(&msg), "{msg:?}");
            assert_eq!(bytes[0], WIRE_VERSION);
            assert_eq!(decode(&bytes), Ok(msg));
        }
    }

    #[test]
    fn encode_appends() {
        let mut out = vec![0xee];
        encode(&Message::GossipAck { upto: 1 }, &mut out);
        assert_eq!(
            out,
            [0xee, WIRE_VERSION, TAG_GOSSIP_ACK, 1, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn code_tables_follow_wire_order() {
        for (i, k) in TxnKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(txn_kind_code(k)), i);
        }
        for (i, p) in Phase::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(phase_code(p)), i);
        }
    }

    #[test]
    fn error_truncated() {
        assert_eq!(decode(&[]), Err(WireError::Truncated { needed: 1, at: 0 }));
        assert_eq!(
            decode(&[WIRE_VERSION]),
            Err(WireError::Truncated { needed: 1, at: 1 })
        );
        assert_eq!(
            decode(&[WIRE_VERSION, TAG_PROBE, 1, 2, 3]),
            Err(WireError::Truncated { needed: 8, at: 2 })
        );
        for msg in one_of_each() {
            let bytes = encoded(&msg);
            for cut in 0..bytes.len() {
                assert!(
                    matches!(decode(&bytes[..cut]), Err(WireError::Truncated { .. })),
                    "{msg:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn error_truncated_list_checked_before_allocating() {
        let mut bytes = vec![WIRE_VERSION, TAG_GOSSIP];
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&2048u32.to_le_bytes());
        bytes.extend_from_slice(&[0; LINK_LEN]);
        assert_eq!(
            decode(&bytes),
            Err(WireError::Truncated {
                needed: 2048 * LINK_LEN,
                at: 14
            })
        );
    }

    #[test]
    fn error_unsupported_version() {
        let mut bytes = encoded(&Message::GossipAck { upto: 1 });
        bytes[0] = 3;
        assert_eq!(decode(&bytes), Err(WireError::UnsupportedVersion(3)));
        // version 1 (HELLO without `your_version`, unversioned retired pairs): refused, not
        // misread
        bytes[0] = 1;
        assert_eq!(decode(&bytes), Err(WireError::UnsupportedVersion(1)));
        assert_eq!(decode(&[0]), Err(WireError::UnsupportedVersion(0)));
    }

    #[test]
    fn error_unknown_tag() {
        for tag in [0, 10, 255] {
            assert_eq!(
                decode(&[WIRE_VERSION, tag]),
                Err(WireError::UnknownTag(tag))
            );
        }
    }

    #[test]
    fn error_bad_enum() {
        let bad = |msg: Message, at: usize, value: u8| {
            let mut bytes = encoded(&msg);
            bytes[at] = value;
            decode(&bytes)
        };
        let txn = Message::Txn(Txn::new(TxnKind::Commit, Epoch(1), Nonce(1)));
        assert_eq!(
            bad(txn.clone(), 2, 6),
            Err(WireError::BadEnum {
                field: "txn kind",
                value: 6
            })
        );
        assert_eq!(
            bad(txn, 51, 8),
            Err(WireError::BadEnum {
                field: "abort reason",
                value: 8
            })
        );
        let lease = Message::Lease(Lease::Deny {
            epoch: Epoch(1),
            seq: 1,
            reason: DenyReason::Halted,
        });
        assert_eq!(
            bad(lease.clone(), 2, 4),
            Err(WireError::BadEnum {
                field: "lease kind",
                value: 4
            })
        );
        assert_eq!(
            bad(lease, 15, 3),
            Err(WireError::BadEnum {
                field: "deny reason",
                value: 3
            })
        );
        let control = Message::Control(Control {
            epoch: Epoch(1),
            action: ControlAction::Abort,
            counter: 1,
        });
        assert_eq!(
            bad(control, 10, 4),
            Err(WireError::BadEnum {
                field: "control action",
                value: 4
            })
        );
        let hello = Message::Hello(Hello {
            window: Window::new(0, 1),
            activated: None,
            link: Some(LinkSnapshot {
                committed: Epoch(0),
                pending: Pending::None,
            }),
            your_version: None,
        });
        assert_eq!(
            bad(hello, 28, 3),
            Err(WireError::BadEnum {
                field: "pending",
                value: 3
            })
        );
        let gossip = Message::Gossip(GossipDelta {
            phases: vec![(NodeId(1), PhaseEntry::default())],
            ..GossipDelta::default()
        });
        assert_eq!(
            bad(gossip, 34, 9),
            Err(WireError::BadEnum {
                field: "phase",
                value: 9
            })
        );
    }

    #[test]
    fn error_bad_flag() {
        let hello = encoded(&Message::Hello(Hello {
            window: Window::new(0, 1),
            activated: None,
            link: None,
            your_version: None,
        }));
        for at in [18, 19, 20] {
            let mut bytes = hello.clone();
            bytes[at] = 2;
            assert_eq!(decode(&bytes), Err(WireError::BadFlag(2)));
        }
        let mut campaign = encoded(&Message::Campaign(Campaign {
            epoch: Epoch(1),
            window: Window::new(0, 1),
            image_digest: [0; 32],
            disruptive: false,
            max_activation_ms: 1,
            origin: NodeId(1),
        }));
        campaign[58] = 0xff;
        assert_eq!(decode(&campaign), Err(WireError::BadFlag(0xff)));
    }

    #[test]
    fn error_too_long() {
        let bytes = vec![WIRE_VERSION; MAX_MESSAGE_LEN + 1];
        assert_eq!(
            decode(&bytes),
            Err(WireError::TooLong {
                len: MAX_MESSAGE_LEN + 1,
                max: MAX_MESSAGE_LEN
            })
        );
    }

    #[test]
    fn error_too_many_entries() {
        let too_many = MAX_GOSSIP_ENTRIES + 1;
        let gossip = |n_links, n_declared| {
            encoded(&Message::Gossip(GossipDelta {
                links: vec![(NodeId(1), NodeId(2), Epoch(1)); n_links],
                declared: vec![(NodeId(1), NodeId(2)); n_declared],
                ..GossipDelta::default()
            }))
        };
        assert_eq!(
            decode(&gossip(too_many, 0)),
            Err(WireError::TooManyEntries {
                field: "links",
                count: too_many,
                max: MAX_GOSSIP_ENTRIES
            })
        );
        assert_eq!(
            decode(&gossip(0, too_many)),
            Err(WireError::TooManyEntries {
                field: "declared",
                count: too_many,
                max: MAX_GOSSIP_ENTRIES
            })
        );
        let mut huge = vec![WIRE_VERSION, TAG_GOSSIP];
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&0u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode(&huge),
            Err(WireError::TooManyEntries {
                field: "phases",
                count: u32::MAX as usize,
                max: MAX_GOSSIP_ENTRIES
            })
        );
    }

    #[test]
    fn error_trailing_bytes() {
        let mut bytes = encoded(&Message::Activated { epoch: Epoch(1) });
        bytes.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode(&bytes), Err(WireError::TrailingBytes(3)));
    }

    #[test]
    fn error_invalid_window() {
        let hello = Message::Hello(Hello {
            window: Window::new(2, 1),
            activated: None,
            link: None,
            your_version: None,
        });
        assert_eq!(decode(&encoded(&hello)), Err(WireError::InvalidWindow));
        let campaign = Message::Campaign(Campaign {
            epoch: Epoch(1),
            window: Window::new(u64::MAX, 0),
            image_digest: [0; 32],
            disruptive: false,
            max_activation_ms: 1,
            origin: NodeId(1),
        });
        assert_eq!(decode(&encoded(&campaign)), Err(WireError::InvalidWindow));
    }

    #[test]
    fn errors_display() {
        let e = WireError::BadEnum {
            field: "phase",
            value: 9,
        };
        assert_eq!(e.to_string(), "bad phase code 9");
    }
}
