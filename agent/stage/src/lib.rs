//! entente-stage: signed firmware manifests and the content-addressed image store.
//!
//! # Manifests
//!
//! A [`Manifest`] is encoded as **canonical JSON**: UTF-8, no whitespace, object keys in sorted
//! order (every struct declares its fields alphabetically; profiles are a `BTreeMap`), integers
//! as plain decimal, digests as lowercase hex. Parsing re-encodes the parsed value and refuses
//! any input that is not byte-identical to its canonical encoding, so one manifest has exactly
//! one encoding and its SHA-256 (the *manifest digest*) identifies it.
//!
//! A signed manifest is two files: `NAME` holds the canonical bytes and `NAME.sig` a detached
//! ed25519 signature over exactly those bytes (one text line: `entente-signature-v1 ed25519
//! <key id> <signature>`). The key id is the first 8 bytes of the SHA-256 of the public key.
//!
//! [`Verifier`] checks, in this order: the key is trusted ([`VerifyError::UnknownKey`]), the
//! signature holds ([`VerifyError::BadSignature`]), the bytes are a canonical, valid manifest
//! ([`VerifyError::Malformed`]), it has not expired ([`VerifyError::Expired`]), and it does not go
//! back ([`VerifyError::Rollback`]) or replace the last accepted manifest
//! ([`VerifyError::Substitution`]). Unsigned bytes never reach the parser. The last accepted
//! (epoch, manifest version, digest) is persisted atomically (write a temporary file, fsync,
//! rename, fsync the directory) before [`Verifier::accept`] returns.
//!
//! Anti-rollback rule: a manifest is refused if its epoch is lower than the last accepted
//! epoch, or its manifest version is lower than the last accepted version (the manifest version
//! is the signer's monotone counter across all manifests). The same epoch and version with a
//! different digest is a substitution; the byte-identical manifest again is accepted,
//! idempotently.
//!
//! # Image store
//!
//! See [`store`]: images are addressed by their SHA-256 under `<data>/images/`, staged under
//! `<data>/partial/`, every chunk is checked against the manifest before it is written, and a
//! file appears under `images/` only complete, verified and durable.
//!
//! # Unsafe code
//!
//! The crate denies `unsafe_code` except in `store::uring`, the io_uring engine, where every
//! block carries its `SAFETY:` comment.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod fsutil;
pub mod keys;
pub mod manifest;
pub mod spec;
pub mod statement;
pub mod store;
pub mod verify;

pub use keys::{KeyError, KeyId, PublicKey, SecretKey, Signature, TrustedKeys};
pub use manifest::{CompatWindow, Digest, Manifest, ManifestError, ProfileImage};
pub use spec::{ManifestSpec, ProfileSpec, SpecError};
pub use statement::{Action, SignedStatement, Statement, StatementError};
pub use store::{ImageReader, StageReport, Staging, Store, StoreConfig, StoreError};
pub use verify::{unix_now, verify_signature, Accepted, VerifiedManifest, Verifier, VerifyError};
