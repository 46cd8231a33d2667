//! The three requests this backend makes (`dev info`, `dev flash`, `dev reload`) and what their
//! answers and notifications mean, as plain data: no socket here, so all of it is tested on any
//! host.

use super::message::{Attr, Bitfield32, DevlinkMessage};
use super::uapi::*;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A devlink instance: `bus/device`, as `devlink dev` prints it (`pci/0000:03:00.0`,
/// `netdevsim/netdevsim1`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    /// The bus name (`pci`, `netdevsim`).
    pub bus: String,
    /// The device name on that bus.
    pub device: String,
}

impl FromStr for Handle {
    type Err = String;
    fn from_str(s: &str) -> Result<Handle, String> {
        let bad = || format!("devlink handle {s:?} is not BUS/DEVICE (e.g. pci/0000:03:00.0)");
        let (bus, device) = s.split_once('/').ok_or_else(bad)?;
        let ok =
            |p: &str| !p.is_empty() && !p.contains(['/', '\0']) && !p.contains(char::is_whitespace);
        if !ok(bus) || !ok(device) {
            return Err(bad());
        }
        Ok(Handle {
            bus: bus.into(),
            device: device.into(),
        })
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bus, self.device)
    }
}

impl Handle {
    fn attrs(&self) -> Vec<Attr> {
        vec![
            Attr::BusName(self.bus.clone()),
            Attr::DevName(self.device.clone()),
        ]
    }

    /// Whether `m` is about this instance.
    pub fn matches(&self, m: &DevlinkMessage) -> bool {
        m.handle() == (Some(self.bus.as_str()), Some(self.device.as_str()))
    }
}

/// Which parts of the device's flash a flash may overwrite besides the firmware
/// (`DEVLINK_ATTR_FLASH_UPDATE_OVERWRITE_MASK`). Empty: the attribute is not sent (drivers that
/// do not support it, such as mlx5, refuse any mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overwrite {
    /// `settings`: device configuration kept in flash.
    pub settings: bool,
    /// `identifiers`: the device's identifiers (MAC addresses, serial numbers).
    pub identifiers: bool,
}

