//! Peer authentication: the cluster key, the HMAC-SHA256 proofs of the connection handshake and
//! the per-connection keys that tag every frame after it.
//!
//! Both ends prove they hold the cluster key by MACing both nonces and both node ids, under a
//! different label per direction, so a proof can be neither replayed nor reflected. Two ends that
//! both offer [`features::FRAME_MACS`] (in HELLO's and CHALLENGE's `aux`) prove instead over the
//! whole handshake transcript, offers included (so an offer stripped on the path fails the
//! proof), and derive one key per direction ([`FrameKeys`]) from it and the connection's
//! generation.

use crate::frame::{HEADER_LEN, TAG_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Length of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an HMAC-SHA256 proof.
pub const MAC_LEN: usize = 32;
/// Shortest accepted cluster key.
pub const MIN_KEY_LEN: usize = 32;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];

/// What a handshake may agree beyond authentication: bits of HELLO's and CHALLENGE's `aux`,
/// which builds before them neither set nor check.
pub mod features {
    /// Every frame after the handshake carries a MAC tag.
    pub const FRAME_MACS: u64 = 1 << 0;
    /// Every feature this build knows.
    pub const KNOWN: u64 = FRAME_MACS;
}

/// Whether a node tags its frames, during and after a rolling upgrade of entente itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameMacs {
    /// Neither offered nor accepted: frames carry only their CRC, as builds before frame MACs.
    Off,
    /// Offered; a peer that does not offer them (an older build) still connects, untagged.
    #[default]
    Prefer,
    /// Offered and required: a peer that does not offer them is refused.
    Require,
}

impl FrameMacs {
    /// The features this node offers.
    pub fn offered(self) -> u64 {
        match self {
            FrameMacs::Off => 0,
            FrameMacs::Prefer | FrameMacs::Require => features::FRAME_MACS,
        }
    }
}

/// The keys of one connection's frame tags, one per direction.
#[derive(Clone)]
pub struct FrameKeys {
    send: HmacSha256,
    recv: HmacSha256,
}

impl fmt::Debug for FrameKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKeys(<secret>)")
    }
}

impl FrameKeys {
    /// Tags a frame we send: its header (checksum zeroed) and the payload the tag covers.
    pub fn tag(&self, header: &[u8; HEADER_LEN], covered: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.send.clone();
        m.update(header);
        m.update(covered);
        let full = m.finalize().into_bytes();
        full[..TAG_LEN]
            .try_into()
            .expect("HMAC-SHA256 is longer than a tag")
    }

    /// Checks, in constant time, the tag of a frame we received.
    pub fn verify(&self, header: &[u8; HEADER_LEN], covered: &[u8], tag: &[u8]) -> bool {
        let mut m = self.recv.clone();
        m.update(header);
        m.update(covered);
        tag.len() == TAG_LEN && m.verify_truncated_left(tag).is_ok()
    }
}

/// The shared secret of a cluster. `Debug` never prints it.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(<{} bytes>)", self.0.len())
    }
}

/// Why a cluster key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read cluster key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error("cluster key {path} has mode {mode:04o}: it must be readable by its owner only (chmod 0600)")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Too short to be a key.
    #[error("cluster key {path} holds {len} bytes, at least {MIN_KEY_LEN} are required")]
    TooShort {
        /// The key file.
        path: PathBuf,
        /// Its length after trimming.
        len: usize,
    },
}

impl ClusterKey {
    /// A key from bytes (at least [`MIN_KEY_LEN`] of them).
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterKey> {
        (bytes.len() >= MIN_KEY_LEN).then(|| ClusterKey(bytes.to_vec()))
    }

