//! The Redfish backend end to end against the BMC emulator (tests/bmc/emulator.py): staging
//! with apply time OnReset, progress, activation by a reset, a failed task, auth, TLS and the
//! credentials file.

mod redfish_peers;

use entente_devices::device::{Device, DeviceError, Progress};
use entente_devices::profile::ActivationMethod;
use entente_devices::redfish::{AuthMode, RedfishDevice};
use redfish_peers::{config, credentials, emulator, package, peek, shipped, FACTORY_GPU_VERSION};

const NEW_VERSION: &str = "97.00.12.00.05";

fn running(dev: &RedfishDevice) -> String {
    let inv = dev.inventory().expect("inventory");
    inv.component("gpu-fw").unwrap().running.clone().unwrap()
}

/// The version the BMC reports for GPU `slot`, read without the client under test.
fn bmc_version(url: &str, slot: u32) -> String {
    let (status, body) = peek(&format!(
        "{url}/redfish/v1/UpdateService/FirmwareInventory/HGX_FW_GPU_SXM_{slot}"
    ));
    assert_eq!(status, 200, "{body}");
    body["Version"].as_str().unwrap().to_string()
}

#[test]
fn redfish_staged_image_runs_only_after_the_reset() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let mut cfg = config(&bmc.url, &creds, AuthMode::Session);
    cfg.slot = 3;
    let mut dev = RedfishDevice::open(shipped("h100-sxm5"), &cfg).expect("open");
    assert_eq!(running(&dev), FACTORY_GPU_VERSION);

    let (bytes, info) = package(NEW_VERSION, 300_000);
    let mut reports: Vec<Progress> = Vec::new();
    let staged = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |p| reports.push(p))
        .expect("stage");
    assert_eq!(staged.version, NEW_VERSION);
    assert!(
        staged.slot.ends_with("/FirmwareInventory/HGX_FW_GPU_SXM_3"),
        "{staged:?}"
    );

    let percents: Vec<u8> = reports.iter().map(Progress::percent).collect();
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert!(
        percents.len() >= 5,
        "too few progress reports: {percents:?}"
    );
    assert_eq!(percents.last(), Some(&100));
    // The task's own steps show in the second half.
    assert!(
        percents.iter().filter(|&&p| p > 50 && p < 100).count() >= 3,
        "{percents:?}"
    );

    // Staged, not running: the BMC still reports the old version, and so does the inventory.
    assert_eq!(bmc_version(&bmc.url, 3), FACTORY_GPU_VERSION);
    let inv = dev.inventory().unwrap();
    let gpu = inv.component("gpu-fw").unwrap();
    assert_eq!(gpu.running.as_deref(), Some(FACTORY_GPU_VERSION));
    assert_eq!(gpu.stored.as_deref(), Some(NEW_VERSION));
    assert!(gpu.pending_activation);

    let activated = dev
        .activate("gpu-fw", ActivationMethod::Reboot)
        .expect("activate");
    assert_eq!(activated.previous.as_deref(), Some(FACTORY_GPU_VERSION));
    assert_eq!(activated.running, NEW_VERSION);
    assert!(activated.disruptive);
    assert_eq!(bmc_version(&bmc.url, 3), NEW_VERSION);
    assert_eq!(
        bmc_version(&bmc.url, 1),
        FACTORY_GPU_VERSION,
        "another GPU changed"
    );
    let inv = dev.inventory().unwrap();
    assert!(!inv.component("gpu-fw").unwrap().pending_activation);
    assert_eq!(running(&dev), NEW_VERSION);
    assert_eq!(dev.health(), entente_devices::Health::Ok);

    // Nothing staged any more: a second activation is refused.
    let e = dev
        .activate("gpu-fw", ActivationMethod::Reboot)
        .unwrap_err();
    assert!(matches!(e, DeviceError::NothingStaged { .. }), "{e}");
}

#[test]
fn redfish_session_is_deleted_when_the_device_is_dropped() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let sessions = format!("{}/redfish/v1/SessionService/Sessions", bmc.url);
    let dev = RedfishDevice::open(
        shipped("h200"),
        &config(&bmc.url, &creds, AuthMode::Session),
    )
    .expect("open");
    assert_eq!(peek(&sessions).1["Members@odata.count"], 1);
    drop(dev);
    assert_eq!(peek(&sessions).1["Members@odata.count"], 0);
}

#[test]
fn redfish_basic_auth_reads_the_inventory() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let dev = RedfishDevice::open(shipped("b200"), &config(&bmc.url, &creds, AuthMode::Basic))
        .expect("open");
    assert_eq!(running(&dev), FACTORY_GPU_VERSION);
    let sessions = format!("{}/redfish/v1/SessionService/Sessions", bmc.url);
    assert_eq!(peek(&sessions).1["Members@odata.count"], 0);
}

