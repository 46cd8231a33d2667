//! The shipped hw-profiles: they all pass, they carry the identifiers the issue names, and the
//! checks across files catch duplicates.

use entente_devices::profile::{self, ActivationMethod, Backend, Bus, DeviceClass};
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw-profiles")
}

const NAMES: [&str; 11] = [
    "a100",
    "b200",
    "bluefield-3",
    "connectx-6dx",
    "connectx-7",
    "h100-sxm5",
    "h200",
    "netdevsim",
    "rxe",
    "sim-gpu",
    "sim-nic",
];

#[test]
fn every_shipped_profile_passes() {
    let report = profile::check_dir(&shipped());
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let names: Vec<&str> = report.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, NAMES);
    assert!(report.ok());
}

fn load(name: &str) -> profile::Profile {
    profile::load_file(&shipped().join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn mellanox_profiles_carry_pci_ids_and_devlink_activation_levels() {
    for (name, device) in [
        ("connectx-6dx", 0x101d),
        ("connectx-7", 0x1021),
        ("bluefield-3", 0xa2dc),
    ] {
        let p = load(name);
        assert!(p.matches_pci(0x15b3, device), "{name}");
        assert_eq!(p.backend, Backend::Devlink, "{name}");
        assert_eq!(p.matcher.driver.as_deref(), Some("mlx5_core"), "{name}");
        let fw = p.component("fw").expect("fw component");
        assert_eq!(fw.version_key, "fw.version");
        assert_eq!(fw.fixed_keys, vec!["fw.psid".to_string()]);
        assert_eq!(
            p.methods(),
            vec![
                ActivationMethod::Live,
                ActivationMethod::Reset,
                ActivationMethod::Reboot
            ],
            "{name}"
        );
        assert!(!p.activation(ActivationMethod::Live).unwrap().disruptive);
        assert!(p.activation(ActivationMethod::Reset).unwrap().disruptive);
    }
}

#[test]
fn gpu_profiles_update_through_redfish_and_read_through_nvml() {
    for (name, devices) in [
        ("h100-sxm5", &[0x2330u16][..]),
        ("h200", &[0x2335]),
        ("b200", &[0x2901, 0x2909]),
        ("a100", &[0x20b0, 0x20b2]),
    ] {
        let p = load(name);
        assert_eq!(p.class, DeviceClass::Gpu);
        assert_eq!((p.backend, p.inventory), (Backend::Redfish, Backend::Nvml));
        for &d in devices {
            assert!(p.matches_pci(0x10de, d), "{name} {d:#x}");
        }
        let c = &p.components[0];
        assert_eq!(c.version_key, "HGX_FW_GPU_SXM_{index}");
        assert!(p.activations.iter().all(|a| a.disruptive));
    }
}

#[test]
fn lab_profiles_are_marked_and_rxe_has_nothing_to_flash() {
    for name in ["netdevsim", "rxe", "sim-nic", "sim-gpu"] {
        assert!(load(name).lab, "{name}");
    }
    let rxe = load("rxe");
    assert_eq!(rxe.matcher.bus, Bus::Virtual);
    assert!(rxe.components.iter().all(|c| !c.flashable));
    assert!(rxe.activations.is_empty());
    let nsim = load("netdevsim");
    assert_eq!(
        nsim.component("fw.mgmt")
            .unwrap()
            .flash_component
            .as_deref(),
        Some("fw.mgmt")
    );
    assert!(load("sim-nic").components.iter().all(|c| c.dual_bank));
}

/// A copy of the shipped directory in a temporary one, to break.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(shipped()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn a_second_profile_for_the_same_device_is_named_with_its_line() {
    let dir = copy();
    let text = std::fs::read_to_string(dir.path().join("connectx-7.toml")).unwrap();
    let clone = text.replace("name = \"connectx-7\"", "name = \"connectx-7x\"");
    std::fs::write(dir.path().join("connectx-7x.toml"), &clone).unwrap();
    let line = clone
        .lines()
        .position(|l| l.starts_with("pci_devices"))
        .unwrap()
        + 1;
    let report = profile::check_dir(dir.path());
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    let expected = format!(
        "{}:{line}: PCI device 0x15b3:0x1021 is already matched by connectx-7.toml",
        dir.path().join("connectx-7x.toml").display()
    );
    assert_eq!(errors, vec![expected]);
    assert!(!report.ok());
    // The first file keeps the device; the duplicate is left out.
    assert_eq!(report.profiles.len(), NAMES.len());
}

#[test]
fn errors_in_several_files_are_all_reported() {
    let dir = copy();
    let a = dir.path().join("h200.toml");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&a, text.replace("max_ms = 1800000", "max_ms = -1")).unwrap();
    let b = dir.path().join("sim-nic.toml");
    let text = std::fs::read_to_string(&b).unwrap();
    std::fs::write(
        &b,
        text.replace("dual_bank = true", "dual_bank = true\nbanks = 2"),
    )
    .unwrap();
    let report = profile::check_dir(dir.path());
    assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
    assert!(report.errors[0].file.ends_with("h200.toml"));
    assert!(report.errors[0].message.contains("max_ms -1"));
    assert!(report.errors[1].file.ends_with("sim-nic.toml"));
    assert!(report.errors[1].message.contains("unknown field `banks`"));
    assert!(report.errors.iter().all(|e| e.line > 0));
    assert!(profile::load_dir(dir.path()).is_err());
}

#[test]
fn an_empty_or_missing_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!profile::check_dir(dir.path()).ok());
    let report = profile::check_dir(&dir.path().join("absent"));
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].message.contains("cannot read directory"));
}
