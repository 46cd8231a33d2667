//! The Redfish backend: GPU baseboard firmware through a BMC's `UpdateService` (DSP0266,
//! DSP0268).
//!
//! - **Inventory**: `UpdateService/FirmwareInventory/<version_key>` (`{index}` replaced by the
//!   configured slot); its `Version` is what runs. The BMC does not show a staged image there,
//!   so `stored` and `pending_activation` come from what this device staged since it was opened.
//! - **Staging**: a multipart push to `MultipartHttpPushUri` with `UpdateParameters`
//!   `{"Targets": [<member>], "@Redfish.OperationApplyTime": "OnReset"}`, the image streamed
//!   while its length and SHA-256 are checked (a wrong image cuts the upload short). A BMC
//!   without multipart push gets `SimpleUpdate` with the configured `image_uri` instead (the
//!   agent serves the image there). Either way the BMC's Task is polled: `PercentComplete` is
//!   progress (the upload is the first half, the task the second), and a task ending
//!   `Exception`, `Killed` or `Cancelled` fails the stage with its messages verbatim.
//! - **Activation** (`reboot` only): the `Reset` action of the configured resource (default:
//!   the first ComputerSystem), `PowerCycle` where allowed, then the inventory is read until the
//!   member reports the staged version.
//! - **Auth and TLS**: a session (`X-Auth-Token`, deleted on drop) or basic auth, credentials
//!   from a file only its owner can read; HTTPS only, verified against the configured CA.
//!
//! Every refusal keeps the service's words: HTTP status and the first
//! `@Message.ExtendedInfo` MessageId and Message ([`DeviceError::Redfish`]).

mod client;
mod config;
mod multipart;
mod task;

pub use config::{AuthMode, Credentials, RedfishConfig};

use crate::device::{
    check_method, hex, Activated, ComponentVersions, Device, DeviceError, Health, ImageInfo,
    Inventory, Progress, Staged,
};
use crate::profile::{ActivationMethod, Backend, Component, Profile};
use client::{link, odata_id, refusal, Body, Client, SERVICE_ROOT};
use multipart::MultipartUpload;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use task::TaskError;

/// Reset types that restart the GPUs, most thorough first.
const RESET_TYPES: [&str; 3] = ["PowerCycle", "ForceRestart", "GracefulRestart"];

/// A GPU (one slot of an HGX baseboard) whose firmware a BMC updates through Redfish.
#[derive(Debug)]
pub struct RedfishDevice {
    profile: Profile,
    config: RedfishConfig,
    client: Client,
    inventory_uri: String,
    push_uri: Option<String>,
    simple_update_uri: Option<String>,
    systems_uri: Option<String>,
    /// Versions staged since the device was opened and not yet activated, per component.
    pending: BTreeMap<String, String>,
    link_epochs: BTreeMap<u64, u64>,
}

impl RedfishDevice {
    /// Connects to the BMC of `config` for `profile` (backend `redfish`): reads the credentials
    /// file (refused unless only its owner can read it), reads the service root over TLS,
    /// logs in (a session, or a basic-auth request that must succeed), and finds the
    /// UpdateService's FirmwareInventory and update methods.
    pub fn open(profile: Profile, config: &RedfishConfig) -> Result<RedfishDevice, DeviceError> {
        if profile.backend != Backend::Redfish {
            return Err(DeviceError::Config {
                what: format!("profile {}", profile.name),
                reason: format!("has backend {}, not redfish", profile.backend),
            });
        }
        let credentials = Credentials::load(&config.credentials_file)?;
        let mut client = Client::new(config, credentials)?;
        let root = client.get(SERVICE_ROOT, "reading the service root")?;
        let update_uri = link(&root, "UpdateService").ok_or_else(|| DeviceError::Redfish {
            what: format!("reading the service root {}", client.url(SERVICE_ROOT)),
            status: Some(200),
            message_id: None,
            message: "it names no UpdateService".into(),
        })?;
        let sessions = root.get("Links").and_then(|l| link(l, "Sessions"));
        client.log_in(sessions.as_deref(), &update_uri)?;
        let update = client.get(&update_uri, "reading the UpdateService")?;
        let inventory_uri = link(&update, "FirmwareInventory")
            .unwrap_or_else(|| format!("{update_uri}/FirmwareInventory"));
        let push_uri = update
            .get("MultipartHttpPushUri")
            .and_then(Value::as_str)
            .map(str::to_string);
        let simple_update_uri = update
            .pointer("/Actions/#UpdateService.SimpleUpdate/target")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(RedfishDevice {
            profile,
            config: config.clone(),
            client,
            inventory_uri,
            push_uri,
            simple_update_uri,
            systems_uri: link(&root, "Systems"),
            pending: BTreeMap::new(),
            link_epochs: BTreeMap::new(),
        })
    }

