//! Numbers of the devlink generic netlink family, as the kernel's `include/uapi/linux/devlink.h`
//! and `include/uapi/linux/netlink.h` define them. Only what this backend sends or reads.

/// The generic netlink family name (`DEVLINK_GENL_NAME`).
pub const FAMILY_NAME: &str = "devlink";
/// The family's version (`DEVLINK_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 1;
/// The multicast group that carries flash progress (`DEVLINK_GENL_MCGRP_CONFIG_NAME`).
pub const MCGRP_CONFIG: &str = "config";

/// `DEVLINK_CMD_RELOAD`.
pub const CMD_RELOAD: u8 = 37;
/// `DEVLINK_CMD_PARAM_GET`.
pub const CMD_PARAM_GET: u8 = 38;
/// `DEVLINK_CMD_PARAM_SET`.
pub const CMD_PARAM_SET: u8 = 39;
/// `DEVLINK_CMD_INFO_GET`.
pub const CMD_INFO_GET: u8 = 51;
/// `DEVLINK_CMD_FLASH_UPDATE` (also the "flash begins" notification).
pub const CMD_FLASH_UPDATE: u8 = 58;
/// `DEVLINK_CMD_FLASH_UPDATE_END` (notification only).
pub const CMD_FLASH_UPDATE_END: u8 = 59;
/// `DEVLINK_CMD_FLASH_UPDATE_STATUS` (notification only).
pub const CMD_FLASH_UPDATE_STATUS: u8 = 60;

/// `DEVLINK_ATTR_BUS_NAME` (string).
pub const ATTR_BUS_NAME: u16 = 1;
/// `DEVLINK_ATTR_DEV_NAME` (string).
pub const ATTR_DEV_NAME: u16 = 2;
/// `DEVLINK_ATTR_PARAM` (nested, without `NLA_F_NESTED`: name, generic, type, values list).
pub const ATTR_PARAM: u16 = 80;
/// `DEVLINK_ATTR_PARAM_NAME` (string).
pub const ATTR_PARAM_NAME: u16 = 81;
/// `DEVLINK_ATTR_PARAM_GENERIC` (flag).
pub const ATTR_PARAM_GENERIC: u16 = 82;
/// `DEVLINK_ATTR_PARAM_TYPE` (u8: the netlink type of the value, `NLA_U32` for a u32).
pub const ATTR_PARAM_TYPE: u16 = 83;
/// `DEVLINK_ATTR_PARAM_VALUES_LIST` (nested: one value per configuration mode).
pub const ATTR_PARAM_VALUES_LIST: u16 = 84;
/// `DEVLINK_ATTR_PARAM_VALUE` (nested: cmode, data).
pub const ATTR_PARAM_VALUE: u16 = 85;
/// `DEVLINK_ATTR_PARAM_VALUE_DATA` (of the parameter's type).
pub const ATTR_PARAM_VALUE_DATA: u16 = 86;
/// `DEVLINK_ATTR_PARAM_VALUE_CMODE` (u8).
pub const ATTR_PARAM_VALUE_CMODE: u16 = 87;
/// `DEVLINK_ATTR_RELOAD_ACTION` (u8).
pub const ATTR_RELOAD_ACTION: u16 = 153;
/// `DEVLINK_ATTR_RELOAD_ACTIONS_PERFORMED` (bitfield32).
pub const ATTR_RELOAD_ACTIONS_PERFORMED: u16 = 154;
/// `DEVLINK_ATTR_RELOAD_LIMITS` (bitfield32).
pub const ATTR_RELOAD_LIMITS: u16 = 155;
/// `DEVLINK_ATTR_INFO_DRIVER_NAME` (string).
pub const ATTR_INFO_DRIVER_NAME: u16 = 98;
/// `DEVLINK_ATTR_INFO_SERIAL_NUMBER` (string).
pub const ATTR_INFO_SERIAL_NUMBER: u16 = 99;
/// `DEVLINK_ATTR_INFO_VERSION_FIXED` (nested: name, value).
pub const ATTR_INFO_VERSION_FIXED: u16 = 100;
/// `DEVLINK_ATTR_INFO_VERSION_RUNNING` (nested: name, value).
pub const ATTR_INFO_VERSION_RUNNING: u16 = 101;
/// `DEVLINK_ATTR_INFO_VERSION_STORED` (nested: name, value).
pub const ATTR_INFO_VERSION_STORED: u16 = 102;
/// `DEVLINK_ATTR_INFO_VERSION_NAME` (string).
pub const ATTR_INFO_VERSION_NAME: u16 = 103;
/// `DEVLINK_ATTR_INFO_VERSION_VALUE` (string).
pub const ATTR_INFO_VERSION_VALUE: u16 = 104;
/// `DEVLINK_ATTR_FLASH_UPDATE_FILE_NAME` (string, relative to /lib/firmware).
pub const ATTR_FLASH_UPDATE_FILE_NAME: u16 = 122;
/// `DEVLINK_ATTR_FLASH_UPDATE_COMPONENT` (string).
pub const ATTR_FLASH_UPDATE_COMPONENT: u16 = 123;
/// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_MSG` (string).
pub const ATTR_FLASH_UPDATE_STATUS_MSG: u16 = 124;
/// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_DONE` (u64).
pub const ATTR_FLASH_UPDATE_STATUS_DONE: u16 = 125;
/// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_TOTAL` (u64).
pub const ATTR_FLASH_UPDATE_STATUS_TOTAL: u16 = 126;
/// `DEVLINK_ATTR_FLASH_UPDATE_STATUS_TIMEOUT` (u64, seconds).
pub const ATTR_FLASH_UPDATE_STATUS_TIMEOUT: u16 = 151;
/// `DEVLINK_ATTR_FLASH_UPDATE_OVERWRITE_MASK` (bitfield32).
pub const ATTR_FLASH_UPDATE_OVERWRITE_MASK: u16 = 152;

/// `DEVLINK_RELOAD_ACTION_DRIVER_REINIT`.
pub const RELOAD_ACTION_DRIVER_REINIT: u8 = 1;
/// `DEVLINK_RELOAD_ACTION_FW_ACTIVATE`.
pub const RELOAD_ACTION_FW_ACTIVATE: u8 = 2;
/// `DEVLINK_RELOAD_LIMIT_NO_RESET`.
pub const RELOAD_LIMIT_NO_RESET: u8 = 1;

/// `DEVLINK_PARAM_CMODE_RUNTIME`: the value the driver holds now (get and set callbacks).
pub const PARAM_CMODE_RUNTIME: u8 = 0;
/// `NLA_U32`: what `DEVLINK_ATTR_PARAM_TYPE` says for a u32 parameter.
pub const PARAM_TYPE_U32: u8 = 3;

/// `DEVLINK_FLASH_OVERWRITE_SETTINGS`.
pub const FLASH_OVERWRITE_SETTINGS: u32 = 1 << 0;
/// `DEVLINK_FLASH_OVERWRITE_IDENTIFIERS`.
pub const FLASH_OVERWRITE_IDENTIFIERS: u32 = 1 << 1;

/// `NLMSGERR_ATTR_MSG`: the extended ack's message (string).
pub const NLMSGERR_ATTR_MSG: u16 = 1;
