//! The layering rules of ARCHITECTURE.md, checked: the decision crates (entente-proto,
//! entente-node) depend on no crate that does I/O, and the agent's shell (agent/daemon) holds
//! no image fan-out policy of its own.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates that do I/O (sockets, files, devices, databases, HTTP) or are the project's I/O layers.
const IO_CRATES: &[&str] = &[
    "nix",
    "libc",
    "io-uring",
    "rusqlite",
    "mio",
    "socket2",
    "ureq",
    "rdma-sys",
    "tokio",
    "netlink-sys",
    "nvml-wrapper",
    "entente-fastpath",
    "entente-stage",
    "entente-devices",
    "entente-agent",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The crates `package` depends on at run time (normal dependencies, transitively).
fn runtime_closure(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, n)| **n == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no package {package}"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[dep_id].to_owned()) {
                todo.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn the_decision_crates_depend_on_no_io_crate() {
    for package in ["entente-proto", "entente-node"] {
        let deps = runtime_closure(package);
        let io: Vec<&&str> = IO_CRATES.iter().filter(|c| deps.contains(**c)).collect();
        assert!(io.is_empty(), "{package} depends on {io:?} (all: {deps:?})");
    }
    assert!(
        runtime_closure("entente-agent").contains("entente-node"),
        "entented drives entente-node"
    );
}

/// Calls that read a clock, a file, a socket or the process: none in the decision crates (time
/// is the caller's `Nanos`).
const IO_CALLS: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "Instant::now",
    "SystemTime",
    "std::io::stdin",
    "std::env::var",
];

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn the_decision_crates_read_no_clock_file_or_socket() {
    let mut found = Vec::new();
    for dir in ["agent/proto/src", "agent/node/src"] {
        for f in rust_sources(&root().join(dir)) {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if let Some(c) = IO_CALLS.iter().find(|c| code.contains(**c)) {
                    found.push(format!("{}:{}: {c}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O in a decision crate:\n{}",
        found.join("\n")
    );
}

/// What defining fan-out policy looks like: the request window, back-offs, deadlines, serve
/// quotas, the chunk choice, the rate cap, holdings.
const POLICY: &[&str] = &[
    "const PER_PEER",
    "const WINDOW",
    "_BACKOFF:",
    "const MANIFEST_RETRY",
    "fn request_deadline",
    "const SERVE_QUOTA",
    "const SERVE_QUEUE_MAX",
    "const HAVE_INTERVAL",
    "fn choose(",
    "struct RateLimit",
    "struct Holdings",
    "struct ChunkSet",
];

#[test]
fn the_agent_shell_holds_no_fanout_policy() {
    let files = rust_sources(&root().join("agent/daemon/src"));
    assert!(files.len() > 10, "agent/daemon/src has its sources");
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(p) = POLICY.iter().find(|p| line.contains(**p)) {
                found.push(format!("{}:{}: {p}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "fan-out policy belongs in entente-node (entente_node::fanout):\n{}",
        found.join("\n")
    );
}
