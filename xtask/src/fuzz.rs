//! `cargo xtask fuzz [--minutes N] [--only TARGET]`: runs every cargo-fuzz target of `fuzz/` in
//! turn for N minutes each (default 1; fractions allowed), and fails if any crashes.
//!
//! Each target starts from its committed seeds, `fuzz/corpus/<target>/`, read only: what
//! libFuzzer finds goes to `target/fuzz-corpus/<target>/`, kept between runs. Its output goes to
//! `target/fuzz-logs/<target>.log`; a crashing input is saved under `fuzz/artifacts/<target>/`.
//! cargo-fuzz must be installed (`cargo install cargo-fuzz --locked`); stable Rust runs it with
//! `RUSTC_BOOTSTRAP=1`.

use crate::root;
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::process::{Command, Stdio};

/// `cargo fuzz ARGS` in the workspace root, with the nightly flags cargo-fuzz needs allowed.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("fuzz")
        .args(args)
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1");
    c
}

/// The targets `fuzz/Cargo.toml` declares, in its order.
fn targets() -> Result<Vec<String>> {
    let out = cargo_fuzz(&["list"])
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo fuzz list")?;
    ensure!(out.status.success(), "cargo fuzz list failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// What one run did, from libFuzzer's final statistics (`-print_final_stats=1`).
struct Outcome {
    executions: u64,
    per_second: u64,
    new_inputs: u64,
    crashed: bool,
}

/// The number after `key` on its line of `log`, if any.
fn stat(log: &str, key: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

/// Runs `target` for `secs` seconds.
fn run_one(target: &str, secs: u64) -> Result<Outcome> {
    let scratch = root().join("target/fuzz-corpus").join(target);
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&scratch)?;
    std::fs::create_dir_all(&logs)?;
    let seeds = root().join("fuzz/corpus").join(target);
    ensure!(
        seeds.is_dir(),
        "no seed corpus {} (cargo run --manifest-path fuzz/Cargo.toml --example seeds)",
        seeds.display()
    );
    let log_path = logs.join(format!("{target}.log"));
    let log = File::create(&log_path)?;
    let (scratch, seeds) = (scratch.display().to_string(), seeds.display().to_string());
    let max_time = format!("-max_total_time={secs}");
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {scratch} {seeds} -- {max_time} -print_final_stats=1");
    let status = cargo_fuzz(&[
        "run",
        target,
        &scratch,
        &seeds,
        "--",
        &max_time,
        "-print_final_stats=1",
    ])
    .stdout(log.try_clone()?)
    .stderr(log)
    .status()
    .context("starting cargo fuzz run")?;
    let text = std::fs::read_to_string(&log_path)?;
    let crashed = !status.success();
    if crashed {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("{}", lines[lines.len().saturating_sub(40)..].join("\n"));
        eprintln!("(whole output: {})", log_path.display());
    }
    // On a crash libFuzzer prints no final statistics; its last status line (`#N ...`) counts.
    let last_status = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok());
    Ok(Outcome {
        executions: stat(&text, "stat::number_of_executed_units:")
            .or(last_status)
            .unwrap_or(0),
        per_second: stat(&text, "stat::average_exec_per_sec:").unwrap_or(0),
        new_inputs: stat(&text, "stat::new_units_added:").unwrap_or(0),
        crashed,
    })
}

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut minutes = 1.0f64;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                let m = it.next().context("--minutes N")?;
                minutes = m
                    .parse()
                    .with_context(|| format!("--minutes {m:?}: a number of minutes"))?;
            }
            "--only" => only = Some(it.next().context("--only TARGET")?.clone()),
            other => bail!("unknown option {other:?} (--minutes N, --only TARGET)"),
        }
    }
    ensure!(
        minutes.is_finite() && minutes > 0.0,
        "--minutes {minutes}: must be more than 0"
    );
    let secs = ((minutes * 60.0).round() as u64).max(1);
    let installed = cargo_fuzz(&["--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ensure!(
        installed,
        "cargo-fuzz is not installed: cargo install cargo-fuzz --locked"
    );
    let mut targets = targets()?;
    if let Some(o) = &only {
        ensure!(
            targets.contains(o),
            "--only {o:?}: no such target (targets: {})",
            targets.join(", ")
        );
        targets.retain(|t| t == o);
    }
    // Every target in one build, so the runs that follow start at once.
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz build");
    let built = cargo_fuzz(&["build"])
        .status()
        .context("starting cargo fuzz build")?;
    ensure!(built.success(), "cargo fuzz build failed");
    let mut summary = Vec::new();
    for t in &targets {
        let o = run_one(t, secs)?;
        let line = format!(
            "{t}: {} executions in {secs} s ({}/s), {} new inputs, {} crashes",
            o.executions,
            o.per_second,
            o.new_inputs,
            u8::from(o.crashed)
        );
        eprintln!("{line}");
        summary.push((line, o.crashed));
    }
    eprintln!("\nfuzz summary ({secs} s per target):");
    for (line, _) in &summary {
        eprintln!("  {line}");
    }
    let crashed: Vec<&str> = targets
        .iter()
        .zip(&summary)
        .filter(|(_, (_, c))| *c)
        .map(|(t, _)| t.as_str())
        .collect();
    ensure!(
        crashed.is_empty(),
        "fuzz targets crashed: {} (inputs under fuzz/artifacts/)",
        crashed.join(", ")
    );
    Ok(())
}
