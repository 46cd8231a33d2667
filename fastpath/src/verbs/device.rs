//! RDMA devices: listing them, and saying clearly when there are none.

use rdma_sys as ffi;
use std::ffi::CStr;

/// What a device offers that the backend cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name, e.g. `rxe0`, `mlx5_0`.
    pub name: String,
    /// Memory windows the device supports (0: none, so slots are protected by a per-connection
    /// protection domain only).
    pub max_mw: i32,
    /// Work requests per queue.
    pub max_qp_wr: i32,
    /// Completion queue entries.
    pub max_cqe: i32,
}

/// Why RDMA cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No device, or a kernel without RDMA support (`ibv_get_device_list` fails with ENOSYS).
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// A device could not be opened or queried.
    #[error("RDMA device {name}: {what}")]
    Query {
        /// The device.
        name: String,
        /// What failed.
        what: String,
    },
}

/// Lists the RDMA devices of this machine with their limits.
pub fn devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    let mut n: i32 = 0;
    // SAFETY: `n` is a valid out-pointer; the returned list is freed below, after its entries
    // were used.
    let list = unsafe { ffi::ibv_get_device_list(&mut n) };
    if list.is_null() {
        let e = std::io::Error::last_os_error();
        let why = if e.raw_os_error() == Some(libc::ENOSYS) {
            "this kernel has no RDMA support (ibv_get_device_list: ENOSYS)".to_owned()
        } else {
            format!("ibv_get_device_list failed: {e}")
        };
        return Err(DeviceError::NoDevice(why));
    }
    let mut out = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: the list holds `n` valid device pointers while it is not freed.
        let dev = unsafe { *list.add(i) };
        out.push(probe(dev));
    }
    // SAFETY: `list` came from ibv_get_device_list and is freed once.
    unsafe { ffi::ibv_free_device_list(list) };
    let out: Result<Vec<_>, _> = out.into_iter().collect();
    let out = out?;
    if out.is_empty() {
        return Err(DeviceError::NoDevice(
            "the RDMA stack is present but has no device (add one: rdma link add rxe0 type rxe netdev eth0)"
                .to_owned(),
        ));
    }
    Ok(out)
}

fn probe(dev: *mut ffi::ibv_device) -> Result<DeviceInfo, DeviceError> {
    // SAFETY: `dev` is a valid device of a live device list; the name is a NUL-terminated
    // string owned by the device.
    let name = unsafe { CStr::from_ptr(ffi::ibv_get_device_name(dev)) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: opening a valid device; the context is closed below.
    let ctx = unsafe { ffi::ibv_open_device(dev) };
    if ctx.is_null() {
        return Err(DeviceError::Query {
            name,
            what: format!("ibv_open_device: {}", std::io::Error::last_os_error()),
        });
    }
    // SAFETY: a zeroed attribute struct is a valid out-parameter for ibv_query_device.
    let mut attr: ffi::ibv_device_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `ctx` is an open context and `attr` a valid out-pointer.
    let rc = unsafe { ffi::ibv_query_device(ctx, &mut attr) };
    // SAFETY: `ctx` was opened above and is closed once.
    unsafe { ffi::ibv_close_device(ctx) };
    if rc != 0 {
        return Err(DeviceError::Query {
            name,
            what: format!(
                "ibv_query_device: {}",
                std::io::Error::from_raw_os_error(rc)
            ),
        });
    }
    Ok(DeviceInfo {
        name,
        max_mw: attr.max_mw,
        max_qp_wr: attr.max_qp_wr,
        max_cqe: attr.max_cqe,
    })
}
