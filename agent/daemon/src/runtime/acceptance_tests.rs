//! Each reason [`decide`] refuses a manifest, and the manifest it accepts.

use super::*;
use entente_proto::{Epoch, NodeId, Window};
use entente_stage::{CompatWindow, Digest, KeyId, SecretKey, Signature, TrustedKeys, Verifier};
use std::collections::BTreeMap;
use std::path::Path;

fn profile() -> Profile {
    let text = include_str!("../../../../hw-profiles/sim-nic.toml");
    entente_devices::profile::parse(Path::new("sim-nic.toml"), text).unwrap()
}

/// A manifest for `profile` at `epoch` whose image speaks `compat` and is `size` bytes.
fn manifest(profile: &str, epoch: u64, compat: (u64, u64), size: u64) -> Manifest {
    let chunk = 1 << 20;
    let image = ProfileImage {
        chunk_size: chunk,
        chunks: vec![Digest([7; 32]); size.div_ceil(u64::from(chunk)) as usize],
        compat: CompatWindow {
            min_epoch: compat.0,
            max_epoch: compat.1,
        },
        sha256: Digest([9; 32]),
        size,
        version: "2.0".into(),
    };
    Manifest {
        epoch,
        expires_at: u64::MAX,
        format: entente_stage::manifest::MANIFEST_FORMAT,
        manifest_version: epoch,
        profiles: BTreeMap::from([(profile.to_owned(), image)]),
        semantics: "test".into(),
    }
}

/// `m` signed by a trusted key and checked by a verifier that accepted nothing yet.
fn verified(m: &Manifest) -> VerifiedManifest {
    let key = SecretKey::from_seed([3; 32]);
    let mut keys = TrustedKeys::new();
    keys.add(key.public());
    let state = std::env::temp_dir().join("entente-acceptance-test-never-written.json");
    let v = Verifier::open(keys, &state).unwrap();
    let bytes = m.to_canonical_bytes();
    let sig: Signature = key.sign(&bytes);
    v.check(&bytes, &sig, 1).unwrap()
}

fn idle(profile: &Profile) -> NodeView<'_> {
    NodeView {
        profile,
        campaign: None,
        phase: Phase::Idle,
        links: vec![(2, 0), (3, 0)],
    }
}

fn campaign(epoch: u64, digest: Digest) -> Campaign {
    Campaign {
        epoch: Epoch(epoch),
        window: Window::new(epoch.saturating_sub(1), epoch),
        image_digest: digest.0,
        disruptive: false,
        max_activation_ms: 2000,
        origin: NodeId(1),
    }
}

fn refusals(m: &Manifest, node: &NodeView<'_>, purpose: Purpose) -> Vec<Refusal> {
    decide(Checked::Verified(&verified(m)), node, purpose).unwrap_err()
}

#[test]
fn a_manifest_that_passes_every_check_is_accepted() {
    let p = profile();
    let m = manifest("sim-nic", 1, (0, 1), 8 << 20);
    let v = verified(&m);
    let img = decide(Checked::Verified(&v), &idle(&p), Purpose::Start).unwrap();
    assert_eq!(img, m.profiles["sim-nic"]);
    // The node that took the campaign accepts its manifest from a neighbour.
    let c = campaign(1, v.digest());
    let node = NodeView {
        campaign: Some(c),
        phase: Phase::Announced,
        ..idle(&p)
    };
    assert!(decide(Checked::Verified(&v), &node, Purpose::Follow(c)).is_ok());
}

#[test]
fn a_verifier_refusal_is_listed_with_every_other_reason() {
    let p = profile();
    let m = manifest("sim-gpu", 1, (0, 1), 4096);
    let errors = [
        VerifyError::BadSignature {
            key_id: KeyId([1; 8]),
        },
        VerifyError::Expired {
            expires_at: 5,
            now: 6,
        },
        VerifyError::Rollback {
            epoch: 1,
            manifest_version: 1,
            last_epoch: 5,
            last_version: 5,
        },
    ];
    for error in &errors {
        let r = decide(
            Checked::Refused {
                error,
                manifest: Some(&m),
            },
            &idle(&p),
            Purpose::Start,
        )
        .unwrap_err();
        assert_eq!(
            r,
            vec![
                Refusal::Verify(error.to_string()),
                Refusal::NoImage {
                    profile: "sim-nic".into()
                }
            ]
        );
        // Bytes that do not decode: the verifier's reason alone.
        let r = decide(
            Checked::Refused {
                error,
                manifest: None,
            },
            &idle(&p),
            Purpose::Start,
        );
        assert_eq!(r.unwrap_err(), vec![Refusal::Verify(error.to_string())]);
    }
    assert!(errors[1].to_string().contains("expired"));
}

