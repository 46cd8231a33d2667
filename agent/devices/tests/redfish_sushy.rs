//! The Redfish backend against sushy-tools (its fake driver), an independent implementation:
//! discovery over TLS with basic auth, bad credentials, a bad certificate, and SimpleUpdate's
//! 500. sushy-tools comes from the virtualenv `.ci/redfish-peers` prepares; without it these
//! tests fail and say how to prepare it.

mod redfish_peers;

use entente_devices::device::{Device, DeviceError};
use entente_devices::redfish::{AuthMode, RedfishDevice};
use redfish_peers::{config, credentials, package, peek, shipped, sushy, PASSWORD};

#[test]
fn redfish_sushy_discovery_tls_basic_auth_and_simple_update_500() {
    let work = tempfile::tempdir().unwrap();
    let peer = sushy(work.path());
    let creds = credentials(work.path(), PASSWORD, 0o600);
    let mut cfg = config(&peer.url, &creds, AuthMode::Basic);
    cfg.image_uri = Some("https://127.0.0.1:9/images/{sha256}.fwpkg".into());
    let mut dev = RedfishDevice::open(shipped("h100-sxm5"), &cfg).expect("discovery");

    // sushy's UpdateService has no FirmwareInventory: the 404 is surfaced, naming the member.
    let e = dev.inventory().unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Redfish {
                status: Some(404),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("FirmwareInventory/HGX_FW_GPU_SXM_1"),
        "{e}"
    );

    // No multipart push there: SimpleUpdate. sushy takes Targets for systems: the GPU's
    // member is not one, and its 404 is surfaced verbatim.
    let (bytes, info) = package("97.00.12.00.05", 100);
    let e = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Redfish {
                status: Some(404),
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("HGX_FW_GPU_SXM_1 was not found"),
        "{e}"
    );
    drop(dev);

    // Targeting sushy's system, the fake driver answers SimpleUpdate with 500.
    let (status, systems) = peek(&format!("{}/redfish/v1/Systems", peer.url));
    assert_eq!(status, 200, "{systems}");
    let system = systems["Members"][0]["@odata.id"]
        .as_str()
        .expect("a system")
        .to_string();
    cfg.targets = Some(vec![system]);
    let mut dev = RedfishDevice::open(shipped("h100-sxm5"), &cfg).expect("discovery");
    let e = dev
        .stage("gpu-fw", &info, &mut &bytes[..], &mut |_| {})
        .unwrap_err();
    let DeviceError::Redfish {
        status, message, ..
    } = &e
    else {
        panic!("expected a Redfish error, got {e}");
    };
    assert_eq!(*status, Some(500), "{e}");
    assert!(message.contains("Failed fetching BIOS information"), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("SimpleUpdate") && text.contains("HTTP 500"),
        "{text}"
    );
    assert!(dev.pending().is_empty());
}

#[test]
fn redfish_sushy_bad_password_and_bad_certificate_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let peer = sushy(work.path());

    let creds = credentials(work.path(), "wrong-password", 0o600);
    let e = RedfishDevice::open(
        shipped("h100-sxm5"),
        &config(&peer.url, &creds, AuthMode::Basic),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Redfish {
                status: Some(401),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("HTTP 401 Unauthorized"), "{e}");

    let creds = credentials(work.path(), PASSWORD, 0o400);
    let mut cfg = config(&peer.url, &creds, AuthMode::Basic);
    cfg.ca_file = Some(redfish_peers::other_ca());
    let e = RedfishDevice::open(shipped("h100-sxm5"), &cfg).unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}