    /// The FirmwareInventory member URI of `component` for this slot.
    pub fn member_uri(&self, component: &Component) -> String {
        let id = component
            .version_key
            .replace("{index}", &self.config.slot.to_string());
        format!("{}/{id}", self.inventory_uri)
    }

    /// Versions staged since the device was opened and waiting for a reset, per component.
    pub fn pending(&self) -> &BTreeMap<String, String> {
        &self.pending
    }

    fn component(&self, name: &str) -> Result<&Component, DeviceError> {
        self.profile
            .component(name)
            .ok_or_else(|| DeviceError::UnknownComponent {
                profile: self.profile.name.clone(),
                component: name.to_string(),
            })
    }

    fn read_member(&self, component: &Component) -> Result<Value, DeviceError> {
        self.client
            .get(&self.member_uri(component), "reading firmware inventory")
    }

    /// The `Version` of `component`'s FirmwareInventory member.
    fn running_version(&self, component: &Component) -> Result<String, DeviceError> {
        let uri = self.member_uri(component);
        let member = self.read_member(component)?;
        member
            .get("Version")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DeviceError::Redfish {
                what: format!("reading firmware inventory {}", self.client.url(&uri)),
                status: Some(200),
                message_id: None,
                message: "the member has no Version".into(),
            })
    }

    /// The `Targets` of an update of `component`.
    fn targets(&self, component: &Component) -> Vec<String> {
        match &self.config.targets {
            Some(targets) => targets
                .iter()
                .map(|t| t.replace("{index}", &self.config.slot.to_string()))
                .collect(),
            None => vec![self.member_uri(component)],
        }
    }

    /// Asks the BMC to take the image: multipart push where offered, else SimpleUpdate.
    fn start_update(
        &self,
        component: &Component,
        info: &ImageInfo,
        image: &mut dyn std::io::Read,
        on_sent: &mut dyn FnMut(u64),
    ) -> Result<client::Reply, DeviceError> {
        let targets = self.targets(component);
        if let Some(push_uri) = &self.push_uri {
            let parameters = json!({
                "Targets": targets,
                "@Redfish.OperationApplyTime": "OnReset",
            });
            let mut upload =
                MultipartUpload::new(&parameters, &component.name, info, image, on_sent);
            let what = format!(
                "pushing the image of {:?} to {}",
                component.name,
                self.client.url(push_uri)
            );
            let body = Body::Stream {
                content_type: upload.content_type(),
                len: upload.len(),
                reader: &mut upload,
            };
            let sent = self.client.send("POST", push_uri, body, &what);
            if let Some(failure) = upload.failure() {
                return Err(failure);
            }
            let reply = sent?;
            if !(200..300).contains(&reply.status) {
                return Err(refusal(&what, &reply));
            }
            return Ok(reply);
        }
        let Some(action) = &self.simple_update_uri else {
            return Err(DeviceError::Redfish {
                what: format!("staging {:?}", component.name),
                status: None,
                message_id: None,
                message: "the UpdateService offers neither MultipartHttpPushUri nor SimpleUpdate"
                    .into(),
            });
        };
        let Some(template) = &self.config.image_uri else {
            return Err(DeviceError::Config {
                what: "redfish image_uri".into(),
                reason: format!(
                    "the BMC offers no multipart push, only SimpleUpdate ({}), which fetches the \
                     image from an URL: set image_uri",
                    self.client.url(action)
                ),
            });
        };
        let image_uri = template
            .replace("{sha256}", &hex(&info.sha256))
            .replace("{version}", &info.version);
        let what = format!(
            "asking for {image_uri} through SimpleUpdate at {}",
            self.client.url(action)
        );
        let body = json!({
            "ImageURI": image_uri,
            "Targets": targets,
            "@Redfish.OperationApplyTime": "OnReset",
        });
        let reply = self.client.send("POST", action, Body::Json(&body), &what)?;
        if !(200..300).contains(&reply.status) {
            return Err(refusal(&what, &reply));
        }
        on_sent(info.len);
        Ok(reply)
    }

    /// The resource whose Reset action activates, its action target and the reset type to ask.
    fn reset_action(&self) -> Result<(String, String), DeviceError> {
        let resource = match &self.config.reset_resource {
            Some(uri) => uri.clone(),
            None => {
                let systems = self.systems_uri.as_deref().unwrap_or("/redfish/v1/Systems");
                let list = self.client.get(systems, "listing the systems")?;
                list.pointer("/Members/0")
                    .and_then(odata_id)
                    .ok_or_else(|| DeviceError::Redfish {
                        what: format!("listing the systems {}", self.client.url(systems)),
                        status: Some(200),
                        message_id: None,
                        message: "the collection has no member to reset".into(),
                    })?
            }
        };
        let what = "reading the resource to reset";
        let body = self.client.get(&resource, what)?;
        let action = body
            .get("Actions")
            .and_then(Value::as_object)
            .and_then(|a| a.iter().find(|(k, _)| k.ends_with(".Reset")))
            .map(|(_, v)| v)
            .ok_or_else(|| DeviceError::Redfish {
                what: format!("{what} {}", self.client.url(&resource)),
                status: Some(200),
                message_id: None,
                message: "it offers no Reset action".into(),
            })?;
        let target = action
            .get("target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DeviceError::Redfish {
                what: format!("{what} {}", self.client.url(&resource)),
                status: Some(200),
                message_id: None,
                message: "its Reset action has no target".into(),
            })?;
        let allowed: Option<Vec<&str>> = action
            .get("ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect());
        let reset_type = match allowed {
            None => RESET_TYPES[0],
            Some(allowed) => RESET_TYPES
                .into_iter()
                .find(|t| allowed.contains(t))
                .ok_or_else(|| DeviceError::Redfish {
                    what: format!("{what} {}", self.client.url(&resource)),
                    status: Some(200),
                    message_id: None,
                    message: format!(
                        "its Reset action allows {}, none of {}",
                        allowed.join(", "),
                        RESET_TYPES.join(", ")
                    ),
                })?,
        };
        Ok((target, reset_type.to_string()))
    }
}

