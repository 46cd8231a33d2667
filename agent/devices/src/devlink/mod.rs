//! The devlink backend: NIC firmware through the kernel's devlink interface, as mlx5 (ConnectX,
//! BlueField) implements it, over generic netlink.
//!
//! - inventory: `DEVLINK_CMD_INFO_GET`; each profile component reads its running and stored
//!   versions under its `version_key` and its `fixed_keys` among the fixed versions (`fw.psid`);
//! - stage: the verified image is written to `<firmware_dir>/<sha256>.bin` (under
//!   `/lib/firmware`, where the kernel's firmware loader reads), then `DEVLINK_CMD_FLASH_UPDATE`
//!   names it with the component's `flash_component` and the configured overwrite mask; progress
//!   comes from the `DEVLINK_CMD_FLASH_UPDATE_STATUS` notifications of the `config` multicast
//!   group; the file is removed afterwards, also on error; the stored version read back must be
//!   the image's;
//! - activate: `DEVLINK_CMD_RELOAD` with action `fw_activate`, limit `no_reset` for the `live`
//!   method and no limit for `reset`; the actions the kernel reports performed must include
//!   `fw_activate` and the running version read back must be the one that was stored. `reboot`
//!   is the host's to do, not devlink's;
//! - link epochs: `set_link_epoch` keeps each peer's committed epoch (in `link-epochs.json`
//!   under the state directory when there is one) and, when the profile names a
//!   `link_epoch_param`, writes the node's lowest committed link epoch to that runtime u32
//!   parameter with `DEVLINK_CMD_PARAM_SET`, after reading what the device holds with
//!   `DEVLINK_CMD_PARAM_GET`: the value never goes back.
//!
//! Kernel refusals carry the driver's extended ack message verbatim. devlink keeps no previous
//! image (profiles say `dual_bank = false`), so rollback means staging the old image again.

mod error;
mod firmware;
mod link_epoch;
mod message;
mod param;
mod requests;
mod socket;
mod uapi;

pub use error::NetlinkError;
pub use firmware::{place, relative_name, PlacedImage};
pub use link_epoch::LinkEpochs;
pub use message::{Attr, Bitfield32, DevlinkMessage, VersionPair};
pub use param::{param_get_request, param_set_u32_request, ParamInfo, ParamValue};
pub use requests::{
    flash_request, fw_activate_request, info_request, ActionsPerformed, DeviceInfo, FlashPhase,
    FlashStatus, Handle, Overwrite,
};

use crate::device::{
    check_method, Activated, ComponentVersions, Device, DeviceError, Health, ImageInfo, Inventory,
    Progress, Staged,
};
use crate::profile::{ActivationMethod, Backend, Bus, Component, Profile};
use socket::Connection;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Where the kernel's firmware loader reads files (devlink names are relative to it).
pub const FIRMWARE_ROOT: &str = "/lib/firmware";
/// Where staged images wait during a flash, by default.
pub const FIRMWARE_DIR: &str = "/lib/firmware/entente";

/// How often a flash's progress is looked at.
const PROGRESS_POLL: Duration = Duration::from_millis(100);
/// Added to a profile's `max_ms` before a reload is given up on.
const RELOAD_MARGIN: Duration = Duration::from_secs(10);

/// How a devlink device is driven beyond what its profile says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevlinkOptions {
    /// The firmware loader's root; flash file names are relative to it.
    pub firmware_root: PathBuf,
    /// Where images are placed while they are flashed (under `firmware_root`).
    pub firmware_dir: PathBuf,
    /// What a flash may overwrite besides the firmware.
    pub overwrite: Overwrite,
    /// Longest a flash may take before it is given up on.
    pub flash_timeout: Duration,
    /// Longest any other request may take.
    pub request_timeout: Duration,
    /// Where the backend keeps its own state (the committed link epochs); `None`: in memory.
    pub state_dir: Option<PathBuf>,
}

impl Default for DevlinkOptions {
    fn default() -> Self {
        DevlinkOptions {
            firmware_root: FIRMWARE_ROOT.into(),
            firmware_dir: FIRMWARE_DIR.into(),
            overwrite: Overwrite::default(),
            flash_timeout: Duration::from_secs(30 * 60),
            request_timeout: Duration::from_secs(30),
            state_dir: None,
        }
    }
}

/// A device driven through devlink.
#[derive(Debug)]
pub struct DevlinkDevice {
    profile: Profile,
    handle: Handle,
    opts: DevlinkOptions,
    /// Committed link epoch per peer; the profile's `link_epoch_param`, when it names one,
    /// holds the lowest of them on the device.
    link_epochs: LinkEpochs,
}

/// The devlink bus name of a profile's bus.
fn bus_name(bus: Bus) -> Option<&'static str> {
    match bus {
        Bus::Pci => Some("pci"),
        Bus::Netdevsim => Some("netdevsim"),
        Bus::Virtual | Bus::Sim => None,
    }
}

