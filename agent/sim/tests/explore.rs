#![allow(dead_code, unused)]
use entente_sim::*;
use std::time::Instant;

#[test]
#[ignore]
fn swarm_timing() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let start: u64 = std::env::var("S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let t0 = Instant::now();
    let mut fails = 0;
    for seed in start..start + n {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        let t = Instant::now();
        let r = run(cfg.clone()).unwrap();
        let el = t.elapsed().as_millis();
        if !r.passed() || el > 300 {
            println!(
                "seed {seed} passed={} {}ms events={} sim={:.0}ms {:?} {:?} {}",
                r.passed(),
                el,
                r.events,
                r.sim_time_ms,
                r.first_violation,
                r.failure,
                r.reproduce
            );
        }
        if !r.passed() {
            fails += 1;
        }
    }
    println!("total {:?} fails {fails}", t0.elapsed());
}

fn connected(cfg: &SimConfig) -> bool {
    let mut rng = entente_proto::types::SeededRng::new(cfg.seed);
    let t = topology::Topology::build(cfg, &mut rng);
    t.bfs_parents(0).iter().skip(1).all(|p| p.is_some())
}

#[test]
#[ignore]
fn classify() {
    for seed in 1..201u64 {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        let r = run(cfg.clone()).unwrap();
        if !r.passed() {
            println!(
                "seed {seed} topo {} connected {} viol {:?} fail {:?} actfail {} crash {} dup {}",
                cfg.topology.name(),
                connected(&cfg),
                r.first_violation.map(|v| v.invariant),
                r.failure.map(|f| f[..40].to_string()),
                cfg.activation_failure,
                cfg.crash_rate,
                cfg.dup
            );
        }
    }
}

fn show(tag: &str, r: &Report) {
    println!(
        "{tag}: passed={} conv={} viol={} {:?} fail={:?} sim={:.0}ms ev={} wall={:.0}",
        r.passed(),
        r.converged,
        r.safety_violations,
        r.first_violation,
        r.failure,
        r.sim_time_ms,
        r.events,
        r.wall_ms
    );
}

#[test]
#[ignore]
fn vary() {
    for seed in [69u64, 76, 79, 80, 82, 133, 31, 121] {
        let base = swarm::options(seed, 64, Protocol::Bilateral);
        println!("== seed {seed}: {}", base.reproduce_hint());
        let vars: Vec<(&str, SimConfig)> = vec![
            ("base", base.clone()),
            (
                "noact",
                SimConfig {
                    activation_failure: 0.0,
                    ..base.clone()
                },
            ),
            (
                "nocrash",
                SimConfig {
                    crash_rate: 0.0,
                    ..base.clone()
                },
            ),
            (
                "nopart",
                SimConfig {
                    partition_rate: 0.0,
                    ..base.clone()
                },
            ),
            (
                "noloss",
                SimConfig {
                    loss: 0.0,
                    dup: 0.0,
                    ..base.clone()
                },
            ),
            (
                "onlyact",
                SimConfig {
                    loss: 0.0,
                    dup: 0.0,
                    crash_rate: 0.0,
                    partition_rate: 0.0,
                    corrupt: 0.0,
                    ..base.clone()
                },
            ),
        ];
        for (n, c) in vars {
            let r = run(c).unwrap();
            show(n, &r);
        }
    }
}
trait H {
    fn reproduce_hint(&self) -> String;
}
impl H for SimConfig {
    fn reproduce_hint(&self) -> String {
        format!("{} act {:?}", self.command(), self.activation)
    }
}

#[test]
#[ignore]
fn one() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut c = swarm::options(seed, 64, Protocol::Bilateral);
    if std::env::var("NOACT").is_ok() {
        c.activation_failure = 0.0;
    }
    if let Ok(t) = std::env::var("TL") {
        c.time_limit = t.parse::<u64>().unwrap() * 1_000_000_000;
    }
    println!("{}", c.command());
    let r = run(c).unwrap();
    show("one", &r);
}

#[test]
#[ignore]
fn filtered() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mode = std::env::var("MODE").unwrap_or_default();
    let t0 = Instant::now();
    let mut cnt = 0;
    let mut skipped = 0;
    for seed in 1..=n {
        let mut cfg = swarm::options(seed, 64, Protocol::Bilateral);
        if !connected(&cfg) {
            skipped += 1;
            continue;
        }
        if mode.contains("nocrash") {
            cfg.crash_rate = 0.0;
        }
        if mode.contains("nodup") {
            cfg.dup = 0.0;
        }
        let r = run(cfg.clone()).unwrap();
        if !r.passed() {
            cnt += 1;
            println!(
                "seed {seed} crash {} dup {} loss {} {:?} {:?}",
                cfg.crash_rate,
                cfg.dup,
                cfg.loss,
                r.first_violation
                    .map(|v| format!("{} {}", v.invariant, v.detail)),
                r.failure
            );
        }
    }
    println!("failures {cnt} skipped {skipped} {:?}", t0.elapsed());
}

#[test]
#[ignore]
fn fullswarm() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let t0 = Instant::now();
    let mut cnt = 0;
    let mut disc = 0;
    for seed in 1..=n {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        if !connected(&cfg) {
            disc += 1;
        }
        let r = run(cfg.clone()).unwrap();
        if !r.passed() {
            cnt += 1;
            println!(
                "seed {seed} crash {} dup {} loss {} {:?} {:?}",
                cfg.crash_rate,
                cfg.dup,
                cfg.loss,
                r.first_violation
                    .map(|v| format!("{} {}", v.invariant, v.detail)),
                r.failure
            );
        }
    }
    println!("failures {cnt} disconnected {disc} {:?}", t0.elapsed());
}

