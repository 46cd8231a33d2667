//! Which stored images a node keeps: those of the campaign that just converged here and of the
//! one before (what a rollback needs), and any of a newer campaign; the rest are pruned, so the
//! store does not grow with every campaign.

use super::ImageId;

/// The images to delete once campaign `current` converged (or was finalized) here, of
/// `held`: (the newest campaign epoch whose manifest names the image, the image).
pub fn to_prune(held: &[(u64, ImageId)], current: u64) -> Vec<ImageId> {
    let previous = held.iter().map(|&(e, _)| e).filter(|&e| e < current).max();
    held.iter()
        .filter(|&&(e, _)| e < current && Some(e) != previous)
        .map(|&(_, id)| id)
        .collect()
}
