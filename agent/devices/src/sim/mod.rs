//! The simulated device: file-backed A/B banks with persisted versions, flash progress, and
//! fault injection.
//!
//! A device is a directory:
//!
//! - `<component>.a.bin`, `<component>.b.bin`: the two banks of each component;
//! - `state.json`: which bank is active, what each bank holds (version, sha256, length, status),
//!   whether a staged image waits, and the committed link epoch per peer. It is replaced
//!   atomically (temporary file, fsync, rename, directory fsync) after every change.
//!
//! Staging writes the inactive bank. Before the first byte the bank is recorded as `writing`;
//! only after the bank is fsynced and reads back with the expected sha256 is it recorded as
//! `valid` and pending. So a crash mid-flash (the `power_loss_at_percent` fault) leaves a bank
//! marked `writing`: the next [`SimDevice::open`] marks it invalid ("power was lost during the
//! flash") and [`Device::activate`] refuses it. Activation verifies the bank's content again, so a
//! bank that changed after staging (`corrupt_bank = "after-stage"`) is refused too. The banks
//! are switched only by rewriting the state file, which is atomic.
//!
//! A fresh directory starts with the factory image, version [`FACTORY_VERSION`], in bank A.

mod faults;
pub(crate) mod state;

pub use faults::{CorruptBank, Faults};

use crate::device::{
    check_method, hex, Activated, ComponentVersions, Device, DeviceError, Health, ImageInfo,
    Inventory, Progress, Staged,
};
use crate::profile::{ActivationMethod, Backend, Component, Profile};
use sha2::{Digest, Sha256};
use state::{io, Bank, BankState, BankStatus, ComponentState, SimState, FORMAT};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The version of the image a fresh simulated device runs.
pub const FACTORY_VERSION: &str = "0.0.0";

/// Bytes written between progress reports (and fault checks).
const CHUNK: usize = 64 * 1024;

const MIB: u64 = 1 << 20;

/// A simulated device backed by a directory.
#[derive(Debug)]
pub struct SimDevice {
    dir: PathBuf,
    profile: Profile,
    faults: Faults,
    state: SimState,
    /// Power was lost: every operation fails until the device is opened again.
    powered_off: bool,
    /// Problems found with active banks (their content does not match the state).
    active_problems: Vec<String>,
    /// Failures of `set_link_epoch` still to inject (`Faults::link_epoch_failures`).
    link_epoch_failures_left: u32,
}