#[test]
fn redfish_failed_task_is_surfaced_with_its_message() {
    let bmc = emulator(&["--fail-updates", "flash write error at block 17"]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let mut dev = RedfishDevice::open(
        shipped("a100"),
        &config(&bmc.url, &creds, AuthMode::Session),
    )
    .expect("open");
    let (bytes, info) = package(NEW_VERSION, 1000);
    let e = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .unwrap_err();
    let DeviceError::FlashFailed {
        at_percent, reason, ..
    } = &e
    else {
        panic!("expected FlashFailed, got {e}");
    };
    assert_eq!(*at_percent, 20, "{e}");
    assert!(reason.contains("ended Exception"), "{e}");
    assert!(
        reason.contains("Update.1.0.ApplyFailed: Installation of image on ")
            && reason.contains("failed: flash write error at block 17"),
        "{e}"
    );
    assert!(
        !dev.inventory()
            .unwrap()
            .component("gpu-fw")
            .unwrap()
            .pending_activation
    );
    let e = dev
        .activate("gpu-fw", ActivationMethod::Reboot)
        .unwrap_err();
    assert!(matches!(e, DeviceError::NothingStaged { .. }), "{e}");
    assert_eq!(bmc_version(&bmc.url, 1), FACTORY_GPU_VERSION);
}

#[test]
fn redfish_package_the_bmc_rejects_fails_the_stage() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let mut dev = RedfishDevice::open(
        shipped("h100-sxm5"),
        &config(&bmc.url, &creds, AuthMode::Session),
    )
    .expect("open");
    let bytes = b"not a firmware package".to_vec();
    let info = entente_devices::ImageInfo {
        version: NEW_VERSION.into(),
        len: bytes.len() as u64,
        sha256: sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes))
            .into(),
    };
    let e = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .unwrap_err();
    assert!(
        e.to_string().contains("Update.1.0.VerificationFailed"),
        "{e}"
    );
}

#[test]
fn redfish_image_that_is_not_the_announced_one_is_never_staged() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let mut dev = RedfishDevice::open(
        shipped("h100-sxm5"),
        &config(&bmc.url, &creds, AuthMode::Session),
    )
    .expect("open");
    let (mut bytes, info) = package(NEW_VERSION, 200_000);
    bytes[150_000] ^= 1;
    let e = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::DigestMismatch { .. }), "{e}");
    // The BMC got a cut body: no task was started.
    let (_, tasks) = peek(&format!("{}/redfish/v1/TaskService/Tasks", bmc.url));
    assert_eq!(tasks["Members@odata.count"], 0, "{tasks}");
    assert!(dev.pending().is_empty());
    // The device is still usable.
    let (bytes, info) = package(NEW_VERSION, 1000);
    dev.stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .expect("stage");
}

#[test]
fn redfish_bad_credentials_are_refused_with_401() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), "wrong-password", 0o600);
    for auth in [AuthMode::Session, AuthMode::Basic] {
        let e =
            RedfishDevice::open(shipped("h100-sxm5"), &config(&bmc.url, &creds, auth)).unwrap_err();
        assert!(
            matches!(
                e,
                DeviceError::Redfish {
                    status: Some(401),
                    ..
                }
            ),
            "{auth:?}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains("HTTP 401 Unauthorized"), "{text}");
        assert!(
            text.contains("Base.1.16."),
            "the registry message is kept: {text}"
        );
    }
}

#[test]
fn redfish_certificate_from_another_ca_is_refused() {
    let bmc = emulator(&[]);
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o600);
    let mut cfg = config(&bmc.url, &creds, AuthMode::Session);
    cfg.ca_file = Some(redfish_peers::other_ca());
    let e = RedfishDevice::open(shipped("h100-sxm5"), &cfg).unwrap_err();
    assert!(
        matches!(e, DeviceError::Redfish { status: None, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(
        e.to_string().contains(&bmc.url),
        "the error names the BMC: {e}"
    );
}

#[test]
fn redfish_credentials_readable_by_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let creds = credentials(dir.path(), redfish_peers::PASSWORD, 0o644);
    // No BMC is needed: the file is refused before any connection.
    let cfg = config("https://127.0.0.1:9", &creds, AuthMode::Session);
    let e = RedfishDevice::open(shipped("h100-sxm5"), &cfg).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DeviceError::Config { .. }), "{text}");
    assert!(
        text.contains(&creds.display().to_string()) && text.contains("0644"),
        "{text}"
    );
}
