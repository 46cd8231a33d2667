//! The project's binaries the guest runs, built on the host (release, feature `rdma`): the
//! fastpath conformance suite and the `verbs_perf` example (scenario A), the agent `entented`
//! and the `entente` CLI (scenario B).

use super::bounded;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Where rdma-sys's bindgen finds a libclang it works with (it breaks with libclang >= 16).
const LIBCLANG_14: &str = "/usr/lib/llvm-14/lib";

/// Paths of the built executables.
pub struct Binaries {
    /// `fastpath/tests/conformance.rs`.
    pub conformance: PathBuf,
    /// `fastpath/examples/verbs_perf.rs`.
    pub verbs_perf: PathBuf,
    /// The agent, with the verbs transport.
    pub entented: PathBuf,
    /// The CLI.
    pub entente: PathBuf,
}

fn executable(json: &str, kind: &str, name: &str) -> Result<PathBuf> {
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == name
            && v["target"]["kind"][0] == kind
        {
            if let Some(p) = v["executable"].as_str() {
                return Ok(PathBuf::from(p));
            }
        }
    }
    anyhow::bail!("cargo built no {kind} `{name}`")
}

/// Builds the guest's binaries and returns their paths.
pub fn build() -> Result<Binaries> {
    let have = |p: &str| std::path::Path::new(p).exists();
    anyhow::ensure!(
        have("/usr/include/infiniband/verbs.h") && have("/usr/include/rdma/rdma_cma.h"),
        "the rdma feature needs libibverbs-dev and librdmacm-dev (apt-get install libibverbs-dev librdmacm-dev)"
    );
    let mut cmd = Command::new("cargo");
    cmd.args([
        "build",
        "--release",
        "--features",
        "entente-fastpath/rdma,entente-agent/rdma",
        "-p",
        "entente-fastpath",
        "-p",
        "entente-agent",
        "-p",
        "entente-cli",
        "--test",
        "conformance",
        "--example",
        "verbs_perf",
        "--bin",
        "entented",
        "--bin",
        "entente",
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(crate::root());
    if std::env::var_os("LIBCLANG_PATH").is_none() {
        cmd.env("LIBCLANG_PATH", LIBCLANG_14);
    }
    let json = bounded(&mut cmd, Duration::from_secs(1500), true).context("cargo build")?;
    Ok(Binaries {
        conformance: executable(&json, "test", "conformance")?,
        verbs_perf: executable(&json, "example", "verbs_perf")?,
        entented: executable(&json, "bin", "entented")?,
        entente: executable(&json, "bin", "entente")?,
    })
}
