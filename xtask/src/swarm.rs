//! `cargo xtask swarm --runs N [--seed S] [--max-nodes M] [--for-s SECS] [--json]`: runs swarm
//! seeds S, S+1, … (each drawing every option of its run, `entente_sim::swarm::options`) on
//! every core, and prints what they found: runs, events, converged runs, violations by
//! invariant, how many seeds exercised each fault class (`classes`, `campaigns` among them: the
//! seeds that ran more than one campaign; `wipes` counts the lost stores, `campaigns_converged`
//! the campaigns that converged over every run), and the seeds that failed with the command that reproduces each. Exits 1 if any
//! run broke an invariant, failed to converge within the bound, or panicked.
//!
//! The simulator is linked in: `entente-sim` and `entente-proto` are optimised even in the dev
//! profile; `cargo run --release -p xtask -- swarm …` is faster still.

use anyhow::{bail, Context, Result};
use entente_sim::{swarm, Protocol, Report};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Options of `cargo xtask swarm`.
struct Opts {
    runs: u64,
    seed: u64,
    max_nodes: usize,
    for_s: Option<u64>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 0,
        seed: 1,
        max_nodes: 64,
        for_s: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        match a.as_str() {
            "--runs" => o.runs = value("--runs")?.parse().context("--runs")?,
            "--seed" => o.seed = value("--seed")?.parse().context("--seed")?,
            "--max-nodes" => o.max_nodes = value("--max-nodes")?.parse().context("--max-nodes")?,
            "--for-s" => o.for_s = Some(value("--for-s")?.parse().context("--for-s")?),
            "--json" => o.json = true,
            _ => bail!(
                "unknown option {a:?}; usage: cargo xtask swarm --runs N [--seed S] [--max-nodes M] [--for-s SECS] [--json]"
            ),
        }
    }
    if o.runs == 0 {
        bail!("--runs N (N > 0) is required");
    }
    if o.max_nodes < 3 {
        bail!("--max-nodes must be at least 3");
    }
    Ok(o)
}

/// What one seed gave.
enum Outcome {
    Ran(Box<Report>),
    Panicked(String),
}

/// Totals over the runs done so far.
#[derive(Default)]
struct Summary {
    runs: u64,
    events: u64,
    converged: u64,
    violations: BTreeMap<String, u64>,
    no_convergence: u64,
    panics: u64,
    failures: Vec<Value>,
    /// Seeds that exercised each fault class.
    classes: BTreeMap<&'static str, u64>,
    wipes: u64,
    /// Campaigns that converged, over every run.
    campaigns_converged: u64,
}

impl Summary {
    fn add(&mut self, seed: u64, outcome: Outcome, max_nodes: usize) {
        self.runs += 1;
        let r = match outcome {
            Outcome::Ran(r) => r,
            Outcome::Panicked(why) => {
                self.panics += 1;
                let cfg = swarm::options(seed, max_nodes, Protocol::Bilateral);
                self.failures.push(json!({
                    "seed": seed,
                    "reproduce": cfg.command(),
                    "panic": why,
                }));
                return;
            }
        };
        self.events += r.events;
        self.converged += u64::from(r.converged);
        self.wipes += r.wipes;
        self.campaigns_converged += u64::from(r.campaigns_converged);
        let cfg = swarm::options(seed, max_nodes, Protocol::Bilateral);
        for c in swarm::exercised(&cfg, &r) {
            *self.classes.entry(c).or_default() += 1;
        }
        for (k, n) in &r.violations_by_invariant {
            *self.violations.entry((*k).to_string()).or_default() += n;
        }
        if r.failure.is_some() {
            self.no_convergence += 1;
        }
        if !r.passed() {
            self.failures.push(json!({
                "seed": seed,
                "reproduce": r.reproduce,
                "first_violation": r.first_violation,
                "failure": r.failure,
            }));
        }
    }
}

/// Runs the swarm.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let start = Instant::now();
    let deadline = o.for_s.map(|s| start + Duration::from_secs(s));
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let summary = Mutex::new(Summary::default());
    let last_note = Mutex::new(Instant::now());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= o.runs {
                    break;
                }
                let seed = o.seed.wrapping_add(i);
                let outcome = run_seed(seed, o.max_nodes);
                let mut sum = summary.lock().expect("summary");
                sum.add(seed, outcome, o.max_nodes);
                let mut note = last_note.lock().expect("note");
                if note.elapsed() >= Duration::from_secs(30) {
                    *note = Instant::now();
                    eprintln!(
                        "swarm: {} runs, {} failed, {:.0} s",
                        sum.runs,
                        sum.failures.len(),
                        start.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let sum = summary.into_inner().expect("summary");
    // Seeds are taken in order and every one taken finishes, so the runs are seeds S..S+runs.
    let wall = start.elapsed().as_secs_f64();
    let report = json!({
        "runs": sum.runs,
        "seeds": [o.seed, o.seed.wrapping_add(sum.runs.saturating_sub(1))],
        "max_nodes": o.max_nodes,
        "events": sum.events,
        "converged": sum.converged,
        "violations": sum.violations,
        "no_convergence": sum.no_convergence,
        "panics": sum.panics,
        "classes": sum.classes,
        "wipes": sum.wipes,
        "campaigns_converged": sum.campaigns_converged,
        "failed": sum.failures.len(),
        "failures": sum.failures,
        "threads": threads,
        "wall_s": wall,
    });
    if o.json {
        println!("{report:#}");
    } else {
        print_text(&sum, o.seed, o.max_nodes, wall);
    }
    if !sum.failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn run_seed(seed: u64, max_nodes: usize) -> Outcome {
    let cfg = swarm::options(seed, max_nodes, Protocol::Bilateral);
    let ran = std::panic::catch_unwind(move || entente_sim::run(cfg));
    match ran {
        Ok(Ok(r)) => Outcome::Ran(Box::new(r)),
        Ok(Err(e)) => Outcome::Panicked(format!("invalid options: {e}")),
        Err(p) => Outcome::Panicked(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".into()),
        ),
    }
}

fn print_text(sum: &Summary, seed: u64, max_nodes: usize, wall: f64) {
    let last = seed.wrapping_add(sum.runs.saturating_sub(1));
    println!(
        "swarm: {} runs (seeds {seed}..={last}, at most {max_nodes} hosts), {} failed, {:.1} s",
        sum.runs,
        sum.failures.len(),
        wall
    );
    println!("events: {}", sum.events);
    println!("converged: {} of {}", sum.converged, sum.runs);
    let v: Vec<String> = sum
        .violations
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!("violations: {}", v.join(", "));
    println!(
        "no convergence: {}, panics: {}",
        sum.no_convergence, sum.panics
    );
    let c: Vec<String> = sum
        .classes
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!("seeds per fault class: {}", c.join(", "));
    println!("wipes: {}", sum.wipes);
    println!("campaigns converged: {}", sum.campaigns_converged);
    for f in &sum.failures {
        println!(
            "failed seed {}: {}",
            f["seed"],
            f["reproduce"].as_str().unwrap_or("")
        );
        for k in ["first_violation", "failure", "panic"] {
            if let Some(x) = f.get(k).filter(|x| !x.is_null()) {
                println!("    {k}: {x}");
            }
        }
    }
}
