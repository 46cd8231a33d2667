//! Fuzzes the signed-manifest parser and its verification: any bytes give a manifest or a
//! `ManifestError`, never a panic, and what is accepted is exactly its canonical encoding. A
//! manifest accepted, signed with a trusted key, passes the verifier unchanged (and fails with one
//! bit of the signature flipped); any text gives a signature line or a `KeyError`, and an
//! accepted line is written back byte for byte and checked against fixed bytes.
#![no_main]

use entente_fuzz::manifest_key;
use entente_stage::{
    verify_signature, Digest, Manifest, Signature, TrustedKeys, Verifier, VerifyError,
};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

/// The trusted keys: [`manifest_key`] only.
fn keys() -> &'static TrustedKeys {
    static K: OnceLock<TrustedKeys> = OnceLock::new();
    K.get_or_init(|| {
        let mut keys = TrustedKeys::new();
        keys.add(manifest_key().public());
        keys
    })
}

/// A verifier trusting [`keys`], with no manifest accepted yet (its state file does not exist,
/// and `check` never writes it).
fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        Verifier::open(
            keys().clone(),
            Path::new("/nonexistent/entente-fuzz/accepted.json"),
        )
        .expect("no state file")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_canonical_bytes(data) {
        assert_eq!(
            m.to_canonical_bytes(),
            data,
            "accepted a non-canonical encoding"
        );
        assert_eq!(m.digest(), Digest::of(data));
        let mut sig = manifest_key().sign(data);
        match verifier().check(data, &sig, 0) {
            Ok(v) => {
                assert_eq!(v.manifest(), &m);
                assert_eq!(v.digest(), m.digest());
            }
            Err(VerifyError::Expired { .. }) => assert_eq!(m.expires_at, 0),
            Err(e) => panic!("a signed valid manifest was refused: {e}"),
        }
        let mut bytes = sig.sig.to_bytes();
        bytes[data.len() % 64] ^= 1;
        sig.sig = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(matches!(
            verifier().check(data, &sig, 0),
            Err(VerifyError::BadSignature { .. })
        ));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(sig) = Signature::parse(text, Path::new("fuzz.sig")) {
            let line = text.strip_suffix('\n').unwrap_or(text);
            assert_eq!(
                sig.to_file_text(),
                format!("{line}\n"),
                "signature line not canonical"
            );
            let _ = verify_signature(keys(), b"{\"fixed\":true}", &sig);
        }
    }
});