#[test]
#[ignore]
fn baselines_explore() {
    use entente_proto::types::SEC;
    for seed in 1..=4u64 {
        let base = SimConfig {
            nodes: 64,
            seed,
            ..SimConfig::default()
        };
        let runs = vec![
            ("bilateral", SimConfig { ..base.clone() }),
            (
                "clock5",
                SimConfig {
                    protocol: Protocol::FitoClock,
                    skew_ms: 5.0,
                    ..base.clone()
                },
            ),
            (
                "clock5short",
                SimConfig {
                    protocol: Protocol::FitoClock,
                    skew_ms: 5.0,
                    fito_switch_at: 120 * SEC,
                    ..base.clone()
                },
            ),
            (
                "2pc-1s",
                SimConfig {
                    protocol: Protocol::Fito2pc,
                    pause_timeout: SEC,
                    ..base.clone()
                },
            ),
            (
                "2pc-huge",
                SimConfig {
                    protocol: Protocol::Fito2pc,
                    pause_timeout: 1_000_000 * SEC,
                    ..base.clone()
                },
            ),
        ];
        for (n, c) in runs {
            let r = run(c).unwrap();
            println!("seed {seed} {n:12} viol {:?} conv {} blocked {:.0} mixed {:.1} sim {:.0} wall {:.0} fail {:?}", r.violations_by_invariant.iter().filter(|(_, v)| **v > 0).collect::<Vec<_>>(), r.converged, r.blocked_ms, r.mixed_state_link_ms, r.sim_time_ms, r.wall_ms, r.failure);
        }
    }
}

#[test]
#[ignore]
fn twopc_explore() {
    use entente_proto::types::SEC;
    for seed in 1..=4u64 {
        for hz in [10_000.0, 100_000.0] {
            let c = SimConfig {
                nodes: 64,
                seed,
                protocol: Protocol::Fito2pc,
                pause_timeout: SEC,
                traffic_hz: hz,
                ..SimConfig::default()
            };
            let r = run(c).unwrap();
            println!(
                "seed {seed} hz {hz} viol {:?} conv {} blocked {:.0} sim {:.0} wall {:.0} ev {}",
                r.violations_by_invariant
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .collect::<Vec<_>>(),
                r.converged,
                r.blocked_ms,
                r.sim_time_ms,
                r.wall_ms,
                r.events
            );
        }
    }
}

#[test]
#[ignore]
fn mutgrid() {
    use entente_proto::types::{MS, SEC, US};
    use entente_proto::Mutant;
    let only = std::env::var("MUT").unwrap();
    let seeds: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let m = Mutant::ALL
        .into_iter()
        .find(|m| format!("{m:?}") == only)
        .unwrap();
    let delays: Vec<u64> = std::env::var("DELAYS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![10, 1000, 50000]);
    let losses: Vec<f64> = std::env::var("LOSSES")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![0.05, 0.2]);
    let dups: Vec<f64> = std::env::var("DUPS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![0.0, 0.5]);
    let crashes: Vec<f64> = std::env::var("CRASHES")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![0.0, 0.1]);
    let parts: Vec<f64> = std::env::var("PARTS")
        .ok()
        .map(|s| s.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or(vec![0.0, 0.02]);
    let topo = std::env::var("TOPO").unwrap_or("ring".into());
    let nodes: usize = std::env::var("NODES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let tl: u64 = std::env::var("TLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    for &d in &delays {
        for &loss in &losses {
            for &dup in &dups {
                for &crash in &crashes {
                    for &part in &parts {
                        let hz = (5e6 / d as f64).min(100_000.0);
                        let c = SimConfig {
                            nodes,
                            topology: TopologyKind::parse(&topo).unwrap(),
                            degree: 3,
                            mean_delay: d * US,
                            loss,
                            dup,
                            crash_rate: crash,
                            partition_rate: part,
                            traffic_hz: hz,
                            gossip: GossipMode::Flood,
                            time_limit: tl * SEC,
                            activation: (SEC, 5 * SEC),
                            mutant: Some(m),
                            ..SimConfig::default()
                        };
                        let t = Instant::now();
                        let mut hits = Vec::new();
                        for seed in 1..=seeds {
                            let r = run(SimConfig { seed, ..c.clone() }).unwrap();
                            let v: Vec<String> = r
                                .violations_by_invariant
                                .iter()
                                .filter(|(_, v)| **v > 0)
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect();
                            hits.push(format!(
                                "s{seed}:{}{}",
                                v.join(","),
                                if r.failure.is_some() { " F" } else { "" }
                            ));
                        }
                        println!(
                            "{m:?} d{d}us loss{loss} dup{dup} crash{crash} part{part} {:?} [{}]",
                            t.elapsed(),
                            hits.join(" ")
                        );
                    }
                }
            }
        }
    }
    let _ = MS;
}

#[test]
#[ignore]
fn ctl() {
    use entente_proto::types::{SEC, US};
    for (d, loss) in [(10u64, 0.0), (10, 0.05), (50000, 0.05)] {
        let hz = (5e6 / d as f64).min(100_000.0);
        let c = SimConfig {
            nodes: 32,
            topology: TopologyKind::Ring,
            mean_delay: d * US,
            loss,
            traffic_hz: hz,
            gossip: GossipMode::Flood,
            time_limit: std::env::var("TLS")
                .map(|s| s.parse::<u64>().unwrap())
                .unwrap_or(120)
                * SEC,
            activation: (SEC, 5 * SEC),
            ..SimConfig::default()
        };
        let r = run(c).unwrap();
        show(&format!("d{d} loss{loss}"), &r);
    }
}