/// The image a fresh device runs, distinct per profile and component.
fn factory_image(profile: &str, component: &str) -> Vec<u8> {
    format!("entente sim factory image: profile {profile}, component {component}\n").into_bytes()
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The sha256 of a file's content, hex; `None` when it cannot be read.
fn file_sha256(path: &Path) -> Option<(String, u64)> {
    let mut f = File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Some((hex(&h.finalize()), len))
}

impl SimDevice {
    /// Opens the simulated device in `dir` (creating it with the factory image when it has no
    /// state yet) for `profile`, which must be a sim profile, injecting `faults`.
    ///
    /// Opening is the device's restart: a bank whose flash never finished is marked invalid, and
    /// every valid bank is checked against its recorded sha256.
    pub fn open(dir: &Path, profile: Profile, faults: Faults) -> Result<SimDevice, DeviceError> {
        let state_path = dir.join("state.json");
        if profile.backend != Backend::Sim {
            return Err(DeviceError::BadState {
                path: state_path,
                reason: format!(
                    "profile {} has backend {}, not sim",
                    profile.name, profile.backend
                ),
            });
        }
        faults.validate().map_err(|reason| DeviceError::BadState {
            path: state_path.clone(),
            reason: format!("faults: {reason}"),
        })?;
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let failures = faults.link_epoch_failures;
        let mut dev = SimDevice {
            dir: dir.to_path_buf(),
            state: SimState {
                format: FORMAT,
                profile: profile.name.clone(),
                components: BTreeMap::new(),
                link_epochs: BTreeMap::new(),
            },
            profile,
            faults,
            powered_off: false,
            active_problems: Vec::new(),
            link_epoch_failures_left: failures,
        };
        match SimState::load(&state_path)? {
            Some(state) => {
                if state.profile != dev.profile.name {
                    return Err(DeviceError::BadState {
                        path: state_path,
                        reason: format!(
                            "the device was created for profile {}, not {}",
                            state.profile, dev.profile.name
                        ),
                    });
                }
                dev.state = state;
                dev.restart_checks()?;
            }
            None => dev.create()?,
        }
        Ok(dev)
    }

    /// Writes the factory image to bank A of every flashable component.
    fn create(&mut self) -> Result<(), DeviceError> {
        let components: Vec<Component> = self.profile.components.clone();
        for c in components.iter().filter(|c| c.flashable) {
            let image = factory_image(&self.profile.name, &c.name);
            let path = self.bank_file(&c.name, Bank::A);
            let mut f = File::create(&path).map_err(io("creating", &path))?;
            f.write_all(&image).map_err(io("writing", &path))?;
            f.sync_all().map_err(io("syncing", &path))?;
            self.state.components.insert(
                c.name.clone(),
                ComponentState {
                    active: Bank::A,
                    a: Some(BankState {
                        version: FACTORY_VERSION.into(),
                        sha256: hex(&Sha256::digest(&image)),
                        len: image.len() as u64,
                        status: BankStatus::Valid,
                        problem: None,
                    }),
                    b: None,
                    pending: false,
                },
            );
        }
        self.save()
    }

    /// What a restart finds: unfinished flashes, and banks whose content changed.
    fn restart_checks(&mut self) -> Result<(), DeviceError> {
        let mut changed = false;
        let mut active_problems = Vec::new();
        let names: Vec<String> = self.state.components.keys().cloned().collect();
        for name in names {
            let active = self.state.components[&name].active;
            for bank in [Bank::A, Bank::B] {
                let path = self.bank_file(&name, bank);
                let cs = self.state.components.get_mut(&name).expect("listed");
                let Some(b) = cs.bank_mut(bank).as_mut() else {
                    continue;
                };
                match b.status {
                    BankStatus::Writing => {
                        b.status = BankStatus::Invalid;
                        b.problem = Some("incomplete: power was lost during the flash".into());
                        if bank != active {
                            cs.pending = false;
                        }
                        changed = true;
                    }
                    BankStatus::Valid => {
                        let found = file_sha256(&path);
                        if found.as_ref().map(|(d, _)| d) != Some(&b.sha256) {
                            let what = match found {
                                Some((d, _)) => format!("content has sha256 {d}"),
                                None => "content cannot be read".into(),
                            };
                            let problem =
                                format!("{what}, expected {} (changed after staging)", b.sha256);
                            if bank == active {
                                // What runs is not what was activated: report, do not rewrite.
                                active_problems.push(format!(
                                    "component {name:?}: active bank {}: {problem}",
                                    bank.name()
                                ));
                            } else {
                                b.status = BankStatus::Invalid;
                                b.problem = Some(problem);
                                cs.pending = false;
                                changed = true;
                            }
                        }
                    }
                    BankStatus::Invalid => {}
                }
            }
        }
        self.active_problems = active_problems;
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// The device's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The faults it injects.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Changes the faults it injects from now on.
    pub fn set_faults(&mut self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.faults = faults;
        Ok(())
    }

    /// The committed link epoch per peer node.
    pub fn link_epochs(&self) -> &BTreeMap<u64, u64> {
        &self.state.link_epochs
    }

    /// Whether power was lost (the device must be opened again).
    pub fn powered_off(&self) -> bool {
        self.powered_off
    }

    /// The file holding `bank` of `component`.
    pub fn bank_path(&self, component: &str, bank_name: &str) -> PathBuf {
        self.dir.join(format!("{component}.{bank_name}.bin"))
    }

    fn bank_file(&self, component: &str, bank: Bank) -> PathBuf {
        self.bank_path(component, bank.name())
    }

    fn save(&self) -> Result<(), DeviceError> {
        self.state.save(&self.dir.join("state.json"))
    }

    fn powered(&self) -> Result<(), DeviceError> {
        if self.powered_off {
            Err(DeviceError::PoweredOff)
        } else {
            Ok(())
        }
    }

    /// The profile's flashable component called `name`.
    fn flashable(&self, name: &str) -> Result<Component, DeviceError> {
        crate::device::flashable_component(&self.profile, name).cloned()
    }

    fn component_state(&mut self, name: &str) -> Result<&mut ComponentState, DeviceError> {
        let path = self.dir.join("state.json");
        self.state
            .components
            .get_mut(name)
            .ok_or_else(|| DeviceError::BadState {
                path,
                reason: format!("no banks recorded for component {name:?}"),
            })
    }

    /// Marks the inactive bank of `component` invalid and persists that.
    fn invalidate(
        &mut self,
        component: &str,
        bank: Bank,
        problem: String,
    ) -> Result<(), DeviceError> {
        let cs = self.component_state(component)?;
        if let Some(b) = cs.bank_mut(bank).as_mut() {
            b.status = BankStatus::Invalid;
            b.problem = Some(problem);
        }
        cs.pending = false;
        self.save()
    }

    /// The write loop of [`Device::stage`]; returns the sha256 of what was read.
    fn write_bank(
        &mut self,
        component: &str,
        bank: Bank,
        info: &ImageInfo,
        image: &mut dyn Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<[u8; 32], DeviceError> {
        let path = self.bank_file(component, bank);
        let mut file = File::create(&path).map_err(io("creating", &path))?;
        let total = info.len;
        let percent_of = |p: u8| total * u64::from(p) / 100;
        let fail_at = self.faults.fail_at_percent.map(percent_of);
        let power_at = self.faults.power_loss_at_percent.map(percent_of);
        let corrupt_at =
            (self.faults.corrupt_bank == Some(CorruptBank::DuringWrite)).then_some(total / 2);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        progress(Progress { done, total });
        loop {
            // Faults trigger at their byte boundary: the bytes before it are written, the
            // ones after are not.
            let stop = [power_at, fail_at]
                .into_iter()
                .flatten()
                .filter(|&at| at >= done)
                .min();
            if let Some(at) = stop.filter(|&at| at == done) {
                file.sync_all().map_err(io("syncing", &path))?;
                if power_at == Some(at) {
                    let at_percent = self.faults.power_loss_at_percent.unwrap_or(100);
                    // The state still says "writing": the next open finds the bank incomplete.
                    self.powered_off = true;
                    return Err(DeviceError::PowerLoss {
                        component: component.into(),
                        at_percent,
                    });
                }
                let at_percent = self.faults.fail_at_percent.unwrap_or(100);
                let reason = "injected flash failure".to_string();
                self.invalidate(
                    component,
                    bank,
                    format!("incomplete: flash failed at {at_percent}%"),
                )?;
                return Err(DeviceError::FlashFailed {
                    component: component.into(),
                    at_percent,
                    reason,
                });
            }
            if done == total {
                break;
            }
            let mut want = (total - done).min(CHUNK as u64);
            if let Some(at) = stop {
                want = want.min(at - done);
            }
            let chunk = &mut buf[..want as usize];
            let n = read_full(image, chunk).map_err(io("reading the image for", &path))?;
            if n < chunk.len() {
                self.invalidate(component, bank, "incomplete: the image ended early".into())?;
                return Err(DeviceError::ShortImage {
                    component: component.into(),
                    expected: total,
                    got: done + n as u64,
                });
            }
            hasher.update(&*chunk);
            if let Some(at) = corrupt_at.filter(|&at| at >= done && at < done + want) {
                chunk[(at - done) as usize] ^= 0x01;
            }
            file.write_all(chunk).map_err(io("writing", &path))?;
            done += want;
            if self.faults.slow_flash_ms_per_mib > 0 {
                let ms = self.faults.slow_flash_ms_per_mib * want / MIB;
                let us = (self.faults.slow_flash_ms_per_mib * want * 1000 / MIB) % 1000;
                std::thread::sleep(Duration::from_millis(ms) + Duration::from_micros(us));
            }
            progress(Progress { done, total });
        }
        let mut extra = [0u8; 1];
        let more = image
            .read(&mut extra)
            .map_err(io("reading the image for", &path))?;
        if more > 0 {
            self.invalidate(
                component,
                bank,
                "the image was longer than announced".into(),
            )?;
            return Err(DeviceError::LongImage {
                component: component.into(),
                expected: total,
            });
        }
        file.sync_all().map_err(io("syncing", &path))?;
        Ok(hasher.finalize().into())
    }
}

impl Device for SimDevice {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn inventory(&self) -> Result<Inventory, DeviceError> {
        self.powered()?;
        let board = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let components = self
            .profile
            .components
            .iter()
            .map(|c| {
                let fixed = c
                    .fixed_keys
                    .iter()
                    .map(|k| {
                        let v = if k == "board.id" {
                            format!("sim-{board}")
                        } else {
                            "sim".to_string()
                        };
                        (k.clone(), v)
                    })
                    .collect();
                let (running, stored, pending) = match self.state.components.get(&c.name) {
                    None => (Some(FACTORY_VERSION.to_string()), None, false),
                    Some(cs) => {
                        let running = cs.bank(cs.active).map(|b| b.version.clone());
                        let stored = if cs.pending {
                            cs.bank(cs.active.other()).map(|b| b.version.clone())
                        } else {
                            running.clone()
                        };
                        (running, stored, cs.pending)
                    }
                };
                ComponentVersions {
                    component: c.name.clone(),
                    fixed,
                    running,
                    stored,
                    pending_activation: pending,
                }
            })
            .collect();
        Ok(Inventory {
            profile: self.profile.name.clone(),
            components,
        })
    }

    fn stage(
        &mut self,
        component: &str,
        info: &ImageInfo,
        image: &mut dyn Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Staged, DeviceError> {
        self.powered()?;
        let c = self.flashable(component)?;
        let max = c.max_image_bytes.unwrap_or(0);
        if info.len > max {
            return Err(DeviceError::ImageTooLarge {
                component: component.into(),
                len: info.len,
                max,
            });
        }
        let expected = hex(&info.sha256);
        let cs = self.component_state(component)?;
        let bank = cs.active.other();
        *cs.bank_mut(bank) = Some(BankState {
            version: info.version.clone(),
            sha256: expected.clone(),
            len: info.len,
            status: BankStatus::Writing,
            problem: None,
        });
        cs.pending = false;
        self.save()?;

        let read = self.write_bank(component, bank, info, image, progress)?;
        let actual = hex(&read);
        if actual != expected {
            self.invalidate(
                component,
                bank,
                format!("the image had sha256 {actual}, expected {expected}"),
            )?;
            return Err(DeviceError::DigestMismatch {
                component: component.into(),
                expected,
                actual,
            });
        }
        let path = self.bank_file(component, bank);
        let back = file_sha256(&path).map(|(d, _)| d).unwrap_or_default();
        if back != expected {
            self.invalidate(
                component,
                bank,
                format!("reads back with sha256 {back}, expected {expected}"),
            )?;
            return Err(DeviceError::VerifyFailed {
                component: component.into(),
                bank: bank.name().into(),
                expected,
                actual: back,
            });
        }
        let cs = self.component_state(component)?;
        if let Some(b) = cs.bank_mut(bank).as_mut() {
            b.status = BankStatus::Valid;
        }
        cs.pending = true;
        self.save()?;

        if self.faults.corrupt_bank == Some(CorruptBank::AfterStage) {
            let mut bytes = std::fs::read(&path).map_err(io("reading", &path))?;
            match bytes.get_mut(0) {
                Some(b) => *b ^= 0x01,
                None => bytes.push(0),
            }
            std::fs::write(&path, &bytes).map_err(io("writing", &path))?;
        }
        Ok(Staged {
            component: component.into(),
            version: info.version.clone(),
            slot: format!("bank {}", bank.name()),
        })
    }

    fn activate(
        &mut self,
        component: &str,
        method: ActivationMethod,
    ) -> Result<Activated, DeviceError> {
        self.powered()?;
        self.flashable(component)?;
        check_method(&self.profile, method)?;
        let cs = self.component_state(component)?;
        let bank = cs.active.other();
        let refuse = |reason: String| DeviceError::BankNotActivatable {
            component: component.into(),
            bank: bank.name().into(),
            reason,
        };
        let staged = match cs.bank(bank) {
            Some(b) if b.status == BankStatus::Writing => {
                return Err(refuse(
                    "incomplete: a flash is recorded as unfinished".into(),
                ))
            }
            Some(b) if b.status == BankStatus::Invalid => {
                return Err(refuse(
                    b.problem.clone().unwrap_or_else(|| "invalid".into()),
                ))
            }
            Some(b) if cs.pending => b.clone(),
            _ => {
                return Err(DeviceError::NothingStaged {
                    component: component.into(),
                })
            }
        };
        let path = self.bank_file(component, bank);
        let found = file_sha256(&path).map(|(d, _)| d).unwrap_or_default();
        if found != staged.sha256 {
            let reason = format!(
                "content has sha256 {found}, expected {} (changed after staging)",
                staged.sha256
            );
            self.invalidate(component, bank, reason.clone())?;
            return Err(refuse(reason));
        }
        if self.faults.activation_failure {
            return Err(DeviceError::ActivationFailed {
                component: component.into(),
                method,
                reason: "injected activation failure; the previous image still runs".into(),
            });
        }
        let disruptive = self
            .profile
            .activation(method)
            .is_some_and(|a| a.disruptive);
        let cs = self.component_state(component)?;
        let previous = cs.bank(cs.active).map(|b| b.version.clone());
        cs.active = bank;
        cs.pending = false;
        self.save()?;
        Ok(Activated {
            component: component.into(),
            method,
            previous,
            running: staged.version,
            disruptive,
        })
    }

    fn rollback(&mut self, component: &str) -> Result<Activated, DeviceError> {
        self.powered()?;
        let c = self.flashable(component)?;
        if !c.dual_bank {
            return Err(DeviceError::RollbackUnsupported {
                profile: self.profile.name.clone(),
                component: component.into(),
            });
        }
        let Some(act) = self.profile.least_disruptive().cloned() else {
            return Err(DeviceError::MethodNotAllowed {
                profile: self.profile.name.clone(),
                method: ActivationMethod::Reboot,
                allowed: "none".into(),
            });
        };
        let cs = self.component_state(component)?;
        let bank = cs.active.other();
        let none = |reason: &str| DeviceError::NoPreviousImage {
            component: component.into(),
            reason: reason.into(),
        };
        let previous = match cs.bank(bank) {
            None => return Err(none("the other bank was never written")),
            Some(_) if cs.pending => {
                return Err(none(
                    "the other bank holds a staged image that never ran, not a previous one",
                ))
            }
            Some(b) if b.status != BankStatus::Valid => {
                return Err(none(
                    b.problem.as_deref().unwrap_or("the other bank is invalid"),
                ))
            }
            Some(b) => b.clone(),
        };
        let path = self.bank_file(component, bank);
        let found = file_sha256(&path).map(|(d, _)| d).unwrap_or_default();
        if found != previous.sha256 {
            let reason = format!(
                "the previous image has sha256 {found}, expected {}",
                previous.sha256
            );
            self.invalidate(component, bank, reason.clone())?;
            return Err(none(&reason));
        }
        let cs = self.component_state(component)?;
        let was = cs.bank(cs.active).map(|b| b.version.clone());
        cs.active = bank;
        cs.pending = false;
        self.save()?;
        Ok(Activated {
            component: component.into(),
            method: act.method,
            previous: was,
            running: previous.version,
            disruptive: act.disruptive,
        })
    }

    fn can_take_link_epoch(&self, epoch: u64) -> Result<(), DeviceError> {
        self.powered()?;
        if self.faults.refuse_link_epoch == Some(epoch) {
            return Err(DeviceError::LinkEpochRefused {
                epoch,
                reason: "injected fault refuse_link_epoch".into(),
            });
        }
        Ok(())
    }

    fn link_epochs(&self) -> BTreeMap<u64, u64> {
        self.state.link_epochs.clone()
    }

    fn set_link_epoch(&mut self, peer: u64, epoch: u64) -> Result<(), DeviceError> {
        self.powered()?;
        if self.faults.refuse_link_epoch == Some(epoch) {
            return Err(DeviceError::LinkEpochRefused {
                epoch,
                reason: "injected fault refuse_link_epoch".into(),
            });
        }
        if self.link_epoch_failures_left > 0 && self.state.link_epochs.get(&peer) != Some(&epoch) {
            self.link_epoch_failures_left -= 1;
            return Err(DeviceError::LinkEpochRefused {
                epoch,
                reason: format!(
                    "injected fault link_epoch_failures ({} left)",
                    self.link_epoch_failures_left
                ),
            });
        }
        match self.state.link_epochs.get(&peer) {
            Some(&current) if epoch < current => Err(DeviceError::EpochWentBack {
                peer,
                current,
                requested: epoch,
            }),
            Some(&current) if epoch == current => Ok(()),
            _ => {
                self.state.link_epochs.insert(peer, epoch);
                self.save()
            }
        }
    }

    fn health(&self) -> Health {
        if self.powered_off {
            return Health::Failed("powered off: power was lost during a flash".into());
        }
        if !self.active_problems.is_empty() {
            return Health::Failed(self.active_problems.join("; "));
        }
        let mut problems = Vec::new();
        for (name, cs) in &self.state.components {
            let bank = cs.active.other();
            if let Some(b) = cs.bank(bank) {
                if b.status != BankStatus::Valid {
                    let why = b.problem.as_deref().unwrap_or("flash unfinished");
                    problems.push(format!("component {name:?}: bank {}: {why}", bank.name()));
                }
            }
        }
        if problems.is_empty() {
            Health::Ok
        } else {
            Health::Degraded(problems.join("; "))
        }
    }
}
