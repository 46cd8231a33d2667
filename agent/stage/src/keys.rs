//! Manifest signing keys: generation, key files, detached signatures and the trusted key set.
//!
//! Key files are one text line each: `entente-ed25519-secret-v1 <32-byte seed in hex>` and
//! `entente-ed25519-public-v1 <32-byte public key in hex>`. A secret key file that its group or
//! others may read or write (`mode & 0o077 != 0`) is refused.

use crate::manifest::{hex_decode, hex_encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const SECRET_TAG: &str = "entente-ed25519-secret-v1";
const PUBLIC_TAG: &str = "entente-ed25519-public-v1";
const SIG_TAG: &str = "entente-signature-v1";

/// Short identifier of a public key: the first 8 bytes of its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Errors about key and signature files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret key file is accessible to its group or others.
    #[error("{path}: secret key file has mode {mode:04o}; it must not be accessible to group or others (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a key or signature of this format.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file (or a description of the input).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file already exists; keys are never overwritten.
    #[error("{path}: already exists; refusing to overwrite a key")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// An ed25519 signing key. Its `Debug` does not show the key.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(id {}, secret masked)", self.public().id())
    }
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `bytes` (a manifest's canonical encoding).
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key_id: self.public().id(),
            sig: self.0.sign(bytes),
        }
    }

    /// Loads a secret key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(io)?;
        let seed = parse_line(&text, SECRET_TAG, path)?;
        Ok(SecretKey::from_seed(seed))
    }

    fn to_file_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", hex_encode(self.0.as_bytes()))
    }

    /// Writes `DIR/NAME.key` (mode 0600) and `DIR/NAME.pub`; refuses if either exists.
    pub fn write_pair(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), KeyError> {
        let secret = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        for p in [&secret, &public] {
            if p.symlink_metadata().is_ok() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
        write_new(&secret, 0o600, self.to_file_text().as_bytes())?;
        write_new(&public, 0o644, self.public().to_file_text().as_bytes())?;
        Ok((secret, public))
    }
}

fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_owned(),
            }
        } else {
            KeyError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // The umask may have cleared bits but never adds any; set the mode exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn parse_line<const N: usize>(text: &str, tag: &str, path: &Path) -> Result<[u8; N], KeyError> {
    let bad = |reason: String| KeyError::Malformed {
        path: path.to_owned(),
        reason,
    };
    let line = text.strip_suffix('\n').unwrap_or(text);
    let hex = line
        .strip_prefix(tag)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| bad(format!("expected one line starting with {tag:?}")))?;
    let mut out = [0u8; N];
    hex_decode(hex, &mut out).map_err(|r| bad(format!("key: {r}")))?;
    Ok(out)
}

/// An ed25519 public key that verifies manifests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// Its key id.
    pub fn id(&self) -> KeyId {
        let h = Sha256::digest(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&h[..8]);
        KeyId(id)
    }

    /// Loads a public key file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bytes: [u8; 32] = parse_line(&text, PUBLIC_TAG, path)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| KeyError::Malformed {
                path: path.to_owned(),
                reason: format!("not an ed25519 public key: {e}"),
            })
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", hex_encode(self.0.as_bytes()))
    }

    /// Strict ed25519 verification of `sig` over `bytes`.
    pub(crate) fn verify(&self, bytes: &[u8], sig: &ed25519_dalek::Signature) -> bool {
        self.0.verify_strict(bytes, sig).is_ok()
    }
}

/// A detached signature over a manifest's canonical bytes, naming the key that made it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    /// The signing key's id.
    pub key_id: KeyId,
    /// The ed25519 signature.
    pub sig: ed25519_dalek::Signature,
}

impl Signature {
    /// The `.sig` file's text: `entente-signature-v1 ed25519 <key id> <signature>`.
    pub fn to_file_text(&self) -> String {
        format!(
            "{SIG_TAG} ed25519 {} {}\n",
            self.key_id,
            hex_encode(&self.sig.to_bytes())
        )
    }

