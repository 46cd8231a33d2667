//! Which stored images a node keeps: those of the campaign that just converged here and of the
//! one before (what a rollback needs), and any of a newer campaign; the rest are pruned, so the
//! store does not grow with every campaign.

use super::ImageId;

/// The images to delete once campaign `current` converged (or was finalized) here, of `held`:
/// (the newest campaign epoch whose manifest names the image, the image). Kept: the current
/// campaign's, any newer one's, the campaign whose firmware ran before the current one
/// (`ran_before`, when known: what a rollback needs) and the newest campaign below the current
/// one (when what ran before is not known, as after a restart, it is the best guess).
pub fn to_prune(held: &[(u64, ImageId)], current: u64, ran_before: Option<u64>) -> Vec<ImageId> {
    let previous = held.iter().map(|&(e, _)| e).filter(|&e| e < current).max();
    held.iter()
        .filter(|&&(e, _)| e < current && Some(e) != previous && Some(e) != ran_before)
        .map(|&(_, id)| id)
        .collect()
}
