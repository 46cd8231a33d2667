//! The frame: a fixed 64-byte header (read in place with `zerocopy`) followed by an opaque payload.
//!
//! Every backend carries the same frames; only how the bytes move differs. Decoding validates
//! every field and returns a typed [`FrameError`]; nothing a peer sends can make it panic.
//!
//! Layout (all integers little-endian, no padding):
//!
//! | offset | field | meaning |
//! |---|---|---|
//! | 0 | magic `ENTF` | |
//! | 4 | version | [`VERSION`] |
//! | 5 | kind | [`Kind`] |
//! | 6 | flags | [`flags`]: unknown bits are refused |
//! | 8 | length | payload bytes after the header |
//! | 12 | checksum | CRC-32C of the header (checksum zeroed) and, unless `NO_PAYLOAD_SUM`, the payload |
//! | 16 | src | sender's node id |
//! | 24 | dst | receiver's node id (0 before the handshake names it) |
//! | 32 | seq | per-connection, per-direction sequence number, from 0 |
//! | 40 | generation | the connection's generation (0 during the handshake) |
//! | 48 | aux | kind-specific: the bulk slot of `BulkData` |
//! | 56 | freed | cumulative count of the peer's frames whose receive buffers were freed (credits) |
//! | 60 | reserved | must be 0 |
//!
//! On a connection whose handshake agreed frame MACs, every frame after the handshake sets
//! [`flags::MAC`] and its payload ends in a [`TAG_LEN`]-byte tag (counted in `length`): a
//! truncated HMAC-SHA256 under the connection's key for that direction, over the header (checksum
//! zeroed) and, unless `NO_PAYLOAD_SUM`, the payload before the tag (`crate::auth::FrameKeys`).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Magic bytes at the start of every frame.
pub const MAGIC: [u8; 4] = *b"ENTF";
/// The one frame format version this build speaks.
pub const VERSION: u8 = 1;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 64;
/// Largest control frame, header and tag included (control frames are ≤ 4 KiB).
pub const MAX_CONTROL_FRAME: usize = 4096;
/// Length of a frame's MAC tag ([`flags::MAC`]).
pub const TAG_LEN: usize = 16;
/// Largest control message a sender may pass, whether or not the connection tags its frames:
/// a control frame's payload, less room for the tag.
pub const MAX_CONTROL_PAYLOAD: usize = MAX_CONTROL_FRAME - HEADER_LEN - TAG_LEN;
/// Largest bulk chunk any backend accepts (a receiver grants at most its configured slot size).
pub const MAX_BULK_LEN: usize = 16 << 20;

/// Header flag bits.
pub mod flags {
    /// The checksum covers the header only: bulk chunks are verified by the layer above
    /// (entente-stage checks each chunk's sha256), so the fast path does not read them twice.
    pub const NO_PAYLOAD_SUM: u16 = 1 << 0;
    /// The payload ends in a MAC tag (`TAG_LEN` bytes): frames after a handshake that agreed
    /// frame MACs, and that handshake's WELCOME. Never on another handshake frame.
    pub const MAC: u16 = 1 << 1;
    /// Every flag this version knows.
    pub const KNOWN: u16 = NO_PAYLOAD_SUM | MAC;
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Handshake 1/4, connector → acceptor: node id, nonce, proposed generation, receive window.
    Hello = 1,
    /// Handshake 2/4, acceptor → connector: nonce and the acceptor's HMAC proof.
    Challenge = 2,
    /// Handshake 3/4, connector → acceptor: the connector's HMAC proof.
    Response = 3,
    /// Handshake 4/4, acceptor → connector: the connection's generation.
    Welcome = 4,
    /// An opaque control message (≤ [`MAX_CONTROL_PAYLOAD`] bytes).
    Data = 5,
    /// Returns credits only (the count travels in `freed`, as on every frame).
    Credit = 6,
    /// The receiver grants the sender one bulk slot, for one chunk.
    BulkGrant = 7,
    /// A bulk chunk into a granted slot (`aux` = slot).
    BulkData = 8,
    /// Orderly close.
    Close = 9,
}

