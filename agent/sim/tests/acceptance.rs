//! The acceptance swarm: 200 seeds, each drawing every option of a faulty run, must all
//! stay safe and converge within the liveness bound (seeds 201.. are in `swarm.rs`; determinism,
//! baselines, driver bugs and liveness have files of their own).

use entente_sim::{run, swarm, Protocol, Report};

fn explain(r: &Report) -> String {
    format!(
        "{}\n  first violation: {:?}\n  failure: {:?}",
        r.reproduce, r.first_violation, r.failure
    )
}

/// ≥ 200 seeds, each drawing every option (topology, N ≤ 64, loss, duplicates, crashes,
/// partitions, skew, drift, activation failures, corrupt chunks, budget) from its seed.
#[test]
fn swarm_of_200_seeds_is_safe_and_converges() {
    let seeds: Vec<u64> = (1..=200).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(100)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|&seed| {
                            let r = run(swarm::options(seed, 64, Protocol::Bilateral)).unwrap();
                            (!r.passed()).then(|| explain(&r))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failing runs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
