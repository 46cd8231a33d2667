//! What agents say to each other over a fastpath connection: protocol messages, and the
//! requests that move a campaign's manifest and image from agents that have them to agents
//! that need them. One tag byte, then the body; bulk chunks carry no tag (the receiver knows
//! from the slot it granted what a chunk is).

use entente_proto::wire;
use entente_proto::Message;

const PROTO: u8 = 0;
const MANIFEST_REQ: u8 = 1;
const CHUNK_REQ: u8 = 2;
const NOT_YET: u8 = 3;
const HAVE: u8 = 4;
const BUSY: u8 = 5;
const STATEMENT: u8 = 6;

/// Most chunks a `Have` bitmap describes (it must fit a control frame). Larger images are not
/// announced; their chunks are still found by asking.
pub const MAX_HAVE_CHUNKS: u32 = 16 * 1024;

/// An agent-to-agent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A protocol message.
    Proto(Message),
    /// "Write the manifest with this sha256 (and its signature) into my slot."
    ManifestReq {
        /// The manifest's sha256 (the campaign's `image_digest`).
        digest: [u8; 32],
        /// The bulk slot granted for it.
        slot: u32,
    },
    /// "Write chunk `index` of the image with this sha256 into my slot."
    ChunkReq {
        /// The image's sha256.
        image: [u8; 32],
        /// Chunk index.
        index: u32,
        /// The bulk slot granted for it.
        slot: u32,
    },
    /// "I do not have what you asked for (yet)"; the slot is released.
    NotYet {
        /// The slot of the refused request.
        slot: u32,
    },
    /// "My uplink is busy: ask someone else, or me again shortly"; the slot is released.
    Busy {
        /// The slot of the declined request.
        slot: u32,
    },
    /// "Of the image with this sha256, I hold (and serve) these verified chunks."
    Have {
        /// The image's sha256.
        image: [u8; 32],
        /// Chunks in the image.
        chunks: u32,
        /// One bit per chunk, chunk 0 in the lowest bit of the first byte.
        bitmap: Vec<u8>,
    },
    /// An operator's signed statement (the protocol's `Control`, with the signature that
    /// authorises it): the line, checked by the receiver before the protocol sees it.
    Statement(String),
}

/// Why an envelope did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Empty, an unknown tag, or a body of the wrong length.
    #[error("malformed agent message (tag {tag:?}, {len} bytes)")]
    Malformed {
        /// The tag byte, if any.
        tag: Option<u8>,
        /// The length.
        len: usize,
    },
    /// The protocol message inside did not decode.
    #[error("protocol message: {0}")]
    Proto(#[from] wire::WireError),
}

