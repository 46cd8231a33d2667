//! The device worker: a thread that owns the device and does its slow work (flashing,
//! activating) so the protocol loop keeps answering peers meanwhile. Jobs go in, results come
//! back over channels, in order.

use crossbeam_channel::{unbounded, Receiver, Sender};
use entente_devices::device::{Device, ImageInfo, Inventory};
use entente_devices::nvml::GpuInventory;
use entente_devices::profile::{ActivationMethod, Backend};
use entente_stage::manifest::ProfileImage;
use entente_stage::store::Store;
use std::io::Read;
use std::thread::JoinHandle;

/// Work for the device.
#[derive(Debug)]
pub enum Job {
    /// Flash the staged image of campaign `epoch` from the store into the inactive bank.
    Stage {
        /// Campaign epoch.
        epoch: u64,
        /// The image, as the manifest describes it.
        image: ProfileImage,
    },
    /// Activate the staged image (the node was drained before, when `disruptive`).
    Activate {
        /// Campaign epoch.
        epoch: u64,
        /// Whether the method disrupts traffic.
        disruptive: bool,
        /// The method.
        method: ActivationMethod,
        /// The version the device must report running afterwards (the manifest's).
        expect: Option<String>,
    },
    /// Run the firmware that ran before campaign `epoch`'s again.
    Rollback {
        /// Campaign epoch rolled back.
        epoch: u64,
    },
    /// Ask whether the device can take a link epoch.
    PrepareLinkEpoch {
        /// Epoch.
        epoch: u64,
    },
    /// Record a link's epoch in the device.
    SetLinkEpoch {
        /// Neighbour.
        peer: u64,
        /// Epoch.
        epoch: u64,
    },
    /// Report the inventory.
    Inventory,
}

/// What the device did.
#[derive(Debug)]
pub enum Done {
    /// Staging finished.
    Staged {
        /// Campaign epoch.
        epoch: u64,
        /// The error, if it failed.
        error: Option<String>,
    },
    /// Activation finished.
    Activated {
        /// Campaign epoch.
        epoch: u64,
        /// The error, if it failed.
        error: Option<String>,
        /// Why the device, activated, fails the health gate (it does not report the expected
        /// version, or reports itself failed).
        unhealthy: Option<String>,
    },
    /// The health hook after an activation finished: its output's tail, or why it failed.
    HealthChecked {
        /// Campaign epoch.
        epoch: u64,
        /// The outcome.
        result: Result<String, String>,
    },
    /// A rollback finished: what the device runs now, or why it could not go back.
    RolledBack {
        /// Campaign epoch rolled back.
        epoch: u64,
        /// The device's inventory after it, or the error.
        result: Result<Box<entente_devices::device::Inventory>, String>,
    },
    /// The device's answer to whether it can take a link epoch.
    LinkEpochPrepared {
        /// Epoch.
        epoch: u64,
        /// Its refusal, if it refused.
        result: Result<(), String>,
    },
    /// The device applied a link epoch, or failed to.
    LinkEpochApplied {
        /// Neighbour.
        peer: u64,
        /// Epoch.
        epoch: u64,
        /// The failure, if it failed.
        result: Result<(), String>,
    },
    /// The inventory and health.
    Inventory(Box<Report>),
    /// Flash progress, percent.
    Progress(u8),
    /// The drain before a disruptive activation ended: the tail of the hook's output, or why
    /// it failed.
    Drained {
        /// Campaign epoch.
        epoch: u64,
        /// Output, or the failure.
        result: Result<String, String>,
    },
}

/// What the device reports when asked for its inventory.
#[derive(Debug)]
pub struct Report {
    /// The device's components and their versions, or why they could not be read.
    pub inventory: Result<Inventory, String>,
    /// The device's health, lowercase (`ok`, `degraded`, `failed`).
    pub health: String,
    /// For a profile whose inventory backend is NVML (GPUs): the GPUs NVML reports on this
    /// host, or why it reports none (`unavailable: libnvidia-ml not found`); `None` for
    /// other profiles.
    pub nvml: Option<Result<GpuInventory, String>>,
}

impl Report {
    /// Asks `device` (and NVML, where its profile reads inventory there). A failure of either
    /// is reported as its text, never a panic.
    pub fn read(device: &dyn Device) -> Report {
        let nvml = (device.profile().inventory == Backend::Nvml)
            .then(|| entente_devices::nvml::inventory().map_err(|e| e.to_string()));
        Report {
            inventory: device.inventory().map_err(|e| e.to_string()),
            health: format!("{:?}", device.health()).to_lowercase(),
            nvml,
        }
    }
}

/// Handle of the worker thread.
pub struct Worker {
    /// Jobs in.
    pub jobs: Sender<Job>,
    /// Results out.
    pub done: Receiver<Done>,
    /// Where work done beside the device thread (drains) reports, into `done`.
    pub reports: Sender<Done>,
    thread: Option<JoinHandle<()>>,
}

