//! `cargo xtask <task>`: project chores that need more than `cargo build` / `cargo test`.
//!
//! - `ci`: everything CI checks (format, lints, tests, the simulator's acceptance runs).
//! - `sim-report`: regenerates `docs/sim-report.md` from release-build simulator runs.
//! - `fanout-report`: regenerates `docs/bench/fanout.md` (image fan-out: simulator, loopback
//!   agents, the lab's verbs run).
//! - `swarm --runs N [--seed S] [--max-nodes M] [--for-s SECS] [--json]`: simulator swarm
//!   seeds on every core; exits 1 if any run failed.
//! - `bench [--only scale|fastpath|staging] [--baseline REF] [--rounds N]`: the comparisons
//!   against baselines (the simulator against revision REF, fastpath against a `TcpStream`,
//!   staging against `dd`), each regenerating its page of `docs/bench/`.
//! - `lab [--keep] [--json FILE]`: the rxe lab (a QEMU guest with soft RoCE): the verbs backend's
//!   conformance suite and its latency and throughput against rdma-core's tools.
//! - `fuzz [--minutes N] [--only TARGET]`: every cargo-fuzz target of `fuzz/` for N minutes
//!   each; exits 1 if any crashed.

mod bench;
mod ci;
mod fanout_report;
mod fuzz;
mod lab;
mod sim_report;
mod swarm;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "ci" => ci::run(),
        "sim-report" => sim_report::run(),
        "fanout-report" => fanout_report::run(),
        "swarm" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            swarm::run(&args)
        }
        "bench" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            bench::run(&args)
        }
        "lab" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            lab::run(&args)
        }
        "fuzz" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            fuzz::run(&args)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|sim-report|fanout-report|bench [--only scale|fastpath|staging] [--baseline REF] [--rounds N]|swarm --runs N [--seed S] [--max-nodes M] [--for-s SECS] [--json]|lab [--keep] [--json FILE]|fuzz [--minutes N] [--only TARGET]>"
            );
            bail!("unknown task {task:?}")
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace root, echoing it; fails if it fails.
fn sh(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Builds the release `entente` binary and returns its path.
fn entente_release() -> Result<PathBuf> {
    sh(
        "cargo",
        &["build", "--release", "--quiet", "-p", "entente-cli"],
    )?;
    Ok(root().join("target/release/entente"))
}

/// Runs `entente sim ARGS --json` and parses the report (exit status 0 or 1 both give a report).
fn sim_json(entente: &Path, args: &[String]) -> Result<serde_json::Value> {
    let out = Command::new(entente)
        .arg("sim")
        .args(args)
        .arg("--json")
        .output()
        .with_context(|| format!("running {}", entente.display()))?;
    if out.status.code().is_none_or(|c| c > 1) {
        bail!(
            "entente sim {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the report of entente sim {}", args.join(" ")))
}
