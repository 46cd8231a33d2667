//! `cargo xtask sim-report`: regenerates `docs/sim-report.md` from release-build runs of
//! `entente sim` (bilateral beside the FITO baselines, and the "atomic flip becomes
//! exponentially rare" experiment with its exponential fit).

use crate::{entente_release, root, sim_json};
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

const PROTOCOLS: [&str; 3] = ["bilateral", "fito-clock", "fito-2pc"];
const PROFILES: [(&str, &str); 4] = [
    ("none", ""),
    ("loss 1 %", "--loss 0.01"),
    ("crash 0.1 %", "--crash-rate 0.001"),
    ("partition", "--partition-rate 0.001"),
];

/// Heading of the hand-kept section of long swarm runs, which regeneration preserves.
const SWARM_SECTION: &str = "## Long swarm runs";

/// Seeds per cell of the comparison table, by cluster size.
fn seeds_for(n: usize) -> u64 {
    match n {
        0..=64 => 8,
        65..=512 => 4,
        _ => 2,
    }
}

/// Regenerates the report.
pub fn run() -> Result<()> {
    let entente = entente_release()?;
    let mut md = String::new();
    writeln!(md, "# Simulator report")?;
    writeln!(md)?;
    writeln!(md, "Regenerate with `cargo xtask sim-report` (release build of `entente sim`; every run is reproducible from its seed).")?;
    writeln!(md)?;
    comparison(&entente, &mut md)?;
    atomic_flip(&entente, &mut md)?;
    let path = root().join("docs/sim-report.md");
    // The swarm section records long `cargo xtask swarm` runs by hand: keep it.
    if let Ok(old) = std::fs::read_to_string(&path) {
        if let Some(at) = old.find(SWARM_SECTION) {
            writeln!(md)?;
            md.push_str(&old[at..]);
        }
    }
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// Bilateral beside the baselines: N × protocol × fault profile.
fn comparison(entente: &Path, md: &mut String) -> Result<()> {
    writeln!(md, "## Bilateral convergence beside the FITO baselines")?;
    writeln!(md)?;
    writeln!(md, "Fat-tree (radix 32), default options otherwise (1 ms skew, 50 ppm drift, 1 kHz data per link direction, 60 s fault phase then healing). Converged: runs where every link committed and the liveness bound held. Rounds: median over converged runs of the time from the last activation to convergence, in RTTs (for fito-clock that is mostly the wait for its switch time T, one hour after the start). Violations: total over the runs. Mixed-state and blocked times: medians, summed over links / link directions, in ms.")?;
    writeln!(md)?;
    writeln!(md, "| hosts | faults | protocol | runs | converged | median rounds | violations | mixed-state ms | blocked ms |")?;
    writeln!(md, "|---:|---|---|---:|---:|---:|---:|---:|---:|")?;
    for n in [16usize, 256, 4096] {
        for (name, extra) in PROFILES {
            for p in PROTOCOLS {
                let runs = seeds_for(n);
                let mut reports = Vec::new();
                for seed in 1..=runs {
                    let a = args(&format!(
                        "--nodes {n} --topology fat-tree --protocol {p} --seed {seed} {extra}"
                    ));
                    reports.push(sim_json(entente, &a)?);
                }
                let ok = reports
                    .iter()
                    .filter(|r| r["converged"] == true && r["failure"].is_null())
                    .count();
                let rounds = median(
                    reports
                        .iter()
                        .filter_map(|r| r["rounds_to_converge"].as_f64())
                        .collect(),
                );
                let violations: u64 = reports
                    .iter()
                    .filter_map(|r| r["safety_violations"].as_u64())
                    .sum();
                let mixed = median(
                    reports
                        .iter()
                        .filter_map(|r| r["mixed_state_link_ms"].as_f64())
                        .collect(),
                );
                let blocked = median(
                    reports
                        .iter()
                        .filter_map(|r| r["blocked_ms"].as_f64())
                        .collect(),
                );
                writeln!(
                    md,
                    "| {n} | {name} | {p} | {runs} | {:.0} % | {} | {violations} | {} | {} |",
                    100.0 * ok as f64 / runs as f64,
                    fmt_opt(rounds, 2),
                    fmt_opt(mixed, 3),
                    fmt_opt(blocked, 1),
                )?;
                eprintln!("{n} {name} {p}: {ok}/{runs} converged, {violations} violations");
            }
        }
    }
    writeln!(md)?;
    Ok(())
}

/// The fraction of fito-clock runs with no violation at all, against cluster size, with an
/// exponential fit `fraction ≈ exp(a + b·N)`.
fn atomic_flip(entente: &Path, md: &mut String) -> Result<()> {
    const SEEDS: u64 = 40;
    let sizes: Vec<usize> = (2..=64).step_by(2).collect();
    writeln!(md, "## An \"atomic\" flip becomes exponentially rare")?;
    writeln!(md)?;
    writeln!(md, "fito-clock on a ring of N hosts (N links), 1 ms clock skew, no drift, switch at T = 1 h (after every activation), 10 Hz data per link direction, no faults, {SEEDS} seeds per N: the fraction of runs in which not one data message was interpreted under another epoch than its sender's.")?;
    writeln!(md)?;
    let mut points = Vec::new();
    let mut rows = String::new();
    for &n in &sizes {
        let mut clean = 0;
        for seed in 1..=SEEDS {
            let a = args(&format!("--nodes {n} --topology ring --protocol fito-clock --skew-ms 1 --drift-ppm 0 --traffic-hz 10 --seed {seed}"));
            let r: Value = sim_json(entente, &a)?;
            if r["safety_violations"] == 0 {
                clean += 1;
            }
        }
        let frac = clean as f64 / SEEDS as f64;
        writeln!(rows, "| {n} | {clean} / {SEEDS} | {frac:.3} |")?;
        if clean > 0 {
            points.push((n as f64, frac.ln()));
        }
        eprintln!("fito-clock ring {n}: {clean}/{SEEDS} clean");
    }
    let (a, b, r2) = fit(&points);
    writeln!(md, "Least-squares fit of ln(fraction) against N over the {} sizes with at least one clean run: **fraction ≈ exp({a:.3} {} {:.4}·N)**, R² = **{r2:.3}** (each additional link multiplies the chance of a clean flip by {:.4}).", points.len(), if b < 0.0 { "−" } else { "+" }, b.abs(), b.exp())?;
    writeln!(md)?;
    writeln!(md, "| N | clean runs | fraction |")?;
    writeln!(md, "|---:|---:|---:|")?;
    md.push_str(&rows);
    writeln!(md)?;
    Ok(())
}

/// Ordinary least squares y = a + b·x; returns (a, b, R²).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    if n < 2.0 {
        return (0.0, 0.0, 0.0);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let a = my - b * mx;
    let ss_tot: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = points.iter().map(|p| (p.1 - a - b * p.0).powi(2)).sum();
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    (a, b, r2)
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_recovers_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 1.0 - 0.5 * x as f64)).collect();
        let (a, b, r2) = fit(&pts);
        assert!((a - 1.0).abs() < 1e-9 && (b + 0.5).abs() < 1e-9 && (r2 - 1.0).abs() < 1e-9);
    }
}