/// Reads an image out of the store chunk by chunk (each chunk re-verified).
struct StoreReader {
    reader: entente_stage::store::ImageReader,
    next: u32,
    buf: Vec<u8>,
    at: usize,
}

impl Read for StoreReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.next == self.reader.chunk_count() {
                return Ok(0);
            }
            let chunk = self
                .reader
                .read_chunk(self.next)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.buf.clear();
            self.buf.extend_from_slice(chunk);
            self.at = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Worker {
    /// Starts the worker over `device`; staged images are read from `store`.
    pub fn start(mut device: Box<dyn Device + Send>, store: Store) -> Worker {
        let (jobs, job_rx) = unbounded::<Job>();
        let (done_tx, done) = unbounded::<Done>();
        let reports = done_tx.clone();
        let thread = std::thread::Builder::new()
            .name("device".into())
            .spawn(move || {
                let component = device
                    .profile()
                    .components
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                // The campaign whose image the device already ran when asked to stage it (a node
                // that lost its state store learns its campaign again): nothing to flash or
                // activate.
                let mut already_running: Option<u64> = None;
                for job in job_rx {
                    let reply = match job {
                        Job::Stage { epoch, image } => {
                            let running = device.inventory().ok().and_then(|inv| {
                                inv.component(&component).and_then(|c| c.running.clone())
                            });
                            if running.as_deref() == Some(image.version.as_str()) {
                                already_running = Some(epoch);
                                Done::Staged { epoch, error: None }
                            } else {
                                already_running = None;
                                let error =
                                    stage(&mut *device, &component, &store, &image, &done_tx).err();
                                Done::Staged { epoch, error }
                            }
                        }
                        Job::Activate { epoch, expect, .. } if already_running == Some(epoch) => {
                            let unhealthy = health_gate(&*device, &component, expect.as_deref());
                            Done::Activated {
                                epoch,
                                error: None,
                                unhealthy,
                            }
                        }
                        Job::Activate {
                            epoch,
                            method,
                            expect,
                            ..
                        } => {
                            let error = device
                                .activate(&component, method)
                                .map(|_| ())
                                .map_err(|e| e.to_string())
                                .err();
                            let unhealthy = error
                                .is_none()
                                .then(|| health_gate(&*device, &component, expect.as_deref()))
                                .flatten();
                            Done::Activated {
                                epoch,
                                error,
                                unhealthy,
                            }
                        }
                        Job::Rollback { epoch } => {
                            already_running = None;
                            let result = device
                                .rollback(&component)
                                .and_then(|_| device.inventory())
                                .map(Box::new)
                                .map_err(|e| e.to_string());
                            Done::RolledBack { epoch, result }
                        }
                        Job::PrepareLinkEpoch { epoch } => Done::LinkEpochPrepared {
                            epoch,
                            result: device.can_take_link_epoch(epoch).map_err(|e| e.to_string()),
                        },
                        Job::SetLinkEpoch { peer, epoch } => Done::LinkEpochApplied {
                            peer,
                            epoch,
                            result: device
                                .set_link_epoch(peer, epoch)
                                .map_err(|e| e.to_string()),
                        },
                        Job::Inventory => Done::Inventory(Box::new(Report::read(&*device))),
                    };
                    if done_tx.send(reply).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the device thread");
        Worker {
            jobs,
            done,
            reports,
            thread: Some(thread),
        }
    }
}

/// The device's part of the health gate after an activation: it reports running the version
/// the manifest names, and does not report itself failed. `None`: healthy.
fn health_gate(device: &dyn Device, component: &str, expect: Option<&str>) -> Option<String> {
    if let entente_devices::device::Health::Failed(why) = device.health() {
        return Some(format!("the device reports itself failed: {why}"));
    }
    let expect = expect?;
    let running = match device.inventory() {
        Ok(inv) => inv.component(component).and_then(|c| c.running.clone()),
        Err(e) => return Some(format!("the device's inventory cannot be read: {e}")),
    };
    match running {
        Some(v) if v == expect => None,
        Some(v) => Some(format!("the device reports running {v}, not {expect}")),
        None => Some(format!(
            "the device reports no running version (expected {expect})"
        )),
    }
}

fn stage(
    device: &mut dyn Device,
    component: &str,
    store: &Store,
    image: &ProfileImage,
    progress: &Sender<Done>,
) -> Result<(), String> {
    let reader = store.open_image(image).map_err(|e| e.to_string())?;
    let mut r = StoreReader {
        reader,
        next: 0,
        buf: Vec::new(),
        at: 0,
    };
    let info = ImageInfo {
        version: image.version.clone(),
        len: image.size,
        sha256: image.sha256.0,
    };
    let mut last = 0u8;
    device
        .stage(component, &info, &mut r, &mut |p| {
            let pct = p.percent();
            if pct >= last.saturating_add(10) || pct == 100 {
                last = pct;
                let _ = progress.send(Done::Progress(pct));
            }
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl Worker {
    /// Whether the device thread is still running.
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let (tx, _) = unbounded();
        drop(std::mem::replace(&mut self.jobs, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
