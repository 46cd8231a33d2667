//! entente-devices: the `Device` trait, hw-profiles and device backends.
#![forbid(unsafe_code)]

pub mod device;
pub mod profile;
