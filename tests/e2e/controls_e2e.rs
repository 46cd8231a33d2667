//! Operator statements against running agents: pause, resume and abort, signed with the
//! operator key `entente demo --setup` writes, given on one agent and carried to every other;
//! and statements each agent must refuse (unknown key, expired, signed far ahead).

use entente_stage::statement::{Action, Statement};
use entente_stage::SecretKey;
use entente_tests::{entente, run, tempdir, Cluster};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// `entente campaign <action> --key <key> --epoch 1 --reason <reason>` on node `i`: its exit
/// code and stderr.
fn control(c: &Cluster, i: usize, action: &str, key: &Path, reason: &str) -> (i32, String) {
    let out = run(entente()
        .args([
            "campaign", action, "--epoch", "1", "--reason", reason, "--socket",
        ])
        .arg(c.socket(i))
        .arg("--key")
        .arg(key));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn operator_key(dir: &Path) -> PathBuf {
    dir.join("operator.key")
}

fn phase_everywhere(c: &Cluster, n: usize, phase: &str) {
    for i in 0..n {
        c.wait_status(i, LIMIT, |s| s["phase"] == phase);
    }
}

/// The kinds of node `i`'s history events, oldest first.
fn history_kinds(c: &Cluster, i: usize) -> Vec<String> {
    let out = run(entente()
        .args(["history", "--json", "--socket"])
        .arg(c.socket(i)));
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    h.as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Sends a statement line on node `i`'s control socket as it is; the agent's answer.
fn send_statement(c: &Cluster, i: usize, line: &str) -> Value {
    let mut s = UnixStream::connect(c.socket(i)).unwrap();
    let req = serde_json::json!({"api": 2, "request": {"kind": "control", "statement": line}});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An abort given before the campaign started, on one node while another is down: every node
/// halts when the campaign reaches it (the one that was down once it is back), nothing is
/// activated, and a resume lets the campaign converge.
#[test]
fn operator_abort_e2e() {
    let dir = tempdir("operator-abort");
    let mut c = Cluster::new(&dir, 5);
    c.start_all();
    c.kill(4);
    let (code, err) = control(&c, 0, "abort", &operator_key(&dir), "bad batch of cables");
    assert_eq!(code, 0, "{err}");
    c.start_seeded_campaign();
    phase_everywhere(&c, 4, "halted");
    let s = c.status(3).unwrap();
    assert_eq!(s["control"]["action"], "abort", "{s:#}");
    assert_eq!(s["control"]["reason"], "bad batch of cables", "{s:#}");
    assert!(s["control"]["key"].as_str().unwrap().len() == 16, "{s:#}");
    c.start(4);
    c.wait_status(4, LIMIT, |s| s["phase"] == "halted");
    for i in 0..5 {
        let h = history_kinds(&c, i);
        assert!(h.iter().any(|k| k == "control_applied"), "node {i}: {h:?}");
        assert!(!h.iter().any(|k| k == "activated"), "node {i}: {h:?}");
    }
    let (code, err) = control(&c, 2, "resume", &operator_key(&dir), "cables replaced");
    assert_eq!(code, 0, "{err}");
    c.wait_converged(0, LIMIT);
    let s = c.wait_status(4, LIMIT, |s| s["phase"] == "converged");
    assert_eq!(s["control"]["action"], "resume", "{s:#}");
}

/// A pause holds the campaign where it is (here: before staging, everywhere) until a resume.
#[test]
fn operator_pause_resume() {
    let dir = tempdir("operator-pause");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    let (code, err) = control(&c, 1, "pause", &operator_key(&dir), "maintenance window");
    assert_eq!(code, 0, "{err}");
    // every agent holds the pause before the campaign starts anywhere
    for i in 0..3 {
        c.wait_status(i, LIMIT, |s| s["control"]["action"] == "pause");
    }
    c.start_seeded_campaign();
    phase_everywhere(&c, 3, "announced");
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        let s = c.status(i).unwrap();
        assert_eq!(s["phase"], "announced", "node {i}: {s:#}");
        assert_eq!(s["paused"], true, "node {i}: {s:#}");
    }
    let (code, _) = control(&c, 1, "resume", &operator_key(&dir), "window over");
    assert_eq!(code, 0);
    let s = c.wait_converged(0, LIMIT);
    assert_eq!(s["paused"], false, "{s:#}");
}

/// An abort for a campaign no agent has heard of is kept, and halts the campaign on arrival.
#[test]
fn abort_before_campaign() {
    let dir = tempdir("abort-before");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    let (code, err) = control(&c, 2, "abort", &operator_key(&dir), "not today");
    assert_eq!(code, 0, "{err}");
    for i in 0..3 {
        c.wait_status(i, LIMIT, |s| s["control"]["action"] == "abort");
    }
    c.start_seeded_campaign();
    phase_everywhere(&c, 3, "halted");
}

/// A statement signed by a key no agent trusts is refused by the CLI's agent (exit 3); one
/// that a single misconfigured agent trusts and sends on is refused by its neighbours, logged,
/// and kept in their history; they do not halt.
#[test]
fn forged_control_refused() {
    let dir = tempdir("forged-control");
    let mut c = Cluster::new(&dir, 3);
    let rogue = dir.join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    SecretKey::generate()
        .unwrap()
        .write_pair(&rogue, "rogue")
        .unwrap();
    let (code, err) = {
        c.start_all();
        control(&c, 0, "abort", &rogue.join("rogue.key"), "forged")
    };
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("not a trusted operator key"), "{err}");
    // node 1 trusts the rogue key too (a misconfiguration): its neighbours refuse what it sends
    c.kill(0);
    std::fs::copy(rogue.join("rogue.pub"), dir.join("node1-operator-keys.pub")).unwrap();
    let cfg = c.agent(0, "config");
    let own = dir.join("node1-operator-keys");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::rename(dir.join("node1-operator-keys.pub"), own.join("rogue.pub")).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!(
            "trusted_operator_keys = \"{}\"",
            dir.join("operator-keys").display()
        ),
        &format!("trusted_operator_keys = \"{}\"", own.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    c.start(0);
    let (code, err) = control(&c, 0, "abort", &rogue.join("rogue.key"), "forged");
    assert_eq!(code, 0, "{err}");
    c.start_seeded_campaign();
    c.wait_status(0, LIMIT, |s| s["phase"] == "halted");
    for i in 1..3 {
        let deadline = Instant::now() + LIMIT;
        while !history_kinds(&c, i).iter().any(|k| k == "control_refused") {
            assert!(Instant::now() < deadline, "node {i}: {:?}", c.history(i));
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            c.log(i).contains("operator statement refused"),
            "{}",
            c.log(i)
        );
        let s = c.status(i).unwrap();
        assert_ne!(s["phase"], "halted", "node {i}: {s:#}");
        assert!(s["control"].is_null(), "node {i}: {s:#}");
        assert!(s["controls_refused"].as_u64() >= Some(1), "node {i}: {s:#}");
    }
}

fn signed(c: &Cluster, dir: &Path, counter: u64, expires_at: u64) -> String {
    let key = SecretKey::load(&operator_key(dir)).unwrap();
    let name = c.status(0).unwrap()["cluster"].as_str().unwrap().to_owned();
    let mut cluster = [0u8; 8];
    for (i, b) in cluster.iter_mut().enumerate() {
        *b = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap();
    }
    Statement {
        cluster,
        epoch: 1,
        action: Action::Abort,
        counter,
        expires_at,
        reason: "crafted".into(),
    }
    .sign(&key)
    .unwrap()
    .to_line()
}

fn refused_with(answer: &Value, words: &str) {
    assert_eq!(answer["outcome"], "error", "{answer:#}");
    assert_eq!(answer["code"], "refused", "{answer:#}");
    let m = answer["message"].as_str().unwrap();
    assert!(m.contains(words), "{m}");
}

/// An expired statement, signed by a trusted key, is refused.
#[test]
fn expired_control_refused() {
    let dir = tempdir("expired-control");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    let now = now_ms();
    let answer = send_statement(&c, 0, &signed(&c, &dir, now - 7_200_000, now / 1000 - 3600));
    refused_with(&answer, "expired");
    assert!(c.status(0).unwrap()["control"].is_null());
}

/// A statement signed far in the future (a counter chosen to outrank every later statement,
/// up to u64::MAX) is refused, and a later honest statement still applies.
#[test]
fn control_counter_far_ahead_refused() {
    let dir = tempdir("far-ahead-control");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    let now = now_ms();
    let day = 86_400_000;
    refused_with(
        &send_statement(
            &c,
            0,
            &signed(&c, &dir, now + day, now / 1000 + 3600 + 86_400),
        ),
        "in the future",
    );
    refused_with(
        &send_statement(&c, 0, &signed(&c, &dir, u64::MAX, u64::MAX)),
        "in the future",
    );
    let (code, err) = control(&c, 0, "abort", &operator_key(&dir), "honest");
    assert_eq!(code, 0, "{err}");
    assert_eq!(c.status(0).unwrap()["control"]["reason"], "honest");
}

/// A rollback before any link committed: every node runs its previous firmware again and its
/// window goes back with it (its links stay at the old epoch; a resume stages it again).
#[test]
fn rollback_before_commit() {
    let dir = tempdir("rollback-before");
    let mut c = Cluster::new(&dir, 2);
    // node 2's device votes no for link epoch 1: the link never moves
    let drop_in = c.agent(1, "config").with_extension("d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("30-faults.toml"),
        "[device.faults]\nrefuse_link_epoch = 1\n",
    )
    .unwrap();
    c.start_all();
    let before = c.running_version(0);
    c.start_seeded_campaign();
    phase_everywhere(&c, 2, "activated");
    assert_ne!(c.running_version(0), before);
    let (code, err) = control(&c, 1, "rollback", &operator_key(&dir), "new firmware flaps");
    assert_eq!(code, 0, "{err}");
    phase_everywhere(&c, 2, "rolled-back");
    for i in 0..2 {
        let deadline = Instant::now() + LIMIT;
        while c.running_version(i) != before {
            assert!(
                Instant::now() < deadline,
                "node {i} still runs the new firmware"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(history_kinds(&c, i).iter().any(|k| k == "rolled_back"));
        // the window went back with the device: the log names it
        assert!(
            c.log(i).contains("rolled back: the device runs"),
            "{}",
            c.log(i)
        );
        let s = c.status(i).unwrap();
        assert!(s["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["committed"] == 0));
    }
}

/// Once a link committed the campaign's epoch, a rollback is refused where it is given (exit 3),
/// naming the way back: a downgrade campaign.
#[test]
fn rollback_after_commit_refused() {
    let dir = tempdir("rollback-after");
    let mut c = Cluster::new(&dir, 2);
    c.start_all();
    c.start_seeded_campaign();
    c.wait_converged(0, LIMIT);
    let (code, err) = control(&c, 0, "rollback", &operator_key(&dir), "too late");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("downgrade"), "{err}");
    let s = c.status(0).unwrap();
    assert_eq!(s["phase"], "converged", "{s:#}");
    assert!(s["control"].is_null(), "{s:#}");
}

/// A statement signed for another cluster (one that trusts the same operator key) is refused.
#[test]
fn other_cluster_control_refused() {
    let dir = tempdir("other-cluster-control");
    let mut c = Cluster::new(&dir, 2);
    c.start(0);
    let now = now_ms();
    let line = Statement {
        cluster: [0x42; 8],
        epoch: 1,
        action: Action::Abort,
        counter: now,
        expires_at: now / 1000 + 3600,
        reason: "meant for the other cluster".into(),
    }
    .sign(&SecretKey::load(&operator_key(&dir)).unwrap())
    .unwrap()
    .to_line();
    refused_with(
        &send_statement(&c, 0, &line),
        "for cluster 4242424242424242",
    );
    let s = c.status(0).unwrap();
    assert!(s["control"].is_null(), "{s:#}");
    assert_eq!(s["operator_keys"], 1, "{s:#}");
    assert_eq!(s["cluster"].as_str().unwrap().len(), 16, "{s:#}");
}
