//! Whether this node accepts a campaign's manifest: every check in one place.
//!
//! `campaign plan`, `campaign start` and a manifest fetched from a neighbour all decide with
//! [`decide`]. It is pure: it reads the verifier's verdict on the manifest (trusted signature,
//! canonical encoding, expiry, anti-rollback: [`entente_stage::Verifier::check`]), the node's
//! hw-profile, its campaign record and its live links, and returns this node's image or every
//! reason it refuses. It writes nothing: the caller moves the anti-rollback floor
//! ([`entente_stage::Verifier::accept`]), keeps the manifest and seeds images only after it
//! accepted.
//!
//! Manifests carry no fixed device identifiers (PSID, board id) today, so there is nothing to
//! match against the device's; a manifest format that adds them adds the check here.

use entente_devices::profile::Profile;
use entente_proto::msg::Campaign;
use entente_proto::Phase;
use entente_stage::{Manifest, ProfileImage, VerifiedManifest, VerifyError};
use std::fmt;

/// What the verifier said of the manifest's bytes.
pub enum Checked<'a> {
    /// Signature, encoding, expiry and anti-rollback passed.
    Verified(&'a VerifiedManifest),
    /// The verifier refused it; `manifest` is what the bytes decode to, if they do (only to
    /// list the other refusals: nothing is accepted from it).
    Refused {
        /// The verifier's reason.
        error: &'a VerifyError,
        /// The decoded, unverified manifest.
        manifest: Option<&'a Manifest>,
    },
}

/// Why the manifest is looked at.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// An operator plans or starts a new campaign on this node.
    Start,
    /// The manifest a neighbour sent for the campaign this node already took.
    Follow(Campaign),
}

/// This node as the decision sees it.
pub struct NodeView<'a> {
    /// Its hw-profile.
    pub profile: &'a Profile,
    /// The campaign its durable record holds.
    pub campaign: Option<Campaign>,
    /// The record's phase.
    pub phase: Phase,
    /// Its live links (neither retired nor waiting for their first agreement): the peer and the
    /// committed epoch.
    pub links: Vec<(u64, u64)>,
}

/// One reason this node refuses a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The verifier refused it (signature, key, encoding, expiry, rollback, substitution).
    Verify(String),
    /// It has no image for this node's hw-profile.
    NoImage {
        /// The hw-profile.
        profile: String,
    },
    /// The image does not speak both the previous and the new epoch.
    NotDual {
        /// The campaign's epoch.
        epoch: u64,
        /// The image's window.
        min: u64,
        /// The image's window.
        max: u64,
    },
    /// The image is larger than the profile allows.
    TooLarge {
        /// The image's size in bytes.
        size: u64,
        /// The profile's `max_image_bytes`.
        max: u64,
    },
    /// A live link is committed at an epoch the image does not speak.
    LinkOutside {
        /// The neighbour.
        peer: u64,
        /// The link's committed epoch.
        committed: u64,
        /// The image's window.
        min: u64,
        /// The image's window.
        max: u64,
    },
    /// This node already took this epoch or a later one.
    EpochTaken {
        /// The epoch of the campaign it holds.
        epoch: u64,
    },
    /// The campaign this node holds has not settled.
    Unsettled {
        /// Its epoch.
        epoch: u64,
    },
    /// It is not the manifest the campaign this node follows names.
    NotTheCampaign {
        /// The campaign's epoch.
        epoch: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Verify(e) => f.write_str(e),
            Refusal::NoImage { profile } => write!(
                f,
                "the manifest has no image for this node's hw-profile {profile:?}"
            ),
            Refusal::NotDual { epoch, min, max } => write!(
                f,
                "the image speaks epochs {min}..={max}; it must speak {} and {epoch}",
                epoch.saturating_sub(1)
            ),
            Refusal::TooLarge { size, max } => write!(
                f,
                "the image is {size} bytes; this node's hw-profile allows at most {max}"
            ),
            Refusal::LinkOutside {
                peer,
                committed,
                min,
                max,
            } => write!(
                f,
                "the link to {peer} speaks epoch {committed}, which the image (epochs \
                 {min}..={max}) does not (no common epoch)"
            ),
            Refusal::EpochTaken { epoch } => write!(
                f,
                "this node already took campaign {epoch} (epochs only grow)"
            ),
            Refusal::Unsettled { epoch } => {
                write!(f, "campaign {epoch} has not settled on this node")
            }
            Refusal::NotTheCampaign { epoch } => {
                write!(f, "it is not the manifest campaign {epoch} names")
            }
        }
    }
}

/// Decides on a manifest for this node: its image when every check passes, otherwise every
/// reason it is refused (the verifier's first).
pub fn decide(
    checked: Checked<'_>,
    node: &NodeView<'_>,
    purpose: Purpose,
) -> Result<ProfileImage, Vec<Refusal>> {
    let mut refusals = Vec::new();
    let m = match checked {
        Checked::Verified(v) => {
            if let Purpose::Follow(c) = purpose {
                if v.digest().0 != c.image_digest || v.manifest().epoch != c.epoch.0 {
                    refusals.push(Refusal::NotTheCampaign { epoch: c.epoch.0 });
                }
            }
            v.manifest()
        }
        Checked::Refused { error, manifest } => {
            refusals.push(Refusal::Verify(error.to_string()));
            match manifest {
                Some(m) => m,
                None => return Err(refusals),
            }
        }
    };
    let image = m.profiles.get(&node.profile.name);
    match image {
        None => refusals.push(Refusal::NoImage {
            profile: node.profile.name.clone(),
        }),
        Some(img) => image_refusals(img, m.epoch, node, &mut refusals),
    }
    if let Some(c) = node.campaign {
        match purpose {
            Purpose::Start if c.epoch.0 >= m.epoch => {
                refusals.push(Refusal::EpochTaken { epoch: c.epoch.0 })
            }
            Purpose::Start if !Phase::is_settled(node.phase) => {
                refusals.push(Refusal::Unsettled { epoch: c.epoch.0 })
            }
            Purpose::Follow(f) if c.epoch > f.epoch => {
                refusals.push(Refusal::EpochTaken { epoch: c.epoch.0 })
            }
            _ => {}
        }
    }
    match image {
        Some(img) if refusals.is_empty() => Ok(img.clone()),
        _ => Err(refusals),
    }
}

/// The checks of this node's image: dual mode, size, the links' epochs.
fn image_refusals(img: &ProfileImage, epoch: u64, node: &NodeView<'_>, out: &mut Vec<Refusal>) {
    let (min, max) = (img.compat.min_epoch, img.compat.max_epoch);
    if !(img.compat.contains(epoch) && img.compat.contains(epoch.saturating_sub(1))) {
        out.push(Refusal::NotDual { epoch, min, max });
    }
    if let Some(limit) = max_image_bytes(node.profile).filter(|&l| img.size > l) {
        out.push(Refusal::TooLarge {
            size: img.size,
            max: limit,
        });
    }
    for &(peer, committed) in &node.links {
        if !img.compat.contains(committed) {
            out.push(Refusal::LinkOutside {
                peer,
                committed,
                min,
                max,
            });
        }
    }
}

/// The largest image the profile stages: its flashable component's `max_image_bytes`.
fn max_image_bytes(profile: &Profile) -> Option<u64> {
    profile
        .components
        .iter()
        .find(|c| c.flashable)
        .or(profile.components.first())
        .and_then(|c| c.max_image_bytes)
}

#[cfg(test)]
#[path = "acceptance_tests.rs"]
mod tests;
