//! When a node tells its neighbours what it holds: changed images in rounds at most one
//! [`HAVE_INTERVAL`] apart, and on a new connection the images worth announcing, bounded.

use super::{ImageId, MS};
use crate::Nanos;
use std::collections::BTreeSet;

/// Shortest interval between two `Have` rounds (a round covers every chunk that arrived since).
pub const HAVE_INTERVAL: Nanos = 10 * MS;
/// Most images announced to a neighbour that just connected: the one being fetched and the
/// newest complete ones (the store keeps two campaigns' images; older ones are not offered).
pub const MAX_ANNOUNCED_ON_CONNECT: usize = 3;

/// Images whose holdings changed since the last round.
#[derive(Debug, Default)]
pub struct Announcements {
    dirty: BTreeSet<ImageId>,
    last: Option<Nanos>,
}

impl Announcements {
    /// Notes that this node's holdings of `image` changed.
    pub fn changed(&mut self, image: ImageId) {
        self.dirty.insert(image);
    }

    /// Whether a round waits.
    pub fn pending(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The images to announce now to every neighbour, if a round is due.
    pub fn due(&mut self, now: Nanos) -> Vec<ImageId> {
        if self.dirty.is_empty() || self.last.is_some_and(|t| now < t + HAVE_INTERVAL) {
            return Vec::new();
        }
        self.last = Some(now);
        std::mem::take(&mut self.dirty).into_iter().collect()
    }
}

/// What to announce to a neighbour that just connected: the image being fetched first, then
/// complete images newest first (`complete` is ordered oldest to newest), at most
/// [`MAX_ANNOUNCED_ON_CONNECT`].
pub fn on_connect(fetching: Option<ImageId>, complete: &[ImageId]) -> Vec<ImageId> {
    let mut out: Vec<ImageId> = fetching.into_iter().collect();
    for id in complete.iter().rev() {
        if out.len() >= MAX_ANNOUNCED_ON_CONNECT {
            break;
        }
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}