    /// Parses a `.sig` file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Signature, KeyError> {
        let bad = |reason: &str| KeyError::Malformed {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let line = text.strip_suffix('\n').unwrap_or(text);
        let mut parts = line.split(' ');
        if parts.next() != Some(SIG_TAG) || parts.next() != Some("ed25519") {
            return Err(bad(
                "expected `entente-signature-v1 ed25519 <key id> <signature>`",
            ));
        }
        let (Some(id), Some(sig), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(
                "expected `entente-signature-v1 ed25519 <key id> <signature>`",
            ));
        };
        let mut key_id = [0u8; 8];
        hex_decode(id, &mut key_id).map_err(|_| bad("key id is not 16 lowercase hex digits"))?;
        let mut s = [0u8; 64];
        hex_decode(sig, &mut s).map_err(|_| bad("signature is not 128 lowercase hex digits"))?;
        Ok(Signature {
            key_id: KeyId(key_id),
            sig: ed25519_dalek::Signature::from_bytes(&s),
        })
    }

    /// Reads and parses a `.sig` file.
    pub fn load(path: &Path) -> Result<Signature, KeyError> {
        let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Signature::parse(&text, path)
    }
}

/// The public keys whose manifests this node accepts, by key id.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    /// An empty set.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Adds a key.
    pub fn add(&mut self, key: PublicKey) {
        self.keys.insert(key.id(), key);
    }

    /// Loads every `*.pub` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<TrustedKeys, KeyError> {
        let io = |source| KeyError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut set = TrustedKeys::new();
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "pub") {
                set.add(PublicKey::load(&p)?);
            }
        }
        Ok(set)
    }

    /// The key with id `id`, if trusted.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_secret_mode_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate().unwrap();
        let (sk, pk) = k.write_pair(dir.path(), "signer").unwrap();
        assert_eq!(
            fs::metadata(&sk).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = SecretKey::load(&sk).unwrap();
        assert_eq!(loaded.public(), k.public());
        assert_eq!(PublicKey::load(&pk).unwrap(), k.public());
        assert!(!format!("{loaded:?}").contains(&hex_encode(k.0.as_bytes())));

        for mode in [0o640, 0o604, 0o660, 0o620] {
            fs::set_permissions(&sk, fs::Permissions::from_mode(mode)).unwrap();
            match SecretKey::load(&sk) {
                Err(KeyError::Permissions { path, mode: m }) => {
                    assert_eq!(path, sk);
                    assert_eq!(m, mode);
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        let err = SecretKey::load(&sk).unwrap_err().to_string();
        assert!(err.contains("signer.key") && err.contains("0620"), "{err}");
        fs::set_permissions(&sk, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SecretKey::load(&sk).is_ok());

        assert!(matches!(
            k.write_pair(dir.path(), "signer"),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn signatures_round_trip_and_malformed_files_are_refused() {
        let k = SecretKey::from_seed([3; 32]);
        let s = k.sign(b"hello");
        let text = s.to_file_text();
        assert_eq!(Signature::parse(&text, Path::new("x")).unwrap(), s);
        assert!(k.public().verify(b"hello", &s.sig));
        assert!(!k.public().verify(b"hellp", &s.sig));
        for bad in [
            "",
            "entente-signature-v1 rsa 00 00",
            &text.replace("ed25519 ", "ed25519  "),
            &text[..text.len() - 3],
        ] {
            assert!(matches!(
                Signature::parse(bad, Path::new("x")),
                Err(KeyError::Malformed { .. })
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pub");
        fs::write(&p, "entente-ed25519-public-v1 zz\n").unwrap();
        assert!(matches!(
            PublicKey::load(&p),
            Err(KeyError::Malformed { .. })
        ));
    }

    #[test]
    fn trusted_keys_load_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretKey::from_seed([1; 32]);
        let b = SecretKey::from_seed([2; 32]);
        a.write_pair(dir.path(), "a").unwrap();
        b.write_pair(dir.path(), "b").unwrap();
        let set = TrustedKeys::load_dir(dir.path()).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.get(&a.public().id()), Some(&a.public()));
        assert!(set
            .get(&SecretKey::from_seed([9; 32]).public().id())
            .is_none());
    }
}
