//! What the control socket reports: status, inventory, history; and the campaign start.

use super::{controls, Agent};
use crate::worker::Job;
use entente_api::{
    ComponentEntry, DeviceEntry, GpuEntry, Inventory, LinkStatus, NvmlEntry, Status, TransportStats,
};
use entente_api::{HistoryEvent, HistoryKind};
use entente_devices::nvml::GpuInventory;
use entente_proto::{Epoch, NodeId, Pending};
use entente_stage::{Digest, Signature};
use std::path::Path;

/// Why a campaign start was refused.
#[derive(Debug)]
pub enum StartError {
    /// The manifest or an image was refused.
    Refused(String),
    /// The request itself is wrong.
    Bad(String),
    /// This node already runs that campaign.
    AlreadyRunning(u64),
}

/// What NVML reported, as the control socket answers it.
fn nvml_entry(r: &Result<GpuInventory, String>) -> NvmlEntry {
    match r {
        Ok(inv) => NvmlEntry {
            driver_version: Some(inv.driver_version.clone()),
            gpus: inv
                .gpus
                .iter()
                .map(|g| GpuEntry {
                    index: g.index,
                    name: g.name.clone(),
                    pci_bus_id: g.pci_bus_id.clone(),
                    uuid: g.uuid.clone(),
                    vbios_version: g.vbios_version.clone(),
                    inforom_image_version: g.inforom_image_version.clone(),
                })
                .collect(),
            error: None,
        },
        Err(e) => NvmlEntry {
            driver_version: None,
            gpus: Vec::new(),
            error: Some(e.clone()),
        },
    }
}

impl Agent {
    /// The node's status and its view of the cluster.
    pub fn status(&self) -> Status {
        let rec = self.node.record();
        let epoch = rec.campaign.map_or(Epoch(0), |c| c.epoch);
        let incompatible = self
            .node
            .links()
            .iter()
            .any(|l| l.incompatible && !l.retired);
        let view = self.view(epoch, incompatible);
        let t = self.transport.stats();
        Status {
            node: self.cfg.node_id,
            cluster: self.cluster.iter().map(|b| format!("{b:02x}")).collect(),
            operator_keys: self.operator_keys.as_ref().map_or(0, |k| k.len() as u64),
            epoch: epoch.0,
            phase: rec.phase.phase.name().to_owned(),
            activity: self.node.activity().into(),
            converged: view.converged,
            links_committed: view.committed,
            links_total: view.total,
            links_retired: view.retired,
            view_age_ms: view.age_ms,
            links: self
                .node
                .links()
                .iter()
                .map(|l| LinkStatus {
                    peer: l.peer.0,
                    committed: l.state.committed.0,
                    state: if l.incompatible {
                        "incompatible".into()
                    } else if self.node.device_lagging(l.peer) {
                        "device_lagging".into()
                    } else if !l.state.fresh && l.device != Some(l.state.committed) {
                        "waiting_for_device".into()
                    } else if l.state.fresh {
                        "fresh".into()
                    } else {
                        match l.state.pending {
                            Pending::None => "idle".into(),
                            Pending::Tentative(_) => "tentative".into(),
                            Pending::Reflecting(_) => "reflecting".into(),
                        }
                    },
                    connected: self.peers.get(&l.peer.0).is_some_and(|p| p.conn.is_some()),
                    retired: l.retired,
                })
                .collect(),
            nodes: view.nodes,
            probe_mismatches: self.node.stats().probe_mismatches,
            protocol_errors: self.node.stats().protocol_errors,
            transport: TransportStats {
                connections_up: t.connections_up,
                connections_untagged: t.connections_untagged,
                auth_failures: t.auth_failures,
                protocol_errors: t.protocol_errors,
            },
            flash_percent: self.flash_percent,
            image: self.image_progress(),
            paused: self.node.record().paused,
            unhealthy: self.unhealthy.clone(),
            control: self.control_status(),
            controls_refused: self.controls_refused,
        }
    }

    /// The device inventory (as last reported; a fresh report is requested).
    pub fn inventory(&mut self) -> Inventory {
        let _ = self.worker.jobs.send(Job::Inventory);
        // The worker answers between flashes; wait briefly for a fresh report, handling what
        // it reports before it (flash progress, a finished staging).
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while let Ok(d) = self.worker.done.recv_deadline(deadline) {
            let fresh = matches!(d, crate::worker::Done::Inventory(_));
            let _ = self.on_device_report(d);
            if fresh {
                break;
            }
        }
        let (components, health, nvml) = match &self.inventory {
            Some(r) => {
                let (components, health) = match &r.inventory {
                    Ok(inv) => (
                        inv.components
                            .iter()
                            .map(|c| ComponentEntry {
                                name: c.component.clone(),
                                running: c.running.clone(),
                                stored: c.stored.clone(),
                            })
                            .collect(),
                        r.health.clone(),
                    ),
                    Err(e) => (Vec::new(), format!("failed: {e}")),
                };
                (components, health, r.nvml.as_ref().map(nvml_entry))
            }
            None => (Vec::new(), "unknown".into(), None),
        };
        Inventory {
            devices: vec![DeviceEntry {
                profile: self.profile.name.clone(),
                components,
                health,
                nvml,
            }],
        }
    }

