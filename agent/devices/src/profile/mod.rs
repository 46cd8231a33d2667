//! hw-profiles: what entente knows about a kind of device, as data.
//!
//! A profile is one TOML file, `hw-profiles/<name>.toml`; the schema is documented in
//! `hw-profiles/README.md`. [`load_file`] and [`check_dir`] parse and validate profiles and turn
//! every problem into a [`ProfileError`] that names the file and the line
//! (`hw-profiles/foo.toml:12: activation method "live" listed twice`).
//!
//! A profile says how a device is matched (bus, PCI ids, driver), which firmware components it has
//! and how their versions are read, how large an image may be, whether the device keeps the
//! previous image (dual bank), and which activation methods it supports, each with whether it
//! disrupts traffic and how long it may take (the neighbour lease must cover that time). It does
//! not say *how* a backend carries out a method: that mapping is fixed per backend (see the
//! README's "Backends" section), so a profile cannot ask a backend for something it cannot do.

mod check;
mod raw;

pub use check::{check_dir, load_dir, load_file, parse, CheckReport, ProfileError};

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The schema version this crate reads (`schema = 1` in every profile).
pub const SCHEMA_VERSION: i64 = 1;

/// How a staged image is made the running one, least disruptive first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationMethod {
    /// Live patch with no reset (devlink `fw_activate` with `limit no_reset`).
    Live,
    /// A device (firmware) reset: devlink `fw_activate`, a synchronised reset of every function.
    Reset,
    /// A host reboot or power cycle.
    Reboot,
}

impl ActivationMethod {
    /// Every method, least disruptive first.
    pub const ALL: [ActivationMethod; 3] = [Self::Live, Self::Reset, Self::Reboot];

    /// The name used in profiles and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Reset => "reset",
            Self::Reboot => "reboot",
        }
    }
}

impl fmt::Display for ActivationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ActivationMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown activation method {s:?} (live, reset or reboot)"))
    }
}

/// The software that reads versions from, stages to and activates a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// entente's file-backed simulated device (`crate::sim`).
    Sim,
    /// The kernel's devlink interface (`devlink dev info / flash / reload`).
    Devlink,
    /// A BMC's Redfish `UpdateService` and `FirmwareInventory`.
    Redfish,
    /// NVIDIA's management library: inventory only, it cannot flash.
    Nvml,
    /// No firmware backend: the device has nothing to flash (rxe).
    None,
}

impl Backend {
    /// The name used in profiles.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Devlink => "devlink",
            Self::Redfish => "redfish",
            Self::Nvml => "nvml",
            Self::None => "none",
        }
    }

    /// Whether this backend can stage and activate firmware.
    pub fn can_flash(self) -> bool {
        matches!(self, Self::Sim | Self::Devlink | Self::Redfish)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of device a profile describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A network adapter.
    Nic,
    /// A data processing unit (a NIC with its own processors).
    Dpu,
    /// A GPU.
    Gpu,
}

/// Where a device is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    /// A PCI function, matched by vendor and device id.
    Pci,
    /// The netdevsim bus (`/sys/bus/netdevsim`), matched by driver.
    Netdevsim,
    /// A software device with no bus (rxe), matched by driver.
    Virtual,
    /// entente's simulated device: a directory, chosen by profile name.
    Sim,
}

/// A 16-bit PCI vendor or device id; written `"0x15b3"` in profiles and JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciId(pub u16);

impl fmt::Display for PciId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

impl Serialize for PciId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a device is recognised as one of this profile's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Match {
    /// Where the device is found.
    pub bus: Bus,
    /// PCI vendor id (PCI bus only).
    pub pci_vendor: Option<PciId>,
    /// PCI device ids (PCI bus only; at least one there).
    pub pci_devices: Vec<PciId>,
    /// The kernel driver bound to the device, which is also the devlink driver name.
    pub driver: Option<String>,
}