    /// Loads a key file, refusing one that group or others can access (mode & 0o077 != 0).
    /// Trailing whitespace is ignored, so `head -c 32 /dev/urandom | base64 > key` works.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let trimmed = bytes.trim_ascii_end();
        ClusterKey::from_bytes(trimmed).ok_or(KeyError::TooShort {
            path: path.to_owned(),
            len: trimmed.len(),
        })
    }

    fn keyed(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    fn mac(&self, label: &[u8], nonces: [&Nonce; 2], ids: [u64; 2]) -> HmacSha256 {
        let mut m = self.keyed();
        m.update(label);
        m.update(nonces[0]);
        m.update(nonces[1]);
        m.update(&ids[0].to_le_bytes());
        m.update(&ids[1].to_le_bytes());
        m
    }

    /// The cluster's public name: the first 8 bytes of a SHA-256 over a label and the key.
    /// Statements name it, so one signed for one cluster is refused by another.
    pub fn id(&self) -> [u8; 8] {
        use sha2::Digest as _;
        let mut h = Sha256::new();
        h.update(b"entente cluster id v1\0");
        h.update(&self.0);
        h.finalize()[..8].try_into().expect("8 of 32 bytes")
    }

    /// The acceptor's proof: binds the connector's nonce, its own, and both ids.
    pub fn accept_proof(&self, c: &Nonce, a: &Nonce, connector: u64, acceptor: u64) -> [u8; 32] {
        let m = self.mac(b"entente-fastpath-v1 accept", [c, a], [connector, acceptor]);
        m.finalize().into_bytes().into()
    }

    /// The connector's proof, under a different label so the acceptor's cannot be reflected.
    pub fn connect_proof(&self, c: &Nonce, a: &Nonce, connector: u64, acceptor: u64) -> [u8; 32] {
        let m = self.mac(
            b"entente-fastpath-v1 connect",
            [a, c],
            [connector, acceptor],
        );
        m.finalize().into_bytes().into()
    }

    /// Checks an acceptor's proof in constant time.
    pub fn verify_accept(&self, c: &Nonce, a: &Nonce, ids: [u64; 2], proof: &[u8]) -> bool {
        let m = self.mac(b"entente-fastpath-v1 accept", [c, a], ids);
        m.verify_slice(proof).is_ok()
    }

    /// Checks a connector's proof in constant time.
    pub fn verify_connect(&self, c: &Nonce, a: &Nonce, ids: [u64; 2], proof: &[u8]) -> bool {
        let m = self.mac(b"entente-fastpath-v1 connect", [a, c], ids);
        m.verify_slice(proof).is_ok()
    }

    fn transcript_mac(&self, label: &[u8], transcript: &[u8], ids: [u64; 2]) -> HmacSha256 {
        let mut m = self.keyed();
        m.update(label);
        m.update(transcript);
        m.update(&ids[0].to_le_bytes());
        m.update(&ids[1].to_le_bytes());
        m
    }

    /// The proof of one side of a handshake that agreed features: binds the whole transcript
    /// (both nonces, windows, the proposed generation and both offers) and both ids
    /// (`[connector, acceptor]`), under a label per side so a proof cannot be reflected.
    pub fn transcript_proof(&self, acceptor: bool, transcript: &[u8], ids: [u64; 2]) -> [u8; 32] {
        let m = self.transcript_mac(transcript_label(acceptor), transcript, ids);
        m.finalize().into_bytes().into()
    }

    /// Checks, in constant time, a proof made by [`ClusterKey::transcript_proof`].
    pub fn verify_transcript(
        &self,
        acceptor: bool,
        transcript: &[u8],
        ids: [u64; 2],
        proof: &[u8],
    ) -> bool {
        let m = self.transcript_mac(transcript_label(acceptor), transcript, ids);
        m.verify_slice(proof).is_ok()
    }

    /// The frame keys of a connection whose handshake agreed frame MACs: one per direction,
    /// from the transcript, both ids (`[connector, acceptor]`) and the generation, so keys
    /// differ across connections, directions and generations. `acceptor` says which side we are.
    pub fn frame_keys(
        &self,
        acceptor: bool,
        transcript: &[u8],
        ids: [u64; 2],
        generation: u64,
    ) -> FrameKeys {
        let derive = |label: &[u8]| {
            let mut m = self.transcript_mac(label, transcript, ids);
            m.update(&generation.to_le_bytes());
            let k = m.finalize().into_bytes();
            HmacSha256::new_from_slice(&k).expect("HMAC takes keys of any length")
        };
        let to_acceptor = derive(b"entente-fastpath-v2 frames to acceptor");
        let to_connector = derive(b"entente-fastpath-v2 frames to connector");
        if acceptor {
            FrameKeys {
                send: to_connector,
                recv: to_acceptor,
            }
        } else {
            FrameKeys {
                send: to_acceptor,
                recv: to_connector,
            }
        }
    }
}