    fn on_device_report(&mut self, d: crate::worker::Done) -> anyhow::Result<()> {
        self.on_device(d)
    }

    /// History, oldest first.
    pub fn history_entries(&self, limit: u32) -> Vec<entente_api::HistoryEntry> {
        self.db
            .recent_history(limit)
            .unwrap_or_default()
            .into_iter()
            .map(|(at_ms, event)| {
                entente_api::HistoryEntry::new(at_ms, HistoryEvent::from_stored(&event))
            })
            .collect()
    }

    /// The images in the store.
    pub fn image_list(&self) -> Vec<entente_api::ImageEntry> {
        let mut v: Vec<entente_api::ImageEntry> = self
            .images
            .values()
            .map(|i| entente_api::ImageEntry {
                sha256: i.sha256.to_hex(),
                version: i.version.clone(),
                size: i.size,
                chunks: i.chunk_count(),
            })
            .collect();
        v.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        v
    }

    /// Stages `images` for the profiles of a checked (not accepted) manifest.
    pub fn image_add(
        &mut self,
        manifest: &str,
        signature: &str,
        images: &[ImageFile],
    ) -> Result<usize, StartError> {
        let sig = Signature::parse(signature.trim(), Path::new("<request>"))
            .map_err(|e| StartError::Bad(e.to_string()))?;
        let verified = self
            .verifier
            .check(manifest.as_bytes(), &sig, entente_stage::unix_now())
            .map_err(|e| StartError::Refused(e.to_string()))?;
        let mut added = 0;
        for f in images {
            let (path, len) = (f.label, f.len);
            let mut matched = false;
            for img in verified
                .manifest()
                .profiles
                .values()
                .filter(|i| i.size == len)
            {
                if self.store.contains(img) {
                    matched = true;
                    continue;
                }
                if self.store.stage_from(img, f.file, Path::new(path)).is_ok() {
                    self.history(HistoryEvent::new(
                        HistoryKind::Image,
                        format!("image {} added from {path}", img.sha256.to_hex()),
                    ));
                    self.images.insert(img.sha256.0, img.clone());
                    let epoch = self.image_epochs.entry(img.sha256.0).or_default();
                    *epoch = (*epoch).max(verified.manifest().epoch);
                    self.announcements.changed(img.sha256.0);
                    matched = true;
                    added += 1;
                }
            }
            if !matched {
                return Err(StartError::Refused(format!(
                    "{path} is not the image of any profile of this manifest (size or chunk digests differ)"
                )));
            }
        }
        Ok(added)
    }

    /// Re-reads an image from the store, checking every chunk and the whole digest.
    pub fn image_verify(&mut self, sha256: &str) -> Result<(), StartError> {
        let d = Digest::from_hex(sha256).map_err(|e| StartError::Bad(e.to_string()))?;
        let img = self
            .images
            .get(&d.0)
            .cloned()
            .ok_or_else(|| StartError::Bad(format!("no image {sha256} in the store")))?;
        let mut r = self
            .store
            .open_image(&img)
            .map_err(|e| StartError::Refused(e.to_string()))?;
        r.read_all(|_| Ok(()))
            .map_err(|e| StartError::Refused(e.to_string()))
    }

    /// Retires the link to `peer`.
    pub fn retire(&mut self, peer: u64) -> bool {
        let now = self.now();
        self.node.retire_link(now, NodeId(peer))
    }

    /// Restores the retired link to `peer`.
    pub fn restore(&mut self, peer: u64) -> bool {
        let now = self.now();
        self.node.restore_link(now, NodeId(peer))
    }
}

/// An image file a caller passed open with its request, and the name it gave it.
pub struct ImageFile<'a> {
    /// The caller's name for it (its path there), for messages only: never opened.
    pub label: &'a str,
    /// The open file.
    pub file: &'a std::fs::File,
    /// Its length.
    pub len: u64,
}

/// Pairs the names a request gives its images with the files passed with it, each a regular
/// file opened for reading.
fn image_files<'a>(
    labels: &'a [String],
    files: &'a [std::fs::File],
) -> Result<Vec<ImageFile<'a>>, StartError> {
    if labels.len() != files.len() {
        return Err(StartError::Bad(format!(
            "{} images named but {} files passed with the request: the agent reads images only \
             from files the caller opened and passed (as entente campaign start and image add do)",
            labels.len(),
            files.len()
        )));
    }
    labels
        .iter()
        .zip(files)
        .map(|(label, file)| {
            crate::control::fds::readable_regular(file)
                .map(|len| ImageFile { label, file, len })
                .map_err(|why| StartError::Bad(format!("{label}: {why}")))
        })
        .collect()
}