impl Envelope {
    /// Encodes into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Envelope::Proto(m) => {
                out.push(PROTO);
                wire::encode(m, out);
            }
            Envelope::ManifestReq { digest, slot } => {
                out.push(MANIFEST_REQ);
                out.extend_from_slice(digest);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            Envelope::ChunkReq { image, index, slot } => {
                out.push(CHUNK_REQ);
                out.extend_from_slice(image);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&slot.to_le_bytes());
            }
            Envelope::NotYet { slot } => {
                out.push(NOT_YET);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            Envelope::Busy { slot } => {
                out.push(BUSY);
                out.extend_from_slice(&slot.to_le_bytes());
            }
            Envelope::Statement(line) => {
                out.push(STATEMENT);
                out.extend_from_slice(line.as_bytes());
            }
            Envelope::Have {
                image,
                chunks,
                bitmap,
            } => {
                out.push(HAVE);
                out.extend_from_slice(image);
                out.extend_from_slice(&chunks.to_le_bytes());
                out.extend_from_slice(bitmap);
            }
        }
    }

    /// Decodes one envelope.
    pub fn decode(b: &[u8]) -> Result<Envelope, EnvelopeError> {
        let bad = || EnvelopeError::Malformed {
            tag: b.first().copied(),
            len: b.len(),
        };
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        let digest_at = |at: usize| -> [u8; 32] { b[at..at + 32].try_into().expect("32 bytes") };
        match b.first() {
            Some(&PROTO) => {
                let msg = wire::decode(&b[1..])?;
                // Only the canonical encoding is accepted (the decoder's contract).
                Ok(Envelope::Proto(msg))
            }
            Some(&MANIFEST_REQ) if b.len() == 37 => Ok(Envelope::ManifestReq {
                digest: digest_at(1),
                slot: u32_at(33),
            }),
            Some(&CHUNK_REQ) if b.len() == 41 => Ok(Envelope::ChunkReq {
                image: digest_at(1),
                index: u32_at(33),
                slot: u32_at(37),
            }),
            Some(&NOT_YET) if b.len() == 5 => Ok(Envelope::NotYet { slot: u32_at(1) }),
            Some(&BUSY) if b.len() == 5 => Ok(Envelope::Busy { slot: u32_at(1) }),
            Some(&STATEMENT) if b.len() <= 1 + entente_stage::statement::MAX_STATEMENT_LEN => {
                let line = std::str::from_utf8(&b[1..]).map_err(|_| bad())?;
                Ok(Envelope::Statement(line.to_owned()))
            }
            Some(&HAVE) if b.len() >= 37 => {
                let chunks = u32_at(33);
                let len = chunks.div_ceil(8) as usize;
                let spare = (len * 8) as u32 - chunks;
                let ok = chunks <= MAX_HAVE_CHUNKS
                    && b.len() == 37 + len
                    // Bits past the last chunk are zero: one encoding per set of chunks.
                    && (spare == 0 || b[36 + len] >> (8 - spare) == 0);
                if !ok {
                    return Err(bad());
                }
                Ok(Envelope::Have {
                    image: digest_at(1),
                    chunks,
                    bitmap: b[37..].to_vec(),
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let all = [
            Envelope::Proto(Message::GossipAck { upto: 9 }),
            Envelope::ManifestReq {
                digest: [7; 32],
                slot: 3,
            },
            Envelope::ChunkReq {
                image: [1; 32],
                index: 4,
                slot: 5,
            },
            Envelope::NotYet { slot: 6 },
            Envelope::Busy { slot: 8 },
            Envelope::Have {
                image: [2; 32],
                chunks: 10,
                bitmap: vec![0xff, 0x03],
            },
            Envelope::Have {
                image: [3; 32],
                chunks: 0,
                bitmap: vec![],
            },
            Envelope::Statement("entente-control-v1 1 abort".into()),
        ];
        let mut buf = Vec::new();
        for e in all {
            e.encode(&mut buf);
            assert_eq!(Envelope::decode(&buf).unwrap(), e);
        }
        assert!(Envelope::decode(&[]).is_err());
        assert!(Envelope::decode(&[9, 1, 2]).is_err());
        assert!(Envelope::decode(&[1, 2]).is_err());
        assert!(Envelope::decode(&[STATEMENT, 0xff]).is_err(), "not UTF-8");
        let mut huge = vec![STATEMENT];
        huge.resize(2 + entente_stage::statement::MAX_STATEMENT_LEN, b'x');
        assert!(Envelope::decode(&huge).is_err(), "too long");
        // A bitmap of the wrong length, a bit past the last chunk, too many chunks.
        let have = |chunks: u32, bitmap: &[u8]| {
            let mut b = vec![HAVE];
            b.extend_from_slice(&[2; 32]);
            b.extend_from_slice(&chunks.to_le_bytes());
            b.extend_from_slice(bitmap);
            Envelope::decode(&b)
        };
        assert!(have(10, &[0xff]).is_err());
        assert!(have(10, &[0xff, 0x04]).is_err());
        assert!(have(
            MAX_HAVE_CHUNKS + 1,
            &vec![0; (MAX_HAVE_CHUNKS as usize + 8) / 8]
        )
        .is_err());
        assert!(have(10, &[0xff, 0x03]).is_ok());
        assert!(matches!(
            Envelope::decode(&[0, 255]),
            Err(EnvelopeError::Proto(_))
        ));
    }
}
