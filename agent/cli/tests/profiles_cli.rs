//! `entente profiles` end to end: the shipped hw-profiles pass; broken copies fail with exit 1 and
//! each error as `<file>.toml:<line>: <what is wrong>`; bad usage exits 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn entente(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args)
        .output()
        .expect("the entente binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw-profiles")
}

fn check(dir: &Path, json: bool) -> Output {
    let dir = dir.to_str().expect("utf-8 path");
    if json {
        entente(&["profiles", "check", dir, "--json"])
    } else {
        entente(&["profiles", "check", dir])
    }
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("entente-profiles-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the shipped profiles in a temporary directory.
fn copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    for e in std::fs::read_dir(shipped()).expect("hw-profiles") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).expect("copy");
        }
    }
    dir
}

/// Replaces the first `from` in `dir/file` by `to`; returns the 1-based line where it was.
fn edit(dir: &Path, file: &str, from: &str, to: &str) -> usize {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    let at = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} not in {file}"));
    let line = text[..at].matches('\n').count() + 1;
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    line
}

#[test]
fn the_shipped_profiles_pass() {
    let out = check(&shipped(), false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("11 profiles OK"), "{s}");
    for name in ["connectx-6dx", "bluefield-3", "h100-sxm5", "rxe", "sim-gpu"] {
        assert!(s.contains(name), "{name} missing from {s}");
    }
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn the_shipped_profiles_pass_as_json() {
    let out = check(&shipped(), true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["profiles"].as_array().unwrap().len(), 11);
    assert_eq!(v["errors"].as_array().unwrap().len(), 0);
}

#[test]
fn a_syntax_error_fails_naming_file_and_line() {
    let dir = copy("a_syntax_error_fails_naming_file_and_line");
    let line = edit(
        dir.path(),
        "connectx-7.toml",
        "class = \"nic\"",
        "class = nic\"",
    );
    let out = check(dir.path(), false);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    let prefix = format!("{}:{line}: ", dir.path().join("connectx-7.toml").display());
    assert!(err.lines().any(|l| l.starts_with(&prefix)), "{err}");
    assert!(err.contains("1 error in 1 file"), "{err}");
}

#[test]
fn an_unknown_field_fails_naming_file_and_line() {
    let dir = copy("an_unknown_field_fails_naming_file_and_line");
    let line = edit(
        dir.path(),
        "h200.toml",
        "dual_bank = false",
        "dual_bank = false\nbanks = 2",
    ) + 1;
    let out = check(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "{}:{line}: unknown field `banks`",
        dir.path().join("h200.toml").display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn a_duplicate_activation_method_fails_naming_file_and_line() {
    let dir = copy("a_duplicate_activation_method_fails_naming_file_and_line");
    let line = edit(
        dir.path(),
        "sim-gpu.toml",
        "method = \"reboot\"",
        "method = \"reset\"",
    );
    let out = check(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "{}:{line}: activation method \"reset\" listed twice",
        dir.path().join("sim-gpu.toml").display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn a_duplicate_device_across_files_fails_naming_the_second_file() {
    let dir = copy("a_duplicate_device_across_files_fails_naming_the_second_file");
    let text = std::fs::read_to_string(dir.path().join("b200.toml")).unwrap();
    std::fs::write(
        dir.path().join("b200x.toml"),
        text.replace("name = \"b200\"", "name = \"b200x\""),
    )
    .unwrap();
    let out = check(dir.path(), true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}"); // 0x2901 and 0x2909
    for e in errors {
        assert!(e["file"].as_str().unwrap().ends_with("b200x.toml"), "{e}");
        assert!(e["line"].as_u64().unwrap() > 0);
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("already matched by b200.toml"),
            "{e}"
        );
    }
}

#[test]
fn errors_in_several_files_are_all_printed() {
    let dir = copy("errors_in_several_files_are_all_printed");
    let l1 = edit(
        dir.path(),
        "a100.toml",
        "name = \"a100\"",
        "name = \"a-100\"",
    );
    let l2 = edit(
        dir.path(),
        "rxe.toml",
        "flashable = false",
        "flashable = false\nmax_image_bytes = 4096",
    ) + 1;
    let l3 = edit(
        dir.path(),
        "netdevsim.toml",
        "disruptive = false",
        "disruptive = true",
    );
    let out = check(dir.path(), false);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (file, line) in [("a100.toml", l1), ("rxe.toml", l2), ("netdevsim.toml", l3)] {
        let prefix = format!("{}:{line}: ", dir.path().join(file).display());
        assert!(
            err.lines().any(|l| l.starts_with(&prefix)),
            "{prefix} in {err}"
        );
    }
    assert!(err.contains("in 3 files"), "{err}");
}

#[test]
fn a_missing_directory_is_bad_usage() {
    let dir = TempDir::new("a_missing_directory_is_bad_usage");
    let out = check(&dir.path().join("absent"), false);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn show_prints_a_profile_as_text_and_json() {
    let dir = shipped();
    let dir = dir.to_str().unwrap();
    let out = entente(&["profiles", "show", "connectx-7", "--dir", dir]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("0x15b3:0x1021"), "{s}");
    assert!(s.contains("activation live: non-disruptive"), "{s}");

    let out = entente(&["profiles", "show", "h100-sxm5", "--dir", dir, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["backend"], "redfish");
    assert_eq!(v["inventory"], "nvml");
    assert_eq!(v["match"]["pci_vendor"], "0x10de");
    assert_eq!(v["activations"][0]["method"], "reboot");
    assert_eq!(v["activations"][0]["disruptive"], true);

    let out = entente(&["profiles", "show", "no-such", "--dir", dir]);
    assert_eq!(out.status.code(), Some(1));
}
