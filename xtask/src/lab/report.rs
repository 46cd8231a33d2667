//! The lab's JSON report: the guest's facts, each scenario's results, and the timings.

use super::cache::Packages;
use super::scenarios::Plan;
use super::vm::Guest;
use super::Steps;
use anyhow::Result;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// min / median / max of a series (the median of an even count is the mean of the middle two).
pub fn spread(xs: &[f64]) -> Value {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return json!({"min": null, "median": null, "max": null, "runs": []});
    }
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    json!({"min": v[0], "median": median, "max": v[n - 1], "runs": xs})
}

/// The number that follows `marker` in `line`.
pub fn num_after(line: &str, marker: &str) -> Option<f64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Builds the report.
pub fn build(
    pkgs: &Packages,
    guest: &Guest,
    plan: &Plan,
    steps: &Steps,
    started: Instant,
) -> Result<Value> {
    let mut r = Map::new();
    r.insert("kernel".into(), json!(pkgs.kernel));
    r.insert(
        "rdma_core".into(),
        json!(pkgs.version("libibverbs1").unwrap_or("?")),
    );
    r.insert(
        "perftest".into(),
        json!(pkgs.version("perftest").unwrap_or("?")),
    );
    r.insert(
        "rxe_device".into(),
        json!(guest.info.get("rxe_device").cloned()),
    );
    r.insert(
        "gid_index".into(),
        json!(guest
            .info
            .get("gid_index")
            .and_then(|g| g.parse::<u32>().ok())),
    );
    r.insert("accel".into(), json!("tcg, 2 vCPUs, 1 GiB"));
    r.insert(
        "guest_clocksource".into(),
        json!(guest.info.get("clocksource").cloned()),
    );
    for sc in &plan.scenarios {
        match (sc.summarize)(guest) {
            Ok(fields) => r.extend(fields),
            Err(e) => {
                r.insert(format!("{}_error", sc.name), json!(format!("{e:#}")));
            }
        }
    }
    r.entry("conformance_passed").or_insert(json!(false));
    let mut timings = Map::new();
    for (name, secs) in &steps.done {
        timings.insert(name.clone(), json!(round(*secs)));
    }
    timings.insert("vm_boot".into(), json!(round(guest.boot_seconds)));
    timings.insert("vm".into(), json!(round(guest.seconds)));
    timings.insert(
        "total".into(),
        json!(round(started.elapsed().as_secs_f64())),
    );
    r.insert("seconds".into(), Value::Object(timings));
    let guest_steps: Vec<Value> = guest
        .steps
        .iter()
        .map(|s| json!({"name": s.name, "status": s.rc, "seconds": round(s.seconds)}))
        .collect();
    r.insert("guest_steps".into(), Value::Array(guest_steps));
    Ok(Value::Object(r))
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A few lines for the terminal.
pub fn summary(r: &Value) -> String {
    let pp = &r["pingpong"];
    let bulk = &r["bulk"];
    let mut s = format!(
        "rxe lab on {} ({}): conformance {}",
        r["rxe_device"], r["kernel"], r["conformance_passed"]
    );
    for size in ["64", "4096"] {
        let p = &pp[size];
        if p.is_object() {
            s += &format!(
                "\n  ping-pong {size} B round trip (median µs): fastpath {:.1}, ibv_rc_pingpong {:.1}, 2×ib_send_lat {:.1}; ratio {:.2}",
                p["fastpath_rtt_us"]["median"].as_f64().unwrap_or(f64::NAN),
                p["ibv_rc_pingpong_rtt_us"]["median"].as_f64().unwrap_or(f64::NAN),
                p["ib_send_lat_rtt_us"]["median"].as_f64().unwrap_or(f64::NAN),
                p["ratio"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    if bulk.is_object() {
        s += &format!(
            "\n  bulk 1 MiB (median MiB/s): fastpath {:.1}, ib_write_bw {:.1}; ratio {:.2}",
            bulk["fastpath_mib_s"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            bulk["ib_write_bw_mib_s"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN),
            bulk["ratio"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let c = &r["campaign"];
    if c.is_object() {
        s += &format!(
            "\n  campaign: {} agents on verbs, converged {} in {} s (agent {} killed mid-campaign: {}), safety violations {}, history ok {}",
            c["nodes"], c["converged"], c["converge_seconds"], c["killed_agent"],
            c["killed_mid_campaign"], c["safety_violations"], c["history_ok"]
        );
    }
    let d = &r["devlink"];
    if d.is_object() {
        s += &format!(
            "\n  devlink (netdevsim): passed {}: inventory {}, flash_progress {}, activation {}, versions {}, link_epoch {}, flash_failure {}, activation_failure {}",
            d["passed"], d["inventory"], d["flash_progress"], d["activation"], d["versions"],
            d["link_epoch"], d["flash_failure"], d["activation_failure"]
        );
    }
    s += &format!("\n  wall time {} s", r["seconds"]["total"]);
    s
}
