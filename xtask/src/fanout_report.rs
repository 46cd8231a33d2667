//! `cargo xtask fanout-report`: regenerates `docs/bench/fanout.md`: how long until every host
//! holds a firmware image, pipelined through the cluster beside every host pulling it from one
//! server, in the simulator (up to 10,000 hosts) and with real agents on loopback; and, when
//! `target/lab.json` holds a lab run, over verbs in the rxe lab.

use crate::{entente_release, root, sim_json};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;
use std::process::Command;

/// Simulated image size, MiB, and the sizes of cluster.
const SIM_IMAGE_MB: u64 = 256;
const SIM_HOSTS: [usize; 4] = [16, 256, 4096, 10_000];
/// Loopback run: agents, image size (MiB), per-agent cap (MiB/s each way), rounds.
const AGENTS: u64 = 16;
const IMAGE_MB: u64 = 16;
const RATE: u64 = 16;
const ROUNDS: usize = 3;

/// Regenerates the report.
pub fn run() -> Result<()> {
    let entente = entente_release()?;
    crate::sh(
        "cargo",
        &["build", "--release", "--quiet", "-p", "entente-agent"],
    )?;
    let mut md = String::new();
    writeln!(md, "# Image fan-out")?;
    writeln!(md)?;
    writeln!(md, "Regenerate with `cargo xtask fanout-report` (release builds; the simulator part is deterministic, the loopback part is measured on the machine that runs it; the lab part is copied from `target/lab.json` of the last `cargo xtask lab`).")?;
    writeln!(md)?;
    simulated(&entente, &mut md)?;
    loopback(&entente, &mut md)?;
    lab(&mut md)?;
    let path = root().join("docs/bench/fanout.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn simulated(entente: &Path, md: &mut String) -> Result<()> {
    writeln!(md, "## Simulator: pipelined swarm beside pull-from-one")?;
    writeln!(md)?;
    writeln!(md, "`entente sim --nodes N --image-mb {SIM_IMAGE_MB} --fanout pipeline|pull-one --image-only` (1 MiB chunks, 100 Gbit/s per host each way, 5 µs per transfer, an overlay of 8 random neighbours per host for pipeline, a star for pull-one). The lower bound is S/B + depth × (chunk/B + latency) over the overlay used; \"busiest host\" is the most any one host sent, in images.")?;
    writeln!(md)?;
    writeln!(md, "| hosts | strategy | every host holds it (ms) | lower bound (ms) | ratio to bound | busiest host sent | pull-one / pipeline |")?;
    writeln!(md, "|---:|---|---:|---:|---:|---:|---:|")?;
    let mut targets = String::new();
    for n in SIM_HOSTS {
        let mut times = Vec::new();
        for s in ["pipeline", "pull-one"] {
            let args: Vec<String> =
                format!("--nodes {n} --image-mb {SIM_IMAGE_MB} --fanout {s} --image-only")
                    .split_whitespace()
                    .map(String::from)
                    .collect();
            let r = sim_json(entente, &args)?;
            let i = &r["image"];
            let ms = i["image_all_hosts_ms"]
                .as_f64()
                .context("image_all_hosts_ms")?;
            times.push(ms);
            let speedup = if s == "pull-one" {
                format!("**{:.0}×**", ms / times[0])
            } else {
                String::new()
            };
            writeln!(
                md,
                "| {n} | {s} | {ms:.2} | {:.2} | {:.3} | {:.2} | {speedup} |",
                i["lower_bound_ms"].as_f64().unwrap_or(f64::NAN),
                i["ratio_to_bound"].as_f64().unwrap_or(f64::NAN),
                i["max_upload_images"].as_f64().unwrap_or(f64::NAN),
            )?;
            eprintln!("sim {n} {s}: {ms:.2} ms");
            if n == 10_000 && s == "pipeline" {
                let r = i["ratio_to_bound"].as_f64().unwrap_or(f64::NAN);
                let verdict = if r <= 1.3 { "met" } else { "NOT met" };
                writeln!(
                    targets,
                    "- Within 1.3× of the lower bound at 10,000 hosts: **{r:.3}×**, {verdict}."
                )?;
            }
            if n == 256 && s == "pull-one" {
                let x = ms / times[0];
                let verdict = if x >= 5.0 { "met" } else { "NOT met" };
                writeln!(
                    targets,
                    "- At least 5× faster than pull-from-one at 256 hosts: **{x:.0}×**, {verdict}."
                )?;
            }
        }
    }
    writeln!(md)?;
    writeln!(md, "Targets (simulator):")?;
    writeln!(md)?;
    md.push_str(&targets);
    writeln!(md, "- No unverified chunk is ever written: every chunk is checked against the signed manifest before the store queues it (`Staging::write_chunk`), and again when read back to be forwarded; the end-to-end test `fanout_corrupt_source` has an agent serve corrupted chunks, and every agent still stages the right image and names the bad source in its history.")?;
    writeln!(md)?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn demo(entente: &Path, strategy: &str) -> Result<Value> {
    let out = Command::new(entente)
        .args(["demo", "--json", "--seed-links", "--fanout", strategy])
        .args(["--nodes", &AGENTS.to_string()])
        .args(["--image-mb", &IMAGE_MB.to_string()])
        .args(["--rate-mib-s", &RATE.to_string()])
        .output()
        .context("running entente demo")?;
    if !out.status.success() {
        bail!(
            "entente demo --fanout {strategy} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn loopback(entente: &Path, md: &mut String) -> Result<()> {
    writeln!(md, "## Real agents on loopback")?;
    writeln!(md)?;
    writeln!(md, "`entente demo --nodes {AGENTS} --image-mb {IMAGE_MB} --rate-mib-s {RATE} --seed-links --fanout pipeline|pull-one --json`: {AGENTS} `entented` processes over tcp, each capped at {RATE} MiB/s of image traffic each way, every agent linked to agent 1 (the seed) besides the demo's ring with chords, so both strategies have the same links; {ROUNDS} rounds, the two strategies interleaved. Time from `campaign start` until the last agent recorded the image complete in its store (every chunk verified). The cap makes the seed's uplink the bottleneck of pull-one: ({AGENTS} − 1) × {IMAGE_MB} MiB / {RATE} MiB/s = {:.1} s; a perfect pipeline needs about {IMAGE_MB}/{RATE} = {:.1} s plus a few chunk times.", (AGENTS - 1) as f64 * IMAGE_MB as f64 / RATE as f64, IMAGE_MB as f64 / RATE as f64)?;
    writeln!(md)?;
    writeln!(md, "| round | pipeline (ms) | pull-one (ms) |")?;
    writeln!(md, "|---:|---:|---:|")?;
    let (mut p, mut o) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let a = demo(entente, "pipeline")?;
        let b = demo(entente, "pull-one")?;
        for r in [&a, &b] {
            if r["converged"] != true || r["safety_violations"] != 0 {
                bail!("a demo run did not converge cleanly: {r}");
            }
        }
        let (x, y) = (
            a["image_all_hosts_ms"].as_f64().context("pipeline time")?,
            b["image_all_hosts_ms"].as_f64().context("pull-one time")?,
        );
        writeln!(md, "| {round} | {x:.0} | {y:.0} |")?;
        eprintln!("loopback round {round}: pipeline {x} ms, pull-one {y} ms");
        p.push(x);
        o.push(y);
    }
    let (mp, mo) = (median(p), median(o));
    writeln!(md, "| **median** | **{mp:.0}** | **{mo:.0}** |")?;
    writeln!(md)?;
    writeln!(
        md,
        "Pipelined fan-out is **{:.1}×** faster than pull-from-one here (ratio of medians).",
        mo / mp
    )?;
    writeln!(md)?;
    Ok(())
}

fn lab(md: &mut String) -> Result<()> {
    writeln!(md, "## Over verbs in the rxe lab")?;
    writeln!(md)?;
    let path = root().join("target/lab.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        writeln!(
            md,
            "No `target/lab.json`: run `cargo xtask lab --json target/lab.json` first."
        )?;
        return Ok(());
    };
    let lab: Value = serde_json::from_str(&text).context("target/lab.json")?;
    let f = &lab["fanout"];
    writeln!(md, "Scenario B of `cargo xtask lab` (QEMU TCG, one rxe device shared by 4 agents on their own addresses, verbs transport, an 8 MiB image in 1 MiB chunks, agent 3 killed mid-campaign and restarted): time from the campaign's start on agent 1 until each agent held the image, from the agents' histories. Under TCG these times show the path works over verbs; they are not a bandwidth figure.")?;
    writeln!(md)?;
    writeln!(
        md,
        "| agent | image complete (ms) | chunks fetched | of which written from the RDMA slot | chunks resumed |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|")?;
    for a in f["agents"].as_array().into_iter().flatten() {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            a["agent"],
            a["image_ms"],
            a["chunks_fetched"],
            a["chunks_in_place"],
            a["chunks_resumed"]
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "Every agent held the image after **{} ms**. \"Written from the RDMA slot\": chunks that went from the slot the NIC wrote them into to the disk without a copy (io_uring, O_DIRECT).",
        f["image_all_hosts_ms"]
    )?;
    writeln!(md)?;
    Ok(())
}
