//! Fixtures shared by the fuzz targets and by the seed corpus (`examples/seeds.rs`): the fixed
//! manifest signing key the `manifest` target trusts, and valid inputs for every target.

use entente_api::{Envelope, Request, API_VERSION};
use entente_fastpath::frame::{flags, Fields, FrameHeader, Kind};
use entente_proto::msg::{Campaign, Control, ControlAction, GossipDelta, Hello, Lease};
use entente_proto::wire::encoded;
use entente_proto::{Epoch, Message, NodeId, Nonce, Pending, Txn, TxnKind, Window};
use entente_stage::manifest::MANIFEST_FORMAT;
use entente_stage::statement::{Action, Statement};
use entente_stage::{CompatWindow, Manifest, ProfileImage, SecretKey};
use std::collections::BTreeMap;

/// Every fuzz target; the seed corpus has inputs for each.
pub const TARGETS: [&str; 6] = [
    "control_request",
    "proto_decode",
    "frame_decode",
    "manifest",
    "config",
    "statement",
];

/// The manifest signing key the `manifest` target trusts (a fixed seed: the corpus's
/// signatures stay valid from run to run).
pub fn manifest_key() -> SecretKey {
    SecretKey::from_seed([0x5e; 32])
}

/// One seed input: the target it is for, its file name in `fuzz/corpus/<target>/`, its bytes.
pub struct Seed {
    /// The fuzz target.
    pub target: &'static str,
    /// The file name.
    pub name: &'static str,
    /// The input.
    pub bytes: Vec<u8>,
}

/// A manifest of `profiles` images of `len` bytes each, canonical bytes and signature line.
fn signed_manifest(epoch: u64, profiles: &[&str], len: usize) -> (Vec<u8>, String) {
    let image = vec![0xa5u8; len];
    let profiles: BTreeMap<String, ProfileImage> = profiles
        .iter()
        .map(|p| {
            let compat = CompatWindow {
                min_epoch: epoch - 1,
                max_epoch: epoch,
            };
            let img = ProfileImage::from_reader(&image[..], 4096, "28.39.1002", compat)
                .expect("reading memory");
            (p.to_string(), img)
        })
        .collect();
    let m = Manifest {
        epoch,
        expires_at: 4_000_000_000,
        format: MANIFEST_FORMAT,
        manifest_version: epoch,
        profiles,
        semantics: "RoCE CC v3 enabled".into(),
    };
    let bytes = m.to_canonical_bytes();
    let sig = manifest_key().sign(&bytes).to_file_text();
    (bytes, sig)
}

/// A request line, without its newline.
fn request(r: Request) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        api: API_VERSION,
        request: r,
    })
    .expect("requests serialise")
}

