//! What the guest runs: the setup every scenario needs (modules, network, rxe0), then each
//! scenario's steps. A scenario is files to put in the initramfs, guest steps (shell scripts,
//! each with its timeout) and a function that turns their output into its part of the report.
//!
//! Scenario A, `fastpath`: the conformance suite on the verbs backend, then latency and
//! throughput against rdma-core's and perftest's tools on the same device, interleaved, like
//! against like (two processes each, round trips, no checksum in the timed loops). A
//! measurement that fails is run once more (TCG timing swings can starve a pair's handshake);
//! the first attempt's output is kept, each line behind `| `, and ignored by the parsers.
//!
//! Scenario B, `campaign` (`campaign.rs`): the agents on RDMA.
//!
//! Scenario C, `devlink` (`devlink.rs`): the agents on netdevsim through devlink.

use super::binaries::Binaries;
use super::report::{num_after, spread};
use super::vm::Guest;
use anyhow::Result;
use serde_json::{json, Map, Value};
use std::fmt::Write;
use std::path::PathBuf;

/// The guest's address on the QEMU user network (eth0): every endpoint binds to it.
pub const GUEST_ADDR: &str = "10.0.2.15";
/// Rounds of each measurement, interleaved.
pub const ROUNDS: u32 = 5;
/// Round trips per ping-pong run.
const PP_ITERS: u32 = 1000;
/// Ping-pong sizes: (label and the baselines' message size, fastpath payload). 4 KiB is our
/// largest control frame: 4016 bytes of payload behind the 64-byte header, with its 16-byte tag.
const PP_SIZES: [(u32, u32); 2] = [(64, 64), (4096, 4016)];
/// Bulk: chunk size and chunks per run.
const BULK_CHUNK: u32 = 1 << 20;
const BULK_CHUNKS: u32 = 24;
/// Chunks of the long bulk stream (more than two credit windows of 64).
const STREAM_CHUNKS: u32 = 160;

/// A file of the host copied into the initramfs (with its shared libraries if executable).
pub struct GuestFile {
    /// On the host.
    pub src: PathBuf,
    /// In the guest (absolute).
    pub dst: String,
}

/// One step the guest runs: `/lab/steps/<name>.sh` under `timeout`.
pub struct GuestStep {
    /// Unique name (reported; names the failure).
    pub name: String,
    /// Seconds before the guest kills it.
    pub timeout_s: u32,
    /// Shell script (busybox sh; `/lab/lib.sh` is sourced first).
    pub script: String,
}

/// A scenario: files, guest steps and the parser of their results.
pub struct Scenario {
    /// Name (`fastpath`).
    pub name: &'static str,
    /// Executables it needs in the guest (with their shared libraries).
    pub files: Vec<GuestFile>,
    /// Other files it needs in the guest, copied as they are (kernel modules, profiles).
    pub data: Vec<GuestFile>,
    /// Its guest steps, in order.
    pub steps: Vec<GuestStep>,
    /// Turns the guest's output into report fields (merged into the top level).
    pub summarize: fn(&Guest) -> Result<Map<String, Value>>,
    /// Why the report fails the scenario beyond a failed step (None: it passes).
    pub check: fn(&Map<String, Value>) -> Option<String>,
}

/// Everything the guest does.
pub struct Plan {
    /// Setup steps: a failure here stops the run.
    pub setup: Vec<GuestStep>,
    /// The scenarios, in order.
    pub scenarios: Vec<Scenario>,
}

impl Plan {
    /// Every step, setup first.
    pub fn steps(&self) -> impl Iterator<Item = &GuestStep> {
        self.setup
            .iter()
            .chain(self.scenarios.iter().flat_map(|s| s.steps.iter()))
    }
}

pub fn step(name: impl Into<String>, timeout_s: u32, script: impl Into<String>) -> GuestStep {
    GuestStep {
        name: name.into(),
        timeout_s,
        script: script.into(),
    }
}

/// The guest's plan: `rounds` of each measurement; only the scenario steps whose name starts
/// with `only` (all when empty; a scenario left without steps is dropped); scenario B when
/// `campaign`; scenario C when netdevsim was built.
pub fn plan(
    bins: &Binaries,
    rounds: u32,
    only: &str,
    campaign: bool,
    netdevsim: Option<&super::netdevsim::Netdevsim>,
) -> Plan {
    let mut scenarios = vec![fastpath(bins, rounds)];
    if campaign {
        scenarios.push(super::campaign::scenario(bins));
    }
    if let Some(n) = netdevsim {
        scenarios.push(super::devlink::scenario(bins, n));
    }
    for s in &mut scenarios {
        s.steps.retain(|st| st.name.starts_with(only));
    }
    scenarios.retain(|s| !s.steps.is_empty());
    Plan {
        setup: setup(),
        scenarios,
    }
}

