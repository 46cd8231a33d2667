//! entente-api: the control socket's requests and responses, shared by `entented` and `entente`.
//!
//! The socket speaks newline-delimited JSON: a client writes one [`Request`] envelope per line
//! and reads one [`Response`] line back. The envelope carries [`API_VERSION`]; a daemon refuses
//! a version it does not speak. Field names are the stable contract of `entente ... --json`.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

pub mod check;
pub mod history;
pub use check::check_histories;
pub use history::{HistoryEntry, HistoryEvent, HistoryKind};

/// The version of this API (2: history entries became typed events, `entente_api::history`).
pub const API_VERSION: u32 = 2;

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/entente/control.sock";

/// A request line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`API_VERSION`] of the client.
    pub api: u32,
    /// The request.
    pub request: Request,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// The node's state, its links and what it knows of the cluster (read).
    Status,
    /// The node's devices and their firmware versions (read).
    Inventory,
    /// The node's history of events (read).
    History {
        /// Most recent entries to return.
        limit: u32,
    },
    /// A dry run of a campaign on this node: what would change, and whether the node would
    /// refuse it (read).
    CampaignPlan {
        /// The canonical manifest bytes.
        manifest: String,
        /// The detached signature line.
        signature: String,
    },
    /// Starts a campaign from a signed manifest (mutating).
    CampaignStart {
        /// The canonical manifest bytes, as a UTF-8 string (the manifest is JSON).
        manifest: String,
        /// The detached signature line.
        signature: String,
        /// Names of the image files to seed the campaign with (for messages; the files are
        /// passed open with the request, SCM_RIGHTS, one per name, in order); each is staged for
        /// every manifest profile whose image it is, verified chunk by chunk.
        images: Vec<String>,
    },
    /// Stages image files for a signed manifest's profiles, each verified chunk by chunk
    /// (mutating; the manifest is checked, not accepted).
    ImageAdd {
        /// The canonical manifest bytes.
        manifest: String,
        /// The detached signature line.
        signature: String,
        /// The image files' names (for messages); the files themselves are passed open with
        /// the request (SCM_RIGHTS), one per name, in order.
        images: Vec<String>,
    },
    /// The images in the agent's store (read).
    ImageList,
    /// Re-reads an image from the store and checks every chunk and the whole digest (read).
    ImageVerify {
        /// The image's sha256 (hex).
        sha256: String,
    },
    /// Retires a dead link so convergence ignores it (mutating).
    LinkRetire {
        /// The neighbour at the other end.
        peer: u64,
    },
    /// Restores a retired link: it is live again and convergence waits for it (mutating).
    LinkRestore {
        /// The neighbour at the other end.
        peer: u64,
    },
    /// An operator's signed statement (pause, resume or abort a campaign), applied here and
    /// carried to every agent (mutating). The agent checks it against its trusted operator
    /// keys.
    Control {
        /// The statement line (`entente-control-v1 ...`, entente-stage's `SignedStatement`).
        statement: String,
    },
}

impl Request {
    /// Whether the request changes state (and so needs the admin group).
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Request::CampaignStart { .. }
                | Request::LinkRetire { .. }
                | Request::LinkRestore { .. }
                | Request::ImageAdd { .. }
                | Request::Control { .. }
        )
    }
}

/// A response line: either a result or an error.
// One per request, built and serialised at once: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded.
    Ok {
        /// Its result.
        result: Reply,
    },
    /// The request failed.
    Error {
        /// What went wrong, for a person.
        message: String,
        /// Machine-readable class.
        code: ErrorCode,
    },
}

/// Classes of failure (they map to the CLI's exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller may not do this.
    Unauthorized,
    /// The request is malformed or names something unknown.
    BadRequest,
    /// The request was understood and refused (bad signature, rollback, ...).
    Refused,
    /// Nothing to do (e.g. the campaign is already running).
    NothingToDo,
    /// The daemon failed.
    Internal,
}

/// The result of a successful request.
// One per request, built and serialised at once: its size costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// For [`Request::Status`].
    Status(Status),
    /// For [`Request::Inventory`].
    Inventory(Inventory),
    /// For [`Request::History`].
    History {
        /// Entries, oldest first.
        entries: Vec<HistoryEntry>,
    },
    /// For [`Request::CampaignStart`].
    CampaignStarted {
        /// The campaign's epoch.
        epoch: u64,
        /// The manifest's sha256 (hex).
        manifest: String,
    },
    /// For [`Request::CampaignPlan`].
    Plan(Plan),
    /// For [`Request::ImageList`] and [`Request::ImageAdd`] (the images now in the store).
    Images {
        /// The images.
        images: Vec<ImageEntry>,
    },
    /// For mutating requests with nothing more to say.
    Done,
}

