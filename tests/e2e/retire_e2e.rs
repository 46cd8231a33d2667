//! Retired links, restored links and stale nodes as `entente status` reports them: real
//! `entented` processes on loopback.

use entente_tests::{entente, run, tempdir, Cluster};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// `entente link <verb> --socket <node i's socket> <peer>`, which must succeed.
fn link(c: &Cluster, i: usize, verb: &str, peer: u64) {
    let out = run(entente()
        .args(["link", verb, "--socket"])
        .arg(c.socket(i))
        .arg(peer.to_string()));
    assert!(
        out.status.success(),
        "link {verb} {peer}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the drop-in `<config>.d/<name>` of every agent of `c`.
fn drop_in(c: &Cluster, nodes: usize, name: &str, text: &str) {
    for i in 0..nodes {
        let config = c.agent(i, "config");
        let dir = config.with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn node_entry(s: &Value, id: u64) -> Value {
    s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn retire_and_restore() {
    let dir = tempdir("retire-restore");
    let mut c = Cluster::new(&dir, 3);
    c.start_all();
    let dead = c.status(2).unwrap()["node"].as_u64().unwrap();
    // every node has heard of every other before node 3 dies
    c.wait_status(0, LIMIT, |s| s["nodes"].as_array().unwrap().len() == 3);
    c.kill(2);
    c.start_seeded_campaign();
    c.wait_status(0, LIMIT, |s| s["links_committed"] == 1);
    let s = c.status(0).unwrap();
    assert_eq!(s["converged"], false, "{s:#}");
    // the operator retires the dead node's links: the rest of the cluster converged
    link(&c, 0, "retire", dead);
    link(&c, 1, "retire", dead);
    let s = c.wait_status(0, LIMIT, |s| s["converged"] == true);
    assert_eq!(s["links_total"], 3, "{s:#}");
    assert_eq!(s["links_retired"], 2, "{s:#}");
    assert_eq!(
        s["links_committed"], 1,
        "a retired link is not committed: {s:#}"
    );
    // node 3 comes back and its links are restored: it resumes the campaign, links commit
    c.start(2);
    c.wait_status(2, LIMIT, |s| s["epoch"] == 1);
    link(&c, 0, "restore", dead);
    let s = c.status(0).unwrap();
    assert_eq!(
        s["converged"], false,
        "a restored link is live again: {s:#}"
    );
    link(&c, 1, "restore", dead);
    // node 0 learns of node 1's restore by gossip: until then its view still counts the
    // link between nodes 2 and 3 as retired (and, rightly, the rest as converged)
    let s = c.wait_status(0, LIMIT, |s| {
        s["converged"] == true && s["links_retired"] == 0 && s["links_total"] == 3
    });
    assert_eq!(s["links_committed"], 3, "{s:#}");
    let s = c.wait_status(2, LIMIT, |s| {
        s["phase"] == "converged"
            && s["links"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["committed"] == 1 && l["retired"] == false && l["state"] == "idle")
    });
    assert_eq!(s["converged"], true, "{s:#}");
    assert_eq!(node_entry(&s, dead)["stale"], false, "{s:#}");
}

#[test]
fn stale_node_not_converged() {
    let dir = tempdir("stale-node");
    let mut c = Cluster::new(&dir, 3);
    drop_in(&c, 3, "50-stale.toml", "[status]\nstale_after_s = 2\n");
    c.start_all();
    let quiet = c.status(2).unwrap()["node"].as_u64().unwrap();
    let s = c.wait_status(0, LIMIT, |s| s["nodes"].as_array().unwrap().len() == 3);
    assert_eq!(node_entry(&s, quiet)["stale"], false, "{s:#}");
    assert!(s["view_age_ms"].as_u64().is_some(), "{s:#}");
    // node 3 dies before it heard of the campaign
    c.kill(2);
    c.start_seeded_campaign();
    let s = c.wait_status(0, LIMIT, |s| node_entry(s, quiet)["stale"] == true);
    assert_eq!(s["converged"], false, "{s:#}");
    assert!(
        node_entry(&s, quiet)["last_seen_ms"].as_u64().unwrap() >= 2000,
        "{s:#}"
    );
    assert!(s["view_age_ms"].as_u64().unwrap() >= 2000, "{s:#}");
    // a live node is not stale: heartbeats keep it fresh while nothing else changes
    std::thread::sleep(Duration::from_secs(3));
    let s = c.status(0).unwrap();
    let live = c.status(1).unwrap()["node"].as_u64().unwrap();
    assert_eq!(node_entry(&s, live)["stale"], false, "{s:#}");
    assert!(
        node_entry(&s, live)["last_seen_ms"].as_u64().unwrap() < 2000,
        "{s:#}"
    );
    assert_eq!(s["converged"], false, "{s:#}");
}
