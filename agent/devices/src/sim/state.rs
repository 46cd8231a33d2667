//! The simulated device's persisted state and its atomic replacement.

use crate::device::DeviceError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The state file's format version.
pub(crate) const FORMAT: u32 = 1;

/// One of a component's two banks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Bank {
    A,
    B,
}

impl Bank {
    pub fn other(self) -> Bank {
        match self {
            Bank::A => Bank::B,
            Bank::B => Bank::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bank::A => "a",
            Bank::B => "b",
        }
    }
}

/// Where a bank's content stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BankStatus {
    /// A flash started and did not finish (found so after a power loss).
    Writing,
    /// The content is the image recorded, verified.
    Valid,
    /// The content cannot be used; `problem` says why.
    Invalid,
}

/// What a bank holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BankState {
    pub version: String,
    pub sha256: String,
    pub len: u64,
    pub status: BankStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One component's banks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ComponentState {
    pub active: Bank,
    pub a: Option<BankState>,
    pub b: Option<BankState>,
    /// The inactive bank holds a staged image waiting for activation (not a previous image).
    pub pending: bool,
}

impl ComponentState {
    pub fn bank(&self, b: Bank) -> Option<&BankState> {
        match b {
            Bank::A => self.a.as_ref(),
            Bank::B => self.b.as_ref(),
        }
    }

    pub fn bank_mut(&mut self, b: Bank) -> &mut Option<BankState> {
        match b {
            Bank::A => &mut self.a,
            Bank::B => &mut self.b,
        }
    }
}

/// Everything a simulated device persists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SimState {
    pub format: u32,
    pub profile: String,
    pub components: BTreeMap<String, ComponentState>,
    /// Committed link epoch per peer node.
    pub link_epochs: BTreeMap<u64, u64>,
}

/// Wraps an OS error with what was being done to which file.
pub(crate) fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DeviceError + 'a {
    move |source| DeviceError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl SimState {
    /// Reads the state file; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<SimState>, DeviceError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", path)(e)),
        };
        let state: SimState = serde_json::from_slice(&text).map_err(|e| DeviceError::BadState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if state.format != FORMAT {
            return Err(DeviceError::BadState {
                path: path.to_path_buf(),
                reason: format!("format {} (this entente reads {FORMAT})", state.format),
            });
        }
        Ok(Some(state))
    }

    /// Replaces the state file atomically: a temporary file, fsync, rename, fsync of the
    /// directory. After a crash the file is the old state or the new one, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), DeviceError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| DeviceError::BadState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        replace_file(path, &bytes)
    }
}

/// Replaces the file at `path` with `bytes` atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory. After a crash the file is the old content or the new one.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), DeviceError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
    f.write_all(bytes).map_err(io("writing", &tmp))?;
    f.sync_all().map_err(io("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("renaming onto", path))?;
    sync_dir(path)
}

/// Makes a rename or a creation in `path`'s directory durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), DeviceError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}