impl Device for RedfishDevice {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    fn inventory(&self) -> Result<Inventory, DeviceError> {
        let mut components = Vec::new();
        for c in &self.profile.components {
            let member = self.read_member(c)?;
            let running = member
                .get("Version")
                .and_then(Value::as_str)
                .map(str::to_string);
            let fixed = c
                .fixed_keys
                .iter()
                .filter_map(|k| Some((k.clone(), member.get(k)?.as_str()?.to_string())))
                .collect();
            let staged = self.pending.get(&c.name).cloned();
            components.push(ComponentVersions {
                component: c.name.clone(),
                fixed,
                pending_activation: staged.is_some(),
                stored: staged.or_else(|| running.clone()),
                running,
            });
        }
        Ok(Inventory {
            profile: self.profile.name.clone(),
            components,
        })
    }

    fn stage(
        &mut self,
        component: &str,
        info: &ImageInfo,
        image: &mut dyn std::io::Read,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Staged, DeviceError> {
        let c = self.component(component)?.clone();
        if !c.flashable {
            return Err(DeviceError::NotFlashable { component: c.name });
        }
        if let Some(max) = c.max_image_bytes.filter(|&max| info.len > max) {
            return Err(DeviceError::ImageTooLarge {
                component: c.name,
                len: info.len,
                max,
            });
        }
        // A new stage replaces what was staged before, whatever its outcome.
        self.pending.remove(&c.name);
        let total = info.len;
        let mut reported = 0u64;
        let mut report = |done: u64| {
            if done > reported {
                reported = done;
                progress(Progress { done, total });
            }
        };
        let reply = self.start_update(&c, info, image, &mut |sent| report(sent / 2))?;
        if let Some(task_uri) = task::task_of(&reply) {
            let timeout = Duration::from_millis(self.config.task_timeout_ms);
            let poll = self.config.poll_interval();
            let mut on_percent = |p: u8| report(total / 2 + total * u64::from(p) / 200);
            task::wait(&self.client, &task_uri, timeout, poll, &mut on_percent).map_err(
                |e| match e {
                    TaskError::Failed(reason, at_percent) => DeviceError::FlashFailed {
                        component: c.name.clone(),
                        at_percent,
                        reason,
                    },
                    TaskError::Service(e) => e,
                },
            )?;
        }
        report(total);
        self.pending.insert(c.name.clone(), info.version.clone());
        Ok(Staged {
            slot: self.member_uri(&c),
            component: c.name,
            version: info.version.clone(),
        })
    }

    fn activate(
        &mut self,
        component: &str,
        method: ActivationMethod,
    ) -> Result<Activated, DeviceError> {
        check_method(&self.profile, method)?;
        let c = self.component(component)?.clone();
        let disruptive = self.profile.activation(method).is_none_or(|a| a.disruptive);
        if method != ActivationMethod::Reboot {
            return Err(DeviceError::ActivationFailed {
                component: c.name,
                method,
                reason: "the redfish backend activates only by a reset of the system (reboot)"
                    .into(),
            });
        }
        let Some(staged) = self.pending.get(&c.name).cloned() else {
            return Err(DeviceError::NothingStaged { component: c.name });
        };
        let previous = self.running_version(&c).ok();
        let (target, reset_type) = self.reset_action()?;
        let what = format!(
            "resetting ({reset_type}) through {}",
            self.client.url(&target)
        );
        let body = json!({ "ResetType": reset_type });
        let reply = self
            .client
            .send("POST", &target, Body::Json(&body), &what)?;
        if !(200..300).contains(&reply.status) {
            return Err(refusal(&what, &reply));
        }
        if let Some(task_uri) = task::task_of(&reply) {
            let timeout = Duration::from_millis(self.config.task_timeout_ms);
            task::wait(
                &self.client,
                &task_uri,
                timeout,
                self.config.poll_interval(),
                &mut |_| {},
            )
            .map_err(|e| match e {
                TaskError::Failed(reason, _) => DeviceError::ActivationFailed {
                    component: c.name.clone(),
                    method,
                    reason,
                },
                TaskError::Service(e) => e,
            })?;
        }
        let limit = self.config.activation_timeout_ms.unwrap_or_else(|| {
            self.profile
                .activation(method)
                .map_or(1_800_000, |a| a.max_ms)
        });
        let deadline = Instant::now() + Duration::from_millis(limit);
        let running = loop {
            // The BMC may be unreachable for a while during the reset: keep asking.
            let seen = self.running_version(&c);
            if let Ok(v) = &seen {
                if *v == staged {
                    break v.clone();
                }
            }
            if Instant::now() >= deadline {
                let now = match seen {
                    Ok(v) => format!("reports version {v}"),
                    Err(e) => format!("cannot be read ({e})"),
                };
                return Err(DeviceError::ActivationFailed {
                    component: c.name,
                    method,
                    reason: format!(
                        "{limit} ms after the {reset_type} reset, {} {now}, expected {staged}",
                        self.client
                            .url(&self.member_uri(self.component(component)?))
                    ),
                });
            }
            std::thread::sleep(self.config.poll_interval());
        };
        self.pending.remove(&c.name);
        Ok(Activated {
            component: c.name,
            method,
            previous,
            running,
            disruptive,
        })
    }

    fn rollback(&mut self, component: &str) -> Result<Activated, DeviceError> {
        let c = self.component(component)?;
        Err(DeviceError::RollbackUnsupported {
            profile: self.profile.name.clone(),
            component: c.name.clone(),
        })
    }

    /// Link epochs are kept in memory: GPU firmware has no link mode to record them in, and the
    /// agent's own state is where they are durable.
    fn set_link_epoch(&mut self, peer: u64, epoch: u64) -> Result<(), DeviceError> {
        let current = self.link_epochs.get(&peer).copied().unwrap_or(0);
        if epoch < current {
            return Err(DeviceError::EpochWentBack {
                peer,
                current,
                requested: epoch,
            });
        }
        self.link_epochs.insert(peer, epoch);
        Ok(())
    }

    fn health(&self) -> Health {
        let mut degraded = Vec::new();
        for c in &self.profile.components {
            let member = match self.read_member(c) {
                Ok(m) => m,
                Err(e) => return Health::Failed(e.to_string()),
            };
            let health = member
                .pointer("/Status/Health")
                .and_then(Value::as_str)
                .unwrap_or("OK");
            match health {
                "OK" => {}
                "Warning" => degraded.push(format!("{}: Status.Health Warning", c.name)),
                other => return Health::Failed(format!("{}: Status.Health {other}", c.name)),
            }
        }
        if degraded.is_empty() {
            Health::Ok
        } else {
            Health::Degraded(degraded.join("; "))
        }
    }
}
