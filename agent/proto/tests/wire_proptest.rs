//! Property tests of the wire encoding: round trips, truncation, versioning, and a decoder that
//! never panics on arbitrary input.

use entente_proto::msg::{
    AbortReason, Campaign, Control, ControlAction, DenyReason, GossipDelta, Hello, Lease,
    LinkSnapshot, RetireMark, RetireVersion,
};
use entente_proto::wire::{decode, encode, encoded, encoded_len, WireError, WIRE_VERSION};
use entente_proto::{Epoch, Message, NodeId, Nonce, Pending, Phase, PhaseEntry, Txn, TxnKind};
use entente_proto::{Version, Window};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Mostly small epochs (the realistic case) with the full range mixed in.
fn epoch() -> impl Strategy<Value = Epoch> {
    prop_oneof![0u64..8, any::<u64>()].prop_map(Epoch)
}

fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![0u64..16, any::<u64>()].prop_map(NodeId)
}

fn nonce() -> impl Strategy<Value = Nonce> {
    any::<u64>().prop_map(Nonce)
}

/// Valid windows only (`min <= max`); the decoder rejects the others.
fn window() -> impl Strategy<Value = Window> {
    (epoch(), epoch()).prop_map(|(a, b)| Window {
        min: a.min(b),
        max: a.max(b),
    })
}

fn pending() -> impl Strategy<Value = Pending> {
    prop_oneof![
        Just(Pending::None),
        nonce().prop_map(Pending::Tentative),
        nonce().prop_map(Pending::Reflecting),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    let link =
        (epoch(), pending()).prop_map(|(committed, pending)| LinkSnapshot { committed, pending });
    (
        window(),
        proptest::option::of(epoch()),
        proptest::option::of(link),
        proptest::option::of((any::<u32>(), any::<u32>())),
    )
        .prop_map(|(window, activated, link, v)| Hello {
            window,
            activated,
            link,
            your_version: v.map(|(incarnation, counter)| Version {
                incarnation,
                counter,
            }),
        })
}

fn txn() -> impl Strategy<Value = Txn> {
    let reasons = select(vec![
        AbortReason::Unspecified,
        AbortReason::NotActivated,
        AbortReason::WrongNonce,
        AbortReason::GaveUp,
        AbortReason::LocalFailure,
        AbortReason::Restarted,
        AbortReason::Halted,
        AbortReason::DeviceRefused,
    ]);
    (
        select(TxnKind::ALL.to_vec()),
        epoch(),
        nonce(),
        any::<[u8; 32]>(),
        reasons,
    )
        .prop_map(|(kind, epoch, nonce, digest, reason)| Txn {
            kind,
            epoch,
            nonce,
            digest,
            reason,
        })
}

fn lease() -> impl Strategy<Value = Lease> {
    let deny = select(vec![
        DenyReason::Budget,
        DenyReason::SelfActivating,
        DenyReason::Halted,
    ]);
    prop_oneof![
        (epoch(), any::<u32>()).prop_map(|(epoch, seq)| Lease::Req { epoch, seq }),
        (epoch(), any::<u32>(), any::<u32>()).prop_map(|(epoch, seq, duration_ms)| {
            Lease::Grant {
                epoch,
                seq,
                duration_ms,
            }
        }),
        (epoch(), any::<u32>(), deny).prop_map(|(epoch, seq, reason)| Lease::Deny {
            epoch,
            seq,
            reason
        }),
        (epoch(), any::<u32>()).prop_map(|(epoch, seq)| Lease::Release { epoch, seq }),
    ]
}

fn campaign() -> impl Strategy<Value = Campaign> {
    (
        epoch(),
        window(),
        any::<[u8; 32]>(),
        any::<bool>(),
        any::<u32>(),
        node(),
    )
        .prop_map(
            |(epoch, window, image_digest, disruptive, max_activation_ms, origin)| Campaign {
                epoch,
                window,
                image_digest,
                disruptive,
                max_activation_ms,
                origin,
            },
        )
}

fn control() -> impl Strategy<Value = Control> {
    let action = select(vec![
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Abort,
        ControlAction::Rollback,
    ]);
    (epoch(), action, any::<u64>()).prop_map(|(epoch, action, counter)| Control {
        epoch,
        action,
        counter,
    })
}

fn phase_entry() -> impl Strategy<Value = PhaseEntry> {
    (epoch(), select(Phase::ALL.to_vec()), any::<(u32, u32)>()).prop_map(
        |(epoch, phase, (incarnation, counter))| PhaseEntry {
            epoch,
            phase,
            version: Version {
                incarnation,
                counter,
            },
        },
    )
}

fn gossip() -> impl Strategy<Value = GossipDelta> {
    (
        any::<u64>(),
        vec((node(), node(), epoch()), 0..12),
        vec((node(), phase_entry()), 0..12),
        vec((node(), node(), any::<u32>(), node(), any::<bool>()), 0..12),
        vec((node(), node()), 0..12),
        vec((node(), any::<u64>()), 0..12),
    )
        .prop_map(
            |(upto, links, phases, marks, declared, beats)| GossipDelta {
                upto,
                links,
                phases,
                marks: marks
                    .into_iter()
                    .map(|(a, b, counter, by, retired)| {
                        let version = RetireVersion { counter, by };
                        (a, b, RetireMark { version, retired })
                    })
                    .collect(),
                declared,
                beats,
            },
        )
}

/// Any message the decoder accepts, every variant represented.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        epoch().prop_map(|epoch| Message::Activated { epoch }),
        txn().prop_map(Message::Txn),
        lease().prop_map(Message::Lease),
        campaign().prop_map(Message::Campaign),
        control().prop_map(Message::Control),
        gossip().prop_map(Message::Gossip),
        any::<u64>().prop_map(|upto| Message::GossipAck { upto }),
        (epoch(), any::<u64>()).prop_map(|(epoch, seq)| Message::Probe { epoch, seq }),
    ]
}

/// Valid encodings with one byte overwritten: mostly errors deep inside a message, some still
/// valid (a changed field value), some with a changed enum code or flag.
fn mutated_encoding() -> impl Strategy<Value = Vec<u8>> {
    (message(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(msg, at, byte)| {
        let mut bytes = encoded(&msg);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(msg in message()) {
        let bytes = encoded(&msg);
        prop_assert_eq!(bytes.len(), encoded_len(&msg));
        prop_assert_eq!(decode(&bytes), Ok(msg));
    }

    #[test]
    fn encode_appends_after_existing_bytes(msg in message(), prefix in vec(any::<u8>(), 0..8)) {
        let mut out = prefix.clone();
        encode(&msg, &mut out);
        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&out[prefix.len()..], &encoded(&msg)[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic_and_accepted_ones_are_canonical(bytes in mutated_encoding()) {
        // Whatever decodes re-encodes to exactly the same bytes (no alternative encodings).
        if let Ok(msg) = decode(&bytes) {
            prop_assert_eq!(encoded(&msg), bytes);
        }
    }

    #[test]
    fn every_truncation_is_an_error(msg in message()) {
        let bytes = encoded(&msg);
        for cut in 0..bytes.len() {
            let result = decode(&bytes[..cut]);
            prop_assert!(
                matches!(result, Err(WireError::Truncated { .. })),
                "cut at {}: {:?}",
                cut,
                result
            );
        }
    }

    #[test]
    fn other_versions_are_refused(msg in message(), flip in 1u8..=255) {
        let mut bytes = encoded(&msg);
        bytes[0] ^= flip;
        prop_assert_eq!(decode(&bytes), Err(WireError::UnsupportedVersion(WIRE_VERSION ^ flip)));
    }
}
