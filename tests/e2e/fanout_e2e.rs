//! End to end: a campaign's image fans out between real `entented` processes on loopback.

use entente_tests::{entente, run, tempdir, Cluster};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Adds a configuration drop-in to agent `i` (before it starts).
fn drop_in(c: &Cluster, i: usize, name: &str, text: &str) {
    let d = c.agent(i, "config").with_file_name("entented.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), text).unwrap();
}

/// The sha256 of the image agent `i` holds, after checking every chunk of it again from disk.
fn verified_image(c: &Cluster, i: usize) -> String {
    let list = run(entente()
        .args(["image", "list", "--json", "--socket"])
        .arg(c.socket(i)));
    let images: Value = serde_json::from_slice(&list.stdout).unwrap();
    let sha = images[0]["sha256"].as_str().unwrap().to_owned();
    let ok = run(entente()
        .args(["image", "verify", &sha, "--socket"])
        .arg(c.socket(i)));
    assert!(
        ok.status.success(),
        "node {}: {}",
        i + 1,
        String::from_utf8_lossy(&ok.stderr)
    );
    sha
}

fn image_sha(manifest: &Path) -> String {
    let out = run(entente().args(["manifest", "show", "--json"]).arg(manifest));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    m["manifest"]["profiles"]["sim-nic"]["sha256"]
        .as_str()
        .unwrap_or_else(|| panic!("no sim-nic image in {m:#}"))
        .to_owned()
}

#[test]
fn fanout_corrupt_source() {
    let dir = tempdir("fanout-corrupt");
    let mut c = Cluster::with_args(&dir, 6, &["--image-mb", "8"]);
    // Agent 2 corrupts every chunk it serves; the seed is slow, so that its neighbours turn to
    // agent 2 and to each other.
    drop_in(
        &c,
        1,
        "90-corrupt.toml",
        "[fanout]\ncorrupt_served_chunks = true\n",
    );
    drop_in(&c, 0, "90-slow.toml", "[fanout]\nmax_mib_per_s = 4\n");
    c.start_all();
    c.start_seeded_campaign();
    c.wait_converged(0, Duration::from_secs(120));
    let want = image_sha(&c.path("manifest"));
    let mut named = Vec::new();
    for i in 0..6 {
        assert_eq!(verified_image(&c, i), want, "node {}", i + 1);
        let h = c.history(i);
        if i > 0 {
            assert!(
                h.iter().any(|e| e.contains("staged in the store")),
                "node {}: {h:#?}",
                i + 1
            );
        }
        named.extend(
            h.into_iter()
                .filter(|e| e.contains("node 2 dropped as a source")),
        );
    }
    assert!(
        !named.is_empty(),
        "no history names the corrupt source (agent 2)"
    );
    assert!(named.iter().all(|e| e.contains("refused")), "{named:#?}");
}

#[test]
fn fanout_kill_resume() {
    let dir = tempdir("fanout-resume");
    let mut c = Cluster::with_args(&dir, 4, &["--image-mb", "16", "--rate-mib-s", "4"]);
    c.start_all();
    c.start_seeded_campaign();
    // Kill agent 3 once it holds a few chunks, well before it holds them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        assert!(Instant::now() < deadline, "agent 3 never started fetching");
        if let Some(s) = c.status(2) {
            let held = s["image"]["chunks_held"].as_u64().unwrap_or(0);
            if held >= 3 {
                assert!(held < 16, "too late to kill: {s:#}");
                break held;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    c.kill(2);
    std::thread::sleep(Duration::from_millis(300));
    c.start(2);
    c.wait_converged(0, Duration::from_secs(120));
    let h = c.history(2);
    let fetching: Vec<&String> = h.iter().filter(|e| e.contains("fetching image")).collect();
    assert_eq!(
        fetching.len(),
        2,
        "one fetch before the kill, one after: {h:#?}"
    );
    let done = h
        .iter()
        .find(|e| e.contains("staged in the store"))
        .unwrap_or_else(|| panic!("{h:#?}"));
    // "... staged in the store: F chunks fetched (Z written from the receive buffer), R resumed, T ms"
    let num = |after: &str| -> u64 {
        let tail = done.split(after).next().unwrap();
        tail.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (fetched, resumed) = (num(" chunks fetched"), num(" resumed"));
    assert!(
        resumed >= 1 && resumed <= held + 2,
        "resumed {resumed} of the {held} held at the kill: {done}"
    );
    assert_eq!(
        fetched + resumed,
        16,
        "verified chunks were fetched again: {done}"
    );
    assert!(
        fetching[1].contains(&format!("{resumed} already here")),
        "{fetching:?}"
    );
    assert_eq!(verified_image(&c, 2), image_sha(&c.path("manifest")));
}
