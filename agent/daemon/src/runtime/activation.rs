//! What follows an activation: the health gate (the device reports the manifest's version and
//! is not failed, then the operator's health hook), and a rollback's outcome. A node that fails
//! the gate never tells its neighbours it activated: it rolls back instead.

use super::{fetch, window, Agent};
use anyhow::Result;
use entente_api::{HistoryEvent, HistoryKind};
use entente_devices::device::Inventory;
use entente_proto::Epoch;
use std::time::Duration;

impl Agent {
    /// The device finished an activation: failed (`error`), failed the device's part of the
    /// health gate (`unhealthy`), or ran it; then the health hook, if one is configured.
    pub(super) fn on_activated(
        &mut self,
        epoch: u64,
        error: Option<String>,
        unhealthy: Option<String>,
    ) -> Result<()> {
        let now = self.now();
        if let Some(e) = &error {
            tracing::warn!(epoch, "activation failed: {e}");
            self.history(
                HistoryEvent::new(
                    HistoryKind::ActivationFailed,
                    format!("activation of epoch {epoch} failed: {e}"),
                )
                .epoch(epoch)
                .reason(e.clone()),
            );
            self.node.activation_done(now, Epoch(epoch), false);
            return Ok(());
        }
        if let Some(w) = self.activating.take() {
            if self.running_campaign != Some(epoch) {
                self.ran_before = self.running_campaign.replace(epoch);
            }
            self.running = w;
            self.db.set_running_window(w)?;
            self.history(
                HistoryEvent::new(HistoryKind::Activated, format!("epoch {epoch} activated"))
                    .epoch(epoch),
            );
        }
        if let Some(why) = unhealthy {
            self.failed_health_gate(epoch, why);
        } else if let Some(hook) = self.cfg.policy.health_hook.clone() {
            self.health_pending = Some(epoch);
            crate::drain::start_health(
                hook,
                self.cfg.node_id,
                epoch,
                Duration::from_secs(self.cfg.policy.health_timeout_s),
                self.worker.reports.clone(),
            );
        } else {
            self.unhealthy = None;
            self.node.activation_done(now, Epoch(epoch), true);
        }
        Ok(())
    }

    /// The health hook answered for the activation of `epoch`.
    pub(super) fn on_health_checked(&mut self, epoch: u64, result: Result<String, String>) {
        if self.health_pending != Some(epoch) {
            return;
        }
        self.health_pending = None;
        match result {
            Ok(out) => {
                self.history(
                    HistoryEvent::new(
                        HistoryKind::HealthChecked,
                        format!("healthy after epoch {epoch}: {out}"),
                    )
                    .epoch(epoch),
                );
                self.unhealthy = None;
                let now = self.now();
                self.node.activation_done(now, Epoch(epoch), true);
            }
            Err(why) => self.failed_health_gate(epoch, format!("the health hook: {why}")),
        }
    }

    fn failed_health_gate(&mut self, epoch: u64, why: String) {
        tracing::warn!(epoch, "unhealthy after activation: {why}; rolling back");
        self.history(
            HistoryEvent::new(
                HistoryKind::HealthGateFailed,
                format!("unhealthy after activating epoch {epoch} ({why}): rolling back"),
            )
            .epoch(epoch)
            .reason(why.clone()),
        );
        self.unhealthy = Some(why);
        let now = self.now();
        self.node.activation_unhealthy(now, Epoch(epoch));
    }

    /// A rollback finished: the window of what the device runs now becomes the node's.
    pub(super) fn on_rolled_back(
        &mut self,
        epoch: u64,
        result: Result<Box<Inventory>, String>,
    ) -> Result<()> {
        let now = self.now();
        let window = result.and_then(|inv| {
            let held = fetch::held_manifests(&self.cfg.data_dir);
            window::running_window(&self.profile, Ok(&inv), &held, None)
        });
        match window {
            Ok(w) => {
                tracing::info!(
                    epoch,
                    "rolled back: the device runs {} (window {:?}, from {})",
                    w.version.as_deref().unwrap_or("(unknown)"),
                    w.window,
                    w.source
                );
                self.running = w.window;
                self.activating = None;
                self.db.set_running_window(w.window)?;
                self.ran_before = self.running_campaign.take();
                self.running_campaign = w.campaign;
                let _ = self.worker.jobs.send(crate::worker::Job::Inventory);
                self.node.rollback_done(now, Epoch(epoch), Ok(w.window));
            }
            Err(e) => {
                tracing::warn!(epoch, "rollback failed: {e}");
                self.node.rollback_done(now, Epoch(epoch), Err(()));
            }
        }
        Ok(())
    }
}
