//! `cargo xtask bench [--only scale|fastpath|staging] [--baseline REF] [--rounds N]`: every
//! comparison against a baseline, each regenerating its page of `docs/bench/`:
//!
//! - `scale` (`docs/bench/scale.md`): the simulator against the code of another revision;
//! - `fastpath` (`docs/bench/fastpath.md`): `benches/fastpath.rs`, against a plain `TcpStream`;
//! - `staging` (`docs/bench/staging.md`): `benches/staging.rs`, against `dd`.
//!
//! For `scale`:
//! The canonical 10,000-host run (`--loss 0.01 --crash-rate 0.001 --seed 7`) of this tree and of
//! REF (default `HEAD~1`; give the commit of the previous main), release builds, rounds
//! interleaved with the order flipped each round; medians and their ratio. Then one 100,000-host
//! campaign of this tree: wall time and peak resident memory. The goal stays 1 M simulated events
//! per second per core.

use crate::{entente_release, root, sh, sim_json};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CANONICAL: &str =
    "--nodes 10000 --topology fat-tree --loss 0.01 --crash-rate 0.001 --seed 7 --protocol bilateral";
const LARGE: &str =
    "--nodes 100000 --topology fat-tree --loss 0.01 --crash-rate 0.001 --seed 7 --protocol bilateral";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Builds the release `entente` of revision `rev` in `target/bench/` and returns its path.
fn build_revision(rev: &str) -> Result<(PathBuf, String)> {
    let out = Command::new("git")
        .args(["rev-parse", "--short", rev])
        .current_dir(root())
        .output()?;
    if !out.status.success() {
        bail!("unknown revision {rev:?}");
    }
    let short = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bench = root().join("target/bench");
    let src = bench.join(format!("src-{short}"));
    if !src.join("Cargo.toml").is_file() {
        std::fs::create_dir_all(&src)?;
        let archive = Command::new("git")
            .args(["archive", "--format=tar", &short])
            .current_dir(root())
            .output()?;
        if !archive.status.success() {
            bail!("git archive {short} failed");
        }
        let mut tar = Command::new("tar")
            .args(["-x", "-C"])
            .arg(&src)
            .stdin(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(tar.stdin.as_mut().expect("stdin"), &archive.stdout)?;
        drop(tar.stdin.take());
        if !tar.wait()?.success() {
            bail!("unpacking {short} failed");
        }
    }
    let target = bench.join("target");
    eprintln!("$ cargo build --release -p entente-cli   (revision {short})");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "-p", "entente-cli"])
        .current_dir(&src)
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        bail!("building revision {short} failed");
    }
    Ok((target.join("release/entente"), short))
}

/// Median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One run of `entente sim`: (process wall ms, the report).
fn timed(entente: &Path, args: &[String]) -> Result<(f64, Value)> {
    let t = Instant::now();
    let r = sim_json(entente, args)?;
    Ok((t.elapsed().as_secs_f64() * 1e3, r))
}

/// Peak resident memory of the largest child this process waited for, MiB.
fn children_peak_rss_mib() -> Result<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    Ok(u.max_rss() as f64 / 1024.0)
}

/// Runs the task.
pub fn run(args: &[String]) -> Result<()> {
    let mut baseline = "HEAD~1".to_owned();
    let mut rounds = 5usize;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--baseline" => baseline = it.next().context("--baseline REF")?.clone(),
            "--rounds" => rounds = it.next().context("--rounds N")?.parse()?,
            "--only" => only = Some(it.next().context("--only scale|fastpath|staging")?.clone()),
            other => bail!(
                "unknown option {other:?} (--only scale|fastpath|staging, --baseline REF, --rounds N)"
            ),
        }
    }
    let want = |what: &str| only.as_deref().is_none_or(|o| o == what);
    if let Some(o) = &only {
        if !["scale", "fastpath", "staging"].contains(&o.as_str()) {
            bail!("--only {o:?}: scale, fastpath or staging");
        }
    }
    if want("fastpath") {
        std::env::set_var("FASTPATH_REPORT", "docs/bench/fastpath.md");
        sh(
            "cargo",
            &["bench", "-p", "entente-benches", "--bench", "fastpath"],
        )?;
    }
    if want("staging") {
        sh(
            "cargo",
            &["build", "--release", "-p", "entente-stage", "--bins"],
        )?;
        std::env::set_var("ENTENTE_BENCH_REPORT", "1");
        sh(
            "cargo",
            &["bench", "-p", "entente-benches", "--bench", "staging"],
        )?;
    }
    if want("scale") {
        scale(&baseline, rounds)?;
    }
    Ok(())
}

