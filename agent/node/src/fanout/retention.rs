//! Which stored images a node keeps: those of the campaign it just finalized and of the one
//! before (what a rollback needs), and any of a newer campaign; the rest are pruned, so the
//! store does not grow with every campaign.

use super::ImageId;

/// The images to delete once campaign `finalized` is finalized here, of `held`: (the newest
/// campaign epoch whose manifest names the image, the image).
pub fn to_prune(held: &[(u64, ImageId)], finalized: u64) -> Vec<ImageId> {
    let previous = held
        .iter()
        .map(|&(e, _)| e)
        .filter(|&e| e < finalized)
        .max();
    held.iter()
        .filter(|&&(e, _)| e < finalized && Some(e) != previous)
        .map(|&(_, id)| id)
        .collect()
}
