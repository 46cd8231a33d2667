//! Tidy checks over the whole source tree: `unsafe` lives only in fastpath and in stage's io_uring
//! module, and every `unsafe` block or impl there says why it is sound.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn allowed(rel: &str) -> bool {
    rel.starts_with("fastpath/")
        || rel == "agent/stage/src/store/uring.rs"
        || rel == "agent/daemon/src/control/fds.rs"
        || rel == "agent/daemon/src/control/peer.rs"
}

/// Lines that use `unsafe` as a keyword (not in comments, strings or attributes).
fn unsafe_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let code = without_strings(l.split("//").next().unwrap_or(""));
            (code.contains("unsafe {")
                || code.contains("unsafe fn")
                || code.contains("unsafe impl")
                || code.contains("unsafe extern"))
                && !code.trim_start().starts_with("#")
        })
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// The line with its string literals blanked (so checks that mention `unsafe` are not flagged).
fn without_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    for c in line.chars() {
        if c == '"' {
            in_string = !in_string;
        } else if !in_string {
            out.push(c);
        }
    }
    out
}

#[test]
fn unsafe_only_in_fastpath_and_the_io_uring_module() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["agent", "fastpath", "xtask", "fuzz", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found the sources");
    let mut offenders = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(f).unwrap();
        for (line, l) in unsafe_lines(&text) {
            if !allowed(&rel) {
                offenders.push(format!("{rel}:{line}: {}", l.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe outside its allowed places:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn every_unsafe_block_says_why() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("fastpath"), &mut files);
    files.push(root.join("agent/stage/src/store/uring.rs"));
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (line, l) in unsafe_lines(&text) {
            // `unsafe fn` declarations document their contract in a `# Safety` section instead.
            if l.contains("unsafe fn") {
                let doc = lines[..line - 1]
                    .iter()
                    .rev()
                    .take(12)
                    .any(|p| p.contains("# Safety"));
                let is_impl_of_trait = lines[..line - 1]
                    .iter()
                    .rev()
                    .take(40)
                    .any(|p| p.contains("unsafe impl"));
                if !doc && !is_impl_of_trait {
                    missing.push(format!("{}:{line}", f.display()));
                }
                continue;
            }
            let start = line.saturating_sub(6);
            let said = lines[start..line].iter().any(|p| p.contains("SAFETY:"));
            if !said {
                missing.push(format!("{}:{line}: {}", f.display(), l.trim()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "unsafe without a SAFETY comment:\n{}",
        missing.join("\n")
    );
}
