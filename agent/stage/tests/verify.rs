//! Every refusal of manifest verification, each asserting its own error kind.

use entente_stage::{
    CompatWindow, Manifest, ManifestError, ProfileImage, SecretKey, Signature, TrustedKeys,
    Verifier, VerifyError,
};
use std::collections::BTreeMap;
use std::path::Path;

const NOW: u64 = 1_800_000_000;

fn manifest(epoch: u64, version: u64, semantics: &str) -> Manifest {
    let image = vec![0xa5u8; 9000];
    let p = ProfileImage::from_reader(
        &image[..],
        4096,
        "2.0.1",
        CompatWindow {
            min_epoch: epoch.saturating_sub(1),
            max_epoch: epoch,
        },
    )
    .unwrap();
    Manifest {
        epoch,
        expires_at: NOW + 3600,
        format: 1,
        manifest_version: version,
        profiles: BTreeMap::from([("gpu-h100".to_owned(), p)]),
        semantics: semantics.into(),
    }
}

fn signer() -> SecretKey {
    SecretKey::from_seed([42; 32])
}

fn verifier(dir: &Path) -> Verifier {
    let mut keys = TrustedKeys::new();
    keys.add(signer().public());
    Verifier::open(keys, &dir.join("accepted.json")).unwrap()
}

fn signed(m: &Manifest) -> (Vec<u8>, Signature) {
    let bytes = m.to_canonical_bytes();
    let sig = signer().sign(&bytes);
    (bytes, sig)
}

#[test]
fn a_valid_manifest_is_accepted_and_its_profile_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = verifier(dir.path());
    let m = manifest(3, 1, "a");
    let (bytes, sig) = signed(&m);
    let ok = v.accept(&bytes, &sig, NOW).unwrap();
    assert_eq!(ok.manifest(), &m);
    assert_eq!(ok.key_id(), signer().public().id());
    assert_eq!(ok.profile("gpu-h100").unwrap().size, 9000);
    assert_eq!(v.last_accepted().unwrap().digest, m.digest());
}

#[test]
fn bad_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(dir.path());
    let (mut bytes, sig) = signed(&manifest(3, 1, "a"));
    // Same length, one byte changed after signing.
    let pos = bytes.iter().position(|&b| b == b'a').unwrap();
    bytes[pos] = b'b';
    assert!(matches!(
        v.check(&bytes, &sig, NOW),
        Err(VerifyError::BadSignature { key_id }) if key_id == signer().public().id()
    ));
    // A signature by another key that claims the trusted key's id.
    let (bytes, _) = signed(&manifest(3, 1, "a"));
    let mut forged = SecretKey::from_seed([7; 32]).sign(&bytes);
    forged.key_id = signer().public().id();
    assert!(matches!(
        v.check(&bytes, &forged, NOW),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(dir.path());
    let bytes = manifest(3, 1, "a").to_canonical_bytes();
    let other = SecretKey::from_seed([8; 32]);
    let sig = other.sign(&bytes);
    assert!(matches!(
        v.check(&bytes, &sig, NOW),
        Err(VerifyError::UnknownKey { key_id }) if key_id == other.public().id()
    ));
}

#[test]
fn expired_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(dir.path());
    let m = manifest(3, 1, "a");
    let (bytes, sig) = signed(&m);
    assert!(v.check(&bytes, &sig, m.expires_at - 1).is_ok());
    assert!(matches!(
        v.check(&bytes, &sig, m.expires_at),
        Err(VerifyError::Expired { expires_at, now }) if expires_at == m.expires_at && now == m.expires_at
    ));
}

#[test]
fn older_epoch_is_refused_as_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = verifier(dir.path());
    let (b, s) = signed(&manifest(5, 10, "a"));
    v.accept(&b, &s, NOW).unwrap();
    let (b, s) = signed(&manifest(4, 11, "a"));
    assert!(matches!(
        v.accept(&b, &s, NOW),
        Err(VerifyError::Rollback {
            epoch: 4,
            manifest_version: 11,
            last_epoch: 5,
            last_version: 10
        })
    ));
}

#[test]
fn older_manifest_version_is_refused_as_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = verifier(dir.path());
    let (b, s) = signed(&manifest(5, 10, "a"));
    v.accept(&b, &s, NOW).unwrap();
    let (b, s) = signed(&manifest(5, 9, "a"));
    assert!(matches!(
        v.accept(&b, &s, NOW),
        Err(VerifyError::Rollback {
            epoch: 5,
            manifest_version: 9,
            ..
        })
    ));
    // A newer epoch with an older version is still a rollback of the version counter.
    let (b, s) = signed(&manifest(6, 9, "a"));
    assert!(matches!(
        v.accept(&b, &s, NOW),
        Err(VerifyError::Rollback { .. })
    ));
    // Newer version, same epoch: accepted.
    let (b, s) = signed(&manifest(5, 11, "a"));
    v.accept(&b, &s, NOW).unwrap();
}

#[test]
fn rollback_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (b, s) = signed(&manifest(5, 10, "a"));
    verifier(dir.path()).accept(&b, &s, NOW).unwrap();
    let v = verifier(dir.path());
    assert_eq!(v.last_accepted().unwrap().epoch, 5);
    let (b, s) = signed(&manifest(4, 10, "a"));
    assert!(matches!(
        v.check(&b, &s, NOW),
        Err(VerifyError::Rollback { .. })
    ));
    assert!(!dir.path().join("accepted.json.tmp").exists());
}

#[test]
fn different_manifest_with_same_epoch_and_version_is_substitution() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = verifier(dir.path());
    let first = manifest(5, 10, "a");
    let (b, s) = signed(&first);
    v.accept(&b, &s, NOW).unwrap();
    let (b2, s2) = signed(&manifest(5, 10, "b"));
    match v.accept(&b2, &s2, NOW) {
        Err(VerifyError::Substitution {
            epoch: 5,
            manifest_version: 10,
            accepted,
            digest,
        }) => {
            assert_eq!(accepted, first.digest());
            assert_ne!(digest, accepted);
        }
        other => panic!("{other:?}"),
    }
    // The byte-identical manifest again is accepted, idempotently, even after a restart.
    v.accept(&b, &s, NOW).unwrap();
    let mut v = verifier(dir.path());
    v.accept(&b, &s, NOW).unwrap();
    assert_eq!(v.last_accepted().unwrap().digest, first.digest());
}

#[test]
fn missing_profile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(dir.path());
    let (b, s) = signed(&manifest(5, 10, "a"));
    let ok = v.check(&b, &s, NOW).unwrap();
    assert!(matches!(
        ok.profile("cx7-nic"),
        Err(VerifyError::MissingProfile { profile }) if profile == "cx7-nic"
    ));
}

#[test]
fn signed_but_non_canonical_bytes_are_refused_as_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let v = verifier(dir.path());
    let bytes = serde_json::to_vec_pretty(&manifest(5, 10, "a")).unwrap();
    let sig = signer().sign(&bytes);
    assert!(matches!(
        v.check(&bytes, &sig, NOW),
        Err(VerifyError::Malformed(ManifestError::NotCanonical))
    ));
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accepted.json"), b"{garbage").unwrap();
    let mut keys = TrustedKeys::new();
    keys.add(signer().public());
    assert!(matches!(
        Verifier::open(keys, &dir.path().join("accepted.json")),
        Err(VerifyError::State { .. })
    ));
}