/// A whole frame: header and payload.
fn frame(kind: Kind, frame_flags: u16, aux: u64, payload: &[u8]) -> Vec<u8> {
    let f = Fields {
        kind,
        flags: frame_flags,
        src: 3,
        dst: 4,
        seq: 17,
        generation: 2,
        aux,
        freed: 8,
    };
    let mut out = FrameHeader::new(f, payload).bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

const SIM_CONFIG: &str = r#"node_id = 1
listen = "10.0.0.1:7700"
data_dir = "/var/lib/entente"
cluster_key = "/etc/entente/cluster.key"
trusted_keys = "/etc/entente/keys"
profiles = "/usr/share/entente/hw-profiles"
control_socket = "/run/entente/control.sock"
read_group = "entente-read"
admin_group = "entente-admin"

[transport]
kind = "tcp"
rtt_ms = 5

[device]
backend = "sim"
profile = "sim-nic"

[device.faults]
slow_flash_ms_per_mib = 20

[fanout]
strategy = "pull-one"
source = 2
max_mib_per_s = 200.0

[policy]
max_unavailable_neighbors = 1

[[peers]]
id = 2
addr = "10.0.0.2:7700"

[[peers]]
id = 3
addr = "10.0.0.3:7700"
"#;

const DEVLINK_CONFIG: &str = r#"node_id = 7
listen = "127.0.0.1:7607"
data_dir = "/var/lib/entente"
cluster_key = "/etc/entente/cluster.key"
trusted_keys = "/etc/entente/keys"
profiles = "/usr/share/entente/hw-profiles"

[device]
backend = "devlink"
profile = "connectx-7"

[device.devlink]
handle = "pci/0000:03:00.0"
firmware_dir = "/lib/firmware/entente/node7"
overwrite = ["settings"]
flash_timeout_s = 1200

[[peers]]
id = 8
addr = "[fd00::8]:7600"
"#;

const REDFISH_CONFIG: &str = r#"node_id = 12
listen = "0.0.0.0:7700"
data_dir = "/var/lib/entente"
cluster_key = "/etc/entente/cluster.key"
trusted_keys = "/etc/entente/keys"
profiles = "/usr/share/entente/hw-profiles"

[device]
backend = "redfish"
profile = "h100-sxm5"

[device.redfish]
url = "https://bmc-12.example:443"
credentials_file = "/etc/entente/bmc.credentials"

[status]
stale_after_s = 60
"#;

/// Valid inputs for every target.
pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut seed = |target, name, bytes: Vec<u8>| {
        out.push(Seed {
            target,
            name,
            bytes,
        })
    };

    // The control socket: a line of every kind of request.
    let (manifest, signature) = signed_manifest(5, &["connectx-7"], 10_000);
    let manifest = String::from_utf8(manifest).expect("manifests are JSON");
    seed("control_request", "status", request(Request::Status));
    seed(
        "control_request",
        "history",
        request(Request::History { limit: 50 }),
    );
    seed(
        "control_request",
        "campaign_start",
        request(Request::CampaignStart {
            manifest: manifest.clone(),
            signature: signature.clone(),
            images: vec!["fw-28.39.1002.bin".into()],
        }),
    );
    seed(
        "control_request",
        "campaign_plan",
        request(Request::CampaignPlan {
            manifest,
            signature,
        }),
    );
    seed(
        "control_request",
        "image_verify",
        request(Request::ImageVerify {
            sha256: "ab".repeat(32),
        }),
    );
    seed(
        "control_request",
        "link_retire",
        request(Request::LinkRetire { peer: 4 }),
    );

    // The node core's messages.
    let window = Window {
        min: Epoch(4),
        max: Epoch(5),
    };
    let messages = [
        (
            "hello",
            Message::Hello(Hello {
                window,
                activated: Some(Epoch(5)),
                link: Some(entente_proto::msg::LinkSnapshot {
                    committed: Epoch(4),
                    pending: Pending::Tentative(Nonce(9)),
                }),
                your_version: None,
            }),
        ),
        (
            "propose",
            Message::Txn(Txn::new(TxnKind::Propose, Epoch(5), Nonce(9))),
        ),
        (
            "reflect",
            Message::Txn(Txn {
                digest: [0x3c; 32],
                ..Txn::new(TxnKind::Reflect, Epoch(5), Nonce(9))
            }),
        ),
        (
            "lease_grant",
            Message::Lease(Lease::Grant {
                epoch: Epoch(5),
                seq: 2,
                duration_ms: 30_000,
            }),
        ),
        (
            "campaign",
            Message::Campaign(Campaign {
                epoch: Epoch(5),
                window,
                image_digest: [0x11; 32],
                disruptive: true,
                max_activation_ms: 120_000,
                origin: NodeId(1),
            }),
        ),
        (
            "control",
            Message::Control(Control {
                epoch: Epoch(5),
                action: ControlAction::Pause,
                counter: 3,
            }),
        ),
        (
            "gossip",
            Message::Gossip(GossipDelta {
                upto: 12,
                links: vec![(NodeId(1), NodeId(2), Epoch(5))],
                declared: vec![(NodeId(2), NodeId(3))],
                beats: vec![(NodeId(1), 40), (NodeId(2), 38)],
                ..GossipDelta::default()
            }),
        ),
        (
            "probe",
            Message::Probe {
                epoch: Epoch(5),
                seq: 1000,
            },
        ),
    ];
    let hello = encoded(&messages[0].1);
    for (name, m) in &messages {
        seed("proto_decode", name, encoded(m));
    }

    // Fastpath frames.
    seed("frame_decode", "data", frame(Kind::Data, 0, 0, &hello));
    seed("frame_decode", "credit", frame(Kind::Credit, 0, 0, &[]));
    seed(
        "frame_decode",
        "bulk_grant",
        frame(Kind::BulkGrant, 0, 1, &[]),
    );
    seed(
        "frame_decode",
        "bulk_data",
        frame(Kind::BulkData, flags::NO_PAYLOAD_SUM, 1, &[0xa5; 512]),
    );
    seed("frame_decode", "hello", frame(Kind::Hello, 0, 0, &[7; 40]));
    seed("frame_decode", "close", frame(Kind::Close, 0, 0, &[]));

    // Signed manifests and their signature lines.
    let (one, one_sig) = signed_manifest(5, &["connectx-7"], 10_000);
    let (two, two_sig) = signed_manifest(9, &["bluefield-3", "h100-sxm5"], 4096);
    seed("manifest", "one_profile", one);
    seed("manifest", "one_profile.sig", one_sig.into_bytes());
    seed("manifest", "two_profiles", two);
    seed("manifest", "two_profiles.sig", two_sig.into_bytes());

    // Agent configurations; layers are separated by NUL bytes.
    seed("config", "sim", SIM_CONFIG.into());
    seed("config", "devlink", DEVLINK_CONFIG.into());
    seed("config", "redfish", REDFISH_CONFIG.into());
    seed(
        "config",
        "drop_ins",
        format!("{SIM_CONFIG}\0[transport]\nrtt_ms = 9\n\0[policy]\ndrain_timeout_s = 600\n")
            .into_bytes(),
    );

    // Operator statements, one of each action, signed with a fixed key.
    let key = SecretKey::from_seed([7; 32]);
    for (name, action) in [
        ("pause", Action::Pause),
        ("resume", Action::Resume),
        ("abort", Action::Abort),
        ("rollback", Action::Rollback),
    ] {
        let line = Statement {
            cluster: [0xc1; 8],
            epoch: 3,
            action,
            counter: 1_800_000_000_000,
            expires_at: 1_800_003_600,
            reason: format!("fuzz seed: {name}"),
        }
        .sign(&key)
        .expect("a seed statement signs")
        .to_line();
        seed("statement", name, line.into_bytes());
    }
    out
}
