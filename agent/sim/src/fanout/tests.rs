use super::*;

fn cfg(hosts: usize, strategy: Strategy) -> FanoutConfig {
    FanoutConfig {
        hosts,
        image_bytes: 64 << 20,
        chunk_bytes: 1 << 20,
        bandwidth: 12.5e9,
        latency: 5e-6,
        strategy,
        degree: 8,
        seed: 1,
    }
}

#[test]
fn pull_one_is_bound_by_the_seed_uplink() {
    let r = run(&cfg(17, Strategy::PullOne));
    let per_image_ms = 64.0 * f64::from(1 << 20) / 12.5e9 * 1e3;
    assert_eq!(r.depth, 1);
    assert!(
        (r.image_all_hosts_ms / (16.0 * per_image_ms) - 1.0).abs() < 0.02,
        "{r:?}"
    );
    assert!((r.max_upload_images - 16.0).abs() < 1e-9);
}

#[test]
fn pipeline_beats_pull_one_and_stays_near_the_bound() {
    let p = run(&cfg(256, Strategy::Pipeline));
    let one = run(&cfg(256, Strategy::PullOne));
    assert!(p.image_all_hosts_ms.is_finite());
    assert!(
        p.ratio_to_bound >= 1.0,
        "faster than the lower bound: {p:?}"
    );
    assert!(p.ratio_to_bound < 1.5, "{p:?}");
    assert!(one.image_all_hosts_ms > 5.0 * p.image_all_hosts_ms);
}

#[test]
fn every_transfer_is_counted_once_per_host_and_chunk() {
    let r = run(&cfg(64, Strategy::Pipeline));
    assert_eq!(r.transfers, 63 * 64, "no chunk is fetched twice: {r:?}");
}

#[test]
fn runs_are_deterministic() {
    let a = run(&cfg(128, Strategy::Pipeline));
    let b = run(&cfg(128, Strategy::Pipeline));
    assert_eq!(
        a.image_all_hosts_ms.to_bits(),
        b.image_all_hosts_ms.to_bits()
    );
}
