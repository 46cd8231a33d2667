//! Carrying out the node's outputs, in order.

use super::Agent;
use crate::worker::Job;
use anyhow::Result;
use entente_api::{HistoryEvent, HistoryKind};
use entente_proto::node::{Event, Output};

impl Agent {
    /// Takes the node's outputs and carries them out in order. Records are committed to the
    /// database before the first message that follows them is sent.
    pub(super) fn carry_out(&mut self) -> Result<()> {
        let mut outs = std::mem::take(&mut self.outs);
        self.node.take_outputs(&mut outs);
        for out in outs.drain(..) {
            match out {
                Output::Persist(r) => self.db.stage(r),
                Output::Send { to, conn, msg } => {
                    self.db.commit()?;
                    self.send_proto(to.0, conn, msg);
                }
                Output::Timer { at, key } => {
                    self.timers.insert(key, at);
                }
                Output::Stage(c) => {
                    self.db.commit()?;
                    self.begin_stage(c)?;
                }
                Output::Activate { epoch, disruptive } => {
                    self.db.commit()?;
                    self.activate(epoch.0, disruptive);
                }
                Output::SetLinkEpoch { peer, epoch } => {
                    self.db.commit()?;
                    let _ = self.worker.jobs.send(Job::SetLinkEpoch {
                        peer: peer.0,
                        epoch: epoch.0,
                    });
                }
                Output::Drain { epoch } => {
                    self.db.commit()?;
                    self.history(
                        HistoryEvent::new(
                            HistoryKind::Draining,
                            format!("draining for epoch {} (before any lease)", epoch.0),
                        )
                        .epoch(epoch.0),
                    );
                    crate::drain::start(
                        self.cfg.policy.drain_hook.clone(),
                        self.cfg.node_id,
                        epoch.0,
                        std::time::Duration::from_secs(self.cfg.policy.drain_timeout_s),
                        self.worker.reports.clone(),
                    );
                }
                Output::RollBack { epoch } => {
                    self.db.commit()?;
                    let _ = self.worker.jobs.send(Job::Rollback { epoch: epoch.0 });
                }
                Output::PrepareLinkEpoch { epoch } => {
                    let _ = self
                        .worker
                        .jobs
                        .send(Job::PrepareLinkEpoch { epoch: epoch.0 });
                }
                Output::Event(e) => self.on_event(e),
            }
        }
        self.db.commit()?;
        self.outs = outs;
        Ok(())
    }

    fn activate(&mut self, epoch: u64, disruptive: bool) {
        let campaign = self.node.record().campaign;
        let Some(c) = campaign.filter(|c| c.epoch.0 == epoch) else {
            tracing::error!(
                epoch,
                "activation asked for a campaign this node does not hold"
            );
            return;
        };
        // The least disruptive method the profile allows, matching what the campaign announced.
        let method = self
            .profile
            .activations
            .iter()
            .find(|a| a.disruptive == disruptive)
            .or(self.profile.least_disruptive())
            .map(|a| a.method);
        let Some(method) = method else {
            tracing::error!("profile {} has no activation method", self.profile.name);
            return;
        };
        self.activating = Some(c.window);
        self.history(
            HistoryEvent::new(
                HistoryKind::Activating,
                format!("activating epoch {epoch} ({method:?})"),
            )
            .epoch(epoch)
            .method(format!("{method:?}")),
        );
        let expect = self
            .own_image(&c.image_digest)
            .and_then(Result::ok)
            .map(|image| image.version);
        let _ = self.worker.jobs.send(Job::Activate {
            epoch,
            disruptive,
            method,
            expect,
        });
    }