/// The simulator against revision `baseline`, and at 100,000 hosts.
fn scale(baseline: &str, rounds: usize) -> Result<()> {
    let here = entente_release()?;
    let (base, short) = build_revision(baseline)?;
    let canonical = words(CANONICAL);
    let (mut here_ms, mut base_ms) = (Vec::new(), Vec::new());
    let mut events = 0u64;
    for round in 0..rounds {
        let order: [(&Path, bool); 2] = if round % 2 == 0 {
            [(&here, true), (&base, false)]
        } else {
            [(&base, false), (&here, true)]
        };
        for (bin, mine) in order {
            let (ms, r) = timed(bin, &canonical)?;
            if r["converged"] != true || r["safety_violations"] != 0 {
                bail!("the canonical run failed ({}): {r}", bin.display());
            }
            if mine {
                events = r["events"].as_u64().unwrap_or(0);
                here_ms.push(ms);
            } else {
                base_ms.push(ms);
            }
        }
    }
    let (h, b) = (median(&mut here_ms), median(&mut base_ms));
    eprintln!(
        "canonical 10k: this tree {h:.0} ms, {short} {b:.0} ms, ratio {:.3}",
        h / b
    );
    let (large_ms, large) = timed(&here, &words(LARGE))?;
    let rss = children_peak_rss_mib()?;
    eprintln!(
        "100k hosts: {large_ms:.0} ms, peak RSS {rss:.0} MiB, converged {}",
        large["converged"]
    );
    let mut md = String::new();
    writeln!(md, "# Simulator scale, against the previous code")?;
    writeln!(md)?;
    writeln!(md, "Regenerate: `cargo xtask bench --baseline REF` (release builds of this tree and of REF; REF defaults to `HEAD~1`).")?;
    writeln!(md)?;
    writeln!(md, "The canonical run `entente sim {CANONICAL}`, {rounds} rounds, this tree and the baseline interleaved (the order flipped each round), process wall time, medians. Machine: 2 vCPUs of a shared VM, other work running: compare the ratio, not the figures across runs.")?;
    writeln!(md)?;
    writeln!(md, "| build | median wall | events | events/s |")?;
    writeln!(md, "|---|---|---|---|")?;
    writeln!(
        md,
        "| this tree | {h:.0} ms | {events} | {:.2} M |",
        events as f64 / h / 1e3
    )?;
    writeln!(md, "| baseline `{short}` | {b:.0} ms | | |")?;
    writeln!(md)?;
    writeln!(md, "Ratio (this tree / baseline): **{:.3}**.", h / b)?;
    writeln!(md)?;
    writeln!(md, "## 100,000 hosts")?;
    writeln!(md)?;
    writeln!(md, "`entente sim {LARGE}`, this tree, one run:")?;
    writeln!(md)?;
    writeln!(
        md,
        "| converged | safety violations | simulated events | wall | peak RSS | events/s |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let ev = large["events"].as_u64().unwrap_or(0);
    writeln!(
        md,
        "| {} | {} | {ev} | {:.1} s | {rss:.0} MiB | {:.2} M |",
        large["converged"],
        large["safety_violations"],
        large_ms / 1e3,
        ev as f64 / large_ms / 1e3
    )?;
    let path = root().join("docs/bench/scale.md");
    std::fs::write(&path, md)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