impl Agent {
    /// Answers waiting control requests.
    pub(super) fn serve_control(&mut self) {
        use entente_api::{ErrorCode, Reply, Request, Response};
        for p in self.control.accept() {
            let response = match &p.request {
                Err((code, message)) => Response::Error {
                    message: message.clone(),
                    code: *code,
                },
                Ok(req) => {
                    let result = match req {
                        Request::Status => Ok(Reply::Status(self.status())),
                        Request::Inventory => Ok(Reply::Inventory(self.inventory())),
                        Request::History { limit } => Ok(Reply::History {
                            entries: self.history_entries(*limit),
                        }),
                        Request::CampaignStart {
                            manifest,
                            signature,
                            images,
                        } => {
                            tracing::info!(uid = p.caller.uid, "campaign start requested");
                            match image_files(images, &p.files)
                                .and_then(|files| self.start_campaign(manifest, signature, &files))
                            {
                                // Started means durable: the campaign record is committed (and
                                // the announcements sent) before the operator is told.
                                Ok((epoch, manifest)) => match self.carry_out() {
                                    Ok(()) => Ok(Reply::CampaignStarted { epoch, manifest }),
                                    Err(e) => Err((
                                        ErrorCode::Internal,
                                        format!("campaign {epoch} could not be recorded: {e}"),
                                    )),
                                },
                                Err(StartError::Refused(m)) => Err((ErrorCode::Refused, m)),
                                Err(StartError::Bad(m)) => Err((ErrorCode::BadRequest, m)),
                                Err(StartError::AlreadyRunning(e)) => Err((
                                    ErrorCode::NothingToDo,
                                    format!("campaign {e} with this manifest is already running"),
                                )),
                            }
                        }
                        Request::CampaignPlan {
                            manifest,
                            signature,
                        } => {
                            if self.inventory.is_none() {
                                let _ = self.inventory();
                            }
                            match self.plan_campaign(manifest, signature) {
                                Ok(plan) => Ok(Reply::Plan(plan)),
                                Err(StartError::Refused(m)) => Err((ErrorCode::Refused, m)),
                                Err(StartError::Bad(m)) => Err((ErrorCode::BadRequest, m)),
                                Err(StartError::AlreadyRunning(e)) => Err((
                                    ErrorCode::NothingToDo,
                                    format!("campaign {e} is running"),
                                )),
                            }
                        }
                        Request::ImageList => Ok(Reply::Images {
                            images: self.image_list(),
                        }),
                        Request::ImageAdd {
                            manifest,
                            signature,
                            images,
                        } => match image_files(images, &p.files)
                            .and_then(|files| self.image_add(manifest, signature, &files))
                        {
                            Ok(_) => Ok(Reply::Images {
                                images: self.image_list(),
                            }),
                            Err(StartError::Refused(m)) => Err((ErrorCode::Refused, m)),
                            Err(StartError::Bad(m)) => Err((ErrorCode::BadRequest, m)),
                            Err(StartError::AlreadyRunning(_)) => {
                                Err((ErrorCode::NothingToDo, "already staged".into()))
                            }
                        },
                        Request::ImageVerify { sha256 } => match self.image_verify(sha256) {
                            Ok(()) => Ok(Reply::Done),
                            Err(StartError::Refused(m)) => Err((ErrorCode::Refused, m)),
                            Err(StartError::Bad(m)) => Err((ErrorCode::BadRequest, m)),
                            Err(StartError::AlreadyRunning(_)) => {
                                Err((ErrorCode::Internal, "unexpected".into()))
                            }
                        },
                        Request::LinkRetire { peer } => {
                            if self.retire(*peer) {
                                self.history(
                                    HistoryEvent::new(
                                        HistoryKind::LinkRetired,
                                        format!("link to {peer} retired by uid {}", p.caller.uid),
                                    )
                                    .peer(*peer),
                                );
                                // Retired means recorded, as for a campaign start.
                                self.carry_out().map(|()| Reply::Done).map_err(|e| {
                                    (ErrorCode::Internal, format!("retiring the link: {e}"))
                                })
                            } else {
                                Err((
                                    ErrorCode::BadRequest,
                                    format!("node {peer} is not a neighbour of this node"),
                                ))
                            }
                        }
                        Request::Control { statement } => self
                            .operator_statement(statement)
                            .map(|()| Reply::Done)
                            .map_err(controls::Refusal::answer),
                        Request::LinkRestore { peer } => {
                            if self.restore(*peer) {
                                self.history(
                                    HistoryEvent::new(
                                        HistoryKind::LinkRestored,
                                        format!("link to {peer} restored by uid {}", p.caller.uid),
                                    )
                                    .peer(*peer),
                                );
                                Ok(Reply::Done)
                            } else {
                                Err((
                                    ErrorCode::BadRequest,
                                    format!("node {peer} is not a neighbour of this node"),
                                ))
                            }
                        }
                    };
                    match result {
                        Ok(result) => Response::Ok { result },
                        Err((code, message)) => Response::Error { message, code },
                    }
                }
            };
            p.answer(&response);
        }
    }
}
