//! Pruning the image store once a campaign converged here (every link of this node moved): the
//! images of that campaign and of the one before stay (a rollback needs the previous image),
//! older ones go (`entente_node::fanout::to_prune` decides).

use super::Agent;
use entente_api::{HistoryEvent, HistoryKind};
use entente_proto::Phase;
use entente_stage::Digest;

impl Agent {
    /// Prunes the store after this node's campaign converged, once per campaign.
    pub(super) fn prune_step(&mut self) {
        let phase = self.node.phase();
        let settled = matches!(phase.phase, Phase::Converged | Phase::Finalized);
        if !settled || self.pruned_after >= Some(phase.epoch.0) {
            return;
        }
        self.pruned_after = Some(phase.epoch.0);
        let held: Vec<(u64, [u8; 32])> = self
            .images
            .keys()
            .map(|id| (self.image_epochs.get(id).copied().unwrap_or(0), *id))
            .collect();
        for id in entente_node::fanout::to_prune(&held, phase.epoch.0, self.ran_before) {
            let digest = Digest(id);
            match self.store.remove(&digest) {
                Ok(_) => {
                    self.images.remove(&id);
                    self.image_epochs.remove(&id);
                    self.serve.forget_image(&id);
                    if self.reader.as_ref().is_some_and(|(d, _)| *d == id) {
                        self.reader = None;
                    }
                    self.history(
                        HistoryEvent::new(
                            HistoryKind::ImagePruned,
                            format!(
                                "image {} pruned from the store (campaign {} converged here)",
                                digest.to_hex(),
                                phase.epoch.0
                            ),
                        )
                        .epoch(phase.epoch.0),
                    );
                }
                Err(e) => tracing::warn!("pruning image {}: {e}", digest.to_hex()),
            }
        }
    }
}
