//! The simulated device: staging with progress, activation, rollback, link epochs, persistence
//! across restarts, and every injected fault.

use entente_devices::device::{Device, DeviceError, Health, ImageInfo, Progress};
use entente_devices::profile::{self, ActivationMethod, Profile};
use entente_devices::sim::{CorruptBank, Faults, SimDevice, FACTORY_VERSION};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

fn shipped(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../hw-profiles")
        .join(format!("{name}.toml"));
    profile::load_file(&path).expect("shipped profile")
}

/// A deterministic image of `len` bytes.
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn info(bytes: &[u8], version: &str) -> ImageInfo {
    ImageInfo {
        version: version.into(),
        len: bytes.len() as u64,
        sha256: Sha256::digest(bytes).into(),
    }
}

fn open(dir: &Path, faults: Faults) -> SimDevice {
    SimDevice::open(dir, shipped("sim-nic"), faults).expect("open")
}

/// Stages `bytes` as `version` of nic-fw, returning the progress reports.
fn stage(
    dev: &mut SimDevice,
    bytes: &[u8],
    version: &str,
) -> (Result<(), DeviceError>, Vec<Progress>) {
    let mut seen = Vec::new();
    let r = dev
        .stage("nic-fw", &info(bytes, version), &mut &bytes[..], &mut |p| {
            seen.push(p)
        })
        .map(|_| ());
    (r, seen)
}

fn versions(dev: &SimDevice) -> (Option<String>, Option<String>, bool) {
    let inv = dev.inventory().expect("inventory");
    let c = inv.component("nic-fw").expect("nic-fw").clone();
    (c.running, c.stored, c.pending_activation)
}

const MIB: usize = 1 << 20;

#[test]
fn a_fresh_device_runs_the_factory_image_and_is_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let dev = open(dir.path(), Faults::default());
    assert_eq!(
        versions(&dev),
        (
            Some(FACTORY_VERSION.into()),
            Some(FACTORY_VERSION.into()),
            false
        )
    );
    assert_eq!(dev.health(), Health::Ok);
    let inv = dev.inventory().unwrap();
    let board = &inv.component("nic-fw").unwrap().fixed["board.id"];
    assert!(board.starts_with("sim-"), "{board}");
}

#[test]
fn stage_reports_progress_and_activation_switches_banks() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = open(dir.path(), Faults::default());
    let img = image(MIB / 2 + 123, 1);
    let (r, seen) = stage(&mut dev, &img, "1.1.0");
    r.expect("stage");
    assert_eq!(
        seen.first(),
        Some(&Progress {
            done: 0,
            total: img.len() as u64
        })
    );
    assert_eq!(seen.last().unwrap().percent(), 100);
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(
        versions(&dev),
        (Some(FACTORY_VERSION.into()), Some("1.1.0".into()), true)
    );

    let a = dev
        .activate("nic-fw", ActivationMethod::Live)
        .expect("activate");
    assert_eq!(a.previous.as_deref(), Some(FACTORY_VERSION));
    assert_eq!(a.running, "1.1.0");
    assert!(!a.disruptive);
    assert_eq!(
        versions(&dev),
        (Some("1.1.0".into()), Some("1.1.0".into()), false)
    );
    assert_eq!(std::fs::read(dev.bank_path("nic-fw", "b")).unwrap(), img);
    // Nothing staged any more.
    assert!(matches!(
        dev.activate("nic-fw", ActivationMethod::Reset),
        Err(DeviceError::NothingStaged { .. })
    ));
    let a = dev.activate("nic-fw", ActivationMethod::Reboot);
    assert!(a.is_err());
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut dev = open(dir.path(), Faults::default());
        stage(&mut dev, &image(1000, 2), "2.0.0").0.unwrap();
        dev.activate("nic-fw", ActivationMethod::Reset).unwrap();
        stage(&mut dev, &image(2000, 3), "2.1.0").0.unwrap();
        dev.set_link_epoch(7, 3).unwrap();
        dev.set_link_epoch(9, 1).unwrap();
    }
    let mut dev = open(dir.path(), Faults::default());
    assert_eq!(
        versions(&dev),
        (Some("2.0.0".into()), Some("2.1.0".into()), true)
    );
    assert_eq!(
        dev.link_epochs()
            .iter()
            .map(|(&p, &e)| (p, e))
            .collect::<Vec<_>>(),
        vec![(7, 3), (9, 1)]
    );
    assert_eq!(dev.health(), Health::Ok);
    let a = dev.activate("nic-fw", ActivationMethod::Live).unwrap();
    assert_eq!(
        (a.previous.as_deref(), a.running.as_str()),
        (Some("2.0.0"), "2.1.0")
    );
}

