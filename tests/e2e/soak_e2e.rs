//! Consecutive campaigns on real `entented` processes, the campaign's origin killed (SIGKILL)
//! and restarted in each while its image fans out (image traffic is capped so that the fan-out
//! lasts about a second): every campaign converges with no help, and every store ends with
//! exactly two campaigns' images.

use entente_tests::{sign_campaign, tempdir, trusted_signer, Cluster};
use std::time::Duration;

/// Campaigns in the run (the demo's epoch 1, then 2..=CAMPAIGNS).
const CAMPAIGNS: u64 = 20;
/// Agents.
const NODES: usize = 5;
const LIMIT: Duration = Duration::from_secs(120);

/// A distinct image for campaign `epoch`: 96 KiB of pseudo-random bytes.
fn image(epoch: u64) -> Vec<u8> {
    let mut x = epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..96 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn soak_origin_kill() {
    let dir = tempdir("soak-origin");
    let mut c = Cluster::with_args(&dir, NODES as u32, &["--rate-mib-s", "0.25"]);
    let key = trusted_signer(&dir, "ops");
    c.start_all();
    c.start_seeded_campaign();
    for i in 0..NODES {
        c.wait_status(i, LIMIT, |s| s["epoch"] == 1 && s["converged"] == true);
    }
    for epoch in 2..=CAMPAIGNS {
        let file = format!("image-{epoch}.bin");
        std::fs::write(dir.join(&file), image(epoch)).unwrap();
        let (m, s) = sign_campaign(
            &dir,
            &key,
            &format!("campaign-{epoch}"),
            &format!(
                "epoch = {epoch}\nmanifest_version = {epoch}\nvalid_days = 1\n\
                 semantics = \"soak {epoch}\"\n\n[profiles.sim-nic]\nimage = \"{file}\"\n\
                 version = \"sim-nic {epoch}.0\"\nchunk_size = 16384\ncompat = [{}, {epoch}]\n",
                epoch - 1
            ),
        );
        let out = c.start_campaign(0, &m, &s, Some(&dir.join(&file)));
        assert!(
            out.status.success(),
            "campaign {epoch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The origin dies at a different moment of each campaign, then comes back.
        std::thread::sleep(Duration::from_millis(50 + 97 * (epoch % 7)));
        c.kill(0);
        c.start(0);
        for i in 0..NODES {
            c.wait_status(i, LIMIT, |s| s["epoch"] == epoch && s["converged"] == true);
        }
    }
    for i in 0..NODES {
        let images = std::fs::read_dir(c.data_dir(i).join("store/images"))
            .unwrap()
            .count();
        assert_eq!(
            images, 2,
            "node {i} keeps {images} images after {CAMPAIGNS} campaigns: the current and the \
             previous campaign's are kept, the rest pruned"
        );
    }
}
