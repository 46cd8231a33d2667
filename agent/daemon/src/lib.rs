//! entente-agent: `entented`, the node agent. It drives the protocol node (entente-proto) over
//! the transport (entente-fastpath), stages images (entente-stage) into the device
//! (entente-devices), keeps its state and history in SQLite, and serves the control socket
//! (entente-api).

pub mod config;
pub mod control;
pub mod db;
pub mod device_backend;
pub mod drain;
pub mod envelope;
pub mod files;
pub mod runtime;
pub mod worker;
