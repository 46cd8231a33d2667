//! Host tests of the devlink backend: everything but the kernel's answers (the lab's scenario C
//! drives a real devlink instance).

use super::*;
use std::path::Path;

fn profile(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../hw-profiles")
        .join(format!("{name}.toml"));
    crate::profile::load_file(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn info(running: &str, stored: &str) -> DeviceInfo {
    let mut i = DeviceInfo {
        driver: Some("mlx5_core".into()),
        ..DeviceInfo::default()
    };
    i.fixed.insert("fw.psid".into(), "MT_0000000359".into());
    i.fixed.insert("board.id".into(), "MCX713106AS-VEAT".into());
    i.running.insert("fw.version".into(), running.into());
    i.stored.insert("fw.version".into(), stored.into());
    i
}

#[test]
fn profile_components_read_their_version_key_and_fixed_keys() {
    let p = profile("connectx-7");
    let inv = inventory_from_info(&p, &info("28.39.1002", "28.39.1002"));
    let fw = inv.component("fw").unwrap();
    assert_eq!(fw.running.as_deref(), Some("28.39.1002"));
    assert_eq!(fw.stored.as_deref(), Some("28.39.1002"));
    assert!(!fw.pending_activation);
    assert_eq!(
        fw.fixed.len(),
        1,
        "only the profile's fixed keys: {:?}",
        fw.fixed
    );
    assert_eq!(fw.fixed["fw.psid"], "MT_0000000359");

    let inv = inventory_from_info(&p, &info("28.39.1002", "28.40.1000"));
    assert!(inv.component("fw").unwrap().pending_activation);
}

#[test]
fn a_version_the_device_does_not_report_is_absent() {
    let p = profile("netdevsim");
    let inv = inventory_from_info(&p, &info("1", "1"));
    let c = inv.component("fw.mgmt").unwrap();
    assert_eq!((c.running.as_deref(), c.stored.as_deref()), (None, None));
    assert!(!c.pending_activation);
}

#[test]
fn open_refuses_what_cannot_be_this_profiles_device() {
    let err = |p: Profile, h: &str| {
        DevlinkDevice::open(p, h, DevlinkOptions::default())
            .unwrap_err()
            .to_string()
    };
    let e = err(profile("sim-nic"), "netdevsim/netdevsim1");
    assert!(e.contains("backend sim, not devlink"), "{e}");
    let e = err(profile("connectx-7"), "netdevsim/netdevsim1");
    assert!(e.contains("bus pci, not netdevsim"), "{e}");
    let e = err(profile("netdevsim"), "netdevsim1");
    assert!(e.contains("BUS/DEVICE"), "{e}");
    let opts = DevlinkOptions {
        firmware_dir: "/tmp/elsewhere".into(),
        ..DevlinkOptions::default()
    };
    let e = DevlinkDevice::open(profile("netdevsim"), "netdevsim/netdevsim1", opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not under the firmware root"), "{e}");
}

#[test]
fn open_names_the_instance_when_the_kernel_cannot_give_it() {
    // Whether this host's kernel has devlink or not, there is no such instance.
    let e = DevlinkDevice::open(
        profile("netdevsim"),
        "netdevsim/netdevsim4242",
        DevlinkOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("devlink netdevsim/netdevsim4242"), "{e}");
    assert!(e.contains("devlink dev info"), "{e}");
}

fn unopened(p: Profile) -> DevlinkDevice {
    DevlinkDevice {
        profile: p,
        handle: "netdevsim/netdevsim4242".parse().unwrap(),
        opts: DevlinkOptions::default(),
        link_epochs: LinkEpochs::in_memory(),
    }
}

#[test]
fn link_epochs_only_grow() {
    let mut p = profile("netdevsim");
    p.link_epoch_param = None;
    let mut d = unopened(p);
    d.set_link_epoch(2, 3).unwrap();
    d.set_link_epoch(2, 3).unwrap();
    let e = d.set_link_epoch(2, 2).unwrap_err();
    assert!(
        matches!(e, DeviceError::EpochWentBack { current: 3, .. }),
        "{e}"
    );
    d.set_link_epoch(2, 4).unwrap();
}

#[test]
fn without_a_parameter_link_epochs_are_only_recorded() {
    let mut p = profile("netdevsim");
    p.link_epoch_param = None;
    let mut d = unopened(p);
    d.set_link_epoch(2, 1).unwrap();
    d.set_link_epoch(3, 4).unwrap();
    assert_eq!(d.link_epochs.lowest(), Some(1));
    d.can_take_link_epoch(u64::MAX).unwrap();
}

#[test]
fn with_a_parameter_a_device_that_cannot_be_read_refuses_and_nothing_is_recorded() {
    let mut d = unopened(profile("netdevsim"));
    assert_eq!(
        d.profile.link_epoch_param.as_deref(),
        Some("entente_link_epoch")
    );
    let e = d.set_link_epoch(2, 1).unwrap_err();
    assert!(
        matches!(e, DeviceError::LinkEpochRefused { epoch: 1, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("devlink dev param show netdevsim/netdevsim4242 name entente_link_epoch"),
        "{e}"
    );
    assert_eq!(d.link_epochs.get(2), None);
    let e = d.can_take_link_epoch(1).unwrap_err();
    assert!(matches!(e, DeviceError::LinkEpochRefused { .. }), "{e}");
    let e = d.can_take_link_epoch(1 << 32).unwrap_err();
    assert!(e.to_string().contains("is a u32"), "{e}");
}

#[test]
fn the_parameter_holds_the_lowest_epoch_and_never_goes_back() {
    use link_epoch::param_update;
    assert_eq!(param_update(2, 0, 1).unwrap(), Some(1));
    assert_eq!(param_update(2, 3, 3).unwrap(), None);
    let e = param_update(2, 3, 2).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::EpochWentBack {
                peer: 2,
                current: 3,
                requested: 2
            }
        ),
        "{e}"
    );
    let e = param_update(2, 3, 1 << 32).unwrap_err();
    assert!(matches!(e, DeviceError::LinkEpochRefused { .. }), "{e}");
}

#[test]
fn the_record_survives_a_restart_in_its_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("devlink");
    let r = LinkEpochs::open(&state).unwrap();
    assert_eq!(r.lowest(), None);
    let r = r.with(2, 3).unwrap().with(5, 2).unwrap();
    r.save().unwrap();
    let again = LinkEpochs::open(&state).unwrap();
    assert_eq!(again, r);
    assert_eq!((again.get(2), again.lowest()), (Some(3), Some(2)));
    let e = again.with(2, 1).unwrap_err();
    assert!(
        matches!(e, DeviceError::EpochWentBack { current: 3, .. }),
        "{e}"
    );
    std::fs::write(
        state.join(link_epoch::FILE),
        "{\"format\": 9, \"peers\": {}}",
    )
    .unwrap();
    let e = LinkEpochs::open(&state).unwrap_err();
    assert!(matches!(e, DeviceError::BadState { .. }), "{e}");
}

#[test]
fn methods_are_checked_before_the_kernel_is_asked() {
    let mut d = unopened(profile("netdevsim"));
    let e = d.activate("fw.mgmt", ActivationMethod::Reboot).unwrap_err();
    assert!(matches!(e, DeviceError::MethodNotAllowed { .. }), "{e}");
    let e = d.activate("nope", ActivationMethod::Live).unwrap_err();
    assert!(matches!(e, DeviceError::UnknownComponent { .. }), "{e}");
    let e = d.rollback("fw.mgmt").unwrap_err();
    assert!(matches!(e, DeviceError::RollbackUnsupported { .. }), "{e}");
}

#[test]
fn an_image_above_the_limit_is_refused_before_anything_is_written() {
    let mut d = unopened(profile("netdevsim"));
    let info = ImageInfo {
        version: "1".into(),
        len: 1 << 30,
        sha256: [0; 32],
    };
    let e = d
        .stage("fw.mgmt", &info, &mut std::io::empty(), &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, DeviceError::ImageTooLarge { .. }), "{e}");
}
