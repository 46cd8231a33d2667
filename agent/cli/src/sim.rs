//! `entente sim`: run the deterministic simulator from the command line.

use anyhow::{Context, Result};
use clap::Args;
use entente_sim::{swarm, Budget, Protocol, Report, SimConfig, TopologyKind, World};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Options of `entente sim` (units and defaults: docs/protocol.md, "Simulator").
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct SimArgs {
    /// Hosts in the cluster (fat-tree adds its switches).
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Peer graph: fat-tree, ring or random.
    #[arg(long, default_value = "fat-tree")]
    topology: String,
    /// Fat-tree switch radix.
    #[arg(long, default_value_t = 32)]
    radix: usize,
    /// Degree of the random regular graph.
    #[arg(long, default_value_t = 4)]
    degree: usize,
    /// Probability that a message breaks its connection.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a control message delivered before a break is delivered again.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Crashes per node per simulated second (fault phase).
    #[arg(long, default_value_t = 0.0)]
    crash_rate: f64,
    /// Partitions per node per simulated second (fault phase).
    #[arg(long, default_value_t = 0.0)]
    partition_rate: f64,
    /// Largest clock offset, milliseconds.
    #[arg(long, default_value_t = 1.0)]
    skew_ms: f64,
    /// Largest clock rate error, parts per million.
    #[arg(long, default_value_t = 50.0)]
    drift_ppm: f64,
    /// Data messages per second per link direction.
    #[arg(long, default_value_t = 1000.0)]
    traffic_hz: f64,
    /// Probability that an activation fails (fault phase).
    #[arg(long, default_value_t = 0.0)]
    activation_failure: f64,
    /// Probability that a fetched chunk is corrupt (fault phase).
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Most neighbours of a node in a disruptive activation at once: a count (4) or a
    /// percentage of the node's neighbours (25%).
    #[arg(long, default_value = "25%")]
    max_unavailable: String,
    /// Longest activation (flash + reset), seconds; activations take 1 s to this, uniformly.
    #[arg(long, default_value_t = 30)]
    activation_max_s: u64,
    /// fito-clock: the switch time T, seconds after the campaign starts.
    #[arg(long, default_value_t = 3600)]
    fito_switch_s: u64,
    /// fito-2pc: a paused node resumes traffic on its own after this many seconds.
    #[arg(long, default_value_t = 30)]
    pause_timeout_s: u64,
    /// The seed: same seed and options, same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// bilateral, fito-clock or fito-2pc.
    #[arg(long, default_value = "bilateral")]
    protocol: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit non-zero on a safety violation or no convergence.
    #[arg(long)]
    check: bool,
    /// Draw the committed-link fraction over time, bilateral beside the baselines (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Swarm mode: this many runs, each with every option drawn from its seed (seed, seed+1, ...);
    /// --nodes bounds the cluster size.
    #[arg(long, value_name = "RUNS")]
    swarm: Option<u64>,
}

impl SimArgs {
    fn config(&self) -> Result<SimConfig> {
        let cfg = SimConfig {
            nodes: self.nodes,
            topology: TopologyKind::parse(&self.topology)?,
            radix: self.radix,
            degree: self.degree,
            loss: self.loss,
            dup: self.dup,
            crash_rate: self.crash_rate,
            partition_rate: self.partition_rate,
            skew_ms: self.skew_ms,
            drift_ppm: self.drift_ppm,
            traffic_hz: self.traffic_hz,
            activation_failure: self.activation_failure,
            corrupt: self.corrupt,
            max_unavailable: Budget::parse(&self.max_unavailable)?,
            activation: (
                entente_proto::types::SEC,
                self.activation_max_s
                    .max(1)
                    .saturating_mul(entente_proto::types::SEC),
            ),
            fito_switch_at: self.fito_switch_s.saturating_mul(entente_proto::types::SEC),
            pause_timeout: self
                .pause_timeout_s
                .saturating_mul(entente_proto::types::SEC),
            seed: self.seed,
            protocol: Protocol::parse(&self.protocol)?,
            ..SimConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs one simulation with a progress bar on stderr when it lasts more than a second.
fn simulate(cfg: SimConfig, label: &str) -> Report {
    let started = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    let label = label.to_string();
    let report = World::new(cfg).run_with(&mut |p| {
        if bar.is_none() && started.elapsed() > Duration::from_secs(1) {
            let b = ProgressBar::new(1000);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {percent}% links committed, {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            b.set_prefix(label.clone());
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position((p.committed * 1000.0) as u64);
            b.set_message(format!(
                "{:.1} s simulated, {} events",
                p.sim_ms / 1000.0,
                p.events
            ));
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report
}

/// `entente sim`.
pub fn run(args: SimArgs) -> Result<ExitCode> {
    if let Some(runs) = args.swarm {
        return run_swarm(&args, runs);
    }
    let cfg = args.config()?;
    let report = simulate(cfg.clone(), cfg.protocol.name());
    if let Some(path) = &args.plot {
        let mut others = Vec::new();
        for p in Protocol::ALL {
            if p != cfg.protocol {
                others.push(simulate(
                    SimConfig {
                        protocol: p,
                        ..cfg.clone()
                    },
                    p.name(),
                ));
            }
        }
        let mut all: Vec<&Report> = vec![&report];
        all.extend(others.iter());
        std::fs::write(path, entente_sim::plot::svg(&all))
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if args.check && !report.passed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_swarm(args: &SimArgs, runs: u64) -> Result<ExitCode> {
    let protocol = Protocol::parse(&args.protocol)?;
    let mut failed = Vec::new();
    let bar = ProgressBar::new(runs);
    for k in 0..runs {
        let cfg = swarm::options(args.seed + k, args.nodes, protocol);
        cfg.validate()
            .with_context(|| format!("swarm seed {}", args.seed + k))?;
        let r = World::new(cfg).run();
        if !r.passed() {
            failed.push(r);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = serde_json::json!({
        "runs": runs,
        "failed": failed.len(),
        "failures": failed.iter().map(|r| serde_json::json!({
            "seed": r.seed,
            "reproduce": r.reproduce,
            "first_violation": r.first_violation,
            "failure": r.failure,
        })).collect::<Vec<_>>(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("swarm: {} runs, {} failed", runs, failed.len());
        for r in &failed {
            println!("  {}", r.reproduce);
        }
    }
    Ok(if args.check && !failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