#[test]
fn the_state_file_is_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = open(dir.path(), Faults::default());
    dev.set_link_epoch(1, 1).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"state.json".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(v["link_epochs"]["1"], 1);
    assert_eq!(v["components"]["nic-fw"]["active"], "a");
}

#[test]
fn a_method_the_profile_does_not_allow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::open(dir.path(), shipped("sim-gpu"), Faults::default()).unwrap();
    let img = image(100, 4);
    dev.stage("gpu-fw", &info(&img, "9"), &mut &img[..], &mut |_| {})
        .unwrap();
    let e = dev.activate("gpu-fw", ActivationMethod::Live).unwrap_err();
    assert!(matches!(e, DeviceError::MethodNotAllowed { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "profile sim-gpu does not allow activation method live (allowed: reset, reboot)"
    );
    // Still staged; an allowed method works.
    let a = dev.activate("gpu-fw", ActivationMethod::Reset).unwrap();
    assert!(a.disruptive);
}

#[test]
fn bad_images_are_refused_and_nothing_is_left_staged() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = open(dir.path(), Faults::default());
    let img = image(5000, 5);

    let mut wrong = info(&img, "3");
    wrong.sha256[0] ^= 1;
    let e = dev
        .stage("nic-fw", &wrong, &mut &img[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::DigestMismatch { .. }), "{e}");

    let e = dev
        .stage("nic-fw", &info(&img, "3"), &mut &img[..4000], &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::ShortImage {
                got: 4000,
                expected: 5000,
                ..
            }
        ),
        "{e}"
    );

    let mut long = img.clone();
    long.push(0);
    let e = dev
        .stage("nic-fw", &info(&img, "3"), &mut &long[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::LongImage { .. }), "{e}");

    let too_big = ImageInfo {
        version: "3".into(),
        len: 64 * MIB as u64 + 1,
        sha256: [0; 32],
    };
    let e = dev
        .stage("nic-fw", &too_big, &mut std::io::empty(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::ImageTooLarge { .. }), "{e}");

    let e = dev
        .stage("nope", &info(&img, "3"), &mut &img[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::UnknownComponent { .. }), "{e}");

    assert!(!versions(&dev).2);
    assert!(matches!(
        dev.activate("nic-fw", ActivationMethod::Live),
        Err(DeviceError::BankNotActivatable { .. })
    ));
    // A good image after all that stages and activates.
    stage(&mut dev, &img, "3").0.unwrap();
    dev.activate("nic-fw", ActivationMethod::Live).unwrap();
    assert_eq!(versions(&dev).0.as_deref(), Some("3"));
}

#[test]
fn fail_at_percent_stops_the_flash_there() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        fail_at_percent: Some(40),
        ..Faults::default()
    };
    let mut dev = open(dir.path(), faults);
    let img = image(MIB, 6);
    let (r, seen) = stage(&mut dev, &img, "4");
    let e = r.unwrap_err();
    assert!(
        matches!(e, DeviceError::FlashFailed { at_percent: 40, .. }),
        "{e}"
    );
    let written = std::fs::metadata(dev.bank_path("nic-fw", "b"))
        .unwrap()
        .len();
    assert_eq!(written, img.len() as u64 * 40 / 100);
    assert!(seen.iter().all(|p| p.percent() <= 40), "{seen:?}");
    assert_eq!(
        versions(&dev),
        (
            Some(FACTORY_VERSION.into()),
            Some(FACTORY_VERSION.into()),
            false
        )
    );
    let e = dev.activate("nic-fw", ActivationMethod::Live).unwrap_err();
    assert!(e.to_string().contains("flash failed at 40%"), "{e}");
    assert!(matches!(dev.health(), Health::Degraded(d) if d.contains("flash failed")));

    dev.set_faults(Faults::default()).unwrap();
    stage(&mut dev, &img, "4").0.unwrap();
    dev.activate("nic-fw", ActivationMethod::Live).unwrap();
    assert_eq!(dev.health(), Health::Ok);
}

