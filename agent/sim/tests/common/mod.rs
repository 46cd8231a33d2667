//! Helpers shared by the simulator's integration tests.

#![allow(dead_code)]

use entente_sim::{Report, SimConfig};

/// Runs a configuration the test expects to be valid.
pub fn run(cfg: SimConfig) -> Report {
    let command = cfg.command();
    entente_sim::run(cfg).unwrap_or_else(|e| panic!("invalid configuration {command}: {e}"))
}

/// Everything needed to reproduce and diagnose a run that went wrong.
pub fn explain(r: &Report) -> String {
    format!(
        "{}\n    violations: {}\n    first violation: {:?}\n    failure: {:?}",
        r.reproduce,
        violations(r),
        r.first_violation,
        r.failure
    )
}

/// The invariants a run violated, with counts ("agreement=3, budget=1"), or "none".
pub fn violations(r: &Report) -> String {
    let v: Vec<String> = r
        .violations_by_invariant
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Violations of one invariant (by its report name).
pub fn count(r: &Report, invariant: &str) -> u64 {
    *r.violations_by_invariant
        .get(invariant)
        .unwrap_or_else(|| panic!("no invariant named {invariant}"))
}

/// Whether a run broke the checker named `name`: a safety invariant with a violation, or the
/// liveness property (`convergence`, `resume`) it failed.
pub fn broke(r: &Report, name: &str) -> bool {
    if ["convergence", "resume"].contains(&name) {
        r.liveness == Some(name)
    } else {
        count(r, name) > 0
    }
}

/// Maps `f` over `items` on a few threads, keeping the order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
