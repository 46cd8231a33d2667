//! Simulator throughput (`cargo bench -p entente-sim --bench sim_events`).
//!
//! * `sim_events/fat_tree_1000_hosts/wall` and `.../cpu`: whole runs of a 1000-host fat-tree with
//!   loss 0.01 and crash rate 0.001 (seed 7), the throughput in simulated events per second. `wall`
//!   is elapsed time; `cpu` is the CPU time of the benchmarking thread (the simulator is
//!   single-threaded), which is what "events/s on one core" means on a shared, loaded machine.
//! * `sim_10k`: the 10,000-host run of the project's target (`entente sim --nodes 10000 --topology
//!   fat-tree --loss 0.01 --crash-rate 0.001 --seed 7`) takes seconds, too long for criterion's
//!   ten samples, so it is measured outside criterion, in this binary, a few times (3; set
//!   `ENTENTE_BENCH_10K_REPS`), printing the median wall and CPU time and events/s. It runs only
//!   under `cargo bench` (not in `cargo test`'s quick pass), and is skipped when a name filter is
//!   given that does not match `sim_10k`.
//!
//! Timings exclude building the world (`World::new`), as the report's `wall_ms` does; `sim_10k`
//! prints the build time separately.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use entente_sim::{Report, SimConfig, TopologyKind, World};

/// The run the project's targets refer to, with `hosts` hosts.
fn target_config(hosts: usize) -> SimConfig {
    SimConfig {
        nodes: hosts,
        topology: TopologyKind::FatTree,
        loss: 0.01,
        crash_rate: 0.001,
        seed: 7,
        ..SimConfig::default()
    }
}

/// CPU time consumed by the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
}

/// One timed run: the report, its elapsed time and the thread's CPU time (if measurable).
fn timed_run(cfg: &SimConfig) -> (Report, Duration, Option<Duration>) {
    timed_run_with_build(cfg).1
}

/// [`timed_run`], and the elapsed time `World::new` took to build the cluster.
fn timed_run_with_build(cfg: &SimConfig) -> (Duration, (Report, Duration, Option<Duration>)) {
    let t = Instant::now();
    let world = World::new(cfg.clone());
    let build = t.elapsed();
    (build, run_timed(world))
}

fn run_timed(world: World) -> (Report, Duration, Option<Duration>) {
    let (c0, t0) = (thread_cpu(), Instant::now());
    let report = world.run();
    let wall = t0.elapsed();
    let cpu = match (c0, thread_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    (report, wall, cpu)
}

fn bench_1000_hosts(c: &mut Criterion) {
    let cfg = target_config(1000);
    // The run is deterministic: its event count is known before it is timed.
    let (first, _, _) = timed_run(&cfg);
    assert!(
        first.passed(),
        "the benchmarked run must pass: {}",
        first.text()
    );
    let events = first.events;
    println!(
        "sim_events/fat_tree_1000_hosts: {} nodes, {} links, {events} events per run",
        first.nodes, first.links
    );
    let cpu_ok = thread_cpu().is_some();

    let mut g = c.benchmark_group("sim_events/fat_tree_1000_hosts");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(events));
    let mut measure = |name: &str, cpu: bool| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (report, wall, used) = timed_run(&cfg);
                    assert_eq!(report.events, events, "same seed, same run");
                    black_box(&report);
                    total += if cpu { used.unwrap_or(wall) } else { wall };
                }
                total
            })
        });
    };
    measure("wall", false);
    if cpu_ok {
        measure("cpu", true);
    }
    g.finish();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether the 10k measurement should run: `cargo bench` (criterion's `--bench` flag), not a
/// listing, and no name filter, or one that `sim_10k` contains.
fn run_10k_wanted() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        return false;
    }
    // Options of criterion's command line that take a value (the value is no filter).
    const VALUED: &[&str] = &[
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--color",
        "-c",
        "--plotting-backend",
        "--output-format",
        "--format",
        "--logfile",
        "--test-threads",
        "--skip",
    ];
    let mut filters = Vec::new();
    let mut prev_valued = false;
    for a in &args {
        if !a.starts_with('-') && !prev_valued {
            filters.push(a.as_str());
        }
        prev_valued = VALUED.contains(&a.as_str());
    }
    filters.is_empty() || filters.iter().any(|f| "sim_10k".contains(f))
}

/// The 10,000-host target run, outside criterion: median of a few repetitions.
fn bench_10k_hosts() {
    if !run_10k_wanted() {
        return;
    }
    let reps: usize = std::env::var("ENTENTE_BENCH_10K_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let cfg = target_config(10_000);
    println!(
        "sim_10k: {} ({reps} runs, outside criterion)",
        cfg.command()
    );
    let (mut walls, mut cpus, mut eps_wall, mut eps_cpu) = (vec![], vec![], vec![], vec![]);
    let mut builds = vec![];
    let mut last = None;
    for i in 0..reps {
        let (build, (report, wall, cpu)) = timed_run_with_build(&cfg);
        builds.push(build.as_secs_f64());
        let w = wall.as_secs_f64();
        let line = format!(
            "  run {}: World::new {:.3} s; run: {} events, wall {:.3} s ({:.0} events/s)",
            i + 1,
            build.as_secs_f64(),
            report.events,
            w,
            report.events as f64 / w
        );
        walls.push(w);
        eps_wall.push(report.events as f64 / w);
        match cpu {
            Some(c) => {
                let c = c.as_secs_f64();
                cpus.push(c);
                eps_cpu.push(report.events as f64 / c);
                println!(
                    "{line}, cpu {c:.3} s ({:.0} events/s)",
                    report.events as f64 / c
                );
            }
            None => println!("{line}"),
        }
        if let Some(prev) = &last {
            let prev: &Report = prev;
            assert_eq!(prev.trace_hash, report.trace_hash, "same seed, same run");
        }
        last = Some(report);
    }
    let report = last.expect("at least one run");
    println!(
        "sim_10k/fat_tree_10000_hosts: {} nodes, {} links, {} events, converged {}, \
         safety violations {}",
        report.nodes, report.links, report.events, report.converged, report.safety_violations
    );
    println!(
        "sim_10k/fat_tree_10000_hosts/wall: median {:.3} s [min {:.3}, max {:.3}], \
         median {:.0} events/s",
        median(&mut walls),
        walls[0],
        walls[walls.len() - 1],
        median(&mut eps_wall)
    );
    println!(
        "sim_10k/fat_tree_10000_hosts/build: World::new median {:.3} s (not in the times above)",
        median(&mut builds)
    );
    if !cpus.is_empty() {
        println!(
            "sim_10k/fat_tree_10000_hosts/cpu:  median {:.3} s [min {:.3}, max {:.3}], \
             median {:.0} events/s",
            median(&mut cpus),
            cpus[0],
            cpus[cpus.len() - 1],
            median(&mut eps_cpu)
        );
    }
}

criterion_group!(benches, bench_1000_hosts);

fn main() {
    benches();
    bench_10k_hosts();
    Criterion::default().configure_from_args().final_summary();
}