/// A firmware-bearing part of a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Component {
    /// entente's name for it (unique within the profile).
    pub name: String,
    /// Where the backend reads its running and stored versions: a devlink info version name, a
    /// Redfish `FirmwareInventory` id (`{index}` stands for the device's slot), a sim component.
    pub version_key: String,
    /// Fixed identifiers reported with it (devlink info "fixed" versions such as `fw.psid`).
    pub fixed_keys: Vec<String>,
    /// Where the inventory backend reads the running version, when it is not the update backend.
    pub inventory_key: Option<String>,
    /// The devlink flash component, when the driver wants one (absent: flash the whole device).
    pub flash_component: Option<String>,
    /// Whether entente can flash it (false: inventory only).
    pub flashable: bool,
    /// Largest image entente will stage, in bytes (flashable components only).
    pub max_image_bytes: Option<u64>,
    /// Whether the device keeps the previous image in a second bank, so rollback needs no flash.
    pub dual_bank: bool,
}

/// One way a profile's device can activate a staged image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activation {
    /// The method.
    pub method: ActivationMethod,
    /// Whether it interrupts traffic (then it needs neighbour leases and the drain hook).
    pub disruptive: bool,
    /// The longest it may take, in milliseconds; a lease must cover it.
    pub max_ms: u64,
    /// How the backend carries it out on this device, for people.
    pub note: Option<String>,
}

/// A validated hw-profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The profile's name, equal to its file name without `.toml`.
    pub name: String,
    /// One line saying what hardware this is.
    pub description: String,
    /// Kind of device.
    pub class: DeviceClass,
    /// A lab or simulated device rather than production hardware.
    pub lab: bool,
    /// The backend that stages and activates.
    pub backend: Backend,
    /// The backend that reads versions (defaults to `backend`).
    pub inventory: Backend,
    /// How the device is recognised.
    #[serde(rename = "match")]
    pub matcher: Match,
    /// Its firmware components.
    pub components: Vec<Component>,
    /// Its activation methods, least disruptive first.
    pub activations: Vec<Activation>,
    /// The epochs (min, max) that firmware no manifest describes speaks (factory firmware,
    /// an image installed by other means): `base_window = [0, 0]` unless the profile says.
    pub base_window: (u64, u64),
    /// The devlink runtime parameter (a driver-specific u32) where the devlink backend writes
    /// the node's lowest committed link epoch (`[devlink] link_epoch_param`); none: the device
    /// holds no link epoch and the agent's own record is the only one.
    pub link_epoch_param: Option<String>,
}

impl Profile {
    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The activation entry for `method`, if the device supports it.
    pub fn activation(&self, method: ActivationMethod) -> Option<&Activation> {
        self.activations.iter().find(|a| a.method == method)
    }

    /// The methods this device supports, least disruptive first.
    pub fn methods(&self) -> Vec<ActivationMethod> {
        self.activations.iter().map(|a| a.method).collect()
    }

    /// The least disruptive supported activation (what the devlink-flash loop prefers).
    pub fn least_disruptive(&self) -> Option<&Activation> {
        self.activations.first()
    }

    /// Whether a PCI function with these ids is this profile's device.
    pub fn matches_pci(&self, vendor: u16, device: u16) -> bool {
        self.matcher.bus == Bus::Pci
            && self.matcher.pci_vendor == Some(PciId(vendor))
            && self.matcher.pci_devices.contains(&PciId(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_round_trip_and_order_by_disruption() {
        for m in ActivationMethod::ALL {
            assert_eq!(m.name().parse::<ActivationMethod>(), Ok(m));
        }
        assert!(ActivationMethod::Live < ActivationMethod::Reset);
        assert!(ActivationMethod::Reset < ActivationMethod::Reboot);
        assert!("fast".parse::<ActivationMethod>().is_err());
    }

    #[test]
    fn pci_ids_print_as_in_pci_ids() {
        assert_eq!(PciId(0x15b3).to_string(), "0x15b3");
        assert_eq!(serde_json::to_string(&PciId(0x101d)).unwrap(), "\"0x101d\"");
    }

    #[test]
    fn only_update_backends_flash() {
        assert!(Backend::Devlink.can_flash() && Backend::Redfish.can_flash());
        assert!(!Backend::Nvml.can_flash() && !Backend::None.can_flash());
    }
}