impl Kind {
    /// The kind for a wire byte, if it names one.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Response,
            4 => Kind::Welcome,
            5 => Kind::Data,
            6 => Kind::Credit,
            7 => Kind::BulkGrant,
            8 => Kind::BulkData,
            9 => Kind::Close,
            _ => return None,
        })
    }

    /// Whether frames of this kind belong to the handshake.
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            Kind::Hello | Kind::Challenge | Kind::Response | Kind::Welcome
        )
    }

    /// Largest payload a frame of this kind may carry on the wire, its tag included when it
    /// has one (`tagged`). A control frame's limit is the same either way: senders keep their
    /// messages to [`MAX_CONTROL_PAYLOAD`], which leaves room for the tag.
    pub fn max_payload(self, tagged: bool) -> usize {
        let tag = if tagged { TAG_LEN } else { 0 };
        match self {
            Kind::BulkData => MAX_BULK_LEN + tag,
            Kind::Credit | Kind::Close => tag,
            _ => MAX_CONTROL_FRAME - HEADER_LEN,
        }
    }
}

/// The 64-byte frame header, read in place from received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FrameHeader {
    magic: [u8; 4],
    version: u8,
    kind: u8,
    flags: U16,
    length: U32,
    checksum: U32,
    src: U64,
    dst: U64,
    seq: U64,
    generation: U64,
    aux: U64,
    freed: U32,
    reserved: U32,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == HEADER_LEN);

/// Why a frame was refused. Each names the field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than a header.
    #[error("frame truncated: {got} bytes, a header needs {HEADER_LEN}")]
    Truncated {
        /// Bytes available.
        got: usize,
    },
    /// The magic bytes are not `ENTF`.
    #[error("bad magic {0:02x?}: not an entente frame")]
    BadMagic([u8; 4]),
    /// A version this build does not speak.
    #[error("unsupported frame version {0} (this build speaks {VERSION})")]
    BadVersion(u8),
    /// A kind byte that names no kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// Flag bits this version does not define, or a flag not allowed on this kind.
    #[error("invalid flags {flags:#06x} on a {kind:?} frame")]
    BadFlags {
        /// The frame's kind.
        kind: Kind,
        /// The flags field.
        flags: u16,
    },
    /// The reserved field is not zero.
    #[error("reserved field is {0:#x}, must be 0")]
    BadReserved(u32),
    /// The payload length exceeds what the kind allows.
    #[error("{kind:?} frame payload of {length} bytes exceeds the limit of {max}")]
    TooLong {
        /// The frame's kind.
        kind: Kind,
        /// Declared payload length.
        length: u32,
        /// The limit for that kind.
        max: usize,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadChecksum {
        /// Checksum in the header.
        expected: u32,
        /// Checksum computed over the received bytes.
        actual: u32,
    },
    /// A frame flagged [`flags::MAC`] too short to hold its tag.
    #[error("frame of {length} bytes flagged MAC has no room for its {TAG_LEN}-byte tag")]
    NoRoomForTag {
        /// Declared payload length.
        length: u32,
    },
    /// The payload is shorter than the header's length field.
    #[error("payload truncated: header says {expected} bytes, got {got}")]
    PayloadTruncated {
        /// Declared length.
        expected: usize,
        /// Bytes available.
        got: usize,
    },
}

/// The fields of a frame to build (the checksum and version are filled in by [`FrameHeader::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    /// Frame kind.
    pub kind: Kind,
    /// Flag bits.
    pub flags: u16,
    /// Sender's node id.
    pub src: u64,
    /// Receiver's node id.
    pub dst: u64,
    /// Sequence number.
    pub seq: u64,
    /// Connection generation.
    pub generation: u64,
    /// Kind-specific value.
    pub aux: u64,
    /// Cumulative credits returned.
    pub freed: u32,
}

impl FrameHeader {
    /// Builds a header for `payload`, computing its checksum.
    pub fn new(f: Fields, payload: &[u8]) -> FrameHeader {
        let mut h = FrameHeader::unsummed(f, payload.len());
        h.checksum = U32::new(h.compute_checksum(&[payload]));
        h
    }

