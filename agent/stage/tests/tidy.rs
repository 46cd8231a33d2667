//! Tidy checks: `unsafe` appears only in the io_uring module, each block with its SAFETY comment.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn unsafe_lives_only_in_the_io_uring_module_with_safety_comments() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["src", "tests"] {
        rust_files(&root.join(d), &mut files);
    }
    let uring = root.join("src/store/uring.rs");
    let mut blocks = 0;
    for f in files {
        if f.ends_with("tests/tidy.rs") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap();
            if !code.contains("unsafe") || code.contains("\"") {
                continue;
            }
            if f == uring {
                if code.contains("unsafe {") {
                    blocks += 1;
                    let before = &lines[i.saturating_sub(8)..i];
                    assert!(
                        before
                            .iter()
                            .any(|l| l.trim_start().starts_with("// SAFETY:"))
                            || line.contains("// SAFETY:"),
                        "{}:{}: unsafe block without a SAFETY comment",
                        f.display(),
                        i + 1
                    );
                }
            } else if !code.contains("unsafe_code") {
                panic!("{}:{}: unsafe outside store/uring.rs", f.display(), i + 1);
            }
        }
    }
    assert!(
        blocks >= 5,
        "expected the engine's unsafe blocks, found {blocks}"
    );
}