#[test]
fn no_image_for_this_profile_is_refused() {
    let p = profile();
    let m = manifest("sim-gpu", 5, (4, 5), 4096);
    assert_eq!(
        refusals(&m, &idle(&p), Purpose::Start),
        vec![Refusal::NoImage {
            profile: "sim-nic".into()
        }]
    );
}

#[test]
fn an_image_that_does_not_speak_both_epochs_is_refused() {
    let p = profile();
    let m = manifest("sim-nic", 2, (2, 3), 4096);
    let node = NodeView {
        links: vec![],
        ..idle(&p)
    };
    assert_eq!(
        refusals(&m, &node, Purpose::Start),
        vec![Refusal::NotDual {
            epoch: 2,
            min: 2,
            max: 3
        }]
    );
}

#[test]
fn an_image_larger_than_the_profile_allows_is_refused() {
    let p = profile();
    let m = manifest("sim-nic", 1, (0, 1), (64 << 20) + 1);
    let r = refusals(&m, &idle(&p), Purpose::Start);
    assert_eq!(
        r,
        vec![Refusal::TooLarge {
            size: (64 << 20) + 1,
            max: 64 << 20
        }]
    );
    assert!(r[0].to_string().contains("67108864"), "{}", r[0]);
}

#[test]
fn a_link_whose_epoch_the_image_does_not_speak_is_refused() {
    let p = profile();
    let m = manifest("sim-nic", 2, (1, 2), 4096);
    let node = NodeView {
        links: vec![(2, 1), (3, 0)],
        ..idle(&p)
    };
    assert_eq!(
        refusals(&m, &node, Purpose::Start),
        vec![Refusal::LinkOutside {
            peer: 3,
            committed: 0,
            min: 1,
            max: 2
        }]
    );
}

#[test]
fn a_taken_epoch_or_an_unsettled_campaign_is_refused() {
    let p = profile();
    let m = manifest("sim-nic", 1, (0, 1), 4096);
    let node = NodeView {
        campaign: Some(campaign(1, Digest([1; 32]))),
        phase: Phase::Converged,
        ..idle(&p)
    };
    let r = refusals(&m, &node, Purpose::Start);
    assert_eq!(r, vec![Refusal::EpochTaken { epoch: 1 }]);
    assert!(r[0].to_string().contains("already took campaign 1"));
    let m = manifest("sim-nic", 2, (0, 2), 4096);
    let node = NodeView {
        campaign: Some(campaign(1, Digest([1; 32]))),
        phase: Phase::Staged,
        ..idle(&p)
    };
    assert_eq!(
        refusals(&m, &node, Purpose::Start),
        vec![Refusal::Unsettled { epoch: 1 }]
    );
    // After a halted campaign a newer one may start.
    let node = NodeView {
        phase: Phase::Halted,
        ..node
    };
    assert!(decide(Checked::Verified(&verified(&m)), &node, Purpose::Start).is_ok());
}

#[test]
fn a_neighbour_manifest_must_be_the_one_the_campaign_names() {
    let p = profile();
    let m = manifest("sim-nic", 1, (0, 1), 4096);
    let other = campaign(1, Digest([1; 32]));
    let node = NodeView {
        campaign: Some(other),
        phase: Phase::Announced,
        ..idle(&p)
    };
    assert_eq!(
        refusals(&m, &node, Purpose::Follow(other)),
        vec![Refusal::NotTheCampaign { epoch: 1 }]
    );
    // A node that moved on to a later campaign takes no manifest for an older one.
    let v = verified(&m);
    let node = NodeView {
        campaign: Some(campaign(2, Digest([2; 32]))),
        ..node
    };
    assert_eq!(
        decide(
            Checked::Verified(&v),
            &node,
            Purpose::Follow(campaign(1, v.digest()))
        )
        .unwrap_err(),
        vec![Refusal::EpochTaken { epoch: 2 }]
    );
}