    /// Builds the header of a tagged frame ([`flags::MAC`] is set): its payload is `body`
    /// followed by the tag that `tag` computes over the header (checksum zeroed) and what the
    /// tag covers (`body`, or nothing under `NO_PAYLOAD_SUM`). Returns the header and the tag.
    pub fn new_tagged(
        f: Fields,
        body: &[u8],
        tag: impl FnOnce(&[u8; HEADER_LEN], &[u8]) -> [u8; TAG_LEN],
    ) -> (FrameHeader, [u8; TAG_LEN]) {
        let f = Fields {
            flags: f.flags | flags::MAC,
            ..f
        };
        let mut h = FrameHeader::unsummed(f, body.len() + TAG_LEN);
        let covered = if f.flags & flags::NO_PAYLOAD_SUM != 0 {
            &[][..]
        } else {
            body
        };
        let t = tag(h.bytes(), covered);
        h.checksum = U32::new(h.compute_checksum(&[body, &t]));
        (h, t)
    }

    fn unsummed(f: Fields, length: usize) -> FrameHeader {
        FrameHeader {
            magic: MAGIC,
            version: VERSION,
            kind: f.kind as u8,
            flags: U16::new(f.flags),
            length: U32::new(length as u32),
            checksum: U32::new(0),
            src: U64::new(f.src),
            dst: U64::new(f.dst),
            seq: U64::new(f.seq),
            generation: U64::new(f.generation),
            aux: U64::new(f.aux),
            freed: U32::new(f.freed),
            reserved: U32::new(0),
        }
    }

    /// Validates the header at the start of `bytes` (the payload need not have arrived yet).
    /// The checksum is checked separately, with the payload, by [`FrameHeader::verify_payload`].
    pub fn decode(bytes: &[u8]) -> Result<&FrameHeader, FrameError> {
        let (h, _) = FrameHeader::ref_from_prefix(bytes)
            .map_err(|_| FrameError::Truncated { got: bytes.len() })?;
        if h.magic != MAGIC {
            return Err(FrameError::BadMagic(h.magic));
        }
        if h.version != VERSION {
            return Err(FrameError::BadVersion(h.version));
        }
        let kind = Kind::from_u8(h.kind).ok_or(FrameError::BadKind(h.kind))?;
        let flags = h.flags.get();
        let tagged = flags & flags::MAC != 0;
        let flags_ok = flags & !flags::KNOWN == 0
            && (flags & flags::NO_PAYLOAD_SUM == 0 || kind == Kind::BulkData)
            && !(tagged && kind.is_handshake() && kind != Kind::Welcome);
        if !flags_ok {
            return Err(FrameError::BadFlags { kind, flags });
        }
        if h.reserved.get() != 0 {
            return Err(FrameError::BadReserved(h.reserved.get()));
        }
        let length = h.length.get();
        if length as usize > kind.max_payload(tagged) {
            return Err(FrameError::TooLong {
                kind,
                length,
                max: kind.max_payload(tagged),
            });
        }
        if tagged && (length as usize) < TAG_LEN {
            return Err(FrameError::NoRoomForTag { length });
        }
        Ok(h)
    }

    /// Checks the checksum against the header and its payload.
    pub fn verify_payload(&self, payload: &[u8]) -> Result<(), FrameError> {
        if payload.len() != self.len() {
            return Err(FrameError::PayloadTruncated {
                expected: self.len(),
                got: payload.len(),
            });
        }
        let actual = self.compute_checksum(&[payload]);
        if actual != self.checksum.get() {
            return Err(FrameError::BadChecksum {
                expected: self.checksum.get(),
                actual,
            });
        }
        Ok(())
    }

    fn compute_checksum(&self, payload: &[&[u8]]) -> u32 {
        let sum = crc32c::crc32c(&self.bytes_for_tag());
        if self.flags.get() & flags::NO_PAYLOAD_SUM != 0 {
            sum
        } else {
            payload
                .iter()
                .fold(sum, |sum, part| crc32c::crc32c_append(sum, part))
        }
    }

