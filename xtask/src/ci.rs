//! `cargo xtask ci`: the whole check, as CI runs it.

use crate::{entente_release, sh, sim_json};
use anyhow::{ensure, Result};

/// Where rdma-sys's bindgen finds a libclang it works with (it breaks with libclang >= 16).
const LIBCLANG_14: &str = "/usr/lib/llvm-14/lib";

/// The `rdma` feature builds against libibverbs and librdmacm with bindgen: check they are here.
fn rdma_build_environment() -> Result<()> {
    let have = |p: &str| std::path::Path::new(p).exists();
    ensure!(
        have("/usr/include/infiniband/verbs.h") && have("/usr/include/rdma/rdma_cma.h"),
        "the rdma feature needs libibverbs-dev and librdmacm-dev (apt-get install libibverbs-dev librdmacm-dev)"
    );
    ensure!(
        have(LIBCLANG_14),
        "the rdma feature needs libclang 14 (apt-get install libclang1-14 libclang-common-14-dev)"
    );
    if std::env::var_os("LIBCLANG_PATH").is_none() {
        // Children (cargo, rustc, build scripts) inherit it.
        std::env::set_var("LIBCLANG_PATH", LIBCLANG_14);
    }
    Ok(())
}

/// Format, lints, tests (every feature, the RDMA backend included), then the simulator's
/// acceptance runs on release builds.
pub fn run() -> Result<()> {
    rdma_build_environment()?;
    sh("cargo", &["fmt", "--all", "--", "--check"])?;
    sh(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The end-to-end tests (package entente-tests) run the binaries built here; no test builds.
    sh(
        "cargo",
        &["build", "--workspace", "--bins", "--all-features"],
    )?;
    sh("cargo", &["test", "--workspace", "--all-features"])?;
    // The spin model of one link: the protocol verifies, every planted mutant is caught.
    sh("sh", &["model/check.sh"])?;
    acceptance()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// The 10,000-node runs of the acceptance list.
fn acceptance() -> Result<()> {
    let entente = entente_release()?;
    let base = "--nodes 10000 --topology fat-tree --loss 0.01 --crash-rate 0.001 --seed 7";
    let bilateral = sim_json(
        &entente,
        &args(&format!("{base} --protocol bilateral --check")),
    )?;
    eprintln!("bilateral 10k: {}", summary(&bilateral));
    ensure!(
        bilateral["converged"] == true,
        "bilateral did not converge: {bilateral}"
    );
    ensure!(
        bilateral["safety_violations"] == 0,
        "bilateral violated safety: {bilateral}"
    );
    let again = sim_json(&entente, &args(&format!("{base} --protocol bilateral")))?;
    ensure!(
        again["trace_hash"] == bilateral["trace_hash"],
        "same seed, different trace: {} vs {}",
        again["trace_hash"],
        bilateral["trace_hash"]
    );
    let fito = sim_json(
        &entente,
        &args(&format!("{base} --protocol fito-clock --skew-ms 5")),
    )?;
    eprintln!("fito-clock 10k: {}", summary(&fito));
    ensure!(
        fito["safety_violations"].as_u64().unwrap_or(0) > 0,
        "fito-clock with 5 ms skew reported no violation: {fito}"
    );
    Ok(())
}

fn summary(r: &serde_json::Value) -> String {
    format!(
        "converged={} violations={} rounds={} sim_time_ms={} events={} wall_ms={} trace={}",
        r["converged"],
        r["safety_violations"],
        r["rounds_to_converge"],
        r["sim_time_ms"],
        r["events"],
        r["wall_ms"],
        r["trace_hash"]
    )
}
