//! The `Device` trait: what the agent asks of any firmware-bearing device, whatever its backend.
//!
//! The loop follows the kernel's devlink-flash guidance: read the inventory (fixed, running and
//! stored versions per component), stage an image into the device's staging area, activate it
//! with the least disruptive method the profile allows, and check health. Images arrive as a
//! reader with the expected length and SHA-256 (the image store verified every chunk already; the
//! device verifies again what it wrote), so this crate depends on no other project crate.

use crate::profile::{ActivationMethod, Profile};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Versions of one component, in devlink's terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentVersions {
    /// The component's name in the profile.
    pub component: String,
    /// Identifiers that never change (board id, PSID).
    pub fixed: BTreeMap<String, String>,
    /// The version running now.
    pub running: Option<String>,
    /// The version stored in flash, which runs after the next activation.
    pub stored: Option<String>,
    /// Whether a staged image waits for activation (`stored` differs from what runs).
    pub pending_activation: bool,
}

/// Everything a device reports about its firmware.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// The profile the device was opened with.
    pub profile: String,
    /// One entry per component of the profile, in profile order.
    pub components: Vec<ComponentVersions>,
}

impl Inventory {
    /// The versions of `component`.
    pub fn component(&self, component: &str) -> Option<&ComponentVersions> {
        self.components.iter().find(|c| c.component == component)
    }
}

/// The image to stage: what the signed manifest says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// The version string the image carries (reported as `stored` once staged).
    pub version: String,
    /// Its length in bytes.
    pub len: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

/// Progress of a flash, reported through the callback of [`Device::stage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written so far.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

impl Progress {
    /// Whole percent done (100 for an empty image).
    pub fn percent(&self) -> u8 {
        (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .map_or(100, |p| p as u8)
    }
}

/// What staging produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Staged {
    /// The component staged.
    pub component: String,
    /// The version now stored.
    pub version: String,
    /// Where it went (a bank name, a staging slot).
    pub slot: String,
}

/// What an activation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activated {
    /// The component activated.
    pub component: String,
    /// The method used.
    pub method: ActivationMethod,
    /// The version that ran before.
    pub previous: Option<String>,
    /// The version running now.
    pub running: String,
    /// Whether the method interrupted traffic.
    pub disruptive: bool,
}

/// A device's health, checked after an activation and before a lease is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum Health {
    /// Running normally.
    Ok,
    /// Running, but something needs attention (a staging area that failed its check).
    Degraded(String),
    /// Not running the firmware it should; do not release the lease.
    Failed(String),
}

impl Health {
    /// Whether the device is running (ok or degraded).
    pub fn is_running(&self) -> bool {
        !matches!(self, Health::Failed(_))
    }
}