fn transcript_label(acceptor: bool) -> &'static [u8] {
    if acceptor {
        b"entente-fastpath-v2 accept"
    } else {
        b"entente-fastpath-v2 connect"
    }
}

/// A fresh random nonce from the operating system.
pub fn nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).expect("the operating system's random source is available");
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn proofs_bind_direction_and_key() {
        let k = ClusterKey::from_bytes(&[7; 32]).unwrap();
        let other = ClusterKey::from_bytes(&[8; 32]).unwrap();
        let (c, a) = (nonce(), nonce());
        let p = k.accept_proof(&c, &a, 1, 2);
        assert!(k.verify_accept(&c, &a, [1, 2], &p));
        assert!(!other.verify_accept(&c, &a, [1, 2], &p));
        assert!(!k.verify_connect(&c, &a, [1, 2], &p), "reflection refused");
        assert!(!k.verify_accept(&c, &a, [2, 1], &p), "ids bound");
        let q = k.connect_proof(&c, &a, 1, 2);
        assert!(k.verify_connect(&c, &a, [1, 2], &q));
    }

    #[test]
    fn frame_keys_bind_direction_generation_and_transcript() {
        let k = ClusterKey::from_bytes(&[7; 32]).unwrap();
        let t = [5u8; 96];
        let acceptor = k.frame_keys(true, &t, [1, 2], 3);
        let connector = k.frame_keys(false, &t, [1, 2], 3);
        let header = [9u8; HEADER_LEN];
        let tag = connector.tag(&header, b"body");
        assert!(acceptor.verify(&header, b"body", &tag));
        assert!(!acceptor.verify(&header, b"bodY", &tag), "payload bound");
        let mut other_header = header;
        other_header[32] ^= 1;
        assert!(
            !acceptor.verify(&other_header, b"body", &tag),
            "header bound"
        );
        assert!(
            !connector.verify(&header, b"body", &tag),
            "reflection refused"
        );
        assert!(
            !acceptor.verify(&header, b"body", &tag[..8]),
            "full tag required"
        );
        let next = k.frame_keys(true, &t, [1, 2], 4);
        assert!(!next.verify(&header, b"body", &tag), "generation bound");
        let mut t2 = t;
        t2[0] ^= 1;
        let other = k.frame_keys(true, &t2, [1, 2], 3);
        assert!(!other.verify(&header, b"body", &tag), "transcript bound");
        let p = k.transcript_proof(true, &t, [1, 2]);
        assert!(k.verify_transcript(true, &t, [1, 2], &p));
        assert!(
            !k.verify_transcript(false, &t, [1, 2], &p),
            "reflection refused"
        );
        assert!(
            !k.verify_transcript(true, &t2, [1, 2], &p),
            "transcript bound"
        );
    }

    #[test]
    fn key_file_mode_is_enforced() {
        let dir = std::env::temp_dir().join(format!("entente-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.key");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[b'k'; 40]).unwrap();
        f.write_all(b"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = ClusterKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 0600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ClusterKey::load(&path).is_ok());
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            ClusterKey::load(&path),
            Err(KeyError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            ClusterKey::load(&dir.join("absent")),
            Err(KeyError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