/// An image in an agent's store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// Its sha256 (hex).
    pub sha256: String,
    /// Its version string.
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// Chunks.
    pub chunks: u32,
}

/// What a campaign would do on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The node.
    pub node: u64,
    /// The campaign's epoch.
    pub epoch: u64,
    /// What the epoch means.
    pub semantics: String,
    /// The node's hw-profile.
    pub profile: String,
    /// Component changes.
    pub changes: Vec<PlannedChange>,
    /// Why the node would refuse the campaign (empty: it would run it).
    pub refusals: Vec<String>,
}

/// One component's change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    /// Component.
    pub component: String,
    /// Version running now.
    pub from: Option<String>,
    /// Version the campaign brings.
    pub to: String,
    /// The activation method the node would use.
    pub activation: String,
    /// Whether it disrupts traffic (then neighbour leases bound the disruption).
    pub disruptive: bool,
    /// Image size in bytes.
    pub bytes: u64,
}

/// A node's view of itself and of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node: u64,
    /// The cluster's public name (16 hex digits, from its key): operator statements carry it.
    #[serde(default)]
    pub cluster: String,
    /// How many operator keys this agent trusts (0: it refuses every operator statement).
    #[serde(default)]
    pub operator_keys: u64,
    /// The campaign epoch this node is in (0: none).
    pub epoch: u64,
    /// This node's phase (`idle`, `announced`, `staged`, `activated`, `converged`, ...).
    pub phase: String,
    /// What its activation is doing: `idle`, `draining`, `leasing` or `activating`.
    #[serde(default)]
    pub activity: String,
    /// Whether `Conv(P, epoch)` holds as far as this node knows: every link of the gossiped
    /// peer graph `P` committed `epoch` or is retired, no node with a live link is stale, and
    /// (when configured) every expected node has reported.
    pub converged: bool,
    /// Live links of `P` that committed `epoch` (a retired link is never counted here).
    pub links_committed: u64,
    /// Links of `P`, retired ones included.
    pub links_total: u64,
    /// Links of `P` retired by an operator (outside the live graph).
    #[serde(default)]
    pub links_retired: u64,
    /// How old, in milliseconds, the oldest report this view relies on is: the largest
    /// `last_seen_ms` of the nodes with a live link.
    #[serde(default)]
    pub view_age_ms: u64,
    /// This node's links.
    pub links: Vec<LinkStatus>,
    /// Phases of every node this node has heard of.
    pub nodes: Vec<NodeStatus>,
    /// Probes interpreted under another epoch than their sender's (a safety violation).
    pub probe_mismatches: u64,
    /// Messages a correct peer never sends.
    pub protocol_errors: u64,
    /// Transport counters.
    pub transport: TransportStats,
    /// Progress of a flash into the device, percent, while one runs.
    pub flash_percent: Option<u8>,
    /// Progress of fetching a campaign's image from neighbours, while one is fetched.
    #[serde(default)]
    pub image: Option<ImageProgress>,
    /// Whether an operator paused this node's campaign.
    #[serde(default)]
    pub paused: bool,
    /// Why the node's last activation failed its health gate (it rolled back), if it did.
    #[serde(default)]
    pub unhealthy: Option<String>,
    /// The last operator statement applied here, if any.
    #[serde(default)]
    pub control: Option<ControlStatus>,
    /// Operator statements from neighbours this agent refused (expired, signed by a key it does
    /// not trust or far ahead of its clock, for another cluster): a node whose operator
    /// statements stop short of it shows here.
    #[serde(default)]
    pub controls_refused: u64,
}

/// An operator statement as an agent applied it: what, for which campaign, who signed it,
/// when and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// `pause`, `resume` or `abort`.
    pub action: String,
    /// The campaign it concerns.
    pub epoch: u64,
    /// The operator key that signed it (key id, hex).
    pub key: String,
    /// When it was signed (RFC 3339).
    pub signed_at: String,
    /// Its counter (signing time, Unix milliseconds).
    pub counter: u64,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// The operator's reason.
    pub reason: String,
}

/// An image on its way to this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageProgress {
    /// The image's sha256, hex.
    pub sha256: String,
    /// Chunks verified and staged here.
    pub chunks_held: u32,
    /// Chunks in the image.
    pub chunks: u32,
    /// Neighbours dropped as sources for sending chunks that did not verify.
    pub dropped_sources: Vec<u64>,
}