    /// The frame's kind (valid after [`FrameHeader::decode`]).
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.kind).unwrap_or(Kind::Close)
    }
    /// Payload length in bytes, the tag included when the frame has one.
    pub fn len(&self) -> usize {
        self.length.get() as usize
    }
    /// Whether the payload ends in a MAC tag ([`flags::MAC`]).
    pub fn is_tagged(&self) -> bool {
        self.flags.get() & flags::MAC != 0
    }
    /// Payload length without the tag: what the frame carries for the layer above.
    pub fn body_len(&self) -> usize {
        if self.is_tagged() {
            self.len().saturating_sub(TAG_LEN)
        } else {
            self.len()
        }
    }
    /// The header's bytes with the checksum zeroed: what a frame's tag covers.
    pub fn bytes_for_tag(&self) -> [u8; HEADER_LEN] {
        let mut zeroed = *self;
        zeroed.checksum = U32::new(0);
        *zeroed.bytes()
    }
    /// Whether the frame carries no payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Flag bits.
    pub fn flags(&self) -> u16 {
        self.flags.get()
    }
    /// Sender's node id.
    pub fn src(&self) -> u64 {
        self.src.get()
    }
    /// Receiver's node id.
    pub fn dst(&self) -> u64 {
        self.dst.get()
    }
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq.get()
    }
    /// Connection generation.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }
    /// Kind-specific value.
    pub fn aux(&self) -> u64 {
        self.aux.get()
    }
    /// Cumulative credits returned by the sender.
    pub fn freed(&self) -> u32 {
        self.freed.get()
    }
    /// The header's bytes, as sent.
    pub fn bytes(&self) -> &[u8; HEADER_LEN] {
        zerocopy::transmute_ref!(self)
    }
}

/// Decodes a whole frame (header and payload) from `bytes`: what a fuzzer or a datagram-style
/// backend uses. Returns the header and the payload slice; trailing bytes are an error.
pub fn decode_frame(bytes: &[u8]) -> Result<(&FrameHeader, &[u8]), FrameError> {
    let h = FrameHeader::decode(bytes)?;
    let payload = &bytes[HEADER_LEN..];
    h.verify_payload(payload)?;
    Ok((h, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: Kind) -> Fields {
        Fields {
            kind,
            flags: 0,
            src: 7,
            dst: 9,
            seq: 3,
            generation: 2,
            aux: 0,
            freed: 11,
        }
    }

    #[test]
    fn round_trip() {
        let h = FrameHeader::new(fields(Kind::Data), b"hello");
        let mut wire = h.bytes().to_vec();
        wire.extend_from_slice(b"hello");
        let (d, p) = decode_frame(&wire).unwrap();
        assert_eq!(*d, h);
        assert_eq!(p, b"hello");
        assert_eq!(
            (d.src(), d.dst(), d.seq(), d.generation(), d.freed()),
            (7, 9, 3, 2, 11)
        );
    }

    #[test]
    fn every_field_is_validated() {
        let h = FrameHeader::new(fields(Kind::Data), b"x");
        let good = [h.bytes().as_slice(), b"x"].concat();
        let corrupt = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            decode_frame(&b).unwrap_err()
        };
        assert!(matches!(corrupt(0, b'X'), FrameError::BadMagic(_)));
        assert_eq!(corrupt(4, 2), FrameError::BadVersion(2));
        assert_eq!(corrupt(5, 200), FrameError::BadKind(200));
        assert!(matches!(corrupt(6, 0x80), FrameError::BadFlags { .. }));
        assert!(matches!(corrupt(6, 1), FrameError::BadFlags { .. }));
        assert!(matches!(corrupt(10, 1), FrameError::TooLong { .. }));
        assert!(matches!(corrupt(16, 8), FrameError::BadChecksum { .. }));
        assert!(matches!(corrupt(64, b'y'), FrameError::BadChecksum { .. }));
        assert_eq!(corrupt(60, 1), FrameError::BadReserved(1));
        assert!(matches!(
            decode_frame(&good[..10]),
            Err(FrameError::Truncated { got: 10 })
        ));
        assert!(matches!(
            decode_frame(&good[..64]),
            Err(FrameError::PayloadTruncated { .. })
        ));
    }

    #[test]
    fn bulk_frames_skip_the_payload_sum() {
        let f = Fields {
            flags: flags::NO_PAYLOAD_SUM,
            ..fields(Kind::BulkData)
        };
        let h = FrameHeader::new(f, b"chunk");
        assert!(h.verify_payload(b"CHUNK").is_ok());
        assert!(h.verify_payload(b"chun").is_err());
    }
}