    fn on_event(&mut self, e: Event) {
        let text = match &e {
            Event::Phase { from, to, epoch } => {
                format!("phase {from:?} -> {to:?} (epoch {})", epoch.0)
            }
            Event::LinkCommitted { peer, epoch } => {
                format!("link to {} committed epoch {}", peer.0, epoch.0)
            }
            Event::LinkAgreed { peer, epoch } => {
                format!("link to {} agreed at epoch {} by LINK_HELLO", peer.0, epoch.0)
            }
            Event::ImplausibleReport { seen, mine } => format!(
                "a neighbour holds a report of this node at version {}.{}, far ahead of its own \
                 {}.{}: forged or corrupt, not followed",
                seen.incarnation, seen.counter, mine.incarnation, mine.counter
            ),
            Event::ProbeMismatch {
                peer,
                sent,
                interpreted,
            } => format!(
                "SAFETY: probe from {} sent under epoch {} read under {}",
                peer.0, sent.0, interpreted.0
            ),
            Event::LinkIncompatible {
                peer,
                epoch,
                mine,
                theirs,
            } => format!(
                "link to {} incompatible: it holds epoch {}, which windows {}..={} (here) and \
                 {}..={} (there) do not both speak; no probes or data until an operator acts",
                peer.0, epoch.0, mine.min.0, mine.max.0, theirs.min.0, theirs.max.0
            ),
            Event::LeasesAsked { epoch } => {
                format!("drained: asking the neighbours for leases for epoch {}", epoch.0)
            }
            Event::DrainFailed { epoch, reason } => {
                format!("drain for epoch {} failed ({reason}); tried again later", epoch.0)
            }
            Event::DeviceRefusedEpoch { epoch, reason } => format!(
                "the device cannot take link epoch {}: {reason}; this node proposes and reflects nothing for it",
                epoch.0
            ),
            Event::DeviceLagging {
                peer,
                epoch,
                reason,
                retry_ms,
            } => format!(
                "device lagging: link to {} committed epoch {}, the device failed to apply it \
                 ({reason}); asked again in {retry_ms} ms, no data on the link until then",
                peer.0, epoch.0
            ),
            Event::Reincarnated {
                incarnation,
                quiet_ms,
            } => format!(
                "new incarnation {incarnation}: this node's store is behind what a neighbour or \
                 its device holds of it (a lost or restored store); restart quarantine, no lease \
                 granted for {} s",
                quiet_ms / 1000
            ),
            Event::RollbackRefused { epoch } => format!(
                "rollback of epoch {} refused: a link of this node reflected or committed it \
                 (going back now takes a downgrade campaign); the node halts instead",
                epoch.0
            ),
            Event::Unhealthy { epoch } => format!(
                "unhealthy after activating epoch {}: no link moves to it; rolling back",
                epoch.0
            ),
            Event::RolledBack { epoch } => format!(
                "rolled back: the device runs the firmware it ran before epoch {} again",
                epoch.0
            ),
            Event::RollbackFailed { epoch } => format!(
                "rollback of epoch {} failed: the device still runs its firmware; no link moves \
                 to it (a resume runs the campaign on)",
                epoch.0
            ),
            other => format!("{other:?}"),
        };
        match e {
            Event::ProbeMismatch { .. } | Event::ProtocolError { .. } => tracing::error!("{text}"),
            Event::CampaignRefused { .. }
            | Event::RollbackFailed { .. }
            | Event::StagingFailed { .. }
            | Event::ActivationFailed { .. }
            | Event::UnknownPeer(_)
            | Event::HelloFailed { .. }
            | Event::LinkIncompatible { .. }
            | Event::DeviceRefusedEpoch { .. }
            | Event::DrainFailed { .. }
            | Event::ImplausibleReport { .. }
            | Event::DeviceLagging { .. }
            | Event::Reincarnated { .. } => tracing::warn!("{text}"),
            _ => tracing::info!("{text}"),
        }
        if matches!(e, Event::Unhealthy { .. }) {
            return; // the health gate's own entry, with its reason, is in the history already
        }
        self.history(typed(&e, text));
    }
}

/// The history event of a protocol event, with its fields.
fn typed(e: &Event, text: String) -> HistoryEvent {
    use HistoryKind as K;
    let ev = |kind| HistoryEvent::new(kind, text.clone());
    match e {
        Event::Phase { from, to, epoch } => ev(K::Phase)
            .epoch(epoch.0)
            .from_to(format!("{from:?}"), format!("{to:?}")),
        Event::LinkCommitted { peer, epoch } => ev(K::LinkCommitted).peer(peer.0).epoch(epoch.0),
        Event::LinkAgreed { peer, epoch } => ev(K::LinkAgreed).peer(peer.0).epoch(epoch.0),
        Event::ImplausibleReport { .. } => ev(K::ImplausibleReport),
        Event::ProbeMismatch {
            peer,
            sent,
            interpreted,
        } => ev(K::ProbeMismatch)
            .peer(peer.0)
            .epoch(sent.0)
            .count("interpreted", interpreted.0),
        Event::LinkIncompatible { peer, epoch, .. } => {
            ev(K::LinkIncompatible).peer(peer.0).epoch(epoch.0)
        }
        Event::LeasesAsked { epoch } => ev(K::LeasesAsked).epoch(epoch.0),
        Event::DrainFailed { epoch, reason } => {
            ev(K::DrainFailed).epoch(epoch.0).reason(reason.to_string())
        }
        Event::DeviceRefusedEpoch { epoch, reason } => ev(K::DeviceRefusedEpoch)
            .epoch(epoch.0)
            .reason(reason.to_string()),
        Event::DeviceLagging {
            peer,
            epoch,
            reason,
            ..
        } => ev(K::DeviceLagging)
            .peer(peer.0)
            .epoch(epoch.0)
            .reason(reason.to_string()),
        Event::Reincarnated {
            incarnation,
            quiet_ms,
        } => ev(K::Reincarnated)
            .count("incarnation", u64::from(*incarnation))
            .count("quiet_ms", *quiet_ms),
        Event::ProtocolError { peer, what } => ev(K::ProtocolError).peer(peer.0).reason(*what),
        Event::UnknownPeer(peer) => ev(K::Peer).peer(peer.0).reason("not a configured peer"),
        Event::CampaignRefused { epoch, reason } => {
            ev(K::CampaignRefused).epoch(epoch.0).reason(*reason)
        }
        Event::HelloFailed { peer, .. } => ev(K::HelloFailed).peer(peer.0),
        Event::StagingFailed { epoch } => ev(K::StagingFailed).epoch(epoch.0),
        Event::ActivationFailed { epoch } => ev(K::ActivationFailed).epoch(epoch.0),
        Event::ActivationOverran { epoch, took } => ev(K::ActivationOverran)
            .epoch(epoch.0)
            .count("took_ms", took / 1_000_000),
        Event::LeaseDenied { peer } => ev(K::LeaseDenied).peer(peer.0),
        Event::RollbackRefused { epoch } => ev(K::RollbackRefused).epoch(epoch.0),
        Event::RolledBack { epoch } => ev(K::RolledBack).epoch(epoch.0),
        Event::Unhealthy { epoch } => ev(K::HealthGateFailed).epoch(epoch.0),
        Event::RollbackFailed { epoch } => ev(K::RollbackFailed).epoch(epoch.0),
    }
}
