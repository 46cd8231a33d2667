//! The devlink backend's record of committed link epochs: one epoch per peer, kept in
//! `<state_dir>/link-epochs.json` when the backend has a state directory (in memory otherwise),
//! and the value the device's link-epoch parameter must hold: the lowest of them.
//!
//! A devlink device has one parameter for the whole node (drivers register no per-port
//! parameters, and the agent does not know which port carries which link), so it holds the
//! node's lowest committed link epoch. Epochs only grow, per peer and on the device: a request
//! that would lower either is refused.

use crate::device::DeviceError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The state file's name in the backend's state directory.
pub const FILE: &str = "link-epochs.json";
/// The format this entente writes and reads.
const FORMAT: u32 = 1;

/// Committed link epochs per peer, and where they are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkEpochs {
    /// The state file; `None`: kept in memory only.
    path: Option<PathBuf>,
    /// Committed epoch per peer.
    epochs: BTreeMap<u64, u64>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    format: u32,
    /// Peer (as a decimal string: a JSON object key) to committed epoch.
    peers: BTreeMap<u64, u64>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError {
    let path = path.to_path_buf();
    move |source| DeviceError::Io { what, path, source }
}

impl LinkEpochs {
    /// An in-memory record (no state directory).
    pub fn in_memory() -> LinkEpochs {
        LinkEpochs::default()
    }

    /// The record kept in `dir` (created if missing), as it was last saved there.
    pub fn open(dir: &Path) -> Result<LinkEpochs, DeviceError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let path = dir.join(FILE);
        let epochs = match std::fs::read(&path) {
            Ok(text) => {
                let bad = |reason: String| DeviceError::BadState {
                    path: path.clone(),
                    reason,
                };
                let saved: Saved = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
                if saved.format != FORMAT {
                    return Err(bad(format!(
                        "format {} (this entente reads {FORMAT})",
                        saved.format
                    )));
                }
                saved.peers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        Ok(LinkEpochs {
            path: Some(path),
            epochs,
        })
    }

    /// The committed epoch of the link to `peer`.
    pub fn get(&self, peer: u64) -> Option<u64> {
        self.epochs.get(&peer).copied()
    }

    /// Every peer's committed epoch.
    pub fn all(&self) -> &BTreeMap<u64, u64> {
        &self.epochs
    }

    /// The node's lowest committed link epoch (none before the first).
    pub fn lowest(&self) -> Option<u64> {
        self.epochs.values().copied().min()
    }

    /// The record with `peer` at `epoch`; refused when the peer's epoch would go back.
    pub fn with(&self, peer: u64, epoch: u64) -> Result<LinkEpochs, DeviceError> {
        match self.get(peer) {
            Some(current) if epoch < current => Err(DeviceError::EpochWentBack {
                peer,
                current,
                requested: epoch,
            }),
            _ => {
                let mut next = self.clone();
                next.epochs.insert(peer, epoch);
                Ok(next)
            }
        }
    }

    /// Makes the record durable (a temporary file, fsync, rename, fsync of the directory), when
    /// it has a state file.
    pub fn save(&self) -> Result<(), DeviceError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let saved = Saved {
            format: FORMAT,
            peers: self.epochs.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&saved).expect("a map of numbers serializes");
        crate::sim::state::replace_file(path, &bytes)
    }
}

/// Checks that the device's link-epoch parameter may go from `held` to `lowest`, the node's
/// lowest committed link epoch once `peer` is at its new epoch; returns the value to write, or
/// `None` when the device already holds it.
pub fn param_update(peer: u64, held: u32, lowest: u64) -> Result<Option<u32>, DeviceError> {
    if lowest < u64::from(held) {
        return Err(DeviceError::EpochWentBack {
            peer,
            current: held.into(),
            requested: lowest,
        });
    }
    let value = u32::try_from(lowest).map_err(|_| DeviceError::LinkEpochRefused {
        epoch: lowest,
        reason: "the devlink link-epoch parameter is a u32".into(),
    })?;
    Ok((value != held).then_some(value))
}
