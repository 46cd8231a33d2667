#![allow(dead_code, unused)]
use entente_sim::*;
use std::time::Instant;

#[test]
#[ignore]
fn swarm_timing() {
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let start: u64 = std::env::var("S").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let t0 = Instant::now();
    let mut fails = 0;
    for seed in start..start + n {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        let t = Instant::now();
        let r = run(cfg.clone()).unwrap();
        let el = t.elapsed().as_millis();
        if !r.passed() || el > 300 {
            println!("seed {seed} passed={} {}ms events={} sim={:.0}ms {:?} {:?} {}", r.passed(), el, r.events, r.sim_time_ms, r.first_violation, r.failure, r.reproduce);
        }
        if !r.passed() { fails += 1; }
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
            println!("seed {seed} topo {} connected {} viol {:?} fail {:?} actfail {} crash {} dup {}", cfg.topology.name(), connected(&cfg), r.first_violation.map(|v| v.invariant), r.failure.map(|f| f[..40].to_string()), cfg.activation_failure, cfg.crash_rate, cfg.dup);
        }
    }
}

fn show(tag: &str, r: &Report) {
    println!("{tag}: passed={} conv={} viol={} {:?} fail={:?} sim={:.0}ms ev={} wall={:.0}", r.passed(), r.converged, r.safety_violations, r.first_violation, r.failure, r.sim_time_ms, r.events, r.wall_ms);
}

#[test]
#[ignore]
fn vary() {
    for seed in [69u64, 76, 79, 80, 82, 133, 31, 121] {
        let base = swarm::options(seed, 64, Protocol::Bilateral);
        println!("== seed {seed}: {}", base.reproduce_hint());
        let vars: Vec<(&str, SimConfig)> = vec![
            ("base", base.clone()),
            ("noact", SimConfig { activation_failure: 0.0, ..base.clone() }),
            ("nocrash", SimConfig { crash_rate: 0.0, ..base.clone() }),
            ("nopart", SimConfig { partition_rate: 0.0, ..base.clone() }),
            ("noloss", SimConfig { loss: 0.0, dup: 0.0, ..base.clone() }),
            ("onlyact", SimConfig { loss: 0.0, dup: 0.0, crash_rate: 0.0, partition_rate: 0.0, corrupt: 0.0, ..base.clone() }),
        ];
        for (n, c) in vars {
            let r = run(c).unwrap();
            show(n, &r);
        }
    }
}
trait H { fn reproduce_hint(&self) -> String; }
impl H for SimConfig { fn reproduce_hint(&self) -> String { format!("{} act {:?}", self.command(), self.activation) } }

#[test]
#[ignore]
fn one() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut c = swarm::options(seed, 64, Protocol::Bilateral);
    if std::env::var("NOACT").is_ok() { c.activation_failure = 0.0; }
    if let Ok(t) = std::env::var("TL") { c.time_limit = t.parse::<u64>().unwrap() * 1_000_000_000; }
    println!("{}", c.command());
    let r = run(c).unwrap();
    show("one", &r);
}

#[test]
#[ignore]
fn filtered() {
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let mode = std::env::var("MODE").unwrap_or_default();
    let t0 = Instant::now();
    let mut cnt = 0; let mut skipped = 0;
    for seed in 1..=n {
        let mut cfg = swarm::options(seed, 64, Protocol::Bilateral);
        if !connected(&cfg) { skipped += 1; continue; }
        if mode.contains("nocrash") { cfg.crash_rate = 0.0; }
        if mode.contains("nodup") { cfg.dup = 0.0; }
        let r = run(cfg.clone()).unwrap();
        if !r.passed() {
            cnt += 1;
            println!("seed {seed} crash {} dup {} loss {} {:?} {:?}", cfg.crash_rate, cfg.dup, cfg.loss, r.first_violation.map(|v| format!("{} {}", v.invariant, v.detail)), r.failure);
        }
    }
    println!("failures {cnt} skipped {skipped} {:?}", t0.elapsed());
}

#[test]
#[ignore]
fn fullswarm() {
    let n: u64 = std::env::var("N").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let t0 = Instant::now();
    let mut cnt = 0; let mut disc = 0;
    for seed in 1..=n {
        let cfg = swarm::options(seed, 64, Protocol::Bilateral);
        if !connected(&cfg) { disc += 1; }
        let r = run(cfg.clone()).unwrap();
        if !r.passed() {
            cnt += 1;
            println!("seed {seed} crash {} dup {} loss {} {:?} {:?}", cfg.crash_rate, cfg.dup, cfg.loss, r.first_violation.map(|v| format!("{} {}", v.invariant, v.detail)), r.failure);
        }
    }
    println!("failures {cnt} disconnected {disc} {:?}", t0.elapsed());
}
