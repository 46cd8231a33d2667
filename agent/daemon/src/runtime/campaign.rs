//! `campaign start` and `campaign plan` on this node, both decided by
//! [`acceptance::decide`](super::acceptance::decide).

use super::acceptance::{self, Checked, NodeView, Purpose, Refusal};
use super::status::StartError;
use super::Agent;
use entente_api::{HistoryEvent, HistoryKind};
use entente_proto::msg::Campaign;
use entente_proto::{Epoch, NodeId, Window};
use entente_stage::{Digest, Manifest, ProfileImage, Signature, VerifiedManifest, VerifyError};
use std::path::Path;

impl Agent {
    /// This node as [`acceptance::decide`] sees it: profile, campaign record, live links.
    pub(super) fn node_view(&self) -> NodeView<'_> {
        let rec = self.node.record();
        NodeView {
            profile: &self.profile,
            campaign: rec.campaign,
            phase: rec.phase.phase,
            links: self
                .node
                .links()
                .iter()
                .filter(|l| !l.retired && !l.state.fresh)
                .map(|l| (l.peer.0, l.state.committed.0))
                .collect(),
        }
    }

    /// Records a refused start in the history and the log, and returns it as a refusal.
    fn refuse_start(&self, epoch: Option<u64>, reasons: &[String]) -> StartError {
        let what = epoch.map_or_else(|| "campaign".to_owned(), |e| format!("campaign {e}"));
        let msg = format!("{what} refused: {}", reasons.join("; "));
        tracing::warn!("{msg}");
        let mut event =
            HistoryEvent::new(HistoryKind::CampaignRefused, msg.clone()).reason(reasons.join("; "));
        event.epoch = epoch;
        self.history(event);
        StartError::Refused(msg)
    }

    /// Starts a campaign on this node (the origin). Every check of
    /// [`acceptance::decide`] must pass and this node's image must be among `images` (or in
    /// the store) and match the manifest; only then is the manifest accepted (the
    /// anti-rollback floor moves), kept, and the campaign started. A refusal writes nothing
    /// but its history entry.
    pub fn start_campaign(
        &mut self,
        manifest: &str,
        signature: &str,
        images: &[super::status::ImageFile],
    ) -> Result<(u64, String), StartError> {
        let bytes = manifest.as_bytes();
        let sig = Signature::parse(signature.trim(), Path::new("<request>"))
            .map_err(|e| StartError::Bad(e.to_string()))?;
        let digest = Digest::of(bytes);
        if let Some(c) = self.node.record().campaign {
            if c.image_digest == digest.0 {
                return Err(StartError::AlreadyRunning(c.epoch.0));
            }
        }
        let now = entente_stage::unix_now();
        let check = self.verifier.check(bytes, &sig, now);
        let decoded = Manifest::from_canonical_bytes(bytes).ok();
        let own = match decide_on(&check, decoded.as_ref(), &self.node_view(), Purpose::Start) {
            Ok(img) => img,
            Err(r) => {
                let epoch = decoded.as_ref().map(|m| m.epoch);
                return Err(self.refuse_start(epoch, &texts(&r)));
            }
        };
        let v = check.expect("decided on a verified manifest");
        let m = v.manifest().clone();
        if let Err(why) = self.seed_own(&own, images) {
            return Err(self.refuse_start(Some(m.epoch), &[why]));
        }
        // The manifest is kept before the floor moves: a failure to keep it refuses the start
        // with the floor where it was.
        self.keep_manifest(bytes.to_vec(), signature.trim().to_owned())
            .map_err(|e| {
                self.refuse_start(Some(m.epoch), &[format!("keeping the manifest: {e}")])
            })?;
        self.verifier
            .accept(bytes, &sig, now)
            .map_err(|e| self.refuse_start(Some(m.epoch), &[e.to_string()]))?;
        self.seed_others(&m, images);
        let act = self.profile.least_disruptive();
        let campaign = Campaign {
            epoch: Epoch(m.epoch),
            window: Window::new(own.compat.min_epoch, own.compat.max_epoch),
            image_digest: digest.0,
            disruptive: act.is_none_or(|a| a.disruptive),
            max_activation_ms: act.map_or(60_000, |a| a.max_ms.min(u32::MAX as u64) as u32),
            origin: NodeId(self.cfg.node_id),
        };
        let now = self.now();
        self.node.start_campaign(now, campaign);
        if self.node.record().campaign != Some(campaign) {
            // The protocol node applies the same rules; reaching this is a bug, reported.
            return Err(self.refuse_start(
                Some(m.epoch),
                &["the protocol node did not take the campaign".into()],
            ));
        }
        self.history(
            HistoryEvent::new(
                HistoryKind::CampaignStarted,
                format!("campaign {} started here ({})", m.epoch, m.semantics),
            )
            .epoch(m.epoch),
        );
        Ok((m.epoch, digest.to_hex()))
    }

    /// Puts this node's image `own` in the store from the first of `images` of its size,
    /// verified chunk by chunk; a file that does not match leaves nothing behind.
    fn seed_own(
        &mut self,
        own: &ProfileImage,
        images: &[super::status::ImageFile],
    ) -> Result<(), String> {
        if self.store.contains(own) {
            return Ok(());
        }
        let mut why = Vec::new();
        for f in images {
            let path = f.label;
            if f.len != own.size {
                continue;
            }
            match self.store.stage_from(own, f.file, Path::new(path)) {
                Ok(_) => {
                    self.history(HistoryEvent::new(
                        HistoryKind::Image,
                        format!("seeded image {} from {path}", own.sha256.to_hex()),
                    ));
                    return Ok(());
                }
                Err(e) => why.push(format!(
                    "{path} is not the image the manifest names for hw-profile {:?}: {e}",
                    self.profile.name
                )),
            }
        }
        if why.is_empty() {
            why.push(format!(
                "no image for this node's hw-profile {:?} was given ({} bytes expected)",
                self.profile.name, own.size
            ));
        }
        Err(why.join("; "))
    }

    /// Seeds the images of the other profiles of an accepted manifest that the operator gave
    /// (to serve neighbours); a file that does not match is skipped.
    fn seed_others(&mut self, m: &Manifest, images: &[super::status::ImageFile]) {
        for f in images {
            let path = f.label;
            for img in m.profiles.values().filter(|i| i.size == f.len) {
                if self.store.contains(img) {
                    continue;
                }
                if self.store.stage_from(img, f.file, Path::new(path)).is_ok() {
                    self.history(HistoryEvent::new(
                        HistoryKind::Image,
                        format!("seeded image {} from {path}", img.sha256.to_hex()),
                    ));
                }
            }
        }
    }

    /// A dry run of a campaign here: the manifest is checked (signature, expiry,
    /// anti-rollback) but not accepted, and every reason this node would refuse it is listed.
    pub fn plan_campaign(
        &mut self,
        manifest: &str,
        signature: &str,
    ) -> Result<entente_api::Plan, StartError> {
        let bytes = manifest.as_bytes();
        let sig = Signature::parse(signature.trim(), Path::new("<request>"))
            .map_err(|e| StartError::Bad(e.to_string()))?;
        let check = self.verifier.check(bytes, &sig, entente_stage::unix_now());
        let decoded = Manifest::from_canonical_bytes(bytes).ok();
        let m = match (&check, &decoded) {
            (Ok(v), _) => v.manifest().clone(),
            (Err(_), Some(m)) => m.clone(),
            (Err(e), None) => return Err(StartError::Refused(e.to_string())),
        };
        let refusals = decide_on(&check, decoded.as_ref(), &self.node_view(), Purpose::Start)
            .err()
            .map(|r| texts(&r))
            .unwrap_or_default();
        let changes = m
            .profiles
            .get(&self.profile.name)
            .map(|img| self.planned_change(img))
            .into_iter()
            .collect();
        Ok(entente_api::Plan {
            node: self.cfg.node_id,
            epoch: m.epoch,
            semantics: m.semantics.clone(),
            profile: self.profile.name.clone(),
            changes,
            refusals,
        })
    }

    /// What flashing `img` would change on this node's device.
    fn planned_change(&self, img: &ProfileImage) -> entente_api::PlannedChange {
        let running = match self.inventory.as_ref().map(|r| &r.inventory) {
            Some(Ok(inv)) => inv.components.first().and_then(|c| c.running.clone()),
            _ => None,
        };
        let act = self.profile.least_disruptive();
        entente_api::PlannedChange {
            component: self
                .profile
                .components
                .first()
                .map_or_else(String::new, |c| c.name.clone()),
            from: running,
            to: img.version.clone(),
            activation: act.map_or_else(
                || "none".into(),
                |a| format!("{:?}", a.method).to_lowercase(),
            ),
            disruptive: act.is_none_or(|a| a.disruptive),
            bytes: img.size,
        }
    }
}

/// [`acceptance::decide`] on the verifier's verdict `check` and the decoded bytes.
pub(super) fn decide_on(
    check: &Result<VerifiedManifest, VerifyError>,
    decoded: Option<&Manifest>,
    node: &NodeView<'_>,
    purpose: Purpose,
) -> Result<ProfileImage, Vec<Refusal>> {
    let checked = match check {
        Ok(v) => Checked::Verified(v),
        Err(error) => Checked::Refused {
            error,
            manifest: decoded,
        },
    };
    acceptance::decide(checked, node, purpose)
}

/// The refusals as text.
pub(super) fn texts(r: &[Refusal]) -> Vec<String> {
    r.iter().map(ToString::to_string).collect()
}
