//! What the comparisons share: where the workspace and the binaries they run are.
//!
//! The benchmarks in this package measure entente against outside baselines (a plain
//! `TcpStream` echo, `dd`), interleaved in one run; `cargo xtask bench` runs them and regenerates
//! `docs/bench/`. Micro-benchmarks of one crate's internals stay in that crate.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of another package, built before the benchmark (`cargo xtask bench` builds them):
/// beside the benchmark's profile folder (`target/<profile>/`), or in `ENTENTE_BIN_DIR`.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("ENTENTE_BIN_DIR").map_or_else(
        || {
            let me = std::env::current_exe().expect("the benchmark's path");
            me.parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .to_path_buf()
        },
        PathBuf::from,
    );
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first (cargo build --release -p entente-stage --bins)",
        p.display()
    );
    p
}