/// Modules (in `modules.dep` order, written to /lab/modules by the initramfs), eth0 with its
/// address, rxe0 on it, and the index of its RoCE v2 IPv4 GID (for the rdma-core tools).
fn setup() -> Vec<GuestStep> {
    vec![
        step(
            "modules",
            60,
            "for m in $(cat /lab/modules); do insmod /lib/modules/$m || exit 1; done",
        ),
        step(
            "network",
            30,
            format!(
                "ip link set lo up && ip link set eth0 up && ip addr add {GUEST_ADDR}/24 dev eth0"
            ),
        ),
        step(
            "rxe",
            30,
            "/usr/sbin/rdma link add rxe0 type rxe netdev eth0 || exit 1\n\
             info rxe_device rxe0\n\
             gid_index rxe0 || exit 1\n\
             info clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\n\
             ibv_devinfo -d rxe0 | grep -E 'state|active_mtu' ; true",
        ),
    ]
}

/// Client/server commands of one measurement (`size`: the baselines' message size).
fn measure(kind: &str, size: u32) -> (String, String) {
    let a = GUEST_ADDR;
    let perf = "/opt/lab/verbs_perf";
    match kind {
        "fastpath" if size == BULK_CHUNK => (
            format!("{perf} server {a}:7470 bulk {size} {BULK_CHUNKS}"),
            format!("{perf} client {a}:7470 bulk {size} {BULK_CHUNKS}"),
        ),
        "fastpath" => {
            let payload = PP_SIZES.iter().find(|p| p.0 == size).map_or(size, |p| p.1);
            (
                format!("{perf} server {a}:7470 pingpong"),
                format!("{perf} client {a}:7470 pingpong {payload} {PP_ITERS}"),
            )
        }
        "ibv_rc_pingpong" => {
            let s = format!("ibv_rc_pingpong -d rxe0 -g $(cat /tmp/gid) -s {size} -n {PP_ITERS}");
            (s.clone(), format!("{s} {a}"))
        }
        "ib_send_lat" => {
            let s = format!("ib_send_lat -d rxe0 -x $(cat /tmp/gid) -F -s {size} -n {PP_ITERS}");
            (s.clone(), format!("{s} {a}"))
        }
        "ib_write_bw" => {
            let s = format!("ib_write_bw -d rxe0 -x $(cat /tmp/gid) -F -s {size} -n {BULK_CHUNKS}");
            (s.clone(), format!("{s} {a}"))
        }
        _ => unreachable!("unknown measurement {kind}"),
    }
}

/// (name prefix, tool, size) of every measurement of a round.
fn measurements() -> Vec<(String, &'static str, u32)> {
    let mut m = Vec::new();
    for (size, _) in PP_SIZES {
        for tool in ["fastpath", "ibv_rc_pingpong", "ib_send_lat"] {
            m.push((format!("pp{size}-{tool}"), tool, size));
        }
    }
    for tool in ["fastpath", "ib_write_bw"] {
        m.push((format!("bulk-{tool}"), tool, BULK_CHUNK));
    }
    m
}

fn fastpath(bins: &Binaries, rounds: u32) -> Scenario {
    let mut steps = vec![step(
        "conformance",
        420,
        format!(
            "cd /tmp && ENTENTE_RDMA_ADDR={GUEST_ADDR} /opt/lab/conformance \
             --ignored --test-threads=1 verbs::"
        ),
    )];
    // A stream longer than the credit window: the sender of RDMA writes must return the
    // credits of the grants it received although its chunks carry no header.
    steps.push(step(
        "bulk-stream",
        120,
        format!(
            "once_more pair '/opt/lab/verbs_perf server {GUEST_ADDR}:7470 bulk {BULK_CHUNK} {STREAM_CHUNKS}' \
             '/opt/lab/verbs_perf client {GUEST_ADDR}:7470 bulk {BULK_CHUNK} {STREAM_CHUNKS}'"
        ),
    ));
    for round in 1..=rounds {
        for (name, tool, size) in measurements() {
            let (server, client) = measure(tool, size);
            let mut s = String::new();
            let _ = write!(s, "once_more pair '{server}' '{client}'");
            steps.push(step(format!("{name}-r{round}"), 90, s));
        }
    }
    Scenario {
        name: "fastpath",
        files: vec![
            GuestFile {
                src: bins.conformance.clone(),
                dst: "/opt/lab/conformance".into(),
            },
            GuestFile {
                src: bins.verbs_perf.clone(),
                dst: "/opt/lab/verbs_perf".into(),
            },
        ],
        data: Vec::new(),
        steps,
        summarize: summarize_fastpath,
        check: |_| None,
    }
}

/// The conformance suite's verdict from libtest's output.
fn conformance(guest: &Guest) -> Value {
    let Some(s) = guest.step("conformance") else {
        return json!({"passed": false, "error": "did not run"});
    };
    let mut tests = Map::new();
    for l in &s.out {
        if let Some(rest) = l.strip_prefix("test ") {
            if let Some((name, verdict)) = rest.split_once(" ... ") {
                tests.insert(name.to_owned(), json!(verdict.trim()));
            }
        }
    }
    let count = |v: &str| tests.values().filter(|x| *x == v).count();
    let (ok, failed) = (count("ok"), count("FAILED"));
    json!({
        "passed": s.rc == Some(0) && failed == 0 && ok > 0,
        "tests_passed": ok,
        "tests_failed": failed,
        "seconds": s.seconds,
        "tests": tests,
    })
}

