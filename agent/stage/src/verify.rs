//! Manifest verification with durable anti-rollback state.

use crate::fsutil::write_atomic;
use crate::keys::{KeyId, Signature, TrustedKeys};
use crate::manifest::{Digest, Manifest, ManifestError, ProfileImage};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a manifest (or an image against its manifest) is refused. One variant per refusal.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signature does not verify under the key it names.
    #[error("bad signature: the manifest is not signed by key {key_id}")]
    BadSignature {
        /// The key the signature names.
        key_id: KeyId,
    },
    /// The signature names a key that is not trusted.
    #[error("unknown key {key_id}: not among the trusted keys")]
    UnknownKey {
        /// The key the signature names.
        key_id: KeyId,
    },
    /// The signed bytes are not a canonical, valid manifest.
    #[error(transparent)]
    Malformed(#[from] ManifestError),
    /// The manifest's expiry has passed.
    #[error("manifest expired at {expires_at} (now {now}, unix seconds)")]
    Expired {
        /// The manifest's `expires_at`.
        expires_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// The epoch or manifest version is older than the last accepted manifest's.
    #[error("rollback: manifest epoch {epoch} version {manifest_version} is older than the last accepted epoch {last_epoch} version {last_version}")]
    Rollback {
        /// The refused manifest's epoch.
        epoch: u64,
        /// The refused manifest's version.
        manifest_version: u64,
        /// The last accepted epoch.
        last_epoch: u64,
        /// The last accepted manifest version.
        last_version: u64,
    },
    /// A different manifest with the same epoch and version as the last accepted one.
    #[error("substitution: a different manifest ({digest}) claims epoch {epoch} version {manifest_version}, already accepted as {accepted}")]
    Substitution {
        /// The shared epoch.
        epoch: u64,
        /// The shared manifest version.
        manifest_version: u64,
        /// The refused manifest's digest.
        digest: Digest,
        /// The accepted manifest's digest.
        accepted: Digest,
    },
    /// The manifest has no image for this node's hw-profile.
    #[error("manifest has no image for hw-profile {profile:?}")]
    MissingProfile {
        /// The profile asked for.
        profile: String,
    },
    /// Image or chunk data has the wrong length.
    #[error("size mismatch{}: expected {expected} bytes, got {actual}", chunk.map(|c| format!(" in chunk {c}")).unwrap_or_default())]
    SizeMismatch {
        /// The chunk, or `None` for the whole image.
        chunk: Option<u32>,
        /// The length the manifest gives.
        expected: u64,
        /// The length received.
        actual: u64,
    },
    /// A chunk's SHA-256 differs from the manifest's.
    #[error("chunk {index} does not match the manifest: expected {expected}, got {actual}")]
    ChunkMismatch {
        /// The chunk.
        index: u32,
        /// The manifest's digest.
        expected: Digest,
        /// The digest of the data.
        actual: Digest,
    },
    /// The anti-rollback state file cannot be read or written.
    #[error("anti-rollback state {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// The last accepted manifest, as persisted for anti-rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Its digest.
    pub digest: Digest,
    /// Its epoch.
    pub epoch: u64,
    /// Its manifest version.
    pub manifest_version: u64,
}

/// A manifest whose signature, encoding and expiry have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    manifest: Manifest,
    digest: Digest,
    key_id: KeyId,
}

impl VerifiedManifest {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The digest of its canonical bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The key that signed it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The image for hw-profile `name`, or [`VerifyError::MissingProfile`].
    pub fn profile(&self, name: &str) -> Result<&ProfileImage, VerifyError> {
        self.manifest
            .profiles
            .get(name)
            .ok_or_else(|| VerifyError::MissingProfile {
                profile: name.to_owned(),
            })
    }
}

/// Checks that `sig` is a trusted key's signature over `bytes`; returns the key id.
pub fn verify_signature(
    keys: &TrustedKeys,
    bytes: &[u8],
    sig: &Signature,
) -> Result<KeyId, VerifyError> {
    let key = keys
        .get(&sig.key_id)
        .ok_or(VerifyError::UnknownKey { key_id: sig.key_id })?;
    if !key.verify(bytes, &sig.sig) {
        return Err(VerifyError::BadSignature { key_id: sig.key_id });
    }
    Ok(sig.key_id)
}

/// The current Unix time in seconds, for [`Verifier::check`] and [`Verifier::accept`].
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Verifies manifests against the trusted keys and the last accepted manifest.
#[derive(Debug)]
pub struct Verifier {
    keys: TrustedKeys,
    state_path: PathBuf,
    last: Option<Accepted>,
}

impl Verifier {
    /// A verifier whose anti-rollback state lives in `state_path` (read now if it exists).
    pub fn open(keys: TrustedKeys, state_path: &Path) -> Result<Verifier, VerifyError> {
        let state_err = |reason: String| VerifyError::State {
            path: state_path.to_owned(),
            reason,
        };
        let last = match std::fs::read(state_path) {
            Ok(bytes) => Some(
                serde_json::from_slice(&bytes).map_err(|e| state_err(format!("corrupt: {e}")))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(state_err(e.to_string())),
        };
        Ok(Verifier {
            keys,
            state_path: state_path.to_owned(),
            last,
        })
    }

    /// The last accepted manifest, if any.
    pub fn last_accepted(&self) -> Option<&Accepted> {
        self.last.as_ref()
    }

    /// Runs every check on `bytes` signed by `sig` at time `now` (Unix seconds) without
    /// accepting it.
    pub fn check(
        &self,
        bytes: &[u8],
        sig: &Signature,
        now: u64,
    ) -> Result<VerifiedManifest, VerifyError> {
        let key_id = verify_signature(&self.keys, bytes, sig)?;
        let manifest = Manifest::from_canonical_bytes(bytes)?;
        if now >= manifest.expires_at {
            return Err(VerifyError::Expired {
                expires_at: manifest.expires_at,
                now,
            });
        }
        let digest = Digest::of(bytes);
        if let Some(last) = &self.last {
            if manifest.epoch < last.epoch || manifest.manifest_version < last.manifest_version {
                return Err(VerifyError::Rollback {
                    epoch: manifest.epoch,
                    manifest_version: manifest.manifest_version,
                    last_epoch: last.epoch,
                    last_version: last.manifest_version,
                });
            }
            if manifest.epoch == last.epoch
                && manifest.manifest_version == last.manifest_version
                && digest != last.digest
            {
                return Err(VerifyError::Substitution {
                    epoch: manifest.epoch,
                    manifest_version: manifest.manifest_version,
                    digest,
                    accepted: last.digest,
                });
            }
        }
        Ok(VerifiedManifest {
            manifest,
            digest,
            key_id,
        })
    }

    /// [`check`](Self::check)s the manifest, then makes it the last accepted one, durably,
    /// before returning. Accepting the last accepted manifest again changes nothing.
    pub fn accept(
        &mut self,
        bytes: &[u8],
        sig: &Signature,
        now: u64,
    ) -> Result<VerifiedManifest, VerifyError> {
        let v = self.check(bytes, sig, now)?;
        let accepted = Accepted {
            digest: v.digest,
            epoch: v.manifest.epoch,
            manifest_version: v.manifest.manifest_version,
        };
        if self.last != Some(accepted) {
            let json = serde_json::to_vec(&accepted).expect("state serialises");
            write_atomic(&self.state_path, &json).map_err(|e| VerifyError::State {
                path: self.state_path.clone(),
                reason: e.to_string(),
            })?;
            self.last = Some(accepted);
        }
        Ok(v)
    }
}