/// The inventory of `profile`'s components in what devlink reported.
pub fn inventory_from_info(profile: &Profile, info: &DeviceInfo) -> Inventory {
    let components = profile
        .components
        .iter()
        .map(|c| {
            let running = info.running.get(&c.version_key).cloned();
            let stored = info.stored.get(&c.version_key).cloned();
            let fixed = c
                .fixed_keys
                .iter()
                .filter_map(|k| info.fixed.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            ComponentVersions {
                component: c.name.clone(),
                fixed,
                pending_activation: stored.is_some() && stored != running,
                running,
                stored,
            }
        })
        .collect();
    Inventory {
        profile: profile.name.clone(),
        components,
    }
}

impl DevlinkDevice {
    /// Opens the devlink instance `handle` (`bus/device`) for `profile`, which must be a devlink
    /// profile whose bus and driver are the instance's: the kernel is asked for the instance's
    /// info now, so a missing device or a kernel without devlink is reported here.
    pub fn open(
        profile: Profile,
        handle: &str,
        opts: DevlinkOptions,
    ) -> Result<DevlinkDevice, DeviceError> {
        let path = PathBuf::from(format!("devlink {handle}"));
        let bad = |reason: String| DeviceError::BadState {
            path: path.clone(),
            reason,
        };
        let handle: Handle = handle.parse().map_err(bad)?;
        if profile.backend != Backend::Devlink {
            return Err(bad(format!(
                "profile {} has backend {}, not devlink",
                profile.name, profile.backend
            )));
        }
        let want_bus = bus_name(profile.matcher.bus);
        if want_bus != Some(handle.bus.as_str()) {
            return Err(bad(format!(
                "profile {} matches devices on bus {}, not {}",
                profile.name,
                want_bus.unwrap_or("(none devlink reaches)"),
                handle.bus
            )));
        }
        relative_name(&opts.firmware_root, &opts.firmware_dir).map_err(bad)?;
        let link_epochs = match &opts.state_dir {
            Some(dir) => LinkEpochs::open(dir)?,
            None => LinkEpochs::in_memory(),
        };
        let dev = DevlinkDevice {
            profile,
            handle,
            opts,
            link_epochs,
        };
        let info = dev
            .info()
            .map_err(|e| bad(format!("devlink dev info: {e}")))?;
        if let (Some(want), Some(got)) = (&dev.profile.matcher.driver, &info.driver) {
            if want != got {
                return Err(bad(format!(
                    "driver {got} is bound, but profile {} is for driver {want}",
                    dev.profile.name
                )));
            }
        }
        Ok(dev)
    }

    /// The instance's handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The options it was opened with.
    pub fn options(&self) -> &DevlinkOptions {
        &self.opts
    }

    fn connect(&self) -> Result<Connection, NetlinkError> {
        Connection::open(self.opts.request_timeout)
    }

    /// `devlink dev info`.
    pub fn info(&self) -> Result<DeviceInfo, NetlinkError> {
        let mut c = self.connect()?;
        let replies = c.request(info_request(&self.handle), self.opts.request_timeout)?;
        replies
            .iter()
            .find(|m| self.handle.matches(m))
            .map(DeviceInfo::from_reply)
            .ok_or_else(|| NetlinkError::Decode("devlink info answered without the device".into()))
    }

    /// `devlink dev flash` of `file` (relative to the firmware root), giving every flash
    /// notification about this instance to `observe`.
    pub fn flash(
        &self,
        file: &str,
        component: Option<&str>,
        observe: &mut dyn FnMut(&FlashStatus),
    ) -> Result<(), NetlinkError> {
        let monitor = self.connect()?;
        monitor.subscribe_config()?;
        let mut c = self.connect()?;
        let request = flash_request(&self.handle, file, component, self.opts.overwrite);
        let timeout = self.opts.flash_timeout;
        let handle = &self.handle;
        // The kernel flashes inside the request's send: progress is read here meanwhile.
        std::thread::scope(|scope| {
            let flashing = scope.spawn(move || c.request(request, timeout));
            loop {
                let finished = flashing.is_finished();
                monitor.drain(PROGRESS_POLL, &mut |n| {
                    if handle.matches(&n) {
                        if let Some(s) = FlashStatus::from_notification(&n) {
                            observe(&s);
                        }
                    }
                })?;
                if finished {
                    break;
                }
            }
            flashing.join().map_err(|_| {
                NetlinkError::Decode("the thread sending the flash request panicked".into())
            })?
        })?;
        Ok(())
    }

    /// `devlink dev reload action fw_activate [limit no_reset]`, allowing `timeout`; returns the
    /// actions the kernel reports performed.
    pub fn fw_activate(
        &self,
        no_reset: bool,
        timeout: Duration,
    ) -> Result<ActionsPerformed, NetlinkError> {
        let mut c = self.connect()?;
        let replies = c.request(fw_activate_request(&self.handle, no_reset), timeout)?;
        Ok(replies
            .iter()
            .find_map(ActionsPerformed::from_reply)
            .unwrap_or_default())
    }

    /// `devlink dev param show DEV name NAME`.
    pub fn param(&self, name: &str) -> Result<ParamInfo, NetlinkError> {
        let mut c = self.connect()?;
        let replies = c.request(
            param_get_request(&self.handle, name),
            self.opts.request_timeout,
        )?;
        replies
            .iter()
            .filter(|m| self.handle.matches(m))
            .find_map(ParamInfo::from_reply)
            .cloned()
            .ok_or_else(|| {
                NetlinkError::Decode(format!("devlink param answered without parameter {name}"))
            })
    }

    /// The runtime value of the u32 parameter `name`.
    pub fn param_u32(&self, name: &str) -> Result<u32, NetlinkError> {
        self.param(name)?
            .runtime_u32()
            .map_err(NetlinkError::Decode)
    }

    /// `devlink dev param set DEV name NAME value VALUE cmode runtime`, for a u32 parameter.
    pub fn set_param_u32(&self, name: &str, value: u32) -> Result<(), NetlinkError> {
        let mut c = self.connect()?;
        c.request(
            param_set_u32_request(&self.handle, name, value),
            self.opts.request_timeout,
        )?;
        Ok(())
    }

    /// The link-epoch parameter's runtime value, read for link epoch `epoch`.
    fn held_link_epoch(&self, param: &str, epoch: u64) -> Result<u32, DeviceError> {
        self.param_u32(param)
            .map_err(|e| DeviceError::LinkEpochRefused {
                epoch,
                reason: format!("devlink dev param show {} name {param}: {e}", self.handle),
            })
    }

    /// The device's state as the inventory reads it, for errors.
    fn state_error(&self, e: NetlinkError) -> DeviceError {
        DeviceError::BadState {
            path: PathBuf::from(format!("devlink {}", self.handle)),
            reason: format!("devlink dev info: {e}"),
        }
    }

    fn flashable(&self, name: &str) -> Result<Component, DeviceError> {
        crate::device::flashable_component(&self.profile, name).cloned()
    }
}

impl Device for DevlinkDevice {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn inventory(&self) -> Result<Inventory, DeviceError> {
        let info = self.info().map_err(|e| self.state_error(e))?;
        Ok(inventory_from_info(&self.profile, &info))
    }

    fn stage(
        &mut self,
        component: &str,
        info: &ImageInfo,
        image: &mut dyn Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Staged, DeviceError> {
        let c = self.flashable(component)?;
        let max = c.max_image_bytes.unwrap_or(0);
        if info.len > max {
            return Err(DeviceError::ImageTooLarge {
                component: component.into(),
                len: info.len,
                max,
            });
        }
        let placed = place(
            &self.opts.firmware_root,
            &self.opts.firmware_dir,
            component,
            info,
            image,
        )?;
        let mut last = Progress { done: 0, total: 0 };
        let flashed = self.flash(placed.name(), c.flash_component.as_deref(), &mut |s| {
            if s.total > 0 {
                last = Progress {
                    done: s.done,
                    total: s.total,
                };
                progress(last);
            }
        });
        drop(placed);
        let at_percent = if last.total == 0 { 0 } else { last.percent() };
        let failed = |reason: String| DeviceError::FlashFailed {
            component: component.into(),
            at_percent,
            reason,
        };
        flashed.map_err(|e| failed(format!("devlink dev flash {}: {e}", self.handle)))?;
        let now = self.info().map_err(|e| self.state_error(e))?;
        match now.stored.get(&c.version_key) {
            Some(v) if *v == info.version => Ok(Staged {
                component: component.into(),
                version: info.version.clone(),
                slot: format!("devlink {} stored {}", self.handle, c.version_key),
            }),
            other => Err(failed(format!(
                "after the flash devlink reports stored {} {}, but the image is version {}",
                c.version_key,
                other.map_or("(none)".into(), |v| format!("{v:?}")),
                info.version
            ))),
        }
    }

    fn activate(
        &mut self,
        component: &str,
        method: ActivationMethod,
    ) -> Result<Activated, DeviceError> {
        let c = self.flashable(component)?;
        check_method(&self.profile, method)?;
        let act = self.profile.activation(method).cloned().expect("checked");
        let failed = |reason: String| DeviceError::ActivationFailed {
            component: component.into(),
            method,
            reason,
        };
        let no_reset =
            match method {
                ActivationMethod::Live => true,
                ActivationMethod::Reset => false,
                ActivationMethod::Reboot => return Err(failed(
                    "devlink cannot reboot the host: reboot it, and the device runs its stored \
                     firmware"
                        .into(),
                )),
            };
        let before = self.info().map_err(|e| self.state_error(e))?;
        let previous = before.running.get(&c.version_key).cloned();
        let target = match before.stored.get(&c.version_key) {
            Some(s) if Some(s) != previous.as_ref() => s.clone(),
            _ => {
                return Err(DeviceError::NothingStaged {
                    component: component.into(),
                })
            }
        };
        let limit = if no_reset { " limit no_reset" } else { "" };
        let timeout = Duration::from_millis(act.max_ms) + RELOAD_MARGIN;
        let performed = self.fw_activate(no_reset, timeout).map_err(|e| {
            failed(format!(
                "devlink dev reload {} action fw_activate{limit}: {e}",
                self.handle
            ))
        })?;
        if !performed.fw_activate() {
            return Err(failed(format!(
                "the kernel reports actions performed: {performed}, not fw_activate"
            )));
        }
        let after = self.info().map_err(|e| self.state_error(e))?;
        let running = after.running.get(&c.version_key).cloned();
        if running.as_ref() != Some(&target) {
            return Err(failed(format!(
                "after fw_activate devlink reports running {} {}, expected {target}",
                c.version_key,
                running.map_or("(none)".into(), |v| format!("{v:?}"))
            )));
        }
        Ok(Activated {
            component: component.into(),
            method,
            previous,
            running: target,
            disruptive: act.disruptive,
        })
    }

    fn rollback(&mut self, component: &str) -> Result<Activated, DeviceError> {
        self.flashable(component)?;
        Err(DeviceError::RollbackUnsupported {
            profile: self.profile.name.clone(),
            component: component.into(),
        })
    }

    /// The backend's record of each link, raised to the device's parameter where the profile
    /// names one (the device holds the node's lowest committed link epoch: no link is below).
    fn link_epochs(&self) -> std::collections::BTreeMap<u64, u64> {
        let mut epochs = self.link_epochs.all().clone();
        let held = self
            .profile
            .link_epoch_param
            .as_deref()
            .and_then(|p| self.param_u32(p).ok());
        if let Some(held) = held {
            for e in epochs.values_mut() {
                *e = (*e).max(u64::from(held));
            }
        }
        epochs
    }

    /// Records the peer's epoch (durably, with a state directory), then brings the profile's
    /// link-epoch parameter, if any, up to the node's lowest committed link epoch.
    fn set_link_epoch(&mut self, peer: u64, epoch: u64) -> Result<(), DeviceError> {
        let next = self.link_epochs.with(peer, epoch)?;
        let Some(param) = self.profile.link_epoch_param.clone() else {
            next.save()?;
            self.link_epochs = next;
            return Ok(());
        };
        let lowest = next.lowest().expect("the peer was just recorded");
        let held = self.held_link_epoch(&param, epoch)?;
        let write = link_epoch::param_update(peer, held, lowest)?;
        // The record is durable before the device moves: the device never holds more than it.
        next.save()?;
        self.link_epochs = next;
        if let Some(value) = write {
            let refused = |reason: String| DeviceError::LinkEpochRefused { epoch, reason };
            self.set_param_u32(&param, value).map_err(|e| {
                refused(format!(
                    "devlink dev param set {} name {param} value {value} cmode runtime: {e}",
                    self.handle
                ))
            })?;
            let now = self.held_link_epoch(&param, epoch)?;
            if now != value {
                return Err(refused(format!(
                    "devlink parameter {param} reads back {now} after it was set to {value}"
                )));
            }
        }
        Ok(())
    }

    /// With a link-epoch parameter: the device has it, as a u32 with a runtime value, and the
    /// epoch fits it.
    fn can_take_link_epoch(&self, epoch: u64) -> Result<(), DeviceError> {
        let Some(param) = &self.profile.link_epoch_param else {
            return Ok(());
        };
        if u32::try_from(epoch).is_err() {
            return Err(DeviceError::LinkEpochRefused {
                epoch,
                reason: format!("devlink parameter {param} is a u32"),
            });
        }
        self.held_link_epoch(param, epoch).map(|_| ())
    }

    fn health(&self) -> Health {
        match self.info() {
            Ok(info) => {
                let missing: Vec<&str> = self
                    .profile
                    .components
                    .iter()
                    .filter(|c| !info.running.contains_key(&c.version_key))
                    .map(|c| c.version_key.as_str())
                    .collect();
                if missing.is_empty() {
                    Health::Ok
                } else {
                    Health::Degraded(format!(
                        "devlink {} reports no running version for {}",
                        self.handle,
                        missing.join(", ")
                    ))
                }
            }
            Err(e) => Health::Failed(format!("devlink {}: {e}", self.handle)),
        }
    }
}

#[cfg(test)]
mod tests;