/// One link of this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// The neighbour.
    pub peer: u64,
    /// Committed epoch.
    pub committed: u64,
    /// `idle`, `tentative`, `reflecting` or `fresh`.
    pub state: String,
    /// Whether the connection is up.
    pub connected: bool,
    /// Whether an operator retired the link.
    pub retired: bool,
}

/// Another node's last reported phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node.
    pub node: u64,
    /// Campaign epoch of its report.
    pub epoch: u64,
    /// Its phase.
    pub phase: String,
    /// The incarnation of its report (grows when a node lost its store).
    #[serde(default)]
    pub incarnation: u32,
    /// Milliseconds since this node last heard a report of that node (0 for itself; since
    /// this agent started, if it has heard none).
    #[serde(default)]
    pub last_seen_ms: u64,
    /// Not heard of for longer than `[status] stale_after_s`.
    #[serde(default)]
    pub stale: bool,
}

/// Transport counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStats {
    /// Connections that came up.
    pub connections_up: u64,
    /// Of those, connections whose frames carry no MAC tag (a peer, or this agent, without
    /// frame MACs: `[transport] frame_macs`).
    #[serde(default)]
    pub connections_untagged: u64,
    /// Peers refused for failing the cluster-key proof, and connections cut for a frame that
    /// failed its MAC or lacked it.
    pub auth_failures: u64,
    /// Connections cut for framing violations.
    pub protocol_errors: u64,
}

/// A node's devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// One entry per device.
    pub devices: Vec<DeviceEntry>,
}

/// One device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Its hw-profile.
    pub profile: String,
    /// Its components' versions.
    pub components: Vec<ComponentEntry>,
    /// `ok`, `degraded` or `failed`.
    pub health: String,
    /// What NVML reports on this host, for a device whose hw-profile reads its inventory
    /// through NVML (the GPU profiles); `null` for other devices.
    #[serde(default)]
    pub nvml: Option<NvmlEntry>,
}

/// The GPU inventory NVML gives on this host, or why it gives none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmlEntry {
    /// The NVIDIA driver's version (`null` when NVML could not be read).
    pub driver_version: Option<String>,
    /// The GPUs NVML sees, in its index order (empty when it could not be read).
    pub gpus: Vec<GpuEntry>,
    /// Why NVML could not be read (`unavailable: libnvidia-ml not found` on a host without
    /// the NVIDIA driver); `null` when it was.
    pub error: Option<String>,
}

/// One GPU as NVML reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuEntry {
    /// NVML's index of the GPU.
    pub index: u32,
    /// The product name.
    pub name: String,
    /// The PCI bus id (`00000000:18:00.0`).
    pub pci_bus_id: String,
    /// The GPU's UUID.
    pub uuid: String,
    /// The VBIOS version.
    pub vbios_version: String,
    /// The InfoROM image version, where the GPU reports one.
    pub inforom_image_version: Option<String>,
}

/// One component's versions (devlink's fixed / running / stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentEntry {
    /// Component name.
    pub name: String,
    /// Running version.
    pub running: Option<String>,
    /// Version staged in the inactive bank.
    pub stored: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_stable_names() {
        let e = Envelope {
            api: API_VERSION,
            request: Request::History { limit: 5 },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"api":2,"request":{"kind":"history","limit":5}}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), e);
        assert!(Request::LinkRetire { peer: 2 }.is_mutating());
        assert!(Request::LinkRestore { peer: 2 }.is_mutating());
        let text = serde_json::to_string(&Request::LinkRestore { peer: 2 }).unwrap();
        assert_eq!(text, r#"{"kind":"link_restore","peer":2}"#);
        assert!(!Request::Status.is_mutating());
    }

    #[test]
    fn an_inventory_without_nvml_reads_back_and_nvml_errors_keep_their_text() {
        let old = r#"{"devices":[{"profile":"sim-nic","components":[],"health":"ok"}]}"#;
        let inv: Inventory = serde_json::from_str(old).unwrap();
        assert_eq!(inv.devices[0].nvml, None);
        let entry = NvmlEntry {
            driver_version: None,
            gpus: Vec::new(),
            error: Some("unavailable: libnvidia-ml not found".into()),
        };
        let j = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "driver_version": null,
                "gpus": [],
                "error": "unavailable: libnvidia-ml not found"
            })
        );
    }
}
