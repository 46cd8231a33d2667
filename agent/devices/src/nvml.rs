//! The NVML backend: GPU inventory read on the host through NVIDIA's management library
//! (`libnvidia-ml.so.1`, loaded at run time by `nvml-wrapper`). It only reads; GPU firmware is
//! flashed through the BMC ([`crate::redfish`]).
//!
//! Where the library is absent (no NVIDIA driver), [`inventory`] returns
//! [`DeviceError::Unavailable`], displayed `unavailable: libnvidia-ml not found`; nothing panics.

use crate::device::DeviceError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::Serialize;
use std::ffi::OsStr;

/// The library NVML is loaded from, found through the dynamic linker's search path.
pub const LIBRARY: &str = "libnvidia-ml.so.1";

/// One GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// NVML's index of the GPU.
    pub index: u32,
    /// The product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// The PCI bus id (`00000000:18:00.0`).
    pub pci_bus_id: String,
    /// The GPU's UUID (`GPU-…`).
    pub uuid: String,
    /// The VBIOS version (the profiles' `inventory_key = "vbios"`).
    pub vbios_version: String,
    /// The InfoROM image version, where the GPU reports one.
    pub inforom_image_version: Option<String>,
}

impl GpuInfo {
    /// The version a profile's `inventory_key` names: `vbios` or `inforom`.
    pub fn version(&self, inventory_key: &str) -> Option<&str> {
        match inventory_key {
            "vbios" => Some(&self.vbios_version),
            "inforom" => self.inforom_image_version.as_deref(),
            _ => None,
        }
    }
}

/// Every GPU NVML sees, and the driver's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuInventory {
    /// The NVIDIA driver's version.
    pub driver_version: String,
    /// The GPUs, in NVML index order.
    pub gpus: Vec<GpuInfo>,
}

/// Reads the GPU inventory through [`LIBRARY`].
pub fn inventory() -> Result<GpuInventory, DeviceError> {
    inventory_from(OsStr::new(LIBRARY))
}

/// Reads the GPU inventory through the NVML library at `library` (a file name the dynamic
/// linker searches for, or a path).
pub fn inventory_from(library: &OsStr) -> Result<GpuInventory, DeviceError> {
    let nvml = Nvml::builder()
        .lib_path(library)
        .init()
        .map_err(init_error)?;
    let fail = |what: String| {
        move |e: NvmlError| DeviceError::Nvml {
            what,
            message: e.to_string(),
        }
    };
    let driver_version = nvml
        .sys_driver_version()
        .map_err(fail("reading the driver version".into()))?;
    let count = nvml
        .device_count()
        .map_err(fail("counting the GPUs".into()))?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let gpu = nvml
            .device_by_index(index)
            .map_err(fail(format!("opening GPU {index}")))?;
        let inforom_image_version = match gpu.info_rom_image_version() {
            Ok(v) => Some(v),
            Err(NvmlError::NotSupported) => None,
            Err(e) => {
                return Err(fail(format!("reading the InfoROM version of GPU {index}"))(
                    e,
                ))
            }
        };
        gpus.push(GpuInfo {
            index,
            name: gpu
                .name()
                .map_err(fail(format!("reading the name of GPU {index}")))?,
            pci_bus_id: gpu
                .pci_info()
                .map_err(fail(format!("reading the PCI address of GPU {index}")))?
                .bus_id,
            uuid: gpu
                .uuid()
                .map_err(fail(format!("reading the UUID of GPU {index}")))?,
            vbios_version: gpu
                .vbios_version()
                .map_err(fail(format!("reading the VBIOS version of GPU {index}")))?,
            inforom_image_version,
        });
    }
    Ok(GpuInventory {
        driver_version,
        gpus,
    })
}

/// What a failed NVML start means for the agent.
fn init_error(e: NvmlError) -> DeviceError {
    match e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => DeviceError::Unavailable {
            reason: "libnvidia-ml not found".into(),
        },
        NvmlError::DriverNotLoaded => DeviceError::Unavailable {
            reason: "the NVIDIA driver is not loaded".into(),
        },
        other => DeviceError::Nvml {
            what: "starting NVML".into(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_reported_unavailable() {
        let e = inventory_from(OsStr::new("/nonexistent/libnvidia-ml.so.1")).unwrap_err();
        assert_eq!(e.to_string(), "unavailable: libnvidia-ml not found");
    }

    #[test]
    fn inventory_serialises_with_stable_field_names() {
        let gpu = GpuInfo {
            index: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            pci_bus_id: "00000000:18:00.0".into(),
            uuid: "GPU-1".into(),
            vbios_version: "96.00.61.00.01".into(),
            inforom_image_version: None,
        };
        assert_eq!(gpu.version("vbios"), Some("96.00.61.00.01"));
        assert_eq!(gpu.version("inforom"), None);
        let j = serde_json::to_value(GpuInventory {
            driver_version: "550.54.15".into(),
            gpus: vec![gpu],
        })
        .unwrap();
        assert_eq!(j["driver_version"], "550.54.15");
        assert_eq!(j["gpus"][0]["vbios_version"], "96.00.61.00.01");
        assert_eq!(
            j["gpus"][0]["inforom_image_version"],
            serde_json::Value::Null
        );
    }
}