impl Overwrite {
    /// Parses the names `settings` and `identifiers`.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Overwrite, String> {
        let mut o = Overwrite::default();
        for n in names {
            match n {
                "settings" => o.settings = true,
                "identifiers" => o.identifiers = true,
                other => {
                    return Err(format!(
                        "unknown overwrite section {other:?} (settings or identifiers)"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The bits of the mask.
    pub fn bits(self) -> u32 {
        let mut b = 0;
        if self.settings {
            b |= FLASH_OVERWRITE_SETTINGS;
        }
        if self.identifiers {
            b |= FLASH_OVERWRITE_IDENTIFIERS;
        }
        b
    }
}

/// `devlink dev info BUS/DEV`.
pub fn info_request(h: &Handle) -> DevlinkMessage {
    DevlinkMessage {
        cmd: CMD_INFO_GET,
        attrs: h.attrs(),
    }
}

/// `devlink dev flash BUS/DEV file FILE [component C] [overwrite ...]`; `file` is relative to
/// /lib/firmware.
pub fn flash_request(
    h: &Handle,
    file: &str,
    component: Option<&str>,
    overwrite: Overwrite,
) -> DevlinkMessage {
    let mut attrs = h.attrs();
    attrs.push(Attr::FlashFileName(file.into()));
    if let Some(c) = component {
        attrs.push(Attr::FlashComponent(c.into()));
    }
    if overwrite.bits() != 0 {
        attrs.push(Attr::FlashOverwriteMask(Bitfield32 {
            value: overwrite.bits(),
            selector: FLASH_OVERWRITE_SETTINGS | FLASH_OVERWRITE_IDENTIFIERS,
        }));
    }
    DevlinkMessage {
        cmd: CMD_FLASH_UPDATE,
        attrs,
    }
}

/// `devlink dev reload BUS/DEV action fw_activate [limit no_reset]`.
pub fn fw_activate_request(h: &Handle, no_reset: bool) -> DevlinkMessage {
    let mut attrs = h.attrs();
    attrs.push(Attr::ReloadAction(RELOAD_ACTION_FW_ACTIVATE));
    if no_reset {
        let bit = 1 << RELOAD_LIMIT_NO_RESET;
        attrs.push(Attr::ReloadLimits(Bitfield32 {
            value: bit,
            selector: bit,
        }));
    }
    DevlinkMessage {
        cmd: CMD_RELOAD,
        attrs,
    }
}

/// What `devlink dev info` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The driver (`mlx5_core`, `netdevsim`).
    pub driver: Option<String>,
    /// The serial number, when the driver reports one.
    pub serial: Option<String>,
    /// Fixed versions (board identifiers such as `fw.psid`).
    pub fixed: BTreeMap<String, String>,
    /// Running versions.
    pub running: BTreeMap<String, String>,
    /// Stored versions (what runs after the next activation).
    pub stored: BTreeMap<String, String>,
}

impl DeviceInfo {
    /// Collects the info reply's attributes.
    pub fn from_reply(m: &DevlinkMessage) -> DeviceInfo {
        let mut info = DeviceInfo::default();
        for a in &m.attrs {
            match a {
                Attr::DriverName(s) => info.driver = Some(s.clone()),
                Attr::SerialNumber(s) => info.serial = Some(s.clone()),
                Attr::VersionFixed(v) => {
                    info.fixed.insert(v.name.clone(), v.value.clone());
                }
                Attr::VersionRunning(v) => {
                    info.running.insert(v.name.clone(), v.value.clone());
                }
                Attr::VersionStored(v) => {
                    info.stored.insert(v.name.clone(), v.value.clone());
                }
                _ => {}
            }
        }
        info
    }
}

/// One flash notification (`DEVLINK_CMD_FLASH_UPDATE*` on the `config` group).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlashStatus {
    /// `begin`, `status` or `end`.
    pub phase: FlashPhase,
    /// The driver's status message (`Flashing`, `Erasing`).
    pub message: Option<String>,
    /// The component being flashed, when the driver says.
    pub component: Option<String>,
    /// Units done (the driver's units, often bytes).
    pub done: u64,
    /// Units in all (0: this step has no measure).
    pub total: u64,
    /// Seconds the driver allows this step (0: none given).
    pub timeout_s: u64,
}

/// Where a flash notification is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlashPhase {
    /// The flash began.
    Begin,
    /// A status update.
    #[default]
    Status,
    /// The flash ended.
    End,
}

impl FlashStatus {
    /// The flash notification `m` is, if it is one.
    pub fn from_notification(m: &DevlinkMessage) -> Option<FlashStatus> {
        let phase = match m.cmd {
            CMD_FLASH_UPDATE => FlashPhase::Begin,
            CMD_FLASH_UPDATE_STATUS => FlashPhase::Status,
            CMD_FLASH_UPDATE_END => FlashPhase::End,
            _ => return None,
        };
        let mut s = FlashStatus {
            phase,
            ..FlashStatus::default()
        };
        for a in &m.attrs {
            match a {
                Attr::StatusMsg(t) => s.message = Some(t.clone()),
                Attr::FlashComponent(c) => s.component = Some(c.clone()),
                Attr::StatusDone(n) => s.done = *n,
                Attr::StatusTotal(n) => s.total = *n,
                Attr::StatusTimeout(n) => s.timeout_s = *n,
                _ => {}
            }
        }
        Some(s)
    }
}

/// The reload actions a reply says were performed (`DEVLINK_ATTR_RELOAD_ACTIONS_PERFORMED`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionsPerformed(pub u32);

impl ActionsPerformed {
    /// Reads the attribute from a reload reply (none: nothing reported).
    pub fn from_reply(m: &DevlinkMessage) -> Option<ActionsPerformed> {
        m.attrs.iter().find_map(|a| match a {
            Attr::ReloadActionsPerformed(b) => Some(ActionsPerformed(b.selected())),
            _ => None,
        })
    }

    /// Whether the firmware was activated.
    pub fn fw_activate(self) -> bool {
        self.0 & (1 << RELOAD_ACTION_FW_ACTIVATE) != 0
    }

    /// Whether the driver was re-initialised (the functions were reset).
    pub fn driver_reinit(self) -> bool {
        self.0 & (1 << RELOAD_ACTION_DRIVER_REINIT) != 0
    }
}

impl fmt::Display for ActionsPerformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        if self.driver_reinit() {
            names.push("driver_reinit");
        }
        if self.fw_activate() {
            names.push("fw_activate");
        }
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devlink::message::VersionPair;

    fn h() -> Handle {
        "netdevsim/netdevsim1".parse().unwrap()
    }

    #[test]
    fn handles_are_bus_slash_device() {
        let p: Handle = "pci/0000:03:00.0".parse().unwrap();
        assert_eq!((p.bus.as_str(), p.device.as_str()), ("pci", "0000:03:00.0"));
        assert_eq!(p.to_string(), "pci/0000:03:00.0");
        for bad in ["", "pci", "pci/", "/x", "a/b/c", "pci/0000 03"] {
            let e = bad.parse::<Handle>().unwrap_err();
            assert!(e.contains("BUS/DEVICE"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_flash_names_file_component_and_only_a_nonempty_mask() {
        let m = flash_request(
            &h(),
            "entente/ab.bin",
            Some("fw.mgmt"),
            Overwrite::default(),
        );
        assert_eq!(m.cmd, CMD_FLASH_UPDATE);
        assert_eq!(
            m.attrs,
            vec![
                Attr::BusName("netdevsim".into()),
                Attr::DevName("netdevsim1".into()),
                Attr::FlashFileName("entente/ab.bin".into()),
                Attr::FlashComponent("fw.mgmt".into()),
            ]
        );
        let o = Overwrite::from_names(["settings"]).unwrap();
        let m = flash_request(&h(), "f.bin", None, o);
        assert_eq!(
            m.attrs.last(),
            Some(&Attr::FlashOverwriteMask(Bitfield32 {
                value: 1,
                selector: 3
            }))
        );
        assert!(Overwrite::from_names(["everything"]).is_err());
    }

    #[test]
    fn live_activation_limits_to_no_reset_and_reset_does_not() {
        let live = fw_activate_request(&h(), true);
        assert_eq!(live.cmd, CMD_RELOAD);
        assert!(live
            .attrs
            .contains(&Attr::ReloadAction(RELOAD_ACTION_FW_ACTIVATE)));
        assert!(live.attrs.contains(&Attr::ReloadLimits(Bitfield32 {
            value: 2,
            selector: 2
        })));
        let reset = fw_activate_request(&h(), false);
        assert!(!reset
            .attrs
            .iter()
            .any(|a| matches!(a, Attr::ReloadLimits(_))));
    }

    #[test]
    fn info_replies_sort_versions_by_kind() {
        let v = |n: &str, val: &str| VersionPair {
            name: n.into(),
            value: val.into(),
        };
        let m = DevlinkMessage {
            cmd: CMD_INFO_GET,
            attrs: vec![
                Attr::BusName("pci".into()),
                Attr::DriverName("mlx5_core".into()),
                Attr::VersionFixed(v("fw.psid", "MT_0000000359")),
                Attr::VersionRunning(v("fw.version", "22.31.1014")),
                Attr::VersionStored(v("fw.version", "22.32.1010")),
            ],
        };
        let i = DeviceInfo::from_reply(&m);
        assert_eq!(i.driver.as_deref(), Some("mlx5_core"));
        assert_eq!(i.fixed["fw.psid"], "MT_0000000359");
        assert_eq!(i.running["fw.version"], "22.31.1014");
        assert_eq!(i.stored["fw.version"], "22.32.1010");
    }

    #[test]
    fn flash_notifications_carry_progress_and_timeouts() {
        let m = DevlinkMessage {
            cmd: CMD_FLASH_UPDATE_STATUS,
            attrs: vec![
                Attr::StatusMsg("Flashing".into()),
                Attr::FlashComponent("fw.mgmt".into()),
                Attr::StatusDone(1000),
                Attr::StatusTotal(500000),
                Attr::StatusTimeout(81),
            ],
        };
        let s = FlashStatus::from_notification(&m).unwrap();
        assert_eq!(s.phase, FlashPhase::Status);
        assert_eq!((s.done, s.total, s.timeout_s), (1000, 500000, 81));
        assert_eq!(s.message.as_deref(), Some("Flashing"));
        let end = DevlinkMessage {
            cmd: CMD_FLASH_UPDATE_END,
            attrs: vec![],
        };
        assert_eq!(
            FlashStatus::from_notification(&end).unwrap().phase,
            FlashPhase::End
        );
        let other = DevlinkMessage {
            cmd: CMD_INFO_GET,
            attrs: vec![],
        };
        assert!(FlashStatus::from_notification(&other).is_none());
    }

    #[test]
    fn actions_performed_are_read_through_the_selector() {
        let m = DevlinkMessage {
            cmd: CMD_RELOAD,
            attrs: vec![Attr::ReloadActionsPerformed(Bitfield32 {
                value: 0b110,
                selector: 0b110,
            })],
        };
        let a = ActionsPerformed::from_reply(&m).unwrap();
        assert!(a.fw_activate() && a.driver_reinit());
        assert_eq!(a.to_string(), "driver_reinit, fw_activate");
        let masked = Bitfield32 {
            value: 0b100,
            selector: 0b010,
        };
        assert!(!ActionsPerformed(masked.selected()).fw_activate());
        assert_eq!(ActionsPerformed(0).to_string(), "none");
    }
}
