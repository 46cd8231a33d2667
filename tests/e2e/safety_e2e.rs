//! Safety of the running agent after lost or restored state stores, refused manifests,
//! oversized images and crashes of a campaign's origin: real `entented` processes on loopback.

use entente_tests::{run, sign_campaign, tempdir, trusted_signer, Cluster};
use serde_json::Value;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(3);
const LIMIT: Duration = Duration::from_secs(60);

/// A 3-node cluster (a triangle) that converged to the demo campaign's epoch 1.
fn converged_cluster(name: &str) -> (std::path::PathBuf, Cluster) {
    let dir = tempdir(name);
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    c.start_seeded_campaign();
    c.wait_converged(0, Duration::from_secs(90));
    (dir, c)
}

/// Every link of `s` is connected, agreed (not fresh, incompatible or lagging), and committed
/// at `epoch`.
fn links_at(s: &Value, epoch: u64) -> bool {
    let links = s["links"].as_array().unwrap();
    !links.is_empty()
        && links
            .iter()
            .all(|l| l["connected"] == true && l["committed"] == epoch && l["state"] == "idle")
}

/// No node counted a probe read under another epoch than its sender's, none logged SAFETY.
fn assert_no_mismatch(c: &Cluster, nodes: usize) {
    std::thread::sleep(SETTLE);
    for i in 0..nodes {
        let s = c.status(i).unwrap();
        assert_eq!(s["probe_mismatches"], 0, "node {i}: {s:#}");
        assert!(!c.log(i).contains("SAFETY"), "node {i}:\n{}", c.log(i));
    }
}

#[test]
fn state_loss_one_end() {
    let (_dir, mut c) = converged_cluster("state-loss");
    c.kill(2);
    c.wipe_state(2);
    c.start(2);
    c.wait_status(2, LIMIT, |s| links_at(s, 1) && s["converged"] == true);
    assert_no_mismatch(&c, 3);
    for i in 0..3 {
        assert!(links_at(&c.status(i).unwrap(), 1), "node {i}");
    }
    assert!(
        c.log(2).contains("state store"),
        "the wiped node did not say its store was lost:\n{}",
        c.log(2)
    );
}

#[test]
fn state_loss_one_end_incompatible_device() {
    let (_dir, mut c) = converged_cluster("state-loss-incompatible");
    c.kill(2);
    c.wipe_state(2);
    // The device went back to its factory firmware behind the agent's back: it speaks epoch 0
    // only, so it cannot carry the links' committed epoch 1.
    let dev = c.data_dir(2).join("device/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&dev).unwrap()).unwrap();
    let comp = state["components"]["nic-fw"].as_object_mut().unwrap();
    let active = comp["active"].as_str().unwrap().to_owned();
    let other = if active == "a" { "b" } else { "a" };
    assert!(
        comp[other]["version"].as_str().unwrap().contains("factory")
            || comp[other]["version"] != comp[&active]["version"]
    );
    comp.insert("active".into(), Value::from(other));
    comp.insert("pending".into(), Value::from(false));
    std::fs::write(&dev, serde_json::to_vec(&state).unwrap()).unwrap();
    // Its activations fail for now: it cannot get back to the campaign's firmware by itself.
    drop_in(
        &c,
        2,
        "30-faults.toml",
        "[device.faults]\nactivation_failure = true\n",
    );
    c.start(2);
    let s = c.wait_status(2, LIMIT, |s| {
        let links = s["links"].as_array().unwrap();
        links.len() == 2 && links.iter().all(|l| l["state"] == "incompatible")
    });
    assert_eq!(s["converged"], false, "{s:#}");
    assert_no_mismatch(&c, 3);
    let s = c.status(2).unwrap();
    assert_eq!(s["converged"], false, "{s:#}");
    assert!(
        c.history(2).iter().any(|e| e.contains("incompatible")),
        "{:#?}",
        c.history(2)
    );
    // Once its device can activate again, it runs the campaign again (the manifest and image
    // are still there), its firmware speaks epoch 1, and the links agree at 1.
    c.kill(2);
    std::fs::remove_file(
        c.agent(2, "config")
            .with_extension("d")
            .join("30-faults.toml"),
    )
    .unwrap();
    c.start(2);
    c.wait_status(2, LIMIT, |s| links_at(s, 1) && s["converged"] == true);
    assert_no_mismatch(&c, 3);
}

#[test]
fn disk_restored_older() {
    let dir = tempdir("disk-restored");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    // A copy of node 3's store taken while its links spoke epoch 0.
    c.wait_status(2, LIMIT, |s| links_at(s, 0));
    c.kill(2);
    let backup = dir.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::copy(c.data_dir(2).join(f), backup.join(f));
    }
    c.start(2);
    c.start_seeded_campaign();
    c.wait_converged(0, Duration::from_secs(90));
    c.kill(2);
    c.wipe_state(2);
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::copy(backup.join(f), c.data_dir(2).join(f));
    }
    c.start(2);
    c.wait_status(2, LIMIT, |s| links_at(s, 1) && s["converged"] == true);
    assert_no_mismatch(&c, 3);
    // The store is behind what the device holds: it is treated as lost, not re-applied (the
    // device would have been asked to take its links back to epoch 0).
    let log = c.log(2);
    assert!(!log.contains("would go back"), "{log}");
    assert!(
        c.history(2).iter().any(|e| e.contains("new incarnation")),
        "{:?}",
        c.history(2)
    );
}