#[test]
fn a_bank_corrupted_during_the_write_fails_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        corrupt_bank: Some(CorruptBank::DuringWrite),
        ..Faults::default()
    };
    let mut dev = open(dir.path(), faults);
    let e = stage(&mut dev, &image(300_000, 7), "5").0.unwrap_err();
    assert!(
        matches!(e, DeviceError::VerifyFailed { ref bank, .. } if bank == "b"),
        "{e}"
    );
    let e = dev.activate("nic-fw", ActivationMethod::Reset).unwrap_err();
    assert!(e.to_string().contains("reads back with sha256"), "{e}");
    assert!(matches!(dev.health(), Health::Degraded(_)));
}

#[test]
fn a_bank_corrupted_after_staging_is_refused_at_activation_and_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        corrupt_bank: Some(CorruptBank::AfterStage),
        ..Faults::default()
    };
    {
        let mut dev = open(dir.path(), faults.clone());
        stage(&mut dev, &image(1000, 8), "6")
            .0
            .expect("stage itself succeeds");
        assert!(versions(&dev).2);
        let e = dev.activate("nic-fw", ActivationMethod::Live).unwrap_err();
        assert!(matches!(e, DeviceError::BankNotActivatable { .. }), "{e}");
        assert!(e.to_string().contains("changed after staging"), "{e}");
        assert_eq!(versions(&dev).0.as_deref(), Some(FACTORY_VERSION));
    }
    // The corruption found before activation is persisted...
    let mut dev = open(dir.path(), Faults::default());
    assert!(matches!(dev.health(), Health::Degraded(_)));
    assert!(dev.activate("nic-fw", ActivationMethod::Live).is_err());

    // ...and one that happens while the agent is down is found by the next open.
    stage(&mut dev, &image(1000, 9), "7").0.unwrap();
    drop(dev);
    let _ = open(dir.path(), faults.clone()); // no stage: nothing corrupted by the fault
    let bank = dir.path().join("nic-fw.b.bin");
    let mut bytes = std::fs::read(&bank).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&bank, bytes).unwrap();
    let mut dev = open(dir.path(), Faults::default());
    assert!(matches!(dev.health(), Health::Degraded(ref d) if d.contains("changed after staging")));
    assert!(matches!(
        dev.activate("nic-fw", ActivationMethod::Live),
        Err(DeviceError::BankNotActivatable { .. })
    ));
}

#[test]
fn slow_flash_takes_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        slow_flash_ms_per_mib: 400,
        ..Faults::default()
    };
    let mut dev = open(dir.path(), faults);
    // 400 ms per MiB for half a MiB: at least 200 ms.
    let started = Instant::now();
    stage(&mut dev, &image(MIB / 2, 10), "8").0.unwrap();
    let slow = started.elapsed();
    assert!(slow >= Duration::from_millis(190), "{slow:?}");
    dev.set_faults(Faults::default()).unwrap();
    assert_eq!(dev.faults(), &Faults::default());
}

#[test]
fn an_activation_failure_keeps_the_previous_image_running() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        activation_failure: true,
        ..Faults::default()
    };
    let mut dev = open(dir.path(), faults);
    stage(&mut dev, &image(4096, 12), "10").0.unwrap();
    let e = dev.activate("nic-fw", ActivationMethod::Reset).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::ActivationFailed {
                method: ActivationMethod::Reset,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        versions(&dev),
        (Some(FACTORY_VERSION.into()), Some("10".into()), true)
    );
    assert_eq!(dev.health(), Health::Ok);
    dev.set_faults(Faults::default()).unwrap();
    assert_eq!(
        dev.activate("nic-fw", ActivationMethod::Reset)
            .unwrap()
            .running,
        "10"
    );
}

#[test]
fn power_loss_mid_flash_is_found_on_the_next_open_and_the_bank_refused() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Faults {
        power_loss_at_percent: Some(60),
        ..Faults::default()
    };
    let mut dev = open(dir.path(), faults);
    let img = image(MIB, 13);
    let e = stage(&mut dev, &img, "11").0.unwrap_err();
    assert!(
        matches!(e, DeviceError::PowerLoss { at_percent: 60, .. }),
        "{e}"
    );
    assert!(dev.powered_off());
    assert!(matches!(dev.inventory(), Err(DeviceError::PoweredOff)));
    assert!(matches!(
        dev.set_link_epoch(1, 1),
        Err(DeviceError::PoweredOff)
    ));
    assert!(!dev.health().is_running());
    let written = std::fs::metadata(dev.bank_path("nic-fw", "b"))
        .unwrap()
        .len();
    assert_eq!(written, img.len() as u64 * 60 / 100);
    drop(dev);

    // Restart: the unfinished bank is found and refused; the old image still runs.
    let mut dev = open(dir.path(), Faults::default());
    assert_eq!(
        versions(&dev),
        (
            Some(FACTORY_VERSION.into()),
            Some(FACTORY_VERSION.into()),
            false
        )
    );
    match dev.health() {
        Health::Degraded(d) => assert!(d.contains("power was lost"), "{d}"),
        h => panic!("{h:?}"),
    }
    let e = dev.activate("nic-fw", ActivationMethod::Live).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refusing to activate bank b of \"nic-fw\": incomplete: power was lost during the flash"
    );
    // Staging again repairs it.
    stage(&mut dev, &img, "11").0.unwrap();
    dev.activate("nic-fw", ActivationMethod::Live).unwrap();
    assert_eq!(dev.health(), Health::Ok);
}

