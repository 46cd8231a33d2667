//! `entente sim`: run the deterministic simulator from the command line.

use anyhow::{Context, Result};
use clap::Args;
use entente_sim::fanout::{FanoutConfig, FanoutReport, Strategy};
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
    /// Share of the partitions that are one-way (messages flow one way, the other way they
    /// are dropped while the connection stays up).
    #[arg(long, default_value_t = 0.0)]
    one_way_share: f64,
    /// Crashes whose restart has lost the state store, per node per simulated second (fault
    /// phase); the device and its firmware stay.
    #[arg(long, default_value_t = 0.0)]
    wipe_rate: f64,
    /// Crashes during a write, which is lost, per node per simulated second (fault phase).
    #[arg(long, default_value_t = 0.0)]
    torn_rate: f64,
    /// Crashes whose restart finds the state store restored from an older copy (the one taken
    /// at the node's previous start), per node per simulated second (fault phase).
    #[arg(long, default_value_t = 0.0)]
    restore_rate: f64,
    /// Largest step of a node's wall clock, forward or back, milliseconds (steps arrive at 0.02
    /// per node per simulated second, fault phase); the protocol runs on the monotonic clock.
    #[arg(long, default_value_t = 0.0)]
    clock_step_ms: f64,
    /// Operator actions per simulated second across the cluster (fault phase): retire or
    /// restore a link, pause, resume or abort the campaign; at the end of each fault phase the
    /// operator restores every retired link and resumes.
    #[arg(long, default_value_t = 0.0)]
    operator_actions: f64,
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
    /// Campaigns, one after the other: campaign k+1 (epoch k+1, an image whose window is
    /// [k, k+1]) starts at the origin once campaign k converged; each has its own fault phase.
    #[arg(long, default_value_t = 1)]
    campaigns: u32,
    /// Campaigns 2 and 3 go back: a semantics downgrade (campaign 1's image, epoch 2 meaning
    /// what epoch 0 meant), then an image swap (the image from before campaign 1). Needs
    /// --campaigns 2 or more.
    #[arg(long)]
    downgrade: bool,
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
    /// Also simulate distributing a firmware image of this many MiB to every host (the report
    /// gains `image_all_hosts_ms` and an `image` object).
    #[arg(long, value_name = "MB")]
    image_mb: Option<u64>,
    /// How the image travels: pipeline (chunks from any neighbour that holds them, forwarded
    /// as they arrive) or pull-one (every host pulls from the seed).
    #[arg(long, default_value = "pipeline")]
    fanout: String,
    /// Per-host bandwidth for the image, each direction, Gbit/s.
    #[arg(long, default_value_t = 100.0)]
    host_gbps: f64,
    /// One-way latency of a chunk transfer, microseconds.
    #[arg(long, default_value_t = 5.0)]
    latency_us: f64,
    /// Chunk size of the image, KiB (the manifest's chunk size).
    #[arg(long, default_value_t = 1024)]
    chunk_kb: u64,
    /// Neighbours per host in the image overlay (pipeline).
    #[arg(long, default_value_t = 8)]
    fanout_degree: usize,
    /// Only simulate the image distribution (needs --image-mb).
    #[arg(long)]
    image_only: bool,
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
            one_way_share: self.one_way_share,
            wipe_rate: self.wipe_rate,
            torn_rate: self.torn_rate,
            restore_rate: self.restore_rate,
            clock_step_ms: self.clock_step_ms,
            operator_actions: self.operator_actions,
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
            campaigns: self.campaigns,
            downgrade: self.downgrade,
            ..SimConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl SimArgs {
    /// The image-distribution run the options ask for, if any.
    fn fanout(&self) -> Result<Option<FanoutConfig>> {
        let Some(mb) = self.image_mb else {
            anyhow::ensure!(!self.image_only, "--image-only needs --image-mb");
            return Ok(None);
        };
        let strategy = Strategy::parse(&self.fanout).with_context(|| {
            format!("--fanout {:?}: expected pipeline or pull-one", self.fanout)
        })?;
        anyhow::ensure!(
            (1..=1 << 20).contains(&mb),
            "--image-mb {mb}: expected 1 to 1048576"
        );
        anyhow::ensure!(
            self.host_gbps > 0.0 && self.host_gbps.is_finite(),
            "--host-gbps must be positive"
        );
        anyhow::ensure!(
            self.latency_us >= 0.0 && self.latency_us.is_finite(),
            "--latency-us must not be negative"
        );
        anyhow::ensure!(
            (4..=1 << 20).contains(&self.chunk_kb),
            "--chunk-kb {}: expected 4 to 1048576",
            self.chunk_kb
        );
        anyhow::ensure!(
            (mb << 10).div_ceil(self.chunk_kb) <= 1 << 16,
            "--image-mb {mb} in chunks of {} KiB makes more than 65536 chunks",
            self.chunk_kb
        );
        anyhow::ensure!(
            self.fanout_degree >= 1 && self.fanout_degree < self.nodes.max(2),
            "--fanout-degree must be within 1..--nodes"
        );
        Ok(Some(FanoutConfig {
            hosts: self.nodes,
            image_bytes: mb << 20,
            chunk_bytes: self.chunk_kb << 10,
            bandwidth: self.host_gbps * 1e9 / 8.0,
            latency: self.latency_us * 1e-6,
            strategy,
            degree: self.fanout_degree,
            seed: self.seed,
        }))
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
    let cfg = args
        .config()
        .map_err(|e| crate::client::Usage(format!("{e:#}")))?;
    if args.plot.is_some() && cfg.campaigns > 1 {
        return Err(crate::client::Usage(
            "--plot compares one campaign with the baselines, which simulate one campaign only: drop --campaigns".into(),
        )
        .into());
    }
    let fanout = args
        .fanout()
        .map_err(|e| crate::client::Usage(format!("{e:#}")))?;
    let image = fanout.as_ref().map(entente_sim::fanout::run);
    if args.image_only {
        let image = image.expect("checked by fanout()");
        if args.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&image_json(None, &image)?)?
            );
        } else {
            out!("{}", image_text(&image));
        }
        return Ok(ExitCode::SUCCESS);
    }
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
    match (&image, args.json) {
        (Some(i), true) => outln!(
            "{}",
            serde_json::to_string_pretty(&image_json(Some(&report), i)?)?
        ),
        (None, true) => outln!("{}", serde_json::to_string_pretty(&report)?),
        (Some(i), false) => out!("{}{}", report.text(), image_text(i)),
        (None, false) => out!("{}", report.text()),
    }
    Ok(if args.check && !report.passed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The JSON report with the image run: `image_all_hosts_ms` at the top and the details under
/// `image` (without a protocol run, only those two).
fn image_json(report: Option<&Report>, image: &FanoutReport) -> Result<serde_json::Value> {
    let mut v = match report {
        Some(r) => serde_json::to_value(r)?,
        None => serde_json::json!({}),
    };
    v["image_all_hosts_ms"] = serde_json::json!(image.image_all_hosts_ms);
    v["image"] = serde_json::to_value(image)?;
    Ok(v)
}

fn image_text(i: &FanoutReport) -> String {
    format!(
        "image: {:.0} MiB ({} chunks) to {} hosts by {}: every host holds it after {:.2} ms\n\
         image: lower bound {:.2} ms (depth {}), ratio {:.3}; busiest host sent {:.2} images\n",
        i.image_mb,
        i.chunks,
        i.hosts,
        i.strategy.name(),
        i.image_all_hosts_ms,
        i.lower_bound_ms,
        i.depth,
        i.ratio_to_bound,
        i.max_upload_images
    )
}

fn run_swarm(args: &SimArgs, runs: u64) -> Result<ExitCode> {
    let protocol =
        Protocol::parse(&args.protocol).map_err(|e| crate::client::Usage(format!("{e:#}")))?;
    let mut failed = Vec::new();
    let mut classes = std::collections::BTreeMap::<&str, u64>::new();
    let bar = ProgressBar::new(runs);
    for k in 0..runs {
        let cfg = swarm::options(args.seed + k, args.nodes, protocol);
        cfg.validate()
            .with_context(|| format!("swarm seed {}", args.seed + k))?;
        let r = World::new(cfg.clone()).run();
        for c in swarm::exercised(&cfg, &r) {
            *classes.entry(c).or_default() += 1;
        }
        if !r.passed() {
            failed.push(r);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summary = serde_json::json!({
        "runs": runs,
        "failed": failed.len(),
        "classes": classes,
        "failures": failed.iter().map(|r| serde_json::json!({
            "seed": r.seed,
            "reproduce": r.reproduce,
            "first_violation": r.first_violation,
            "failure": r.failure,
        })).collect::<Vec<_>>(),
    });
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        outln!("swarm: {} runs, {} failed", runs, failed.len());
        let c: Vec<String> = classes.iter().map(|(k, n)| format!("{k}={n}")).collect();
        outln!("seeds per fault class: {}", c.join(", "));
        for r in &failed {
            outln!("  {}", r.reproduce);
        }
    }
    Ok(if args.check && !failed.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