/// Why a device operation failed. Each variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The profile has no such component.
    #[error("profile {profile} has no component {component:?}")]
    UnknownComponent {
        /// The profile.
        profile: String,
        /// The component asked for.
        component: String,
    },
    /// The component is inventory only.
    #[error("component {component:?} is not flashable")]
    NotFlashable {
        /// The component.
        component: String,
    },
    /// The image is larger than the profile allows.
    #[error("image for {component:?} is {len} bytes, more than the profile's limit of {max}")]
    ImageTooLarge {
        /// The component.
        component: String,
        /// The image's length.
        len: u64,
        /// The profile's `max_image_bytes`.
        max: u64,
    },
    /// The reader ended before the announced length.
    #[error("image for {component:?} ended after {got} of {expected} bytes")]
    ShortImage {
        /// The component.
        component: String,
        /// The announced length.
        expected: u64,
        /// What the reader gave.
        got: u64,
    },
    /// The reader gave more than the announced length.
    #[error("image for {component:?} is longer than the announced {expected} bytes")]
    LongImage {
        /// The component.
        component: String,
        /// The announced length.
        expected: u64,
    },
    /// The bytes read do not hash to the expected digest.
    #[error("image for {component:?} has sha256 {actual}, expected {expected}")]
    DigestMismatch {
        /// The component.
        component: String,
        /// The expected digest, hex.
        expected: String,
        /// The digest of what was read, hex.
        actual: String,
    },
    /// What was written to the bank does not read back as the image.
    #[error("bank {bank} of {component:?} reads back with sha256 {actual}, expected {expected}")]
    VerifyFailed {
        /// The component.
        component: String,
        /// The bank written.
        bank: String,
        /// The expected digest, hex.
        expected: String,
        /// The digest read back, hex.
        actual: String,
    },
    /// The flash failed part way.
    #[error("flashing {component:?} failed at {at_percent}%: {reason}")]
    FlashFailed {
        /// The component.
        component: String,
        /// How far it got.
        at_percent: u8,
        /// Why.
        reason: String,
    },
    /// Power was lost during the flash: the device is off until it is opened again.
    #[error("power lost while flashing {component:?} at {at_percent}%")]
    PowerLoss {
        /// The component.
        component: String,
        /// How far the flash got.
        at_percent: u8,
    },
    /// The device lost power earlier and has not been opened again.
    #[error("the device is powered off (power was lost); open it again")]
    PoweredOff,
    /// The profile does not allow this activation method.
    #[error("profile {profile} does not allow activation method {method} (allowed: {allowed})")]
    MethodNotAllowed {
        /// The profile.
        profile: String,
        /// The method asked for.
        method: ActivationMethod,
        /// The methods the profile lists.
        allowed: String,
    },
    /// Nothing is staged for the component.
    #[error("nothing is staged for {component:?}")]
    NothingStaged {
        /// The component.
        component: String,
    },
    /// The staging bank cannot be activated (incomplete or corrupt).
    #[error("refusing to activate bank {bank} of {component:?}: {reason}")]
    BankNotActivatable {
        /// The component.
        component: String,
        /// The bank.
        bank: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The device failed to activate; it still runs the previous image.
    #[error("activating {component:?} with {method} failed: {reason}")]
    ActivationFailed {
        /// The component.
        component: String,
        /// The method tried.
        method: ActivationMethod,
        /// Why.
        reason: String,
    },
    /// The device keeps no previous image.
    #[error("component {component:?} of profile {profile} is not dual-bank: rollback means staging the previous image again")]
    RollbackUnsupported {
        /// The profile.
        profile: String,
        /// The component.
        component: String,
    },
    /// The other bank holds no image to go back to.
    #[error("no previous image of {component:?} to roll back to: {reason}")]
    NoPreviousImage {
        /// The component.
        component: String,
        /// Why (never activated, overwritten by a staged image, corrupt).
        reason: String,
    },
    /// A link's epoch would go back (committed link epochs only grow).
    #[error("link epoch to peer {peer} would go back from {current} to {requested}")]
    EpochWentBack {
        /// The peer node.
        peer: u64,
        /// The epoch recorded.
        current: u64,
        /// The epoch asked for.
        requested: u64,
    },
    /// The device refused a link epoch (it cannot take it, or failed to apply it).
    #[error("link epoch {epoch}: {reason}")]
    LinkEpochRefused {
        /// The epoch asked for.
        epoch: u64,
        /// Why.
        reason: String,
    },
    /// The device's persisted state cannot be used.
    #[error("device state {path}: {reason}")]
    BadState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A Redfish service could not be reached, refused a request, or answered something this
    /// backend cannot use. The service's own words (its `@Message.ExtendedInfo` MessageId and
    /// Message, or its error text) are kept verbatim.
    #[error("redfish: {what}: {}", describe_refusal(*.status, .message_id.as_deref(), .message))]
    Redfish {
        /// What was being done, with the resource's URI.
        what: String,
        /// The HTTP status, when the service answered.
        status: Option<u16>,
        /// The message registry id the service gave (`Base.1.16.NoValidSession`).
        message_id: Option<String>,
        /// The service's message, or the transport error (TLS, connection).
        message: String,
    },
    /// A backend's configuration cannot be used (a file, a URL, a missing setting).
    #[error("{what}: {reason}")]
    Config {
        /// The setting or file, named.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// NVIDIA's management library answered an error.
    #[error("nvml: {what}: {message}")]
    Nvml {
        /// What was being read.
        what: String,
        /// NVML's error.
        message: String,
    },
    /// The backend cannot run on this machine (a library or service is missing).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is missing (`libnvidia-ml not found`).
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A firmware-bearing device on this node, driven through one backend.
///
/// Methods take `&mut self`: one caller drives a device at a time. Every method that changes the
/// device makes its effect durable before it returns `Ok`.
pub trait Device {
    /// The profile the device was matched to.
    fn profile(&self) -> &Profile;

    /// Fixed, running and stored versions of every component.
    fn inventory(&self) -> Result<Inventory, DeviceError>;

    /// Writes `image` (exactly `info.len` bytes hashing to `info.sha256`) to the component's
    /// staging area, calling `progress` as it goes, and verifies what was written. The running
    /// firmware is not touched; on error nothing is left marked as staged.
    fn stage(
        &mut self,
        component: &str,
        info: &ImageInfo,
        image: &mut dyn std::io::Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Staged, DeviceError>;

    /// Makes the staged image of `component` the running one with `method`, which must be one
    /// the profile allows. On error the device still runs the previous image.
    fn activate(
        &mut self,
        component: &str,
        method: ActivationMethod,
    ) -> Result<Activated, DeviceError>;

    /// Goes back to the previous image of a dual-bank component, without flashing.
    fn rollback(&mut self, component: &str) -> Result<Activated, DeviceError>;

    /// Records that the link to `peer` now speaks `epoch` (DESIGN §2: a firmware mode, a devlink
    /// parameter); epochs only grow, and setting the current one again is a no-op.
    fn set_link_epoch(&mut self, peer: u64, epoch: u64) -> Result<(), DeviceError>;

    /// The link epochs the device holds, per peer, as read now: what a restarting agent
    /// trusts over its own store (a store restored from an older copy is behind them). Empty
    /// where the device keeps none that outlive the agent.
    fn link_epochs(&self) -> std::collections::BTreeMap<u64, u64> {
        std::collections::BTreeMap::new()
    }

    /// Whether the device, as it runs now, can take `epoch` as a link epoch: asked before the
    /// agent proposes or reflects the epoch (the device's vote in the link's commit). Devices
    /// that record link epochs without conditions accept every epoch.
    fn can_take_link_epoch(&self, epoch: u64) -> Result<(), DeviceError> {
        let _ = epoch;
        Ok(())
    }

    /// The device's health now.
    fn health(&self) -> Health;
}

/// Checks that `method` is one `profile` allows, as every backend must before activating.
pub fn check_method(profile: &Profile, method: ActivationMethod) -> Result<(), DeviceError> {
    if profile.activation(method).is_some() {
        return Ok(());
    }
    let allowed: Vec<&str> = profile.methods().iter().map(|m| m.name()).collect();
    Err(DeviceError::MethodNotAllowed {
        profile: profile.name.clone(),
        method,
        allowed: if allowed.is_empty() {
            "none".into()
        } else {
            allowed.join(", ")
        },
    })
}

/// `HTTP 401 Unauthorized: Base.1.16.NoValidSession: <message>`, leaving out what is unknown.
fn describe_refusal(status: Option<u16>, message_id: Option<&str>, message: &str) -> String {
    let mut parts = Vec::new();
    if let Some(code) = status {
        let reason = ureq::http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        parts.push(format!("HTTP {code} {reason}").trim_end().to_string());
    }
    if let Some(id) = message_id {
        parts.push(id.to_string());
    }
    if !message.is_empty() {
        parts.push(message.to_string());
    }
    parts.join(": ")
}

/// The component of `profile` called `name`, which must be flashable, as every backend checks
/// before staging or activating.
pub fn flashable_component<'p>(
    profile: &'p Profile,
    name: &str,
) -> Result<&'p crate::profile::Component, DeviceError> {
    let c = profile
        .component(name)
        .ok_or_else(|| DeviceError::UnknownComponent {
            profile: profile.name.clone(),
            component: name.into(),
        })?;
    if !c.flashable {
        return Err(DeviceError::NotFlashable {
            component: name.into(),
        });
    }
    Ok(c)
}

/// Lowercase hex of a digest, for messages and state files.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_percent_is_bounded() {
        assert_eq!(Progress { done: 0, total: 0 }.percent(), 100);
        assert_eq!(Progress { done: 1, total: 3 }.percent(), 33);
        assert_eq!(Progress { done: 5, total: 3 }.percent(), 100);
    }

    #[test]
    fn redfish_errors_name_status_message_id_and_message() {
        let e = DeviceError::Redfish {
            what: "logging in as admin at https://bmc/redfish/v1/SessionService/Sessions".into(),
            status: Some(401),
            message_id: Some("Base.1.16.InsufficientPrivilege".into()),
            message: "There are insufficient privileges".into(),
        };
        assert_eq!(
            e.to_string(),
            "redfish: logging in as admin at https://bmc/redfish/v1/SessionService/Sessions: \
             HTTP 401 Unauthorized: Base.1.16.InsufficientPrivilege: There are insufficient privileges"
        );
        let e = DeviceError::Redfish {
            what: "reading https://bmc/redfish/v1".into(),
            status: None,
            message_id: None,
            message: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "redfish: reading https://bmc/redfish/v1: connection refused"
        );
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }

    #[test]
    fn health_json_names_the_state() {
        let j = serde_json::to_string(&Health::Degraded("bank b".into())).unwrap();
        assert_eq!(j, r#"{"state":"degraded","detail":"bank b"}"#);
        assert!(Health::Ok.is_running() && !Health::Failed("x".into()).is_running());
    }
}
