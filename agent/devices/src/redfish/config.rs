//! The `[device.redfish]` settings and the BMC credentials file.

use crate::device::DeviceError;
use serde::Deserialize;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the client authenticates to the BMC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A Redfish session: `POST SessionService/Sessions` once, then `X-Auth-Token` on every
    /// request; the session is deleted when the device is dropped.
    #[default]
    Session,
    /// HTTP basic auth on every request.
    Basic,
}

/// How to reach one BMC and which GPU behind it the device is (the agent's `[device.redfish]`).
///
/// Durations are in milliseconds. Unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedfishConfig {
    /// The BMC's base URL, `https://host[:port]`; the service root is `/redfish/v1` below it.
    pub url: String,
    /// PEM file of the CA certificates the BMC's certificate must chain to; absent: the Mozilla
    /// roots built into the client.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding `user:password` on one line; it must be readable by its owner only (0600).
    pub credentials_file: PathBuf,
    /// `session` (default) or `basic`.
    #[serde(default)]
    pub auth: AuthMode,
    /// The device's slot behind the BMC: replaces `{index}` in the profile's `version_key`
    /// (`HGX_FW_GPU_SXM_{index}`); 1 by default.
    #[serde(default = "default_slot")]
    pub slot: u32,
    /// The resource whose `Reset` action activates a staged image (a ComputerSystem, Chassis or
    /// Manager URI); absent: the first member of `/redfish/v1/Systems`.
    #[serde(default)]
    pub reset_resource: Option<String>,
    /// The `Targets` of an update, instead of the component's FirmwareInventory member
    /// (`{index}` replaced by `slot`): for BMCs that take the package for a system or a
    /// baseboard.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// Where the agent serves the image for a BMC that offers only `SimpleUpdate` (no multipart
    /// push): an URL in which `{sha256}` and `{version}` are replaced.
    #[serde(default)]
    pub image_uri: Option<String>,
    /// Connecting to the BMC.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// One request, upload excepted.
    #[serde(default = "default_request_ms")]
    pub request_timeout_ms: u64,
    /// Uploading an image.
    #[serde(default = "default_upload_ms")]
    pub upload_timeout_ms: u64,
    /// Waiting for the BMC's update task to end.
    #[serde(default = "default_task_ms")]
    pub task_timeout_ms: u64,
    /// Between two polls of a task or of the inventory.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Waiting for the new version after a reset; absent: the profile's `max_ms` for the method.
    #[serde(default)]
    pub activation_timeout_ms: Option<u64>,
}

fn default_slot() -> u32 {
    1
}
fn default_connect_ms() -> u64 {
    5_000
}
fn default_request_ms() -> u64 {
    60_000
}
fn default_upload_ms() -> u64 {
    1_800_000
}
fn default_task_ms() -> u64 {
    3_600_000
}
fn default_poll_ms() -> u64 {
    2_000
}

impl RedfishConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(url: impl Into<String>, credentials_file: impl Into<PathBuf>) -> RedfishConfig {
        RedfishConfig {
            url: url.into(),
            ca_file: None,
            credentials_file: credentials_file.into(),
            auth: AuthMode::default(),
            slot: default_slot(),
            reset_resource: None,
            targets: None,
            image_uri: None,
            connect_timeout_ms: default_connect_ms(),
            request_timeout_ms: default_request_ms(),
            upload_timeout_ms: default_upload_ms(),
            task_timeout_ms: default_task_ms(),
            poll_interval_ms: default_poll_ms(),
            activation_timeout_ms: None,
        }
    }

    /// The base URL without a trailing slash, checked to be `https://`.
    pub fn base_url(&self) -> Result<String, DeviceError> {
        let url = self.url.trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| DeviceError::Config {
                what: format!("redfish url {:?}", self.url),
                reason: "must start with https:// (credentials never travel in clear)".into(),
            })?;
        if rest.is_empty() || rest.contains('/') {
            return Err(DeviceError::Config {
                what: format!("redfish url {:?}", self.url),
                reason: "must be https://host[:port] with no path".into(),
            });
        }
        Ok(url.to_string())
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
}

/// A BMC user name and password, read from a file only its owner can read.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads `user:password` (one line; the password may contain `:`) from `path`, refusing a
    /// file that its group or others may read or write (it must be mode 0600 or 0400).
    pub fn load(path: &Path) -> Result<Credentials, DeviceError> {
        let bad = |reason: String| DeviceError::Config {
            what: format!("credentials file {}", path.display()),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "has mode {mode:04o}; it must be readable by its owner only (chmod 0600)"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| bad("must hold user:password on its first line".into()))?;
        if user.is_empty() || password.is_empty() {
            return Err(bad("user and password must not be empty".into()));
        }
        Ok(Credentials {
            user: user.into(),
            password: password.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("bmc.credentials");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn credentials_are_read_from_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Credentials::load(&write(dir.path(), "admin:p:w\n", 0o600)).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("admin", "p:w"));
        assert!(!format!("{c:?}").contains("p:w"));
    }

    #[test]
    fn credentials_readable_by_others_or_malformed_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "admin:secret\n", 0o644);
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("0644"),
            "{e}"
        );
        let e = Credentials::load(&write(dir.path(), "admin\n", 0o600)).unwrap_err();
        assert!(e.to_string().contains("user:password"), "{e}");
    }

    #[test]
    fn config_has_defaults_and_refuses_unknown_keys_and_plain_http() {
        let c: RedfishConfig =
            toml::from_str("url = \"https://bmc:8443/\"\ncredentials_file = \"/etc/c\"").unwrap();
        assert_eq!(c, RedfishConfig::new("https://bmc:8443/", "/etc/c"));
        assert_eq!(c.base_url().unwrap(), "https://bmc:8443");
        let e = toml::from_str::<RedfishConfig>("url = \"x\"\ncredentials_file = \"c\"\nuser = 1");
        assert!(e.unwrap_err().to_string().contains("unknown field `user`"));
        let e = RedfishConfig::new("http://bmc", "c")
            .base_url()
            .unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
    }
}
