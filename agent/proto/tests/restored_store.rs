//! A node restarted from a store restored from an older copy: the device, which outlives the
//! disk, is the authority on the link epochs; the store is trusted only where it is level with
//! the device, and no data flows on a link before the peer's first LINK_HELLO.

use entente_proto::link::LinkState;
use entente_proto::msg::{Hello, LinkSnapshot};
use entente_proto::node::{Durable, Event, NodeRecord, Output, Record};
use entente_proto::types::MS;
use entente_proto::Window;
use entente_proto::{Epoch, Message, Node, NodeConfig, NodeId, Pending, PhaseEntry, Version};

const ME: NodeId = NodeId(1);
const PEER: NodeId = NodeId(2);

/// A store that holds the link at epoch 0, written by incarnation 3.
fn store() -> Durable {
    let record = NodeRecord {
        phase: PhaseEntry {
            version: Version {
                incarnation: 3,
                counter: 7,
            },
            ..PhaseEntry::default()
        },
        ..NodeRecord::default()
    };
    Durable {
        node: Some(record),
        links: vec![(PEER, LinkState::established(Epoch(0)))],
    }
}

/// Starts node 1 from `store()` beside a device whose link to node 2 holds `device`.
fn start(device: Epoch) -> (Node, Vec<Output>) {
    let mut cfg = NodeConfig::new(ME, vec![PEER], 20 * MS);
    cfg.firmware_window = Window::new(0, 1);
    cfg.incarnation_hint = 1;
    cfg.device_links = vec![(PEER, device)];
    let mut node = Node::new(cfg, &store(), 0);
    let mut out = Vec::new();
    node.take_outputs(&mut out);
    (node, out)
}

fn device_sets(out: &[Output]) -> Vec<Epoch> {
    out.iter()
        .filter_map(|o| match o {
            Output::SetLinkEpoch { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn a_store_behind_the_device_is_treated_as_lost() {
    let (node, out) = start(Epoch(1));
    // Nothing of the older store goes to the device: epoch 0 would take the link back.
    assert_eq!(device_sets(&out), vec![]);
    assert!(node.link(PEER).unwrap().state.fresh);
    // An incarnation above the store's, and the store rewritten as lost.
    assert_eq!(node.phase().version.incarnation, 4);
    assert!(out.contains(&Output::Persist(Record::Link(PEER, LinkState::fresh()))));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Reincarnated { incarnation: 4, .. }))));
}

#[test]
fn a_store_level_with_the_device_is_kept() {
    let (node, out) = start(Epoch(0));
    assert_eq!(device_sets(&out), vec![Epoch(0)]);
    assert!(!node.link(PEER).unwrap().state.fresh);
    assert_eq!(node.phase().version.incarnation, 3);
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Reincarnated { .. }))));
}

/// The store is level with the device but behind the peer (it lost the REFLECT this end sent,
/// and the peer committed on it): data waits for the peer's HELLO, which gives back the epoch.
#[test]
fn no_data_before_the_peers_first_hello() {
    let (mut node, _) = start(Epoch(0));
    node.link_epoch_applied(0, PEER, Epoch(0), Ok(()));
    node.handle_up(MS, PEER, 1);
    assert_eq!(node.send_epoch(PEER), None);
    let hello = Hello {
        window: Window::new(0, 1),
        activated: Some(Epoch(1)),
        link: Some(LinkSnapshot {
            committed: Epoch(1),
            pending: Pending::None,
        }),
        your_version: None,
    };
    node.handle_message(2 * MS, PEER, Message::Hello(hello));
    let mut out = Vec::new();
    node.take_outputs(&mut out);
    assert_eq!(device_sets(&out), vec![Epoch(1)]);
    assert_eq!(node.send_epoch(PEER), None, "device not yet at epoch 1");
    node.link_epoch_applied(3 * MS, PEER, Epoch(1), Ok(()));
    assert_eq!(node.send_epoch(PEER), Some(Epoch(1)));
}
