//! `entente sim` end to end: the binary, its exit codes (0 pass, 1 `--check` failed, 2 bad
//! usage), its JSON contract, the plot and swarm modes, and reproducibility.

use std::process::{Command, Output};

fn entente(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args)
        .output()
        .expect("the entente binary runs")
}

fn sim(args: &str) -> Output {
    let mut all = vec!["sim"];
    all.extend(args.split_whitespace());
    entente(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", stdout(o), stderr(o)))
}

/// The report fields scripts read (a stable contract).
const FIELDS: [&str; 17] = [
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
    "wipes",
];

#[test]
fn json_check_run_passes_with_every_field() {
    let out = sim("--nodes 64 --seed 3 --json --check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    for f in FIELDS {
        assert!(v.get(f).is_some(), "field {f} missing from {v:#}");
    }
    assert_eq!(v["protocol"], "bilateral");
    assert_eq!(v["seed"], 3);
    assert_eq!(v["converged"], true);
    assert_eq!(v["safety_violations"], 0);
    assert!(v["nodes"].as_u64().unwrap() >= 64, "{}", v["nodes"]);
    assert!(v["links"].as_u64().unwrap() >= 64);
    assert!(v["rounds_to_converge"].as_f64().is_some());
    assert!(v["conv_detected_ms"].as_f64().unwrap() > 0.0);
    assert!(v["messages"].as_u64().unwrap() > 0 && v["events"].as_u64().unwrap() > 0);
    let by = v["violations_by_invariant"].as_object().unwrap();
    for inv in [
        "agreement",
        "compatibility",
        "monotonicity",
        "durability",
        "integrity",
        "budget",
    ] {
        assert_eq!(by.get(inv).and_then(|x| x.as_u64()), Some(0), "{inv}");
    }
    let hash = v["trace_hash"].as_str().unwrap();
    assert!(
        hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
}

#[test]
fn text_report_by_default() {
    let out = sim("--nodes 16 --seed 2");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.starts_with("bilateral on fat-tree"), "{s}");
    assert!(s.contains("converged: true"), "{s}");
    assert!(s.contains("safety violations: 0"), "{s}");
    assert!(
        !s.contains("reproduce:"),
        "a passing run needs no reproduction: {s}"
    );
}

#[test]
fn check_exits_1_when_fito_clock_mismatches() {
    let out = sim("--protocol fito-clock --skew-ms 5 --check");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let s = stdout(&out);
    assert!(s.contains("agreement:"), "{s}");
    assert!(
        s.contains("reproduce: entente sim --nodes 16 --topology fat-tree --protocol fito-clock"),
        "{s}"
    );
    // Without --check the same run reports and exits 0.
    let out = sim("--protocol fito-clock --skew-ms 5 --json");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert!(v["safety_violations"].as_u64().unwrap() > 0, "{v:#}");
    assert!(v["violations_by_invariant"]["agreement"].as_u64().unwrap() > 0);
}

#[test]
fn check_exits_1_when_fito_2pc_gives_up_waiting() {
    let out = sim("--protocol fito-2pc --pause-timeout-s 1 --traffic-hz 100000 --nodes 32 --check");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Bad usage exits 64 (sysexits' EX_USAGE) with a message that names the option, never a panic, and prints no
/// report.
#[test]
fn invalid_arguments_exit_64_naming_the_option() {
    for (args, names) in [
        ("--nodes 0", "--nodes"),
        ("--loss 1.5", "--loss"),
        ("--loss NaN", "--loss"),
        ("--dup -0.1", "--dup"),
        ("--dup=-0.1", "--dup"),
        ("--crash-rate -1", "--crash-rate"),
        ("--topology torus", "--topology"),
        ("--protocol paxos", "--protocol"),
        ("--max-unavailable 0", "--max-unavailable"),
        ("--max-unavailable 0%", "--max-unavailable"),
        ("--max-unavailable 150%", "--max-unavailable"),
        ("--max-unavailable abc", "--max-unavailable"),
        ("--topology fat-tree --radix 3", "--radix"),
        ("--topology random --nodes 5 --degree 3", "--degree"),
        ("--drift-ppm 5000", "--drift-ppm"),
        // clap's own parse errors
        ("--nodes abc", "--nodes"),
        ("--loss x", "--loss"),
        ("--seed -3", "--seed"),
        ("--no-such-option", "--no-such-option"),
    ] {
        let out = sim(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args}: {err}");
        assert!(
            err.contains(names),
            "{args}: message does not name {names}: {err}"
        );
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(stdout(&out).is_empty(), "{args}: printed {}", stdout(&out));
    }
    // The simulator's own validation says what is wrong, not only where.
    let err = stderr(&sim("--topology torus"));
    assert!(err.contains("torus") && err.contains("fat-tree"), "{err}");
    let err = stderr(&sim("--protocol paxos"));
    assert!(err.contains("paxos") && err.contains("bilateral"), "{err}");
}

#[test]
fn plot_draws_every_protocol() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("entente-cli-plot-{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let out = entente(&[
        "sim",
        "--nodes",
        "16",
        "--seed",
        "4",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&path).expect("the plot was written");
    let _ = std::fs::remove_file(&path);
    assert!(svg.contains("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    for p in ["bilateral", "fito-clock", "fito-2pc"] {
        assert!(svg.contains(p), "{p} missing from the plot");
    }
    // The report of the run itself is still printed.
    assert!(
        stdout(&out).starts_with("bilateral on fat-tree"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn plot_to_an_unwritable_path_is_an_error_not_a_panic() {
    let out = sim("--nodes 8 --plot /nonexistent-entente-dir/plot.svg");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent-entente-dir/plot.svg"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn swarm_summary() {
    let out = sim("--swarm 5 --nodes 16 --json");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["runs"], 5, "{v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(0));
    let out = sim("--swarm 3 --nodes 16 --seed 10 --check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("swarm: 3 runs, 0 failed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let args =
        "--nodes 32 --topology random --degree 3 --loss 0.01 --dup 0.1 --crash-rate 0.01 --json";
    let hash = |seed: u64| {
        let out = sim(&format!("{args} --seed {seed}"));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let v = json(&out);
        (
            v["trace_hash"].as_str().unwrap().to_string(),
            v["events"].as_u64().unwrap(),
            v["messages"].as_u64().unwrap(),
        )
    };
    let a = hash(5);
    assert_eq!(a, hash(5));
    assert_ne!(a.0, hash(6).0);
}

#[test]
fn help_lists_the_options() {
    let out = entente(&["sim", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let s = stdout(&out);
    for opt in [
        "--nodes",
        "--topology",
        "--loss",
        "--dup",
        "--crash-rate",
        "--max-unavailable",
        "--protocol",
        "--json",
        "--check",
        "--plot",
        "--swarm",
    ] {
        assert!(s.contains(opt), "{opt} missing from --help:\n{s}");
    }
}
