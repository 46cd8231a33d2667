//! The health gate after an activation, against running agents: a node whose health hook says
//! no never tells its neighbours it activated, rolls back, and shows why.

use entente_tests::{tempdir, Cluster};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn health_gate_fails() {
    let dir = tempdir("health-gate");
    let mut c = Cluster::new(&dir, 2);
    let drop_in = c.agent(1, "config").with_extension("d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::write(
        drop_in.join("40-health.toml"),
        "[policy]\nhealth_hook = \"echo \\\"xid 79 on gpu $ENTENTE_EPOCH\\\"; exit 1\"\nhealth_timeout_s = 30\n",
    )
    .unwrap();
    c.start_all();
    let before = c.running_version(1);
    c.start_seeded_campaign();
    let s = c.wait_status(1, LIMIT, |s| s["phase"] == "rolled-back");
    let why = s["unhealthy"].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains("health hook") && why.contains("xid 79 on gpu 1"),
        "{s:#}"
    );
    // no link moved to the new epoch, and the device runs what it ran before
    let deadline = std::time::Instant::now() + LIMIT;
    while c.running_version(1) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "still runs the new firmware"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..2 {
        let s = c.status(i).unwrap();
        assert!(
            s["links"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["committed"] == 0),
            "node {i}: {s:#}"
        );
    }
    let healthy = c.status(0).unwrap();
    assert_eq!(healthy["phase"], "activated", "{healthy:#}");
    assert!(healthy["unhealthy"].is_null(), "{healthy:#}");
}
