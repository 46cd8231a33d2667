//! entente-devices: the `Device` trait, hw-profiles and device backends.
//!
//! - [`profile`]: hw-profiles (`hw-profiles/<name>.toml`): loading, validation with
//!   `file:line` errors, and the typed [`profile::Profile`] the agent reads.
//! - [`device`]: the [`Device`] trait every backend implements (inventory, stage with progress,
//!   activate with a method the profile allows, rollback, link epochs, health) and its errors.
//! - [`sim`]: the simulated backend: file-backed A/B banks with fault injection.
//! - [`redfish`]: GPU baseboard firmware through a BMC's Redfish UpdateService (multipart push
//!   with apply time `OnReset`, TaskService progress, activation by a reset), sessions or basic
//!   auth, TLS with a configured CA.
//! - [`nvml`]: GPU inventory (name, PCI address, VBIOS, InfoROM, driver) through NVIDIA's
//!   management library, loaded at run time; "unavailable" where it is absent.
//! - [`devlink`]: NIC firmware through the kernel's devlink interface (generic netlink): dev
//!   info, dev flash with progress, dev reload action fw_activate.
//!
//! This crate depends on no other project crate: images arrive as a reader
//! with their expected length and sha256.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod device;
pub mod devlink;
pub mod nvml;
pub mod profile;
pub mod redfish;
pub mod sim;

pub use device::{Device, DeviceError, Health, ImageInfo, Inventory, Progress};
pub use profile::{ActivationMethod, Profile};
pub use redfish::{RedfishConfig, RedfishDevice};