/// One measurement's value from its step output (µs per round trip, or MiB/s).
fn value(tool: &str, size: u32, out: &[String]) -> Option<f64> {
    match tool {
        "fastpath" => out.iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            v["usec_per_iter"].as_f64().or(v["mib_per_sec"].as_f64())
        }),
        // "2000 iters in 0.40 seconds = 201.23 usec/iter" (a round trip per iteration)
        "ibv_rc_pingpong" => out
            .iter()
            .filter(|l| l.ends_with("usec/iter"))
            .find_map(|l| num_after(l, "seconds = ")),
        // "#bytes #iterations t_min t_max t_typical t_avg ..." one-way: double the mean
        "ib_send_lat" => perftest_row(out, size).and_then(|r| r.get(5).map(|v| v * 2.0)),
        // "#bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]" (MB = 2^20 B)
        "ib_write_bw" => perftest_row(out, size).and_then(|r| r.get(3).copied()),
        _ => None,
    }
}

/// The numbers of perftest's result row for message size `size`.
fn perftest_row(out: &[String], size: u32) -> Option<Vec<f64>> {
    out.iter().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&size.to_string().as_str()) && cols.len() >= 4)
            .then(|| cols.iter().filter_map(|c| c.parse().ok()).collect())
    })
}

/// The values of every round of one measurement; a round without a result is left out and
/// named in `missing`.
fn series(guest: &Guest, name: &str, tool: &str, size: u32, missing: &mut Vec<String>) -> Vec<f64> {
    let mut out = Vec::new();
    for s in guest.steps.iter().filter(|s| {
        s.name
            .strip_prefix(name)
            .is_some_and(|r| r.starts_with("-r"))
    }) {
        let last: Vec<String> = s
            .out
            .iter()
            .filter(|l| !l.starts_with("| "))
            .cloned()
            .collect();
        match value(tool, size, &last).filter(|_| s.rc == Some(0)) {
            Some(v) => out.push(v),
            None => missing.push(s.name.clone()),
        }
    }
    out
}

fn ratio(ours: &Value, base: &Value) -> Value {
    match (ours["median"].as_f64(), base["median"].as_f64()) {
        (Some(o), Some(b)) if b > 0.0 => json!(o / b),
        _ => Value::Null,
    }
}

fn summarize_fastpath(guest: &Guest) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    let conf = conformance(guest);
    m.insert("conformance_passed".into(), conf["passed"].clone());
    m.insert("conformance".into(), conf);
    let mut missing = Vec::new();
    let mut pp = Map::new();
    for (size, payload) in PP_SIZES {
        let m = &mut missing;
        let ours = series(guest, &format!("pp{size}-fastpath"), "fastpath", size, m);
        let ibv = series(
            guest,
            &format!("pp{size}-ibv_rc_pingpong"),
            "ibv_rc_pingpong",
            size,
            m,
        );
        let lat = series(
            guest,
            &format!("pp{size}-ib_send_lat"),
            "ib_send_lat",
            size,
            m,
        );
        let (o, i, l) = (spread(&ours), spread(&ibv), spread(&lat));
        pp.insert(
            size.to_string(),
            json!({
                "fastpath_payload_bytes": payload,
                "fastpath_rtt_us": o,
                "ibv_rc_pingpong_rtt_us": i,
                "ib_send_lat_rtt_us": l,
                "ratio": ratio(&o, &i),
                "ratio_vs_ib_send_lat": ratio(&o, &l),
            }),
        );
    }
    let headline = pp["64"]["ratio"].clone();
    pp.insert("ratio".into(), headline);
    pp.insert(
        "baseline".into(),
        json!("ibv_rc_pingpong, 64 B, round trip"),
    );
    pp.insert("iters".into(), json!(PP_ITERS));
    pp.insert("target_max_ratio".into(), json!(1.5));
    m.insert("pingpong".into(), Value::Object(pp));

    let ours = spread(&series(
        guest,
        "bulk-fastpath",
        "fastpath",
        BULK_CHUNK,
        &mut missing,
    ));
    let bw = spread(&series(
        guest,
        "bulk-ib_write_bw",
        "ib_write_bw",
        BULK_CHUNK,
        &mut missing,
    ));
    let ratio = ratio(&ours, &bw);
    m.insert(
        "bulk".into(),
        json!({
            "fastpath_mib_s": ours,
            "ib_write_bw_mib_s": bw,
            "ratio": ratio,
            "baseline": "ib_write_bw, 1 MiB messages",
            "chunk_bytes": BULK_CHUNK,
            "chunks": BULK_CHUNKS,
            "target_min_ratio": 0.7,
        }),
    );
    m.insert("measurements_failed".into(), json!(missing));
    let retried: Vec<&str> = guest
        .steps
        .iter()
        .filter(|s| s.out.iter().any(|l| l.starts_with("attempt 1 failed")))
        .map(|s| s.name.as_str())
        .collect();
    m.insert("measurements_retried".into(), json!(retried));
    Ok(m)
}
