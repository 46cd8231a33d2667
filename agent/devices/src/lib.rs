//! entente-devices: the `Device` trait, hw-profiles and device backends.
