//! `entente keygen` and `entente manifest sign|show` end to end, through the real binary.

use entente_stage::{Digest, Manifest};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn entente(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args)
        .output()
        .expect("the entente binary runs")
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit code 1 (an error) and the stderr text.
fn refused(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stage_cli-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Keys in `dir/keys`, two images and a TOML description in `dir`.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let keys = dir.join("keys");
    ok(&entente(&["keygen", "--out", s(&keys), "--name", "ops"]));
    fs::write(dir.join("nic.bin"), vec![0x11u8; 300_000]).unwrap();
    fs::write(dir.join("gpu.bin"), vec![0x22u8; 5000]).unwrap();
    let desc = dir.join("campaign.toml");
    fs::write(
        &desc,
        r#"epoch = 7
manifest_version = 12
valid_days = 30
semantics = "RoCE CC v3"

[profiles.cx7-nic]
image = "nic.bin"
version = "28.41.1000"
chunk_size = 65536
compat = [6, 7]

[profiles.h100-gpu]
image = "gpu.bin"
version = "96.00.AB"
chunk_size = 4096
compat = [6, 7]
"#,
    )
    .unwrap();
    (keys.join("ops.key"), keys.join("ops.pub"), desc)
}

#[test]
fn keygen_writes_a_private_key_0600_and_refuses_to_overwrite() {
    let dir = scratch("keygen");
    let out = ok(&entente(&["keygen", "--out", s(&dir)]));
    let key = dir.join("manifest-signing.key");
    let public = dir.join("manifest-signing.pub");
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(&public)
        .unwrap()
        .starts_with("entente-ed25519-public-v1 "));
    assert!(out.contains("key id:"), "{out}");
    let before = fs::read(&key).unwrap();
    let err = refused(&entente(&["keygen", "--out", s(&dir)]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(&key).unwrap(), before);
}

#[test]
fn sign_then_show_verifies_and_reports_every_field() {
    let dir = scratch("sign-show");
    let (key, public, desc) = setup(&dir);
    let manifest = dir.join("campaign.manifest");
    let out = ok(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&manifest),
    ]));
    assert!(
        out.contains("signed epoch 7 version 12 (2 profiles)"),
        "{out}"
    );
    assert!(dir.join("campaign.manifest.sig").exists());

    // The file is canonical and describes the images exactly.
    let bytes = fs::read(&manifest).unwrap();
    let m = Manifest::from_canonical_bytes(&bytes).unwrap();
    let nic = &m.profiles["cx7-nic"];
    assert_eq!(nic.sha256, Digest::of(&[0x11u8; 300_000]));
    assert_eq!((nic.size, nic.chunk_count()), (300_000, 5));

    let out = ok(&entente(&[
        "manifest",
        "show",
        s(&manifest),
        "--json",
        "--pubkey",
        s(&public),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["signature"]["verified"], true);
    assert_eq!(v["digest"], m.digest().to_hex());
    assert_eq!(v["expired"], false);
    assert_eq!(v["manifest"]["epoch"], 7);
    assert_eq!(v["manifest"]["manifest_version"], 12);
    assert_eq!(v["manifest"]["profiles"]["h100-gpu"]["version"], "96.00.AB");
    assert_eq!(v["manifest"]["profiles"]["h100-gpu"]["size"], 5000);
    assert_eq!(
        v["manifest"]["profiles"]["cx7-nic"]["compat"],
        serde_json::json!({"min_epoch": 6, "max_epoch": 7})
    );

    let text = ok(&entente(&[
        "manifest",
        "show",
        s(&manifest),
        "--pubkey",
        s(&public),
    ]));
    for needle in [
        "epoch             7",
        "manifest version  12",
        "signature         verified",
        "profile cx7-nic",
        "chunks            5 of 65536 bytes",
        "compat            epochs 6..=7",
        "RoCE CC v3",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let unverified = ok(&entente(&["manifest", "show", s(&manifest)]));
    assert!(unverified.contains("not verified"), "{unverified}");
}

#[test]
fn show_refuses_a_tampered_manifest_and_a_foreign_key() {
    let dir = scratch("tamper");
    let (key, public, desc) = setup(&dir);
    let manifest = dir.join("m.json");
    ok(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&manifest),
    ]));
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, text.replace("\"epoch\":7", "\"epoch\":8")).unwrap();
    let err = refused(&entente(&[
        "manifest",
        "show",
        s(&manifest),
        "--pubkey",
        s(&public),
    ]));
    assert!(err.contains("bad signature"), "{err}");

    fs::write(&manifest, text).unwrap();
    let other = dir.join("other");
    ok(&entente(&["keygen", "--out", s(&other)]));
    let err = refused(&entente(&[
        "manifest",
        "show",
        s(&manifest),
        "--pubkey",
        s(&other.join("manifest-signing.pub")),
    ]));
    assert!(err.contains("unknown key"), "{err}");
}

#[test]
fn sign_refuses_a_secret_key_readable_by_others() {
    let dir = scratch("key-mode");
    let (key, _, desc) = setup(&dir);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = dir.join("m");
    let err = refused(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&out),
    ]));
    assert!(err.contains("ops.key") && err.contains("0644"), "{err}");
    assert!(!out.exists());
}

#[test]
fn sign_reads_json_descriptions_and_refuses_bad_ones() {
    let dir = scratch("json-desc");
    let (key, public, _) = setup(&dir);
    let desc = dir.join("c.json");
    fs::write(
        &desc,
        r#"{"epoch":2,"manifest_version":1,"expires_at":4000000000,
            "profiles":{"cx7-nic":{"image":"nic.bin","version":"1","compat":[1,2]}}}"#,
    )
    .unwrap();
    let out = dir.join("c.manifest");
    ok(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&out),
    ]));
    let v: serde_json::Value = serde_json::from_str(&ok(&entente(&[
        "manifest",
        "show",
        s(&out),
        "--json",
        "--pubkey",
        s(&public),
    ])))
    .unwrap();
    assert_eq!(v["manifest"]["expires_at"], 4_000_000_000u64);
    // Default chunk size: 1 MiB, so the 300 000-byte image is one chunk.
    assert_eq!(v["manifest"]["profiles"]["cx7-nic"]["chunk_size"], 1 << 20);

    fs::write(&desc, r#"{"epoch":2,"manifest_version":1,"expires_at":4000000000,"profiles":{"cx7-nic":{"image":"missing.bin","version":"1","compat":[1,2]}}}"#).unwrap();
    let err = refused(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&out),
    ]));
    assert!(err.contains("missing.bin"), "{err}");
    fs::write(&desc, r#"{"epoch":2,"manifest_version":1,"expires_at":4000000000,"profiles":{"cx7-nic":{"image":"nic.bin","version":"1","compat":[3,2]}}}"#).unwrap();
    let err = refused(&entente(&[
        "manifest",
        "sign",
        "--key",
        s(&key),
        "--in",
        s(&desc),
        "--out",
        s(&out),
    ]));
    assert!(err.contains("compat window"), "{err}");
}
