//! `entente sim` end to end, through the binary an operator runs.

use std::process::{Command, Output};

fn entente(args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args.split_whitespace())
        .output()
        .expect("run entente")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn json_report_has_every_field_and_check_passes() {
    let out = entente("sim --nodes 64 --seed 3 --json --check");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for field in [
        "protocol",
        "nodes",
        "links",
        "seed",
        "converged",
        "rounds_to_converge",
        "conv_detected_ms",
        "sim_time_ms",
        "messages",
        "safety_violations",
        "violations_by_invariant",
        "mixed_state_link_ms",
        "blocked_ms",
        "trace_hash",
        "events",
        "wall_ms",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["converged"], true);
    assert_eq!(v["safety_violations"], 0);
    let again = entente("sim --nodes 64 --seed 3 --json");
    let w: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["trace_hash"], w["trace_hash"]);
}

#[test]
fn check_fails_on_a_fito_clock_violation() {
    let out = entente("sim --nodes 64 --seed 3 --protocol fito-clock --skew-ms 5 --check");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("reproduce: entente sim"));
}

#[test]
fn invalid_arguments_are_refused_with_the_option_named() {
    for (args, needle) in [
        ("sim --nodes 0", "--nodes"),
        ("sim --loss 1.5", "--loss"),
        ("sim --dup -0.1", "dup"),
        ("sim --topology torus", "torus"),
        ("sim --protocol paxos", "paxos"),
        ("sim --max-unavailable 0", "--max-unavailable"),
        ("sim --max-unavailable abc", "--max-unavailable"),
        ("sim --crash-rate -1", "crash-rate"),
    ] {
        let out = entente(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args}: {err}");
        assert!(err.contains(needle), "{args}: {err}");
        assert!(!err.contains("panicked"), "{args}: {err}");
    }
}

#[test]
fn plot_draws_bilateral_beside_the_baselines() {
    let path = std::env::temp_dir().join(format!("entente-plot-{}.svg", std::process::id()));
    let out = entente(&format!(
        "sim --nodes 16 --seed 2 --plot {}",
        path.display()
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let svg = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(svg.starts_with("<svg"));
    for p in ["bilateral", "fito-clock", "fito-2pc"] {
        assert!(svg.contains(p), "{p} missing from the plot");
    }
}

#[test]
fn swarm_summarises_its_runs() {
    let out = entente("sim --swarm 5 --nodes 16 --json --check");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], 5);
    assert_eq!(v["failed"], 0);
}
