//! The verbs backend on this machine: with an RDMA device it lists it; without one (a kernel
//! without RDMA support returns ENOSYS) it says "no RDMA device" and never crashes.
#![cfg(feature = "rdma")]

use entente_fastpath::verbs::device::{devices, DeviceError};
use entente_fastpath::{ClusterKey, Config, TransportError, VerbsTransport};

fn machine_has_rdma() -> bool {
    std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some())
}

#[test]
fn devices_are_listed_or_their_absence_reported() {
    match devices() {
        Ok(list) => {
            assert!(
                machine_has_rdma(),
                "devices listed without /sys/class/infiniband"
            );
            assert!(
                list.iter().all(|d| !d.name.is_empty() && d.max_qp_wr > 0),
                "{list:?}"
            );
        }
        Err(DeviceError::NoDevice(why)) => {
            assert!(
                !machine_has_rdma(),
                "a device exists but was not listed: {why}"
            );
            assert!(!why.is_empty());
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn binding_without_a_device_is_a_clear_error() {
    if machine_has_rdma() {
        return; // the lab's conformance suite covers binding on a real device
    }
    let key = ClusterKey::from_bytes(&[1; 32]).unwrap();
    let err = VerbsTransport::bind("127.0.0.1:0".parse().unwrap(), 1, key, Config::default())
        .err()
        .expect("no RDMA device here");
    assert!(
        matches!(&err, TransportError::Unavailable(m) if m.starts_with("no RDMA device")),
        "{err}"
    );
}