#[test]
fn wiped_node_new_incarnation() {
    let (_dir, mut c) = converged_cluster("wiped-incarnation");
    c.kill(2);
    c.wipe_state(2);
    c.start(2);
    // What node 1 shows of node 3 is what node 3 says of itself: its new phase entries win over
    // the ones it wrote before it lost its store.
    c.wait_status(0, LIMIT, |s| {
        let Some(own) = c.status(2) else { return false };
        let mine = own["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == 3)
            .cloned();
        let seen = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == 3)
            .cloned();
        mine.is_some()
            && seen.as_ref().map(|n| (&n["phase"], &n["epoch"]))
                == mine.as_ref().map(|n| (&n["phase"], &n["epoch"]))
            && seen.as_ref().map(|n| &n["incarnation"]) == mine.as_ref().map(|n| &n["incarnation"])
            && mine
                .as_ref()
                .is_some_and(|n| n["incarnation"].as_u64() > Some(0))
    });
    assert!(
        c.history(2).iter().any(|e| e.contains("quarantine")),
        "the wiped node did not wait out the restart quarantine: {:?}",
        c.history(2)
    );
}

#[test]
fn refused_manifest_keeps_floor() {
    let dir = tempdir("floor");
    let mut c = Cluster::new(&dir, 2);
    let key = trusted_signer(&dir, "ops");
    c.start(0);
    // Epoch 5 for another hw-profile: refused here, and it must not move the floor.
    std::fs::write(dir.join("gpu.bin"), vec![7u8; 4096]).unwrap();
    let (m5, s5) = sign_campaign(
        &dir,
        &key,
        "other",
        "epoch = 5\nmanifest_version = 1\nvalid_days = 1\nsemantics = \"another profile\"\n\n\
         [profiles.sim-gpu]\nimage = \"gpu.bin\"\nversion = \"g5\"\nchunk_size = 4096\ncompat = [4, 5]\n",
    );
    let out = c.start_campaign(0, &m5, &s5, Some(&dir.join("gpu.bin")));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo's epoch-1 manifest with a tampered image: refused, nothing half-written.
    let tampered = dir.join("tampered.bin");
    let mut bytes = std::fs::read(c.path("image")).unwrap();
    bytes[4321] ^= 0x5a;
    std::fs::write(&tampered, bytes).unwrap();
    let out = c.start_campaign(
        0,
        &c.path("manifest"),
        &c.path("signature"),
        Some(&tampered),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = c.data_dir(0).join("store");
    let leftovers: Vec<_> = walk(&store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .collect();
    assert!(leftovers.is_empty(), "half-written files: {leftovers:?}");
    // The valid epoch-1 manifest with its image is accepted.
    let out = c.start_campaign(
        0,
        &c.path("manifest"),
        &c.path("signature"),
        Some(&c.path("image")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn oversized_image_refused_by_start() {
    let dir = tempdir("oversized");
    let mut c = Cluster::new(&dir, 2);
    // This node's profile allows 1 MiB images; the demo's image is 8 MiB.
    let profile = dir.join("profiles/sim-nic.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(
        &profile,
        text.replace("max_image_bytes = 67108864", "max_image_bytes = 1048576"),
    )
    .unwrap();
    c.start(0);
    let plan = run(entente_tests::entente()
        .args(["campaign", "plan", "--socket"])
        .arg(c.socket(0))
        .arg("--manifest")
        .arg(c.path("manifest")));
    assert_eq!(
        plan.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let out = c.start_campaign(
        0,
        &c.path("manifest"),
        &c.path("signature"),
        Some(&c.path("image")),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1048576"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = c.status(0).unwrap();
    assert_eq!(s["phase"], "idle", "{s:#}");
    assert!(
        c.history(0).iter().any(|e| e.contains("refused")),
        "{:?}",
        c.history(0)
    );
}

#[test]
fn campaign_survives_origin_crash() {
    let dir = tempdir("origin-crash");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    c.wait_status(0, LIMIT, |s| links_at(s, 0));
    // The origin is killed the moment the CLI is told the campaign started.
    c.start_seeded_campaign();
    c.kill(0);
    c.start(0);
    c.wait_converged(0, Duration::from_secs(90));
    assert_no_mismatch(&c, 3);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn drain_then_lease() {
    let dir = tempdir("drain-lease");
    let mut c = Cluster::new(&dir, 3);
    // Only disruptive activations: every node drains, then asks for leases.
    let profile = dir.join("profiles/sim-nic.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let live = text.find("[[activation]]\nmethod = \"live\"").unwrap();
    let next = live + text[live + 1..].find("[[activation]]").unwrap() + 1;
    std::fs::write(&profile, format!("{}{}", &text[..live], &text[next..])).unwrap();
    let marks = dir.join("drains");
    for i in 0..3 {
        let config = c.agent(i, "config");
        std::fs::create_dir_all(config.with_extension("d")).unwrap();
        std::fs::write(
            config.with_extension("d").join("20-drain.toml"),
            format!(
                "[policy]\ndrain_hook = \"echo $ENTENTE_NODE $ENTENTE_EPOCH >> {}; sleep 2; echo jobs gone\"\ndrain_timeout_s = 60\n",
                marks.display()
            ),
        )
        .unwrap();
    }
    c.start_all();
    c.start_seeded_campaign();
    c.wait_converged(0, Duration::from_secs(120));
    let drained = std::fs::read_to_string(&marks).unwrap();
    let mut lines: Vec<&str> = drained.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["1 1", "2 1", "3 1"], "{drained}");
    for i in 0..3 {
        let h = c.history(i);
        let at = |what: &str| {
            h.iter()
                .position(|e| e.contains(what))
                .unwrap_or_else(|| panic!("node {i}: no {what:?} in {h:#?}"))
        };
        let (draining, drained, leases, activating) = (
            at("draining for epoch 1"),
            at("drained for epoch 1: jobs gone"),
            at("asking the neighbours for leases"),
            at("activating epoch 1"),
        );
        assert!(
            draining < drained && drained < leases && leases < activating,
            "node {i}: {h:#?}"
        );
    }
}

/// Writes a configuration drop-in for node `i`.
fn drop_in(c: &Cluster, i: usize, name: &str, text: &str) {
    let dir = c.agent(i, "config").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn device_refuses_link_epoch() {
    let dir = tempdir("device-refuses");
    let mut c = Cluster::new(&dir, 3);
    // Node 3's device cannot take link epoch 1: it votes no before any REFLECT.
    drop_in(
        &c,
        2,
        "30-faults.toml",
        "[device.faults]\nrefuse_link_epoch = 1\n",
    );
    c.start_all();
    c.start_seeded_campaign();
    // The link between nodes 1 and 2 commits; node 3's links never leave epoch 0.
    c.wait_status(0, LIMIT, |s| {
        s["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["peer"] == 2 && l["committed"] == 1)
    });
    std::thread::sleep(SETTLE);
    let s = c.status(2).unwrap();
    assert!(links_at(&s, 0), "{s:#}");
    assert_eq!(s["converged"], false);
    assert_eq!(c.status(0).unwrap()["converged"], false);
    assert!(
        c.history(2)
            .iter()
            .any(|e| e.contains("cannot take link epoch 1")),
        "{:#?}",
        c.history(2)
    );
    assert_no_mismatch(&c, 3);
}

#[test]
fn device_fails_after_commit() {
    let dir = tempdir("device-lags");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    c.wait_status(2, LIMIT, |s| links_at(s, 0));
    // Node 3's device fails to apply the next three link epochs it is given (the links are at
    // epoch 0 in the device already, so the first new one is the campaign's).
    c.kill(2);
    drop_in(
        &c,
        2,
        "30-faults.toml",
        "[device.faults]\nlink_epoch_failures = 3\n",
    );
    c.start(2);
    c.wait_status(2, LIMIT, |s| links_at(s, 0));
    c.start_seeded_campaign();
    c.wait_converged(0, Duration::from_secs(90));
    c.wait_status(2, LIMIT, |s| links_at(s, 1) && s["converged"] == true);
    let lagging: Vec<String> = c
        .history(2)
        .into_iter()
        .filter(|e| e.contains("device lagging"))
        .collect();
    assert_eq!(lagging.len(), 3, "{:#?}", c.history(2));
    assert!(lagging[0].contains("committed epoch 1"), "{lagging:?}");
    assert_no_mismatch(&c, 3);
}
