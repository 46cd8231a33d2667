//! The profile file as written: serde types that keep each value's position in the file, so the
//! checks in `check.rs` can name the line of whatever is wrong.

use super::{ActivationMethod, Backend, Bus, DeviceClass};
use serde::Deserialize;
use toml::Spanned;

/// A whole profile file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub schema: Spanned<i64>,
    pub name: Spanned<String>,
    pub description: Spanned<String>,
    pub class: Spanned<DeviceClass>,
    #[serde(default)]
    pub lab: Option<Spanned<bool>>,
    pub backend: Spanned<Backend>,
    #[serde(default)]
    pub inventory: Option<Spanned<Backend>>,
    #[serde(rename = "match")]
    pub matcher: Spanned<RawMatch>,
    #[serde(default, rename = "component")]
    pub components: Vec<Spanned<RawComponent>>,
    #[serde(default, rename = "activation")]
    pub activations: Vec<Spanned<RawActivation>>,
    #[serde(default)]
    pub base_window: Option<Spanned<[i64; 2]>>,
    #[serde(default)]
    pub devlink: Option<Spanned<RawDevlink>>,
}

/// `[devlink]`: settings only the devlink backend reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDevlink {
    #[serde(default)]
    pub link_epoch_param: Option<Spanned<String>>,
}

/// `[match]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub bus: Spanned<Bus>,
    #[serde(default)]
    pub pci_vendor: Option<Spanned<String>>,
    #[serde(default)]
    pub pci_devices: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub driver: Option<Spanned<String>>,
}

/// One `[[component]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub name: Spanned<String>,
    pub version_key: Spanned<String>,
    #[serde(default)]
    pub fixed_keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub inventory_key: Option<Spanned<String>>,
    #[serde(default)]
    pub flash_component: Option<Spanned<String>>,
    #[serde(default)]
    pub flashable: Option<Spanned<bool>>,
    #[serde(default)]
    pub max_image_bytes: Option<Spanned<i64>>,
    pub dual_bank: Spanned<bool>,
}

/// One `[[activation]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActivation {
    pub method: Spanned<ActivationMethod>,
    pub disruptive: Spanned<bool>,
    pub max_ms: Spanned<i64>,
    #[serde(default)]
    pub note: Option<Spanned<String>>,
}