#[test]
fn rollback_returns_to_the_previous_bank() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = open(dir.path(), Faults::default());
    let e = dev.rollback("nic-fw").unwrap_err();
    assert!(matches!(e, DeviceError::NoPreviousImage { .. }), "{e}");
    stage(&mut dev, &image(2048, 14), "12").0.unwrap();
    let e = dev.rollback("nic-fw").unwrap_err();
    assert!(e.to_string().contains("never ran"), "{e}");
    dev.activate("nic-fw", ActivationMethod::Reset).unwrap();
    let r = dev.rollback("nic-fw").unwrap();
    assert_eq!(
        (r.previous.as_deref(), r.running.as_str()),
        (Some("12"), FACTORY_VERSION)
    );
    assert_eq!(r.method, ActivationMethod::Live);
    assert_eq!(
        versions(&dev),
        (
            Some(FACTORY_VERSION.into()),
            Some(FACTORY_VERSION.into()),
            false
        )
    );
    // And forward again: the other bank still holds 12.
    assert_eq!(dev.rollback("nic-fw").unwrap().running, "12");
}

#[test]
fn rollback_needs_a_dual_bank_profile() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw-profiles/sim-nic.toml"),
    )
    .unwrap()
    .replace("name = \"sim-nic\"", "name = \"sim-single\"")
    .replace("dual_bank = true", "dual_bank = false");
    let single = profile::parse(Path::new("sim-single.toml"), &text).expect("valid profile");
    let dir = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::open(dir.path(), single, Faults::default()).unwrap();
    stage(&mut dev, &image(100, 15), "13").0.unwrap();
    dev.activate("nic-fw", ActivationMethod::Live).unwrap();
    let e = dev.rollback("nic-fw").unwrap_err();
    assert!(matches!(e, DeviceError::RollbackUnsupported { .. }), "{e}");
}

#[test]
fn link_epochs_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = open(dir.path(), Faults::default());
    dev.set_link_epoch(4, 2).unwrap();
    dev.set_link_epoch(4, 2).unwrap();
    dev.set_link_epoch(4, 5).unwrap();
    let e = dev.set_link_epoch(4, 3).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::EpochWentBack {
                peer: 4,
                current: 5,
                requested: 3
            }
        ),
        "{e}"
    );
    drop(dev);
    let mut dev = open(dir.path(), Faults::default());
    assert_eq!(dev.link_epochs().get(&4), Some(&5));
    assert!(dev.set_link_epoch(4, 4).is_err());
}

#[test]
fn an_active_bank_that_changed_makes_the_device_failed() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), Faults::default()));
    std::fs::write(dir.path().join("nic-fw.a.bin"), b"not the factory image").unwrap();
    let dev = open(dir.path(), Faults::default());
    match dev.health() {
        Health::Failed(d) => assert!(d.contains("active bank a"), "{d}"),
        h => panic!("{h:?}"),
    }
}

#[test]
fn a_device_opens_only_with_its_own_sim_profile() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), Faults::default()));
    let e = SimDevice::open(dir.path(), shipped("sim-gpu"), Faults::default()).unwrap_err();
    assert!(e.to_string().contains("created for profile sim-nic"), "{e}");
    let e = SimDevice::open(dir.path(), shipped("connectx-7"), Faults::default()).unwrap_err();
    assert!(e.to_string().contains("not sim"), "{e}");
    let bad = Faults {
        fail_at_percent: Some(150),
        ..Faults::default()
    };
    assert!(SimDevice::open(dir.path(), shipped("sim-nic"), bad).is_err());
    std::fs::write(dir.path().join("state.json"), b"{").unwrap();
    let e = SimDevice::open(dir.path(), shipped("sim-nic"), Faults::default()).unwrap_err();
    assert!(matches!(e, DeviceError::BadState { .. }), "{e}");
}
